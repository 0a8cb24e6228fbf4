//! The tonic service: authenticates clients, hands out tasks, receives results. It never touches the
//! engine: results go to the round driver over a channel, and the driver's verdict comes back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedsim_engine::Scenario;
use fedsim_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use fedsim_proto::v1::{
    self, FetchTaskRequest, HeartbeatReply, HeartbeatRequest, JoinRequest, JoinResponse,
    LeaveReply, LeaveRequest, ResultChunk, ResultHeader, SubmitReply, TaskChunk, TaskHeader,
    result_chunk, task_chunk,
};
use fedsim_proto::{PROTOCOL_VERSION, wire};
use fedsim_types::{ClientId, Payload};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::budget::{MemoryBudget, Received, SpoolFile};
pub(crate) use crate::ids::random_hex;
use crate::registry::Registry;
use crate::{Credentials, ServerError};

/// Longest a FetchTask call waits before answering WAIT.
const LONG_POLL: Duration = Duration::from_secs(15);

/// Largest single gRPC message the coordinator accepts: one payload chunk ([`wire::CHUNK_BYTES`]) and
/// its header, with room to spare. Payloads travel as streams of chunks, so this bounds a chunk, not a
/// model (the payload limit is the scenario's `deploy.max_message_mib`), and it bounds what a caller
/// that has not joined can make the coordinator buffer per request: a `Join` is a few KiB.
pub const MAX_GRPC_MESSAGE: usize = wire::CHUNK_BYTES + (64 << 10);

/// Largest message the coordinator sends (task chunks, the scenario in a `JoinResponse`).
const MAX_SENT_MESSAGE: usize = 8 << 20;

/// Longest the service waits for the next chunk of a result stream before giving up on it.
const MIN_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Tasks streamed to clients at the same time. Each download holds about a chunk and HTTP/2 send
/// buffers (well under 1 MiB, whatever the model size); further fetchers wait their turn, so the
/// coordinator's buffers do not grow with the number of clients fetching at once.
const MAX_CONCURRENT_DOWNLOADS: usize = 16;

/// Directory (inside the run directory) of updates spooled to disk.
pub const SPOOL_DIR: &str = "spool";

/// The driver's answer to a submission: accepted, or the status the client receives.
pub type Verdict = Result<(), Status>;

/// What the clients of an open round do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskKind {
    /// Train and submit an update.
    Train,
    /// Evaluate the global model on the local test set and submit the result (federated evaluation).
    Evaluate,
}

/// A round (of training or of federated evaluation) that is open for results.
#[derive(Debug)]
pub struct OpenRound {
    /// Training or evaluation.
    pub kind: TaskKind,
    /// Round index, 0-based (an evaluation has the index of the training round it follows).
    pub round: u64,
    /// Token that results must carry.
    pub token: String,
    /// Clients to run, ascending (selected and not dropped by a scripted event).
    pub selected: Vec<ClientId>,
    /// Step budgets of stragglers that report partial work.
    pub max_steps: std::collections::BTreeMap<ClientId, usize>,
    /// The encoded task.
    pub payload: Bytes,
    /// When the round closes at the latest (None: no deadline).
    pub deadline: Option<Instant>,
    /// Clients whose result the driver has received.
    pub submitted: Mutex<HashSet<ClientId>>,
    /// Clients with an upload in progress (a second one is refused at its header).
    pub uploading: ClientClaims,
    /// Bytes of tasks sent.
    pub bytes_down: AtomicU64,
}

impl OpenRound {
    /// Whether `client` is to be handed this task: selected, and no result received yet.
    pub fn hands_task_to(&self, client: ClientId) -> bool {
        self.selected.binary_search(&client).is_ok()
            && !self.submitted.lock().is_ok_and(|set| set.contains(&client))
    }
}

/// Clients that each hold one slot (an upload, a task request). A slot is freed when its [`Claim`] is
/// dropped, however the request ends.
#[derive(Debug, Default)]
pub struct ClientClaims(Arc<Mutex<HashSet<ClientId>>>);

impl ClientClaims {
    /// Takes `client`'s slot, or `None` when it is held already.
    fn claim(&self, client: ClientId) -> Option<Claim> {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(client);
        fresh.then(|| Claim {
            set: self.0.clone(),
            client,
        })
    }
}

