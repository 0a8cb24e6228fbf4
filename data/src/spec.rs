//! The scenario's `[data]` and `[partition]` sections.

use std::path::{Path, PathBuf};

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
        /// Pixel normalisation after scaling to [0, 1]. Left out of the resolved scenario when `none`, so
        /// that scenarios written before the key existed resolve (and hash) as before.
        #[serde(default, skip_serializing_if = "Normalize::is_none")]
        normalize: Normalize,
    },
    /// Fashion-MNIST in IDX format, same file names as MNIST.
    FashionMnist {
        /// Directory holding the four IDX files, gzip-compressed or raw.
        dir: PathBuf,
        /// Pixel normalisation after scaling to [0, 1] (left out of the resolved scenario when `none`).
        #[serde(default, skip_serializing_if = "Normalize::is_none")]
        normalize: Normalize,
    },
    /// CIFAR-10 in the original binary format: `data_batch_1.bin` … `data_batch_5.bin` and
    /// `test_batch.bin` in `dir` (or in `dir/cifar-10-batches-bin`, as the archive unpacks).
    Cifar10 {
        /// Directory holding the six `.bin` files.
        dir: PathBuf,
        /// Pixel normalisation after scaling to [0, 1].
        #[serde(default)]
        normalize: Normalize,
    },
    /// CIFAR-100 in the original binary format: `train.bin` and `test.bin` in `dir` (or in
    /// `dir/cifar-100-binary`).
    Cifar100 {
        /// Directory holding the two `.bin` files.
        dir: PathBuf,
        /// Which label each record contributes: its fine class (100) or its coarse superclass (20).
        #[serde(default)]
        labels: Cifar100Labels,
        /// Pixel normalisation after scaling to [0, 1].
        #[serde(default)]
        normalize: Normalize,
    },
    /// Images in torchvision's ImageFolder layout, `ROOT/{train,test}/<class>/*.{png,jpg,jpeg}`, from a
    /// directory or from a `.tar` / `.tar.gz` archive (the tree may sit under one top directory).
    ImageFolder {
        /// The root directory, or the archive.
        path: PathBuf,
        /// Name of the training split's folder.
        #[serde(default = "default_train_split")]
        train_split: String,
        /// Name of the test split's folder (CINIC-10 also has `valid`).
        #[serde(default = "default_test_split")]
        test_split: String,
        /// Pixel normalisation after scaling to [0, 1].
        #[serde(default)]
        normalize: Normalize,
    },
    /// SVHN cropped digits: `train_32x32.mat` and `test_32x32.mat` (MATLAB v5) in `dir`; label 10 is
    /// digit 0.
    Svhn {
        /// Directory holding the two `.mat` files.
        dir: PathBuf,
        /// Pixel normalisation after scaling to [0, 1].
        #[serde(default)]
        normalize: Normalize,
    },
    /// LEAF's JSON format (FEMNIST and the other LEAF image sets): the `.json` files of `dir/train` and
    /// `dir/test`. Its natural partition makes each writer (LEAF user) a client.
    Leaf {
        /// Directory holding `train/` and `test/` with LEAF's `.json` files.
        dir: PathBuf,
        /// Writers with fewer training samples are left out (of training and test).
        #[serde(default)]
        min_samples: usize,
        /// Fraction of the remaining writers kept, drawn from the run seed; the others are left out.
        #[serde(default = "one")]
        writer_fraction: f64,
        /// Image shape `[channels, height, width]` of the rows (FEMNIST: `[1, 28, 28]`); without it
        /// the rows are plain feature vectors.
        #[serde(default)]
        shape: Option<[usize; 3]>,
        /// Number of classes; by default the largest label seen plus one (FEMNIST has 62).
        #[serde(default)]
        classes: Option<usize>,
        /// Feature normalisation (`per_channel` needs `shape`).
        #[serde(default)]
        normalize: Normalize,
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
    /// No samples on this side: the data lives on the clients (`fedsim client --data FILE
    /// [--test-data FILE]`) and a coordinator holds none (with `eval.central = false` and
    /// `deploy.sample_counts = "declared"`). States the input the model is built for; a client checks its
    /// own data against it.
    External {
        /// Features per sample (flat vectors); leave out when `shape` is given.
        #[serde(default)]
        features: Option<usize>,
        /// Image shape `[channels, height, width]` of the rows.
        #[serde(default)]
        shape: Option<[usize; 3]>,
        /// Number of classes.
        classes: usize,
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

/// `[data] normalize`: what is done to the features after loading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Leave the values as read (pixels in [0, 1]).
    #[default]
    None,
    /// Subtract the training set's per-channel means and divide by its per-channel standard deviations,
    /// computed once over the training set and applied to training and test sets
    /// ([`crate::FederatedData::normalization`] holds them).
    PerChannel,
}

impl Normalize {
    /// Whether this is [`Normalize::None`].
    pub fn is_none(&self) -> bool {
        *self == Normalize::None
    }
}

/// `[data] labels` of CIFAR-100: which of a record's two labels is its class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cifar100Labels {
    /// The 100 fine classes.
    #[default]
    Fine,
    /// The 20 coarse superclasses.
    Coarse,
}

