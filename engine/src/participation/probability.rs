//! Per-client participation probabilities (`p = ...` in `[participation]`).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::Population;
use fedsim_types::ConfigError;
use fedsim_types::rng::{Purpose, stream_key, unit};

/// How per-client probabilities are given.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProbabilitySpec {
    /// The same probability for every client: `p = 0.1`.
    Constant(f64),
    /// One probability per client: `p = [0.1, 0.5, ...]`.
    List(Vec<f64>),
    /// Drawn per client: `p = { dist = "uniform", low = 0.05, high = 0.5 }` or
    /// `p = { dist = "class_tied", alpha = 0.1, mean = 0.1, min = 0.02 }`.
    Dist(ProbabilityDist),
}

/// Distributions of per-client probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProbabilityDist {
    /// Uniform in [low, high].
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
    /// Tied to the data's classes (FedAU §2.6): one vector m ~ Dir(alpha·1_C) over classes, then
    /// p_n = max(min, C · mean · Σ_c q̂_{n,c} m_c) with q̂_n the client's normalised label histogram.
    ClassTied {
        /// Concentration of m.
        #[serde(default = "default_alpha")]
        alpha: f64,
        /// Mean participation probability.
        #[serde(default = "default_mean")]
        mean: f64,
        /// Floor.
        #[serde(default = "default_min")]
        min: f64,
    },
}

fn default_alpha() -> f64 {
    0.1
}
fn default_mean() -> f64 {
    0.1
}
fn default_min() -> f64 {
    0.02
}

fn check_p(key: &str, p: f64) -> Result<(), ConfigError> {
    if p.is_finite() && p > 0.0 && p <= 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(key, format!("must be in (0, 1], got {p}")))
    }
}

impl ProbabilitySpec {
    /// Checks values, naming the bad key relative to the `[participation]` section (`p`, `p[3]`,
    /// `p.low`); the length of a list is checked against the clients by the section
    /// ([`Self::listed_clients`]).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            ProbabilitySpec::Constant(p) => check_p("p", *p),
            ProbabilitySpec::List(v) => v
                .iter()
                .enumerate()
                .try_for_each(|(i, p)| check_p(&format!("p[{i}]"), *p)),
            ProbabilitySpec::Dist(ProbabilityDist::Uniform { low, high }) => {
                check_p("p.low", *low)?;
                check_p("p.high", *high)?;
                if low > high {
                    return Err(ConfigError::new(
                        "p",
                        format!("low ({low}) exceeds high ({high})"),
                    ));
                }
                Ok(())
            }
            ProbabilitySpec::Dist(ProbabilityDist::ClassTied { alpha, mean, min }) => {
                if !(alpha.is_finite() && *alpha > 0.0) {
                    return Err(ConfigError::new(
                        "p.alpha",
                        format!("must be positive, got {alpha}"),
                    ));
                }
                check_p("p.mean", *mean)?;
                check_p("p.min", *min)
            }
        }
    }

    /// How many clients an explicit list names (it must be the scenario's number of clients).
    pub fn listed_clients(&self) -> Option<usize> {
        match self {
            ProbabilitySpec::List(v) => Some(v.len()),
            _ => None,
        }
    }

    /// Whether the probabilities are tied to the clients' label histograms (`class_tied`).
    pub fn needs_labels(&self) -> bool {
        matches!(
            self,
            ProbabilitySpec::Dist(ProbabilityDist::ClassTied { .. })
        )
    }

    /// The probability of every client.
    pub fn resolve(&self, pop: &Population<'_>) -> Result<Vec<f64>, String> {
        let n = pop.num_clients;
        match self {
            ProbabilitySpec::Constant(p) => Ok(vec![*p; n]),
            ProbabilitySpec::List(v) => Ok(v.clone()),
            ProbabilitySpec::Dist(ProbabilityDist::Uniform { low, high }) => Ok((0..n)
                .map(|c| {
                    low + (high - low)
                        * unit(pop.seed, Purpose::Participation, u64::MAX, c as u64, 1)
                })
                .collect()),
            ProbabilitySpec::Dist(ProbabilityDist::ClassTied { alpha, mean, min }) => {
                let (counts, classes) = pop
                    .label_counts
                    .ok_or("participation.p.dist = \"class_tied\" needs labelled data")?;
                let mut rng = ChaCha8Rng::seed_from_u64(stream_key(
                    pop.seed,
                    Purpose::Participation,
                    u64::MAX,
                    u64::MAX,
                ));
                let m = fedsim_data::partition::sample_dirichlet(*alpha, classes, &mut rng)
                    .map_err(|e| e.to_string())?;
                Ok((0..n)
                    .map(|c| {
                        let row = &counts[c * classes..(c + 1) * classes];
                        let total: u32 = row.iter().sum();
                        let dot: f64 = if total == 0 {
                            0.0
                        } else {
                            row.iter()
                                .zip(&m)
                                .map(|(&k, &mc)| k as f64 / total as f64 * mc)
                                .sum()
                        };
                        (classes as f64 * mean * dot).max(*min).min(1.0)
                    })
                    .collect())
            }
        }
    }
}
