//! Single-threaded `f32` matrix products used by every layer.
//!
//! Two product shapes cover all layers:
//! - [`nn`]: `C = A·B` where `B` and `C` are row-major with unit column stride and `A` has any strides.
//!   The micro-kernel broadcasts elements of `A` and streams rows of `B` (no packing: `B` rows are read
//!   in place, which matters for small batches where packing a weight matrix would cost as much as the
//!   product itself).
//! - [`nt`]: `C = A·Bᵀ` where `A` and `B` are row-major with unit stride along the reduction; the
//!   micro-kernel keeps vector partial sums and reduces them horizontally at the end.
//!
//! On x86-64 with AVX2 and FMA (detected at run time) hand-written micro-kernels are used; elsewhere a
//! portable path calls `matrixmultiply`. Both are deterministic: the summation order depends only on
//! the shapes, never on the thread or timing.
//!
//! Every entry point checks (with real assertions) that the slices cover the addressed elements, so the
//! unsafe kernels can never read or write out of bounds.

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

/// Whether the AVX2+FMA kernels can run on this machine.
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Name of the kernel family in use, for reports.
pub(crate) fn kernel_name() -> &'static str {
    if has_avx2_fma() { "avx2+fma" } else { "portable (matrixmultiply)" }
}

/// Smallest slice length covering `rows × cols` elements at the given strides (0 when empty).
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 { 0 } else { (rows - 1) * rs + (cols - 1) * cs + 1 }
}

fn check_init(init: Init<'_>, m: usize, n: usize) {
    match init {
        Init::RowBias(b) => assert!(b.len() >= m, "row bias too short"),
        Init::ColBias(b) => assert!(b.len() >= n, "column bias too short"),
        Init::Zero | Init::Acc => {}
    }
}

/// `C (m×n) = init + A (m×k) · B (k×n)`, then `max(·, 0)` if `relu`.
///
/// `A[i][p] = a[i·rsa + p·csa]`, `B[p][j] = b[p·rsb + j]`, `C[i][j] = c[i·rsc + j]`.
#[allow(clippy::too_many_arguments)]
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
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= extent(m, k, rsa, csa), "gemm nn: A too short");
    assert!(b.len() >= extent(k, n, rsb, 1), "gemm nn: B too short");
    assert!(c.len() >= extent(m, n, rsc, 1), "gemm nn: C too short");
    check_init(init, m, n);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are available, and the assertions above bound every access.
        unsafe { x86::nn(m, n, k, a.as_ptr(), rsa, csa, b.as_ptr(), rsb, c.as_mut_ptr(), rsc, init, relu) };
        return;
    }
    portable::nn(m, n, k, a, rsa, csa, b, rsb, c, rsc, init, relu);
}

/// `C (m×n) = init + A (m×k) · Bᵀ` where `B` is `n×k`, then `max(·, 0)` if `relu`.
///
/// `A[i][p] = a[i·lda + p]`, `B[j][p] = b[j·ldb + p]`, `C[i][j] = c[i·rsc + j·csc]`.
#[allow(clippy::too_many_arguments)]
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
    if m == 0 || n == 0 {
        return;
    }
    assert!(a.len() >= extent(m, k, lda, 1), "gemm nt: A too short");
    assert!(b.len() >= extent(n, k, ldb, 1), "gemm nt: B too short");
    assert!(c.len() >= extent(m, n, rsc, csc), "gemm nt: C too short");
    check_init(init, m, n);
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: AVX2 and FMA are available, and the assertions above bound every access.
        unsafe { x86::nt(m, n, k, a.as_ptr(), lda, b.as_ptr(), ldb, c.as_mut_ptr(), rsc, csc, init, relu) };
        return;
    }
    portable::nt(m, n, k, a, lda, b, ldb, c, rsc, csc, init, relu);
}

/// The portable path: initialise `C`, then one `matrixmultiply::sgemm` call, then the ReLU.
pub(crate) mod portable {
    use super::Init;

