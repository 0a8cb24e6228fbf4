//! End-to-end tests of the gRPC runtime with real processes on loopback: `fedsim launch` against
//! `fedsim sim` (bit-identical runs), a 200 MB model streamed over TLS, real faults (killed clients,
//! a SIGKILLed and resumed coordinator), TLS with tokens and mutual TLS.

mod grpc_common;

use std::path::Path;
use std::time::Duration;

use fedsim_algorithms::strategy::registry;
use grpc_common::*;

/// Every registered strategy runs on the quickstart scenario with its registry example (see
/// [`equivalence_cases`]); these are the variants on top: weightings, robust aggregators, attacks, FRL
/// with mask_by = "abs". Covering another variant is one more line: (scenario file, `--set` overrides).
const VARIANTS: &[(&str, &[&str])] = &[
    // FedAvg, weighted by samples (McMahan), as the scenario file has it.
    ("configs/quickstart.toml", &[]),
    // FedAvg, mean over participants.
    (
        "configs/quickstart.toml",
        &["strategy.weighting=\"uniform\""],
    ),
    ("configs/quickstart.toml", &["strategy.server_lr=0.5"]),
    // FedAvg summed over participants and divided by N (FedAU's "average all").
    (
        "configs/quickstart.toml",
        &[
            "participation={kind=\"bernoulli\", p=0.2}",
            "strategy.weighting=\"all_clients\"",
        ],
    ),
    // FedAU under Bernoulli participation.
    (
        "configs/quickstart.toml",
        &[
            "participation={kind=\"bernoulli\", p=0.2}",
            "strategy={kind=\"fedau\"}",
        ],
    ),
    // FedAvg weighted by known participation probabilities (an oracle baseline).
    (
        "configs/quickstart.toml",
        &[
            "participation={kind=\"bernoulli\", p=0.2}",
            "strategy={kind=\"fedavg\", weighting=\"known_probability\"}",
        ],
    ),
    // SCAFFOLD option I.
    (
        "configs/quickstart.toml",
        &["strategy={kind=\"scaffold\", option=1}"],
    ),
    // FRL under the colluding rank-reversal attack (20% malicious), mask by |score|.
    (
        "configs/quickstart.toml",
        &[
            "model={kind=\"supermask_mlp\", hidden=[64], mask_by=\"abs\"}",
            "strategy={kind=\"frl\"}",
            "attack={kind=\"rank_reversal\", fraction=0.2}",
        ],
    ),
    // FedAvg with an oracle trimmed mean against the AGR-tailored attack.
    (
        "configs/quickstart.toml",
        &[
            "strategy.aggregator={kind=\"trimmed_mean\", trim=\"oracle\"}",
            "attack={kind=\"agr_tailored\", fraction=0.2}",
        ],
    ),
    // Oracle Multi-Krum against the full-knowledge AGR-tailored attack of half the clients, with the
    // reference code's redraw of malicious-majority rounds.
    (
        "configs/quickstart.toml",
        &[
            "strategy.aggregator={kind=\"multi_krum\", f=\"oracle\"}",
            "attack={kind=\"agr_tailored\", fraction=0.5, knowledge=\"full\", redraw_malicious_majority=true}",
        ],
    ),
    // A layer stack with a residual block, group norm and dropout (masks from (seed, round, client,
    // step): the same in both runtimes).
    (
        "configs/quickstart.toml",
        &[
            "model={kind=\"sequential\", layers=[{dense={units=32}}, \"relu\", {residual={layers=[{dense={units=32}}, {group_norm={groups=4}}]}}, \"relu\", {dropout={p=0.2}}, \"dense\"]}",
        ],
    ),
    // FRL on a layer stack made a supermask model (scores over the dense weights; the GroupNorm stays
    // at scale 1, shift 0).
    (
        "configs/quickstart.toml",
        &[
            "model={kind=\"sequential\", layers=[{dense={units=32, bias=false}}, {group_norm={groups=4}}, \"relu\", {dense={bias=false}}], supermask={keep=0.4}}",
            "strategy={kind=\"frl\"}",
        ],
    ),
    // FedAvg with Multi-Krum against Gaussian noise from 10% of the clients, from round 2.
    (
        "configs/quickstart.toml",
        &[
            "strategy.aggregator={kind=\"multi_krum\", f=2}",
            "attack={kind=\"gaussian\", fraction=0.1, start_round=2}",
        ],
    ),
];

