//! The round engine: one implementation of a federated round, driven by both runtimes.
//!
//! A runtime calls [`Engine::begin_round`] with the clients it can reach, delivers the returned
//! [`RoundTask`] to the selected clients however it likes (threads, gRPC), hands each outcome to
//! [`Engine::submit`] in whatever order outcomes arrive, and calls [`Engine::end_round`] when the round
//! closes. This is the whole round protocol, kept here once for both runtimes:
//!
//! - stale results (for a round that is not open), results of clients that were not selected and
//!   second results of a client are refused ([`Refusal`]);
//! - updates are validated by the strategy: on arrival when they are in memory, or when they are folded
//!   in when the runtime keeps them elsewhere until then ([`PayloadSource`], e.g. the coordinator's spool
//!   files);
//! - updates are fed to the strategy in ascending client id through a reorder buffer, so the aggregate
//!   never depends on arrival order or thread count;
//! - every update's fate is reported as a [`Verdict`] ([`Engine::take_verdicts`]): a client keeps the
//!   state its update came from only when the update was folded into the round.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsim_data::FederatedData;
use fedsim_nn::{Model, ModelSpecExt};
use fedsim_types::ConfigError;

use crate::participation::{ParticipationSpecExt, Population, Scheduler};
use crate::report::{InitFrom, RoundRecord, RunWriter, Summary, model_hash, peak_rss_mib};
use crate::scenario::SampleCounts;
use crate::{ClientId, EngineError, Payload, Scenario, Strategy, StrategyError};
use fedsim_algorithms::strategy::{Reporter, Schedule};
use fedsim_algorithms::train::ClientData;
use fedsim_types::rng::Purpose;

mod asynchronous;
mod central;
mod clock;
mod federated;

pub use asynchronous::{AsyncSnapshot, AsyncStep, FlightSnapshot};

pub use crate::local::{run_client, run_evaluation};
pub use crate::protocol::{
    ClientOutcome, EvalTask, PayloadSource, Refusal, RoundEnd, RoundIo, RoundTask, Verdict,
};

#[derive(Debug)]
struct RoundState {
    round: u64,
    selected: Vec<ClientId>,
    next: usize,
    pending: BTreeMap<ClientId, ClientOutcome>,
    /// Clients whose outcome has been submitted (or decided by the plan).
    submitted: std::collections::BTreeSet<ClientId>,
    /// Updates accepted on arrival.
    received: usize,
    reported: Vec<ClientId>,
    /// L2 norm of every folded update (to name the clients behind a non-finite aggregate).
    norms: Vec<(ClientId, f64)>,
    dropped: Vec<(ClientId, String)>,
    bytes_up: u64,
    broadcast_len: u64,
    started: Instant,
    aggregate_time: Duration,
    /// Step budgets of partially working stragglers (for their virtual finish times).
    max_steps: BTreeMap<ClientId, usize>,
    /// Whether the round lasts until the virtual deadline (see [`crate::participation::events::RoundPlan`]).
    waits_for_deadline: bool,
    /// Encoded size of every folded update, for the virtual clock.
    up_bytes: Vec<(ClientId, u64)>,
    /// Virtual seconds the round waits with nobody online.
    idle_s: f64,
}

/// Everything needed to continue a run after a crash: the state between two rounds (between two
/// server updates in an asynchronous run).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// Rounds completed.
    pub next_round: u64,
    /// Global model.
    pub global: Vec<f32>,
    /// The strategy's server state.
    pub strategy_state: Payload,
    /// The participation model's state.
    pub participation_state: Vec<u8>,
    /// Running summary (JSON).
    pub summary_json: String,
    /// Per-client participation counts.
    pub participation_counts: Vec<u32>,
    /// An asynchronous run's clock, counters and tasks in flight (`None` for rounds).
    pub asynchronous: Option<AsyncSnapshot>,
}

