//! In-memory data sets and client partitions.

use ndarray::ArrayView2;

/// A dense labelled data set: one row of `x` per sample.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Features, shape `(samples, features)`, row-major.
    pub x: ndarray::CowArray<'static, f32, ndarray::Ix2>,
    /// Class label of every sample, each `< num_classes`.
    pub y: Vec<u32>,
    /// Number of classes.
    pub num_classes: usize,
    /// Image shape (channels, height, width) when rows are flattened images.
    pub image: Option<fedsim_types::ImageShape>,
}

impl Dataset {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.y.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// Features per sample.
    pub fn features(&self) -> usize {
        self.x.ncols()
    }

    /// A view of all features.
    pub fn view(&self) -> ArrayView2<'_, f32> {
        self.x.view()
    }

    /// Hints that the features of `rows` are about to be read: when they are mapped from the
    /// decoded-data cache, their pages are mapped in one call rather than page fault by page fault.
    /// Owned features are left alone.
    pub fn load_pages(&self, rows: std::ops::Range<usize>) {
        self.advise_pages(rows, crate::cache::Residency::Load);
    }

    /// Hints that the features of `rows` are not needed again soon. When they are mapped from the
    /// decoded-data cache, their whole pages leave this process's resident memory (they stay in the
    /// system's page cache and come back, without a disk read, on the next access); owned features are
    /// left alone. For a process, such as the coordinator, that only streams through a data set to
    /// evaluate a model.
    pub fn release_pages(&self, rows: std::ops::Range<usize>) {
        self.advise_pages(rows, crate::cache::Residency::Release);
    }

    fn advise_pages(&self, rows: std::ops::Range<usize>, what: crate::cache::Residency) {
        let rows = rows.start.min(self.len())..rows.end.min(self.len());
        if !self.x.is_view() || rows.is_empty() {
            return;
        }
        if let Some(all) = self.x.as_slice() {
            let cols = self.features();
            crate::cache::advise(&all[rows.start * cols..rows.end * cols], what);
        }
    }

    /// Number of samples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.num_classes];
        for &l in &self.y {
            c[l as usize] += 1;
        }
        c
    }

    /// The model input this data set feeds.
    pub fn input_spec(&self) -> fedsim_types::InputSpec {
        fedsim_types::InputSpec {
            features: self.features(),
            image: self.image,
            num_classes: self.num_classes,
        }
    }
}

/// Assignment of sample indices to clients, stored compactly (CSR style) so that millions of clients cost
/// a few bytes each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    offsets: Vec<usize>,
    indices: Vec<u32>,
}

impl Partition {
    /// Builds a partition from per-client index lists.
    pub fn from_lists(lists: Vec<Vec<u32>>) -> Self {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        offsets.push(0);
        let mut indices = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        for l in lists {
            indices.extend_from_slice(&l);
            offsets.push(indices.len());
        }
        Self { offsets, indices }
    }

    /// Builds a partition from CSR arrays: client `k` owns `indices[offsets[k]..offsets[k + 1]]`.
    ///
    /// # Panics
    /// If `offsets` is empty, not non-decreasing, or does not end at `indices.len()`.
    pub fn from_csr(offsets: Vec<usize>, indices: Vec<u32>) -> Self {
        assert!(
            !offsets.is_empty() && offsets[0] == 0,
            "offsets must start at 0"
        );
        assert!(
            offsets.windows(2).all(|w| w[0] <= w[1]),
            "offsets must not decrease"
        );
        assert_eq!(
            offsets.last().copied(),
            Some(indices.len()),
            "offsets must end at indices.len()"
        );
        Self { offsets, indices }
    }

    /// Number of clients.
    pub fn num_clients(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Sample indices of client `k`.
    pub fn client(&self, k: usize) -> &[u32] {
        &self.indices[self.offsets[k]..self.offsets[k + 1]]
    }

    /// Number of samples of client `k`.
    pub fn client_len(&self, k: usize) -> usize {
        self.offsets[k + 1] - self.offsets[k]
    }

    /// Total number of assigned samples.
    pub fn total(&self) -> usize {
        self.indices.len()
    }
}

/// A federated data set: training samples split among clients, and a held-out test set.
#[derive(Debug, Clone)]
pub struct FederatedData {
    /// All training samples.
    pub train: Dataset,
    /// Held-out test samples.
    pub test: Dataset,
    /// Which training samples each client trains on.
    pub partition: Partition,
    /// Each client's local test samples (indices into `train`, disjoint from `partition`) when
    /// `partition.local_test_fraction` is set; `None` otherwise.
    pub local_test: Option<Partition>,
    /// The training set's channel statistics that `normalize = "per_channel"` applied to both sets
    /// (`None` without normalisation): for the run summary.
    pub normalization: Option<crate::ChannelStats>,
}
