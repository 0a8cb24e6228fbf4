//! `[model] kind = "sequential"`: a model made of a list of layers, on the project's GEMM kernels.
//!
//! A batch runs in *passes* of at most [`Sequential::pass_rows`] samples (set from the activation
//! memory per sample), whose parameter gradients are summed: the split depends on the shapes only, and
//! every layer computes in a fixed order on one thread, so results are bit-identical whatever thread
//! runs them. Image activations are stored channel-major over a pass (plane `(c, b)` at
//! `(c·rows + b)·h·w`), so a convolution's product writes its output in place; flat activations are
//! `rows × n`. Every activation, its gradient and the layers' extra buffers live in numbered slots of
//! the thread's [`Scratch`], sized once for the largest pass and reused by every step.
//!
//! Speed (issue #14; `cargo bench -p fedsim-nn --bench stack`, figures in `docs/BENCHMARKS.md`):
//! a ReLU after a conv, dense or group-norm layer is computed in that layer's output pass, and a
//! ReLU followed by max-pooling has its backward done by the pooling's (see `fuse`), so neither
//! stores a tensor of its own; evaluation runs in smaller passes than training
//! (`EVAL_BUDGET`), so that a pass's activations stay in the caches.

mod build;
mod conv;
mod dense;
mod logits;
mod norm;
mod pool;
mod presets;
mod raw;
#[cfg(test)]
mod shortcut_tests;
mod spec;
#[cfg(test)]
mod tests;

use fedsim_types::ConfigError;
use ndarray::ArrayView2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use build::{Builder, InitRule, Node, Op, SLOT_COL, SLOT_DCOL, Shape, Shortcut, Tensor};
use dense::DropMask;

pub use raw::Raw;
pub use spec::{
    Conv2d, Dense, GroupNorm, InitScheme, LayerEntry, LayerSpec, PRESETS, Padding, Pool, Residual,
    SequentialConfig,
};

use crate::profile::Section;
use crate::{EvalStats, InputSpec, Layout, Model, Scratch, ops};

/// Largest number of samples in one pass.
const MAX_ROWS: usize = 64;
/// Activation memory of one training pass, in floats (passes shrink to fit, down to one sample).
const ACT_BUDGET: usize = 1 << 23;
/// Activation memory of one evaluation pass, in floats (4 MiB): small enough that a pass's
/// activations stay in the caches between layers. With the training budget (32 MiB, passes of 146
/// samples of `cnn_cifar`) the first convolution's output went to memory and back, and evaluation
/// ran at 47–54% of the FMA peak instead of 60–68%.
const EVAL_BUDGET: usize = 1 << 20;

/// A stack of layers (see the module documentation and the README's `[model]` section).
///
/// Parameter names follow PyTorch's `nn.Sequential` numbering: `{i}.weight`, `{i}.bias` for layer
/// `i`, `{i}.body.{j}.…` inside a residual block, `{i}.shortcut.weight` for its automatic projection
/// and `{i}.shortcut.{j}.…` for the layers of a shortcut it gives (`shortcut = [...]`). Conv
/// weights are stored `[cin, k, k, cout]` and dense weights `[in, out]` (input-major, like the other
/// models: the transposes of PyTorch's).
#[derive(Debug, Clone)]
pub struct Sequential {
    input: Shape,
    classes: usize,
    layout: Layout,
    init: Vec<InitRule>,
    nodes: Vec<Node>,
    x: Tensor,
    out: Tensor,
    /// Floats per sample of every scratch slot, and whether only the backward pass uses it.
    slots: Vec<(usize, bool)>,
    convs: Vec<conv::Conv>,
    /// Per scratch slot: whether it is the output of a ReLU that the layer before it (conv, dense or
    /// group norm) computes in its own output pass; that ReLU node then does nothing forward.
    relu_in_producer: Vec<bool>,
    /// Per scratch slot: whether it is the output of a ReLU followed by max-pooling whose backward
    /// also does the ReLU's (writing the ReLU's input gradient); that ReLU node then does nothing
    /// backward.
    relu_in_pool: Vec<bool>,
    pass_rows: usize,
    eval_rows: usize,
    flops: f64,
    first_flops: f64,
    has_dropout: bool,
}

