//! The matrix products of the models, with the operand layouts the models use, and one runner per
//! implementation (this crate's kernels, `matrixmultiply`, `gemm`). Shared by
//! `examples/gemm_vs_libs` and `benches/gemm.rs`.

use fedsim_nn::gemm::{matmul, matmul_nt};
use fedsim_nn::isa::Isa;

/// One product `C (m×n) = A (m×k) · B (k×n)` as a model runs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    /// Model and product.
    pub(crate) label: &'static str,
    /// Batch (0 when the product does not depend on it).
    pub(crate) batch: usize,
    /// Rows of `C`.
    pub(crate) m: usize,
    /// Columns of `C`.
    pub(crate) n: usize,
    /// Reduction length.
    pub(crate) k: usize,
    /// `true`: `B` is stored `n×k` (`C = A·Bᵀ`, this crate's dot-product kernel); `false`: `B` is a
    /// row-major `k×n` matrix.
    pub(crate) bt: bool,
    /// `A` stored transposed (column-major `m×k`), as for weight gradients `Xᵀ·dY`.
    pub(crate) at: bool,
}

impl Case {
    /// FLOPs of one product.
    pub(crate) fn flops(&self) -> f64 {
        2.0 * (self.m * self.n * self.k) as f64
    }
}

/// Every product of the 2NN (784-200-200-10), the MNIST CNN (conv 5×5 32, 64; dense 3136-512-10)
/// and logistic regression (784-10), at batches 10 and 64. The CNN's convolutions run on chunks of
/// 3 samples (`cnn::COL_BUDGET`) and conv2 on groups of 4 input channels, so their products do not
/// depend on the batch.
pub(crate) fn cases() -> Vec<Case> {
    let c = |label, batch, m, n, k, bt, at| Case {
        label,
        batch,
        m,
        n,
        k,
        bt,
        at,
    };
    let mut v = Vec::new();
    for b in [10, 64] {
        v.extend([
            c("2NN fc1 fwd", b, b, 200, 784, false, false),
            c("2NN fc2 fwd", b, b, 200, 200, false, false),
            c("2NN fc3 fwd", b, b, 10, 200, false, false),
            c("2NN fc1 dW", b, 784, 200, b, false, true),
            c("2NN fc2 dW", b, 200, 200, b, false, true),
            c("2NN fc3 dW", b, 200, 10, b, false, true),
            c("2NN fc2 dX", b, b, 200, 200, true, false),
            c("2NN fc3 dX", b, b, 200, 10, true, false),
        ]);
    }
    let (p1, p2) = (3 * 784, 3 * 196);
    v.extend([
        c("CNN conv1 fwd", 0, 32, p1, 25, false, true),
        c("CNN conv1 dW", 0, 25, 32, p1, true, false),
        c(
            "CNN conv2 fwd (4-channel group)",
            0,
            64,
            p2,
            100,
            false,
            true,
        ),
        c(
            "CNN conv2 dW (4-channel group)",
            0,
            100,
            64,
            p2,
            true,
            false,
        ),
        c(
            "CNN conv2 dcol (4-channel group)",
            0,
            100,
            p2,
            64,
            false,
            false,
        ),
    ]);
    for b in [10, 64] {
        v.extend([
            c("CNN fc1 fwd", b, b, 512, 3136, false, false),
            c("CNN fc1 dW", b, 3136, 512, b, false, true),
            c("CNN fc1 dX", b, b, 3136, 512, true, false),
            c("CNN fc2 fwd", b, b, 10, 512, false, false),
            c("CNN fc2 dW", b, 512, 10, b, false, true),
            c("CNN fc2 dX", b, b, 512, 10, true, false),
        ]);
    }
    for b in [10, 64] {
        v.extend([
            c("logreg fwd", b, b, 10, 784, true, false),
            c("logreg dW", b, 10, 784, b, false, true),
        ]);
    }
    v
}

/// An implementation of the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lib {
    /// This crate's kernels of one family.
    Ours(Isa),
    /// `matrixmultiply::sgemm`.
    MatrixMultiply,
    /// `gemm::gemm`, single-threaded.
    Gemm,
}

impl Lib {
    /// Column name.
    pub(crate) fn name(self) -> String {
        match self {
            Lib::Ours(isa) => format!("fedsim-nn {}", isa.name()),
            Lib::MatrixMultiply => "matrixmultiply 0.3".into(),
            Lib::Gemm => "gemm 0.19".into(),
        }
    }
}

/// Operands of one case (random, in `[-1, 1)`).
pub(crate) struct Operands {
    /// `A`, `m×k`, row-major or (with `at`) column-major.
    pub(crate) a: Vec<f32>,
    /// `B`, `k×n` row-major or (with `bt`) `n×k` row-major.
    pub(crate) b: Vec<f32>,
    /// `C`, `m×n` row-major.
    pub(crate) c: Vec<f32>,
}

impl Operands {
    /// Operands for `case` from a fixed seed.
    pub(crate) fn new(case: &Case) -> Self {
        let mut s = 0x9e37_79b9_7f4a_7c15u64 ^ (case.m * 31 + case.n * 7 + case.k) as u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let a = (0..case.m * case.k).map(|_| next()).collect();
        let b = (0..case.k * case.n).map(|_| next()).collect();
        Self {
            a,
            b,
            c: vec![0.0; case.m * case.n],
        }
    }
}

/// Strides `(row, column)` of `A` and `B` for a case.
fn strides(case: &Case) -> ((usize, usize), (usize, usize)) {
    let a = if case.at { (1, case.m) } else { (case.k, 1) };
    let b = if case.bt { (1, case.k) } else { (case.n, 1) };
    (a, b)
}

/// Runs one product `C = A·B` of `case` with `lib`.
pub(crate) fn run(lib: Lib, case: &Case, ops: &mut Operands) {
    let Case { m, n, k, .. } = *case;
    let ((rsa, csa), (rsb, csb)) = strides(case);
    let (a, b, c) = (&ops.a, &ops.b, &mut ops.c);
    match lib {
        Lib::Ours(isa) if case.bt => matmul_nt(isa, m, n, k, a, rsa, b, csb, c, n, 1, false),
        Lib::Ours(isa) => matmul(isa, m, n, k, a, rsa, csa, b, rsb, c, n, false),
        Lib::MatrixMultiply => {
            assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
            // SAFETY: the slices hold m·k, k·n and m·n floats, which the strides address exactly.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    rsa as isize,
                    csa as isize,
                    b.as_ptr(),
                    rsb as isize,
                    csb as isize,
                    0.0,
                    c.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        }
        Lib::Gemm => {
            assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
            // SAFETY: as above; `gemm` takes column strides first, and with `read_dst = false`
            // computes `C = 1·A·B` without reading `C`.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    csa as isize,
                    rsa as isize,
                    b.as_ptr(),
                    csb as isize,
                    rsb as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        }
    }
}

/// Largest relative difference between `C` of `lib` and of `reference` (a check that every
/// implementation computes the same product).
pub(crate) fn max_rel_diff(lib: Lib, reference: Lib, case: &Case) -> f64 {
    let mut x = Operands::new(case);
    let mut y = Operands::new(case);
    run(lib, case, &mut x);
    run(reference, case, &mut y);
    let scale = y.c.iter().fold(1e-30f64, |s, v| s.max(v.abs() as f64));
    x.c.iter()
        .zip(&y.c)
        .map(|(u, v)| (u - v).abs() as f64 / scale)
        .fold(0.0, f64::max)
}
