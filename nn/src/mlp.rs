//! Multi-layer perceptron with ReLU hidden layers.

use ndarray::ArrayView2;

use crate::gemm::{self, Init};
use crate::ops;
use crate::profile::Section;
use crate::{EvalStats, Layout, Model, Scratch};

/// Scratch slot of the activations (every hidden layer, then the logits).
const SLOT_ACT: usize = 1;
/// Scratch slots of the two back-propagated gradients (ping-pong).
const SLOT_DELTA: [usize; 2] = [2, 3];
/// Largest number of rows processed at once; bigger batches are split and their gradients summed.
const MAX_ROWS: usize = 512;
/// Largest number of rows of one forward pass in [`Model::evaluate`]: up to this size the products
/// read the weights in place and pack only a block of the inputs, which measured up to 8% faster on
/// 784-200-200-10 than packing the weights for 500-row blocks (the simulator's evaluation chunk;
/// `examples/eval_speed.rs`).
const EVAL_ROWS: usize = 256;

/// Dense layers `features → hidden[0] → … → classes` with ReLU between them and softmax cross-entropy
/// on the output. McMahan et al.'s "2NN" is `Mlp::new(784, &[200, 200], 10)` (199,210 parameters).
///
/// Parameter layout (row-major), for layers `l = 1, 2, …`: `fc{l}.weight` with shape `[in, out]`
/// (input-major: row `i` holds the weights leaving input `i`; the transpose of PyTorch's
/// `nn.Linear.weight`), then `fc{l}.bias` with shape `[out]`.
#[derive(Debug, Clone)]
pub struct Mlp {
    /// Widths: input, hidden layers, classes.
    widths: Vec<usize>,
    layout: Layout,
    /// Offsets of each layer's weight and bias in the parameter vector.
    offsets: Vec<(usize, usize)>,
}

impl Mlp {
    /// An MLP with the given input size, hidden widths (may be empty: softmax regression) and classes.
    pub fn new(features: usize, hidden: &[usize], classes: usize) -> Self {
        debug_assert!(!hidden.contains(&0), "hidden widths must be positive");
        let mut widths = vec![features];
        widths.extend_from_slice(hidden);
        widths.push(classes);
        let mut layout = Layout::new();
        let mut offsets = Vec::new();
        for (l, w) in widths.windows(2).enumerate() {
            let wi = layout.push(format!("fc{}.weight", l + 1), &[w[0], w[1]]);
            let bi = layout.push(format!("fc{}.bias", l + 1), &[w[1]]);
            offsets.push((layout.tensors()[wi].offset, layout.tensors()[bi].offset));
        }
        Self {
            widths,
            layout,
            offsets,
        }
    }

    fn layers(&self) -> usize {
        self.widths.len() - 1
    }

    /// Total activation floats per sample (hidden layers and logits).
    fn act_per_row(&self) -> usize {
        self.widths[1..].iter().sum()
    }

    /// Forward pass of `rows` samples: fills `act` with every layer's output (`rows × width` each,
    /// hidden layers after ReLU, logits last) and returns the logits' offset in `act`.
    fn forward(&self, params: &[f32], x: &[f32], rows: usize, act: &mut [f32]) -> usize {
        let mut in_off = None; // None: the input batch
        let mut off = 0;
        for l in 0..self.layers() {
            let (fi, fo) = (self.widths[l], self.widths[l + 1]);
            let (wo, bo) = self.offsets[l];
            let w = &params[wo..wo + fi * fo];
            let b = &params[bo..bo + fo];
            let relu = l + 1 < self.layers();
            let (before, out) = act.split_at_mut(off);
            let input: &[f32] = match in_off {
                None => x,
                Some(o) => &before[o..],
            };
            let _s = Section::new("mlp fwd gemm");
            gemm::nn(
                rows,
                fo,
                fi,
                input,
                fi,
                1,
                w,
                fo,
                &mut out[..rows * fo],
                fo,
                Init::ColBias(b),
                relu,
            );
            drop(_s);
            in_off = Some(off);
            off += rows * fo;
        }
        in_off.unwrap_or(0)
    }

