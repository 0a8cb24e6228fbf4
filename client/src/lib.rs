//! The client process (`fedsim client`): hosts one or more clients of a run, trains them on local
//! data with the strategy's client half, and talks to the coordinator over gRPC.
//!
//! A process joins with its client ids, receives the run's scenario, then each hosted client
//! long-polls for tasks, trains (on a bounded pool of blocking threads) and submits. Strategy state that
//! persists across rounds (FedSpeed's `h_i`, SCAFFOLD's `c_i`, EF21's `g_i`) stays in this process. On a
//! broken connection the process rejoins with exponential backoff; if the coordinator re-runs a round
//! after a crash, the client restores its state from before that round so nothing is applied twice.

mod connect;
pub mod data;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedsim_algorithms::{ClientState, Strategy};
use fedsim_engine::Scenario;
use fedsim_engine::engine::run_client;
use fedsim_nn::{Model, Scratch};
use fedsim_proto::v1::coordinator_client::CoordinatorClient;
use fedsim_proto::v1::{
    FetchTaskRequest, HeartbeatRequest, LeaveRequest, ResultChunk, ResultHeader, result_chunk,
    task_chunk, task_header,
};
use fedsim_proto::wire;
use fedsim_types::{ClientId, Payload};
use tokio::sync::{RwLock, Semaphore};
use tonic::transport::Channel;

pub use data::DataSource;

use connect::{check_url, join};

/// Tracing target of the progress lines shown at the default log level (`fedsim` shows warnings,
/// errors and this target's `info` lines unless `RUST_LOG` says otherwise).
const STATUS: &str = "fedsim::status";

/// A process gives up after this many updates in a row failed for the same reason, with no update
/// accepted in between: refused by the coordinator as invalid (gRPC `InvalidArgument`), or not
/// computed because local training failed (e.g. a task that does not fit the local model). With the
/// same data and model the next update would fail too.
pub const REFUSALS_TO_GIVE_UP: u32 = 3;

/// Errors of the client process.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach or join the coordinator.
    #[error("coordinator {url}: {msg}")]
    Connect {
        /// The coordinator's URL.
        url: String,
        /// What happened.
        msg: String,
    },
    /// The coordinator stayed unreachable for the whole `--reconnect-timeout`.
    #[error(
        "cannot reach the coordinator at {url}: {msg}; gave up after retrying for {secs} s (--reconnect-timeout)"
    )]
    Unreachable {
        /// The coordinator's URL.
        url: String,
        /// The last failure, in words.
        msg: String,
        /// How long the process retried.
        secs: f64,
    },
    /// The coordinator refused this client (credentials, ids, protocol).
    #[error("refused by the coordinator: {0}")]
    Refused(String),
    /// [`REFUSALS_TO_GIVE_UP`] updates in a row were refused by the coordinator as invalid, or could
    /// not be computed, for the same reason: the next one would fail too (e.g. local data that does
    /// not fit the scenario's model).
    #[error(
        "{count} updates in a row failed for the same reason, so this process gives up (retrying cannot help): {reason}{hint}"
    )]
    UpdatesRefused {
        /// Updates failed in a row.
        count: u32,
        /// Why (the coordinator's refusal, or the local training error).
        reason: String,
        /// What to check, or "".
        hint: String,
    },
    /// The TLS handshake failed for a reason retrying cannot fix (e.g. an untrusted certificate).
    #[error("TLS with the coordinator {url} failed: {msg}")]
    Tls {
        /// The coordinator's URL.
        url: String,
        /// What happened.
        msg: String,
    },
    /// Local data, scenario or model problem.
    #[error(transparent)]
    Core(#[from] fedsim_engine::EngineError),
    /// A local file could not be used.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// TLS settings of the client.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// CA certificate (PEM) the coordinator's certificate must chain to.
    pub ca_cert: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// Name to verify the coordinator's certificate against (default: the URL's host).
    pub domain: Option<String>,
}

