//! The tonic service: authenticates clients, hands out tasks, receives results. It never touches the
//! engine: results go to the round driver over a channel, and the driver's verdict comes back.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedsim_core::{ClientId, Payload, Scenario};
use fedsim_proto::v1::coordinator_server::{Coordinator, CoordinatorServer};
use fedsim_proto::v1::{
    self, FetchTaskRequest, HeartbeatReply, HeartbeatRequest, JoinRequest, JoinResponse,
    LeaveReply, LeaveRequest, ResultChunk, SubmitReply, TaskChunk, TaskHeader, result_chunk,
    task_chunk,
};
use fedsim_proto::{PROTOCOL_VERSION, wire};
use prost::Message;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::registry::Registry;
use crate::{Credentials, ServerError};

/// Longest a FetchTask call waits before answering WAIT.
const LONG_POLL: Duration = Duration::from_secs(15);

/// Largest single gRPC message (payloads travel in chunks of [`wire::CHUNK_BYTES`]).
pub const MAX_GRPC_MESSAGE: usize = 8 << 20;

/// A round that is open for results.
#[derive(Debug)]
pub struct OpenRound {
    /// Round index, 0-based.
    pub round: u64,
    /// Token that results must carry.
    pub token: String,
    /// Selected clients, ascending.
    pub selected: Vec<ClientId>,
    /// The encoded task.
    pub payload: Bytes,
    /// When the round closes at the latest (None: no deadline).
    pub deadline: Option<Instant>,
    /// Clients whose result the driver has received.
    pub submitted: Mutex<HashSet<ClientId>>,
    /// Bytes of tasks sent.
    pub bytes_down: AtomicU64,
}

/// What clients can see of the run.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Between rounds.
    Waiting,
    /// A round is open.
    Open(Arc<OpenRound>),
    /// The run is over.
    Done,
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
    /// The update, or the client's own error.
    pub update: Result<Payload, String>,
    /// Bytes received.
    pub wire_bytes: u64,
    /// The driver's verdict.
    pub reply: oneshot::Sender<Result<(), String>>,
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
}

pub(crate) fn random_hex(bytes: usize) -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.next_u32() as u8))
        .collect()
}

