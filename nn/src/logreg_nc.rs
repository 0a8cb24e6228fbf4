//! Binary logistic regression with the nonconvex regulariser of the EF21 experiments
//! (`../shared/algorithms.md` §4.8):
//!
//! `f(x) = (1/m) Σ_j log(1 + exp(−y_j a_jᵀx)) + λ Σ_k x_k² / (1 + x_k²)`
//!
//! with labels `y_j ∈ {−1, +1}` (class 0 → −1, class 1 → +1; the LIBSVM reader maps the smaller raw label to
//! class 0), raw features and no bias. Parameters are the `d` weights. The regulariser is part of every
//! client's local loss `f_i`, so `f = (1/n) Σ_i f_i` has it once.
//!
//! Besides the [`Model`] trait (with an exact `f64` path for tight tolerances), the module provides the
//! smoothness constant used for the EF21 step sizes, `L = λ_max(AᵀA)/(4m) + 2λ` ([`smoothness`]), and
//! [`Model::smoothness`], which strategies read for their step sizes.

use ndarray::ArrayView2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{EvalStats, Layout, Model, Scratch};

/// Prefix of this model's [`Model::name`]: `logreg_nonconvex(FEATURES,lambda=LAMBDA)`.
pub const NAME_PREFIX: &str = "logreg_nonconvex(";

/// Default regularisation strength λ of the EF21 experiments.
pub const DEFAULT_LAMBDA: f64 = 0.1;

/// Binary logistic regression with the nonconvex regulariser `λ Σ x_k²/(1 + x_k²)`.
#[derive(Debug, Clone)]
pub struct LogRegNonconvex {
    features: usize,
    lambda: f64,
    layout: Layout,
}

impl LogRegNonconvex {
    /// A model for `features` inputs with regularisation strength `lambda` (≥ 0).
    pub fn new(features: usize, lambda: f64) -> Self {
        let mut layout = Layout::new();
        layout.push("weight", &[features]);
        Self {
            features,
            lambda,
            layout,
        }
    }

    /// The regularisation strength λ.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Regulariser value and (into `grad`, overwriting) its gradient `λ·2x/(1 + x²)²`.
    fn regulariser(&self, params: &[f64], grad: &mut [f64]) -> f64 {
        let mut r = 0.0;
        for (g, &x) in grad.iter_mut().zip(params) {
            let q = 1.0 + x * x;
            r += x * x / q;
            *g = self.lambda * 2.0 * x / (q * q);
        }
        self.lambda * r
    }

    /// Mean loss and gradient in f64; `grad` is overwritten. Shared by both precisions.
    fn loss_grad_impl(
        &self,
        params: &[f64],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f64],
    ) -> f64 {
        debug_assert_eq!(params.len(), self.features);
        debug_assert_eq!(grad.len(), self.features);
        debug_assert_eq!(x.ncols(), self.features);
        debug_assert_eq!(y.len(), x.nrows());
        let reg = self.regulariser(params, grad);
        let rows = x.nrows();
        if rows == 0 {
            return reg;
        }
        let inv = 1.0 / rows as f64;
        let mut loss = 0.0;
        for (row, &label) in x.rows().into_iter().zip(y) {
            let s = sign(label);
            let m = s * match row.as_slice() {
                Some(a) => dot(a, params),
                None => row
                    .iter()
                    .zip(params)
                    .map(|(&a, &p)| a as f64 * p)
                    .sum::<f64>(),
            };
            // One exponential for both: e = exp(−|m|), σ(−m) and log(1 + exp(−m)).
            let e = (-m.abs()).exp();
            let sig = if m >= 0.0 {
                e / (1.0 + e)
            } else {
                1.0 / (1.0 + e)
            };
            loss += (-m).max(0.0) + e.ln_1p();
            let c = -s * sig * inv;
            match row.as_slice() {
                Some(a) => axpy(c, a, grad),
                None => {
                    for (g, &a) in grad.iter_mut().zip(row.iter()) {
                        *g += c * a as f64;
                    }
                }
            }
        }
        loss * inv + reg
    }
}

/// `+1` for class 1, `−1` otherwise.
fn sign(label: u32) -> f64 {
    if label == 1 { 1.0 } else { -1.0 }
}

