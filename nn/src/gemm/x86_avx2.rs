//! The AVX2 + FMA kernel family: `nn` tiles of up to 6 rows × 16 columns held in two 8-lane
//! vectors per row, `nt` tiles of 4 × 3 elements.

use std::arch::x86_64::*;

use super::Init;
use super::pack::tail_mask;
use super::x86::{self, KInit, Kernels, nt_tiles};

/// The AVX2 + FMA micro-kernels.
pub(super) struct Avx2;

impl Kernels for Avx2 {
    /// 6 × 16 accumulators: two vectors per broadcast, which Zen 3 needs to keep both FMA pipes busy.
    const NN_MR: usize = 6;
    const NT_MR: usize = 4;
    const NT_NR: usize = 3;

    /// # Safety
    ///
    /// See [`Kernels::nn_tile`].
    #[inline(always)]
    unsafe fn nn_tile(
        rows: usize,
        width: usize,
        k: usize,
        ap: *const f32,
        bp: *const f32,
        b_step: usize,
        b_packed: bool,
        c: *mut f32,
        rsc: usize,
        init: KInit,
        relu: bool,
    ) {
        let (r, kb, ki) = (rows, k, init);
        // SAFETY: forwarded from the caller; the masks cover exactly the `width` columns.
        unsafe {
            if width == 16 {
                nn_rows::<2, false>(
                    r,
                    kb,
                    ap,
                    bp,
                    b_step,
                    b_packed,
                    c,
                    rsc,
                    ki,
                    relu,
                    tail_mask(8),
                );
            } else if width > 8 {
                let mask = tail_mask(width - 8);
                nn_rows::<2, true>(r, kb, ap, bp, b_step, b_packed, c, rsc, ki, relu, mask);
            } else if width == 8 {
                nn_rows::<1, false>(
                    r,
                    kb,
                    ap,
                    bp,
                    b_step,
                    b_packed,
                    c,
                    rsc,
                    ki,
                    relu,
                    tail_mask(8),
                );
            } else {
                let mask = tail_mask(width);
                nn_rows::<1, true>(r, kb, ap, bp, b_step, b_packed, c, rsc, ki, relu, mask);
            }
        }
    }

    /// # Safety
    ///
    /// See [`Kernels::nt_tile`].
    #[inline(always)]
    unsafe fn nt_tile(
        rows: usize,
        cols: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        rsc: usize,
        csc: usize,
        init: KInit,
        relu: bool,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            nt_tiles!(
                rows,
                cols,
                [1, 2, 3, 4],
                [1, 2, 3],
                (k, a, lda, b, ldb, c, rsc, csc, init, relu)
            )
        }
    }
}

/// [`super::nn`] with the AVX2 kernels.
///
/// # Safety
///
/// AVX2 and FMA must be available, and the operands must cover the elements [`super::nn`] checks.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn nn(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
    init: Init<'_>,
    relu: bool,
) {
    // SAFETY: forwarded from the caller.
    unsafe { x86::nn::<Avx2>(m, n, k, a, rsa, csa, b, rsb, c, rsc, init, relu) }
}

/// [`super::nt`] with the AVX2 kernels.
///
/// # Safety
///
/// AVX2 and FMA must be available, and the operands must cover the elements [`super::nt`] checks.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn nt(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    rsc: usize,
    csc: usize,
    init: Init<'_>,
    relu: bool,
) {
    // SAFETY: forwarded from the caller.
    unsafe { x86::nt::<Avx2>(m, n, k, a, lda, b, ldb, c, rsc, csc, init, relu) }
}
/// Loads vector `v` of a row whose last vector may be partial.
///
/// # Safety
///
/// AVX must be available; the lanes selected by the mask (all lanes for full vectors) must be in
/// bounds.
#[inline(always)]
unsafe fn load_row<const V: usize, const MASKED: bool>(
    p: *const f32,
    v: usize,
    mask: __m256i,
) -> __m256 {
    // SAFETY: the caller guarantees lanes selected by the mask (all lanes for full vectors) are in bounds.
    unsafe {
        if MASKED && v == V - 1 {
            _mm256_maskload_ps(p.add(8 * v), mask)
        } else {
            _mm256_loadu_ps(p.add(8 * v))
        }
    }
}

