//! Single-thread evaluation throughput (`Model::evaluate`, forward pass only) as a share of the FMA
//! peak, for the evaluation chunk sizes the simulator uses.
//!
//! ```text
//! CLOCK=cpu cargo run --release -p fedsim-nn --example eval_speed [-- FILTER]
//! ```
//!
//! Each workload evaluates a pool of random samples (10,000; 1,000 for the CNN; `POOL` sets the 2NN's)
//! in chunks of `CHUNK` rows (default 500, the simulator's `eval.batch_size`; a comma-separated list
//! compares sizes, measured interleaved so that changes in load affect them alike); the median of
//! `REPEATS` (default 5) passes is reported. `CLOCK=cpu` uses this thread's on-CPU time, for the
//! peak probe too (for a busy machine). With `--features profile`, time per model section is printed.

use std::time::Instant;

use fedsim_nn::perf::{FMA_PROBE_FLOPS_PER_ITER, fma_probe, median};
use fedsim_nn::{Cnn, EvalStats, ImageShape, LogReg, Mlp, Model, Scratch};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn now(cpu: bool) -> f64 {
    if cpu
        && let Some(ns) = std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
            })
    {
        return ns * 1e-9;
    }
    thread_local!(static ORIGIN: Instant = Instant::now());
    ORIGIN.with(|o| o.elapsed().as_secs_f64())
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).map(|f| f.to_lowercase()).collect();
    let env = |n: &str, d: usize| {
        std::env::var(n)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    // Chunk sizes to compare: measured interleaved (one pass of each in turn), so that changes in
    // the machine's load affect them alike.
    let chunks: Vec<usize> = std::env::var("CHUNK")
        .unwrap_or_else(|_| "500".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let repeats = env("REPEATS", 5);
    let cpu = std::env::var("CLOCK").is_ok_and(|c| c == "cpu");
    let peak = {
        let iters = 1u64 << 22;
        let mut v: Vec<f64> = (0..5)
            .map(|_| {
                let t = now(cpu);
                std::hint::black_box(fma_probe(iters));
                (iters * FMA_PROBE_FLOPS_PER_ITER) as f64 / (now(cpu) - t) / 1e9
            })
            .collect();
        median(&mut v)
    };
    println!(
        "FMA peak: {peak:.1} GFLOP/s; clock: {}; chunks {chunks:?}",
        if cpu { "on-CPU time" } else { "wall" }
    );
    let mnist = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let models: Vec<(&str, Box<dyn Model>, usize)> = vec![
        ("logreg", Box::new(LogReg::new(784, 10)), 10_000),
        (
            "2NN",
            Box::new(Mlp::new(784, &[200, 200], 10)),
            env("POOL", 10_000),
        ),
        (
            "CNN",
            Box::new(Cnn::new(mnist, [32, 64], 512, 10).unwrap_or_else(|e| panic!("{e}"))),
            1_000,
        ),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (name, model, n) in models {
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| name.to_lowercase().contains(f.as_str()))
        {
            continue;
        }
        let f = model.input_len();
        let x = Array2::from_shape_fn((n, f), |_| rng.random::<f32>());
        let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..10u32)).collect();
        let params = model.init_params(3);
        let mut scratch = Scratch::default();
        let mut pass = |chunk: usize| {
            let mut stats = EvalStats::new(10);
            for s in (0..n).step_by(chunk) {
                let e = (s + chunk).min(n);
                model.evaluate(
                    &params,
                    x.slice(ndarray::s![s..e, ..]),
                    &y[s..e],
                    &mut scratch,
                    &mut stats,
                );
            }
            stats.count
        };
        let mut rates = vec![Vec::new(); chunks.len()];
        for rep in 0..=repeats {
            for (r, &chunk) in rates.iter_mut().zip(&chunks) {
                let t = now(cpu);
                std::hint::black_box(pass(chunk));
                // The first round is a warm-up.
                if rep > 0 {
                    r.push(n as f64 / (now(cpu) - t));
                }
            }
        }
        for (r, &chunk) in rates.iter_mut().zip(&chunks) {
            let rate = median(r);
            let gf = rate * model.eval_flops_per_sample() / 1e9;
            println!(
                "{name:8} eval, chunk {chunk:5}: {rate:10.0} samples/s  {gf:6.1} GFLOP/s  {:5.1}% of peak",
                100.0 * gf / peak
            );
        }
        #[cfg(feature = "profile")]
        {
            let rep = fedsim_nn::perf::profile_report();
            let parts: Vec<String> = rep
                .iter()
                .map(|(s, d, c)| format!("{s} {:.1} ms/{c}", d.as_secs_f64() * 1e3))
                .collect();
            println!("  sections: {}", parts.join(", "));
        }
    }
}
