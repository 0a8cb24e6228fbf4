//! Partitioners: split the training samples among clients.
//!
//! Every scheme is deterministic from its seed and assigns every sample to exactly one client (no sample is
//! dropped or duplicated). Clients may receive no samples under the Dirichlet and quantity-skew schemes; the
//! schemes that give every client a share (`iid`, `shards`, `contiguous`) require at least one sample (shard)
//! per client. Each scheme draws from its own random stream derived from the seed, so the same seed gives
//! unrelated streams for different schemes.
//!
//! "Cumulative rounding" (see [`cumulative_split`]) splits `m` items by weights `w` with boundaries
//! `b_i = round(m · (w_1 + … + w_i) / Σw)`, so the parts sum to `m` exactly and each is within one of its
//! exact share.
//!
//! The `[partition] scheme`s form the [`Partitioners`] family of [`fedsim_types::registry`]: each scheme's
//! module holds the function that splits and the scheme's configuration type (its `[partition]` table,
//! implementing [`Kind<Partitioners>`](fedsim_types::registry::Kind)), and `REGISTERED` below lists them
//! once. Adding a scheme: write its module, then add one line to that list.

use fedsim_types::registry::{Entry, Family, Spec};
use ndarray::ArrayView2;
use rand::{Rng, RngExt};
use rand_distr::{Distribution, Gamma};

use crate::{DataError, Dataset, Partition};

mod contiguous;
mod dirichlet;
mod iid;
mod local_test;
mod natural;
mod quantity_skew;
mod shards;

pub use contiguous::{ContiguousConfig, RowOrder, contiguous, contiguous_by_row_norm};
pub use dirichlet::{
    DirichletClassConfig, DirichletClientConfig, dirichlet_class, dirichlet_client,
};
pub use iid::{IidConfig, iid};
pub use local_test::{split_local_test, split_local_test_client};
pub use natural::NaturalConfig;
pub use quantity_skew::{QuantitySkewConfig, quantity_skew};
pub use shards::{ShardsConfig, shards};

/// Every registered scheme, in registration order: one line per scheme.
static REGISTERED: &[Entry<Partitioners>] = &[
    Entry::of::<NaturalConfig>(),
    Entry::of::<IidConfig>(),
    Entry::of::<ShardsConfig>(),
    Entry::of::<DirichletClientConfig>(),
    Entry::of::<DirichletClassConfig>(),
    Entry::of::<QuantitySkewConfig>(),
    Entry::of::<ContiguousConfig>(),
];

/// The partition family: `[partition] scheme = …`, every scheme listed in `REGISTERED`.
#[derive(Debug, Clone, Copy)]
pub struct Partitioners;

impl Family for Partitioners {
    const SECTION: &'static str = "partition";
    const TAG: &'static str = "scheme";
    type Capabilities = PartitionCapabilities;
    type Input<'a> = PartitionInput<'a>;
    type Output = Result<Partition, DataError>;

    fn registered() -> &'static [Entry<Self>] {
        REGISTERED
    }

    fn default_spec() -> Spec<Self> {
        Spec::new(NaturalConfig {})
    }

    /// `local_test_fraction = f`: every client keeps a fraction of its samples apart as its own test
    /// set (any scheme; see [`PartitionSpecExt::local_test_fraction`]).
    const COMMON_KEYS: &'static [&'static str] = &["local_test_fraction"];
}

/// What the scenario asks of a [`PartitionSpec`] besides its scheme.
pub trait PartitionSpecExt {
    /// `partition.local_test_fraction`, in `[0, 1)` (0 when unset): the fraction of every client's
    /// samples held out as its local test set ([`split_local_test`]) for federated evaluation.
    fn local_test_fraction(&self) -> Result<f64, fedsim_types::ConfigError>;
}

impl PartitionSpecExt for PartitionSpec {
    fn local_test_fraction(&self) -> Result<f64, fedsim_types::ConfigError> {
        let key = "partition.local_test_fraction";
        let Some(f) = self.common_as::<f64>("local_test_fraction")? else {
            return Ok(0.0);
        };
        if !(0.0..1.0).contains(&f) {
            return Err(fedsim_types::ConfigError::new(
                key,
                format!("must be in [0, 1) (a fraction of every client's samples), got {f}"),
            ));
        }
        Ok(f)
    }
}

/// The scenario's `[partition]` section: a registered scheme and its settings (`natural` by default).
pub type PartitionSpec = Spec<Partitioners>;

