//! `fedsim`: the command-line front end of the federated-learning simulator and runtime.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fedsim_core::Scenario;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Federated-learning simulator and runtime.
#[derive(Debug, Parser)]
#[command(name = "fedsim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario in this process: virtual clients train in parallel on all cores.
    Sim(SimArgs),
}

/// Options shared by every command that runs a scenario.
#[derive(Debug, Args)]
struct ScenarioArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// Output directory (default: runs/<scenario>-<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override a scenario key, e.g. `--set train.lr=0.1 --set data.dir=/data/mnist` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

impl ScenarioArgs {
    fn load(&self) -> Result<Scenario> {
        let mut overrides = self.overrides.clone();
        if let Some(seed) = self.seed {
            overrides.push(format!("seed={seed}"));
        }
        Scenario::load(&self.scenario, &overrides).map_err(anyhow::Error::from)
    }

    fn out_dir(&self, scenario: &Scenario) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            Path::new("runs").join(format!("{}-{}", scenario.name, utc_timestamp()))
        })
    }
}

#[derive(Debug, Args)]
struct SimArgs {
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar and no final report on stdout.
    #[arg(long, short)]
    quiet: bool,
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sim(args) => sim(args),
    }
}

fn sim(args: SimArgs) -> Result<()> {
    let scenario = args.scenario.load()?;
    let out = args.scenario.out_dir(&scenario);
    let opts = fedsim_sim::SimOptions {
        threads: args.threads,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let summary =
        fedsim_sim::run(scenario, Some(&out), &opts).with_context(|| "simulation failed")?;
    if !args.quiet {
        print_summary(&summary, &out);
    }
    Ok(())
}

fn print_summary(s: &fedsim_core::report::Summary, out: &Path) {
    let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |a| format!("{:.2}%", a * 100.0));
    println!(
        "scenario        {} ({}, {} runtime)",
        s.scenario, s.strategy, s.runtime
    );
    println!("rounds          {}", s.rounds);
    println!("final accuracy  {}", pct(s.final_test_accuracy));
    println!(
        "best accuracy   {} (round {})",
        pct(s.best_test_accuracy),
        s.best_round.map_or("-".into(), |r| r.to_string())
    );
    for (t, r) in &s.rounds_to_target {
        println!(
            "rounds to {t:<5} {}",
            r.map_or("not reached".into(), |r| r.to_string())
        );
    }
    if let Some(l) = s.final_train_loss {
        println!("train loss      {l:.4}");
    }
    println!("wall time       {:.1} s", s.total_wall_s);
    println!("model hash      {}", s.final_model_hash);
    println!("results         {}", out.display());
}

/// Current UTC time as `YYYYmmdd-HHMMSS`, without a date-time dependency.
fn utc_timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
