//! The virtual clock of `[system]` end to end: a round's virtual duration from the clients' profiles and
//! the exact message sizes, transfers that push a client past the deadline, time-to-target in virtual
//! seconds, and the same clock in `fedsim sim` and `fedsim launch`.

mod grpc_common;

use std::path::Path;
use std::time::Duration;

use grpc_common::*;

const QUICK: &str = "configs/quickstart.toml";

fn sim(sets: &[&str], out: &Path) {
    let mut args = vec!["sim", QUICK, "--quiet", "--out", s(out)];
    for o in sets {
        args.extend(["--set", o]);
    }
    run_ok(&args, &out.with_extension("log"), Duration::from_secs(120));
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` missing in {v}"))
}

/// Every client has the same profile and work (5 steps of 10 samples), so every round lasts
/// latency + broadcast / download + 50 samples / speed + update / upload, with the sizes the run
/// itself reports.
#[test]
fn a_round_lasts_latency_transfers_and_work() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    sim(
        &[
            "rounds=4",
            "eval.every=1",
            "eval.targets=[0.1]",
            "train={lr=0.1, batch_size=10, steps=5}",
            "system={samples_per_s=100, download_bps=1e5, upload_bps=5e4, latency_s=0.25}",
        ],
        &out,
    );
    let m = metrics(&out);
    let mut clock = 0.0;
    for r in &m {
        let n = num(r, "participants");
        let (down, up) = (num(r, "bytes_down") / n, num(r, "bytes_up") / n);
        let want = 0.25 + down / 1e5 + 50.0 / 100.0 + up / 5e4;
        let got = num(r, "virtual_round_s");
        assert!(
            (got - want).abs() < 1e-9,
            "round {}: {got} vs {want}",
            r["round"]
        );
        clock += got;
        assert!((num(r, "virtual_time_s") - clock).abs() < 1e-9);
    }
    let sum = summary(&out);
    assert!((num(&sum, "virtual_time_s") - clock).abs() < 1e-9);
    // The target's virtual time is the clock at the first evaluated round that reached it.
    let first = m
        .iter()
        .find(|r| r["test_accuracy"].as_f64().is_some_and(|a| a >= 0.1))
        .expect("the 10% target is reached");
    assert_eq!(
        sum["virtual_time_to_target"]["0.1"],
        first["virtual_time_s"]
    );
}

/// A trace gives client 0 an upload of 1 kB/s: its update (tens of kB) cannot arrive before the 5 s
/// deadline, so it is dropped every round, and every round lasts until the deadline.
#[test]
fn a_slow_uplink_misses_the_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("profiles.csv");
    let mut rows = String::from("client,samples_per_s,download_bps,upload_bps,latency_s\n");
    for c in 0..100 {
        let up = if c == 0 { 1e3 } else { 1e7 };
        rows.push_str(&format!("{c},1000,1e7,{up},0.01\n"));
    }
    std::fs::write(&trace, rows).unwrap();
    let out = tmp.path().join("run");
    let system = format!("system={{trace=\"{}\", deadline_s=5}}", trace.display());
    sim(
        &["rounds=3", "participation={kind=\"full\"}", &system],
        &out,
    );
    for r in metrics(&out) {
        let ids: Vec<u64> = r["participant_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(
            !ids.contains(&0),
            "client 0 reported in round {}",
            r["round"]
        );
        assert_eq!(ids.len(), 99);
        assert_eq!(num(&r, "virtual_round_s"), 5.0);
    }
}

#[test]
fn launch_keeps_the_same_virtual_clock_as_sim() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "rounds=4",
        "system={speed={dist=\"lognormal\", sigma=1}, samples_per_s=2000, download_bps={dist=\"lognormal\", median=2e5, sigma=1}, upload_bps={dist=\"uniform\", low=5e4, high=2e5}, latency_s=0.05, jitter=0.3, deadline_s=1.5, partial_work=true}",
    ];
    let (a, b) = (tmp.path().join("sim"), tmp.path().join("grpc"));
    sim(&sets, &a);
    let mut args = vec![
        "launch",
        QUICK,
        "--quiet",
        "--processes",
        "4",
        "--out",
        s(&b),
    ];
    for o in &sets {
        args.extend(["--set", o]);
    }
    run_ok(
        &args,
        &tmp.path().join("launch.log"),
        Duration::from_secs(180),
    );
    assert_same_run(&a, &b, "virtual clock");
    let (ma, mb) = (metrics(&a), metrics(&b));
    let mut cut = 0;
    for (ra, rb) in ma.iter().zip(&mb) {
        assert_eq!(ra["virtual_round_s"], rb["virtual_round_s"]);
        assert_eq!(ra["virtual_time_s"], rb["virtual_time_s"]);
        cut += usize::from(num(ra, "virtual_round_s") == 1.5);
    }
    // Heavy-tailed profiles against a 1.5 s deadline: some rounds run into it.
    assert!(cut > 0, "no round reached the deadline: {ma:?}");
}

/// Clients 50–99 are online for the first half virtual second only: in round 1 the selected ones go
/// offline before they finish and do not report, and later rounds select among clients 0–49 alone.
#[test]
fn clients_go_offline_on_the_virtual_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let online = tmp.path().join("online.csv");
    let mut rows = String::from("client,start_s,end_s\n");
    for c in 50..100 {
        rows.push_str(&format!("{c},0,0.5\n"));
    }
    std::fs::write(&online, rows).unwrap();
    let out = tmp.path().join("run");
    let system = format!(
        "system={{samples_per_s=100, online=\"{}\"}}",
        online.display()
    );
    sim(&["rounds=4", &system], &out);
    let m = metrics(&out);
    for r in &m {
        let ids: Vec<u64> = r["participant_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert!(ids.iter().all(|&c| c < 50), "round {}: {ids:?}", r["round"]);
        assert!(num(r, "virtual_round_s") > 0.5);
    }
    // Round 1 selects from all 100 (some of 50–99 among them, then dropped); later rounds select
    // among the 50 online ones only, so nobody is dropped.
    assert!(num(&m[0], "dropped") > 0.0);
    for r in &m[1..] {
        assert!(r["dropped"].is_null(), "round {}", r["round"]);
        assert_eq!(r["participants"], r["selected"]);
    }
}
