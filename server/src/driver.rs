//! The round driver: owns the engine and runs rounds over the connected clients.
//!
//! Results arrive in any order, but the engine folds updates in ascending client id so the aggregate
//! never depends on arrival order. The driver therefore feeds the engine itself, in order, through a
//! [`Reorder`] buffer. Early arrivals wait there as they were received: in memory under the
//! [`crate::budget`], or in spool files: the coordinator's memory stays O(model + budget) whatever the
//! number of clients and their arrival order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fedsim_core::engine::RoundIo;
use fedsim_core::report::Summary;
use fedsim_core::{ClientId, ClientOutcome, CoreError, Engine, Scenario};
use fedsim_proto::wire;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

use crate::budget::Received;
use crate::service::{OpenRound, Phase, Shared, Submission, Verdict};
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

    let _ = std::fs::remove_dir_all(&shared.spool); // leftovers of a crashed run
    while !engine.is_done() {
        if shared.registry().available().is_empty() {
            wait_for_clients(&shared, 1, scenario.deploy.wait_timeout_s).await?;
        }
        run_round(&mut engine, &shared, &mut results, &scenario).await?;
        checkpoint::save(&opts.out, &shared.run_id, &hash, &engine.snapshot())?;
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

async fn wait_for_clients(
    shared: &Shared,
    required: usize,
    timeout_s: f64,
) -> Result<(), ServerError> {
    let start = Instant::now();
    let mut last_log = usize::MAX;
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

/// The coordinator's peak resident memory (`VmHWM`) in MiB, where the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// An outcome waiting for its turn.
#[derive(Debug)]
enum Held {
    Update {
        received: Received,
        num_samples: u64,
        reply: oneshot::Sender<Verdict>,
    },
    Dropped(String),
}

/// The reorder buffer of one round: hands outcomes to the engine in ascending client id.
#[derive(Debug, Default)]
pub struct Reorder {
    order: Vec<ClientId>,
    next: usize,
    held: BTreeMap<ClientId, Held>,
    /// Updates of this round that were spooled to disk.
    pub spooled: usize,
}

impl Reorder {
    /// A buffer for a round whose clients are `selected` (ascending).
    pub fn new(selected: &[ClientId]) -> Self {
        Self {
            order: selected.to_vec(),
            ..Self::default()
        }
    }

    /// Accepts an update; it is folded in as soon as every earlier client is in.
    fn update(
        &mut self,
        engine: &mut Engine,
        client: ClientId,
        received: Received,
        num_samples: u64,
        reply: oneshot::Sender<Verdict>,
    ) {
        if matches!(received, Received::Spooled(_)) {
            self.spooled += 1;
        }
        self.held.insert(
            client,
            Held::Update {
                received,
                num_samples,
                reply,
            },
        );
        self.feed(engine);
    }

    /// Records that `client` will not report this round.
    fn drop_client(&mut self, engine: &mut Engine, client: ClientId, reason: String) {
        self.held.insert(client, Held::Dropped(reason));
        self.feed(engine);
    }

    /// Hands the engine every outcome whose predecessors are all in.
    fn feed(&mut self, engine: &mut Engine) {
        while let Some(&c) = self.order.get(self.next) {
            let Some(held) = self.held.remove(&c) else {
                break;
            };
            self.next += 1;
            match held {
                Held::Dropped(reason) => {
                    let _ = engine.submit(c, ClientOutcome::Dropped(reason));
                }
                Held::Update {
                    received,
                    num_samples,
                    reply,
                } => {
                    // A spooled update is decoded (and validated) only now.
                    let verdict = match received.into_payload() {
                        Ok(payload) => engine
                            .submit(
                                c,
                                ClientOutcome::Update {
                                    payload,
                                    num_samples,
                                },
                            )
                            .map_err(|e| Status::invalid_argument(e.to_string())),
                        Err(e) => {
                            tracing::warn!(client = c, error = %e, "malformed result refused");
                            let _ = engine.submit(c, ClientOutcome::Dropped(e.clone()));
                            Err(Status::invalid_argument(e))
                        }
                    };
                    let _ = reply.send(verdict);
                }
            }
        }
    }

    /// Closes the round: clients that have not reported are dropped, held updates are folded in.
    fn close(&mut self, engine: &mut Engine) {
        for i in self.next..self.order.len() {
            let c = self.order[i];
            self.held.entry(c).or_insert_with(|| {
                tracing::info!(client = c, "round closed before the client reported");
                Held::Dropped("did not report before the round closed".into())
            });
        }
        self.feed(engine);
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
    let mut reorder = Reorder::new(&task.selected);
    shared.budget.take_peak();
    let payload = wire::encode(&task.broadcast);
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
        max_steps: task.max_steps.clone(),
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
        available = available.len(),
        "round open"
    );

    let mut outstanding: BTreeSet<_> = task.selected.iter().copied().collect();
    let quorum = if scenario.round.quorum == 0 {
        usize::MAX
    } else {
        scenario.round.quorum
    };
    let num_params = engine.global().len();
    let mut reported = 0usize;
    let mut bytes_up = 0u64;
    let mut tick = tokio::time::interval(TICK);
    while !outstanding.is_empty() && reported < quorum {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            tracing::info!(
                round = task.round + 1,
                missing = outstanding.len(),
                "deadline passed; closing the round"
            );
            break;
        }
        tokio::select! {
            sub = results.recv() => {
                let Some(sub) = sub else { break };
                if sub.round != task.round {
                    let _ = sub.reply.send(Err(Status::failed_precondition(format!(
                        "round {} is closed", sub.round
                    ))));
                    continue;
                }
                if !outstanding.remove(&sub.client) {
                    tracing::warn!(round = task.round + 1, client = sub.client, "duplicate result refused");
                    let _ = sub.reply.send(Err(Status::already_exists(format!(
                        "client {} already reported or was dropped in round {}",
                        sub.client, sub.round
                    ))));
                    continue;
                }
                if let Ok(mut set) = open.submitted.lock() {
                    set.insert(sub.client);
                }
                bytes_up += sub.wire_bytes;
                match sub.update {
                    Ok(received) => {
                        // An update in memory is checked on arrival, so a bad one is refused at once
                        // even when it waits for its turn; a spooled one is checked when folded in.
                        let check = match &received {
                            Received::Memory(p, _) => engine.strategy().validate_update(sub.client, p, num_params),
                            Received::Spooled(_) => Ok(()),
                        };
                        match check {
                            Ok(()) => {
                                reported += 1;
                                reorder.update(engine, sub.client, received, sub.num_samples, sub.reply);
                            }
                            Err(e) => {
                                tracing::warn!(round = task.round + 1, client = sub.client, error = %e, "invalid update refused; client dropped from the round");
                                let _ = sub.reply.send(Err(Status::invalid_argument(e.to_string())));
                                reorder.drop_client(engine, sub.client, e.to_string());
                            }
                        }
                    }
                    Err(reason) => {
                        tracing::info!(round = task.round + 1, client = sub.client, %reason, "client could not train; dropped from the round");
                        let _ = sub.reply.send(Ok(()));
                        reorder.drop_client(engine, sub.client, reason);
                    }
                }
            }
            _ = tick.tick() => {
                let gone: Vec<_> = {
                    let reg = shared.registry();
                    outstanding.iter().copied().filter(|&c| !reg.is_alive(c)).collect()
                };
                for c in gone {
                    tracing::warn!(round = task.round + 1, client = c, "client disconnected or timed out; dropped from the round");
                    outstanding.remove(&c);
                    reorder.drop_client(engine, c, "disconnected".into());
                }
            }
        }
    }
    shared.phase.send_replace(Phase::Waiting);
    reorder.close(engine);
    let mut extra = vec![
        ("updates_spooled".to_string(), reorder.spooled as f64),
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
