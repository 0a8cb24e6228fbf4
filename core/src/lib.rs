//! Shared core of fedsim: scenarios, strategies, participation models, local training, evaluation and
//! the round engine that both runtimes (the in-process simulator and the gRPC coordinator) drive.
//!
//! The pieces fit together like this: a [`Scenario`] (TOML) names the data, model, strategy and
//! participation; [`Engine`] owns the global model and the strategy's server half and runs rounds as
//! `begin_round` → `submit` (one per client result, any order) → `end_round`; the client half of a
//! strategy ([`Strategy::local_update`]) runs wherever the client lives, with a [`LocalTrainer`].

pub mod attack;
pub mod compress;
pub mod engine;
pub mod eval;
pub mod participation;
pub mod payload;
pub mod report;
pub mod rng;
pub mod robust;
pub mod scenario;
pub mod strategy;
pub mod train;

pub use engine::{ClientOutcome, Engine, RoundTask};
pub use payload::{NamedTensor, Payload, TensorData};
pub use scenario::Scenario;
pub use strategy::{ClientState, Strategy, StrategyError};
pub use train::{ClientData, LocalTrainer, TrainConfig};

/// Identifier of a client: its index in the scenario's client population.
pub type ClientId = u32;

/// Errors of the core library.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The scenario is invalid; the message names the key.
    #[error("scenario: {0}")]
    Scenario(String),
    /// Loading or partitioning data failed.
    #[error(transparent)]
    Data(#[from] fedsim_data::DataError),
    /// Building the model failed.
    #[error(transparent)]
    Model(#[from] fedsim_nn::NnError),
    /// A strategy rejected its input.
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    /// Writing results failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: std::path::PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}
