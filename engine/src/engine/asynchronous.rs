//! Asynchronous aggregation (FedBuff, FedAsync): no rounds, an event queue on the virtual clock.
//!
//! `concurrency` clients train at all times. A client is handed the model version current when its
//! slot freed, and its task finishes at a virtual time computed by the engine from its `[system]`
//! profile and the exact message sizes (latency + download + local work + upload; without `[system]`
//! every client computes one sample per virtual second over a free network). Finished updates are
//! folded into the strategy in virtual-finish-time order (ties by dispatch order) with their
//! staleness, and every `buffer_size` of them make one server update: one "round" of the metrics.
//!
//! A runtime drives this with [`Engine::step`]: it starts the tasks the engine hands out
//! ([`AsyncStep::Start`]), hands their outcomes to [`Engine::submit`] in any order and whenever they
//! arrive, and calls `step` again. The engine applies an update only once no outstanding task could
//! still finish before it (an outstanding task finishes no earlier than its work without the upload),
//! so the sequence of server updates, and the model, depend only on the results, not on when they
//! arrive: the simulator (which trains outstanding tasks in parallel batches when the engine waits)
//! and a deployment give the same model bit for bit. `deploy.order = "arrival"` applies updates as
//! they arrive instead (not reproducible).
//!
//! Participation decides who may be picked when slots free up: the scenario's events and online
//! intervals leave some clients reachable, the participation model's draw for that dispatch (keyed by
//! a dispatch counter) says which of them are available, and the free slots are filled uniformly at
//! random among those not already training.
//!
//! Checkpoints are taken between server updates ([`Engine::snapshot`] after an [`AsyncStep::Ended`]):
//! the clock, the dispatch counters, the tasks in flight and the task (broadcast) of every model
//! version they train from ([`AsyncSnapshot`]). Results submitted but not yet applied are not saved:
//! a task's result depends only on the seed, the client, its dispatch number (the key of its training
//! randomness) and its task, so the restored engine hands those tasks out again
//! ([`AsyncStep::Start`] with their old dispatch numbers, before anything new) and their results are
//! the same.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rand::seq::index;

use super::Engine;
use crate::protocol::{ClientOutcome, Refusal, RoundEnd, RoundTask, Verdict};
use crate::report::RoundRecord;
use crate::{ClientId, EngineError, Payload};
use fedsim_algorithms::strategy::Reporter;
use fedsim_types::rng::{Purpose, stream};

/// Dispatch attempts that find nobody to start, with nothing in flight, before the run gives up.
const MAX_IDLE_DISPATCHES: u32 = 10_000;

/// What a runtime does next in an asynchronous run ([`Engine::step`]).
#[derive(Debug)]
pub enum AsyncStep {
    /// Start these clients from `broadcast` (`round` is the dispatch number: the key of their training
    /// randomness, and what their results must carry). After [`Engine::restore`] the first ones start
    /// the snapshot's tasks in flight again, with their old dispatch numbers.
    Start(RoundTask),
    /// The next update cannot be applied before more outcomes are submitted.
    Wait,
    /// A server update was made.
    Ended(RoundEnd),
    /// The run is over (tasks still in flight are abandoned).
    Done,
}

/// One client's task in flight.
#[derive(Debug)]
struct Flight {
    /// Dispatch order (the tie-break of equal finish times).
    seq: u64,
    /// The dispatch it belongs to.
    batch: u64,
    /// The model version it trains from.
    version: u64,
    /// Virtual time it started.
    start_s: f64,
    /// Its samples of local work.
    samples: usize,
    /// Encoded size of its task.
    down: u64,
    /// Earliest virtual time it can finish: all but the upload, whose size is known only at the end.
    ready_s: f64,
    /// When the client goes offline (`[system] online`): a task not finished by then never reports.
    offline_s: f64,
    /// The task it was handed, kept so that a checkpoint can hand it out again.
    task: Arc<Payload>,
    result: Option<Finished>,
}

impl Flight {
    /// Whether the client was known at dispatch to go offline before its work is done: it was never
    /// handed the task, and its slot frees at `offline_s` without an update.
    fn offline_at_dispatch(&self) -> bool {
        self.offline_s < self.ready_s
    }

    /// The result of a task whose client goes offline before its work is done.
    fn offline_result(&self, arrival: u64) -> Finished {
        Finished {
            update: Err(format!(
                "went offline at virtual time {:.3} s",
                self.offline_s
            )),
            finish_s: self.offline_s,
            arrival,
        }
    }
}

