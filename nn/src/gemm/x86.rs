//! The x86-64 product drivers shared by the AVX2 and AVX-512 kernel families: how a product is cut
//! into reduction blocks, panels and row blocks. They are generic over [`Kernels`], the
//! micro-kernels of one family, and every family's entry points compile them with its own target
//! features.
//!
//! Every element of `C` is summed in an order fixed by the driver alone (the reduction blocks of
//! [`nn`], the 8-lane partial sums of [`nt_kernel`]), never by the micro-kernel's tile shape, so
//! the families agree bit for bit.

use std::arch::x86_64::*;

use super::Init;
use super::pack::{
    PACK_A, PACK_B, PackBuf, balanced, pack_a, pack_a_block, pack_panel, prefetch_rows,
};
use super::pack::{row_blocks, tail_mask};
use crate::profile::Section;

/// Products with at most this many rows read `B` in place (the packed `A` block, at most
/// `256 × 128` floats, stays in L2).
const MAX_M_IN_PLACE: usize = 256;
/// Reduction block of `nn`: a packed `KC × 16` panel of `B` (16 KiB) stays in L1.
const KC: usize = 256;
/// A `B` read in place that is larger than this comes from L3 or memory rather than L2 ...
const STREAM_B_BYTES: usize = 2 << 20;
/// ... and, when `C` is at most this large (so that it stays in L1) ...
const STREAM_C_BYTES: usize = 32 * 1024;
/// ... is reduced in blocks of this many rows: each block of `B` is then one contiguous region
/// (whole rows), which the hardware prefetchers stream better than the 16-column strips of a long
/// block, and the extra passes over `C` cost little. (The dense layer of the CNN at small batches:
/// 6.4 MB of weights for 10 rows.)
const KC_STREAM: usize = 32;
/// Target size of the packed block of `A` that stays in L2 while the panels of `B` stream past.
const MC_BYTES: usize = 128 * 1024;
/// Largest packed `B` for which the row-block-outer order is used (rows of `C` written in turn).
const I_OUTER_BYTES: usize = 128 * 1024;

/// Knobs for the timing tests (test builds only).
#[cfg(test)]
pub(crate) mod tune {
    use std::sync::atomic::AtomicUsize;
    /// Reduction block of the in-place path (0: default).
    pub(crate) static KC_IN_PLACE: AtomicUsize = AtomicUsize::new(0);
    /// Prefetch of the next panel: 0 none, 1 T1 hint, 2 T0 hint (default).
    pub(crate) static PREFETCH: AtomicUsize = AtomicUsize::new(2);
}

/// Initialisation as seen by one micro-kernel (pointers already offset to its block).
#[derive(Clone, Copy)]
pub(super) enum KInit {
    /// Start from zero.
    Zero,
    /// Start from the block of `C`.
    Acc,
    /// Start from `bias[i]` on row `i` of the block.
    RowBias(*const f32),
    /// Start from `bias[j]` on column `j` of the block.
    ColBias(*const f32),
}

impl KInit {
    /// The initialisation of the block at row `i`, column `j`.
    #[inline(always)]
    fn at(init: Init<'_>, i: usize, j: usize) -> Self {
        match init {
            Init::Zero => KInit::Zero,
            Init::Acc => KInit::Acc,
            Init::RowBias(p) => KInit::RowBias(p[i..].as_ptr()),
            Init::ColBias(p) => KInit::ColBias(p[j..].as_ptr()),
        }
    }
}

/// The micro-kernels of one kernel family.
pub(super) trait Kernels {
    /// Rows of `A` per `nn` tile (at most 8: the packing of `A` transposes 8 × 8 blocks).
    const NN_MR: usize;
    /// Rows of `A` per `nt` tile (at most 6).
    const NT_MR: usize;
    /// Rows of `B` per `nt` tile (at most 6).
    const NT_NR: usize;

