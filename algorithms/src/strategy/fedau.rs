//! FedAU (Wang & Ji, ICLR 2024), `../shared/algorithms.md` §2: FedAvg whose aggregation weights are
//! online estimates of `1/p_n` from each client's participation history.
//!
//! Client: Q local SGD steps (or E epochs), sends `Δ`. Server: `x ← x + η · (1/N) Σ_{n∈S} ω_n Δ_n`,
//! dividing by the total number of clients N. The weight `ω_n` is the mean interval between client n's
//! participations, each interval capped at the cutoff K, computed *before* the current interval is
//! recorded; a first participation has weight 1. State: three integers per client (O(1)), kept in the
//! lazy form of §2.3 so absent clients cost nothing per round.

use serde::{Deserialize, Serialize};

use super::fedavg::local_sgd_delta;
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense, positive};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

/// FedAU settings (`[strategy] kind = "fedau"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAuConfig {
    /// Server learning rate η.
    #[serde(default = "one")]
    pub server_lr: f32,
    /// Cutoff K on each participation interval; absent means K = ∞.
    #[serde(default)]
    pub cutoff: Option<u64>,
}

fn one() -> f32 {
    1.0
}

impl FedAuConfig {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("server_lr", self.server_lr)?;
        if self.cutoff == Some(0) {
            return Err(ConfigError::new(
                "cutoff",
                "must be at least 1 (omit it for K = infinity)",
            ));
        }
        Ok(())
    }
}

/// The online estimator of `1/p_n` (lazy form): per client the sum and count of completed intervals
/// and the round of the last participation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Estimator {
    cutoff: Option<u64>,
    sum: Vec<u64>,
    count: Vec<u64>,
    /// Round of the last participation plus one (0 = never).
    last: Vec<u64>,
}

impl Estimator {
    /// An estimator for `n` clients with cutoff `K` (None = ∞).
    pub fn new(n: usize, cutoff: Option<u64>) -> Self {
        Self {
            cutoff,
            sum: vec![0; n],
            count: vec![0; n],
            last: vec![0; n],
        }
    }

    /// Client `c` participates in `round` (0-based): returns its weight ω computed from earlier rounds
    /// only, then records the interval that ends now.
    pub fn participate(&mut self, c: usize, round: u64) -> f64 {
        // Gap since the last participation; the first interval counts from round 0.
        let gap = round + 1 - self.last[c];
        let last_interval = match self.cutoff {
            Some(k) => {
                let full = (gap - 1) / k;
                self.sum[c] += full * k;
                self.count[c] += full;
                (gap - 1) % k + 1
            }
            None => gap,
        };
        let w = if self.count[c] > 0 {
            self.sum[c] as f64 / self.count[c] as f64
        } else {
            1.0
        };
        self.sum[c] += last_interval;
        self.count[c] += 1;
        self.last[c] = round + 1;
        w
    }

    fn to_payload(&self) -> Payload {
        let bytes = |v: &[u64]| TensorData::Bytes {
            bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        Payload::new()
            .with("fedau.sum", bytes(&self.sum))
            .with("fedau.count", bytes(&self.count))
            .with("fedau.last", bytes(&self.last))
    }

    fn load(&mut self, p: &Payload) -> Result<(), StrategyError> {
        let n = self.sum.len();
        let read = |name: &str| -> Result<Vec<u64>, StrategyError> {
            match p.get(name) {
                Some(TensorData::Bytes { bytes }) if bytes.len() == n * 8 => Ok(bytes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect()),
                _ => Err(StrategyError::InvalidState(format!(
                    "`{name}` missing or not {n} entries"
                ))),
            }
        };
        self.sum = read("fedau.sum")?;
        self.count = read("fedau.count")?;
        self.last = read("fedau.last")?;
        Ok(())
    }
}

/// FedAU's server state and running aggregate.
#[derive(Debug)]
pub struct FedAu {
    config: FedAuConfig,
    estimator: Estimator,
    dim: usize,
    num_clients: usize,
    round: u64,
    sum: Vec<f64>,
    weights: Vec<f64>,
}

impl FedAu {
    /// A new FedAU instance.
    pub fn new(config: FedAuConfig) -> Self {
        Self {
            estimator: Estimator::new(0, config.cutoff),
            config,
            dim: 0,
            num_clients: 0,
            round: 0,
            sum: Vec::new(),
            weights: Vec::new(),
        }
    }
}

impl Strategy for FedAu {
    fn name(&self) -> String {
        match self.config.cutoff {
            Some(k) => format!("fedau(K={k})"),
            None => "fedau".into(),
        }
    }

