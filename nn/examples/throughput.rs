//! Prints single-thread training throughput of the models as a share of the measured FMA peak.
//!
//! ```text
//! cargo run --release -p fedsim-nn --example throughput            # every workload
//! cargo run --release -p fedsim-nn --example throughput -- cnn     # workloads whose name contains "cnn"
//! ```
//!
//! A step is one `loss_grad` call (forward, backward, gradient written) on a batch of random data;
//! the SGD update is not included. Each workload runs `REPEATS` (default 7) timed runs of about
//! `RUN_MS` milliseconds (default 400) and the table reports the median.
//!
//! The machine may be shared: on Linux every run also records how much CPU the *other* processes
//! used meanwhile (`/proc/stat` minus this process), and runs during which they used more than
//! `MAX_OTHER` cores (default 0.1) are discarded and retried, for up to `MAX_WAIT_S` seconds
//! (default 120) per workload. The last column says how many runs were kept and discarded.
//!
//! The FMA peak is that of the widest fused multiply-add the CPU runs (512-bit `vfmadd` with
//! AVX-512F, 256-bit with AVX2 + FMA; `fedsim_nn::perf::fma_probe`), so shares of peak are shares
//! of what the core can do, whichever kernels the models use.
//!
//! The clock of a VM drifts (the FMA peak read 100 to 116 GFLOP/s within minutes on the machine
//! these figures were taken on), so every timed run of a workload is paired with an FMA-probe run of
//! the same length just before it, and the share of peak is the median of the per-pair ratios. The
//! peak printed first is the median of separate probe runs, for reference.
//!
//! `CLOCK=cpu` times runs by this thread's on-CPU time (`/proc/thread-self/schedstat`) instead of
//! the wall clock, for comparisons on a busy machine (time spent descheduled is excluded, contention
//! for caches and a shared core is not); the reported figures are then labelled accordingly.

use std::time::{Duration, Instant};

use fedsim_nn::perf::{
    FMA_PROBE_FLOPS_PER_ITER, TrainWorkload, fma_probe, fma_probe_isa, kernels, median,
};
use fedsim_nn::{Cnn, ImageShape, LogReg, Mlp, Model};

/// What a workload must reach.
#[derive(Clone, Copy)]
enum Target {
    /// Samples per second.
    Rate(f64),
    /// Share of the FMA peak.
    Peak(f64),
}

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Busy jiffies of the whole machine and of this process (Linux); `None` elsewhere.
fn jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    if cpu.len() < 8 {
        return None;
    }
    let busy = cpu[..8].iter().sum::<u64>() - cpu[3] - cpu[4];
    let me = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = me.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let mine = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some((busy, mine))
}

/// Runs `f` and returns its result with the average number of cores the other processes used
/// meanwhile (0 when unknown). Jiffies are 10 ms, so runs should last a few hundred ms.
fn watched<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = jiffies();
    let t = Instant::now();
    let r = f();
    let wall = t.elapsed().as_secs_f64();
    let other = match (before, jiffies()) {
        (Some((b0, m0)), Some((b1, m1))) => {
            let tick = 0.01; // USER_HZ is 100 on Linux
            ((b1 - b0).saturating_sub(m1 - m0)) as f64 * tick / wall
        }
        _ => 0.0,
    };
    (r, other)
}

/// Clean measurements: calls `run` (returning a rate) until `repeats` runs were undisturbed or the
/// time budget is spent; returns (kept rates, discarded count). If no run was clean, the least
/// disturbed ones are kept.
fn clean_runs<T: Copy>(
    repeats: usize,
    max_other: f64,
    budget: Duration,
    mut run: impl FnMut() -> T,
) -> (Vec<T>, usize) {
    let start = Instant::now();
    let mut clean = Vec::new();
    let mut dirty: Vec<(f64, T)> = Vec::new();
    while clean.len() < repeats {
        let (rate, other) = watched(&mut run);
        if other <= max_other {
            clean.push(rate);
        } else {
            dirty.push((other, rate));
            std::thread::sleep(Duration::from_millis(200));
        }
        if start.elapsed() > budget {
            break;
        }
    }
    let discarded = dirty.len();
    if clean.is_empty() {
        dirty.sort_by(|a, b| a.0.total_cmp(&b.0));
        clean = dirty.iter().take(repeats).map(|d| d.1).collect();
    }
    (clean, discarded)
}

/// Seconds on the chosen clock: wall time, or this thread's on-CPU time with `CLOCK=cpu`.
#[derive(Clone, Copy)]
struct Clock {
    cpu: bool,
    origin: Instant,
}