/// A task in flight at a checkpoint (see [`AsyncSnapshot`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FlightSnapshot {
    /// The client training.
    pub client: ClientId,
    /// Dispatch order (the tie-break of equal finish times).
    pub seq: u64,
    /// The dispatch it belongs to (the key of its training randomness).
    pub batch: u64,
    /// The model version it trains from.
    pub version: u64,
    /// Virtual time it started.
    pub start_s: f64,
    /// Its samples of local work.
    pub samples: u64,
    /// Encoded size of its task.
    pub down: u64,
    /// Earliest virtual time it can finish.
    pub ready_s: f64,
    /// When the client goes offline (infinite when always online).
    pub offline_s: f64,
}

/// The state of an asynchronous run between two server updates, part of a [`super::Snapshot`].
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncSnapshot {
    /// Virtual clock.
    pub now_s: f64,
    /// Virtual time of the last server update.
    pub last_update_s: f64,
    /// Number of the next dispatch.
    pub next_batch: u64,
    /// Dispatch order of the next task.
    pub next_seq: u64,
    /// Results taken so far (the order of `deploy.order = "arrival"`).
    pub arrivals: u64,
    /// Dispatch attempts in a row that found nobody to start.
    pub idle: u32,
    /// Whether slots freed since the last dispatch attempt.
    pub dispatch_due: bool,
    /// Tasks in flight, ascending by client. Those already finished but not applied are saved as
    /// unfinished: they run again after a restore.
    pub flights: Vec<FlightSnapshot>,
    /// The task (broadcast) of every model version a flight trains from, each version once,
    /// ascending by version.
    pub broadcasts: Vec<(u64, Arc<Payload>)>,
}

#[derive(Debug)]
struct Finished {
    update: Result<(Payload, u64), String>,
    finish_s: f64,
    arrival: u64,
}

/// The server update being buffered.
#[derive(Debug)]
struct OpenUpdate {
    started: Instant,
    dispatched: usize,
    reported: Vec<ClientId>,
    staleness: Vec<u64>,
    norms: Vec<(ClientId, f64)>,
    dropped: Vec<(ClientId, String)>,
    bytes_up: u64,
    bytes_down: u64,
    train_samples: usize,
    aggregate_s: f64,
}

impl OpenUpdate {
    /// Opens server update `round`: the strategy starts aggregating it.
    fn begin(strategy: &mut dyn crate::Strategy, round: u64, global: &[f32]) -> Self {
        strategy.begin_round(round, &[], global);
        Self {
            started: Instant::now(),
            dispatched: 0,
            reported: Vec::new(),
            staleness: Vec::new(),
            norms: Vec::new(),
            dropped: Vec::new(),
            bytes_up: 0,
            bytes_down: 0,
            train_samples: 0,
            aggregate_s: 0.0,
        }
    }
}

/// The state of an asynchronous run.
#[derive(Debug)]
pub(super) struct AsyncRun {
    concurrency: usize,
    buffer_size: usize,
    by_arrival: bool,
    now_s: f64,
    /// Virtual time of the last server update.
    last_update_s: f64,
    flights: BTreeMap<ClientId, Flight>,
    next_batch: u64,
    next_seq: u64,
    arrivals: u64,
    /// Whether slots freed since the last dispatch attempt.
    dispatch_due: bool,
    idle: u32,
    broadcast: Option<(u64, Arc<Payload>)>,
    update: Option<OpenUpdate>,
    /// Tasks of a restored checkpoint still to be handed out again, before any new dispatch.
    resumed: VecDeque<RoundTask>,
}

impl AsyncRun {
    pub(super) fn new(concurrency: usize, buffer_size: usize) -> Self {
        Self {
            concurrency,
            buffer_size,
            by_arrival: false,
            now_s: 0.0,
            last_update_s: 0.0,
            flights: BTreeMap::new(),
            next_batch: 0,
            next_seq: 0,
            arrivals: 0,
            dispatch_due: true,
            idle: 0,
            broadcast: None,
            update: None,
            resumed: VecDeque::new(),
        }
    }

