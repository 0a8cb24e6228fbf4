//! FedAsync (Xie, Koyejo & Gupta, 2019): every finished client is mixed into the global model at once.
//!
//! Client: plain local SGD from the model version it was handed; sends its trained model `w`
//! (tensor `model`; the mixing needs the model itself, not a delta against an older version).
//! Server: `concurrency` clients train at all times; each finished update is applied on arrival (in
//! virtual-finish-time order) as `x ← (1 − α_t) x + α_t w` with `α_t = α · s(τ)`, τ the number of
//! server updates since the client's model was handed out and `s` the staleness function (constant,
//! polynomial `(1+τ)^(−a)` or hinge). Every update is one server update (one "round" of the metrics).
//!
//! Client-declared sample counts are not used. `round.max_update_norm`, where set, bounds the norm of
//! the sent model.

use serde::{Deserialize, Serialize};

use super::registry::{Capabilities, Strategies, UpdateKind};
use super::staleness::Staleness;
use super::{ClientState, Reporter, Schedule, Strategy, StrategyError, dense};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;
use fedsim_types::registry::{Kind, Validated};

/// `[strategy] kind = "fedasync"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedAsyncConfig {
    /// Clients training at all times.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Mixing weight α in (0, 1].
    #[serde(default = "default_alpha")]
    pub alpha: f32,
    /// Staleness weighting `s(τ)` (default `1/√(1+τ)`).
    #[serde(default)]
    pub staleness: Staleness,
}

fn default_concurrency() -> usize {
    10
}

fn default_alpha() -> f32 {
    0.6
}

impl Default for FedAsyncConfig {
    fn default() -> Self {
        Self {
            concurrency: default_concurrency(),
            alpha: default_alpha(),
            staleness: Staleness::default(),
        }
    }
}

impl Kind<Strategies> for FedAsyncConfig {
    const KIND: &'static str = "fedasync";
    const SUMMARY: &'static str = "FedAsync (Xie et al. 2019): asynchronous, each update mixed in with weight alpha·s(staleness)";
    const EXAMPLE: &'static str = "concurrency = 4\nalpha = 0.6";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            update: UpdateKind::Other,
            asynchronous: true,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrency == 0 {
            return Err(ConfigError::new("concurrency", "must be at least 1"));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(ConfigError::new(
                "alpha",
                format!("must be in (0, 1], got {}", self.alpha),
            ));
        }
        self.staleness.validate("staleness")
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedAsync {
            config: self.clone(),
            dim: 0,
            pending: None,
        })
    }
}

/// FedAsync's server half: the update of the open server update with its mixing weight.
#[derive(Debug)]
pub struct FedAsync {
    config: FedAsyncConfig,
    dim: usize,
    /// The model to mix in and `α_t`.
    pending: Option<(Vec<f32>, f64)>,
}

impl Strategy for FedAsync {
    fn name(&self) -> String {
        format!(
            "fedasync(alpha={},c={},{})",
            self.config.alpha,
            self.config.concurrency,
            self.config.staleness.label()
        )
    }

    fn schedule(&self) -> Schedule {
        Schedule::Asynchronous {
            concurrency: self.config.concurrency,
            buffer_size: 1,
        }
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn update_tensors(&self) -> Vec<String> {
        vec![dense::MODEL.to_string()]
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], global: &[f32]) {
        self.dim = global.len();
        self.pending = None;
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let model = update.take_dense(dense::MODEL, self.dim).map_err(|msg| {
            StrategyError::InvalidUpdate {
                client: reporter.id,
                msg,
            }
        })?;
        let alpha = f64::from(self.config.alpha) * self.config.staleness.weight(reporter.staleness);
        self.pending = Some((model, alpha));
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if let Some((model, alpha)) = self.pending.take() {
            for (x, w) in global.iter_mut().zip(&model) {
                *x = ((1.0 - alpha) * f64::from(*x) + alpha * f64::from(*w)) as f32;
            }
        }
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        _state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let mut local = dense::task_model(task, trainer.model.num_params())?;
        trainer.sgd(&mut local, None);
        Ok(Payload::new().with(dense::MODEL, TensorData::vector(local)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::StrategySpec;

    fn build(config: FedAsyncConfig) -> Box<dyn super::Strategy> {
        StrategySpec::new(config)
            .validate()
            .expect("valid settings")
            .build(())
    }

    fn model(w: &[f32]) -> Payload {
        Payload::new().with(dense::MODEL, TensorData::vector(w.to_vec()))
    }

    #[test]
    fn mixing_follows_alpha_times_the_staleness_weight() {
        // α = 0.5, hinge a = 1, b = 0: τ = 1 gives s = 1/2, α_t = 1/4: x = 0.75·(4, 0) + 0.25·(0, 8).
        let mut s = build(FedAsyncConfig {
            alpha: 0.5,
            staleness: Staleness::Hinge { a: 1.0, b: 0 },
            ..FedAsyncConfig::default()
        });
        let mut global = vec![4.0f32, 0.0];
        s.begin_round(0, &[], &global);
        let r = Reporter {
            id: 3,
            num_samples: 10,
            staleness: 1,
        };
        s.accept(r, model(&[0.0, 8.0])).unwrap();
        s.finish_round(0, &mut global, &[3]);
        assert_eq!(global, vec![3.0, 2.0]);
        // A fresh update with α = 1 replaces the model.
        let mut s = build(FedAsyncConfig {
            alpha: 1.0,
            ..FedAsyncConfig::default()
        });
        s.begin_round(1, &[], &global);
        s.accept(Reporter { staleness: 0, ..r }, model(&[7.0, 7.0]))
            .unwrap();
        s.finish_round(1, &mut global, &[3]);
        assert_eq!(global, vec![7.0, 7.0]);
    }

    #[test]
    fn every_staleness_function_scales_alpha_by_hand_computed_weights() {
        // α = 0.8, τ = 3, global 0, client model 1: the new model is α·s(3).
        for (staleness, s3) in [
            (Staleness::Constant, 1.0),
            (Staleness::Polynomial { a: 0.5 }, 0.5),
            (Staleness::Polynomial { a: 1.0 }, 0.25),
            (Staleness::Hinge { a: 2.0, b: 3 }, 1.0),
            (Staleness::Hinge { a: 2.0, b: 1 }, 0.2),
        ] {
            let mut s = build(FedAsyncConfig {
                alpha: 0.8,
                staleness,
                ..FedAsyncConfig::default()
            });
            let mut global = vec![0.0f32];
            s.begin_round(7, &[], &global);
            let r = Reporter {
                id: 0,
                num_samples: 1,
                staleness: 3,
            };
            s.accept(r, model(&[1.0])).unwrap();
            s.finish_round(7, &mut global, &[0]);
            assert_eq!(global[0], (0.8 * s3) as f32, "{staleness:?}");
        }
    }

    #[test]
    fn alpha_outside_the_unit_interval_is_refused() {
        let e = StrategySpec::new(FedAsyncConfig {
            alpha: 1.5,
            ..FedAsyncConfig::default()
        })
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "strategy.alpha");
    }
}
