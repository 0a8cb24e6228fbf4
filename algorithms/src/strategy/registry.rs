//! The strategy registry: every `[strategy] kind` the scenario accepts, with what it needs and provides.
//!
//! A strategy module describes each kind it offers by implementing [`StrategyKind`] on the kind's
//! configuration type (its `[strategy]` table); the list in [`super`]'s `strategies!` invocation makes it
//! known. Scenario validation, the attacks and the tests that must cover every strategy (sim/launch
//! equivalence, resume) read [`all`] instead of hand-kept lists, so a new strategy is exercised by them
//! as soon as it is registered.

use std::any::Any;
use std::fmt;

use fedsim_types::ConfigError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
}

impl Capabilities {
    /// A strategy that sends dense deltas and needs nothing special.
    pub const DENSE_DELTA: Capabilities = Capabilities {
        update: UpdateKind::DenseDelta,
        needs_supermask_model: false,
        needs_smoothness: false,
        needs_probabilities: false,
        client_state: false,
    };
}

/// One registered `[strategy] kind`: its configuration type, implemented in the strategy's module.
///
/// The type is the kind's `[strategy]` table without the `kind` key (deserialised with serde, so
/// `#[serde(deny_unknown_fields)]` and defaults apply).
pub trait StrategyKind:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The `kind` string in the scenario.
    const KIND: &'static str;
    /// One line for `--help`, the README and error messages.
    const SUMMARY: &'static str;
    /// A `[strategy]` table (TOML, without `kind`) that runs on the quickstart scenario; the tests that
    /// cover every strategy run it.
    const EXAMPLE: &'static str = "";
    /// Other scenario keys the example needs (`key=value`, TOML values, as `fedsim sim --set` takes).
    const EXAMPLE_SETTINGS: &'static [&'static str] = &[];

    /// What this configuration needs and provides.
    fn capabilities(&self) -> Capabilities;

    /// Checks values serde cannot; keys relative to the `[strategy]` table.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Builds the strategy (called only on a validated configuration).
    fn build(&self) -> Box<dyn Strategy>;
}

/// A registry entry: a [`StrategyKind`] with its type erased.
#[derive(Clone, Copy)]
pub struct Entry {
    /// The `kind` string.
    pub kind: &'static str,
    /// One line of description.
    pub summary: &'static str,
    /// See [`StrategyKind::EXAMPLE`].
    pub example: &'static str,
    /// See [`StrategyKind::EXAMPLE_SETTINGS`].
    pub example_settings: &'static [&'static str],
    parse: fn(toml::Table) -> Result<Box<dyn Configured>, ConfigError>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("kind", &self.kind).finish()
    }
}

impl Entry {
    /// The entry of `K`.
    pub const fn of<K: StrategyKind>() -> Entry {
        Entry {
            kind: K::KIND,
            summary: K::SUMMARY,
            example: K::EXAMPLE,
            example_settings: K::EXAMPLE_SETTINGS,
            parse: parse::<K>,
        }
    }

    /// The example as a complete `[strategy]` table (with `kind`), TOML text.
    pub fn example_table(&self) -> String {
        let mut t = format!("kind = \"{}\"\n", self.kind);
        if !self.example.is_empty() {
            t.push_str(self.example);
            t.push('\n');
        }
        t
    }

    /// The example as one `--set strategy={...}` value (an inline table).
    pub fn example_inline(&self) -> String {
        let table: toml::Table = toml::from_str(&self.example_table()).unwrap_or_default();
        toml::Value::Table(table).to_string()
    }
}

fn parse<K: StrategyKind>(table: toml::Table) -> Result<Box<dyn Configured>, ConfigError> {
    let config: K = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::new("strategy", e.message().to_string()))?;
    Ok(Box::new(config))
}

/// Every registered strategy kind, in registration order.
pub fn all() -> &'static [Entry] {
    super::REGISTERED
}

/// The entry of `kind`.
pub fn find(kind: &str) -> Option<&'static Entry> {
    all().iter().find(|e| e.kind == kind)
}

