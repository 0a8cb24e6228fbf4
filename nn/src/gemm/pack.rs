//! Packing of the operands of the x86 kernels into per-thread buffers, and the row blocking shared
//! by every kernel family (the AVX2 and AVX-512 kernels pack the same way).

use std::arch::x86_64::*;

use crate::profile::Section;

/// Slack after packed blocks: packing writes whole vectors past the last element.
const SLACK: usize = 16;

thread_local! {
    /// Per-thread buffers for packed `A` and `B` (grown on first use, then reused).
    pub(super) static PACK_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    pub(super) static PACK_B: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Floats held by this thread's two pack buffers.
pub(super) fn buffer_floats() -> usize {
    PACK_A.with(|c| c.borrow().capacity()) + PACK_B.with(|c| c.borrow().capacity())
}

/// A 64-byte aligned pack buffer taken out of a thread-local (so no borrow is held while the
/// kernels run); it goes back on drop.
pub(super) struct PackBuf {
    which: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
    v: Vec<f32>,
    off: usize,
}

impl PackBuf {
    pub(super) fn take(
        which: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
        len: usize,
    ) -> Self {
        let mut v = which.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
        let need = len + SLACK + 16;
        if v.len() < need {
            v.resize(need, 0.0);
        }
        let off = v.as_ptr().align_offset(64).min(16);
        Self { which, v, off }
    }

    pub(super) fn ptr(&mut self) -> *mut f32 {
        // SAFETY: off <= 16 < len.
        unsafe { self.v.as_mut_ptr().add(self.off) }
    }
}

impl Drop for PackBuf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.v);
        self.which.with(|cell| *cell.borrow_mut() = v);
    }
}

/// Mask with the first `r` of 8 lanes set.
///
/// # Safety
///
/// AVX must be available.
#[inline(always)]
pub(super) unsafe fn tail_mask(r: usize) -> __m256i {
    const M: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
    // SAFETY: min(r, 8) <= 8, so the 8 lanes read are inside M.
    unsafe { _mm256_loadu_si256(M.as_ptr().add(8 - r.min(8)) as *const __m256i) }
}

/// Splits `m` rows into blocks of at most `mr` rows, as even as possible: returns
/// `(blocks, base)`; the first `m % blocks` blocks have `base + 1` rows, the rest `base`.
#[inline]
pub(super) fn balanced(m: usize, mr: usize) -> (usize, usize) {
    let blocks = m.div_ceil(mr);
    (blocks, m / blocks)
}

/// Row blocks of `m` rows (at most `mr` each, balanced), as `(first_row, rows)`.
#[inline(always)]
pub(super) fn row_blocks(m: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
    let (blocks, base) = if m == 0 { (0, 0) } else { balanced(m, mr) };
    let extra = if blocks == 0 { 0 } else { m % blocks };
    (0..blocks).map(move |blk| {
        let start = blk * base + blk.min(extra);
        (start, base + usize::from(blk < extra))
    })
}

/// Transpose of an 8 × 8 block held as 8 row vectors.
///
/// # Safety
///
/// AVX must be available.
#[inline(always)]
pub(super) unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: register-only intrinsics.
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }
}

/// Packs `r ≤ 8` rows × `kb` columns of `A` as `dst[p·r + t] = A[t][p]` (writes up to 8 floats
/// past the end).
///
/// # Safety
///
/// AVX2 must be available; rows `0..r` × columns `0..kb` of `A` must be in bounds and `dst` must
/// hold `r·kb + 8` floats.
#[inline(always)]
pub(super) unsafe fn pack_a_block(
    r: usize,
    kb: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    dst: *mut f32,
) {
    // SAFETY: the caller guarantees rows 0..r × columns 0..kb of A are in bounds and dst holds
    // r·kb + 8 floats; masked lanes are not read.
    unsafe {
        if rsa == 1 {
            // The r values of a column are contiguous: one masked load and one (overlapping) store.
            let mask = tail_mask(r);
            for p in 0..kb {
                _mm256_storeu_ps(dst.add(p * r), _mm256_maskload_ps(a.add(p * csa), mask));
            }
        } else if csa == 1 {
            // Row-major A: transpose 8 columns at a time in registers.
            let mut p = 0;
            while p + 8 <= kb {
                let mut rows = [_mm256_setzero_ps(); 8];
                for (t, x) in rows.iter_mut().enumerate().take(r) {
                    *x = _mm256_loadu_ps(a.add(t * rsa + p));
                }
                let cols = transpose8(rows);
                for (q, &col) in cols.iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p + q) * r), col);
                }
                p += 8;
            }
            for p in p..kb {
                for t in 0..r {
                    *dst.add(p * r + t) = *a.add(t * rsa + p);
                }
            }
        } else {
            for p in 0..kb {
                for t in 0..r {
                    *dst.add(p * r + t) = *a.add(t * rsa + p * csa);
                }
            }
        }
    }
}