    /// The state between server updates, for a checkpoint.
    ///
    /// # Panics
    /// While a server update is being buffered (between a dispatch or an applied result and the next
    /// [`AsyncStep::Ended`]): the strategy's partial aggregate is not part of its saved state.
    fn snapshot(&self) -> AsyncSnapshot {
        assert!(
            self.update.is_none(),
            "snapshot of an asynchronous run while a server update is open: take it after AsyncStep::Ended"
        );
        let mut broadcasts = BTreeMap::new();
        let flights = self
            .flights
            .iter()
            .map(|(&client, f)| {
                broadcasts
                    .entry(f.version)
                    .or_insert_with(|| f.task.clone());
                FlightSnapshot {
                    client,
                    seq: f.seq,
                    batch: f.batch,
                    version: f.version,
                    start_s: f.start_s,
                    samples: f.samples as u64,
                    down: f.down,
                    ready_s: f.ready_s,
                    offline_s: f.offline_s,
                }
            })
            .collect();
        AsyncSnapshot {
            now_s: self.now_s,
            last_update_s: self.last_update_s,
            next_batch: self.next_batch,
            next_seq: self.next_seq,
            arrivals: self.arrivals,
            idle: self.idle,
            dispatch_due: self.dispatch_due,
            flights,
            broadcasts: broadcasts.into_iter().collect(),
        }
    }

    /// This run's configuration with the state of `snap`, taken at server update `next_round` of a run
    /// of `num_clients` clients; the tasks in flight are queued to be handed out again. Checks `snap`
    /// (a checkpoint file is external input) and says what is wrong with it.
    fn restored(
        &self,
        snap: AsyncSnapshot,
        next_round: u64,
        num_clients: usize,
    ) -> Result<Self, String> {
        let times_ok = [snap.now_s, snap.last_update_s]
            .iter()
            .all(|t| t.is_finite() && *t >= 0.0);
        if !times_ok || snap.last_update_s > snap.now_s {
            return Err(format!(
                "asynchronous clock {} s (last update at {} s) is not a valid virtual time",
                snap.now_s, snap.last_update_s
            ));
        }
        if snap.flights.len() > self.concurrency {
            return Err(format!(
                "{} tasks in flight, the strategy runs at most {}",
                snap.flights.len(),
                self.concurrency
            ));
        }
        let broadcasts: BTreeMap<u64, Arc<Payload>> = snap.broadcasts.into_iter().collect();
        let mut flights = BTreeMap::new();
        // Restored tasks by dispatch: (model version, clients ascending).
        let mut batches: BTreeMap<u64, (u64, Vec<ClientId>)> = BTreeMap::new();
        for (i, f) in snap.flights.into_iter().enumerate() {
            let what = format!("task in flight of client {}", f.client);
            if f.client as usize >= num_clients {
                return Err(format!("{what}: the scenario has {num_clients} clients"));
            }
            if f.batch >= snap.next_batch || f.seq >= snap.next_seq || f.version > next_round {
                return Err(format!(
                    "{what}: dispatch {}, order {} or model version {} beyond the run's counters",
                    f.batch, f.seq, f.version
                ));
            }
            let times = [f.start_s, f.ready_s];
            if times.iter().any(|t| !t.is_finite() || *t < 0.0) || f.offline_s.is_nan() {
                return Err(format!("{what}: invalid virtual times"));
            }
            let samples =
                usize::try_from(f.samples).map_err(|_| format!("{what}: {} samples", f.samples))?;
            let Some(task) = broadcasts.get(&f.version) else {
                return Err(format!(
                    "{what}: no task saved for model version {}",
                    f.version
                ));
            };
            let mut flight = Flight {
                seq: f.seq,
                batch: f.batch,
                version: f.version,
                start_s: f.start_s,
                samples,
                down: f.down,
                ready_s: f.ready_s,
                offline_s: f.offline_s,
                task: task.clone(),
                result: None,
            };
            if flight.offline_at_dispatch() {
                // Decided at dispatch, as then; never handed out.
                flight.result = Some(flight.offline_result(i as u64));
            } else {
                let (version, clients) = batches
                    .entry(f.batch)
                    .or_insert_with(|| (f.version, Vec::new()));
                if *version != f.version {
                    return Err(format!(
                        "{what}: dispatch {} trains from two model versions",
                        f.batch
                    ));
                }
                clients.push(f.client);
            }
            if flights.insert(f.client, flight).is_some() {
                return Err(format!("client {} has two tasks in flight", f.client));
            }
        }
        let mut resumed = VecDeque::new();
        for (batch, (version, mut selected)) in batches {
            selected.sort_unstable();
            resumed.push_back(RoundTask {
                round: batch,
                selected,
                max_steps: BTreeMap::new(),
                broadcast: broadcasts[&version].clone(),
            });
        }
        Ok(Self {
            concurrency: self.concurrency,
            buffer_size: self.buffer_size,
            by_arrival: self.by_arrival,
            now_s: snap.now_s,
            last_update_s: snap.last_update_s,
            flights,
            next_batch: snap.next_batch,
            next_seq: snap.next_seq,
            arrivals: snap.arrivals,
            dispatch_due: snap.dispatch_due,
            idle: snap.idle,
            // A dispatch at this model version reuses its task, as in the run that was saved.
            broadcast: broadcasts.get(&next_round).map(|b| (next_round, b.clone())),
            update: None,
            resumed,
        })
    }

