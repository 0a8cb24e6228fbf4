//! Models on flat `f32` parameter vectors, and the local optimiser.
//!
//! Every model maps one flat parameter vector (described by a [`Layout`]) to its layers, so federated
//! strategies can work on plain vectors while models keep their structure. Models implement [`Model`]:
//! initialise from a seed, compute the mean loss and its gradient on a batch, and evaluate.

// Lints the workspace will enable in CI (kept here until they move to `[workspace.lints]`).

pub mod cnn;
pub mod gemm;
pub mod isa;
pub mod layout;
pub mod logreg;
pub mod logreg_nc;
pub mod mlp;
pub mod model;
pub mod model_file;
mod ops;
pub mod optim;
pub mod order;
pub mod perf;
mod profile;
pub mod spec;
pub mod stack;
pub mod supermask;
#[cfg(test)]
mod testutil;

pub use cnn::Cnn;
pub use layout::{Layout, TensorSpec};
pub use logreg::LogReg;
pub use mlp::Mlp;
pub use model::{EvalStats, Model, Scratch};
pub use optim::Sgd;
pub use spec::{ImageShape, InputSpec, ModelCapabilities, ModelSpec, ModelSpecExt, Models};
pub use stack::{Sequential, SequentialConfig};
pub use supermask::{MaskBy, Supermask};

/// Errors raised while building or running a model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// The model specification cannot be built for the given input.
    #[error("invalid model specification: {0}")]
    InvalidSpec(String),
    /// A parameter vector or batch does not match the model.
    #[error("shape mismatch: {0}")]
    Shape(String),
}
