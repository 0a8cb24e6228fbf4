//! Reaching the coordinator: URL checks, channels (TLS or plaintext), joining with backoff, and
//! connection errors in words.

use std::time::{Duration, Instant};

use fedsim_proto::v1::coordinator_client::CoordinatorClient;
use fedsim_proto::v1::{ClientInfo, JoinRequest};
use fedsim_proto::{PROTOCOL_VERSION, wire};
use fedsim_types::ClientId;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::{ClientError, ClientOptions};

/// Largest single gRPC message, set explicitly in both directions (payloads travel in chunks of
/// [`wire::CHUNK_BYTES`]; tonic's default limit is 4 MiB).
const MAX_GRPC_MESSAGE: usize = 8 << 20;

/// How often a coordinator that stays unreachable is reported at the default level while retrying.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(10);

/// Refuses a coordinator URL that can never work, before any connection attempt: it must be
/// `http://HOST:PORT` or `https://HOST:PORT`.
pub(crate) fn check_url(url: &str) -> Result<(), ClientError> {
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
        let msg = describe_connect_error(&e);
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

/// A failed connection in words: the error's chain of causes without repeats or debug dumps, and
/// what to try for the common causes (nothing listening, unknown host, certificate problems).
fn describe_connect_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut io_kind = None;
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            io_kind.get_or_insert(io.kind());
        }
        let text = err.to_string();
        // "transport error" says nothing; a cause often repeats its own cause's text.
        if !text.is_empty() && text != "transport error" && !parts.iter().any(|p| p.contains(&text))
        {
            parts.push(text);
        }
        cur = err.source();
    }
    let mut msg = if parts.is_empty() {
        "connection failed".to_string()
    } else {
        parts.join(": ")
    };
    let lower = msg.to_lowercase();
    let hint = if lower.contains("not valid for name") || lower.contains("notvalidforname") {
        "the coordinator's certificate is not issued for the host in the URL: pass --domain NAME \
         with a name the certificate holds, or use that name in the URL"
    } else if lower.contains("unknown issuer") || lower.contains("unknownissuer") {
        "the coordinator's certificate is not signed by a CA this client trusts: pass --ca-cert \
         with the CA certificate that signed it"
    } else if lower.contains("corrupt message") || lower.contains("invalidcontenttype") {
        "the coordinator does not speak TLS: use an http:// URL, or start it with --tls-cert"
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        "the host name does not resolve: check the URL"
    } else {
        match io_kind {
            Some(std::io::ErrorKind::ConnectionRefused) => {
                "nothing listens at that address: is `fedsim server` running there, with a \
                 --listen address reachable from this host?"
            }
            Some(std::io::ErrorKind::TimedOut) => {
                "no answer: check the host, the port and firewalls between them"
            }
            _ if lower.contains("timed out") || lower.contains("timeout") => {
                "no answer: check the host, the port and firewalls between them"
            }
            _ => "",
        }
    };
    if !hint.is_empty() {
        msg = format!("{msg} ({hint})");
    }
    msg
}

/// A failed call in words: the status message and its causes, plus a hint when a plaintext client
/// seems to talk to a TLS coordinator.
fn describe_status(s: &tonic::Status, url: &str) -> String {
    let mut msg = s.message().to_string();
    if let Some(cause) = std::error::Error::source(s) {
        let cause = describe_connect_error(cause);
        if !msg.contains(&cause) {
            msg = if msg.is_empty() || msg == "transport error" {
                cause
            } else {
                format!("{msg}: {cause}")
            };
        }
    }
    if msg.is_empty() {
        msg = format!("{:?}", s.code());
    }
    let lower = msg.to_lowercase();
    if url.starts_with("http://")
        && [
            "h2 protocol error",
            "http2 error",
            "broken pipe",
            "connection reset",
        ]
        .iter()
        .any(|m| lower.contains(m))
    {
        msg.push_str(
            " (if the coordinator uses TLS, connect with https://HOST:PORT and --ca-cert)",
        );
    }
    msg
}

/// Ends the message of a join refused because the ids are held by another live session.
const IDS_HELD: &str = " (held ids are released once their session stops heartbeating)";