    /// One `rows × width` tile of `C` (`1 ≤ rows ≤ NN_MR`, `1 ≤ width ≤ 16`) over `k` steps:
    /// `C[i][j] = init + Σ_p A[i][p]·B[p][j]` with one fused multiply-add per `p`, in order; then
    /// `max(·, 0)` if `relu`. `A` is packed (`rows` floats per step), `B` is read from `bp` with
    /// `b_step` floats between steps (a packed, 64-byte aligned 16-float panel when `b_packed`).
    ///
    /// # Safety
    ///
    /// The family's target features must be available; the packed `A` must hold `rows·k` floats,
    /// `B` rows `0..k` × the `width` columns (or `16·k` packed floats) and `C` rows `0..rows` ×
    /// those columns must be in bounds, as must the bias the initialisation points to.
    #[allow(clippy::too_many_arguments)]
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
    );

    /// One `rows × cols` tile of `C = init + A·Bᵀ` (`rows ≤ NT_MR`, `cols ≤ NT_NR`) over the full
    /// reduction, as [`nt_kernel`] computes it.
    ///
    /// # Safety
    ///
    /// As [`nt_kernel`], and the family's target features must be available.
    #[allow(clippy::too_many_arguments)]
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
    );
}

// ---------------------------------------------------------------------------------------------
// nn: C = init + A·B, B and C row-major.

/// Columns `j..j + width` of `C` (`width ≤ 16`) for rows `i0..i0 + rows` (packed A of those rows
/// at `apack + i0·kb`), in row blocks. `B` is either a packed panel or the unpacked rows at column
/// `j` (stride `rsb`). If `next` is not null, the `kb` rows of 16 floats at `next` (stride
/// `b_step`, the panel to be used next) are prefetched, a slice before each row block, so that a
/// panel read in place from L3 or memory is in cache when its turn comes.
///
/// # Safety
///
/// As [`Kernels::nn_tile`] for every row block.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_cols<K: Kernels>(
    i0: usize,
    rows: usize,
    j: usize,
    width: usize,
    kb: usize,
    apack: *const f32,
    bp: *const f32,
    b_step: usize,
    b_packed: bool,
    next: *const f32,
    c: *mut f32,
    rsc: usize,
    init: Init<'_>,
    relu: bool,
) {
    // SAFETY: forwarded; rows and columns stay inside the checked extents (prefetches never fault).
    unsafe {
        let blocks = if rows == 0 {
            1
        } else {
            balanced(rows, K::NN_MR).0
        };
        for (blk, (i, r)) in row_blocks(rows, K::NN_MR).enumerate() {
            if !next.is_null() {
                for t in blk * kb / blocks..(blk + 1) * kb / blocks {
                    let p = next.wrapping_add(t * b_step);
                    #[cfg(test)]
                    match tune::PREFETCH.load(std::sync::atomic::Ordering::Relaxed) {
                        0 => {}
                        1 => {
                            _mm_prefetch::<_MM_HINT_T1>(p as *const i8);
                            _mm_prefetch::<_MM_HINT_T1>(p.wrapping_add(15) as *const i8);
                        }
                        _ => {
                            _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(15) as *const i8);
                        }
                    }
                    #[cfg(not(test))]
                    {
                        _mm_prefetch::<_MM_HINT_T0>(p as *const i8);
                        _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(15) as *const i8);
                    }
                }
            }
            let i = i0 + i;
            let (ap, cp, ki) = (apack.add(i * kb), c.add(i * rsc + j), KInit::at(init, i, j));
            K::nn_tile(r, width, kb, ap, bp, b_step, b_packed, cp, rsc, ki, relu);
        }
    }
}

/// How [`nn`] runs a product.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum NnPath {
    /// `B` small and reduction short (weight gradients over a batch): `B` packed whole, row blocks
    /// of `A` outside so each block of rows of `C` is written once, in order.
    RowsOuter,
    /// `A` (all rows of a reduction block) packed and kept in L2; `B` read in place, one 16-column
    /// panel at a time, every row block using the panel while it is in L1.
    BInPlace,
    /// Tall `A`: blocks of `A` sized for L2, all panels of `B` packed once per reduction block.
    Packed,
}

/// The path of an `m × n × k` product (a function of the shape alone).
fn nn_path(m: usize, n: usize, k: usize) -> NnPath {
    let np = n.div_ceil(16);
    if k == 0 {
        NnPath::BInPlace
    } else if k <= KC && m > n && k * np * 16 * 4 <= I_OUTER_BYTES {
        NnPath::RowsOuter
    } else if m <= MAX_M_IN_PLACE {
        NnPath::BInPlace
    } else {
        NnPath::Packed
    }
}

