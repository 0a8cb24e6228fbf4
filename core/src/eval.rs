//! Evaluation of a model on a data set, in parallel over fixed-size chunks.
//!
//! Chunks are merged in index order, so the result is bit-identical whatever the thread count.

use fedsim_data::Dataset;
use fedsim_nn::{EvalStats, Model, Scratch};
use ndarray::Array2;
use rayon::prelude::*;

/// Evaluates `params` on the rows `indices` of `data` (all rows when `None`), `chunk` samples at a time.
pub fn evaluate(
    model: &dyn Model,
    params: &[f32],
    data: &Dataset,
    indices: Option<&[u32]>,
    chunk: usize,
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
                        let x = data.x.slice(ndarray::s![s..e, ..]);
                        model.evaluate(params, x, &data.y[s..e], scratch, &mut stats);
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
