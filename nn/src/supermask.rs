//! Supermask models (edge-popup, Ramanujan et al. 2020) for Federated Rank Learning
//! (`../shared/algorithms.md` §5.2).
//!
//! A supermask model wraps a model ([`crate::Mlp`], [`crate::Cnn`] or a layer stack,
//! [`crate::Sequential`]) whose weights are **never trained**: every conv and dense weight (a tensor
//! named `….weight` of rank ≥ 2) is frozen at the "signed constant" `sign(w0)·√2/√fan_in`, biases are
//! zero (the layers are bias-free), and any other tensor (a GroupNorm's scale and shift) stays at the
//! wrapped model's initial value (1 and 0). What is trained is one **score** per weight (edge): the
//! model's parameter vector is the scores, one tensor `<layer>.scores` per masked weight tensor.
//! The forward pass uses `W ⊙ mask(scores)`, where the mask keeps the top `keep` fraction of each
//! layer's edges (the lowest `⌊(1 − keep)·n_l⌋` are zeroed), ranked by the signed score (`mask_by =
//! signed`, the paper) or by its absolute value (`mask_by = abs`, the reference code, §5.7). Ties are
//! broken by edge index (the lower index ranks lower), so the mask is deterministic.
//!
//! Backward is straight-through: the gradient with respect to a mask entry (upstream gradient of the
//! effective weight × the frozen weight) is passed unchanged to the score (`mask_by = signed`), or
//! multiplied by `sign(score)` (`mask_by = abs`, the derivative of `|s|`).
//!
//! Both the frozen weights and the initial scores are functions of the model's own `seed` (the
//! scenario's `model.seed`), so a server and its clients regenerate bit-identical values without
//! shipping them; [`Model::init_params`] therefore **ignores its `seed` argument** and returns the
//! initial scores `U(−1/√fan_in, 1/√fan_in)` drawn from the model seed.

use ndarray::ArrayView2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::order::ordered_bits;
use crate::{EvalStats, Layout, Model, NnError, Scratch};

/// Outer scratch slot ([`Scratch::take_outer`]) of the effective weights of the wrapped model.
const SLOT_EFF: usize = 0;
/// Outer scratch slot of the wrapped model's gradient.
const SLOT_GRAD: usize = 1;

/// What the per-layer top-k mask ranks (`model.mask_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskBy {
    /// The signed score: the mask keeps the top of the ranking (the paper's description).
    #[default]
    Signed,
    /// The absolute score (`GetSubnet(scores.abs(), k)` of the reference code): the mask keeps both ends
    /// of a signed ranking. For parity runs only.
    Abs,
}

impl std::fmt::Display for MaskBy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MaskBy::Signed => "signed",
            MaskBy::Abs => "abs",
        })
    }
}

/// `supermask = { keep, mask_by, seed }` of a layer stack (`kind = "sequential"`): the stack becomes
/// a supermask model (see [`crate::supermask`]) over its conv and dense weights, for FRL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupermaskOptions {
    /// Fraction of each layer's edges kept by the mask, in (0, 1] (default 0.5).
    #[serde(default = "default_keep")]
    pub keep: f64,
    /// What the mask ranks: `signed` (the paper, default) or `abs` (the reference code).
    #[serde(default)]
    pub mask_by: MaskBy,
    /// Seed of the frozen weights and of the initial scores, shared by server and clients.
    #[serde(default)]
    pub seed: u64,
}

/// The default kept fraction of a supermask layer.
pub(crate) fn default_keep() -> f64 {
    0.5
}

/// One masked layer: where its weights sit in the wrapped model and its scores in ours.
#[derive(Debug, Clone)]
struct MaskedLayer {
    /// Offset of the weight tensor in the wrapped model's parameters.
    inner_offset: usize,
    /// Offset of the scores in the supermask parameter vector (the scores).
    offset: usize,
    /// Number of edges.
    len: usize,
    /// Fan-in of the layer (product of every dimension of the weight shape but the last).
    fan_in: usize,
}

