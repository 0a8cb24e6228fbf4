//! The AVX-512 kernel family: `nn` tiles of up to 8 rows × 16 columns, one 16-lane vector per row
//! with mask registers for partial panels; `nt` tiles of up to 4 × 6 elements, which fit in the 32
//! vector registers of AVX-512 (the dot-product lanes stay 8 wide, see below). Two kinds of product
//! measured faster with the AVX2 tiles and use them (compiled with AVX-512 enabled): `nn` with `B`
//! streamed from beyond L2 into a few rows, and `nt` with a reduction shorter than 256.
//!
//! Results are bit-identical to the AVX2 family: the shared driver (`super::x86`) fixes the
//! reduction blocks and the packing; an `nn` tile sums each element over `p` in order with one
//! fused multiply-add per step from the same initial value (16 columns side by side instead of
//! 2 × 8), and an `nt` tile uses the same 8-lane partial sums and horizontal sum, only for more
//! elements at once.

use std::arch::x86_64::*;

use super::Init;
use super::x86::{self, KInit, Kernels, nt_tiles};
use super::x86_avx2::Avx2;

/// `nt` products with a shorter reduction run with the AVX2 tiles (4 × 3), which measured faster
/// there than 4 × 6 (the horizontal sums weigh more); the results are the same bits either way.
const NT_WIDE_MIN_K: usize = 256;

/// The AVX-512 micro-kernels.
pub(super) struct Avx512;

impl Kernels for Avx512 {
    /// 8 × 16 accumulators (8 of the 32 vector registers): one load of `B` per 8 fused
    /// multiply-adds.
    const NN_MR: usize = 8;
    const NT_MR: usize = 4;
    const NT_NR: usize = 6;

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
        let mask: __mmask16 = if width >= 16 {
            0xffff
        } else {
            (1u16 << width) - 1
        };
        let (bs, pk) = (b_step, b_packed);
        // SAFETY: forwarded from the caller; the mask covers exactly the `width` columns.
        unsafe {
            match rows {
                1 => nn_kernel::<1>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                2 => nn_kernel::<2>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                3 => nn_kernel::<3>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                4 => nn_kernel::<4>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                5 => nn_kernel::<5>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                6 => nn_kernel::<6>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                7 => nn_kernel::<7>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                8 => nn_kernel::<8>(k, ap, bp, bs, pk, c, rsc, init, relu, mask),
                _ => unreachable!("nn block of {rows} rows"),
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
                [1, 2, 3, 4, 5, 6],
                (k, a, lda, b, ldb, c, rsc, csc, init, relu)
            )
        }
    }
}

/// One `R × 16` tile of `C` (columns beyond the mask untouched) over `k` steps: `A` packed (`R`
/// floats per step), `B` read from `bp` with `b_step` floats between steps (a packed, 64-byte
/// aligned panel of 16 floats per step when `b_packed`).
///
/// # Safety
///
/// As [`Kernels::nn_tile`] with `rows = R`, and AVX-512F must be available.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_kernel<const R: usize>(
    k: usize,
    ap: *const f32,
    bp: *const f32,
    b_step: usize,
    b_packed: bool,
    c: *mut f32,
    rsc: usize,
    init: KInit,
    relu: bool,
    mask: __mmask16,
) {
    // SAFETY: (whole body) the caller guarantees that the packed A holds R·k floats, B rows 0..k ×
    // the masked columns (or 16·k aligned packed floats) and C rows 0..R × those columns are in
    // bounds; lanes outside the mask are neither loaded nor stored.
    unsafe {
        let mut acc = [_mm512_setzero_ps(); R];
        match init {
            KInit::Zero => {}
            KInit::Acc => {
                for (i, x) in acc.iter_mut().enumerate() {
                    *x = _mm512_maskz_loadu_ps(mask, c.add(i * rsc));
                }
            }
            KInit::RowBias(p) => {
                for (i, x) in acc.iter_mut().enumerate() {
                    *x = _mm512_set1_ps(*p.add(i));
                }
            }
            KInit::ColBias(p) => {
                let bias = _mm512_maskz_loadu_ps(mask, p);
                for x in acc.iter_mut() {
                    *x = bias;
                }
            }
        }
        let mut a = ap;
        let mut b = bp;
        for _ in 0..k {
            let bv = if b_packed {
                _mm512_load_ps(b)
            } else {
                _mm512_maskz_loadu_ps(mask, b)
            };
            for (i, x) in acc.iter_mut().enumerate() {
                *x = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(i)), bv, *x);
            }
            a = a.add(R);
            b = b.add(b_step);
        }
        let zero = _mm512_setzero_ps();
        for (i, &x) in acc.iter().enumerate() {
            let x = if relu { _mm512_max_ps(x, zero) } else { x };
            _mm512_mask_storeu_ps(c.add(i * rsc), mask, x);
        }
    }
}

/// [`super::nn`] with the AVX-512 kernels.
///
/// # Safety
///
/// AVX-512F and AVX-512VL (with AVX2 and FMA) must be available, and the operands must cover the
/// elements [`super::nn`] checks.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
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
    // A B streamed from L3 or memory into a few rows ran faster with the AVX2 tiles (same bits).
    // SAFETY: forwarded from the caller (AVX-512F implies the AVX2 kernels' features).
    unsafe {
        if x86::nn_streams_b(m, n, k) {
            x86::nn::<Avx2>(m, n, k, a, rsa, csa, b, rsb, c, rsc, init, relu)
        } else {
            x86::nn::<Avx512>(m, n, k, a, rsa, csa, b, rsb, c, rsc, init, relu)
        }
    }
}

/// [`super::nt`] with the AVX-512 kernels.
///
/// # Safety
///
/// AVX-512F and AVX-512VL (with AVX2 and FMA) must be available, and the operands must cover the
/// elements [`super::nt`] checks.
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
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
    // SAFETY: forwarded from the caller (AVX-512F implies the AVX2 kernels' features).
    unsafe {
        if k < NT_WIDE_MIN_K {
            x86::nt::<Avx2>(m, n, k, a, lda, b, ldb, c, rsc, csc, init, relu)
        } else {
            x86::nt::<Avx512>(m, n, k, a, lda, b, ldb, c, rsc, csc, init, relu)
        }
    }
}
