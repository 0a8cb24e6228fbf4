//! `fedsim`: the command-line front end of the federated-learning simulator and runtime.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use fedsim_engine::Scenario;

mod evaluate;
mod fetch;
mod launch;
mod plot;

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
    /// Run the gRPC coordinator of a scenario; clients connect with `fedsim client`.
    Server(ServerArgs),
    /// Run a client process hosting one or more clients of a coordinator's run.
    Client(ClientArgs),
    /// Start a coordinator and client processes on this machine (local deployment).
    Launch(LaunchArgs),
    /// Plot a metric of one or more runs (one line per run) as SVG.
    Plot(PlotArgs),
    /// Evaluate a saved model (a run's model.bin or a safetensors file) on a scenario's test set:
    /// accuracy, loss, per class.
    Eval(EvalArgs),
    /// Convert a saved model (model.bin, safetensors or a coordinator's checkpoint.bin) to safetensors
    /// in PyTorch's layout (or to model.bin when the output ends in .bin).
    Export(ExportArgs),
    /// Download data sets into the data root (`fetch`), or show which are there (`list`).
    #[command(subcommand)]
    Data(DataCommand),
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Download data sets, verify their SHA-256 and unpack them where scenarios find them
    /// (`dir = "mnist"`, `path = "libsvm/a9a.txt.gz"`). Resumes interrupted downloads; a data set
    /// already present and verified is left alone.
    Fetch {
        /// Data sets: mnist, fashion_mnist, cifar10, cifar100, svhn, a9a, mushrooms, phishing, w8a,
        /// or libsvm (the four LIBSVM sets).
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        #[command(flatten)]
        data_dir: DataDirArg,
    },
    /// Show the data root and, for every data set `fetch` knows, whether it is present (and
    /// verified), missing or corrupt, and where.
    List {
        #[command(flatten)]
        data_dir: DataDirArg,
    },
}

/// `--data-dir`, shared by every command that reads data.
#[derive(Debug, Args)]
struct DataDirArg {
    /// Data root: the scenario's relative data paths (`dir = "mnist"`) are taken under it; absolute
    /// paths are kept (default: $FEDSIM_DATA, else the user cache directory, ~/.cache/fedsim on
    /// Linux).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// The data root: `--data-dir`, else `FEDSIM_DATA`, else the user cache directory.
    fn root(&self) -> Result<fedsim_data::DataRoot> {
        Ok(fedsim_data::DataRoot::locate(self.data_dir.as_deref())?)
    }

    /// Loads a scenario file with overrides and sets its data root.
    fn load(&self, path: &Path, overrides: &[String]) -> Result<Scenario> {
        let mut scenario = Scenario::load(path, overrides)?;
        scenario.data_root = Some(self.root()?);
        Ok(scenario)
    }
}

