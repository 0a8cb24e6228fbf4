//! Local test splits (`[partition] local_test_fraction`): every client keeps a deterministic fraction of
//! its samples apart as its own test set, for federated (client-side) evaluation.
//!
//! Client `k` holds out `round(fraction · n_k)` of its `n_k` samples, stratified by label: the count is
//! shared among the client's labels in proportion to how many samples of each it holds (cumulative
//! rounding, so the parts add up exactly), and within a label the held-out samples are drawn from a random
//! stream of the seed and the client alone. So a client's split does not depend on any other client, and a
//! client process computes the same split as the simulator. The training samples keep their order in the
//! partition; the test samples are in ascending index order.

use fedsim_types::rng::{Purpose, stream};
use rand::seq::SliceRandom;

use super::cumulative_split;
use crate::Partition;

/// Tag of the local-test streams within [`Purpose::Data`] (their "round" coordinate).
const LOCAL_TEST_STREAM: u64 = 0x10CA_7E57;

/// Splits every client's samples of `partition` into (training, local test) partitions: a fraction
/// `fraction` in `[0, 1)` of each client's samples, stratified by `labels` (the label of every sample
/// index), drawn from `seed`.
pub fn split_local_test(
    partition: &Partition,
    labels: &[u32],
    fraction: f64,
    seed: u64,
) -> (Partition, Partition) {
    let k = partition.num_clients();
    let (mut train, mut test) = (Vec::with_capacity(k), Vec::with_capacity(k));
    for c in 0..k {
        let (tr, te) =
            split_local_test_client(partition.client(c), labels, fraction, seed, c as u64);
        train.push(tr);
        test.push(te);
    }
    (Partition::from_lists(train), Partition::from_lists(test))
}

/// One client's split of [`split_local_test`] (`own` are the indices of partition index `client`):
/// (training indices in partition order, test indices ascending). A process that holds some clients'
/// samples only (or its own data file) splits them with this, and gets the simulator's split.
pub fn split_local_test_client(
    own: &[u32],
    labels: &[u32],
    fraction: f64,
    seed: u64,
    client: u64,
) -> (Vec<u32>, Vec<u32>) {
    let n_test = (fraction * own.len() as f64).round() as usize;
    if n_test == 0 {
        return (own.to_vec(), Vec::new());
    }
    // The client's samples grouped by label, labels ascending, each group in partition order.
    let mut by_label: Vec<(u32, Vec<u32>)> = Vec::new();
    let mut sorted: Vec<u32> = own.to_vec();
    sorted.sort_by_key(|&i| (labels[i as usize], i));
    for i in sorted {
        let y = labels[i as usize];
        match by_label.last_mut() {
            Some((l, group)) if *l == y => group.push(i),
            _ => by_label.push((y, vec![i])),
        }
    }
    let sizes: Vec<f64> = by_label.iter().map(|(_, g)| g.len() as f64).collect();
    let bounds = cumulative_split(n_test, &sizes);
    let mut rng = stream(seed, Purpose::Data, LOCAL_TEST_STREAM, client);
    let mut test = Vec::with_capacity(n_test);
    for (j, (_, group)) in by_label.iter_mut().enumerate() {
        let take = (bounds[j + 1] - bounds[j]).min(group.len());
        group.shuffle(&mut rng);
        test.extend_from_slice(&group[..take]);
    }
    test.sort_unstable();
    let train = own
        .iter()
        .copied()
        .filter(|i| test.binary_search(i).is_err())
        .collect();
    (train, test)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| i % 3).collect()
    }

    #[test]
    fn splits_are_exact_stratified_disjoint_and_deterministic() {
        let ys = labels(300);
        // Client 0: 100 samples of 3 labels; client 1: 50 samples of label 1 only; client 2: none;
        // client 3: 3 samples.
        let p = Partition::from_lists(vec![
            (0..100).collect(),
            (100..250).filter(|i| i % 3 == 1).collect(),
            vec![],
            vec![297, 298, 299],
        ]);
        let (tr, te) = split_local_test(&p, &ys, 0.2, 7);
        assert_eq!(
            (0..4).map(|c| te.client_len(c)).collect::<Vec<_>>(),
            [20, 10, 0, 1]
        );
        for c in 0..4 {
            let mut all: Vec<u32> = tr.client(c).iter().chain(te.client(c)).copied().collect();
            all.sort_unstable();
            let mut own = p.client(c).to_vec();
            own.sort_unstable();
            assert_eq!(all, own, "client {c}: every sample once");
            assert!(te.client(c).windows(2).all(|w| w[0] < w[1]));
        }
        // Stratified: client 0 holds 34/33/33 of labels 0/1/2, so 20 test samples split 7/6/7 or so.
        let mut per = [0usize; 3];
        for &i in te.client(0) {
            per[ys[i as usize] as usize] += 1;
        }
        assert!(per.iter().all(|&n| (6..=7).contains(&n)), "{per:?}");
        // Training order is the partition's.
        let kept: Vec<u32> = p
            .client(0)
            .iter()
            .copied()
            .filter(|i| !te.client(0).contains(i))
            .collect();
        assert_eq!(tr.client(0), &kept[..]);
        // Deterministic, a function of (seed, client) only, and the seed matters.
        let again = split_local_test(&p, &ys, 0.2, 7);
        assert_eq!(again.1.client(0), te.client(0));
        let alone = split_local_test(
            &Partition::from_lists(vec![p.client(0).to_vec()]),
            &ys,
            0.2,
            7,
        );
        assert_eq!(alone.1.client(0), te.client(0));
        assert_ne!(split_local_test(&p, &ys, 0.2, 8).1.client(0), te.client(0));
        // Fraction 0 keeps everything for training.
        let (tr0, te0) = split_local_test(&p, &ys, 0.0, 7);
        assert_eq!(te0.total(), 0);
        assert_eq!(tr0.client(1), p.client(1));
    }
}