/// Runs federated rounds: owns the global model, the strategy's server half, the participation model
/// and the outputs.
pub struct Engine {
    scenario: Scenario,
    data: Arc<FederatedData>,
    model: Box<dyn Model>,
    strategy: Box<dyn Strategy>,
    participation: Scheduler,
    global: Vec<f32>,
    next_round: u64,
    current: Option<RoundState>,
    summary: Summary,
    writer: Option<RunWriter>,
    train_eval_indices: Option<Vec<u32>>,
    /// Whether central evaluation lets go of mapped data pages as it goes ([`Engine::stream_evaluation_data`]).
    stream_eval: bool,
    update_tensors: Vec<String>,
    participation_counts: Vec<u32>,
    verdicts: Vec<Verdict>,
    started: Instant,
    runtime: String,
    /// The closed round's record while its federated evaluation runs.
    awaiting_record: Option<RoundRecord>,
    evaluation: Option<federated::OpenEvaluation>,
    /// The event queue of an asynchronous strategy (FedBuff, FedAsync); `None` for rounds.
    asynchronous: Option<asynchronous::AsyncRun>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("scenario", &self.scenario.name)
            .field("round", &self.next_round)
            .finish()
    }
}

/// Builds the model a scenario describes for its data.
pub fn build_model(
    scenario: &Scenario,
    data: &FederatedData,
) -> Result<Box<dyn Model>, EngineError> {
    Ok(scenario.model.validate()?.build(&data.train.input_spec())?)
}

impl Engine {
    /// An engine for `scenario` on loaded `data`, with the initial global model drawn from the seed.
    pub fn new(
        scenario: Scenario,
        data: Arc<FederatedData>,
        runtime: &str,
    ) -> Result<Self, EngineError> {
        scenario.validate()?;
        if data.partition.num_clients() != scenario.clients {
            return Err(EngineError::from(ConfigError::new(
                "clients",
                format!(
                    "the partition has {} clients but the scenario says clients = {}",
                    data.partition.num_clients(),
                    scenario.clients
                ),
            )));
        }
        let model = build_model(&scenario, &data)?;
        if scenario.eval.federated.is_some()
            && data.local_test.is_none()
            && !scenario.data.is_external()
        {
            return Err(EngineError::from(ConfigError::new(
                "eval.federated",
                "the clients have no local test sets: set partition.local_test_fraction (e.g. 0.2)",
            )));
        }
        if let Some(a) = scenario.train.augment {
            a.check(data.train.image)?;
        }
        let mut strategy = scenario.build_strategy()?;
        let counts = scenario
            .participation
            .needs_labels()
            .then(|| label_counts(&data));
        let population = Population {
            num_clients: scenario.clients,
            seed: scenario.seed,
            label_counts: counts.as_ref().map(|c| (&c[..], data.train.num_classes)),
        };
        let mut model_p = scenario
            .participation
            .build(&population)
            .map_err(|m| EngineError::from(ConfigError::new("participation", m)))?;
        if let Some(a) = scenario
            .attack
            .as_ref()
            .filter(|a| a.redraw_malicious_majority)
        {
            model_p = Box::new(crate::participation::redraw::RedrawMaliciousMajority::new(
                model_p,
                a,
                scenario.clients,
            ));
        }
        let participation = Scheduler::new(
            model_p,
            scenario.events.clone(),
            scenario.clients,
            scenario.seed,
            scenario.round.quorum,
        );
        let (global, init_from) = match scenario.model.init_from()? {
            Some(path) => {
                let (params, from) = InitFrom::read(&path, model.as_ref())?;
                (params, Some(from))
            }
            None => (
                model.init_params(fedsim_types::rng::stream_key(
                    scenario.seed,
                    Purpose::ModelInit,
                    0,
                    0,
                )),
                None,
            ),
        };
        strategy.init(&fedsim_algorithms::strategy::Init {
            global: &global,
            num_clients: scenario.clients,
            probabilities: participation.model().probabilities(),
            model: Some(model.as_ref()),
            data: Some(&data),
        });
        let update_tensors = strategy.update_tensors();
        let asynchronous = match strategy.schedule() {
            Schedule::Rounds => None,
            Schedule::Asynchronous {
                concurrency,
                buffer_size,
            } => Some(asynchronous::AsyncRun::new(concurrency, buffer_size)),
        };
        let mut participation = participation;
        if let Some(system) = &scenario.system {
            participation.set_system(system, scenario.clients)?;
        }
        // Until a round has measured them, plans time transfers with the dense model's size.
        let dense = 4 * global.len() as u64;
        participation.set_message_bytes(dense, dense);
        let train_eval_indices = central::train_eval_indices(&scenario, &data);
        let summary = Summary {
            scenario: scenario.name.clone(),
            strategy: strategy.name(),
            runtime: runtime.to_string(),
            num_params: global.len(),
            model_layers: model.layers(),
            init_from,
            normalization: data.normalization.clone(),
            ..Summary::default()
        };
        Ok(Self {
            participation_counts: vec![0; scenario.clients],
            scenario,
            data,
            model,
            strategy,
            participation,
            global,
            next_round: 0,
            current: None,
            summary,
            writer: None,
            train_eval_indices,
            stream_eval: false,
            update_tensors,
            verdicts: Vec::new(),
            started: Instant::now(),
            runtime: runtime.to_string(),
            awaiting_record: None,
            evaluation: None,
            asynchronous,
        })
    }