/// A held slot of [`ClientClaims`].
struct Claim {
    set: Arc<Mutex<HashSet<ClientId>>>,
    client: ClientId,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.client);
    }
}

/// Claims `client`'s upload slot in `open`, or refuses a second upload (or a result after the first
/// was received) at its header.
fn claim_upload(open: &OpenRound, client: ClientId, round: u64) -> Result<Claim, Status> {
    if open.submitted.lock().is_ok_and(|s| s.contains(&client)) {
        tracing::warn!(client, round, "duplicate result refused at its header");
        return Err(Status::already_exists(format!(
            "client {client} already reported in round {round}"
        )));
    }
    open.uploading.claim(client).ok_or_else(|| {
        tracing::warn!(
            client,
            round,
            "second upload in progress refused at its header"
        );
        Status::already_exists(format!(
            "an upload for client {client} in round {round} is already in progress"
        ))
    })
}

/// What clients can see of the run.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Between rounds.
    Waiting,
    /// A round is open.
    Open(Arc<OpenRound>),
    /// Training tasks of several dispatches are open at once (asynchronous strategies: each dispatch
    /// is an [`OpenRound`] whose `round` is the dispatch number).
    Tasks(Arc<Vec<Arc<OpenRound>>>),
    /// The run is over.
    Done,
}

/// What a client submitted.
#[derive(Debug)]
pub enum Outcome {
    /// A training result: the update (decoded in memory, or spooled to a file), or the client's own
    /// error.
    Update(Result<Received, String>),
    /// A federated evaluation result, or the client's own error.
    Evaluation(Result<fedsim_engine::fedeval::ClientEval, String>),
}

/// One client's result, on its way to the driver.
#[derive(Debug)]
pub struct Submission {
    /// The client.
    pub client: ClientId,
    /// Round it is for.
    pub round: u64,
    /// Its samples.
    pub num_samples: u64,
    /// What it submitted.
    pub result: Outcome,
    /// Bytes received (gRPC messages, see [`wire::grpc_message_len`]).
    pub wire_bytes: u64,
    /// The driver's verdict; it may come only once the update has been folded in (client-id order).
    pub reply: oneshot::Sender<Verdict>,
}

/// State shared by the service and the driver.
#[derive(Debug)]
pub struct Shared {
    /// Identifies the run (kept across a resume).
    pub run_id: String,
    scenario_toml: String,
    scenario_hash: String,
    num_clients: usize,
    /// Connected clients.
    pub registry: Mutex<Registry>,
    /// Current phase, watched by long-polling fetchers.
    pub phase: watch::Sender<Phase>,
    results_tx: mpsc::Sender<Submission>,
    results_rx: Mutex<Option<mpsc::Receiver<Submission>>>,
    credentials: Option<Credentials>,
    max_payload: usize,
    idle_timeout: Duration,
    /// Longest the coordinator waits for a client to take the next chunk of a task download
    /// (`deploy.send_timeout_s`).
    send_timeout: Duration,
    /// Memory for received updates (see [`crate::budget`]).
    pub budget: Arc<MemoryBudget>,
    /// Directory of spool files.
    pub spool: PathBuf,
    downloads: tokio::sync::Semaphore,
    /// Clients with a task request in progress (one per client; a second is refused).
    fetching: ClientClaims,
    /// Bounds on decoding an update, from the strategy's schema (set by the driver).
    decode_limits: std::sync::OnceLock<wire::DecodeLimits>,
}

