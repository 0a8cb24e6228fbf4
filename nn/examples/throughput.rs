//! Prints single-thread training throughput of the models as a share of the measured FMA peak.
//!
//! ```text
//! cargo run --release -p fedsim-nn --example throughput            # every workload
//! cargo run --release -p fedsim-nn --example throughput -- cnn     # workloads whose name contains "cnn"
//! ```
//!
//! Environment: `REPEATS` (default 7) runs of `RUN_MS` milliseconds (default 400) per workload; the
//! table reports medians. A step is one `loss_grad` call (forward, backward, gradient written) on a
//! batch of random data; the SGD update is not included.

use std::time::Duration;

use fedsim_nn::perf::{TrainWorkload, fma_peak_gflops, kernels, median};
use fedsim_nn::{Cnn, ImageShape, LogReg, Mlp, Model};

/// What a workload must reach.
#[derive(Clone, Copy)]
enum Target {
    /// Samples per second.
    Rate(f64),
    /// Share of the FMA peak.
    Peak(f64),
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).collect();
    let repeats = env_or("REPEATS", 7) as usize;
    let run = Duration::from_millis(env_or("RUN_MS", 400));
    let mnist = ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    };
    let cnn = || -> Box<dyn Model> {
        match Cnn::new(mnist, [32, 64], 512, 10) {
            Ok(m) => Box::new(m),
            Err(e) => panic!("{e}"),
        }
    };
    let two_nn = || -> Box<dyn Model> { Box::new(Mlp::new(784, &[200, 200], 10)) };
    let logreg = || -> Box<dyn Model> { Box::new(LogReg::new(784, 10)) };
    let workloads: Vec<(&str, Box<dyn Model>, usize, Target)> = vec![
        ("logreg B=16", logreg(), 16, Target::Rate(1e6)),
        ("logreg B=64", logreg(), 64, Target::Rate(1e6)),
        ("2NN B=10", two_nn(), 10, Target::Peak(0.40)),
        ("2NN B=64", two_nn(), 64, Target::Peak(0.65)),
        ("CNN B=10", cnn(), 10, Target::Peak(0.55)),
        ("CNN B=64", cnn(), 64, Target::Peak(0.55)),
    ];

    let peak = fma_peak_gflops(Duration::from_millis(300), repeats);
    println!(
        "kernels: {}; FMA peak (median of {repeats}): {peak:.1} GFLOP/s",
        kernels()
    );
    println!();
    println!("| workload | samples/s | GFLOP/s | % of peak | target | met |");
    println!("|---|---:|---:|---:|---|---|");
    for (name, model, batch, target) in workloads {
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| name.to_lowercase().contains(&f.to_lowercase()))
        {
            continue;
        }
        let flops = model.train_flops_per_sample();
        let mut w = TrainWorkload::new(model, batch, 7);
        #[cfg(feature = "profile")]
        let _ = fedsim_nn::perf::profile_report();
        let mut rates = w.measure(run, repeats);
        #[cfg(feature = "profile")]
        print_profile(name);
        let (lo, hi) = (
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
        );
        let rate = median(&mut rates);
        let gflops = rate * flops / 1e9;
        let share = gflops / peak;
        let (target_s, met) = match target {
            Target::Rate(r) => (format!(">= {:.0}k samples/s", r / 1e3), rate >= r),
            Target::Peak(p) => (format!(">= {:.0}% of peak", p * 100.0), share >= p),
        };
        println!(
            "| {name} | {rate:.0} ({lo:.0}..{hi:.0}) | {gflops:.1} | {:.1}% | {target_s} | {} |",
            share * 100.0,
            if met { "yes" } else { "no" }
        );
    }
}

/// Prints the time per section recorded by the `profile` feature, as shares of the total.
#[cfg(feature = "profile")]
fn print_profile(name: &str) {
    let mut rows: Vec<(&str, f64)> = Vec::new();
    for (section, d, _) in fedsim_nn::perf::profile_report() {
        match rows.iter_mut().find(|r| r.0 == section) {
            Some(r) => r.1 += d.as_secs_f64(),
            None => rows.push((section, d.as_secs_f64())),
        }
    }
    let total: f64 = rows.iter().map(|r| r.1).sum();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let parts: Vec<String> = rows
        .iter()
        .map(|(s, t)| format!("{s} {:.1}%", 100.0 * t / total))
        .collect();
    eprintln!("  {name} sections: {}", parts.join(", "));
}
