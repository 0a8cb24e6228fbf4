//! `dense` (on flat `rows × n` tensors, weight input-major `[n, units]` like [`crate::Mlp`]), and the
//! parameter-free element-wise layers: `relu`, `flatten` and `dropout`.

use crate::gemm::{self, Init};
use crate::ops;

/// A fully connected layer `n → u`.
#[derive(Debug, Clone)]
pub(super) struct Dense {
    pub(super) n: usize,
    pub(super) u: usize,
    pub(super) w_off: usize,
    pub(super) b_off: Option<usize>,
}

impl Dense {
    /// Forward multiply-adds ×2 per sample.
    pub(super) fn flops(&self) -> f64 {
        2.0 * (self.n * self.u) as f64
    }

    /// `y = x·W (+ b)`.
    pub(super) fn forward(&self, params: &[f32], x: &[f32], y: &mut [f32], rows: usize) {
        self.forward_relu(params, x, y, rows, false);
    }

    /// [`Self::forward`], then `max(·, 0)` if `relu` (a following ReLU, fused into the product).
    pub(super) fn forward_relu(
        &self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        rows: usize,
        relu: bool,
    ) {
        let (n, u) = (self.n, self.u);
        let init = match self.b_off {
            Some(o) => Init::ColBias(&params[o..o + u]),
            None => Init::Zero,
        };
        let wt = &params[self.w_off..][..n * u];
        gemm::nn(
            rows,
            u,
            n,
            x,
            n,
            1,
            wt,
            u,
            &mut y[..rows * u],
            u,
            init,
            relu,
        );
    }

    /// Weight and bias gradients into `grad` (added when `acc`); `dx = dy·Wᵀ` (added when `acc_dx`)
    /// when `dx` is given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        dy: &[f32],
        dx: Option<&mut [f32]>,
        acc_dx: bool,
        grad: &mut [f32],
        acc: bool,
        rows: usize,
    ) {
        let (n, u) = (self.n, self.u);
        let init = if acc { Init::Acc } else { Init::Zero };
        let dy = &dy[..rows * u];
        if let Some(dx) = dx {
            let wt = &params[self.w_off..][..n * u];
            let i = if acc_dx { Init::Acc } else { Init::Zero };
            gemm::nt(
                rows,
                n,
                u,
                dy,
                u,
                wt,
                u,
                &mut dx[..rows * n],
                n,
                1,
                i,
                false,
            );
        }
        let gw = &mut grad[self.w_off..][..n * u];
        gemm::nn(n, u, rows, x, 1, n, dy, u, gw, u, init, false);
        if let Some(o) = self.b_off {
            ops::col_sums(dy, u, &mut grad[o..o + u], acc);
        }
    }
}

/// `y = max(x, 0)`.
pub(super) fn relu_forward(x: &[f32], y: &mut [f32]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o = v.max(0.0);
    }
}

/// `dx = dy` where the output `y` is positive, else 0.
pub(super) fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    dx.copy_from_slice(dy);
    ops::relu_backward(dx, y);
}

/// Channel-major planes (`c` planes of `hw` pixels per sample) to a flat `rows × c·hw` tensor
/// (PyTorch's flatten order), or back (`back`).
pub(super) fn flatten(src: &[f32], dst: &mut [f32], c: usize, hw: usize, rows: usize, back: bool) {
    let f = c * hw;
    for ch in 0..c {
        for b in 0..rows {
            let (plane, flat) = ((ch * rows + b) * hw, b * f + ch * hw);
            if back {
                dst[plane..plane + hw].copy_from_slice(&src[flat..flat + hw]);
            } else {
                dst[flat..flat + hw].copy_from_slice(&src[plane..plane + hw]);
            }
        }
    }
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The dropout mask of one layer for one training step: entry `(sample, feature)` of the batch is
/// kept with probability `1 − p` (then scaled by `1/(1 − p)`), decided by a hash of `(key, step,
/// layer, sample·features + feature)` only, so it does not depend on how the batch is split into
/// passes, on the thread or on the runtime.
#[derive(Debug, Clone, Copy)]
pub(super) struct DropMask {
    base: u64,
    p: f32,
    scale: f32,
}

impl DropMask {
    /// The mask of layer `layer` at step `step` of the stream `key`.
    pub(super) fn new(key: u64, step: u64, layer: u64, p: f32) -> Self {
        Self {
            base: mix(mix(mix(key) ^ step) ^ layer),
            p,
            scale: 1.0 / (1.0 - p),
        }
    }

    /// The multiplier (0 or `1/(1 − p)`) of element `e` (`sample·features + feature`).
    #[inline]
    fn at(&self, e: u64) -> f32 {
        let u = mix(self
            .base
            .wrapping_add(e.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let unit = (u >> 40) as f32 * (1.0 / (1u64 << 24) as f32);
        if unit >= self.p { self.scale } else { 0.0 }
    }

    /// Fills `mask` (laid out like the tensor: channel-major planes of `hw` pixels for `c > 0`
    /// channels of an image, or `rows × features` when `hw == 0`) for samples `row0..row0 + rows` of
    /// the batch, each sample having `features` elements.
    pub(super) fn fill(
        &self,
        mask: &mut [f32],
        features: usize,
        c_hw: Option<(usize, usize)>,
        row0: usize,
        rows: usize,
    ) {
        match c_hw {
            None => {
                for (b, m) in mask[..rows * features]
                    .chunks_exact_mut(features)
                    .enumerate()
                {
                    let e0 = ((row0 + b) * features) as u64;
                    for (j, v) in m.iter_mut().enumerate() {
                        *v = self.at(e0 + j as u64);
                    }
                }
            }
            Some((c, hw)) => {
                for ch in 0..c {
                    for b in 0..rows {
                        let e0 = ((row0 + b) * features + ch * hw) as u64;
                        let plane = &mut mask[(ch * rows + b) * hw..][..hw];
                        for (j, v) in plane.iter_mut().enumerate() {
                            *v = self.at(e0 + j as u64);
                        }
                    }
                }
            }
        }
    }
}
