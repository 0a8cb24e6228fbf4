//! FedSpeed (Sun et al., ICLR 2023), `../shared/algorithms.md` §3, in the reference code's form (§3.3);
//! with `rho = 0` it is FedDyn (Acar et al., ICLR 2021), registered as `kind = "feddyn"`.
//!
//! Client i keeps `h_i`, the running sum of its updates (zero at first). Each local step on a
//! minibatch: `g1 = ∇ℓ(w)`; ascent `e = ρ g1/(||g1|| + 1e−7)` (unnormalised `ρ g1` with
//! `ascent_normalized = false`); `g2 = ∇ℓ(w + e)` on the same batch; `g = (1−α) g1 + α g2`;
//! `g += λ (h_i − x)`; clip `g` to global norm `clip`; `w ← w − η_t (g + (wd + λ) w)`. Then
//! `Δ_i = w − x`, `h_i ← h_i + Δ_i`. Net extra gradient: `wd·w + λ (w − x + h_i)`.
//!
//! Server: `x ← mean_{i∈S} w_i + h̄` with `h̄ = (1/N) Σ_{all j} h_j` (`server_dual_mean =
//! "all_clients"`, the reference code) or `x ← mean_{i∈S} (w_i + h_i)` (`"participants"`, the paper;
//! clients then also send `h_i`). With `lambda = 0` the dual variables are off: the client step is
//! SAM-SGD and the server a plain mean, so with `rho = 0`, `weight_decay = 0` and `clip = 0` this is
//! FedAvg with uniform weights.
//!
//! Client state: `h_i`, one model-sized vector per client (in the client process over gRPC, in memory
//! in the simulator). Server state: `h̄`. Local training uses plain SGD (`train.momentum` is ignored);
//! `train.weight_decay` is `wd` and `train.lr_decay` the per-round decay.

use serde::{Deserialize, Serialize};

use super::fedavg::{FedAvg, FedAvgConfig, Weighting};
use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies, UpdateKind};
use super::{ClientState, Init, Reporter, Strategy, StrategyError, dense};
use crate::{ClientId, LocalTrainer, Payload, TensorData};
use fedsim_types::ConfigError;

/// Which clients' dual variables enter the server's update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DualMean {
    /// Mean over all N clients (absent ones with their stale h): the reference code.
    #[default]
    AllClients,
    /// Mean over this round's participants: the paper.
    Participants,
}

/// FedSpeed settings (`[strategy] kind = "fedspeed"`; `kind = "feddyn"` fixes `rho = 0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FedSpeedConfig {
    /// Ascent radius ρ (0: no perturbation, i.e. FedDyn).
    #[serde(default = "default_rho")]
    pub rho: f32,
    /// Merge weight α of the perturbed gradient.
    #[serde(default = "one")]
    pub alpha: f32,
    /// Prox-correction coefficient λ' (the code's `lamb`; 1/λ of the paper).
    #[serde(default = "default_lambda")]
    pub lambda: f32,
    /// Clip the step's gradient to this global L2 norm (0 = off).
    #[serde(default = "default_clip")]
    pub clip: f32,
    /// Normalise the ascent step (SAM).
    #[serde(default = "yes")]
    pub ascent_normalized: bool,
    /// Server rule for the dual variables.
    #[serde(default)]
    pub server_dual_mean: DualMean,
}

fn default_rho() -> f32 {
    0.1
}
fn one() -> f32 {
    1.0
}
fn default_lambda() -> f32 {
    0.1
}
fn default_clip() -> f32 {
    10.0
}
fn yes() -> bool {
    true
}

impl Default for FedSpeedConfig {
    fn default() -> Self {
        Self {
            rho: 0.1,
            alpha: 1.0,
            lambda: 0.1,
            clip: 10.0,
            ascent_normalized: true,
            server_dual_mean: DualMean::AllClients,
        }
    }
}

impl FedSpeedConfig {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (k, v) in [
            ("rho", self.rho),
            ("lambda", self.lambda),
            ("clip", self.clip),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::new(
                    k,
                    format!("must be non-negative, got {v}"),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.alpha) {
            return Err(ConfigError::new(
                "alpha",
                format!("must be in [0, 1], got {}", self.alpha),
            ));
        }
        Ok(())
    }
}

const DUAL: &str = "dual";

/// FedSpeed / FedDyn.
#[derive(Debug)]
pub struct FedSpeed {
    config: FedSpeedConfig,
    inner: FedAvg,
    num_clients: usize,
    /// h̄ = (1/N) Σ_j h_j (all_clients mode).
    dual_mean: Vec<f64>,
    /// Σ_{i∈S} h_i this round (participants mode).
    dual_round: Vec<f64>,
    reporters: usize,
}

