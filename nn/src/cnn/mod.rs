//! McMahan et al.'s CNN: two 5×5 convolutions with max-pooling, then two dense layers.

use ndarray::ArrayView2;

mod conv;
mod pool;

use conv::{Planes, col2im, im2col};
use pool::{maxpool, maxpool_backward};

use crate::gemm::{self, Init};
use crate::ops;
use crate::profile::Section;
use crate::{EvalStats, ImageShape, Layout, Model, NnError, Scratch};

/// Convolution kernel size.
const KS: usize = 5;
/// "Same" padding of a 5×5 kernel.
const PAD: usize = 2;
/// Largest number of samples processed at once; bigger batches are split and their gradients summed.
const MAX_ROWS: usize = 64;
/// Sets the samples per chunk: as many (at least one) as an im2col of the whole chunk for either
/// convolution would fit in this many floats. (conv2 builds its im2col per channel group, see
/// `GROUP_BUDGET`, so it never holds that much; larger chunks did not measure faster.)
const COL_BUDGET: usize = 1 << 19;
/// Target size (in floats) of the im2col rows of one group of conv2 input channels: the second
/// convolution runs channel group by channel group, so that each group's im2col rows (and their
/// gradient, which col2im consumes right away) stay in L2 instead of making a round trip to L3.
const GROUP_BUDGET: usize = 1 << 16;

// Scratch slots (0 is the shared input copy).
const SLOT_A1: usize = 1;
const SLOT_P1: usize = 2;
const SLOT_A2: usize = 3;
const SLOT_FIN: usize = 4;
const SLOT_H1: usize = 5;
const SLOT_LOGITS: usize = 6;
const SLOT_COL: usize = 7;
const SLOT_DCOL: usize = 8;
const SLOT_DOUT: usize = 9;
const SLOT_DP1: usize = 10;
const SLOT_DFIN: usize = 11;
const SLOT_DH1: usize = 12;
const SLOT_I1: usize = 13;
const SLOT_I2: usize = 14;

/// Convolutional network for images `channels × height × width`:
/// conv 5×5 (`c1`, "same", stride 1) → ReLU → max-pool 2×2 → conv 5×5 (`c2`, "same") → ReLU →
/// max-pool 2×2 → dense (`c2·(h/4)·(w/4)` → `fc`) → ReLU → dense (`fc` → classes), softmax
/// cross-entropy. With the defaults (`[32, 64]`, 512) on 28×28×1 inputs and 10 classes it has
/// 1,663,370 parameters.
///
/// Parameter layout (row-major), every weight input-major like [`crate::mlp::Mlp`]:
/// `conv1.weight` `[channels, 5, 5, c1]`, `conv1.bias` `[c1]`, `conv2.weight` `[c1, 5, 5, c2]`,
/// `conv2.bias` `[c2]`, `fc1.weight` `[c2·(h/4)·(w/4), fc]` (inputs flattened channel-major, as
/// PyTorch's `flatten` of an NCHW tensor), `fc1.bias` `[fc]`, `fc2.weight` `[fc, classes]`,
/// `fc2.bias` `[classes]`. Input samples are flattened `channels × height × width`.
///
/// Convolutions are im2col + matrix products over a chunk of samples at once (as many as would keep
/// a whole-chunk im2col near 2 MiB), with col2im for the input gradient. The second convolution goes through
/// its input channels in groups whose im2col rows (about 256 KiB) stay in L2 between being written
/// and being used.
#[derive(Debug, Clone)]
pub struct Cnn {
    image: ImageShape,
    channels: [usize; 2],
    fc: usize,
    classes: usize,
    layout: Layout,
    /// Offsets of the eight tensors, in layout order.
    off: [usize; 8],
    /// Samples per im2col chunk.
    chunk: usize,
    /// Largest im2col of one conv2 channel group, in floats (`GROUP_BUDGET`; smaller in tests).
    group_budget: usize,
}

/// Dimensions derived from the image shape.
#[derive(Debug, Clone, Copy)]
struct Dims {
    cin: usize,
    c1: usize,
    c2: usize,
    h: usize,
    w: usize,
    /// Pixels per plane at full, half and quarter resolution.
    hw1: usize,
    hw2: usize,
    hw4: usize,
    /// im2col rows of each convolution.
    k1: usize,
    k2: usize,
    /// Inputs of the first dense layer.
    f: usize,
}

