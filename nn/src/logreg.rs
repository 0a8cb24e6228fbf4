//! Multinomial logistic regression (softmax regression).

use ndarray::ArrayView2;

use crate::gemm::{self, Init};
use crate::ops;
use crate::{EvalStats, Layout, Model, Scratch};

/// Scratch slot holding the logits (then their gradient).
const SLOT_LOGITS: usize = 1;

/// Softmax regression: `logits = x·Wᵀ + b`, mean cross-entropy loss.
///
/// Parameter layout (row-major): `weight` with shape `[classes, features]` (PyTorch's `nn.Linear`
/// convention, so each class's weights are contiguous), then `bias` with shape `[classes]`.
///
/// The forward pass computes each logit as a dot product over the features (the 10-column product of
/// a classic GEMM would waste most SIMD lanes); the weight gradient is a product with the class
/// dimension outermost.
#[derive(Debug, Clone)]
pub struct LogReg {
    features: usize,
    classes: usize,
    layout: Layout,
}

impl LogReg {
    /// A model for `features` inputs and `classes` classes.
    pub fn new(features: usize, classes: usize) -> Self {
        let mut layout = Layout::new();
        layout.push("weight", &[classes, features]);
        layout.push("bias", &[classes]);
        Self {
            features,
            classes,
            layout,
        }
    }

    /// Logits of the batch `x` (`rows × features`) into `logits` (`rows × classes`).
    fn forward(&self, params: &[f32], x: &[f32], rows: usize, logits: &mut [f32]) {
        let (f, c) = (self.features, self.classes);
        let (w, b) = params.split_at(c * f);
        gemm::nt(
            rows,
            c,
            f,
            x,
            f,
            w,
            f,
            logits,
            c,
            1,
            Init::ColBias(b),
            false,
        );
    }
}

impl Model for LogReg {
    fn name(&self) -> String {
        format!("logreg({}-{})", self.features, self.classes)
    }

