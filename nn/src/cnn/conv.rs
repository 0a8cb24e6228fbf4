//! im2col and col2im for the 5×5 "same" convolutions of the CNN: the lowering of a convolution to
//! a matrix product and its adjoint.

use super::{KS, PAD};

/// Where the planes of one chunk live: plane `(c, b)` starts at `base + b·b_stride + c·c_stride`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Planes {
    pub(super) base: usize,
    pub(super) b_stride: usize,
    pub(super) c_stride: usize,
}

impl Planes {
    /// The same planes from channel `c0` on.
    pub(super) fn channels_from(self, c0: usize) -> Self {
        Self {
            base: self.base + c0 * self.c_stride,
            ..self
        }
    }
}

/// Geometry of one shifted copy: source offset `shift` (flattened), the valid output rows
/// `y0..y1`, the flattened range `lo..hi` that is copied, and the column shift `dx`.
#[derive(Debug, Clone, Copy)]
struct Shift {
    shift: isize,
    y0: usize,
    y1: usize,
    lo: usize,
    hi: usize,
    dx: isize,
}

impl Shift {
    fn new(kh: usize, kw: usize, h: usize, w: usize) -> Self {
        let dy = kh as isize - PAD as isize;
        let dx = kw as isize - PAD as isize;
        let (hi_, wi) = (h as isize, w as isize);
        let shift = dy * wi + dx;
        let y0 = (-dy).clamp(0, hi_) as usize;
        let y1 = (hi_ - dy).clamp(y0 as isize, hi_) as usize;
        // The copied range lies within the valid rows (empty when no row is valid, e.g. a shift of 2
        // on a 2-pixel-high plane), and its source within the plane.
        let end = (y1 * w) as isize;
        let lo = ((y0 * w) as isize).max(-shift).min(end);
        let hi = end.min(hi_ * wi - shift).max(lo);
        Self {
            shift,
            y0,
            y1,
            lo: lo as usize,
            hi: hi as usize,
            dx,
        }
    }

    /// Zeroes the entries of one `h × w` plane whose source pixel lies outside the image: the rows
    /// outside `y0..y1` and, in the others, the `|dx|` edge columns (at most `PAD`, stored one by one:
    /// a `fill` would call `memset` for one or two floats).
    #[inline]
    fn zero_outside(&self, plane: &mut [f32], w: usize) {
        plane[..self.y0 * w].fill(0.0);
        plane[self.y1 * w..].fill(0.0);
        let dx = self.dx.unsigned_abs().min(w);
        if dx == 0 {
            return;
        }
        let first = if self.dx > 0 { w - dx } else { 0 };
        for y in self.y0..self.y1 {
            let row = &mut plane[y * w + first..y * w + first + dx];
            row[0] = 0.0;
            if dx > 1 {
                row[1] = 0.0;
            }
        }
    }
}

/// im2col for a 5×5 "same" convolution over `cb` samples: row `(ci·5 + kh)·5 + kw` of `col`
/// (`cin·25 × cb·h·w`) holds, for every sample `b` and pixel `(y, x)`, the input pixel
/// `(y + kh − 2, x + kw − 2)` of plane `(ci, b)`, or zero outside the image.
///
/// When the `cb` planes of a channel are contiguous (`b_stride = h·w`), each row is one shifted copy
/// over all samples followed by zeroing the entries whose source is outside the image.
pub(super) fn im2col(
    src: &[f32],
    planes: Planes,
    cin: usize,
    cb: usize,
    h: usize,
    w: usize,
    col: &mut [f32],
) {
    let hw = h * w;
    let p = cb * hw;
    debug_assert_eq!(col.len(), cin * KS * KS * p);
    let merged = planes.b_stride == hw;
    for ci in 0..cin {
        for kh in 0..KS {
            for kw in 0..KS {
                let s = Shift::new(kh, kw, h, w);
                let row = &mut col[((ci * KS + kh) * KS + kw) * p..][..p];
                if s.y0 == s.y1 {
                    row.fill(0.0);
                } else if merged {
                    let chan = &src[planes.base + ci * planes.c_stride..][..p];
                    let (lo, hi) = (s.lo, (cb - 1) * hw + s.hi);
                    let from = (lo as isize + s.shift) as usize;
                    row[lo..hi].copy_from_slice(&chan[from..from + (hi - lo)]);
                    row[..lo].fill(0.0);
                    row[hi..].fill(0.0);
                    for dst in row.chunks_exact_mut(hw) {
                        s.zero_outside(dst, w);
                    }
                } else {
                    for (b, dst) in row.chunks_exact_mut(hw).enumerate() {
                        let plane =
                            &src[planes.base + b * planes.b_stride + ci * planes.c_stride..][..hw];
                        let from = (s.lo as isize + s.shift) as usize;
                        dst[s.lo..s.hi].copy_from_slice(&plane[from..from + (s.hi - s.lo)]);
                        dst[..s.lo].fill(0.0);
                        dst[s.hi..].fill(0.0);
                        s.zero_outside(dst, w);
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every entry of `dcol` to the input pixel it was copied from.
/// `dcol` is used as working memory (its out-of-image entries are zeroed first, so that contiguous
/// planes can be updated with one shifted addition per row).
pub(super) fn col2im(
    dcol: &mut [f32],
    cin: usize,
    cb: usize,
    h: usize,
    w: usize,
    dst: &mut [f32],
    planes: Planes,
) {
    let hw = h * w;
    let p = cb * hw;
    debug_assert_eq!(dcol.len(), cin * KS * KS * p);
    let merged = planes.b_stride == hw;
    for ci in 0..cin {
        for kh in 0..KS {
            for kw in 0..KS {
                let s = Shift::new(kh, kw, h, w);
                let row = &mut dcol[((ci * KS + kh) * KS + kw) * p..][..p];
                if s.y0 == s.y1 {
                    continue;
                }
                for src in row.chunks_exact_mut(hw) {
                    s.zero_outside(src, w);
                }
                if merged {
                    let chan = &mut dst[planes.base + ci * planes.c_stride..][..p];
                    let (lo, hi) = (s.lo, (cb - 1) * hw + s.hi);
                    let to = (lo as isize + s.shift) as usize;
                    for (o, &g) in chan[to..to + (hi - lo)].iter_mut().zip(&row[lo..hi]) {
                        *o += g;
                    }
                } else {
                    for (b, src) in row.chunks_exact(hw).enumerate() {
                        let plane = &mut dst
                            [planes.base + b * planes.b_stride + ci * planes.c_stride..][..hw];
                        let to = (s.lo as isize + s.shift) as usize;
                        for (o, &g) in plane[to..to + (s.hi - s.lo)]
                            .iter_mut()
                            .zip(&src[s.lo..s.hi])
                        {
                            *o += g;
                        }
                    }
                }
            }
        }
    }
}