/// `log(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// `Σ a_k p_k` with eight independent accumulators (vectorisable, fixed summation order).
fn dot(a: &[f32], p: &[f64]) -> f64 {
    let n = a.len().min(p.len());
    let (a, p) = (&a[..n], &p[..n]);
    let mut acc = [0.0f64; 8];
    let mut ca = a.chunks_exact(8);
    let mut cp = p.chunks_exact(8);
    for (xa, xp) in (&mut ca).zip(&mut cp) {
        let xa: &[f32; 8] = xa.try_into().unwrap_or(&[0.0; 8]);
        let xp: &[f64; 8] = xp.try_into().unwrap_or(&[0.0; 8]);
        for l in 0..8 {
            acc[l] += xa[l] as f64 * xp[l];
        }
    }
    let mut tail = 0.0;
    for (&x, &y) in ca.remainder().iter().zip(cp.remainder()) {
        tail += x as f64 * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `g += c·a`.
fn axpy(c: f64, a: &[f32], g: &mut [f64]) {
    let n = a.len().min(g.len());
    let (a, g) = (&a[..n], &mut g[..n]);
    let mut ca = a.chunks_exact(8);
    let mut cg = g.chunks_exact_mut(8);
    for (xa, xg) in (&mut ca).zip(&mut cg) {
        for (gl, al) in xg.iter_mut().zip(xa) {
            *gl += c * *al as f64;
        }
    }
    for (gl, al) in cg.into_remainder().iter_mut().zip(ca.remainder()) {
        *gl += c * *al as f64;
    }
}

impl Model for LogRegNonconvex {
    fn smoothness(&self, x: ArrayView2<'_, f32>, rows: &[u32]) -> Option<f64> {
        Some(smoothness(x, rows, self.lambda))
    }

    fn name(&self) -> String {
        format!("{NAME_PREFIX}{},lambda={})", self.features, self.lambda)
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_len(&self) -> usize {
        self.features
    }

    fn num_classes(&self) -> usize {
        2
    }

    /// `x⁰ ~ N(0, I)` from the seed (as the EF21 reference code, with its own generator: ChaCha8 and
    /// Box–Muller), rounded to f32.
    fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::with_capacity(self.features);
        while out.len() < self.features {
            // Box–Muller: two independent standard normals from two uniforms in (0, 1].
            let u1: f64 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random::<f64>();
            let r = (-2.0 * u1.ln()).sqrt();
            let t = std::f64::consts::TAU * u2;
            out.push((r * t.cos()) as f32);
            if out.len() < self.features {
                out.push((r * t.sin()) as f32);
            }
        }
        out
    }

    /// Computed in f64 (through [`Model::loss_grad_f64`]) and rounded to f32.
    fn loss_grad(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f32],
        _scratch: &mut Scratch,
    ) -> f32 {
        let p: Vec<f64> = params.iter().map(|&v| v as f64).collect();
        let mut g = vec![0.0f64; params.len()];
        let loss = self.loss_grad_impl(&p, x, y, &mut g);
        for (o, v) in grad.iter_mut().zip(&g) {
            *o = *v as f32;
        }
        loss as f32
    }

    /// Per-sample loss is the logistic loss plus the regulariser (so the mean loss is `f`); a sample is
    /// predicted as class 1 when `aᵀx > 0`.
    fn evaluate(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        _scratch: &mut Scratch,
        stats: &mut EvalStats,
    ) {
        let p: Vec<f64> = params.iter().map(|&v| v as f64).collect();
        let mut scratch = vec![0.0; p.len()];
        let reg = self.regulariser(&p, &mut scratch);
        for (row, &label) in x.rows().into_iter().zip(y) {
            let z = row.iter().zip(&p).map(|(&a, &w)| a as f64 * w).sum::<f64>();
            stats.loss_sum += softplus(-sign(label) * z) + reg;
            let pred = u32::from(z > 0.0);
            stats.count += 1;
            if let Some(c) = stats.class_count.get_mut(label as usize) {
                *c += 1;
            }
            if pred == label {
                stats.correct += 1;
                if let Some(c) = stats.class_correct.get_mut(label as usize) {
                    *c += 1;
                }
            }
        }
    }

    /// `4·features`: forward dot product and gradient axpy.
    fn train_flops_per_sample(&self) -> f64 {
        4.0 * self.features as f64
    }

    /// `2·features`.
    fn eval_flops_per_sample(&self) -> f64 {
        2.0 * self.features as f64
    }

    fn loss_grad_f64(
        &self,
        params: &[f64],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f64],
    ) -> Option<f64> {
        Some(self.loss_grad_impl(params, x, y, grad))
    }
}