    fn init(&mut self, init: &Init<'_>) {
        self.dim = init.global.len();
        self.num_clients = init.num_clients;
        self.estimator = Estimator::new(init.num_clients, self.config.cutoff);
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn begin_round(&mut self, round: u64, _selected: &[ClientId], global: &[f32]) {
        self.round = round;
        self.dim = global.len();
        self.sum.clear();
        self.sum.resize(self.dim, 0.0);
        self.weights.clear();
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let delta = dense::take_delta(reporter.id, &mut update, self.dim)?;
        let w = self.estimator.participate(reporter.id as usize, self.round);
        self.weights.push(w);
        for (s, d) in self.sum.iter_mut().zip(&delta) {
            *s += w * *d as f64;
        }
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if self.weights.is_empty() {
            return;
        }
        let scale = self.config.server_lr as f64 / self.num_clients.max(1) as f64;
        for (x, s) in global.iter_mut().zip(&self.sum) {
            *x += (scale * s) as f32;
        }
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        if self.weights.is_empty() {
            return Vec::new();
        }
        let min = self.weights.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.weights.iter().copied().fold(0.0, f64::max);
        let mean = self.weights.iter().sum::<f64>() / self.weights.len() as f64;
        vec![
            ("fedau_weight_min".into(), min),
            ("fedau_weight_max".into(), max),
            ("fedau_weight_mean".into(), mean),
        ]
    }

    fn save_state(&self) -> Payload {
        self.estimator.to_payload()
    }

    fn load_state(&mut self, state: Payload) -> Result<(), StrategyError> {
        self.estimator.load(&state)
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

impl Kind<Strategies> for FedAuConfig {
    const KIND: &'static str = "fedau";
    const SUMMARY: &'static str =
        "FedAU (Wang & Ji 2024): weights from each client's participation history";

    fn capabilities(&self) -> Capabilities {
        Capabilities::DENSE_DELTA
    }

    fn validate(&self) -> Result<(), ConfigError> {
        FedAuConfig::validate(self)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedAu::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::fedavg::{FedAvg, FedAvgConfig, Weighting};
    use fedsim_types::rng::{Purpose, unit};

    fn weights(pattern: &[u8], cutoff: Option<u64>) -> Vec<f64> {
        let mut e = Estimator::new(1, cutoff);
        pattern
            .iter()
            .enumerate()
            .filter(|(_, p)| **p == 1)
            .map(|(t, _)| e.participate(0, t as u64))
            .collect()
    }

    #[test]
    fn hand_computed_vectors() {
        // algorithms.md §2.3: participation over rounds 0..9 = 0 0 1 0 1 1 0 0 0 1.
        let p = [0, 0, 1, 0, 1, 1, 0, 0, 0, 1];
        assert_eq!(weights(&p, None), vec![1.0, 3.0, 2.5, 2.0]);
        let w = weights(&p, Some(2));
        let expect = [2.0, 1.5, 5.0 / 3.0, 1.6];
        for (a, b) in w.iter().zip(expect) {
            assert!((a - b).abs() < 1e-12, "{w:?}");
        }
    }

    #[test]
    fn converges_to_the_inverse_probability() {
        for (p, cutoff) in [(0.1, None), (0.3, None), (0.1, Some(5)), (0.05, Some(50))] {
            let mut e = Estimator::new(1, cutoff);
            let mut last = 0.0;
            for t in 0..200_000u64 {
                if unit(42, Purpose::Participation, t, 0, 0) < p {
                    last = e.participate(0, t);
                }
            }
            let expect = match cutoff {
                None => 1.0 / p,
                Some(k) => (1.0 - (1.0 - p).powi(k as i32)) / p,
            };
            assert!(
                (last - expect).abs() / expect < 0.02,
                "p={p} K={cutoff:?}: {last} vs {expect}"
            );
        }
    }

    #[test]
    fn full_participation_matches_the_averages() {
        // Every client every round: all FedAU weights are 1, so FedAU = average-all = average-participating.
        let n = 4;
        let global = vec![0.5f32, -1.0, 2.0];
        let deltas: Vec<Vec<f32>> = (0..n)
            .map(|i| vec![i as f32, 1.0 - i as f32, 0.25 * i as f32])
            .collect();
        let run = |s: &mut dyn Strategy| {
            s.init(&Init {
                global: &global,
                num_clients: n,
                probabilities: None,
                model: None,
                data: None,
            });
            let mut g = global.clone();
            for round in 0..3 {
                s.begin_round(round, &[0, 1, 2, 3], &g);
                for (i, d) in deltas.iter().enumerate() {
                    let p = Payload::new().with(dense::DELTA, TensorData::vector(d.clone()));
                    s.accept(
                        Reporter {
                            id: i as u32,
                            num_samples: 10,
                            staleness: 0,
                        },
                        p,
                    )
                    .unwrap();
                }
                s.finish_round(round, &mut g, &[0, 1, 2, 3]);
            }
            g
        };
        let a = run(&mut FedAu::new(FedAuConfig {
            server_lr: 1.0,
            cutoff: None,
        }));
        let b = run(&mut FedAvg::new(FedAvgConfig {
            server_lr: 1.0,
            weighting: Weighting::AllClients,
            ..FedAvgConfig::default()
        }));
        let c = run(&mut FedAvg::new(FedAvgConfig {
            server_lr: 1.0,
            weighting: Weighting::Uniform,
            ..FedAvgConfig::default()
        }));
        assert_eq!(a, b);
        assert_eq!(a, c);
    }

    #[test]
    fn state_round_trips() {
        let mut a = FedAu::new(FedAuConfig {
            server_lr: 1.0,
            cutoff: Some(3),
        });
        a.init(&Init {
            global: &[0.0],
            num_clients: 2,
            probabilities: None,
            model: None,
            data: None,
        });
        a.estimator.participate(1, 4);
        let mut b = FedAu::new(FedAuConfig {
            server_lr: 1.0,
            cutoff: Some(3),
        });
        b.init(&Init {
            global: &[0.0],
            num_clients: 2,
            probabilities: None,
            model: None,
            data: None,
        });
        b.load_state(a.save_state()).unwrap();
        assert_eq!(a.estimator, b.estimator);
    }
}
