//! The in-process runtime: every client of a scenario is a virtual client trained on a thread pool.
//!
//! Each round the selected clients run their strategy's client half in parallel (one client per task,
//! single-threaded kernels), in chunks so memory stays bounded; results are handed to the shared
//! [`Engine`] in ascending client id. Results are bit-identical whatever the thread count.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fedsim_algorithms::ClientState;
use fedsim_engine::engine::{AsyncStep, RoundEnd, RoundIo, run_client, run_evaluation};
use fedsim_engine::fedeval::ClientEval;
use fedsim_engine::report::{RoundRecord, Summary};
use fedsim_engine::{ClientOutcome, Engine, EngineError, Scenario};
use fedsim_nn::Scratch;
use fedsim_types::{ClientId, Payload};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// An error from the core library (scenario, data, model, strategy, output).
    #[error(transparent)]
    Core(#[from] EngineError),
    /// The thread pool could not be created.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

/// Options of a simulation run.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Worker threads (default: all cores).
    pub threads: Option<usize>,
    /// Show a progress bar (drawn only when stderr is a terminal).
    pub progress: bool,
    /// Write the clients that took part in each round to this CSV trace (`round,client`), for replay
    /// with `[participation] kind = "trace"`.
    pub record_participation: Option<std::path::PathBuf>,
}

/// Per-client persistent strategy state, kept only for clients that have any.
#[derive(Debug, Default)]
pub struct ClientStates {
    states: HashMap<ClientId, ClientState>,
}

impl ClientStates {
    /// Takes a client's state out (empty if none).
    pub fn take(&mut self, c: ClientId) -> ClientState {
        self.states.remove(&c).unwrap_or_default()
    }

    /// Stores a client's state (dropped if empty).
    pub fn put(&mut self, c: ClientId, s: ClientState) {
        if !s.is_empty() {
            self.states.insert(c, s);
        }
    }

    /// Bytes held by all client states.
    pub fn bytes(&self) -> usize {
        self.states.values().map(Payload::heap_bytes).sum()
    }
}

/// Loads the scenario's data and runs it to the end, writing results into `out`.
pub fn run(scenario: Scenario, out: Option<&Path>, opts: &SimOptions) -> Result<Summary, SimError> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(t) = opts.threads {
        builder = builder.num_threads(t);
    }
    let pool = builder
        .build()
        .map_err(|e| SimError::ThreadPool(e.to_string()))?;
    if scenario.data.is_external() {
        return Err(SimError::Core(EngineError::from(
            fedsim_types::ConfigError::new(
                "data.kind",
                "\"external\" data lives on client processes (fedsim server + fedsim client --data FILE); fedsim sim needs a data set",
            ),
        )));
    }
    pool.install(|| {
        let t = Instant::now();
        let data = scenario.load_data()?;
        tracing::info!(
            train = data.train.len(),
            test = data.test.len(),
            clients = scenario.clients,
            secs = t.elapsed().as_secs_f64(),
            "data loaded"
        );
        let mut engine = Engine::new(scenario, Arc::new(data), "sim")?;
        if let Some(dir) = out {
            engine.write_to(dir)?;
        }
        run_engine(&mut engine, opts, |_| {})
    })
}

/// Runs an engine to the end in this process; `on_round` sees every round's record.
pub fn run_engine(
    engine: &mut Engine,
    opts: &SimOptions,
    mut on_round: impl FnMut(&RoundRecord),
) -> Result<Summary, SimError> {
    let scenario = engine.scenario().clone();
    let all: Vec<ClientId> = (0..scenario.clients as u32).collect();
    let mut states = ClientStates::default();
    let bar = progress_bar(opts.progress, scenario.rounds);
    let mut recorder = match &opts.record_participation {
        Some(p) => Some(
            fedsim_engine::participation::trace::TraceRecorder::create(p).map_err(|source| {
                EngineError::Io {
                    path: p.clone(),
                    source,
                }
            })?,
        ),
        None => None,
    };
    tracing::info!(
        scenario = %scenario.name,
        model = %engine.model().name(),
        params = engine.global().len(),
        strategy = %engine.strategy().name(),
        threads = rayon::current_num_threads(),
        "simulation started"
    );
    let mut observe = |rec: &RoundRecord| -> Result<(), SimError> {
        if let Some(b) = &bar {
            b.inc(1);
            if let Some(acc) = rec.test_accuracy {
                b.set_message(format!("acc {:.2}%", acc * 100.0));
            }
        }
        tracing::debug!(round = rec.round, acc = ?rec.test_accuracy, loss = ?rec.train_loss, "round done");
        if let (Some(r), Some(p)) = (recorder.as_mut(), &opts.record_participation) {
            r.record(rec.round, &rec.participant_ids)
                .map_err(|source| EngineError::Io {
                    path: p.clone(),
                    source,
                })?;
        }
        on_round(rec);
        Ok(())
    };
    if engine.is_asynchronous() {
        run_asynchronous(engine, &all, &mut observe)?;
    } else {
        while !engine.is_done() {
            let rec = run_round(engine, &mut states, &all)?;
            observe(&rec)?;
        }
    }
    if let Some(b) = bar {
        b.finish();
    }
    Ok(engine.finish()?)
}

