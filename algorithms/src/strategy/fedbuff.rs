//! FedBuff (Nguyen et al., AISTATS 2022): buffered asynchronous aggregation.
//!
//! Client: plain local SGD from the model version it was handed; sends `Δ = w − x_τ`.
//! Server: `concurrency` clients train at all times; every finished update is weighted by the
//! staleness function `s(τ)` (default `1/√(1+τ)`, τ = server updates since the client's model) and
//! buffered; when `buffer_size` updates are in, `x ← x + η · (1/K) Σ_k s(τ_k) Δ_k` over the K buffered
//! updates, and the version advances. The engine runs the clients on the virtual clock (one "round" of
//! the metrics is one server update).
//!
//! Weights are uniform over the buffer, as in the paper: client-declared sample counts are not used.
//! Memory: one running sum of the model's size.

use serde::{Deserialize, Serialize};

use super::registry::{Capabilities, Strategies};
use super::staleness::Staleness;
use super::{ClientState, Reporter, Schedule, Strategy, StrategyError, dense};
use crate::{ClientId, LocalTrainer, Payload};
use fedsim_types::ConfigError;
use fedsim_types::registry::{Kind, Validated};

/// `[strategy] kind = "fedbuff"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedBuffConfig {
    /// Clients training at all times.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Updates buffered per server update (K).
    #[serde(default = "default_buffer")]
    pub buffer_size: usize,
    /// Server learning rate η.
    #[serde(default = "one")]
    pub server_lr: f32,
    /// Staleness weighting `s(τ)`.
    #[serde(default)]
    pub staleness: Staleness,
}

fn default_concurrency() -> usize {
    20
}

fn default_buffer() -> usize {
    10
}

fn one() -> f32 {
    1.0
}

impl Default for FedBuffConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            buffer_size: default_buffer(),
            server_lr: 1.0,
            staleness: Staleness::default(),
        }
    }
}

impl Kind<Strategies> for FedBuffConfig {
    const KIND: &'static str = "fedbuff";
    const SUMMARY: &'static str = "FedBuff (Nguyen et al. 2022): asynchronous, staleness-weighted updates applied every buffer_size arrivals";
    const EXAMPLE: &'static str = "concurrency = 6\nbuffer_size = 3";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            asynchronous: true,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::new("concurrency", "must be at least 1"));
        }
        if self.buffer_size == 0 {
            return Err(ConfigError::new("buffer_size", "must be at least 1"));
        }
        super::positive("server_lr", self.server_lr)?;
        self.staleness.validate("staleness")
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedBuff {
            config: self.clone(),
            sum: Vec::new(),
            count: 0,
        })
    }
}

/// FedBuff's server half: the staleness-weighted sum of the buffered deltas.
#[derive(Debug)]
pub struct FedBuff {
    config: FedBuffConfig,
    sum: Vec<f64>,
    count: usize,
}

impl Strategy for FedBuff {
    fn name(&self) -> String {
        format!(
            "fedbuff(K={},c={},{})",
            self.config.buffer_size,
            self.config.concurrency,
            self.config.staleness.label()
        )
    }

    fn schedule(&self) -> Schedule {
        Schedule::Asynchronous {
            concurrency: self.config.concurrency,
            buffer_size: self.config.buffer_size,
        }
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], global: &[f32]) {
        self.sum.clear();
        self.sum.resize(global.len(), 0.0);
        self.count = 0;
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let delta = dense::take_delta(reporter.id, &mut update, self.sum.len())?;
        let w = self.config.staleness.weight(reporter.staleness);
        for (s, d) in self.sum.iter_mut().zip(&delta) {
            *s += w * f64::from(*d);
        }
        self.count += 1;
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if self.count == 0 {
            return;
        }
        let scale = f64::from(self.config.server_lr) / self.count as f64;
        for (g, s) in global.iter_mut().zip(&self.sum) {
            *g += (s * scale) as f32;
        }
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        vec![("buffered".into(), self.count as f64)]
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        _state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        super::fedavg::local_sgd_delta(trainer, task)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::TensorData;
    use crate::strategy::StrategySpec;

    fn build(config: FedBuffConfig) -> Box<dyn super::Strategy> {
        StrategySpec::new(config)
            .validate()
            .expect("valid settings")
            .build(())
    }

    fn update(delta: &[f32]) -> Payload {
        Payload::new().with(dense::DELTA, TensorData::vector(delta.to_vec()))
    }

    fn reporter(id: ClientId, staleness: u64) -> Reporter {
        Reporter {
            id,
            num_samples: 1,
            staleness,
        }
    }

    proptest! {
        /// Fresh identical updates move the model by exactly that update (η = 1).
        #[test]
        fn identical_fresh_updates_aggregate_to_that_update(
            delta in prop::collection::vec(-1e3f32..1e3, 1..20),
            k in 1usize..8,
        ) {
            let mut s = build(FedBuffConfig { buffer_size: k, ..FedBuffConfig::default() });
            let mut global = vec![0.25f32; delta.len()];
            let before = global.clone();
            s.begin_round(0, &[], &global);
            for id in 0..k as u32 {
                s.accept(reporter(id, 0), update(&delta)).unwrap();
            }
            s.finish_round(0, &mut global, &[]);
            for ((g, b), d) in global.iter().zip(&before).zip(&delta) {
                prop_assert_eq!(*g, b + d);
            }
        }
    }

    #[test]
    fn stale_updates_are_weighted_down_by_the_hand_computed_factor() {
        // Two updates: (1, 1) fresh and (4, 0) with τ = 3 under 1/√(1+τ): weights 1 and 1/2, η = 2, K = 2:
        // x += 2 · ((1, 1) + (2, 0)) / 2 = (3, 1).
        let mut s = build(FedBuffConfig {
            buffer_size: 2,
            server_lr: 2.0,
            ..FedBuffConfig::default()
        });
        let mut global = vec![0.0f32; 2];
        s.begin_round(4, &[], &global);
        s.accept(reporter(5, 0), update(&[1.0, 1.0])).unwrap();
        s.accept(reporter(2, 3), update(&[4.0, 0.0])).unwrap();
        s.finish_round(4, &mut global, &[2, 5]);
        assert_eq!(global, vec![3.0, 1.0]);
        assert!(s.accept(reporter(1, 0), update(&[1.0])).is_err());
        assert_eq!(
            s.schedule(),
            Schedule::Asynchronous {
                concurrency: 20,
                buffer_size: 2
            }
        );
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = StrategySpec::new(FedBuffConfig {
            buffer_size: 0,
            ..FedBuffConfig::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "strategy.buffer_size");
    }
}