/// Smoothness constant of the model's loss on the rows `rows` of `x`:
/// `L = λ_max(AᵀA)/(4m) + 2λ` with `A` the `m` selected rows (`../shared/algorithms.md` §4.8; `2λ` bounds
/// the regulariser's curvature). `λ_max` comes from the Gram matrix `AᵀA` (accumulated in f64 from the
/// nonzero entries of each row) by power iteration from the all-ones vector, stopped when the Rayleigh
/// quotient changes by less than 1e-14 relatively (or after 100,000 iterations). With no rows, `2λ`.
pub fn smoothness(x: ArrayView2<'_, f32>, rows: &[u32], lambda: f64) -> f64 {
    let m = rows.len();
    if m == 0 {
        return 2.0 * lambda;
    }
    let d = x.ncols();
    let mut gram = vec![0.0f64; d * d];
    let mut nz: Vec<(usize, f64)> = Vec::with_capacity(d);
    for &r in rows {
        nz.clear();
        let row = x.row(r as usize);
        nz.extend(
            row.iter()
                .enumerate()
                .filter(|(_, v)| **v != 0.0)
                .map(|(j, &v)| (j, v as f64)),
        );
        for &(j, vj) in &nz {
            let line = &mut gram[j * d..(j + 1) * d];
            for &(k, vk) in &nz {
                line[k] += vj * vk;
            }
        }
    }
    largest_eigenvalue(&gram, d) / (4.0 * m as f64) + 2.0 * lambda
}

