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

use rand::seq::SliceRandom;
use rand::{Rng, RngExt};
use rand_distr::{Distribution, Gamma, StandardNormal};

use crate::util::{check_u32_len, rng_for};
use crate::{DataError, Dataset, Partition, PartitionSpec, RowOrder};

/// Splits the samples of `train` among `num_clients` clients according to `spec`, deterministically from `seed`.
///
/// [`PartitionSpec::Natural`] is an error here: only the synthetic data set has a natural split, and
/// [`crate::load_federated`] handles it. All other schemes assign every sample to exactly one client.
pub fn partition(
    train: &Dataset,
    spec: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<Partition, DataError> {
    match spec {
        PartitionSpec::Contiguous {
            sort_by: RowOrder::RowNorm,
        } => contiguous_by_row_norm(train, num_clients),
        _ => partition_labels(&train.y, train.num_classes, spec, num_clients, seed),
    }
}

/// Like [`partition`], from the labels alone (`labels[i] < num_classes` is the class of sample `i`).
pub fn partition_labels(
    labels: &[u32],
    num_classes: usize,
    spec: &PartitionSpec,
    num_clients: usize,
    seed: u64,
) -> Result<Partition, DataError> {
    let n = labels.len();
    match *spec {
        PartitionSpec::Natural => Err(no_natural_split()),
        PartitionSpec::Iid => iid(n, num_clients, seed),
        PartitionSpec::Shards { shards_per_client } => {
            shards(labels, num_clients, shards_per_client, seed)
        }
        PartitionSpec::DirichletClient { alpha } => {
            dirichlet_client(labels, num_classes, num_clients, alpha, seed)
        }
        PartitionSpec::DirichletClass { beta } => {
            dirichlet_class(labels, num_classes, num_clients, beta, seed)
        }
        PartitionSpec::QuantitySkew { sigma } => quantity_skew(n, num_clients, sigma, seed),
        PartitionSpec::Contiguous {
            sort_by: RowOrder::File,
        } => contiguous(n, num_clients),
        PartitionSpec::Contiguous {
            sort_by: RowOrder::RowNorm,
        } => Err(DataError::Spec(
            "partition.sort_by = \"row_norm\" needs the features, not only the labels".into(),
        )),
    }
}

/// The error for `scheme = "natural"` on a data set without a natural split.
pub(crate) fn no_natural_split() -> DataError {
    DataError::Spec(
        "this data set has no natural split into clients (only synthetic data has one); choose a partition \
         scheme: partition.scheme = \"iid\", \"shards\", \"dirichlet_client\", \"dirichlet_class\", \
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

/// IID split: shuffles the `n` sample indices and cuts them into `num_clients` chunks of `floor(n / clients)`,
/// the first `n mod clients` clients getting one more. Every sample is assigned. Needs `1 <= num_clients <= n`.
pub fn iid(n: usize, num_clients: usize, seed: u64) -> Result<Partition, DataError> {
    check_clients_le_samples(num_clients, n, "iid")?;
    check_u32_len(n, "the training set")?;
    let mut perm = identity(n);
    perm.shuffle(&mut rng_for(seed, "partition.iid", 0));
    let (base, rem) = (n / num_clients, n % num_clients);
    let offsets = (0..=num_clients).map(|k| k * base + k.min(rem)).collect();
    Ok(from_perm_with_offsets(perm, offsets))
}

/// McMahan's pathological non-IID split: sorts the samples by label (stable, ties by index), cuts the sorted
/// order into `num_clients · shards_per_client` shards of `floor(n / shards)` samples (the first `n mod shards`
/// shards get one more, so every sample is assigned) and gives each client `shards_per_client` shards chosen
/// at random without replacement. With MNIST, 100 clients and 2 shards each, every client gets 2 shards of 300.
pub fn shards(
    labels: &[u32],
    num_clients: usize,
    shards_per_client: usize,
    seed: u64,
) -> Result<Partition, DataError> {
    let n = labels.len();
    check_clients(num_clients)?;
    if shards_per_client == 0 {
        return Err(DataError::Spec(
            "partition.shards_per_client must be at least 1, got 0".into(),
        ));
    }
    check_u32_len(n, "the training set")?;
    let num_shards = num_clients.checked_mul(shards_per_client).filter(|&s| s <= n).ok_or_else(|| {
        DataError::Spec(format!(
            "num_clients = {num_clients} times partition.shards_per_client = {shards_per_client} exceeds the {n} \
             training samples; every shard needs at least one sample"
        ))
    })?;
    let mut sorted = identity(n);
    sorted.sort_by_key(|&i| labels[i as usize]); // stable: ties stay in index order
    let (base, rem) = (n / num_shards, n % num_shards);
    let shard_start = |j: usize| j * base + j.min(rem);
    let mut order: Vec<usize> = (0..num_shards).collect();
    order.shuffle(&mut rng_for(seed, "partition.shards", 0));
    let mut offsets = Vec::with_capacity(num_clients + 1);
    offsets.push(0);
    let mut indices = Vec::with_capacity(n);
    for client in order.chunks_exact(shards_per_client) {
        let mut mine: Vec<usize> = client.to_vec();
        mine.sort_unstable();
        for j in mine {
            indices.extend_from_slice(&sorted[shard_start(j)..shard_start(j + 1)]);
        }
        offsets.push(indices.len());
    }
    Ok(Partition::from_csr(offsets, indices))
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

/// Quantity skew: IID labels (the indices are shuffled) but client sizes proportional to log-normal draws
/// `exp(sigma · z_n)`, `z_n ~ N(0, 1)`, with cumulative rounding. Every sample is assigned; with more clients
/// than samples, or a large `sigma`, some clients get none.
pub fn quantity_skew(
    n: usize,
    num_clients: usize,
    sigma: f64,
    seed: u64,
) -> Result<Partition, DataError> {
    check_clients(num_clients)?;
    check_positive("partition.sigma", sigma)?;
    check_u32_len(n, "the training set")?;
    let mut rng = rng_for(seed, "partition.quantity_skew", 0);
    let logs: Vec<f64> = (0..num_clients)
        .map(|_| {
            let z: f64 = StandardNormal.sample(&mut rng);
            sigma * z
        })
        .collect();
    let offsets = cumulative_split(n, &softmax_weights(&logs));
    let mut perm = identity(n);
    perm.shuffle(&mut rng);
    Ok(from_perm_with_offsets(perm, offsets))
}

/// EF21's sequential split (algorithms.md §4.8): client `k` gets rows `k·b .. (k+1)·b` in file order with
/// `b = floor(n / clients)`, the last client also gets the remainder. No shuffling; every sample is assigned.
/// Needs `1 <= num_clients <= n`.
pub fn contiguous(n: usize, num_clients: usize) -> Result<Partition, DataError> {
    Ok(from_perm_with_offsets(
        identity(n),
        contiguous_offsets(n, num_clients)?,
    ))
}

/// The block boundaries of [`contiguous`].
fn contiguous_offsets(n: usize, num_clients: usize) -> Result<Vec<usize>, DataError> {
    check_clients_le_samples(num_clients, n, "contiguous")?;
    check_u32_len(n, "the training set")?;
    let b = n / num_clients;
    let mut offsets: Vec<usize> = (0..num_clients).map(|k| k * b).collect();
    offsets.push(n);
    Ok(offsets)
}

/// [`contiguous`] after a stable sort of the rows by squared norm (f64 accumulation), ascending
/// (`sort_by = "row_norm"`).
pub fn contiguous_by_row_norm(train: &Dataset, num_clients: usize) -> Result<Partition, DataError> {
    let n = train.len();
    let offsets = contiguous_offsets(n, num_clients)?;
    let norms: Vec<f64> = train
        .x
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| v as f64 * v as f64).sum())
        .collect();
    let mut order = identity(n);
    order.sort_by(|&a, &b| norms[a as usize].total_cmp(&norms[b as usize]));
    Ok(from_perm_with_offsets(order, offsets))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

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
            }),
            y: vec![0; norms.len()],
            num_classes: 1,
            image: None,
        };
        let spec = PartitionSpec::Contiguous {
            sort_by: RowOrder::RowNorm,
        };
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
        let e = partition_labels(&[0, 1], 2, &PartitionSpec::Natural, 1, 0)
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
            Just(PartitionSpec::Iid),
            (1usize..4).prop_map(|s| PartitionSpec::Shards {
                shards_per_client: s
            }),
            (0.001f64..100.0).prop_map(|alpha| PartitionSpec::DirichletClient { alpha }),
            (0.001f64..100.0).prop_map(|beta| PartitionSpec::DirichletClass { beta }),
            (0.01f64..5.0).prop_map(|sigma| PartitionSpec::QuantitySkew { sigma }),
            Just(PartitionSpec::Contiguous {
                sort_by: RowOrder::File
            }),
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
            match partition_labels(&labels, 6, &spec, clients, seed) {
                Ok(p) => {
                    prop_assert_eq!(p.num_clients(), clients);
                    assert_exact_cover(&p, n);
                    prop_assert_eq!(&p, &partition_labels(&labels, 6, &spec, clients, seed).unwrap());
                    if let PartitionSpec::Shards { shards_per_client } = spec {
                        let s = n / (clients * shards_per_client);
                        for k in 0..clients {
                            let len = p.client_len(k);
                            prop_assert!(len >= s * shards_per_client && len <= (s + 1) * shards_per_client);
                        }
                    }
                    if matches!(spec, PartitionSpec::Iid | PartitionSpec::Contiguous { .. }) {
                        prop_assert!((0..clients).all(|k| p.client_len(k) >= n / clients));
                    }
                }
                Err(e) => {
                    // Only the schemes that need a share per client may refuse, and only for too few samples.
                    let needed = match spec {
                        PartitionSpec::Shards { shards_per_client } => clients * shards_per_client,
                        PartitionSpec::Iid | PartitionSpec::Contiguous { .. } => clients,
                        _ => 0,
                    };
                    prop_assert!(needed > n, "unexpected error {}", e);
                }
            }
        }
    }
}
