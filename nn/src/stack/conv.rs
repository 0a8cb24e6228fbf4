//! `conv2d`: any square kernel, stride and zero padding, lowered to matrix products with im2col
//! (forward, weight gradient) and col2im (input gradient).
//!
//! Images are stored channel-major over the pass: plane `(c, b)` (channel `c` of sample `b` of a pass
//! of `rows` samples) starts at `(c·rows + b)·h·w`. The output of a chunk of `cb` samples is then a
//! `cout × cb·ho·wo` block of the output with row stride `rows·ho·wo`, which the GEMM writes in place.
//! The weight is stored input-major, `[cin, k, k, cout]`, like the McMahan CNN's.

use crate::gemm::{self, Init};
use crate::ops;

/// Largest im2col block of one chunk of samples, in floats (the chunk shrinks to fit, down to one
/// sample), so that the block stays in L2/L3 between im2col and the product.
const COL_BUDGET: usize = 1 << 19;

/// One convolution layer.
#[derive(Debug, Clone)]
pub(super) struct Conv {
    pub(super) cin: usize,
    pub(super) cout: usize,
    pub(super) k: usize,
    pub(super) stride: usize,
    pub(super) pad: usize,
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) ho: usize,
    pub(super) wo: usize,
    /// Offset of the weight `[cin, k, k, cout]` in the parameters.
    pub(super) w_off: usize,
    /// Offset of the bias `[cout]`, if any.
    pub(super) b_off: Option<usize>,
}

/// The output positions `o` whose input coordinate `o·stride + d − pad` lies in `0..n`.
fn valid(d: usize, pad: usize, stride: usize, n: usize, n_out: usize) -> (usize, usize) {
    let lo = if d >= pad {
        0
    } else {
        (pad - d).div_ceil(stride)
    };
    let hi = if n + pad > d {
        (n + pad - d).div_ceil(stride).min(n_out)
    } else {
        0
    };
    (lo.min(n_out), hi.max(lo.min(n_out)))
}

