//! Throughput helpers: a probe of the core's peak `f32` fused multiply-add rate with the widest
//! vectors the CPU runs, and the name of the matrix-product kernels in use, so that training
//! throughput can be reported as a share of peak.

use std::time::{Duration, Instant};

use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[cfg(feature = "profile")]
pub use crate::profile::profile_report;
use crate::{Model, Scratch};

/// Independent accumulators of the probe loop: at least latency × FMA ports (4 × 2 on current x86
/// cores), so the loop is bound by throughput.
const ACCUMULATORS: usize = 12;

/// FLOPs of one iteration of [`fma_probe`]: 12 accumulators × 8 lanes × 2 (multiply and add). With
/// 512-bit vectors one pass over the 12 accumulators counts as two iterations, so the figure holds
/// whichever width [`fma_probe`] measures.
pub const FMA_PROBE_FLOPS_PER_ITER: u64 = (ACCUMULATORS * 8 * 2) as u64;

/// The vector width [`fma_probe`] measures on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FmaIsa {
    /// `f32::mul_add` on arrays of 8 (whatever the compiler makes of it).
    Portable,
    /// 256-bit `vfmadd` (AVX2 + FMA).
    Avx2,
    /// 512-bit `vfmadd` (AVX-512F).
    Avx512,
}

impl FmaIsa {
    /// The widest fused multiply-add this CPU runs.
    pub fn widest() -> Self {
        if crate::isa::has_avx512f() {
            FmaIsa::Avx512
        } else if crate::isa::has_avx2_fma() {
            FmaIsa::Avx2
        } else {
            FmaIsa::Portable
        }
    }

    /// Description for reports, e.g. `"avx512f 512-bit FMA"`.
    pub fn label(self) -> &'static str {
        match self {
            FmaIsa::Portable => "portable f32::mul_add",
            FmaIsa::Avx2 => "avx2+fma 256-bit FMA",
            FmaIsa::Avx512 => "avx512f 512-bit FMA",
        }
    }
}

/// Description of the fused multiply-add [`fma_probe`] measures on this CPU (the widest it runs).
pub fn fma_probe_isa() -> &'static str {
    FmaIsa::widest().label()
}

/// Runs `iters` iterations of a register-only loop of 12 independent fused multiply-adds with the
/// widest vectors the CPU runs (see [`FmaIsa::widest`]: 512-bit `vfmadd` with AVX-512F, 256-bit with
/// AVX2 + FMA, `f32::mul_add` otherwise) and returns a checksum that keeps the work from being
/// optimised away. Each iteration is [`FMA_PROBE_FLOPS_PER_ITER`] FLOPs whatever the width.
pub fn fma_probe(iters: u64) -> f32 {
    fma_probe_with(FmaIsa::widest(), iters)
}

/// [`fma_probe`] with a given vector width (the portable loop runs instead when the CPU lacks it).
pub fn fma_probe_with(isa: FmaIsa, iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    match isa {
        FmaIsa::Avx512 if crate::isa::has_avx512f() => {
            // SAFETY: AVX-512F was detected at run time.
            return unsafe { fma_probe_avx512(iters) };
        }
        FmaIsa::Avx2 if crate::isa::has_avx2_fma() => {
            // SAFETY: AVX2 and FMA were detected at run time.
            return unsafe { fma_probe_avx2(iters) };
        }
        _ => {}
    }
    let _ = isa;
    fma_probe_portable(iters)
}