/// Overrides that keep every equivalence run short, and evaluate every round.
const SHORT: &[&str] = &["rounds=6", "eval.every=1"];

/// Every registered strategy with its registry example on the quickstart scenario, then [`VARIANTS`].
fn equivalence_cases() -> Vec<(&'static str, Vec<String>)> {
    let registered = registry::all().iter().map(|e| {
        let mut sets = vec![format!("strategy={}", e.example_inline())];
        sets.extend(e.example_settings.iter().map(|s| s.to_string()));
        ("configs/quickstart.toml", sets)
    });
    let variants = VARIANTS
        .iter()
        .map(|(scenario, sets)| (*scenario, sets.iter().map(|s| s.to_string()).collect()));
    registered.chain(variants).collect()
}

fn sim(scenario: &str, sets: &[&str], out: &Path, log: &Path) {
    let mut args = vec!["sim", scenario, "--quiet", "--out", s(out)];
    for o in sets {
        args.extend(["--set", o]);
    }
    run_ok(&args, log, Duration::from_secs(120));
}

fn launch(
    scenario: &str,
    sets: &[&str],
    processes: usize,
    extra: &[&str],
    out: &Path,
    log: &Path,
) -> String {
    let p = processes.to_string();
    let mut args = vec![
        "launch",
        scenario,
        "--quiet",
        "--processes",
        &p,
        "--out",
        s(out),
    ];
    for o in sets {
        args.extend(["--set", o]);
    }
    args.extend(extra);
    run_ok(&args, log, Duration::from_secs(180))
}

#[test]
fn launch_reproduces_sim_bit_for_bit() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cases = equivalence_cases();
    assert!(cases.len() > registry::all().len());
    for (i, (scenario, overrides)) in cases.iter().enumerate() {
        let sets: Vec<&str> = SHORT
            .iter()
            .copied()
            .chain(overrides.iter().map(String::as_str))
            .collect();
        let what = format!("{scenario} {overrides:?}");
        let (a, b) = (
            tmp.path().join(format!("sim{i}")),
            tmp.path().join(format!("grpc{i}")),
        );
        sim(scenario, &sets, &a, &tmp.path().join(format!("sim{i}.log")));
        launch(
            scenario,
            &sets,
            4,
            &[],
            &b,
            &tmp.path().join(format!("launch{i}.log")),
        );
        assert_same_run(&a, &b, &what);
        assert_eq!(summary(&b)["runtime"], "grpc", "{what}");
        let m = metrics(&b);
        // Real bytes on the wire: at least the model down for every participant, and the model up
        // unless the uplink is compressed (then at least something per participant). FRL ships
        // bit-packed rankings both ways: less than a dense model, but not nothing.
        let params = summary(&b)["num_params"].as_u64().unwrap();
        let compressed = overrides.iter().any(|o| o.contains("compressor"));
        if overrides.iter().any(|o| o.contains("frl")) {
            for r in &m {
                let n = r["participants"].as_u64().unwrap();
                for key in ["bytes_up", "bytes_down"] {
                    let v = r[key].as_u64().unwrap();
                    assert!(v > 0 && v < n.max(1) * params * 4, "{what}: {key} {v}");
                }
            }
            continue;
        }
        for r in &m {
            let n = r["participants"].as_u64().unwrap();
            let up = r["bytes_up"].as_u64().unwrap();
            if compressed {
                assert!(up >= n, "{what}: bytes_up");
            } else {
                assert!(up >= n * params * 4, "{what}: bytes_up");
            }
            assert!(
                r["bytes_down"].as_u64().unwrap() >= n * params * 4,
                "{what}: bytes_down"
            );
        }
    }
}

