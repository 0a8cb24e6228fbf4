//! `normalize = "per_channel"`: standardising image channels with the training set's statistics.
//!
//! The means and standard deviations are computed once over the training set in `f64` (population
//! standard deviation, as `numpy.std`), then `x ← (x − mean_c) / std_c` is applied to every value of the
//! training and test sets, also in `f64` and rounded once to `f32`. The sums run over fixed blocks of
//! rows combined in block order, so the statistics (and therefore every normalised value) are the same
//! whatever the number of threads: the simulator and every client process compute identical data.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{DataError, Dataset};

/// Rows per block of the statistics sums.
const BLOCK_ROWS: usize = 256;

/// Per-channel statistics of a training set, as used by `normalize = "per_channel"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChannelStats {
    /// Mean of every channel over all training pixels.
    pub mean: Vec<f64>,
    /// Population standard deviation of every channel over all training pixels. A channel with a
    /// standard deviation of 0 (constant) is only shifted, not divided.
    pub std: Vec<f64>,
}

impl ChannelStats {
    /// The statistics of the rows of `x`, each holding `channels` channel-major planes of equal size.
    ///
    /// Errors: [`DataError::Spec`] when the rows are empty or their length is not a multiple of `channels`,
    /// or there are no rows.
    pub fn compute(x: &ndarray::ArrayRef2<f32>, channels: usize) -> Result<Self, DataError> {
        let (rows, len) = x.dim();
        if channels == 0 || len == 0 || !len.is_multiple_of(channels) {
            return Err(DataError::Spec(format!(
                "per-channel normalisation: rows of {len} values do not split into {channels} channels"
            )));
        }
        if rows == 0 {
            return Err(DataError::Spec(
                "per-channel normalisation needs training samples; the training set is empty"
                    .into(),
            ));
        }
        let plane = len / channels;
        let data = x.as_slice().ok_or_else(|| {
            DataError::Spec("internal error: feature matrix not contiguous".into())
        })?;
        // Per block: (sum, sum of squares) of every channel, each block summed in row order.
        let blocks: Vec<Vec<(f64, f64)>> = data
            .par_chunks(BLOCK_ROWS * len)
            .map(|block| {
                let mut acc = vec![(0.0f64, 0.0f64); channels];
                for row in block.chunks_exact(len) {
                    for (c, values) in row.chunks_exact(plane).enumerate() {
                        let (mut s, mut q) = (0.0f64, 0.0f64);
                        for &v in values {
                            let v = f64::from(v);
                            s += v;
                            q += v * v;
                        }
                        acc[c].0 += s;
                        acc[c].1 += q;
                    }
                }
                acc
            })
            .collect();
        let count = (rows * plane) as f64;
        let mut mean = Vec::with_capacity(channels);
        let mut std = Vec::with_capacity(channels);
        for c in 0..channels {
            let (s, q) = blocks
                .iter()
                .fold((0.0, 0.0), |(s, q), b| (s + b[c].0, q + b[c].1));
            let m = s / count;
            mean.push(m);
            // E[x²] − E[x]² can dip below 0 by rounding for a constant channel.
            std.push((q / count - m * m).max(0.0).sqrt());
        }
        Ok(Self { mean, std })
    }

    /// Standardises the rows of `data` in place (see the module documentation).
    pub fn apply(&self, data: &mut Dataset) -> Result<(), DataError> {
        let channels = self.mean.len();
        let len = data.features();
        if channels == 0 || !len.is_multiple_of(channels) {
            return Err(DataError::Spec(format!(
                "per-channel normalisation: rows of {len} values do not split into {channels} channels"
            )));
        }
        let plane = len / channels;
        let scale: Vec<f64> = self
            .std
            .iter()
            .map(|&s| if s > 0.0 { 1.0 / s } else { 1.0 })
            .collect();
        let Some(values) = data.x.as_slice_mut() else {
            return Err(DataError::Spec(
                "internal error: feature matrix not contiguous".into(),
            ));
        };
        if len == 0 {
            return Ok(());
        }
        values.par_chunks_mut(len).for_each(|row| {
            for (c, plane_values) in row.chunks_exact_mut(plane).enumerate() {
                let (m, k) = (self.mean[c], scale[c]);
                for v in plane_values {
                    *v = ((f64::from(*v) - m) * k) as f32;
                }
            }
        });
        Ok(())
    }
}

