//! Evaluation of a model on a data set, in parallel over fixed-size chunks.
//!
//! Chunks are merged in index order, so the result is bit-identical whatever the thread count.

use fedsim_data::Dataset;
use fedsim_nn::{EvalStats, Model, Scratch};
use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The scenario's `[eval]` section: how often and on what the global model is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many rounds (the last round is always evaluated).
    #[serde(default = "one")]
    pub every: u64,
    /// Also compute the global training loss on the union of all clients' data.
    #[serde(default = "yes")]
    pub train_loss: bool,
    /// Cap on the samples used for the training loss (0 = all); a fixed, seed-derived subset.
    #[serde(default)]
    pub train_loss_samples: usize,
    /// Target test accuracies (in [0, 1]); `summary.json` reports the first round reaching each.
    #[serde(default)]
    pub targets: Vec<f64>,
    /// End the run at the first round by which every target has been reached (`rounds` stays the
    /// cap), for rounds-to-accuracy experiments.
    #[serde(default)]
    pub stop_at_targets: bool,
    /// Samples per evaluation chunk (the unit of parallel work; does not change results).
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
    /// Also compute `grad_norm_sq`, the squared norm of the full objective's gradient
    /// `∇f = (1/n) Σ_i ∇f_i` (mean of the clients' local mean gradients; in f64 where the model can).
    #[serde(default)]
    pub grad_norm: bool,
    /// Evaluate the global model on the scenario's test set (and the training loss) at this side:
    /// the default. `false` leaves evaluation to the clients (`federated`), so a coordinator needs no
    /// data set. Left out of the resolved scenario when `true` (scenario hashes stay as they were).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub central: bool,
    /// Federated (client-side) evaluation on the clients' local test sets; off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated: Option<crate::fedeval::FederatedEvalConfig>,
}

fn is_true(v: &bool) -> bool {
    *v
}

fn one() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn default_eval_batch() -> usize {
    500
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 1,
            train_loss: true,
            train_loss_samples: 0,
            targets: Vec::new(),
            stop_at_targets: false,
            batch_size: default_eval_batch(),
            grad_norm: false,
            central: true,
            federated: None,
        }
    }
}

/// Evaluates `params` on the rows `indices` of `data` (all rows when `None`), `chunk` samples at a time.
pub fn evaluate(
    model: &dyn Model,
    params: &[f32],
    data: &Dataset,
    indices: Option<&[u32]>,
    chunk: usize,
) -> EvalStats {
    evaluate_streaming(model, params, data, indices, chunk, false)
}

/// [`evaluate`], and with `release_pages` every chunk's features, when they are mapped from the
/// decoded-data cache, are mapped in one call before it is evaluated and leave the process's resident
/// memory after ([`Dataset::load_pages`], [`Dataset::release_pages`]): a process that only evaluates on
/// a data set, such as the coordinator, then holds a few chunks of it at a time instead of all of it.
/// The result is the same either way. The calls are made by the evaluating threads, in parallel: the
/// kernel's page-table work costs about as much as copying the bytes would (measured: mapping whole
/// 16 MiB blocks from one thread between parallel passes was slower).
pub fn evaluate_streaming(
    model: &dyn Model,
    params: &[f32],
    data: &Dataset,
    indices: Option<&[u32]>,
    chunk: usize,
    release_pages: bool,
) -> EvalStats {
    let n = indices.map_or(data.len(), <[u32]>::len);
    let chunk = chunk.max(1);
    let starts: Vec<usize> = (0..n).step_by(chunk).collect();
    let parts: Vec<EvalStats> = starts
        .par_iter()
        .map_init(
            || {
                (
                    Scratch::default(),
                    Array2::<f32>::zeros((0, 0)),
                    Vec::<u32>::new(),
                )
            },
            |(scratch, xbuf, ybuf), &s| {
                let e = (s + chunk).min(n);
                let mut stats = EvalStats::new(data.num_classes);
                match indices {
                    None => {
                        if release_pages {
                            data.load_pages(s..e);
                        }
                        let x = data.x.slice(ndarray::s![s..e, ..]);
                        model.evaluate(params, x, &data.y[s..e], scratch, &mut stats);
                        if release_pages {
                            data.release_pages(s..e);
                        }
                    }
                    Some(ix) => {
                        if xbuf.dim() != (e - s, data.features()) {
                            *xbuf = Array2::zeros((e - s, data.features()));
                        }
                        ybuf.clear();
                        for (row, &i) in ix[s..e].iter().enumerate() {
                            xbuf.row_mut(row).assign(&data.x.row(i as usize));
                            ybuf.push(data.y[i as usize]);
                        }
                        model.evaluate(params, xbuf.view(), ybuf, scratch, &mut stats);
                        if release_pages {
                            // The rows read lie between the chunk's smallest and largest index.
                            let rows = ix[s..e].iter().map(|&i| i as usize);
                            let (lo, hi) = (rows.clone().min(), rows.max());
                            if let (Some(lo), Some(hi)) = (lo, hi) {
                                data.release_pages(lo..hi + 1);
                            }
                        }
                    }
                }
                stats
            },
        )
        .collect();
    let mut total = EvalStats::new(data.num_classes);
    for p in &parts {
        total.merge(p);
    }
    total
}