/// One `R × (8·V)` block of `C` over `k` steps: `A` packed (`R` floats per step), `B` read from
/// `bp` with `b_step` floats between steps (16 for a packed panel, the row stride otherwise). With
/// `MASKED`, the last vector of `C` (and of unpacked `B`) only covers the lanes set in `mask`.
///
/// # Safety
///
/// As [`Kernels::nn_tile`] with `rows = R`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_kernel<const R: usize, const V: usize, const MASKED: bool>(
    k: usize,
    ap: *const f32,
    bp: *const f32,
    b_step: usize,
    b_packed: bool,
    c: *mut f32,
    rsc: usize,
    init: KInit,
    relu: bool,
    mask: __m256i,
) {
    // SAFETY: (whole body) the caller guarantees that the packed A holds R·k floats, B rows 0..k ×
    // the columns of this block (or 16·k packed floats) and C rows 0..R × those columns are in
    // bounds; masked lanes are never touched by maskload/maskstore.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); V]; R];
        match init {
            KInit::Zero => {}
            KInit::Acc => {
                for (i, row) in acc.iter_mut().enumerate() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = load_row::<V, MASKED>(c.add(i * rsc), v, mask);
                    }
                }
            }
            KInit::RowBias(p) => {
                for (i, row) in acc.iter_mut().enumerate() {
                    let bv = _mm256_set1_ps(*p.add(i));
                    for x in row.iter_mut() {
                        *x = bv;
                    }
                }
            }
            KInit::ColBias(p) => {
                for row in acc.iter_mut() {
                    for (v, x) in row.iter_mut().enumerate() {
                        *x = load_row::<V, MASKED>(p, v, mask);
                    }
                }
            }
        }
        let mut a = ap;
        let mut b = bp;
        for _ in 0..k {
            let mut bv = [_mm256_setzero_ps(); V];
            for (v, x) in bv.iter_mut().enumerate() {
                *x = if b_packed {
                    _mm256_load_ps(b.add(8 * v))
                } else {
                    load_row::<V, MASKED>(b, v, mask)
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_broadcast_ss(&*a.add(i));
                for (x, &bb) in row.iter_mut().zip(bv.iter()) {
                    *x = _mm256_fmadd_ps(av, bb, *x);
                }
            }
            a = a.add(R);
            b = b.add(b_step);
        }
        let zero = _mm256_setzero_ps();
        for (i, row) in acc.iter().enumerate() {
            let cp = c.add(i * rsc);
            for (v, &x) in row.iter().enumerate() {
                let x = if relu { _mm256_max_ps(x, zero) } else { x };
                if MASKED && v == V - 1 {
                    _mm256_maskstore_ps(cp.add(8 * v), mask, x);
                } else {
                    _mm256_storeu_ps(cp.add(8 * v), x);
                }
            }
        }
    }
}

/// Dispatches a block of `rows ≤ NN_MR` rows and `V ≤ 2` vectors.
///
/// # Safety
///
/// As [`Kernels::nn_tile`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_rows<const V: usize, const MASKED: bool>(
    rows: usize,
    k: usize,
    ap: *const f32,
    bp: *const f32,
    b_step: usize,
    b_packed: bool,
    c: *mut f32,
    rsc: usize,
    init: KInit,
    relu: bool,
    mask: __m256i,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match rows {
            1 => nn_kernel::<1, V, MASKED>(k, ap, bp, b_step, b_packed, c, rsc, init, relu, mask),
            2 => nn_kernel::<2, V, MASKED>(k, ap, bp, b_step, b_packed, c, rsc, init, relu, mask),
            3 => nn_kernel::<3, V, MASKED>(k, ap, bp, b_step, b_packed, c, rsc, init, relu, mask),
            4 => nn_kernel::<4, V, MASKED>(k, ap, bp, b_step, b_packed, c, rsc, init, relu, mask),
            5 => nn_kernel::<5, V, MASKED>(k, ap, bp, b_step, b_packed, c, rsc, init, relu, mask),
            6 => nn_kernel::<6, V, MASKED>(k, ap, bp, b_step, b_packed, c, rsc, init, relu, mask),
            _ => unreachable!("nn block of {rows} rows"),
        }
    }
}
