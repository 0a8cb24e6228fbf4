//! Throughput of the layer-stack presets (`[model] kind = "sequential"`), one thread, as a share of
//! the core's measured peak (issue #14, "Speed and memory"): a training step is one `loss_grad` call
//! (forward, backward, gradient written; no SGD update) on random data, an evaluation is one
//! `evaluate` call on a 500-sample chunk (the engine's default `eval.batch_size`).
//!
//! ```text
//! cargo bench -p fedsim-nn --bench stack                      # every case
//! cargo bench -p fedsim-nn --bench stack -- cnn_cifar         # cases whose name contains a filter
//! cargo bench -p fedsim-nn --bench stack --features profile   # plus time per layer kind and phase
//! ```
//!
//! Each case runs `REPEATS` (default 9) timed runs of about `RUN_MS` ms (default 300). The clock of a
//! VM drifts, so every run is paired with a run of the FMA probe (`fedsim_nn::perf::fma_probe`, the
//! widest fused multiply-add this CPU has) of the same length just before it; the share of peak is
//! the median of the per-pair ratios, GFLOP/s the median of the runs. The load average is printed
//! beside the figures: on a shared machine compare figures taken at similar loads only.
//!
//! The benchmark binary counts heap allocations (a counting global allocator): the column "allocs
//! per step" must read 0 (a warmed-up step allocates nothing), and "scratch" is what one training
//! thread keeps between steps (the stack's activation slots, `Sequential::scratch_floats`, plus the
//! GEMM packing buffers).
//!
//! `bench/torch_stack.py --fedsim FILE` times the same networks and cases in PyTorch (one thread)
//! and prints the ratio against this table saved in `FILE`. Figures: `docs/BENCHMARKS.md`, "Layer
//! stack: training-step throughput".

use std::time::Instant;

use fedsim_nn::perf::{FMA_PROBE_FLOPS_PER_ITER, fma_probe, fma_probe_isa, kernels, median};
use fedsim_nn::{EvalStats, ImageShape, InputSpec, Model, Scratch, Sequential, SequentialConfig};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

// The steps run on this thread, so the thread's allocation count is theirs.
#[path = "../tests/common/mod.rs"]
mod common;