/// What a forward pass is for.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Eval,
    /// Training: the noise stream's `(key, step)` if open, and the pass's first sample in the batch.
    Train(Option<(u64, u64)>, usize),
}

impl Sequential {
    /// Builds `layers` for `input`. Shape errors name the layer's key (`layers[3]`, or
    /// `layers[3].residual.layers[1]` inside a residual block, `layers[3].residual.shortcut[0]` in its
    /// shortcut), its kind and the shapes.
    pub fn new(
        layers: &[LayerSpec],
        input: &InputSpec,
        init: InitScheme,
    ) -> Result<Self, ConfigError> {
        let shape = match input.image {
            Some(im) => Shape::Image {
                c: im.channels,
                h: im.height,
                w: im.width,
            },
            None => Shape::Flat(input.features),
        };
        let classes = input.num_classes;
        let mut b = Builder::new(init, classes);
        let x = b.tensor(shape);
        b.slots[x.grad].0 = 0;
        let (mut nodes, out) = b.seq(layers, x, "layers", "")?;
        if out.shape != Shape::Flat(classes) {
            let (key, kind) = match layers.last() {
                Some(l) => (format!("layers[{}]", layers.len() - 1), l.kind()),
                None => ("layers".into(), "input"),
            };
            return Err(ConfigError::new(
                key,
                format!(
                    "{kind}: the network ends with {}, the data has {classes} classes (end with a \
                     dense layer of {classes} units, e.g. \"dense\")",
                    out.shape
                ),
            ));
        }
        let mut relu_in_producer = vec![false; b.slots.len()];
        let mut relu_in_pool = vec![false; b.slots.len()];
        fuse(
            &mut nodes,
            &mut b.slots,
            &mut relu_in_producer,
            &mut relu_in_pool,
        );
        let per_row: usize = b.slots.iter().map(|s| s.0).sum();
        let fwd_row: usize = b.slots.iter().filter(|s| !s.1).map(|s| s.0).sum();
        let first_flops = match nodes.first().map(|n| &n.op) {
            Some(Op::Conv(c)) => c.flops(),
            Some(Op::Dense(d)) => d.flops(),
            _ => 0.0,
        };
        Ok(Self {
            input: shape,
            classes,
            has_dropout: b.dropouts > 0,
            layout: b.layout,
            init: b.init,
            nodes,
            x,
            out,
            slots: b.slots,
            convs: b.convs,
            relu_in_producer,
            relu_in_pool,
            pass_rows: (ACT_BUDGET / per_row.max(1)).clamp(1, MAX_ROWS),
            eval_rows: (EVAL_BUDGET / fwd_row.max(1)).clamp(1, 4 * MAX_ROWS),
            flops: b.flops,
            first_flops,
        })
    }

    /// Samples per training pass.
    pub fn pass_rows(&self) -> usize {
        self.pass_rows
    }