#[derive(Debug, Args)]
struct ExportArgs {
    /// Scenario file (TOML) the model was trained with (a run's own `scenario.toml` will do): its
    /// model's layout names the tensors.
    scenario: PathBuf,
    /// The model file: a run's `model.bin` or `model.safetensors`, or `checkpoint.bin`.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Output file: `.safetensors` (PyTorch's layout), or `.bin` for fedsim's model.bin format.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Override a scenario key (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(Debug, Args)]
struct EvalArgs {
    /// Scenario file (TOML) the model was trained with: its data set and model are used.
    scenario: PathBuf,
    /// The model file: a run's `model.bin` or `model.safetensors`, or safetensors from elsewhere in
    /// PyTorch's layout.
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// Override a scenario key, e.g. `--set data.dir=/data/mnist` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Print JSON (model, samples, accuracy, loss, class_accuracy) instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(Debug, Args)]
struct PlotArgs {
    /// Run directories.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Metric (any numeric key of metrics.jsonl), e.g. test_accuracy, train_loss, worst_class_accuracy.
    #[arg(long, default_value = "test_accuracy")]
    metric: String,
    /// x axis: round, wall_s, virtual_time_s (the [system] virtual clock), bytes (cumulative up + down)
    /// or bytes_up.
    #[arg(long, default_value = "round")]
    x: String,
    /// Legend label for each run, in order (default: each run's path without the directories all runs share).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Logarithmic y axis.
    #[arg(long)]
    log_y: bool,
    /// Instead of a metric: the distribution (CDF) of the per-client accuracies of each run's last
    /// federated evaluation (`client_evals` in summary.json).
    #[arg(long, conflicts_with_all = ["metric", "x"])]
    per_client: bool,
    /// Title.
    #[arg(long)]
    title: Option<String>,
    /// Output file; must end in `.svg` (the only format written; convert with e.g. `rsvg-convert`).
    #[arg(short, long, value_name = "FILE.svg")]
    output: PathBuf,
}

#[derive(Debug, Args)]
struct ServerArgs {
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// Address to listen on, e.g. 0.0.0.0:50051.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: std::net::SocketAddr,
    /// Continue the run checkpointed in DIR (also the output directory).
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// TLS certificate chain (PEM); with --tls-key enables TLS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (mutual TLS).
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Token file: lines `IDS TOKEN` (IDS = `*`, `7` or `0-24`); clients must present a matching token.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// MiB of received client updates held in memory (being received or waiting for their turn in
    /// client-id order); beyond it updates are spooled to the run directory. One update always fits.
    #[arg(long, default_value_t = fedsim_server::DEFAULT_UPDATE_MEMORY >> 20)]
    update_memory_mib: usize,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// Coordinator URL: http://HOST:PORT, or https://HOST:PORT with TLS.
    #[arg(long)]
    server: String,
    /// Client id to host.
    #[arg(long, conflicts_with = "ids")]
    id: Option<u32>,
    /// Client ids to host: `0-24`, `3,5,9` or `0-9,20-29`.
    #[arg(long)]
    ids: Option<String>,
    /// Local data: `partition` (each hosted client's partition of the scenario's data), `partition:I`,
    /// or a file: `libsvm:PATH`, `csv:PATH`, `idx:DIR`, or a path (directory = IDX, *.csv = CSV, else LIBSVM).
    #[arg(long, default_value = "partition")]
    data: String,
    /// The local test file for federated evaluation (`eval.federated`), same formats as `--data`; goes
    /// with a `--data` file of the client's own (with `--data partition` the local test sets come from
    /// `partition.local_test_fraction`).
    #[arg(long, value_name = "FILE")]
    test_data: Option<PathBuf>,
    /// Credential token.
    #[arg(long, conflicts_with = "token_file")]
    token: Option<String>,
    /// File holding the credential token.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the coordinator with.
    #[arg(long)]
    ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Server name to verify in the coordinator's certificate (default: the URL's host).
    #[arg(long)]
    domain: Option<String>,
    /// Clients trained at the same time (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Seconds to keep retrying an unreachable coordinator (at start, and after a lost connection)
    /// before exiting with an error.
    #[arg(long, value_name = "SECONDS", default_value_t = 60.0)]
    reconnect_timeout: f64,
    #[command(flatten)]
    data_dir: DataDirArg,
}

#[derive(Debug, Args)]
struct LaunchArgs {
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// Client processes; the scenario's clients are split over them in contiguous id ranges
    /// (default: one process per client, i.e. the scenario's `clients`).
    #[arg(long)]
    processes: Option<usize>,
    /// Extra argument passed to `fedsim server` (repeatable), e.g. `--server-arg=--tokens=tokens.txt`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Extra argument passed to every `fedsim client` (repeatable).
    #[arg(long = "client-arg", allow_hyphen_values = true)]
    client_args: Vec<String>,
    /// No final report on stdout.
    #[arg(long, short)]
    quiet: bool,
}

/// The files of a run directory: their presence means the directory holds a run.
const RUN_FILES: &[&str] = &[
    "metrics.jsonl",
    "summary.json",
    "model.bin",
    "model.safetensors",
    "checkpoint.bin",
    "scenario.toml",
];

/// Options shared by every command that runs a scenario.
#[derive(Debug, Args)]
struct ScenarioArgs {
    /// Scenario file (TOML).
    scenario: PathBuf,
    /// Output directory (default: runs/<scenario>-<UTC timestamp>, made unique). A directory that
    /// already holds a run is refused unless --force.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overwrite the run in --out (its metrics, summary, model and checkpoint are removed first).
    #[arg(long)]
    force: bool,
    /// Override the scenario's seed (the same as `--set seed=N`).
    #[arg(long, value_name = "N")]
    seed: Option<u64>,
    /// Override a scenario key, e.g. `--set train.lr=0.1 --set data.dir=/data/mnist` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    #[command(flatten)]
    data_dir: DataDirArg,
}

impl ScenarioArgs {
    fn load(&self) -> Result<Scenario> {
        let mut overrides = self.overrides.clone();
        if let Some(seed) = self.seed {
            overrides.push(format!("seed={seed}"));
        }
        self.data_dir.load(&self.scenario, &overrides)
    }