/// 256-bit probe: `iters` passes over 12 accumulators of 8 lanes.
///
/// # Safety
///
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_probe_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(std::hint::black_box(0.999_999));
    let b = _mm256_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm256_setzero_ps(); ACCUMULATORS];
    for (i, x) in acc.iter_mut().enumerate() {
        *x = _mm256_set1_ps(i as f32);
    }
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm256_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm256_setzero_ps();
    for x in acc {
        s = _mm256_add_ps(s, x);
    }
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// 512-bit probe: `iters / 2` passes over 12 accumulators of 16 lanes (two iterations' FLOPs each),
/// plus one pass over 6 of them when `iters` is odd.
///
/// # Safety
///
/// The CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fma_probe_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(std::hint::black_box(0.999_999));
    let b = _mm512_set1_ps(std::hint::black_box(1e-7));
    let mut acc = [_mm512_setzero_ps(); ACCUMULATORS];
    for (i, x) in acc.iter_mut().enumerate() {
        *x = _mm512_set1_ps(i as f32);
    }
    for _ in 0..iters / 2 {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    if iters % 2 == 1 {
        for x in acc.iter_mut().take(ACCUMULATORS / 2) {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    let mut s = _mm512_setzero_ps();
    for x in acc {
        s = _mm512_add_ps(s, x);
    }
    // Every lane appears twice as often as in the 256-bit probe: halve, so checksums compare.
    _mm512_reduce_add_ps(s) / 2.0
}

/// Portable probe: `iters` passes over 12 arrays of 8 lanes.
fn fma_probe_portable(iters: u64) -> f32 {
    let a = std::hint::black_box(0.999_999f32);
    let b = std::hint::black_box(1e-7f32);
    let mut acc = [[0.0f32; 8]; ACCUMULATORS];
    for (i, x) in acc.iter_mut().enumerate() {
        *x = [i as f32; 8];
    }
    for _ in 0..iters {
        for x in acc.iter_mut() {
            for v in x.iter_mut() {
                *v = v.mul_add(a, b);
            }
        }
    }
    acc.iter().flatten().sum()
}

/// Measures the peak single-thread `f32` FMA rate in GFLOP/s: the median of `repeats` runs of
/// [`fma_probe`], each lasting about `run`.
pub fn fma_peak_gflops(run: Duration, repeats: usize) -> f64 {
    // Calibrate the iteration count on a short run.
    let mut iters = 1u64 << 16;
    loop {
        let t = Instant::now();
        std::hint::black_box(fma_probe(iters));
        let e = t.elapsed();
        if e >= run / 8 || iters >= 1 << 40 {
            let scale = run.as_secs_f64() / e.as_secs_f64().max(1e-9);
            iters = ((iters as f64 * scale) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let mut rates: Vec<f64> = (0..repeats.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(fma_probe(iters));
            (iters * FMA_PROBE_FLOPS_PER_ITER) as f64 / t.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    median(&mut rates)
}

/// Median of `v` (sorted in place; 0 when empty).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The matrix-product kernels selected on this machine: `"avx512f"`, `"avx2+fma"` or
/// `"portable (matrixmultiply)"` (see [`crate::isa`] for the choice and `FEDSIM_KERNEL`).
pub fn kernels() -> &'static str {
    crate::isa::selected().label()
}

/// A training-step workload on random data (pixels in `[0, 1)`, uniform labels), for throughput
/// measurements: each [`TrainWorkload::step`] runs `loss_grad` on the next batch of a fixed pool.
#[derive(Debug)]
pub struct TrainWorkload {
    model: Box<dyn Model>,
    batch: usize,
    params: Vec<f32>,
    grad: Vec<f32>,
    xs: Vec<Array2<f32>>,
    ys: Vec<Vec<u32>>,
    scratch: Scratch,
    next: usize,
}

impl TrainWorkload {
    /// A workload of `batch`-sample steps for `model`, with data and parameters drawn from `seed`.
    /// The pool holds at least 2,048 samples (at most 64 batches), so inputs are not all cache-hot.
    pub fn new(model: Box<dyn Model>, batch: usize, seed: u64) -> Self {
        let batch = batch.max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let pool = 2048usize.div_ceil(batch).clamp(2, 64);
        let (f, k) = (model.input_len(), model.num_classes() as u32);
        let xs = (0..pool)
            .map(|_| Array2::from_shape_fn((batch, f), |_| rng.random::<f32>()))
            .collect();
        let ys = (0..pool)
            .map(|_| (0..batch).map(|_| rng.random_range(0..k.max(1))).collect())
            .collect();
        let params = model.init_params(seed);
        let grad = vec![0.0; params.len()];
        Self {
            model,
            batch,
            params,
            grad,
            xs,
            ys,
            scratch: Scratch::default(),
            next: 0,
        }
    }

    /// The model.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// Samples per step.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// FLOPs of one step (the model's `train_flops_per_sample` × batch).
    pub fn flops_per_step(&self) -> f64 {
        self.model.train_flops_per_sample() * self.batch as f64
    }

    /// One training step (forward, backward, gradient written) on the next batch; returns the loss.
    pub fn step(&mut self) -> f32 {
        let i = self.next;
        self.next = (i + 1) % self.xs.len();
        self.model.loss_grad(
            &self.params,
            self.xs[i].view(),
            &self.ys[i],
            &mut self.grad,
            &mut self.scratch,
        )
    }

    /// Runs `steps` steps and returns the elapsed time.
    pub fn time_steps(&mut self, steps: u64) -> Duration {
        let t = Instant::now();
        for _ in 0..steps {
            std::hint::black_box(self.step());
        }
        t.elapsed()
    }

    /// Samples per second of `repeats` runs of about `run` each (after a warm-up of one run).
    pub fn measure(&mut self, run: Duration, repeats: usize) -> Vec<f64> {
        // Warm up (buffers grow, caches fill) and calibrate the number of steps per run.
        let mut steps = 1u64;
        loop {
            let e = self.time_steps(steps);
            if e >= run / 4 {
                steps =
                    ((steps as f64 * run.as_secs_f64() / e.as_secs_f64().max(1e-9)) as u64).max(1);
                break;
            }
            steps *= 2;
        }
        (0..repeats.max(1))
            .map(|_| {
                let e = self.time_steps(steps);
                (steps as usize * self.batch) as f64 / e.as_secs_f64()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_paths_agree() {
        for iters in [1000, 1001] {
            let b = fma_probe_portable(iters);
            for isa in [
                FmaIsa::Avx512,
                FmaIsa::Avx2,
                FmaIsa::Portable,
                FmaIsa::widest(),
            ] {
                let a = fma_probe_with(isa, iters);
                assert!(
                    (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                    "{isa:?}: {a} vs {b}"
                );
            }
        }
        assert!(fma_probe_isa().contains("FMA") || fma_probe_isa().contains("mul_add"));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn workload_runs() {
        let mut w = TrainWorkload::new(Box::new(crate::Mlp::new(20, &[8], 3)), 5, 1);
        assert!(w.step().is_finite());
        assert_eq!(w.batch(), 5);
        assert_eq!(
            w.flops_per_step(),
            5.0 * (4.0 * (160.0 + 24.0) + 2.0 * 24.0)
        );
        let rates = w.measure(Duration::from_millis(2), 2);
        assert_eq!(rates.len(), 2);
        assert!(rates.iter().all(|&r| r > 0.0));
    }
}