/// A bias-free dense model with frozen signed-constant weights and trainable per-edge scores.
#[derive(Debug)]
pub struct Supermask {
    inner: Box<dyn Model>,
    layout: Layout,
    layers: Vec<MaskedLayer>,
    /// Frozen weights, in score order (`weights[i]` belongs to score `i`).
    weights: Vec<f32>,
    /// The wrapped model's parameters outside the masked tensors (zero biases, norm scales and
    /// shifts at their initial values); zero inside them.
    fixed: Vec<f32>,
    keep: f64,
    mask_by: MaskBy,
    seed: u64,
}

impl Supermask {
    /// Wraps `inner`: every tensor of rank ≥ 2 whose name ends in `.weight` becomes a masked layer;
    /// biases (`.bias`) are held at zero and every other tensor at `inner`'s initial value. `keep` is
    /// the kept fraction of each layer, in `(0, 1]`.
    pub fn new(
        inner: Box<dyn Model>,
        keep: f64,
        mask_by: MaskBy,
        seed: u64,
    ) -> Result<Self, NnError> {
        if !(keep > 0.0 && keep <= 1.0) {
            return Err(NnError::InvalidSpec(format!(
                "model.keep must be in (0, 1], got {keep}"
            )));
        }
        let mut layout = Layout::new();
        let mut layers = Vec::new();
        for t in inner.layout().tensors() {
            let Some(base) = t.name.strip_suffix(".weight") else {
                continue;
            };
            if t.shape.len() < 2 {
                continue; // a normalisation layer's scale, not a layer of edges
            }
            let i = layout.push(format!("{base}.scores"), &t.shape);
            let fan_in = t.shape[..t.shape.len().saturating_sub(1)]
                .iter()
                .product::<usize>()
                .max(1);
            layers.push(MaskedLayer {
                inner_offset: t.offset,
                offset: layout.tensors()[i].offset,
                len: t.len(),
                fan_in,
            });
        }
        if layers.is_empty() {
            return Err(NnError::InvalidSpec(
                "supermask: the wrapped model has no weight tensors".into(),
            ));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5157_4E45_445F_5754); // "SIGNED_WT"
        let mut weights = vec![0.0f32; layout.len()];
        for l in &layers {
            // sign(w0)·gain/√fan_in with the ReLU gain √2; w0 is symmetric, so its sign is a fair coin.
            let c = (2.0f64 / l.fan_in as f64).sqrt() as f32;
            for w in &mut weights[l.offset..l.offset + l.len] {
                *w = if rng.random::<bool>() { c } else { -c };
            }
        }
        let init = inner.init_params(seed);
        let mut fixed = vec![0.0f32; inner.num_params()];
        for t in inner.layout().tensors() {
            let masked = layers.iter().any(|l| l.inner_offset == t.offset);
            if !masked && !t.name.ends_with(".bias") {
                fixed[t.range()].copy_from_slice(&init[t.range()]);
            }
        }
        Ok(Self {
            inner,
            layout,
            layers,
            weights,
            fixed,
            keep,
            mask_by,
            seed,
        })
    }

    /// The kept fraction of each layer.
    pub fn keep(&self) -> f64 {
        self.keep
    }

    /// What the mask ranks.
    pub fn mask_by(&self) -> MaskBy {
        self.mask_by
    }

    /// The frozen weights, in score order.
    pub fn frozen_weights(&self) -> &[f32] {
        &self.weights
    }

    /// Number of edges zeroed in a layer of `n` edges: `⌊(1 − keep)·n⌋`.
    pub fn pruned(&self, n: usize) -> usize {
        (((1.0 - self.keep) * n as f64).floor() as usize).min(n)
    }

    /// The 0/1 mask of `scores` (all layers), as `f32`.
    pub fn mask(&self, scores: &[f32]) -> Vec<f32> {
        let mut m = vec![0.0f32; scores.len()];
        for l in &self.layers {
            let r = l.offset..l.offset + l.len;
            layer_mask(
                &scores[r.clone()],
                self.pruned(l.len),
                self.mask_by,
                &mut m[r],
            );
        }
        m
    }

