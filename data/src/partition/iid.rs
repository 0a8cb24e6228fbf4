//! `scheme = "iid"`: shuffle, then equal-size chunks.

use fedsim_types::registry::{Kind, Validated};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{
    PartitionCapabilities, PartitionInput, Partitioners, check_clients_le_samples,
    from_perm_with_offsets, identity,
};
use crate::util::{check_u32_len, rng_for};
use crate::{DataError, Partition};

/// `[partition] scheme = "iid"`: shuffle, then equal-size chunks ([`iid`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IidConfig {}

impl Kind<Partitioners> for IidConfig {
    const KIND: &'static str = "iid";
    const SUMMARY: &'static str = "shuffle, then equal-size chunks";

    fn capabilities(&self) -> PartitionCapabilities {
        PartitionCapabilities::LABELS
    }

    fn build(&self, input: PartitionInput<'_>, _: Validated) -> Result<Partition, DataError> {
        iid(input.labels.len(), input.num_clients, input.seed)
    }
}

/// IID split: shuffles the `n` sample indices and cuts them into `num_clients` chunks of `floor(n / clients)`,
/// the first `n mod clients` clients getting one more. Every sample is assigned. Needs `1 <= num_clients <= n`.
pub fn iid(n: usize, num_clients: usize, seed: u64) -> Result<Partition, DataError> {
    check_clients_le_samples(num_clients, n, "iid")?;
    check_u32_len(n, "the training set")?;
    let mut perm = identity(n);
    perm.shuffle(&mut rng_for(seed, "partition.iid", 0));
    let (base, rem) = (n / num_clients, n % num_clients);
    let offsets = (0..=num_clients).map(|k| k * base + k.min(rem)).collect();
    Ok(from_perm_with_offsets(perm, offsets))
}