/// With no memory for received updates, the coordinator spools every update that arrives while
/// another is held (to disk, decoded when folded in): the run is still bit-identical.
#[test]
fn updates_spooled_to_disk_give_the_same_run() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let sets = [
        "rounds=4",
        "eval.every=1",
        "participation={kind=\"full\"}",
        "clients=20",
    ];
    let (a, b) = (tmp.path().join("sim"), tmp.path().join("grpc"));
    sim(
        "configs/quickstart.toml",
        &sets,
        &a,
        &tmp.path().join("sim.log"),
    );
    launch(
        "configs/quickstart.toml",
        &sets,
        5,
        &["--server-arg=--update-memory-mib=0"],
        &b,
        &tmp.path().join("launch.log"),
    );
    assert_same_run(&a, &b, "spooled updates");
    let spooled: f64 = metrics(&b)
        .iter()
        .map(|r| r["updates_spooled"].as_f64().unwrap())
        .sum();
    assert!(spooled > 0.0, "no update was spooled");
    assert!(!b.join("spool").exists(), "spool files left behind");
}

/// A model of over 200 MB (53.6 M parameters) goes down and up through the real service, over TLS,
/// in chunks, and the run still matches the simulator.
#[test]
fn launch_streams_a_200_mb_model_over_tls() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path(), &["127.0.0.1", "localhost"]);
    let sets = [
        "rounds=1",
        "clients=1",
        "data.features=1000",
        "data.samples_per_client=20",
        "data.test_samples=20",
        "model.hidden=[53000]",
        "train.batch_size=10",
    ];
    let (a, b) = (tmp.path().join("sim"), tmp.path().join("grpc"));
    sim(
        "configs/quickstart.toml",
        &sets,
        &a,
        &tmp.path().join("sim.log"),
    );
    let server_args = [
        format!("--server-arg=--tls-cert={}", s(&pki.server_cert)),
        format!("--server-arg=--tls-key={}", s(&pki.server_key)),
        format!("--client-arg=--ca-cert={}", s(&pki.ca)),
    ];
    let extra: Vec<&str> = server_args.iter().map(String::as_str).collect();
    let start = std::time::Instant::now();
    launch(
        "configs/quickstart.toml",
        &sets,
        1,
        &extra,
        &b,
        &tmp.path().join("launch.log"),
    );
    eprintln!(
        "200 MB round trip over TLS: {:.1} s",
        start.elapsed().as_secs_f64()
    );
    assert_same_run(&a, &b, "200 MB model");
    let params = summary(&b)["num_params"].as_u64().unwrap();
    assert!(
        params * 4 >= 200_000_000,
        "the model has only {params} parameters"
    );
    let m = metrics(&b);
    assert!(m[0]["bytes_down"].as_u64().unwrap() >= params * 4);
    assert!(m[0]["bytes_up"].as_u64().unwrap() >= params * 4);
    let server_log = std::fs::read_to_string(b.join("logs/server.log")).unwrap();
    assert!(
        !server_log.contains("INSECURE"),
        "TLS was not used:\n{server_log}"
    );
}