impl Conv {
    /// Rows of the im2col matrix (`cin·k·k`).
    pub(super) fn kdim(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// Output pixels per plane.
    pub(super) fn po(&self) -> usize {
        self.ho * self.wo
    }

    /// Samples per im2col chunk.
    pub(super) fn chunk(&self) -> usize {
        (COL_BUDGET / (self.kdim() * self.po()).max(1)).max(1)
    }

    /// Floats of the im2col block for a pass of `rows` samples.
    pub(super) fn col_len(&self, rows: usize) -> usize {
        self.kdim() * self.po() * self.chunk().min(rows)
    }

    /// Forward multiply-adds ×2 per sample.
    pub(super) fn flops(&self) -> f64 {
        2.0 * (self.kdim() * self.cout * self.po()) as f64
    }

    /// The chunks `(first sample, samples)` of a pass: as few as keep each within [`Self::chunk`],
    /// sizes differing by at most one.
    fn chunks(&self, rows: usize) -> impl Iterator<Item = (usize, usize)> {
        let n = rows.div_ceil(self.chunk()).max(1);
        let (base, extra) = (rows / n, rows % n);
        (0..n)
            .map(move |c| (c * base + c.min(extra), base + usize::from(c < extra)))
            .filter(|&(_, cb)| cb > 0)
    }

    /// im2col of samples `b0..b0 + cb` of a pass of `rows`: row `(ci·k + dy)·k + dx` of `col`
    /// (`kdim × cb·po`) holds input pixel `(oy·s + dy − pad, ox·s + dx − pad)` of plane `(ci, b)` for
    /// column `b·po + oy·wo + ox`, or 0 outside the image.
    fn im2col(&self, x: &[f32], rows: usize, b0: usize, cb: usize, col: &mut [f32]) {
        let (k, s, w, wo, po) = (self.k, self.stride, self.w, self.wo, self.po());
        let hw = self.h * w;
        let n = cb * po;
        for ci in 0..self.cin {
            for dy in 0..k {
                let (oy0, oy1) = valid(dy, self.pad, s, self.h, self.ho);
                for dx in 0..k {
                    let (ox0, ox1) = valid(dx, self.pad, s, w, wo);
                    let row = &mut col[((ci * k + dy) * k + dx) * n..][..n];
                    for b in 0..cb {
                        let plane = &x[(ci * rows + b0 + b) * hw..][..hw];
                        let dst = &mut row[b * po..][..po];
                        dst[..oy0 * wo].fill(0.0);
                        dst[oy1 * wo..].fill(0.0);
                        for oy in oy0..oy1 {
                            let iy = oy * s + dy - self.pad;
                            let drow = &mut dst[oy * wo..][..wo];
                            drow[..ox0].fill(0.0);
                            drow[ox1..].fill(0.0);
                            if ox0 == ox1 {
                                continue;
                            }
                            let src = &plane[iy * w + ox0 * s + dx - self.pad..];
                            if s == 1 {
                                drow[ox0..ox1].copy_from_slice(&src[..ox1 - ox0]);
                            } else {
                                for (j, o) in drow[ox0..ox1].iter_mut().enumerate() {
                                    *o = src[j * s];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::im2col`]: adds every entry of `dcol` to the input pixel it came from.
    fn col2im(&self, dcol: &[f32], rows: usize, b0: usize, cb: usize, dx_: &mut [f32]) {
        let (k, s, w, wo, po) = (self.k, self.stride, self.w, self.wo, self.po());
        let hw = self.h * w;
        let n = cb * po;
        for ci in 0..self.cin {
            for dy in 0..k {
                let (oy0, oy1) = valid(dy, self.pad, s, self.h, self.ho);
                for dx in 0..k {
                    let (ox0, ox1) = valid(dx, self.pad, s, w, wo);
                    if ox0 == ox1 {
                        continue;
                    }
                    let row = &dcol[((ci * k + dy) * k + dx) * n..][..n];
                    for b in 0..cb {
                        let plane = &mut dx_[(ci * rows + b0 + b) * hw..][..hw];
                        let src = &row[b * po..][..po];
                        for oy in oy0..oy1 {
                            let iy = oy * s + dy - self.pad;
                            let g = &src[oy * wo + ox0..oy * wo + ox1];
                            let dst = &mut plane[iy * w + ox0 * s + dx - self.pad..];
                            if s == 1 {
                                for (o, &v) in dst.iter_mut().zip(g) {
                                    *o += v;
                                }
                            } else {
                                for (j, &v) in g.iter().enumerate() {
                                    dst[j * s] += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y = conv(x) (+ bias)` for a pass of `rows` samples.
    pub(super) fn forward(
        &self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        rows: usize,
        col: &mut [f32],
    ) {
        let (kd, po, cout) = (self.kdim(), self.po(), self.cout);
        let wt = &params[self.w_off..][..kd * cout];
        let init = match self.b_off {
            Some(o) => Init::RowBias(&params[o..o + cout]),
            None => Init::Zero,
        };
        for (b0, cb) in self.chunks(rows) {
            let n = cb * po;
            let col = &mut col[..kd * n];
            self.im2col(x, rows, b0, cb, col);
            gemm::nn(
                cout,
                n,
                kd,
                wt,
                1,
                cout,
                col,
                n,
                &mut y[b0 * po..],
                rows * po,
                init,
                false,
            );
        }
    }

    /// Gradients for a pass: weight and bias gradients written into `grad` (added when `acc`), and
    /// the input gradient written into `dx` (added when `acc_dx`) when `dx` is given.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn backward(
        &self,
        params: &[f32],
        x: &[f32],
        dy: &[f32],
        mut dx: Option<&mut [f32]>,
        acc_dx: bool,
        grad: &mut [f32],
        acc: bool,
        rows: usize,
        col: &mut [f32],
        dcol: &mut [f32],
    ) {
        let (kd, po, cout) = (self.kdim(), self.po(), self.cout);
        let wt = &params[self.w_off..][..kd * cout];
        if let Some(dx) = dx.as_deref_mut()
            && !acc_dx
        {
            dx.fill(0.0);
        }
        for (i, (b0, cb)) in self.chunks(rows).enumerate() {
            let n = cb * po;
            let first = i == 0 && !acc;
            let col = &mut col[..kd * n];
            self.im2col(x, rows, b0, cb, col);
            let dyc = &dy[b0 * po..];
            // dW (kd × cout) += col (kd × n) · dyᵀ.
            let gw = &mut grad[self.w_off..][..kd * cout];
            let init = if first { Init::Zero } else { Init::Acc };
            gemm::nt(
                kd,
                cout,
                n,
                col,
                n,
                dyc,
                rows * po,
                gw,
                cout,
                1,
                init,
                false,
            );
            if let Some(o) = self.b_off {
                for (c, gb) in grad[o..o + cout].iter_mut().enumerate() {
                    let row = &dy[c * rows * po + b0 * po..][..n];
                    ops::row_sums(row, n, std::slice::from_mut(gb), !first);
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                // dcol (kd × n) = W (kd × cout) · dy (cout × n), then col2im.
                let dcol = &mut dcol[..kd * n];
                gemm::nn(
                    kd,
                    n,
                    cout,
                    wt,
                    cout,
                    1,
                    dyc,
                    rows * po,
                    dcol,
                    n,
                    Init::Zero,
                    false,
                );
                self.col2im(dcol, rows, b0, cb, dx);
            }
        }
    }
}
