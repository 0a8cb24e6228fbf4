//! Single-thread GFLOP/s of every matrix product the models run, for this crate's kernels (each
//! family the CPU supports), `matrixmultiply` and `gemm`, as a markdown table with shares of the
//! measured peak of the widest fused multiply-add the CPU runs.
//!
//! ```text
//! cargo run --release -p fedsim-nn --example gemm_vs_libs              # every product
//! cargo run --release -p fedsim-nn --example gemm_vs_libs -- "CNN fc1"  # labels containing it
//! ```
//!
//! Each product runs warm (operands in cache, one product after another on the same buffers):
//! `REPEATS` (default 7) timed runs of about `RUN_MS` ms (default 60) per implementation, the
//! implementations taking turns within each repeat so that a drifting clock or a neighbour's load
//! affects them alike; the table shows medians.

#[path = "shapes.rs"]
mod shapes;

use std::time::{Duration, Instant};

use fedsim_nn::isa::{self, Isa};
use fedsim_nn::perf::{fma_peak_gflops, fma_probe_isa, median};
use shapes::{Case, Lib, Operands, cases, max_rel_diff, run};

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The CPU's model name from `/proc/cpuinfo` (Linux).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// GFLOP/s of `runs` products of `case` with `lib`, timed as one run.
fn timed(lib: Lib, case: &Case, ops: &mut Operands, runs: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..runs {
        run(lib, case, ops);
        std::hint::black_box(&mut ops.c);
    }
    case.flops() * runs as f64 / t.elapsed().as_secs_f64() / 1e9
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).map(|f| f.to_lowercase()).collect();
    let repeats = env_or("REPEATS", 7.0).max(1.0) as usize;
    let run_s = env_or("RUN_MS", 60.0) / 1e3;
    let mut libs: Vec<Lib> = isa::available()
        .into_iter()
        .rev()
        .filter(|i| *i != Isa::Portable)
        .map(Lib::Ours)
        .collect();
    libs.extend([Lib::MatrixMultiply, Lib::Gemm]);

    let peak = fma_peak_gflops(Duration::from_millis(200), 9);
    println!("CPU: {}", cpu_model());
    println!(
        "FMA peak: {peak:.1} GFLOP/s/core ({}; median of 9 runs)",
        fma_probe_isa()
    );
    println!(
        "kernels selected for the models: {}",
        fedsim_nn::perf::kernels()
    );
    println!(
        "single thread, warm caches, median of {repeats} runs of about {:.0} ms each",
        run_s * 1e3
    );
    println!();
    let head: Vec<String> = libs.iter().map(|l| l.name()).collect();
    println!(
        "| product | batch | m×n×k | {} | fastest |",
        head.join(" | ")
    );
    println!("|---|---:|---|{}---|", "---:|".repeat(libs.len()));
    let mut worst_diff = 0.0f64;
    for case in cases() {
        if !filter.is_empty()
            && !filter
                .iter()
                .any(|f| case.label.to_lowercase().contains(f.as_str()))
        {
            continue;
        }
        let mut ops: Vec<Operands> = libs.iter().map(|_| Operands::new(&case)).collect();
        for (lib, o) in libs.iter().zip(ops.iter_mut()) {
            worst_diff = worst_diff.max(max_rel_diff(*lib, libs[0], &case));
            // Warm up and size the runs: about `run_s` seconds each.
            let mut runs = 1u64;
            loop {
                let t = Instant::now();
                for _ in 0..runs {
                    run(*lib, &case, o);
                }
                let e = t.elapsed().as_secs_f64();
                if e >= run_s / 4.0 {
                    runs = ((runs as f64 * run_s / e) as u64).max(1);
                    break;
                }
                runs *= 2;
            }
            let _ = runs;
        }
        let runs: Vec<u64> = libs
            .iter()
            .zip(ops.iter_mut())
            .map(|(lib, o)| {
                let r = timed(*lib, &case, o, 1);
                ((run_s * r * 1e9 / case.flops()) as u64).max(1)
            })
            .collect();
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); libs.len()];
        for _ in 0..repeats {
            for (i, lib) in libs.iter().enumerate() {
                rates[i].push(timed(*lib, &case, &mut ops[i], runs[i]));
            }
        }
        let med: Vec<f64> = rates.iter_mut().map(|r| median(r)).collect();
        let best = med
            .iter()
            .enumerate()
            .fold(0, |b, (i, &r)| if r > med[b] { i } else { b });
        let cells: Vec<String> = med
            .iter()
            .map(|&r| format!("{r:.1} ({:.0}%)", 100.0 * r / peak))
            .collect();
        let batch = if case.batch == 0 {
            "chunk of 3".to_string()
        } else {
            case.batch.to_string()
        };
        println!(
            "| {} | {batch} | {}×{}×{} | {} | {} |",
            case.label,
            case.m,
            case.n,
            case.k,
            cells.join(" | "),
            libs[best].name()
        );
    }
    println!();
    println!(
        "cells: GFLOP/s (share of the {peak:.1} GFLOP/s peak); largest relative difference between implementations {worst_diff:.1e}"
    );
    assert!(worst_diff < 1e-4, "implementations disagree");
}
