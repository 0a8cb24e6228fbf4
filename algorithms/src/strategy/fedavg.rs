//! FedAvg (McMahan et al., AISTATS 2017), `../shared/algorithms.md` §1, and the mean-type baselines of
//! the FedAU paper (§2.5), which differ only in their aggregation weights.
//!
//! Client: E epochs (or Q steps) of minibatch SGD from the global model; sends `Δ = w − x`.
//! Server, by `weighting`:
//! - `samples` (default): `x ← x + η · Σ_k (n_k / Σ_j n_j) Δ_k` over the reporting clients (McMahan);
//! - `uniform`: `x ← x + η · (1/|S|) Σ_k Δ_k` (FedAU's "average participating");
//! - `all_clients`: `x ← x + η · (1/N) Σ_k Δ_k` (FedAU's "average all"; absent clients count as zero);
//! - `known_probability`: `x ← x + η · (1/N) Σ_k Δ_k / p_k` (oracle: the participation model's p_k).
//!
//! Memory: one running sum of the model's size, whatever the number of clients; with a robust
//! `aggregator` (median, trimmed mean, Krum, Multi-Krum, Bulyan) every delta of the round is buffered
//! until `finish_round`: **O(m·d)** for m reporting clients (see [`crate::robust`]).
//!
//! `aggregator` (default `{kind = "mean"}`, the weighted mean above) replaces the mean by a Byzantine-
//! robust rule over the round's deltas: `median`, `trimmed_mean` (`trim = b`), `krum` / `multi_krum` /
//! `bulyan` (`f`), each count a number or `"oracle"` (the true number of malicious clients among the
//! round's reporters, from the scenario's `[attack]` section: an explicit oracle option of the
//! reference code), and `norm_clipping` (`max_norm`: each delta is scaled to norm ≤ `max_norm`, then the
//! usual weighted mean). The robust rules are unweighted (`weighting` applies to `mean` and
//! `norm_clipping` only).

use serde::{Deserialize, Serialize};

use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense};
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies};
use crate::{ClientId, LocalTrainer, Payload};
use fedsim_types::ConfigError;

/// How client updates are weighted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Weighting {
    /// By number of local samples `n_k` (McMahan).
    #[default]
    Samples,
    /// Every reporting client equally (mean over participants).
    Uniform,
    /// Sum over participants divided by the total number of clients N.
    AllClients,
    /// `Δ_k / p_k` summed and divided by N, with the participation model's probabilities (an oracle).
    KnownProbability,
}

/// A count used by a robust rule: a fixed number, or `"oracle"` (the true number of malicious clients
/// among the round's reporters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    /// A fixed number.
    Fixed(usize),
    /// The true number of attackers in the round (an oracle).
    Oracle(OracleTag),
}

/// The string `"oracle"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OracleTag {
    /// Use the true number of attackers.
    Oracle,
}

impl Count {
    /// The value in a round with `attackers` malicious reporters.
    pub fn resolve(self, attackers: usize) -> usize {
        match self {
            Count::Fixed(n) => n,
            Count::Oracle(_) => attackers,
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Count::Fixed(n) => write!(f, "{n}"),
            Count::Oracle(_) => f.write_str("oracle"),
        }
    }
}

/// How the round's deltas are combined (`strategy.aggregator`, a table with `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Aggregator {
    /// The weighted mean of `weighting` (O(d) memory).
    #[default]
    Mean,
    /// Coordinate-wise median.
    Median,
    /// Coordinate-wise trimmed mean dropping `trim` values from each end.
    TrimmedMean {
        /// Values dropped from each end of every coordinate (a number or `"oracle"`).
        trim: Count,
    },
    /// Krum: the single update closest to its neighbours.
    Krum {
        /// Assumed number of Byzantine clients (a number or `"oracle"`).
        f: Count,
    },
    /// Multi-Krum: the mean of repeated Krum picks until `2f + 2` remain.
    MultiKrum {
        /// Assumed number of Byzantine clients (a number or `"oracle"`).
        f: Count,
    },
    /// Bulyan: Krum selection of `m − 2f`, then a trimmed mean around the coordinate-wise median.
    Bulyan {
        /// Assumed number of Byzantine clients (a number or `"oracle"`).
        f: Count,
    },
    /// Each delta clipped to Euclidean norm `max_norm`, then the weighted mean (O(d) memory).
    NormClipping {
        /// The norm bound.
        max_norm: f64,
    },
}