impl FedSpeed {
    /// A new instance.
    pub fn new(config: FedSpeedConfig) -> Self {
        let inner = FedAvg::new(FedAvgConfig {
            server_lr: 1.0,
            weighting: Weighting::Uniform,
            ..FedAvgConfig::default()
        });
        Self {
            config,
            inner,
            num_clients: 0,
            dual_mean: Vec::new(),
            dual_round: Vec::new(),
            reporters: 0,
        }
    }

    fn dual_on(&self) -> bool {
        self.config.lambda > 0.0
    }
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

impl Strategy for FedSpeed {
    fn update_tensors(&self) -> Vec<String> {
        vec![dense::DELTA.to_string(), DUAL.to_string()]
    }

    fn name(&self) -> String {
        if self.config.rho == 0.0 {
            "feddyn".into()
        } else {
            "fedspeed".into()
        }
    }

    fn init(&mut self, init: &Init<'_>) {
        self.inner.init(init);
        self.num_clients = init.num_clients;
        self.dual_mean = vec![0.0; init.global.len()];
    }

    fn broadcast(&self, round: u64, global: &[f32]) -> Payload {
        self.inner.broadcast(round, global)
    }

    fn begin_round(&mut self, round: u64, selected: &[ClientId], global: &[f32]) {
        self.inner.begin_round(round, selected, global);
        self.dual_round.clear();
        self.dual_round.resize(global.len(), 0.0);
        self.reporters = 0;
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let d = self.dual_mean.len();
        let delta = update
            .dense(dense::DELTA, d)
            .map_err(|msg| StrategyError::InvalidUpdate {
                client: reporter.id,
                msg,
            })?
            .to_vec();
        if self.dual_on() {
            match self.config.server_dual_mean {
                DualMean::AllClients => {
                    let n = self.num_clients.max(1) as f64;
                    for (h, x) in self.dual_mean.iter_mut().zip(&delta) {
                        *h += *x as f64 / n;
                    }
                }
                DualMean::Participants => {
                    let h =
                        update
                            .take_dense(DUAL, d)
                            .map_err(|msg| StrategyError::InvalidUpdate {
                                client: reporter.id,
                                msg,
                            })?;
                    for (s, x) in self.dual_round.iter_mut().zip(&h) {
                        *s += *x as f64;
                    }
                }
            }
        }
        self.reporters += 1;
        // A uniform-weight reporter: the sample count does not matter.
        self.inner.accept(
            Reporter {
                num_samples: 1,
                ..reporter
            },
            Payload::new().with(dense::DELTA, TensorData::vector(delta)),
        )
    }

    fn finish_round(&mut self, round: u64, global: &mut [f32], reported: &[ClientId]) {
        if self.reporters == 0 {
            return;
        }
        self.inner.finish_round(round, global, reported);
        if !self.dual_on() {
            return;
        }
        match self.config.server_dual_mean {
            DualMean::AllClients => {
                for (x, h) in global.iter_mut().zip(&self.dual_mean) {
                    *x += *h as f32;
                }
            }
            DualMean::Participants => {
                let s = self.reporters as f64;
                for (x, h) in global.iter_mut().zip(&self.dual_round) {
                    *x += (h / s) as f32;
                }
            }
        }
    }

    fn save_state(&self) -> Payload {
        Payload::new().with(
            "dual_mean",
            TensorData::F64 {
                shape: vec![self.dual_mean.len()],
                values: self.dual_mean.clone(),
            },
        )
    }