/// Applies `normalize = "per_channel"` to an image data set: statistics from `train`, applied to both.
///
/// Errors: [`DataError::Spec`] when the data set has no image shape (nothing says where the channels
/// are) or the training set is empty.
pub(crate) fn per_channel(
    train: &mut Dataset,
    test: &mut Dataset,
) -> Result<ChannelStats, DataError> {
    let Some(shape) = train.image else {
        return Err(DataError::Spec(
            "data.normalize = \"per_channel\" needs image data (rows with channels); this data set has \
             plain feature rows (for LEAF, set data.shape)"
                .into(),
        ));
    };
    let stats = ChannelStats::compute(&train.x, shape.channels)?;
    stats.apply(train)?;
    stats.apply(test)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use fedsim_types::ImageShape;
    use ndarray::Array2;

    use super::*;

    fn images(n: usize, f: impl Fn(usize, usize, usize) -> f32) -> Dataset {
        Dataset {
            x: Array2::from_shape_fn((n, 2 * 4), |(i, j)| f(i, j / 4, j % 4)).into(),
            y: vec![0; n],
            num_classes: 1,
            image: Some(ImageShape {
                channels: 2,
                height: 2,
                width: 2,
            }),
        }
    }

    #[test]
    fn standardises_each_channel_with_training_statistics() {
        // Channel 0 takes the values 0..n*4 (mean (4n-1)/2), channel 1 is 0.5 + (p mod 2) / 10.
        let n = 1000;
        let f = |i: usize, c: usize, p: usize| {
            if c == 0 {
                (i * 4 + p) as f32 / 4000.0
            } else {
                0.5 + (p % 2) as f32 / 10.0
            }
        };
        let mut train = images(n, f);
        let mut test = images(3, |_, c, _| if c == 0 { 0.0 } else { 0.55 });
        let stats = per_channel(&mut train, &mut test).unwrap();
        let want_mean0 = (0..4000).map(|v| f64::from(v as f32 / 4000.0)).sum::<f64>() / 4000.0;
        assert!((stats.mean[0] - want_mean0).abs() < 1e-12, "{stats:?}");
        assert!((stats.mean[1] - 0.55).abs() < 1e-7, "{stats:?}");
        assert!((stats.std[1] - 0.05).abs() < 1e-7, "{stats:?}");
        // After normalisation every training channel has mean 0 and std 1.
        let after = ChannelStats::compute(&train.x, 2).unwrap();
        for c in 0..2 {
            assert!(after.mean[c].abs() < 1e-6, "{after:?}");
            assert!((after.std[c] - 1.0).abs() < 1e-6, "{after:?}");
        }
        // The test set uses the training statistics.
        assert!((f64::from(test.x[[0, 0]]) + stats.mean[0] / stats.std[0]).abs() < 1e-6);
        assert!(test.x[[0, 4]].abs() < 1e-5);
    }

    #[test]
    fn constant_channel_is_only_shifted_and_plain_rows_are_refused() {
        let mut train = images(5, |_, c, _| if c == 0 { 0.25 } else { 0.5 });
        let mut test = images(1, |_, _, _| 1.0);
        let stats = per_channel(&mut train, &mut test).unwrap();
        assert_eq!(stats.std, vec![0.0, 0.0]);
        assert!(train.x.iter().all(|&v| v == 0.0));
        assert_eq!(test.x[[0, 0]], 0.75);
        let mut plain = Dataset {
            image: None,
            ..images(2, |_, _, _| 0.0)
        };
        let mut t = plain.clone();
        let e = per_channel(&mut plain, &mut t).unwrap_err().to_string();
        assert!(e.contains("per_channel") && e.contains("image"), "{e}");
        let mut empty = images(0, |_, _, _| 0.0);
        let mut t = empty.clone();
        assert!(per_channel(&mut empty, &mut t).is_err());
    }

    #[test]
    fn statistics_do_not_depend_on_the_thread_count() {
        let train = images(3000, |i, c, p| ((i * 7 + c * 3 + p) % 255) as f32 / 255.0);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| ChannelStats::compute(&train.x, 2).unwrap());
        let many = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap()
            .install(|| ChannelStats::compute(&train.x, 2).unwrap());
        assert_eq!(one, many);
    }
}