impl Aggregator {
    /// Whether the rule needs every delta of the round at once.
    pub fn buffers(&self) -> bool {
        !matches!(self, Aggregator::Mean | Aggregator::NormClipping { .. })
    }

    /// Applies a buffering rule to the round's deltas, with `attackers` malicious reporters.
    pub fn aggregate(&self, deltas: &[&[f32]], attackers: usize) -> Vec<f32> {
        use crate::robust;
        match *self {
            Aggregator::Mean | Aggregator::NormClipping { .. } => robust::mean(deltas),
            Aggregator::Median => robust::median(deltas),
            Aggregator::TrimmedMean { trim } => {
                robust::trimmed_mean(deltas, trim.resolve(attackers))
            }
            Aggregator::Krum { f } => robust::krum(deltas, f.resolve(attackers)),
            Aggregator::MultiKrum { f } => robust::multi_krum(deltas, f.resolve(attackers)),
            Aggregator::Bulyan { f } => robust::bulyan(deltas, f.resolve(attackers)),
        }
    }

    fn label(&self) -> String {
        match self {
            Aggregator::Mean => "mean".into(),
            Aggregator::Median => "median".into(),
            Aggregator::TrimmedMean { trim } => format!("trimmed_mean(b={trim})"),
            Aggregator::Krum { f } => format!("krum(f={f})"),
            Aggregator::MultiKrum { f } => format!("multi_krum(f={f})"),
            Aggregator::Bulyan { f } => format!("bulyan(f={f})"),
            Aggregator::NormClipping { max_norm } => format!("norm_clipping({max_norm})"),
        }
    }
}

/// FedAvg settings (`[strategy] kind = "fedavg"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAvgConfig {
    /// Server learning rate η_g (1 is plain averaging).
    #[serde(default = "one")]
    pub server_lr: f32,
    /// Aggregation weights.
    #[serde(default)]
    pub weighting: Weighting,
    /// How deltas are combined: the weighted mean (default) or a robust rule.
    #[serde(default)]
    pub aggregator: Aggregator,
}

fn one() -> f32 {
    1.0
}

impl Default for FedAvgConfig {
    fn default() -> Self {
        Self {
            server_lr: 1.0,
            weighting: Weighting::Samples,
            aggregator: Aggregator::Mean,
        }
    }
}

impl FedAvgConfig {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        super::positive("server_lr", self.server_lr)?;
        if let Aggregator::NormClipping { max_norm } = self.aggregator
            && !(max_norm.is_finite() && max_norm > 0.0)
        {
            return Err(ConfigError::new(
                "aggregator.max_norm",
                format!("must be positive, got {max_norm}"),
            ));
        }
        Ok(())
    }
}

/// FedAvg's running aggregate.
#[derive(Debug)]
pub struct FedAvg {
    config: FedAvgConfig,
    dim: usize,
    num_clients: usize,
    probabilities: Vec<f64>,
    sum: Vec<f64>,
    weight_sum: f64,
    /// The round's deltas, for buffering aggregators.
    buffer: Vec<Vec<f32>>,
    /// Malicious reporters this round (for `"oracle"` counts), told by the attack wrapper.
    attackers: usize,
}

impl FedAvg {
    /// A new FedAvg instance.
    pub fn new(config: FedAvgConfig) -> Self {
        Self {
            config,
            dim: 0,
            num_clients: 0,
            probabilities: Vec::new(),
            sum: Vec::new(),
            weight_sum: 0.0,
            buffer: Vec::new(),
            attackers: 0,
        }
    }
}

