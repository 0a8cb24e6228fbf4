//! `scheme = "dirichlet_client"` and `"dirichlet_class"`: label skew from Dirichlet draws.

use fedsim_types::ConfigError;
use fedsim_types::config::positive;
use fedsim_types::registry::{Kind, Validated};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{
    PartitionCapabilities, PartitionInput, Partitioners, check_clients, check_labels,
    cumulative_split, dirichlet_gamma, dirichlet_log_weights, softmax_weights,
};
use crate::util::{check_u32_len, rng_for};
use crate::{DataError, Partition};

/// `[partition] scheme = "dirichlet_client"`: per-client label prior `q_n ~ Dir(alpha·1_C)`; each class is
/// split among clients in proportion to `q_{n,c}` (FedAU's scheme, [`dirichlet_client`]). Client sizes vary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirichletClientConfig {
    /// Concentration alpha (positive).
    pub alpha: f64,
}

impl Kind<Partitioners> for DirichletClientConfig {
    const KIND: &'static str = "dirichlet_client";
    const SUMMARY: &'static str = "per-client label prior q_n ~ Dir(alpha); each class split among clients in proportion to q_{n,c} (FedAU)";
    const EXAMPLE: &'static str = "alpha = 0.5";

    fn capabilities(&self) -> PartitionCapabilities {
        PartitionCapabilities::LABELS
    }

    fn validate(&self) -> Result<(), ConfigError> {
        positive("alpha", self.alpha)
    }

    fn build(&self, input: PartitionInput<'_>, _: Validated) -> Result<Partition, DataError> {
        dirichlet_client(
            input.labels,
            input.num_classes,
            input.num_clients,
            self.alpha,
            input.seed,
        )
    }
}

/// `[partition] scheme = "dirichlet_class"`: per-class split across clients, for every class proportions
/// `~ Dir(beta·1_N)` (FRL's scheme, [`dirichlet_class`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirichletClassConfig {
    /// Concentration beta (positive).
    pub beta: f64,
}

impl Kind<Partitioners> for DirichletClassConfig {
    const KIND: &'static str = "dirichlet_class";
    const SUMMARY: &'static str = "per-class proportions ~ Dir(beta) over clients (FRL)";
    const EXAMPLE: &'static str = "beta = 0.5";

    fn capabilities(&self) -> PartitionCapabilities {
        PartitionCapabilities::LABELS
    }

    fn validate(&self) -> Result<(), ConfigError> {
        positive("beta", self.beta)
    }

    fn build(&self, input: PartitionInput<'_>, _: Validated) -> Result<Partition, DataError> {
        dirichlet_class(
            input.labels,
            input.num_classes,
            input.num_clients,
            self.beta,
            input.seed,
        )
    }
}

/// Indices of each class, in index order.
fn class_indices(labels: &[u32], num_classes: usize) -> Vec<Vec<u32>> {
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l as usize].push(i as u32);
    }
    by_class
}

/// FedAU's label-skew split (algorithms.md §2.6): every client draws a label prior `q_n ~ Dir(alpha·1_C)`;
/// then the (shuffled) indices of each class `c` are cut contiguously among the clients in proportion to
/// `q_{n,c} / Σ_m q_{m,c}` with cumulative rounding. Every sample is assigned; sizes vary and some clients may
/// get none. Small `alpha` (e.g. 0.1) gives clients dominated by one or two classes.
pub fn dirichlet_client(
    labels: &[u32],
    num_classes: usize,
    num_clients: usize,
    alpha: f64,
    seed: u64,
) -> Result<Partition, DataError> {
    check_clients(num_clients)?;
    let gamma = dirichlet_gamma("partition.alpha", alpha)?;
    check_labels(labels, num_classes)?;
    check_u32_len(labels.len(), "the training set")?;
    let mut rng = rng_for(seed, "partition.dirichlet_client", 0);
    let c = num_classes;
    // log q_{n,c}, client-major.
    let mut logq = Vec::with_capacity(num_clients * c);
    for _ in 0..num_clients {
        let row = dirichlet_log_weights(alpha, &gamma, c, &mut rng);
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|&v| (v - m).exp()).sum::<f64>().ln();
        logq.extend(row.into_iter().map(|v| v - lse));
    }
    let mut lists = vec![Vec::new(); num_clients];
    let mut column = vec![0f64; num_clients];
    for (class, mut idx) in class_indices(labels, c).into_iter().enumerate() {
        idx.shuffle(&mut rng);
        for (n, v) in column.iter_mut().enumerate() {
            *v = logq[n * c + class];
        }
        let bounds = cumulative_split(idx.len(), &softmax_weights(&column));
        for (n, list) in lists.iter_mut().enumerate() {
            list.extend_from_slice(&idx[bounds[n]..bounds[n + 1]]);
        }
    }
    Ok(Partition::from_lists(lists))
}

/// FRL's per-class split (algorithms.md §5.6): for every class, proportions over the clients are drawn from
/// `Dir(beta·1_N)` and the class's (shuffled) indices are cut contiguously among the clients with cumulative
/// rounding. Every sample is assigned; some clients may get few or no samples.
pub fn dirichlet_class(
    labels: &[u32],
    num_classes: usize,
    num_clients: usize,
    beta: f64,
    seed: u64,
) -> Result<Partition, DataError> {
    check_clients(num_clients)?;
    let gamma = dirichlet_gamma("partition.beta", beta)?;
    check_labels(labels, num_classes)?;
    check_u32_len(labels.len(), "the training set")?;
    let mut rng = rng_for(seed, "partition.dirichlet_class", 0);
    let mut lists = vec![Vec::new(); num_clients];
    for mut idx in class_indices(labels, num_classes) {
        idx.shuffle(&mut rng);
        let w = softmax_weights(&dirichlet_log_weights(beta, &gamma, num_clients, &mut rng));
        let bounds = cumulative_split(idx.len(), &w);
        for (n, list) in lists.iter_mut().enumerate() {
            list.extend_from_slice(&idx[bounds[n]..bounds[n + 1]]);
        }
    }
    Ok(Partition::from_lists(lists))
}
