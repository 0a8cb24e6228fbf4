//! Reading the files of a file-based [`DataSpec`]: the whole data set ([`read_files`]), or the training
//! labels with rows decoded on demand ([`TrainSource`]) for a client process that holds only its own
//! clients' rows.

use std::path::Path;

use crate::cifar::{CifarKind, cifar_files, read_cifar_dir, read_cifar_raw};
use crate::image_folder::{FolderSet, Reference, check_split_names, read_image_folder};
use crate::leaf::{LeafOptions, read_leaf};
use crate::raw::RawImages;
use crate::svhn::{read_svhn_dir, read_svhn_raw, svhn_files};
use crate::util::{empty_like, split_tail};
use crate::{DataError, DataSpec, Dataset, Partition};

/// A data set as read from its files, before normalisation and partitioning.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// Training samples.
    pub(crate) train: Dataset,
    /// Test samples.
    pub(crate) test: Dataset,
    /// The data set's own split into clients, if it has one (LEAF: one client per writer).
    pub(crate) natural: Option<Partition>,
}

impl From<(Dataset, Dataset)> for Loaded {
    fn from((train, test): (Dataset, Dataset)) -> Self {
        Self {
            train,
            test,
            natural: None,
        }
    }
}

/// Reads the training and test sets of a file-based [`DataSpec`]; `seed` is the run seed (LEAF draws
/// its writers from it).
pub(crate) fn read_files(data: &DataSpec, seed: u64) -> Result<Loaded, DataError> {
    Ok(match data {
        DataSpec::Synthetic { .. } | DataSpec::External { .. } => {
            return Err(DataError::Spec(
                "internal error: synthetic and external data have no files".into(),
            ));
        }
        DataSpec::Mnist { dir, .. } | DataSpec::FashionMnist { dir, .. } => {
            crate::idx::read_mnist_dir(dir)?.into()
        }
        DataSpec::Libsvm {
            path,
            test_path,
            test_fraction,
            features,
        } => with_test(
            path,
            test_path.as_deref(),
            *test_fraction,
            |p| crate::libsvm::read_libsvm(p, *features),
            |p, t| crate::libsvm::read_libsvm_pair(p, t, *features),
        )?
        .into(),
        DataSpec::Csv {
            path,
            label_column,
            test_path,
            test_fraction,
        } => with_test(
            path,
            test_path.as_deref(),
            *test_fraction,
            |p| crate::csv::read_csv(p, label_column),
            |p, t| crate::csv::read_csv_pair(p, t, label_column),
        )?
        .into(),
        DataSpec::Cifar10 { dir, .. } => read_cifar_dir(dir, CifarKind::Cifar10)?.into(),
        DataSpec::Cifar100 { dir, labels, .. } => {
            read_cifar_dir(dir, CifarKind::Cifar100(*labels))?.into()
        }
        DataSpec::ImageFolder {
            path,
            train_split,
            test_split,
            ..
        } => {
            let f = read_image_folder(path, train_split, test_split)?;
            (f.train, f.test).into()
        }
        DataSpec::Svhn { dir, .. } => read_svhn_dir(dir)?.into(),
        DataSpec::Leaf {
            dir,
            min_samples,
            writer_fraction,
            shape,
            classes,
            ..
        } => {
            let opts = LeafOptions {
                min_samples: *min_samples,
                writer_fraction: *writer_fraction,
                shape: shape.map(|[channels, height, width]| fedsim_types::ImageShape {
                    channels,
                    height,
                    width,
                }),
                classes: *classes,
            };
            let leaf = read_leaf(dir, &opts, seed)?;
            Loaded {
                train: leaf.train,
                test: leaf.test,
                natural: Some(leaf.natural),
            }
        }
    })
}

fn with_test(
    path: &Path,
    test_path: Option<&Path>,
    test_fraction: f64,
    one: impl FnOnce(&Path) -> Result<Dataset, DataError>,
    pair: impl FnOnce(&Path, &Path) -> Result<(Dataset, Dataset), DataError>,
) -> Result<(Dataset, Dataset), DataError> {
    if !(test_fraction.is_finite() && (0.0..1.0).contains(&test_fraction)) {
        return Err(DataError::Spec(format!(
            "data.test_fraction must be in [0, 1), got {test_fraction}"
        )));
    }
    match test_path {
        Some(t) => {
            if test_fraction != 0.0 {
                return Err(DataError::Spec(format!(
                    "data.test_path and data.test_fraction = {test_fraction} are mutually exclusive: with a test file \
                     leave test_fraction at 0"
                )));
            }
            pair(path, t)
        }
        None => {
            let all = one(path)?;
            if test_fraction == 0.0 {
                let test = empty_like(&all);
                Ok((all, test))
            } else {
                split_tail(all, test_fraction)
            }
        }
    }
}

/// The training set of an image data set as labels, with the pixels of any rows decoded on demand:
/// CIFAR and SVHN keep the bytes (a quarter of the `f32` size), image folders keep the encoded files
/// and decode only the rows asked for.
pub(crate) enum TrainSource {
    /// Decoded bytes.
    Raw(RawImages),
    /// An image-folder listing and the shape its images must have.
    Folder(FolderSet, Reference),
}

impl TrainSource {
    /// The training source of `data`, or `None` for the kinds read otherwise (whole, or MNIST's own
    /// row-selective reader).
    pub(crate) fn open(data: &DataSpec) -> Result<Option<Self>, DataError> {
        Ok(Some(match data {
            DataSpec::Cifar10 { dir, .. } => {
                let kind = CifarKind::Cifar10;
                TrainSource::Raw(read_cifar_raw(&cifar_files(dir, kind).0, kind)?)
            }
            DataSpec::Cifar100 { dir, labels, .. } => {
                let kind = CifarKind::Cifar100(*labels);
                TrainSource::Raw(read_cifar_raw(&cifar_files(dir, kind).0, kind)?)
            }
            DataSpec::Svhn { dir, .. } => TrainSource::Raw(read_svhn_raw(&svhn_files(dir).0)?),
            DataSpec::ImageFolder {
                path,
                train_split,
                test_split,
                ..
            } => {
                // The test split's name is checked as in a full load, but its images are not read.
                check_split_names(train_split, Some(test_split))?;
                let set = FolderSet::open(path, train_split, None)?;
                let reference = set.reference()?;
                TrainSource::Folder(set, reference)
            }
            _ => return Ok(None),
        }))
    }

    /// Class of every training sample.
    pub(crate) fn labels(&self) -> Vec<u32> {
        match self {
            TrainSource::Raw(r) => r.labels.clone(),
            TrainSource::Folder(f, _) => f.train_labels(),
        }
    }

    /// Number of classes.
    pub(crate) fn num_classes(&self) -> usize {
        match self {
            TrainSource::Raw(r) => r.num_classes,
            TrainSource::Folder(f, _) => f.classes.len(),
        }
    }

    /// The training rows `rows` (ascending), scaled to [0, 1].
    pub(crate) fn rows(&self, rows: &[u32]) -> Result<Dataset, DataError> {
        match self {
            TrainSource::Raw(r) => {
                if let Some(&bad) = rows.iter().find(|&&i| i as usize >= r.labels.len()) {
                    return Err(DataError::Spec(format!(
                        "internal error: image {bad} asked for, the training set has {}",
                        r.labels.len()
                    )));
                }
                r.rows_dataset(rows)
            }
            TrainSource::Folder(f, reference) => f.train_rows(rows, *reference),
        }
    }
}

#[cfg(test)]
mod tests;