/// Runs one round in this process: the engine selects from `available`, the selected clients train in
/// parallel (chunks of a few per thread, so memory stays bounded) with their state from `states`, and
/// their results are submitted in ascending client id. Returns the round's record.
pub fn run_round(
    engine: &mut Engine,
    states: &mut ClientStates,
    available: &[ClientId],
) -> Result<RoundRecord, SimError> {
    // Only what the clients need: the scenario itself may hold per-client lists (1M probabilities).
    let (seed, train) = (engine.scenario().seed, engine.scenario().train.clone());
    // Clients per parallel chunk: enough to keep every thread busy, few enough to bound memory.
    let chunk = (rayon::current_num_threads() * 8).max(16);
    let task = engine.begin_round(available);
    let mut train_time = std::time::Duration::ZERO;
    let mut waiting = HashMap::new();
    for ids in task.selected.chunks(chunk) {
        let t = Instant::now();
        let work: Vec<(ClientId, ClientState)> = ids.iter().map(|&c| (c, states.take(c))).collect();
        let results: Vec<(ClientId, ClientState, ClientState, ClientOutcome)> = {
            let (strategy, model, train) = (engine.strategy(), engine.model(), &train);
            let engine_ref = &*engine;
            work.into_par_iter()
                .map_init(Scratch::default, |scratch, (c, mut state)| {
                    // The state the client goes back to if its update is not folded in.
                    let before = state.clone();
                    let data = engine_ref.client_data(c);
                    let outcome = match run_client(
                        strategy,
                        model,
                        data,
                        train,
                        seed,
                        task.round,
                        c,
                        &mut state,
                        &task.broadcast,
                        task.max_steps.get(&c).copied(),
                        scratch,
                    ) {
                        Ok(payload) => ClientOutcome::update(payload, data.len() as u64),
                        Err(e) => ClientOutcome::Dropped(e.to_string()),
                    };
                    (c, before, state, outcome)
                })
                .collect()
        };
        train_time += t.elapsed();
        for (c, before, after, outcome) in results {
            let is_update = matches!(outcome, ClientOutcome::Update { .. });
            // A refused update is logged by the engine and dropped from the round; the run goes on.
            match engine.submit(task.round, c, outcome) {
                Ok(()) if is_update => {
                    waiting.insert(c, (before, after));
                }
                _ => states.put(c, before),
            }
            commit_folded(engine, states, &mut waiting);
        }
    }
    let extra = vec![("client_state_bytes".to_string(), states.bytes() as f64)];
    let end = engine.end_round(RoundIo {
        train_time,
        extra,
        ..RoundIo::default()
    })?;
    commit_folded(engine, states, &mut waiting);
    for (c, (before, _)) in waiting {
        states.put(c, before);
    }
    match end {
        RoundEnd::Recorded(rec) => Ok(*rec),
        RoundEnd::EvaluationDue => Ok(run_federated_evaluation(engine, available)?),
    }
}