    /// Forward and backward pass of `rows` samples; the gradient is written (`accumulate = false`) or
    /// added. The loss gradient is scaled by `scale`. Returns the summed loss.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        params: &[f32],
        x: &[f32],
        y: &[u32],
        scale: f32,
        grad: &mut [f32],
        accumulate: bool,
        act: &mut [f32],
        deltas: &mut [Vec<f32>; 2],
    ) -> f64 {
        let rows = y.len();
        let last = self.layers() - 1;
        let logits_off = self.forward(params, x, rows, act);
        let classes = self.widths[last + 1];
        let _s = Section::new("mlp softmax");
        let loss = ops::softmax_xent_grad(
            &mut act[logits_off..logits_off + rows * classes],
            classes,
            y,
            scale,
        );
        drop(_s);
        let init = if accumulate { Init::Acc } else { Init::Zero };
        let [d_even, d_odd] = deltas;
        // Offset of layer l's output in `act`; its input is the output of layer l − 1 (or x).
        let mut out_off = logits_off;
        for l in (0..=last).rev() {
            let (fi, fo) = (self.widths[l], self.widths[l + 1]);
            let (wo, bo) = self.offsets[l];
            let in_off = if l > 0 { out_off - rows * fi } else { 0 };
            let (act_in, act_out) = act.split_at(out_off);
            // The output gradient of layer l: the logits' gradient for the last layer, else the delta
            // buffer written by layer l + 1 (buffers alternate so that source and target differ).
            let (d, dst): (&[f32], &mut Vec<f32>) = if l == last {
                (&act_out[..rows * fo], &mut *d_even)
            } else if (last - 1 - l).is_multiple_of(2) {
                (&d_even[..rows * fo], &mut *d_odd)
            } else {
                (&d_odd[..rows * fo], &mut *d_even)
            };
            let input: &[f32] = if l == 0 {
                x
            } else {
                &act_in[in_off..in_off + rows * fi]
            };
            let (gw_all, gb_all) = grad.split_at_mut(bo);
            // dW (in × out) = inputᵀ (in × rows) · d (rows × out).
            let _s = Section::new("mlp dW gemm");
            gemm::nn(
                fi,
                fo,
                rows,
                input,
                1,
                fi,
                d,
                fo,
                &mut gw_all[wo..wo + fi * fo],
                fo,
                init,
                false,
            );
            drop(_s);
            let _s = Section::new("mlp bias sums");
            ops::col_sums(d, fo, &mut gb_all[..fo], accumulate);
            drop(_s);
            if l > 0 {
                // d_in (rows × in) = d (rows × out) · Wᵀ, masked by the ReLU that produced the input.
                let w = &params[wo..wo + fi * fo];
                let dst = &mut dst[..rows * fi];
                let _s = Section::new("mlp dX gemm");
                gemm::nt(rows, fi, fo, d, fo, w, fo, dst, fi, 1, Init::Zero, false);
                drop(_s);
                let _s = Section::new("mlp relu bwd");
                ops::relu_backward(dst, input);
                drop(_s);
            }
            out_off = in_off;
        }
        loss
    }
}

