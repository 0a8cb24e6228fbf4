//! Federated (client-side) evaluation end to end: the simulator and `fedsim launch` agree on it bit for
//! bit, personalised evaluation changes nothing else, a coordinator without any data set runs a
//! deployment whose clients bring their own train and test files, and impossible evaluation results
//! from a hostile client are refused.

mod grpc_common;

use std::path::Path;
use std::time::Duration;

use fedsim_proto::PROTOCOL_VERSION;
use fedsim_proto::v1::coordinator_client::CoordinatorClient;
use fedsim_proto::v1::{
    ClientInfo, EvalResult, FetchTaskRequest, HeartbeatRequest, JoinRequest, ResultChunk,
    ResultHeader, result_chunk, task_chunk, task_header,
};
use grpc_common::*;

const SCENARIO: &str = "configs/fedeval/synthetic_outages.toml";

/// The federated-evaluation metrics of every round of a run.
const FED_KEYS: &[&str] = &[
    "fed_selected",
    "fed_clients",
    "fed_accuracy",
    "fed_loss",
    "fed_mean_accuracy",
    "fed_std_accuracy",
    "fed_p10_accuracy",
    "fed_min_accuracy",
];

fn run(cmd: &str, sets: &[&str], out: &Path, log: &Path) {
    let mut args = vec![cmd, SCENARIO, "--quiet", "--out", s(out)];
    if cmd == "launch" {
        args.extend(["--processes", "3"]);
    }
    for o in sets {
        args.extend(["--set", o]);
    }
    run_ok(&args, log, Duration::from_secs(180));
}

#[test]
fn sim_and_launch_give_identical_federated_evaluations() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("sim"), tmp.path().join("grpc"));
    run("sim", &[], &a, &tmp.path().join("sim.log"));
    run("launch", &[], &b, &tmp.path().join("launch.log"));
    assert_same_run(&a, &b, SCENARIO);
    let (ma, mb) = (metrics(&a), metrics(&b));
    let mut evaluated = 0;
    for (ra, rb) in ma.iter().zip(&mb) {
        for key in FED_KEYS {
            assert_eq!(ra[key], rb[key], "`{key}` differs in round {}", ra["round"]);
        }
        if ra.get("fed_selected").is_some() {
            evaluated += 1;
            assert!(ra["fed_clients"].as_f64().unwrap() > 0.0);
        }
    }
    // Every 2 rounds of 6.
    assert_eq!(evaluated, 3);
    // Round 2: clients 0-3 are in an outage, so half of the 8 reachable clients evaluate.
    assert_eq!(ma[1]["fed_selected"], 4.0);
    assert_eq!(ma[3]["fed_selected"], 6.0);
    let (sa, sb) = (summary(&a), summary(&b));
    assert_eq!(sa["client_evals"], sb["client_evals"]);
    assert_eq!(sa["client_evals"].as_array().unwrap().len(), 6);
    assert_eq!(sa["final_fed_p10_accuracy"], sb["final_fed_p10_accuracy"]);
}

#[test]
fn personalised_evaluation_leaves_the_model_and_client_state_untouched() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    // FedSpeed keeps per-client state (its correction h_i) from round to round: if evaluating (and
    // fine-tuning before it) touched that state or the global model, the runs would part.
    let base = ["strategy={kind=\"fedspeed\", rho=0.05, lambda=0.5}"];
    let runs = [
        ("none", "eval={every=1}"),
        ("plain", "eval.federated={every=1, personalize_steps=0}"),
        ("tuned", "eval.federated={every=1, personalize_steps=8}"),
    ];
    let mut dirs = Vec::new();
    for (name, fed) in runs {
        let out = tmp.path().join(name);
        let sets: Vec<&str> = base.iter().copied().chain([fed]).collect();
        run("sim", &sets, &out, &tmp.path().join(format!("{name}.log")));
        dirs.push(out);
    }
    assert_same_run(&dirs[0], &dirs[1], "federated evaluation vs none");
    assert_same_run(&dirs[0], &dirs[2], "personalised evaluation vs none");
    // Fine-tuning before evaluating changes what is measured, not what is trained.
    let (plain, tuned) = (metrics(&dirs[1]), metrics(&dirs[2]));
    assert_ne!(plain[0]["fed_loss"], tuned[0]["fed_loss"]);
}