    /// The client whose update comes next, if it can be applied now.
    fn next_event(&self) -> Option<ClientId> {
        if self.by_arrival {
            return self
                .flights
                .iter()
                .filter_map(|(&c, f)| f.result.as_ref().map(|r| (r.arrival, c)))
                .min()
                .map(|(_, c)| c);
        }
        let key = |t: f64, seq: u64| (ordered(t), seq);
        let done = self
            .flights
            .iter()
            .filter_map(|(&c, f)| f.result.as_ref().map(|r| (key(r.finish_s, f.seq), c)))
            .min();
        let waiting = self
            .flights
            .values()
            .filter(|f| f.result.is_none())
            .map(|f| key(f.ready_s, f.seq))
            .min();
        match (done, waiting) {
            (Some((_, c)), None) => Some(c),
            (Some((k, c)), Some(w)) if k < w => Some(c),
            _ => None,
        }
    }
}

/// `free` clients drawn uniformly from the idle ones of `available` (ascending) by rejection, in
/// O(free) expected time whatever the number of clients; `None` when idle clients are too few for
/// rejection to pay (the caller then filters the whole list).
fn pick_idle(
    available: &[ClientId],
    num_clients: usize,
    flights: &BTreeMap<ClientId, Flight>,
    free: usize,
    seed: u64,
    batch: u64,
) -> Option<Vec<ClientId>> {
    use rand::RngExt;
    // Every flight's client is available when nobody is missing (the simulator; a full deployment).
    let busy = if available.len() == num_clients {
        flights.len()
    } else {
        flights
            .keys()
            .filter(|c| available.binary_search(c).is_ok())
            .count()
    };
    let idle = available.len() - busy;
    if idle < 2 * free.max(1) {
        return None;
    }
    let mut rng = stream(seed, Purpose::Participation, batch, u64::MAX - 1);
    let mut picked = std::collections::BTreeSet::new();
    while picked.len() < free {
        let c = available[rng.random_range(0..available.len())];
        if !flights.contains_key(&c) {
            picked.insert(c);
        }
    }
    Some(picked.into_iter().collect())
}

/// A total order on finite non-negative virtual times.
fn ordered(t: f64) -> u64 {
    t.max(0.0).to_bits()
}

impl Engine {
    /// The asynchronous part of a snapshot (`None` for rounds).
    pub(super) fn async_snapshot(&self) -> Option<AsyncSnapshot> {
        self.asynchronous.as_ref().map(AsyncRun::snapshot)
    }

    /// The asynchronous run `snap` describes, with this engine's configuration, for
    /// [`Engine::restore`] at server update `next_round`; an error says why `snap` does not fit.
    pub(super) fn restored_async(
        &self,
        snap: Option<AsyncSnapshot>,
        next_round: u64,
    ) -> Result<Option<AsyncRun>, String> {
        match (&self.asynchronous, snap) {
            (None, None) => Ok(None),
            (Some(run), Some(snap)) => run
                .restored(snap, next_round, self.scenario.clients)
                .map(Some),
            (Some(_), None) => Err(
                "the checkpoint holds no asynchronous state, but the strategy is asynchronous"
                    .into(),
            ),
            (None, Some(_)) => Err(
                "the checkpoint holds an asynchronous run's state, but the strategy runs in rounds"
                    .into(),
            ),
        }
    }