/// 30% of the client processes are SIGKILLed at the start of round 3: the coordinator drops their
/// clients from the open round (heartbeat timeout), logs it, and finishes the run with the rest.
#[test]
fn killed_client_processes_are_dropped_and_the_run_completes() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // Twenty local epochs: rounds long enough (tens of ms) that the launcher, which polls the metrics
    // every 50 ms, kills the processes well before the run ends.
    let sets = [
        "rounds=12",
        "train.epochs=20",
        "clients=20",
        "participation={kind=\"full\"}",
        "deploy.heartbeat_timeout_s=2",
        "deploy.faults=[{round=3, kill_clients=0.3}]",
    ];
    let log = launch(
        "configs/quickstart.toml",
        &sets,
        10,
        &[],
        &out,
        &tmp.path().join("launch.log"),
    );
    assert_eq!(
        log.matches("fault: killed client process").count(),
        3,
        "{log}"
    );
    // A killed process's connection closes: its clients leave the run at once (dropped from the round
    // they were in, if one was open).
    let server_log = std::fs::read_to_string(out.join("logs/server.log")).unwrap();
    assert!(
        server_log.contains("its clients left the run"),
        "the server log does not show the killed clients leaving:\n{server_log}"
    );
    let m = metrics(&out);
    assert_eq!(m.len(), 12);
    assert_eq!(m[0]["participants"], 20);
    let last = m.last().unwrap();
    assert_eq!(last["participants"], 14, "6 clients were killed: {last}");
    assert_eq!(summary(&out)["rounds"], 12);
}

/// Updates the coordinator refuses as late leave their clients' state as it was. Clients 1 and 4 train
/// in round 3 but submit after its deadline (`late_clients`), so the coordinator refuses them; a
/// simulation where the same clients are selected and then dropped in round 3 (`events.drops`) must end
/// with the same model, round by round. Had a client kept the state of its refused update (EF21's g_i,
/// SCAFFOLD's c_i, FedSpeed's h_i), its later updates, and so the model, would differ.
#[test]
fn late_updates_leave_client_state_untouched() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    for kind in ["ef21", "scaffold", "fedspeed"] {
        let entry = registry::all()
            .iter()
            .find(|e| e.kind == kind)
            .unwrap_or_else(|| panic!("{kind} is not registered"));
        let spec = entry.example_spec().expect("example");
        assert!(
            spec.capabilities().client_state,
            "{kind} keeps client state"
        );
        let mut sets = vec![
            "rounds=5".to_string(),
            "clients=10".to_string(),
            "participation={kind=\"full\"}".to_string(),
            "eval.every=1".to_string(),
            "round.deadline_s=4".to_string(),
            format!("strategy={}", entry.example_inline()),
        ];
        sets.extend(entry.example_settings.iter().map(|s| s.to_string()));
        let (a, b) = (
            tmp.path().join(format!("sim-{kind}")),
            tmp.path().join(format!("grpc-{kind}")),
        );
        let mut sim_sets = sets.clone();
        sim_sets.push("events.drops=[{start=3, end=4, clients=\"1,4\"}]".into());
        let sim_sets: Vec<&str> = sim_sets.iter().map(String::as_str).collect();
        sim(
            "configs/quickstart.toml",
            &sim_sets,
            &a,
            &tmp.path().join(format!("sim-{kind}.log")),
        );
        let mut launch_sets = sets.clone();
        launch_sets.push("deploy.faults=[{round=3, late_clients=\"1,4\"}]".into());
        let launch_sets: Vec<&str> = launch_sets.iter().map(String::as_str).collect();
        launch(
            "configs/quickstart.toml",
            &launch_sets,
            4,
            &[],
            &b,
            &tmp.path().join(format!("launch-{kind}.log")),
        );
        let m = metrics(&b);
        let ids: Vec<u64> = m[2]["participant_ids"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        assert!(
            !ids.contains(&1) && !ids.contains(&4) && ids.len() == 8,
            "{kind}: round 3 of the launch: {}",
            m[2]
        );
        let logs = std::fs::read_dir(b.join("logs"))
            .unwrap()
            .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
            .collect::<String>();
        assert!(
            logs.contains("fault: submitting after the round's deadline"),
            "{kind}: the late clients did submit"
        );
        assert!(logs.contains("result not accepted"), "{kind}: {logs}");
        assert_same_run(&a, &b, kind);
    }
}