/// What a configured partition scheme needs from the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionCapabilities {
    /// Keeps the data set's own split ([`PartitionInput::natural`]) instead of splitting the samples:
    /// only data sets that have one (synthetic data) can use it, which [`crate::load_federated`] checks
    /// before reading any file.
    pub uses_natural_split: bool,
    /// Needs the feature rows ([`PartitionInput::features`]), not only the labels; [`partition_labels`]
    /// refuses such schemes.
    pub needs_features: bool,
}

impl PartitionCapabilities {
    /// A scheme that splits the samples from their labels (or their count) alone.
    pub const LABELS: PartitionCapabilities = PartitionCapabilities {
        uses_natural_split: false,
        needs_features: false,
    };
}

/// What building a partition takes: the training samples, the number of clients, the seed and the
/// data set's own split where it has one.
#[derive(Debug, Clone, Copy)]
pub struct PartitionInput<'a> {
    /// Class of every training sample, each `< num_classes`.
    pub labels: &'a [u32],
    /// Number of classes.
    pub num_classes: usize,
    /// The feature rows (one per label), when the caller has them.
    pub features: Option<ArrayView2<'a, f32>>,
    /// The data set's own split into clients, when it has one (synthetic data).
    pub natural: Option<&'a Partition>,
    /// Number of clients.
    pub num_clients: usize,
    /// The seed the scheme's random stream derives from.
    pub seed: u64,
}

impl<'a> PartitionInput<'a> {
    /// The samples of `train`, without a natural split.
    pub fn new(train: &'a Dataset, num_clients: usize, seed: u64) -> Self {
        Self {
            labels: &train.y,
            num_classes: train.num_classes,
            features: Some(train.x.view()),
            natural: None,
            num_clients,
            seed,
        }
    }

    /// Labels alone (`labels[i] < num_classes` is the class of sample `i`), without features or a
    /// natural split.
    pub fn from_labels(
        labels: &'a [u32],
        num_classes: usize,
        num_clients: usize,
        seed: u64,
    ) -> Self {
        Self {
            labels,
            num_classes,
            features: None,
            natural: None,
            num_clients,
            seed,
        }
    }

    /// The same input with the data set's own split.
    #[must_use]
    pub fn with_natural(self, natural: &'a Partition) -> Self {
        Self {
            natural: Some(natural),
            ..self
        }
    }
}

