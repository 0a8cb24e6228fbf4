//! Single-threaded `f32` matrix products used by every layer.
//!
//! Two product shapes cover all layers:
//! - `nn`: `C = A·B` where `B` and `C` are row-major with unit column stride and `A` has any
//!   strides. The micro-kernel broadcasts elements of `A` and streams rows of `B` (no packing: `B`
//!   rows are read in place, which matters for small batches where packing a weight matrix would
//!   cost as much as the product itself).
//! - `nt`: `C = A·Bᵀ` where `A` and `B` are row-major with unit stride along the reduction; the
//!   micro-kernel keeps vector partial sums and reduces them horizontally at the end.
//!
//! # Kernel families, chosen at run time
//!
//! The family comes from [`crate::isa::selected`]: on x86-64 the hand-written AVX-512F kernels
//! (`x86_avx512`) when the CPU has AVX-512F, else the AVX2 + FMA kernels (`x86_avx2`), else a
//! portable path calling `matrixmultiply` (`portable`). Set `FEDSIM_KERNEL=avx512`, `avx2` or
//! `portable` to force one (read once per process; `auto` or unset picks the widest).
//!
//! Both x86 families share one driver (`x86`: reduction blocks, panels, packing), which fixes the
//! order in which every element of `C` is summed; they differ only in how many elements a
//! micro-kernel computes side by side. So the AVX-512 and AVX2 kernels give **bit-identical**
//! results, and every family is deterministic: the summation order depends only on the shapes,
//! never on the thread or timing. The portable path agrees with them to rounding only.
//!
//! Every entry point checks (with real assertions) that the slices cover the addressed elements, so
//! the unsafe kernels can never read or write out of bounds.

use crate::isa::{self, Isa};

#[cfg(target_arch = "x86_64")]
mod pack;
mod portable;
#[cfg(test)]
mod tests;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_avx2;
#[cfg(target_arch = "x86_64")]
mod x86_avx512;

/// How `C` is initialised before the product is added.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Init<'a> {
    /// `C = A·B`.
    Zero,
    /// `C += A·B`.
    Acc,
    /// `C[i][j] = bias[i] + (A·B)[i][j]` (one bias per row).
    RowBias(&'a [f32]),
    /// `C[i][j] = bias[j] + (A·B)[i][j]` (one bias per column).
    ColBias(&'a [f32]),
}

/// Smallest slice length covering `rows × cols` elements at the given strides (0 when empty).
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

/// Checks that a bias covers the rows or columns it initialises.
fn check_init(init: Init<'_>, m: usize, n: usize) {
    match init {
        Init::RowBias(b) => assert!(b.len() >= m, "row bias too short"),
        Init::ColBias(b) => assert!(b.len() >= n, "column bias too short"),
        Init::Zero | Init::Acc => {}
    }
}

/// Panics unless this CPU runs `isa`.
fn check_isa(isa: Isa) {
    assert!(
        isa.is_available(),
        "gemm: this CPU cannot run the {} kernels",
        isa.name()
    );
}

/// `C (m×n) = init + A (m×k) · B (k×n)`, then `max(·, 0)` if `relu`, with the kernels of
/// [`isa::selected`].
///
/// `A[i][p] = a[i·rsa + p·csa]`, `B[p][j] = b[p·rsb + j]`, `C[i][j] = c[i·rsc + j]`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn nn(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    c: &mut [f32],
    rsc: usize,
    init: Init<'_>,
    relu: bool,
) {
    nn_with(
        isa::selected(),
        m,
        n,
        k,
        a,
        rsa,
        csa,
        b,
        rsb,
        c,
        rsc,
        init,
        relu,
    );
}

/// [`nn`] with the kernels of `isa` (which this CPU must run).
#[allow(clippy::too_many_arguments)]
pub(crate) fn nn_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    c: &mut [f32],
    rsc: usize,
    init: Init<'_>,
    relu: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= extent(m, k, rsa, csa), "gemm nn: A too short");
    assert!(b.len() >= extent(k, n, rsb, 1), "gemm nn: B too short");
    assert!(c.len() >= extent(m, n, rsc, 1), "gemm nn: C too short");
    check_init(init, m, n);
    check_isa(isa);
    #[cfg(target_arch = "x86_64")]
    {
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        match isa {
            Isa::Avx512 => {
                // SAFETY: AVX-512F (with AVX2 and FMA) is available (checked above), and the
                // assertions above bound every access.
                unsafe { x86_avx512::nn(m, n, k, ap, rsa, csa, bp, rsb, cp, rsc, init, relu) };
                return;
            }
            Isa::Avx2 => {
                // SAFETY: AVX2 and FMA are available (checked above), and the assertions above
                // bound every access.
                unsafe { x86_avx2::nn(m, n, k, ap, rsa, csa, bp, rsb, cp, rsc, init, relu) };
                return;
            }
            Isa::Portable => {}
        }
    }
    portable::nn(m, n, k, a, rsa, csa, b, rsb, c, rsc, init, relu);
}