impl Cnn {
    /// A CNN for `image` inputs with convolution channels `[c1, c2]`, a hidden dense layer of `fc`
    /// units and `classes` outputs.
    ///
    /// Fails with [`NnError::InvalidSpec`] when a size is zero or the height and width are not
    /// multiples of 4 (two 2×2 poolings must divide them exactly).
    pub fn new(
        image: ImageShape,
        channels: [usize; 2],
        fc: usize,
        classes: usize,
    ) -> Result<Self, NnError> {
        let ImageShape {
            channels: cin,
            height: h,
            width: w,
        } = image;
        if cin == 0 || h == 0 || w == 0 {
            return Err(NnError::InvalidSpec(format!(
                "cnn: empty image shape {cin}x{h}x{w} (channels x height x width)"
            )));
        }
        if h % 4 != 0 || w % 4 != 0 {
            return Err(NnError::InvalidSpec(format!(
                "cnn: image height and width must be multiples of 4 (two 2x2 max-pools), got {h}x{w}"
            )));
        }
        if channels.contains(&0) || fc == 0 {
            return Err(NnError::InvalidSpec(format!(
                "cnn: channels and fc must be positive, got channels {channels:?}, fc {fc}"
            )));
        }
        if classes == 0 {
            return Err(NnError::InvalidSpec("cnn: need at least one class".into()));
        }
        let [c1, c2] = channels;
        let f = c2 * (h / 4) * (w / 4);
        let mut layout = Layout::new();
        let shapes: [(&str, Vec<usize>); 8] = [
            ("conv1.weight", vec![cin, KS, KS, c1]),
            ("conv1.bias", vec![c1]),
            ("conv2.weight", vec![c1, KS, KS, c2]),
            ("conv2.bias", vec![c2]),
            ("fc1.weight", vec![f, fc]),
            ("fc1.bias", vec![fc]),
            ("fc2.weight", vec![fc, classes]),
            ("fc2.bias", vec![classes]),
        ];
        let mut off = [0; 8];
        for (o, (name, shape)) in off.iter_mut().zip(shapes.iter()) {
            let i = layout.push(*name, shape);
            *o = layout.tensors()[i].offset;
        }
        let per_sample = (cin * KS * KS * h * w).max(c1 * KS * KS * (h / 2) * (w / 2));
        let chunk = (COL_BUDGET / per_sample).clamp(1, MAX_ROWS);
        Ok(Self {
            image,
            channels,
            fc,
            classes,
            layout,
            off,
            chunk,
            group_budget: GROUP_BUDGET,
        })
    }

    fn dims(&self) -> Dims {
        let ImageShape {
            channels: cin,
            height: h,
            width: w,
        } = self.image;
        let [c1, c2] = self.channels;
        Dims {
            cin,
            c1,
            c2,
            h,
            w,
            hw1: h * w,
            hw2: (h / 2) * (w / 2),
            hw4: (h / 4) * (w / 4),
            k1: cin * KS * KS,
            k2: c1 * KS * KS,
            f: c2 * (h / 4) * (w / 4),
        }
    }

