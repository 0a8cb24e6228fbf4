//! Hostile callers against the real `fedsim server` binary on loopback: id takeover, smuggled tensors,
//! stalled and oversized requests, idle and excess connections, running out of file descriptors,
//! unread downloads, decode bombs and a checkpoint that cannot be written. Each is bounded or refused,
//! and honest `fedsim client` processes still finish the run.
//!
//! Raw HTTP/2 (the `h2` crate) is used where a well-behaved gRPC stub cannot misbehave enough: a
//! request whose message never finishes arriving, or a message larger than any the coordinator takes.

mod grpc_common;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedsim_proto::v1::coordinator_client::CoordinatorClient;
use fedsim_proto::v1::{
    self, ClientInfo, FetchTaskRequest, HeartbeatRequest, JoinRequest, LeaveRequest, ResultChunk,
    ResultHeader, result_chunk,
};
use fedsim_proto::{PROTOCOL_VERSION, wire};
use fedsim_types::{Payload, TensorData};
use grpc_common::raw::*;
use grpc_common::*;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

/// A small scenario: `clients` clients on synthetic data, all of them in every round.
fn scenario(dir: &Path, clients: usize, rounds: u64, deploy: &str) -> String {
    scenario_with(dir, clients, rounds, "deadline_s = 60", deploy)
}

/// [`scenario`] with the `[round]` section's keys given.
fn scenario_with(dir: &Path, clients: usize, rounds: u64, round: &str, deploy: &str) -> String {
    let path = dir.join("scenario.toml");
    std::fs::write(
        &path,
        format!(
            r#"name = "hostile"
seed = 3
rounds = {rounds}
clients = {clients}

[data]
kind = "synthetic"
features = 20
classes = 4
samples_per_client = 40
test_samples = 200

[partition]
scheme = "natural"

[model]
kind = "logreg"

[train]
lr = 0.05
batch_size = 10
epochs = 1

[participation]
kind = "full"

[round]
{round}

[deploy]
heartbeat_timeout_s = 2
{deploy}
"#
        ),
    )
    .unwrap();
    s(&path).to_string()
}

