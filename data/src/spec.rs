//! The scenario's `[data]` and `[partition]` sections.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::partition::{PartitionSpec, RowOrder};
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

/// Loads the data and splits the training samples among `num_clients` clients, deterministically from `seed`.
pub fn load_federated(
    data: &DataSpec,
    partition: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData, DataError> {
    crate::load::load_federated(data, partition, num_clients, seed)
}

/// The share of the clients `clients` (partition indices; any order, repeats ignored) of
/// [`load_federated`]`(data, partition, num_clients, seed)`: the same partition, but only those clients'
/// training samples are kept (no test set). MNIST and Fashion-MNIST, with a scheme that splits from the
/// labels alone, are read without decoding the other images into memory; other data sets are loaded
/// whole, then copied out and dropped.
pub fn load_hosted(
    data: &DataSpec,
    partition: &PartitionSpec,
    num_clients: usize,
    seed: u64,
    clients: &[usize],
) -> Result<crate::HostedPartitions, DataError> {
    crate::load::load_hosted(data, partition, num_clients, seed, clients)
}
