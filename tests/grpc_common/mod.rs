//! Helpers shared by the gRPC end-to-end tests (`tests/grpc_*.rs`): running the real `fedsim` binary
//! with bounded waits, killing every child on failure, reading run outputs, making certificates.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub(crate) mod raw;

/// The tests of one file run one at a time: each starts several processes, and the machine may have
/// only two cores (heartbeats must not starve).
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `fedsim` command in the package directory, logging at `info`.
pub(crate) fn fedsim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fedsim"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

/// A child process killed (with its process group, when it leads one) when dropped.
pub(crate) struct Proc {
    /// The child.
    pub(crate) child: Child,
    /// Its name in messages.
    pub(crate) name: String,
    /// File receiving stdout and stderr.
    pub(crate) log: PathBuf,
    group: bool,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr going to `log`.
    pub(crate) fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
        Self::start(name, &mut cmd, log, false)
    }

    /// Starts `cmd` as the leader of a new process group (so its own children die with it).
    pub(crate) fn spawn_group(name: &str, mut cmd: Command, log: &Path) -> Proc {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Self::start(name, &mut cmd, log, true)
    }

    fn start(name: &str, cmd: &mut Command, log: &Path, group: bool) -> Proc {
        let f = File::create(log).expect("create log file");
        let f2 = f.try_clone().expect("clone log file");
        let child = cmd
            .stdout(f)
            .stderr(f2)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
            group,
        }
    }

    /// Waits at most `timeout` for the process to exit; kills it and panics (with its log) otherwise.
    pub(crate) fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > timeout {
                self.kill();
                panic!(
                    "{} did not finish within {timeout:?}; log:\n{}",
                    self.name,
                    tail(&self.log, 60)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit within `timeout`, panicking with the log otherwise.
    pub(crate) fn wait_ok(&mut self, timeout: Duration) {
        let st = self.wait(timeout);
        assert!(
            st.success(),
            "{} failed ({st}); log:\n{}",
            self.name,
            tail(&self.log, 80)
        );
    }

    /// The log so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the process (SIGKILL), and its group when it leads one.
    pub(crate) fn kill(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        } else if self.group {
            // The leader is gone; make sure nothing of its group survives.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The last `n` lines of a file.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `fedsim ARGS` to completion (bounded), panicking with its output on failure.
pub(crate) fn run_ok(args: &[&str], log: &Path, timeout: Duration) -> String {
    let mut cmd = fedsim();
    cmd.args(args);
    let mut p = Proc::spawn_group(&format!("fedsim {}", args.join(" ")), cmd, log);
    p.wait_ok(timeout);
    p.output()
}

/// Polls `cond` every 20 ms for at most `timeout`.
pub(crate) fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// The address a coordinator logged it listens on (`coordinator listening local=ADDR`).
pub(crate) fn listening_addr(server: &Proc, timeout: Duration) -> String {
    let mut addr = None;
    wait_until(timeout, || {
        addr = server
            .output()
            .lines()
            .find(|l| l.contains("coordinator listening"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("local=")))
            .map(str::to_string);
        addr.is_some()
    });
    addr.unwrap_or_else(|| panic!("the coordinator did not start; log:\n{}", server.output()))
}

/// `summary.json` of a run.
pub(crate) fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json"))
        .unwrap_or_else(|e| panic!("{}/summary.json: {e}", dir.display()));
    serde_json::from_str(&text).expect("valid summary.json")
}

/// `metrics.jsonl` of a run.
pub(crate) fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_else(|e| panic!("{}/metrics.jsonl: {e}", dir.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// Asserts that two runs took the same rounds: same final model, and round by round the same
/// participants, accuracies and losses (bit for bit: both runtimes run the same engine).
pub(crate) fn assert_same_run(a: &Path, b: &Path, what: &str) {
    let (sa, sb) = (summary(a), summary(b));
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len(), "{what}: number of rounds differs");
    for (ra, rb) in ma.iter().zip(&mb) {
        for key in [
            "round",
            "selected",
            "participants",
            "participant_ids",
            "test_accuracy",
            "test_loss",
            "train_loss",
            "virtual_time_s",
        ] {
            assert_eq!(
                ra[key], rb[key],
                "{what}: `{key}` differs in round {}",
                ra["round"]
            );
        }
    }
    // Checked after the rounds, so that a difference names the first round where the runs parted.
    assert_eq!(
        sa["final_model_hash"], sb["final_model_hash"],
        "{what}: final model hashes differ"
    );
}

/// PEM files of a test PKI: a CA, a server certificate for `server_names` and a client certificate,
/// both signed by the CA.
pub(crate) struct Pki {
    /// CA certificate.
    pub(crate) ca: PathBuf,
    /// Server certificate.
    pub(crate) server_cert: PathBuf,
    /// Server key.
    pub(crate) server_key: PathBuf,
    /// Client certificate (mutual TLS).
    pub(crate) client_cert: PathBuf,
    /// Client key.
    pub(crate) client_key: PathBuf,
}

/// Makes a fresh PKI in `dir` with rcgen.
pub(crate) fn make_pki(dir: &Path, server_names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fedsim test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().expect("ca key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);

    let names: Vec<String> = server_names.iter().map(|s| s.to_string()).collect();
    let mut sp = CertificateParams::new(names).expect("server params");
    sp.distinguished_name
        .push(DnType::CommonName, "fedsim coordinator");
    sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate().expect("server key");
    let server_cert = sp.signed_by(&server_key, &issuer).expect("server cert");

    let mut cp = CertificateParams::new(vec!["fedsim-client".to_string()]).expect("client params");
    cp.distinguished_name
        .push(DnType::CommonName, "fedsim client");
    cp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_key = KeyPair::generate().expect("client key");
    let client_cert = cp.signed_by(&client_key, &issuer).expect("client cert");

    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write PEM");
        p
    };
    Pki {
        ca: write("ca.pem", ca_cert.pem()),
        server_cert: write("server.pem", server_cert.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client_cert.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
    }
}

/// A path as `&str`.
pub(crate) fn s(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}