    /// Central evaluation streams through the test and training sets: features mapped from the
    /// decoded-data cache leave the process's resident memory chunk by chunk once evaluated
    /// ([`crate::eval::evaluate_streaming`]). For the coordinator, which never trains and so only
    /// reads its data sets when it evaluates; results are unchanged.
    pub fn stream_evaluation_data(&mut self) {
        self.stream_eval = true;
    }

    /// Writes results into `dir` (created if needed).
    pub fn write_to(&mut self, dir: &Path) -> Result<(), EngineError> {
        self.writer = Some(RunWriter::create(dir, &self.scenario.to_toml(), false)?);
        Ok(())
    }

    /// Continues writing results into `dir` after [`Engine::restore`]: metrics of rounds past the
    /// restored one are discarded.
    pub fn resume_writing_to(&mut self, dir: &Path) -> Result<(), EngineError> {
        self.writer = Some(RunWriter::resume(
            dir,
            &self.scenario.to_toml(),
            self.next_round,
        )?);
        Ok(())
    }

    /// The scenario.
    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The model.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// The strategy (for running client halves).
    pub fn strategy(&self) -> &dyn Strategy {
        self.strategy.as_ref()
    }

    /// The data.
    pub fn data(&self) -> &Arc<FederatedData> {
        &self.data
    }

    /// The current global model.
    pub fn global(&self) -> &[f32] {
        &self.global
    }

    /// Index of the next round to run (0-based).
    pub fn next_round(&self) -> u64 {
        self.next_round
    }

    /// Whether all rounds have run.
    pub fn is_done(&self) -> bool {
        self.next_round >= self.scenario.rounds
            || (self.scenario.eval.stop_at_targets && self.targets_reached())
    }

    /// Whether every configured target accuracy has been reached.
    fn targets_reached(&self) -> bool {
        let reached = &self.summary.rounds_to_target;
        self.scenario.eval.targets.iter().all(|t| {
            reached
                .get(&crate::report::target_key(*t))
                .is_some_and(Option::is_some)
        })
    }

