//! The client process (`fedsim client`): hosts one or more clients of a run, trains them on local
//! data with the strategy's client half, and talks to the coordinator over gRPC.
//!
//! A process joins with its client ids, receives the run's scenario, then each hosted client
//! long-polls for tasks, trains (on a bounded pool of blocking threads) and submits. Strategy state that
//! persists across rounds (FedSpeed's `h_i`, SCAFFOLD's `c_i`, EF21's `g_i`) stays in this process. On a
//! broken connection the process rejoins with exponential backoff; if the coordinator re-runs a round
//! after a crash, the client restores its state from before that round so nothing is applied twice.

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
    ClientInfo, FetchTaskRequest, HeartbeatRequest, JoinRequest, LeaveRequest, ResultChunk,
    ResultHeader, result_chunk, task_chunk, task_header,
};
use fedsim_proto::{PROTOCOL_VERSION, wire};
use fedsim_types::{ClientId, Payload};
use tokio::sync::{RwLock, Semaphore};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

pub use data::DataSource;

/// Largest single gRPC message, set explicitly in both directions (payloads travel in chunks of
/// [`wire::CHUNK_BYTES`]; tonic's default limit is 4 MiB).
const MAX_GRPC_MESSAGE: usize = 8 << 20;

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
    /// The coordinator refused this client (credentials, ids, protocol).
    #[error("refused by the coordinator: {0}")]
    Refused(String),
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
    /// Credential token.
    pub token: String,
    /// TLS (for `https://` URLs).
    pub tls: ClientTls,
    /// Clients trained at the same time (default: cores).
    pub threads: usize,
    /// Give up reconnecting after this many seconds without success.
    pub reconnect_timeout_s: f64,
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
}

/// Refuses a coordinator URL that can never work, before any connection attempt: it must be
/// `http://HOST:PORT` or `https://HOST:PORT`.
fn check_url(url: &str) -> Result<(), ClientError> {
    let bad = |msg: &str| ClientError::Connect {
        url: url.to_string(),
        msg: msg.to_string(),
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            bad("the URL needs a scheme: http://HOST:PORT (plaintext) or https://HOST:PORT (TLS)")
        })?;
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() {
        return Err(bad(
            "the URL names no host: use http://HOST:PORT or https://HOST:PORT",
        ));
    }
    Endpoint::from_shared(url.to_string()).map_err(|e| bad(&format!("not a valid URL: {e}")))?;
    Ok(())
}

async fn connect(opts: &ClientOptions) -> Result<CoordinatorClient<Channel>, ClientError> {
    let err = |msg: String| ClientError::Connect {
        url: opts.server.clone(),
        msg,
    };
    let mut ep = Endpoint::from_shared(opts.server.clone()).map_err(|e| err(e.to_string()))?;
    ep = ep
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .initial_stream_window_size(wire::STREAM_WINDOW)
        .initial_connection_window_size(wire::CONNECTION_WINDOW);
    if opts.server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &opts.tls.ca_cert {
            let pem = std::fs::read(ca).map_err(|e| ClientError::File {
                path: ca.clone(),
                msg: e.to_string(),
            })?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &opts.tls.identity {
            let c = std::fs::read(cert).map_err(|e| ClientError::File {
                path: cert.clone(),
                msg: e.to_string(),
            })?;
            let k = std::fs::read(key).map_err(|e| ClientError::File {
                path: key.clone(),
                msg: e.to_string(),
            })?;
            tls = tls.identity(Identity::from_pem(c, k));
        }
        if let Some(d) = &opts.tls.domain {
            tls = tls.domain_name(d.clone());
        }
        ep = ep.tls_config(tls).map_err(|e| err(e.to_string()))?;
    }
    let channel = ep.connect().await.map_err(|e| {
        let msg = format!("{e} ({:?})", std::error::Error::source(&e));
        if is_tls_failure(&e) {
            ClientError::Tls {
                url: opts.server.clone(),
                msg,
            }
        } else {
            err(msg)
        }
    })?;
    Ok(CoordinatorClient::new(channel)
        .max_decoding_message_size(MAX_GRPC_MESSAGE)
        .max_encoding_message_size(MAX_GRPC_MESSAGE))
}

