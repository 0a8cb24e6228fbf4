//! `max_pool`, `avg_pool` (square windows, no padding, floor mode) and `global_avg_pool`, on
//! channel-major image planes (see [`super::conv`]); each plane is contiguous, so pooling runs plane
//! by plane.

/// Geometry of a pooling layer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pool2d {
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) size: usize,
    pub(super) stride: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
}

impl Pool2d {
    /// Whether this is the common 2×2 window with stride 2, which has a faster path (same results).
    fn is_2x2(&self) -> bool {
        self.size == 2 && self.stride == 2
    }

    /// Max-pooling of every plane; `idx` receives the in-plane offset of each window's first maximum
    /// (exact in `f32` below 2²⁴ pixels per plane).
    pub(super) fn max_forward(&self, x: &[f32], y: &mut [f32], idx: &mut [f32]) {
        if self.is_2x2() {
            return self.max_forward_2x2::<true>(x, y, idx, simd());
        }
        let (hw, po) = (self.h * self.w, self.ho * self.wo);
        for ((src, dst), ids) in x
            .chunks_exact(hw)
            .zip(y.chunks_exact_mut(po))
            .zip(idx.chunks_exact_mut(po))
        {
            for oy in 0..self.ho {
                for ox in 0..self.wo {
                    let corner = oy * self.stride * self.w + ox * self.stride;
                    let (mut m, mut at) = (src[corner], corner);
                    for dy in 0..self.size {
                        let row = &src[corner + dy * self.w..][..self.size];
                        for (dx, &v) in row.iter().enumerate() {
                            if v > m {
                                (m, at) = (v, corner + dy * self.w + dx);
                            }
                        }
                    }
                    dst[oy * self.wo + ox] = m;
                    ids[oy * self.wo + ox] = at as f32;
                }
            }
        }
    }

    /// Max-pooling without the arg-max (evaluation): the same `y` as [`Self::max_forward`].
    pub(super) fn max_forward_eval(&self, x: &[f32], y: &mut [f32]) {
        if self.is_2x2() {
            return self.max_forward_2x2::<false>(x, y, &mut [], simd());
        }
        let (hw, po) = (self.h * self.w, self.ho * self.wo);
        for (src, dst) in x.chunks_exact(hw).zip(y.chunks_exact_mut(po)) {
            for oy in 0..self.ho {
                for ox in 0..self.wo {
                    let corner = oy * self.stride * self.w + ox * self.stride;
                    let mut m = src[corner];
                    for dy in 0..self.size {
                        for &v in &src[corner + dy * self.w..][..self.size] {
                            if v > m {
                                m = v;
                            }
                        }
                    }
                    dst[oy * self.wo + ox] = m;
                }
            }
        }
    }