impl Shared {
    /// Shared state for a run of `scenario`. A resumed run keeps the run id from its checkpoint.
    pub fn new(
        scenario: &Scenario,
        credentials: Option<Credentials>,
        resume: bool,
        out: &Path,
        update_memory: usize,
    ) -> Result<Self, ServerError> {
        let run_id = if resume {
            crate::checkpoint::read_run_id(out)?
        } else {
            random_hex(8)
        };
        let (phase, _) = watch::channel(Phase::Waiting);
        let (results_tx, results_rx) = mpsc::channel(256);
        Ok(Self {
            run_id,
            scenario_toml: scenario.to_toml(),
            scenario_hash: scenario.hash(),
            num_clients: scenario.clients,
            registry: Mutex::new(Registry::new(Duration::from_secs_f64(
                scenario.deploy.heartbeat_timeout_s,
            ))),
            phase,
            results_tx,
            results_rx: Mutex::new(Some(results_rx)),
            credentials,
            max_payload: scenario.deploy.max_message_mib.saturating_mul(1 << 20),
            idle_timeout: MIN_IDLE_TIMEOUT.max(Duration::from_secs_f64(
                scenario.deploy.heartbeat_timeout_s * 3.0,
            )),
            send_timeout: Duration::from_secs_f64(scenario.deploy.send_timeout_s),
            budget: MemoryBudget::new(update_memory),
            spool: out.join(SPOOL_DIR),
            downloads: tokio::sync::Semaphore::new(MAX_CONCURRENT_DOWNLOADS),
            fetching: ClientClaims::default(),
            decode_limits: std::sync::OnceLock::new(),
        })
    }

    /// Bounds decoding of every update by the strategy's schema: at most `max_tensors` tensors (see
    /// [`fedsim_engine::Engine::update_tensors`]). Called once, by the driver.
    pub fn set_update_tensors(&self, max_tensors: usize) {
        let _ = self
            .decode_limits
            .set(wire::DecodeLimits::tensors(max_tensors));
    }

    fn decode_limits(&self) -> wire::DecodeLimits {
        self.decode_limits
            .get()
            .copied()
            .unwrap_or(wire::DecodeLimits::GENEROUS)
    }

    /// The receiving end of submissions (taken once, by the driver).
    pub fn take_results(&self) -> Option<mpsc::Receiver<Submission>> {
        self.results_rx.lock().ok()?.take()
    }

    /// Locks the registry (a poisoned lock is recovered: the registry holds no invariants across calls).
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Largest accepted payload in bytes (`deploy.max_message_mib`).
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Marks the run as over.
    pub fn finish(&self) {
        self.phase.send_replace(Phase::Done);
    }

    fn check_run(&self, run_id: &str) -> Result<(), Status> {
        if run_id != self.run_id {
            // The caller may not have joined: never tell it the run id.
            return Err(Status::failed_precondition(format!(
                "unknown run id `{run_id}`; join again"
            )));
        }
        Ok(())
    }

    fn check_owner(&self, session: &str, client: ClientId) -> Result<(), Status> {
        let mut reg = self.registry();
        if !reg.owns(session, client) {
            tracing::warn!(client, "request for a client this session did not join");
            return Err(Status::permission_denied(format!(
                "client {client} is not registered in this session"
            )));
        }
        reg.touch(session);
        Ok(())
    }

    /// Receives a result's payload into memory, then decodes and validates it on a blocking thread (a
    /// large or adversarial payload never stalls the async workers that answer heartbeats and joins).
    async fn receive_in_memory(
        &self,
        h: &ResultHeader,
        stream: &mut Streaming<ResultChunk>,
        wire_bytes: &mut u64,
    ) -> Result<Payload, Status> {
        let mut asm = wire::Assembler::new(h.payload_len, self.max_payload)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        while let Some(chunk) = self.next_chunk(stream).await? {
            *wire_bytes += wire::grpc_message_len(chunk.encoded_len());
            match chunk.part {
                Some(result_chunk::Part::Data(d)) => {
                    asm.push(&d).map_err(|e| refuse(h, e.to_string()))?;
                }
                _ => return Err(refuse(h, SECOND_HEADER.into())),
            }
        }
        let bytes = asm.into_bytes().map_err(|e| refuse(h, e.to_string()))?;
        let limits = self.decode_limits();
        tokio::task::spawn_blocking(move || wire::decode_untrusted(bytes, limits))
            .await
            .map_err(|e| Status::internal(format!("decoding failed: {e}")))?
            .map_err(|e| refuse(h, e.to_string()))
    }

