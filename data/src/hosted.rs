//! A client process's share of a federated data set: the training samples of the clients it hosts, and
//! nothing else (no other client's samples, no test set).

use ndarray::Axis;

use crate::{DataError, Dataset, FederatedData, Partition};

/// The training samples of some clients of a federated data set — the clients one process hosts —
/// without the other clients' samples or the test set.
///
/// [`Self::train`] holds the rows of the full training set that the hosted clients own, in ascending
/// order of their row number there. Each hosted client's indices ([`Self::client`]) point into it, in the
/// order of the full partition. The map from full rows to held rows is increasing, so a client's indices
/// sort and compare exactly as on the full set: local training reads the same rows in the same order as
/// on the full data set, and gives bit-identical results.
#[derive(Debug, Clone)]
pub struct HostedPartitions {
    /// The hosted clients' samples (the union of their partitions), ascending by row of the full set.
    pub train: Dataset,
    /// Hosted partition indices, ascending, without repeats.
    clients: Vec<usize>,
    /// Indices into `train` of each entry of `clients`.
    partition: Partition,
    /// Indices into `train` of each entry's local test samples (`partition.local_test_fraction`).
    local_test: Option<Partition>,
    /// Number of clients of the full partition.
    num_clients: usize,
}

impl HostedPartitions {
    /// The share of the partitions `clients` (indices into `partition`; any order, repeats ignored).
    /// `read_rows` returns the given rows of the full training set (ascending, no repeats), in that
    /// order, as a data set.
    ///
    /// Errors: [`DataError::Spec`] when a client index is not in the partition; whatever `read_rows`
    /// returns.
    pub(crate) fn build(
        partition: &Partition,
        local_test: Option<&Partition>,
        clients: &[usize],
        read_rows: impl FnOnce(&[u32]) -> Result<Dataset, DataError>,
    ) -> Result<Self, DataError> {
        check_clients(clients, partition.num_clients())?;
        let mut hosted = clients.to_vec();
        hosted.sort_unstable();
        hosted.dedup();
        let mut rows: Vec<u32> = hosted
            .iter()
            .flat_map(|&k| partition.client(k).iter().copied())
            .chain(
                local_test
                    .iter()
                    .flat_map(|t| hosted.iter().flat_map(|&k| t.client(k).iter().copied())),
            )
            .collect();
        rows.sort_unstable();
        rows.dedup();
        let train = read_rows(&rows)?;
        if train.len() != rows.len() {
            return Err(DataError::Spec(format!(
                "internal error: asked for {} rows of the training set, got {}",
                rows.len(),
                train.len()
            )));
        }
        let local = |i: &u32| rows.binary_search(i).unwrap_or_default() as u32;
        let lists = |p: &Partition| {
            Partition::from_lists(
                hosted
                    .iter()
                    .map(|&k| p.client(k).iter().map(local).collect())
                    .collect(),
            )
        };
        Ok(Self {
            train,
            partition: lists(partition),
            local_test: local_test.map(lists),
            clients: hosted,
            num_clients: partition.num_clients(),
        })
    }

    /// Indices into [`Self::train`] of the samples of partition `k`, in the order of the full partition;
    /// `None` when `k` is not hosted.
    pub fn client(&self, k: usize) -> Option<&[u32]> {
        let j = self.clients.binary_search(&k).ok()?;
        Some(self.partition.client(j))
    }

    /// Indices into [`Self::train`] of the local test samples of partition `k`
    /// (`partition.local_test_fraction`); `None` when `k` is not hosted or there is no local test split.
    pub fn client_test(&self, k: usize) -> Option<&[u32]> {
        let j = self.clients.binary_search(&k).ok()?;
        Some(self.local_test.as_ref()?.client(j))
    }

    /// The hosted partition indices, ascending.
    pub fn clients(&self) -> &[usize] {
        &self.clients
    }

    /// Number of clients of the full partition (hosted or not).
    pub fn num_clients(&self) -> usize {
        self.num_clients
    }
}

/// Refuses a client index outside a partition of `num_clients` clients.
pub(crate) fn check_clients(clients: &[usize], num_clients: usize) -> Result<(), DataError> {
    match clients.iter().find(|&&k| k >= num_clients) {
        Some(k) => Err(DataError::Spec(format!(
            "client {k} does not exist: the partition has {num_clients} clients (0..{num_clients})"
        ))),
        None => Ok(()),
    }
}

impl Dataset {
    /// A data set of the rows `rows` of this one, in that order.
    pub fn select(&self, rows: &[u32]) -> Dataset {
        let rows: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
        Dataset {
            x: self.x.select(Axis(0), &rows).into(),
            y: rows.iter().map(|&r| self.y[r]).collect(),
            num_classes: self.num_classes,
            image: self.image,
        }
    }
}

impl FederatedData {
    /// The share of the partitions `clients` (any order, repeats ignored): a copy of their training
    /// samples; the test set and the other clients' samples are left out.
    ///
    /// Errors: [`DataError::Spec`] when a client index is not in the partition.
    pub fn hosted(&self, clients: &[usize]) -> Result<HostedPartitions, DataError> {
        HostedPartitions::build(&self.partition, self.local_test.as_ref(), clients, |rows| {
            Ok(self.train.select(rows))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataSpec, PartitionSpec, load_federated};

    fn federated() -> FederatedData {
        let spec = DataSpec::Synthetic {
            alpha: 1.0,
            beta: 1.0,
            features: 7,
            classes: 4,
            samples_per_client: 20,
            test_samples: 30,
        };
        load_federated(
            &spec,
            &PartitionSpec::new(crate::partition::IidConfig {}),
            9,
            5,
        )
        .unwrap()
    }

    #[test]
    fn holds_exactly_the_hosted_partitions() {
        let full = federated();
        let h = full.hosted(&[6, 2, 6]).unwrap();
        assert_eq!(h.clients(), &[2, 6]);
        assert_eq!(h.num_clients(), 9);
        let (a, b) = (full.partition.client(2), full.partition.client(6));
        // Exactly the samples of partitions 2 and 6, nothing else.
        assert_eq!(h.train.len(), a.len() + b.len());
        let mut want: Vec<u32> = a.iter().chain(b).copied().collect();
        want.sort_unstable();
        assert_eq!(h.train.x, full.train.select(&want).x);
        for k in [2, 6] {
            let local = h.client(k).unwrap();
            assert_eq!(local.len(), full.partition.client_len(k));
            for (&l, &g) in local.iter().zip(full.partition.client(k)) {
                assert_eq!(h.train.x.row(l as usize), full.train.x.row(g as usize));
                assert_eq!(h.train.y[l as usize], full.train.y[g as usize]);
            }
            // Increasing map: sorting local indices orders the rows as on the full set.
            let mut l: Vec<u32> = local.to_vec();
            l.sort_unstable();
            let mut g: Vec<u32> = full.partition.client(k).to_vec();
            g.sort_unstable();
            for (l, g) in l.iter().zip(&g) {
                assert_eq!(h.train.x.row(*l as usize), full.train.x.row(*g as usize));
            }
        }
        assert!(h.client(0).is_none() && h.client(9).is_none());
        assert_eq!(h.train.num_classes, full.train.num_classes);
        assert!(
            full.hosted(&[9])
                .unwrap_err()
                .to_string()
                .contains("client 9")
        );
        let none = full.hosted(&[]).unwrap();
        assert_eq!((none.train.len(), none.train.features()), (0, 7));
    }
}
