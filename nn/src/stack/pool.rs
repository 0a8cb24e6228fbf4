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
    /// Max-pooling of every plane; `idx` receives the in-plane offset of each window's first maximum
    /// (exact in `f32` below 2²⁴ pixels per plane).
    pub(super) fn max_forward(&self, x: &[f32], y: &mut [f32], idx: &mut [f32]) {
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