    /// The running summary.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// A client's data view.
    pub fn client_data(&self, client: ClientId) -> ClientData<'_> {
        ClientData {
            dataset: &self.data.train,
            indices: self.data.partition.client(client as usize),
        }
    }

    /// A client's local test samples (`partition.local_test_fraction`; none without a split).
    pub fn client_test_data(&self, client: ClientId) -> ClientData<'_> {
        ClientData {
            dataset: &self.data.train,
            indices: self
                .data
                .local_test
                .as_ref()
                .map_or(&[][..], |p| p.client(client as usize)),
        }
    }

    /// Starts the next round: selects clients among `available` (ascending) and builds their task.
    ///
    /// # Panics
    /// If a round is already open.
    pub fn begin_round(&mut self, available: &[ClientId]) -> RoundTask {
        assert!(
            self.asynchronous.is_none(),
            "begin_round on an asynchronous run: use step"
        );
        assert!(
            self.current.is_none() && self.awaiting_record.is_none(),
            "begin_round called twice without end_round, or before end_evaluation"
        );
        let round = self.next_round;
        let (data, train) = (&self.data, &self.scenario.train);
        self.participation
            .set_clock(self.summary.virtual_time_s.unwrap_or(0.0));
        let plan = self.participation.plan(round, available, &|c| {
            train.work(data.partition.client_len(c as usize))
        });
        let selected = plan.selected.clone();
        self.strategy.begin_round(round, &selected, &self.global);
        let broadcast = Arc::new(self.strategy.broadcast(round, &self.global));
        let to_run = plan.to_run();
        let pending: BTreeMap<ClientId, ClientOutcome> = plan
            .dropped
            .into_iter()
            .map(|(c, reason)| (c, ClientOutcome::Dropped(reason)))
            .collect();
        let submitted = pending.keys().copied().collect();
        self.current = Some(RoundState {
            round,
            selected,
            next: 0,
            pending,
            submitted,
            received: 0,
            reported: Vec::new(),
            norms: Vec::new(),
            dropped: Vec::new(),
            bytes_up: 0,
            broadcast_len: broadcast.encoded_len() as u64,
            started: Instant::now(),
            aggregate_time: Duration::ZERO,
            max_steps: plan.max_steps.clone(),
            waits_for_deadline: plan.waits_for_deadline,
            idle_s: plan.idle_s,
            up_bytes: Vec::new(),
        });
        RoundTask {
            round,
            selected: to_run,
            max_steps: plan.max_steps,
            broadcast,
        }
    }

    /// Hands in one selected client's outcome for `round` (0-based), in any order. In an asynchronous
    /// run `round` is the dispatch number of the client's task, and the outcome is applied when its
    /// turn on the virtual clock comes ([`Engine::step`]).
    ///
    /// A stale, unselected or duplicate submission, or an update the strategy refuses on arrival (or
    /// when it is folded in during this call), is refused with the reason; the round goes on without
    /// it. Otherwise the update waits for its turn in client-id order; [`Engine::take_verdicts`] tells
    /// when it was folded in.
    pub fn submit(
        &mut self,
        round: u64,
        client: ClientId,
        outcome: ClientOutcome,
    ) -> Result<(), Refusal> {
        if self.asynchronous.is_some() {
            return self.submit_async(round, client, outcome);
        }
        let num_params = self.global.len();
        let state = match self.current.as_mut() {
            Some(s) if s.round == round => s,
            _ => return Err(Refusal::Stale { round: round + 1 }),
        };
        if state.selected.binary_search(&client).is_err() {
            return Err(Refusal::NotSelected {
                client,
                round: round + 1,
            });
        }
        if !state.submitted.insert(client) {
            return Err(Refusal::Duplicate {
                client,
                round: round + 1,
            });
        }
        let mut result = Ok(());
        let outcome = match outcome {
            ClientOutcome::Update {
                payload,
                num_samples,
            } => {
                let check = payload.peek().map_or(Ok(()), |p| {
                    check_update(
                        self.strategy.as_ref(),
                        &self.update_tensors,
                        num_params,
                        self.scenario.round.max_update_norm,
                        client,
                        p,
                    )
                });
                match check {
                    Ok(()) => {
                        state.received += 1;
                        if let Some(p) = payload.peek() {
                            state.bytes_up += p.encoded_len() as u64;
                        }
                        ClientOutcome::Update {
                            payload,
                            num_samples,
                        }
                    }
                    Err(e) => {
                        tracing::warn!(round = state.round + 1, client, error = %e, "invalid update refused; client dropped from the round");
                        let msg = e.to_string();
                        result = Err(Refusal::Invalid(e));
                        ClientOutcome::Dropped(msg)
                    }
                }
            }
            d => d,
        };
        state.pending.insert(client, outcome);
        let first_new = self.verdicts.len();
        self.drain(false);
        // This update may have been folded in right away (it was next in client order): report a
        // refusal to the caller at once.
        if result.is_ok()
            && let Some(v) = self.verdicts[first_new..]
                .iter()
                .find(|v| v.client == client)
            && let Err(msg) = &v.folded
        {
            result = Err(Refusal::Invalid(StrategyError::InvalidUpdate {
                client,
                msg: msg.clone(),
            }));
        }
        result
    }

    /// Clients selected in the open round that have not submitted an outcome yet.
    pub fn awaiting(&self) -> Vec<ClientId> {
        self.current.as_ref().map_or_else(Vec::new, |s| {
            s.selected
                .iter()
                .copied()
                .filter(|c| !s.submitted.contains(c))
                .collect()
        })
    }

    /// How many clients selected in the open round have not submitted an outcome yet (without
    /// listing them).
    pub fn awaiting_count(&self) -> usize {
        self.current
            .as_ref()
            .map_or(0, |s| s.selected.len() - s.submitted.len())
    }

    /// Updates of the open round accepted on arrival so far (for a quorum).
    pub fn updates_received(&self) -> usize {
        self.current.as_ref().map_or(0, |s| s.received)
    }

    /// The verdicts on updates folded in (or refused when their turn came) since the last call.
    pub fn take_verdicts(&mut self) -> Vec<Verdict> {
        std::mem::take(&mut self.verdicts)
    }

    /// Feeds buffered outcomes to the strategy in ascending client id, as far as they are contiguous
    /// (or all of them when `all`).
    fn drain(&mut self, all: bool) {
        let Some(state) = self.current.as_mut() else {
            return;
        };
        let t0 = Instant::now();
        while state.next < state.selected.len() {
            let c = state.selected[state.next];
            let Some(outcome) = state.pending.remove(&c) else {
                if all {
                    tracing::info!(
                        round = state.round + 1,
                        client = c,
                        "round closed before the client reported"
                    );
                    state
                        .dropped
                        .push((c, "did not report before the round closed".into()));
                    state.next += 1;
                    continue;
                }
                break;
            };
            state.next += 1;
            match outcome {
                ClientOutcome::Update {
                    payload,
                    num_samples,
                } => {
                    let in_memory = payload.peek().is_some();
                    // An update kept outside memory is decoded and validated only now.
                    let loaded = payload.load().and_then(|p| {
                        if !in_memory {
                            check_update(
                                self.strategy.as_ref(),
                                &self.update_tensors,
                                self.global.len(),
                                self.scenario.round.max_update_norm,
                                c,
                                &p,
                            )
                            .map_err(|e| e.to_string())?;
                            state.bytes_up += p.encoded_len() as u64;
                        }
                        Ok(p)
                    });
                    let num_samples = weight_samples(&self.scenario, &self.data, c, num_samples);
                    let folded = loaded.and_then(|p| {
                        let norm = crate::protocol::update_norm(&p);
                        let len = p.encoded_len() as u64;
                        self.strategy
                            .accept(
                                Reporter {
                                    id: c,
                                    num_samples,
                                    staleness: 0,
                                },
                                p,
                            )
                            .map_err(|e| e.to_string())?;
                        state.norms.push((c, norm));
                        state.up_bytes.push((c, len));
                        Ok(())
                    });
                    match &folded {
                        Ok(()) => state.reported.push(c),
                        Err(e) => {
                            tracing::warn!(round = state.round + 1, client = c, error = %e, "update refused");
                            state.dropped.push((c, e.clone()));
                        }
                    }
                    self.verdicts.push(Verdict {
                        client: c,
                        round: state.round,
                        folded,
                    });
                }
                ClientOutcome::Dropped(reason) => {
                    tracing::info!(round = state.round + 1, client = c, %reason, "client dropped from round");
                    state.dropped.push((c, reason));
                }
            }
        }
        state.aggregate_time += t0.elapsed();
    }

    /// Closes the round: clients that have not reported are dropped, the strategy updates the global
    /// model, the model is evaluated centrally when due, and the round's record is written and
    /// returned; when a federated evaluation is due, the record waits for it
    /// ([`RoundEnd::EvaluationDue`]).
    pub fn end_round(&mut self, io: RoundIo) -> Result<RoundEnd, EngineError> {
        self.drain(true);
        let Some(mut state) = self.current.take() else {
            return Err(EngineError::Protocol(
                "end_round without an open round".into(),
            ));
        };
        let t0 = Instant::now();
        let rejected = self.commit_round(
            state.round,
            &mut state.reported,
            &state.norms,
            &mut state.dropped,
        )?;
        state.aggregate_time += t0.elapsed();

        let mut rec = RoundRecord {
            round: self.next_round,
            selected: state.selected.len(),
            participants: state.reported.len(),
            bytes_up: io.wire_bytes_up.unwrap_or(state.bytes_up),
            bytes_down: io
                .wire_bytes_down
                .unwrap_or(state.broadcast_len * state.selected.len() as u64),
            time_train_s: io.train_time.as_secs_f64(),
            time_aggregate_s: state.aggregate_time.as_secs_f64(),
            ..RoundRecord::default()
        };
        let train_samples: usize = state
            .reported
            .iter()
            .map(|&c| {
                self.scenario
                    .train
                    .work(self.data.partition.client_len(c as usize))
                    .samples
            })
            .sum();
        rec.extra
            .insert("train_samples".into(), train_samples as f64);
        self.advance_virtual_clock(&state, &mut rec);
        rec.participant_ids = std::mem::take(&mut state.reported);
        self.add_outcome_metrics(&mut rec, rejected, state.dropped.len());
        rec.extra.extend(io.extra);

        self.conclude(rec, state.started)
    }

    /// Lets the strategy update the global model from round `round`'s `reported` clients and counts
    /// their participation; the round counter advances. A round whose aggregate is not finite is never
    /// committed: the model and the strategy's server state go back to what they were before it, the
    /// clients with the largest updates (`norms`) are named, and every reporter moves to `dropped`.
    /// Both runtimes, and synchronous and asynchronous runs, apply this one rule. Returns whether the
    /// round was rejected.
    fn commit_round(
        &mut self,
        round: u64,
        reported: &mut Vec<ClientId>,
        norms: &[(ClientId, f64)],
        dropped: &mut Vec<(ClientId, String)>,
    ) -> Result<bool, EngineError> {
        let model_before = self.global.clone();
        let strategy_before = self.strategy.save_state();
        self.strategy
            .finish_round(round, &mut self.global, reported);
        let rejected = self.global.iter().position(|v| !v.is_finite());
        if let Some(index) = rejected {
            let suspects = crate::protocol::largest_norms(norms, 3);
            tracing::error!(
                round = round + 1,
                parameter = index,
                clients = ?suspects,
                "round rejected: the aggregate is not finite; the previous model is kept (largest updates named)"
            );
            self.global = model_before;
            self.strategy.load_state(strategy_before)?;
            dropped.extend(
                reported
                    .drain(..)
                    .map(|c| (c, "round rejected".to_string())),
            );
        }
        for &c in reported.iter() {
            self.participation_counts[c as usize] += 1;
        }
        self.next_round += 1;
        Ok(rejected.is_some())
    }

    /// The metrics every round's record carries about its outcome: `round_rejected`, the strategy's
    /// own, and `dropped`.
    fn add_outcome_metrics(&self, rec: &mut RoundRecord, rejected: bool, dropped: usize) {
        if rejected {
            rec.extra.insert("round_rejected".into(), 1.0);
        }
        rec.extra.extend(self.strategy.round_metrics());
        if dropped > 0 {
            rec.extra.insert("dropped".into(), dropped as f64);
        }
    }

    /// Evaluates centrally when due, and writes the record of the server update just made (or keeps
    /// it for a due federated evaluation).
    fn conclude(
        &mut self,
        mut rec: RoundRecord,
        started: Instant,
    ) -> Result<RoundEnd, EngineError> {
        let last = self.is_done();
        let due = self.next_round.is_multiple_of(self.scenario.eval.every) || last;
        if due && self.scenario.eval.central {
            let t = Instant::now();
            self.evaluate_into(&mut rec);
            let train_eval = if self.scenario.eval.train_loss {
                self.train_eval_indices
                    .as_ref()
                    .map_or(self.data.train.len(), Vec::len)
            } else {
                0
            };
            rec.extra.insert(
                "eval_samples".into(),
                (self.data.test.len() + train_eval) as f64,
            );
            rec.time_eval_s = t.elapsed().as_secs_f64();
        }
        rec.time_round_s = started.elapsed().as_secs_f64();
        rec.wall_s = self.started.elapsed().as_secs_f64();
        if self.federated_due(last) {
            self.awaiting_record = Some(rec);
            return Ok(RoundEnd::EvaluationDue);
        }
        Ok(RoundEnd::Recorded(Box::new(self.record(rec)?)))
    }

    /// The state between rounds, for a checkpoint. In an asynchronous run it is taken between server
    /// updates (after [`AsyncStep::Ended`] and its federated evaluation, before the next
    /// [`Engine::step`]) and holds the tasks in flight; [`Engine::restore`] hands them out again.
    ///
    /// # Panics
    /// If a round is open, or an asynchronous server update is being buffered.
    pub fn snapshot(&self) -> Snapshot {
        assert!(
            self.current.is_none() && self.awaiting_record.is_none(),
            "snapshot during a round"
        );
        Snapshot {
            next_round: self.next_round,
            global: self.global.clone(),
            strategy_state: self.strategy.save_state(),
            participation_state: self.participation.model().save_state(),
            summary_json: serde_json::to_string(&self.summary).unwrap_or_default(),
            participation_counts: self.participation_counts.clone(),
            asynchronous: self.async_snapshot(),
        }
    }

    /// Continues from a snapshot taken by [`Engine::snapshot`] for the same scenario. An asynchronous
    /// run's first [`Engine::step`]s then start the snapshot's tasks in flight again (one
    /// [`AsyncStep::Start`] per dispatch, with its old dispatch number and task) before anything new.
    ///
    /// # Errors
    /// [`EngineError::Checkpoint`] when the snapshot does not fit the scenario (nothing is changed
    /// then), or the strategy's or participation model's state is refused.
    pub fn restore(&mut self, snap: Snapshot) -> Result<(), EngineError> {
        let bad = EngineError::Checkpoint;
        if snap.global.len() != self.global.len() {
            return Err(bad(format!(
                "{} parameters, model has {}",
                snap.global.len(),
                self.global.len()
            )));
        }
        if snap.participation_counts.len() != self.scenario.clients {
            return Err(bad(format!(
                "{} clients, scenario has {}",
                snap.participation_counts.len(),
                self.scenario.clients
            )));
        }
        if snap.next_round > self.scenario.rounds {
            return Err(bad(format!(
                "round {} beyond the scenario's {} rounds",
                snap.next_round, self.scenario.rounds
            )));
        }
        let asynchronous = self
            .restored_async(snap.asynchronous, snap.next_round)
            .map_err(bad)?;
        self.strategy.load_state(snap.strategy_state)?;
        self.participation
            .model_mut()
            .load_state(&snap.participation_state)
            .map_err(bad)?;
        self.summary = serde_json::from_str(&snap.summary_json).map_err(|e| bad(e.to_string()))?;
        self.global = snap.global;
        self.next_round = snap.next_round;
        self.participation_counts = snap.participation_counts;
        if asynchronous.is_some() {
            self.asynchronous = asynchronous;
        }
        // Wall time continues from where the checkpointed run was.
        let elapsed = Duration::from_secs_f64(self.summary.total_wall_s.max(0.0));
        self.started = Instant::now()
            .checked_sub(elapsed)
            .unwrap_or_else(Instant::now);
        Ok(())
    }

    /// Finishes the run: writes `summary.json` and `model.bin` and returns the summary.
    pub fn finish(&mut self) -> Result<Summary, EngineError> {
        self.summary.final_model_hash = model_hash(&self.global);
        self.summary.total_wall_s = self.started.elapsed().as_secs_f64();
        self.summary.runtime = self.runtime.clone();
        if self.scenario.clients <= 100_000 {
            self.summary.participation_counts = self.participation_counts.clone();
        }
        self.summary.extra.insert(
            "train_flops_per_sample".into(),
            self.model.train_flops_per_sample(),
        );
        self.summary.extra.insert(
            "eval_flops_per_sample".into(),
            self.model.eval_flops_per_sample(),
        );
        let d = &self.data;
        let data_bytes = (d.train.x.len() + d.test.x.len()) * 4
            + (d.train.y.len() + d.test.y.len()) * 4
            + d.partition.total() * 4;
        self.summary
            .extra
            .insert("data_mib".into(), data_bytes as f64 / (1 << 20) as f64);
        if let Some(mib) = peak_rss_mib() {
            self.summary.extra.insert("peak_rss_mib".into(), mib);
        }
        if let Some(w) = self.writer.as_mut() {
            w.finish(&self.summary, self.model.as_ref(), &self.global)?;
        }
        Ok(self.summary.clone())
    }
}

