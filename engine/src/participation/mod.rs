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
pub mod system;
pub mod trace;

use serde::{Deserialize, Serialize};

pub use events::{EventsConfig, RoundPlan, Scheduler};
pub use probability::ProbabilitySpec;

use crate::ClientId;
use fedsim_types::ConfigError;
use fedsim_types::registry::{Entry, Family, Kind, Spec, Valid, Validated};

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

    /// Whether every call selects all of `available` (the `full` model): an asynchronous run then
    /// picks among the idle clients directly instead of asking for a selection of all of them.
    fn selects_every_available(&self) -> bool {
        false
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

/// The participation family: `[participation] kind = …`, every kind registered in [`REGISTERED`].
#[derive(Debug, Clone, Copy)]
pub struct ParticipationModels;

/// What a configured participation model declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParticipationCapabilities {
    /// Building needs per-client label counts (class-tied probabilities).
    pub needs_labels: bool,
    /// Its rounds are independent draws that can be redrawn ([`Participation::redraw`]).
    pub can_redraw: bool,
    /// It has per-client participation probabilities ([`Participation::probabilities`]), which oracle
    /// baselines weight by.
    pub has_probabilities: bool,
    /// Clients selected per round, when the settings fix the number (at most the scenario's clients).
    pub per_round: Option<usize>,
    /// Clients an explicit per-client list names (must equal the scenario's clients).
    pub listed_clients: Option<usize>,
}

impl ParticipationCapabilities {
    const NONE: Self = Self {
        needs_labels: false,
        can_redraw: false,
        has_probabilities: false,
        per_round: None,
        listed_clients: None,
    };

    fn probabilities(p: &ProbabilitySpec) -> Self {
        Self {
            needs_labels: p.needs_labels(),
            has_probabilities: true,
            listed_clients: p.listed_clients(),
            ..Self::NONE
        }
    }
}

impl Family for ParticipationModels {
    const SECTION: &'static str = "participation";
    type Capabilities = ParticipationCapabilities;
    type Input<'a> = &'a Population<'a>;
    type Output = Result<Box<dyn Participation>, String>;

    fn registered() -> &'static [Entry<Self>] {
        REGISTERED
    }

    fn default_spec() -> Spec<Self> {
        Spec::new(UniformConfig {
            fraction: Some(0.1),
            count: None,
        })
    }
}

/// Every participation model, one line each.
static REGISTERED: &[Entry<ParticipationModels>] = &[
    Entry::of::<FullConfig>(),
    Entry::of::<UniformConfig>(),
    Entry::of::<BernoulliConfig>(),
    Entry::of::<MarkovConfig>(),
    Entry::of::<CyclicConfig>(),
    Entry::of::<TraceConfig>(),
];

/// The scenario's `[participation]` section: a registered kind and its settings.
pub type ParticipationSpec = Spec<ParticipationModels>;

/// The checks and questions the engine asks of a `[participation]` section.
pub trait ParticipationSpecExt {
    /// Checks the settings, and those that depend on the number of clients, naming the bad key; the
    /// checked specification is what builds.
    fn validate_for(
        &self,
        num_clients: usize,
    ) -> Result<Valid<'_, ParticipationModels>, ConfigError>;
    /// Whether building needs per-client label counts.
    fn needs_labels(&self) -> bool;
    /// Whether rounds are independent draws that can be redrawn.
    fn can_redraw(&self) -> bool;
    /// Whether the model has per-client participation probabilities.
    fn has_probabilities(&self) -> bool;
    /// Builds the model for a population (validating the settings first).
    fn build(&self, pop: &Population<'_>) -> Result<Box<dyn Participation>, String>;
}

impl ParticipationSpecExt for ParticipationSpec {
    fn validate_for(
        &self,
        num_clients: usize,
    ) -> Result<Valid<'_, ParticipationModels>, ConfigError> {
        let valid = self.validate()?;
        let caps = self.capabilities();
        if let Some(m) = caps.per_round
            && (m == 0 || m > num_clients)
        {
            return Err(ConfigError::new(
                "participation.count",
                format!("must be in 1..={num_clients}, got {m}"),
            ));
        }
        if let Some(n) = caps.listed_clients
            && n != num_clients
        {
            return Err(ConfigError::new(
                "participation.p",
                format!("lists {n} probabilities for {num_clients} clients"),
            ));
        }
        Ok(valid)
    }