/// How to run a client process.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Coordinator URL, `http://host:port` or `https://host:port`.
    pub server: String,
    /// Hosted client ids.
    pub ids: Vec<ClientId>,
    /// Where the local data comes from.
    pub data: DataSource,
    /// The local test file (`--test-data`, with a `--data` file of its own) for federated evaluation.
    pub test_data: Option<PathBuf>,
    /// Credential token.
    pub token: String,
    /// TLS (for `https://` URLs).
    pub tls: ClientTls,
    /// Clients trained at the same time (default: cores).
    pub threads: usize,
    /// Give up reconnecting after this many seconds without success.
    pub reconnect_timeout_s: f64,
    /// The data root the scenario's relative data paths are taken under on this machine
    /// (`--data-dir`); `None`: `FEDSIM_DATA`, else the user cache directory.
    pub data_root: Option<fedsim_data::DataRoot>,
}

struct Session {
    client: CoordinatorClient<Channel>,
    run_id: String,
    session: String,
    generation: u64,
}

struct Slot {
    state: ClientState,
    /// Round of the last task and the state from before it, to undo a round the coordinator re-runs.
    last: Option<(u64, ClientState)>,
}

struct Runtime {
    opts: ClientOptions,
    scenario: Scenario,
    model: Box<dyn Model>,
    strategy: Box<dyn Strategy>,
    data: data::LocalData,
    session: RwLock<Session>,
    slots: Mutex<HashMap<ClientId, Slot>>,
    cpu: Semaphore,
    /// Set once the coordinator said the run is over (heartbeat or task).
    done: AtomicBool,
    /// Updates of this process refused in a row, for [`REFUSALS_TO_GIVE_UP`].
    refusals: Mutex<RefusalStreak>,
}

/// Updates failed in a row (refused as invalid, or local training failed) for the same reason, with
/// no update accepted in between (over all hosted clients of the process).
#[derive(Debug, Default)]
struct RefusalStreak {
    reason: String,
    count: u32,
}

impl RefusalStreak {
    /// Records an update failed for `reason`; true once [`REFUSALS_TO_GIVE_UP`] in a row share it.
    fn failed(&mut self, reason: &str) -> bool {
        if self.count > 0 && self.reason == reason {
            self.count += 1;
        } else {
            self.reason = reason.to_string();
            self.count = 1;
        }
        self.count >= REFUSALS_TO_GIVE_UP
    }

    /// Records an update the coordinator folded in.
    fn accepted(&mut self) {
        self.count = 0;
        self.reason.clear();
    }
}

