//! `scheme = "natural"`: the data set's own split.

use fedsim_types::registry::{Kind, Validated};
use serde::{Deserialize, Serialize};

use super::{PartitionCapabilities, PartitionInput, Partitioners, no_natural_split};
use crate::{DataError, Partition};

/// `[partition] scheme = "natural"`: the data set's own split (synthetic data: one generated data set per
/// client; LEAF: one client per writer). The default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaturalConfig {}

impl Kind<Partitioners> for NaturalConfig {
    const KIND: &'static str = "natural";
    const SUMMARY: &'static str = "the data set's own split (synthetic data: one generated data set per client; LEAF: one client per writer)";

    fn capabilities(&self) -> PartitionCapabilities {
        PartitionCapabilities {
            uses_natural_split: true,
            needs_features: false,
        }
    }

    fn build(&self, input: PartitionInput<'_>, _: Validated) -> Result<Partition, DataError> {
        input.natural.cloned().ok_or_else(no_natural_split)
    }
}
