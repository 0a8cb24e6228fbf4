//! The round driver: owns the engine and runs rounds over the connected clients.
//!
//! The round protocol itself (stale and duplicate results, validation, folding updates in ascending
//! client id) is the engine's ([`fedsim_engine::engine`]); the driver keeps what is about transport:
//! the wall-clock deadline, heartbeats (a silent client is dropped from its round), the quorum in
//! arrival terms, and where early arrivals wait for their turn: in memory under the
//! [`crate::budget`], or in spool files the engine reads through [`fedsim_engine::engine::PayloadSource`],
//! so the coordinator's memory stays O(model + budget) whatever the number of clients and their
//! arrival order. Each client's reply waits for the engine's [`Verdict`] on its update.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fedsim_engine::engine::AsyncStep;
use fedsim_engine::engine::{Refusal, RoundEnd, RoundIo, Verdict};
use fedsim_engine::report::Summary;
use fedsim_engine::report::peak_rss_mib;
use fedsim_engine::scenario::{ApplyOrder, QuorumOrder};
use fedsim_engine::{ClientOutcome, Engine, Scenario};
use fedsim_proto::wire;
use fedsim_types::ClientId;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::budget::Received;
use crate::service::{self, OpenRound, Outcome, Phase, Shared, Submission, TaskKind};
use crate::{ServerError, ServerOptions, checkpoint};

/// How often the driver checks for disconnected clients while a round is open.
const TICK: Duration = Duration::from_millis(200);

/// How often an open round logs the clients it is still waiting on.
const WAIT_LOG: Duration = Duration::from_secs(30);

/// Loads the data, waits for clients and runs every round; returns the summary.
pub async fn drive(
    scenario: Scenario,
    shared: Arc<Shared>,
    opts: &ServerOptions,
) -> Result<Summary, ServerError> {
    let hash = scenario.hash();
    let s2 = scenario.clone();
    let data = tokio::task::spawn_blocking(move || s2.load_data())
        .await
        .map_err(|e| ServerError::Transport(e.to_string()))??;
    let mut engine = Engine::new(scenario.clone(), Arc::new(data), "grpc")?;
    // The coordinator does not train: its data sets are only read to evaluate.
    engine.stream_evaluation_data();
    shared.set_update_tensors(engine.update_tensors().len());
    let by_arrival =
        scenario.round.quorum > 0 && scenario.round.quorum_order == QuorumOrder::Arrival;
    if by_arrival {
        engine.quorum_by_arrival();
        tracing::info!(
            quorum = scenario.round.quorum,
            "rounds close at the first quorum results to arrive (round.quorum_order = \"arrival\"; not reproducible)"
        );
    }
    if engine.is_asynchronous() && scenario.deploy.order == ApplyOrder::Arrival {
        engine.apply_in_arrival_order();
        tracing::info!(
            "updates are applied as they arrive (deploy.order = \"arrival\"; not reproducible)"
        );
    }
    if opts.resume {
        let snap = checkpoint::load(&opts.out, &hash)?;
        let in_flight = snap.asynchronous.as_ref().map(|a| a.flights.len());
        tracing::info!(
            round = snap.next_round,
            ?in_flight,
            "resuming from checkpoint"
        );
        engine.restore(snap)?;
        engine.resume_writing_to(&opts.out)?;
    } else {
        engine.write_to(&opts.out)?;
    }
    let mut results = shared
        .take_results()
        .ok_or_else(|| ServerError::Transport("driver started twice".into()))?;
    wait_for_clients(
        &shared,
        scenario.min_clients(),
        scenario.deploy.wait_timeout_s,
    )
    .await?;

    let _ = std::fs::remove_dir_all(&shared.spool); // leftovers of a crashed run
    let checkpoints = Checkpoints {
        out: &opts.out,
        run_id: &shared.run_id,
        hash: &hash,
    };
    if engine.is_asynchronous() {
        drive_asynchronous(&mut engine, &shared, &mut results, &scenario, &checkpoints).await?;
    } else {
        while !engine.is_done() {
            if shared.registry().available().is_empty() {
                wait_for_clients(&shared, 1, scenario.deploy.wait_timeout_s).await?;
            }
            run_round(&mut engine, &shared, &mut results, &scenario).await?;
            save_checkpoint(&checkpoints, &engine).await;
        }
    }
    let _ = std::fs::remove_dir_all(&shared.spool);
    let summary = tokio::task::block_in_place(|| engine.finish())?;
    tracing::info!(
        peak_rss_mib = ?peak_rss_mib(),
        hash = %summary.final_model_hash,
        "run finished"
    );
    Ok(summary)
}

