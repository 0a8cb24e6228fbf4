//! The vocabulary every fedsim crate shares: client ids, the payloads a strategy's two halves exchange,
//! input shapes, deterministic random streams, configuration errors and the registries of configurable
//! kinds.
//!
//! This crate sits at the bottom of the workspace: it depends on no other fedsim crate, and the models
//! (`fedsim-nn`), the data sets (`fedsim-data`), the algorithms, the engine and both runtimes build on it.

pub mod config;
pub mod payload;
pub mod registry;
pub mod rng;
pub mod shape;

pub use config::ConfigError;
pub use payload::{NamedTensor, Payload, TensorData};
pub use shape::{ImageShape, InputSpec};

/// Identifier of a client: its index in the scenario's client population.
pub type ClientId = u32;