    /// Receives a result's payload chunk by chunk into a spool file (memory: one chunk). It is decoded
    /// and validated when the engine folds it in.
    async fn receive_to_spool(
        &self,
        h: &ResultHeader,
        stream: &mut Streaming<ResultChunk>,
        wire_bytes: &mut u64,
    ) -> Result<SpoolFile, Status> {
        use tokio::io::AsyncWriteExt;
        let io = |e: std::io::Error| {
            tracing::error!(error = %e, "cannot spool an update to disk");
            Status::unavailable(format!("the coordinator cannot store the update: {e}"))
        };
        let spool =
            SpoolFile::new(&self.spool, h.round, h.client_id, self.decode_limits()).map_err(io)?;
        let mut file = tokio::fs::File::create(spool.path()).await.map_err(io)?;
        let mut written = 0u64;
        while let Some(chunk) = self.next_chunk(stream).await? {
            *wire_bytes += wire::grpc_message_len(chunk.encoded_len());
            match chunk.part {
                Some(result_chunk::Part::Data(d)) => {
                    written += d.len() as u64;
                    if written > h.payload_len {
                        return Err(refuse(
                            h,
                            format!(
                                "malformed payload: more data than the declared {} bytes",
                                h.payload_len
                            ),
                        ));
                    }
                    file.write_all(&d).await.map_err(io)?;
                }
                _ => return Err(refuse(h, SECOND_HEADER.into())),
            }
        }
        if written != h.payload_len {
            return Err(refuse(
                h,
                format!(
                    "malformed payload: truncated: {written} of {} declared bytes arrived",
                    h.payload_len
                ),
            ));
        }
        file.flush().await.map_err(io)?;
        Ok(spool)
    }

    /// Sends a submission to the driver and answers with its verdict (`sub.reply` is replaced).
    async fn hand_to_driver(&self, mut sub: Submission) -> Result<Response<SubmitReply>, Status> {
        let (reply, verdict) = oneshot::channel();
        sub.reply = reply;
        self.results_tx
            .send(sub)
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;
        match verdict.await {
            Ok(Ok(())) => Ok(Response::new(SubmitReply {
                accepted: true,
                message: String::new(),
            })),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(Status::unavailable("the coordinator is shutting down")),
        }
    }

    /// Receives a federated evaluation result (a header with `eval` set, no payload) for the open
    /// evaluation `open`: its sample count must be the local test size the client declared at join.
    /// The values themselves are checked by the engine.
    async fn submit_evaluation(
        &self,
        h: ResultHeader,
        open: &OpenRound,
        stream: &mut Streaming<ResultChunk>,
        wire_bytes: u64,
    ) -> Result<Response<SubmitReply>, Status> {
        if open.kind != TaskKind::Evaluate {
            return Err(refuse(
                &h,
                format!(
                    "round {} is a training round: submit an update, not an evaluation",
                    h.round
                ),
            ));
        }
        if h.payload_len != 0 {
            return Err(refuse(&h, "an evaluation result carries no payload".into()));
        }
        let _upload = claim_upload(open, h.client_id, h.round)?;
        if self.next_chunk(stream).await?.is_some() {
            return Err(refuse(&h, "an evaluation result carries no payload".into()));
        }
        let result = match (&h.eval, h.error.is_empty()) {
            (_, false) => Err(format!("client reported an error: {}", h.error)),
            (None, true) => {
                return Err(refuse(&h, "an evaluation result without `eval`".into()));
            }
            (Some(e), true) => {
                let declared = self.registry().num_test_samples(h.client_id).unwrap_or(0);
                if e.samples != declared || h.num_samples != declared {
                    return Err(refuse(
                        &h,
                        format!(
                            "evaluated {} samples but the client declared a local test set of {declared} at join",
                            e.samples
                        ),
                    ));
                }
                Ok(fedsim_engine::fedeval::ClientEval {
                    client: h.client_id,
                    samples: e.samples,
                    accuracy: e.accuracy,
                    loss: e.loss,
                })
            }
        };
        self.hand_to_driver(Submission {
            client: h.client_id,
            round: h.round,
            num_samples: h.num_samples,
            result: Outcome::Evaluation(result),
            wire_bytes,
            reply: oneshot::channel().0,
        })
        .await
    }

    /// Reads the next message of a result stream, giving up after the idle timeout.
    async fn next_chunk(
        &self,
        stream: &mut Streaming<ResultChunk>,
    ) -> Result<Option<ResultChunk>, Status> {
        match tokio::time::timeout(self.idle_timeout, stream.message()).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no data for {:.0} s in a result stream",
                self.idle_timeout.as_secs_f64()
            ))),
        }
    }
}

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The tonic server with explicit message size limits.
    pub fn into_server(self) -> CoordinatorServer<Self> {
        CoordinatorServer::new(self)
            .max_decoding_message_size(MAX_GRPC_MESSAGE)
            .max_encoding_message_size(MAX_SENT_MESSAGE)
    }
}