    /// Parameter tensor `i` (layout order).
    fn tensor<'a>(&self, params: &'a [f32], i: usize) -> &'a [f32] {
        let t = &self.layout.tensors()[i];
        &params[t.range()]
    }

    /// The im2col chunks of a batch of `rows` samples, as `(first sample, samples)`: as few chunks as
    /// keep each at most `self.chunk` samples, with sizes differing by at most one (a batch of 10 with
    /// room for 6 runs as 5 + 5, not 6 + 4), so no chunk is too small to amortise the weight packing.
    fn chunks(&self, rows: usize) -> impl DoubleEndedIterator<Item = (usize, usize)> {
        let n = rows.div_ceil(self.chunk).max(1);
        let (base, extra) = (rows / n, rows % n);
        (0..n)
            .map(move |c| (c * base + c.min(extra), base + usize::from(c < extra)))
            .filter(|&(_, cb)| cb > 0)
    }

    /// The conv2 channel groups of a chunk of `cb` samples, as `(first channel, channels)`: as few
    /// groups as keep each group's im2col rows within `GROUP_BUDGET` floats (at least one channel per
    /// group), with sizes differing by at most one.
    fn groups(&self, cb: usize) -> impl DoubleEndedIterator<Item = (usize, usize)> {
        let c1 = self.channels[0];
        let per_channel = KS * KS * cb * (self.image.height / 2) * (self.image.width / 2);
        let most = (self.group_budget / per_channel.max(1)).clamp(1, c1);
        let n = c1.div_ceil(most);
        let (base, extra) = (c1 / n, c1 % n);
        (0..n).map(move |g| (g * base + g.min(extra), base + usize::from(g < extra)))
    }

    /// Where chunk `(s0, cb)` of an activation stored chunk-major (`[C][cb][plane]` per chunk) starts.
    fn chunk_planes(s0: usize, cb: usize, channels: usize, plane: usize) -> Planes {
        Planes {
            base: s0 * channels * plane,
            b_stride: plane,
            c_stride: cb * plane,
        }
    }

    /// Forward pass of `rows ≤ MAX_ROWS` samples. Fills the activation buffers of `bufs` and the
    /// logits.
    fn forward(&self, params: &[f32], x: &[f32], rows: usize, bufs: &mut Buffers) {
        let d = self.dims();
        let (w1, b1, w2, b2) = (
            self.tensor(params, 0),
            self.tensor(params, 1),
            self.tensor(params, 2),
            self.tensor(params, 3),
        );
        let (w3, b3, w4, b4) = (
            self.tensor(params, 4),
            self.tensor(params, 5),
            self.tensor(params, 6),
            self.tensor(params, 7),
        );
        for (s0, cb) in self.chunks(rows) {
            let (p1n, p2n) = (cb * d.hw1, cb * d.hw2);
            // conv1: A1 (c1 × cb·hw1) = W1ᵀ · col, + bias, ReLU.
            let xin = Planes {
                base: s0 * d.cin * d.hw1,
                b_stride: d.cin * d.hw1,
                c_stride: d.hw1,
            };
            let _s = Section::new("conv1 im2col");
            im2col(x, xin, d.cin, cb, d.h, d.w, &mut bufs.col[..d.k1 * p1n]);
            drop(_s);
            let a1 = &mut bufs.a1[..d.c1 * p1n];
            let _s = Section::new("conv1 fwd gemm");
            gemm::nn(
                d.c1,
                p1n,
                d.k1,
                w1,
                1,
                d.c1,
                &bufs.col,
                p1n,
                a1,
                p1n,
                Init::RowBias(b1),
                true,
            );
            drop(_s);
            let p1 = &mut bufs.p1[s0 * d.c1 * d.hw2..][..d.c1 * p2n];
            let i1 = &mut bufs.i1[s0 * d.c1 * d.hw2..][..d.c1 * p2n];
            let _s = Section::new("pool1 fwd");
            for ((src, dst), idx) in a1
                .chunks_exact(d.hw1)
                .zip(p1.chunks_exact_mut(d.hw2))
                .zip(i1.chunks_exact_mut(d.hw2))
            {
                maxpool(src, d.h, d.w, dst, idx);
            }
            drop(_s);
            // conv2: A2 (c2 × cb·hw2) = W2ᵀ · col, + bias, ReLU, summed over channel groups.
            let pin = Self::chunk_planes(s0, cb, d.c1, d.hw2);
            let a2 = &mut bufs.a2[..d.c2 * p2n];
            for (c0, gc) in self.groups(cb) {
                let (r0, rows) = (c0 * KS * KS, gc * KS * KS);
                let col = &mut bufs.col[..rows * p2n];
                let _s = Section::new("conv2 im2col");
                im2col(
                    &bufs.p1,
                    pin.channels_from(c0),
                    gc,
                    cb,
                    d.h / 2,
                    d.w / 2,
                    col,
                );
                drop(_s);
                let init = if c0 == 0 {
                    Init::RowBias(b2)
                } else {
                    Init::Acc
                };
                let last = c0 + gc == d.c1;
                let _s = Section::new("conv2 fwd gemm");
                gemm::nn(
                    d.c2,
                    p2n,
                    rows,
                    &w2[r0 * d.c2..],
                    1,
                    d.c2,
                    col,
                    p2n,
                    a2,
                    p2n,
                    init,
                    last,
                );
                drop(_s);
            }
            // Pool into the dense input, one row per sample, channel-major.
            let _s = Section::new("pool2 fwd");
            for c in 0..d.c2 {
                for b in 0..cb {
                    let src = &a2[(c * cb + b) * d.hw2..][..d.hw2];
                    let o = (s0 + b) * d.f + c * d.hw4;
                    maxpool(
                        src,
                        d.h / 2,
                        d.w / 2,
                        &mut bufs.fin[o..o + d.hw4],
                        &mut bufs.i2[o..o + d.hw4],
                    );
                }
            }
            drop(_s);
        }
        let (fc, k) = (self.fc, self.classes);
        let _s = Section::new("fc1 fwd gemm");
        gemm::nn(
            rows,
            fc,
            d.f,
            &bufs.fin,
            d.f,
            1,
            w3,
            fc,
            &mut bufs.h1[..rows * fc],
            fc,
            Init::ColBias(b3),
            true,
        );
        drop(_s);
        let _s = Section::new("fc2 gemms");
        gemm::nn(
            rows,
            k,
            fc,
            &bufs.h1,
            fc,
            1,
            w4,
            k,
            &mut bufs.logits[..rows * k],
            k,
            Init::ColBias(b4),
            false,
        );
        drop(_s);
    }

    /// Forward and backward pass of `rows ≤ MAX_ROWS` samples, loss gradient scaled by `scale`; the
    /// parameter gradient is written (`accumulate = false`) or added. Returns the summed loss.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        params: &[f32],
        x: &[f32],
        y: &[u32],
        scale: f32,
        grad: &mut [f32],
        accumulate: bool,
        bufs: &mut Buffers,
    ) -> f64 {
        let d = self.dims();
        let rows = y.len();
        let (fc, k) = (self.fc, self.classes);
        self.forward(params, x, rows, bufs);
        let _s = Section::new("softmax");
        let loss = ops::softmax_xent_grad(&mut bufs.logits[..rows * k], k, y, scale);
        drop(_s);
        let dlogits = &bufs.logits[..rows * k];
        let (w2, w3, w4) = (
            self.tensor(params, 2),
            self.tensor(params, 4),
            self.tensor(params, 6),
        );
        let g = GradParts::split(grad, &self.off);
        let init = if accumulate { Init::Acc } else { Init::Zero };

        // fc2: dW4 = H1ᵀ · dlogits; dH1 = dlogits · W4ᵀ masked by the ReLU.
        let _s = Section::new("fc2 gemms");
        gemm::nn(
            fc, k, rows, &bufs.h1, 1, fc, dlogits, k, g.w4, k, init, false,
        );
        drop(_s);
        ops::col_sums(dlogits, k, g.b4, accumulate);
        let dh1 = &mut bufs.dh1[..rows * fc];
        let _s = Section::new("fc2 gemms");
        gemm::nt(
            rows,
            fc,
            k,
            dlogits,
            k,
            w4,
            k,
            dh1,
            fc,
            1,
            Init::Zero,
            false,
        );
        drop(_s);
        ops::relu_backward(dh1, &bufs.h1[..rows * fc]);
        // fc1: dFin = dH1 · W3ᵀ (the pooling below applies the conv ReLU mask); dW3 = Finᵀ · dH1.
        // dFin first: W3 was read by the forward pass just before, so more of it is still cached
        // than after dW3 (as large as W3) has been written.
        let dfin = &mut bufs.dfin[..rows * d.f];
        let _s = Section::new("fc1 dfin gemm");
        gemm::nt(
            rows,
            d.f,
            fc,
            dh1,
            fc,
            w3,
            fc,
            dfin,
            d.f,
            1,
            Init::Zero,
            false,
        );
        drop(_s);
        let _s = Section::new("fc1 dW gemm");
        gemm::nn(
            d.f, fc, rows, &bufs.fin, 1, d.f, dh1, fc, g.w3, fc, init, false,
        );
        drop(_s);
        ops::col_sums(dh1, fc, g.b3, accumulate);
        let dfin = &bufs.dfin[..rows * d.f];

        // Chunks in reverse: the first one handled is the forward pass's last, whose conv2 im2col is
        // still in `bufs.col`.
        for (n, (s0, cb)) in self.chunks(rows).rev().enumerate() {
            let (p1n, p2n) = (cb * d.hw1, cb * d.hw2);
            let first = !accumulate && n == 0;
            let init_c = if first { Init::Zero } else { Init::Acc };
            // pool2 + ReLU backward: dA2 (c2 × cb·hw2).
            let dout = &mut bufs.dout[..d.c2 * p2n];
            let _s = Section::new("pool2 bwd");
            dout.fill(0.0);
            drop(_s);
            let _s = Section::new("pool2 bwd");
            for c in 0..d.c2 {
                for b in 0..cb {
                    let q = (c * cb + b) * d.hw2;
                    let o = (s0 + b) * d.f + c * d.hw4;
                    let (gsrc, idx) = (&dfin[o..o + d.hw4], &bufs.i2[o..o + d.hw4]);
                    maxpool_backward(idx, gsrc, &mut dout[q..q + d.hw2]);
                }
            }
            drop(_s);
            let _s = Section::new("bias sums");
            ops::row_sums(dout, p2n, g.b2, !first);
            drop(_s);
            // conv2, one channel group at a time (the reverse of the forward order, so that the first
            // group of the first chunk finds its im2col rows still in `bufs.col`):
            // weight gradient dW2 (rows × c2) += col (rows × P) · dA2ᵀ, as a dot-product kernel on
            // dA2 as it is; input gradient dcol (rows × P) = W2 · dA2, then col2im into dP1.
            let pin = Self::chunk_planes(s0, cb, d.c1, d.hw2);
            let dp1 = &mut bufs.dp1[..d.c1 * p2n];
            let _s = Section::new("col2im");
            dp1.fill(0.0);
            drop(_s);
            let local = Planes {
                base: 0,
                b_stride: d.hw2,
                c_stride: cb * d.hw2,
            };
            for (gi, (c0, gc)) in self.groups(cb).rev().enumerate() {
                let (r0, rows) = (c0 * KS * KS, gc * KS * KS);
                let col = &mut bufs.col[..rows * p2n];
                if n > 0 || gi > 0 {
                    let _s = Section::new("conv2 im2col");
                    im2col(
                        &bufs.p1,
                        pin.channels_from(c0),
                        gc,
                        cb,
                        d.h / 2,
                        d.w / 2,
                        col,
                    );
                }
                let gw2 = &mut g.w2[r0 * d.c2..][..rows * d.c2];
                let _s = Section::new("conv2 dW gemm");
                gemm::nt(
                    rows, d.c2, p2n, col, p2n, dout, p2n, gw2, d.c2, 1, init_c, false,
                );
                drop(_s);
                let dcol = &mut bufs.dcol[..rows * p2n];
                let _s = Section::new("conv2 dcol gemm");
                gemm::nn(
                    rows,
                    p2n,
                    d.c2,
                    &w2[r0 * d.c2..],
                    d.c2,
                    1,
                    dout,
                    p2n,
                    dcol,
                    p2n,
                    Init::Zero,
                    false,
                );
                drop(_s);
                let _s = Section::new("col2im");
                col2im(dcol, gc, cb, d.h / 2, d.w / 2, dp1, local.channels_from(c0));
                drop(_s);
            }
            // pool1 + ReLU backward: dA1 (c1 × cb·hw1).
            let i1 = &bufs.i1[s0 * d.c1 * d.hw2..][..d.c1 * p2n];
            let dout = &mut bufs.dout[..d.c1 * p1n];
            let _s = Section::new("pool1 bwd");
            dout.fill(0.0);
            drop(_s);
            let _s = Section::new("pool1 bwd");
            for ((idx, gsrc), dst) in i1
                .chunks_exact(d.hw2)
                .zip(dp1.chunks_exact(d.hw2))
                .zip(dout.chunks_exact_mut(d.hw1))
            {
                maxpool_backward(idx, gsrc, dst);
            }
            drop(_s);
            let _s = Section::new("bias sums");
            ops::row_sums(dout, p1n, g.b1, !first);
            drop(_s);
            // conv1 weight gradient: dW1 (k1 × c1) += col (k1 × P) · dA1ᵀ, as a dot-product kernel
            // (c1 is small, so transposing dA1 would cost as much as the product).
            let xin = Planes {
                base: s0 * d.cin * d.hw1,
                b_stride: d.cin * d.hw1,
                c_stride: d.hw1,
            };
            let col = &mut bufs.col[..d.k1 * p1n];
            let _s = Section::new("conv1 im2col");
            im2col(x, xin, d.cin, cb, d.h, d.w, col);
            drop(_s);
            let _s = Section::new("conv1 dW gemm");
            gemm::nt(
                d.k1, d.c1, p1n, col, p1n, dout, p1n, g.w1, d.c1, 1, init_c, false,
            );
            drop(_s);
        }
        loss
    }

    /// Takes every buffer for `rows` samples out of `scratch`.
    fn take_buffers(&self, scratch: &mut Scratch, rows: usize, backward: bool) -> Buffers {
        let d = self.dims();
        let cs = self.chunk.min(rows);
        // The conv2 im2col of one channel group: at most `GROUP_BUDGET` floats, or one channel's rows.
        let group = (d.k2 * d.hw2 * cs).min(self.group_budget.max(KS * KS * d.hw2 * cs));
        let col = (d.k1 * d.hw1 * cs).max(group);
        let bw = |n: usize| if backward { n } else { 0 };
        Buffers {
            a1: scratch.take(SLOT_A1, cs * d.c1 * d.hw1),
            p1: scratch.take(SLOT_P1, rows * d.c1 * d.hw2),
            i1: scratch.take(SLOT_I1, rows * d.c1 * d.hw2),
            i2: scratch.take(SLOT_I2, rows * d.f),
            a2: scratch.take(SLOT_A2, cs * d.c2 * d.hw2),
            fin: scratch.take(SLOT_FIN, rows * d.f),
            h1: scratch.take(SLOT_H1, rows * self.fc),
            logits: scratch.take(SLOT_LOGITS, rows * self.classes),
            col: scratch.take(SLOT_COL, col),
            dcol: scratch.take(SLOT_DCOL, bw(group)),
            dout: scratch.take(SLOT_DOUT, bw((d.c1 * d.hw1).max(d.c2 * d.hw2) * cs)),
            dp1: scratch.take(SLOT_DP1, bw(d.c1 * d.hw2 * cs)),
            dfin: scratch.take(SLOT_DFIN, bw(rows * d.f)),
            dh1: scratch.take(SLOT_DH1, bw(rows * self.fc)),
        }
    }
}

