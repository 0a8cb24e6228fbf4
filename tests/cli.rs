//! End-to-end tests of the `fedsim` binary: real scenarios, real output files.

use std::path::{Path, PathBuf};
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
        "fedsim failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json");
    serde_json::from_str(&text).expect("valid summary.json")
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

fn mnist_dir() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/mnist");
    if p.join("train-images-idx3-ubyte.gz").exists() {
        Some(p)
    } else {
        eprintln!("skipping: MNIST not found at {}", p.display());
        None
    }
}

#[test]
fn quickstart_writes_every_output_and_learns() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    ok(&fedsim(&[
        "sim",
        "configs/quickstart.toml",
        "--set",
        "rounds=30",
        "--out",
        out.to_str().unwrap(),
    ]));
    let m = metrics(&out);
    assert_eq!(m.len(), 30);
    for key in [
        "round",
        "wall_s",
        "participants",
        "train_loss",
        "test_accuracy",
        "test_loss",
        "bytes_up",
        "bytes_down",
    ] {
        assert!(m[0].get(key).is_some(), "metrics.jsonl lacks `{key}`");
    }
    assert_eq!(m[0]["participants"], 10);
    assert!(m[0]["bytes_up"].as_u64().unwrap() > 0);
    let s = summary(&out);
    let acc = s["final_test_accuracy"].as_f64().unwrap();
    assert!(
        acc > 0.25,
        "quickstart should learn well above chance (10%), got {acc}"
    );
    assert_eq!(s["final_model_hash"].as_str().unwrap().len(), 64);
    assert!(out.join("model.bin").exists());
    let resolved = std::fs::read_to_string(out.join("scenario.toml")).unwrap();
    assert!(
        resolved.contains("rounds = 30"),
        "scenario.toml holds the resolved scenario"
    );
}

#[test]
fn results_do_not_depend_on_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |threads: &str| {
        let out = tmp.path().join(format!("t{threads}"));
        ok(&fedsim(&[
            "sim",
            "configs/quickstart.toml",
            "--set",
            "rounds=6",
            "--set",
            "eval.every=2",
            "--threads",
            threads,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]));
        out
    };
    let (a, b) = (run("1"), run("2"));
    assert_eq!(
        summary(&a)["final_model_hash"],
        summary(&b)["final_model_hash"]
    );
    assert_eq!(
        std::fs::read(a.join("model.bin")).unwrap(),
        std::fs::read(b.join("model.bin")).unwrap()
    );
    for (x, y) in metrics(&a).iter().zip(metrics(&b)) {
        for key in [
            "participant_ids",
            "test_accuracy",
            "test_loss",
            "train_loss",
            "bytes_up",
        ] {
            assert_eq!(x[key], y[key], "`{key}` differs between 1 and 2 threads");
        }
    }
}

#[test]
fn seed_flag_changes_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |seed: &str| {
        let out = tmp.path().join(format!("s{seed}"));
        ok(&fedsim(&[
            "sim",
            "configs/quickstart.toml",
            "--set",
            "rounds=2",
            "--seed",
            seed,
            "-q",
            "--out",
            out.to_str().unwrap(),
        ]));
        summary(&out)["final_model_hash"].clone()
    };
    assert_ne!(run("1"), run("2"));
}

#[test]
fn bad_scenarios_are_rejected_with_the_key_named() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "train.learning_rate=0.1"], "learning_rate"),
        (&["--set", "train.lr=-1"], "train.lr"),
        (
            &["--set", "participation.fraction=3"],
            "participation.fraction",
        ),
        (&["--set", "model.kind=transformer"], "transformer"),
        (&["--set", "rounds=0"], "rounds"),
    ];
    for (extra, needle) in cases {
        let mut args = vec!["sim", "configs/quickstart.toml", "-q", "--out"];
        let out = tmp.path().join("bad");
        args.push(out.to_str().unwrap());
        args.extend_from_slice(extra);
        let o = fedsim(&args);
        assert!(!o.status.success(), "{extra:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle),
            "error for {extra:?} should name `{needle}`: {err}"
        );
    }
    let o = fedsim(&["sim", "configs/does-not-exist.toml"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does-not-exist.toml"));
}

#[test]
fn missing_data_directory_is_named() {
    let o = fedsim(&[
        "sim",
        "configs/mnist_2nn_iid.toml",
        "-q",
        "--set",
        "data.dir=/nonexistent/mnist",
        "--out",
        "/tmp/unused",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/mnist"), "{err}");
}

#[test]
fn mnist_2nn_shortened_run_learns() {
    let Some(dir) = mnist_dir() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mnist");
    let data = format!("data.dir={}", dir.display());
    ok(&fedsim(&[
        "sim",
        "configs/mnist_2nn_iid.toml",
        "--set",
        &data,
        "--set",
        "rounds=5",
        "-q",
        "--out",
        out.to_str().unwrap(),
    ]));
    let acc = summary(&out)["final_test_accuracy"].as_f64().unwrap();
    // FedAvg 2NN IID reaches about 92% after 5 rounds with the recorded learning rate.
    assert!(acc > 0.88, "MNIST 2NN after 5 rounds: {acc}");
}

#[test]
fn an_existing_run_directory_is_refused_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "sim",
            "configs/quickstart.toml",
            "-q",
            "--set",
            "rounds=2",
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(extra);
        fedsim(&args)
    };
    ok(&run(&[]));
    let before = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let again = run(&[]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(
        err.contains("already holds a run") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(out.join("metrics.jsonl")).unwrap(),
        before,
        "nothing overwritten"
    );
    // A stale checkpoint from another run does not survive --force.
    std::fs::write(out.join("checkpoint.bin"), b"stale").unwrap();
    ok(&run(&["--force"]));
    assert!(!out.join("checkpoint.bin").exists());
    assert_eq!(metrics(&out).len(), 2);
}
