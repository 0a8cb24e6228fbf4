//! Turns a [`DataSpec`] and a [`PartitionSpec`] into a [`FederatedData`].

use crate::Normalize;
use crate::hosted::check_clients;
use crate::idx::{
    MNIST_CLASSES, TRAIN_IMAGES, TRAIN_LABELS, read_idx_images_rows, read_idx_labels,
};
use crate::partition::{PartitionInput, PartitionSpecExt, no_natural_split, split_local_test};
use crate::sources::{TrainSource, read_files};
use crate::synthetic::{SyntheticParams, generate_synthetic};
use crate::util::{derive_seed, find_gz_or_raw, format_err};
use crate::{DataError, DataSpec, Dataset, FederatedData, HostedPartitions, PartitionSpec};

/// See [`crate::load_federated`].
///
/// - The partition settings are validated first ([`DataError::Config`] names the bad key).
/// - Synthetic data is generated for `num_clients` clients; with `scheme = "natural"` (the schemes whose
///   capabilities say `uses_natural_split`) each client keeps its own samples, any other scheme re-splits
///   the pooled samples.
/// - LEAF data's natural split makes each kept writer a client: `num_clients` must equal the number of
///   writers kept (a [`DataError::Spec`] says how many that is).
/// - The other file-based data sets have no natural split: `Natural` is a [`DataError::Spec`] (checked
///   before any file is read). `num_clients` is used only by the partitioner.
/// - LIBSVM/CSV without a test file hold out the last `test_fraction` (in `[0, 1)`) of the rows; `0` gives an
///   empty test set. Giving both a test file and a non-zero `test_fraction` is an error.
/// - `normalize = "per_channel"` standardises training and test sets with the training set's channel
///   statistics ([`FederatedData::normalization`]) before partitioning.
///
/// With `partition.local_test_fraction` set, every client's samples are split into its training and
/// local test samples ([`crate::partition::split_local_test`]) after partitioning.
pub(crate) fn load_federated(
    data: &DataSpec,
    spec: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData, DataError> {
    let fraction = spec.local_test_fraction()?;
    let mut fed = load_unsplit(data, spec, num_clients, seed)?;
    if fraction > 0.0 {
        let (train, test) = split_local_test(&fed.partition, &fed.train.y, fraction, seed);
        fed.partition = train;
        fed.local_test = Some(test);
    }
    Ok(fed)
}

/// [`load_federated`] without the local test split.
fn load_unsplit(
    data: &DataSpec,
    spec: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData, DataError> {
    if num_clients == 0 {
        return Err(DataError::Spec(
            "num_clients must be at least 1, got 0".into(),
        ));
    }
    if let Some(empty) = data.external_input() {
        // No samples here: every client's partition is empty, and so is the test set.
        let empty = empty?;
        return Ok(FederatedData {
            train: empty.clone(),
            test: empty,
            partition: crate::Partition::from_lists(vec![Vec::new(); num_clients]),
            local_test: None,
            normalization: None,
        });
    }
    let valid = spec.validate()?;
    let seed_partition = derive_seed(seed, "partition");
    if let Some(params) = SyntheticParams::from_spec(data) {
        let fed = generate_synthetic(&params, num_clients, derive_seed(seed, "data.synthetic"))?;
        if spec.capabilities().uses_natural_split {
            return Ok(fed);
        }
        let partition = valid.build(
            PartitionInput::new(&fed.train, num_clients, seed_partition)
                .with_natural(&fed.partition),
        )?;
        return Ok(FederatedData { partition, ..fed });
    }
    let natural_wanted = spec.capabilities().uses_natural_split;
    if natural_wanted && !data.has_natural_split() {
        return Err(no_natural_split());
    }
    // Image data sets decoded (and normalised) before are mapped from the decoded-data cache.
    let cache = crate::cache::locate(data);
    let (train, test, normalization, natural) =
        match cache.as_ref().and_then(crate::cache::Entry::load) {
            Some((train, test, normalization)) => (train, test, normalization, None),
            None => {
                let loaded = read_files(data, seed)?;
                let (mut train, mut test) = (loaded.train, loaded.test);
                let normalization = match data.normalize() {
                    Normalize::None => None,
                    Normalize::PerChannel => {
                        Some(crate::normalize::per_channel(&mut train, &mut test)?)
                    }
                };
                if let (Some(cache), None) = (&cache, &loaded.natural) {
                    // A cache that cannot be written only costs the next run the decoding.
                    let _ = cache.store(&train, &test, normalization.as_ref());
                }
                (train, test, normalization, loaded.natural)
            }
        };
    let input = PartitionInput::new(&train, num_clients, seed_partition);
    let partition = match &natural {
        Some(natural) if natural_wanted && natural.num_clients() != num_clients => {
            return Err(DataError::Spec(format!(
                "partition.scheme = \"natural\" makes each LEAF writer a client: {} writers are kept (after \
                 data.min_samples and data.writer_fraction), so set clients = {} (it is {num_clients})",
                natural.num_clients(),
                natural.num_clients()
            )));
        }
        Some(natural) => valid.build(input.with_natural(natural))?,
        None => valid.build(input)?,
    };
    Ok(FederatedData {
        train,
        test,
        partition,
        local_test: None,
        normalization,
    })
}

/// See [`crate::load_hosted`]: with a scheme that needs the labels only, a data set decoded before is
/// read from the decoded-data cache (labels, then only the hosted clients' rows, normalised or not as
/// cached). Otherwise, without normalisation, the labels are read and partitioned exactly as
/// [`load_federated`] does, then only the hosted clients' rows are converted (MNIST and Fashion-MNIST:
/// decoded, [`crate::idx::read_idx_images_rows`]; CIFAR and SVHN: converted from the bytes; image
/// folders: decoded from their files); the test files are not read. Other cases load the whole data
/// set, then copy the hosted rows out.
pub(crate) fn load_hosted(
    data: &DataSpec,
    spec: &PartitionSpec,
    num_clients: usize,
    seed: u64,
    clients: &[usize],
) -> Result<HostedPartitions, DataError> {
    let whole = || load_federated(data, spec, num_clients, seed)?.hosted(clients);
    if num_clients == 0 || spec.capabilities().uses_natural_split {
        // The errors of `load_federated`, before any file is read.
        return whole();
    }
    let valid = spec.validate()?;
    if spec.capabilities().needs_features {
        return whole();
    }
    // A data set decoded before is read from the decoded-data cache: the labels, then only the hosted
    // rows (read, not mapped, so the rest of the file never counts in this process's memory).
    if let Some(mut cached) = crate::cache::locate(data).and_then(|c| c.train_rows()) {
        check_clients(clients, num_clients)?;
        let partition = valid.build(PartitionInput::from_labels(
            cached.labels(),
            cached.num_classes(),
            num_clients,
            derive_seed(seed, "partition"),
        ))?;
        let (partition, local_test) = split_if_asked(partition, cached.labels(), spec, seed)?;
        return HostedPartitions::build(&partition, local_test.as_ref(), clients, |rows| {
            let path = cached.path().to_path_buf();
            cached
                .read(rows)
                .map_err(|source| DataError::Io { path, source })
        });
    }
    if data.normalize() != Normalize::None {
        // Normalisation needs every training row's statistics (a cached data set holds them).
        return whole();
    }
    let dir = match data {
        DataSpec::Mnist { dir, .. } | DataSpec::FashionMnist { dir, .. } => dir,
        _ => {
            let Some(source) = TrainSource::open(data)? else {
                return whole();
            };
            check_clients(clients, num_clients)?;
            let labels = source.labels();
            let partition = valid.build(PartitionInput::from_labels(
                &labels,
                source.num_classes(),
                num_clients,
                derive_seed(seed, "partition"),
            ))?;
            let (partition, local_test) = split_if_asked(partition, &labels, spec, seed)?;
            return HostedPartitions::build(&partition, local_test.as_ref(), clients, |rows| {
                source.rows(rows)
            });
        }
    };
    check_clients(clients, num_clients)?;
    let images = find_gz_or_raw(dir, TRAIN_IMAGES)?;
    let labels = find_gz_or_raw(dir, TRAIN_LABELS)?;
    let y: Vec<u32> = read_idx_labels(&labels, MNIST_CLASSES)?
        .into_iter()
        .map(u32::from)
        .collect();
    let partition = valid.build(PartitionInput::from_labels(
        &y,
        MNIST_CLASSES,
        num_clients,
        derive_seed(seed, "partition"),
    ))?;
    let (partition, local_test) = split_if_asked(partition, &y, spec, seed)?;
    HostedPartitions::build(&partition, local_test.as_ref(), clients, |rows| {
        let (x, shape, count) = read_idx_images_rows(&images, rows)?;
        if count != y.len() {
            return Err(format_err(
                &labels,
                format!(
                    "holds {} labels but {} holds {count} images",
                    y.len(),
                    images.display()
                ),
            ));
        }
        Ok(Dataset {
            x: x.into(),
            y: rows.iter().map(|&r| y[r as usize]).collect(),
            num_classes: MNIST_CLASSES,
            image: Some(shape),
        })
    })
}

/// The (training, local test) partitions of `partition` when `partition.local_test_fraction` is set,
/// as [`load_federated`] splits them.
fn split_if_asked(
    partition: crate::Partition,
    labels: &[u32],
    spec: &PartitionSpec,
    seed: u64,
) -> Result<(crate::Partition, Option<crate::Partition>), DataError> {
    let fraction = spec.local_test_fraction()?;
    if fraction == 0.0 {
        return Ok((partition, None));
    }
    let (train, test) = split_local_test(&partition, labels, fraction, seed);
    Ok((train, Some(test)))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn synth() -> DataSpec {
        DataSpec::Synthetic {
            alpha: 1.0,
            beta: 1.0,
            features: 20,
            classes: 5,
            samples_per_client: 30,
            test_samples: 100,
        }
    }

    #[test]
    fn synthetic_natural_and_resplit() {
        let nat = load_federated(&synth(), &PartitionSpec::default(), 12, 3).unwrap();
        assert_eq!(nat.partition.num_clients(), 12);
        assert_eq!(nat.partition.total(), nat.train.len());
        assert_eq!(nat.test.len(), 100);
        let iid = load_federated(
            &synth(),
            &PartitionSpec::new(crate::partition::IidConfig {}),
            12,
            3,
        )
        .unwrap();
        assert_eq!(iid.train.x, nat.train.x);
        assert_ne!(iid.partition, nat.partition);
        assert_eq!(iid.partition.total(), iid.train.len());
        let again = load_federated(
            &synth(),
            &PartitionSpec::new(crate::partition::IidConfig {}),
            12,
            3,
        )
        .unwrap();
        assert_eq!(iid.partition, again.partition);
        assert!(load_federated(&synth(), &PartitionSpec::default(), 0, 3).is_err());
    }

    fn write_libsvm(dir: &Path) -> PathBuf {
        let p = dir.join("d.svm");
        let text: String = (0..20)
            .map(|i| format!("{} {}:1\n", if i % 2 == 0 { -1 } else { 1 }, i % 4 + 1))
            .collect();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn natural_on_files_is_a_spec_error() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DataSpec::Libsvm {
            path: write_libsvm(dir.path()),
            test_path: None,
            test_fraction: 0.0,
            features: None,
        };
        let e = load_federated(&spec, &PartitionSpec::default(), 4, 0).unwrap_err();
        assert!(matches!(e, DataError::Spec(_)));
        assert!(e.to_string().contains("no natural split"));
        // Checked before reading: a missing MNIST directory still reports the spec problem.
        let spec = DataSpec::Mnist {
            dir: "/nonexistent".into(),
            normalize: Normalize::None,
        };
        assert!(matches!(
            load_federated(&spec, &PartitionSpec::default(), 4, 0),
            Err(DataError::Spec(_))
        ));
        assert!(matches!(
            load_federated(
                &spec,
                &PartitionSpec::new(crate::partition::IidConfig {}),
                4,
                0
            ),
            Err(DataError::Io { .. })
        ));
    }

    #[test]
    fn libsvm_test_fraction() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_libsvm(dir.path());
        let spec = DataSpec::Libsvm {
            path: path.clone(),
            test_path: None,
            test_fraction: 0.25,
            features: None,
        };
        let fed = load_federated(
            &spec,
            &PartitionSpec::new(crate::partition::ContiguousConfig {
                sort_by: crate::RowOrder::File,
            }),
            3,
            0,
        )
        .unwrap();
        assert_eq!(fed.train.len(), 15);
        assert_eq!(fed.test.len(), 5);
        assert_eq!(fed.partition.client_len(2), 5 + 2 - 2);
        assert_eq!(
            (0..3)
                .map(|k| fed.partition.client_len(k))
                .collect::<Vec<_>>(),
            vec![5, 5, 5]
        );
        let spec = DataSpec::Libsvm {
            path: path.clone(),
            test_path: None,
            test_fraction: 0.0,
            features: None,
        };
        let fed = load_federated(
            &spec,
            &PartitionSpec::new(crate::partition::ContiguousConfig {
                sort_by: crate::RowOrder::File,
            }),
            3,
            0,
        )
        .unwrap();
        assert_eq!((fed.train.len(), fed.test.len()), (20, 0));
        assert_eq!(
            (0..3)
                .map(|k| fed.partition.client_len(k))
                .collect::<Vec<_>>(),
            vec![6, 6, 8]
        );
        let spec = DataSpec::Libsvm {
            path: path.clone(),
            test_path: None,
            test_fraction: 1.0,
            features: None,
        };
        let e = load_federated(
            &spec,
            &PartitionSpec::new(crate::partition::IidConfig {}),
            3,
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("data.test_fraction must be in [0, 1)"), "{e}");
        let spec = DataSpec::Libsvm {
            path: path.clone(),
            test_path: Some(path.clone()),
            test_fraction: 0.5,
            features: None,
        };
        assert!(
            load_federated(
                &spec,
                &PartitionSpec::new(crate::partition::IidConfig {}),
                3,
                0
            )
            .unwrap_err()
            .to_string()
            .contains("exclusive")
        );
        let spec = DataSpec::Libsvm {
            path: path.clone(),
            test_path: Some(path),
            test_fraction: 0.0,
            features: None,
        };
        let fed = load_federated(
            &spec,
            &PartitionSpec::new(crate::partition::IidConfig {}),
            3,
            0,
        )
        .unwrap();
        assert_eq!((fed.train.len(), fed.test.len()), (20, 20));
    }

    #[test]
    fn csv_spec() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        let text: String = std::iter::once("f1,f2,y\n".to_string())
            .chain((0..10).map(|i| format!("{i},{},{}\n", i * 2, i % 3)))
            .collect();
        std::fs::write(&p, text).unwrap();
        let spec = DataSpec::Csv {
            path: p,
            label_column: "y".into(),
            test_path: None,
            test_fraction: 0.2,
        };
        let fed = load_federated(
            &spec,
            &PartitionSpec::new(crate::partition::DirichletClientConfig { alpha: 0.5 }),
            4,
            1,
        )
        .unwrap();
        assert_eq!(
            (fed.train.len(), fed.test.len(), fed.train.num_classes),
            (8, 2, 3)
        );
        assert_eq!(fed.partition.total(), 8);
    }

    #[test]
    fn hosted_mnist_is_the_full_load_restricted() {
        let dir = crate::root::dev_data("mnist");
        if !dir.is_dir() {
            println!(
                "skipping hosted_mnist_is_the_full_load_restricted: {} not found",
                dir.display()
            );
            return;
        }
        let data = DataSpec::Mnist {
            dir,
            normalize: Normalize::None,
        };
        for spec in [
            PartitionSpec::new(crate::partition::IidConfig {}),
            PartitionSpec::new(crate::partition::ShardsConfig {
                shards_per_client: 2,
            }),
        ] {
            let full = load_federated(&data, &spec, 100, 1).unwrap();
            let clients = [30, 31, 32, 99, 4];
            let want = full.hosted(&clients).unwrap();
            let got = load_hosted(&data, &spec, 100, 1, &clients).unwrap();
            // Only the hosted clients' samples: 5 x 600 of the 60,000.
            assert_eq!(got.train.len(), 3000);
            assert_eq!(got.train.x, want.train.x);
            assert_eq!(got.train.y, want.train.y);
            assert_eq!(got.train.image, full.train.image);
            for k in clients {
                assert_eq!(got.client(k), want.client(k));
            }
            assert!(load_hosted(&data, &spec, 100, 1, &[100]).is_err());
        }
    }

    #[test]
    fn hosted_keeps_the_errors_of_the_full_load() {
        let spec = DataSpec::Mnist {
            dir: "/nonexistent".into(),
            normalize: Normalize::None,
        };
        assert!(matches!(
            load_hosted(&spec, &PartitionSpec::default(), 4, 0, &[0]),
            Err(DataError::Spec(_))
        ));
        assert!(matches!(
            load_hosted(
                &spec,
                &PartitionSpec::new(crate::partition::IidConfig {}),
                4,
                0,
                &[0]
            ),
            Err(DataError::Io { .. })
        ));
        let h = load_hosted(&synth(), &PartitionSpec::default(), 6, 2, &[1, 4]).unwrap();
        let full = load_federated(&synth(), &PartitionSpec::default(), 6, 2).unwrap();
        assert_eq!(
            h.train.len(),
            full.partition.client_len(1) + full.partition.client_len(4)
        );
    }

    #[test]
    fn real_mnist_mcmahan_shards() {
        let dir = crate::root::dev_data("mnist");
        if !dir.is_dir() {
            println!(
                "skipping real_mnist_mcmahan_shards: {} not found",
                dir.display()
            );
            return;
        }
        let fed = load_federated(
            &DataSpec::Mnist {
                dir,
                normalize: Normalize::None,
            },
            &PartitionSpec::new(crate::partition::ShardsConfig {
                shards_per_client: 2,
            }),
            100,
            0,
        )
        .unwrap();
        assert_eq!(fed.partition.num_clients(), 100);
        assert_eq!(fed.partition.total(), 60_000);
        let mut at_most_two = 0;
        for k in 0..100 {
            assert_eq!(fed.partition.client_len(k), 600);
            let mut seen = [false; 10];
            for &i in fed.partition.client(k) {
                seen[fed.train.y[i as usize] as usize] = true;
            }
            at_most_two += usize::from(seen.iter().filter(|&&s| s).count() <= 2);
        }
        assert!(at_most_two >= 80, "{at_most_two}");
    }
}
