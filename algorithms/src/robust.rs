//! Byzantine-robust aggregation rules for weight-based strategies (`../shared/algorithms.md` §5.5), and
//! the AGR-tailored attack of Shejwalkar & Houmansadr (NDSS 2021) that targets them.
//!
//! Every rule takes the `m` updates of a round (each a `d`-vector) and returns one `d`-vector. All but
//! norm clipping need every update of the round at once: **O(m·d) memory** (25 updates of 1M `f32`
//! parameters = 100 MB), against O(d) for a running mean. The rules are unweighted (sample counts are
//! ignored, as in the reference code). Coordinate-wise rules run in parallel over coordinates and
//! distance-based rules over pairs; the results do not depend on the thread count.

use rayon::prelude::*;

/// Coordinates per parallel work item of the coordinate-wise rules.
const CHUNK: usize = 4096;

/// Applies `f` to every coordinate's column of values (`col[i] = updates[i][j]`), writing `out[j]`.
fn per_coordinate(updates: &[&[f32]], f: impl Fn(&mut [f32]) -> f32 + Sync) -> Vec<f32> {
    let d = updates.first().map_or(0, |u| u.len());
    let m = updates.len();
    let mut out = vec![0.0f32; d];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut col = vec![0.0f32; m];
            for (k, o) in chunk.iter_mut().enumerate() {
                let j = c * CHUNK + k;
                for (v, u) in col.iter_mut().zip(updates) {
                    *v = u[j];
                }
                *o = f(&mut col);
            }
        });
    out
}

/// Unweighted mean (f64 accumulation).
pub fn mean(updates: &[&[f32]]) -> Vec<f32> {
    let m = updates.len().max(1) as f64;
    per_coordinate(updates, |col| {
        (col.iter().map(|&v| v as f64).sum::<f64>() / m) as f32
    })
}

/// Coordinate-wise median (the mean of the two middle values for an even count).
pub fn median(updates: &[&[f32]]) -> Vec<f32> {
    per_coordinate(updates, |col| {
        col.sort_unstable_by(f32::total_cmp);
        let m = col.len();
        if m == 0 {
            0.0
        } else if m % 2 == 1 {
            col[m / 2]
        } else {
            ((col[m / 2 - 1] as f64 + col[m / 2] as f64) / 2.0) as f32
        }
    })
}

/// Coordinate-wise trimmed mean: drops the `b` largest and `b` smallest values of every coordinate and
/// averages the rest. `b` is capped at `(m − 1)/2` so that at least one value remains.
pub fn trimmed_mean(updates: &[&[f32]], b: usize) -> Vec<f32> {
    let m = updates.len();
    let b = b.min(m.saturating_sub(1) / 2);
    per_coordinate(updates, |col| {
        col.sort_unstable_by(f32::total_cmp);
        let kept = &col[b..m - b];
        (kept.iter().map(|&v| v as f64).sum::<f64>() / kept.len().max(1) as f64) as f32
    })
}

/// Squared Euclidean distances between all pairs (f64 accumulation), row-major `m × m`.
pub fn pairwise_sq_distances(updates: &[&[f32]]) -> Vec<f64> {
    let m = updates.len();
    let pairs: Vec<(usize, usize)> = (0..m)
        .flat_map(|i| (i + 1..m).map(move |j| (i, j)))
        .collect();
    let dists: Vec<f64> = pairs
        .par_iter()
        .map(|&(i, j)| {
            updates[i]
                .iter()
                .zip(updates[j])
                .map(|(a, b)| {
                    let d = (*a - *b) as f64;
                    d * d
                })
                .sum()
        })
        .collect();
    let mut out = vec![0.0; m * m];
    for (&(i, j), &d) in pairs.iter().zip(&dists) {
        out[i * m + j] = d;
        out[j * m + i] = d;
    }
    out
}