    #[allow(clippy::too_many_arguments)]
    fn sgemm(
        m: usize,
        n: usize,
        k: usize,
        a: &[f32],
        rsa: usize,
        csa: usize,
        b: &[f32],
        rsb: usize,
        csb: usize,
        c: &mut [f32],
        rsc: usize,
        csc: usize,
        init: Init<'_>,
        relu: bool,
    ) {
        let beta = match init {
            Init::Zero => 0.0,
            Init::Acc => 1.0,
            Init::RowBias(bias) => {
                for i in 0..m {
                    for j in 0..n {
                        c[i * rsc + j * csc] = bias[i];
                    }
                }
                1.0
            }
            Init::ColBias(bias) => {
                for i in 0..m {
                    for j in 0..n {
                        c[i * rsc + j * csc] = bias[j];
                    }
                }
                1.0
            }
        };
        if k == 0 {
            if beta == 0.0 {
                for i in 0..m {
                    for j in 0..n {
                        c[i * rsc + j * csc] = 0.0;
                    }
                }
            }
        } else {
            // SAFETY: the callers checked that the slices cover every addressed element; strides fit
            // in isize because they index existing slices.
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
                    beta,
                    c.as_mut_ptr(),
                    rsc as isize,
                    csc as isize,
                );
            }
        }
        if relu {
            for i in 0..m {
                for j in 0..n {
                    let v = &mut c[i * rsc + j * csc];
                    *v = v.max(0.0);
                }
            }
        }
    }

    /// Portable [`super::nn`].
    #[allow(clippy::too_many_arguments)]
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
        sgemm(m, n, k, a, rsa, csa, b, rsb, 1, c, rsc, 1, init, relu);
    }

    /// Portable [`super::nt`].
    #[allow(clippy::too_many_arguments)]
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
        sgemm(m, n, k, a, lda, 1, b, 1, ldb, c, rsc, csc, init, relu);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::Init;

    /// Rows of `A` per `nn` micro-kernel (6 × 16 accumulators: two vectors per broadcast, which Zen 3
    /// needs to keep both FMA pipes busy).
    const NN_MR: usize = 6;
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
    /// Rows of `A` per `nt` micro-kernel.
    const NT_MR: usize = 4;
    /// Rows of `B` per `nt` micro-kernel.
    const NT_NR: usize = 3;
    /// Slack after packed blocks: packing writes whole vectors past the last element.
    const SLACK: usize = 16;

    /// Knobs for the timing tests (test builds only).
    #[cfg(test)]
    pub(crate) mod tune {
        use std::sync::atomic::AtomicUsize;
        /// Reduction block of the in-place path (0: default).
        pub(crate) static KC_IN_PLACE: AtomicUsize = AtomicUsize::new(0);
        /// Prefetch of the next panel: 0 none, 1 T1 hint, 2 T0 hint (default).
        pub(crate) static PREFETCH: AtomicUsize = AtomicUsize::new(2);
    }

    thread_local! {
        /// Per-thread buffers for packed `A` and `B` (grown on first use, then reused).
        static PACK_A: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
        static PACK_B: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A 64-byte aligned pack buffer taken out of a thread-local (so no borrow is held while the
    /// kernels run); it goes back on drop.
    struct PackBuf {
        which: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>,
        v: Vec<f32>,
        off: usize,
    }

    impl PackBuf {
        fn take(which: &'static std::thread::LocalKey<std::cell::RefCell<Vec<f32>>>, len: usize) -> Self {
            let mut v = which.with(|cell| std::mem::take(&mut *cell.borrow_mut()));
            let need = len + SLACK + 16;
            if v.len() < need {
                v.resize(need, 0.0);
            }
            let off = v.as_ptr().align_offset(64).min(16);
            Self { which, v, off }
        }

        fn ptr(&mut self) -> *mut f32 {
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

    /// Initialisation as seen by one micro-kernel (pointers already offset to its block).
    #[derive(Clone, Copy)]
    enum KInit {
        Zero,
        Acc,
        RowBias(*const f32),
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

    /// Mask with the first `r` of 8 lanes set.
    #[inline(always)]
    unsafe fn tail_mask(r: usize) -> __m256i {
        const M: [i32; 16] = [-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0];
        // SAFETY: min(r, 8) <= 8, so the 8 lanes read are inside M.
        unsafe { _mm256_loadu_si256(M.as_ptr().add(8 - r.min(8)) as *const __m256i) }
    }

    /// Splits `m` rows into blocks of at most `mr` rows, as even as possible: returns
    /// `(blocks, base)`; the first `m % blocks` blocks have `base + 1` rows, the rest `base`.
    #[inline]
    fn balanced(m: usize, mr: usize) -> (usize, usize) {
        let blocks = m.div_ceil(mr);
        (blocks, m / blocks)
    }

    /// Row blocks of `m` rows (at most `mr` each, balanced), as `(first_row, rows)`.
    #[inline(always)]
    fn row_blocks(m: usize, mr: usize) -> impl Iterator<Item = (usize, usize)> {
        let (blocks, base) = if m == 0 { (0, 0) } else { balanced(m, mr) };
        let extra = if blocks == 0 { 0 } else { m % blocks };
        (0..blocks).map(move |blk| {
            let start = blk * base + blk.min(extra);
            (start, base + usize::from(blk < extra))
        })
    }

    /// Transpose of an 8 × 8 block held as 8 row vectors.
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
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

    // ---------------------------------------------------------------------------------------------
    // nn: C = init + A·B, B and C row-major.

    /// Packs `r ≤ 8` rows × `kb` columns of `A` as `dst[p·r + t] = A[t][p]` (writes up to 8 floats
    /// past the end).
    #[inline(always)]
    unsafe fn pack_a_block(r: usize, kb: usize, a: *const f32, rsa: usize, csa: usize, dst: *mut f32) {
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
    /// [`row_blocks`]`(m, NN_MR)`): the block starting at row `i` lands at `dst + i·kb`.
    #[inline(always)]
    unsafe fn pack_a(m: usize, kb: usize, a: *const f32, rsa: usize, csa: usize, dst: *mut f32) {
        let _s = crate::perf::Section::new("gemm pack A");
        for (i, r) in row_blocks(m, NN_MR) {
            // SAFETY: forwarded; block i occupies dst[i·kb .. (i + r)·kb] (+ slack).
            unsafe { pack_a_block(r, kb, a.wrapping_add(i * rsa), rsa, csa, dst.add(i * kb)) };
        }
    }

    /// Loads vector `v` of a row whose last vector may be partial.
    #[inline(always)]
    unsafe fn load_row<const V: usize, const MASKED: bool>(p: *const f32, v: usize, mask: __m256i) -> __m256 {
        // SAFETY: the caller guarantees lanes selected by the mask (all lanes for full vectors) are in bounds.
        unsafe {
            if MASKED && v == V - 1 { _mm256_maskload_ps(p.add(8 * v), mask) } else { _mm256_loadu_ps(p.add(8 * v)) }
        }
    }

    /// One `R × (8·V)` block of `C` over `k` steps: `A` packed (`R` floats per step), `B` read from
    /// `bp` with `b_step` floats between steps (16 for a packed panel, the row stride otherwise). With
    /// `MASKED`, the last vector of `C` (and of unpacked `B`) only covers the lanes set in `mask`.
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
        // SAFETY (whole body): the caller guarantees that the packed A holds R·k floats, B rows 0..k ×
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
                    *x = if b_packed { _mm256_load_ps(b.add(8 * v)) } else { load_row::<V, MASKED>(b, v, mask) };
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

    /// Columns `j..j + width` of `C` (`width ≤ 16`) for rows `i0..i0 + rows` (packed A of those rows
    /// at `apack + i0·kb`), in row blocks. `B` is either a packed panel or the unpacked rows at column
    /// `j` (stride `rsb`). If `next` is not null, the `kb` rows of 16 floats at `next` (stride
    /// `b_step`, the panel to be used next) are prefetched, a slice before each row block, so that a
    /// panel read in place from L3 or memory is in cache when its turn comes.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn nn_cols(
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
            let blocks = if rows == 0 { 1 } else { balanced(rows, NN_MR).0 };
            for (blk, (i, r)) in row_blocks(rows, NN_MR).enumerate() {
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
                if width == 16 {
                    nn_rows::<2, false>(r, kb, ap, bp, b_step, b_packed, cp, rsc, ki, relu, tail_mask(8));
                } else if width > 8 {
                    nn_rows::<2, true>(r, kb, ap, bp, b_step, b_packed, cp, rsc, ki, relu, tail_mask(width - 8));
                } else if width == 8 {
                    nn_rows::<1, false>(r, kb, ap, bp, b_step, b_packed, cp, rsc, ki, relu, tail_mask(8));
                } else {
                    nn_rows::<1, true>(r, kb, ap, bp, b_step, b_packed, cp, rsc, ki, relu, tail_mask(width));
                }
            }
        }
    }

    /// Copies columns `0..width` (width ≤ 16) of rows `0..kb` of `B` into `dst` (16 floats per row,
    /// zero-padded).
    #[inline(always)]
    unsafe fn pack_panel(b: *const f32, rsb: usize, kb: usize, width: usize, dst: *mut f32) {
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
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn nn_block(
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
        // SAFETY (whole body): forwarded; panels and row blocks stay inside the checked extents, and
        // the pack buffers hold what is asked of them (plus slack).
        unsafe {
            let panel = |buf: *mut f32, p: usize| buf.add(16 * kb * p);
            match path {
                NnPath::BInPlace => {
                    let mut abuf = PackBuf::take(&PACK_A, m * kb);
                    let ap = abuf.ptr();
                    pack_a(m, kb, a, rsa, csa, ap);
                    let lines = ahead.1.div_ceil(16);
                    for p in 0..np {
                        for l in p * lines / np..(p + 1) * lines / np {
                            _mm_prefetch::<_MM_HINT_T1>(ahead.0.wrapping_add(16 * l) as *const i8);
                        }
                        let next = if p + 1 < np { b.add(16 * (p + 1)) } else { std::ptr::null() };
                        nn_cols(0, m, 16 * p, width(p), kb, ap, b.add(16 * p), rsb, false, next, c, rsc, init, relu);
                    }
                }
                NnPath::RowsOuter => {
                    let mut bbuf = PackBuf::take(&PACK_B, kb * np * 16);
                    let mut abuf = PackBuf::take(&PACK_A, NN_MR * kb);
                    let (bp, ap) = (bbuf.ptr(), abuf.ptr());
                    let s = crate::perf::Section::new("gemm pack B");
                    for p in 0..np {
                        pack_panel(b.add(16 * p), rsb, kb, width(p), panel(bp, p));
                    }
                    drop(s);
                    let mut blocks = row_blocks(m, NN_MR).peekable();
                    while let Some((i, r)) = blocks.next() {
                        // C is written once, typically into lines no longer cached: prefetch the next
                        // block's rows of C so that their ownership requests overlap this block's work.
                        if let Some(&(i2, r2)) = blocks.peek() {
                            prefetch_rows::<_MM_HINT_ET0>(c.add(i2 * rsc), r2, n, rsc);
                        }
                        let s = crate::perf::Section::new("gemm pack A");
                        pack_a_block(r, kb, a.wrapping_add(i * rsa), rsa, csa, ap);
                        drop(s);
                        let (ci, init_i) = (c.add(i * rsc), init_rows(init, i));
                        for p in 0..np {
                            nn_cols(
                                0,
                                r,
                                16 * p,
                                width(p),
                                kb,
                                ap,
                                panel(bp, p),
                                16,
                                true,
                                std::ptr::null(),
                                ci,
                                rsc,
                                init_i,
                                relu,
                            );
                        }
                    }
                }
                NnPath::Packed => {
                    let mc = (MC_BYTES / (kb * 4)).max(NN_MR) / NN_MR * NN_MR;
                    let mut abuf = PackBuf::take(&PACK_A, m.min(mc) * kb);
                    let mut bbuf = PackBuf::take(&PACK_B, kb * np * 16);
                    let (ap, bp) = (abuf.ptr(), bbuf.ptr());
                    let s = crate::perf::Section::new("gemm pack B");
                    for p in 0..np {
                        pack_panel(b.add(16 * p), rsb, kb, width(p), panel(bp, p));
                    }
                    drop(s);
                    for (i0, rows) in row_blocks(m, mc) {
                        pack_a(rows, kb, a.wrapping_add(i0 * rsa), rsa, csa, ap);
                        let (ci, init_i) = (c.add(i0 * rsc), init_rows(init, i0));
                        for p in 0..np {
                            nn_cols(
                                0,
                                rows,
                                16 * p,
                                width(p),
                                kb,
                                ap,
                                panel(bp, p),
                                16,
                                true,
                                std::ptr::null(),
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

    /// Prefetches `rows` rows of `n` floats at `p` (row stride `rs`), one request per cache line, with
    /// the hint `HINT` (`_MM_HINT_ET0`: for writing; `_MM_HINT_T1`: into L2).
    #[inline(always)]
    unsafe fn prefetch_rows<const HINT: i32>(p: *const f32, rows: usize, n: usize, rs: usize) {
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

    /// `init` for a sub-matrix starting at row `i` (row biases shift, the others do not).
    #[inline(always)]
    fn init_rows(init: Init<'_>, i: usize) -> Init<'_> {
        match init {
            Init::RowBias(p) => Init::RowBias(&p[i..]),
            other => other,
        }
    }

    /// See [`super::nn`]: picks a [`NnPath`], then runs equal reduction blocks of at most `KC` steps
    /// (`KC / 2` when `B` is read in place, so a 16-column panel stays in L1 even when its rows
    /// straddle cache lines; `KC_STREAM` when that `B` streams from beyond L2 into a small `C`).
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
        let path = nn_path(m, n, k);
        let kc = if path == NnPath::BInPlace { KC / 2 } else { KC };
        let streamed = path == NnPath::BInPlace && k * n * 4 > STREAM_B_BYTES && m * n * 4 <= STREAM_C_BYTES;
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
            // SAFETY: forwarded; the reduction block k0..k0+kb is inside 0..k.
            unsafe { nn_block(path, m, n, kb, ak, rsa, csa, bk, rsb, c, rsc, init_k, relu && last, ahead) };
            k0 += kb;
            if k0 >= k {
                break;
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // nt: C = init + A·Bᵀ, A and B row-major along the reduction.

    /// Horizontal sum of 8 lanes.
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

    /// One `R × C` block of `C` (R rows of A, C rows of B) over the full reduction.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn nt_kernel<const R: usize, const CC: usize>(
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
        // SAFETY (whole body): the caller guarantees rows 0..R of A, 0..CC of B (each 0..k) and the
        // R × CC block of C are in bounds; the tail uses masked loads.
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

    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn nt_rows<const CC: usize>(
        rows: usize,
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
            match rows {
                1 => nt_kernel::<1, CC>(k, a, lda, b, ldb, c, rsc, csc, init, relu),
                2 => nt_kernel::<2, CC>(k, a, lda, b, ldb, c, rsc, csc, init, relu),
                3 => nt_kernel::<3, CC>(k, a, lda, b, ldb, c, rsc, csc, init, relu),
                4 => nt_kernel::<4, CC>(k, a, lda, b, ldb, c, rsc, csc, init, relu),
                _ => unreachable!("nt block of {rows} rows"),
            }
        }
    }

    /// See [`super::nt`]. Column blocks (rows of B) outside, row blocks (rows of A) inside, so each
    /// block of B is read from memory once.
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
        // Keep the smaller operand in cache and stream the larger one once: rows of B outside when A
        // is the small one (e.g. input gradients: A = a batch, B = weights), rows of A outside
        // otherwise (e.g. weight gradients: A = im2col rows, B = output gradients).
        // SAFETY (both loops): every block lies inside the checked extents.
        unsafe {
            if m * lda <= n * ldb {
                // A large B comes from memory: prefetch the rows two column blocks ahead into L2.
                let stream = k > 0 && n * ldb * 4 > STREAM_B_BYTES;
                for (j, cols) in row_blocks(n, NT_NR) {
                    if stream {
                        let ahead = j + 2 * NT_NR;
                        let rows = cols.min(n.saturating_sub(ahead));
                        prefetch_rows::<_MM_HINT_T1>(b.wrapping_add(ahead * ldb), rows, k, ldb);
                    }
                    for (i, rows) in row_blocks(m, NT_MR) {
                        nt_block(i, rows, j, cols, k, a, lda, b, ldb, c, rsc, csc, init, relu);
                    }
                }
            } else {
                for (i, rows) in row_blocks(m, NT_MR) {
                    for (j, cols) in row_blocks(n, NT_NR) {
                        nt_block(i, rows, j, cols, k, a, lda, b, ldb, c, rsc, csc, init, relu);
                    }
                }
            }
        }
    }

    /// The `rows × cols` block of `C` at `(i, j)`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn nt_block(
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
            match cols {
                1 => nt_rows::<1>(rows, k, ap, lda, bp, ldb, cp, rsc, csc, kinit, relu),
                2 => nt_rows::<2>(rows, k, ap, lda, bp, ldb, cp, rsc, csc, kinit, relu),
                3 => nt_rows::<3>(rows, k, ap, lda, bp, ldb, cp, rsc, csc, kinit, relu),
                _ => unreachable!("nt block of {cols} columns"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        at: impl Fn(usize, usize) -> f32,
        bt: impl Fn(usize, usize) -> f32,
        c0: impl Fn(usize, usize) -> f32,
        init: Init<'_>,
        relu: bool,
    ) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = match init {
                    Init::Zero => 0.0,
                    Init::Acc => c0(i, j) as f64,
                    Init::RowBias(b) => b[i] as f64,
                    Init::ColBias(b) => b[j] as f64,
                };
                for p in 0..k {
                    s += at(i, p) as f64 * bt(p, j) as f64;
                }
                if relu {
                    s = s.max(0.0);
                }
                out[i * n + j] = s;
            }
        }
        out
    }

    fn shapes() -> Vec<(usize, usize, usize)> {
        let mut v = vec![
            (1, 1, 1),
            (10, 200, 784),
            (64, 200, 200),
            (7, 10, 300),
            (13, 31, 0),
            (300, 31, 0),
            (200, 33, 10),
            (300, 40, 300),
            (700, 37, 70),
            (401, 300, 20),
            // B beyond STREAM_B_BYTES into a C within STREAM_C_BYTES (short reduction blocks).
            (10, 520, 1100),
        ];
        for m in [1, 2, 3, 5, 6, 7, 12, 13] {
            for n in [1, 7, 8, 9, 16, 17, 24, 25, 40] {
                for k in [1, 5, 8, 9, 17, 260, 513] {
                    v.push((m, n, k));
                }
            }
        }
        v
    }

    fn check_close(got: &[f32], want: &[f64], k: usize, what: &str) {
        for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-5 * (k as f64 + 1.0).sqrt() * (1.0 + w.abs());
            assert!((g as f64 - w).abs() <= tol, "{what}: element {idx}: got {g}, want {w}");
        }
    }

    #[test]
    fn nn_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (m, n, k) in shapes() {
            for (case, (transposed_a, relu)) in [(false, false), (true, true), (false, true)].into_iter().enumerate() {
                // A either row-major (rsa = k + 3) or column-major (csa = m + 2).
                let (rsa, csa) = if transposed_a { (1, m + 2) } else { (k + 3, 1) };
                let a = rand_vec(&mut rng, extent(m, k, rsa, csa).max(1));
                let rsb = n + 5;
                let b = rand_vec(&mut rng, extent(k, n, rsb, 1).max(1));
                let rsc = n + 1;
                let c0 = rand_vec(&mut rng, extent(m, n, rsc, 1));
                let rb = rand_vec(&mut rng, m);
                let cb = rand_vec(&mut rng, n);
                let init = match case {
                    0 => Init::Acc,
                    1 => Init::RowBias(&rb),
                    _ => Init::ColBias(&cb),
                };
                let want = reference(
                    m,
                    n,
                    k,
                    |i, p| a[i * rsa + p * csa],
                    |p, j| b[p * rsb + j],
                    |i, j| c0[i * rsc + j],
                    init,
                    relu,
                );
                let mut c = c0.clone();
                nn(m, n, k, &a, rsa, csa, &b, rsb, &mut c, rsc, init, relu);
                let got: Vec<f32> = (0..m * n).map(|ij| c[(ij / n) * rsc + ij % n]).collect();
                check_close(&got, &want, k, &format!("nn {m}x{n}x{k} case {case}"));
                let mut c = c0.clone();
                portable::nn(m, n, k, &a, rsa, csa, &b, rsb, &mut c, rsc, init, relu);
                let got: Vec<f32> = (0..m * n).map(|ij| c[(ij / n) * rsc + ij % n]).collect();
                check_close(&got, &want, k, &format!("portable nn {m}x{n}x{k} case {case}"));
            }
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, k * n);
            let mut c = vec![f32::NAN; m * n];
            nn(m, n, k, &a, k, 1, &b, n, &mut c, n, Init::Zero, false);
            let want = reference(m, n, k, |i, p| a[i * k + p], |p, j| b[p * n + j], |_, _| 0.0, Init::Zero, false);
            check_close(&c, &want, k, &format!("nn zero {m}x{n}x{k}"));
        }
    }

    #[test]
    fn nt_matches_reference() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for (m, n, k) in shapes() {
            for (case, (col_major_c, relu)) in
                [(false, false), (true, true), (false, true), (true, false)].into_iter().enumerate()
            {
                let lda = k + 1;
                let ldb = k + 2;
                let a = rand_vec(&mut rng, extent(m, k, lda, 1).max(1));
                let b = rand_vec(&mut rng, extent(n, k, ldb, 1).max(1));
                let (rsc, csc) = if col_major_c { (1, m + 3) } else { (n + 2, 1) };
                let c0 = rand_vec(&mut rng, extent(m, n, rsc, csc));
                let rb = rand_vec(&mut rng, m);
                let cb = rand_vec(&mut rng, n);
                let init = match case {
                    0 => Init::Acc,
                    1 => Init::RowBias(&rb),
                    2 => Init::ColBias(&cb),
                    _ => Init::Zero,
                };
                let want = reference(
                    m,
                    n,
                    k,
                    |i, p| a[i * lda + p],
                    |p, j| b[j * ldb + p],
                    |i, j| c0[i * rsc + j * csc],
                    init,
                    relu,
                );
                let mut c = c0.clone();
                nt(m, n, k, &a, lda, &b, ldb, &mut c, rsc, csc, init, relu);
                let got: Vec<f32> = (0..m * n).map(|ij| c[(ij / n) * rsc + (ij % n) * csc]).collect();
                check_close(&got, &want, k, &format!("nt {m}x{n}x{k} case {case}"));
                let mut c = c0.clone();
                portable::nt(m, n, k, &a, lda, &b, ldb, &mut c, rsc, csc, init, relu);
                let got: Vec<f32> = (0..m * n).map(|ij| c[(ij / n) * rsc + (ij % n) * csc]).collect();
                check_close(&got, &want, k, &format!("portable nt {m}x{n}x{k} case {case}"));
            }
        }
    }

    #[test]
    #[should_panic(expected = "too short")]
    fn short_slices_are_rejected() {
        let a = vec![0.0; 5];
        let b = vec![0.0; 6];
        let mut c = vec![0.0; 6];
        nn(2, 3, 3, &a, 3, 1, &b, 3, &mut c, 3, Init::Zero, false);
    }

    /// On-CPU time of this thread in seconds (Linux), so timings ignore time spent descheduled.
    fn cpu_time() -> f64 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()))
            .map_or(f64::NAN, |ns| ns * 1e-9)
    }

    /// Throughput of the products the models use (run with `--ignored --nocapture`; a name filter in
    /// `GEMM_SHAPES` selects shapes; `GEMM_FLUSH_MB=64` also times each product with its operands
    /// evicted by a sweep over that many MiB first, as when the weights come from memory).
    #[test]
    #[ignore = "timing report, not a check"]
    fn shape_speeds() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // (label, kind (true: nn, false: nt), m, n, k, a strides (rsa, csa) for nn)
        type Case = (&'static str, bool, usize, usize, usize, (usize, usize));
        let p1 = 3 * 784;
        let p2 = 3 * 196;
        let cases: Vec<Case> = vec![
            ("L1 6x16x256", true, 6, 16, 256, (256, 1)),
            ("L1 12x32x256", true, 12, 32, 256, (256, 1)),
            ("L1 10x32x256", true, 10, 32, 256, (256, 1)),
            ("L1 5x32x256", true, 5, 32, 256, (256, 1)),
            ("L1 8x32x256", true, 8, 32, 256, (256, 1)),
            ("L1 12x32x256 T", true, 12, 32, 256, (1, 12)),
            ("L1 nt 8x6x256", false, 8, 6, 256, (0, 0)),
            ("L2 60x96x256", true, 60, 96, 256, (256, 1)),
            ("2nn fwd1 B10", true, 10, 200, 784, (784, 1)),
            ("2nn fwd2 B10", true, 10, 200, 200, (200, 1)),
            ("2nn dW1 B10", true, 784, 200, 10, (1, 784)),
            ("2nn dW2 B10", true, 200, 200, 10, (1, 200)),
            ("2nn dX2 B10", false, 10, 200, 200, (0, 0)),
            ("2nn fwd1 B64", true, 64, 200, 784, (784, 1)),
            ("2nn fwd2 B64", true, 64, 200, 200, (200, 1)),
            ("2nn dW1 B64", true, 784, 200, 64, (1, 784)),
            ("2nn dW2 B64", true, 200, 200, 64, (1, 200)),
            ("2nn dX2 B64", false, 64, 200, 200, (0, 0)),
            ("conv1 fwd", true, 32, p1, 25, (1, 32)),
            ("conv2 fwd", true, 64, p2, 800, (1, 64)),
            ("conv2 dW", true, 800, 64, p2, (p2, 1)),
            ("conv2 dcol", true, 800, p2, 64, (64, 1)),
            ("conv1 dW nt", false, 25, 32, p1, (0, 0)),
            ("conv2 dW nt", false, 800, 64, p2, (0, 0)),
            ("fc1 fwd B10", true, 10, 512, 3136, (3136, 1)),
            ("fc1 dW B10", true, 3136, 512, 10, (1, 3136)),
            ("fc1 dX B10", false, 10, 3136, 512, (0, 0)),
            ("fc1 fwd B64", true, 64, 512, 3136, (3136, 1)),
            ("fc1 dW B64", true, 3136, 512, 64, (1, 3136)),
            ("fc1 dX B64", false, 64, 3136, 512, (0, 0)),
            ("logreg fwd B64", false, 64, 10, 784, (0, 0)),
            ("logreg dW B64", true, 10, 784, 64, (1, 10)),
        ];
        let filter = std::env::var("GEMM_SHAPES").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            use std::sync::atomic::Ordering::Relaxed;
            let knob = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<usize>().ok());
            if let Some(v) = knob("GEMM_KC") {
                x86::tune::KC_IN_PLACE.store(v, Relaxed);
            }
            if let Some(v) = knob("GEMM_PREFETCH") {
                x86::tune::PREFETCH.store(v, Relaxed);
            }
        }
        for (label, is_nn, m, n, k, (rsa, csa)) in cases {
            if !label.contains(filter.as_str()) {
                continue;
            }
            let a = rand_vec(&mut rng, m * k);
            let b = rand_vec(&mut rng, n * k);
            let mut c = rand_vec(&mut rng, m * n);
            let run = |c: &mut [f32]| {
                if is_nn {
                    nn(m, n, k, &a, rsa, csa, &b, n, c, n, Init::Zero, false);
                } else {
                    nt(m, n, k, &a, k, &b, k, c, n, 1, Init::Zero, false);
                }
            };
            run(&mut c);
            if let Some(mb) = std::env::var("GEMM_FLUSH_MB").ok().and_then(|v| v.parse::<usize>().ok()) {
                // Cold caches: evict the operands between runs by streaming over `mb` MiB.
                let mut junk = vec![1.0f32; mb << 18];
                let mut spent = 0.0;
                let mut runs = 0;
                while spent < 0.5 {
                    for v in junk.iter_mut().step_by(16) {
                        *v += 1.0;
                    }
                    let t = cpu_time();
                    run(&mut c);
                    spent += cpu_time() - t;
                    runs += 1;
                }
                std::hint::black_box(&junk);
                eprintln!(
                    "{label:16} {m:5}x{n:5}x{k:5}  {:6.1} GFLOP/s cold",
                    2.0 * (m * n * k) as f64 * runs as f64 / spent / 1e9
                );
            }
            // Best of three groups of at least 0.25 s of on-CPU time (the clock advances in ticks).
            let mut best = f64::INFINITY;
            for _ in 0..3 {
                let t = cpu_time();
                let mut runs = 0;
                // Batches of about 1e7 FLOPs keep the cost of reading the clock negligible.
                let batch = (1e7 / (2.0 * (m * n * k) as f64)).max(1.0) as usize;
                while cpu_time() - t < 0.25 {
                    for _ in 0..batch {
                        run(&mut c);
                    }
                    runs += batch;
                }
                best = best.min((cpu_time() - t) / runs as f64);
            }
            eprintln!("{label:16} {m:5}x{n:5}x{k:5}  {:6.1} GFLOP/s", 2.0 * (m * n * k) as f64 / best / 1e9);
        }
    }
}