impl FedAvg {
    /// The round's aggregated delta (before the server learning rate), or `None` when no client with a
    /// positive weight reported. Server optimisers (FedAvgM, FedAdam, ...) use it as pseudo-gradient.
    pub fn averaged_delta(&self) -> Option<Vec<f64>> {
        if self.config.aggregator.buffers() {
            if self.buffer.is_empty() {
                return None;
            }
            let refs: Vec<&[f32]> = self.buffer.iter().map(Vec::as_slice).collect();
            let agg = self.config.aggregator.aggregate(&refs, self.attackers);
            return Some(agg.into_iter().map(f64::from).collect());
        }
        if self.weight_sum <= 0.0 {
            return None;
        }
        let norm = match self.config.weighting {
            Weighting::Samples | Weighting::Uniform => self.weight_sum,
            Weighting::AllClients | Weighting::KnownProbability => self.num_clients.max(1) as f64,
        };
        Some(self.sum.iter().map(|s| s / norm).collect())
    }
}

impl Strategy for FedAvg {
    fn name(&self) -> String {
        match self.config.aggregator {
            Aggregator::Mean => "fedavg".into(),
            a => format!("fedavg({})", a.label()),
        }
    }

    fn set_attackers(&mut self, n: usize) {
        self.attackers = n;
    }

    fn init(&mut self, init: &Init<'_>) {
        self.dim = init.global.len();
        self.num_clients = init.num_clients;
        if self.config.weighting == Weighting::KnownProbability {
            // Without known probabilities every client is taken to participate always (p = 1).
            self.probabilities = init
                .probabilities
                .map_or_else(|| vec![1.0; init.num_clients], <[f64]>::to_vec);
        }
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], global: &[f32]) {
        self.dim = global.len();
        self.sum.clear();
        self.sum.resize(self.dim, 0.0);
        self.weight_sum = 0.0;
        self.buffer.clear();
        self.attackers = 0;
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let mut delta = dense::take_delta(reporter.id, &mut update, self.dim)?;
        match self.config.aggregator {
            Aggregator::Mean => {}
            Aggregator::NormClipping { max_norm } => {
                crate::robust::clip_norm(&mut delta, max_norm);
            }
            _ => {
                self.buffer.push(delta);
                return Ok(());
            }
        }
        let w = match self.config.weighting {
            Weighting::Samples => reporter.num_samples as f64,
            Weighting::Uniform | Weighting::AllClients => 1.0,
            Weighting::KnownProbability => {
                1.0 / self
                    .probabilities
                    .get(reporter.id as usize)
                    .copied()
                    .unwrap_or(1.0)
            }
        };
        if w > 0.0 {
            for (s, d) in self.sum.iter_mut().zip(&delta) {
                *s += w * *d as f64;
            }
            self.weight_sum += w;
        }
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if let Some(avg) = self.averaged_delta() {
            let eta = self.config.server_lr as f64;
            for (x, a) in global.iter_mut().zip(&avg) {
                *x += (eta * a) as f32;
            }
        }
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        _state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        local_sgd_delta(trainer, task)
    }
}

/// The FedAvg client half, shared by strategies whose clients do plain local SGD: trains from the task's
/// model and returns the delta.
pub fn local_sgd_delta(
    trainer: &mut LocalTrainer<'_>,
    task: &Payload,
) -> Result<Payload, StrategyError> {
    let global = dense::task_model(task, trainer.model.num_params())?;
    let mut local = global.clone();
    trainer.sgd(&mut local, None);
    Ok(dense::delta_update(&local, &global))
}

impl Kind<Strategies> for FedAvgConfig {
    const KIND: &'static str = "fedavg";
    const SUMMARY: &'static str = "FedAvg (McMahan et al. 2017); mean-type baselines via `weighting`, robust rules via `aggregator`";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            needs_probabilities: self.weighting == Weighting::KnownProbability,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        FedAvgConfig::validate(self)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedAvg::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TensorData;
    use proptest::prelude::{prop, prop_assert, proptest};

