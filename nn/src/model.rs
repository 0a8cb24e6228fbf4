//! The [`Model`] trait shared by every model, and evaluation statistics.

use ndarray::ArrayView2;

use crate::Layout;

/// Reusable scratch memory for one thread running a model, so training steps do not allocate.
///
/// Create one per worker thread with `Scratch::default()` and pass it to every call; a model grows
/// the buffers it needs on first use.
///
/// A scratch also carries the thread's *noise stream* for stochastic layers (dropout): the caller of
/// local training opens it with [`Scratch::start_noise`] under a key derived from (seed, round,
/// client), every training step of a model that needs noise takes the next step number from it, and
/// [`Scratch::stop_noise`] closes it. Without an open stream such layers are inactive (evaluation
/// mode), so evaluation and gradients computed outside local training stay deterministic.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Buffers indexed by slot; each model decides what its slots hold.
    pub bufs: Vec<Vec<f32>>,
    /// Buffers of a model that wraps another (the supermask's effective weights and the wrapped
    /// model's gradient), apart from `bufs` so that the wrapped model may use every slot there.
    outer: Vec<Vec<f32>>,
    /// The open noise stream: its key and the next step number.
    noise: Option<(u64, u64)>,
}

impl Scratch {
    /// Takes the buffer in `slot` out of the scratch, resized to `len` (contents unspecified).
    /// Give it back with [`Scratch::put`] so the allocation is reused.
    pub fn take(&mut self, slot: usize, len: usize) -> Vec<f32> {
        take_slot(&mut self.bufs, slot, len)
    }

    /// Returns a buffer taken with [`Scratch::take`].
    pub fn put(&mut self, slot: usize, buf: Vec<f32>) {
        put_slot(&mut self.bufs, slot, buf);
    }

    /// [`Scratch::take`] for a wrapping model's own buffers (see the `outer` field).
    pub fn take_outer(&mut self, slot: usize, len: usize) -> Vec<f32> {
        take_slot(&mut self.outer, slot, len)
    }

    /// Returns a buffer taken with [`Scratch::take_outer`].
    pub fn put_outer(&mut self, slot: usize, buf: Vec<f32>) {
        put_slot(&mut self.outer, slot, buf);
    }

    /// Opens a noise stream under `key` (derive it from the run seed, the round and the client, so
    /// both runtimes draw the same noise): stochastic layers become active, and their masks for
    /// training step `s` (counted from 0 since this call) are a function of `(key, s)` only.
    pub fn start_noise(&mut self, key: u64) {
        self.noise = Some((key, 0));
    }

    /// Closes the noise stream: stochastic layers become inactive again.
    pub fn stop_noise(&mut self) {
        self.noise = None;
    }

    /// The open stream's key and the number of the step about to run (then counts the step), or
    /// `None` when no stream is open. Called once per training step by models with stochastic layers.
    pub fn next_noise(&mut self) -> Option<(u64, u64)> {
        let (key, step) = self.noise.as_mut()?;
        let out = (*key, *step);
        *step += 1;
        Some(out)
    }
}

/// Takes slot `slot` of `bufs` (growing the list), resized to `len`.
fn take_slot(bufs: &mut Vec<Vec<f32>>, slot: usize, len: usize) -> Vec<f32> {
    if bufs.len() <= slot {
        bufs.resize_with(slot + 1, Vec::new);
    }
    let mut b = std::mem::take(&mut bufs[slot]);
    b.resize(len, 0.0);
    b
}

/// Puts `buf` back into slot `slot` of `bufs`.
fn put_slot(bufs: &mut Vec<Vec<f32>>, slot: usize, buf: Vec<f32>) {
    if bufs.len() <= slot {
        bufs.resize_with(slot + 1, Vec::new);
    }
    bufs[slot] = buf;
}

/// Loss and accuracy counts accumulated over evaluation batches.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalStats {
    /// Sum of per-sample losses.
    pub loss_sum: f64,
    /// Number of correctly classified samples.
    pub correct: u64,
    /// Number of samples seen.
    pub count: u64,
    /// Correct predictions per true class.
    pub class_correct: Vec<u64>,
    /// Samples per true class.
    pub class_count: Vec<u64>,
}

impl EvalStats {
    /// Empty statistics for `num_classes` classes.
    pub fn new(num_classes: usize) -> Self {
        Self {
            class_correct: vec![0; num_classes],
            class_count: vec![0; num_classes],
            ..Self::default()
        }
    }

