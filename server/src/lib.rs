//! The gRPC coordinator (`fedsim server`): runs a scenario's rounds through the shared
//! [`fedsim_engine::Engine`] with real client processes.
//!
//! Architecture: the tonic service ([`service`]) answers clients and never touches the engine; a single
//! round driver ([`driver`]) owns the engine, opens rounds, receives validated results over a channel,
//! closes rounds by the scenario's policy, evaluates and checkpoints. Clients long-poll for tasks.

pub mod auth;
pub mod budget;
pub mod checkpoint;
pub mod driver;
mod ids;
pub mod net;
pub mod registry;
pub mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedsim_engine::report::Summary;
use fedsim_engine::{EngineError, Scenario};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

pub use auth::Credentials;

/// How long a finished coordinator waits for open connections to close before it closes them.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Errors of the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Scenario, data, model or output error.
    #[error(transparent)]
    Core(#[from] EngineError),
    /// Transport (bind, TLS) error.
    #[error("transport: {0}")]
    Transport(String),
    /// Not enough clients joined in time.
    #[error("only {joined} of the required {required} clients joined within {secs} s")]
    NotEnoughClients {
        /// Clients that joined.
        joined: usize,
        /// Clients required (`deploy.min_clients`).
        required: usize,
        /// The wait.
        secs: f64,
    },
    /// A file (certificate, key, token file, checkpoint) could not be used.
    #[error("{path}: {msg}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
}

/// TLS material of the coordinator.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA that client certificates must chain to (mutual TLS), if any.
    pub client_ca: Option<PathBuf>,
}

/// How to run the coordinator.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Output (and checkpoint) directory.
    pub out: PathBuf,
    /// Continue the run checkpointed in `out`.
    pub resume: bool,
    /// TLS; `None` runs insecure (plaintext), which is logged loudly.
    pub tls: Option<TlsFiles>,
    /// Client credentials; `None` accepts any client.
    pub credentials: Option<Credentials>,
    /// Bytes of received updates (being received, or waiting for their turn in client-id order)
    /// held in memory; beyond it updates are spooled to disk (see [`budget`]).
    /// [`DEFAULT_UPDATE_MEMORY`] by default.
    pub update_memory_bytes: usize,
}

/// Default memory for received updates: 64 MiB.
pub const DEFAULT_UPDATE_MEMORY: usize = 64 << 20;

/// Most concurrent requests on one connection. A client process holds about two per hosted client (a
/// task request and a result upload) plus heartbeats; beyond the cap its requests queue on its side.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

fn read_file(path: &PathBuf) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|e| ServerError::File {
        path: path.clone(),
        msg: e.to_string(),
    })
}

/// Builds tonic's TLS configuration from PEM files.
pub fn tls_config(tls: &TlsFiles) -> Result<ServerTlsConfig, ServerError> {
    let identity = Identity::from_pem(read_file(&tls.cert)?, read_file(&tls.key)?);
    let mut cfg = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        cfg = cfg.client_ca_root(Certificate::from_pem(read_file(ca)?));
    }
    Ok(cfg)
}

/// Runs the coordinator for `scenario` until the run ends; returns the summary.
pub async fn run(scenario: Scenario, opts: ServerOptions) -> Result<Summary, ServerError> {
    if opts.tls.is_none() {
        tracing::warn!(
            "INSECURE MODE: no TLS, traffic is plaintext; use --tls-cert/--tls-key outside a trusted network"
        );
    }
    if opts.credentials.is_none() {
        tracing::warn!(
            "no --tokens file: any client may join; use per-client tokens outside a trusted network"
        );
    }
    let shared = Arc::new(service::Shared::new(
        &scenario,
        opts.credentials.clone(),
        opts.resume,
        &opts.out,
        opts.update_memory_bytes,
    )?);
    let svc = service::CoordinatorService::new(shared.clone());
    let limits = net::EdgeLimits {
        max_connections: scenario.deploy.max_connections,
        request_timeout: Duration::from_secs_f64(scenario.deploy.request_timeout_s),
        idle: Duration::from_secs_f64(scenario.deploy.idle_connection_s),
    };
    match net::raise_open_file_limit() {
        Some(n) if (n as usize) < limits.max_connections + 64 => tracing::warn!(
            open_files = n,
            max_connections = limits.max_connections,
            "the open-file limit is below deploy.max_connections; raise it (ulimit -n) or lower the cap"
        ),
        _ => {}
    }
    let mut builder = tonic::transport::Server::builder()
        .initial_stream_window_size(fedsim_proto::wire::STREAM_WINDOW)
        .initial_connection_window_size(fedsim_proto::wire::CONNECTION_WINDOW)
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // Pings find dead peers; they come less often than the idle timeout, so a peer that only
        // answers pings is still closed as idle.
        .http2_keepalive_interval(Some(limits.idle * 2))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)));
    if let Some(tls) = &opts.tls {
        builder = builder
            .tls_config(tls_config(tls)?)
            .map_err(|e| ServerError::Transport(e.to_string()))?;
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| ServerError::Transport(format!("cannot listen on {}: {e}", opts.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| ServerError::Transport(e.to_string()))?;
    tracing::info!(%local, run_id = %shared.run_id, "coordinator listening");
    let closed = shared.clone();
    let incoming = net::incoming(
        listener,
        limits,
        Arc::new(move |peer| closed.registry().connection_closed(peer)),
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        builder
            .layer(net::RequestTimeoutLayer {
                timeout: limits.request_timeout,
            })
            .add_service(svc.into_server())
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stop_rx.await;
            }),
    );
    let result = driver::drive(scenario, shared.clone(), &opts).await;
    // Let clients see DONE before the listener goes away.
    shared.finish();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let _ = stop_tx.send(());
    // Graceful shutdown waits for open connections; a client that hangs (stopped, or a hostile one
    // holding its connection) must not keep the finished coordinator alive.
    if tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
        .await
        .is_err()
    {
        tracing::warn!(
            secs = SHUTDOWN_GRACE.as_secs(),
            "connections still open after the run finished; closing them"
        );
        server.abort();
    }
    result
}