/// Killed client processes that restart rejoin the run (new session) and take part again: the ids of
/// a killed process are released when its connection closes, not only after the heartbeat timeout.
/// Twenty local epochs make a round last long enough (tens of ms) that the rounds after the fault
/// outlast the restart.
#[test]
fn restarted_client_processes_rejoin() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let sets = [
        "rounds=40",
        "train.epochs=20",
        "clients=20",
        "participation={kind=\"full\"}",
        "deploy.heartbeat_timeout_s=2",
        "deploy.faults=[{round=3, kill_clients=0.3, restart_clients_after_s=0.2}]",
    ];
    let log = launch(
        "configs/quickstart.toml",
        &sets,
        10,
        &[],
        &out,
        &tmp.path().join("launch.log"),
    );
    assert_eq!(
        log.matches("fault: restarted client process").count(),
        3,
        "{log}"
    );
    let restarted: Vec<_> = std::fs::read_dir(out.join("logs"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("restarted"))
        .collect();
    assert_eq!(restarted.len(), 3);
    for e in restarted {
        let text = std::fs::read_to_string(e.path()).unwrap();
        assert!(text.contains("joined"), "{text}");
        assert!(text.contains("run finished"), "{text}");
    }
    let m = metrics(&out);
    assert_eq!(m.len(), 40);
    assert_eq!(m.last().unwrap()["participants"], 20);
}

/// The coordinator is SIGKILLed in round 6 and restarted with `--resume`: the run ends with the same
/// model, participants and accuracies as an uninterrupted run. Also with server state to restore
/// (FedAU's per-client participation statistics, a Markov participation chain).
#[test]
fn coordinator_killed_and_resumed_ends_with_the_same_model() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 2] = [
        &[],
        &[
            "strategy={kind=\"fedau\"}",
            "participation={kind=\"markov\", p=0.2}",
        ],
    ];
    for (i, case) in cases.iter().enumerate() {
        let mut sets = vec!["rounds=12", "eval.every=1"];
        sets.extend(case.iter());
        let (a, b) = (
            tmp.path().join(format!("sim{i}")),
            tmp.path().join(format!("grpc{i}")),
        );
        sim(
            "configs/quickstart.toml",
            &sets,
            &a,
            &tmp.path().join(format!("sim{i}.log")),
        );
        sets.push("deploy.faults=[{round=6, kill_server=true}]");
        let log = launch(
            "configs/quickstart.toml",
            &sets,
            4,
            &[],
            &b,
            &tmp.path().join(format!("launch{i}.log")),
        );
        assert!(log.contains("fault: killed the coordinator"), "{log}");
        let resumed = std::fs::read_to_string(b.join("logs/server-resumed-1.log")).unwrap();
        assert!(resumed.contains("resuming from checkpoint"), "{resumed}");
        // The scenarios differ only in the fault list, which the simulator does not use.
        assert_same_run(&a, &b, &format!("coordinator crash and resume {case:?}"));
    }
}

/// An asynchronous run (FedBuff on synthetic data, clients of different speeds so that tasks finish
/// out of start order, with federated evaluation) whose coordinator is SIGKILLed once it has made five
/// server updates (`round` of a fault counts server updates, the rows of `metrics.jsonl`) and
/// restarted with `--resume`: the tasks in flight at the checkpoint are handed out again, and the run
/// ends with the simulator's model, participants and accuracies. Enough server updates that the run
/// cannot end before the launcher sees the fifth.
#[test]
fn asynchronous_coordinator_killed_and_resumed_ends_with_the_same_model() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let mut sets = vec![
        "rounds=40",
        "eval.every=5",
        "partition.local_test_fraction=0.2",
        "eval.federated={every=5}",
        "strategy={kind=\"fedbuff\", concurrency=12, buffer_size=4}",
        "system={speed={dist=\"lognormal\", sigma=1}, samples_per_s=2000, upload_bps={dist=\"uniform\", low=5e4, high=2e5}, latency_s=0.05, jitter=0.3}",
    ];
    let (a, b) = (tmp.path().join("sim"), tmp.path().join("grpc"));
    sim(
        "configs/quickstart.toml",
        &sets,
        &a,
        &tmp.path().join("sim.log"),
    );
    sets.push("deploy.faults=[{round=6, kill_server=true}]");
    let log = launch(
        "configs/quickstart.toml",
        &sets,
        4,
        &[],
        &b,
        &tmp.path().join("launch.log"),
    );
    assert!(log.contains("fault: killed the coordinator"), "{log}");
    let resumed = std::fs::read_to_string(b.join("logs/server-resumed-1.log")).unwrap();
    assert!(resumed.contains("resuming from checkpoint"), "{resumed}");
    assert!(resumed.contains("in_flight=Some("), "{resumed}");
    assert_same_run(&a, &b, "asynchronous coordinator crash and resume");
}