/// Working memory of one pass, taken from and returned to a [`Scratch`].
struct Buffers {
    /// Pre-pooling activations of one chunk (the backward pass needs only the pooling indices, so
    /// these are not kept for the whole batch, which keeps the working set, and the weights of the
    /// dense layers with it, in cache).
    a1: Vec<f32>,
    p1: Vec<f32>,
    /// Arg-max of each pooled value of `p1` (0..4 inside its window, 4 = no gradient).
    i1: Vec<f32>,
    /// Arg-max of each pooled value of `fin`.
    i2: Vec<f32>,
    /// Pre-pooling conv2 activations of one chunk (as `a1`).
    a2: Vec<f32>,
    fin: Vec<f32>,
    h1: Vec<f32>,
    logits: Vec<f32>,
    col: Vec<f32>,
    dcol: Vec<f32>,
    dout: Vec<f32>,
    dp1: Vec<f32>,
    dfin: Vec<f32>,
    dh1: Vec<f32>,
}

impl Buffers {
    fn put(self, scratch: &mut Scratch) {
        scratch.put(SLOT_A1, self.a1);
        scratch.put(SLOT_P1, self.p1);
        scratch.put(SLOT_I1, self.i1);
        scratch.put(SLOT_I2, self.i2);
        scratch.put(SLOT_A2, self.a2);
        scratch.put(SLOT_FIN, self.fin);
        scratch.put(SLOT_H1, self.h1);
        scratch.put(SLOT_LOGITS, self.logits);
        scratch.put(SLOT_COL, self.col);
        scratch.put(SLOT_DCOL, self.dcol);
        scratch.put(SLOT_DOUT, self.dout);
        scratch.put(SLOT_DP1, self.dp1);
        scratch.put(SLOT_DFIN, self.dfin);
        scratch.put(SLOT_DH1, self.dh1);
    }
}

