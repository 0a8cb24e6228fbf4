//! `fedsim launch`: a coordinator and P client processes on this machine, with logs under the run
//! directory and the scenario's real faults (`[[deploy.faults]]`) injected.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use fedsim_engine::Scenario;
use fedsim_types::rng::{Purpose, stream};
use rand::seq::index;

/// What to launch.
#[derive(Debug, Clone)]
pub(crate) struct LaunchPlan {
    /// The resolved scenario.
    pub(crate) scenario: Scenario,
    /// Client processes.
    pub(crate) processes: usize,
    /// Run directory.
    pub(crate) out: PathBuf,
    /// Extra arguments for `fedsim server` (e.g. TLS, tokens).
    pub(crate) server_args: Vec<String>,
    /// Extra arguments for every `fedsim client`.
    pub(crate) client_args: Vec<String>,
    /// The data root (absolute), passed on to every process as `--data-dir`.
    pub(crate) data_dir: PathBuf,
}

/// Contiguous id ranges `a-b` splitting `clients` ids over `processes` processes.
pub(crate) fn id_ranges(clients: usize, processes: usize) -> Vec<(usize, usize)> {
    let p = processes.clamp(1, clients.max(1));
    (0..p)
        .map(|k| (k * clients / p, (k + 1) * clients / p))
        .filter(|(a, b)| b > a)
        .map(|(a, b)| (a, b - 1))
        .collect()
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// Allocator settings for the processes the launcher starts (each unless already set in the
/// environment): no transparent huge pages, commit arena memory on demand. Ten processes on one machine
/// otherwise each keep tens of MiB they do not use (`bench/grpc/launch_memory.sh`: total PSS 2.30x the
/// simulator's without them, 2.11x with them). Freed memory goes back to the system after mimalloc's
/// default delay: returning it at once (`MIMALLOC_PURGE_DELAY=0`) made every task's buffers fault in
/// again and cost ≈ 10 ms of each round's training phase (0.066 → 0.047–0.055 s on `mnist_2nn_iid`)
/// for ≈ 70 MiB summed over 12 processes (`docs/BENCHMARKS.md`).
const ALLOCATOR_ENV: [(&str, &str); 2] = [
    ("MIMALLOC_ALLOW_THP", "0"),
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
];

fn spawn_logged(exe: &Path, args: &[String], log: &Path) -> Result<Child> {
    let f = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let f2 = f.try_clone()?;
    let mut cmd = Command::new(exe);
    for (key, value) in ALLOCATOR_ENV {
        if std::env::var_os(key).is_none() {
            cmd.env(key, value);
        }
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(f)
        .stderr(f2)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))
}

fn completed_rounds(out: &Path) -> u64 {
    std::fs::read_to_string(out.join("metrics.jsonl")).map_or(0, |t| {
        t.lines().filter(|l| !l.trim().is_empty()).count() as u64
    })
}

struct ClientProc {
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    restart_at: Option<Instant>,
}