/// Multi-Krum selection (Blanchard et al. 2017, as in the FRL reference code): while more than
/// `2f + 2` updates remain (and at least once), pick the remaining update with the smallest sum of
/// squared distances to its `r − 2 − f` nearest remaining updates (the sorted row includes the zero
/// distance to itself, as in the reference code; at least one term), ties to the lower index, and
/// remove it. With `multi = false` only the first pick is made (Krum). Returns the picked indices.
pub fn krum_select(dist: &[f64], m: usize, f: usize, multi: bool) -> Vec<usize> {
    let mut remaining: Vec<usize> = (0..m).collect();
    let mut picked = Vec::new();
    while !remaining.is_empty() && (picked.is_empty() || remaining.len() > 2 * f + 2) {
        let r = remaining.len();
        let k = r.saturating_sub(2 + f).max(1);
        let mut best: Option<(f64, usize)> = None;
        let mut row = Vec::with_capacity(r);
        for (pos, &i) in remaining.iter().enumerate() {
            row.clear();
            row.extend(remaining.iter().map(|&j| dist[i * m + j]));
            row.sort_unstable_by(f64::total_cmp);
            let score: f64 = row[..k.min(r)].iter().sum();
            if best.is_none_or(|(s, _)| score < s) {
                best = Some((score, pos));
            }
        }
        let Some((_, pos)) = best else { break };
        picked.push(remaining.remove(pos));
        if !multi {
            break;
        }
    }
    picked
}

/// Krum: the single selected update.
pub fn krum(updates: &[&[f32]], f: usize) -> Vec<f32> {
    let d = pairwise_sq_distances(updates);
    match krum_select(&d, updates.len(), f, false).first() {
        Some(&i) => updates[i].to_vec(),
        None => Vec::new(),
    }
}

/// Multi-Krum: the mean of the updates picked by [`krum_select`] with `multi = true`.
pub fn multi_krum(updates: &[&[f32]], f: usize) -> Vec<f32> {
    let d = pairwise_sq_distances(updates);
    let picked = krum_select(&d, updates.len(), f, true);
    let sel: Vec<&[f32]> = picked.iter().map(|&i| updates[i]).collect();
    mean(&sel)
}

/// Bulyan (El Mhamdi et al. 2018): selects `θ = m − 2f` updates by repeated Krum (at least one), then
/// averages, coordinate by coordinate, the `β = θ − 2f` selected values closest to their median (at
/// least one). Meant for `m ≥ 4f + 3`; smaller rounds degrade gracefully through the caps.
pub fn bulyan(updates: &[&[f32]], f: usize) -> Vec<f32> {
    let m = updates.len();
    let dist = pairwise_sq_distances(updates);
    let theta = m.saturating_sub(2 * f).max(1);
    let mut remaining: Vec<usize> = (0..m).collect();
    let mut selected = Vec::with_capacity(theta);
    while selected.len() < theta && !remaining.is_empty() {
        // One Krum pick among the remaining updates.
        let sub: Vec<f64> = remaining
            .iter()
            .flat_map(|&i| remaining.iter().map(move |&j| (i, j)))
            .map(|(i, j)| dist[i * m + j])
            .collect();
        let Some(&p) = krum_select(&sub, remaining.len(), f, false).first() else {
            break;
        };
        selected.push(remaining.remove(p));
    }
    let sel: Vec<&[f32]> = selected.iter().map(|&i| updates[i]).collect();
    let beta = selected.len().saturating_sub(2 * f).max(1);
    per_coordinate(&sel, |col| {
        col.sort_unstable_by(f32::total_cmp);
        let n = col.len();
        let med = if n % 2 == 1 {
            col[n / 2] as f64
        } else {
            (col[n / 2 - 1] as f64 + col[n / 2] as f64) / 2.0
        };
        // The β values closest to the median form a contiguous window of the sorted column.
        let mut lo = 0;
        for s in 1..=(n - beta) {
            let cur = (col[lo] as f64 - med)
                .abs()
                .max((col[lo + beta - 1] as f64 - med).abs());
            let next = (col[s] as f64 - med)
                .abs()
                .max((col[s + beta - 1] as f64 - med).abs());
            if next < cur {
                lo = s;
            }
        }
        (col[lo..lo + beta].iter().map(|&v| v as f64).sum::<f64>() / beta as f64) as f32
    })
}

