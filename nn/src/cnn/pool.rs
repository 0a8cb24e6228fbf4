//! 2×2 max-pooling (stride 2) over ReLU outputs, with the arg-max recorded for the backward pass.

/// 2×2 max-pooling with stride 2 of one `h × w` plane of ReLU outputs. `idx` receives, for each
/// window, the in-plane offset of its first maximum, or `−1 − offset of the window` when the maximum is
/// not positive (the ReLU passes no gradient there). Offsets are exact in `f32` below 2²⁴.
pub(super) fn maxpool(src: &[f32], h: usize, w: usize, dst: &mut [f32], idx: &mut [f32]) {
    let w2 = w / 2;
    debug_assert_eq!(dst.len(), (h / 2) * w2);
    debug_assert_eq!(idx.len(), dst.len());
    for (oy, (out, ids)) in dst
        .chunks_exact_mut(w2)
        .zip(idx.chunks_exact_mut(w2))
        .enumerate()
    {
        let r0 = &src[2 * oy * w..][..w];
        let r1 = &src[(2 * oy + 1) * w..][..w];
        for (ox, (o, id)) in out.iter_mut().zip(ids.iter_mut()).enumerate() {
            let x = 2 * ox;
            let (mut m, mut off) = (r0[x], 0);
            if r0[x + 1] > m {
                (m, off) = (r0[x + 1], 1);
            }
            if r1[x] > m {
                (m, off) = (r1[x], w);
            }
            if r1[x + 1] > m {
                (m, off) = (r1[x + 1], w + 1);
            }
            *o = m;
            let corner = 2 * oy * w + x;
            *id = if m > 0.0 {
                (corner + off) as f32
            } else {
                -1.0 - corner as f32
            };
        }
    }
}

/// Backward of [`maxpool`] (and of the ReLU before it) for one plane: writes each pooled gradient
/// `g` at the offset recorded in `idx` (windows without gradient write a zero into their corner, so
/// the loop has no unpredictable branch). `d` must be zeroed by the caller.
pub(super) fn maxpool_backward(idx: &[f32], g: &[f32], d: &mut [f32]) {
    debug_assert_eq!(g.len(), idx.len());
    for (&gv, &i) in g.iter().zip(idx) {
        let i = i as isize;
        let keep = i >= 0;
        let pos = if keep { i } else { -1 - i } as usize;
        d[pos] = if keep { gv } else { 0.0 };
    }
}