/// Whether a connection error is a TLS failure (rustls reports those as `InvalidData` I/O errors):
/// an untrusted or mismatched certificate does not get better by retrying.
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::InvalidData)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Joins with backoff; refusals (bad token, bad ids, version), TLS failures and unreadable files are
/// final, unreachable coordinators are retried until `reconnect_timeout_s`.
async fn join(
    opts: &ClientOptions,
    sizes: &[(ClientId, u64)],
    scenario_hash: &str,
) -> Result<(CoordinatorClient<Channel>, String, String, String), ClientError> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut c = connect(opts).await?;
            let req = JoinRequest {
                protocol_version: PROTOCOL_VERSION,
                clients: sizes
                    .iter()
                    .map(|&(id, n)| ClientInfo { id, num_samples: n })
                    .collect(),
                token: opts.token.clone(),
                scenario_hash: scenario_hash.to_string(),
            };
            match c.join(req).await {
                Ok(r) => {
                    let r = r.into_inner();
                    Ok((c, r.run_id, r.session, r.scenario_toml))
                }
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unauthenticated
                            | tonic::Code::InvalidArgument
                            | tonic::Code::FailedPrecondition
                            | tonic::Code::PermissionDenied
                    ) =>
                {
                    Err(ClientError::Refused(format!(
                        "{:?}: {}",
                        s.code(),
                        s.message()
                    )))
                }
                Err(s) => Err(ClientError::Connect {
                    url: opts.server.clone(),
                    msg: s.message().to_string(),
                }),
            }
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err(e @ ClientError::Connect { .. }) => {
                if start.elapsed().as_secs_f64() > opts.reconnect_timeout_s {
                    return Err(e);
                }
                tracing::debug!(error = %e, "join failed; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
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
    // The first join returns the run's scenario; with it the local data is loaded, and the process
    // joins again declaring its clients' sample counts (the coordinator checks results against them).
    let (_, _, _, toml) = join(
        &opts,
        &opts.ids.iter().map(|&c| (c, 0)).collect::<Vec<_>>(),
        "",
    )
    .await?;
    let scenario = Scenario::parse(&toml, &[])?;
    let data = data::LocalData::load(&opts.data, &scenario, &opts.ids)?;
    let model = data.build_model(&scenario)?;
    let strategy = scenario
        .build_strategy()
        .map_err(fedsim_engine::EngineError::from)?;
    let sizes: Vec<(ClientId, u64)> = opts
        .ids
        .iter()
        .map(|&c| (c, data.client(c).len() as u64))
        .collect();
    let (client, run_id, session, _) = join(&opts, &sizes, &scenario.hash()).await?;
    tracing::info!(run_id = %run_id, clients = opts.ids.len(), "joined");
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
    });
    let hb = tokio::spawn(heartbeat(rt.clone()));
    let mut tasks = Vec::new();
    for &id in &rt.opts.ids {
        tasks.push(tokio::spawn(client_loop(rt.clone(), id)));
    }
    let mut result = Ok(());
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => result = Err(e),
            Err(e) => result = Err(ClientError::Refused(format!("client task failed: {e}"))),
        }
    }
    hb.abort();
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
    let sizes: Vec<(ClientId, u64)> = rt
        .opts
        .ids
        .iter()
        .map(|&c| (c, rt.data.client(c).len() as u64))
        .collect();
    let (client, run_id, session, _) = join(&rt.opts, &sizes, &rt.scenario.hash()).await?;
    tracing::info!(run_id = %run_id, "rejoined the coordinator");
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
        Ok(task_header::Kind::Train) => {
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
            Ok(Fetched::Train {
                round: h.round,
                token: h.round_token,
                task,
                max_steps: h.max_steps.and_then(|m| usize::try_from(m).ok()),
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
            Ok(Fetched::Train {
                round,
                token,
                task,
                max_steps,
            }) => {
                // The new client state is committed only when the coordinator confirms that the update
                // was folded into the round; a refused, late or lost update leaves the state as it was.
                match train(&rt, id, round, task, max_steps).await {
                    Ok((update, new_state)) => {
                        if submit(&rt, id, round, &token, Ok(update)).await? {
                            commit_state(&rt, id, new_state);
                        }
                    }
                    Err(e) => {
                        submit(&rt, id, round, &token, Err(e)).await?;
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
        Ok(_) => Ok(sent_update),
        Err(s) => {
            // The round may have closed, or the coordinator restarted; the next fetch sorts it out.
            tracing::warn!(client = id, round, code = ?s.code(), msg = s.message(), "result not accepted; client state kept as before this round");
            Ok(false)
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::check_url;

    #[test]
    fn urls_without_a_scheme_or_host_are_refused_before_connecting() {
        assert!(check_url("http://127.0.0.1:50051").is_ok());
        assert!(check_url("https://coordinator.example:50051").is_ok());
        let e = check_url("127.0.0.1:50051").unwrap_err().to_string();
        assert!(e.contains("needs a scheme"), "{e}");
        let e = check_url("http://").unwrap_err().to_string();
        assert!(e.contains("no host"), "{e}");
    }
}