    /// Adds another set of statistics (same number of classes).
    pub fn merge(&mut self, other: &EvalStats) {
        self.loss_sum += other.loss_sum;
        self.correct += other.correct;
        self.count += other.count;
        for (a, b) in self.class_correct.iter_mut().zip(&other.class_correct) {
            *a += b;
        }
        for (a, b) in self.class_count.iter_mut().zip(&other.class_count) {
            *a += b;
        }
    }

    /// Mean loss (0 when empty).
    pub fn mean_loss(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.loss_sum / self.count as f64
        }
    }

    /// Accuracy in [0, 1] (0 when empty).
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }

    /// Per-class accuracy; `None` for classes absent from the data.
    pub fn class_accuracy(&self) -> Vec<Option<f64>> {
        self.class_correct
            .iter()
            .zip(&self.class_count)
            .map(|(&c, &n)| {
                if n == 0 {
                    None
                } else {
                    Some(c as f64 / n as f64)
                }
            })
            .collect()
    }
}

/// A classifier on flat `f32` parameters.
///
/// Inputs are row-major batches `x` of shape `(batch, features)` (images flattened as channels × height ×
/// width) and integer class labels `y`. Implementations are deterministic: the same inputs give
/// bit-identical outputs, whatever thread runs them.
pub trait Model: Send + Sync + std::fmt::Debug {
    /// Short human-readable name, e.g. `mlp(784-200-200-10)`.
    fn name(&self) -> String;

    /// The parameter layout.
    fn layout(&self) -> &Layout;

    /// Number of parameters.
    fn num_params(&self) -> usize {
        self.layout().len()
    }

    /// Number of input features per sample.
    fn input_len(&self) -> usize;

    /// Number of classes.
    fn num_classes(&self) -> usize;

    /// Fresh parameters drawn from `seed` (deterministic).
    fn init_params(&self, seed: u64) -> Vec<f32>;

    /// Mean loss over the batch; writes (overwrites) its gradient with respect to `params` into `grad`.
    fn loss_grad(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f32],
        scratch: &mut Scratch,
    ) -> f32;

    /// Adds the batch's summed loss and accuracy counts to `stats`.
    fn evaluate(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        scratch: &mut Scratch,
        stats: &mut EvalStats,
    );

    /// Floating-point operations of one training sample (forward and backward), for throughput figures.
    fn train_flops_per_sample(&self) -> f64;

    /// Floating-point operations of one evaluated sample (forward only).
    fn eval_flops_per_sample(&self) -> f64;

    /// How the parameter tensor `tensor` maps to PyTorch's layout of the same module, for model files
    /// ([`crate::model_file`]): PyTorch's axis `i` is this tensor's axis `axes[i]`. The default is this
    /// crate's convention, weights stored input-major (a dense weight `[in, out]` is PyTorch's
    /// `[out, in]`, a conv weight `[in, k, k, out]` is PyTorch's `[out, in, k, k]`); vectors are
    /// unchanged. A model that stores a weight in PyTorch's order overrides it.
    fn torch_axes(&self, tensor: &crate::TensorSpec) -> Vec<usize> {
        crate::model_file::input_major_axes(tensor.shape.len())
    }

    /// One line per layer (its key, kind, input and output shapes) for a run's summary; empty for
    /// models that are not layer stacks.
    fn layers(&self) -> Vec<String> {
        Vec::new()
    }

    /// Smoothness constant `L` of the model's mean loss on the rows `rows` of `x` (a bound on the
    /// Hessian's norm), where the model can state it; `None` otherwise. Strategies with theoretical step
    /// sizes or smoothness weights (EF21, EF21-W) read it.
    fn smoothness(&self, x: ArrayView2<'_, f32>, rows: &[u32]) -> Option<f64> {
        let _ = (x, rows);
        None
    }

    /// Mean loss and its gradient computed in `f64` from `f64` parameters, for models that support it
    /// (optimisation experiments with tight tolerances, e.g. EF21's `||∇f||² ≤ 1e−7`). `None` when the
    /// model computes in `f32` only.
    fn loss_grad_f64(
        &self,
        params: &[f64],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f64],
    ) -> Option<f64> {
        let _ = (params, x, y, grad);
        None
    }
}