impl Clock {
    fn now(&self) -> f64 {
        if self.cpu
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
        self.origin.elapsed().as_secs_f64()
    }
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).map(|f| f.to_lowercase()).collect();
    let repeats = env_or("REPEATS", 7.0) as usize;
    let run = Duration::from_secs_f64(env_or("RUN_MS", 400.0) / 1e3);
    let max_other = env_or("MAX_OTHER", 0.1);
    let budget = Duration::from_secs_f64(env_or("MAX_WAIT_S", 120.0));
    let clock = Clock {
        cpu: std::env::var("CLOCK").is_ok_and(|c| c == "cpu"),
        origin: Instant::now(),
    };
    // With the on-CPU clock, other processes do not make a run invalid.
    let max_other = if clock.cpu { f64::INFINITY } else { max_other };
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

    // FMA peak: calibrate the iteration count, then clean runs of the probe.
    let mut iters = 1u64 << 20;
    loop {
        let t = Instant::now();
        std::hint::black_box(fma_probe(iters));
        if t.elapsed() >= run / 4 {
            iters = (iters as f64 * run.as_secs_f64() / t.elapsed().as_secs_f64()) as u64;
            break;
        }
        iters *= 2;
    }
    let probe_gflops = || {
        let t = clock.now();
        std::hint::black_box(fma_probe(iters));
        (iters * FMA_PROBE_FLOPS_PER_ITER) as f64 / (clock.now() - t) / 1e9
    };
    let (mut peaks, peak_dropped) = clean_runs(repeats, max_other, budget, probe_gflops);
    let peak = median(&mut peaks);
    println!(
        "kernels: {}; clock: {}; FMA peak ({}): {peak:.1} GFLOP/s/core (median of {} runs, {peak_dropped} discarded)",
        kernels(),
        if clock.cpu { "on-CPU time" } else { "wall" },
        fma_probe_isa(),
        peaks.len()
    );
    println!();
    println!(
        "| workload | samples/s (median; min..max) | GFLOP/s | paired peak GFLOP/s | % of peak (median of pairs) | target | met | runs kept/discarded |"
    );
    println!("|---|---:|---:|---:|---:|---|---|---|");
    for (name, model, batch, target) in workloads {
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| name.to_lowercase().contains(f.as_str()))
        {
            continue;
        }
        let flops = model.train_flops_per_sample();
        let mut w = TrainWorkload::new(model, batch, 7);
        // Warm up and calibrate the number of steps per run.
        let mut steps = 1u64;
        loop {
            let e = w.time_steps(steps);
            if e >= run / 4 {
                steps = ((steps as f64 * run.as_secs_f64() / e.as_secs_f64()) as u64).max(1);
                break;
            }
            steps *= 2;
        }
        #[cfg(feature = "profile")]
        let _ = fedsim_nn::perf::profile_report();
        let (pairs, dropped) = clean_runs(repeats, max_other, budget, || {
            let peak_now = probe_gflops();
            let t = clock.now();
            w.time_steps(steps);
            (
                (steps as usize * batch) as f64 / (clock.now() - t),
                peak_now,
            )
        });
        let mut rates: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let mut paired_peaks: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let mut shares: Vec<f64> = pairs.iter().map(|&(r, p)| r * flops / 1e9 / p).collect();
        #[cfg(feature = "profile")]
        print_profile(name);
        let kept = rates.len();
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        let rate = median(&mut rates);
        let gflops = rate * flops / 1e9;
        let paired_peak = median(&mut paired_peaks);
        let share = median(&mut shares);
        let (target_s, met) = match target {
            Target::Rate(r) => (format!(">= {:.0}k samples/s", r / 1e3), rate >= r),
            Target::Peak(p) => (format!(">= {:.0}% of peak", p * 100.0), share >= p),
        };
        println!(
            "| {name} | {rate:.0} ({lo:.0}..{hi:.0}) | {gflops:.1} | {paired_peak:.1} | {:.1}% | {target_s} | {} | {kept}/{dropped} |",
            share * 100.0,
            if met { "yes" } else { "no" }
        );
    }
}

/// Prints the time per section recorded by the `profile` feature, as shares of the total. Sections
/// can nest (the packing inside a product), so shares may add up to more than 100%.
#[cfg(feature = "profile")]
fn print_profile(name: &str) {
    let mut rows: Vec<(&str, f64)> = Vec::new();
    for (section, d, _) in fedsim_nn::perf::profile_report() {
        match rows.iter_mut().find(|r| r.0 == section) {
            Some(r) => r.1 += d.as_secs_f64(),
            None => rows.push((section, d.as_secs_f64())),
        }
    }
    let total: f64 = rows
        .iter()
        .filter(|r| !r.0.starts_with("gemm "))
        .map(|r| r.1)
        .sum();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    let parts: Vec<String> = rows
        .iter()
        .map(|(s, t)| format!("{s} {:.1}%", 100.0 * t / total))
        .collect();
    eprintln!("  {name} sections: {}", parts.join(", "));
}
