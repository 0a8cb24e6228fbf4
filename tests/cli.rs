//! End-to-end tests of the `fedsim` binary: real scenarios, real output files, and what a user sees
//! at the default log level (client and coordinator messages, `--help`, the README's command table).

mod grpc_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use grpc_common::{Proc, make_pki, s, wait_until};

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

/// The development copy of the data sets: `$FEDSIM_DATA` (a relative value is taken from the workspace
/// root, as `.ci/run` sets `FEDSIM_DATA=../shared/data`), else `../shared/data`.
fn dev_data_root() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var_os("FEDSIM_DATA").filter(|v| !v.is_empty()) {
        Some(d) => workspace.join(d),
        None => workspace.join("../shared/data"),
    }
}

fn mnist_dir() -> Option<PathBuf> {
    let p = dev_data_root().join("mnist");
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

/// `fedsim ARGS` at the default log level (no `RUST_LOG`), as a user runs it.
fn fedsim_default_log(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fedsim"));
    c.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    c
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_client_without_a_coordinator_says_why_and_gives_up() {
    let url = "http://127.0.0.1:1";
    let o = fedsim_default_log(&[
        "client",
        "--server",
        url,
        "--id",
        "0",
        "--reconnect-timeout",
        "1",
    ])
    .output()
    .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for want in [
        "connecting to the coordinator at http://127.0.0.1:1",
        "cannot reach the coordinator at http://127.0.0.1:1",
        "Connection refused",
        "retrying in",
        "giving up in",
        "gave up after retrying for 1 s (--reconnect-timeout)",
    ] {
        assert!(err.contains(want), "`{want}` missing:\n{err}");
    }
    assert!(
        !err.contains("Some(") && !err.contains("ConnectError("),
        "debug text:\n{err}"
    );
}

/// A LIBSVM file with 5 features (the quickstart scenario has 60).
fn five_feature_file(dir: &Path) -> PathBuf {
    let path = dir.join("five.svm");
    let lines: Vec<String> = (0..30)
        .map(|i| {
            let feats: Vec<String> = (1..=5).map(|j| format!("{j}:{}", (i * j) % 7)).collect();
            format!("{} {}", i % 3, feats.join(" "))
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}

#[test]
fn the_coordinator_counts_joins_and_a_client_whose_updates_all_fail_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let port = free_port().to_string();
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let out = dir.join("run");
    let server = Proc::spawn(
        "server",
        fedsim_default_log(&[
            "server",
            "configs/quickstart.toml",
            "--listen",
            &listen,
            "--out",
            s(&out),
            "--set",
            "clients=3",
            "--set",
            "participation={kind=\"full\"}",
            "--set",
            "rounds=500",
        ]),
        &dir.join("server.log"),
    );
    let waiting = |k: usize| {
        let line = format!("waiting for clients: {k} of 3 joined");
        assert!(
            wait_until(Duration::from_secs(60), || server.output().contains(&line)),
            "no `{line}` at the default log level:\n{}",
            server.output()
        );
    };
    waiting(0);
    let good = Proc::spawn(
        "good client",
        fedsim_default_log(&["client", "--server", &url, "--id", "0"]),
        &dir.join("good.log"),
    );
    waiting(1);
    assert!(
        wait_until(Duration::from_secs(30), || good
            .output()
            .contains(&format!("joined the coordinator at {url}"))),
        "{}",
        good.output()
    );
    // Two clients hosted on data with the wrong number of features: no update can ever count.
    let data = format!("libsvm:{}", s(&five_feature_file(dir)));
    let mut bad = Proc::spawn(
        "bad client",
        fedsim_default_log(&["client", "--server", &url, "--ids", "1-2", "--data", &data]),
        &dir.join("bad.log"),
    );
    let status = bad.wait(Duration::from_secs(60));
    let text = bad.output();
    assert!(!status.success(), "{text}");
    for want in [
        "3 updates in a row failed for the same reason",
        "values, expected",
        "--data",
    ] {
        assert!(text.contains(want), "`{want}` missing:\n{text}");
    }
}

#[test]
fn a_tls_name_mismatch_suggests_domain() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_pki(dir, &["coordinator.example"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let url = format!("https://{listen}");
    let mut server = Proc::spawn(
        "server",
        fedsim_default_log(&[
            "server",
            "configs/quickstart.toml",
            "--listen",
            &listen,
            "--out",
            s(&dir.join("run")),
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
            "--set",
            "clients=1",
            "--set",
            "rounds=2",
        ]),
        &dir.join("server.log"),
    );
    assert!(
        wait_until(Duration::from_secs(60), || server
            .output()
            .contains("waiting for clients: 0 of 1 joined")),
        "{}",
        server.output()
    );
    let client = |extra: &[&str]| {
        let mut args = vec!["client", "--server", &url, "--id", "0"];
        args.extend(["--ca-cert", s(&pki.ca), "--reconnect-timeout", "10"]);
        args.extend(extra);
        fedsim_default_log(&args).output().unwrap()
    };
    let o = client(&[]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not valid for name") && err.contains("--domain"),
        "{err}"
    );
    // With the certificate's name the same client joins and finishes the run.
    let o = client(&["--domain", "coordinator.example"]);
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("joined the coordinator"));
    server.wait_ok(Duration::from_secs(60));
}

fn write_run(dir: &Path, values: &[f64]) {
    std::fs::create_dir_all(dir).unwrap();
    let lines: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{{\"round\": {}, \"train_loss\": {v}}}", i + 1))
        .collect();
    std::fs::write(dir.join("metrics.jsonl"), lines.join("\n")).unwrap();
}

#[test]
fn plot_writes_svg_only_and_says_where() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_run(&a, &[2.0, 1.0, 0.5, 0.3, 0.2]);
    write_run(&b, &[1.5, 0.9, 0.4, 0.25, 0.1]);
    let png = tmp.path().join("loss.png");
    let o = fedsim(&[
        "plot",
        s(&a),
        s(&b),
        "--metric",
        "train_loss",
        "-o",
        s(&png),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SVG only") && err.contains("loss.png"),
        "{err}"
    );
    assert!(!png.exists(), "no file written under a PNG name");

    let svg = tmp.path().join("loss.svg");
    let o = fedsim(&[
        "plot",
        s(&a),
        s(&b),
        "--metric",
        "train_loss",
        "--log-y",
        "-o",
        s(&svg),
    ]);
    ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("wrote {}", svg.display())
    );
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
}

/// Splits a command line written with single quotes (`--set 'a={b="c"}'`) into arguments.
fn split_shell(line: &str) -> Vec<String> {
    let (mut args, mut cur, mut quoted, mut any) = (Vec::new(), String::new(), false, false);
    for ch in line.chars() {
        match ch {
            '\'' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    args.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        args.push(cur);
    }
    args
}

#[test]
fn the_replay_hint_of_sim_help_works() {
    let help = fedsim(&["sim", "--help"]);
    ok(&help);
    let text = String::from_utf8_lossy(&help.stdout).replace('\n', " ");
    let hint = text
        .split_once("replay it with `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(hint, _)| hint.to_string())
        .unwrap_or_else(|| panic!("no replay hint in `sim --help`:\n{text}"));
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("trace.csv");
    let (rec, rep) = (tmp.path().join("rec"), tmp.path().join("rep"));
    ok(&fedsim(&[
        "sim",
        "configs/quickstart.toml",
        "-q",
        "--set",
        "rounds=3",
        "--record-participation",
        s(&trace),
        "--out",
        s(&rec),
    ]));
    // The quickstart scenario has uniform participation: the hint must work on it.
    let mut args = vec![
        "sim".to_string(),
        "configs/quickstart.toml".into(),
        "-q".into(),
        "--set".into(),
        "rounds=3".into(),
        "--out".into(),
        s(&rep).into(),
    ];
    args.extend(split_shell(&hint.replace("FILE", s(&trace))));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&fedsim(&args));
    let ids = |d: &Path| -> Vec<serde_json::Value> {
        metrics(d)
            .iter()
            .map(|m| m["participant_ids"].clone())
            .collect()
    };
    assert_eq!(ids(&rec), ids(&rep));
}

/// The options `--help` shows, each as its spellings (`["-q", "--quiet"]`), `--help` left out.
fn help_flags(help: &str) -> Vec<Vec<String>> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .map(|l| {
            l.split_whitespace()
                .map(|w| w.trim_end_matches(','))
                .take_while(|w| w.starts_with('-'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|f| !f.iter().any(|w| w == "--help"))
        .collect()
}

#[test]
fn the_readme_lists_every_flag_of_every_command() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    for cmd in [
        "sim",
        "server",
        "client",
        "launch",
        "plot",
        "eval",
        "export",
        "data fetch",
        "data list",
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push("--help");
        let o = fedsim(&args);
        ok(&o);
        let flags = help_flags(&String::from_utf8_lossy(&o.stdout));
        // The `data` commands have one flag; every other command at least three.
        let least = if cmd.starts_with("data ") { 1 } else { 3 };
        assert!(flags.len() >= least, "{cmd}: {flags:?}");
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `fedsim {cmd} ")))
            .unwrap_or_else(|| panic!("README has no `fedsim {cmd}` row in its command table"));
        for spellings in flags {
            // The flag itself, not a longer one it begins (`--id` in `--ids`).
            let listed = spellings.iter().any(|flag| {
                row.match_indices(&format!("[{flag}"))
                    .chain(row.match_indices(&format!(" {flag}")))
                    .chain(row.match_indices(&format!("({flag}")))
                    .any(|(i, m)| {
                        !row[i + m.len()..]
                            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
                    })
            });
            assert!(
                listed,
                "README's `fedsim {cmd}` row lacks {spellings:?}: {row}"
            );
        }
    }
}

/// Runs the quickstart scenario quietly into `out` with `--set` overrides.
fn quickstart_run(out: &Path, sets: &[&str]) {
    let mut args = vec!["sim", "configs/quickstart.toml", "-q", "--out", s(out)];
    for o in sets {
        args.extend(["--set", o]);
    }
    ok(&fedsim(&args));
}

/// `fedsim eval` on a run's model.bin gives the run's own final test accuracy and loss, as text or
/// JSON; a model of another architecture is refused with both parameter counts.
#[test]
fn eval_reproduces_the_runs_final_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    quickstart_run(&out, &["rounds=3", "eval.every=1"]);
    let model = out.join("model.bin");
    let o = fedsim(&[
        "eval",
        "configs/quickstart.toml",
        "--model",
        s(&model),
        "--json",
    ]);
    ok(&o);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let sum = summary(&out);
    assert_eq!(r["accuracy"], sum["final_test_accuracy"], "{r}");
    assert_eq!(r["loss"], sum["final_test_loss"], "{r}");
    assert_eq!(r["samples"], 5000);
    assert_eq!(r["class_accuracy"].as_array().map(Vec::len), Some(10));
    let text = fedsim(&["eval", "configs/quickstart.toml", "--model", s(&model)]);
    ok(&text);
    assert!(String::from_utf8_lossy(&text.stdout).contains("accuracy"));
    let wrong = fedsim(&[
        "eval",
        "configs/quickstart.toml",
        "--model",
        s(&model),
        "--set",
        "model={kind=\"mlp\", hidden=[8]}",
    ]);
    assert!(!wrong.status.success());
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(
        err.contains("4554 parameters") && err.contains("578"),
        "{err}"
    );
}

/// The summary of a run of a layer stack records its parameter count and every layer's shapes.
#[test]
fn the_summary_lists_a_stacks_layers() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    quickstart_run(
        &out,
        &[
            "rounds=1",
            "model={kind=\"sequential\", layers=[{dense={units=32}}, \"relu\", \"dense\"]}",
        ],
    );
    let sum = summary(&out);
    // 60 features -> 32 -> 10 classes: (60 + 1) * 32 + (32 + 1) * 10.
    assert_eq!(sum["num_params"], 2282);
    let layers: Vec<&str> = sum["model_layers"]
        .as_array()
        .expect("model_layers")
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(layers.len(), 3, "{layers:?}");
    assert!(layers[0].contains("dense") && layers[0].contains("60") && layers[0].contains("32"));
    assert!(layers[2].contains("10"), "{layers:?}");
}

/// A run writes `model.safetensors` beside `model.bin`; `fedsim eval` reads either with the same
/// result; `fedsim export` converts both ways without changing a value; `model.init_from` starts a
/// run from either file (the summary records the parameters' hash), and a file for another
/// architecture is refused, naming the tensor and both shapes.
#[test]
fn model_files_export_import_and_init_from() {
    const STACK: &str =
        "model={kind=\"sequential\", layers=[{dense={units=32}}, \"relu\", \"dense\"]}";
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    quickstart_run(&out, &["rounds=2", "eval.every=1", STACK]);
    let (bin, st) = (out.join("model.bin"), out.join("model.safetensors"));
    assert!(st.exists(), "a run writes model.safetensors");
    let eval = |model: &Path| {
        let o = fedsim(&[
            "eval",
            "configs/quickstart.toml",
            "--model",
            s(model),
            "--set",
            STACK,
            "--json",
        ]);
        ok(&o);
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
        (r["accuracy"].clone(), r["loss"].clone())
    };
    let sum = summary(&out);
    assert_eq!(
        eval(&bin),
        (
            sum["final_test_accuracy"].clone(),
            sum["final_test_loss"].clone()
        )
    );
    assert_eq!(eval(&st), eval(&bin));

    // safetensors -> model.bin gives back the run's model.bin byte for byte.
    let back = tmp.path().join("back.bin");
    ok(&fedsim(&[
        "export",
        "configs/quickstart.toml",
        "--model",
        s(&st),
        "-o",
        s(&back),
        "--set",
        STACK,
    ]));
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&bin).unwrap());
    let exported = tmp.path().join("x.safetensors");
    ok(&fedsim(&[
        "export",
        "configs/quickstart.toml",
        "--model",
        s(&bin),
        "-o",
        s(&exported),
        "--set",
        STACK,
    ]));
    assert_eq!(eval(&exported), eval(&bin));

    for file in [&bin, &st] {
        let again = tmp.path().join("again");
        let init = format!("model.init_from=\"{}\"", file.display());
        quickstart_run(&again, &["rounds=1", STACK, &init]);
        let s2 = summary(&again);
        assert_eq!(s2["init_from"]["sha256"], sum["final_model_hash"], "{s2}");
        std::fs::remove_dir_all(&again).unwrap();
    }

    let wider = "model={kind=\"sequential\", layers=[{dense={units=16}}, \"relu\", \"dense\"]}";
    let init = format!("model.init_from=\"{}\"", st.display());
    let o = fedsim(&[
        "sim",
        "configs/quickstart.toml",
        "-q",
        "--out",
        s(&tmp.path().join("bad")),
        "--set",
        wider,
        "--set",
        &init,
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("model.safetensors")
            && err.contains("`0.weight` has shape [32, 60]")
            && err.contains("[16, 60]"),
        "{err}"
    );
    let o = fedsim(&[
        "sim",
        "configs/quickstart.toml",
        "-q",
        "--set",
        "model.init_from=3",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("model.init_from"));
}