    fn load_state(&mut self, state: Payload) -> Result<(), StrategyError> {
        match state.get("dual_mean") {
            Some(TensorData::F64 { values, .. }) if values.len() == self.dual_mean.len() => {
                self.dual_mean = values.clone();
                Ok(())
            }
            _ => Err(StrategyError::InvalidState(
                "`dual_mean` missing or wrong length".into(),
            )),
        }
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        let d = trainer.model.num_params();
        let x = dense::task_model(task, d)?;
        let c = &self.config;
        let mut h = match state.get(DUAL) {
            Some(TensorData::F32 { values, .. }) if values.len() == d => values.clone(),
            _ => vec![0.0; d],
        };
        let lr = trainer.lr();
        let decay = trainer.config.weight_decay + c.lambda;
        let correction: Vec<f32> = h.iter().zip(&x).map(|(h, x)| c.lambda * (h - x)).collect();
        let mut w = x.clone();
        let (mut g1, mut g2, mut probe) = (vec![0.0f32; d], vec![0.0f32; d], vec![0.0f32; d]);
        for range in trainer.batches() {
            trainer.loss_grad(&w, range, &mut g1);
            if c.rho > 0.0 && c.alpha > 0.0 {
                let scale = if c.ascent_normalized {
                    c.rho / (norm(&g1) + 1e-7)
                } else {
                    c.rho
                };
                for ((p, w), g) in probe.iter_mut().zip(&w).zip(&g1) {
                    *p = w + scale * g;
                }
                trainer.loss_grad_same_batch(&probe, &mut g2);
                for (a, b) in g1.iter_mut().zip(&g2) {
                    *a = (1.0 - c.alpha) * *a + c.alpha * b;
                }
            }
            if c.lambda > 0.0 {
                for (g, k) in g1.iter_mut().zip(&correction) {
                    *g += k;
                }
            }
            if c.clip > 0.0 {
                let n = norm(&g1);
                if n > c.clip {
                    let s = c.clip / n;
                    g1.iter_mut().for_each(|g| *g *= s);
                }
            }
            for (w, g) in w.iter_mut().zip(&g1) {
                *w -= lr * (g + decay * *w);
            }
        }
        let mut update = dense::delta_update(&w, &x);
        if c.lambda > 0.0 {
            if let Some(TensorData::F32 { values: delta, .. }) = update.get(dense::DELTA) {
                for (h, dx) in h.iter_mut().zip(delta) {
                    *h += dx;
                }
            }
            if c.server_dual_mean == DualMean::Participants {
                update.push(DUAL, TensorData::vector(h.clone()));
            }
            state.push(DUAL, TensorData::vector(h));
        }
        Ok(update)
    }
}

impl Kind<Strategies> for FedSpeedConfig {
    const KIND: &'static str = "fedspeed";
    const SUMMARY: &'static str =
        "FedSpeed: prox-correction and gradient perturbation (client state h_i)";

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            update: UpdateKind::Other,
            client_state: true,
            ..Capabilities::DENSE_DELTA
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        FedSpeedConfig::validate(self)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedSpeed::new(self.clone()))
    }
}

/// FedDyn settings (`[strategy] kind = "feddyn"`): FedSpeed's settings with the perturbation off
/// (`rho` is ignored and set to 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FedDynConfig(pub FedSpeedConfig);

impl Kind<Strategies> for FedDynConfig {
    const KIND: &'static str = "feddyn";
    const SUMMARY: &'static str =
        "FedDyn: FedSpeed without the gradient perturbation (rho is set to 0)";

    fn capabilities(&self) -> Capabilities {
        Kind::<Strategies>::capabilities(&self.0)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        Kind::<Strategies>::validate(&self.0)
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(FedSpeed::new(FedSpeedConfig {
            rho: 0.0,
            ..self.0.clone()
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::strategy::testutil::two_clients;

    #[test]
    fn feddyn_and_fedspeed_reach_the_global_minimiser_fedavg_drifts() {
        // Global minimiser of (1/2)(x − 0)² + (3/2)(x − 4)²: Σ a b / Σ a = 3. Each client's own minimiser
        // is 0 or 4, so FedAvg with many local steps drifts towards their mean, 2.
        let no_extras = FedSpeedConfig {
            rho: 0.0,
            clip: 0.0,
            ..FedSpeedConfig::default()
        };
        let dyn_x = two_clients(
            &mut FedSpeed::new(FedSpeedConfig {
                lambda: 0.5,
                ..no_extras.clone()
            }),
            300,
        );
        let speed_x = two_clients(
            &mut FedSpeed::new(FedSpeedConfig {
                lambda: 0.5,
                rho: 0.001,
                ..no_extras.clone()
            }),
            300,
        );
        let avg_x = two_clients(
            &mut FedAvg::new(FedAvgConfig {
                server_lr: 1.0,
                weighting: Weighting::Uniform,
                ..FedAvgConfig::default()
            }),
            300,
        );
        assert!((dyn_x - 3.0).abs() < 0.02, "FedDyn: {dyn_x}");
        assert!((speed_x - 3.0).abs() < 0.05, "FedSpeed: {speed_x}");
        assert!((avg_x - 3.0).abs() > 0.5, "FedAvg should drift: {avg_x}");
    }

    #[test]
    fn without_prox_ascent_decay_and_clipping_it_is_fedavg() {
        let plain = FedSpeedConfig {
            rho: 0.0,
            lambda: 0.0,
            clip: 0.0,
            ..FedSpeedConfig::default()
        };
        let a = two_clients(&mut FedSpeed::new(plain), 5);
        let b = two_clients(
            &mut FedAvg::new(FedAvgConfig {
                server_lr: 1.0,
                weighting: Weighting::Uniform,
                ..FedAvgConfig::default()
            }),
            5,
        );
        assert_eq!(a, b);
    }
}
