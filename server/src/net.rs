//! The coordinator's network edge: what any caller can make it hold before it has joined.
//!
//! Every accepted TCP connection costs a file descriptor and buffers. Here they are bounded:
//! - at most `deploy.max_connections` connections at once (further ones are closed at accept);
//! - a connection that sends nothing within `deploy.request_timeout_s` of being accepted, or nothing at
//!   all for `deploy.idle_connection_s`, is closed;
//! - an accept error (such as running out of file descriptors) backs off instead of spinning;
//! - the soft open-file limit is raised to the hard limit at start.
//!
//! Per request, [`RequestTimeoutLayer`] bounds the time a unary request (and the request of a task
//! download) may take to arrive and be answered; result uploads, which may legitimately take long, are
//! bounded per chunk by the service instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};
use tonic::codegen::http;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Limits of the network edge.
#[derive(Debug, Clone, Copy)]
pub struct EdgeLimits {
    /// Most connections open at once.
    pub max_connections: usize,
    /// Longest wait for a new connection's first bytes, and for a unary request.
    pub request_timeout: Duration,
    /// A connection from which nothing arrives for this long is closed.
    pub idle: Duration,
}

/// Longest pause between accept attempts after repeated accept errors.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Raises the soft open-file limit to the hard limit, so the connection cap, not the default soft
/// limit of 1,024, decides how many clients can connect. Returns the new soft limit.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `getrlimit` writes into the `rlimit` we pass, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `setrlimit` only reads the `rlimit` we pass, which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Some(lim.rlim_cur)
}

/// Called with the peer address of every connection that closes.
pub type OnClose = Arc<dyn Fn(std::net::SocketAddr) + Send + Sync>;

/// Accepts connections on `listener` under `limits`; the returned stream yields connections that have
/// sent their first bytes, for tonic's `serve_with_incoming`. `on_close` hears of each one that closes.
pub fn incoming(
    listener: TcpListener,
    limits: EdgeLimits,
    on_close: OnClose,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Guarded>> {
    let (tx, rx) = mpsc::channel(64);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(10);
        let mut refused_logged = Instant::now() - Duration::from_secs(60);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => {
                    backoff = Duration::from_millis(10);
                    accepted
                }
                Err(e) => {
                    tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                // Log at most every 10 s: a flood must not flood the log too.
                if refused_logged.elapsed() >= Duration::from_secs(10) {
                    tracing::warn!(%peer, max = limits.max_connections, "connection limit reached; closing new connections (deploy.max_connections)");
                    refused_logged = Instant::now();
                }
                continue;
            };
            // Small replies must not wait for Nagle's algorithm (about 40 ms each); tonic's
            // `tcp_nodelay` does not reach sockets passed to `serve_with_incoming`.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            let tx = tx.clone();
            let on_close = on_close.clone();
            tokio::spawn(async move {
                // A caller that connects and says nothing holds a descriptor for free: wait for its
                // first bytes (the HTTP/2 preface or a TLS ClientHello), off the accept loop.
                // (`peek`, not `readable`: readiness may be reported before any byte has arrived.)
                let mut first = [0u8; 1];
                match tokio::time::timeout(limits.request_timeout, stream.peek(&mut first)).await {
                    Ok(Ok(n)) if n > 0 => {
                        let _ = tx
                            .send(Ok(Guarded {
                                stream,
                                _slot: permit,
                                idle: limits.idle,
                                idle_timer: Box::pin(tokio::time::sleep(limits.idle)),
                                peer,
                                on_close,
                            }))
                            .await;
                    }
                    _ => tracing::debug!(%peer, "closed a connection that sent nothing"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// An accepted connection that holds one of the connection slots, closes itself when nothing has
/// arrived for the idle timeout, and reports its end.
pub struct Guarded {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    peer: std::net::SocketAddr,
    on_close: OnClose,
}

impl std::fmt::Debug for Guarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded").field("peer", &self.peer).finish()
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        (self.on_close)(self.peer);
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.idle_timer.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            // Nothing to read: the connection is idle. The timer registers this task's waker, so the
            // read is polled again (and fails) when the idle time is up.
            Poll::Pending => match self.idle_timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Bounds the time of every request except result uploads (`SubmitResult`), which the service bounds
/// per chunk: a request whose message does not arrive in time is answered `DEADLINE_EXCEEDED` and its
/// buffers are freed.
#[derive(Debug, Clone, Copy)]
pub struct RequestTimeoutLayer {
    /// The bound.
    pub timeout: Duration,
}

impl<S> tower::Layer<S> for RequestTimeoutLayer {
    type Service = RequestTimeout<S>;

    fn layer(&self, inner: S) -> RequestTimeout<S> {
        RequestTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The service [`RequestTimeoutLayer`] wraps around the coordinator's routes.
#[derive(Debug, Clone)]
pub struct RequestTimeout<S> {
    inner: S,
    timeout: Duration,
}

/// Path suffix of the one method exempt from the request timeout.
const UPLOAD_METHOD: &str = "/SubmitResult";

impl<S, B, R> tower::Service<http::Request<B>> for RequestTimeout<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let bounded = !req.uri().path().ends_with(UPLOAD_METHOD);
        let path = req.uri().path().to_string();
        let timeout = self.timeout;
        let fut = self.inner.call(req);
        Box::pin(async move {
            if !bounded {
                return fut.await;
            }
            match tokio::time::timeout(timeout, fut).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(
                        method = %path,
                        secs = timeout.as_secs_f64(),
                        "request did not complete in time; dropped"
                    );
                    Ok(tonic::Status::deadline_exceeded(format!(
                        "the request did not arrive within {:.0} s",
                        timeout.as_secs_f64()
                    ))
                    .into_http())
                }
            }
        })
    }
}
