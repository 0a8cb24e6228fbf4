//! The round driver: owns the engine and runs rounds over the connected clients.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fedsim_core::engine::RoundIo;
use fedsim_core::report::Summary;
use fedsim_core::{ClientOutcome, CoreError, Engine, Scenario};
use tokio::sync::mpsc;

use crate::service::{OpenRound, Phase, Shared, Submission};
use crate::{ServerError, ServerOptions, checkpoint};

/// How often the driver checks for disconnected clients while a round is open.
const TICK: Duration = Duration::from_millis(200);

/// Loads the data, waits for clients and runs every round; returns the summary.
pub async fn drive(
    scenario: Scenario,
    shared: Arc<Shared>,
    opts: &ServerOptions,
) -> Result<Summary, ServerError> {
    let hash = scenario.hash();
    let s2 = scenario.clone();
    let data = tokio::task::spawn_blocking(move || {
        fedsim_data::load_federated(&s2.data, &s2.partition, s2.clients, s2.seed)
    })
    .await
    .map_err(|e| ServerError::Transport(e.to_string()))?
    .map_err(CoreError::from)?;
    let mut engine = Engine::new(scenario.clone(), Arc::new(data), "grpc")?;
    if opts.resume {
        let snap = checkpoint::load(&opts.out, &hash)?;
        tracing::info!(round = snap.next_round, "resuming from checkpoint");
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

    while !engine.is_done() {
        if shared.registry().available().is_empty() {
            wait_for_clients(&shared, 1, scenario.deploy.wait_timeout_s).await?;
        }
        run_round(&mut engine, &shared, &mut results, &scenario).await?;
        checkpoint::save(&opts.out, &shared.run_id, &hash, &engine.snapshot())?;
    }
    let summary = tokio::task::block_in_place(|| engine.finish())?;
    Ok(summary)
}

async fn wait_for_clients(
    shared: &Shared,
    required: usize,
    timeout_s: f64,
) -> Result<(), ServerError> {
    let start = Instant::now();
    let mut last_log = 0;
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
        if joined != last_log {
            tracing::info!(joined, required, "waiting for clients");
            last_log = joined;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
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
    let payload = fedsim_proto::wire::encode(&task.broadcast);
    let deadline = (scenario.round.deadline_s > 0.0)
        .then(|| Instant::now() + Duration::from_secs_f64(scenario.round.deadline_s));
    let open = Arc::new(OpenRound {
        round: task.round,
        token: format!(
            "{}-{}-{}",
            shared.run_id,
            task.round,
            crate::service::random_hex(8)
        ),
        selected: task.selected.clone(),
        payload,
        deadline,
        submitted: Default::default(),
        bytes_down: Default::default(),
    });
    let started = Instant::now();
    shared.phase.send_replace(Phase::Open(open.clone()));
    tracing::info!(
        round = task.round + 1,
        selected = task.selected.len(),
        "round open"
    );

    let mut outstanding: BTreeSet<_> = task.selected.iter().copied().collect();
    let quorum = if scenario.round.quorum == 0 {
        usize::MAX
    } else {
        scenario.round.quorum
    };
    let mut reported = 0usize;
    let mut bytes_up = 0u64;
    let mut tick = tokio::time::interval(TICK);
    while !outstanding.is_empty() && reported < quorum {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!(
                round = task.round + 1,
                missing = outstanding.len(),
                "deadline passed"
            );
            break;
        }
        tokio::select! {
            sub = results.recv() => {
                let Some(sub) = sub else { break };
                if sub.round != task.round || !outstanding.contains(&sub.client) {
                    let _ = sub.reply.send(Err(format!("round {} is closed or the result is a duplicate", sub.round)));
                    continue;
                }
                outstanding.remove(&sub.client);
                if let Ok(mut set) = open.submitted.lock() {
                    set.insert(sub.client);
                }
                bytes_up += sub.wire_bytes;
                let outcome = match sub.update {
                    Ok(payload) => ClientOutcome::Update { payload, num_samples: sub.num_samples },
                    Err(reason) => ClientOutcome::Dropped(reason),
                };
                let was_update = matches!(outcome, ClientOutcome::Update { .. });
                let verdict = engine.submit(sub.client, outcome).map_err(|e| e.to_string());
                if verdict.is_ok() && was_update {
                    reported += 1;
                }
                let _ = sub.reply.send(verdict);
            }
            _ = tick.tick() => {
                let gone: Vec<_> = {
                    let reg = shared.registry();
                    outstanding.iter().copied().filter(|&c| !reg.is_alive(c)).collect()
                };
                for c in gone {
                    tracing::warn!(round = task.round + 1, client = c, "client disconnected; dropped from the round");
                    outstanding.remove(&c);
                    let _ = engine.submit(c, ClientOutcome::Dropped("disconnected".into()));
                }
            }
        }
    }
    for &c in &outstanding {
        tracing::info!(
            round = task.round + 1,
            client = c,
            "round closed before the client reported"
        );
    }
    shared.phase.send_replace(Phase::Waiting);
    let io = RoundIo {
        train_time: started.elapsed(),
        wire_bytes_up: Some(bytes_up),
        wire_bytes_down: Some(open.bytes_down.load(Ordering::Relaxed)),
        extra: Vec::new(),
    };
    let rec = tokio::task::block_in_place(|| engine.end_round(io))?;
    tracing::info!(
        round = rec.round,
        participants = rec.participants,
        acc = ?rec.test_accuracy,
        secs = rec.time_round_s,
        "round closed"
    );
    Ok(())
}