impl Shared {
    /// Shared state for a run of `scenario`. A resumed run keeps the run id from its checkpoint.
    pub fn new(
        scenario: &Scenario,
        credentials: Option<Credentials>,
        resume: bool,
        out: &Path,
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
        })
    }

    /// The receiving end of submissions (taken once, by the driver).
    pub fn take_results(&self) -> Option<mpsc::Receiver<Submission>> {
        self.results_rx.lock().ok()?.take()
    }

    /// Locks the registry (a poisoned lock is recovered: the registry holds no invariants across calls).
    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the run as over.
    pub fn finish(&self) {
        self.phase.send_replace(Phase::Done);
    }

    fn check_run(&self, run_id: &str) -> Result<(), Status> {
        if run_id != self.run_id {
            return Err(Status::failed_precondition(format!(
                "unknown run id `{run_id}` (this coordinator runs `{}`); join again",
                self.run_id
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
            .max_encoding_message_size(MAX_GRPC_MESSAGE)
    }
}

fn header(kind: v1::task_header::Kind) -> TaskHeader {
    TaskHeader {
        kind: kind as i32,
        ..TaskHeader::default()
    }
}

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let r = req.into_inner();
        let s = &self.shared;
        if r.protocol_version != PROTOCOL_VERSION {
            return Err(Status::failed_precondition(format!(
                "client speaks protocol version {}, this coordinator speaks {PROTOCOL_VERSION}",
                r.protocol_version
            )));
        }
        if r.clients.is_empty() {
            return Err(Status::invalid_argument("join lists no client ids"));
        }
        let ids: Vec<ClientId> = r.clients.iter().map(|c| c.id).collect();
        if let Some(bad) = ids.iter().find(|&&c| c as usize >= s.num_clients) {
            return Err(Status::invalid_argument(format!(
                "client id {bad} is out of range (the run has {} clients)",
                s.num_clients
            )));
        }
        if let Some(creds) = &s.credentials {
            if let Err(msg) = creds.check(&r.token, &ids) {
                tracing::warn!(?ids, %msg, "join refused");
                return Err(Status::unauthenticated(msg));
            }
        }
        if !r.scenario_hash.is_empty() && r.scenario_hash != s.scenario_hash {
            return Err(Status::failed_precondition(
                "the client's scenario differs from the coordinator's",
            ));
        }
        let session = random_hex(12);
        let entries: Vec<(ClientId, u64)> =
            r.clients.iter().map(|c| (c.id, c.num_samples)).collect();
        s.registry().join(&session, &entries);
        tracing::info!(clients = ids.len(), first = ids[0], "clients joined");
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
        let mut rx = s.phase.subscribe();
        let (tx, out) = mpsc::channel(4);
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + LONG_POLL;
            loop {
                let phase = rx.borrow_and_update().clone();
                match phase {
                    Phase::Done => {
                        let _ = tx
                            .send(Ok(TaskChunk {
                                part: Some(task_chunk::Part::Header(header(
                                    v1::task_header::Kind::Done,
                                ))),
                            }))
                            .await;
                        return;
                    }
                    Phase::Open(o)
                        if o.selected.binary_search(&client).is_ok()
                            && !o.submitted.lock().is_ok_and(|set| set.contains(&client)) =>
                    {
                        let h = TaskHeader {
                            kind: v1::task_header::Kind::Train as i32,
                            round: o.round,
                            round_token: o.token.clone(),
                            payload_len: o.payload.len() as u64,
                            deadline_s: o.deadline.map_or(0.0, |d| {
                                d.saturating_duration_since(Instant::now()).as_secs_f64()
                            }),
                        };
                        let mut sent = h.encoded_len() as u64;
                        if tx
                            .send(Ok(TaskChunk {
                                part: Some(task_chunk::Part::Header(h)),
                            }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        for c in wire::chunks(&o.payload) {
                            sent += c.len() as u64;
                            if tx
                                .send(Ok(TaskChunk {
                                    part: Some(task_chunk::Part::Data(c)),
                                }))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        o.bytes_down.fetch_add(sent, Ordering::Relaxed);
                        return;
                    }
                    _ => {}
                }
                match tokio::time::timeout_at(until, rx.changed()).await {
                    Ok(Ok(())) => continue,
                    Ok(Err(_)) | Err(_) => {
                        let _ = tx
                            .send(Ok(TaskChunk {
                                part: Some(task_chunk::Part::Header(header(
                                    v1::task_header::Kind::Wait,
                                ))),
                            }))
                            .await;
                        return;
                    }
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
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty result stream"))?;
        let Some(result_chunk::Part::Header(h)) = first.part else {
            return Err(Status::invalid_argument(
                "a result must start with its header",
            ));
        };
        s.check_run(&h.run_id)?;
        s.check_owner(&h.session, h.client_id)?;
        let open = match &*s.phase.borrow() {
            Phase::Open(o) => o.clone(),
            _ => {
                return Err(Status::failed_precondition(format!(
                    "round {} is not open",
                    h.round
                )));
            }
        };
        if h.round != open.round || h.round_token != open.token {
            tracing::warn!(
                client = h.client_id,
                round = h.round,
                open = open.round,
                "result with a stale round token"
            );
            return Err(Status::failed_precondition(format!(
                "round token does not match the open round (got round {}, round {} is open)",
                h.round, open.round
            )));
        }
        if open.selected.binary_search(&h.client_id).is_err() {
            return Err(Status::permission_denied(format!(
                "client {} was not selected for round {}",
                h.client_id, h.round
            )));
        }
        let mut wire_bytes = h.encoded_len() as u64;
        let update = if !h.error.is_empty() {
            Err(format!("client reported an error: {}", h.error))
        } else {
            let mut asm = wire::Assembler::new(h.payload_len, s.max_payload)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            while let Some(chunk) = stream.message().await? {
                match chunk.part {
                    Some(result_chunk::Part::Data(d)) => {
                        wire_bytes += d.len() as u64;
                        asm.push(&d)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?;
                    }
                    _ => {
                        return Err(Status::invalid_argument(
                            "unexpected second header in a result stream",
                        ));
                    }
                }
            }
            match asm.finish() {
                Ok(p) => Ok(p),
                Err(e) => {
                    tracing::warn!(client = h.client_id, round = h.round, error = %e, "malformed result");
                    return Err(Status::invalid_argument(e.to_string()));
                }
            }
        };
        let (reply, verdict) = oneshot::channel();
        let sub = Submission {
            client: h.client_id,
            round: h.round,
            num_samples: h.num_samples,
            update,
            wire_bytes,
            reply,
        };
        s.results_tx
            .send(sub)
            .await
            .map_err(|_| Status::unavailable("the coordinator is shutting down"))?;
        match verdict.await {
            Ok(Ok(())) => Ok(Response::new(SubmitReply {
                accepted: true,
                message: String::new(),
            })),
            Ok(Err(msg)) => Err(Status::invalid_argument(msg)),
            Err(_) => Err(Status::unavailable("the coordinator is shutting down")),
        }
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
