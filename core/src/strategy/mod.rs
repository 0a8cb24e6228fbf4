//! Federated strategies: each module holds one algorithm's client half (local update) and server half
//! (aggregation), registered in [`StrategySpec`].
//!
//! The round engine calls the server half; a runtime (simulator thread or client process) calls the
//! client half. Both halves live on one type so an algorithm is one file.

pub mod ef21;
pub mod ef21_lt;
pub mod fedau;
pub mod fedavg;
pub mod fedopt;
pub mod fedprox;
pub mod fedspeed;
pub mod fedvarp;
pub mod frl;
pub mod mifa;
pub mod scaffold;
#[cfg(test)]
pub(crate) mod testutil;

use serde::{Deserialize, Serialize};

use crate::{ClientId, LocalTrainer, Payload};

/// Errors raised by a strategy.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// A client's update is malformed (wrong tensors, shapes, non-finite values).
    #[error("client {client}: invalid update: {msg}")]
    InvalidUpdate {
        /// The client.
        client: ClientId,
        /// What is wrong.
        msg: String,
    },
    /// The task a client received is malformed.
    #[error("invalid task: {0}")]
    InvalidTask(String),
    /// Saved state could not be restored.
    #[error("invalid saved state: {0}")]
    InvalidState(String),
}

/// State a strategy keeps on a client across rounds (e.g. FedSpeed's `h_i`, SCAFFOLD's `c_i`), stored by
/// the runtime: in memory by the simulator, in the client process by the gRPC runtime.
pub type ClientState = Payload;

/// What a strategy learns before round 0.
#[derive(Debug, Clone, Copy)]
pub struct Init<'a> {
    /// The initial global model.
    pub global: &'a [f32],
    /// Number of registered clients N.
    pub num_clients: usize,
    /// Per-client participation probabilities, when the participation model has them (oracle baselines).
    pub probabilities: Option<&'a [f64]>,
    /// The model (e.g. to compute smoothness constants for theoretical step sizes).
    pub model: Option<&'a dyn fedsim_nn::Model>,
    /// The federated data, where the server has it (the simulator and the coordinator both load it).
    pub data: Option<&'a fedsim_data::FederatedData>,
}

/// What the server half knows about a reporting client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reporter {
    /// The client.
    pub id: ClientId,
    /// Its number of local training samples.
    pub num_samples: u64,
}

/// One federated algorithm: client half and server half.
///
/// Round protocol, driven by [`crate::Engine`]: `begin_round` with the selected clients, then
/// `accept` once per reporting client **in ascending client id** (the engine reorders arrivals, so the
/// result never depends on arrival order), then `finish_round` with the global model to update.
pub trait Strategy: Send + Sync {
    /// Name used in logs and results.
    fn name(&self) -> String;

    // ---- server half ----

    /// Called once before round 0.
    fn init(&mut self, init: &Init<'_>) {
        let _ = init;
    }

    /// The task every selected client receives in `round` (typically the global model).
    fn broadcast(&self, round: u64, global: &[f32]) -> Payload;

    /// Starts aggregation for `round`.
    fn begin_round(&mut self, round: u64, selected: &[ClientId], global: &[f32]);

    /// Checks an update without using it (shapes, finiteness). The default checks finiteness and shapes,
    /// and that every dense `f32` tensor is model-sized (`num_params` values), which holds for the
    /// dense strategies (deltas, dual variables, control variates); a strategy that sends other dense
    /// tensors overrides this.
    fn validate_update(
        &self,
        client: ClientId,
        update: &Payload,
        num_params: usize,
    ) -> Result<(), StrategyError> {
        let invalid = |msg| StrategyError::InvalidUpdate { client, msg };
        update.validate().map_err(invalid)?;
        for t in &update.tensors {
            if let crate::TensorData::F32 { values, .. } = &t.data
                && values.len() != num_params
            {
                return Err(invalid(format!(
                    "tensor `{}` has {} values, the model has {num_params} parameters",
                    t.name,
                    values.len()
                )));
            }
        }
        Ok(())
    }

    /// Folds one client's update into the round's aggregate. Called in ascending client id.
    fn accept(&mut self, reporter: Reporter, update: Payload) -> Result<(), StrategyError>;

    /// Ends the round: updates `global` from the accepted updates. `reported` lists the clients whose
    /// updates were accepted (ascending); `num_clients` is the population size.
    fn finish_round(&mut self, round: u64, global: &mut [f32], reported: &[ClientId]);