    fn needs_labels(&self) -> bool {
        self.capabilities().needs_labels
    }

    fn can_redraw(&self) -> bool {
        self.capabilities().can_redraw
    }

    fn has_probabilities(&self) -> bool {
        self.capabilities().has_probabilities
    }

    fn build(&self, pop: &Population<'_>) -> Result<Box<dyn Participation>, String> {
        self.validate_for(pop.num_clients)
            .map_err(|e| e.to_string())?
            .build(pop)
    }
}

/// `kind = "full"`: every available client, every round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct FullConfig {}

impl Kind<ParticipationModels> for FullConfig {
    const KIND: &'static str = "full";
    const SUMMARY: &'static str = "every available client, every round";

    fn capabilities(&self) -> ParticipationCapabilities {
        ParticipationCapabilities::NONE
    }

    fn build(&self, _: &Population<'_>, _: Validated) -> Result<Box<dyn Participation>, String> {
        Ok(Box::new(models::Full))
    }
}

/// `kind = "uniform"`: `m` clients per round uniformly without replacement: `m = count`, or
/// `m = max(⌊fraction·K⌋, 1)` with K the number of registered clients (McMahan's C).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UniformConfig {
    /// Fraction C of all clients.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Fixed number per round.
    #[serde(default)]
    pub count: Option<usize>,
}

impl Kind<ParticipationModels> for UniformConfig {
    const KIND: &'static str = "uniform";
    const SUMMARY: &'static str = "m clients per round, uniformly without replacement";
    const EXAMPLE: &'static str = "fraction = 0.1";

    fn capabilities(&self) -> ParticipationCapabilities {
        ParticipationCapabilities {
            can_redraw: true,
            per_round: self.count,
            ..ParticipationCapabilities::NONE
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match (self.fraction, self.count) {
            (Some(_), Some(_)) => Err(ConfigError::document(
                "set either fraction or count, not both",
            )),
            (None, None) => Err(ConfigError::document("uniform needs fraction or count")),
            (Some(c), None) if !(c.is_finite() && (0.0..=1.0).contains(&c)) => Err(
                ConfigError::new("fraction", format!("must be in [0, 1], got {c}")),
            ),
            _ => Ok(()),
        }
    }

    fn build(&self, pop: &Population<'_>, _: Validated) -> Result<Box<dyn Participation>, String> {
        let m = match (self.fraction, self.count) {
            (_, Some(m)) => m,
            (Some(c), None) => ((c * pop.num_clients as f64).floor() as usize).max(1),
            (None, None) => 1,
        };
        Ok(Box::new(models::Uniform {
            per_round: m,
            seed: pop.seed,
        }))
    }
}

/// `kind = "bernoulli"`: each client independently with its probability p_i every round (FedAU §2.6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BernoulliConfig {
    /// The probabilities.
    pub p: ProbabilitySpec,
}

impl Kind<ParticipationModels> for BernoulliConfig {
    const KIND: &'static str = "bernoulli";
    const SUMMARY: &'static str = "each client independently with its probability p_i";
    const EXAMPLE: &'static str = "p = 0.2";

    fn capabilities(&self) -> ParticipationCapabilities {
        ParticipationCapabilities {
            can_redraw: true,
            ..ParticipationCapabilities::probabilities(&self.p)
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.p.validate()
    }

    fn build(&self, pop: &Population<'_>, _: Validated) -> Result<Box<dyn Participation>, String> {
        Ok(Box::new(models::Bernoulli::new(
            self.p.resolve(pop)?,
            pop.seed,
        )))
    }
}

/// `kind = "markov"`: a two-state Markov chain per client with stationary on-probability p_i and
/// transition parameter q: P(off→on) = q, P(on→off) = q(1/p_i − 1) (rescaled when that exceeds 1).
/// Initial state ~ Bernoulli(p_i); each round transitions first, then reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkovConfig {
    /// Stationary probabilities.
    pub p: ProbabilitySpec,
    /// Transition parameter q.
    #[serde(default = "default_q")]
    pub q: f64,
}

impl Kind<ParticipationModels> for MarkovConfig {
    const KIND: &'static str = "markov";
    const SUMMARY: &'static str = "two-state Markov on/off chain per client";
    const EXAMPLE: &'static str = "p = 0.2";

