//! Data sets, file-format readers and partitioners.
//!
//! A [`Dataset`] is a dense row-major feature matrix with integer labels. A [`Partition`] assigns sample
//! indices to clients. [`DataSpec`] and [`PartitionSpec`] are the scenario's `[data]` and `[partition]`
//! sections; [`load_federated`] turns them into a [`FederatedData`].
//!
//! The pieces can also be used directly: the readers [`idx`] (MNIST / Fashion-MNIST), [`libsvm`] and [`csv`]
//! (gzip or plain, detected from the content), [`cifar`] (CIFAR-10/100 binary), [`image_folder`]
//! (torchvision's ImageFolder layout, from a directory or a `.tar` / `.tar.gz` archive), [`svhn`] (MATLAB v5
//! files), [`leaf`] (LEAF JSON, e.g. FEMNIST), the per-channel standardisation [`normalize`], the LEAF / FedProx
//! generator [`synthetic`], and the partitioners in [`partition`](mod@partition). Everything random is deterministic from a `u64` seed. Malformed input gives
//! [`DataError::Format`] naming the file and the position; no reader panics on bad input.
//!
//! Scenario paths are relative to the data root ([`root`]); [`catalog`] lists the data sets
//! `fedsim data fetch` downloads.

mod cache;
pub mod catalog;
pub mod cifar;
pub mod csv;
pub mod dataset;
mod hosted;
pub mod idx;
pub mod image_folder;
pub mod leaf;
pub mod libsvm;
mod load;
mod matv5;
pub mod normalize;
pub mod partition;
mod raw;
pub mod root;
mod sources;
pub mod spec;
pub mod svhn;
pub mod synthetic;
mod util;

pub use cache::{CacheFolder, folders as decoded_cache_folders};
pub use cifar::{CifarKind, read_cifar_dir};
pub use csv::{read_csv, read_csv_pair};
pub use dataset::{Dataset, FederatedData, Partition};
pub use hosted::HostedPartitions;
pub use idx::{read_idx_images, read_idx_labels, read_idx_pair, read_mnist_dir};
pub use image_folder::{ImageFolder, read_image_folder};
pub use leaf::{LeafData, LeafOptions, read_leaf};
pub use libsvm::{read_libsvm, read_libsvm_pair};
pub use normalize::ChannelStats;
pub use partition::{
    PartitionCapabilities, PartitionInput, PartitionSpec, PartitionSpecExt, Partitioners, RowOrder,
    partition, partition_labels,
};
pub use root::{DATA_ENV, DataRoot, RootSource};
pub use spec::{Cifar100Labels, DataSpec, Normalize, load_federated, load_hosted};
pub use svhn::read_svhn_dir;
pub use synthetic::{SyntheticParams, generate_synthetic};
pub use util::{empty_like, split_tail};

/// Errors raised while reading or partitioning data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is malformed; the message says where and what.
    #[error("{path}: {msg}")]
    Format {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong (with a line or byte position where there is one).
        msg: String,
    },
    /// A data set's files are not where the scenario names them; the hint says how to get them
    /// (`fedsim data fetch NAME`) or where to put them.
    #[error("{path}: {hint}")]
    Missing {
        /// The file or folder that is not there.
        path: std::path::PathBuf,
        /// What is wrong and what to do.
        hint: String,
    },
    /// The data or partition specification is invalid.
    #[error("invalid data specification: {0}")]
    Spec(String),
    /// A setting of the specification is invalid; the error names the key (`partition.alpha`).
    #[error(transparent)]
    Config(#[from] fedsim_types::ConfigError),
}