/// One reduction block of `kb` steps (see [`NnPath`]).
///
/// # Safety
///
/// As [`nn`], for the reduction block; `ahead` is only prefetched.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nn_block<K: Kernels>(
    path: NnPath,
    m: usize,
    n: usize,
    kb: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    b: *const f32,
    rsb: usize,
    c: *mut f32,
    rsc: usize,
    init: Init<'_>,
    relu: bool,
    ahead: (*const f32, usize),
) {
    let np = n.div_ceil(16);
    let width = |p: usize| (n - 16 * p).min(16);
    let mr = K::NN_MR;
    // SAFETY: (whole body) forwarded; panels and row blocks stay inside the checked extents, and
    // the pack buffers hold what is asked of them (plus slack).
    unsafe {
        let panel = |buf: *mut f32, p: usize| buf.add(16 * kb * p);
        match path {
            NnPath::BInPlace => {
                let mut abuf = PackBuf::take(&PACK_A, m * kb);
                let ap = abuf.ptr();
                pack_a(mr, m, kb, a, rsa, csa, ap);
                let lines = ahead.1.div_ceil(16);
                for p in 0..np {
                    for l in p * lines / np..(p + 1) * lines / np {
                        _mm_prefetch::<_MM_HINT_T1>(ahead.0.wrapping_add(16 * l) as *const i8);
                    }
                    let next = if p + 1 < np {
                        b.add(16 * (p + 1))
                    } else {
                        std::ptr::null()
                    };
                    let (bp, w) = (b.add(16 * p), width(p));
                    nn_cols::<K>(
                        0,
                        m,
                        16 * p,
                        w,
                        kb,
                        ap,
                        bp,
                        rsb,
                        false,
                        next,
                        c,
                        rsc,
                        init,
                        relu,
                    );
                }
            }
            NnPath::RowsOuter => {
                let mut bbuf = PackBuf::take(&PACK_B, kb * np * 16);
                let mut abuf = PackBuf::take(&PACK_A, mr * kb);
                let (bp, ap) = (bbuf.ptr(), abuf.ptr());
                let s = Section::new("gemm pack B");
                for p in 0..np {
                    pack_panel(b.add(16 * p), rsb, kb, width(p), panel(bp, p));
                }
                drop(s);
                let mut blocks = row_blocks(m, mr).peekable();
                while let Some((i, r)) = blocks.next() {
                    // C is written once, typically into lines no longer cached: prefetch the next
                    // block's rows of C so that their ownership requests overlap this block's work.
                    if let Some(&(i2, r2)) = blocks.peek() {
                        prefetch_rows::<_MM_HINT_ET0>(c.add(i2 * rsc), r2, n, rsc);
                    }
                    let s = Section::new("gemm pack A");
                    pack_a_block(r, kb, a.wrapping_add(i * rsa), rsa, csa, ap);
                    drop(s);
                    let (ci, init_i) = (c.add(i * rsc), init_rows(init, i));
                    for p in 0..np {
                        let (bpp, w, nul) = (panel(bp, p), width(p), std::ptr::null());
                        nn_cols::<K>(
                            0,
                            r,
                            16 * p,
                            w,
                            kb,
                            ap,
                            bpp,
                            16,
                            true,
                            nul,
                            ci,
                            rsc,
                            init_i,
                            relu,
                        );
                    }
                }
            }
            NnPath::Packed => {
                let mc = (MC_BYTES / (kb * 4)).max(mr) / mr * mr;
                let mut abuf = PackBuf::take(&PACK_A, m.min(mc) * kb);
                let mut bbuf = PackBuf::take(&PACK_B, kb * np * 16);
                let (ap, bp) = (abuf.ptr(), bbuf.ptr());
                let s = Section::new("gemm pack B");
                for p in 0..np {
                    pack_panel(b.add(16 * p), rsb, kb, width(p), panel(bp, p));
                }
                drop(s);
                for (i0, rows) in row_blocks(m, mc) {
                    pack_a(mr, rows, kb, a.wrapping_add(i0 * rsa), rsa, csa, ap);
                    let (ci, init_i) = (c.add(i0 * rsc), init_rows(init, i0));
                    for p in 0..np {
                        let (bpp, w, nul) = (panel(bp, p), width(p), std::ptr::null());
                        nn_cols::<K>(
                            0,
                            rows,
                            16 * p,
                            w,
                            kb,
                            ap,
                            bpp,
                            16,
                            true,
                            nul,
                            ci,
                            rsc,
                            init_i,
                            relu,
                        );
                    }
                }
            }
        }
    }
}