/// Scales `update` down to Euclidean norm at most `max_norm` (norm clipping, Sun et al. 2019).
/// Returns the factor applied.
pub fn clip_norm(update: &mut [f32], max_norm: f64) -> f64 {
    let norm = update
        .iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt();
    if norm > max_norm && norm > 0.0 {
        let s = max_norm / norm;
        for v in update.iter_mut() {
            *v = (*v as f64 * s) as f32;
        }
        s
    } else {
        1.0
    }
}

/// The robust rule the AGR-tailored attack optimises against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgrTarget {
    /// Coordinate-wise trimmed mean with `b` = the number of attackers.
    TrimmedMean,
    /// Multi-Krum with `f` = the number of attackers.
    MultiKrum,
}

/// The AGR-tailored attack of Shejwalkar & Houmansadr (NDSS 2021, `our_attack_trmean` /
/// `our_attack_mkrum` of their code, with `dev_type = std` as FRL's reference code uses): `μ` and `σ`
/// are the coordinate-wise mean and standard deviation (unbiased; 0 with fewer than two) of the
/// `reference` updates, and the malicious update is `μ − λ·σ`. `λ` starts at 5 and follows a halving
/// search until the step falls below 1e-5, on a simulated aggregate of the `n_attackers` malicious
/// copies plus `others`: for the trimmed mean, `λ` grows while the deviation `‖agg − μ‖` of the
/// simulated aggregate (trimming `n_attackers`) keeps growing; for Multi-Krum, while every malicious
/// copy is still selected — precisely, while the first `min(n_attackers, picks)` Multi-Krum picks are
/// all malicious copies (the reference code demands all `n_attackers` among the picks, which can never
/// hold when the simulated set is too small for `2f + 2` to leave that many picks). Returns the
/// malicious update (every attacker sends it).
///
/// The two knowledge levels of the paper differ only in the sets passed: with *partial* knowledge
/// (FRL's reference code) both `reference` and `others` are the attackers' own honest updates; with
/// *full* knowledge `reference` is every honest update of the round and `others` the benign clients'
/// updates, so the simulated aggregate is the one the server will compute.
pub fn agr_tailored(
    reference: &[&[f32]],
    others: &[&[f32]],
    n_attackers: usize,
    target: AgrTarget,
) -> Vec<f32> {
    let n = reference.len();
    let mu = mean(reference);
    if n == 0 || n_attackers == 0 {
        return mu;
    }
    let sigma: Vec<f32> = if n < 2 {
        vec![0.0; mu.len()]
    } else {
        per_coordinate(reference, |col| {
            let m = col.iter().map(|&v| v as f64).sum::<f64>() / col.len() as f64;
            let var =
                col.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / (col.len() - 1) as f64;
            var.sqrt() as f32
        })
    };
    let make = |lambda: f64| -> Vec<f32> {
        mu.iter()
            .zip(&sigma)
            .map(|(m, s)| (*m as f64 - lambda * *s as f64) as f32)
            .collect()
    };
    // What the search evaluates at each λ, prepared once: `others` do not change between steps.
    let simulated = match target {
        AgrTarget::TrimmedMean => Simulated::TrimmedMean(SortedColumns::new(others)),
        AgrTarget::MultiKrum => Simulated::MultiKrum(KrumDistances::new(others, &mu, &sigma)),
    };
    let mut lambda = 5.0f64;
    let mut step = lambda;
    let mut succ = 0.0f64;
    let mut prev_loss = -1.0f64;
    while (succ - lambda).abs() > 1e-5 {
        let success = match &simulated {
            Simulated::TrimmedMean(cols) => {
                let loss = cols.deviation_with_copies(&make(lambda), n_attackers, &mu);
                let better = prev_loss < loss;
                prev_loss = loss;
                better
            }
            Simulated::MultiKrum(dist) => {
                let m = n_attackers + others.len();
                let picked =
                    krum_select(&dist.with_copies(lambda, n_attackers), m, n_attackers, true);
                let k = n_attackers.min(picked.len());
                k > 0 && picked[..k].iter().all(|&i| i < n_attackers)
            }
        };
        if success {
            succ = lambda;
            lambda += step / 2.0;
        } else {
            lambda -= step / 2.0;
        }
        step /= 2.0;
    }
    make(succ)
}