/// Writes a CSV file with a `label` column and 8 feature columns: the two classes sit around -1 and
/// +1 in every feature, so a linear model separates them.
fn write_csv(path: &Path, rows: usize, seed: u64) {
    let mut text = String::from("f0,f1,f2,f3,f4,f5,f6,f7,label\n");
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut unit = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for r in 0..rows {
        let label = r % 2;
        let centre = if label == 0 { -1.0 } else { 1.0 };
        let feats: Vec<String> = (0..8)
            .map(|_| format!("{:.4}", centre + 1.5 * (unit() - 0.5)))
            .collect();
        text.push_str(&format!("{},{label}\n", feats.join(",")));
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_coordinator_without_data_runs_with_clients_own_train_and_test_files() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let scenario = dir.join("scenario.toml");
    std::fs::write(
        &scenario,
        r#"name = "no_data_coordinator"
seed = 5
rounds = 4
clients = 2

[data]
kind = "external"
features = 8
classes = 2

[model]
kind = "logreg"

[train]
lr = 0.1
batch_size = 8
epochs = 1

[participation]
kind = "full"

[eval]
central = false
federated = { every = 1 }

[deploy]
sample_counts = "declared"
max_declared_samples = 1000
heartbeat_timeout_s = 5
"#,
    )
    .unwrap();
    for c in 0..2u64 {
        write_csv(&dir.join(format!("train{c}.csv")), 60 + 20 * c as usize, c);
        write_csv(
            &dir.join(format!("test{c}.csv")),
            30 + 10 * c as usize,
            10 + c,
        );
    }
    // Neither the coordinator nor anything it reads has a sample: the data root is empty.
    let empty_root = dir.join("no-data");
    std::fs::create_dir(&empty_root).unwrap();
    let out = dir.join("run");
    let mut server = fedsim();
    server.args([
        "server",
        s(&scenario),
        "--listen",
        "127.0.0.1:0",
        "--out",
        s(&out),
        "--data-dir",
        s(&empty_root),
    ]);
    let mut server = Proc::spawn("server", server, &dir.join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    let mut clients: Vec<Proc> = (0..2)
        .map(|c| {
            let mut cmd = fedsim();
            cmd.args([
                "client",
                "--server",
                &format!("http://{addr}"),
                "--id",
                &c.to_string(),
                "--data",
                &format!("csv:{}", s(&dir.join(format!("train{c}.csv")))),
                "--test-data",
                &format!("csv:{}", s(&dir.join(format!("test{c}.csv")))),
                "--data-dir",
                s(&empty_root),
                "--threads",
                "1",
            ]);
            Proc::spawn(
                &format!("client {c}"),
                cmd,
                &dir.join(format!("client{c}.log")),
            )
        })
        .collect();
    server.wait_ok(Duration::from_secs(120));
    for c in &mut clients {
        c.wait_ok(Duration::from_secs(30));
    }
    let sum = summary(&out);
    assert!(
        sum["final_test_accuracy"].is_null(),
        "no central evaluation"
    );
    let m = metrics(&out);
    assert_eq!(m.len(), 4);
    for r in &m {
        assert!(r["test_accuracy"].is_null());
        assert_eq!(r["participants"], 2);
        assert_eq!(r["fed_clients"], 2.0);
    }
    // Both clients' whole test files, weighted by their sizes.
    let evals = sum["client_evals"].as_array().unwrap();
    let samples: Vec<u64> = evals
        .iter()
        .map(|e| e["samples"].as_u64().unwrap())
        .collect();
    assert_eq!(samples, [30, 40]);
    let last = &m[3];
    let acc = last["fed_accuracy"].as_f64().unwrap();
    assert!(acc > 0.9, "a separable problem: {acc}");
}

/// Joins as client `id` (declaring `test_samples` local test samples), reports a training error for
/// every training task, and submits `eval` for the first evaluation task. Returns the coordinator's
/// answer to that submission.
async fn hostile_evaluator(
    addr: String,
    id: u32,
    test_samples: u64,
    eval: EvalResult,
) -> Result<(), tonic::Status> {
    let mut c = CoordinatorClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let joined = c
        .join(JoinRequest {
            protocol_version: PROTOCOL_VERSION,
            clients: vec![ClientInfo {
                id,
                num_samples: 0,
                num_test_samples: test_samples,
            }],
            token: String::new(),
            scenario_hash: String::new(),
            previous_session: String::new(),
        })
        .await
        .expect("join")
        .into_inner();
    let (run_id, session) = (joined.run_id, joined.session);
    loop {
        let _ = c
            .heartbeat(HeartbeatRequest {
                run_id: run_id.clone(),
                session: session.clone(),
            })
            .await;
        let mut stream = c
            .fetch_task(FetchTaskRequest {
                run_id: run_id.clone(),
                session: session.clone(),
                client_id: id,
                after_round: -1,
            })
            .await
            .expect("fetch")
            .into_inner();
        let Some(task_chunk::Part::Header(h)) =
            stream.message().await.expect("task").and_then(|m| m.part)
        else {
            panic!("task without a header");
        };
        while stream.message().await.ok().flatten().is_some() {}
        let kind = task_header::Kind::try_from(h.kind).unwrap();
        let header = |error: String, eval: Option<EvalResult>, num_samples| ResultHeader {
            run_id: run_id.clone(),
            session: session.clone(),
            client_id: id,
            round: h.round,
            round_token: h.round_token.clone(),
            num_samples,
            payload_len: 0,
            error,
            eval,
        };
        let msg = |h: ResultHeader| {
            vec![ResultChunk {
                part: Some(result_chunk::Part::Header(h)),
            }]
        };
        match kind {
            task_header::Kind::Train => {
                let _ = c
                    .submit_result(tokio_stream::iter(msg(header("no data".into(), None, 0))))
                    .await;
            }
            task_header::Kind::Evaluate => {
                let h = header(String::new(), Some(eval), eval.samples);
                return c
                    .submit_result(tokio_stream::iter(msg(h)))
                    .await
                    .map(|_| ());
            }
            task_header::Kind::Done => panic!("the run ended before an evaluation"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

#[test]
fn impossible_evaluation_results_are_refused() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("run");
    let mut server = fedsim();
    server.args([
        "server",
        SCENARIO,
        "--listen",
        "127.0.0.1:0",
        "--out",
        s(&out),
        "--set",
        "rounds=1",
        "--set",
        "participation={kind=\"full\"}",
        "--set",
        "events={}",
        "--set",
        "eval.federated={every=1}",
        "--set",
        "deploy.min_clients=12",
    ]);
    let mut server = Proc::spawn("server", server, &dir.join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    let mut honest = fedsim();
    honest.args([
        "client",
        "--server",
        &format!("http://{addr}"),
        "--ids",
        "3-11",
        "--threads",
        "1",
    ]);
    let mut honest = Proc::spawn("honest", honest, &dir.join("honest.log"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bad = |samples, accuracy, loss| EvalResult {
        samples,
        accuracy,
        loss,
    };
    // Client 0 claims an accuracy of 1.5, client 1 a negative loss, client 2 a test set of 999
    // samples (its real one is a quarter of its partition, which the coordinator knows).
    let answers = rt.block_on(async {
        let a = tokio::spawn(hostile_evaluator(addr.clone(), 0, 15, bad(15, 1.5, 0.3)));
        let b = tokio::spawn(hostile_evaluator(addr.clone(), 1, 15, bad(15, 0.5, -1.0)));
        let c = tokio::spawn(hostile_evaluator(addr.clone(), 2, 999, bad(999, 0.5, 0.3)));
        [a.await.unwrap(), b.await.unwrap(), c.await.unwrap()]
    });
    for (answer, what) in answers
        .iter()
        .zip(["accuracy 1.5", "loss -1", "sample count 999"])
    {
        let status = answer.as_ref().expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert!(
            status.message().contains(what),
            "{what}: {}",
            status.message()
        );
    }
    server.wait_ok(Duration::from_secs(120));
    honest.wait_ok(Duration::from_secs(30));
    let evals = summary(&out)["client_evals"].as_array().unwrap().clone();
    let ids: Vec<u64> = evals
        .iter()
        .map(|e| e["client"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (3..12).collect::<Vec<u64>>(),
        "only the honest results count"
    );
    assert_eq!(metrics(&out)[0]["fed_missing"], 3.0);
}