    /// Tells the server half how many of this round's reporters are malicious, before `finish_round`
    /// (called by the attack wrapper of [`crate::attack`]; the count of `"oracle"` robust-rule
    /// settings). The default ignores it.
    fn set_attackers(&mut self, n: usize) {
        let _ = n;
    }

    /// Extra per-round metrics (name, value) for `metrics.jsonl`.
    fn round_metrics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// Server state beyond the global model, for checkpoints.
    fn save_state(&self) -> Payload {
        Payload::new()
    }

    /// Restores what [`Strategy::save_state`] returned.
    fn load_state(&mut self, state: Payload) -> Result<(), StrategyError> {
        if state.is_empty() {
            Ok(())
        } else {
            Err(StrategyError::InvalidState(
                "unexpected server state".into(),
            ))
        }
    }

    // ---- client half ----

    /// Local update of one client: trains from `task` and returns the update to send.
    /// `state` is this client's persistent state (empty on first participation).
    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError>;
}

/// The scenario's `[strategy]` section, selected by `kind`. Adding an algorithm adds a variant here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StrategySpec {
    /// FedAvg (McMahan et al. 2017), and the mean-type baselines of FedAU's paper via `weighting`.
    Fedavg(fedavg::FedAvgConfig),
    /// FedAU (Wang & Ji 2024): weights from each client's participation history.
    Fedau(fedau::FedAuConfig),
    /// MIFA: the latest update of every client (N model-sized vectors).
    Mifa(mifa::MifaConfig),
    /// FedVarp: variance reduction with the latest update of every client (N model-sized vectors).
    Fedvarp(fedvarp::FedVarpConfig),
    /// FedProx: proximal local objective.
    Fedprox(fedprox::FedProxConfig),
    /// SCAFFOLD: control variates (client state c_i).
    Scaffold(scaffold::ScaffoldConfig),
    /// FedSpeed: prox-correction and gradient perturbation (client state h_i).
    Fedspeed(fedspeed::FedSpeedConfig),
    /// FedDyn: FedSpeed without perturbation (`rho` is ignored and set to 0).
    Feddyn(fedspeed::FedSpeedConfig),
    /// FedAvgM: server momentum.
    Fedavgm(fedopt::FedOptConfig),
    /// FedAdagrad server optimiser.
    Fedadagrad(fedopt::FedOptConfig),
    /// FedAdam server optimiser.
    Fedadam(fedopt::FedOptConfig),
    /// FedYogi server optimiser.
    Fedyogi(fedopt::FedOptConfig),
    /// EF21 (error feedback with contractive compression; EF21-PP under partial participation, EF21-SGD
    /// with `batch_fraction`).
    Ef21(ef21::Ef21Config),
    /// EF21-W: EF21 with weights `w_i = L_i / Σ L_j`.
    Ef21W(ef21::Ef21Config),
    /// EF21+: each client keeps the closer of the EF21 update and the fresh compressed gradient.
    Ef21Plus(ef21::Ef21Config),
    /// Classic error feedback (EF baseline of the EF21 experiments).
    Ef(ef21::Ef21Config),
    /// Uncompressed distributed gradient descent (EF21 with the identity compressor).
    Gd(ef21::Ef21Config),
    /// FedAvg with an EF21-compressed uplink ("EF21-LT", a heuristic).
    FedavgEf21(ef21_lt::FedAvgEf21Config),
    /// FRL (federated rank learning): clients send per-layer edge rankings, the server votes. Needs a
    /// supermask model.
    Frl(frl::FrlConfig),
}

impl Default for StrategySpec {
    fn default() -> Self {
        StrategySpec::Fedavg(fedavg::FedAvgConfig::default())
    }
}