/// The aggregate [`agr_tailored`] simulates, prepared for cheap re-evaluation at each λ.
enum Simulated {
    TrimmedMean(SortedColumns),
    MultiKrum(KrumDistances),
}

/// Every coordinate's column of the fixed updates, sorted, with f64 prefix sums: the trimmed mean of
/// the column plus `a` copies of one value is then a binary search and two prefix differences, so a
/// search step costs O(d log m) instead of sorting d columns.
struct SortedColumns {
    /// Updates per column.
    n: usize,
    /// `sorted[j·n + k]`: the k-th smallest value of coordinate j.
    sorted: Vec<f32>,
    /// `prefix[j·(n + 1) + k]`: the sum of the k smallest values of coordinate j.
    prefix: Vec<f64>,
}

impl SortedColumns {
    fn new(updates: &[&[f32]]) -> Self {
        let n = updates.len();
        let d = updates.first().map_or(0, |u| u.len());
        let mut sorted = vec![0.0f32; d * n];
        let mut prefix = vec![0.0f64; d * (n + 1)];
        if n > 0 {
            sorted
                .par_chunks_mut(CHUNK * n)
                .zip(prefix.par_chunks_mut(CHUNK * (n + 1)))
                .enumerate()
                .for_each(|(c, (cols, sums))| {
                    for (k, (col, sum)) in
                        cols.chunks_mut(n).zip(sums.chunks_mut(n + 1)).enumerate()
                    {
                        let j = c * CHUNK + k;
                        for (v, u) in col.iter_mut().zip(updates) {
                            *v = u[j];
                        }
                        col.sort_unstable_by(f32::total_cmp);
                        for (i, &v) in col.iter().enumerate() {
                            sum[i + 1] = sum[i] + v as f64;
                        }
                    }
                });
        }
        Self { n, sorted, prefix }
    }

    /// `‖trimmed_mean(a copies of x, the columns; b = a) − μ‖`, as [`trimmed_mean`] would give it.
    fn deviation_with_copies(&self, x: &[f32], a: usize, mu: &[f32]) -> f64 {
        let n = self.n;
        let total = n + a;
        let b = a.min(total.saturating_sub(1) / 2);
        let (lo, hi) = (b, total - b);
        // Per-chunk partial sums in parallel, added in chunk order: independent of the thread count.
        let parts: Vec<f64> = x
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(c, xs)| {
                let mut acc = 0.0f64;
                for (k, &v) in xs.iter().enumerate() {
                    let j = c * CHUNK + k;
                    let col = &self.sorted[j * n..(j + 1) * n];
                    let sum = &self.prefix[j * (n + 1)..(j + 1) * (n + 1)];
                    // The copies sit at merged positions p .. p + a; column value k at k (k < p) or
                    // k + a (k ≥ p).
                    let p = col.partition_point(|c| c.total_cmp(&v).is_lt());
                    let range =
                        |from: usize, to: usize| if to > from { sum[to] - sum[from] } else { 0.0 };
                    let below = range(lo.min(p), hi.min(p));
                    let above = range(
                        lo.saturating_sub(a).max(p).min(n),
                        hi.saturating_sub(a).max(p).min(n),
                    );
                    let copies = (hi.min(p + a)).saturating_sub(lo.max(p));
                    let agg =
                        ((below + above + copies as f64 * v as f64) / (hi - lo) as f64) as f32;
                    acc += ((agg - mu[j]) as f64).powi(2);
                }
                acc
            })
            .collect();
        parts.iter().sum::<f64>().sqrt()
    }
}

/// Squared distances among the fixed updates, and of each to `μ − λσ` as a quadratic in λ:
/// `‖μ − λσ − u_k‖² = A_k − 2λ·B_k + λ²·C`, so a search step costs O(m²) instead of O(m²·d).
struct KrumDistances {
    /// Pairwise squared distances of the fixed updates, row-major `n × n`.
    among: Vec<f64>,
    /// `A_k = ‖μ − u_k‖²`.
    a: Vec<f64>,
    /// `B_k = σ·(μ − u_k)`.
    b: Vec<f64>,
    /// `C = ‖σ‖²`.
    c: f64,
}