    /// The run directory: `--out` when given (refused when it already holds a run, unless
    /// `--force`), else a new `runs/<scenario>-<UTC timestamp>[-N]`.
    fn out_dir(&self, scenario: &Scenario) -> Result<PathBuf> {
        let Some(dir) = self.out.clone() else {
            let base = Path::new("runs").join(format!("{}-{}", scenario.name, utc_timestamp()));
            let mut dir = base.clone();
            let mut n = 2;
            while dir.exists() {
                dir = PathBuf::from(format!("{}-{n}", base.display()));
                n += 1;
            }
            return Ok(dir);
        };
        let held: Vec<&str> = RUN_FILES
            .iter()
            .copied()
            .filter(|f| dir.join(f).exists())
            .collect();
        if !held.is_empty() {
            if !self.force {
                anyhow::bail!(
                    "{} already holds a run ({}); pass --force to overwrite it, or continue a coordinator's run with `fedsim server --resume {}`",
                    dir.display(),
                    held.join(", "),
                    dir.display()
                );
            }
            for f in held {
                std::fs::remove_file(dir.join(f))
                    .with_context(|| format!("removing {}", dir.join(f).display()))?;
            }
        }
        Ok(dir)
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
    /// Record the clients that took part in each round as a CSV trace (replay it with
    /// `--set 'participation={kind="trace",path="FILE"}'`, which replaces the whole participation
    /// table).
    #[arg(long, value_name = "FILE")]
    record_participation: Option<PathBuf>,
}

/// Logging without `RUST_LOG`: warnings, errors and progress lines (connecting, joined, waiting for
/// clients), which the runtime logs at `info` under the target `fedsim::status`.
const DEFAULT_LOG: &str = "warn,fedsim::status=info";

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sim(args) => sim(args),
        Command::Server(args) => server(args),
        Command::Client(args) => client(args),
        Command::Launch(args) => launch_cmd(args),
        Command::Eval(args) => {
            let scenario = args.data_dir.load(&args.scenario, &args.overrides)?;
            let report = evaluate::eval_model(&scenario, &args.model)?;
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", evaluate::render(&report));
            }
            Ok(())
        }
        Command::Export(args) => {
            let scenario = args.data_dir.load(&args.scenario, &args.overrides)?;
            let n = evaluate::export_model(&scenario, &args.model, &args.output)?;
            eprintln!("wrote {} ({n} parameters)", args.output.display());
            Ok(())
        }
        Command::Data(DataCommand::Fetch { names, data_dir }) => {
            fetch::fetch(&data_dir.root()?, &names)
        }
        Command::Data(DataCommand::List { data_dir }) => {
            print!("{}", fetch::list(&data_dir.root()?)?);
            Ok(())
        }
        Command::Plot(args) => plot::plot(&plot::PlotSpec {
            runs: args.runs,
            labels: args.labels,
            metric: args.metric,
            x: args.x,
            log_y: args.log_y,
            per_client: args.per_client,
            title: args.title,
            out: args.output,
        }),
    }
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn server(args: ServerArgs) -> Result<()> {
    let scenario = args.scenario.load()?;
    let (out, resume) = match &args.resume {
        Some(dir) => (dir.clone(), true),
        None => (args.scenario.out_dir(&scenario)?, false),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(fedsim_server::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.client_ca.clone(),
        }),
        _ => None,
    };
    let credentials = args
        .tokens
        .as_deref()
        .map(fedsim_server::Credentials::load)
        .transpose()?;
    let opts = fedsim_server::ServerOptions {
        listen: args.listen,
        out: out.clone(),
        resume,
        tls,
        credentials,
        update_memory_bytes: args.update_memory_mib.saturating_mul(1 << 20),
    };
    let summary = tokio_runtime()?.block_on(fedsim_server::run(scenario, opts))?;
    print_summary(&summary, &out);
    Ok(())
}