    /// [`Self::max_forward`] for 2×2 windows with stride 2: one pass over each pair of input rows,
    /// 16 windows at a time with the AVX-512 rows when `simd`, else a portable loop (same results);
    /// the arg-max only when `IDX`.
    fn max_forward_2x2<const IDX: bool>(
        &self,
        x: &[f32],
        y: &mut [f32],
        idx: &mut [f32],
        simd: bool,
    ) {
        let (w, hw, wo, po) = (self.w, self.h * self.w, self.wo, self.ho * self.wo);
        for (p, (src, dst)) in x.chunks_exact(hw).zip(y.chunks_exact_mut(po)).enumerate() {
            for oy in 0..self.ho {
                let r0 = &src[2 * oy * w..][..2 * wo];
                let r1 = &src[(2 * oy + 1) * w..][..2 * wo];
                let d = &mut dst[oy * wo..][..wo];
                #[cfg(target_arch = "x86_64")]
                if simd {
                    let ids: &mut [f32] = if IDX {
                        &mut idx[p * po + oy * wo..][..wo]
                    } else {
                        &mut []
                    };
                    let corner = (2 * oy * w) as f32;
                    // SAFETY: `simd` only when AVX-512F was detected (see `simd()`); the rows hold
                    // 2·wo floats and the outputs wo
                    // (the arg-maxes too when IDX), as the slicing above checked.
                    unsafe {
                        avx512::max_row::<IDX>(
                            wo,
                            r0.as_ptr(),
                            r1.as_ptr(),
                            d.as_mut_ptr(),
                            ids.as_mut_ptr(),
                            corner,
                            w as f32,
                        )
                    };
                    continue;
                }
                if IDX {
                    let ids = &mut idx[p * po + oy * wo..][..wo];
                    let base = (2 * oy * w) as f32;
                    let wf = w as f32;
                    for (ox, (((o, id), a), b)) in d
                        .iter_mut()
                        .zip(ids.iter_mut())
                        .zip(r0.chunks_exact(2))
                        .zip(r1.chunks_exact(2))
                        .enumerate()
                    {
                        // The window's elements in the generic path's order; the first maximum wins.
                        let corner = base + (2 * ox) as f32;
                        let (mut m, mut at) = (a[0], corner);
                        if a[1] > m {
                            (m, at) = (a[1], corner + 1.0);
                        }
                        if b[0] > m {
                            (m, at) = (b[0], corner + wf);
                        }
                        if b[1] > m {
                            (m, at) = (b[1], corner + wf + 1.0);
                        }
                        *o = m;
                        *id = at;
                    }
                } else {
                    for ((o, a), b) in d.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2))
                    {
                        let mut m = a[0];
                        for v in [a[1], b[0], b[1]] {
                            if v > m {
                                m = v;
                            }
                        }
                        *o = m;
                    }
                }
            }
        }
    }

    /// Backward of a ReLU followed by this max-pooling, together: `pooled` is the pooling's
    /// output (the ReLU's output at each arg-max), and the gradient reaches the ReLU's input only
    /// where it is positive. `dx` (the ReLU's input gradient) is overwritten; the result is that of
    /// [`Self::max_backward`] followed by the ReLU's backward.
    pub(super) fn max_relu_backward(
        &self,
        idx: &[f32],
        pooled: &[f32],
        dy: &[f32],
        dx: &mut [f32],
    ) {
        let (hw, po) = (self.h * self.w, self.ho * self.wo);
        if self.stride < self.size {
            // Overlapping windows: several outputs may add to one pixel.
            self.max_backward(idx, dy, dx);
            for ((ids, p), d) in idx
                .chunks_exact(po)
                .zip(pooled.chunks_exact(po))
                .zip(dx.chunks_exact_mut(hw))
            {
                for (&i, &pv) in ids.iter().zip(p) {
                    if pv <= 0.0 {
                        d[i as usize] = 0.0;
                    }
                }
            }
            return;
        }
        if self.is_2x2() {
            return self.max_relu_backward_2x2(idx, pooled, dy, dx, simd());
        }
        // Disjoint windows: each pixel is the arg-max of at most one window, so a zeroed gradient
        // and one store per window (`0.0 + g`, as the generic path's accumulation gives).
        dx.fill(0.0);
        for (((g, ids), p), d) in dy
            .chunks_exact(po)
            .zip(idx.chunks_exact(po))
            .zip(pooled.chunks_exact(po))
            .zip(dx.chunks_exact_mut(hw))
        {
            for ((&gv, &i), &pv) in g.iter().zip(ids).zip(p) {
                d[i as usize] = if pv > 0.0 { 0.0 + gv } else { 0.0 };
            }
        }
    }

    /// [`Self::max_relu_backward`] for 2×2 windows with stride 2: every input pixel is written once
    /// (its window's gradient if it is the window's arg-max, else 0), two input rows per output
    /// row, with the AVX-512 rows when `simd`, else a portable loop (same results).
    fn max_relu_backward_2x2(
        &self,
        idx: &[f32],
        pooled: &[f32],
        dy: &[f32],
        dx: &mut [f32],
        simd: bool,
    ) {
        let (w, hw, wo, po) = (self.w, self.h * self.w, self.wo, self.ho * self.wo);
        let wf = w as f32;
        for (((g, ids), p), d) in dy
            .chunks_exact(po)
            .zip(idx.chunks_exact(po))
            .zip(pooled.chunks_exact(po))
            .zip(dx.chunks_exact_mut(hw))
        {
            for oy in 0..self.ho {
                let g = &g[oy * wo..][..wo];
                let ids = &ids[oy * wo..][..wo];
                let p = &p[oy * wo..][..wo];
                let (r0, r1) = d[2 * oy * w..][..2 * w].split_at_mut(w);
                // The arg-max relative to the window's corner: 0, 1, w or w + 1.
                let corner = (2 * oy * w) as f32;
                #[cfg(target_arch = "x86_64")]
                if simd {
                    let (r0, r1) = (&mut r0[..2 * wo], &mut r1[..2 * wo]);
                    // SAFETY: `simd` only when AVX-512F was detected (see `simd()`); g, ids and p
                    // hold wo floats and the two rows
                    // 2·wo, as the slicing above checked.
                    unsafe {
                        avx512::max_relu_back_row(
                            wo,
                            g.as_ptr(),
                            ids.as_ptr(),
                            p.as_ptr(),
                            r0.as_mut_ptr(),
                            r1.as_mut_ptr(),
                            corner,
                            wf,
                        )
                    };
                    let (r0, r1) = d[2 * oy * w..][..2 * w].split_at_mut(w);
                    r0[2 * wo..].fill(0.0);
                    r1[2 * wo..].fill(0.0);
                    continue;
                }
                for (ox, (((&gv, &at), &pv), (a, b))) in g
                    .iter()
                    .zip(ids)
                    .zip(p)
                    .zip(r0.chunks_exact_mut(2).zip(r1.chunks_exact_mut(2)))
                    .enumerate()
                {
                    // `0.0 + g`, as the generic path's accumulation into a zeroed gradient gives.
                    let v = if pv > 0.0 { 0.0 + gv } else { 0.0 };
                    let k = at - (corner + (2 * ox) as f32);
                    a[0] = if k == 0.0 { v } else { 0.0 };
                    a[1] = if k == 1.0 { v } else { 0.0 };
                    b[0] = if k == wf { v } else { 0.0 };
                    b[1] = if k == wf + 1.0 { v } else { 0.0 };
                }
                // An odd width leaves a last column outside every window.
                r0[2 * wo..].fill(0.0);
                r1[2 * wo..].fill(0.0);
            }
            // An odd height leaves a last row outside every window.
            d[2 * self.ho * w..].fill(0.0);
        }
    }

    /// Backward of [`Self::max_forward`]: `dx` is overwritten.
    pub(super) fn max_backward(&self, idx: &[f32], dy: &[f32], dx: &mut [f32]) {
        let (hw, po) = (self.h * self.w, self.ho * self.wo);
        dx.fill(0.0);
        for ((g, ids), d) in dy
            .chunks_exact(po)
            .zip(idx.chunks_exact(po))
            .zip(dx.chunks_exact_mut(hw))
        {
            for (&gv, &i) in g.iter().zip(ids) {
                d[i as usize] += gv;
            }
        }
    }

    /// Average pooling of every plane (sums in window order, then one multiplication).
    pub(super) fn avg_forward(&self, x: &[f32], y: &mut [f32]) {
        let (hw, po) = (self.h * self.w, self.ho * self.wo);
        let inv = 1.0 / (self.size * self.size) as f32;
        for (src, dst) in x.chunks_exact(hw).zip(y.chunks_exact_mut(po)) {
            for oy in 0..self.ho {
                for ox in 0..self.wo {
                    let corner = oy * self.stride * self.w + ox * self.stride;
                    let mut s = 0.0f32;
                    for dy in 0..self.size {
                        for &v in &src[corner + dy * self.w..][..self.size] {
                            s += v;
                        }
                    }
                    dst[oy * self.wo + ox] = s * inv;
                }
            }
        }
    }

    /// Backward of [`Self::avg_forward`]: `dx` is overwritten.
    pub(super) fn avg_backward(&self, dy: &[f32], dx: &mut [f32]) {
        let (hw, po) = (self.h * self.w, self.ho * self.wo);
        let inv = 1.0 / (self.size * self.size) as f32;
        dx.fill(0.0);
        for (g, d) in dy.chunks_exact(po).zip(dx.chunks_exact_mut(hw)) {
            for oy in 0..self.ho {
                for ox in 0..self.wo {
                    let corner = oy * self.stride * self.w + ox * self.stride;
                    let v = g[oy * self.wo + ox] * inv;
                    for dy in 0..self.size {
                        for o in &mut d[corner + dy * self.w..][..self.size] {
                            *o += v;
                        }
                    }
                }
            }
        }
    }
}

