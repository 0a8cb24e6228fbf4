//! One round of `configs/mnist_2nn_iid.toml` split into local training, aggregation, evaluation and
//! everything else, and compared with its FLOP floor: (training FLOPs + evaluation FLOPs) divided by
//! the measured two-core FMA peak.
//!
//! Run: `cargo bench --bench round_breakdown` (MNIST from $FEDSIM_DATA/mnist, a relative FEDSIM_DATA taken
//! from the workspace root; default ../shared/data).
//! Prints medians over the measured rounds (the first rounds are warm-up).
//!
//! The machine may be shared, so wall-clock shares can mislead: the bench also reports on-CPU time
//! (all threads of this process, from `/proc/self/stat`) per round against the same FLOPs at the
//! single-core peak, and times the evaluation phase on its own (`EVAL_REPEATS` passes of the engine's
//! evaluation on the final model, default 5) on both clocks. The FMA peak is measured on this
//! thread's on-CPU clock, so it does not drop when other processes take the core.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedsim_engine::{Engine, Scenario};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

/// On-CPU seconds of every thread of this process so far (Linux; `NaN` elsewhere). The kernel counts
/// in ticks of 10 ms, so only differences over many rounds are meaningful.
fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // utime and stime are the 12th and 13th fields after the parenthesised command name.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return f64::NAN;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
    match (tick(11), tick(12)) {
        (Some(u), Some(s)) => (u + s) * 0.01,
        _ => f64::NAN,
    }
}

/// On-CPU seconds of the calling thread (Linux), else wall seconds since the first call.
fn thread_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or_else(
            || {
                static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
                ORIGIN
                    .get_or_init(std::time::Instant::now)
                    .elapsed()
                    .as_secs_f64()
            },
            |ns| ns * 1e-9,
        )
}