impl KrumDistances {
    fn new(updates: &[&[f32]], mu: &[f32], sigma: &[f32]) -> Self {
        let (a, b): (Vec<f64>, Vec<f64>) = updates
            .par_iter()
            .map(|u| {
                u.iter()
                    .zip(mu)
                    .zip(sigma)
                    .fold((0.0, 0.0), |(a, b), ((&u, &m), &s)| {
                        let r = m as f64 - u as f64;
                        (a + r * r, b + s as f64 * r)
                    })
            })
            .unzip();
        let c = sigma.iter().map(|&s| (s as f64).powi(2)).sum();
        Self {
            among: pairwise_sq_distances(updates),
            a,
            b,
            c,
        }
    }

    /// The distance matrix of `copies` copies of `μ − λσ` (first) followed by the fixed updates.
    fn with_copies(&self, lambda: f64, copies: usize) -> Vec<f64> {
        let n = self.a.len();
        let m = copies + n;
        let mut d = vec![0.0f64; m * m];
        for k in 0..n {
            let to_mal = (self.a[k] - 2.0 * lambda * self.b[k] + lambda * lambda * self.c).max(0.0);
            for i in 0..copies {
                d[i * m + copies + k] = to_mal;
                d[(copies + k) * m + i] = to_mal;
            }
            for l in 0..n {
                d[(copies + k) * m + copies + l] = self.among[k * n + l];
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{prop, prop_assert, proptest};

    fn refs(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(Vec::as_slice).collect()
    }

    proptest! {
        #[test]
        fn identical_updates_aggregate_to_that_update(
            u in prop::collection::vec(-100.0f32..100.0, 1..40),
            m in 1usize..9,
            f in 0usize..3,
        ) {
            let ups = vec![u.clone(); m];
            let r = refs(&ups);
            for agg in [median(&r), trimmed_mean(&r, f), krum(&r, f), multi_krum(&r, f), bulyan(&r, f), mean(&r)] {
                prop_assert!(agg.len() == u.len());
                for (a, b) in agg.iter().zip(&u) {
                    prop_assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
                }
            }
        }

        #[test]
        fn median_and_trimmed_mean_ignore_a_few_outliers(
            base in prop::collection::vec(-1.0f32..1.0, 1..20),
            noise in prop::collection::vec(-0.01f32..0.01, 7 * 20),
            outlier in prop::sample::select(vec![1e6f32, -1e6, 3e4]),
        ) {
            // 7 honest updates near `base`, 2 outliers: both rules stay within the honest range.
            let d = base.len();
            let mut ups: Vec<Vec<f32>> = (0..7)
                .map(|i| base.iter().enumerate().map(|(j, b)| b + noise[i * 20 + j]).collect())
                .collect();
            ups.push(vec![outlier; d]);
            ups.push(vec![-outlier.abs(); d]);
            let r = refs(&ups);
            for agg in [median(&r), trimmed_mean(&r, 2), multi_krum(&r, 2), bulyan(&r, 1)] {
                for (a, b) in agg.iter().zip(&base) {
                    prop_assert!((a - b).abs() <= 0.011, "{a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn hand_checked_values() {
        let ups = vec![vec![1.0], vec![2.0], vec![10.0], vec![4.0]];
        let r = refs(&ups);
        assert_eq!(median(&r), vec![3.0]);
        assert_eq!(trimmed_mean(&r, 1), vec![3.0]);
        assert_eq!(mean(&r), vec![4.25]);
        // Krum with f = 0 on 4 points: scores sum the r − 2 = 2 smallest distances (self included):
        // 1 → 0 + 1, 2 → 0 + 1, 4 → 0 + 4, 10 → 0 + 36; the first minimum (index 0) wins.
        assert_eq!(krum(&r, 0), vec![1.0]);
        let mut u = vec![3.0, 4.0];
        assert_eq!(clip_norm(&mut u, 1.0), 0.2);
        assert!((u[0] - 0.6).abs() < 1e-6 && (u[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn multi_krum_drops_the_far_updates() {
        let mut ups: Vec<Vec<f32>> = (0..8).map(|i| vec![i as f32 * 0.01, 0.0]).collect();
        ups.push(vec![100.0, 100.0]);
        ups.push(vec![-100.0, 50.0]);
        let d = pairwise_sq_distances(&refs(&ups));
        let picked = krum_select(&d, 10, 2, true);
        assert!(!picked.contains(&8) && !picked.contains(&9), "{picked:?}");
        assert_eq!(picked.len(), 10 - (2 * 2 + 2));
    }

    #[test]
    fn agr_tailored_moves_the_trimmed_mean_away_from_the_benign_mean() {
        // Five attackers with spread-out benign updates; their crafted update pushes the aggregate.
        let benign: Vec<Vec<f32>> = (0..5)
            .map(|i| {
                (0..50)
                    .map(|j| ((i * 31 + j * 7) % 11) as f32 * 0.1)
                    .collect()
            })
            .collect();
        let r = refs(&benign);
        let mu = mean(&r);
        for target in [AgrTarget::TrimmedMean, AgrTarget::MultiKrum] {
            let mal = agr_tailored(&r, &r, 5, target);
            let dev: f64 = mal
                .iter()
                .zip(&mu)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            assert!(dev > 0.0, "{target:?}: no deviation");
            assert!(mal.iter().all(|v| v.is_finite()));
        }
        // One attacker: σ = 0, the attack degenerates to the benign mean.
        assert_eq!(
            agr_tailored(&r[..1], &r[..1], 1, AgrTarget::TrimmedMean),
            benign[0]
        );
    }

    #[test]
    fn full_knowledge_agr_tailored_keeps_every_copy_in_the_real_multi_krum_selection() {
        // Twelve benign updates around a common point; three attackers know them all.
        let benign: Vec<Vec<f32>> = (0..12)
            .map(|i| {
                (0..20)
                    .map(|j| 1.0 + ((i * 13 + j * 5) % 17) as f32 * 0.01)
                    .collect()
            })
            .collect();
        let r = refs(&benign);
        let mu = mean(&r);
        let mal = agr_tailored(&r, &r, 3, AgrTarget::MultiKrum);
        assert_ne!(mal, mu, "the search found no λ > 0");
        let mut all: Vec<&[f32]> = vec![&mal; 3];
        all.extend_from_slice(&r);
        let d = pairwise_sq_distances(&all);
        let picked = krum_select(&d, all.len(), 3, true);
        assert!(picked[..3].iter().all(|&i| i < 3), "{picked:?}");
    }

    #[test]
    fn prepared_search_sets_match_the_direct_rules() {
        let ups: Vec<Vec<f32>> = (0..9)
            .map(|i| {
                (0..CHUNK + 37)
                    .map(|j| (((i * 7919 + j * 104_729) % 1000) as f32 - 500.0) * 1e-3)
                    .collect()
            })
            .collect();
        let r = refs(&ups);
        let mu = mean(&r);
        let sigma: Vec<f32> = (0..mu.len()).map(|j| 0.1 + (j % 5) as f32 * 0.01).collect();
        let cols = SortedColumns::new(&r);
        let krum = KrumDistances::new(&r, &mu, &sigma);
        for (lambda, a) in [(0.0, 1), (0.5, 3), (2.0, 4), (5.0, 9)] {
            let x: Vec<f32> = mu
                .iter()
                .zip(&sigma)
                .map(|(m, s)| (*m as f64 - lambda * *s as f64) as f32)
                .collect();
            let mut all: Vec<&[f32]> = vec![&x; a];
            all.extend_from_slice(&r);
            let direct = trimmed_mean(&all, a)
                .iter()
                .zip(&mu)
                .map(|(g, m)| ((g - m) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let fast = cols.deviation_with_copies(&x, a, &mu);
            assert!(
                (direct - fast).abs() <= 1e-6 * direct.max(1e-12),
                "λ={lambda} a={a}: {direct} vs {fast}"
            );
            let want = pairwise_sq_distances(&all);
            let got = krum.with_copies(lambda, a);
            for (w, g) in want.iter().zip(&got) {
                assert!(
                    (w - g).abs() <= 1e-5 * w.max(1e-3),
                    "λ={lambda} a={a}: {w} vs {g}"
                );
            }
        }
    }
}