    /// Trains client `client`'s task of dispatch `batch` from `task` in this process, as a runtime
    /// does for an [`AsyncStep::Start`]: asynchronous strategies keep no client state, and a failed
    /// local update becomes a dropped outcome.
    pub fn train_async_task(
        &self,
        batch: u64,
        client: ClientId,
        task: &Payload,
        scratch: &mut fedsim_nn::Scratch,
    ) -> ClientOutcome {
        let s = &self.scenario;
        let data = self.client_data(client);
        match crate::local::run_client(
            self.strategy(),
            self.model(),
            data,
            &s.train,
            s.seed,
            batch,
            client,
            &mut crate::ClientState::default(),
            task,
            None,
            scratch,
        ) {
            Ok(payload) => ClientOutcome::update(payload, data.len() as u64),
            Err(e) => ClientOutcome::Dropped(e.to_string()),
        }
    }

    /// Whether the strategy runs asynchronously (FedBuff, FedAsync): drive the run with
    /// [`Engine::step`] instead of rounds.
    pub fn is_asynchronous(&self) -> bool {
        self.asynchronous.is_some()
    }

    /// Applies finished updates as they arrive (`deploy.order = "arrival"`), not in virtual order.
    pub fn apply_in_arrival_order(&mut self) {
        if let Some(run) = self.asynchronous.as_mut() {
            run.by_arrival = true;
            self.summary.extra.insert("reproducible".into(), 0.0);
        }
    }

    /// Clients with a task in flight whose outcome has not been submitted (asynchronous runs).
    pub fn in_flight(&self) -> Vec<ClientId> {
        self.asynchronous.as_ref().map_or_else(Vec::new, |run| {
            run.flights
                .iter()
                .filter(|(_, f)| f.result.is_none())
                .map(|(&c, _)| c)
                .collect()
        })
    }

    /// The next thing an asynchronous run needs: tasks to start, outcomes to wait for, a server update
    /// made, or the end. `available` lists the clients the runtime can reach (ascending).
    ///
    /// # Errors
    /// When nobody can be started for a long time with nothing in flight, or the strategy's server
    /// state cannot be restored after a rejected update.
    pub fn step(&mut self, available: &[ClientId]) -> Result<AsyncStep, EngineError> {
        if self.awaiting_record.is_some() {
            return Err(EngineError::Protocol(
                "step called while a federated evaluation is due: end it first".into(),
            ));
        }
        loop {
            if self.is_done() {
                return Ok(AsyncStep::Done);
            }
            let Some(run) = self.asynchronous.as_mut() else {
                return Err(EngineError::Protocol(
                    "step called on a synchronous run".into(),
                ));
            };
            // Tasks in flight at a restored checkpoint go out again first, under their old dispatch.
            if let Some(task) = run.resumed.pop_front() {
                return Ok(AsyncStep::Start(task));
            }
            if run.dispatch_due {
                run.dispatch_due = false;
                if let Some(task) = self.dispatch(available)
                    && !task.selected.is_empty()
                {
                    return Ok(AsyncStep::Start(task));
                }
            }
            let run = self.asynchronous.as_mut().expect("asynchronous");
            if let Some(c) = run.next_event() {
                if let Some(end) = self.apply(c)? {
                    return Ok(AsyncStep::Ended(end));
                }
                continue;
            }
            if run.flights.is_empty() {
                // Nobody could be started and nothing is in flight: draw again at the next instant
                // anyone comes online (online intervals), else at once.
                run.idle += 1;
                if run.idle > MAX_IDLE_DISPATCHES {
                    return Err(EngineError::Protocol(format!(
                        "asynchronous run stalled: no client could be started in {MAX_IDLE_DISPATCHES} attempts (participation, events and online intervals leave nobody available)"
                    )));
                }
                run.dispatch_due = true;
                if let Some(t) = self.participation.next_online_after(run.now_s) {
                    run.now_s = t;
                }
                continue;
            }
            return Ok(AsyncStep::Wait);
        }
    }

