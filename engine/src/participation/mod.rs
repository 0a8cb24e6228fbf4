//! Participation: which clients take part in each round (the scenario's `[participation]` and
//! `[events]` sections).
//!
//! Terms used everywhere:
//! - *available*: the runtime can reach the client (always in the simulator; connected over gRPC) and no
//!   scripted event (outage, late join, departure) hides it;
//! - *selected*: the participation model picked it for the round;
//! - *reported*: its update reached the server before the round closed. A selected client may fail to
//!   report because of a scripted dropout, a straggler deadline, the round's quorum, or a real failure.
//!
//! Every draw depends only on (seed, round, client) through counter-based hashing, never on thread
//! scheduling, so the simulator and the gRPC coordinator select the same clients.

pub mod events;
pub mod models;
pub mod probability;
pub mod redraw;
pub mod trace;

use serde::{Deserialize, Serialize};

pub use events::{EventsConfig, RoundPlan, Scheduler};
pub use probability::ProbabilitySpec;

use crate::ClientId;

/// Chooses the clients of each round.
pub trait Participation: Send + Sync {
    /// Selected clients of `round` (0-based), ascending, drawn from `available` (ascending).
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId>;

    /// A fresh, independent selection for `round` (attempt `attempt` ≥ 1), for models whose rounds are
    /// independent draws (uniform, Bernoulli); `None` where redrawing is not defined (stateful or
    /// replayed models). Used by the attack option `redraw_malicious_majority`.
    fn redraw(
        &mut self,
        _round: u64,
        _available: &[ClientId],
        _attempt: u64,
    ) -> Option<Vec<ClientId>> {
        None
    }

    /// Per-client participation probabilities, where the model has them (for the known-probability
    /// oracle baseline).
    fn probabilities(&self) -> Option<&[f64]> {
        None
    }

    /// State carried between rounds (e.g. Markov chain states), for checkpoints.
    fn save_state(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Restores what [`Participation::save_state`] returned.
    fn load_state(&mut self, state: &[u8]) -> Result<(), String> {
        if state.is_empty() {
            Ok(())
        } else {
            Err("unexpected participation state".into())
        }
    }
}

/// What building a participation model may need to know about the population.
#[derive(Debug, Clone, Copy)]
pub struct Population<'a> {
    /// Number of registered clients.
    pub num_clients: usize,
    /// Run seed.
    pub seed: u64,
    /// Per-client label histograms (normalised or counts), row-major `num_clients × num_classes`.
    pub label_counts: Option<(&'a [u32], usize)>,
}

/// The scenario's `[participation]` section, selected by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ParticipationSpec {
    /// Every available client, every round.
    Full,
    /// `m` clients per round uniformly without replacement: `m = count`, or `m = max(⌊fraction·K⌋, 1)`
    /// with K the number of registered clients (McMahan's C).
    Uniform {
        /// Fraction C of all clients.
        #[serde(default)]
        fraction: Option<f64>,
        /// Fixed number per round.
        #[serde(default)]
        count: Option<usize>,
    },
    /// Each client independently with its probability p_i every round (FedAU §2.6).
    Bernoulli {
        /// The probabilities.
        p: ProbabilitySpec,
    },
    /// Two-state Markov chain per client with stationary on-probability p_i and transition parameter q:
    /// P(off→on) = q, P(on→off) = q(1/p_i − 1) (rescaled when that exceeds 1). Initial state ~ Bernoulli(p_i);
    /// each round transitions first, then reports.
    Markov {
        /// Stationary probabilities.
        p: ProbabilitySpec,
        /// Transition parameter q.
        #[serde(default = "default_q")]
        q: f64,
    },
    /// Cyclic on/off per client with period L: on for max(1, round(L·p_i)) rounds, off for
    /// max(1, L − on); each client starts off for a random number of rounds in [0, off).
    Cyclic {
        /// Long-run on-fractions.
        p: ProbabilitySpec,
        /// Period L in rounds.
        period: u64,
    },
    /// Replay a CSV trace: `round,client` rows (1-based rounds; the clients that took part) or
    /// `client,start,end` rows (the client is selected in rounds start ≤ r < end, 1-based).
    Trace {
        /// The CSV file.
        path: std::path::PathBuf,
    },
}