impl Model for Mlp {
    fn name(&self) -> String {
        let w: Vec<String> = self.widths.iter().map(ToString::to_string).collect();
        format!("mlp({})", w.join("-"))
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_len(&self) -> usize {
        self.widths[0]
    }

    fn num_classes(&self) -> usize {
        self.widths[self.widths.len() - 1]
    }

    fn init_params(&self, seed: u64) -> Vec<f32> {
        // Tensor 2l is fc{l+1}.weight, 2l+1 its bias: both use fan_in = the layer's input width.
        ops::init_uniform(&self.layout, seed, |t| self.widths[t / 2])
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
        let widest = self.widths[..self.widths.len() - 1]
            .iter()
            .copied()
            .max()
            .unwrap_or(0);
        let mut xbuf = ops::take_input_buf(scratch);
        let mut act = scratch.take(SLOT_ACT, mb * self.act_per_row());
        let mut deltas = [
            scratch.take(SLOT_DELTA[0], mb * widest),
            scratch.take(SLOT_DELTA[1], mb * widest),
        ];
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
                &mut act,
                &mut deltas,
            );
        }
        let [d0, d1] = deltas;
        scratch.put(SLOT_DELTA[0], d0);
        scratch.put(SLOT_DELTA[1], d1);
        scratch.put(SLOT_ACT, act);
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
        // Balanced blocks of at most EVAL_ROWS rows (500 rows run as 250 + 250, not 256 + 244).
        let blocks = rows.div_ceil(EVAL_ROWS);
        let mb = rows.div_ceil(blocks);
        let mut xbuf = ops::take_input_buf(scratch);
        let mut act = scratch.take(SLOT_ACT, mb * self.act_per_row());
        let xs = ops::batch_slice(&x, &mut xbuf);
        let (f, c) = (self.input_len(), self.num_classes());
        for s in (0..rows).step_by(mb) {
            let e = (s + mb).min(rows);
            let off = self.forward(params, &xs[s * f..e * f], e - s, &mut act);
            ops::eval_logits(&act[off..off + (e - s) * c], c, &y[s..e], stats);
        }
        scratch.put(SLOT_ACT, act);
        scratch.put(ops::SLOT_INPUT, xbuf);
    }

    /// `2·Σ weights` (forward) `+ 2·Σ weights` (weight gradients) `+ 2·Σ weights of every layer but the
    /// first` (input gradients); biases and activations are not counted.
    fn train_flops_per_sample(&self) -> f64 {
        let sizes: Vec<f64> = self
            .widths
            .windows(2)
            .map(|w| (w[0] * w[1]) as f64)
            .collect();
        let all: f64 = sizes.iter().sum();
        4.0 * all + 2.0 * (all - sizes[0])
    }

    /// `2·Σ weights`.
    fn eval_flops_per_sample(&self) -> f64 {
        2.0 * self
            .widths
            .windows(2)
            .map(|w| (w[0] * w[1]) as f64)
            .sum::<f64>()
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::testutil::{check_gradient, toy_problem, train_toy};

    #[test]
    fn two_nn_has_199210_parameters() {
        let m = Mlp::new(784, &[200, 200], 10);
        assert_eq!(m.num_params(), 199_210);
        assert_eq!(m.name(), "mlp(784-200-200-10)");
        let names = crate::testutil::tensor_names(&m);
        assert_eq!(
            names,
            [
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias",
                "fc3.weight",
                "fc3.bias"
            ]
        );
        assert_eq!(
            m.layout().get("fc2.weight").map(|t| t.shape.clone()),
            Some(vec![200, 200])
        );
        let w = 784.0 * 200.0 + 200.0 * 200.0 + 200.0 * 10.0;
        assert_eq!(
            m.train_flops_per_sample(),
            4.0 * w + 2.0 * (200.0 * 200.0 + 200.0 * 10.0)
        );
        assert_eq!(m.eval_flops_per_sample(), 2.0 * w);
    }

    #[test]
    fn init_uses_fan_in() {
        let m = Mlp::new(16, &[4], 3);
        let p = m.init_params(7);
        assert_eq!(p, m.init_params(7));
        let l = m.layout();
        let b1 = 1.0 / 16f32.sqrt();
        let b2 = 1.0 / 4f32.sqrt();
        for name in ["fc1.weight", "fc1.bias"] {
            let r = l.get(name).map(|t| t.range()).unwrap_or_default();
            assert!(p[r].iter().all(|w| w.abs() <= b1));
        }
        let r = l.get("fc2.weight").map(|t| t.range()).unwrap_or_default();
        assert!(p[r.clone()].iter().all(|w| w.abs() <= b2));
        assert!(
            p[r].iter().any(|w| w.abs() > b1),
            "second layer should use its own (larger) bound"
        );
    }

    #[test]
    fn gradient_matches_finite_differences() {
        check_gradient(&Mlp::new(6, &[5, 4], 3), 4, 21);
        check_gradient(&Mlp::new(6, &[], 3), 3, 22);
        check_gradient(&Mlp::new(9, &[7, 6, 5], 4), 5, 23);
    }

    #[test]
    fn large_batches_are_split_consistently() {
        // 1100 rows: three micro-batches; compare with the sum of separately computed gradients.
        let m = Mlp::new(12, &[8], 3);
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let rows = 1100;
        let x = Array2::from_shape_fn((rows, 12), |_| rng.random_range(-1.0f32..1.0));
        let y: Vec<u32> = (0..rows as u32).map(|i| i % 3).collect();
        let p = m.init_params(3);
        let mut s = Scratch::default();
        let mut g = vec![0.0; m.num_params()];
        let loss = m.loss_grad(&p, x.view(), &y, &mut g, &mut s);
        let mut want = vec![0.0f64; m.num_params()];
        let mut want_loss = 0.0f64;
        let mut gp = vec![0.0; m.num_params()];
        for (a, b) in [(0, 300), (300, 1100)] {
            let l = m.loss_grad(
                &p,
                x.slice(ndarray::s![a..b, ..]),
                &y[a..b],
                &mut gp,
                &mut s,
            );
            let wgt = (b - a) as f64 / rows as f64;
            want_loss += l as f64 * wgt;
            for (w, g) in want.iter_mut().zip(&gp) {
                *w += *g as f64 * wgt;
            }
        }
        assert!((loss as f64 - want_loss).abs() < 1e-5);
        for (a, b) in g.iter().zip(&want) {
            assert!((*a as f64 - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn deterministic() {
        let m = Mlp::new(50, &[20, 20], 10);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let x = Array2::from_shape_fn((13, 50), |_| rng.random_range(-1.0f32..1.0));
        let y: Vec<u32> = (0..13).map(|i| i % 10).collect();
        let p = m.init_params(2);
        let mut g1 = vec![0.0; m.num_params()];
        let mut g2 = vec![0.0; m.num_params()];
        let mut s = Scratch::default();
        let l1 = m.loss_grad(&p, x.view(), &y, &mut g1, &mut s);
        let l2 = std::thread::scope(|sc| {
            sc.spawn(|| m.loss_grad(&p, x.view(), &y, &mut g2, &mut Scratch::default()))
                .join()
                .unwrap_or(f32::NAN)
        });
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert_eq!(g1, g2);
        let mut e1 = EvalStats::new(10);
        let mut e2 = EvalStats::new(10);
        m.evaluate(&p, x.view(), &y, &mut s, &mut e1);
        m.evaluate(&p, x.view(), &y, &mut Scratch::default(), &mut e2);
        assert_eq!(e1, e2);
    }

    #[test]
    fn learns_a_separable_problem() {
        let m = Mlp::new(20, &[32, 16], 5);
        let (x, y) = toy_problem(500, 20, 5, 10);
        let acc = train_toy(&m, &x, &y, 0.1, 400, 16);
        assert!(acc >= 0.95, "accuracy {acc}");
    }

    #[test]
    fn evaluation_counts_match_predictions() {
        let m = Mlp::new(8, &[6], 4);
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let x = Array2::from_shape_fn((40, 8), |_| rng.random_range(-1.0f32..1.0));
        let y: Vec<u32> = (0..40).map(|_| rng.random_range(0..4u32)).collect();
        let p = m.init_params(5);
        // Reference forward pass in f64.
        let l = m.layout();
        let get = |n: &str| l.get(n).map(|t| &p[t.range()]).unwrap_or(&[]);
        let (w1, b1, w2, b2) = (
            get("fc1.weight"),
            get("fc1.bias"),
            get("fc2.weight"),
            get("fc2.bias"),
        );
        let mut correct = 0;
        let mut per_class = [0u64; 4];
        let mut loss = 0.0f64;
        for (r, &label) in y.iter().enumerate() {
            let h: Vec<f64> = (0..6)
                .map(|j| {
                    (b1[j] as f64
                        + (0..8)
                            .map(|i| x[[r, i]] as f64 * w1[i * 6 + j] as f64)
                            .sum::<f64>())
                    .max(0.0)
                })
                .collect();
            let z: Vec<f64> = (0..4)
                .map(|c| b2[c] as f64 + (0..6).map(|j| h[j] * w2[j * 4 + c] as f64).sum::<f64>())
                .collect();
            let mut best = 0;
            for c in 1..4 {
                if z[c] > z[best] {
                    best = c;
                }
            }
            if best == label as usize {
                correct += 1;
                per_class[best] += 1;
            }
            let mx = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            loss += z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln() - (z[label as usize] - mx);
        }
        let mut stats = EvalStats::new(4);
        m.evaluate(&p, x.view(), &y, &mut Scratch::default(), &mut stats);
        assert_eq!(stats.correct, correct);
        assert_eq!(stats.class_correct, per_class.to_vec());
        assert_eq!(stats.count, 40);
        assert!((stats.loss_sum - loss).abs() < 1e-4);
    }
}