/// `||∇f(x)||²` for `f = (1/n) Σ_i f_i` over the clients that hold data, each `f_i` the mean loss of
/// client i's samples. Computed in f64 when the model supports it. Clients are processed in parallel
/// and summed in client order (deterministic).
pub fn full_gradient_norm_sq(
    model: &dyn Model,
    params: &[f32],
    data: &fedsim_data::FederatedData,
) -> f64 {
    let p64: Vec<f64> = params.iter().map(|&v| v as f64).collect();
    let d = params.len();
    let clients: Vec<usize> = (0..data.partition.num_clients())
        .filter(|&k| data.partition.client_len(k) > 0)
        .collect();
    let grads: Vec<Vec<f64>> = clients
        .par_iter()
        .map_init(Scratch::default, |scratch, &k| {
            let ix = data.partition.client(k);
            let x = Array2::from_shape_fn((ix.len(), data.train.features()), |(r, c)| {
                data.train.x[[ix[r] as usize, c]]
            });
            let y: Vec<u32> = ix.iter().map(|&i| data.train.y[i as usize]).collect();
            let mut g64 = vec![0.0f64; d];
            if model.loss_grad_f64(&p64, x.view(), &y, &mut g64).is_none() {
                let mut g32 = vec![0.0f32; d];
                model.loss_grad(params, x.view(), &y, &mut g32, scratch);
                for (a, b) in g64.iter_mut().zip(&g32) {
                    *a = *b as f64;
                }
            }
            g64
        })
        .collect();
    if grads.is_empty() {
        return 0.0;
    }
    let mut mean = vec![0.0f64; d];
    for g in &grads {
        for (m, v) in mean.iter_mut().zip(g) {
            *m += v;
        }
    }
    let n = grads.len() as f64;
    mean.iter().map(|m| (m / n) * (m / n)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsim_data::Dataset;
    use fedsim_nn::Mlp;

    /// A deterministic pseudo-random data set (no RNG dependency needed).
    fn data(n: usize, f: usize, k: usize) -> Dataset {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32
        };
        let x = Array2::from_shape_fn((n, f), |_| next());
        let y = (0..n).map(|i| (i * 7 % k) as u32).collect();
        Dataset {
            x: x.into(),
            y,
            num_classes: k,
            image: None,
        }
    }

    fn on_threads(threads: usize, f: impl FnOnce() -> EvalStats + Send) -> EvalStats {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap_or_else(|e| panic!("pool: {e}"))
            .install(f)
    }

    #[test]
    fn evaluation_is_bit_identical_across_thread_counts() {
        let model = Mlp::new(30, &[16, 12], 5);
        let params = model.init_params(3);
        let d = data(1_234, 30, 5);
        let ix: Vec<u32> = (0..d.len() as u32).filter(|i| i % 3 != 1).collect();
        for (indices, chunk) in [(None, 100), (None, 7), (Some(ix.as_slice()), 64)] {
            let one = on_threads(1, || evaluate(&model, &params, &d, indices, chunk));
            let two = on_threads(2, || evaluate(&model, &params, &d, indices, chunk));
            let four = on_threads(4, || evaluate(&model, &params, &d, indices, chunk));
            assert_eq!(one.loss_sum.to_bits(), two.loss_sum.to_bits());
            assert_eq!(one, two);
            assert_eq!(one, four);
            assert_eq!(one.count as usize, indices.map_or(d.len(), <[u32]>::len));
            let streamed = evaluate_streaming(&model, &params, &d, indices, chunk, true);
            assert_eq!(one, streamed);
        }
    }
}