impl DataSpec {
    /// The `normalize` setting (`none` for the kinds without one).
    pub fn normalize(&self) -> Normalize {
        match self {
            DataSpec::Mnist { normalize, .. }
            | DataSpec::FashionMnist { normalize, .. }
            | DataSpec::Cifar10 { normalize, .. }
            | DataSpec::Cifar100 { normalize, .. }
            | DataSpec::ImageFolder { normalize, .. }
            | DataSpec::Svhn { normalize, .. }
            | DataSpec::Leaf { normalize, .. } => *normalize,
            DataSpec::Synthetic { .. }
            | DataSpec::Libsvm { .. }
            | DataSpec::Csv { .. }
            | DataSpec::External { .. } => Normalize::None,
        }
    }

    /// Whether the samples live on the clients (`kind = "external"`): this side holds none.
    pub fn is_external(&self) -> bool {
        matches!(self, DataSpec::External { .. })
    }

    /// The input of `kind = "external"`: an empty data set with its columns, classes and image shape;
    /// `None` for the other kinds. A stated shape must have as many features as `features`, when both
    /// are given.
    pub fn external_input(&self) -> Option<Result<crate::Dataset, DataError>> {
        let DataSpec::External {
            features,
            shape,
            classes,
        } = self
        else {
            return None;
        };
        Some((|| {
            if *classes < 2 {
                return Err(DataError::Spec(format!(
                    "data.classes must be at least 2, got {classes}"
                )));
            }
            let image = shape.map(|[channels, height, width]| fedsim_types::ImageShape {
                channels,
                height,
                width,
            });
            let n = match (features, shape) {
                (Some(f), Some([c, h, w])) if *f != c * h * w => {
                    return Err(DataError::Spec(format!(
                        "data.features = {f} but data.shape = [{c}, {h}, {w}] has {} features",
                        c * h * w
                    )));
                }
                (_, Some([c, h, w])) => c * h * w,
                (Some(f), None) => *f,
                (None, None) => {
                    return Err(DataError::Spec(
                        "data.kind = \"external\" needs data.features (flat rows) or data.shape = [c, h, w]"
                            .into(),
                    ));
                }
            };
            if n == 0 {
                return Err(DataError::Spec("data.features must be at least 1".into()));
            }
            Ok(crate::Dataset {
                x: ndarray::Array2::zeros((0, n)).into(),
                y: Vec::new(),
                num_classes: *classes,
                image,
            })
        })())
    }

    /// Whether the data set has its own split into clients (`partition.scheme = "natural"`): synthetic
    /// data (one generated data set per client) and LEAF (one client per writer).
    pub fn has_natural_split(&self) -> bool {
        matches!(self, DataSpec::Synthetic { .. } | DataSpec::Leaf { .. })
    }

    /// The files and folders the data set is read from (`dir`, `path`, `test_path`), as written.
    pub fn paths(&self) -> Vec<&Path> {
        let (first, test) = match self {
            DataSpec::Synthetic { .. } | DataSpec::External { .. } => return Vec::new(),
            DataSpec::Mnist { dir, .. }
            | DataSpec::FashionMnist { dir, .. }
            | DataSpec::Cifar10 { dir, .. }
            | DataSpec::Cifar100 { dir, .. }
            | DataSpec::Svhn { dir, .. }
            | DataSpec::Leaf { dir, .. } => (dir, None),
            DataSpec::ImageFolder { path, .. } => (path, None),
            DataSpec::Libsvm {
                path, test_path, ..
            }
            | DataSpec::Csv {
                path, test_path, ..
            } => (path, test_path.as_ref()),
        };
        std::iter::once(first.as_path())
            .chain(test.map(PathBuf::as_path))
            .collect()
    }

    /// This specification with its relative paths taken under the data root `root` (absolute paths
    /// kept): what the loaders read. The scenario itself keeps the paths as written, so its text and
    /// hash do not depend on where a machine keeps its data.
    pub fn under_root(&self, root: &crate::DataRoot) -> DataSpec {
        let mut resolved = self.clone();
        for p in resolved.paths_mut() {
            *p = root.join(p);
        }
        resolved
    }

    /// The path fields of [`DataSpec::paths`], for rewriting them.
    fn paths_mut(&mut self) -> Vec<&mut PathBuf> {
        match self {
            DataSpec::Synthetic { .. } | DataSpec::External { .. } => Vec::new(),
            DataSpec::Mnist { dir, .. }
            | DataSpec::FashionMnist { dir, .. }
            | DataSpec::Cifar10 { dir, .. }
            | DataSpec::Cifar100 { dir, .. }
            | DataSpec::Svhn { dir, .. }
            | DataSpec::Leaf { dir, .. } => vec![dir],
            DataSpec::ImageFolder { path, .. } => vec![path],
            DataSpec::Libsvm {
                path, test_path, ..
            }
            | DataSpec::Csv {
                path, test_path, ..
            } => std::iter::once(path).chain(test_path.as_mut()).collect(),
        }
    }
}

fn default_train_split() -> String {
    "train".into()
}
fn default_test_split() -> String {
    "test".into()
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
/// training samples are kept (no test set). With a scheme that splits from the labels alone, an image
/// data set in the decoded-data cache is read row by row from it, and MNIST, Fashion-MNIST, CIFAR, SVHN
/// and image folders without normalisation are read without decoding the other images into memory;
/// other data sets are loaded whole, then copied out and dropped.
pub fn load_hosted(
    data: &DataSpec,
    partition: &PartitionSpec,
    num_clients: usize,
    seed: u64,
    clients: &[usize],
) -> Result<crate::HostedPartitions, DataError> {
    crate::load::load_hosted(data, partition, num_clients, seed, clients)
}
