//! A misbehaving client against the real `fedsim server` binary on loopback, built on the generated
//! tonic stubs: bad joins, forged sessions, stale round tokens, malformed, truncated and oversized
//! payloads, results for clients that were not selected, duplicates. Each is refused with the right
//! gRPC status and never aggregated, while honest `fedsim client` processes finish the run.

mod grpc_common;

use std::time::Duration;

use bytes::Bytes;
use fedsim_proto::v1::coordinator_client::CoordinatorClient;
use fedsim_proto::v1::{
    self, ClientInfo, FetchTaskRequest, JoinRequest, LeaveRequest, ResultChunk, ResultHeader,
    result_chunk,
};
use fedsim_proto::{PROTOCOL_VERSION, wire};
use fedsim_types::{Payload, TensorData};
use grpc_common::raw::*;
use grpc_common::*;
use prost::Message;
use tonic::Code;

const HONEST: &str = "honest-token-0000";
const FUZZ: &str = "fuzzer-token-0000";
const SAMPLES: u64 = 50;

async fn join(
    c: &mut Client,
    ids: &[u32],
    token: &str,
    version: u32,
) -> Result<v1::JoinResponse, tonic::Status> {
    join_declaring(c, ids, token, version, SAMPLES).await
}

async fn join_declaring(
    c: &mut Client,
    ids: &[u32],
    token: &str,
    version: u32,
    num_samples: u64,
) -> Result<v1::JoinResponse, tonic::Status> {
    c.join(JoinRequest {
        protocol_version: version,
        clients: ids
            .iter()
            .map(|&id| ClientInfo {
                id,
                num_samples,
                num_test_samples: 0,
            })
            .collect(),
        token: token.into(),
        scenario_hash: String::new(),
        previous_session: String::new(),
    })
    .await
    .map(|r| r.into_inner())
}

fn header(
    run_id: &str,
    session: &str,
    client: u32,
    round: u64,
    token: &str,
    len: usize,
) -> ResultChunk {
    header_declaring(run_id, session, client, round, token, len, SAMPLES)
}

fn header_declaring(
    run_id: &str,
    session: &str,
    client: u32,
    round: u64,
    token: &str,
    len: usize,
    num_samples: u64,
) -> ResultChunk {
    ResultChunk {
        part: Some(result_chunk::Part::Header(ResultHeader {
            run_id: run_id.into(),
            session: session.into(),
            client_id: client,
            round,
            round_token: token.into(),
            num_samples,
            payload_len: len as u64,
            error: String::new(),
            eval: None,
        })),
    }
}