/// Parses `0-24`, `3,5,9`, `0-9,20-29`.
fn parse_ids(s: &str) -> Result<Vec<u32>> {
    let mut ids = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .with_context(|| format!("--ids: `{x}` is not a client id"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                anyhow::ensure!(a <= b, "--ids: empty range {part}");
                ids.extend(a..=b);
            }
            None => ids.push(num(part)?),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    anyhow::ensure!(!ids.is_empty(), "--ids lists no client ids");
    Ok(ids)
}

fn client(args: ClientArgs) -> Result<()> {
    let ids = match (&args.id, &args.ids) {
        (Some(id), None) => vec![*id],
        (None, Some(s)) => parse_ids(s)?,
        _ => anyhow::bail!("give --id ID or --ids RANGES"),
    };
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => String::new(),
    };
    let data: fedsim_client::DataSource = args.data.parse().map_err(anyhow::Error::msg)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = fedsim_client::ClientOptions {
        server: args.server,
        ids,
        data,
        test_data: args.test_data,
        token,
        tls: fedsim_client::ClientTls {
            ca_cert: args.ca_cert,
            identity: args.cert.zip(args.key),
            domain: args.domain,
        },
        threads,
        reconnect_timeout_s: args.reconnect_timeout,
        data_root: Some(args.data_dir.root()?),
    };
    tokio_runtime()?.block_on(fedsim_client::run(opts))?;
    Ok(())
}

fn launch_cmd(args: LaunchArgs) -> Result<()> {
    let scenario = args.scenario.load()?;
    // Missing data would otherwise show only in the coordinator's log: say it here, with the command
    // that fetches it.
    scenario.resolved_data()?;
    let out = args.scenario.out_dir(&scenario)?;
    let plan = launch::LaunchPlan {
        processes: args.processes.unwrap_or(scenario.clients),
        scenario,
        out: out.clone(),
        server_args: args.server_args,
        client_args: args.client_args,
        data_dir: args.scenario.data_dir.root()?.path().to_path_buf(),
    };
    launch::launch(&plan)?;
    if !args.quiet {
        let text = std::fs::read_to_string(out.join("summary.json"))
            .with_context(|| format!("reading {}/summary.json", out.display()))?;
        let summary: fedsim_engine::report::Summary = serde_json::from_str(&text)?;
        print_summary(&summary, &out);
    }
    Ok(())
}

fn sim(args: SimArgs) -> Result<()> {
    let scenario = args.scenario.load()?;
    let out = args.scenario.out_dir(&scenario)?;
    let opts = fedsim_sim::SimOptions {
        threads: args.threads,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        record_participation: args.record_participation.clone(),
    };
    let summary =
        fedsim_sim::run(scenario, Some(&out), &opts).with_context(|| "simulation failed")?;
    if !args.quiet {
        print_summary(&summary, &out);
    }
    Ok(())
}

fn print_summary(s: &fedsim_engine::report::Summary, out: &Path) {
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