/// `init` for a sub-matrix starting at row `i` (row biases shift, the others do not).
#[inline(always)]
fn init_rows(init: Init<'_>, i: usize) -> Init<'_> {
    match init {
        Init::RowBias(p) => Init::RowBias(&p[i..]),
        other => other,
    }
}

/// Whether [`nn`] streams `B` from beyond L2 into a small `C` in short reduction blocks.
pub(super) fn nn_streams_b(m: usize, n: usize, k: usize) -> bool {
    nn_path(m, n, k) == NnPath::BInPlace
        && k * n * 4 > STREAM_B_BYTES
        && m * n * 4 <= STREAM_C_BYTES
}

/// See [`super::nn`]: picks a [`NnPath`], then runs equal reduction blocks of at most `KC` steps
/// (`KC / 2` when `B` is read in place, so a 16-column panel stays in L1 even when its rows
/// straddle cache lines; `KC_STREAM` when that `B` streams from beyond L2 into a small `C`). The
/// path and the reduction blocks depend on the shape alone, not on the kernel family.
///
/// # Safety
///
/// The family's target features must be available, and the operands must cover the elements
/// [`super::nn`] checks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn nn<K: Kernels>(
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
    let path = nn_path(m, n, k);
    let kc = if path == NnPath::BInPlace { KC / 2 } else { KC };
    let streamed =
        path == NnPath::BInPlace && k * n * 4 > STREAM_B_BYTES && m * n * 4 <= STREAM_C_BYTES;
    let kc = if streamed { KC_STREAM } else { kc };
    #[cfg(test)]
    let kc = match tune::KC_IN_PLACE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => kc,
        v if path == NnPath::BInPlace => v,
        _ => kc,
    };
    let kc = k.div_ceil(k.div_ceil(kc).max(1)).max(1);
    let mut k0 = 0;
    loop {
        let kb = kc.min(k - k0);
        let first = k0 == 0;
        let last = k0 + kb == k;
        let init_k = if first { init } else { Init::Acc };
        let (ak, bk) = (a.wrapping_add(k0 * csa), b.wrapping_add(k0 * rsb));
        // A streamed B comes from memory: prefetch the next reduction block's rows (one contiguous
        // region) into L2 while this block runs, so that DRAM latency overlaps with work.
        let ahead = if streamed && !last {
            let rows = kc.min(k - k0 - kb);
            (b.wrapping_add((k0 + kb) * rsb), (rows - 1) * rsb + n)
        } else {
            (std::ptr::null(), 0)
        };
        let relu_k = relu && last;
        // SAFETY: forwarded; the reduction block k0..k0+kb is inside 0..k.
        unsafe {
            nn_block::<K>(
                path, m, n, kb, ak, rsa, csa, bk, rsb, c, rsc, init_k, relu_k, ahead,
            )
        };
        k0 += kb;
        if k0 >= k {
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// nt: C = init + A·Bᵀ, A and B row-major along the reduction.

/// See [`super::nt`]. Column blocks (rows of B) outside, row blocks (rows of A) inside, so each
/// block of B is read from memory once.
///
/// # Safety
///
/// The family's target features must be available, and the operands must cover the elements
/// [`super::nt`] checks.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn nt<K: Kernels>(
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
    let (mr, nr) = (K::NT_MR, K::NT_NR);
    // Keep the smaller operand in cache and stream the larger one once: rows of B outside when A
    // is the small one (e.g. input gradients: A = a batch, B = weights), rows of A outside
    // otherwise (e.g. weight gradients: A = im2col rows, B = output gradients).
    // SAFETY: (both loops) every block lies inside the checked extents.
    unsafe {
        if m * lda <= n * ldb {
            // A large B comes from memory: prefetch the rows two column blocks ahead into L2.
            let stream = k > 0 && n * ldb * 4 > STREAM_B_BYTES;
            for (j, cols) in row_blocks(n, nr) {
                if stream {
                    let ahead = j + 2 * nr;
                    let rows = cols.min(n.saturating_sub(ahead));
                    prefetch_rows::<_MM_HINT_T1>(b.wrapping_add(ahead * ldb), rows, k, ldb);
                }
                for (i, rows) in row_blocks(m, mr) {
                    nt_block::<K>(i, rows, j, cols, k, a, lda, b, ldb, c, rsc, csc, init, relu);
                }
            }
        } else {
            for (i, rows) in row_blocks(m, mr) {
                for (j, cols) in row_blocks(n, nr) {
                    nt_block::<K>(i, rows, j, cols, k, a, lda, b, ldb, c, rsc, csc, init, relu);
                }
            }
        }
    }
}

/// The `rows × cols` tile of `C` at `(i, j)` (a function rather than a closure, so that it is
/// inlined into the caller and compiled with its target features).
///
/// # Safety
///
/// As [`Kernels::nt_tile`] for the tile.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn nt_block<K: Kernels>(
    i: usize,
    rows: usize,
    j: usize,
    cols: usize,
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
    let kinit = KInit::at(init, i, j);
    // SAFETY: rows i..i+rows of A, j..j+cols of B and that block of C are in bounds.
    unsafe {
        let (ap, bp, cp) = (a.add(i * lda), b.add(j * ldb), c.add(i * rsc + j * csc));
        K::nt_tile(rows, cols, k, ap, lda, bp, ldb, cp, rsc, csc, kinit, relu);
    }
}