/// Runs an asynchronous strategy (FedBuff, FedAsync) to the end in this process. Tasks the engine
/// starts are queued; when the engine waits for outcomes, every queued task trains in parallel and
/// their outcomes are submitted in (dispatch, client) order. The engine applies updates in virtual
/// time order whatever the batching, so the result does not depend on the thread count.
pub fn run_asynchronous(
    engine: &mut Engine,
    available: &[ClientId],
    observe: &mut dyn FnMut(&RoundRecord) -> Result<(), SimError>,
) -> Result<(), SimError> {
    let mut queued: Vec<(u64, ClientId, Arc<Payload>)> = Vec::new();
    loop {
        match engine.step(available)? {
            AsyncStep::Start(task) => queued.extend(
                task.selected
                    .iter()
                    .map(|&c| (task.round, c, task.broadcast.clone())),
            ),
            AsyncStep::Wait => {
                if queued.is_empty() {
                    return Err(SimError::Core(EngineError::Protocol(
                        "the asynchronous engine waits with no task to run".into(),
                    )));
                }
                let t = Instant::now();
                let results: Vec<(u64, ClientId, ClientOutcome)> = {
                    let engine_ref = &*engine;
                    queued
                        .par_drain(..)
                        .map_init(Scratch::default, |scratch, (batch, c, task)| {
                            (
                                batch,
                                c,
                                engine_ref.train_async_task(batch, c, &task, scratch),
                            )
                        })
                        .collect()
                };
                tracing::trace!(
                    tasks = results.len(),
                    secs = t.elapsed().as_secs_f64(),
                    "trained a batch of asynchronous tasks"
                );
                for (batch, c, outcome) in results {
                    // A refused update is logged by the engine; its slot frees as if it had failed.
                    let _ = engine.submit(batch, c, outcome);
                }
                engine.take_verdicts();
            }
            AsyncStep::Ended(end) => {
                engine.take_verdicts();
                let rec = match end {
                    RoundEnd::Recorded(rec) => *rec,
                    RoundEnd::EvaluationDue => run_federated_evaluation(engine, available)?,
                };
                observe(&rec)?;
            }
            AsyncStep::Done => return Ok(()),
        }
    }
}

/// Runs a due federated evaluation in this process: the chosen clients evaluate the global model on
/// their local test sets in parallel (after fine-tuning a copy when `personalize_steps` asks), and
/// their results are submitted in ascending client id. Returns the round's record. Client strategy
/// state is not touched.
pub fn run_federated_evaluation(
    engine: &mut Engine,
    available: &[ClientId],
) -> Result<RoundRecord, SimError> {
    let task = engine.begin_evaluation(available)?;
    let scenario = engine.scenario();
    let (seed, train, eval_batch) = (scenario.seed, &scenario.train, scenario.eval.batch_size);
    let steps = scenario
        .eval
        .federated
        .as_ref()
        .map_or(0, |f| f.personalize_steps);
    let results: Vec<(ClientId, ClientEval)> = {
        let engine_ref = &*engine;
        task.clients
            .par_iter()
            .map_init(Scratch::default, |scratch, &c| {
                let eval = run_evaluation(
                    engine_ref.model(),
                    engine_ref.global(),
                    engine_ref.client_data(c),
                    engine_ref.client_test_data(c),
                    train,
                    steps,
                    seed,
                    task.round,
                    c,
                    eval_batch,
                    scratch,
                );
                (c, eval)
            })
            .collect()
    };
    for (c, eval) in results {
        // An impossible result is logged by the engine and left out; the run goes on.
        let _ = engine.submit_evaluation(task.round, c, Ok(eval));
    }
    Ok(engine.end_evaluation()?)
}

/// A client keeps the state its update came from only once the update is folded into the round (as a
/// client process does on the coordinator's word); otherwise it goes back to the state it had.
fn commit_folded(
    engine: &mut Engine,
    states: &mut ClientStates,
    waiting: &mut HashMap<ClientId, (ClientState, ClientState)>,
) {
    for v in engine.take_verdicts() {
        if let Some((before, after)) = waiting.remove(&v.client) {
            states.put(v.client, if v.folded.is_ok() { after } else { before });
        }
    }
}

fn progress_bar(enabled: bool, rounds: u64) -> Option<ProgressBar> {
    if !enabled {
        return None;
    }
    let bar = ProgressBar::new(rounds);
    let style = ProgressStyle::with_template("round {pos}/{len} [{bar:30}] {msg} eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    Some(bar)
}
