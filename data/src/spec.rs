//! The scenario's `[data]` and `[partition]` sections.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{DataError, FederatedData};

/// Where the samples come from, selected by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// LEAF / FedProx Synthetic(alpha, beta): every client has its own softmax model and input distribution.
    /// Built in; needs no files. Its natural partition is one generated data set per client.
    Synthetic {
        /// Spread of the client models (alpha).
        #[serde(default = "one")]
        alpha: f64,
        /// Spread of the client input distributions (beta).
        #[serde(default = "one")]
        beta: f64,
        /// Features per sample.
        #[serde(default = "default_synthetic_features")]
        features: usize,
        /// Number of classes.
        #[serde(default = "default_synthetic_classes")]
        classes: usize,
        /// Mean number of training samples per client (sizes are log-normal around it).
        #[serde(default = "default_synthetic_samples")]
        samples_per_client: usize,
        /// Size of the pooled test set, drawn from all clients' distributions.
        #[serde(default = "default_synthetic_test")]
        test_samples: usize,
    },
    /// MNIST in IDX format (`train-images-idx3-ubyte[.gz]` and friends) in `dir`.
    Mnist {
        /// Directory holding the four IDX files, gzip-compressed or raw.
        dir: PathBuf,
    },
    /// Fashion-MNIST in IDX format, same file names as MNIST.
    FashionMnist {
        /// Directory holding the four IDX files, gzip-compressed or raw.
        dir: PathBuf,
    },
    /// LIBSVM text format (`label idx:value ...`, 1-based indices), optionally gzip-compressed.
    Libsvm {
        /// Training file.
        path: PathBuf,
        /// Test file; without it the test set is the last `test_fraction` of the training file.
        #[serde(default)]
        test_path: Option<PathBuf>,
        /// Fraction held out for testing when there is no test file.
        #[serde(default)]
        test_fraction: f64,
        /// Number of features; by default the largest index seen.
        #[serde(default)]
        features: Option<usize>,
    },
    /// CSV with a header row and a label column; every other column is a numeric feature.
    Csv {
        /// Training file.
        path: PathBuf,
        /// Name of the label column (integer class labels).
        #[serde(default = "default_label_column")]
        label_column: String,
        /// Test file; without it the test set is the last `test_fraction` of the training file.
        #[serde(default)]
        test_path: Option<PathBuf>,
        /// Fraction held out for testing when there is no test file.
        #[serde(default)]
        test_fraction: f64,
    },
}

fn one() -> f64 {
    1.0
}
fn default_synthetic_features() -> usize {
    60
}
fn default_synthetic_classes() -> usize {
    10
}
fn default_synthetic_samples() -> usize {
    100
}
fn default_synthetic_test() -> usize {
    2000
}
fn default_label_column() -> String {
    "label".into()
}

/// How training samples are split among clients, selected by `scheme`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum PartitionSpec {
    /// The data set's own split (synthetic data: one generated data set per client). The default.
    #[default]
    Natural,
    /// Shuffle, then equal-size chunks.
    Iid,
    /// McMahan's pathological split: sort by label, cut into `clients · shards_per_client` shards, give each
    /// client `shards_per_client` random shards.
    Shards {
        /// Shards per client.
        #[serde(default = "two")]
        shards_per_client: usize,
    },
    /// Per-client label prior `q_n ~ Dir(alpha·1_C)`; each class is split among clients in proportion to
    /// `q_{n,c}` (FedAU's scheme). Client sizes vary.
    DirichletClient {
        /// Concentration alpha.
        alpha: f64,
    },
    /// Per-class split across clients: for every class, proportions `~ Dir(beta·1_N)` (FRL's scheme).
    DirichletClass {
        /// Concentration beta.
        beta: f64,
    },
    /// IID labels, log-normal client sizes with standard deviation `sigma` of the log.
    QuantitySkew {
        /// Standard deviation of log-sizes.
        sigma: f64,
    },
    /// Consecutive blocks of `floor(N/clients)` rows, remainder to the last client (EF21), in file order
    /// or sorted first.
    Contiguous {
        /// The order the rows are cut in.
        #[serde(default)]
        sort_by: RowOrder,
    },
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

fn two() -> usize {
    2
}

/// Loads the data and splits the training samples among `num_clients` clients, deterministically from `seed`.
pub fn load_federated(
    data: &DataSpec,
    partition: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData, DataError> {
    crate::load::load_federated(data, partition, num_clients, seed)
}