/// Refuses an update whose L2 norm exceeds `bound` (`round.max_update_norm`; 0 = no bound).
impl Engine {
    /// Lets every selected client run and leaves the quorum to the caller, which closes the round at
    /// the first `round.quorum` results to arrive (`round.quorum_order = "arrival"` in a deployment).
    pub fn quorum_by_arrival(&mut self) {
        self.participation.quorum_by_arrival();
    }

    /// The names of the tensors a client update may carry (the strategy's
    /// [`Strategy::update_tensors`]); the coordinator bounds decoding by their number.
    pub fn update_tensors(&self) -> &[String] {
        &self.update_tensors
    }
}

/// Every check an update passes before it is folded in, in both runtimes: only the strategy's tensors
/// (`allowed`), the strategy's own validation, and `round.max_update_norm` (`norm_bound`).
fn check_update(
    strategy: &dyn Strategy,
    allowed: &[String],
    num_params: usize,
    norm_bound: f64,
    client: ClientId,
    update: &Payload,
) -> Result<(), StrategyError> {
    if let Some(extra) = update.tensors.iter().find(|t| !allowed.contains(&t.name)) {
        return Err(StrategyError::InvalidUpdate {
            client,
            msg: format!(
                "unexpected tensor `{}` (updates of {} carry only: {})",
                extra.name,
                strategy.name(),
                allowed.join(", ")
            ),
        });
    }
    strategy.validate_update(client, update, num_params)?;
    check_norm(client, update, norm_bound)
}

