//! Building blocks shared by the models: initialisation, softmax cross-entropy, ReLU and bias
//! gradients, and access to input batches.

use ndarray::ArrayView2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{EvalStats, Layout, Scratch};

/// PyTorch's default initialisation for every tensor of `layout`, in layout order: weights and biases
/// `~ U(-1/√fan_in, 1/√fan_in)`, where `fan_in(i)` gives the fan-in of tensor `i`.
pub(crate) fn init_uniform(
    layout: &Layout,
    seed: u64,
    fan_in: impl Fn(usize) -> usize,
) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut params = vec![0.0f32; layout.len()];
    for (i, t) in layout.tensors().iter().enumerate() {
        let bound = 1.0 / (fan_in(i).max(1) as f32).sqrt();
        for w in &mut params[t.range()] {
            *w = rng.random_range(-bound..bound);
        }
    }
    params
}

/// The batch as a row-major slice: borrowed when `x` is already contiguous and row-major, otherwise
/// copied into `buf` (which keeps its allocation for the next call).
pub(crate) fn batch_slice<'a>(x: &'a ArrayView2<'_, f32>, buf: &'a mut Vec<f32>) -> &'a [f32] {
    match x.as_slice() {
        Some(s) => s,
        None => {
            buf.clear();
            buf.extend(x.iter().copied());
            buf
        }
    }
}

/// Scratch slot reserved for copies of non-contiguous input batches (shared by every model).
pub(crate) const SLOT_INPUT: usize = 0;

/// Takes the input-copy buffer out of `scratch` (give it back with [`Scratch::put`] at `SLOT_INPUT`).
pub(crate) fn take_input_buf(scratch: &mut Scratch) -> Vec<f32> {
    scratch.take(SLOT_INPUT, 0)
}

/// Numerically stable softmax cross-entropy on `logits` (`rows × classes`, row-major), in place:
/// each row becomes `scale · (softmax − one_hot(y))`, the gradient of `scale · Σ loss` with respect
/// to the logits. Returns the summed loss.
pub(crate) fn softmax_xent_grad(logits: &mut [f32], classes: usize, y: &[u32], scale: f32) -> f64 {
    debug_assert_eq!(logits.len(), y.len() * classes);
    let mut total = 0.0f64;
    for (row, &label) in logits.chunks_exact_mut(classes).zip(y) {
        let label = label as usize;
        debug_assert!(
            label < classes,
            "label {label} out of range for {classes} classes"
        );
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let z_label = row[label] - max;
        let mut sum = 0.0f32;
        for z in row.iter_mut() {
            *z = (*z - max).exp();
            sum += *z;
        }
        // loss = log Σ exp(z − max) − (z_label − max), exact even when p_label underflows.
        total += (sum as f64).ln() - z_label as f64;
        let inv = scale / sum;
        for z in row.iter_mut() {
            *z *= inv;
        }
        row[label] -= scale;
    }
    total
}

/// Adds the loss (softmax cross-entropy), correct count and per-class counts of `logits`
/// (`rows × classes`) to `stats`. The prediction is the arg-max, ties going to the lowest class.
pub(crate) fn eval_logits(logits: &[f32], classes: usize, y: &[u32], stats: &mut EvalStats) {
    debug_assert_eq!(logits.len(), y.len() * classes);
    if stats.class_count.len() < classes {
        stats.class_count.resize(classes, 0);
        stats.class_correct.resize(classes, 0);
    }
    for (row, &label) in logits.chunks_exact(classes).zip(y) {
        let mut best = 0;
        let mut max = row[0];
        for (c, &z) in row.iter().enumerate().skip(1) {
            if z > max {
                max = z;
                best = c;
            }
        }
        let sum: f32 = row.iter().map(|&z| (z - max).exp()).sum();
        let label = label as usize;
        debug_assert!(
            label < classes,
            "label {label} out of range for {classes} classes"
        );
        // loss = log Σ exp(z − max) − (z_label − max)
        stats.loss_sum += (sum as f64).ln() - (row[label] - max) as f64;
        stats.count += 1;
        stats.class_count[label] += 1;
        if best == label {
            stats.correct += 1;
            stats.class_correct[label] += 1;
        }
    }
}

/// `d[i] = 0` wherever the ReLU output `act[i]` is not positive.
#[inline]
pub(crate) fn relu_backward(d: &mut [f32], act: &[f32]) {
    debug_assert_eq!(d.len(), act.len());
    // A select rather than a branch: the sign pattern is random, and this form vectorises.
    for (g, &a) in d.iter_mut().zip(act) {
        *g = if a > 0.0 { *g } else { 0.0 };
    }
}

/// Column sums of `d` (`rows × cols`): `db = Σ_rows d` (overwritten, or added to when `acc`).
pub(crate) fn col_sums(d: &[f32], cols: usize, db: &mut [f32], acc: bool) {
    debug_assert_eq!(db.len(), cols);
    if !acc {
        db.fill(0.0);
    }
    for row in d.chunks_exact(cols) {
        for (b, &g) in db.iter_mut().zip(row) {
            *b += g;
        }
    }
}

/// Row sums of `d` (`rows × cols`): `db[r] = Σ_cols d[r]` (overwritten, or added to when `acc`).
pub(crate) fn row_sums(d: &[f32], cols: usize, db: &mut [f32], acc: bool) {
    debug_assert_eq!(d.len(), db.len() * cols);
    for (b, row) in db.iter_mut().zip(d.chunks_exact(cols)) {
        // Eight partial sums keep the loop vectorisable and the order fixed.
        let mut part = [0.0f32; 8];
        let mut chunks = row.chunks_exact(8);
        for ch in &mut chunks {
            for (p, &g) in part.iter_mut().zip(ch) {
                *p += g;
            }
        }
        let mut s: f32 = part.iter().sum();
        for &g in chunks.remainder() {
            s += g;
        }
        *b = if acc { *b + s } else { s };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_grad_is_stable_and_sums_to_zero() {
        let mut z = vec![1000.0, 1001.0, 999.0, -5.0, 0.0, 5.0];
        let loss = softmax_xent_grad(&mut z, 3, &[1, 2], 0.5);
        assert!(loss.is_finite());
        for row in z.chunks(3) {
            assert!(row.iter().sum::<f32>().abs() < 1e-6);
        }
        // Loss of the first row: log(1 + e^-1 + e^-2).
        let want0 = (1.0f64 + (-1.0f64).exp() + (-2.0f64).exp()).ln();
        let want1 = (1.0f64 + (-5.0f64).exp() + (-10.0f64).exp()).ln();
        assert!((loss - want0 - want1).abs() < 1e-5);
    }

    #[test]
    fn eval_ties_go_to_lowest_class() {
        let mut stats = EvalStats::new(3);
        eval_logits(&[1.0, 1.0, 0.0, 0.0, 2.0, 2.0], 3, &[0, 2], &mut stats);
        assert_eq!(stats.correct, 1);
        assert_eq!(stats.class_correct, vec![1, 0, 0]);
        assert_eq!(stats.class_count, vec![1, 0, 1]);
        assert_eq!(stats.count, 2);
    }
}
