//! The vocabulary of the round protocol ([`crate::engine`]): what a runtime delivers to the selected
//! clients ([`RoundTask`]), what it hands back ([`ClientOutcome`], with the payload in memory or
//! elsewhere through a [`PayloadSource`]), why a submission is refused ([`Refusal`]), what became of an
//! update ([`Verdict`]) and what the runtime measured ([`RoundIo`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use fedsim_algorithms::StrategyError;
use fedsim_types::{ClientId, Payload};

/// What the runtime must deliver to the selected clients of a round.
#[derive(Debug, Clone)]
pub struct RoundTask {
    /// Round index, 0-based (in an asynchronous run: the dispatch number, see
    /// [`crate::engine::AsyncStep::Start`]); the key of the clients' training randomness and what their
    /// results must carry.
    pub round: u64,
    /// Clients to run, ascending: selected and not dropped by a scripted event.
    pub selected: Vec<ClientId>,
    /// Step budgets of stragglers that report partial work (others run their full work).
    pub max_steps: BTreeMap<ClientId, usize>,
    /// The task every selected client receives.
    pub broadcast: Arc<Payload>,
}

/// What the runtime must run for a federated evaluation ([`crate::Engine::begin_evaluation`]): the
/// chosen clients evaluate `model` on their local test sets ([`crate::engine::run_evaluation`]).
#[derive(Debug, Clone)]
pub struct EvalTask {
    /// The round just closed, 0-based (the evaluation is recorded with it).
    pub round: u64,
    /// Clients that evaluate, ascending.
    pub clients: Vec<ClientId>,
    /// The global model to evaluate: one dense tensor `global`.
    pub model: Arc<Payload>,
}

/// What closing a round leaves to do ([`crate::Engine::end_round`]).
#[derive(Debug)]
pub enum RoundEnd {
    /// The round is recorded (and written).
    Recorded(Box<crate::report::RoundRecord>),
    /// A federated evaluation is due: the runtime runs [`crate::Engine::begin_evaluation`], hands the
    /// results to [`crate::Engine::submit_evaluation`] and gets the round's record from
    /// [`crate::Engine::end_evaluation`].
    EvaluationDue,
}

impl RoundEnd {
    /// The record, when the round is recorded.
    pub fn into_record(self) -> Option<crate::report::RoundRecord> {
        match self {
            RoundEnd::Recorded(r) => Some(*r),
            RoundEnd::EvaluationDue => None,
        }
    }
}

/// Where a client's update waits until the engine folds it into the round: in memory, or wherever the
/// runtime keeps it (the coordinator spools large updates to disk and decodes them only then).
pub trait PayloadSource: Send + Sync + std::fmt::Debug {
    /// The payload when it is in memory already; the engine then validates it on arrival.
    fn peek(&self) -> Option<&Payload>;
    /// Takes the payload, decoding it where needed.
    fn load(self: Box<Self>) -> Result<Payload, String>;
}

impl PayloadSource for Payload {
    fn peek(&self) -> Option<&Payload> {
        Some(self)
    }

    fn load(self: Box<Self>) -> Result<Payload, String> {
        Ok(*self)
    }
}

/// The result of one selected client.
#[derive(Debug)]
pub enum ClientOutcome {
    /// The client's update.
    Update {
        /// The update.
        payload: Box<dyn PayloadSource>,
        /// The client's number of training samples.
        num_samples: u64,
    },
    /// The client did not report (disconnected, timed out, could not train); the reason is logged.
    Dropped(String),
}

impl ClientOutcome {
    /// An update from `payload`.
    pub fn update(payload: impl PayloadSource + 'static, num_samples: u64) -> Self {
        ClientOutcome::Update {
            payload: Box::new(payload),
            num_samples,
        }
    }
}

/// Why the engine refused a submission outright.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The result is for a round that is not open (late, or from the future).
    #[error("round {round} is not open")]
    Stale {
        /// The round the result was for (1-based, as clients see it).
        round: u64,
    },
    /// The client was not selected in the open round.
    #[error("client {client} was not selected in round {round}")]
    NotSelected {
        /// The client.
        client: ClientId,
        /// The open round (1-based).
        round: u64,
    },
    /// The client already reported (or was dropped) in the open round.
    #[error("client {client} already reported or was dropped in round {round}")]
    Duplicate {
        /// The client.
        client: ClientId,
        /// The open round (1-based).
        round: u64,
    },
    /// The strategy refused the update (malformed, wrong shapes, non-finite values, …).
    #[error(transparent)]
    Invalid(#[from] StrategyError),
    /// A federated evaluation result is impossible (accuracy outside [0, 1], a negative or non-finite
    /// loss, a sample count other than the client's local test size).
    #[error("evaluation result of client {client} refused: {msg}")]
    InvalidEvaluation {
        /// The client.
        client: ClientId,
        /// What is wrong.
        msg: String,
    },
}

/// What became of one client's update: folded into the round's aggregate, or refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The client.
    pub client: ClientId,
    /// The round, 0-based.
    pub round: u64,
    /// `Ok` when the update was folded in; the refusal otherwise.
    pub folded: Result<(), String>,
}

/// Byte counts measured by a runtime on the wire; when absent, payload sizes are used.
#[derive(Debug, Clone, Default)]
pub struct RoundIo {
    /// Seconds the runtime spent waiting for local training.
    pub train_time: Duration,
    /// Measured uplink bytes.
    pub wire_bytes_up: Option<u64>,
    /// Measured downlink bytes.
    pub wire_bytes_down: Option<u64>,
    /// Runtime-specific metrics for the round's record.
    pub extra: Vec<(String, f64)>,
}

/// The L2 norm of an update's dense values (f32, f64 and sparse tensors), in f64.
pub(crate) fn update_norm(update: &Payload) -> f64 {
    use fedsim_types::TensorData;
    let mut sum = 0.0f64;
    for t in &update.tensors {
        match &t.data {
            TensorData::F32 { values, .. } => {
                sum += values
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>();
            }
            TensorData::F64 { values, .. } => sum += values.iter().map(|v| v * v).sum::<f64>(),
            TensorData::Sparse { values, .. } => {
                sum += values
                    .iter()
                    .map(|&v| f64::from(v) * f64::from(v))
                    .sum::<f64>();
            }
            _ => {}
        }
    }
    sum.sqrt()
}

/// The `k` clients with the largest update norms, largest first.
pub(crate) fn largest_norms(norms: &[(ClientId, f64)], k: usize) -> Vec<(ClientId, f64)> {
    let mut v = norms.to_vec();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(k);
    v
}