/// Single-core FMA peak in GFLOP/s on this thread's on-CPU clock (median of `repeats` probes).
fn cpu_clock_peak(repeats: usize) -> f64 {
    use fedsim_nn::perf::{FMA_PROBE_FLOPS_PER_ITER, fma_probe};
    let iters = 1u64 << 24;
    std::hint::black_box(fma_probe(iters));
    median(
        (0..repeats)
            .map(|_| {
                let t = thread_cpu_s();
                std::hint::black_box(fma_probe(iters));
                (iters * FMA_PROBE_FLOPS_PER_ITER) as f64 / (thread_cpu_s() - t) / 1e9
            })
            .collect(),
    )
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data_root = match std::env::var_os("FEDSIM_DATA").filter(|v| !v.is_empty()) {
        Some(d) => root.join(d),
        None => root.join("../shared/data"),
    };
    let mnist = data_root.join("mnist");
    if !mnist.join("train-images-idx3-ubyte.gz").exists()
        && !mnist.join("train-images-idx3-ubyte").exists()
    {
        eprintln!(
            "skipping: MNIST not found at {} (set FEDSIM_DATA to the folder holding mnist/)",
            mnist.display()
        );
        return;
    }
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(25);
    let warmup = 5usize;
    let peak_wall = fedsim_nn::perf::fma_peak_gflops(Duration::from_millis(300), 7);
    let peak_core = cpu_clock_peak(7);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peak = peak_core * threads as f64;

    let mut scenario = Scenario::load(
        &root.join("configs/mnist_2nn_iid.toml"),
        &[format!("rounds={rounds}")],
    )
    .expect("scenario");
    scenario.data_root = Some(fedsim_data::DataRoot::at(data_root));
    let data = scenario.load_data().expect("data");
    let mut engine = Engine::new(scenario, Arc::new(data), "sim").expect("engine");
    let train_flops = engine.model().train_flops_per_sample();
    let eval_flops = engine.model().eval_flops_per_sample();
    let mut recs = Vec::new();
    let mut cpu_marks = vec![process_cpu_s()];
    fedsim_sim::run_engine(&mut engine, &fedsim_sim::SimOptions::default(), |r| {
        recs.push(r.clone());
        cpu_marks.push(process_cpu_s());
    })
    .expect("run");
    let first = warmup.min(recs.len().saturating_sub(1));
    let recs = &recs[first..];
    // Mean on-CPU seconds per measured round (ticks are too coarse for per-round medians).
    let cpu_per_round =
        (cpu_marks[cpu_marks.len() - 1] - cpu_marks[first]) / recs.len().max(1) as f64;

    let col = |f: &dyn Fn(&fedsim_engine::report::RoundRecord) -> f64| {
        median(recs.iter().map(f).collect())
    };
    let train = col(&|r| r.time_train_s);
    let agg = col(&|r| r.time_aggregate_s);
    let eval = col(&|r| r.time_eval_s);
    let total = col(&|r| r.time_round_s);
    let other = col(&|r| r.time_round_s - r.time_train_s - r.time_aggregate_s - r.time_eval_s);
    let flops = col(&|r| {
        r.extra.get("train_samples").copied().unwrap_or(0.0) * train_flops
            + r.extra.get("eval_samples").copied().unwrap_or(0.0) * eval_flops
    });
    let train_only = col(&|r| r.extra.get("train_samples").copied().unwrap_or(0.0) * train_flops);
    let floor = flops / (peak * 1e9);
    println!(
        "mnist_2nn_iid round breakdown ({} measured rounds, {threads} threads)",
        recs.len()
    );
    println!(
        "FMA peak: {peak_core:.1} GFLOP/s per core (on-CPU clock; {peak_wall:.1} on the wall clock), \
         {peak:.1} GFLOP/s on {threads} cores"
    );
    println!("| phase | median s | share of round |");
    println!("|---|---|---|");
    for (name, v) in [
        ("local training", train),
        ("aggregation", agg),
        ("evaluation", eval),
        ("everything else", other),
        ("round", total),
    ] {
        println!("| {name} | {v:.4} | {:.1}% |", 100.0 * v / total);
    }
    println!(
        "FLOPs per round: {:.2} G (training {:.2} G, evaluation {:.2} G)",
        flops / 1e9,
        train_only / 1e9,
        (flops - train_only) / 1e9
    );
    println!(
        "FLOP floor: {floor:.4} s; round / floor = {:.2}x",
        total / floor
    );
    println!(
        "training: {:.1} GFLOP/s ({:.0}% of the {threads}-core peak)",
        train_only / train / 1e9,
        100.0 * train_only / train / 1e9 / peak
    );
    println!(
        "evaluation: {:.1} GFLOP/s ({:.0}% of the {threads}-core peak)",
        (flops - train_only) / eval / 1e9,
        100.0 * (flops - train_only) / eval / 1e9 / peak
    );
    let cpu_floor = flops / (peak_core * 1e9);
    println!(
        "on-CPU time per round (all threads, mean): {cpu_per_round:.4} s; FLOPs at the single-core peak: \
         {cpu_floor:.4} s; ratio {:.2}x",
        cpu_per_round / cpu_floor
    );

    // The evaluation phase alone, as the engine runs it (test set, then the training loss over the
    // whole training set, which this scenario's IID partition covers).
    let repeats: usize = std::env::var("EVAL_REPEATS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let sc = engine.scenario().clone();
    let data = engine.data().clone();
    let (model, global) = (engine.model(), engine.global());
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    let mut eval_samples = 0usize;
    for _ in 0..repeats.max(1) {
        let (w0, c0) = (std::time::Instant::now(), process_cpu_s());
        let t = fedsim_engine::eval::evaluate(model, global, &data.test, None, sc.eval.batch_size);
        eval_samples = t.count as usize;
        if sc.eval.train_loss {
            let tr =
                fedsim_engine::eval::evaluate(model, global, &data.train, None, sc.eval.batch_size);
            eval_samples += tr.count as usize;
        }
        walls.push(w0.elapsed().as_secs_f64());
        cpus.push(process_cpu_s() - c0);
    }
    let (ew, ec) = (median(walls), median(cpus));
    let ef = eval_samples as f64 * eval_flops;
    println!(
        "evaluation alone ({eval_samples} samples, median of {repeats}): wall {ew:.4} s = {:.0}% of the \
         {threads}-core peak; on-CPU {ec:.3} s = {:.0}% of the single-core peak",
        100.0 * ef / ew / 1e9 / peak,
        100.0 * ef / ec / 1e9 / peak_core
    );
}
