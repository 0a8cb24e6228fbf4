//! FedVarp (Jhunjhunwala et al., 2022), a baseline of FedAU's paper (`../shared/algorithms.md` §2.5):
//! SAGA-style variance reduction with the latest update `y_n` of every client (zero initially) and
//! `ȳ`, the mean of all `y` after the previous round:
//! `v = (1/|S|) Σ_{n∈S} (Δ_n − y_n) + ȳ`; then `y_n ← Δ_n` for n ∈ S, `ȳ ← mean_n y_n`; `x ← x + η v`.
//! With no reporting client nothing changes (and ȳ is not refreshed).
//!
//! Memory: N model-sized vectors on the server (allocated as clients first report), plus two sums.

use serde::{Deserialize, Serialize};

use super::fedavg::local_sgd_delta;
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

/// FedVarp settings (`[strategy] kind = "fedvarp"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedVarpConfig {
    /// Server learning rate η.
    #[serde(default = "one")]
    pub server_lr: f32,
}

fn one() -> f32 {
    1.0
}

/// FedVarp's server state.
#[derive(Debug)]
pub struct FedVarp {
    config: FedVarpConfig,
    dim: usize,
    latest: Vec<Option<Vec<f32>>>,
    /// Σ_n y_n (current).
    total: Vec<f64>,
    /// ȳ from the previous round.
    mean_prev: Vec<f64>,
    /// Σ_{n∈S} (Δ_n − y_n) this round.
    correction: Vec<f64>,
    reporters: usize,
}

impl FedVarp {
    /// A new FedVarp instance.
    pub fn new(config: FedVarpConfig) -> Self {
        Self {
            config,
            dim: 0,
            latest: Vec::new(),
            total: Vec::new(),
            mean_prev: Vec::new(),
            correction: Vec::new(),
            reporters: 0,
        }
    }
}

impl Strategy for FedVarp {
    fn name(&self) -> String {
        "fedvarp".into()
    }

    fn init(&mut self, init: &Init<'_>) {
        self.dim = init.global.len();
        self.latest = vec![None; init.num_clients];
        self.total = vec![0.0; self.dim];
        self.mean_prev = vec![0.0; self.dim];
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], _global: &[f32]) {
        self.correction.clear();
        self.correction.resize(self.dim, 0.0);
        self.reporters = 0;
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let delta = dense::take_delta(reporter.id, &mut update, self.dim)?;
        let slot = &mut self.latest[reporter.id as usize];
        for j in 0..self.dim {
            let old = slot.as_ref().map_or(0.0, |o| o[j] as f64);
            let d = delta[j] as f64;
            self.correction[j] += d - old;
            self.total[j] += d - old;
        }
        *slot = Some(delta);
        self.reporters += 1;
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if self.reporters == 0 {
            return;
        }
        let (eta, s) = (self.config.server_lr as f64, self.reporters as f64);
        for ((g, c), m) in global.iter_mut().zip(&self.correction).zip(&self.mean_prev) {
            *g += (eta * (c / s + m)) as f32;
        }
        let n = self.latest.len().max(1) as f64;
        for (m, t) in self.mean_prev.iter_mut().zip(&self.total) {
            *m = t / n;
        }
    }

    fn round_metrics(&self) -> Vec<(String, f64)> {
        let stored = self.latest.iter().flatten().count();
        vec![("server_state_bytes".into(), (stored * self.dim * 4) as f64)]
    }

    fn save_state(&self) -> Payload {
        use super::mifa::save_latest;
        save_latest(&self.latest, self.dim)
            .with(TOTAL, TensorData::vector_f64(&self.total))
            .with(MEAN_PREV, TensorData::vector_f64(&self.mean_prev))
    }

    fn load_state(&mut self, mut state: Payload) -> Result<(), StrategyError> {
        use super::mifa::{load_latest, take_f64};
        self.latest = load_latest(&mut state, self.latest.len(), self.dim)?;
        self.total = take_f64(&mut state, TOTAL, self.dim)?;
        self.mean_prev = take_f64(&mut state, MEAN_PREV, self.dim)?;
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

const TOTAL: &str = "total";
const MEAN_PREV: &str = "mean_prev";

impl Kind<Strategies> for FedVarpConfig {
    const KIND: &'static str = "fedvarp";
    const SUMMARY: &'static str = "FedVarp: variance reduction with the latest update of every client (N model-sized vectors)";

    fn capabilities(&self) -> Capabilities {
        Capabilities::DENSE_DELTA
    }

    fn validate(&self) -> Result<(), ConfigError> {
        super::positive("server_lr", self.server_lr)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedVarp::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::{init_plain, send_delta};

    #[test]
    fn variance_reduced_step() {
        let mut f = FedVarp::new(FedVarpConfig { server_lr: 1.0 });
        init_plain(&mut f, &[0.0], 2);
        let mut g = vec![0.0f32];
        let send = |f: &mut FedVarp, id, v| send_delta(f, id, vec![v]);
        f.begin_round(0, &[0], &g);
        send(&mut f, 0, 2.0);
        f.finish_round(0, &mut g, &[0]);
        assert_eq!(g, vec![2.0], "v = (2 − 0) + 0");
        f.begin_round(1, &[1], &g);
        send(&mut f, 1, 4.0);
        f.finish_round(1, &mut g, &[1]);
        assert_eq!(g, vec![7.0], "v = (4 − 0) + ȳ, ȳ = (2 + 0)/2 = 1 → 2 + 5");
    }
}