/// Joins with backoff; refusals (bad token, bad ids, version), TLS failures and unreadable files are
/// final, unreachable coordinators are retried until `reconnect_timeout_s`.
/// `previous_session` is the session of this process's earlier join ("" for none): it lets the process
/// take its ids back while that session is still alive on the coordinator. Ids held by another live
/// session (say, of a crashed earlier run of this client) are retried until it expires.
pub(crate) async fn join(
    opts: &ClientOptions,
    sizes: &[(ClientId, u64, u64)],
    scenario_hash: &str,
    previous_session: &str,
) -> Result<(CoordinatorClient<Channel>, String, String, String), ClientError> {
    let start = Instant::now();
    let mut wait = Duration::from_millis(100);
    let mut logged: Option<(Instant, String)> = None;
    loop {
        // An attempt fails with the error and whether the ids are held by another live session.
        let attempt = async {
            let mut c = connect(opts).await.map_err(|e| (e, false))?;
            let req = JoinRequest {
                protocol_version: PROTOCOL_VERSION,
                clients: sizes
                    .iter()
                    .map(|&(id, num_samples, num_test_samples)| ClientInfo {
                        id,
                        num_samples,
                        num_test_samples,
                    })
                    .collect(),
                token: opts.token.clone(),
                scenario_hash: scenario_hash.to_string(),
                previous_session: previous_session.to_string(),
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
                    Err((
                        ClientError::Refused(format!("{:?}: {}", s.code(), s.message())),
                        false,
                    ))
                }
                Err(s) if s.code() == tonic::Code::AlreadyExists => Err((
                    ClientError::Connect {
                        url: opts.server.clone(),
                        msg: format!("{}{IDS_HELD}", s.message()),
                    },
                    true,
                )),
                Err(s) => Err((
                    ClientError::Connect {
                        url: opts.server.clone(),
                        msg: describe_status(&s, &opts.server),
                    },
                    false,
                )),
            }
        };
        match attempt.await {
            Ok(v) => return Ok(v),
            Err((ClientError::Connect { url, msg }, ids_held)) => {
                let left = opts.reconnect_timeout_s - start.elapsed().as_secs_f64();
                if left <= 0.0 {
                    return Err(ClientError::Unreachable {
                        url,
                        msg,
                        secs: opts.reconnect_timeout_s,
                    });
                }
                // The last attempt is made at the deadline. Ids held by an earlier session (of a
                // process that crashed) are released within the heartbeat timeout: ask often.
                let pause = if ids_held {
                    Duration::from_millis(250)
                } else {
                    wait
                }
                .min(Duration::from_secs_f64(left));
                // Every failure at debug; at the default level the first, a changed one, and one
                // every RETRY_LOG_EVERY while it lasts, each with the countdown.
                tracing::debug!(%url, error = %msg, "join failed; retrying");
                if logged
                    .as_ref()
                    .is_none_or(|(at, m)| *m != msg || at.elapsed() >= RETRY_LOG_EVERY)
                {
                    tracing::warn!(
                        "cannot reach the coordinator at {url}: {msg}; retrying in {:.1} s, \
                         giving up in {:.0} s (--reconnect-timeout)",
                        pause.as_secs_f64(),
                        left.ceil()
                    );
                    logged = Some((Instant::now(), msg));
                }
                tokio::time::sleep(pause).await;
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            Err((e, _)) => return Err(e),
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

#[cfg(test)]
mod failure_tests {
    use super::*;
    use crate::{ClientTls, DataSource};

    fn opts(server: &str, reconnect_timeout_s: f64) -> ClientOptions {
        ClientOptions {
            server: server.to_string(),
            ids: vec![0],
            data: DataSource::Partition,
            test_data: None,
            token: String::new(),
            tls: ClientTls::default(),
            threads: 1,
            reconnect_timeout_s,
            data_root: None,
        }
    }

    #[tokio::test]
    async fn an_unreachable_coordinator_is_named_in_words_after_the_reconnect_timeout() {
        // Port 1 on loopback: nothing listens, the connection is refused at once.
        let url = "http://127.0.0.1:1";
        let started = Instant::now();
        let e = join(&opts(url, 0.5), &[(0, 0, 0)], "", "")
            .await
            .err()
            .unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(450),
            "retried until the timeout"
        );
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e:?}");
        let text = e.to_string();
        for want in [
            url,
            "Connection refused",
            "nothing listens",
            "--reconnect-timeout",
        ] {
            assert!(text.contains(want), "`{want}` missing: {text}");
        }
        assert!(
            !text.contains("Some(") && !text.contains("ConnectError("),
            "{text}"
        );
    }

    #[test]
    fn connection_errors_read_as_words_with_a_hint() {
        #[derive(Debug)]
        struct Wrap(&'static str, std::io::Error);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.1)
            }
        }
        let refused = Wrap(
            "transport error",
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused"),
        );
        assert_eq!(
            describe_connect_error(&refused),
            "Connection refused (nothing listens at that address: is `fedsim server` running \
             there, with a --listen address reachable from this host?)"
        );
        let name = Wrap(
            "tls handshake",
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "invalid peer certificate: certificate not valid for name \"127.0.0.1\"",
            ),
        );
        let text = describe_connect_error(&name);
        assert!(text.contains("--domain NAME"), "{text}");
        assert!(is_tls_failure(&name));
    }
}
