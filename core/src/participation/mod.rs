//! Participation models: which clients take part in each round (the scenario's `[participation]`).
//!
//! Terms: a client is *available* when the runtime can reach it (always, in the simulator; connected,
//! over gRPC); *selected* when the participation model picks it for the round; *reported* when its
//! update reached the server before the round closed. Selection draws only from the stream keyed by
//! (seed, round), so the simulator and the gRPC coordinator select the same clients.

use rand::seq::index;
use serde::{Deserialize, Serialize};

use crate::ClientId;
use crate::rng::{Purpose, stream};

/// Chooses the clients of each round.
pub trait Participation: Send + Sync {
    /// Selected clients of `round`, ascending, drawn from `available` (ascending).
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId>;

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
            ParticipationSpec::Full => Ok(()),
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
        }
    }

    /// Builds the model for a population of `num_clients` and run seed `seed`.
    pub fn build(&self, num_clients: usize, seed: u64) -> Box<dyn Participation> {
        match self {
            ParticipationSpec::Full => Box::new(Full),
            ParticipationSpec::Uniform { fraction, count } => {
                let m = match (fraction, count) {
                    (_, Some(m)) => *m,
                    (Some(c), None) => ((c * num_clients as f64).floor() as usize).max(1),
                    (None, None) => 1,
                };
                Box::new(Uniform { per_round: m, seed })
            }
        }
    }
}

/// Every available client.
#[derive(Debug, Clone, Copy)]
pub struct Full;

impl Participation for Full {
    fn select(&mut self, _round: u64, available: &[ClientId]) -> Vec<ClientId> {
        available.to_vec()
    }
}

/// A fixed number of clients per round, uniformly without replacement.
#[derive(Debug, Clone, Copy)]
pub struct Uniform {
    /// Clients per round (fewer when fewer are available).
    pub per_round: usize,
    /// Run seed.
    pub seed: u64,
}

impl Participation for Uniform {
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        let m = self.per_round.min(available.len());
        let mut rng = stream(self.seed, Purpose::Participation, round, 0);
        let mut picked: Vec<ClientId> = index::sample(&mut rng, available.len(), m)
            .into_iter()
            .map(|i| available[i])
            .collect();
        picked.sort_unstable();
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_deterministic_sorted_and_distinct() {
        let avail: Vec<u32> = (0..100).collect();
        let spec = ParticipationSpec::Uniform {
            fraction: Some(0.1),
            count: None,
        };
        let a = spec.build(100, 7).select(3, &avail);
        let b = spec.build(100, 7).select(3, &avail);
        assert_eq!(a, b);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_ne!(a, spec.build(100, 7).select(4, &avail));
    }

    #[test]
    fn fraction_zero_means_one_client() {
        let spec = ParticipationSpec::Uniform {
            fraction: Some(0.0),
            count: None,
        };
        assert_eq!(
            spec.build(50, 1)
                .select(0, &(0..50).collect::<Vec<_>>())
                .len(),
            1
        );
    }

    #[test]
    fn validation_names_keys() {
        let e = ParticipationSpec::Uniform {
            fraction: Some(2.0),
            count: None,
        }
        .validate(10)
        .unwrap_err();
        assert!(e.contains("participation.fraction"));
    }
}