    /// Writes the wrapped model's parameters for a given (possibly fractional) mask: masked weights,
    /// the fixed tensors elsewhere.
    #[cfg(test)]
    fn effective(&self, mask: &[f32], eff: &mut [f32]) {
        eff.copy_from_slice(&self.fixed);
        for l in &self.layers {
            let dst = &mut eff[l.inner_offset..l.inner_offset + l.len];
            let w = &self.weights[l.offset..l.offset + l.len];
            let m = &mask[l.offset..l.offset + l.len];
            for ((d, w), m) in dst.iter_mut().zip(w).zip(m) {
                *d = w * m;
            }
        }
    }

    fn effective_from_scores(&self, scores: &[f32], eff: &mut [f32]) {
        eff.copy_from_slice(&self.fixed);
        for l in &self.layers {
            let r = l.offset..l.offset + l.len;
            let dst = &mut eff[l.inner_offset..l.inner_offset + l.len];
            let (s, w) = (&scores[r.clone()], &self.weights[r]);
            apply_pivot(
                s,
                mask_pivot(s, self.pruned(l.len), self.mask_by),
                self.mask_by,
                Some(w),
                dst,
            );
        }
    }
}

/// The sort key of edge `i` with score `s`: the score's total order, ties broken by index.
#[inline]
fn edge_key(s: f32, i: usize, by: MaskBy) -> u64 {
    ((mask_value(s, by) as u64) << 32) | i as u64
}

/// Bits of the ordered score that pick a bucket in [`layer_mask`]'s histogram (4096 buckets, 16 KiB).
const BUCKET_BITS: u32 = 12;

/// The `pruned`-th lowest edge of a layer (0-based), as (ordered score bits, edge index): edges at or
/// above it are kept. `None` when nothing is pruned.
///
/// Ranks are the total order of [`edge_key`] (score, then edge index), so the mask is exact and
/// deterministic. The pivot is found by a radix select, since this runs once per training step: a
/// histogram of the scores' top bits finds the bucket that holds the pivot, and only that bucket's
/// keys (a few percent of the layer for continuous scores) are partially sorted.
fn mask_pivot(scores: &[f32], pruned: usize, by: MaskBy) -> Option<(u32, usize)> {
    if pruned == 0 {
        return None;
    }
    if pruned >= scores.len() {
        // Above every edge.
        return Some((u32::MAX, usize::MAX));
    }
    let shift = 32 - BUCKET_BITS;
    let mut hist = [0u32; 1 << BUCKET_BITS];
    for &s in scores {
        hist[(mask_value(s, by) >> shift) as usize] += 1;
    }
    let (mut bucket, mut below) = (0usize, 0usize);
    while below + hist[bucket] as usize <= pruned {
        below += hist[bucket] as usize;
        bucket += 1;
    }
    let mut keys: Vec<u64> = Vec::with_capacity(hist[bucket] as usize);
    keys.extend(
        scores
            .iter()
            .enumerate()
            .filter(|&(_, &s)| (mask_value(s, by) >> shift) as usize == bucket)
            .map(|(i, &s)| edge_key(s, i, by)),
    );
    let (_, &mut pivot, _) = keys.select_nth_unstable(pruned - below);
    Some(((pivot >> 32) as u32, pivot as u32 as usize))
}

/// The ordered bits an edge is masked by.
#[inline]
fn mask_value(s: f32, by: MaskBy) -> u32 {
    match by {
        MaskBy::Signed => ordered_bits(s),
        MaskBy::Abs => ordered_bits(s.abs()),
    }
}

