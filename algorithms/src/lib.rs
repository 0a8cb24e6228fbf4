//! fedsim's federated algorithms.
//!
//! Each strategy module under [`strategy`] holds one algorithm whole: its client half (the local
//! update, run by the simulator or a client process) and its server half (aggregation, run by the round
//! engine). Strategies register in [`strategy::registry`], declaring what they need and provide, so the
//! scenario checks, the attacks and the tests that must cover every strategy read one list.
//!
//! Beside the strategies: [`compress`] (compressors for compressed uplinks), [`robust`] (robust
//! aggregation rules), [`attack`] (malicious clients), and [`train`] (local SGD over a client's data,
//! which every strategy's client half uses).

pub mod attack;
pub mod augment;
pub mod compress;
pub mod robust;
pub mod strategy;
pub mod train;

pub use strategy::{ClientState, Strategy, StrategyError};
pub use train::{ClientData, LocalTrainer, TrainConfig, Work};

use fedsim_types::{ClientId, Payload, TensorData};