const SECOND_HEADER: &str = "unexpected second header in a result stream";

/// Refuses a malformed result, with a log line.
fn refuse(h: &ResultHeader, msg: String) -> Status {
    tracing::warn!(client = h.client_id, round = h.round, error = %msg, "malformed result refused");
    Status::invalid_argument(msg)
}

fn header(kind: v1::task_header::Kind) -> TaskChunk {
    TaskChunk {
        part: Some(task_chunk::Part::Header(TaskHeader {
            kind: kind as i32,
            ..TaskHeader::default()
        })),
    }
}

/// The sending half of one task request's answer stream, with the client it serves and how long a
/// message may wait for the client to take it (`deploy.send_timeout_s`).
struct TaskAnswer {
    tx: mpsc::Sender<Result<TaskChunk, Status>>,
    client: ClientId,
    timeout: Duration,
}

impl TaskAnswer {
    /// Sends one message; false when the client went away or did not take it within the timeout
    /// (the request is abandoned and its slots freed).
    async fn send(&self, msg: TaskChunk) -> bool {
        match tokio::time::timeout(self.timeout, self.tx.send(Ok(msg))).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(
                    client = self.client,
                    secs = self.timeout.as_secs_f64(),
                    "task answer abandoned: the client stopped reading"
                );
                false
            }
        }
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let peer_addr = req.remote_addr();
        let peer = peer_addr.map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
        let r = req.into_inner();
        let s = &self.shared;
        let refuse = |status: Status| {
            tracing::warn!(%peer, code = ?status.code(), reason = status.message(), "join refused");
            Err(status)
        };
        if r.protocol_version != PROTOCOL_VERSION {
            return refuse(Status::failed_precondition(format!(
                "client speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}",
                r.protocol_version
            )));
        }
        if r.clients.is_empty() {
            return refuse(Status::invalid_argument("join lists no client ids"));
        }
        let ids: Vec<ClientId> = r.clients.iter().map(|c| c.id).collect();
        if let Some(bad) = ids.iter().find(|&&c| c as usize >= s.num_clients) {
            return refuse(Status::invalid_argument(format!(
                "client id {bad} is out of range (the run has {} clients)",
                s.num_clients
            )));
        }
        let mut seen = HashSet::new();
        if let Some(dup) = ids.iter().find(|&&c| !seen.insert(c)) {
            return refuse(Status::invalid_argument(format!(
                "client id {dup} is listed twice"
            )));
        }
        let verified = match s.credentials.as_ref().map(|c| c.check(&r.token, &ids)) {
            Some(Err(msg)) => return refuse(Status::unauthenticated(msg)),
            Some(Ok(())) => true,
            None => false,
        };
        if !r.scenario_hash.is_empty() && r.scenario_hash != s.scenario_hash {
            return refuse(Status::failed_precondition(
                "the client's scenario differs from the coordinator's",
            ));
        }
        let session = random_hex(12);
        let entries: Vec<(ClientId, u64)> =
            r.clients.iter().map(|c| (c.id, c.num_samples)).collect();
        let test_sizes: Vec<(ClientId, u64)> = r
            .clients
            .iter()
            .map(|c| (c.id, c.num_test_samples))
            .collect();
        let joined = {
            let mut reg = s.registry();
            let joined = reg.join(&session, &entries, &r.previous_session, verified, peer_addr);
            if joined.is_ok() {
                reg.declare_test_samples(&test_sizes);
            }
            joined
        };
        if let Err(held) = joined {
            return refuse(Status::already_exists(format!(
                "client id {held} is held by a live session; it is released when that session leaves \
                 or stops heartbeating for deploy.heartbeat_timeout_s"
            )));
        }
        tracing::info!(
            %peer,
            clients = ids.len(),
            first = ids[0],
            last = ids[ids.len() - 1],
            "clients joined"
        );
        Ok(Response::new(JoinResponse {
            run_id: s.run_id.clone(),
            session,
            scenario_toml: s.scenario_toml.clone(),
            protocol_version: PROTOCOL_VERSION,
        }))
    }

    type FetchTaskStream = ReceiverStream<Result<TaskChunk, Status>>;

    async fn fetch_task(
        &self,
        req: Request<FetchTaskRequest>,
    ) -> Result<Response<Self::FetchTaskStream>, Status> {
        let r = req.into_inner();
        let s = self.shared.clone();
        s.check_run(&r.run_id)?;
        s.check_owner(&r.session, r.client_id)?;
        let client = r.client_id;
        // One task request per client at a time: a client that opens many downloads and reads none
        // would otherwise hold every download slot and starve the round.
        let guard = s.fetching.claim(client).ok_or_else(|| {
            tracing::warn!(client, "second concurrent task request refused");
            Status::resource_exhausted(format!(
                "a task request for client {client} is already in progress"
            ))
        })?;
        let mut rx = s.phase.subscribe();
        let (tx, out) = mpsc::channel(4);
        let answer = TaskAnswer {
            tx,
            client,
            timeout: s.send_timeout,
        };
        tokio::spawn(async move {
            let _guard = guard;
            let until = tokio::time::Instant::now() + LONG_POLL;
            loop {
                let phase = rx.borrow_and_update().clone();
                let task = match phase {
                    Phase::Done => {
                        answer.send(header(v1::task_header::Kind::Done)).await;
                        return;
                    }
                    Phase::Open(o) => o.hands_task_to(client).then_some(o),
                    Phase::Tasks(list) => list.iter().find(|o| o.hands_task_to(client)).cloned(),
                    Phase::Waiting => None,
                };
                if let Some(o) = task {
                    {
                        // Bounded concurrent downloads: each holds send buffers of a chunk or two.
                        let Ok(_permit) = s.downloads.acquire().await else {
                            return;
                        };
                        let kind = match o.kind {
                            TaskKind::Train => v1::task_header::Kind::Train,
                            TaskKind::Evaluate => v1::task_header::Kind::Evaluate,
                        };
                        let h = TaskHeader {
                            kind: kind as i32,
                            round: o.round,
                            round_token: o.token.clone(),
                            payload_len: o.payload.len() as u64,
                            deadline_s: o.deadline.map_or(0.0, |d| {
                                d.saturating_duration_since(Instant::now()).as_secs_f64()
                            }),
                            max_steps: o.max_steps.get(&client).map(|&m| m as u64),
                        };
                        let first = TaskChunk {
                            part: Some(task_chunk::Part::Header(h)),
                        };
                        let mut sent = wire::grpc_message_len(first.encoded_len());
                        if !answer.send(first).await {
                            return;
                        }
                        for c in wire::chunks(&o.payload) {
                            let msg = TaskChunk {
                                part: Some(task_chunk::Part::Data(c)),
                            };
                            sent += wire::grpc_message_len(msg.encoded_len());
                            if !answer.send(msg).await {
                                return;
                            }
                        }
                        o.bytes_down.fetch_add(sent, Ordering::Relaxed);
                        return;
                    }
                }
                tokio::select! {
                    changed = tokio::time::timeout_at(until, rx.changed()) => match changed {
                        Ok(Ok(())) => continue,
                        Ok(Err(_)) | Err(_) => {
                            answer.send(header(v1::task_header::Kind::Wait)).await;
                            return;
                        }
                    },
                    // The caller went away: free its slot now, not at the end of the long poll.
                    () = answer.tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out)))
    }

    async fn submit_result(
        &self,
        req: Request<Streaming<ResultChunk>>,
    ) -> Result<Response<SubmitReply>, Status> {
        let s = &self.shared;
        let started = Instant::now();
        let mut stream = req.into_inner();
        let first = s
            .next_chunk(&mut stream)
            .await?
            .ok_or_else(|| Status::invalid_argument("empty result stream"))?;
        let mut wire_bytes = wire::grpc_message_len(first.encoded_len());
        let Some(result_chunk::Part::Header(h)) = first.part else {
            return Err(Status::invalid_argument(
                "a result stream must start with its header",
            ));
        };
        s.check_run(&h.run_id)?;
        s.check_owner(&h.session, h.client_id)?;
        let open = match &*s.phase.borrow() {
            Phase::Open(o) => o.clone(),
            // The dispatch (or evaluation) the result names; its token is checked below.
            Phase::Tasks(list) => list
                .iter()
                .find(|o| o.round == h.round && (o.kind == TaskKind::Evaluate) == h.eval.is_some())
                .cloned()
                .ok_or_else(|| {
                    tracing::warn!(
                        client = h.client_id,
                        dispatch = h.round,
                        "result for no open task refused"
                    );
                    Status::failed_precondition(format!(
                        "no task of dispatch {} is open (late, or never handed out)",
                        h.round
                    ))
                })?,
            _ => {
                return Err(Status::failed_precondition(format!(
                    "no round is open (result for round {})",
                    h.round
                )));
            }
        };
        if h.round != open.round || h.round_token != open.token {
            tracing::warn!(
                client = h.client_id,
                round = h.round,
                open = open.round,
                "result with a stale or wrong round token refused"
            );
            return Err(Status::failed_precondition(format!(
                "round token does not match the open round (got round {}, round {} is open)",
                h.round, open.round
            )));
        }
        if open.selected.binary_search(&h.client_id).is_err() {
            tracing::warn!(
                client = h.client_id,
                round = h.round,
                "result from a client that was not selected refused"
            );
            return Err(Status::permission_denied(format!(
                "client {} was not selected for round {}",
                h.client_id, h.round
            )));
        }
        if open.kind == TaskKind::Evaluate || h.eval.is_some() {
            return s.submit_evaluation(h, &open, &mut stream, wire_bytes).await;
        }
        // Checked on every path, a zero declared at join included; what weights the update is the
        // engine's policy (`deploy.sample_counts`), never this number alone.
        let declared = s.registry().num_samples(h.client_id).unwrap_or(0);
        if declared != h.num_samples {
            return Err(Status::invalid_argument(format!(
                "num_samples {} differs from the {declared} declared at join",
                h.num_samples
            )));
        }
        // One upload per (client, round) at a time, refused at the header before anything is read.
        let _upload = claim_upload(&open, h.client_id, h.round)?;
        let update = if !h.error.is_empty() {
            Err(format!("client reported an error: {}", h.error))
        } else {
            if h.payload_len > s.max_payload as u64 {
                let e = wire::TooLarge {
                    declared: h.payload_len,
                    limit: s.max_payload,
                };
                tracing::warn!(client = h.client_id, round = h.round, error = %e, "oversized result refused");
                return Err(Status::resource_exhausted(e.to_string()));
            }
            // While decoding, the encoded bytes and the decoded tensors are both held: reserve twice the
            // payload, then keep what the decoded update holds.
            let received = match s
                .budget
                .try_reserve((h.payload_len as usize).saturating_mul(2))
            {
                Some(mut reservation) => {
                    let payload = s
                        .receive_in_memory(&h, &mut stream, &mut wire_bytes)
                        .await?;
                    reservation.shrink_to(payload.heap_bytes());
                    Received::Memory(payload, reservation)
                }
                None => {
                    Received::Spooled(s.receive_to_spool(&h, &mut stream, &mut wire_bytes).await?)
                }
            };
            let secs = started.elapsed().as_secs_f64();
            tracing::debug!(
                client = h.client_id,
                round = h.round,
                bytes = h.payload_len,
                secs,
                mb_per_s = h.payload_len as f64 / 1e6 / secs.max(1e-9),
                spooled = matches!(received, Received::Spooled(_)),
                "result received"
            );
            Ok(received)
        };
        s.hand_to_driver(Submission {
            client: h.client_id,
            round: h.round,
            num_samples: h.num_samples,
            result: Outcome::Update(update),
            wire_bytes,
            reply: oneshot::channel().0,
        })
        .await
    }

    async fn heartbeat(
        &self,
        req: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let r = req.into_inner();
        self.shared.check_run(&r.run_id)?;
        if !self.shared.registry().touch(&r.session) {
            return Err(Status::permission_denied("unknown session; join again"));
        }
        let done = matches!(*self.shared.phase.borrow(), Phase::Done);
        Ok(Response::new(HeartbeatReply { done }))
    }

    async fn leave(&self, req: Request<LeaveRequest>) -> Result<Response<LeaveReply>, Status> {
        let r = req.into_inner();
        self.shared.check_run(&r.run_id)?;
        self.shared.registry().leave(&r.session);
        Ok(Response::new(LeaveReply {}))
    }
}
