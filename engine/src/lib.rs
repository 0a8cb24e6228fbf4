//! fedsim's round engine, shared by both runtimes (the in-process simulator and the gRPC
//! coordinator): scenarios, the round protocol, participation models and scripted events, evaluation
//! and reports.
//!
//! The pieces fit together like this: a [`Scenario`] (TOML) names the data, model, strategy and
//! participation; [`Engine`] owns the global model and the strategy's server half and runs rounds as
//! `begin_round` → `submit` (one per client result, any order) → `end_round`; the client half of a
//! strategy ([`fedsim_algorithms::Strategy::local_update`]) runs wherever the client lives, through
//! [`engine::run_client`].

pub mod engine;
pub mod eval;
pub mod fedeval;
mod local;
pub mod participation;
pub mod protocol;
pub mod report;
pub mod scenario;

pub use engine::{ClientOutcome, Engine, RoundTask};
pub use scenario::Scenario;

use fedsim_algorithms::{ClientState, LocalTrainer, Strategy, StrategyError, TrainConfig};
use fedsim_types::{ClientId, Payload};

/// Errors of the round engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The scenario is invalid; the error names the key (and the file, when read from one).
    #[error("{}{error}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
    Config {
        /// The scenario file, when the scenario was read from one.
        file: Option<std::path::PathBuf>,
        /// The problem and its key.
        error: fedsim_types::ConfigError,
    },
    /// A runtime called the round protocol out of order (a bug in the runtime, not in the input).
    #[error("round protocol: {0}")]
    Protocol(String),
    /// A checkpoint does not belong to this scenario.
    #[error("checkpoint does not match the scenario: {0}")]
    Checkpoint(String),
    /// A results file (`model.bin`, `metrics.jsonl`) is malformed.
    #[error("{path}: {msg}")]
    Malformed {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        msg: String,
    },
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

impl From<fedsim_types::ConfigError> for EngineError {
    fn from(error: fedsim_types::ConfigError) -> Self {
        EngineError::Config { file: None, error }
    }
}