/// Splits the samples of `train` among `num_clients` clients according to `spec`, deterministically from `seed`.
///
/// `scheme = "natural"` is an error here: only the synthetic data set has a natural split, and
/// [`crate::load_federated`] handles it. All other schemes assign every sample to exactly one client. The
/// settings are validated first ([`DataError::Config`] names the bad key).
pub fn partition(
    train: &Dataset,
    spec: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<Partition, DataError> {
    spec.validate()?
        .build(PartitionInput::new(train, num_clients, seed))
}

/// Like [`partition`], from the labels alone (`labels[i] < num_classes` is the class of sample `i`); the
/// schemes that need the features (`contiguous` with `sort_by = "row_norm"`) are an error.
pub fn partition_labels(
    labels: &[u32],
    num_classes: usize,
    spec: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<Partition, DataError> {
    spec.validate()?.build(PartitionInput::from_labels(
        labels,
        num_classes,
        num_clients,
        seed,
    ))
}

/// The error for `scheme = "natural"` on a data set without a natural split.
pub(crate) fn no_natural_split() -> DataError {
    DataError::Spec(
        "this data set has no natural split into clients (only synthetic and LEAF data have one); choose a \
         partition scheme: partition.scheme = \"iid\", \"shards\", \"dirichlet_client\", \"dirichlet_class\", \
         \"quantity_skew\" or \"contiguous\""
            .into(),
    )
}

fn check_clients(num_clients: usize) -> Result<(), DataError> {
    if num_clients == 0 {
        return Err(DataError::Spec(
            "num_clients must be at least 1, got 0".into(),
        ));
    }
    Ok(())
}

fn check_clients_le_samples(num_clients: usize, n: usize, scheme: &str) -> Result<(), DataError> {
    check_clients(num_clients)?;
    if num_clients > n {
        return Err(DataError::Spec(format!(
            "num_clients = {num_clients} exceeds the {n} training samples; partition.scheme = \"{scheme}\" needs at \
             least one sample per client"
        )));
    }
    Ok(())
}

fn check_positive(key: &str, v: f64) -> Result<(), DataError> {
    if !(v.is_finite() && v > 0.0) {
        return Err(DataError::Spec(format!(
            "{key} must be positive and finite, got {v}"
        )));
    }
    Ok(())
}

fn check_labels(labels: &[u32], num_classes: usize) -> Result<(), DataError> {
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= num_classes)
    {
        return Err(DataError::Spec(format!(
            "label {l} of sample {i} is not below num_classes = {num_classes}"
        )));
    }
    Ok(())
}

/// Boundaries of a cumulative-rounding split of `count` items by non-negative `weights`: returns
/// `weights.len() + 1` non-decreasing offsets from `0` to `count`; part `i` is `offsets[i]..offsets[i + 1]`.
///
/// If the weights sum to zero (or are not finite), everything goes to the last part.
pub fn cumulative_split(count: usize, weights: &[f64]) -> Vec<usize> {
    let total: f64 = weights.iter().sum();
    let mut out = Vec::with_capacity(weights.len() + 1);
    out.push(0);
    let mut cum = 0.0;
    for (i, &w) in weights.iter().enumerate() {
        let b = if i + 1 == weights.len() {
            count
        } else if total > 0.0 && total.is_finite() {
            cum += w;
            (((count as f64) * cum / total).round() as usize).min(count)
        } else {
            0
        };
        let prev = out.last().copied().unwrap_or(0);
        out.push(b.max(prev));
    }
    out
}

/// Logarithm of a `Gamma(shape, 1)` draw, accurate for tiny shapes (where the draw itself underflows to 0):
/// for `shape < 1` it uses `G(a) = G(a + 1) · U^(1/a)`.
fn log_gamma_draw<R: Rng + ?Sized>(shape: f64, gamma: &Gamma<f64>, rng: &mut R) -> f64 {
    let g: f64 = gamma.sample(rng);
    if shape >= 1.0 {
        g.ln()
    } else {
        let u: f64 = 1.0 - rng.random::<f64>(); // in (0, 1]
        g.ln() + u.ln() / shape
    }
}

/// The gamma distribution used for `Dir(alpha)` draws: `Gamma(alpha, 1)` or `Gamma(alpha + 1, 1)` for
/// `alpha < 1` (see [`log_gamma_draw`]).
fn dirichlet_gamma(key: &str, alpha: f64) -> Result<Gamma<f64>, DataError> {
    check_positive(key, alpha)?;
    let shape = if alpha < 1.0 { alpha + 1.0 } else { alpha };
    Gamma::new(shape, 1.0).map_err(|e| DataError::Spec(format!("{key} = {alpha}: {e}")))
}

/// Unnormalised log-weights of a symmetric `Dir(alpha·1_k)` draw: `log g_i` with `g_i ~ Gamma(alpha, 1)`.
/// Normalising `exp(log g_i)` gives the Dirichlet sample; working in logs keeps tiny alphas exact.
fn dirichlet_log_weights<R: Rng + ?Sized>(
    alpha: f64,
    gamma: &Gamma<f64>,
    k: usize,
    rng: &mut R,
) -> Vec<f64> {
    (0..k).map(|_| log_gamma_draw(alpha, gamma, rng)).collect()
}

/// `exp(v - max(v))`: positive weights proportional to `exp(v)`, the largest being 1.
fn softmax_weights(logs: &[f64]) -> Vec<f64> {
    let m = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    logs.iter().map(|&l| (l - m).exp()).collect()
}

/// Draws a probability vector from the symmetric Dirichlet distribution `Dir(alpha·1_k)` (built from Gamma
/// draws, numerically safe for tiny `alpha`). `alpha` must be positive and finite.
pub fn sample_dirichlet<R: Rng + ?Sized>(
    alpha: f64,
    k: usize,
    rng: &mut R,
) -> Result<Vec<f64>, DataError> {
    let gamma = dirichlet_gamma("alpha", alpha)?;
    let mut w = softmax_weights(&dirichlet_log_weights(alpha, &gamma, k, rng));
    let s: f64 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= s);
    Ok(w)
}

fn from_perm_with_offsets(perm: Vec<u32>, offsets: Vec<usize>) -> Partition {
    Partition::from_csr(offsets, perm)
}

