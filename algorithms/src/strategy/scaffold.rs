//! SCAFFOLD (Karimireddy et al., ICML 2020): control variates correct client drift.
//!
//! Server state: `x` and the global control variate `c`; client state: its control variate `c_i` (kept
//! by the client across rounds; zero at first). Each selected client receives `x` and `c`, runs K local
//! steps `y ← y − η_l (g(y) − c_i + c)`, then updates its control variate:
//! option I `c_i⁺ = ∇f_i(x)` (one extra pass over the local data), option II
//! `c_i⁺ = c_i − c + (x − y)/(K η_l)`. It sends `Δy = y − x` and `Δc = c_i⁺ − c_i`. Server:
//! `x ← x + η_g · mean Δy`, `c ← c + (1/N) Σ Δc`.

use serde::{Deserialize, Serialize};

use super::fedavg::{FedAvg, FedAvgConfig, Weighting};
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies, UpdateKind};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense, positive};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

/// SCAFFOLD settings (`[strategy] kind = "scaffold"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaffoldConfig {
    /// Server learning rate η_g.
    #[serde(default = "one")]
    pub server_lr: f32,
    /// Control-variate update: 1 (gradient at the global model) or 2 (from the local progress).
    #[serde(default = "two")]
    pub option: u8,
}

fn one() -> f32 {
    1.0
}
fn two() -> u8 {
    2
}

impl ScaffoldConfig {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("server_lr", self.server_lr)?;
        if !matches!(self.option, 1 | 2) {
            return Err(ConfigError::new(
                "option",
                format!("must be 1 or 2, got {}", self.option),
            ));
        }
        Ok(())
    }
}

const CONTROL: &str = "control";
const DELTA_C: &str = "delta_control";

/// SCAFFOLD's server state.
#[derive(Debug)]
pub struct Scaffold {
    config: ScaffoldConfig,
    inner: FedAvg,
    control: Vec<f32>,
    control_sum: Vec<f64>,
    num_clients: usize,
}

impl Scaffold {
    /// A new SCAFFOLD instance.
    pub fn new(config: ScaffoldConfig) -> Self {
        let inner = FedAvg::new(FedAvgConfig {
            server_lr: config.server_lr,
            weighting: Weighting::Uniform,
            ..FedAvgConfig::default()
        });
        Self {
            config,
            inner,
            control: Vec::new(),
            control_sum: Vec::new(),
            num_clients: 0,
        }
    }
}

impl Strategy for Scaffold {
    fn update_tensors(&self) -> Vec<String> {
        vec![dense::DELTA.to_string(), DELTA_C.to_string()]
    }

    fn name(&self) -> String {
        format!("scaffold(option {})", self.config.option)
    }

    fn init(&mut self, init: &Init<'_>) {
        self.inner.init(init);
        self.control = vec![0.0; init.global.len()];
        self.num_clients = init.num_clients;
    }

    fn broadcast(&self, round: u64, global: &[f32]) -> Payload {
        self.inner
            .broadcast(round, global)
            .with(CONTROL, TensorData::vector(self.control.clone()))
    }

    fn begin_round(&mut self, round: u64, selected: &[ClientId], global: &[f32]) {
        self.inner.begin_round(round, selected, global);
        self.control_sum.clear();
        self.control_sum.resize(global.len(), 0.0);
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let dc = update
            .take_dense(DELTA_C, self.control.len())
            .map_err(|msg| StrategyError::InvalidUpdate {
                client: reporter.id,
                msg,
            })?;
        self.inner.accept(reporter, update)?;
        for (s, d) in self.control_sum.iter_mut().zip(&dc) {
            *s += *d as f64;
        }
        Ok(())
    }

    fn finish_round(&mut self, round: u64, global: &mut [f32], reported: &[ClientId]) {
        self.inner.finish_round(round, global, reported);
        let n = self.num_clients.max(1) as f64;
        for (c, s) in self.control.iter_mut().zip(&self.control_sum) {
            *c += (s / n) as f32;
        }
    }

    fn save_state(&self) -> Payload {
        Payload::new().with(CONTROL, TensorData::vector(self.control.clone()))
    }

    fn load_state(&mut self, mut state: Payload) -> Result<(), StrategyError> {
        self.control = state
            .take_dense(CONTROL, self.control.len())
            .map_err(StrategyError::InvalidState)?;
        Ok(())
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let d = trainer.model.num_params();
        let x = dense::task_model(task, d)?;
        let c = task
            .dense(CONTROL, d)
            .map_err(StrategyError::InvalidTask)?
            .to_vec();
        let ci = match state.get(CONTROL) {
            Some(TensorData::F32 { values, .. }) if values.len() == d => values.clone(),
            _ => vec![0.0; d],
        };
        let correction: Vec<f32> = c.iter().zip(&ci).map(|(c, ci)| c - ci).collect();
        let mut y = x.clone();
        let mut hook = |_: &[f32], g: &mut [f32]| {
            for (g, k) in g.iter_mut().zip(&correction) {
                *g += k;
            }
        };
        let report = trainer.sgd(&mut y, Some(&mut hook));
        let ci_new: Vec<f32> = if self.config.option == 1 {
            full_gradient(trainer, &x)
        } else if report.steps > 0 {
            let k_eta = report.steps as f32 * trainer.lr();
            ci.iter()
                .zip(&c)
                .zip(x.iter().zip(&y))
                .map(|((ci, c), (x, y))| ci - c + (x - y) / k_eta)
                .collect()
        } else {
            ci.clone()
        };
        let delta_c: Vec<f32> = ci_new.iter().zip(&ci).map(|(a, b)| a - b).collect();
        state.push(CONTROL, TensorData::vector(ci_new));
        Ok(dense::delta_update(&y, &x).with(DELTA_C, TensorData::vector(delta_c)))
    }
}

/// Mean gradient of the local loss at `params` over all local samples (in batches, sample-weighted).
fn full_gradient(trainer: &mut LocalTrainer<'_>, params: &[f32]) -> Vec<f32> {
    let n = trainer.data.len();
    let mut total = vec![0.0f64; params.len()];
    let mut g = vec![0.0f32; params.len()];
    let b = 256;
    let indices: Vec<u32> = trainer.data.indices.to_vec();
    for chunk in indices.chunks(b) {
        trainer.loss_grad_on(params, chunk, &mut g);
        for (t, gi) in total.iter_mut().zip(&g) {
            *t += *gi as f64 * chunk.len() as f64;
        }
    }
    total.iter().map(|t| (t / n.max(1) as f64) as f32).collect()
}

impl Kind<Strategies> for ScaffoldConfig {
    const KIND: &'static str = "scaffold";
    const SUMMARY: &'static str = "SCAFFOLD: control variates (client state c_i)";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            update: UpdateKind::Other,
            client_state: true,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        ScaffoldConfig::validate(self)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(Scaffold::new(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::testutil::two_clients;

    #[test]
    fn both_options_reach_the_global_minimiser() {
        for option in [1, 2] {
            let x = two_clients(
                &mut Scaffold::new(ScaffoldConfig {
                    server_lr: 1.0,
                    option,
                }),
                100,
            );
            assert!((x - 3.0).abs() < 0.02, "option {option}: {x}");
        }
    }
}
