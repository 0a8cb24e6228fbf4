//! The strategy registry: every `[strategy] kind` the scenario accepts, with what it needs and provides.
//!
//! A strategy module describes each kind it offers by implementing
//! [`Kind<Strategies>`](fedsim_types::registry::Kind) on the kind's configuration type (its
//! `[strategy]` table); the list in [`super`]'s `strategies!` invocation makes it known. Scenario validation, the attacks and the tests that must cover every strategy (sim/launch
//! equivalence, resume) read [`all`] instead of hand-kept lists, so a new strategy is exercised by them
//! as soon as it is registered.

use fedsim_types::registry::{self, Entry, Family, Spec};

use super::Strategy;

/// What a strategy's clients send the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// One dense model-sized delta (`local − global`, tensor [`super::dense::DELTA`]), aggregated by a
    /// weighted mean or a robust rule. The delta-rewriting attacks apply.
    DenseDelta,
    /// Per-layer edge rankings of a supermask model (FRL). Rank reversal applies.
    Rankings,
    /// Anything else (compressed gradients, control variates, …).
    Other,
}

/// What a configured strategy needs from the rest of the scenario and what it provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// What clients send.
    pub update: UpdateKind,
    /// Needs a supermask model (`model.kind = "supermask_mlp"` or `"supermask_cnn"`).
    pub needs_supermask_model: bool,
    /// Needs the model's smoothness constants `L_i` ([`fedsim_nn::Model::smoothness`]), for
    /// theoretical step sizes or smoothness weights.
    pub needs_smoothness: bool,
    /// Needs per-client participation probabilities from the participation model (oracle baselines).
    pub needs_probabilities: bool,
    /// Keeps per-client state on the clients across rounds (a client must keep it between rounds).
    pub client_state: bool,
    /// Runs asynchronously ([`super::Schedule::Asynchronous`]): no rounds, a server update per
    /// `buffer_size` finished clients (FedBuff, FedAsync).
    pub asynchronous: bool,
}

impl Capabilities {
    /// A strategy that sends dense deltas and needs nothing special.
    pub const DENSE_DELTA: Capabilities = Capabilities {
        update: UpdateKind::DenseDelta,
        needs_supermask_model: false,
        needs_smoothness: false,
        needs_probabilities: false,
        client_state: false,
        asynchronous: false,
    };
}

/// The strategy family: `[strategy] kind = …`, every kind listed in [`super`]'s `strategies!`.
#[derive(Debug, Clone, Copy)]
pub struct Strategies;

impl Family for Strategies {
    const SECTION: &'static str = "strategy";
    type Capabilities = Capabilities;
    type Input<'a> = ();
    type Output = Box<dyn Strategy>;

    fn registered() -> &'static [Entry<Self>] {
        super::REGISTERED
    }

    fn default_spec() -> Spec<Self> {
        Spec::new(super::fedavg::FedAvgConfig::default())
    }
}

/// The scenario's `[strategy]` section: a registered kind and its settings.
pub type StrategySpec = Spec<Strategies>;

/// A registry entry of a strategy kind.
pub type StrategyEntry = Entry<Strategies>;

/// Every registered strategy kind, in registration order.
pub fn all() -> &'static [StrategyEntry] {
    registry::all::<Strategies>()
}

/// The entry of `kind`.
pub fn find(kind: &str) -> Option<&'static StrategyEntry> {
    registry::find::<Strategies>(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_examples_parse_validate_and_build() {
        registry::check_family::<Strategies>(|| ());
        for e in all() {
            let spec = e.example_spec().unwrap();
            assert!(!spec.validate().unwrap().build(()).name().is_empty());
        }
    }

    #[test]
    fn unknown_kinds_and_fields_name_the_key() {
        let e = StrategySpec::from_table(toml::from_str("kind = \"fedfoo\"").unwrap()).unwrap_err();
        assert_eq!(e.key, "strategy.kind");
        assert!(e.message.contains("fedavg"), "{e}");
        let e = StrategySpec::from_table(toml::from_str("kind = \"fedavg\"\nlr = 1").unwrap())
            .unwrap_err();
        assert_eq!(e.key, "strategy");
        assert!(e.message.contains("lr"), "{e}");
        let e = StrategySpec::from_table(toml::Table::new()).unwrap_err();
        assert_eq!(e.key, "strategy.kind");
    }
}