/// TLS on loopback with per-client tokens and mutual TLS: wrong tokens and missing client
/// certificates are refused (clear status on the client, a line in the server log); the honest
/// clients finish a run identical to the simulator's.
#[test]
fn tls_tokens_and_mutual_tls_on_loopback() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_pki(dir, &["127.0.0.1", "localhost"]);
    let tokens = dir.join("tokens.txt");
    std::fs::write(
        &tokens,
        "# hospital A hosts 0-4, hospital B 5-9\n0-4 token-aaaa-1111\n5-9 token-bbbb-2222\n",
    )
    .unwrap();
    let token_b = dir.join("token-b.txt");
    std::fs::write(&token_b, "token-bbbb-2222\n").unwrap();
    let sets = [
        "rounds=3",
        "clients=10",
        "participation={kind=\"full\"}",
        "eval.every=1",
    ];
    let out = dir.join("grpc");
    let mut cmd = fedsim();
    cmd.args([
        "server",
        "configs/quickstart.toml",
        "--listen",
        "127.0.0.1:0",
        "--out",
        s(&out),
    ])
    .args([
        "--tls-cert",
        s(&pki.server_cert),
        "--tls-key",
        s(&pki.server_key),
    ])
    .args(["--client-ca", s(&pki.ca), "--tokens", s(&tokens)]);
    for o in sets {
        cmd.args(["--set", o]);
    }
    let mut server = Proc::spawn("server", cmd, &dir.join("server.log"));
    let addr = listening_addr(&server, Duration::from_secs(30));
    let url = format!("https://{addr}");
    let client = |ids: &str, auth: &[&str], mtls: bool, name: &str| {
        let mut c = fedsim();
        c.args([
            "client",
            "--server",
            &url,
            "--ids",
            ids,
            "--ca-cert",
            s(&pki.ca),
        ])
        .args(["--reconnect-timeout", "3"])
        .args(auth);
        if mtls {
            c.args(["--cert", s(&pki.client_cert), "--key", s(&pki.client_key)]);
        }
        Proc::spawn(name, c, &dir.join(format!("{name}.log")))
    };

    // A wrong token, and a valid token used for ids it does not cover: refused, with the status.
    let mut wrong = client("0-4", &["--token", "not-the-token"], true, "wrong-token");
    assert!(!wrong.wait(Duration::from_secs(30)).success());
    let text = wrong.output();
    assert!(
        text.contains("Unauthenticated") && text.contains("token is not valid for client 0"),
        "{text}"
    );
    let mut other = client("0-4", &["--token-file", s(&token_b)], true, "other-token");
    assert!(!other.wait(Duration::from_secs(30)).success());
    assert!(
        other.output().contains("Unauthenticated"),
        "{}",
        other.output()
    );
    // No client certificate: the TLS handshake is refused.
    let mut anon = client(
        "0-4",
        &["--token", "token-aaaa-1111"],
        false,
        "no-client-cert",
    );
    assert!(!anon.wait(Duration::from_secs(30)).success());
    assert!(
        wait_until(Duration::from_secs(5), || server
            .output()
            .contains("join refused")),
        "no refusal in the server log:\n{}",
        server.output()
    );

    let mut a = client("0-4", &["--token", "token-aaaa-1111"], true, "client-a");
    let mut b = client("5-9", &["--token-file", s(&token_b)], true, "client-b");
    server.wait_ok(Duration::from_secs(60));
    a.wait_ok(Duration::from_secs(15));
    b.wait_ok(Duration::from_secs(15));
    assert!(!server.output().contains("INSECURE"));

    let sim_out = dir.join("sim");
    sim(
        "configs/quickstart.toml",
        &sets,
        &sim_out,
        &dir.join("sim.log"),
    );
    assert_same_run(&sim_out, &out, "TLS with tokens");
}

