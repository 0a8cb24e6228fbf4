//! LEAF / FedProx Synthetic(alpha, beta) generator.
//!
//! For every client `k` (as in the reference `generate_synthetic.py`, where `alpha` and `beta` are the
//! *standard deviations* passed to `np.random.normal`):
//!
//! - `u_k ~ N(0, alpha²)`, `B_k ~ N(0, beta²)`;
//! - `W_k ∈ R^{features × classes}` with entries `~ N(u_k, 1)`, `b_k ∈ R^{classes}` with entries `~ N(u_k, 1)`;
//! - `v_k ∈ R^{features}` with entries `~ N(B_k, 1)`;
//! - samples `x ~ N(v_k, Σ)` with diagonal `Σ_jj = (j + 1)^(-1.2)` (0-based `j`), labels
//!   `y = argmax(x·W_k + b_k)` (the argmax of the softmax).
//!
//! Client sizes are log-normal around `samples_per_client` (see [`client_size`]). The test set is drawn from the
//! same client distributions: each test sample picks a client uniformly at random and is generated with that
//! client's model. Clients are generated one at a time from their own random stream derived from
//! `(seed, client)`, so memory holds only the samples, never all clients' models, and the result is
//! deterministic from the seed. The natural partition gives each client its own contiguous block of rows.

use ndarray::Array2;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::util::{check_u32_len, rng_for, zeroed};
use crate::{DataError, DataSpec, Dataset, FederatedData, Partition};

/// Standard deviation of the log of the client sizes (see [`client_size`]).
pub const SIZE_LOG_SIGMA: f64 = 1.0;

/// Smallest number of training samples of a client.
pub const MIN_CLIENT_SAMPLES: usize = 2;

/// Parameters of Synthetic(alpha, beta); the fields mirror [`DataSpec::Synthetic`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticParams {
    /// Standard deviation of the client model means `u_k` (0 allowed).
    pub alpha: f64,
    /// Standard deviation of the client input means `B_k` (0 allowed).
    pub beta: f64,
    /// Features per sample.
    pub features: usize,
    /// Number of classes.
    pub classes: usize,
    /// Mean number of training samples per client.
    pub samples_per_client: usize,
    /// Size of the pooled test set.
    pub test_samples: usize,
}

impl SyntheticParams {
    /// The parameters of a [`DataSpec::Synthetic`], or `None` for another kind of data.
    pub fn from_spec(spec: &DataSpec) -> Option<Self> {
        match *spec {
            DataSpec::Synthetic {
                alpha,
                beta,
                features,
                classes,
                samples_per_client,
                test_samples,
            } => Some(Self {
                alpha,
                beta,
                features,
                classes,
                samples_per_client,
                test_samples,
            }),
            _ => None,
        }
    }

    /// Checks the parameters: `alpha, beta >= 0` and finite, `features >= 1`, `classes >= 2`,
    /// `samples_per_client >= 1`.
    pub fn validate(&self) -> Result<(), DataError> {
        for (key, v) in [("data.alpha", self.alpha), ("data.beta", self.beta)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(DataError::Spec(format!(
                    "{key} must be non-negative and finite, got {v}"
                )));
            }
        }
        if self.features == 0 {
            return Err(DataError::Spec(
                "data.features must be at least 1, got 0".into(),
            ));
        }
        if self.classes < 2 {
            return Err(DataError::Spec(format!(
                "data.classes must be at least 2, got {}",
                self.classes
            )));
        }
        if self.samples_per_client == 0 {
            return Err(DataError::Spec(
                "data.samples_per_client must be at least 1, got 0".into(),
            ));
        }
        Ok(())
    }
}

/// Training-set size of a client whose size draw is `z ~ N(0, 1)`:
/// `max(2, round(samples_per_client · exp(σ·z − σ²/2)))` with `σ = SIZE_LOG_SIGMA`, so the mean size is about
/// `samples_per_client` (the factor has mean 1) and the median is `samples_per_client · exp(−σ²/2)`.
pub fn client_size(samples_per_client: usize, z: f64) -> usize {
    let s = SIZE_LOG_SIGMA;
    let v = (samples_per_client as f64 * (s * z - s * s / 2.0).exp()).round();
    // `v` is finite and non-negative; the cast saturates for absurdly large values.
    (v as usize).max(MIN_CLIENT_SAMPLES)
}

