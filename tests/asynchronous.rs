//! Asynchronous aggregation end to end: FedBuff and FedAsync on the virtual clock in `fedsim sim`
//! (any thread count) and `fedsim launch` (real gRPC, one process per client group) give the same
//! model bit for bit, federated evaluation included; staleness and the clock are recorded; online
//! intervals end tasks; lost client processes free their slots.

mod grpc_common;

use std::path::Path;
use std::time::Duration;

use grpc_common::*;

const QUICK: &str = "configs/quickstart.toml";

/// Heavy-tailed devices and networks, so tasks finish far out of start order.
const SYSTEM: &str = "system={speed={dist=\"lognormal\", sigma=1}, samples_per_s=2000, download_bps={dist=\"lognormal\", median=2e5, sigma=1}, upload_bps={dist=\"uniform\", low=5e4, high=2e5}, latency_s=0.05, jitter=0.3}";

fn sim_args<'a>(sets: &[&'a str], out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["sim", QUICK, "--quiet", "--out", s(out)];
    args.extend(extra);
    for o in sets {
        args.extend(["--set", o]);
    }
    args
}

/// Runs fedsim expecting failure; returns its stderr.
fn run_err(args: &[&str]) -> String {
    let out = fedsim().args(args).output().expect("fedsim runs");
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` missing in {v}"))
}

#[test]
fn fedbuff_and_fedasync_give_the_same_model_in_sim_and_launch() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    for (i, strategy) in [
        "strategy={kind=\"fedbuff\", concurrency=12, buffer_size=4}",
        "strategy={kind=\"fedasync\", concurrency=6, alpha=0.6, staleness={kind=\"hinge\", a=0.5, b=2}}",
    ]
    .iter()
    .enumerate()
    {
        let sets = [
            "rounds=10",
            "eval.every=5",
            "partition.local_test_fraction=0.2",
            "eval.federated={every=5}",
            SYSTEM,
            strategy,
        ];
        let one = tmp.path().join(format!("sim1_{i}"));
        let grpc = tmp.path().join(format!("grpc_{i}"));
        let log = tmp.path().join(format!("{i}.log"));
        for threads in ["1", "2", "4"] {
            let out = tmp.path().join(format!("sim{threads}_{i}"));
            run_ok(&sim_args(&sets, &out, &["--threads", threads]), &log, Duration::from_secs(120));
            assert_same_run(&one, &out, &format!("{strategy}: 1 vs {threads} threads"));
        }
        let mut args = vec!["launch", QUICK, "--quiet", "--processes", "4", "--out", s(&grpc)];
        for o in &sets {
            args.extend(["--set", o]);
        }
        run_ok(&args, &log, Duration::from_secs(180));
        assert_same_run(&one, &grpc, &format!("{strategy}: sim vs launch"));

        let m = metrics(&one);
        assert_eq!(m.len(), 10);
        let mut clock = 0.0;
        let mut stale = 0.0f64;
        for r in &m {
            assert!(num(r, "virtual_time_s") >= clock, "the clock runs forward");
            clock = num(r, "virtual_time_s");
            stale = stale.max(num(r, "staleness_max"));
            let k = if i == 0 { 4.0 } else { 1.0 };
            assert_eq!(num(r, "participants"), k, "updates per server update");
        }
        assert!(stale > 0.0, "{strategy}: no update was stale");
        // Federated evaluation every 5 server updates, by the clients on their local test sets.
        for r in [&m[4], &m[9]] {
            assert!(num(r, "fed_clients") > 0.0, "{r}");
            assert!((0.0..=1.0).contains(&num(r, "fed_accuracy")));
        }
        assert_eq!(num(&summary(&one), "virtual_time_s"), clock);
    }
}

/// Clients 50–99 are online for the first 0.3 virtual seconds only: those started then cannot finish
/// (work alone takes longer) and free their slots without an update; nobody of them is applied.
#[test]
fn tasks_of_clients_that_go_offline_never_report() {
    let tmp = tempfile::tempdir().unwrap();
    let online = tmp.path().join("online.csv");
    let mut rows = String::from("client,start_s,end_s\n");
    for c in 50..100 {
        rows.push_str(&format!("{c},0,0.3\n"));
    }
    std::fs::write(&online, rows).unwrap();
    let out = tmp.path().join("run");
    let system = format!(
        "system={{samples_per_s=20, online=\"{}\"}}",
        online.display()
    );
    let sets = [
        "rounds=6",
        "strategy={kind=\"fedbuff\", concurrency=10, buffer_size=5}",
        &system,
    ];
    run_ok(
        &sim_args(&sets, &out, &[]),
        &out.with_extension("log"),
        Duration::from_secs(120),
    );
    let m = metrics(&out);
    let mut dropped = 0.0;
    for r in &m {
        let ids = r["participant_ids"].as_array().unwrap();
        assert!(ids.iter().all(|c| c.as_u64().unwrap() < 50), "{r}");
        dropped += r["dropped"].as_f64().unwrap_or(0.0);
    }
    assert!(dropped > 0.0, "no task was cut short by going offline");
}

#[test]
fn bad_settings_are_refused_with_the_key_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let err = run_err(&sim_args(
        &["strategy={kind=\"fedbuff\", buffer_size=0}"],
        &out,
        &[],
    ));
    assert!(err.contains("strategy.buffer_size"), "{err}");
    let err = run_err(&sim_args(
        &["strategy={kind=\"fedasync\", alpha=1.5}"],
        &out,
        &[],
    ));
    assert!(err.contains("strategy.alpha"), "{err}");
}

/// A FedBuff run over real processes survives losing clients mid-run: one client process is killed
/// (SIGKILL) and another stopped (SIGSTOP, so its connection stays open but it neither heartbeats
/// nor reports). Their tasks end without updates (on disconnection, or after the heartbeat timeout)
/// and the run completes with the other processes.
#[test]
fn an_asynchronous_run_survives_a_killed_and_a_stopped_client() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let out = dir.join("grpc");
    let sets = [
        "rounds=300",
        "eval.every=50",
        "train.epochs=3",
        "strategy={kind=\"fedbuff\", concurrency=16, buffer_size=4}",
        "participation={kind=\"full\"}",
        "deploy.heartbeat_timeout_s=2",
        SYSTEM,
    ];
    let mut cmd = fedsim();
    cmd.args(["server", QUICK, "--listen", "127.0.0.1:0", "--out", s(&out)]);
    for o in sets {
        cmd.args(["--set", o]);
    }
    let mut server = Proc::spawn("server", cmd, &dir.join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    let url = format!("http://{addr}");
    let mut clients: Vec<Proc> = ["0-24", "25-49", "50-74", "75-99"]
        .iter()
        .enumerate()
        .map(|(i, ids)| {
            let mut c = fedsim();
            c.args(["client", "--server", &url, "--ids", ids, "--threads", "1"]);
            Proc::spawn(
                &format!("client{i}"),
                c,
                &dir.join(format!("client{i}.log")),
            )
        })
        .collect();
    let metrics_file = out.join("metrics.jsonl");
    let progressed =
        |n: usize| std::fs::read_to_string(&metrics_file).is_ok_and(|t| t.lines().count() >= n);
    assert!(
        wait_until(Duration::from_secs(60), || progressed(5)),
        "no progress; server log:\n{}",
        server.output()
    );
    clients[1].kill();
    let stopped = clients[2].child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-STOP", &stopped])
        .status()
        .expect("kill -STOP");
    assert!(status.success());
    assert!(
        !progressed(250),
        "the run was nearly over before the clients were lost"
    );
    server.wait_ok(Duration::from_secs(120));
    let _ = std::process::Command::new("kill")
        .args(["-CONT", &stopped])
        .status();
    let m = metrics(&out);
    assert_eq!(m.len(), 300, "every server update was made");
    let late: Vec<u64> = m[m.len() - 20..]
        .iter()
        .flat_map(|r| r["participant_ids"].as_array().unwrap().clone())
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert!(
        late.iter().all(|&c| !(25..75).contains(&c)),
        "a lost client was applied late in the run: {late:?}"
    );
    let log = server.output();
    assert!(
        log.contains("task ended without an update"),
        "no lost task was logged:\n{}",
        tail(&server.log, 40)
    );
}