/// Runs the launch plan to the end of the run. Returns when the coordinator exits.
pub(crate) fn launch(plan: &LaunchPlan) -> Result<()> {
    let exe = std::env::current_exe().context("locating the fedsim binary")?;
    let logs = plan.out.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let scenario_file = plan.out.join("launch-scenario.toml");
    std::fs::write(&scenario_file, plan.scenario.to_toml())
        .with_context(|| format!("writing {}", scenario_file.display()))?;
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let tls = plan
        .server_args
        .iter()
        .any(|a| a == "--tls-cert" || a.starts_with("--tls-cert="));
    let url = format!("{}://{listen}", if tls { "https" } else { "http" });

    let mut server_args: Vec<String> = vec![
        "server".into(),
        scenario_file.display().to_string(),
        "--listen".into(),
        listen.clone(),
        "--out".into(),
        plan.out.display().to_string(),
        "--data-dir".into(),
        plan.data_dir.display().to_string(),
    ];
    server_args.extend(plan.server_args.iter().cloned());
    let mut server = spawn_logged(&exe, &server_args, &logs.join("server.log"))?;
    let mut server_restarts = 0;

    let mut clients: Vec<ClientProc> = id_ranges(plan.scenario.clients, plan.processes)
        .into_iter()
        .enumerate()
        .map(|(k, (a, b))| {
            let mut args = vec![
                "client".into(),
                "--server".into(),
                url.clone(),
                "--ids".into(),
                format!("{a}-{b}"),
                "--data".into(),
                "partition".into(),
                "--threads".into(),
                "1".into(),
                "--data-dir".into(),
                plan.data_dir.display().to_string(),
            ];
            args.extend(plan.client_args.iter().cloned());
            ClientProc {
                args,
                log: logs.join(format!("client-{k}.log")),
                child: None,
                restart_at: None,
            }
        })
        .collect();
    for c in &mut clients {
        c.child = Some(spawn_logged(&exe, &c.args, &c.log)?);
    }
    eprintln!(
        "launched coordinator on {listen} and {} client processes; logs in {}",
        clients.len(),
        logs.display()
    );

    let mut applied = vec![false; plan.scenario.deploy.faults.len()];
    let status = loop {
        if let Some(st) = server.try_wait()? {
            break st;
        }
        let done = completed_rounds(&plan.out);
        for (i, f) in plan.scenario.deploy.faults.iter().enumerate() {
            if applied[i] || done + 1 < f.round {
                continue;
            }
            applied[i] = true;
            if f.kill_clients > 0.0 {
                let n =
                    ((f.kill_clients * clients.len() as f64).round() as usize).min(clients.len());
                let mut rng = stream(plan.scenario.seed, Purpose::Events, f.round, i as u64);
                for k in index::sample(&mut rng, clients.len(), n) {
                    if let Some(mut ch) = clients[k].child.take() {
                        let _ = ch.kill();
                        let _ = ch.wait();
                        eprintln!(
                            "fault: killed client process {k} ({}) in round {}",
                            clients[k].args[4], f.round
                        );
                    }
                    clients[k].restart_at = f
                        .restart_clients_after_s
                        .map(|s| Instant::now() + Duration::from_secs_f64(s));
                }
            }
            if f.kill_server {
                let _ = server.kill();
                let _ = server.wait();
                eprintln!(
                    "fault: killed the coordinator in round {}; restarting with --resume",
                    f.round
                );
                server_restarts += 1;
                let mut args = server_args.clone();
                args.push("--resume".into());
                args.push(plan.out.display().to_string());
                server = spawn_logged(
                    &exe,
                    &args,
                    &logs.join(format!("server-resumed-{server_restarts}.log")),
                )?;
            }
        }
        for c in &mut clients {
            if c.restart_at.is_some_and(|t| Instant::now() >= t) {
                c.restart_at = None;
                c.child = Some(spawn_logged(
                    &exe,
                    &c.args,
                    &c.log.with_extension("restarted.log"),
                )?);
                eprintln!("fault: restarted client process ({})", c.args[4]);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Clients exit on their own when the run is done; give them a moment, then stop the rest.
    let deadline = Instant::now() + Duration::from_secs(10);
    for c in &mut clients {
        if let Some(ch) = c.child.as_mut() {
            while Instant::now() < deadline && ch.try_wait()?.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            if ch.try_wait()?.is_none() {
                let _ = ch.kill();
                let _ = ch.wait();
            }
        }
    }
    if !status.success() {
        // After a `kill_server` fault the failing coordinator is the last resumed one.
        let log = if server_restarts == 0 {
            logs.join("server.log")
        } else {
            logs.join(format!("server-resumed-{server_restarts}.log"))
        };
        bail!("the coordinator failed ({status}); see {}", log.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_client_once() {
        assert_eq!(id_ranges(10, 4), vec![(0, 1), (2, 4), (5, 6), (7, 9)]);
        assert_eq!(id_ranges(3, 10), vec![(0, 0), (1, 1), (2, 2)]);
        assert_eq!(id_ranges(5, 1), vec![(0, 4)]);
    }
}