    /// The weight is stored `[classes, features]`, PyTorch's `nn.Linear` order already.
    fn torch_axes(&self, tensor: &crate::TensorSpec) -> Vec<usize> {
        (0..tensor.shape.len()).collect()
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_len(&self) -> usize {
        self.features
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn init_params(&self, seed: u64) -> Vec<f32> {
        // Both tensors use fan_in = features.
        ops::init_uniform(&self.layout, seed, |_| self.features)
    }

    fn loss_grad(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f32],
        scratch: &mut Scratch,
    ) -> f32 {
        let (f, c) = (self.features, self.classes);
        let rows = x.nrows();
        debug_assert_eq!(params.len(), self.layout.len());
        debug_assert_eq!(grad.len(), self.layout.len());
        debug_assert_eq!(x.ncols(), f);
        debug_assert_eq!(y.len(), rows);
        if rows == 0 {
            grad.fill(0.0);
            return 0.0;
        }
        let mut xbuf = ops::take_input_buf(scratch);
        let mut logits = scratch.take(SLOT_LOGITS, rows * c);
        let xs = ops::batch_slice(&x, &mut xbuf);
        self.forward(params, xs, rows, &mut logits);
        let loss = ops::softmax_xent_grad(&mut logits, c, y, 1.0 / rows as f32);
        let (gw, gb) = grad.split_at_mut(c * f);
        // dW (classes × features) = dZᵀ (classes × rows) · X (rows × features).
        gemm::nn(c, f, rows, &logits, 1, c, xs, f, gw, f, Init::Zero, false);
        ops::col_sums(&logits, c, gb, false);
        scratch.put(SLOT_LOGITS, logits);
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
        debug_assert_eq!(x.ncols(), self.features);
        debug_assert_eq!(y.len(), rows);
        if rows == 0 {
            return;
        }
        let mut xbuf = ops::take_input_buf(scratch);
        let mut logits = scratch.take(SLOT_LOGITS, rows * self.classes);
        let xs = ops::batch_slice(&x, &mut xbuf);
        self.forward(params, xs, rows, &mut logits);
        ops::eval_logits(&logits, self.classes, y, stats);
        scratch.put(SLOT_LOGITS, logits);
        scratch.put(ops::SLOT_INPUT, xbuf);
    }

    /// `4·features·classes`: forward product and weight gradient (no input gradient is needed).
    fn train_flops_per_sample(&self) -> f64 {
        4.0 * (self.features * self.classes) as f64
    }

    /// `2·features·classes`.
    fn eval_flops_per_sample(&self) -> f64 {
        2.0 * (self.features * self.classes) as f64
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
    fn layout_and_counts() {
        let m = LogReg::new(784, 10);
        assert_eq!(m.num_params(), 7850);
        assert_eq!(
            m.layout().get("weight").map(|t| t.shape.clone()),
            Some(vec![10, 784])
        );
        assert_eq!(m.layout().get("bias").map(|t| t.range()), Some(7840..7850));
        assert_eq!(m.name(), "logreg(784-10)");
    }

    #[test]
    fn init_is_deterministic_and_bounded() {
        let m = LogReg::new(7, 3);
        let a = m.init_params(5);
        assert_eq!(a, m.init_params(5));
        assert_ne!(a, m.init_params(6));
        let bound = 1.0 / 7f32.sqrt();
        assert!(a.iter().all(|w| w.abs() <= bound));
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let m = LogReg::new(7, 3);
        check_gradient(&m, 5, 11);
    }

    #[test]
    fn deterministic_and_allocation_reusing() {
        let m = LogReg::new(30, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x = Array2::from_shape_fn((9, 30), |_| rng.random_range(-1.0f32..1.0));
        let y: Vec<u32> = (0..9).map(|i| i % 4).collect();
        let p = m.init_params(1);
        let mut s = Scratch::default();
        let mut g1 = vec![0.0; m.num_params()];
        let mut g2 = vec![1.0; m.num_params()];
        let l1 = m.loss_grad(&p, x.view(), &y, &mut g1, &mut s);
        let l2 = m.loss_grad(&p, x.view(), &y, &mut g2, &mut Scratch::default());
        assert_eq!(l1.to_bits(), l2.to_bits());
        assert_eq!(g1, g2);
        // A non-contiguous view (every other row) gives the same as its contiguous copy.
        let xs = x.slice(ndarray::s![..;2, ..]);
        let l3 = m.loss_grad(&p, xs, &[0, 2, 0, 2, 0], &mut g1, &mut s);
        let l4 = m.loss_grad(&p, xs.to_owned().view(), &[0, 2, 0, 2, 0], &mut g2, &mut s);
        assert_eq!(l3.to_bits(), l4.to_bits());
        assert_eq!(g1, g2);
    }

    #[test]
    fn learns_a_separable_problem() {
        let m = LogReg::new(20, 4);
        let (x, y) = toy_problem(400, 20, 4, 9);
        let acc = train_toy(&m, &x, &y, 0.5, 300, 16);
        assert!(acc >= 0.95, "accuracy {acc}");
    }

    #[test]
    fn evaluation_counts() {
        // Weights chosen by hand: class = argmax of the first three features.
        let m = LogReg::new(3, 3);
        let mut p = vec![0.0; m.num_params()];
        for c in 0..3 {
            p[c * 3 + c] = 1.0;
        }
        let x =
            Array2::from_shape_vec((4, 3), vec![1., 0., 0., 0., 2., 0., 0., 0., 3., 5., 0., 0.])
                .unwrap();
        let y = [0u32, 1, 2, 1];
        let mut stats = EvalStats::new(3);
        m.evaluate(&p, x.view(), &y, &mut Scratch::default(), &mut stats);
        assert_eq!(stats.count, 4);
        assert_eq!(stats.correct, 3);
        assert_eq!(stats.class_count, vec![1, 2, 1]);
        assert_eq!(stats.class_correct, vec![1, 1, 1]);
        // Loss of sample 0: log(e + 2) − 1.
        let want0 = (1f64.exp() + 2.0).ln() - 1.0;
        let want1 = (2f64.exp() + 2.0).ln() - 2.0;
        let want2 = (3f64.exp() + 2.0).ln() - 3.0;
        let want3 = (5f64.exp() + 2.0).ln();
        assert!((stats.loss_sum - (want0 + want1 + want2 + want3)).abs() < 1e-5);
    }

    #[test]
    fn empty_batch() {
        let m = LogReg::new(4, 2);
        let p = m.init_params(0);
        let mut g = vec![1.0; m.num_params()];
        let x = Array2::<f32>::zeros((0, 4));
        assert_eq!(
            m.loss_grad(&p, x.view(), &[], &mut g, &mut Scratch::default()),
            0.0
        );
        assert!(g.iter().all(|&v| v == 0.0));
    }
}
