//! Throughput helpers: a probe of the core's peak `f32` fused multiply-add rate, and the name of the
//! matrix-product kernels in use, so that training throughput can be reported as a share of peak.

use std::time::{Duration, Instant};

use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Model, Scratch};

/// Independent accumulators of the probe loop: at least latency × FMA ports (4 × 2 on current x86
/// cores), so the loop is bound by throughput.
const ACCUMULATORS: usize = 12;

/// FLOPs of one iteration of [`fma_probe`]: 12 accumulators × 8 lanes × 2 (multiply and add).
pub const FMA_PROBE_FLOPS_PER_ITER: u64 = (ACCUMULATORS * 8 * 2) as u64;

/// Runs `iters` iterations of a register-only loop of 12 independent 8-lane fused multiply-adds
/// (AVX2+FMA `vfmadd` when available, `f32::mul_add` otherwise) and returns a checksum that keeps the
/// work from being optimised away. Each iteration is [`FMA_PROBE_FLOPS_PER_ITER`] FLOPs.
pub fn fma_probe(iters: u64) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if crate::gemm::has_avx2_fma() {
        // SAFETY: the features were detected at run time.
        return unsafe { fma_probe_avx2(iters) };
    }
    fma_probe_portable(iters)
}

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
    if n % 2 == 1 { v[n / 2] } else { 0.5 * (v[n / 2 - 1] + v[n / 2]) }
}

/// The matrix-product kernels selected on this machine: `"avx2+fma"` or the portable fallback.
pub fn kernels() -> &'static str {
    crate::gemm::kernel_name()
}

/// Accumulated time per named section of the models' steps (only with the `profile` feature).
#[cfg(feature = "profile")]
mod sections {
    use std::cell::RefCell;
    use std::time::Duration;

    thread_local! {
        static TIMES: RefCell<Vec<(&'static str, Duration, u64)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn add(name: &'static str, d: Duration) {
        TIMES.with(|t| {
            let mut t = t.borrow_mut();
            match t.iter_mut().find(|e| e.0 == name) {
                Some(e) => {
                    e.1 += d;
                    e.2 += 1;
                }
                None => t.push((name, d, 1)),
            }
        });
    }

    pub(crate) fn take() -> Vec<(&'static str, Duration, u64)> {
        TIMES.with(|t| std::mem::take(&mut *t.borrow_mut()))
    }
}

/// A timed section of a model step: records its lifetime under `name` when the `profile` feature
/// is on, and is a no-op otherwise.
pub(crate) struct Section {
    #[cfg(feature = "profile")]
    name: &'static str,
    #[cfg(feature = "profile")]
    start: Instant,
}

impl Section {
    /// Starts a section.
    #[inline(always)]
    pub(crate) fn new(name: &'static str) -> Self {
        #[cfg(not(feature = "profile"))]
        let _ = name;
        Self {
            #[cfg(feature = "profile")]
            name,
            #[cfg(feature = "profile")]
            start: Instant::now(),
        }
    }
}

/// Without the `profile` feature a section records nothing; the empty `Drop` keeps the explicit
/// `drop(section)` that ends a section before its scope does meaningful in both builds.
#[cfg(not(feature = "profile"))]
impl Drop for Section {
    #[inline(always)]
    fn drop(&mut self) {}
}

#[cfg(feature = "profile")]
impl Drop for Section {
    fn drop(&mut self) {
        sections::add(self.name, self.start.elapsed());
    }
}

/// Time spent in each named section of the models on this thread since the last call, as
/// `(name, total, calls)` (only with the `profile` feature).
#[cfg(feature = "profile")]
pub fn profile_report() -> Vec<(&'static str, Duration, u64)> {
    sections::take()
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
        let xs = (0..pool).map(|_| Array2::from_shape_fn((batch, f), |_| rng.random::<f32>())).collect();
        let ys = (0..pool).map(|_| (0..batch).map(|_| rng.random_range(0..k.max(1))).collect()).collect();
        let params = model.init_params(seed);
        let grad = vec![0.0; params.len()];
        Self { model, batch, params, grad, xs, ys, scratch: Scratch::default(), next: 0 }
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
        self.model.loss_grad(&self.params, self.xs[i].view(), &self.ys[i], &mut self.grad, &mut self.scratch)
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
                steps = ((steps as f64 * run.as_secs_f64() / e.as_secs_f64().max(1e-9)) as u64).max(1);
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
        let a = fma_probe(1000);
        let b = fma_probe_portable(1000);
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0), "{a} vs {b}");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn workload_runs() {
        let mut w = TrainWorkload::new(Box::new(crate::Mlp::new(20, &[8], 3)), 5, 1);
        assert!(w.step().is_finite());
        assert_eq!(w.batch(), 5);
        assert_eq!(w.flops_per_step(), 5.0 * (4.0 * (160.0 + 24.0) + 2.0 * 24.0));
        let rates = w.measure(Duration::from_millis(2), 2);
        assert_eq!(rates.len(), 2);
        assert!(rates.iter().all(|&r| r > 0.0));
    }
}
