//! Federated strategies: each module holds one algorithm's client half (local update) and server half
//! (aggregation), and describes the `[strategy] kind`s it offers ([`fedsim_types::registry::Kind`]).
//!
//! The round engine calls the server half; a runtime (simulator thread or client process) calls the
//! client half. Both halves live on one type so an algorithm is one file.
//!
//! Adding a strategy: write its module (the [`Strategy`] implementation and a configuration type
//! implementing [`Kind<Strategies>`](fedsim_types::registry::Kind)), then add one line to the
//! `strategies!` list below. The
//! scenario, the README's kind list and the tests that cover every strategy pick it up from there.

use crate::{ClientId, LocalTrainer, Payload};

pub mod registry;
pub mod staleness;
#[cfg(test)]
pub(crate) mod testutil;

pub use registry::{Capabilities, Strategies, StrategySpec, UpdateKind};

/// Declares the strategy modules and registers their kinds, one line per module:
/// `module => [ConfigType, ...]`.
macro_rules! strategies {
    ($($module:ident => [$($kind:ty),+ $(,)?]),+ $(,)?) => {
        $(pub mod $module;)+
        /// Every registered kind, in the order of the list.
        static REGISTERED: &[registry::StrategyEntry] =
            &[$($(registry::StrategyEntry::of::<$kind>(),)+)+];
    };
}

strategies! {
    fedavg => [fedavg::FedAvgConfig],
    fedbuff => [fedbuff::FedBuffConfig],
    fedasync => [fedasync::FedAsyncConfig],
    fedau => [fedau::FedAuConfig],
    mifa => [mifa::MifaConfig],
    fedvarp => [fedvarp::FedVarpConfig],
    fedprox => [fedprox::FedProxConfig],
    scaffold => [scaffold::ScaffoldConfig],
    fedspeed => [fedspeed::FedSpeedConfig, fedspeed::FedDynConfig],
    fedopt => [fedopt::FedAvgM, fedopt::FedAdagrad, fedopt::FedAdam, fedopt::FedYogi],
    ef21 => [ef21::Ef21Config, ef21::Ef21WConfig, ef21::Ef21PlusConfig, ef21::EfConfig, ef21::GdConfig],
    ef21_lt => [ef21_lt::FedAvgEf21Config],
    frl => [frl::FrlConfig],
    example_mean => [example_mean::ExampleMeanConfig],
}

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
    /// How many server updates happened since the model it trained from (τ): 0 in synchronous rounds,
    /// the version gap of asynchronous runs ([`Schedule::Asynchronous`]).
    pub staleness: u64,
}

/// How the engine runs a strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Synchronous rounds: select, train, aggregate, repeat.
    Rounds,
    /// Asynchronous aggregation: `concurrency` clients train at all times, each from the model version
    /// current when it started; finished updates are folded in in virtual-finish-time order (with their
    /// staleness), and every `buffer_size` of them make one server update (one "round" of the metrics).
    Asynchronous {
        /// Clients training at once.
        concurrency: usize,
        /// Updates per server update.
        buffer_size: usize,
    },
}

/// One federated algorithm: client half and server half.
///
/// Round protocol, driven by [`crate::Engine`]: `begin_round` with the selected clients, then
/// `accept` once per reporting client **in ascending client id** (the engine reorders arrivals, so the
/// result never depends on arrival order), then `finish_round` with the global model to update. An
/// asynchronous strategy ([`Strategy::schedule`]) sees the same calls per server update, with `accept`
/// in virtual-finish-time order and each [`Reporter`] carrying its staleness.
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

    /// Synchronous rounds (the default) or asynchronous aggregation.
    fn schedule(&self) -> Schedule {
        Schedule::Rounds
    }

    /// Starts aggregation for `round` (in an asynchronous run: server update `round`, with `selected`
    /// empty since its contributors are known only as they finish).
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

    /// Names of the tensors a client update may carry. The engine refuses an update with any other
    /// tensor (extras would otherwise be ignored silently), and the coordinator decodes at most this
    /// many tensors from one upload. The default is the dense delta of the dense strategies.
    fn update_tensors(&self) -> Vec<String> {
        vec![dense::DELTA.to_string()]
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

/// Checks that a setting is a positive finite number; `key` is relative to `[strategy]`.
pub(crate) fn positive(key: &str, v: f32) -> Result<(), fedsim_types::ConfigError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(fedsim_types::ConfigError::new(
            key,
            format!("must be positive, got {v}"),
        ))
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