fn env_or(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The 1-minute load average, if readable.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// The CPU's model name, if readable.
fn cpu_name() -> String {
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

/// What a case measures.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Train,
    Eval,
}

/// One benchmark case: a preset on an input shape, a batch, and the share of peak to reach.
struct Case {
    name: &'static str,
    preset: &'static str,
    input: (usize, usize, usize),
    batch: usize,
    kind: Kind,
    target: Option<f64>,
}

fn cases() -> Vec<Case> {
    let cifar = (3, 32, 32);
    let case = |name, preset, batch, kind, target| Case {
        name,
        preset,
        input: cifar,
        batch,
        kind,
        target,
    };
    vec![
        case(
            "cnn_cifar train B=16",
            "cnn_cifar",
            16,
            Kind::Train,
            Some(0.55),
        ),
        case(
            "cnn_cifar train B=32",
            "cnn_cifar",
            32,
            Kind::Train,
            Some(0.55),
        ),
        case(
            "resnet8_gn train B=32",
            "resnet8_gn",
            32,
            Kind::Train,
            Some(0.45),
        ),
        case(
            "cnn_cifar eval 500",
            "cnn_cifar",
            500,
            Kind::Eval,
            Some(0.60),
        ),
        case("conv4 train B=32", "conv4", 32, Kind::Train, None),
        case("resnet8_gn eval 500", "resnet8_gn", 500, Kind::Eval, None),
    ]
}

fn build(case: &Case) -> Sequential {
    let (c, h, w) = case.input;
    let input = InputSpec {
        features: c * h * w,
        num_classes: 10,
        image: Some(ImageShape {
            channels: c,
            height: h,
            width: w,
        }),
    };
    // Parsed from TOML, as a scenario's `[model]` table would be, so that defaults fill the rest.
    let cfg: SequentialConfig = toml::from_str(&format!("preset = \"{}\"", case.preset))
        .unwrap_or_else(|e| panic!("{}: {e}", case.preset));
    let layers = cfg
        .resolve()
        .unwrap_or_else(|e| panic!("{}: {e}", case.preset));
    Sequential::new(&layers, &input, cfg.init).unwrap_or_else(|e| panic!("{}: {e}", case.preset))
}

/// A case ready to run: model, parameters, a pool of batches and the thread's scratch.
struct Runner {
    model: Sequential,
    kind: Kind,
    params: Vec<f32>,
    grad: Vec<f32>,
    xs: Vec<Array2<f32>>,
    ys: Vec<Vec<u32>>,
    scratch: Scratch,
    stats: EvalStats,
    next: usize,
}

impl Runner {
    fn new(case: &Case) -> Self {
        let model = build(case);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        // At least 2,048 samples, so inputs are not all cache-hot.
        let pool = 2048usize.div_ceil(case.batch).clamp(2, 64);
        let f = model.input_len();
        let xs = (0..pool)
            .map(|_| Array2::from_shape_fn((case.batch, f), |_| rng.random::<f32>()))
            .collect();
        let ys = (0..pool)
            .map(|_| {
                (0..case.batch)
                    .map(|_| rng.random_range(0..10u32))
                    .collect()
            })
            .collect();
        let params = model.init_params(7);
        Self {
            grad: vec![0.0; params.len()],
            params,
            model,
            kind: case.kind,
            xs,
            ys,
            scratch: Scratch::default(),
            stats: EvalStats::new(10),
            next: 0,
        }
    }

    fn step(&mut self) {
        let i = self.next;
        self.next = (i + 1) % self.xs.len();
        let (x, y) = (self.xs[i].view(), &self.ys[i]);
        match self.kind {
            Kind::Train => {
                let l = self
                    .model
                    .loss_grad(&self.params, x, y, &mut self.grad, &mut self.scratch);
                std::hint::black_box(l);
            }
            Kind::Eval => {
                self.model
                    .evaluate(&self.params, x, y, &mut self.scratch, &mut self.stats);
            }
        }
    }

    fn flops_per_sample(&self) -> f64 {
        match self.kind {
            Kind::Train => self.model.train_flops_per_sample(),
            Kind::Eval => self.model.eval_flops_per_sample(),
        }
    }
}

fn main() {
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .map(|a| a.to_lowercase())
        .collect();
    let repeats = env_or("REPEATS", 9.0).max(1.0) as usize;
    let run_s = env_or("RUN_MS", 300.0) / 1e3;

    // Calibrate the probe to about one run.
    let mut iters = 1u64 << 20;
    loop {
        let t = Instant::now();
        std::hint::black_box(fma_probe(iters));
        let e = t.elapsed().as_secs_f64();
        if e >= run_s / 4.0 {
            iters = (iters as f64 * run_s / e) as u64;
            break;
        }
        iters *= 2;
    }
    let probe = || {
        let t = Instant::now();
        std::hint::black_box(fma_probe(iters));
        (iters * FMA_PROBE_FLOPS_PER_ITER) as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    let mut peaks: Vec<f64> = (0..repeats).map(|_| probe()).collect();
    let peak = median(&mut peaks);
    println!(
        "{}; kernels {}; FMA peak ({}) {peak:.1} GFLOP/s on one core; load average {} at start",
        cpu_name(),
        kernels(),
        fma_probe_isa(),
        load()
    );
    println!();
    println!(
        "| case | GFLOP/s (median; min..max) | paired peak | % of peak | target | met | samples/s | allocs/step | scratch MiB | load |"
    );
    println!("|---|---:|---:|---:|---|---|---:|---:|---:|---|");
    for case in cases() {
        let name = case.name.to_lowercase();
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        let mut r = Runner::new(&case);
        let flops = r.flops_per_sample() * case.batch as f64;
        // Warm up (buffers grow to size, caches fill) and calibrate the steps per run.
        let mut steps = 1u64;
        loop {
            let t = Instant::now();
            for _ in 0..steps {
                r.step();
            }
            let e = t.elapsed().as_secs_f64();
            if e >= run_s / 4.0 {
                steps = ((steps as f64 * run_s / e) as u64).max(1);
                break;
            }
            steps *= 2;
        }
        #[cfg(feature = "profile")]
        let _ = fedsim_nn::perf::profile_report();
        // Sized before counting starts, so that the counted allocations are the steps' own.
        let mut gflops = Vec::with_capacity(repeats);
        let mut shares = Vec::with_capacity(repeats);
        let mut paired = Vec::with_capacity(repeats);
        let allocs0 = common::allocations();
        for _ in 0..repeats {
            let p = probe();
            let t = Instant::now();
            for _ in 0..steps {
                r.step();
            }
            let g = steps as f64 * flops / t.elapsed().as_secs_f64() / 1e9;
            gflops.push(g);
            paired.push(p);
            shares.push(g / p);
        }
        let allocs = common::allocations() - allocs0;
        let per_step = allocs as f64 / (steps as f64 * repeats as f64);
        let (lo, hi) = (
            gflops.iter().copied().fold(f64::INFINITY, f64::min),
            gflops.iter().copied().fold(0.0, f64::max),
        );
        let g = median(&mut gflops);
        let share = median(&mut shares);
        // What the thread keeps: the scratch's buffers as they are after the steps, and the GEMM's.
        let scratch = r.scratch.bufs.iter().map(Vec::capacity).sum::<usize>()
            + fedsim_nn::gemm::pack_buffer_floats();
        let (target, met) = match case.target {
            Some(t) => (
                format!(">= {:.0}%", t * 100.0),
                if share >= t { "yes" } else { "no" },
            ),
            None => ("-".into(), "-"),
        };
        println!(
            "| {} | {g:.1} ({lo:.1}..{hi:.1}) | {:.1} | {:.1}% | {target} | {met} | {:.0} | {per_step} | {:.1} | {} |",
            case.name,
            median(&mut paired),
            share * 100.0,
            g * 1e9 / flops * case.batch as f64,
            scratch as f64 * 4.0 / f64::from(1 << 20),
            load()
        );
        #[cfg(feature = "profile")]
        print_profile();
    }
}

/// Prints the time per section recorded by the `profile` feature, as shares of the step. Sections
/// nest (the packing inside a product), so shares may add up to more than 100%.
#[cfg(feature = "profile")]
fn print_profile() {
    let rows = fedsim_nn::perf::profile_report();
    let total: f64 = rows
        .iter()
        .filter(|r| r.0.starts_with("stack "))
        .map(|r| r.1.as_secs_f64())
        .sum();
    let mut rows = rows;
    rows.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (s, d, calls) in rows {
        eprintln!(
            "    {s:<28} {:5.1}%  {calls} calls",
            100.0 * d.as_secs_f64() / total
        );
    }
}