/// Runs the client process until the coordinator ends the run.
pub async fn run(opts: ClientOptions) -> Result<(), ClientError> {
    if opts.ids.is_empty() {
        return Err(ClientError::Refused("no client ids to host".into()));
    }
    check_url(&opts.server)?;
    if opts.server.starts_with("http://") {
        tracing::warn!(
            "INSECURE MODE: plaintext connection to the coordinator; use an https:// URL with --ca-cert outside a trusted network"
        );
    }
    tracing::info!(target: STATUS, "connecting to the coordinator at {}", opts.server);
    // The first join returns the run's scenario; with it the local data is loaded, and the process
    // joins again declaring its clients' sample counts (the coordinator checks results against them).
    let (probe, probe_run, first_session, toml) = join(
        &opts,
        &opts.ids.iter().map(|&c| (c, 0, 0)).collect::<Vec<_>>(),
        "",
        "",
    )
    .await?;
    let mut scenario = Scenario::parse(&toml, &[])?;
    scenario.data_root = opts.data_root.clone();
    // The first join already counts our clients as connected: keep that session alive while the data
    // loads (on a machine under load that can outlast the heartbeat timeout, and a coordinator that
    // saw the clients go silent would plan round 1 without them). A `JoinSet` aborts the heartbeat
    // when dropped, on every way out of this function.
    let mut keepalive = tokio::task::JoinSet::new();
    {
        let mut client = probe.clone();
        let req = HeartbeatRequest {
            run_id: probe_run,
            session: first_session.clone(),
        };
        let period = Duration::from_secs_f64((scenario.deploy.heartbeat_timeout_s / 4.0).max(0.05));
        keepalive.spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let _ = client.heartbeat(req.clone()).await;
            }
        });
    }
    let data = {
        let (source, test, scenario, ids) = (
            opts.data.clone(),
            opts.test_data.clone(),
            scenario.clone(),
            opts.ids.clone(),
        );
        tokio::task::spawn_blocking(move || {
            data::LocalData::load(&source, test.as_deref(), &scenario, &ids)
        })
        .await
        .map_err(|e| ClientError::Refused(format!("loading the local data failed: {e}")))??
    };
    let model = data.build_model(&scenario)?;
    let strategy = scenario
        .build_strategy()
        .map_err(fedsim_engine::EngineError::from)?;
    let sizes = declared_sizes(&opts.ids, &data);
    let (client, run_id, session, _) =
        join(&opts, &sizes, &scenario.hash(), &first_session).await?;
    // The second join's session replaces the probe's.
    drop(keepalive);
    tracing::info!(
        target: STATUS,
        "joined the coordinator at {} (run {run_id}) with {} client(s)",
        opts.server,
        opts.ids.len()
    );
    let threads = opts.threads.max(1);
    let rt = Arc::new(Runtime {
        slots: Mutex::new(
            opts.ids
                .iter()
                .map(|&c| {
                    (
                        c,
                        Slot {
                            state: ClientState::default(),
                            last: None,
                        },
                    )
                })
                .collect(),
        ),
        opts,
        scenario,
        model,
        strategy,
        data,
        session: RwLock::new(Session {
            client,
            run_id,
            session,
            generation: 0,
        }),
        cpu: Semaphore::new(threads),
        done: AtomicBool::new(false),
        refusals: Mutex::new(RefusalStreak::default()),
    });
    let hb = tokio::spawn(heartbeat(rt.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for &id in &rt.opts.ids {
        tasks.spawn(client_loop(rt.clone(), id));
    }
    // The first failure ends the process: the other hosted clients stop with it.
    let mut result = Ok(());
    while let Some(t) = tasks.join_next().await {
        let failed = match t {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) if e.is_cancelled() => None,
            Err(e) => Some(ClientError::Refused(format!("client task failed: {e}"))),
        };
        if let Some(e) = failed {
            tasks.abort_all();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    hb.abort();
    if result.is_ok() {
        tracing::info!(target: STATUS, "run finished");
    }
    let s = rt.session.read().await;
    let mut c = s.client.clone();
    let _ = c
        .leave(LeaveRequest {
            run_id: s.run_id.clone(),
            session: s.session.clone(),
        })
        .await;
    result
}

/// What the process declares at join for each hosted id: its training and local test sizes.
fn declared_sizes(ids: &[ClientId], data: &data::LocalData) -> Vec<(ClientId, u64, u64)> {
    ids.iter()
        .map(|&c| {
            (
                c,
                data.client(c).len() as u64,
                data.client_test(c).len() as u64,
            )
        })
        .collect()
}

async fn heartbeat(rt: Arc<Runtime>) {
    let period = Duration::from_secs_f64((rt.scenario.deploy.heartbeat_timeout_s / 4.0).max(0.05));
    loop {
        tokio::time::sleep(period).await;
        let (mut c, req) = {
            let s = rt.session.read().await;
            (
                s.client.clone(),
                HeartbeatRequest {
                    run_id: s.run_id.clone(),
                    session: s.session.clone(),
                },
            )
        };
        if c.heartbeat(req).await.is_ok_and(|r| r.into_inner().done) {
            rt.done.store(true, Ordering::Relaxed);
        }
    }
}

/// Rejoins after a failure, unless another task already did (generation changed).
async fn rejoin(rt: &Runtime, seen_generation: u64) -> Result<(), ClientError> {
    let mut s = rt.session.write().await;
    if s.generation != seen_generation {
        return Ok(());
    }
    let sizes = declared_sizes(&rt.opts.ids, &rt.data);
    let (client, run_id, session, _) =
        join(&rt.opts, &sizes, &rt.scenario.hash(), &s.session).await?;
    tracing::info!(target: STATUS, "rejoined the coordinator at {} (run {run_id})", rt.opts.server);
    *s = Session {
        client,
        run_id,
        session,
        generation: seen_generation + 1,
    };
    Ok(())
}

enum Fetched {
    Train {
        round: u64,
        token: String,
        task: Payload,
        max_steps: Option<usize>,
        /// When the round closes (from the task's `deadline_s`).
        deadline: Option<Instant>,
    },
    Evaluate {
        round: u64,
        token: String,
        model: Payload,
    },
    Wait,
    Done,
}

async fn fetch(rt: &Runtime, id: ClientId) -> Result<Fetched, (tonic::Status, u64)> {
    let (mut c, req, generation) = {
        let s = rt.session.read().await;
        (
            s.client.clone(),
            FetchTaskRequest {
                run_id: s.run_id.clone(),
                session: s.session.clone(),
                client_id: id,
                after_round: -1,
            },
            s.generation,
        )
    };
    let mut stream = c
        .fetch_task(req)
        .await
        .map_err(|e| (e, generation))?
        .into_inner();
    let first = stream.message().await.map_err(|e| (e, generation))?;
    let Some(task_chunk::Part::Header(h)) = first.and_then(|m| m.part) else {
        return Err((
            tonic::Status::data_loss("task stream without a header"),
            generation,
        ));
    };
    match task_header::Kind::try_from(h.kind) {
        Ok(task_header::Kind::Done) => Ok(Fetched::Done),
        Ok(kind @ (task_header::Kind::Train | task_header::Kind::Evaluate)) => {
            let started = Instant::now();
            let limit = rt.scenario.deploy.max_message_mib.saturating_mul(1 << 20);
            let mut asm = wire::Assembler::new(h.payload_len, limit)
                .map_err(|e| (tonic::Status::resource_exhausted(e.to_string()), generation))?;
            while let Some(m) = stream.message().await.map_err(|e| (e, generation))? {
                if let Some(task_chunk::Part::Data(d)) = m.part {
                    asm.push(&d)
                        .map_err(|e| (tonic::Status::data_loss(e.to_string()), generation))?;
                }
            }
            let bytes = asm.received();
            let task = asm
                .finish()
                .map_err(|e| (tonic::Status::data_loss(e.to_string()), generation))?;
            let secs = started.elapsed().as_secs_f64();
            tracing::debug!(
                client = id,
                round = h.round,
                bytes,
                secs,
                mb_per_s = bytes as f64 / 1e6 / secs.max(1e-9),
                "task received"
            );
            if kind == task_header::Kind::Evaluate {
                return Ok(Fetched::Evaluate {
                    round: h.round,
                    token: h.round_token,
                    model: task,
                });
            }
            Ok(Fetched::Train {
                round: h.round,
                token: h.round_token,
                task,
                max_steps: h.max_steps.and_then(|m| usize::try_from(m).ok()),
                deadline: (h.deadline_s > 0.0 && h.deadline_s.is_finite())
                    .then(|| Instant::now() + Duration::from_secs_f64(h.deadline_s)),
            })
        }
        _ => Ok(Fetched::Wait),
    }
}

async fn client_loop(rt: Arc<Runtime>, id: ClientId) -> Result<(), ClientError> {
    loop {
        match fetch(&rt, id).await {
            Ok(Fetched::Done) => {
                rt.done.store(true, Ordering::Relaxed);
                tracing::info!(client = id, "run finished");
                return Ok(());
            }
            Ok(Fetched::Wait) => continue,
            Ok(Fetched::Evaluate {
                round,
                token,
                model,
            }) => {
                let result = evaluate(&rt, id, round, model).await;
                if let Err(e) = &result {
                    tracing::warn!(
                        "client {id} could not evaluate after round {}: {e}; reported to the coordinator",
                        round + 1
                    );
                }
                submit_evaluation(&rt, id, round, &token, result).await;
            }
            Ok(Fetched::Train {
                round,
                token,
                task,
                max_steps,
                deadline,
            }) => {
                // The new client state is committed only when the coordinator confirms that the update
                // was folded into the round; a refused, late or lost update leaves the state as it was.
                let started = Instant::now();
                let trained = train(&rt, id, round, task, max_steps).await;
                tracing::debug!(
                    client = id,
                    round,
                    secs = started.elapsed().as_secs_f64(),
                    "trained"
                );
                match trained {
                    Ok((update, new_state)) => {
                        if let Some(deadline) =
                            deadline.filter(|_| is_late(&rt.scenario, round, id))
                        {
                            // `[[deploy.faults]] late_clients`: submit just after the round closed.
                            tracing::warn!(
                                client = id,
                                round = round + 1,
                                "fault: submitting after the round's deadline"
                            );
                            tokio::time::sleep_until(
                                (deadline + Duration::from_millis(500)).into(),
                            )
                            .await;
                        }
                        let started = Instant::now();
                        let folded = submit(&rt, id, round, &token, Ok(update)).await?;
                        tracing::debug!(
                            client = id,
                            round,
                            secs = started.elapsed().as_secs_f64(),
                            folded,
                            "submitted"
                        );
                        if folded {
                            commit_state(&rt, id, new_state);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            "client {id} could not train round {}: {e}; reported to the coordinator",
                            round + 1
                        );
                        let reason = format!("could not train: {e}");
                        submit(&rt, id, round, &token, Err(e)).await?;
                        note_failure(&rt, reason)?;
                    }
                }
            }
            Err(_) if rt.done.load(Ordering::Relaxed) => {
                // The coordinator said the run is over and has gone away.
                tracing::info!(client = id, "run finished");
                return Ok(());
            }
            Err((status, generation)) => {
                tracing::warn!(client = id, code = ?status.code(), msg = status.message(), "fetch failed; reconnecting");
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Err(e) = rejoin(&rt, generation).await {
                    if rt.done.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Whether a `[[deploy.faults]]` entry makes client `id` submit late in (0-based) `round`.
fn is_late(scenario: &Scenario, round: u64, id: ClientId) -> bool {
    scenario.deploy.faults.iter().any(|f| {
        f.round == round + 1
            && f.late_clients.as_deref().is_some_and(|ids| {
                fedsim_engine::participation::events::parse_id_list(ids)
                    .is_ok_and(|v| v.contains(&id))
            })
    })
}

/// Stores a client's state after the coordinator folded its update in.
fn commit_state(rt: &Runtime, id: ClientId, state: ClientState) {
    if let Some(slot) = rt.slots.lock().ok().as_mut().and_then(|s| s.get_mut(&id)) {
        slot.state = state;
    }
}

/// Trains one round; returns the update and the client's state after it (not yet committed).
async fn train(
    rt: &Arc<Runtime>,
    id: ClientId,
    round: u64,
    task: Payload,
    max_steps: Option<usize>,
) -> Result<(Payload, ClientState), String> {
    let _permit = rt.cpu.acquire().await.map_err(|e| e.to_string())?;
    let rt2 = rt.clone();
    tokio::task::spawn_blocking(move || {
        let mut state = {
            let mut slots = rt2
                .slots
                .lock()
                .map_err(|_| "state lock poisoned".to_string())?;
            let slot = slots.get_mut(&id).ok_or("unknown client")?;
            match &slot.last {
                // The coordinator re-runs a round we already trained (it restarted): undo that round.
                Some((r, before)) if *r == round => before.clone(),
                _ => {
                    slot.last = Some((round, slot.state.clone()));
                    slot.state.clone()
                }
            }
        };
        let mut scratch = Scratch::default();
        let out = run_client(
            rt2.strategy.as_ref(),
            rt2.model.as_ref(),
            rt2.data.client(id),
            &rt2.scenario.train,
            rt2.scenario.seed,
            round,
            id,
            &mut state,
            &task,
            max_steps,
            &mut scratch,
        )
        .map_err(|e| e.to_string());
        out.map(|update| (update, state))
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Runs a federated evaluation task: the global model in `model` (tensor `global`) on the client's
/// local test set, after fine-tuning a copy when `eval.federated.personalize_steps` asks. The client's
/// strategy state is not touched.
async fn evaluate(
    rt: &Arc<Runtime>,
    id: ClientId,
    round: u64,
    model: Payload,
) -> Result<fedsim_engine::fedeval::ClientEval, String> {
    let _permit = rt.cpu.acquire().await.map_err(|e| e.to_string())?;
    let rt2 = rt.clone();
    tokio::task::spawn_blocking(move || {
        let global = model.dense("global", rt2.model.num_params())?;
        let steps = rt2
            .scenario
            .eval
            .federated
            .as_ref()
            .map_or(0, |f| f.personalize_steps);
        let mut scratch = Scratch::default();
        Ok(fedsim_engine::engine::run_evaluation(
            rt2.model.as_ref(),
            global,
            rt2.data.client(id),
            rt2.data.client_test(id),
            &rt2.scenario.train,
            steps,
            rt2.scenario.seed,
            round,
            id,
            rt2.scenario.eval.batch_size,
            &mut scratch,
        ))
    })
    .await
    .map_err(|e| format!("evaluation task failed: {e}"))?
}

/// Submits a federated evaluation result (a header with `eval`, no payload). A refusal is logged; the
/// evaluation changes no state, so there is nothing to undo.
async fn submit_evaluation(
    rt: &Runtime,
    id: ClientId,
    round: u64,
    token: &str,
    result: Result<fedsim_engine::fedeval::ClientEval, String>,
) {
    let (mut c, run_id, session) = {
        let s = rt.session.read().await;
        (s.client.clone(), s.run_id.clone(), s.session.clone())
    };
    let (eval, error) = match result {
        Ok(e) => (
            Some(fedsim_proto::v1::EvalResult {
                samples: e.samples,
                accuracy: e.accuracy,
                loss: e.loss,
            }),
            String::new(),
        ),
        Err(e) => (None, e),
    };
    let header = ResultHeader {
        run_id,
        session,
        client_id: id,
        round,
        round_token: token.to_string(),
        num_samples: rt.data.client_test(id).len() as u64,
        payload_len: 0,
        error,
        eval,
    };
    let msgs = vec![ResultChunk {
        part: Some(result_chunk::Part::Header(header)),
    }];
    if let Err(s) = c.submit_result(tokio_stream::iter(msgs)).await {
        tracing::warn!(client = id, round = round + 1, code = ?s.code(), msg = s.message(), "evaluation result not accepted");
    }
}

async fn submit(
    rt: &Runtime,
    id: ClientId,
    round: u64,
    token: &str,
    update: Result<Payload, String>,
) -> Result<bool, ClientError> {
    let (mut c, run_id, session) = {
        let s = rt.session.read().await;
        (s.client.clone(), s.run_id.clone(), s.session.clone())
    };
    let (bytes, error) = match &update {
        Ok(p) => (wire::encode(p), String::new()),
        Err(e) => (Bytes::new(), e.clone()),
    };
    let header = ResultHeader {
        run_id,
        session,
        client_id: id,
        round,
        round_token: token.to_string(),
        num_samples: rt.data.client(id).len() as u64,
        payload_len: bytes.len() as u64,
        error,
        eval: None,
    };
    let mut msgs = vec![ResultChunk {
        part: Some(result_chunk::Part::Header(header)),
    }];
    msgs.extend(wire::chunks(&bytes).map(|d| ResultChunk {
        part: Some(result_chunk::Part::Data(d)),
    }));
    // The coordinator answers an update only once its engine has folded it into the round (or refused
    // it): OK means folded in.
    let sent_update = update.is_ok();
    match c.submit_result(tokio_stream::iter(msgs)).await {
        Ok(_) => {
            if sent_update && let Ok(mut streak) = rt.refusals.lock() {
                streak.accepted();
            }
            Ok(sent_update)
        }
        Err(s) if sent_update && s.code() == tonic::Code::InvalidArgument => {
            // Refused as invalid: the same data and model will most likely give the same refusal.
            let reason = refusal_reason(id, s.message());
            tracing::warn!(
                "client {id}, round {}: the coordinator refused the update: {reason}",
                round + 1
            );
            note_failure(rt, format!("refused by the coordinator: {reason}"))?;
            Ok(false)
        }
        Err(s) => {
            // The round may have closed, or the coordinator restarted; the next fetch sorts it out.
            tracing::warn!(client = id, round, code = ?s.code(), msg = s.message(), "result not accepted; client state kept as before this round");
            Ok(false)
        }
    }
}

/// Counts a failed update; the process gives up after [`REFUSALS_TO_GIVE_UP`] in a row for `reason`.
fn note_failure(rt: &Runtime, reason: String) -> Result<(), ClientError> {
    let mut streak = rt
        .refusals
        .lock()
        .map_err(|_| ClientError::Refused("refusal counter poisoned".into()))?;
    if streak.failed(&reason) {
        return Err(ClientError::UpdatesRefused {
            count: streak.count,
            hint: refusal_hint(&reason).to_string(),
            reason,
        });
    }
    Ok(())
}

/// The coordinator's reason for refusing an update of client `id`, without the client id it starts
/// with (so that refusals of different hosted clients for the same cause compare equal).
fn refusal_reason(id: ClientId, msg: &str) -> String {
    msg.strip_prefix(&format!("client {id}: "))
        .unwrap_or(msg)
        .to_string()
}

/// What to check when updates fail for `reason`.
fn refusal_hint(reason: &str) -> &'static str {
    if reason.contains("values, expected") || reason.contains("shape") {
        " (the model built for the local data differs from the run's model: the local data \
         (--data) must have the scenario's number of features and classes)"
    } else if reason.contains("num_samples") {
        " (the number of local samples changed since the process joined)"
    } else {
        ""
    }
}

#[cfg(test)]
mod failure_tests {
    use super::*;

    #[test]
    fn the_same_failure_three_times_in_a_row_gives_up() {
        let mut s = RefusalStreak::default();
        assert!(!s.failed("a"));
        assert!(!s.failed("a"));
        // An accepted update starts over; so does another reason.
        s.accepted();
        assert!(!s.failed("a"));
        assert!(!s.failed("b"));
        assert!(!s.failed("a"));
        assert!(!s.failed("a"));
        assert!(s.failed("a"));
        assert_eq!(s.count, REFUSALS_TO_GIVE_UP);
    }

    #[test]
    fn refusals_of_different_hosted_clients_compare_equal() {
        let a = refusal_reason(
            3,
            "client 3: invalid update: tensor `model` has 4554 values",
        );
        let b = refusal_reason(
            12,
            "client 12: invalid update: tensor `model` has 4554 values",
        );
        assert_eq!(a, b);
        assert_eq!(a, "invalid update: tensor `model` has 4554 values");
        assert!(refusal_hint(&a).is_empty());
        assert!(refusal_hint("tensor `model` has 4554 values, expected 579").contains("--data"));
    }
}