    /// Fills free slots from `available`; `None` when nobody could be started.
    fn dispatch(&mut self, available: &[ClientId]) -> Option<RoundTask> {
        let run = self.asynchronous.as_mut()?;
        let free = run.concurrency.saturating_sub(run.flights.len());
        if free == 0 {
            return None;
        }
        let (batch, now) = (run.next_batch, run.now_s);
        run.next_batch += 1;
        let version = self.next_round;
        self.participation.set_clock(now);
        let mut chosen = if self.participation.model().selects_every_available()
            && !self.participation.filters_availability()
        {
            pick_idle(
                available,
                self.scenario.clients,
                &run.flights,
                free,
                self.scenario.seed,
                batch,
            )
        } else {
            None
        }
        .unwrap_or_else(|| {
            let eligible: Vec<ClientId> = self
                .participation
                .reachable(version, available)
                .into_iter()
                .filter(|c| !run.flights.contains_key(c))
                .collect();
            let drawn = self.participation.model_mut().select(batch, &eligible);
            if drawn.len() <= free {
                drawn
            } else {
                let mut rng = stream(self.scenario.seed, Purpose::Participation, batch, u64::MAX);
                index::sample(&mut rng, drawn.len(), free)
                    .into_iter()
                    .map(|i| drawn[i])
                    .collect()
            }
        });
        chosen.sort_unstable();
        if chosen.is_empty() {
            return None;
        }
        run.idle = 0;
        if run.update.is_none() {
            run.update = Some(OpenUpdate::begin(
                self.strategy.as_mut(),
                version,
                &self.global,
            ));
        }
        let broadcast = match &run.broadcast {
            Some((v, b)) if *v == version => b.clone(),
            _ => {
                let b = Arc::new(self.strategy.broadcast(version, &self.global));
                run.broadcast = Some((version, b.clone()));
                b
            }
        };
        let down = broadcast.encoded_len() as u64;
        let mut to_run = Vec::with_capacity(chosen.len());
        for &c in &chosen {
            let samples = self
                .scenario
                .train
                .work(self.data.partition.client_len(c as usize))
                .samples;
            let ready_s = now
                + self
                    .participation
                    .finish_s(batch, c, samples, down, 0)
                    .unwrap_or(samples as f64);
            let mut flight = Flight {
                seq: run.next_seq,
                batch,
                version,
                start_s: now,
                samples,
                down,
                ready_s,
                offline_s: self.participation.offline_at(c, now),
                task: broadcast.clone(),
                result: None,
            };
            // A client that goes offline before its work is done never reports: its slot frees then.
            if flight.offline_at_dispatch() {
                flight.result = Some(flight.offline_result(run.arrivals));
                run.arrivals += 1;
            } else {
                to_run.push(c);
            }
            run.flights.insert(c, flight);
            run.next_seq += 1;
        }
        if let Some(u) = run.update.as_mut() {
            u.dispatched += chosen.len();
            u.bytes_down += down * chosen.len() as u64;
        }
        Some(RoundTask {
            round: batch,
            selected: to_run,
            max_steps: BTreeMap::new(),
            broadcast,
        })
    }

    /// Takes a client's outcome for dispatch `batch` (asynchronous runs): validated and timed now,
    /// applied when its turn on the virtual clock comes.
    pub(super) fn submit_async(
        &mut self,
        batch: u64,
        client: ClientId,
        outcome: ClientOutcome,
    ) -> Result<(), Refusal> {
        let num_params = self.global.len();
        let bound = self.scenario.round.max_update_norm;
        let has_system = self.participation.has_system();
        let Some(run) = self.asynchronous.as_mut() else {
            return Err(Refusal::Stale { round: batch + 1 });
        };
        let flight = match run.flights.get_mut(&client) {
            Some(f) if f.batch == batch => f,
            _ => {
                return Err(Refusal::NotSelected {
                    client,
                    round: batch + 1,
                });
            }
        };
        if flight.result.is_some() {
            return Err(Refusal::Duplicate {
                client,
                round: batch + 1,
            });
        }
        let mut refusal = None;
        // Loaded now: the finish time needs the exact upload size (at most `concurrency` updates wait).
        let update = match outcome {
            ClientOutcome::Update {
                payload,
                num_samples,
            } => payload.load().and_then(|p| {
                super::check_update(
                    self.strategy.as_ref(),
                    &self.update_tensors,
                    num_params,
                    bound,
                    client,
                    &p,
                )
                .map_err(|e| {
                    let msg = e.to_string();
                    refusal = Some(Refusal::Invalid(e));
                    msg
                })?;
                Ok((p, num_samples))
            }),
            ClientOutcome::Dropped(reason) => Err(reason),
        };
        let finish_s = match &update {
            Ok((p, _)) if has_system => {
                let up = p.encoded_len() as u64;
                flight.start_s
                    + self
                        .participation
                        .finish_s(flight.batch, client, flight.samples, flight.down, up)
                        .unwrap_or(0.0)
            }
            _ => flight.ready_s,
        };
        let (update, finish_s) = match update {
            Ok(_) if finish_s > flight.offline_s => (
                Err(format!(
                    "went offline at virtual time {:.3} s before its upload finished",
                    flight.offline_s
                )),
                flight.offline_s,
            ),
            u => (u, finish_s),
        };
        if let Err(reason) = &update {
            tracing::info!(client, dispatch = batch + 1, %reason, "client task ended without an update");
        }
        flight.result = Some(Finished {
            update,
            finish_s: finish_s.max(flight.ready_s),
            arrival: run.arrivals,
        });
        run.arrivals += 1;
        refusal.map_or(Ok(()), Err)
    }