fn start_server(dir: &Path, scenario: &str, shell_prefix: Option<&str>) -> (Proc, String) {
    let out = dir.join("run");
    let bin = env!("CARGO_BIN_EXE_fedsim");
    let args = format!(
        "server {scenario} --listen 127.0.0.1:0 --out {} --force",
        s(&out)
    );
    let cmd = match shell_prefix {
        // A shell sets resource limits (ulimit) on the coordinator before it starts.
        Some(prefix) => {
            let mut c = std::process::Command::new("sh");
            c.args(["-c", &format!("{prefix}; exec {bin} {args}")])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("RUST_LOG", "info")
                .stdin(std::process::Stdio::null());
            c
        }
        None => {
            let mut c = fedsim();
            c.args(args.split_whitespace());
            c
        }
    };
    let server = Proc::spawn("server", cmd, &dir.join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    (server, addr)
}

async fn connect(addr: &str) -> Client {
    CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(usize::MAX)
}

fn join_request(ids: &[u32], previous_session: &str) -> JoinRequest {
    JoinRequest {
        protocol_version: PROTOCOL_VERSION,
        clients: ids
            .iter()
            .map(|&id| ClientInfo {
                id,
                num_samples: 40,
                num_test_samples: 0,
            })
            .collect(),
        token: String::new(),
        scenario_hash: String::new(),
        previous_session: previous_session.into(),
    }
}

fn result_stream(
    run: &str,
    sess: &str,
    id: u32,
    round: u64,
    token: &str,
    payload: Bytes,
) -> Vec<ResultChunk> {
    let mut msgs = vec![ResultChunk {
        part: Some(result_chunk::Part::Header(ResultHeader {
            run_id: run.into(),
            session: sess.into(),
            client_id: id,
            round,
            round_token: token.into(),
            num_samples: 40,
            payload_len: payload.len() as u64,
            error: String::new(),
            eval: None,
        })),
    }];
    msgs.extend(wire::chunks(&payload).map(|d| ResultChunk {
        part: Some(result_chunk::Part::Data(d)),
    }));
    msgs
}

/// Resident memory of a process in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

fn honest_client(dir: &Path, addr: &str, ids: &str) -> Proc {
    let mut c = fedsim();
    c.args([
        "client",
        "--server",
        &format!("http://{addr}"),
        "--ids",
        ids,
        "--threads",
        "1",
    ]);
    Proc::spawn(
        &format!("client {ids}"),
        c,
        &dir.join(format!("client-{ids}.log")),
    )
}

/// Opens a raw HTTP/2 connection (the gRPC stubs cannot send half a message).
async fn h2_connect(
    addr: &str,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("tcp");
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    (send, tokio::spawn(conn))
}

fn grpc_request(method: &str) -> http::Request<()> {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://localhost/fedsim.v1.Coordinator/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// The `grpc-status` of a finished raw response (headers-only or trailers).
async fn grpc_status(resp: h2::client::ResponseFuture) -> Option<i32> {
    let resp = resp.await.ok()?;
    if let Some(s) = resp.headers().get("grpc-status") {
        return s.to_str().ok()?.parse().ok();
    }
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        chunk.ok()?;
    }
    let trailers = body.trailers().await.ok()??;
    trailers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Ids are owned by live sessions: another caller cannot take one over (ALREADY_EXISTS), the holder
/// can rejoin with its session; an update carrying a tensor the strategy does not send is refused; a
/// checkpoint that cannot be written does not end the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the lock only keeps the tests of this file apart
async fn ids_cannot_be_taken_over_and_extra_tensors_are_refused() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Every checkpoint write fails: its temporary file's path is a directory.
    std::fs::create_dir_all(dir.join("run").join("checkpoint.tmp")).unwrap();
    let sc = scenario(dir, 2, 2, "min_clients = 2");
    let (mut server, addr) = start_server(dir, &sc, None);

    let mut holder = connect(&addr).await;
    let a = holder
        .join(join_request(&[0], ""))
        .await
        .expect("join")
        .into_inner();
    let hb_a = keep_alive(&holder, &a.run_id, &a.session);
    let mut thief = connect(&addr).await;
    let msg = expect(
        "a join for an id held by a live session",
        thief.join(join_request(&[0], "")).await,
        Code::AlreadyExists,
    );
    assert!(msg.contains("client id 0 is held"), "{msg}");
    expect(
        "a join naming another session",
        thief.join(join_request(&[0], "0123456789ab")).await,
        Code::AlreadyExists,
    );
    // The holder rejoins with its session (as a client does after a broken connection).
    let b = holder
        .join(join_request(&[0], &a.session))
        .await
        .expect("the holder's rejoin")
        .into_inner();
    hb_a.abort();
    let hb_b = keep_alive(&holder, &b.run_id, &b.session);

    let mut honest = honest_client(dir, &addr, "1");
    let Task {
        round,
        token,
        model_len: n,
    } = fetch_train(&mut holder, &b.run_id, &b.session, 0).await;
    // More tensors than the strategy's updates carry: refused from the encoded bytes.
    let extra = wire::encode(
        &Payload::new()
            .with("delta", TensorData::vector(vec![0.0; n]))
            .with("smuggled", TensorData::vector(vec![1.0; 3])),
    );
    let msg = expect(
        "an update with an extra tensor",
        submit(
            &mut holder,
            result_stream(&b.run_id, &b.session, 0, round, &token, extra),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("more than 1 tensors"), "{msg}");
    // As many tensors, but one the strategy does not send: refused by name when validated.
    let renamed = wire::encode(&Payload::new().with("smuggled", TensorData::vector(vec![0.0; n])));
    let msg = expect(
        "an update with an unknown tensor",
        submit(
            &mut holder,
            result_stream(&b.run_id, &b.session, 0, round, &token, renamed),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("unexpected tensor `smuggled`"), "{msg}");
    hb_b.abort();
    holder
        .leave(LeaveRequest {
            run_id: b.run_id.clone(),
            session: b.session.clone(),
        })
        .await
        .expect("leave");
    server.wait_ok(Duration::from_secs(90));
    honest.wait_ok(Duration::from_secs(20));
    let out = dir.join("run");
    let m = metrics(&out);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["participant_ids"], serde_json::json!([1]), "{}", m[0]);
    let log = server.output();
    assert!(log.contains("cannot write the checkpoint"), "{log}");
    assert!(!out.join("checkpoint.bin").exists());
    assert!(!log.contains("panicked"), "{log}");
}

/// Requests that never finish arriving are dropped after `deploy.request_timeout_s` and hold at
/// most one message each (a few hundred KiB, not 8 MiB); a message above the limit is refused before
/// its data is read; connections that say nothing, or nothing more, are closed; the connection cap
/// holds; streams per connection are capped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn stalled_requests_and_idle_connections_are_bounded() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sc = scenario(
        dir,
        1,
        1,
        "request_timeout_s = 2\nidle_connection_s = 4\nmax_connections = 24\nwait_timeout_s = 120",
    );
    let (mut server, addr) = start_server(dir, &sc, None);
    let pid = server.child.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_mib(pid);

    // 40 Join requests on 4 connections, each sending all but the last byte of a message just under
    // the coordinator's message limit.
    const LEN: usize = 300 << 10;
    let mut conns = Vec::new();
    let mut pending = Vec::new();
    for _ in 0..4 {
        let (mut send, conn) = h2_connect(&addr).await;
        for _ in 0..10 {
            send = send.ready().await.expect("ready");
            let (resp, mut body) = send.send_request(grpc_request("Join"), false).unwrap();
            let mut frame = vec![0u8; 5 + LEN - 1];
            frame[1..5].copy_from_slice(&(LEN as u32).to_be_bytes());
            body.reserve_capacity(frame.len());
            body.send_data(Bytes::from(frame), false).unwrap();
            pending.push((resp, body));
        }
        conns.push((send, conn));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let grown = rss_mib(pid) - rss_before;
    eprintln!("RSS grew by {grown:.1} MiB with 40 stalled requests");
    // Before: 9.7 MiB per stalled request (388 MiB for 40).
    assert!(grown < 64.0, "RSS grew by {grown:.1} MiB");
    let started = Instant::now();
    let mut timed_out = 0;
    for (resp, _body) in pending {
        let status = tokio::time::timeout(Duration::from_secs(15), grpc_status(resp))
            .await
            .expect("a stalled request is answered");
        timed_out += usize::from(status == Some(Code::DeadlineExceeded as i32));
    }
    assert_eq!(
        timed_out, 40,
        "every stalled request ends DEADLINE_EXCEEDED"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A message above the limit is refused from its length prefix, before its data is sent.
    let (mut send, conn) = h2_connect(&addr).await;
    send = send.ready().await.unwrap();
    let (resp, mut body) = send.send_request(grpc_request("Join"), false).unwrap();
    let mut prefix = vec![0u8; 5];
    prefix[1..5].copy_from_slice(&(8u32 << 20).to_be_bytes());
    body.send_data(Bytes::from(prefix), false).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), grpc_status(resp))
        .await
        .expect("refused at once");
    assert!(
        matches!(status, Some(s) if s == Code::OutOfRange as i32 || s == Code::ResourceExhausted as i32),
        "{status:?}"
    );
    // Streams per connection are capped.
    assert_eq!(send.current_max_send_streams(), 256);
    drop((send, body));
    conn.abort();
    for (_, c) in conns {
        c.abort();
    }

    // 30 TCP connections that send nothing: closed after the request timeout.
    let mut silent = Vec::new();
    for _ in 0..30 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.expect("tcp"));
    }
    let t0 = Instant::now();
    for mut c in silent {
        let mut buf = [0u8; 16];
        let r = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("a silent connection is closed");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());

    // 30 connections that complete the HTTP/2 handshake and then idle: 24 fit under the cap, the
    // rest are closed at once; the idle ones are closed after the idle timeout.
    let mut idle = Vec::new();
    for _ in 0..30 {
        let mut c = tokio::net::TcpStream::connect(&addr).await.expect("tcp");
        c.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        idle.push(c);
    }
    let t0 = Instant::now();
    let watchers: Vec<_> = idle
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match tokio::time::timeout(Duration::from_secs(15), c.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break Some(t0.elapsed()),
                        Ok(Ok(_)) => continue, // the server's SETTINGS and acks
                        Err(_) => break None,
                    }
                }
            })
        })
        .collect();
    let mut closed_at = Vec::new();
    for w in watchers {
        closed_at.push(w.await.unwrap().expect("an idle connection stays open"));
    }
    let early = closed_at
        .iter()
        .filter(|t| **t < Duration::from_secs(2))
        .count();
    assert!(
        early >= 6,
        "the connection cap closed {early} of 30 (cap 24)"
    );
    assert!(closed_at.iter().all(|t| *t < Duration::from_secs(12)));

    // The coordinator still serves an honest client, which finishes the run.
    let mut honest = honest_client(dir, &addr, "0");
    server.wait_ok(Duration::from_secs(60));
    honest.wait_ok(Duration::from_secs(20));
    let log = server.output();
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(log.contains("request did not complete in time"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// With the open-file limit at 64, a flood of connections makes accept fail: the coordinator backs
/// off instead of spinning, closes the flood as it idles, and the run completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn running_out_of_file_descriptors_does_not_spin_or_abort() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sc = scenario(
        dir,
        1,
        2,
        "request_timeout_s = 2\nidle_connection_s = 3\nwait_timeout_s = 120",
    );
    let (mut server, addr) = start_server(dir, &sc, Some("ulimit -n 64"));
    let pid = server.child.id();
    let mut flood = Vec::new();
    for _ in 0..100 {
        match tokio::net::TcpStream::connect(&addr).await {
            Ok(c) => flood.push(c),
            Err(_) => break,
        }
    }
    let cpu0 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = cpu_seconds(pid) - cpu0;
    eprintln!("coordinator CPU while flooded: {busy:.2} s in 2 s");
    // Before: the accept loop spun at about 110% of a core.
    assert!(busy < 0.6, "{busy:.2} CPU seconds in 2 s");
    drop(flood);
    let mut honest = honest_client(dir, &addr, "0");
    server.wait_ok(Duration::from_secs(90));
    honest.wait_ok(Duration::from_secs(20));
    assert!(dir.join("run").join("checkpoint.bin").exists());
    let log = server.output();
    assert!(log.contains("accept failed; backing off"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

/// A selected client that opens many task downloads gets one (the others are refused), so the round
/// still reaches the honest client; decode bombs (millions of empty tensors, a million-dimension
/// shape) are refused from the encoded bytes without the memory blow-up; heartbeats stay prompt while
/// large uploads are decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn unread_downloads_and_decode_bombs_are_bounded() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sc = scenario(dir, 3, 2, "min_clients = 3");
    let (mut server, addr) = start_server(dir, &sc, None);
    let pid = server.child.id();
    let mut c = connect(&addr).await;
    let me = c
        .join(join_request(&[0, 1], ""))
        .await
        .expect("join")
        .into_inner();
    let (run, sess) = (me.run_id.clone(), me.session.clone());
    let hb = keep_alive(&c, &run, &sess);
    let mut honest = honest_client(dir, &addr, "2");

    // 64 concurrent task requests for client 0: one is served, the rest refused.
    let mut fetches = Vec::new();
    for _ in 0..64 {
        let mut c = c.clone();
        let (run, sess) = (run.clone(), sess.clone());
        fetches.push(tokio::spawn(async move {
            c.fetch_task(FetchTaskRequest {
                run_id: run,
                session: sess,
                client_id: 0,
                after_round: -1,
            })
            .await
        }));
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for f in fetches {
        match f.await.unwrap() {
            Ok(stream) => held.push(stream),
            Err(s) if s.code() == Code::ResourceExhausted => refused += 1,
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
    assert_eq!(held.len(), 1, "one download per client");
    assert_eq!(refused, 63);
    // Not reading it does not stop the honest client from training: wait for its result below.
    let Task { round, token, .. } = fetch_train(&mut c, &run, &sess, 1).await;
    let rss_before = rss_mib(pid);

    // 4 million empty tensors (8 MB).
    let mut bomb = Vec::with_capacity(8 << 20);
    for _ in 0..4_000_000 {
        bomb.extend_from_slice(&[0x0a, 0x00]);
    }
    let t0 = Instant::now();
    let msg = expect(
        "4 million empty tensors",
        submit(
            &mut c,
            result_stream(&run, &sess, 1, round, &token, bomb.into()),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("more than 1 tensors"), "{msg}");
    // A 4-million-entry shape.
    let deep = v1::Payload {
        tensors: vec![v1::Tensor {
            name: "delta".into(),
            data: Some(v1::tensor::Data::Dense(v1::Dense {
                dtype: v1::DType::F32 as i32,
                shape: vec![1; 4_000_000],
                data: Bytes::from(vec![0u8; 4]),
            })),
        }],
    };
    let msg = expect(
        "a 4-million-entry shape",
        submit(
            &mut c,
            result_stream(&run, &sess, 1, round, &token, deep.encode_to_vec().into()),
        )
        .await,
        Code::InvalidArgument,
    );
    assert!(msg.contains("more than 8 dimensions"), "{msg}");
    let grown = rss_mib(pid) - rss_before;
    eprintln!(
        "decode bombs: refused in {:.2} s, RSS grew {grown:.1} MiB",
        t0.elapsed().as_secs_f64()
    );
    // Before: +501 MiB and +108 MiB.
    assert!(grown < 64.0, "RSS grew by {grown:.1} MiB");

    // Two large uploads decoded at once (well-formed, the wrong length: refused after decoding)
    // while heartbeats are timed.
    let big = wire::encode(&Payload::new().with("delta", TensorData::vector(vec![0.5; 16 << 20])));
    let mut uploads = Vec::new();
    for id in [0u32, 1] {
        let mut c = c.clone();
        let msgs = result_stream(&run, &sess, id, round, &token, big.clone());
        uploads.push(tokio::spawn(async move { submit(&mut c, msgs).await }));
    }
    let mut worst = Duration::ZERO;
    let mut hbc = c.clone();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let t = Instant::now();
        hbc.heartbeat(HeartbeatRequest {
            run_id: run.clone(),
            session: sess.clone(),
        })
        .await
        .expect("heartbeat");
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for u in uploads {
        let r = u.await.unwrap();
        assert!(r.is_err(), "a wrong-length update is refused");
    }
    eprintln!(
        "slowest heartbeat during large uploads: {:.1} ms",
        worst.as_secs_f64() * 1e3
    );
    // Before: 6.5 s behind two 60k-tensor decodes.
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    drop(held);
    hb.abort();
    c.leave(LeaveRequest {
        run_id: run.clone(),
        session: sess.clone(),
    })
    .await
    .expect("leave");
    server.wait_ok(Duration::from_secs(90));
    honest.wait_ok(Duration::from_secs(20));
    let m = metrics(&dir.join("run"));
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["participant_ids"], serde_json::json!([2]), "{}", m[0]);
    assert!(!server.output().contains("panicked"));
}

/// A client that heartbeats but never reports: with `quorum_order = "arrival"` the first k results
/// close the round at once; in the default virtual order a hung quorum member is given up on at the
/// deadline, with a log line saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn a_hung_client_does_not_hold_the_quorum() {
    let _serial = serial();
    for (order, hung, deadline) in [("arrival", 3u32, 60), ("virtual", 0, 4)] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let sc = scenario_with(
            dir,
            4,
            2,
            &format!("quorum = 3\nquorum_order = \"{order}\"\ndeadline_s = {deadline}"),
            "min_clients = 4",
        );
        let (mut server, addr) = start_server(dir, &sc, None);
        let mut c = connect(&addr).await;
        let me = c
            .join(join_request(&[hung], ""))
            .await
            .expect("join")
            .into_inner();
        let hb = keep_alive(&c, &me.run_id, &me.session);
        let others = if hung == 3 { "0-2" } else { "1-3" };
        let started = Instant::now();
        let mut honest = honest_client(dir, &addr, others);
        server.wait_ok(Duration::from_secs(60));
        honest.wait_ok(Duration::from_secs(20));
        let took = started.elapsed();
        hb.abort();
        let m = metrics(&dir.join("run"));
        assert_eq!(m.len(), 2);
        let log = server.output();
        if order == "arrival" {
            // Both rounds closed on the three honest results, long before the 60 s deadline.
            for r in &m {
                assert_eq!(r["participant_ids"], serde_json::json!([0, 1, 2]), "{r}");
            }
            assert!(took < Duration::from_secs(40), "{took:?}");
        } else {
            // The virtual quorum (three fastest in virtual time) is chosen when the round is planned,
            // the fourth client dropped then; when 0 is in it and hangs, the round closes at the
            // deadline with the other two.
            for r in &m {
                let ids = r["participant_ids"].as_array().unwrap();
                assert!(!ids.contains(&serde_json::json!(0)), "{r}");
                assert!(ids.len() <= 2, "{r}");
            }
            assert!(
                log.contains("members of the round's virtual quorum never reported"),
                "{log}"
            );
        }
        assert!(!log.contains("panicked"), "{log}");
    }
}

/// A client that opens its task download and reads none of it loses that download after
/// `deploy.send_timeout_s`: the coordinator logs it and frees the slot, and the same client's next
/// request is served the whole task. (Until then a second request is refused: one download per client.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)]
async fn an_unread_download_is_abandoned_after_the_send_timeout() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("scenario.toml");
    // An 8 MB task: more than HTTP/2 flow control and the send buffers let through unread.
    std::fs::write(
        &path,
        r#"name = "unread"
rounds = 1
clients = 1

[data]
kind = "synthetic"
features = 1000
classes = 4
samples_per_client = 40
test_samples = 20

[partition]
scheme = "natural"

[model]
kind = "mlp"
hidden = [2000]

[participation]
kind = "full"

[deploy]
min_clients = 1
heartbeat_timeout_s = 4
send_timeout_s = 2
"#,
    )
    .unwrap();
    let (mut server, addr) = start_server(dir, s(&path), None);
    let mut c = connect(&addr).await;
    let me = c
        .join(join_request(&[0], ""))
        .await
        .expect("join")
        .into_inner();
    let (run, sess) = (me.run_id.clone(), me.session.clone());
    let hb = keep_alive(&c, &run, &sess);
    let request = || FetchTaskRequest {
        run_id: run.clone(),
        session: sess.clone(),
        client_id: 0,
        after_round: -1,
    };
    // Opened, never read.
    let unread = c.fetch_task(request()).await.expect("first download");
    let opened = Instant::now();
    expect(
        "a second download while the first is held",
        c.fetch_task(request()).await.map(|_| ()),
        Code::ResourceExhausted,
    );
    // The slot frees after the send timeout (2 s); poll until a request is served.
    let served = loop {
        assert!(
            opened.elapsed() < Duration::from_secs(30),
            "the unread download was never abandoned"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        match c.fetch_task(request()).await {
            Ok(stream) => break stream,
            Err(s) if s.code() == Code::ResourceExhausted => continue,
            Err(s) => panic!("unexpected {s:?}"),
        }
    };
    let waited = opened.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "freed after {waited:?}, before the 2 s send timeout"
    );
    // The new download carries the whole task.
    let mut stream = served.into_inner();
    let Some(v1::task_chunk::Part::Header(h)) =
        stream.message().await.expect("header").and_then(|m| m.part)
    else {
        panic!("task stream without a header");
    };
    assert_eq!(h.kind, v1::task_header::Kind::Train as i32);
    let mut got = 0u64;
    while let Some(m) = stream.message().await.expect("chunk") {
        if let Some(v1::task_chunk::Part::Data(d)) = m.part {
            got += d.len() as u64;
        }
    }
    assert!(h.payload_len > 8_000_000, "{}", h.payload_len);
    assert_eq!(got, h.payload_len);
    drop(unread);
    hb.abort();
    server.kill();
    let log = server.output();
    assert!(
        log.contains("task answer abandoned: the client stopped reading"),
        "{log}"
    );
}