/// Horizontal sum of 8 lanes, in a fixed order.
///
/// # Safety
///
/// AVX must be available.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics.
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }
}

/// One `R × CC` tile of `C` (R rows of A, CC rows of B) over the full reduction: each element
/// keeps 8 lane sums (lane `l` sums the steps `p ≡ l mod 8` in order, with fused multiply-adds),
/// adds them with [`hsum`], then adds that to its initial value.
///
/// # Safety
///
/// AVX2 and FMA must be available; rows `0..R` of A and `0..CC` of B (each `0..k`), the `R × CC`
/// block of C and the bias the initialisation points to must be in bounds.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn nt_kernel<const R: usize, const CC: usize>(
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
    // SAFETY: (whole body) see the contract above; the tail uses masked loads.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); CC]; R];
        let kv = k / 8;
        let mut off = 0;
        for _ in 0..kv {
            let mut bv = [_mm256_setzero_ps(); CC];
            for (j, x) in bv.iter_mut().enumerate() {
                *x = _mm256_loadu_ps(b.add(j * ldb + off));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_loadu_ps(a.add(i * lda + off));
                for (x, &bb) in row.iter_mut().zip(bv.iter()) {
                    *x = _mm256_fmadd_ps(av, bb, *x);
                }
            }
            off += 8;
        }
        let r = k % 8;
        if r > 0 {
            let mask = tail_mask(r);
            let mut bv = [_mm256_setzero_ps(); CC];
            for (j, x) in bv.iter_mut().enumerate() {
                *x = _mm256_maskload_ps(b.add(j * ldb + off), mask);
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let av = _mm256_maskload_ps(a.add(i * lda + off), mask);
                for (x, &bb) in row.iter_mut().zip(bv.iter()) {
                    *x = _mm256_fmadd_ps(av, bb, *x);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                let cp = c.add(i * rsc + j * csc);
                let s = hsum(x);
                let mut v = match init {
                    KInit::Zero => s,
                    KInit::Acc => *cp + s,
                    KInit::RowBias(p) => *p.add(i) + s,
                    KInit::ColBias(p) => *p.add(j) + s,
                };
                if relu {
                    v = v.max(0.0);
                }
                *cp = v;
            }
        }
    }
}

/// Dispatches an `nt` tile of `rows × cols` to the [`nt_kernel`] of that size, for the sizes
/// listed: `nt_tiles!(rows, cols, [1, 2], [1, 2, 3], (k, a, lda, b, ldb, c, rsc, csc, init, relu))`.
/// Expands to unsafe calls (use inside an `unsafe` block).
macro_rules! nt_tiles {
    ($rows:expr, $cols:expr, [$($r:literal),*], $cl:tt, $args:tt) => {
        match $rows {
            $($r => nt_tiles!(@cols $r, $cols, $cl, $args),)*
            _ => unreachable!("nt block of {} rows", $rows),
        }
    };
    (@cols $r:literal, $cols:expr, [$($c:literal),*], $args:tt) => {
        match $cols {
            $($c => $crate::gemm::x86::nt_kernel::<$r, $c> $args,)*
            _ => unreachable!("nt block of {} columns", $cols),
        }
    };
}
pub(super) use nt_tiles;