fn identity(n: usize) -> Vec<u32> {
    (0..n as u32).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::util::rng_for;

    /// Asserts that the partition assigns each of `0..n` exactly once.
    fn assert_exact_cover(p: &Partition, n: usize) {
        let mut all: Vec<u32> = (0..p.num_clients())
            .flat_map(|k| p.client(k).iter().copied())
            .collect();
        assert_eq!(all.len(), n, "total assigned");
        all.sort_unstable();
        assert!(
            all.iter().enumerate().all(|(i, &v)| v as usize == i),
            "not a permutation of 0..{n}"
        );
    }

    /// MNIST-like labels: `per_class` samples of each of 10 classes, interleaved.
    fn mnist_like(per_class: usize) -> Vec<u32> {
        (0..per_class * 10).map(|i| (i % 10) as u32).collect()
    }

    fn histogram(p: &Partition, k: usize, labels: &[u32], c: usize) -> Vec<usize> {
        let mut h = vec![0; c];
        for &i in p.client(k) {
            h[labels[i as usize] as usize] += 1;
        }
        h
    }

    /// Mean over non-empty clients of the share of their most frequent class.
    fn mean_dominance(p: &Partition, labels: &[u32]) -> f64 {
        let (mut sum, mut count) = (0.0, 0);
        for k in 0..p.num_clients() {
            let h = histogram(p, k, labels, 10);
            let total: usize = h.iter().sum();
            if total > 0 {
                sum += *h.iter().max().unwrap() as f64 / total as f64;
                count += 1;
            }
        }
        sum / count as f64
    }

    #[test]
    fn cumulative_split_rounds() {
        assert_eq!(cumulative_split(10, &[1.0, 1.0, 1.0]), vec![0, 3, 7, 10]);
        assert_eq!(cumulative_split(5, &[0.0, 1.0]), vec![0, 0, 5]);
        assert_eq!(cumulative_split(0, &[1.0, 2.0]), vec![0, 0, 0]);
        assert_eq!(cumulative_split(4, &[0.0, 0.0]), vec![0, 0, 4]);
        assert_eq!(cumulative_split(7, &[]), vec![0]);
    }

    #[test]
    fn iid_sizes_and_cover() {
        let p = iid(103, 10, 1).unwrap();
        assert_exact_cover(&p, 103);
        let sizes: Vec<usize> = (0..10).map(|k| p.client_len(k)).collect();
        assert_eq!(sizes, vec![11, 11, 11, 10, 10, 10, 10, 10, 10, 10]);
        assert_eq!(p, iid(103, 10, 1).unwrap());
        assert_ne!(p, iid(103, 10, 2).unwrap());
        let e = iid(5, 6, 0).unwrap_err().to_string();
        assert!(
            e.contains("num_clients = 6") && e.contains("5 training samples"),
            "{e}"
        );
        assert!(
            iid(5, 0, 0)
                .unwrap_err()
                .to_string()
                .contains("num_clients must be at least 1")
        );
    }

    #[test]
    fn shards_mcmahan() {
        // 100 clients x 2 shards of 300 on MNIST-sized labels.
        let labels = mnist_like(6000);
        let p = shards(&labels, 100, 2, 7).unwrap();
        assert_exact_cover(&p, 60_000);
        let mut at_most_two = 0;
        for k in 0..100 {
            assert_eq!(p.client_len(k), 600);
            let h = histogram(&p, k, &labels, 10);
            let seen = h.iter().filter(|&&c| c > 0).count();
            // Shards of 300 never straddle classes of 6000: each shard is one label.
            assert!(seen <= 2, "client {k}: {h:?}");
            assert!(
                h.iter().all(|&c| c == 0 || c == 300 || c == 600),
                "client {k}: {h:?}"
            );
            at_most_two += usize::from(seen <= 2);
        }
        assert_eq!(at_most_two, 100);
        assert_eq!(p, shards(&labels, 100, 2, 7).unwrap());
        assert_ne!(p, shards(&labels, 100, 2, 8).unwrap());
    }

    #[test]
    fn shards_uneven_labels_mostly_two_labels() {
        // Unequal class sizes: shards may straddle two classes, but most clients still see at most 2 labels.
        let labels: Vec<u32> = (0..6000u32).map(|i| (i * 7 + i / 13) % 10).collect();
        let p = shards(&labels, 50, 2, 3).unwrap();
        assert_exact_cover(&p, 6000);
        let few = (0..50)
            .filter(|&k| {
                histogram(&p, k, &labels, 10)
                    .iter()
                    .filter(|&&c| c > 0)
                    .count()
                    <= 2
            })
            .count();
        assert!(few >= 30, "{few}");
        for k in 0..50 {
            assert_eq!(p.client_len(k), 120);
        }
    }

    #[test]
    fn shards_remainder_and_errors() {
        let labels: Vec<u32> = (0..23).map(|i| i % 3).collect();
        let p = shards(&labels, 5, 2, 0).unwrap();
        assert_exact_cover(&p, 23);
        assert!((0..5).all(|k| (4..=6).contains(&p.client_len(k))));
        let e = shards(&labels, 12, 2, 0).unwrap_err().to_string();
        assert!(
            e.contains("shards_per_client = 2") && e.contains("23 training samples"),
            "{e}"
        );
        let e = shards(&labels, 2, 0, 0).unwrap_err().to_string();
        assert!(
            e.contains("partition.shards_per_client must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn contiguous_by_row_norm_sorts_stably_then_cuts_blocks() {
        let norms = [3.0f32, 1.0, 2.0, 1.0, 0.0, 2.0, 5.0];
        let train = Dataset {
            x: ndarray::Array2::from_shape_fn((norms.len(), 2), |(i, j)| {
                if j == 0 { norms[i].sqrt() } else { 0.0 }
            })
            .into(),
            y: vec![0; norms.len()],
            num_classes: 1,
            image: None,
        };
        let spec = PartitionSpec::new(ContiguousConfig {
            sort_by: RowOrder::RowNorm,
        });
        let p = partition(&train, &spec, 3, 0).unwrap();
        assert_exact_cover(&p, norms.len());
        // Sorted (ties in file order): 4, 1, 3, 2, 5, 0, 6; blocks of 2, the remainder to the last.
        let clients: Vec<Vec<u32>> = (0..3).map(|c| p.client(c).to_vec()).collect();
        assert_eq!(clients, vec![vec![4, 1], vec![3, 2], vec![5, 0, 6]]);
        assert!(partition_labels(&train.y, 1, &spec, 3, 0).is_err());
    }

    #[test]
    fn contiguous_blocks() {
        let p = contiguous(103, 10).unwrap();
        assert_exact_cover(&p, 103);
        for k in 0..9 {
            assert_eq!(
                p.client(k),
                (k as u32 * 10..k as u32 * 10 + 10)
                    .collect::<Vec<_>>()
                    .as_slice()
            );
        }
        assert_eq!(p.client(9), (90..103).collect::<Vec<u32>>().as_slice());
        assert!(contiguous(3, 4).is_err());
        let p = contiguous(4, 4).unwrap();
        assert!((0..4).all(|k| p.client_len(k) == 1));
    }

    #[test]
    fn dirichlet_client_skew() {
        let labels = mnist_like(1000);
        let tiny = dirichlet_client(&labels, 10, 50, 0.01, 1).unwrap();
        assert_exact_cover(&tiny, 10_000);
        // With tiny alpha, non-empty clients are dominated by a single class.
        let dom = mean_dominance(&tiny, &labels);
        println!("dirichlet_client alpha=0.01: mean dominance {dom}");
        assert!(dom >= 0.8, "{dom}");
        let big = dirichlet_client(&labels, 10, 10, 1e4, 1).unwrap();
        assert_exact_cover(&big, 10_000);
        for k in 0..10 {
            let h = histogram(&big, k, &labels, 10);
            assert!(
                h.iter().all(|&c| (80..=120).contains(&c)),
                "client {k}: {h:?}"
            );
        }
        let moderate = mean_dominance(&dirichlet_client(&labels, 10, 50, 1.0, 1).unwrap(), &labels);
        assert!(
            moderate < 0.6 && moderate > mean_dominance(&big, &labels),
            "{moderate}"
        );
        assert_eq!(tiny, dirichlet_client(&labels, 10, 50, 0.01, 1).unwrap());
        assert_ne!(tiny, dirichlet_client(&labels, 10, 50, 0.01, 2).unwrap());
        let e = dirichlet_client(&labels, 10, 5, -1.0, 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("partition.alpha must be positive") && e.contains("-1"),
            "{e}"
        );
        assert!(dirichlet_client(&labels, 10, 5, f64::NAN, 0).is_err());
        assert!(
            dirichlet_client(&labels, 5, 5, 1.0, 0)
                .unwrap_err()
                .to_string()
                .contains("num_classes")
        );
    }

    #[test]
    fn dirichlet_class_skew() {
        let labels = mnist_like(1000);
        let tiny = dirichlet_class(&labels, 10, 20, 0.001, 3).unwrap();
        assert_exact_cover(&tiny, 10_000);
        // Tiny beta: each class goes mostly to one client.
        let mut mean_max = 0.0;
        for c in 0..10u32 {
            let max = (0..20)
                .map(|k| histogram(&tiny, k, &labels, 10)[c as usize])
                .max()
                .unwrap();
            mean_max += max as f64 / 1000.0 / 10.0;
        }
        println!("dirichlet_class beta=0.001: mean largest class share {mean_max}");
        assert!(mean_max >= 0.8, "{mean_max}");
        let big = dirichlet_class(&labels, 10, 10, 1e4, 3).unwrap();
        for k in 0..10 {
            let h = histogram(&big, k, &labels, 10);
            assert!(
                h.iter().all(|&c| (80..=120).contains(&c)),
                "client {k}: {h:?}"
            );
        }
        // More clients than samples: fine, most get nothing.
        let p = dirichlet_class(&labels[..30], 10, 1000, 1.0, 0).unwrap();
        assert_exact_cover(&p, 30);
        assert_eq!(p.num_clients(), 1000);
        assert_eq!(tiny, dirichlet_class(&labels, 10, 20, 0.001, 3).unwrap());
        assert_ne!(tiny, dirichlet_class(&labels, 10, 20, 0.001, 4).unwrap());
        let e = dirichlet_class(&labels, 10, 5, 0.0, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("partition.beta must be positive"), "{e}");
    }

    #[test]
    fn quantity_skew_sizes() {
        let p = quantity_skew(10_000, 50, 2.0, 5).unwrap();
        assert_exact_cover(&p, 10_000);
        let sizes: Vec<usize> = (0..50).map(|k| p.client_len(k)).collect();
        let (min, max) = (*sizes.iter().min().unwrap(), *sizes.iter().max().unwrap());
        assert!(max > 10 * min.max(1), "{sizes:?}");
        let flat = quantity_skew(10_000, 10, 1e-6, 5).unwrap();
        assert!((0..10).all(|k| flat.client_len(k) == 1000));
        assert_eq!(p, quantity_skew(10_000, 50, 2.0, 5).unwrap());
        assert_ne!(p, quantity_skew(10_000, 50, 2.0, 6).unwrap());
        assert!(quantity_skew(3, 10, 1.0, 0).is_ok());
        let e = quantity_skew(10, 2, f64::INFINITY, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("partition.sigma must be positive"), "{e}");
    }

    #[test]
    fn empty_training_set() {
        assert!(dirichlet_client(&[], 10, 3, 0.5, 0).unwrap().total() == 0);
        assert!(dirichlet_class(&[], 10, 3, 0.5, 0).unwrap().total() == 0);
        assert!(quantity_skew(0, 3, 0.5, 0).unwrap().total() == 0);
        assert!(iid(0, 1, 0).is_err());
        assert!(contiguous(0, 1).is_err());
        assert!(shards(&[], 1, 1, 0).is_err());
    }

    #[test]
    fn natural_is_rejected() {
        let e = partition_labels(&[0, 1], 2, &PartitionSpec::default(), 1, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no natural split") && e.contains("iid"), "{e}");
    }

    #[test]
    fn dirichlet_sampler() {
        let mut rng = rng_for(0, "test", 0);
        for alpha in [1e-3, 0.1, 1.0, 50.0] {
            let q = sample_dirichlet(alpha, 7, &mut rng).unwrap();
            assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(q.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
        assert!(sample_dirichlet(0.0, 3, &mut rng).is_err());
        // Moments of Dir(a·1_k): E[q_i] = 1/k, E[q_i²] = (a + 1) / (k (k a + 1)).
        for (a, k) in [(0.05f64, 4usize), (0.5, 3), (3.0, 5)] {
            let draws = 40_000;
            let (mut m1, mut m2) = (0.0, 0.0);
            for _ in 0..draws {
                let q = sample_dirichlet(a, k, &mut rng).unwrap();
                m1 += q[0] / draws as f64;
                m2 += q[0] * q[0] / draws as f64;
            }
            let want2 = (a + 1.0) / (k as f64 * (k as f64 * a + 1.0));
            assert!((m1 - 1.0 / k as f64).abs() < 0.01, "a={a}: E[q]={m1}");
            assert!((m2 - want2).abs() < 0.01, "a={a}: E[q²]={m2}, want {want2}");
        }
    }

    fn scheme() -> impl Strategy<Value = PartitionSpec> {
        prop_oneof![
            Just(PartitionSpec::new(IidConfig {})),
            (1usize..4).prop_map(|s| PartitionSpec::new(ShardsConfig {
                shards_per_client: s
            })),
            (0.001f64..100.0).prop_map(|alpha| PartitionSpec::new(DirichletClientConfig { alpha })),
            (0.001f64..100.0).prop_map(|beta| PartitionSpec::new(DirichletClassConfig { beta })),
            (0.01f64..5.0).prop_map(|sigma| PartitionSpec::new(QuantitySkewConfig { sigma })),
            Just(PartitionSpec::new(ContiguousConfig {
                sort_by: RowOrder::File
            })),
        ]
    }

    proptest! {
        #[test]
        fn prop_every_sample_exactly_once(
            labels in proptest::collection::vec(0u32..6, 0..300),
            clients in 1usize..40,
            spec in scheme(),
            seed in any::<u64>(),
        ) {
            let n = labels.len();
            let shards_per_client = spec.config::<ShardsConfig>().map(|c| c.shards_per_client);
            let one_per_client = matches!(spec.kind(), "iid" | "contiguous");
            match partition_labels(&labels, 6, &spec, clients, seed) {
                Ok(p) => {
                    prop_assert_eq!(p.num_clients(), clients);
                    assert_exact_cover(&p, n);
                    prop_assert_eq!(&p, &partition_labels(&labels, 6, &spec, clients, seed).unwrap());
                    if let Some(shards_per_client) = shards_per_client {
                        let s = n / (clients * shards_per_client);
                        for k in 0..clients {
                            let len = p.client_len(k);
                            prop_assert!(len >= s * shards_per_client && len <= (s + 1) * shards_per_client);
                        }
                    }
                    if one_per_client {
                        prop_assert!((0..clients).all(|k| p.client_len(k) >= n / clients));
                    }
                }
                Err(e) => {
                    // Only the schemes that need a share per client may refuse, and only for too few samples.
                    let needed = match shards_per_client {
                        Some(shards_per_client) => clients * shards_per_client,
                        None if one_per_client => clients,
                        None => 0,
                    };
                    prop_assert!(needed > n, "unexpected error {}", e);
                }
            }
        }
    }
}

#[cfg(test)]
mod registry_tests {
    use fedsim_types::registry::{self, check_family};

    use super::*;

    /// A small data set for the registry's checks: 40 samples of 4 classes, 3 features.
    fn train() -> &'static Dataset {
        let n = 40;
        Box::leak(Box::new(Dataset {
            x: ndarray::Array2::from_shape_fn((n, 3), |(i, j)| (i * 3 + j) as f32 * 0.1).into(),
            y: (0..n as u32).map(|i| i % 4).collect(),
            num_classes: 4,
            image: None,
        }))
    }

    fn spec(text: &str) -> Result<PartitionSpec, fedsim_types::ConfigError> {
        PartitionSpec::from_table(toml::from_str(text).unwrap())
    }

    #[test]
    fn schemes_are_unique_and_examples_parse_validate_and_build() {
        let train = train();
        let natural: &'static Partition = Box::leak(Box::new(contiguous(train.len(), 5).unwrap()));
        check_family::<Partitioners>(|| PartitionInput::new(train, 5, 7).with_natural(natural));
        for e in registry::all::<Partitioners>() {
            let spec = e.example_spec().unwrap();
            let input = PartitionInput::new(train, 5, 7).with_natural(natural);
            let p = spec.validate().unwrap().build(input).unwrap();
            assert_eq!(p.num_clients(), 5, "{}", e.kind);
            assert_eq!(p.total(), train.len(), "{}", e.kind);
        }
        let kinds: Vec<&str> = registry::all::<Partitioners>()
            .iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "natural",
                "iid",
                "shards",
                "dirichlet_client",
                "dirichlet_class",
                "quantity_skew",
                "contiguous"
            ]
        );
    }

    #[test]
    fn defaults_and_capabilities() {
        let d = PartitionSpec::default();
        assert_eq!(d.kind(), "natural");
        assert!(d.capabilities().uses_natural_split);
        let s = spec("scheme = \"shards\"").unwrap();
        assert_eq!(s.config::<ShardsConfig>().unwrap().shards_per_client, 2);
        assert_eq!(s.capabilities(), PartitionCapabilities::LABELS);
        let s = spec("scheme = \"contiguous\"").unwrap();
        assert_eq!(
            s.config::<ContiguousConfig>().unwrap().sort_by,
            RowOrder::File
        );
        assert!(!s.capabilities().needs_features);
        let s = spec("scheme = \"contiguous\"\nsort_by = \"row_norm\"").unwrap();
        assert!(s.capabilities().needs_features);
        // The resolved table writes the tag and every default.
        let t = spec("scheme = \"shards\"").unwrap().to_table();
        assert_eq!(t.get("scheme"), Some(&toml::Value::String("shards".into())));
        assert_eq!(t.get("shards_per_client"), Some(&toml::Value::Integer(2)));
    }

    #[test]
    fn unknown_schemes_keys_and_bad_values_name_the_key() {
        let e = spec("scheme = \"nope\"").unwrap_err();
        assert_eq!(e.key, "partition.scheme");
        assert!(e.message.contains("dirichlet_client"), "{e}");
        let e = spec("alpha = 1.0").unwrap_err();
        assert_eq!(e.key, "partition.scheme");
        let e = spec("scheme = \"iid\"\nalpha = 1.0").unwrap_err();
        assert_eq!(e.key, "partition");
        assert!(e.message.contains("alpha"), "{e}");
        let e = spec("scheme = \"natural\"\nshards_per_client = 2").unwrap_err();
        assert!(e.message.contains("shards_per_client"), "{e}");
        let e = spec("scheme = \"dirichlet_client\"").unwrap_err();
        assert!(e.message.contains("alpha"), "{e}");
        let e = spec("scheme = \"contiguous\"\nsort_by = \"size\"").unwrap_err();
        assert_eq!(e.key, "partition");
        for (text, key) in [
            (
                "scheme = \"dirichlet_client\"\nalpha = 0.0",
                "partition.alpha",
            ),
            (
                "scheme = \"dirichlet_class\"\nbeta = -1.0",
                "partition.beta",
            ),
            ("scheme = \"quantity_skew\"\nsigma = nan", "partition.sigma"),
            (
                "scheme = \"shards\"\nshards_per_client = 0",
                "partition.shards_per_client",
            ),
        ] {
            let e = spec(text).unwrap().validate().unwrap_err();
            assert_eq!(e.key, key, "{text}");
            // Building goes through validation too.
            let e = partition_labels(&[0, 1, 2, 3], 4, &spec(text).unwrap(), 2, 0).unwrap_err();
            assert!(matches!(&e, DataError::Config(c) if c.key == key), "{e}");
        }
    }

    #[test]
    fn natural_builds_the_natural_split_only() {
        let train = train();
        let natural = contiguous(train.len(), 4).unwrap();
        let spec = PartitionSpec::default();
        let valid = spec.validate().unwrap();
        let p = valid
            .build(PartitionInput::new(train, 4, 0).with_natural(&natural))
            .unwrap();
        assert_eq!(p, natural);
        assert!(valid.build(PartitionInput::new(train, 4, 0)).is_err());
    }

    #[test]
    fn specs_build_what_the_functions_build() {
        let train = train();
        let (k, seed) = (5, 11);
        let labels = &train.y;
        let cases: Vec<(&str, Partition)> = vec![
            ("scheme = \"iid\"", iid(labels.len(), k, seed).unwrap()),
            ("scheme = \"shards\"", shards(labels, k, 2, seed).unwrap()),
            (
                "scheme = \"dirichlet_client\"\nalpha = 0.3",
                dirichlet_client(labels, 4, k, 0.3, seed).unwrap(),
            ),
            (
                "scheme = \"dirichlet_class\"\nbeta = 0.3",
                dirichlet_class(labels, 4, k, 0.3, seed).unwrap(),
            ),
            (
                "scheme = \"quantity_skew\"\nsigma = 1.5",
                quantity_skew(labels.len(), k, 1.5, seed).unwrap(),
            ),
            (
                "scheme = \"contiguous\"",
                contiguous(labels.len(), k).unwrap(),
            ),
            (
                "scheme = \"contiguous\"\nsort_by = \"row_norm\"",
                contiguous_by_row_norm(train, k).unwrap(),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                partition(train, &spec(text).unwrap(), k, seed).unwrap(),
                want,
                "{text}"
            );
        }
    }
}