/// `C (m×n) = init + A (m×k) · Bᵀ` where `B` is `n×k`, then `max(·, 0)` if `relu`, with the
/// kernels of [`isa::selected`].
///
/// `A[i][p] = a[i·lda + p]`, `B[j][p] = b[j·ldb + p]`, `C[i][j] = c[i·rsc + j·csc]`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn nt(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    init: Init<'_>,
    relu: bool,
) {
    nt_with(
        isa::selected(),
        m,
        n,
        k,
        a,
        lda,
        b,
        ldb,
        c,
        rsc,
        csc,
        init,
        relu,
    );
}

/// [`nt`] with the kernels of `isa` (which this CPU must run).
#[allow(clippy::too_many_arguments)]
pub(crate) fn nt_with(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    init: Init<'_>,
    relu: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= extent(m, k, lda, 1), "gemm nt: A too short");
    assert!(b.len() >= extent(n, k, ldb, 1), "gemm nt: B too short");
    assert!(c.len() >= extent(m, n, rsc, csc), "gemm nt: C too short");
    check_init(init, m, n);
    check_isa(isa);
    #[cfg(target_arch = "x86_64")]
    {
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        match isa {
            Isa::Avx512 => {
                // SAFETY: AVX-512F (with AVX2 and FMA) is available (checked above), and the
                // assertions above bound every access.
                unsafe { x86_avx512::nt(m, n, k, ap, lda, bp, ldb, cp, rsc, csc, init, relu) };
                return;
            }
            Isa::Avx2 => {
                // SAFETY: AVX2 and FMA are available (checked above), and the assertions above
                // bound every access.
                unsafe { x86_avx2::nt(m, n, k, ap, lda, bp, ldb, cp, rsc, csc, init, relu) };
                return;
            }
            Isa::Portable => {}
        }
    }
    portable::nt(m, n, k, a, lda, b, ldb, c, rsc, csc, init, relu);
}

/// Floats held by this thread's packing buffers (grown on first use to the largest block packed,
/// then reused): the GEMM's share of a training thread's scratch memory.
pub fn pack_buffer_floats() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        pack::buffer_floats()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        0
    }
}

/// `C = A·B` (or `C += A·B` with `accumulate`) for an `m×k` matrix `A` with strides `(rsa, csa)`,
/// a row-major `k×n` matrix `B` with row stride `rsb` and a row-major `m×n` matrix `C` with row
/// stride `rsc`, using the kernels of `isa`. The products of the models run through this path
/// (with biases and ReLUs fused in); it is public for benchmarks and comparisons.
///
/// # Panics
///
/// When a slice is too short for its shape and strides, or when this CPU cannot run `isa`.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    c: &mut [f32],
    rsc: usize,
    accumulate: bool,
) {
    let init = if accumulate { Init::Acc } else { Init::Zero };
    nn_with(isa, m, n, k, a, rsa, csa, b, rsb, c, rsc, init, false);
}

/// `C = A·Bᵀ` (or `C += A·Bᵀ` with `accumulate`) for a row-major `m×k` matrix `A` (row stride
/// `lda`), a row-major `n×k` matrix `B` (row stride `ldb`) and an `m×n` matrix `C` with strides
/// `(rsc, csc)`, using the kernels of `isa` (the dot-product kernel the models use for input and
/// convolution weight gradients).
///
/// # Panics
///
/// When a slice is too short for its shape and strides, or when this CPU cannot run `isa`.
#[allow(clippy::too_many_arguments)]
pub fn matmul_nt(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    accumulate: bool,
) {
    let init = if accumulate { Init::Acc } else { Init::Zero };
    nt_with(isa, m, n, k, a, lda, b, ldb, c, rsc, csc, init, false);
}