/// Writes `kept[i]` (or 1 without `kept`) for every edge at or above `pivot`, 0 below it. Branch-free:
/// half the edges are kept in no predictable pattern.
#[inline]
fn apply_pivot(
    scores: &[f32],
    pivot: Option<(u32, usize)>,
    by: MaskBy,
    kept: Option<&[f32]>,
    out: &mut [f32],
) {
    let (pv, pi) = pivot.unwrap_or((0, 0));
    let bits = |i: usize, s: f32| -> u32 {
        let v = mask_value(s, by);
        let keep = pivot.is_none() | (v > pv) | ((v == pv) & (i >= pi));
        0u32.wrapping_sub(keep as u32)
    };
    match kept {
        None => {
            for (i, (o, &s)) in out.iter_mut().zip(scores).enumerate() {
                *o = f32::from_bits(1.0f32.to_bits() & bits(i, s));
            }
        }
        Some(w) => {
            for (i, ((o, &s), &w)) in out.iter_mut().zip(scores).zip(w).enumerate() {
                *o = f32::from_bits(w.to_bits() & bits(i, s));
            }
        }
    }
}

/// Writes the 0/1 mask of one layer into `out`: the `pruned` lowest-ranked edges get 0, the rest 1.
pub fn layer_mask(scores: &[f32], pruned: usize, by: MaskBy, out: &mut [f32]) {
    debug_assert_eq!(scores.len(), out.len());
    apply_pivot(scores, mask_pivot(scores, pruned, by), by, None, out);
}

impl Model for Supermask {
    fn name(&self) -> String {
        format!(
            "supermask_{}(keep={}, mask_by={}, seed={})",
            self.inner.name(),
            self.keep,
            self.mask_by,
            self.seed
        )
    }

    fn layout(&self) -> &Layout {
        &self.layout
    }

    fn layers(&self) -> Vec<String> {
        self.inner.layers()
    }