/// Attempts at writing a round's checkpoint before the run goes on without it.
const CHECKPOINT_ATTEMPTS: u32 = 4;

/// Where and for which run checkpoints are written.
struct Checkpoints<'a> {
    out: &'a std::path::Path,
    run_id: &'a str,
    hash: &'a str,
}

/// Writes the checkpoint after a round (after a server update in an asynchronous run), retrying with
/// backoff. A checkpoint that cannot be written (disk full, out of file descriptors) never ends the
/// run: the previous checkpoint stays intact (it is replaced atomically) and a `--resume` would repeat
/// the rounds since then.
async fn save_checkpoint(to: &Checkpoints<'_>, engine: &Engine) {
    let snap = engine.snapshot();
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=CHECKPOINT_ATTEMPTS {
        match checkpoint::save(to.out, to.run_id, to.hash, &snap) {
            Ok(()) => return,
            Err(e) if attempt < CHECKPOINT_ATTEMPTS => {
                tracing::warn!(error = %e, attempt, retry_in_ms = wait.as_millis() as u64, "cannot write the checkpoint; retrying");
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            Err(e) => tracing::error!(
                error = %e,
                round = snap.next_round,
                "cannot write the checkpoint; the run goes on and the previous checkpoint is kept"
            ),
        }
    }
}

async fn wait_for_clients(
    shared: &Shared,
    required: usize,
    timeout_s: f64,
) -> Result<(), ServerError> {
    let start = Instant::now();
    let mut last_log = usize::MAX;
    let mut last_at = start;
    loop {
        let joined = shared.registry().available().len();
        if joined >= required {
            return Ok(());
        }
        if start.elapsed().as_secs_f64() > timeout_s {
            return Err(ServerError::NotEnoughClients {
                joined,
                required,
                secs: timeout_s,
            });
        }
        // At the default log level (target `fedsim::status`): on every change, and every
        // WAIT_LOG while nothing changes.
        if joined != last_log || last_at.elapsed() >= WAIT_LOG {
            tracing::info!(
                target: "fedsim::status",
                "waiting for clients: {joined} of {required} joined (giving up in {:.0} s)",
                (timeout_s - start.elapsed().as_secs_f64()).max(0.0)
            );
            last_log = joined;
            last_at = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The gRPC status a refused submission is answered with.
fn refusal_status(e: &Refusal) -> Status {
    match e {
        Refusal::Stale { .. } => Status::failed_precondition(e.to_string()),
        Refusal::NotSelected { .. } => Status::failed_precondition(e.to_string()),
        Refusal::Duplicate { .. } => Status::already_exists(e.to_string()),
        Refusal::Invalid(_) | Refusal::InvalidEvaluation { .. } => {
            Status::invalid_argument(e.to_string())
        }
    }
}

/// Answers the clients whose updates the engine has folded in (or refused at their turn).
fn answer_verdicts(
    engine: &mut Engine,
    replies: &mut HashMap<ClientId, oneshot::Sender<service::Verdict>>,
) {
    for Verdict { client, folded, .. } in engine.take_verdicts() {
        if let Some(reply) = replies.remove(&client) {
            let _ = reply.send(folded.map_err(Status::invalid_argument));
        }
    }
}

async fn run_round(
    engine: &mut Engine,
    shared: &Shared,
    results: &mut mpsc::Receiver<Submission>,
    scenario: &Scenario,
) -> Result<(), ServerError> {
    let available = shared.registry().available();
    let task = engine.begin_round(&available);
    shared.budget.take_peak();
    let payload = wire::encode(&task.broadcast);
    let deadline = (scenario.round.deadline_s > 0.0)
        .then(|| Instant::now() + Duration::from_secs_f64(scenario.round.deadline_s));
    let open = Arc::new(OpenRound {
        kind: TaskKind::Train,
        round: task.round,
        token: format!(
            "{}-{}-{}",
            shared.run_id,
            task.round,
            crate::ids::random_hex(8)
        ),
        selected: task.selected.clone(),
        max_steps: task.max_steps.clone(),
        payload,
        deadline,
        submitted: Default::default(),
        uploading: Default::default(),
        bytes_down: Default::default(),
    });
    let started = Instant::now();
    shared.phase.send_replace(Phase::Open(open.clone()));
    tracing::info!(
        round = task.round + 1,
        selected = task.selected.len(),
        available = available.len(),
        "round open"
    );

    let quorum = if scenario.round.quorum == 0 {
        usize::MAX
    } else {
        scenario.round.quorum
    };
    let round = task.round;
    let mut replies = HashMap::new();
    let mut spooled = 0usize;
    let mut bytes_up = 0u64;
    let mut tick = tokio::time::interval(TICK);
    let mut last_wait_log = Instant::now();
    while engine.awaiting_count() > 0 && engine.updates_received() < quorum {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let missing = engine.awaiting();
            if scenario.round.quorum > 0 && scenario.round.quorum_order == QuorumOrder::Virtual {
                // The virtual quorum was chosen when the round was planned; a member that hangs can
                // only be given up on at the deadline.
                tracing::warn!(
                    round = round + 1,
                    clients = ?&missing[..missing.len().min(10)],
                    "deadline passed; members of the round's virtual quorum never reported (round.quorum_order = \"arrival\" closes at the first results to arrive instead)"
                );
            }
            tracing::info!(
                round = round + 1,
                missing = missing.len(),
                "deadline passed; closing the round"
            );
            break;
        }
        tokio::select! {
            sub = results.recv() => {
                let Some(sub) = sub else { break };
                let Submission { client, round: sub_round, num_samples, result, wire_bytes, reply } = sub;
                let Outcome::Update(update) = result else {
                    let _ = reply.send(Err(Status::failed_precondition(format!("round {} is a training round: submit an update", round + 1))));
                    continue;
                };
                let outcome = match update {
                    Ok(received) => {
                        let is_spooled = matches!(received, Received::Spooled(_));
                        (ClientOutcome::update(received, num_samples), is_spooled)
                    }
                    Err(reason) => {
                        tracing::info!(round = round + 1, client, %reason, "client could not train; dropped from the round");
                        (ClientOutcome::Dropped(reason), false)
                    }
                };
                let (outcome, is_spooled) = outcome;
                let is_update = matches!(outcome, ClientOutcome::Update { .. });
                // Validation (and decoding a spooled update at its turn) is CPU work: keep it off the
                // async workers that answer heartbeats.
                let submitted = tokio::task::block_in_place(|| engine.submit(sub_round, client, outcome));
                match submitted {
                    Ok(()) => {
                        bytes_up += wire_bytes;
                        if let Ok(mut set) = open.submitted.lock() {
                            set.insert(client);
                        }
                        if is_update {
                            spooled += usize::from(is_spooled);
                            replies.insert(client, reply);
                        } else {
                            let _ = reply.send(Ok(()));
                        }
                    }
                    Err(e) => {
                        if matches!(e, Refusal::Invalid(_)) {
                            bytes_up += wire_bytes;
                            if let Ok(mut set) = open.submitted.lock() {
                                set.insert(client);
                            }
                        }
                        match &e {
                            Refusal::Duplicate { .. } => tracing::warn!(round = round + 1, client, error = %e, "duplicate result refused"),
                            Refusal::Stale { .. } => tracing::warn!(round = round + 1, client, error = %e, "stale result refused"),
                            Refusal::NotSelected { .. } => tracing::warn!(round = round + 1, client, error = %e, "result of an unselected client refused"),
                            Refusal::Invalid(_) | Refusal::InvalidEvaluation { .. } => tracing::warn!(round = round + 1, client, error = %e, "invalid update refused; client dropped from the round"),
                        }
                        let _ = reply.send(Err(refusal_status(&e)));
                    }
                }
                answer_verdicts(engine, &mut replies);
            }
            _ = tick.tick() => {
                if last_wait_log.elapsed() >= WAIT_LOG {
                    last_wait_log = Instant::now();
                    let awaiting = engine.awaiting();
                    tracing::info!(
                        round = round + 1,
                        waiting_for = awaiting.len(),
                        clients = ?&awaiting[..awaiting.len().min(10)],
                        deadline_in_s = ?deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs()),
                        "round waiting on clients"
                    );
                }
                let gone: Vec<_> = {
                    let reg = shared.registry();
                    engine.awaiting().into_iter().filter(|&c| !reg.is_alive(c)).collect()
                };
                for c in gone {
                    tracing::warn!(round = round + 1, client = c, "client disconnected or timed out; dropped from the round");
                    let _ = engine.submit(round, c, ClientOutcome::Dropped("disconnected".into()));
                }
                answer_verdicts(engine, &mut replies);
            }
        }
    }
    shared.phase.send_replace(Phase::Waiting);
    let mut extra = vec![
        ("updates_spooled".to_string(), spooled as f64),
        (
            "update_memory_peak_mib".to_string(),
            shared.budget.take_peak() as f64 / (1 << 20) as f64,
        ),
    ];
    if let Some(rss) = peak_rss_mib() {
        extra.push(("coordinator_peak_rss_mib".to_string(), rss));
    }
    let io = RoundIo {
        train_time: started.elapsed(),
        wire_bytes_up: Some(bytes_up),
        wire_bytes_down: Some(open.bytes_down.load(Ordering::Relaxed)),
        extra,
    };
    let end = tokio::task::block_in_place(|| engine.end_round(io))?;
    answer_verdicts(engine, &mut replies);
    let rec = match end {
        RoundEnd::Recorded(rec) => *rec,
        RoundEnd::EvaluationDue => {
            evaluate(engine, shared, results, scenario, Training::Between).await?
        }
    };
    tracing::info!(
        round = rec.round,
        participants = rec.participants,
        acc = ?rec.test_accuracy,
        secs = rec.time_round_s,
        "round closed"
    );
    Ok(())
}

/// Runs an asynchronous strategy (FedBuff, FedAsync) over the connected clients: every dispatch the
/// engine starts is published as an open task set (several at once), and results go to the engine as
/// they arrive. An accepted upload is answered at once: asynchronous strategies keep no client state to
/// commit, and a client waiting for its update to be applied could not evaluate in the meantime. A
/// client that disconnects, or does not report within `round.deadline_s` of its dispatch, ends its task
/// without an update. A due federated evaluation is one more open task set next to the training ones.
/// A checkpoint is written after every server update (and its federated evaluation), with the tasks in
/// flight; after `--resume` the engine starts those tasks again first, and they are published as open
/// task sets like new dispatches (results of the killed coordinator's tasks carry its round tokens and
/// are refused, so the clients fetch the tasks again).
async fn drive_asynchronous(
    engine: &mut Engine,
    shared: &Shared,
    results: &mut mpsc::Receiver<Submission>,
    scenario: &Scenario,
    checkpoints: &Checkpoints<'_>,
) -> Result<(), ServerError> {
    let mut open: Vec<Arc<OpenRound>> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    let mut last_wait_log = Instant::now();
    let deadline_s = scenario.round.deadline_s;
    let deadline =
        || (deadline_s > 0.0).then(|| Instant::now() + Duration::from_secs_f64(deadline_s));
    let publish = |open: &Vec<Arc<OpenRound>>| {
        shared
            .phase
            .send_replace(Phase::Tasks(Arc::new(open.clone())));
    };
    loop {
        let available = shared.registry().available();
        if available.is_empty() && engine.in_flight().is_empty() {
            wait_for_clients(shared, 1, scenario.deploy.wait_timeout_s).await?;
            continue;
        }
        match tokio::task::block_in_place(|| engine.step(&available))? {
            AsyncStep::Start(task) => {
                tracing::debug!(dispatch = task.round + 1, clients = ?task.selected, "tasks started");
                open.push(Arc::new(OpenRound {
                    kind: TaskKind::Train,
                    round: task.round,
                    token: format!(
                        "{}-a{}-{}",
                        shared.run_id,
                        task.round,
                        crate::ids::random_hex(8)
                    ),
                    selected: task.selected,
                    max_steps: task.max_steps,
                    payload: wire::encode(&task.broadcast),
                    deadline: deadline(),
                    submitted: Default::default(),
                    uploading: Default::default(),
                    bytes_down: Default::default(),
                }));
                publish(&open);
                continue;
            }
            AsyncStep::Ended(end) => {
                engine.take_verdicts();
                let rec = match end {
                    RoundEnd::Recorded(rec) => *rec,
                    RoundEnd::EvaluationDue => {
                        evaluate(
                            engine,
                            shared,
                            results,
                            scenario,
                            Training::InFlight(&mut open),
                        )
                        .await?
                    }
                };
                tracing::info!(
                    round = rec.round,
                    participants = rec.participants,
                    acc = ?rec.test_accuracy,
                    virtual_time_s = ?rec.extra.get("virtual_time_s"),
                    "server update"
                );
                save_checkpoint(checkpoints, engine).await;
                continue;
            }
            AsyncStep::Done => break,
            AsyncStep::Wait => {}
        }
        tokio::select! {
            sub = results.recv() => {
                let Some(sub) = sub else { break };
                take_training_result(engine, &open, sub);
            }
            _ = tick.tick() => {
                end_lost_tasks(engine, shared, &open);
                if last_wait_log.elapsed() >= WAIT_LOG {
                    last_wait_log = Instant::now();
                    let in_flight = engine.in_flight();
                    tracing::info!(
                        in_flight = in_flight.len(),
                        clients = ?&in_flight[..in_flight.len().min(10)],
                        "waiting on clients"
                    );
                }
            }
        }
        engine.take_verdicts();
        // Dispatches whose clients have all reported are closed.
        let before = open.len();
        open.retain(|o| o.selected.iter().any(|&c| o.hands_task_to(c)));
        if open.len() != before {
            publish(&open);
        }
    }
    shared.phase.send_replace(Phase::Waiting);
    Ok(())
}

/// Hands one training result of an asynchronous run to the engine and answers it at once.
fn take_training_result(engine: &mut Engine, open: &[Arc<OpenRound>], sub: Submission) {
    let Submission {
        client,
        round: dispatch,
        num_samples,
        result,
        reply,
        ..
    } = sub;
    let Outcome::Update(update) = result else {
        let _ = reply.send(Err(Status::failed_precondition(
            "no federated evaluation is open: submit an update",
        )));
        return;
    };
    let outcome = match update {
        Ok(received) => ClientOutcome::update(received, num_samples),
        Err(reason) => ClientOutcome::Dropped(reason),
    };
    let submitted = tokio::task::block_in_place(|| engine.submit(dispatch, client, outcome));
    let counted = submitted.is_ok() || matches!(submitted, Err(Refusal::Invalid(_)));
    if counted
        && let Some(o) = open
            .iter()
            .find(|o| o.kind == TaskKind::Train && o.round == dispatch)
        && let Ok(mut set) = o.submitted.lock()
    {
        set.insert(client);
    }
    if let Err(e) = &submitted {
        tracing::warn!(dispatch = dispatch + 1, client, error = %e, "result refused");
    }
    let _ = reply.send(submitted.map_err(|e| refusal_status(&e)));
}

/// Ends the training tasks of clients that disconnected or missed `round.deadline_s` (asynchronous runs).
fn end_lost_tasks(engine: &mut Engine, shared: &Shared, open: &[Arc<OpenRound>]) {
    let now = Instant::now();
    let ended: Vec<(u64, ClientId, &str)> = {
        let reg = shared.registry();
        engine
            .in_flight()
            .into_iter()
            .filter_map(|c| {
                let o = open
                    .iter()
                    .find(|o| o.kind == TaskKind::Train && o.hands_task_to(c))?;
                if !reg.is_alive(c) {
                    Some((o.round, c, "disconnected"))
                } else if o.deadline.is_some_and(|d| now >= d) {
                    Some((
                        o.round,
                        c,
                        "did not report within round.deadline_s of its start",
                    ))
                } else {
                    None
                }
            })
            .collect()
    };
    for (dispatch, c, why) in ended {
        tracing::warn!(
            dispatch = dispatch + 1,
            client = c,
            why,
            "task ended without an update"
        );
        if let Some(o) = open
            .iter()
            .find(|o| o.kind == TaskKind::Train && o.round == dispatch)
            && let Ok(mut set) = o.submitted.lock()
        {
            set.insert(c);
        }
        let _ = engine.submit(dispatch, c, ClientOutcome::Dropped(why.to_string()));
    }
}

/// What else is open while a federated evaluation runs.
enum Training<'a> {
    /// Nothing: synchronous rounds evaluate between rounds.
    Between,
    /// The training dispatches of an asynchronous run, which keep taking results.
    InFlight(&'a mut Vec<Arc<OpenRound>>),
}

impl Training<'_> {
    /// Shows the clients the open tasks: `eval` alone between rounds, next to the dispatches otherwise.
    fn publish(&self, shared: &Shared, eval: Option<&Arc<OpenRound>>) {
        let phase = match (self, eval) {
            (Training::Between, Some(e)) => Phase::Open(e.clone()),
            (Training::Between, None) => Phase::Waiting,
            (Training::InFlight(open), e) => {
                let mut list: Vec<Arc<OpenRound>> = open.to_vec();
                list.extend(e.cloned());
                Phase::Tasks(Arc::new(list))
            }
        };
        shared.phase.send_replace(phase);
    }
}

/// Runs a due federated evaluation over the connected clients: the chosen ones fetch an EVALUATE
/// task (the global model), evaluate on their local test sets and submit their results, which the
/// engine validates. Closes at the last result, at `round.deadline_s` when set, or when the clients
/// that have not reported are gone. In an asynchronous run the training tasks stay open meanwhile:
/// their results keep arriving and are taken (and applied once the evaluation has ended). Returns
/// the round's (server update's) record.
async fn evaluate(
    engine: &mut Engine,
    shared: &Shared,
    results: &mut mpsc::Receiver<Submission>,
    scenario: &Scenario,
    mut training: Training<'_>,
) -> Result<fedsim_engine::report::RoundRecord, ServerError> {
    let available = shared.registry().available();
    let task = engine.begin_evaluation(&available)?;
    let round = task.round;
    let eval = Arc::new(OpenRound {
        kind: TaskKind::Evaluate,
        round,
        token: format!("{}-e{}-{}", shared.run_id, round, crate::ids::random_hex(8)),
        selected: task.clients.clone(),
        max_steps: Default::default(),
        payload: wire::encode(&task.model),
        deadline: (scenario.round.deadline_s > 0.0)
            .then(|| Instant::now() + Duration::from_secs_f64(scenario.round.deadline_s)),
        submitted: Default::default(),
        uploading: Default::default(),
        bytes_down: Default::default(),
    });
    training.publish(shared, Some(&eval));
    tracing::info!(
        round = round + 1,
        clients = task.clients.len(),
        "federated evaluation open"
    );
    let mut tick = tokio::time::interval(TICK);
    while !engine.awaiting_evaluation().is_empty() {
        if eval.deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!(
                round = round + 1,
                missing = engine.awaiting_evaluation().len(),
                "deadline passed; closing the federated evaluation"
            );
            break;
        }
        tokio::select! {
            sub = results.recv() => {
                let Some(sub) = sub else { break };
                let Outcome::Evaluation(result) = sub.result else {
                    match &mut training {
                        Training::InFlight(open) => take_training_result(engine, open, sub),
                        Training::Between => {
                            let _ = sub.reply.send(Err(Status::failed_precondition(
                                "a federated evaluation is open: submit an evaluation result",
                            )));
                        }
                    }
                    continue;
                };
                let verdict = engine.submit_evaluation(sub.round, sub.client, result);
                // An accepted or refused result ends the client's part: it is not handed the task
                // again (a stale or unchosen one never had a part).
                let answered = !matches!(verdict, Err(Refusal::Stale { .. } | Refusal::NotSelected { .. }));
                if answered && let Ok(mut set) = eval.submitted.lock() {
                    set.insert(sub.client);
                }
                let _ = sub.reply.send(verdict.map_err(|e| refusal_status(&e)));
            }
            _ = tick.tick() => {
                if let Training::InFlight(open) = &training {
                    end_lost_tasks(engine, shared, open);
                }
                let gone: Vec<_> = {
                    let reg = shared.registry();
                    engine.awaiting_evaluation().into_iter().filter(|&c| !reg.is_alive(c)).collect()
                };
                for c in gone {
                    tracing::warn!(round = round + 1, client = c, "client disconnected or timed out; left out of the evaluation");
                    let _ = engine.submit_evaluation(round, c, Err("disconnected".into()));
                }
            }
        }
    }
    training.publish(shared, None);
    let rec = engine.end_evaluation()?;
    tracing::info!(
        round = rec.round,
        clients = ?rec.extra.get("fed_clients"),
        accuracy = ?rec.extra.get("fed_accuracy"),
        p10 = ?rec.extra.get("fed_p10_accuracy"),
        "federated evaluation closed"
    );
    Ok(rec)
}
