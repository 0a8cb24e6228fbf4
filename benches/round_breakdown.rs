//! One round of `configs/mnist_2nn_iid.toml` split into local training, aggregation, evaluation and
//! everything else, and compared with its FLOP floor: (training FLOPs + evaluation FLOPs) divided by
//! the measured two-core FMA peak.
//!
//! Run: `cargo bench --bench round_breakdown` (MNIST from ../shared/data/mnist, or set FEDSIM_MNIST).
//! Prints medians over the measured rounds (the first rounds are warm-up).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedsim_core::{Engine, Scenario};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { 0.0 } else { v[v.len() / 2] }
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mnist = std::env::var("FEDSIM_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("../shared/data/mnist"));
    if !mnist.join("train-images-idx3-ubyte.gz").exists()
        && !mnist.join("train-images-idx3-ubyte").exists()
    {
        eprintln!(
            "skipping: MNIST not found at {} (set FEDSIM_MNIST)",
            mnist.display()
        );
        return;
    }
    let rounds: u64 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(25);
    let warmup = 5usize;
    let peak_core = fedsim_nn::perf::fma_peak_gflops(Duration::from_millis(300), 7);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peak = peak_core * threads as f64;

    let scenario = Scenario::load(
        &root.join("configs/mnist_2nn_iid.toml"),
        &[
            format!("data.dir=\"{}\"", mnist.display()),
            format!("rounds={rounds}"),
        ],
    )
    .expect("scenario");
    let data = fedsim_data::load_federated(
        &scenario.data,
        &scenario.partition,
        scenario.clients,
        scenario.seed,
    )
    .expect("data");
    let mut engine = Engine::new(scenario, Arc::new(data), "sim").expect("engine");
    let train_flops = engine.model().train_flops_per_sample();
    let eval_flops = engine.model().eval_flops_per_sample();
    let mut recs = Vec::new();
    fedsim_sim::run_engine(&mut engine, &fedsim_sim::SimOptions::default(), |r| {
        recs.push(r.clone())
    })
    .expect("run");
    let recs = &recs[warmup.min(recs.len().saturating_sub(1))..];

    let col =
        |f: &dyn Fn(&fedsim_core::report::RoundRecord) -> f64| median(recs.iter().map(f).collect());
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
    println!("FMA peak: {peak_core:.1} GFLOP/s per core, {peak:.1} GFLOP/s on {threads} cores");
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
}