    /// One line per layer (nested layers indented): key, kind, input and output shape per sample.
    pub fn summary(&self) -> Vec<String> {
        fn walk(nodes: &[Node], depth: usize, out: &mut Vec<String>) {
            for n in nodes {
                out.push(format!(
                    "{:indent$}{}: {} -> {}",
                    "",
                    n.label,
                    n.input.shape,
                    n.output.shape,
                    indent = 2 * depth
                ));
                if let Op::Residual(r) = &n.op {
                    walk(&r.body, depth + 1, out);
                    if let Shortcut::Layers(sc) = &r.shortcut {
                        walk(sc, depth + 1, out);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.nodes, 0, &mut out);
        out
    }

    /// Scratch floats of a pass of `rows` samples (what [`Model::loss_grad`] keeps per thread).
    pub fn scratch_floats(&self, rows: usize, backward: bool) -> usize {
        let mut a = Vec::new();
        self.size_arena(&mut a, rows, backward);
        a.iter().map(Vec::len).sum()
    }

    /// Sizes every slot of `a` for passes of up to `rows` samples.
    fn size_arena(&self, a: &mut Vec<Vec<f32>>, rows: usize, backward: bool) {
        if a.len() < self.slots.len() {
            a.resize_with(self.slots.len(), Vec::new);
        }
        for (s, &(per_row, bw_only)) in self.slots.iter().enumerate().skip(SLOT_DCOL + 1) {
            let n = if bw_only && !backward {
                0
            } else {
                per_row * rows
            };
            a[s].resize(n, 0.0);
        }
        let col = self
            .convs
            .iter()
            .map(|c| c.col_len(rows))
            .max()
            .unwrap_or(0);
        a[SLOT_COL].resize(col, 0.0);
        a[SLOT_DCOL].resize(if backward { col } else { 0 }, 0.0);
    }

    /// Copies samples of the batch (`rows × features`, row-major) into the input slot.
    fn load(&self, xs: &[f32], rows: usize, a: &mut [Vec<f32>]) {
        let dst = &mut a[self.x.act][..rows * self.input.len()];
        match self.input.planes() {
            Some((c, hw)) => dense::flatten(xs, dst, c, hw, rows, true),
            None => dst.copy_from_slice(xs),
        }
    }

    fn forward_seq(
        &self,
        nodes: &[Node],
        params: &[f32],
        rows: usize,
        a: &mut [Vec<f32>],
        mode: Mode,
    ) {
        for n in nodes {
            self.forward_node(n, params, rows, a, mode);
        }
    }

    fn forward_node(&self, n: &Node, params: &[f32], rows: usize, a: &mut [Vec<f32>], mode: Mode) {
        let (xl, yl) = (rows * n.input.shape.len(), rows * n.output.shape.len());
        if let Op::Residual(r) = &n.op {
            self.forward_seq(&r.body, params, rows, a, mode);
            if let Shortcut::Layers(sc) = &r.shortcut {
                self.forward_seq(sc, params, rows, a, mode);
            }
            let _s = Section::new("stack residual fwd");
            let last = r.body.last().map_or(n.input, |b| b.output);
            if let (Some(t), Shortcut::Conv(c)) = (&r.proj, &r.shortcut) {
                let (mut p, mut col) = (take(a, t.act), take(a, SLOT_COL));
                c.forward(params, &a[n.input.act][..xl], &mut p[..yl], rows, &mut col);
                put(a, t.act, p);
                put(a, SLOT_COL, col);
            } else if let (Some(t), Shortcut::Dense(d)) = (&r.proj, &r.shortcut) {
                let mut p = take(a, t.act);
                d.forward(params, &a[n.input.act][..xl], &mut p[..yl], rows);
                put(a, t.act, p);
            }
            let other = match &r.shortcut {
                Shortcut::Layers(sc) => sc.last().map_or(n.input.act, |l| l.output.act),
                _ => r.proj.map_or(n.input.act, |t| t.act),
            };
            let mut y = take(a, n.output.act);
            for ((o, &u), &v) in y[..yl].iter_mut().zip(&a[last.act]).zip(&a[other]) {
                *o = u + v;
            }
            put(a, n.output.act, y);
            return;
        }
        if matches!(n.op, Op::Relu) && self.relu_in_producer[n.output.act] {
            return;
        }
        let _s = Section::new(n.op.section(true));
        let relu = self.relu_in_producer[n.output.act];
        let mut y = take(a, n.output.act);
        let mut aux0 = take(a, n.aux[0]);
        let mut aux1 = take(a, n.aux[1]);
        let mut col = take(a, SLOT_COL);
        let x = &a[n.input.act][..xl];
        let yv = &mut y[..yl];
        match &n.op {
            Op::Conv(c) => c.forward_relu(params, x, yv, rows, &mut col, relu),
            Op::MaxPool(g) => match mode {
                Mode::Train(..) => g.max_forward(x, yv, &mut aux0[..yl]),
                Mode::Eval => g.max_forward_eval(x, yv),
            },
            Op::AvgPool(g) => g.avg_forward(x, yv),
            Op::GlobalAvgPool => {
                let (c, hw) = n.input.shape.planes().unwrap_or((0, 1));
                pool::global_avg_forward(x, c, hw, rows, yv);
            }
            Op::Dense(d) => d.forward_relu(params, x, yv, rows, relu),
            Op::Relu => dense::relu_forward(x, yv),
            Op::Flatten => match n.input.shape.planes() {
                Some((c, hw)) => dense::flatten(x, yv, c, hw, rows, false),
                None => yv.copy_from_slice(x),
            },
            Op::GroupNorm(g) => {
                let stats = &mut aux1[..rows * g.stats_per_row()];
                g.forward(params, x, yv, stats, rows, relu);
            }
            Op::Dropout(p, id) => match mode {
                Mode::Eval => yv.copy_from_slice(x),
                Mode::Train(noise, row0) => {
                    let m = &mut aux0[..xl];
                    match noise {
                        Some((key, step)) => {
                            DropMask::new(key, step, *id, *p).fill(
                                m,
                                n.input.shape.len(),
                                n.input.shape.planes(),
                                row0,
                                rows,
                            );
                        }
                        None => m.fill(1.0),
                    }
                    for ((o, &v), &k) in yv.iter_mut().zip(x).zip(m.iter()) {
                        *o = v * k;
                    }
                }
            },
            Op::Residual(_) => unreachable!("handled above"),
        }
        put(a, n.output.act, y);
        put(a, n.aux[0], aux0);
        put(a, n.aux[1], aux1);
        put(a, SLOT_COL, col);
    }

    /// Backward through `nodes`: the gradient of the last output is in its slot; parameter gradients
    /// are written (added when `acc`); the first node writes the gradient of its input when `need_dx`.
    #[allow(clippy::too_many_arguments)]
    fn backward_seq(
        &self,
        nodes: &[Node],
        params: &[f32],
        grad: &mut [f32],
        acc: bool,
        need_dx: bool,
        rows: usize,
        a: &mut [Vec<f32>],
    ) {
        for (i, n) in nodes.iter().enumerate().rev() {
            self.backward_node(n, params, grad, acc, need_dx || i > 0, rows, a);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn backward_node(
        &self,
        n: &Node,
        params: &[f32],
        grad: &mut [f32],
        acc: bool,
        need_dx: bool,
        rows: usize,
        a: &mut [Vec<f32>],
    ) {
        let (xl, yl) = (rows * n.input.shape.len(), rows * n.output.shape.len());
        if let Op::Residual(r) = &n.op {
            self.backward_seq(&r.body, params, grad, acc, need_dx, rows, a);
            if let Shortcut::Layers(sc) = &r.shortcut {
                self.backward_seq(sc, params, grad, acc, need_dx, rows, a);
            }
            let _s = Section::new("stack residual bwd");
            let mut dx = take(a, if need_dx { n.input.grad } else { 0 });
            let dxv = need_dx.then(|| &mut dx[..xl]);
            let (x, dy) = (&a[n.input.act][..xl], &a[n.output.grad][..yl]);
            match &r.shortcut {
                Shortcut::Identity => {
                    if let Some(dxv) = dxv {
                        for (o, &g) in dxv.iter_mut().zip(dy) {
                            *o += g;
                        }
                    }
                }
                // The shortcut's input gradient, in its own slot.
                Shortcut::Layers(sc) => {
                    if let (Some(dxv), Some(first)) = (dxv, sc.first()) {
                        for (o, &g) in dxv.iter_mut().zip(&a[first.input.grad][..xl]) {
                            *o += g;
                        }
                    }
                }
                Shortcut::Conv(c) => {
                    let (mut col, mut dcol) = (take(a, SLOT_COL), take(a, SLOT_DCOL));
                    let (x, dy) = (&a[n.input.act][..xl], &a[n.output.grad][..yl]);
                    c.backward(
                        params, x, dy, dxv, true, grad, acc, rows, &mut col, &mut dcol,
                    );
                    put(a, SLOT_COL, col);
                    put(a, SLOT_DCOL, dcol);
                }
                Shortcut::Dense(d) => d.backward(params, x, dy, dxv, true, grad, acc, rows),
            }
            put(a, if need_dx { n.input.grad } else { 0 }, dx);
            return;
        }
        if matches!(n.op, Op::Relu) && self.relu_in_pool[n.output.act] {
            return;
        }
        let _s = Section::new(n.op.section(false));
        let dx_slot = if need_dx { n.input.grad } else { 0 };
        let mut dx = take(a, dx_slot);
        let mut col = take(a, SLOT_COL);
        let mut dcol = take(a, SLOT_DCOL);
        let dxv = need_dx.then(|| &mut dx[..xl]);
        // A ReLU's backward uses its output only (its input is not stored when fused).
        let x = match n.op {
            Op::Relu => &[][..],
            _ => &a[n.input.act][..xl],
        };
        let dy = &a[n.output.grad][..yl];
        let aux = |i: usize| &a[n.aux[i]];
        match &n.op {
            Op::Conv(c) => c.backward(
                params, x, dy, dxv, false, grad, acc, rows, &mut col, &mut dcol,
            ),
            Op::Dense(d) => d.backward(params, x, dy, dxv, false, grad, acc, rows),
            Op::GroupNorm(g) => {
                let stats = &aux(1)[..rows * g.stats_per_row()];
                g.backward(params, x, dy, dxv, stats, grad, acc, rows);
            }
            _ => {
                if let Some(dxv) = dxv {
                    match &n.op {
                        Op::MaxPool(g) if self.relu_in_pool[n.input.act] => {
                            let pooled = &a[n.output.act][..yl];
                            g.max_relu_backward(&aux(0)[..yl], pooled, dy, dxv);
                        }
                        Op::MaxPool(g) => g.max_backward(&aux(0)[..yl], dy, dxv),
                        Op::AvgPool(g) => g.avg_backward(dy, dxv),
                        Op::GlobalAvgPool => {
                            let (c, hw) = n.input.shape.planes().unwrap_or((0, 1));
                            pool::global_avg_backward(dy, c, hw, rows, dxv);
                        }
                        Op::Relu => dense::relu_backward(&a[n.output.act][..yl], dy, dxv),
                        Op::Flatten => match n.input.shape.planes() {
                            Some((c, hw)) => dense::flatten(dy, dxv, c, hw, rows, true),
                            None => dxv.copy_from_slice(dy),
                        },
                        Op::Dropout(..) => {
                            for ((o, &g), &m) in dxv.iter_mut().zip(dy).zip(&aux(0)[..xl]) {
                                *o = g * m;
                            }
                        }
                        _ => unreachable!("layers with parameters are handled above"),
                    }
                }
            }
        }
        put(a, dx_slot, dx);
        put(a, SLOT_COL, col);
        put(a, SLOT_DCOL, dcol);
    }

    /// Forward and backward of one pass of `rows` samples (already loaded), loss gradient scaled by
    /// `scale`. Returns the summed loss.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        params: &[f32],
        y: &[u32],
        scale: f32,
        grad: &mut [f32],
        acc: bool,
        a: &mut [Vec<f32>],
        mode: Mode,
    ) -> f64 {
        let rows = y.len();
        let k = self.classes;
        self.forward_seq(&self.nodes, params, rows, a, mode);
        let mut d = take(a, self.out.grad);
        d[..rows * k].copy_from_slice(&a[self.out.act][..rows * k]);
        let s = Section::new("stack softmax");
        let loss = ops::softmax_xent_grad(&mut d[..rows * k], k, y, scale);
        drop(s);
        put(a, self.out.grad, d);
        self.backward_seq(&self.nodes, params, grad, acc, false, rows, a);
        loss
    }
}

impl Op {
    /// The name under which the `profile` feature times this layer's forward or backward pass.
    fn section(&self, forward: bool) -> &'static str {
        let names = match self {
            Op::Conv(_) => ("stack conv fwd", "stack conv bwd"),
            Op::MaxPool(_) => ("stack max_pool fwd", "stack max_pool bwd"),
            Op::AvgPool(_) => ("stack avg_pool fwd", "stack avg_pool bwd"),
            Op::GlobalAvgPool => ("stack global_avg_pool fwd", "stack global_avg_pool bwd"),
            Op::Dense(_) => ("stack dense fwd", "stack dense bwd"),
            Op::Relu => ("stack relu fwd", "stack relu bwd"),
            Op::Flatten => ("stack flatten fwd", "stack flatten bwd"),
            Op::GroupNorm(_) => ("stack group_norm fwd", "stack group_norm bwd"),
            Op::Dropout(..) => ("stack dropout fwd", "stack dropout bwd"),
            Op::Residual(_) => ("stack residual fwd", "stack residual bwd"),
        };
        if forward { names.0 } else { names.1 }
    }
}

/// Fuses ReLUs into their neighbours in `nodes` (and in residual bodies and shortcuts), recording
/// the choices in `in_producer` and `in_pool` (indexed by slot) and resizing the slots that are no
/// longer used:
///
/// - conv, dense or group norm followed by a ReLU: the layer writes `max(·, 0)` straight into the
///   ReLU's output (the product's or normalisation's output pass does it), so the pre-activation is
///   never stored. Nothing reads it: the layers' backward passes use their inputs, and the ReLU's
///   uses its output.
/// - a ReLU (not first in its list, so its input gradient is always needed) followed by max-pooling:
///   the pooling's backward writes the ReLU's input gradient directly, passing the gradient only
///   where the pooled value (the ReLU's output at the arg-max) is positive, so the ReLU's output
///   gradient is never stored.
///
/// Both give the same values as the unfused layers. Also: max-pooling arg-maxes and the GroupNorm
/// `x̂` copies are no longer kept (`x̂` is recomputed), and GroupNorm keeps means and `1/σ`.
fn fuse(
    nodes: &mut [Node],
    slots: &mut [(usize, bool)],
    in_producer: &mut [bool],
    in_pool: &mut [bool],
) {
    for n in nodes.iter_mut() {
        match &mut n.op {
            Op::Residual(r) => {
                fuse(&mut r.body, slots, in_producer, in_pool);
                if let Shortcut::Layers(sc) = &mut r.shortcut {
                    fuse(sc, slots, in_producer, in_pool);
                }
            }
            // The arg-maxes serve the backward pass only (evaluation does not compute them).
            Op::MaxPool(_) => slots[n.aux[0]].1 = true,
            Op::GroupNorm(g) => {
                slots[n.aux[0]].0 = 0;
                slots[n.aux[1]].0 = g.stats_per_row();
            }
            _ => {}
        }
    }
    for i in 1..nodes.len() {
        if !matches!(nodes[i].op, Op::Relu) {
            continue;
        }
        let out = nodes[i].output;
        if matches!(
            nodes[i - 1].op,
            Op::Conv(_) | Op::Dense(_) | Op::GroupNorm(_)
        ) {
            slots[nodes[i - 1].output.act].0 = 0;
            nodes[i - 1].output.act = out.act;
            in_producer[out.act] = true;
        }
        if nodes
            .get(i + 1)
            .is_some_and(|n| matches!(n.op, Op::MaxPool(_)))
        {
            slots[out.grad].0 = 0;
            nodes[i + 1].input.grad = nodes[i].input.grad;
            in_pool[out.act] = true;
        }
    }
}

/// Takes slot `s` out of the arena (slot 0, the input copy, is never used by the layers and stands
/// for "no buffer").
fn take(a: &mut [Vec<f32>], s: usize) -> Vec<f32> {
    std::mem::take(&mut a[s])
}

fn put(a: &mut [Vec<f32>], s: usize, v: Vec<f32>) {
    a[s] = v;
}

/// A standard normal draw (Box–Muller, one of the pair).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = 1.0 - rng.random_range(0.0f64..1.0);
    let u2 = rng.random_range(0.0f64..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Model for Sequential {
    fn layers(&self) -> Vec<String> {
        self.summary()
    }

    fn name(&self) -> String {
        format!(
            "sequential({} -> {} layers -> {})",
            self.input,
            self.nodes.len(),
            self.classes
        )
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn input_len(&self) -> usize {
        self.input.len()
    }

    fn num_classes(&self) -> usize {
        self.classes
    }

    fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut p = vec![0.0f32; self.layout.len()];
        for (t, rule) in self.layout.tensors().iter().zip(&self.init) {
            let dst = &mut p[t.range()];
            match *rule {
                InitRule::Uniform(b) => dst.iter_mut().for_each(|w| *w = rng.random_range(-b..b)),
                InitRule::Normal(s) => dst
                    .iter_mut()
                    .for_each(|w| *w = (normal(&mut rng) * s as f64) as f32),
                InitRule::Const(v) => dst.fill(v),
            }
        }
        p
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
        let noise = if self.has_dropout {
            scratch.next_noise()
        } else {
            None
        };
        if rows == 0 {
            grad.fill(0.0);
            return 0.0;
        }
        let mb = rows.min(self.pass_rows);
        let mut xbuf = ops::take_input_buf(scratch);
        let mut a = std::mem::take(&mut scratch.bufs);
        self.size_arena(&mut a, mb, true);
        let xs = ops::batch_slice(&x, &mut xbuf);
        let f = self.input_len();
        let scale = 1.0 / rows as f32;
        let mut loss = 0.0;
        for (i, s) in (0..rows).step_by(mb).enumerate() {
            let e = (s + mb).min(rows);
            let sec = Section::new("stack load");
            self.load(&xs[s * f..e * f], e - s, &mut a);
            drop(sec);
            let mode = Mode::Train(noise, s);
            loss += self.step(params, &y[s..e], scale, grad, i > 0, &mut a, mode);
        }
        scratch.bufs = a;
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
        if rows == 0 {
            return;
        }
        let mb = rows.min(self.eval_rows);
        let mut xbuf = ops::take_input_buf(scratch);
        let mut a = std::mem::take(&mut scratch.bufs);
        self.size_arena(&mut a, mb, false);
        let xs = ops::batch_slice(&x, &mut xbuf);
        let (f, k) = (self.input_len(), self.classes);
        for s in (0..rows).step_by(mb) {
            let e = (s + mb).min(rows);
            self.load(&xs[s * f..e * f], e - s, &mut a);
            self.forward_seq(&self.nodes, params, e - s, &mut a, Mode::Eval);
            ops::eval_logits(&a[self.out.act][..(e - s) * k], k, &y[s..e], stats);
        }
        scratch.bufs = a;
        scratch.put(ops::SLOT_INPUT, xbuf);
    }

    /// Forward products, plus the weight gradients (as many) and the input gradients of every layer
    /// but the first (as many).
    fn train_flops_per_sample(&self) -> f64 {
        3.0 * self.flops - self.first_flops
    }

    fn eval_flops_per_sample(&self) -> f64 {
        self.flops
    }
}
