//! Server optimisers on FedAvg's averaged delta (the pseudo-gradient `Δ̄`): FedAvgM (Hsu et al. 2019)
//! and FedAdagrad, FedAdam, FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021).
//!
//! - FedAvgM: `v ← β v + Δ̄`, `x ← x + η v`.
//! - FedAdagrad: `m ← β₁ m + (1−β₁) Δ̄`, `v ← v + Δ̄²`, `x ← x + η m / (√v + τ)`.
//! - FedAdam: as FedAdagrad with `v ← β₂ v + (1−β₂) Δ̄²`.
//! - FedYogi: as FedAdagrad with `v ← v − (1−β₂) Δ̄² sign(v − Δ̄²)`.
//!
//! `v` starts at τ² (the paper's `v₋₁ ≥ τ²`). Clients run plain local SGD. Server state: one or two
//! model-sized vectors.

use serde::{Deserialize, Serialize};

use super::fedavg::{FedAvg, FedAvgConfig, Weighting, local_sgd_delta};
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, positive};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

/// Which server optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerOptimizer {
    /// Heavy-ball momentum (FedAvgM).
    Momentum,
    /// Adagrad.
    Adagrad,
    /// Adam (no bias correction, as in the paper).
    Adam,
    /// Yogi.
    Yogi,
}

/// Settings of a server-optimiser strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedOptConfig {
    /// Server learning rate η.
    #[serde(default = "default_lr")]
    pub server_lr: f32,
    /// Momentum β (FedAvgM) or β₁ (adaptive).
    #[serde(default = "default_beta1")]
    pub beta1: f32,
    /// β₂ of Adam and Yogi.
    #[serde(default = "default_beta2")]
    pub beta2: f32,
    /// Adaptivity τ.
    #[serde(default = "default_tau")]
    pub tau: f32,
    /// Weights of the averaged delta.
    #[serde(default)]
    pub weighting: Weighting,
}

fn default_lr() -> f32 {
    1.0
}
fn default_beta1() -> f32 {
    0.9
}
fn default_beta2() -> f32 {
    0.99
}
fn default_tau() -> f32 {
    1e-3
}

impl FedOptConfig {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("server_lr", self.server_lr)?;
        positive("tau", self.tau)?;
        for (k, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(ConfigError::new(k, format!("must be in [0, 1), got {b}")));
            }
        }
        Ok(())
    }
}

/// A server-optimiser strategy.
#[derive(Debug)]
pub struct FedOpt {
    kind: ServerOptimizer,
    config: FedOptConfig,
    inner: FedAvg,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl FedOpt {
    /// A new instance of `kind`.
    pub fn new(kind: ServerOptimizer, config: FedOptConfig) -> Self {
        let inner = FedAvg::new(FedAvgConfig {
            server_lr: 1.0,
            weighting: config.weighting,
            ..FedAvgConfig::default()
        });
        Self {
            kind,
            config,
            inner,
            m: Vec::new(),
            v: Vec::new(),
        }
    }
}

impl Strategy for FedOpt {
    fn name(&self) -> String {
        match self.kind {
            ServerOptimizer::Momentum => "fedavgm",
            ServerOptimizer::Adagrad => "fedadagrad",
            ServerOptimizer::Adam => "fedadam",
            ServerOptimizer::Yogi => "fedyogi",
        }
        .into()
    }

    fn init(&mut self, init: &Init<'_>) {
        self.inner.init(init);
        let d = init.global.len();
        self.m = vec![0.0; d];
        let tau = self.config.tau as f64;
        self.v = if self.kind == ServerOptimizer::Momentum {
            Vec::new()
        } else {
            vec![tau * tau; d]
        };
    }

    fn broadcast(&self, round: u64, global: &[f32]) -> Payload {
        self.inner.broadcast(round, global)
    }

    fn begin_round(&mut self, round: u64, selected: &[ClientId], global: &[f32]) {
        self.inner.begin_round(round, selected, global);
    }

    fn accept(&mut self, reporter: Reporter, update: Payload) -> Result<(), StrategyError> {
        self.inner.accept(reporter, update)
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        let Some(delta) = self.inner.averaged_delta() else {
            return;
        };
        let c = &self.config;
        let (eta, b1, b2, tau) = (
            c.server_lr as f64,
            c.beta1 as f64,
            c.beta2 as f64,
            c.tau as f64,
        );
        for j in 0..delta.len() {
            let d = delta[j];
            let step = if self.kind == ServerOptimizer::Momentum {
                self.m[j] = b1 * self.m[j] + d;
                self.m[j]
            } else {
                self.m[j] = b1 * self.m[j] + (1.0 - b1) * d;
                let d2 = d * d;
                self.v[j] = match self.kind {
                    ServerOptimizer::Adagrad => self.v[j] + d2,
                    ServerOptimizer::Adam => b2 * self.v[j] + (1.0 - b2) * d2,
                    _ => self.v[j] - (1.0 - b2) * d2 * (self.v[j] - d2).signum(),
                };
                self.m[j] / (self.v[j].sqrt() + tau)
            };
            global[j] += (eta * step) as f32;
        }
    }

