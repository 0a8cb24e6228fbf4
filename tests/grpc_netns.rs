//! Across machines: the coordinator runs in one Linux network namespace and two client processes in
//! two others, joined by veth pairs on a bridge in a private /24 (10.213.0.0/24, inside these
//! namespaces only), with TLS and per-client tokens. The run must match the simulator's.
//!
//! Needs root and `ip` (Debian's iproute2). Where namespaces cannot be created the test prints why
//! and passes.

mod grpc_common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use grpc_common::*;

const SERVER_IP: &str = "10.213.0.1";

fn say(msg: &str) {
    // Straight to the process's stderr, past the test harness's capture, so a skip is always seen.
    let _ = writeln!(std::io::stderr(), "{msg}");
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Network namespaces of this test, deleted when dropped (also when the test fails).
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// `srv` with a bridge at 10.213.0.1/24, and `clients` namespaces `cK` at 10.213.0.(10+K)/24,
    /// each joined to the bridge by a veth pair.
    fn create(tag: &str, clients: usize) -> Result<Self, String> {
        let mut ns = Namespaces { names: Vec::new() };
        let srv = format!("{tag}-srv");
        ns.add(&srv)?;
        ip(&["-n", &srv, "link", "set", "lo", "up"])?;
        ip(&["-n", &srv, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &srv,
            "addr",
            "add",
            &format!("{SERVER_IP}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &srv, "link", "set", "br0", "up"])?;
        for k in 0..clients {
            let c = format!("{tag}-c{k}");
            ns.add(&c)?;
            let v = format!("v{k}");
            ip(&[
                "-n", &srv, "link", "add", &v, "type", "veth", "peer", "name", "eth0", "netns", &c,
            ])?;
            ip(&["-n", &srv, "link", "set", &v, "master", "br0"])?;
            ip(&["-n", &srv, "link", "set", &v, "up"])?;
            ip(&[
                "-n",
                &c,
                "addr",
                "add",
                &format!("10.213.0.{}/24", 10 + k),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &c, "link", "set", "eth0", "up"])?;
            ip(&["-n", &c, "link", "set", "lo", "up"])?;
        }
        Ok(ns)
    }

    fn add(&mut self, name: &str) -> Result<(), String> {
        let _ = ip(&["netns", "del", name]); // a leftover of an earlier crashed run
        ip(&["netns", "add", name])?;
        self.names.push(name.to_string());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            if let Err(e) = ip(&["netns", "del", n]) {
                say(&format!(
                    "warning: could not delete network namespace {n}: {e}"
                ));
            }
        }
    }
}

/// `fedsim ARGS` inside network namespace `ns` (`ip netns exec` replaces itself with fedsim).
fn fedsim_in(ns: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_fedsim")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

fn skip(why: &str) {
    say(&format!(
        "SKIPPED grpc_netns: {why} (needs root and iproute2's `ip` able to create network namespaces)"
    ));
}

#[test]
fn coordinator_and_clients_in_separate_network_namespaces_with_tls() {
    let _serial = serial();
    // Effective uid, from the second field of `Uid:` in /proc/self/status.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(str::to_string);
    if euid.as_deref() != Some("0") {
        return skip("not running as root");
    }
    if Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        return skip("no `ip` binary (apt-get install -y iproute2)");
    }
    let tag = format!("fs{}", std::process::id());
    let ns = match Namespaces::create(&tag, 2) {
        Ok(ns) => ns,
        Err(e) => return skip(&format!("cannot set up network namespaces: {e}")),
    };
    let srv = ns.names[0].clone();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pki = make_pki(dir, &[SERVER_IP, "fedsim-coordinator"]);
    let tokens = dir.join("tokens.txt");
    std::fs::write(&tokens, "0-4 site-a-token-1\n5-9 site-b-token-2\n").unwrap();
    let sets = [
        "rounds=3",
        "clients=10",
        "participation={kind=\"full\"}",
        "eval.every=1",
    ];
    let out = dir.join("grpc");

    let mut cmd = fedsim_in(&srv);
    cmd.args(["server", "configs/quickstart.toml", "--out", s(&out)])
        .args(["--listen", &format!("{SERVER_IP}:50051")])
        .args([
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
        ])
        .args(["--tokens", s(&tokens)]);
    for o in sets {
        cmd.args(["--set", o]);
    }
    let mut server = Proc::spawn("server (namespace srv)", cmd, &dir.join("server.log"));
    listening_addr(&server, Duration::from_secs(30));
    let url = format!("https://{SERVER_IP}:50051");
    let mut clients = Vec::new();
    for (k, (ids, token)) in [("0-4", "site-a-token-1"), ("5-9", "site-b-token-2")]
        .into_iter()
        .enumerate()
    {
        let mut c = fedsim_in(&ns.names[k + 1]);
        c.args(["client", "--server", &url, "--ids", ids, "--token", token])
            .args([
                "--ca-cert",
                s(&pki.ca),
                "--threads",
                "1",
                "--reconnect-timeout",
                "20",
            ]);
        clients.push(Proc::spawn(
            &format!("client {ids} (namespace c{k})"),
            c,
            &dir.join(format!("client-{k}.log")),
        ));
    }
    server.wait_ok(Duration::from_secs(90));
    for c in &mut clients {
        c.wait_ok(Duration::from_secs(20));
    }
    let log = server.output();
    assert!(
        log.contains("peer=10.213.0.10:"),
        "no join from namespace c0:\n{log}"
    );
    assert!(
        log.contains("peer=10.213.0.11:"),
        "no join from namespace c1:\n{log}"
    );
    assert!(!log.contains("INSECURE"), "{log}");

    let sim_out = dir.join("sim");
    let mut args = vec![
        "sim",
        "configs/quickstart.toml",
        "--quiet",
        "--out",
        s(&sim_out),
    ];
    for o in sets {
        args.extend(["--set", o]);
    }
    run_ok(&args, &dir.join("sim.log"), Duration::from_secs(60));
    assert_same_run(&sim_out, &out, "across network namespaces");
    drop(clients);
    drop(server);
    drop(ns);
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&tag),
        "namespaces left behind"
    );
}