/// Packs rows `0..m` of a reduction block of `A` as consecutive row blocks (of
/// [`row_blocks`]`(m, mr)`, `mr ≤ 8`): the block starting at row `i` lands at `dst + i·kb`.
///
/// # Safety
///
/// AVX2 must be available; rows `0..m` × columns `0..kb` of `A` must be in bounds and `dst` must
/// hold `m·kb + 8` floats.
#[inline(always)]
pub(super) unsafe fn pack_a(
    mr: usize,
    m: usize,
    kb: usize,
    a: *const f32,
    rsa: usize,
    csa: usize,
    dst: *mut f32,
) {
    let _s = Section::new("gemm pack A");
    for (i, r) in row_blocks(m, mr) {
        // SAFETY: forwarded; block i occupies dst[i·kb .. (i + r)·kb] (+ slack).
        unsafe { pack_a_block(r, kb, a.wrapping_add(i * rsa), rsa, csa, dst.add(i * kb)) };
    }
}

/// Copies columns `0..width` (width ≤ 16) of rows `0..kb` of `B` into `dst` (16 floats per row,
/// zero-padded).
///
/// # Safety
///
/// AVX2 must be available; rows `0..kb` × columns `0..width` of `B` must be in bounds and `dst`
/// must hold `16·kb` floats, 32-byte aligned.
#[inline(always)]
pub(super) unsafe fn pack_panel(b: *const f32, rsb: usize, kb: usize, width: usize, dst: *mut f32) {
    // SAFETY: the caller guarantees B rows 0..kb × the `width` columns are in bounds, and dst holds
    // 16·kb floats, 32-byte aligned.
    unsafe {
        if width == 16 {
            for p in 0..kb {
                let s = b.add(p * rsb);
                _mm256_store_ps(dst.add(16 * p), _mm256_loadu_ps(s));
                _mm256_store_ps(dst.add(16 * p + 8), _mm256_loadu_ps(s.add(8)));
            }
        } else {
            let m0 = tail_mask(width.min(8));
            let m1 = tail_mask(width.saturating_sub(8));
            for p in 0..kb {
                let s = b.add(p * rsb);
                _mm256_store_ps(dst.add(16 * p), _mm256_maskload_ps(s, m0));
                _mm256_store_ps(dst.add(16 * p + 8), _mm256_maskload_ps(s.add(8), m1));
            }
        }
    }
}

/// Prefetches `rows` rows of `n` floats at `p` (row stride `rs`), one request per cache line, with
/// the hint `HINT` (`_MM_HINT_ET0`: for writing; `_MM_HINT_T1`: into L2).
///
/// # Safety
///
/// SSE must be available (always on x86-64). Prefetches never fault, so any addresses will do;
/// `n` must be positive when `rows` is.
#[inline(always)]
pub(super) unsafe fn prefetch_rows<const HINT: i32>(
    p: *const f32,
    rows: usize,
    n: usize,
    rs: usize,
) {
    for r in 0..rows {
        let row = p.wrapping_add(r * rs);
        let mut t = 0;
        while t < n {
            // SAFETY: prefetches never fault.
            unsafe { _mm_prefetch::<HINT>(row.wrapping_add(t) as *const i8) };
            t += 16;
        }
        // SAFETY: as above (the last element, in case the row ends in a new line).
        unsafe { _mm_prefetch::<HINT>(row.wrapping_add(n - 1) as *const i8) };
    }
}