    fn save_state(&self) -> Payload {
        let f = |v: &[f64]| TensorData::F64 {
            shape: vec![v.len()],
            values: v.to_vec(),
        };
        Payload::new().with("m", f(&self.m)).with("v", f(&self.v))
    }

    fn load_state(&mut self, state: Payload) -> Result<(), StrategyError> {
        let get = |name: &str, len: usize| match state.get(name) {
            Some(TensorData::F64 { values, .. }) if values.len() == len => Ok(values.clone()),
            _ => Err(StrategyError::InvalidState(format!(
                "`{name}` missing or wrong length"
            ))),
        };
        self.m = get("m", self.m.len())?;
        self.v = get("v", self.v.len())?;
        Ok(())
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

/// Registers one `[strategy] kind` of a server optimiser: a newtype over [`FedOptConfig`] and its
/// [`Kind<Strategies>`](Kind) implementation.
macro_rules! server_optimizer_kind {
    ($name:ident, $kind:literal, $optimizer:ident, $summary:literal) => {
        #[doc = concat!("`[strategy] kind = \"", $kind, "\"`: ", $summary, ".")]
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub FedOptConfig);

        impl Kind<Strategies> for $name {
            const KIND: &'static str = $kind;
            const SUMMARY: &'static str = $summary;

            fn capabilities(&self) -> Capabilities {
                Capabilities {
                    needs_probabilities: self.0.weighting == Weighting::KnownProbability,
                    ..Capabilities::DENSE_DELTA
                }
            }

            fn validate(&self) -> Result<(), ConfigError> {
                self.0.validate()
            }

            fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
                Box::new(FedOpt::new(ServerOptimizer::$optimizer, self.0.clone()))
            }
        }
    };
}

server_optimizer_kind!(FedAvgM, "fedavgm", Momentum, "FedAvgM: server momentum");
server_optimizer_kind!(
    FedAdagrad,
    "fedadagrad",
    Adagrad,
    "FedAdagrad: adaptive server optimiser (Reddi et al. 2021)"
);
server_optimizer_kind!(
    FedAdam,
    "fedadam",
    Adam,
    "FedAdam: adaptive server optimiser (Reddi et al. 2021)"
);
server_optimizer_kind!(
    FedYogi,
    "fedyogi",
    Yogi,
    "FedYogi: adaptive server optimiser (Reddi et al. 2021)"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::dense;

    fn step(kind: ServerOptimizer, deltas: &[f32]) -> Vec<f32> {
        let cfg = FedOptConfig {
            server_lr: 0.5,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            weighting: Weighting::Uniform,
        };
        let mut s = FedOpt::new(kind, cfg);
        let mut g = vec![0.0f32];
        s.init(&Init {
            global: &g,
            num_clients: 1,
            probabilities: None,
            model: None,
            data: None,
        });
        for (r, &d) in deltas.iter().enumerate() {
            s.begin_round(r as u64, &[0], &g);
            s.accept(
                Reporter {
                    id: 0,
                    num_samples: 1,
                    staleness: 0,
                },
                Payload::new().with(dense::DELTA, TensorData::vector(vec![d])),
            )
            .unwrap();
            s.finish_round(r as u64, &mut g, &[0]);
        }
        g
    }

    #[test]
    fn momentum_accumulates() {
        // v = 1, then 0.9 + 1 = 1.9: x = 0.5 · (1 + 1.9).
        assert!((step(ServerOptimizer::Momentum, &[1.0, 1.0])[0] - 1.45).abs() < 1e-6);
    }

    #[test]
    fn adaptive_steps_are_normalised() {
        for kind in [
            ServerOptimizer::Adagrad,
            ServerOptimizer::Adam,
            ServerOptimizer::Yogi,
        ] {
            let small = step(kind, &[1e-3])[0];
            let large = step(kind, &[1e3])[0];
            assert!(small > 0.0 && large > 0.0, "{kind:?} moves along the delta");
            assert!(
                large / small < 200.0,
                "{kind:?}: step size barely depends on the delta's scale ({small} vs {large})"
            );
        }
    }
}