/// Writes a tiny CIFAR-10 in the original binary format (records of a label byte and 3072 pixel
/// bytes): five training batches of `per_batch` records and a test batch of as many.
fn tiny_cifar10(dir: &Path, per_batch: usize) {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 56) as u8
    };
    let names = (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()]);
    for name in names {
        let mut bytes = Vec::with_capacity(per_batch * 3073);
        for r in 0..per_batch {
            let label = (r % 10) as u8;
            bytes.push(label);
            // Class-dependent brightness, so there is something to learn.
            bytes.extend((0..3072).map(|_| byte() / 2 + label * 12));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Random crops and flips (`train.augment`) on CIFAR-10 binary data with a small conv stack: the
/// same run in the simulator and over gRPC, and a different one from the run without augmentation;
/// `fedsim export` of the coordinator's checkpoint gives the run's model.bin.
#[test]
fn augmented_image_training_is_the_same_in_sim_and_launch() {
    let _serial = serial();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("cifar");
    std::fs::create_dir_all(&data).unwrap();
    tiny_cifar10(&data, 40);
    let data_set = format!("data={{kind=\"cifar10\", dir=\"{}\"}}", data.display());
    let base = [
        "rounds=3",
        "eval.every=1",
        "clients=10",
        "partition={scheme=\"iid\"}",
        "participation.fraction=0.5",
        "model={kind=\"sequential\", layers=[{conv2d={out=4, kernel=3, padding=1}}, \"relu\", {max_pool={size=4}}, \"flatten\", \"dense\"]}",
        "train={lr=0.05, batch_size=8, epochs=1, augment={crop_padding=4, hflip=true}}",
        &data_set,
    ];
    let (a, b, plain) = (
        tmp.path().join("sim"),
        tmp.path().join("grpc"),
        tmp.path().join("plain"),
    );
    let log = |n: &str| tmp.path().join(format!("{n}.log"));
    sim("configs/quickstart.toml", &base, &a, &log("sim"));
    launch("configs/quickstart.toml", &base, 3, &[], &b, &log("launch"));
    assert_same_run(&a, &b, "augmented cifar10");
    // The coordinator's checkpoint holds the final global model: exported with the run's own
    // scenario.toml it is the run's model.bin.
    let exported = tmp.path().join("from_checkpoint.bin");
    run_ok(
        &[
            "export",
            s(&b.join("scenario.toml")),
            "--model",
            s(&b.join("checkpoint.bin")),
            "-o",
            s(&exported),
        ],
        &log("export"),
        Duration::from_secs(60),
    );
    assert_eq!(
        std::fs::read(&exported).unwrap(),
        std::fs::read(b.join("model.bin")).unwrap()
    );
    let mut no_aug = base.to_vec();
    no_aug[6] = "train={lr=0.05, batch_size=8, epochs=1}";
    sim("configs/quickstart.toml", &no_aug, &plain, &log("plain"));
    assert_ne!(
        summary(&a)["final_model_hash"],
        summary(&plain)["final_model_hash"],
        "augmentation changes training"
    );
}