/// Whether the AVX-512 pooling rows can run on this CPU.
fn simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::isa::has_avx512f()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Global average pooling of `c` channels of `hw` pixels over a pass of `rows` samples: channel-major
/// planes in, a flat `rows × c` tensor out.
pub(super) fn global_avg_forward(x: &[f32], c: usize, hw: usize, rows: usize, y: &mut [f32]) {
    let inv = 1.0 / hw as f32;
    for ch in 0..c {
        for b in 0..rows {
            let plane = &x[(ch * rows + b) * hw..][..hw];
            let mut s = 0.0f32;
            for &v in plane {
                s += v;
            }
            y[b * c + ch] = s * inv;
        }
    }
}

/// Backward of [`global_avg_forward`]: `dx` is overwritten.
pub(super) fn global_avg_backward(dy: &[f32], c: usize, hw: usize, rows: usize, dx: &mut [f32]) {
    let inv = 1.0 / hw as f32;
    for ch in 0..c {
        for b in 0..rows {
            dx[(ch * rows + b) * hw..][..hw].fill(dy[b * c + ch] * inv);
        }
    }
}

/// AVX-512F versions of the 2×2 stride-2 max-pooling rows: the same comparisons in the same order as
/// the portable loops (so the same results), on 16 windows at a time.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Lane permutations for `_mm512_permutex2var_ps` over two vectors (indices ≥ 16 pick from the
    /// second): the even and the odd elements of 32 floats, and the interleaving of two vectors
    /// (first and second halves).
    const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
    const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
    const ZIP_LO: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
    const ZIP_HI: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];

    /// The first `n` (at most 16) lanes.
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 { 0xffff } else { (1u16 << n) - 1 }
    }

    /// Loads a permutation table.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available.
    #[inline(always)]
    unsafe fn table(t: &[i32; 16]) -> __m512i {
        // SAFETY: `t` holds 16 integers (64 bytes).
        unsafe { _mm512_loadu_si512(t.as_ptr().cast()) }
    }

    /// `2·l` for lane `l`: the column offset of window `l` of a block.
    ///
    /// # Safety
    ///
    /// AVX-512F must be available.
    #[inline(always)]
    unsafe fn twice_lane() -> __m512 {
        // SAFETY: register-only intrinsic; the caller guarantees AVX-512F.
        unsafe {
            _mm512_setr_ps(
                0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 22.0, 24.0, 26.0,
                28.0, 30.0,
            )
        }
    }

    /// One output row of 2×2 max-pooling: `n` windows over the input rows `r0` and `r1` (`2n`
    /// floats each) into `y` (`n` floats) and, when `IDX`, the in-plane offsets of the first
    /// maxima into `idx` (`corner`: the offset of `r0`'s first pixel; `w`: the row length).
    ///
    /// # Safety
    ///
    /// AVX-512F must be available; `r0` and `r1` must hold `2n` floats, `y` (and `idx` when `IDX`)
    /// `n`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn max_row<const IDX: bool>(
        n: usize,
        r0: *const f32,
        r1: *const f32,
        y: *mut f32,
        idx: *mut f32,
        corner: f32,
        w: f32,
    ) {
        // SAFETY: (whole body) every load and store is masked to the first n outputs and 2n
        // inputs of the block, which the caller guarantees are in bounds.
        unsafe {
            let (even, odd) = (table(&EVEN), table(&ODD));
            let (one, wv, w1) = (
                _mm512_set1_ps(1.0),
                _mm512_set1_ps(w),
                _mm512_set1_ps(w + 1.0),
            );
            let mut j = 0;
            while j < n {
                let m = (n - j).min(16);
                let (mo, ml, mh) = (lanes(m), lanes(2 * m), lanes((2 * m).saturating_sub(16)));
                let pair = |r: *const f32| {
                    let lo = _mm512_maskz_loadu_ps(ml, r.add(2 * j));
                    let hi = _mm512_maskz_loadu_ps(mh, r.add(2 * j + 16));
                    (
                        _mm512_permutex2var_ps(lo, even, hi),
                        _mm512_permutex2var_ps(lo, odd, hi),
                    )
                };
                let ((a0, a1), (b0, b1)) = (pair(r0), pair(r1));
                // The generic order: (0,0), (0,1), (1,0), (1,1); a later element wins only if
                // strictly greater (false for NaN, as `v > m`).
                let mut mx = a0;
                let mut at = _mm512_setzero_ps();
                for (v, off) in [(a1, one), (b0, wv), (b1, w1)] {
                    let k = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, mx);
                    mx = _mm512_mask_blend_ps(k, mx, v);
                    at = _mm512_mask_blend_ps(k, at, off);
                }
                _mm512_mask_storeu_ps(y.add(j), mo, mx);
                if IDX {
                    let base = _mm512_add_ps(_mm512_set1_ps(corner + (2 * j) as f32), twice_lane());
                    _mm512_mask_storeu_ps(idx.add(j), mo, _mm512_add_ps(base, at));
                }
                j += 16;
            }
        }
    }

    /// One output row of the backward of ReLU + 2×2 max-pooling: from the gradients `g`, arg-maxes
    /// `at` and pooled values `p` of `n` windows, writes the `2n` first pixels of the two input
    /// rows `r0` and `r1` (the window's gradient at its arg-max if the pooled value is positive,
    /// else 0).
    ///
    /// # Safety
    ///
    /// AVX-512F must be available; `g`, `at` and `p` must hold `n` floats, `r0` and `r1` `2n`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn max_relu_back_row(
        n: usize,
        g: *const f32,
        at: *const f32,
        p: *const f32,
        r0: *mut f32,
        r1: *mut f32,
        corner: f32,
        w: f32,
    ) {
        // SAFETY: (whole body) every load and store is masked to the first n windows and 2n
        // pixels of the block, which the caller guarantees are in bounds.
        unsafe {
            let (zlo, zhi) = (table(&ZIP_LO), table(&ZIP_HI));
            let zero = _mm512_setzero_ps();
            let (one, wv, w1) = (
                _mm512_set1_ps(1.0),
                _mm512_set1_ps(w),
                _mm512_set1_ps(w + 1.0),
            );
            let mut j = 0;
            while j < n {
                let m = (n - j).min(16);
                let (mo, ml, mh) = (lanes(m), lanes(2 * m), lanes((2 * m).saturating_sub(16)));
                let gv = _mm512_maskz_loadu_ps(mo, g.add(j));
                let pv = _mm512_maskz_loadu_ps(mo, p.add(j));
                let atv = _mm512_maskz_loadu_ps(mo, at.add(j));
                // `0.0 + g` where the pooled value is positive, as the portable loop.
                let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(pv, zero);
                let v = _mm512_maskz_mov_ps(pos, _mm512_add_ps(zero, gv));
                let base = _mm512_add_ps(_mm512_set1_ps(corner + (2 * j) as f32), twice_lane());
                let k = _mm512_sub_ps(atv, base);
                let pick =
                    |off: __m512| _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_EQ_OQ>(k, off), v);
                let (e00, e01, e10, e11) = (pick(zero), pick(one), pick(wv), pick(w1));
                _mm512_mask_storeu_ps(r0.add(2 * j), ml, _mm512_permutex2var_ps(e00, zlo, e01));
                _mm512_mask_storeu_ps(
                    r0.add(2 * j + 16),
                    mh,
                    _mm512_permutex2var_ps(e00, zhi, e01),
                );
                _mm512_mask_storeu_ps(r1.add(2 * j), ml, _mm512_permutex2var_ps(e10, zlo, e11));
                _mm512_mask_storeu_ps(
                    r1.add(2 * j + 16),
                    mh,
                    _mm512_permutex2var_ps(e10, zhi, e11),
                );
                j += 16;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn pool(h: usize, w: usize, size: usize, stride: usize) -> Pool2d {
        Pool2d {
            h,
            w,
            size,
            stride,
            ho: (h - size) / stride + 1,
            wo: (w - size) / stride + 1,
        }
    }

    /// Values with many ties (a few distinct levels), negatives and zeros.
    fn data(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (rng.random_range(-3i32..4) as f32) * 0.5)
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// The AVX-512 rows and the portable loops of the 2×2 paths agree bit for bit (tails of every
    /// length, odd sizes), and the fused ReLU backward equals pooling backward then ReLU backward.
    #[test]
    fn pooling_paths_agree() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let planes = 3;
        for (h, w) in [(32, 32), (7, 9), (2, 2), (5, 36), (16, 70)] {
            let g = pool(h, w, 2, 2);
            let (hw, po) = (h * w, g.ho * g.wo);
            // The ReLU output feeding the pooling: non-negative, many zeros.
            let x: Vec<f32> = data(&mut rng, planes * hw)
                .iter()
                .map(|v| v.max(0.0))
                .collect();
            let dy = data(&mut rng, planes * po);
            let mut outs = Vec::new();
            for simd_on in [false, simd()] {
                let (mut y, mut idx) = (vec![0.0; planes * po], vec![0.0; planes * po]);
                g.max_forward_2x2::<true>(&x, &mut y, &mut idx, simd_on);
                let mut ye = vec![0.0; planes * po];
                g.max_forward_2x2::<false>(&x, &mut ye, &mut [], simd_on);
                assert_eq!(bits(&y), bits(&ye));
                let mut dx = vec![f32::NAN; planes * hw];
                g.max_relu_backward_2x2(&idx, &y, &dy, &mut dx, simd_on);
                outs.push((bits(&y), bits(&idx), bits(&dx)));
                // Against the generic paths: pooling backward, then the ReLU's.
                let mut want = vec![0.0; planes * hw];
                g.max_backward(&idx, &dy, &mut want);
                for (d, &xv) in want.iter_mut().zip(&x) {
                    if xv <= 0.0 {
                        *d = 0.0;
                    }
                }
                assert_eq!(bits(&dx), bits(&want), "{h}x{w}");
            }
            assert_eq!(outs[0], outs[1], "{h}x{w}: AVX-512 and portable differ");
        }
        // Other windows: disjoint (3/3) and overlapping (3/2).
        for (size, stride) in [(3, 3), (3, 2), (2, 1)] {
            let g = pool(8, 7, size, stride);
            let (hw, po) = (8 * 7, g.ho * g.wo);
            let x: Vec<f32> = data(&mut rng, planes * hw)
                .iter()
                .map(|v| v.max(0.0))
                .collect();
            let dy = data(&mut rng, planes * po);
            let (mut y, mut idx) = (vec![0.0; planes * po], vec![0.0; planes * po]);
            g.max_forward(&x, &mut y, &mut idx);
            let mut dx = vec![f32::NAN; planes * hw];
            g.max_relu_backward(&idx, &y, &dy, &mut dx);
            let mut want = vec![0.0; planes * hw];
            g.max_backward(&idx, &dy, &mut want);
            for (d, &xv) in want.iter_mut().zip(&x) {
                if xv <= 0.0 {
                    *d = 0.0;
                }
            }
            assert_eq!(bits(&dx), bits(&want), "{size}/{stride}");
        }
    }
}
