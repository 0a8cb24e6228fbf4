//! `scheme = "quantity_skew"`: IID labels, log-normal client sizes.

use fedsim_types::ConfigError;
use fedsim_types::config::positive;
use fedsim_types::registry::{Kind, Validated};
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{
    PartitionCapabilities, PartitionInput, Partitioners, check_clients, check_positive,
    cumulative_split, from_perm_with_offsets, identity, softmax_weights,
};
use crate::util::{check_u32_len, rng_for};
use crate::{DataError, Partition};

/// `[partition] scheme = "quantity_skew"`: IID labels, log-normal client sizes with standard deviation
/// `sigma` of the log ([`quantity_skew`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantitySkewConfig {
    /// Standard deviation of log-sizes (positive).
    pub sigma: f64,
}

impl Kind<Partitioners> for QuantitySkewConfig {
    const KIND: &'static str = "quantity_skew";
    const SUMMARY: &'static str = "IID labels, log-normal client sizes";
    const EXAMPLE: &'static str = "sigma = 1.0";

    fn capabilities(&self) -> PartitionCapabilities {
        PartitionCapabilities::LABELS
    }

    fn validate(&self) -> Result<(), ConfigError> {
        positive("sigma", self.sigma)
    }

    fn build(&self, input: PartitionInput<'_>, _: Validated) -> Result<Partition, DataError> {
        quantity_skew(
            input.labels.len(),
            input.num_clients,
            self.sigma,
            input.seed,
        )
    }
}

/// Quantity skew: IID labels (the indices are shuffled) but client sizes proportional to log-normal draws
/// `exp(sigma · z_n)`, `z_n ~ N(0, 1)`, with cumulative rounding. Every sample is assigned; with more clients
/// than samples, or a large `sigma`, some clients get none.
pub fn quantity_skew(
    n: usize,
    num_clients: usize,
    sigma: f64,
    seed: u64,
) -> Result<Partition, DataError> {
    check_clients(num_clients)?;
    check_positive("partition.sigma", sigma)?;
    check_u32_len(n, "the training set")?;
    let mut rng = rng_for(seed, "partition.quantity_skew", 0);
    let logs: Vec<f64> = (0..num_clients)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            sigma * z
        })
        .collect();
    let offsets = cumulative_split(n, &softmax_weights(&logs));
    let mut perm = identity(n);
    perm.shuffle(&mut rng);
    Ok(from_perm_with_offsets(perm, offsets))
}