/// A configured strategy with its kind erased: what [`StrategySpec`] holds.
trait Configured: fmt::Debug + Send + Sync {
    fn kind(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    fn validate(&self) -> Result<(), ConfigError>;
    fn build(&self) -> Box<dyn Strategy>;
    fn to_table(&self) -> toml::Table;
    fn clone_box(&self) -> Box<dyn Configured>;
    fn as_any(&self) -> &dyn Any;
}

impl<K: StrategyKind> Configured for K {
    fn kind(&self) -> &'static str {
        K::KIND
    }
    fn capabilities(&self) -> Capabilities {
        StrategyKind::capabilities(self)
    }
    fn validate(&self) -> Result<(), ConfigError> {
        StrategyKind::validate(self).map_err(|e| e.at("strategy"))
    }
    fn build(&self) -> Box<dyn Strategy> {
        StrategyKind::build(self)
    }
    fn to_table(&self) -> toml::Table {
        let mut table = toml::Table::new();
        table.insert("kind".into(), toml::Value::String(K::KIND.into()));
        if let Ok(toml::Value::Table(fields)) = toml::Value::try_from(self) {
            table.extend(fields);
        }
        table
    }
    fn clone_box(&self) -> Box<dyn Configured> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The scenario's `[strategy]` section: a registered kind and its settings.
pub struct StrategySpec(Box<dyn Configured>);

impl StrategySpec {
    /// A specification from a configuration value.
    pub fn new<K: StrategyKind>(config: K) -> Self {
        Self(Box::new(config))
    }

    /// Parses a `[strategy]` table (with its `kind` key).
    pub fn from_table(mut table: toml::Table) -> Result<Self, ConfigError> {
        let kind = match table.remove("kind") {
            Some(toml::Value::String(k)) => k,
            Some(other) => {
                return Err(ConfigError::new(
                    "strategy.kind",
                    format!("must be a string, got {other}"),
                ));
            }
            None => return Err(ConfigError::new("strategy.kind", "missing")),
        };
        let entry = find(&kind).ok_or_else(|| {
            let known: Vec<&str> = all().iter().map(|e| e.kind).collect();
            ConfigError::new(
                "strategy.kind",
                format!("unknown strategy `{kind}`; known: {}", known.join(", ")),
            )
        })?;
        (entry.parse)(table).map(Self)
    }

    /// The `kind` string.
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// What the configured strategy needs and provides.
    pub fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }

    /// The configuration, when it is of type `K` (e.g. to read FedAvg's aggregator).
    pub fn config<K: StrategyKind>(&self) -> Option<&K> {
        self.0.as_any().downcast_ref::<K>()
    }

    /// Checks values, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.0.validate()
    }

    /// Builds the strategy.
    pub fn build(&self) -> Box<dyn Strategy> {
        self.0.build()
    }

    /// The resolved table (with `kind` and every default filled in).
    pub fn to_table(&self) -> toml::Table {
        self.0.to_table()
    }
}

impl Default for StrategySpec {
    fn default() -> Self {
        Self::new(super::fedavg::FedAvgConfig::default())
    }
}

impl Clone for StrategySpec {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl fmt::Debug for StrategySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl PartialEq for StrategySpec {
    fn eq(&self, other: &Self) -> bool {
        self.to_table() == other.to_table()
    }
}

impl Serialize for StrategySpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_table().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for StrategySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        Self::from_table(table).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_examples_parse_and_validate() {
        let mut kinds: Vec<&str> = all().iter().map(|e| e.kind).collect();
        let n = kinds.len();
        kinds.sort_unstable();
        kinds.dedup();
        assert_eq!(kinds.len(), n, "a kind is registered twice");
        for e in all() {
            let table: toml::Table = toml::from_str(&e.example_table()).unwrap();
            let spec = StrategySpec::from_table(table)
                .unwrap_or_else(|err| panic!("{}: example does not parse: {err}", e.kind));
            spec.validate()
                .unwrap_or_else(|err| panic!("{}: example does not validate: {err}", e.kind));
            assert_eq!(spec.kind(), e.kind);
            // The resolved table parses back to the same configuration.
            let again = StrategySpec::from_table(spec.to_table()).unwrap();
            assert_eq!(again, spec);
            assert!(!spec.build().name().is_empty());
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