/// Largest eigenvalue of the symmetric positive semidefinite `d × d` matrix `a` (row-major) by power
/// iteration from the all-ones vector.
pub fn largest_eigenvalue(a: &[f64], d: usize) -> f64 {
    if d == 0 {
        return 0.0;
    }
    let mut v = vec![1.0 / (d as f64).sqrt(); d];
    let mut w = vec![0.0f64; d];
    let mut lambda = 0.0f64;
    for _ in 0..100_000 {
        for (i, wi) in w.iter_mut().enumerate() {
            *wi = a[i * d..(i + 1) * d]
                .iter()
                .zip(&v)
                .map(|(x, y)| x * y)
                .sum();
        }
        // Rayleigh quotient vᵀAv with ||v|| = 1.
        let rq: f64 = w.iter().zip(&v).map(|(x, y)| x * y).sum();
        let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        for (vi, wi) in v.iter_mut().zip(&w) {
            *vi = wi / norm;
        }
        let done = (rq - lambda).abs() <= 1e-14 * rq.abs();
        lambda = rq;
        if done {
            break;
        }
    }
    lambda
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::testutil::check_gradient;

    fn sparse_binary(rows: usize, d: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((rows, d), |_| {
            if rng.random::<f64>() < 0.3 {
                rng.random_range(-1.0f32..2.0)
            } else {
                0.0
            }
        });
        let y = (0..rows).map(|_| rng.random_range(0..2u32)).collect();
        (x, y)
    }

    fn loss64(m: &LogRegNonconvex, p: &[f64], x: &Array2<f32>, y: &[u32]) -> f64 {
        let mut g = vec![0.0; p.len()];
        m.loss_grad_impl(p, x.view(), y, &mut g)
    }

    #[test]
    fn f64_gradient_matches_finite_differences() {
        let m = LogRegNonconvex::new(13, 0.1);
        let (x, y) = sparse_binary(40, 13, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let p: Vec<f64> = (0..13).map(|_| rng.random_range(-2.0..2.0)).collect();
        let mut g = vec![0.0; 13];
        m.loss_grad_f64(&p, x.view(), &y, &mut g).unwrap();
        let h = 1e-6;
        for i in 0..13 {
            let mut q = p.clone();
            q[i] = p[i] + h;
            let up = loss64(&m, &q, &x, &y);
            q[i] = p[i] - h;
            let down = loss64(&m, &q, &x, &y);
            let fd = (up - down) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() <= 1e-7 * (1.0 + fd.abs()),
                "coord {i}: fd {fd} vs {}",
                g[i]
            );
        }
    }

    #[test]
    fn f32_gradient_matches_finite_differences() {
        // The shared checker draws dense random inputs and labels in {0, 1}.
        check_gradient(&LogRegNonconvex::new(11, 0.1), 17, 5);
    }

    #[test]
    fn f32_and_f64_paths_agree_and_evaluate_matches() {
        let m = LogRegNonconvex::new(20, 0.1);
        let (x, y) = sparse_binary(30, 20, 4);
        let p32 = m.init_params(7);
        let p64: Vec<f64> = p32.iter().map(|&v| v as f64).collect();
        let mut g32 = vec![0.0f32; 20];
        let mut g64 = vec![0.0f64; 20];
        let l32 = m.loss_grad(&p32, x.view(), &y, &mut g32, &mut Scratch::default());
        let l64 = m.loss_grad_f64(&p64, x.view(), &y, &mut g64).unwrap();
        assert!((l32 as f64 - l64).abs() < 1e-6 * l64.abs());
        for (a, b) in g32.iter().zip(&g64) {
            assert!((*a as f64 - b).abs() < 1e-6 * (1.0 + b.abs()));
        }
        let mut st = EvalStats::new(2);
        m.evaluate(&p32, x.view(), &y, &mut Scratch::default(), &mut st);
        assert_eq!(st.count, 30);
        assert!((st.mean_loss() - l64).abs() < 1e-9 * l64.abs());
        // A non-contiguous view gives the same gradient as its contiguous copy.
        let xs = x.slice(ndarray::s![..;2, ..]);
        let ys: Vec<u32> = y.iter().step_by(2).copied().collect();
        let mut ga = vec![0.0; 20];
        let mut gb = vec![0.0; 20];
        let la = m.loss_grad_f64(&p64, xs, &ys, &mut ga).unwrap();
        let lb = m
            .loss_grad_f64(&p64, xs.to_owned().view(), &ys, &mut gb)
            .unwrap();
        assert!((la - lb).abs() < 1e-12 && ga.iter().zip(&gb).all(|(a, b)| (a - b).abs() < 1e-12));
    }

    #[test]
    fn hand_computed_values() {
        // One sample a = (1, 0), class 1 (y = +1), x = (0, 1): margin 0 → loss log 2; reg λ·1/2.
        let m = LogRegNonconvex::new(2, 0.1);
        let x = Array2::from_shape_vec((1, 2), vec![1.0f32, 0.0]).unwrap();
        let mut g = vec![0.0; 2];
        let l = m
            .loss_grad_f64(&[0.0, 1.0], x.view(), &[1], &mut g)
            .unwrap();
        assert!((l - (2f64.ln() + 0.05)).abs() < 1e-15);
        // ∂/∂x0 = −y a0 σ(−0) = −0.5; ∂/∂x1 = λ·2·1/(1+1)² = 0.05.
        assert!((g[0] + 0.5).abs() < 1e-15 && (g[1] - 0.05).abs() < 1e-15);
        // Class 0 means y = −1: the gradient flips sign.
        m.loss_grad_f64(&[0.0, 1.0], x.view(), &[0], &mut g)
            .unwrap();
        assert!((g[0] - 0.5).abs() < 1e-15);
        // Extreme margins stay finite.
        let l = m
            .loss_grad_f64(&[1e6, 0.0], x.view(), &[0], &mut g)
            .unwrap();
        assert!(l.is_finite() && (l - 1e6).abs() < 1.0 && g.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn init_is_standard_normal_and_deterministic() {
        let m = LogRegNonconvex::new(20_001, 0.1);
        let a = m.init_params(3);
        assert_eq!(a, m.init_params(3));
        assert_ne!(a, m.init_params(4));
        let n = a.len() as f64;
        let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }

    #[test]
    fn the_model_states_its_smoothness() {
        let m = LogRegNonconvex::new(3, 0.25);
        let x = ndarray::Array2::<f32>::zeros((2, 3));
        // With zero features only the regulariser's curvature bound 2λ remains.
        assert_eq!(m.smoothness(x.view(), &[0, 1]), Some(0.5));
    }

    #[test]
    fn smoothness_matches_a_dense_eigenvalue_bound() {
        // Diagonal Gram: A = diag(3, 1) stacked → AᵀA = diag(9, 1); m = 2 → L = 9/8 + 2λ.
        let x = Array2::from_shape_vec((2, 2), vec![3.0f32, 0.0, 0.0, 1.0]).unwrap();
        let l = smoothness(x.view(), &[0, 1], 0.1);
        assert!((l - (9.0 / 8.0 + 0.2)).abs() < 1e-12, "{l}");
        // Random matrix: λ_max equals the maximum of the Rayleigh quotient, checked against random vectors
        // (never above) and against the result's own quotient.
        let (x, _) = sparse_binary(50, 9, 8);
        let rows: Vec<u32> = (0..50).collect();
        let lmax = (smoothness(x.view(), &rows, 0.0)) * 4.0 * 50.0;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..200 {
            let v: Vec<f64> = (0..9).map(|_| rng.random_range(-1.0..1.0)).collect();
            let av: Vec<f64> = x
                .rows()
                .into_iter()
                .map(|r| r.iter().zip(&v).map(|(&a, b)| a as f64 * b).sum())
                .collect();
            let q = av.iter().map(|z| z * z).sum::<f64>() / v.iter().map(|z| z * z).sum::<f64>();
            assert!(q <= lmax * (1.0 + 1e-12));
        }
        assert_eq!(smoothness(x.view(), &[], 0.1), 0.2);
    }
}
