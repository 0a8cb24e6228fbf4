//! `scheme = "shards"`: McMahan's pathological non-IID split.

use fedsim_types::ConfigError;
use fedsim_types::registry::{Kind, Validated};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{PartitionCapabilities, PartitionInput, Partitioners, check_clients, identity};
use crate::util::{check_u32_len, rng_for};
use crate::{DataError, Partition};

/// `[partition] scheme = "shards"`: sort by label, cut into `clients · shards_per_client` shards, give each
/// client `shards_per_client` random shards ([`shards`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardsConfig {
    /// Shards per client (2).
    #[serde(default = "two")]
    pub shards_per_client: usize,
}

fn two() -> usize {
    2
}

impl Default for ShardsConfig {
    fn default() -> Self {
        Self {
            shards_per_client: two(),
        }
    }
}

impl Kind<Partitioners> for ShardsConfig {
    const KIND: &'static str = "shards";
    const SUMMARY: &'static str = "McMahan: sort by label, cut clients × shards_per_client shards, give each client random shards";
    const EXAMPLE: &'static str = "shards_per_client = 2";

    fn capabilities(&self) -> PartitionCapabilities {
        PartitionCapabilities::LABELS
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.shards_per_client == 0 {
            return Err(ConfigError::new(
                "shards_per_client",
                "must be at least 1, got 0",
            ));
        }
        Ok(())
    }

    fn build(&self, input: PartitionInput<'_>, _: Validated) -> Result<Partition, DataError> {
        shards(
            input.labels,
            input.num_clients,
            self.shards_per_client,
            input.seed,
        )
    }
}

/// McMahan's pathological non-IID split: sorts the samples by label (stable, ties by index), cuts the sorted
/// order into `num_clients · shards_per_client` shards of `floor(n / shards)` samples (the first `n mod shards`
/// shards get one more, so every sample is assigned) and gives each client `shards_per_client` shards chosen
/// at random without replacement. With MNIST, 100 clients and 2 shards each, every client gets 2 shards of 300.
pub fn shards(
    labels: &[u32],
    num_clients: usize,
    shards_per_client: usize,
    seed: u64,
) -> Result<Partition, DataError> {
    let n = labels.len();
    check_clients(num_clients)?;
    if shards_per_client == 0 {
        return Err(DataError::Spec(
            "partition.shards_per_client must be at least 1, got 0".into(),
        ));
    }
    check_u32_len(n, "the training set")?;
    let num_shards = num_clients.checked_mul(shards_per_client).filter(|&s| s <= n).ok_or_else(|| {
        DataError::Spec(format!(
            "num_clients = {num_clients} times partition.shards_per_client = {shards_per_client} exceeds the {n} \
             training samples; every shard needs at least one sample"
        ))
    })?;
    let mut sorted = identity(n);
    sorted.sort_by_key(|&i| labels[i as usize]); // stable: ties stay in index order
    let (base, rem) = (n / num_shards, n % num_shards);
    let shard_start = |j: usize| j * base + j.min(rem);
    let mut order: Vec<usize> = (0..num_shards).collect();
    order.shuffle(&mut rng_for(seed, "partition.shards", 0));
    let mut offsets = Vec::with_capacity(num_clients + 1);
    offsets.push(0);
    let mut indices = Vec::with_capacity(n);
    for client in order.chunks_exact(shards_per_client) {
        let mut mine: Vec<usize> = client.to_vec();
        mine.sort_unstable();
        for j in mine {
            indices.extend_from_slice(&sorted[shard_start(j)..shard_start(j + 1)]);
        }
        offsets.push(indices.len());
    }
    Ok(Partition::from_csr(offsets, indices))
}