fn delta(values: Vec<f32>) -> Payload {
    Payload::new().with("delta", TensorData::vector(values))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the lock only keeps the tests of this file apart
async fn malformed_and_forged_messages_are_refused_and_the_run_completes() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tokens = dir.join("tokens.txt");
    std::fs::write(&tokens, format!("0-4 {HONEST}\n5-7 {FUZZ}\n")).unwrap();
    let out = dir.join("run");
    let mut cmd = fedsim();
    cmd.args([
        "server",
        "configs/quickstart.toml",
        "--listen",
        "127.0.0.1:0",
        "--out",
        s(&out),
    ])
    .args(["--tokens", s(&tokens)]);
    for o in [
        "rounds=4",
        "clients=8",
        "participation={kind=\"full\"}",
        "deploy.min_clients=7",
        "deploy.heartbeat_timeout_s=3",
        "round.deadline_s=60",
    ] {
        cmd.args(["--set", o]);
    }
    let mut server = Proc::spawn("server", cmd, &dir.join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    let url = format!("http://{addr}");
    let mut c = CoordinatorClient::connect(url.clone())
        .await
        .expect("connect")
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(usize::MAX);

    // ---- joins ----
    expect(
        "wrong protocol version",
        join(&mut c, &[5], FUZZ, PROTOCOL_VERSION + 1).await,
        Code::FailedPrecondition,
    );
    expect(
        "client id out of range",
        join(&mut c, &[8], FUZZ, PROTOCOL_VERSION).await,
        Code::InvalidArgument,
    );
    expect(
        "no client ids",
        join(&mut c, &[], FUZZ, PROTOCOL_VERSION).await,
        Code::InvalidArgument,
    );
    expect(
        "an id listed twice",
        join(&mut c, &[5, 5], FUZZ, PROTOCOL_VERSION).await,
        Code::InvalidArgument,
    );
    expect(
        "wrong token",
        join(&mut c, &[5], "wrong-token-9999", PROTOCOL_VERSION).await,
        Code::Unauthenticated,
    );
    expect(
        "token of other ids",
        join(&mut c, &[0], FUZZ, PROTOCOL_VERSION).await,
        Code::Unauthenticated,
    );
    let me = join(&mut c, &[5, 6], FUZZ, PROTOCOL_VERSION)
        .await
        .expect("valid join");
    let (run, sess) = (me.run_id.clone(), me.session.clone());
    expect(
        "result before any round is open",
        submit(&mut c, vec![header(&run, &sess, 5, 0, "x", 0)]).await,
        Code::FailedPrecondition,
    );
    // Keep the session alive while the honest clients join and train.
    let hb = keep_alive(&c, &run, &sess);

    // ---- honest clients: one process hosting 0-3, one hosting 4 on its own partition ----
    let mut a = fedsim();
    a.args([
        "client",
        "--server",
        &url,
        "--ids",
        "0-3",
        "--token",
        HONEST,
        "--threads",
        "1",
    ]);
    let mut honest_a = Proc::spawn("client 0-3", a, &dir.join("client-a.log"));
    let token_file = dir.join("token.txt");
    std::fs::write(&token_file, HONEST).unwrap();
    let mut b = fedsim();
    b.args([
        "client",
        "--server",
        &url,
        "--id",
        "4",
        "--data",
        "partition:4",
    ])
    .args(["--token-file", s(&token_file), "--threads", "1"]);
    let mut honest_b = Proc::spawn("client 4", b, &dir.join("client-b.log"));

    // ---- round 1: tasks for 5 and 6; 6 is held back so the round stays open ----
    let t = fetch_train(&mut c, &run, &sess, 5).await;
    let t6 = fetch_train(&mut c, &run, &sess, 6).await;
    assert_eq!((t.round, t6.round), (0, 0));
    assert_eq!(t.token, t6.token);
    let n = t.model_len;
    let valid = wire::encode(&delta(vec![0.0; n]));
    let h = |client: u32, round: u64, token: &str, len: usize| {
        header(&run, &sess, client, round, token, len)
    };

    let unknown_run = submit(
        &mut c,
        vec![
            header("other-run", &sess, 5, 0, &t.token, valid.len()),
            data(valid.clone()),
        ],
    )
    .await;
    if let Err(status) = &unknown_run {
        // A caller that names the wrong run is not told the right one.
        assert!(!status.message().contains(&run), "{}", status.message());
    }
    expect("unknown run id", unknown_run, Code::FailedPrecondition);
    expect(
        "forged session",
        submit(
            &mut c,
            vec![
                header(&run, "forged", 5, 0, &t.token, valid.len()),
                data(valid.clone()),
            ],
        )
        .await,
        Code::PermissionDenied,
    );
    expect(
        "a client of another session",
        submit(
            &mut c,
            vec![h(0, 0, &t.token, valid.len()), data(valid.clone())],
        )
        .await,
        Code::PermissionDenied,
    );
    let forged_fetch = c
        .fetch_task(FetchTaskRequest {
            run_id: run.clone(),
            session: sess.clone(),
            client_id: 1,
            after_round: -1,
        })
        .await;
    expect(
        "a task for a client of another session",
        forged_fetch.map(|_| ()),
        Code::PermissionDenied,
    );
    expect(
        "wrong round token",
        submit(
            &mut c,
            vec![h(5, 0, "run-0-forged", valid.len()), data(valid.clone())],
        )
        .await,
        Code::FailedPrecondition,
    );
    expect(
        "wrong round",
        submit(
            &mut c,
            vec![h(5, 1, &t.token, valid.len()), data(valid.clone())],
        )
        .await,
        Code::FailedPrecondition,
    );

    let mut nan = vec![0.0; n];
    nan[17] = f32::NAN;
    let p = wire::encode(&delta(nan));
    expect(
        "NaN",
        submit(&mut c, vec![h(5, 0, &t.token, p.len()), data(p)]).await,
        Code::InvalidArgument,
    );
    let mut inf = vec![0.0; n];
    inf[n - 1] = f32::INFINITY;
    let p = wire::encode(&delta(inf));
    expect(
        "Inf",
        submit(&mut c, vec![h(5, 0, &t.token, p.len()), data(p)]).await,
        Code::InvalidArgument,
    );

    let mut msg = wire::to_proto(&delta(vec![0.0; n]));
    if let Some(v1::tensor::Data::Dense(d)) = msg.tensors[0].data.as_mut() {
        d.shape = vec![10];
    }
    let p: Bytes = msg.encode_to_vec().into();
    expect(
        "shape does not match the data",
        submit(&mut c, vec![h(5, 0, &t.token, p.len()), data(p)]).await,
        Code::InvalidArgument,
    );
    let mut msg = wire::to_proto(&delta(vec![0.0; n]));
    if let Some(v1::tensor::Data::Dense(d)) = msg.tensors[0].data.as_mut() {
        d.dtype = 7;
    }
    let p: Bytes = msg.encode_to_vec().into();
    expect(
        "unknown dtype",
        submit(&mut c, vec![h(5, 0, &t.token, p.len()), data(p)]).await,
        Code::InvalidArgument,
    );
    let mut msg = wire::to_proto(&delta(vec![0.0; n]));
    msg.tensors.push(msg.tensors[0].clone());
    let p: Bytes = msg.encode_to_vec().into();
    expect(
        "a tensor twice",
        submit(&mut c, vec![h(5, 0, &t.token, p.len()), data(p)]).await,
        Code::InvalidArgument,
    );
    let sparse = wire::encode(&Payload::new().with(
        "delta",
        TensorData::Sparse {
            len: n,
            indices: vec![1, n as u32 + 5],
            values: vec![0.5, 0.5],
        },
    ));
    expect(
        "sparse index out of range",
        submit(&mut c, vec![h(5, 0, &t.token, sparse.len()), data(sparse)]).await,
        Code::InvalidArgument,
    );

    expect(
        "truncated bytes",
        submit(
            &mut c,
            vec![
                h(5, 0, &t.token, valid.len()),
                data(valid.slice(..valid.len() - 3)),
            ],
        )
        .await,
        Code::InvalidArgument,
    );
    expect(
        "more bytes than declared",
        submit(&mut c, vec![h(5, 0, &t.token, 10), data(valid.clone())]).await,
        Code::InvalidArgument,
    );
    let garbage = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x01]);
    expect(
        "undecodable bytes",
        submit(
            &mut c,
            vec![h(5, 0, &t.token, garbage.len()), data(garbage)],
        )
        .await,
        Code::InvalidArgument,
    );
    expect(
        "oversized declaration",
        submit(&mut c, vec![h(5, 0, &t.token, 1 << 40)]).await,
        Code::ResourceExhausted,
    );
    let big = Bytes::from(vec![0u8; 9 << 20]);
    expect(
        "a message above the 8 MiB limit",
        submit(&mut c, vec![h(5, 0, &t.token, big.len()), data(big)]).await,
        Code::OutOfRange,
    );
    expect(
        "data before the header",
        submit(
            &mut c,
            vec![data(valid.clone()), h(5, 0, &t.token, valid.len())],
        )
        .await,
        Code::InvalidArgument,
    );
    expect(
        "empty stream",
        submit(&mut c, vec![]).await,
        Code::InvalidArgument,
    );
    expect(
        "two headers",
        submit(
            &mut c,
            vec![
                h(5, 0, &t.token, valid.len()),
                h(5, 0, &t.token, valid.len()),
            ],
        )
        .await,
        Code::InvalidArgument,
    );
    let mut wrong_n = h(5, 0, &t.token, valid.len());
    if let Some(result_chunk::Part::Header(x)) = wrong_n.part.as_mut() {
        x.num_samples = 1_000_000;
    }
    expect(
        "num_samples other than declared",
        submit(&mut c, vec![wrong_n, data(valid.clone())]).await,
        Code::InvalidArgument,
    );

    // A client that joined after the round was drawn was not selected, even with the round's token.
    let mut c2 = c.clone();
    let late = join(&mut c2, &[7], FUZZ, PROTOCOL_VERSION)
        .await
        .expect("late join");
    expect(
        "a client that was not selected",
        submit(
            &mut c2,
            vec![
                header(&run, &late.session, 7, 0, &t.token, valid.len()),
                data(valid.clone()),
            ],
        )
        .await,
        Code::PermissionDenied,
    );
    c2.leave(LeaveRequest {
        run_id: run.clone(),
        session: late.session.clone(),
    })
    .await
    .expect("leave");

    // Well-formed but the wrong size for the model: the strategy refuses it at validation.
    let short = wire::encode(&delta(vec![0.0; n - 1]));
    expect(
        "a delta of the wrong length",
        submit(&mut c, vec![h(5, 0, &t.token, short.len()), data(short)]).await,
        Code::InvalidArgument,
    );
    // Client 5 is out of this round now: a second (valid) result is a duplicate.
    expect(
        "a duplicate result",
        submit(
            &mut c,
            vec![h(5, 0, &t.token, valid.len()), data(valid.clone())],
        )
        .await,
        Code::AlreadyExists,
    );
    // Client 6 reports a valid (zero) update: accepted, and the round closes.
    let ok = submit(
        &mut c,
        vec![h(6, 0, &t.token, valid.len()), data(valid.clone())],
    )
    .await
    .expect("valid result");
    assert!(ok.accepted);
    // Replaying it once the next round is open: a stale token.
    let t2 = fetch_train(&mut c, &run, &sess, 6).await;
    assert_eq!(t2.round, 1);
    expect(
        "a replayed result",
        submit(
            &mut c,
            vec![h(6, 0, &t.token, valid.len()), data(valid.clone())],
        )
        .await,
        Code::FailedPrecondition,
    );

    // The fuzzer leaves; the honest clients finish the run.
    hb.abort();
    c.leave(LeaveRequest {
        run_id: run.clone(),
        session: sess.clone(),
    })
    .await
    .expect("leave");
    server.wait_ok(Duration::from_secs(60));
    honest_a.wait_ok(Duration::from_secs(20));
    honest_b.wait_ok(Duration::from_secs(20));

    let m = metrics(&out);
    assert_eq!(m.len(), 4);
    assert_eq!(
        m[0]["participant_ids"],
        serde_json::json!([0, 1, 2, 3, 4, 6]),
        "round 1: {}",
        m[0]
    );
    for r in &m[1..] {
        let ids = r["participant_ids"].as_array().unwrap();
        assert_eq!(
            ids,
            &(0..5).map(|i| serde_json::json!(i)).collect::<Vec<_>>(),
            "{r}"
        );
    }
    assert_eq!(summary(&out)["rounds"], 4);
    let log = server.output();
    for line in [
        "join refused",
        "malformed result refused",
        "oversized result refused",
        "stale or wrong round token refused",
        "not selected refused",
        "duplicate result refused",
        "invalid update refused",
        "request for a client this session did not join",
    ] {
        assert!(log.contains(line), "server log lacks `{line}`:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
}

/// Poisoning through the protocol: a client declaring 10^12 samples does not get the weight of 10^12
/// (weights come from the partition), a result whose count differs from the one declared at join is
/// refused, and finite but huge updates that would make the model infinite get their round rejected
/// (the model stays finite, is checkpointed and the run completes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the lock only keeps the tests of this file apart
async fn declared_weights_and_huge_updates_cannot_poison_the_model() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("run");
    let mut cmd = fedsim();
    cmd.args([
        "server",
        "configs/quickstart.toml",
        "--listen",
        "127.0.0.1:0",
        "--out",
        s(&out),
    ]);
    for o in [
        "rounds=2",
        "clients=4",
        // Equal partitions: the attacker's fair share of the weight is exactly 1/4.
        "partition={scheme=\"iid\"}",
        "participation={kind=\"full\"}",
        // A large server step makes two halves of f32::MAX overflow.
        "strategy.server_lr=8.0",
        "deploy.min_clients=4",
        "deploy.heartbeat_timeout_s=3",
        "round.deadline_s=60",
    ] {
        cmd.args(["--set", o]);
    }
    let mut server = Proc::spawn("server", cmd, &dir.join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    let url = format!("http://{addr}");
    let mut c = CoordinatorClient::connect(url.clone())
        .await
        .expect("connect")
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(usize::MAX);
    const CLAIMED: u64 = 1_000_000_000_000;
    let me = join_declaring(&mut c, &[3], "", PROTOCOL_VERSION, CLAIMED)
        .await
        .expect("join");
    let (run, sess) = (me.run_id.clone(), me.session.clone());
    let hb = keep_alive(&c, &run, &sess);
    let mut honest = fedsim();
    honest.args(["client", "--server", &url, "--ids", "0-2", "--threads", "1"]);
    let mut honest = Proc::spawn("clients 0-2", honest, &dir.join("clients.log"));

    // Round 1: a count other than the declared one is refused; then f32::MAX everywhere.
    let t = fetch_train(&mut c, &run, &sess, 3).await;
    let huge = wire::encode(&delta(vec![f32::MAX; t.model_len]));
    let h = |round: u64, token: &str, len: usize, n: u64| {
        header_declaring(&run, &sess, 3, round, token, len, n)
    };
    expect(
        "a count other than the one declared at join",
        submit(
            &mut c,
            vec![h(t.round, &t.token, huge.len(), 50), data(huge.clone())],
        )
        .await,
        Code::InvalidArgument,
    );
    submit(
        &mut c,
        vec![h(t.round, &t.token, huge.len(), CLAIMED), data(huge)],
    )
    .await
    .expect("a finite update is accepted on arrival");

    // Round 2: a shift of 1000 on every parameter, claiming 10^12 samples.
    let t = fetch_train(&mut c, &run, &sess, 3).await;
    assert_eq!(t.round, 1);
    let shift = wire::encode(&delta(vec![1000.0; t.model_len]));

    // An upload left open (header and half the data) holds the client's slot: a second upload for
    // the same (client, round) is refused at its header, before any of its data is read.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut held = c.clone();
    let first = tokio::spawn(async move {
        held.submit_result(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    tx.send(h(t.round, &t.token, shift.len(), CLAIMED))
        .await
        .unwrap();
    tx.send(data(shift.slice(..shift.len() / 2))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::time::timeout(
        Duration::from_secs(5),
        submit(
            &mut c,
            vec![
                h(t.round, &t.token, shift.len(), CLAIMED),
                data(shift.clone()),
            ],
        ),
    )
    .await
    .expect("refused at once, not after reading the upload");
    expect("a second upload in progress", second, Code::AlreadyExists);
    drop(tx);
    assert!(
        first.await.unwrap().is_err(),
        "the truncated upload is refused"
    );
    submit(
        &mut c,
        vec![h(t.round, &t.token, shift.len(), CLAIMED), data(shift)],
    )
    .await
    .expect("accepted");

    hb.abort();
    let _ = c
        .leave(LeaveRequest {
            run_id: run.clone(),
            session: sess.clone(),
        })
        .await;
    server.wait_ok(Duration::from_secs(60));
    honest.wait_ok(Duration::from_secs(20));

    let m = metrics(&out);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["round_rejected"], 1.0, "round 1: {}", m[0]);
    assert_eq!(m[0]["participants"], 0, "round 1: {}", m[0]);
    assert_eq!(m[1]["participants"], 4, "round 2: {}", m[1]);
    let model = fedsim_engine::report::read_model(&out.join("model.bin")).expect("model.bin");
    assert!(model.iter().all(|v| v.is_finite()));
    // Weighted by its partition (1/4), the attacker moves every parameter by about 8 × 1000 / 4 =
    // 2000; trusting the declared count would have moved it by about 8000.
    let mean = model.iter().map(|&v| f64::from(v)).sum::<f64>() / model.len() as f64;
    assert!((1500.0..2500.0).contains(&mean), "mean parameter {mean}");
    let log = server.output();
    assert!(log.contains("round rejected"), "{log}");
}

/// Small requests on one connection are answered at once: the coordinator's accepted sockets have
/// TCP_NODELAY (without it each reply waited about 40 ms for Nagle's algorithm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the lock only keeps the tests of this file apart
async fn sequential_requests_on_one_connection_are_not_delayed() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = fedsim();
    cmd.args([
        "server",
        "configs/quickstart.toml",
        "--listen",
        "127.0.0.1:0",
        "--out",
        s(&tmp.path().join("run")),
        "--set",
        "clients=1000",
        "--set",
        "deploy.wait_timeout_s=30",
    ]);
    let mut server = Proc::spawn("server", cmd, &tmp.path().join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    let mut c = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let mut times = Vec::new();
    for id in 0..60 {
        // Valid joins: the reply has headers, a message and trailers, the case Nagle delays.
        let t = std::time::Instant::now();
        join(&mut c, &[id], "", PROTOCOL_VERSION)
            .await
            .expect("join");
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    server.kill();
    // Generous: loopback round trips take well under a millisecond; Nagle's delay is ~40 ms.
    assert!(median < 0.02, "median request took {:.1} ms", median * 1e3);
}