    #[test]
    fn validation_names_keys_relative_to_the_strategy_section() {
        let e = FedAvgConfig {
            server_lr: 0.0,
            ..FedAvgConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e, ConfigError::new("server_lr", "must be positive, got 0"));
        let e = FedAvgConfig {
            aggregator: Aggregator::NormClipping { max_norm: -1.0 },
            ..FedAvgConfig::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "aggregator.max_norm");
        assert_eq!(
            e.at("strategy").to_string(),
            "strategy.aggregator.max_norm: must be positive, got -1"
        );
    }

    fn run(config: FedAvgConfig, global: &[f32], updates: &[(u64, Vec<f32>)]) -> Vec<f32> {
        let mut s = FedAvg::new(config);
        s.init(&Init {
            global,
            num_clients: updates.len(),
            probabilities: None,
            model: None,
            data: None,
        });
        s.begin_round(0, &[], global);
        for (i, (n, d)) in updates.iter().enumerate() {
            let p = Payload::new().with(dense::DELTA, TensorData::vector(d.clone()));
            s.accept(
                Reporter {
                    id: i as u32,
                    num_samples: *n,
                    staleness: 0,
                },
                p,
            )
            .unwrap();
        }
        let mut g = global.to_vec();
        s.finish_round(0, &mut g, &[]);
        g
    }

    proptest! {
        #[test]
        fn identical_updates_aggregate_to_that_update(
            delta in prop::collection::vec(-10.0f32..10.0, 1..20),
            sizes in prop::collection::vec(1u64..1000, 1..8),
        ) {
            let global = vec![0.0f32; delta.len()];
            let ups: Vec<_> = sizes.iter().map(|&n| (n, delta.clone())).collect();
            let g = run(FedAvgConfig::default(), &global, &ups);
            for (a, b) in g.iter().zip(&delta) {
                prop_assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0));
            }
        }

        #[test]
        fn weights_sum_to_one(sizes in prop::collection::vec(1u64..1000, 1..8), c in -5.0f32..5.0) {
            // Every client sends the same constant vector c: the weighted mean must be c exactly
            // when the weights sum to one.
            let global = vec![1.0f32; 3];
            let ups: Vec<_> = sizes.iter().map(|&n| (n, vec![c; 3])).collect();
            for weighting in [Weighting::Samples, Weighting::Uniform] {
                let g = run(FedAvgConfig { server_lr: 1.0, weighting, ..FedAvgConfig::default() }, &global, &ups);
                for v in g {
                    prop_assert!((v - (1.0 + c)).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn data_size_weighting() {
        let g = run(
            FedAvgConfig::default(),
            &[0.0],
            &[(1, vec![1.0]), (3, vec![5.0])],
        );
        assert_eq!(g, vec![4.0]);
        let g = run(
            FedAvgConfig {
                weighting: Weighting::Uniform,
                ..Default::default()
            },
            &[0.0],
            &[(1, vec![1.0]), (3, vec![5.0])],
        );
        assert_eq!(g, vec![3.0]);
    }

    #[test]
    fn no_reports_keep_the_model() {
        let g = run(FedAvgConfig::default(), &[2.0, 3.0], &[]);
        assert_eq!(g, vec![2.0, 3.0]);
    }

    #[test]
    fn wrong_length_is_rejected() {
        let mut s = FedAvg::new(FedAvgConfig::default());
        s.init(&Init {
            global: &[0.0; 4],
            num_clients: 1,
            probabilities: None,
            model: None,
            data: None,
        });
        s.begin_round(0, &[0], &[0.0; 4]);
        let p = Payload::new().with(dense::DELTA, TensorData::vector(vec![1.0; 3]));
        // Refused at validation, before the update waits for its turn in the reorder buffer…
        let err = s.validate_update(0, &p, 4).unwrap_err().to_string();
        assert!(err.contains("`delta` has 3 values"), "{err}");
        // …and again if it reached the fold.
        let err = s
            .accept(
                Reporter {
                    id: 0,
                    num_samples: 1,
                    staleness: 0,
                },
                p,
            )
            .unwrap_err();
        assert!(err.to_string().contains("expected 4"));
    }
}
