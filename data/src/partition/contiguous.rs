//! `scheme = "contiguous"`: consecutive blocks of rows (EF21), in file order or sorted first.

use fedsim_types::registry::{Kind, Validated};
use ndarray::ArrayView2;
use serde::{Deserialize, Serialize};

use super::{
    PartitionCapabilities, PartitionInput, Partitioners, check_clients_le_samples,
    from_perm_with_offsets, identity,
};
use crate::util::check_u32_len;
use crate::{DataError, Dataset, Partition};

/// `[partition] scheme = "contiguous"`: consecutive blocks of `floor(N/clients)` rows, remainder to the last
/// client (EF21), in file order ([`contiguous`]) or sorted first ([`contiguous_by_row_norm`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContiguousConfig {
    /// The order the rows are cut in (`"file"`).
    #[serde(default)]
    pub sort_by: RowOrder,
}

/// The order of rows before a contiguous split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RowOrder {
    /// The file's order. The default.
    #[default]
    File,
    /// Ascending squared Euclidean norm of the feature row, ties in file order (a stable sort): gives
    /// the heterogeneous smoothness constants of EF21's "sorted" experiments (algorithms.md §4.9).
    RowNorm,
}

impl Kind<Partitioners> for ContiguousConfig {
    const KIND: &'static str = "contiguous";
    const SUMMARY: &'static str = "consecutive blocks of floor(N/clients) rows, remainder to the last client (EF21); in file order or sorted by row norm";
    const EXAMPLE: &'static str = "sort_by = \"file\"";

    fn capabilities(&self) -> PartitionCapabilities {
        PartitionCapabilities {
            uses_natural_split: false,
            needs_features: self.sort_by == RowOrder::RowNorm,
        }
    }

    fn build(&self, input: PartitionInput<'_>, _: Validated) -> Result<Partition, DataError> {
        match (self.sort_by, input.features) {
            (RowOrder::File, _) => contiguous(input.labels.len(), input.num_clients),
            (RowOrder::RowNorm, Some(x)) => by_row_norm(x, input.labels.len(), input.num_clients),
            (RowOrder::RowNorm, None) => Err(DataError::Spec(
                "partition.sort_by = \"row_norm\" needs the features, not only the labels".into(),
            )),
        }
    }
}

/// EF21's sequential split (algorithms.md §4.8): client `k` gets rows `k·b .. (k+1)·b` in file order with
/// `b = floor(n / clients)`, the last client also gets the remainder. No shuffling; every sample is assigned.
/// Needs `1 <= num_clients <= n`.
pub fn contiguous(n: usize, num_clients: usize) -> Result<Partition, DataError> {
    Ok(from_perm_with_offsets(
        identity(n),
        contiguous_offsets(n, num_clients)?,
    ))
}

/// The block boundaries of [`contiguous`].
fn contiguous_offsets(n: usize, num_clients: usize) -> Result<Vec<usize>, DataError> {
    check_clients_le_samples(num_clients, n, "contiguous")?;
    check_u32_len(n, "the training set")?;
    let b = n / num_clients;
    let mut offsets: Vec<usize> = (0..num_clients).map(|k| k * b).collect();
    offsets.push(n);
    Ok(offsets)
}

/// [`contiguous`] after a stable sort of the rows by squared norm (f64 accumulation), ascending
/// (`sort_by = "row_norm"`).
pub fn contiguous_by_row_norm(train: &Dataset, num_clients: usize) -> Result<Partition, DataError> {
    by_row_norm(train.x.view(), train.len(), num_clients)
}

/// [`contiguous_by_row_norm`] of the `n` rows of `x`.
fn by_row_norm(
    x: ArrayView2<'_, f32>,
    n: usize,
    num_clients: usize,
) -> Result<Partition, DataError> {
    let offsets = contiguous_offsets(n, num_clients)?;
    let norms: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| v as f64 * v as f64).sum())
        .collect();
    let mut order = identity(n);
    order.sort_by(|&a, &b| norms[a as usize].total_cmp(&norms[b as usize]));
    Ok(from_perm_with_offsets(order, offsets))
}
