//! FedProx (Li et al., MLSys 2020): FedAvg whose clients minimise the local loss plus the proximal term
//! `(μ/2)||w − x||²`, which limits client drift. The server half is FedAvg's.

use serde::{Deserialize, Serialize};

use super::fedavg::{FedAvg, FedAvgConfig, Weighting};
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense, positive};
use crate::{ClientId, LocalTrainer, Payload};
use fedsim_types::ConfigError;

/// FedProx settings (`[strategy] kind = "fedprox"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedProxConfig {
    /// Proximal coefficient μ (0 is FedAvg).
    pub mu: f32,
    /// Server learning rate.
    #[serde(default = "one")]
    pub server_lr: f32,
    /// Aggregation weights, as in FedAvg.
    #[serde(default)]
    pub weighting: Weighting,
}

fn one() -> f32 {
    1.0
}

impl FedProxConfig {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.mu.is_finite() && self.mu >= 0.0) {
            return Err(ConfigError::new(
                "mu",
                format!("must be non-negative, got {}", self.mu),
            ));
        }
        positive("server_lr", self.server_lr)
    }
}

/// FedProx: FedAvg aggregation, proximal local training.
#[derive(Debug)]
pub struct FedProx {
    mu: f32,
    inner: FedAvg,
}

impl FedProx {
    /// A new FedProx instance.
    pub fn new(c: FedProxConfig) -> Self {
        Self {
            mu: c.mu,
            inner: FedAvg::new(FedAvgConfig {
                server_lr: c.server_lr,
                weighting: c.weighting,
                ..FedAvgConfig::default()
            }),
        }
    }
}

impl Strategy for FedProx {
    fn name(&self) -> String {
        format!("fedprox(mu={})", self.mu)
    }
    fn init(&mut self, init: &Init<'_>) {
        self.inner.init(init);
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
    fn finish_round(&mut self, round: u64, global: &mut [f32], reported: &[ClientId]) {
        self.inner.finish_round(round, global, reported);
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        _state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let global = dense::task_model(task, trainer.model.num_params())?;
        let mut w = global.clone();
        let mu = self.mu;
        let mut prox = |p: &[f32], g: &mut [f32]| {
            for ((g, p), x) in g.iter_mut().zip(p).zip(&global) {
                *g += mu * (p - x);
            }
        };
        trainer.sgd(&mut w, Some(&mut prox));
        Ok(dense::delta_update(&w, &global))
    }
}

impl Kind<Strategies> for FedProxConfig {
    const KIND: &'static str = "fedprox";
    const SUMMARY: &'static str =
        "FedProx: proximal term mu/2 ||w - w_global||^2 in the local objective";
    const EXAMPLE: &'static str = "mu = 0.1";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            needs_probabilities: self.weighting == Weighting::KnownProbability,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        FedProxConfig::validate(self)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedProx::new(self.clone()))
    }
}