const TAG_CLIENT: &str = "synthetic.client";
const TAG_TEST: &str = "synthetic.test";

fn client_rng(seed: u64, k: usize) -> ChaCha8Rng {
    rng_for(seed, TAG_CLIENT, k as u64)
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// The training-set sizes of the `num_clients` clients (the first draw of every client's stream).
pub fn client_sizes(params: &SyntheticParams, num_clients: usize, seed: u64) -> Vec<usize> {
    (0..num_clients)
        .map(|k| client_size(params.samples_per_client, normal(&mut client_rng(seed, k))))
        .collect()
}

/// One client's model: `W` (features × classes, row-major), `b`, and the input mean `v`.
struct ClientModel {
    w: Vec<f64>,
    b: Vec<f64>,
    v: Vec<f64>,
}

impl ClientModel {
    fn draw(p: &SyntheticParams, rng: &mut ChaCha8Rng) -> Self {
        let u = p.alpha * normal(rng);
        let big_b = p.beta * normal(rng);
        let w = (0..p.features * p.classes)
            .map(|_| u + normal(rng))
            .collect();
        let b = (0..p.classes).map(|_| u + normal(rng)).collect();
        let v = (0..p.features).map(|_| big_b + normal(rng)).collect();
        Self { w, b, v }
    }

    /// Draws one sample into `x` and returns its label.
    fn sample(&self, sd: &[f64], rng: &mut ChaCha8Rng, x: &mut [f32], logits: &mut [f64]) -> u32 {
        logits.copy_from_slice(&self.b);
        let c = logits.len();
        for (j, xj) in x.iter_mut().enumerate() {
            let v = self.v[j] + sd[j] * normal(rng);
            *xj = v as f32;
            for (l, w) in logits.iter_mut().zip(&self.w[j * c..(j + 1) * c]) {
                *l += v * w;
            }
        }
        let mut best = 0;
        for (i, &l) in logits.iter().enumerate() {
            if l > logits[best] {
                best = i;
            }
        }
        best as u32
    }
}

/// Generates Synthetic(alpha, beta) for `num_clients` clients: the pooled training set (client after client),
/// the pooled test set of `test_samples` rows, and the natural partition (client `k` owns its contiguous block).
///
/// Deterministic from `seed`. Errors: invalid parameters, `num_clients == 0`, or a data set too large to address.
pub fn generate_synthetic(
    params: &SyntheticParams,
    num_clients: usize,
    seed: u64,
) -> Result<FederatedData, DataError> {
    params.validate()?;
    if num_clients == 0 {
        return Err(DataError::Spec(
            "num_clients must be at least 1 for synthetic data, got 0".into(),
        ));
    }
    let p = params;
    let sizes = client_sizes(p, num_clients, seed);
    let mut offsets = Vec::with_capacity(num_clients + 1);
    offsets.push(0usize);
    for &s in &sizes {
        let next = offsets.last().copied().unwrap_or(0).checked_add(s);
        offsets
            .push(next.ok_or_else(|| DataError::Spec("synthetic training set too large".into()))?);
    }
    let total = offsets.last().copied().unwrap_or(0);
    check_u32_len(total, "the synthetic training set")?;
    check_u32_len(p.test_samples, "the synthetic test set")?;
    let too_big = || DataError::Spec("synthetic data set too large for memory".into());
    let train_cells = total.checked_mul(p.features).ok_or_else(too_big)?;
    let test_cells = p.test_samples.checked_mul(p.features).ok_or_else(too_big)?;

    // Test sample i belongs to client owner[i]; group the test rows by client (counting sort).
    let mut test_rng = rng_for(seed, TAG_TEST, 0);
    let owner: Vec<u32> = (0..p.test_samples)
        .map(|_| test_rng.random_range(0..num_clients) as u32)
        .collect();
    let mut test_off = vec![0usize; num_clients + 1];
    for &o in &owner {
        test_off[o as usize + 1] += 1;
    }
    for k in 0..num_clients {
        test_off[k + 1] += test_off[k];
    }
    let mut fill = test_off.clone();
    let mut test_rows = vec![0u32; p.test_samples];
    for (i, &o) in owner.iter().enumerate() {
        test_rows[fill[o as usize]] = i as u32;
        fill[o as usize] += 1;
    }
    drop(owner);

    let sd: Vec<f64> = (0..p.features)
        .map(|j| ((j + 1) as f64).powf(-0.6))
        .collect();
    let mut x: Vec<f32> = zeroed(train_cells, "the synthetic training set")?;
    let mut y: Vec<u32> = zeroed(total, "the synthetic training labels")?;
    let mut tx: Vec<f32> = zeroed(test_cells, "the synthetic test set")?;
    let mut ty: Vec<u32> = zeroed(p.test_samples, "the synthetic test labels")?;
    let mut logits = vec![0f64; p.classes];
    let f = p.features;
    for k in 0..num_clients {
        let mut rng = client_rng(seed, k);
        let _size_draw = normal(&mut rng); // consumed by `client_sizes`
        let model = ClientModel::draw(p, &mut rng);
        for r in offsets[k]..offsets[k + 1] {
            y[r] = model.sample(&sd, &mut rng, &mut x[r * f..(r + 1) * f], &mut logits);
        }
        for &r in &test_rows[test_off[k]..test_off[k + 1]] {
            let r = r as usize;
            ty[r] = model.sample(&sd, &mut rng, &mut tx[r * f..(r + 1) * f], &mut logits);
        }
    }
    let shape_err = |e: ndarray::ShapeError| {
        DataError::Spec(format!("internal error shaping synthetic data: {e}"))
    };
    let train = Dataset {
        x: Array2::from_shape_vec((total, f), x)
            .map_err(shape_err)?
            .into(),
        y,
        num_classes: p.classes,
        image: None,
    };
    let test = Dataset {
        x: Array2::from_shape_vec((p.test_samples, f), tx)
            .map_err(shape_err)?
            .into(),
        y: ty,
        num_classes: p.classes,
        image: None,
    };
    let partition = Partition::from_csr(offsets, (0..total as u32).collect());
    Ok(FederatedData {
        train,
        test,
        partition,
        local_test: None,
        normalization: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(alpha: f64, beta: f64) -> SyntheticParams {
        SyntheticParams {
            alpha,
            beta,
            features: 60,
            classes: 10,
            samples_per_client: 50,
            test_samples: 300,
        }
    }

    #[test]
    fn shapes_and_natural_partition() {
        let d = generate_synthetic(&params(1.0, 1.0), 30, 42).unwrap();
        let sizes = client_sizes(&params(1.0, 1.0), 30, 42);
        assert_eq!(d.partition.num_clients(), 30);
        assert_eq!(d.train.len(), sizes.iter().sum::<usize>());
        assert_eq!(d.train.features(), 60);
        assert_eq!(d.train.num_classes, 10);
        assert_eq!(d.test.len(), 300);
        let mut start = 0u32;
        for (k, &size) in sizes.iter().enumerate() {
            assert_eq!(d.partition.client_len(k), size);
            assert!(size >= MIN_CLIENT_SAMPLES);
            let ids = d.partition.client(k);
            assert_eq!(
                ids,
                (start..start + size as u32).collect::<Vec<_>>().as_slice()
            );
            start += size as u32;
        }
        assert!(d.train.y.iter().all(|&l| l < 10));
        assert!(d.test.y.iter().all(|&l| l < 10));
        assert!(d.train.x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn deterministic_from_seed() {
        let a = generate_synthetic(&params(0.5, 0.5), 10, 1).unwrap();
        let b = generate_synthetic(&params(0.5, 0.5), 10, 1).unwrap();
        let c = generate_synthetic(&params(0.5, 0.5), 10, 2).unwrap();
        assert_eq!(a.train.x, b.train.x);
        assert_eq!(a.train.y, b.train.y);
        assert_eq!(a.test.x, b.test.x);
        assert_eq!(a.partition, b.partition);
        assert_ne!(a.train.x.row(0), c.train.x.row(0));
    }

    #[test]
    fn clients_are_independent_of_the_client_count() {
        // Client k's data depends only on (seed, k): growing the federation does not change existing clients.
        let small = generate_synthetic(&params(1.0, 1.0), 5, 9).unwrap();
        let large = generate_synthetic(&params(1.0, 1.0), 8, 9).unwrap();
        for k in 0..5 {
            let (a, b) = (small.partition.client(k), large.partition.client(k));
            assert_eq!(a, b);
            for (&i, &j) in a.iter().zip(b) {
                assert_eq!(small.train.x.row(i as usize), large.train.x.row(j as usize));
                assert_eq!(small.train.y[i as usize], large.train.y[j as usize]);
            }
        }
    }

    #[test]
    fn sizes_are_log_normal_around_the_mean() {
        let p = SyntheticParams {
            samples_per_client: 100,
            ..params(0.0, 0.0)
        };
        let sizes = client_sizes(&p, 20_000, 3);
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        assert!((mean - 100.0).abs() < 5.0, "mean {mean}");
        assert!(sizes.iter().all(|&s| s >= 2));
        assert!(sizes.iter().any(|&s| s > 300) && sizes.iter().any(|&s| s < 30));
        assert_eq!(
            client_size(100, 0.0),
            (100.0 * (-0.5f64).exp()).round() as usize
        );
        assert_eq!(client_size(1, -10.0), 2);
    }

    #[test]
    fn heterogeneity_grows_with_alpha_beta() {
        // Synthetic(0,0): all clients share the label map's spread; Synthetic(1,1) label marginals differ a lot
        // across clients. Measure the mean total-variation distance of client label histograms from the pool.
        fn spread(d: &FederatedData) -> f64 {
            let pool: Vec<f64> = d
                .train
                .class_counts()
                .iter()
                .map(|&c| c as f64 / d.train.len() as f64)
                .collect();
            let mut tv = 0.0;
            for k in 0..d.partition.num_clients() {
                let mut h = [0f64; 10];
                for &i in d.partition.client(k) {
                    h[d.train.y[i as usize] as usize] += 1.0;
                }
                let n = d.partition.client_len(k) as f64;
                tv += h
                    .iter()
                    .zip(&pool)
                    .map(|(a, b)| (a / n - b).abs())
                    .sum::<f64>()
                    / 2.0;
            }
            tv / d.partition.num_clients() as f64
        }
        let hom = generate_synthetic(&params(0.0, 0.0), 40, 5).unwrap();
        let het = generate_synthetic(&params(1.0, 1.0), 40, 5).unwrap();
        assert!(spread(&het) > 0.4, "{}", spread(&het));
        assert!(spread(&hom) > 0.0);
    }

    #[test]
    fn invalid_parameters() {
        assert!(
            generate_synthetic(&params(1.0, 1.0), 0, 0)
                .unwrap_err()
                .to_string()
                .contains("num_clients")
        );
        let e = generate_synthetic(&params(-1.0, 1.0), 3, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.alpha must be non-negative"), "{e}");
        let e = generate_synthetic(&params(1.0, f64::NAN), 3, 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.beta"), "{e}");
        let e = generate_synthetic(
            &SyntheticParams {
                classes: 1,
                ..params(1.0, 1.0)
            },
            3,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("data.classes"));
        let e = generate_synthetic(
            &SyntheticParams {
                features: 0,
                ..params(1.0, 1.0)
            },
            3,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("data.features"));
        let e = generate_synthetic(
            &SyntheticParams {
                samples_per_client: 0,
                ..params(1.0, 1.0)
            },
            3,
            0,
        )
        .unwrap_err();
        assert!(e.to_string().contains("data.samples_per_client"));
    }

    #[test]
    fn zero_test_samples() {
        let d = generate_synthetic(
            &SyntheticParams {
                test_samples: 0,
                ..params(1.0, 1.0)
            },
            3,
            0,
        )
        .unwrap();
        assert!(d.test.is_empty());
        assert_eq!(d.test.features(), 60);
    }
}
