//! Asynchronous aggregation end to end: FedBuff and FedAsync on the virtual clock in `fedsim sim`
//! (any thread count) and `fedsim launch` (real gRPC, one process per client group) give the same
//! model bit for bit; staleness and the clock are recorded; online intervals end tasks; what is not
//! supported yet is refused with a clear error.

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
        let sets = ["rounds=10", "eval.every=5", SYSTEM, strategy];
        let (one, two, grpc) = (
            tmp.path().join(format!("sim1_{i}")),
            tmp.path().join(format!("sim2_{i}")),
            tmp.path().join(format!("grpc_{i}")),
        );
        let log = tmp.path().join(format!("{i}.log"));
        run_ok(&sim_args(&sets, &one, &["--threads", "1"]), &log, Duration::from_secs(120));
        run_ok(&sim_args(&sets, &two, &["--threads", "2"]), &log, Duration::from_secs(120));
        assert_same_run(&one, &two, &format!("{strategy}: 1 vs 2 threads"));
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
fn unsupported_combinations_are_refused_with_the_key_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let sets = [
        "strategy={kind=\"fedbuff\"}",
        "partition.local_test_fraction=0.2",
        "eval.federated={every=5}",
    ];
    let err = run_err(&sim_args(&sets, &out, &[]));
    assert!(
        err.contains("eval.federated") && err.contains("asynchronous"),
        "{err}"
    );
    let err = run_err(&sim_args(
        &["strategy={kind=\"fedbuff\", buffer_size=0}"],
        &out,
        &[],
    ));
    assert!(err.contains("strategy.buffer_size"), "{err}");
}
