//! `conv2d`: any square kernel, stride and zero padding, lowered to matrix products with im2col
//! (forward, weight gradient) and col2im (input gradient).
//!
//! Images are stored channel-major over the pass: plane `(c, b)` (channel `c` of sample `b` of a pass
//! of `rows` samples) starts at `(c·rows + b)·h·w`. The output of a chunk of `cb` samples is then a
//! `cout × cb·ho·wo` block of the output with row stride `rows·ho·wo`, which the GEMM writes in place.
//! The weight is stored input-major, `[cin, k, k, cout]`, like the McMahan CNN's.

use crate::gemm::{self, Init};
use crate::ops;
use crate::profile::Section;

/// Largest im2col block of one chunk of samples, in floats (the chunk shrinks to fit, down to one
/// sample), so that the block stays in L2 (1 MiB on the machine measured) between im2col and the
/// products: 1 MiB measured a few percent faster than 2 MiB on `cnn_cifar` and `resnet8_gn`
/// training (0.5 and 0.25 MiB within noise).
const COL_BUDGET: usize = 1 << 18;

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

/// Zeroes the columns outside `ox0..ox1` of the rows of `w` floats in `block`: a strided loop per
/// column (at most the padding on each side), since per-row fills of one or two floats cost a
/// call each.
fn zero_columns(block: &mut [f32], w: usize, ox0: usize, ox1: usize) {
    // No valid row (a kernel offset past every row of a small image): nothing to zero.
    if block.is_empty() {
        return;
    }
    for c in (0..ox0).chain(ox1..w) {
        for v in block[c..].iter_mut().step_by(w) {
            *v = 0.0;
        }
    }
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
        self.kdim() * Self::col_ld(self.po() * self.chunk().min(rows))
    }

    /// Row stride of an im2col block of `n` columns: `n` rounded up to whole cache lines, plus one
    /// line when that is an even number of lines. Rows then start in different L1 sets; with a
    /// stride that is a multiple of 4 KiB (every 32×32 image: 1,024 pixels per plane) all rows of
    /// a panel map to one set, and the first convolution of `cnn_cifar` ran at 35 instead of 87
    /// GFLOP/s.
    fn col_ld(n: usize) -> usize {
        let ld = n.next_multiple_of(16);
        if (ld / 16).is_multiple_of(2) {
            ld + 16
        } else {
            ld
        }
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
        if self.is_same_stride1() {
            self.im2col_same(x, rows, b0, cb, col);
        } else {
            self.im2col_any(x, rows, b0, cb, col);
        }
    }

    /// [`Self::im2col`] for any geometry, pixel row by pixel row.
    fn im2col_any(&self, x: &[f32], rows: usize, b0: usize, cb: usize, col: &mut [f32]) {
        let (k, s, w, wo, po) = (self.k, self.stride, self.w, self.wo, self.po());
        let hw = self.h * w;
        let (n, ld) = (cb * po, Self::col_ld(cb * po));
        for ci in 0..self.cin {
            for dy in 0..k {
                let (oy0, oy1) = valid(dy, self.pad, s, self.h, self.ho);
                for dx in 0..k {
                    let (ox0, ox1) = valid(dx, self.pad, s, w, wo);
                    let row = &mut col[((ci * k + dy) * k + dx) * ld..][..n];
                    for b in 0..cb {
                        let plane = &x[(ci * rows + b0 + b) * hw..][..hw];
                        let dst = &mut row[b * po..][..po];
                        dst[..oy0 * wo].fill(0.0);
                        dst[oy1 * wo..].fill(0.0);
                        if ox0 == ox1 {
                            dst[oy0 * wo..oy1 * wo].fill(0.0);
                            continue;
                        }
                        zero_columns(&mut dst[oy0 * wo..oy1 * wo], wo, ox0, ox1);
                        for oy in oy0..oy1 {
                            let iy = oy * s + dy - self.pad;
                            let drow = &mut dst[oy * wo..][..wo];
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
    fn col2im(&self, dcol: &mut [f32], rows: usize, b0: usize, cb: usize, dx_: &mut [f32]) {
        if self.is_same_stride1() {
            self.col2im_same(dcol, rows, b0, cb, dx_);
        } else {
            self.col2im_any(dcol, rows, b0, cb, dx_);
        }
    }

    /// [`Self::col2im`] for any geometry, pixel row by pixel row.
    fn col2im_any(&self, dcol: &[f32], rows: usize, b0: usize, cb: usize, dx_: &mut [f32]) {
        let (k, s, w, wo, po) = (self.k, self.stride, self.w, self.wo, self.po());
        let hw = self.h * w;
        let (n, ld) = (cb * po, Self::col_ld(cb * po));
        for ci in 0..self.cin {
            for dy in 0..k {
                let (oy0, oy1) = valid(dy, self.pad, s, self.h, self.ho);
                for dx in 0..k {
                    let (ox0, ox1) = valid(dx, self.pad, s, w, wo);
                    if ox0 == ox1 {
                        continue;
                    }
                    let row = &dcol[((ci * k + dy) * k + dx) * ld..][..n];
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

    /// Whether the output has the input's size with stride 1 (a "same" convolution): then, for one
    /// kernel offset, the im2col row of a sample is the input plane shifted by a constant, so it
    /// is copied as one block (see [`Self::im2col_same`]).
    fn is_same_stride1(&self) -> bool {
        self.stride == 1 && self.ho == self.h && self.wo == self.w
    }

    /// For kernel offset `(dy, dx)` of a "same" stride-1 convolution: the valid output rows
    /// `oy0..oy1` and columns `ox0..ox1`, and the input offset `base` of output pixel `(oy0, 0)`
    /// (possibly negative: pixel `(oy, ox)` reads input `base + (oy − oy0)·w + ox`).
    fn same_geometry(&self, dy: usize, dx: usize) -> (usize, usize, usize, usize, isize) {
        let (oy0, oy1) = valid(dy, self.pad, 1, self.h, self.ho);
        let (ox0, ox1) = valid(dx, self.pad, 1, self.w, self.wo);
        let iy0 = oy0 + dy - self.pad;
        let base = (iy0 * self.w) as isize + dx as isize - self.pad as isize;
        (oy0, oy1, ox0, ox1, base)
    }

    /// [`Self::im2col`] of a "same" stride-1 convolution: per kernel offset and sample, the valid
    /// rows are one contiguous copy of the input shifted by the offset (the pixels that wrap
    /// around a row end land in the columns outside the image, which are then zeroed).
    fn im2col_same(&self, x: &[f32], rows: usize, b0: usize, cb: usize, col: &mut [f32]) {
        let (k, w, po) = (self.k, self.w, self.po());
        let hw = self.h * w;
        let (n, ld) = (cb * po, Self::col_ld(cb * po));
        for ci in 0..self.cin {
            for dy in 0..k {
                for dx in 0..k {
                    let (oy0, oy1, ox0, ox1, base) = self.same_geometry(dy, dx);
                    let len = ((oy1 - oy0) * w) as isize;
                    // The copied range, clipped to the plane (only wrapped pixels are clipped).
                    let t0 = (-base).clamp(0, len) as usize;
                    let t1 = (hw as isize - base).clamp(0, len) as usize;
                    let row = &mut col[((ci * k + dy) * k + dx) * ld..][..n];
                    for b in 0..cb {
                        let plane = &x[(ci * rows + b0 + b) * hw..][..hw];
                        let dst = &mut row[b * po..][..po];
                        dst[..oy0 * w + t0].fill(0.0);
                        dst[oy0 * w + t1..].fill(0.0);
                        if t1 > t0 {
                            let src = (base + t0 as isize) as usize;
                            dst[oy0 * w + t0..oy0 * w + t1]
                                .copy_from_slice(&plane[src..src + (t1 - t0)]);
                        }
                        zero_columns(&mut dst[oy0 * w..oy1 * w], w, ox0, ox1);
                    }
                }
            }
        }
    }

    /// [`Self::col2im`] of a "same" stride-1 convolution, the adjoint of [`Self::im2col_same`]: the
    /// columns outside the image are zeroed in `dcol` (they belong to no pixel), then each valid
    /// block is added to the input gradient in one contiguous pass.
    fn col2im_same(&self, dcol: &mut [f32], rows: usize, b0: usize, cb: usize, dx_: &mut [f32]) {
        let (k, w, po) = (self.k, self.w, self.po());
        let hw = self.h * w;
        let (n, ld) = (cb * po, Self::col_ld(cb * po));
        for ci in 0..self.cin {
            for dy in 0..k {
                for dx in 0..k {
                    let (oy0, oy1, ox0, ox1, base) = self.same_geometry(dy, dx);
                    let len = ((oy1 - oy0) * w) as isize;
                    let t0 = (-base).clamp(0, len) as usize;
                    let t1 = (hw as isize - base).clamp(0, len) as usize;
                    if t1 <= t0 {
                        continue;
                    }
                    let row = &mut dcol[((ci * k + dy) * k + dx) * ld..][..n];
                    for b in 0..cb {
                        let src = &mut row[b * po..][..po];
                        zero_columns(&mut src[oy0 * w..oy1 * w], w, ox0, ox1);
                        let plane = &mut dx_[(ci * rows + b0 + b) * hw..][..hw];
                        let at = (base + t0 as isize) as usize;
                        for (o, &v) in plane[at..at + (t1 - t0)]
                            .iter_mut()
                            .zip(&src[oy0 * w + t0..oy0 * w + t1])
                        {
                            *o += v;
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
        self.forward_relu(params, x, y, rows, col, false);
    }

    /// [`Self::forward`], then `max(·, 0)` if `relu` (a ReLU after the layer, fused into the
    /// product's output pass so that the output is written once).
    pub(super) fn forward_relu(
        &self,
        params: &[f32],
        x: &[f32],
        y: &mut [f32],
        rows: usize,
        col: &mut [f32],
        relu: bool,
    ) {
        let (kd, po, cout) = (self.kdim(), self.po(), self.cout);
        let wt = &params[self.w_off..][..kd * cout];
        let init = match self.b_off {
            Some(o) => Init::RowBias(&params[o..o + cout]),
            None => Init::Zero,
        };
        for (b0, cb) in self.chunks(rows) {
            let (n, ld) = (cb * po, Self::col_ld(cb * po));
            let col = &mut col[..kd * ld];
            let s = Section::new("conv im2col");
            self.im2col(x, rows, b0, cb, col);
            drop(s);
            let _s = Section::new("conv fwd gemm");
            gemm::nn(
                cout,
                n,
                kd,
                wt,
                1,
                cout,
                col,
                ld,
                &mut y[b0 * po..],
                rows * po,
                init,
                relu,
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
            let (n, ld) = (cb * po, Self::col_ld(cb * po));
            let first = i == 0 && !acc;
            let col = &mut col[..kd * ld];
            let s = Section::new("conv im2col");
            self.im2col(x, rows, b0, cb, col);
            drop(s);
            let dyc = &dy[b0 * po..];
            let s = Section::new("conv dW gemm");
            // dW (kd × cout) += col (kd × n) · dyᵀ.
            let gw = &mut grad[self.w_off..][..kd * cout];
            let init = if first { Init::Zero } else { Init::Acc };
            gemm::nt(
                kd,
                cout,
                n,
                col,
                ld,
                dyc,
                rows * po,
                gw,
                cout,
                1,
                init,
                false,
            );
            drop(s);
            if let Some(o) = self.b_off {
                for (c, gb) in grad[o..o + cout].iter_mut().enumerate() {
                    let row = &dy[c * rows * po + b0 * po..][..n];
                    ops::row_sums(row, n, std::slice::from_mut(gb), !first);
                }
            }
            if let Some(dx) = dx.as_deref_mut() {
                // dcol (kd × n) = W (kd × cout) · dy (cout × n), then col2im.
                let dcol = &mut dcol[..kd * ld];
                let s = Section::new("conv dX gemm");
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
                    ld,
                    Init::Zero,
                    false,
                );
                drop(s);
                let _s = Section::new("conv col2im");
                self.col2im(dcol, rows, b0, cb, dx);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// The block copies of "same" stride-1 convolutions give exactly what the general row-by-row
    /// im2col and col2im give (every kernel size, odd and even image sizes, chunks inside a pass).
    #[test]
    fn same_convolution_blocks_match_the_general_path() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (k, h, w) in [(3, 5, 7), (5, 6, 6), (1, 4, 3), (3, 1, 9), (7, 3, 3)] {
            let pad = (k - 1) / 2;
            let conv = Conv {
                cin: 2,
                cout: 3,
                k,
                stride: 1,
                pad,
                h,
                w,
                ho: h,
                wo: w,
                w_off: 0,
                b_off: None,
            };
            assert!(conv.is_same_stride1());
            let (rows, b0, cb) = (4, 1, 2);
            let x: Vec<f32> = (0..2 * rows * h * w)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let len = conv.kdim() * Conv::col_ld(cb * conv.po());
            let (mut fast, mut slow) = (vec![f32::NAN; len], vec![f32::NAN; len]);
            conv.im2col_same(&x, rows, b0, cb, &mut fast);
            conv.im2col_any(&x, rows, b0, cb, &mut slow);
            let n = cb * conv.po();
            let ld = Conv::col_ld(n);
            for r in 0..conv.kdim() {
                let (f, s) = (&fast[r * ld..][..n], &slow[r * ld..][..n]);
                assert!(
                    f.iter().zip(s).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "im2col k{k} {h}x{w} row {r}"
                );
            }
            let dcol: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let (mut dx_fast, mut dx_slow) = (x.clone(), x.clone());
            conv.col2im_same(&mut dcol.clone(), rows, b0, cb, &mut dx_fast);
            conv.col2im_any(&dcol, rows, b0, cb, &mut dx_slow);
            assert!(
                dx_fast
                    .iter()
                    .zip(&dx_slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "col2im k{k} {h}x{w}"
            );
        }
    }
}
