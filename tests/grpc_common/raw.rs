//! A hand-driven gRPC client for the tests that misbehave on purpose (`tests/grpc_fuzz.rs`,
//! `tests/grpc_hostile.rs`): fetch a task, submit chosen chunks, keep a session alive, check codes.

use std::time::Duration;

use bytes::Bytes;
use fedsim_proto::v1::coordinator_client::CoordinatorClient;
use fedsim_proto::v1::{
    self, FetchTaskRequest, HeartbeatRequest, ResultChunk, result_chunk, task_chunk, task_header,
};
use fedsim_proto::wire;
use fedsim_types::TensorData;
use tonic::Code;
use tonic::transport::Channel;

/// The generated client over a plain channel.
pub(crate) type Client = CoordinatorClient<Channel>;

/// A TRAIN task: round, token and the global model's length.
pub(crate) struct Task {
    pub(crate) round: u64,
    pub(crate) token: String,
    pub(crate) model_len: usize,
}

/// Long-polls until client `client` gets a TRAIN task (at most 20 polls).
pub(crate) async fn fetch_train(c: &mut Client, run_id: &str, session: &str, client: u32) -> Task {
    for _ in 0..20 {
        let mut stream = c
            .fetch_task(FetchTaskRequest {
                run_id: run_id.into(),
                session: session.into(),
                client_id: client,
                after_round: -1,
            })
            .await
            .expect("fetch")
            .into_inner();
        let Some(task_chunk::Part::Header(h)) =
            stream.message().await.expect("header").and_then(|m| m.part)
        else {
            panic!("task stream without a header");
        };
        if h.kind != task_header::Kind::Train as i32 {
            continue;
        }
        let mut asm = wire::Assembler::new(h.payload_len, 1 << 30).expect("sane task size");
        while let Some(m) = stream.message().await.expect("chunk") {
            if let Some(task_chunk::Part::Data(d)) = m.part {
                asm.push(&d).expect("declared size");
            }
        }
        let task = asm.finish().expect("a valid task");
        let model_len = match task.get("model") {
            Some(TensorData::F32 { values, .. }) => values.len(),
            other => panic!("unexpected task {other:?}"),
        };
        return Task {
            round: h.round,
            token: h.round_token,
            model_len,
        };
    }
    panic!("no task for client {client}");
}

/// A data chunk of a result stream.
pub(crate) fn data(b: Bytes) -> ResultChunk {
    ResultChunk {
        part: Some(result_chunk::Part::Data(b)),
    }
}

/// Sends a result stream made of `msgs`.
pub(crate) async fn submit(
    c: &mut Client,
    msgs: Vec<ResultChunk>,
) -> Result<v1::SubmitReply, tonic::Status> {
    c.submit_result(tokio_stream::iter(msgs))
        .await
        .map(|r| r.into_inner())
}

/// Panics unless `r` failed with `code`; returns the status message.
pub(crate) fn expect(
    what: &str,
    r: Result<impl std::fmt::Debug, tonic::Status>,
    code: Code,
) -> String {
    match r {
        Err(s) if s.code() == code => {
            eprintln!("ok: {what}: {code:?}: {}", s.message());
            s.message().to_string()
        }
        other => panic!("{what}: expected {code:?}, got {other:?}"),
    }
}

/// Heartbeats for a session until aborted, so it stays alive while the test waits.
pub(crate) fn keep_alive(c: &Client, run: &str, sess: &str) -> tokio::task::JoinHandle<()> {
    let (mut c, run, sess) = (c.clone(), run.to_string(), sess.to_string());
    tokio::spawn(async move {
        loop {
            let _ = c
                .heartbeat(HeartbeatRequest {
                    run_id: run.clone(),
                    session: sess.clone(),
                })
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