impl StrategySpec {
    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            StrategySpec::Fedavg(c) => c.validate(),
            StrategySpec::Fedau(c) => c.validate(),
            StrategySpec::Mifa(c) => positive("strategy.server_lr", c.server_lr),
            StrategySpec::Fedvarp(c) => positive("strategy.server_lr", c.server_lr),
            StrategySpec::Fedprox(c) => c.validate(),
            StrategySpec::Scaffold(c) => c.validate(),
            StrategySpec::Fedspeed(c) | StrategySpec::Feddyn(c) => c.validate(),
            StrategySpec::Fedavgm(c)
            | StrategySpec::Fedadagrad(c)
            | StrategySpec::Fedadam(c)
            | StrategySpec::Fedyogi(c) => c.validate(),
            StrategySpec::Ef21(c) => c.validate(ef21::Variant::Ef21),
            StrategySpec::Ef21W(c) => c.validate(ef21::Variant::Ef21W),
            StrategySpec::Ef21Plus(c) => c.validate(ef21::Variant::Ef21Plus),
            StrategySpec::Ef(c) => c.validate(ef21::Variant::Ef),
            StrategySpec::Gd(c) => c.validate(ef21::Variant::Gd),
            StrategySpec::FedavgEf21(c) => c.validate(),
            StrategySpec::Frl(_) => Ok(()),
        }
    }

    /// Builds the strategy.
    pub fn build(&self) -> Box<dyn Strategy> {
        match self {
            StrategySpec::Fedavg(c) => Box::new(fedavg::FedAvg::new(c.clone())),
            StrategySpec::Fedau(c) => Box::new(fedau::FedAu::new(c.clone())),
            StrategySpec::Mifa(c) => Box::new(mifa::Mifa::new(c.clone())),
            StrategySpec::Fedvarp(c) => Box::new(fedvarp::FedVarp::new(c.clone())),
            StrategySpec::Fedprox(c) => Box::new(fedprox::FedProx::new(c.clone())),
            StrategySpec::Scaffold(c) => Box::new(scaffold::Scaffold::new(c.clone())),
            StrategySpec::Fedspeed(c) => Box::new(fedspeed::FedSpeed::new(c.clone())),
            StrategySpec::Feddyn(c) => {
                Box::new(fedspeed::FedSpeed::new(fedspeed::FedSpeedConfig {
                    rho: 0.0,
                    ..c.clone()
                }))
            }
            StrategySpec::Fedavgm(c) => Box::new(fedopt::FedOpt::new(
                fedopt::ServerOptimizer::Momentum,
                c.clone(),
            )),
            StrategySpec::Fedadagrad(c) => Box::new(fedopt::FedOpt::new(
                fedopt::ServerOptimizer::Adagrad,
                c.clone(),
            )),
            StrategySpec::Fedadam(c) => Box::new(fedopt::FedOpt::new(
                fedopt::ServerOptimizer::Adam,
                c.clone(),
            )),
            StrategySpec::Fedyogi(c) => Box::new(fedopt::FedOpt::new(
                fedopt::ServerOptimizer::Yogi,
                c.clone(),
            )),
            StrategySpec::Ef21(c) => Box::new(ef21::Ef21::new(ef21::Variant::Ef21, c.clone())),
            StrategySpec::Ef21W(c) => Box::new(ef21::Ef21::new(ef21::Variant::Ef21W, c.clone())),
            StrategySpec::Ef21Plus(c) => {
                Box::new(ef21::Ef21::new(ef21::Variant::Ef21Plus, c.clone()))
            }
            StrategySpec::Ef(c) => Box::new(ef21::Ef21::new(ef21::Variant::Ef, c.clone())),
            StrategySpec::Gd(c) => Box::new(ef21::Ef21::new(ef21::Variant::Gd, c.clone())),
            StrategySpec::FedavgEf21(c) => Box::new(ef21_lt::FedAvgEf21::new(c.clone())),
            StrategySpec::Frl(c) => Box::new(frl::Frl::new(c.clone())),
        }
    }
}

/// Checks that a setting is a positive finite number.
pub(crate) fn positive(key: &str, v: f32) -> Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{key} must be positive, got {v}"))
    }
}

/// Helpers shared by strategies that send dense model deltas.
pub mod dense {
    use crate::{ClientId, Payload, StrategyError, TensorData};

    /// Name of the dense model tensor in a broadcast.
    pub const MODEL: &str = "model";
    /// Name of the dense model delta in an update.
    pub const DELTA: &str = "delta";

    /// A broadcast holding the global model.
    pub fn model_task(global: &[f32]) -> Payload {
        Payload::new().with(MODEL, TensorData::vector(global.to_vec()))
    }

    /// The global model inside a task.
    pub fn task_model(task: &Payload, num_params: usize) -> Result<Vec<f32>, StrategyError> {
        task.dense(MODEL, num_params)
            .map(<[f32]>::to_vec)
            .map_err(StrategyError::InvalidTask)
    }

    /// An update holding `local − global`.
    pub fn delta_update(local: &[f32], global: &[f32]) -> Payload {
        let delta = local.iter().zip(global).map(|(a, b)| a - b).collect();
        Payload::new().with(DELTA, TensorData::vector(delta))
    }

    /// Takes the dense delta out of an update.
    pub fn take_delta(
        client: ClientId,
        update: &mut Payload,
        num_params: usize,
    ) -> Result<Vec<f32>, StrategyError> {
        update
            .take_dense(DELTA, num_params)
            .map_err(|msg| StrategyError::InvalidUpdate { client, msg })
    }
}