    fn input_len(&self) -> usize {
        self.inner.input_len()
    }

    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }

    /// The initial scores `U(−1/√fan_in, 1/√fan_in)` from the model's own seed; `seed` is ignored so
    /// that every party regenerates the same values (see the module documentation).
    fn init_params(&self, _seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5343_4F52_4553_0000); // "SCORES"
        let mut s = vec![0.0f32; self.layout.len()];
        for l in &self.layers {
            let b = 1.0 / (l.fan_in as f32).sqrt();
            for v in &mut s[l.offset..l.offset + l.len] {
                *v = rng.random_range(-b..b);
            }
        }
        s
    }

    fn loss_grad(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        grad: &mut [f32],
        scratch: &mut Scratch,
    ) -> f32 {
        debug_assert_eq!(params.len(), self.layout.len());
        debug_assert_eq!(grad.len(), self.layout.len());
        let n = self.inner.num_params();
        let mut eff = scratch.take_outer(SLOT_EFF, n);
        let mut ig = scratch.take_outer(SLOT_GRAD, n);
        self.effective_from_scores(params, &mut eff);
        let loss = self.inner.loss_grad(&eff, x, y, &mut ig, scratch);
        for l in &self.layers {
            let g = &ig[l.inner_offset..l.inner_offset + l.len];
            let r = l.offset..l.offset + l.len;
            let w = &self.weights[r.clone()];
            let s = &params[r.clone()];
            let out = &mut grad[r];
            match self.mask_by {
                MaskBy::Signed => {
                    for ((o, g), w) in out.iter_mut().zip(g).zip(w) {
                        *o = g * w;
                    }
                }
                MaskBy::Abs => {
                    for (((o, g), w), s) in out.iter_mut().zip(g).zip(w).zip(s) {
                        let sign = if *s > 0.0 {
                            1.0
                        } else if *s < 0.0 {
                            -1.0
                        } else {
                            0.0
                        };
                        *o = g * w * sign;
                    }
                }
            }
        }
        scratch.put_outer(SLOT_EFF, eff);
        scratch.put_outer(SLOT_GRAD, ig);
        loss
    }

    fn evaluate(
        &self,
        params: &[f32],
        x: ArrayView2<'_, f32>,
        y: &[u32],
        scratch: &mut Scratch,
        stats: &mut EvalStats,
    ) {
        let mut eff = scratch.take_outer(SLOT_EFF, self.inner.num_params());
        self.effective_from_scores(params, &mut eff);
        self.inner.evaluate(&eff, x, y, scratch, stats);
        scratch.put_outer(SLOT_EFF, eff);
    }

    /// The wrapped model's figure (the mask selection and the score gradient are O(edges) per step).
    fn train_flops_per_sample(&self) -> f64 {
        self.inner.train_flops_per_sample()
    }

    fn eval_flops_per_sample(&self) -> f64 {
        self.inner.eval_flops_per_sample()
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{Cnn, ImageShape, Mlp};

    fn mlp(mask_by: MaskBy) -> Supermask {
        Supermask::new(Box::new(Mlp::new(6, &[5, 4], 3)), 0.5, mask_by, 7).unwrap()
    }

    fn mean_loss_with_mask(m: &Supermask, mask: &[f32], x: &Array2<f32>, y: &[u32]) -> f64 {
        let mut eff = vec![0.0; m.inner.num_params()];
        m.effective(mask, &mut eff);
        let mut st = EvalStats::new(m.num_classes());
        m.inner
            .evaluate(&eff, x.view(), y, &mut Scratch::default(), &mut st);
        st.loss_sum / y.len() as f64
    }

    fn mean_loss(m: &Supermask, scores: &[f32], x: &Array2<f32>, y: &[u32]) -> f64 {
        let mut st = EvalStats::new(m.num_classes());
        m.evaluate(scores, x.view(), y, &mut Scratch::default(), &mut st);
        st.loss_sum / y.len() as f64
    }

    #[test]
    fn two_nn_supermask_layout_and_mask_sizes() {
        let m = Supermask::new(
            Box::new(Mlp::new(784, &[200, 200], 10)),
            0.5,
            MaskBy::Signed,
            1,
        )
        .unwrap();
        // Bias-free: 784·200 + 200·200 + 200·10 edges.
        assert_eq!(m.num_params(), 198_800);
        let names = crate::testutil::tensor_names(&m);
        assert_eq!(names, ["fc1.scores", "fc2.scores", "fc3.scores"]);
        let s = m.init_params(0);
        assert_eq!(s, m.init_params(12345), "scores come from the model seed");
        let mask = m.mask(&s);
        for t in m.layout().tensors() {
            let kept: f32 = mask[t.range()].iter().sum();
            assert_eq!(kept as usize, t.len() - t.len() / 2);
        }
        // Signed constants: ±√(2/fan_in).
        let c1 = (2.0f64 / 784.0).sqrt() as f32;
        assert!(m.frozen_weights()[..156_800].iter().all(|w| w.abs() == c1));
        let pos = m.frozen_weights().iter().filter(|w| **w > 0.0).count();
        assert!((pos as f64 / 198_800.0 - 0.5).abs() < 0.01);
    }

    #[test]
    fn mask_ties_break_by_index_and_abs_keeps_both_ends() {
        let mut out = vec![0.0; 6];
        layer_mask(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 3, MaskBy::Signed, &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        layer_mask(
            &[-3.0, -2.0, -0.1, 0.1, 2.0, 3.0],
            2,
            MaskBy::Signed,
            &mut out,
        );
        assert_eq!(out, [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
        layer_mask(&[-3.0, -2.0, -0.1, 0.1, 2.0, 3.0], 2, MaskBy::Abs, &mut out);
        assert_eq!(out, [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn radix_select_mask_matches_a_full_sort() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (n, distinct) in [
            (1usize, 0u32),
            (7, 0),
            (1000, 0),
            (20_000, 0),
            (5000, 3),
            (3000, 1),
        ] {
            // distinct = 0: continuous scores; otherwise only that many values (heavy ties), with ±0.
            let scores: Vec<f32> = (0..n)
                .map(|_| match distinct {
                    0 => rng.random_range(-0.05f32..0.05),
                    d => [0.0f32, -0.0, 1.5, -1.5][rng.random_range(0..d.min(4)) as usize],
                })
                .collect();
            for by in [MaskBy::Signed, MaskBy::Abs] {
                for pruned in [0, 1, n / 3, n / 2, n.saturating_sub(1), n] {
                    let mut keys: Vec<u64> = scores
                        .iter()
                        .enumerate()
                        .map(|(i, &s)| edge_key(s, i, by))
                        .collect();
                    keys.sort_unstable();
                    let mut want = vec![1.0f32; n];
                    for &k in &keys[..pruned] {
                        want[k as u32 as usize] = 0.0;
                    }
                    let mut got = vec![f32::NAN; n];
                    layer_mask(&scores, pruned, by, &mut got);
                    assert_eq!(
                        got, want,
                        "n={n} distinct={distinct} {by:?} pruned={pruned}"
                    );
                }
            }
        }
    }

    /// The loss is piecewise constant in the scores; the straight-through gradient equals the derivative
    /// of the loss with respect to the mask entries (× sign(s) for `abs`), checked by central finite
    /// differences on a continuous mask held at the current 0/1 mask.
    fn check_straight_through(m: &Supermask, batch: usize, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = Array2::from_shape_fn((batch, m.input_len()), |_| rng.random_range(-2.0f32..2.0));
        let y: Vec<u32> = (0..batch)
            .map(|_| rng.random_range(0..m.num_classes() as u32))
            .collect();
        let s = m.init_params(0);
        let mut g = vec![f32::NAN; s.len()];
        let loss = m.loss_grad(&s, x.view(), &y, &mut g, &mut Scratch::default());
        assert!(g.iter().all(|v| v.is_finite()));
        let mask = m.mask(&s);
        let l0 = mean_loss_with_mask(m, &mask, &x, &y);
        assert!((l0 - loss as f64).abs() < 1e-5, "{l0} vs {loss}");
        let gmax = g.iter().fold(0.0f32, |a, v| a.max(v.abs())) as f64;
        let floor = 2e-3 * gmax.max(1e-3);
        let mut checked = 0;
        let n = s.len();
        let coords: Vec<usize> = if n <= 300 {
            (0..n).collect()
        } else {
            (0..300).map(|_| rng.random_range(0..n)).collect()
        };
        for &i in &coords {
            let sign = match m.mask_by {
                MaskBy::Signed => 1.0,
                MaskBy::Abs => (s[i] as f64).signum(),
            };
            let at = |eps: f32| {
                let mut mm = mask.clone();
                mm[i] = mask[i] + eps;
                mean_loss_with_mask(m, &mm, &x, &y)
            };
            let eps = 2.5e-3f32;
            let (up, down) = (at(eps), at(-eps));
            let (fwd, bwd) = ((up - l0) / eps as f64, (l0 - down) / eps as f64);
            if (fwd - bwd).abs() > 5e-2 * fwd.abs().max(bwd.abs()).max(floor) {
                continue; // a ReLU kink at the point (e.g. a unit whose incoming edges are all masked)
            }
            let d3 = (up - down) / (2.0 * eps as f64);
            // d(loss)/d(mask_i) already carries the weight: ∂L/∂W_eff,i · w_i.
            let want = d3 * sign;
            let got = g[i] as f64;
            let rel = (want - got).abs() / want.abs().max(got.abs()).max(floor);
            assert!(
                rel < 2e-2,
                "{}: edge {i}: straight-through {got}, finite differences {want}",
                m.name()
            );
            checked += 1;
            // A score change too small to move the edge across the mask threshold does not change the loss.
            let mut s2 = s.clone();
            s2[i] += 1e-7 * s[i].abs().max(1e-30);
            if m.mask(&s2) == mask {
                assert_eq!(mean_loss(m, &s2, &x, &y), mean_loss(m, &s, &x, &y));
            }
        }
        assert!(
            checked * 10 >= coords.len() * 9,
            "{checked} of {} checked",
            coords.len()
        );
    }

    #[test]
    fn straight_through_gradient_matches_finite_differences_on_the_mask() {
        check_straight_through(&mlp(MaskBy::Signed), 5, 1);
        check_straight_through(&mlp(MaskBy::Abs), 5, 2);
        let cnn = Cnn::new(
            ImageShape {
                channels: 1,
                height: 8,
                width: 8,
            },
            [2, 3],
            6,
            3,
        )
        .unwrap();
        let m = Supermask::new(Box::new(cnn), 0.5, MaskBy::Signed, 3).unwrap();
        assert_eq!(
            m.layout()
                .tensors()
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["conv1.scores", "conv2.scores", "fc1.scores", "fc2.scores"]
        );
        check_straight_through(&m, 3, 4);
    }

    /// A layer stack with GroupNorm and a residual projection: only conv and dense weights become
    /// scores, biases are zero and GroupNorm keeps scale 1 and shift 0, and the straight-through
    /// gradient holds through every layer kind.
    #[test]
    fn a_stack_becomes_a_supermask_over_its_conv_and_dense_weights() {
        let layers: crate::SequentialConfig = toml::from_str(
            r#"layers = [
                { conv2d = { out = 4, kernel = 3, padding = 1 } },
                { group_norm = { groups = 2 } },
                "relu",
                { residual = { layers = [ { conv2d = { out = 6, kernel = 3, stride = 2, padding = 1 } }, "relu" ] } },
                { max_pool = { size = 2 } },
                "flatten",
                { dense = { units = 5 } },
                "relu",
                "dense",
            ]"#,
        )
        .unwrap();
        let input = crate::InputSpec {
            features: 2 * 8 * 8,
            num_classes: 3,
            image: Some(ImageShape {
                channels: 2,
                height: 8,
                width: 8,
            }),
        };
        let stack =
            crate::Sequential::new(&layers.resolve().unwrap(), &input, layers.init).unwrap();
        let m = Supermask::new(Box::new(stack), 0.5, MaskBy::Signed, 9).unwrap();
        let names = crate::testutil::tensor_names(&m);
        assert_eq!(
            names,
            [
                "0.scores",
                "3.body.0.scores",
                "3.shortcut.scores",
                "6.scores",
                "8.scores"
            ]
        );
        for t in m.inner.layout().tensors() {
            let fixed = &m.fixed[t.range()];
            if t.name == "1.weight" {
                assert!(fixed.iter().all(|&v| v == 1.0), "GroupNorm scale");
            } else {
                assert!(fixed.iter().all(|&v| v == 0.0), "{}", t.name);
            }
        }
        check_straight_through(&m, 4, 5);
    }

    #[test]
    fn keep_one_is_the_dense_bias_free_model() {
        let m = Supermask::new(Box::new(Mlp::new(6, &[5], 3)), 1.0, MaskBy::Signed, 7).unwrap();
        assert!(m.mask(&m.init_params(0)).iter().all(|&v| v == 1.0));
        assert!(Supermask::new(Box::new(Mlp::new(6, &[5], 3)), 0.0, MaskBy::Signed, 7).is_err());
    }

    #[test]
    fn score_training_reduces_the_loss() {
        let m = Supermask::new(Box::new(Mlp::new(10, &[32], 3)), 0.5, MaskBy::Signed, 5).unwrap();
        let (x, y) = crate::testutil::toy_problem(300, 10, 3, 9);
        let mut s = m.init_params(0);
        let l0 = mean_loss(&m, &s, &x, &y);
        let mut opt = crate::Sgd::new(0.9, 1e-4);
        let mut g = vec![0.0; s.len()];
        let mut sc = Scratch::default();
        for step in 0..200 {
            let a = (step * 10) % 290;
            m.loss_grad(
                &s,
                x.slice(ndarray::s![a..a + 10, ..]),
                &y[a..a + 10],
                &mut g,
                &mut sc,
            );
            opt.step(0.4, &mut s, &g);
        }
        let l1 = mean_loss(&m, &s, &x, &y);
        assert!(l1 < 0.7 * l0, "loss {l0} -> {l1}");
    }
}