fn default_q() -> f64 {
    0.05
}

impl Default for ParticipationSpec {
    fn default() -> Self {
        ParticipationSpec::Uniform {
            fraction: Some(0.1),
            count: None,
        }
    }
}

impl ParticipationSpec {
    /// Checks values, naming the bad key.
    pub fn validate(&self, num_clients: usize) -> Result<(), String> {
        match self {
            ParticipationSpec::Full | ParticipationSpec::Trace { .. } => Ok(()),
            ParticipationSpec::Uniform { fraction, count } => match (fraction, count) {
                (Some(_), Some(_)) => {
                    Err("participation: set either fraction or count, not both".into())
                }
                (None, None) => Err("participation.uniform needs fraction or count".into()),
                (Some(c), None) if !(c.is_finite() && (0.0..=1.0).contains(c)) => {
                    Err(format!("participation.fraction must be in [0, 1], got {c}"))
                }
                (None, Some(m)) if *m == 0 || *m > num_clients => Err(format!(
                    "participation.count must be in 1..={num_clients}, got {m}"
                )),
                _ => Ok(()),
            },
            ParticipationSpec::Bernoulli { p } => p.validate(num_clients),
            ParticipationSpec::Markov { p, q } => {
                p.validate(num_clients)?;
                if !(q.is_finite() && *q > 0.0 && *q <= 1.0) {
                    return Err(format!("participation.q must be in (0, 1], got {q}"));
                }
                Ok(())
            }
            ParticipationSpec::Cyclic { p, period } => {
                p.validate(num_clients)?;
                if *period < 2 {
                    return Err(format!(
                        "participation.period must be at least 2, got {period}"
                    ));
                }
                Ok(())
            }
        }
    }

    /// Whether building needs per-client label counts (class-tied probabilities).
    pub fn needs_labels(&self) -> bool {
        use probability::ProbabilityDist::ClassTied;
        matches!(
            self,
            ParticipationSpec::Bernoulli {
                p: ProbabilitySpec::Dist(ClassTied { .. })
            } | ParticipationSpec::Markov {
                p: ProbabilitySpec::Dist(ClassTied { .. }),
                ..
            } | ParticipationSpec::Cyclic {
                p: ProbabilitySpec::Dist(ClassTied { .. }),
                ..
            }
        )
    }

    /// Whether the model's rounds are independent draws that can be redrawn
    /// ([`Participation::redraw`]).
    pub fn can_redraw(&self) -> bool {
        matches!(
            self,
            ParticipationSpec::Uniform { .. } | ParticipationSpec::Bernoulli { .. }
        )
    }

    /// Whether the model has per-client participation probabilities
    /// ([`Participation::probabilities`]), which oracle baselines weight by.
    pub fn has_probabilities(&self) -> bool {
        matches!(
            self,
            ParticipationSpec::Bernoulli { .. }
                | ParticipationSpec::Markov { .. }
                | ParticipationSpec::Cyclic { .. }
        )
    }

    /// Builds the model for a population.
    pub fn build(&self, pop: &Population<'_>) -> Result<Box<dyn Participation>, String> {
        let n = pop.num_clients;
        Ok(match self {
            ParticipationSpec::Full => Box::new(models::Full),
            ParticipationSpec::Uniform { fraction, count } => {
                let m = match (fraction, count) {
                    (_, Some(m)) => *m,
                    (Some(c), None) => ((c * n as f64).floor() as usize).max(1),
                    (None, None) => 1,
                };
                Box::new(models::Uniform {
                    per_round: m,
                    seed: pop.seed,
                })
            }
            ParticipationSpec::Bernoulli { p } => {
                Box::new(models::Bernoulli::new(p.resolve(pop)?, pop.seed))
            }
            ParticipationSpec::Markov { p, q } => {
                Box::new(models::Markov::new(p.resolve(pop)?, *q, pop.seed))
            }
            ParticipationSpec::Cyclic { p, period } => {
                Box::new(models::Cyclic::new(p.resolve(pop)?, *period, pop.seed))
            }
            ParticipationSpec::Trace { path } => Box::new(trace::TraceReplay::load(path, n)?),
        })
    }
}