    fn capabilities(&self) -> ParticipationCapabilities {
        ParticipationCapabilities::probabilities(&self.p)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.p.validate()?;
        if !(self.q.is_finite() && self.q > 0.0 && self.q <= 1.0) {
            return Err(ConfigError::new(
                "q",
                format!("must be in (0, 1], got {}", self.q),
            ));
        }
        Ok(())
    }

    fn build(&self, pop: &Population<'_>, _: Validated) -> Result<Box<dyn Participation>, String> {
        Ok(Box::new(models::Markov::new(
            self.p.resolve(pop)?,
            self.q,
            pop.seed,
        )))
    }
}

/// `kind = "cyclic"`: on/off per client with period L: on for max(1, round(L·p_i)) rounds, off for
/// max(1, L − on); each client starts off for a random number of rounds in [0, off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CyclicConfig {
    /// Long-run on-fractions.
    pub p: ProbabilitySpec,
    /// Period L in rounds.
    pub period: u64,
}

impl Kind<ParticipationModels> for CyclicConfig {
    const KIND: &'static str = "cyclic";
    const SUMMARY: &'static str = "cyclic on/off per client with period L";
    const EXAMPLE: &'static str = "p = 0.5\nperiod = 4";

    fn capabilities(&self) -> ParticipationCapabilities {
        ParticipationCapabilities::probabilities(&self.p)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.p.validate()?;
        if self.period < 2 {
            return Err(ConfigError::new(
                "period",
                format!("must be at least 2, got {}", self.period),
            ));
        }
        Ok(())
    }

    fn build(&self, pop: &Population<'_>, _: Validated) -> Result<Box<dyn Participation>, String> {
        Ok(Box::new(models::Cyclic::new(
            self.p.resolve(pop)?,
            self.period,
            pop.seed,
        )))
    }
}

/// `kind = "trace"`: replay a CSV trace: `round,client` rows (1-based rounds; the clients that took
/// part) or `client,start,end` rows (the client is selected in rounds start ≤ r < end, 1-based).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceConfig {
    /// The CSV file.
    pub path: std::path::PathBuf,
}

impl Kind<ParticipationModels> for TraceConfig {
    const KIND: &'static str = "trace";
    const SUMMARY: &'static str = "replay a CSV trace of the clients that took part";
    const EXAMPLE: &'static str = "path = \"trace.csv\"";

    fn capabilities(&self) -> ParticipationCapabilities {
        ParticipationCapabilities::NONE
    }

    fn build(&self, pop: &Population<'_>, _: Validated) -> Result<Box<dyn Participation>, String> {
        Ok(Box::new(trace::TraceReplay::load(
            &self.path,
            pop.num_clients,
        )?))
    }
}

fn default_q() -> f64 {
    0.05
}

#[cfg(test)]
mod registry_tests {
    use super::*;

    #[test]
    fn every_participation_kind_parses_validates_and_builds() {
        let pop: &'static Population<'static> = Box::leak(Box::new(Population {
            num_clients: 10,
            seed: 1,
            label_counts: None,
        }));
        fedsim_types::registry::check_family::<ParticipationModels>(|| pop);
    }

    #[test]
    fn population_dependent_settings_name_their_key() {
        let spec = |text: &str| ParticipationSpec::from_table(toml::from_str(text).unwrap());
        let e = spec("kind = \"uniform\"\ncount = 11")
            .unwrap()
            .validate_for(10)
            .unwrap_err();
        assert_eq!(e.key, "participation.count");
        let e = spec("kind = \"bernoulli\"\np = [0.5, 0.5]")
            .unwrap()
            .validate_for(3)
            .unwrap_err();
        assert_eq!(e.key, "participation.p");
        let e = spec("kind = \"bernoulli\"\np = [0.5, 2.0]")
            .unwrap()
            .validate_for(2)
            .unwrap_err();
        assert_eq!(e.key, "participation.p[1]");
        let e = spec("kind = \"markov\"\np = 0.5\nq = 0")
            .unwrap()
            .validate_for(2)
            .unwrap_err();
        assert_eq!(e.key, "participation.q");
        let e = spec("kind = \"sometimes\"").unwrap_err();
        assert_eq!(e.key, "participation.kind");
        let s = spec("kind = \"cyclic\"\np = 0.5\nperiod = 4").unwrap();
        assert!(s.has_probabilities() && !s.can_redraw() && !s.needs_labels());
    }
}