/// The gradient vector split into its eight tensors.
struct GradParts<'a> {
    w1: &'a mut [f32],
    b1: &'a mut [f32],
    w2: &'a mut [f32],
    b2: &'a mut [f32],
    w3: &'a mut [f32],
    b3: &'a mut [f32],
    w4: &'a mut [f32],
    b4: &'a mut [f32],
}

impl<'a> GradParts<'a> {
    fn split(grad: &'a mut [f32], off: &[usize; 8]) -> Self {
        let (w1, rest) = grad.split_at_mut(off[1]);
        let (b1, rest) = rest.split_at_mut(off[2] - off[1]);
        let (w2, rest) = rest.split_at_mut(off[3] - off[2]);
        let (b2, rest) = rest.split_at_mut(off[4] - off[3]);
        let (w3, rest) = rest.split_at_mut(off[5] - off[4]);
        let (b3, rest) = rest.split_at_mut(off[6] - off[5]);
        let (w4, b4) = rest.split_at_mut(off[7] - off[6]);
        Self {
            w1,
            b1,
            w2,
            b2,
            w3,
            b3,
            w4,
            b4,
        }
    }
}

impl Model for Cnn {
    fn name(&self) -> String {
        let ImageShape {
            channels,
            height,
            width,
        } = self.image;
        format!(
            "cnn({channels}x{height}x{width}-c{}-c{}-fc{}-{})",
            self.channels[0], self.channels[1], self.fc, self.classes
        )
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_len(&self) -> usize {
        let ImageShape {
            channels,
            height,
            width,
        } = self.image;
        channels * height * width
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn init_params(&self, seed: u64) -> Vec<f32> {
        let d = self.dims();
        // PyTorch fan-ins: cin·k·k for conv1, c1·k·k for conv2, then the dense inputs.
        let fan = [d.k1, d.k2, d.f, self.fc];
        ops::init_uniform(&self.layout, seed, |t| fan[t / 2])
    }

    fn loss_grad(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f32],
        scratch: &mut Scratch,
    ) -> f32 {
        let rows = x.nrows();
        debug_assert_eq!(params.len(), self.layout.len());
        debug_assert_eq!(grad.len(), self.layout.len());
        debug_assert_eq!(x.ncols(), self.input_len());
        debug_assert_eq!(y.len(), rows);
        if rows == 0 {
            grad.fill(0.0);
            return 0.0;
        }
        let mb = rows.min(MAX_ROWS);
        let mut xbuf = ops::take_input_buf(scratch);
        let mut bufs = self.take_buffers(scratch, mb, true);
        let xs = ops::batch_slice(&x, &mut xbuf);
        let f = self.input_len();
        let scale = 1.0 / rows as f32;
        let mut loss = 0.0;
        for (i, s) in (0..rows).step_by(mb).enumerate() {
            let e = (s + mb).min(rows);
            loss += self.step(
                params,
                &xs[s * f..e * f],
                &y[s..e],
                scale,
                grad,
                i > 0,
                &mut bufs,
            );
        }
        bufs.put(scratch);
        scratch.put(ops::SLOT_INPUT, xbuf);
        (loss / rows as f64) as f32
    }

    fn evaluate(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        scratch: &mut Scratch,
        stats: &mut EvalStats,
    ) {
        let rows = x.nrows();
        debug_assert_eq!(params.len(), self.layout.len());
        debug_assert_eq!(x.ncols(), self.input_len());
        debug_assert_eq!(y.len(), rows);
        if rows == 0 {
            return;
        }
        let mb = rows.min(MAX_ROWS);
        let mut xbuf = ops::take_input_buf(scratch);
        let mut bufs = self.take_buffers(scratch, mb, false);
        let xs = ops::batch_slice(&x, &mut xbuf);
        let (f, k) = (self.input_len(), self.classes);
        for s in (0..rows).step_by(mb) {
            let e = (s + mb).min(rows);
            self.forward(params, &xs[s * f..e * f], e - s, &mut bufs);
            ops::eval_logits(&bufs.logits[..(e - s) * k], k, &y[s..e], stats);
        }
        bufs.put(scratch);
        scratch.put(ops::SLOT_INPUT, xbuf);
    }

    /// Forward (`Σ` conv and dense products) + weight gradients (the same) + input gradients of every
    /// layer but the first; a convolution counts `2·h·w·25·cin·cout` per sample.
    fn train_flops_per_sample(&self) -> f64 {
        let [first, rest] = self.layer_flops();
        2.0 * (first + rest) + rest
    }

    /// `Σ` conv and dense products of the forward pass.
    fn eval_flops_per_sample(&self) -> f64 {
        let [first, rest] = self.layer_flops();
        first + rest
    }
}

impl Cnn {
    /// Forward FLOPs per sample of the first layer and of all the others.
    fn layer_flops(&self) -> [f64; 2] {
        let d = self.dims();
        let conv1 = 2.0 * (d.hw1 * d.k1 * d.c1) as f64;
        let conv2 = 2.0 * (d.hw2 * d.k2 * d.c2) as f64;
        let fc1 = 2.0 * (d.f * self.fc) as f64;
        let fc2 = 2.0 * (self.fc * self.classes) as f64;
        [conv1, conv2 + fc1 + fc2]
    }
}

#[cfg(test)]
mod tests;