fn check_norm(client: ClientId, update: &Payload, bound: f64) -> Result<(), StrategyError> {
    if bound > 0.0 {
        let norm = crate::protocol::update_norm(update);
        if norm > bound {
            return Err(StrategyError::InvalidUpdate {
                client,
                msg: format!("update norm {norm:.4e} exceeds round.max_update_norm = {bound}"),
            });
        }
    }
    Ok(())
}

/// The sample count that weights client `c`'s update under `deploy.sample_counts`: its partition's
/// size, or the count it declared capped at `deploy.max_declared_samples`.
fn weight_samples(scenario: &Scenario, data: &FederatedData, c: ClientId, declared: u64) -> u64 {
    match scenario.deploy.sample_counts {
        SampleCounts::Partition => data.partition.client_len(c as usize) as u64,
        SampleCounts::Declared => declared.min(scenario.deploy.max_declared_samples),
    }
}

/// Per-client label counts, row-major `clients × classes`.
fn label_counts(data: &FederatedData) -> Vec<u32> {
    let k = data.train.num_classes;
    let p = &data.partition;
    let mut out = vec![0u32; p.num_clients() * k];
    for c in 0..p.num_clients() {
        for &i in p.client(c) {
            out[c * k + data.train.y[i as usize] as usize] += 1;
        }
    }
    out
}

/// The participation model's per-client probabilities, where it has them.
impl Engine {
    /// Per-client participation probabilities of the participation model, if it has them.
    pub fn participation_probabilities(&self) -> Option<&[f64]> {
        self.participation.model().probabilities()
    }
}