    /// Applies `client`'s finished task; returns the server update's end when the buffer is full.
    fn apply(&mut self, client: ClientId) -> Result<Option<RoundEnd>, EngineError> {
        let t0 = Instant::now();
        let version = self.next_round;
        let run = self.asynchronous.as_mut().expect("asynchronous");
        let Some(Flight {
            result: Some(done),
            version: from,
            batch,
            samples,
            ..
        }) = run.flights.remove(&client)
        else {
            return Ok(None);
        };
        run.now_s = run.now_s.max(done.finish_s);
        run.dispatch_due = true;
        let u = run.update.get_or_insert_with(|| {
            OpenUpdate::begin(self.strategy.as_mut(), version, &self.global)
        });
        let staleness = version - from;
        let strategy = self.strategy.as_mut();
        let (scenario, data) = (&self.scenario, &self.data);
        let folded = done.update.and_then(|(p, declared)| {
            let num_samples = super::weight_samples(scenario, data, client, declared);
            let norm = crate::protocol::update_norm(&p);
            let len = p.encoded_len() as u64;
            strategy
                .accept(
                    Reporter {
                        id: client,
                        num_samples,
                        staleness,
                    },
                    p,
                )
                .map_err(|e| e.to_string())?;
            Ok((norm, len))
        });
        match &folded {
            Ok((norm, len)) => {
                u.reported.push(client);
                u.staleness.push(staleness);
                u.norms.push((client, *norm));
                u.bytes_up += len;
                u.train_samples += samples;
            }
            Err(e) => {
                tracing::warn!(client, round = version + 1, error = %e, "update refused");
                u.dropped.push((client, e.clone()));
            }
        }
        u.aggregate_s += t0.elapsed().as_secs_f64();
        let full = u.reported.len() >= run.buffer_size;
        self.verdicts.push(Verdict {
            client,
            round: batch,
            folded: folded.map(|_| ()),
        });
        if full {
            return self.finish_update().map(Some);
        }
        Ok(None)
    }

    /// Makes the server update from the buffered updates and records it.
    fn finish_update(&mut self) -> Result<RoundEnd, EngineError> {
        let t0 = Instant::now();
        let run = self.asynchronous.as_mut().expect("asynchronous");
        let mut u = run.update.take().expect("open update");
        let round = self.next_round;
        let rejected = self.commit_round(round, &mut u.reported, &u.norms, &mut u.dropped)?;
        let run = self.asynchronous.as_mut().expect("asynchronous");
        let (now, last) = (run.now_s, run.last_update_s);
        run.last_update_s = now;
        let mut rec = RoundRecord {
            round: self.next_round,
            selected: u.dispatched,
            participants: u.reported.len(),
            bytes_up: u.bytes_up,
            bytes_down: u.bytes_down,
            time_aggregate_s: u.aggregate_s + t0.elapsed().as_secs_f64(),
            ..RoundRecord::default()
        };
        let extra = &mut rec.extra;
        extra.insert("train_samples".into(), u.train_samples as f64);
        extra.insert("virtual_round_s".into(), now - last);
        extra.insert("virtual_time_s".into(), now);
        extra.insert("in_flight".into(), run.flights.len() as f64);
        if let Some(&max) = u.staleness.iter().max() {
            let mean = u.staleness.iter().sum::<u64>() as f64 / u.staleness.len() as f64;
            extra.insert("staleness_mean".into(), mean);
            extra.insert("staleness_max".into(), max as f64);
        }
        self.add_outcome_metrics(&mut rec, rejected, u.dropped.len());
        rec.participant_ids = u.reported;
        self.conclude(rec, u.started)
    }
}
