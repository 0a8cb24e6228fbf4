//! End-to-end tests of heterogeneous participation through the `fedsim` binary.

use std::path::Path;
use std::process::{Command, Output};

fn fedsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fedsim"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run fedsim")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "fedsim failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const BERNOULLI: &[&str] = &[
    "--set",
    "participation={kind=\"bernoulli\", p={dist=\"uniform\", low=0.02, high=0.3}}",
    "--set",
    "rounds=15",
    "--set",
    "eval.every=5",
];

#[test]
fn a_recorded_trace_replays_the_same_participants_into_another_strategy() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace.csv");
    let a = tmp.path().join("fedau");
    let mut args = vec![
        "sim",
        "configs/quickstart.toml",
        "-q",
        "--out",
        a.to_str().unwrap(),
    ];
    args.extend_from_slice(BERNOULLI);
    args.extend_from_slice(&[
        "--set",
        "strategy={kind=\"fedau\"}",
        "--record-participation",
        trace.to_str().unwrap(),
    ]);
    ok(&fedsim(&args));
    let replay = format!(
        "participation={{kind=\"trace\", path=\"{}\"}}",
        trace.display()
    );
    let mut ids = Vec::new();
    for strategy in [
        "{kind=\"fedavg\", weighting=\"uniform\"}",
        "{kind=\"mifa\"}",
    ] {
        let out = tmp.path().join(format!("replay{}", ids.len()));
        ok(&fedsim(&[
            "sim",
            "configs/quickstart.toml",
            "-q",
            "--out",
            out.to_str().unwrap(),
            "--set",
            "rounds=15",
            "--set",
            "eval.every=5",
            "--set",
            &replay,
            "--set",
            &format!("strategy={strategy}"),
        ]));
        ids.push(
            metrics(&out)
                .iter()
                .map(|r| r["participant_ids"].clone())
                .collect::<Vec<_>>(),
        );
    }
    let original: Vec<_> = metrics(&a)
        .iter()
        .map(|r| r["participant_ids"].clone())
        .collect();
    assert!(
        original
            .iter()
            .any(|p| p.as_array().is_some_and(|v| !v.is_empty()))
    );
    assert_eq!(ids[0], original, "replay into FedAvg");
    assert_eq!(ids[1], original, "replay into MIFA");
}

#[test]
fn fedau_reports_its_weights_and_participation_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = vec![
        "sim",
        "configs/quickstart.toml",
        "-q",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(BERNOULLI);
    args.extend_from_slice(&["--set", "strategy={kind=\"fedau\", cutoff=50}"]);
    ok(&fedsim(&args));
    let m = metrics(&out);
    assert!(
        m.iter()
            .any(|r| r["fedau_weight_max"].as_f64().is_some_and(|w| w > 1.0)),
        "weights grow past 1"
    );
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    let counts = s["participation_counts"].as_array().unwrap();
    assert_eq!(counts.len(), 100);
    let total: u64 = counts.iter().map(|c| c.as_u64().unwrap()).sum();
    let reported: u64 = m.iter().map(|r| r["participants"].as_u64().unwrap()).sum();
    assert_eq!(total, reported);
    assert!(
        m.last().unwrap()["class_accuracy"]
            .as_array()
            .unwrap()
            .len()
            == 10
    );
}

#[test]
fn scripted_events_shape_each_round() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(&fedsim(&[
        "sim",
        "configs/quickstart.toml",
        "-q",
        "--out",
        out.to_str().unwrap(),
        "--set",
        "rounds=8",
        "--set",
        "participation={kind=\"full\"}",
        "--set",
        "events.dropout=0.2",
        "--set",
        "events.outages=[{start=3, end=5, clients=\"0-49\"}]",
        "--set",
        "events.leaves=[{start=7, clients=\"90-99\"}]",
    ]));
    let m = metrics(&out);
    let sel: Vec<u64> = m.iter().map(|r| r["selected"].as_u64().unwrap()).collect();
    assert_eq!(sel, vec![100, 100, 50, 50, 100, 100, 90, 90]);
    for r in &m {
        let dropped = r["dropped"].as_f64().unwrap_or(0.0) as u64;
        assert_eq!(
            r["participants"].as_u64().unwrap() + dropped,
            r["selected"].as_u64().unwrap()
        );
        assert!(dropped > 0, "20% dropout drops someone");
        let ids = r["participant_ids"].as_array().unwrap();
        if (3..5).contains(&r["round"].as_u64().unwrap()) {
            assert!(
                ids.iter().all(|c| c.as_u64().unwrap() >= 50),
                "outage hides 0-49"
            );
        }
    }
}

#[test]
fn stragglers_past_the_deadline_are_dropped_or_report_partial_work() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |partial: bool| {
        let out = tmp.path().join(format!("p{partial}"));
        ok(&fedsim(&[
            "sim",
            "configs/quickstart.toml",
            "-q",
            "--out",
            out.to_str().unwrap(),
            "--set",
            "rounds=3",
            "--set",
            &format!(
                "events.stragglers={{speed={{dist=\"lognormal\", sigma=1.0}}, samples_per_s=200, deadline_s=1.0, partial_work={partial}}}"
            ),
        ]));
        metrics(&out)
    };
    let dropped = run(false);
    let partial = run(true);
    let d: u64 = dropped
        .iter()
        .map(|r| r["participants"].as_u64().unwrap())
        .sum();
    let p: u64 = partial
        .iter()
        .map(|r| r["participants"].as_u64().unwrap())
        .sum();
    assert!(d < 30, "some stragglers miss the deadline");
    assert!(p > d, "partial work keeps some of them");
}
