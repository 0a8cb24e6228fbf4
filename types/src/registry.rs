//! Registries of configurable kinds: strategies, compressors, participation models, partitioners and
//! models each register every `kind` they accept in one place, with what it needs and provides.
//!
//! A *family* ([`Family`]) is one scenario section whose table names a kind (`[strategy] kind = …`,
//! `[partition] scheme = …`). Each kind is a configuration type implementing [`Kind`] for its family:
//! its `kind` string, a one-line summary, an example that runs, its validation, its capabilities and how
//! it builds. The family lists its kinds once ([`Family::registered`]), and the scenario holds a
//! [`Spec`]: a registered kind with its settings, parsed from the table through the registry, written
//! back with every default filled in. Scenario checks and the tests that must cover every kind read the
//! registry instead of hand-kept lists.
//!
//! Building needs a [`Valid`] specification: [`Spec::validate`] is the only way to get one, so nothing
//! is built from a configuration that was never checked.

use std::any::Any;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ConfigError;

/// One configurable section of a scenario.
pub trait Family: Sized + 'static {
    /// The scenario section (`strategy`, `participation`, …): the prefix of error keys.
    const SECTION: &'static str;
    /// The key that names the kind in the section's table.
    const TAG: &'static str = "kind";
    /// What a configured kind declares it needs and provides.
    type Capabilities: Copy + fmt::Debug + PartialEq;
    /// What building takes besides the configuration (an input shape, a population, …).
    type Input<'a>;
    /// What building makes.
    type Output;
    /// Every registered kind of the family, in registration order.
    fn registered() -> &'static [Entry<Self>];
    /// The specification used when the scenario leaves the section out.
    fn default_spec() -> Spec<Self>;

    /// Keys every kind of the family accepts next to its own settings (`[model] init_from`): taken
    /// out of the table before the kind parses it, kept on the [`Spec`] ([`Spec::common`]) and
    /// written back with it. Their values are checked by whoever reads them.
    const COMMON_KEYS: &'static [&'static str] = &[];
}

/// One registered kind of family `F`: its configuration type (the section's table without the tag
/// key, deserialised with serde, so `#[serde(deny_unknown_fields)]` and defaults apply).
pub trait Kind<F: Family>:
    Serialize + DeserializeOwned + Clone + fmt::Debug + PartialEq + Send + Sync + 'static
{
    /// The kind's name in the scenario.
    const KIND: &'static str;
    /// One line for the README and error messages.
    const SUMMARY: &'static str;
    /// Settings of the section (TOML, without the tag key) that run on the quickstart scenario; the
    /// tests that cover every kind run it.
    const EXAMPLE: &'static str = "";
    /// Other scenario keys the example needs (`key=value`, TOML values, as `fedsim sim --set` takes).
    const EXAMPLE_SETTINGS: &'static [&'static str] = &[];

    /// What this configuration needs and provides.
    fn capabilities(&self) -> F::Capabilities;

    /// Checks values serde cannot; keys relative to the section.
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }

    /// Builds what the configuration describes; `proof` shows it was validated.
    fn build(&self, input: F::Input<'_>, proof: Validated) -> F::Output;
}

/// Proof that a configuration passed its validation: [`Kind::build`] takes one, and only
/// [`Spec::validate`] makes them.
#[derive(Debug, Clone, Copy)]
pub struct Validated(());

/// A registry entry: a [`Kind`] with its type erased.
pub struct Entry<F: Family> {
    /// The kind's name.
    pub kind: &'static str,
    /// One line of description.
    pub summary: &'static str,
    /// See [`Kind::EXAMPLE`].
    pub example: &'static str,
    /// See [`Kind::EXAMPLE_SETTINGS`].
    pub example_settings: &'static [&'static str],
    parse: ParseFn<F>,
}

/// Parses a section's table (without the tag key) into a configured kind.
type ParseFn<F> = fn(toml::Table) -> Result<Box<dyn Configured<F>>, ConfigError>;

impl<F: Family> Clone for Entry<F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Family> Copy for Entry<F> {}

impl<F: Family> fmt::Debug for Entry<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry").field("kind", &self.kind).finish()
    }
}

impl<F: Family> Entry<F> {
    /// The entry of `K`.
    pub const fn of<K: Kind<F>>() -> Self {
        Self {
            kind: K::KIND,
            summary: K::SUMMARY,
            example: K::EXAMPLE,
            example_settings: K::EXAMPLE_SETTINGS,
            parse: parse::<F, K>,
        }
    }

    /// The example as a complete table (with the tag key), TOML text.
    pub fn example_table(&self) -> String {
        let mut t = format!("{} = \"{}\"\n", F::TAG, self.kind);
        if !self.example.is_empty() {
            t.push_str(self.example);
            t.push('\n');
        }
        t
    }

    /// The example as one inline table, for `--set section={...}`.
    pub fn example_inline(&self) -> String {
        let table: toml::Table = toml::from_str(&self.example_table()).unwrap_or_default();
        toml::Value::Table(table).to_string()
    }

    /// The example parsed.
    pub fn example_spec(&self) -> Result<Spec<F>, ConfigError> {
        let table: toml::Table = toml::from_str(&self.example_table())
            .map_err(|e| ConfigError::new(F::SECTION, e.message().to_string()))?;
        Spec::from_table(table)
    }
}

fn parse<F: Family, K: Kind<F>>(table: toml::Table) -> Result<Box<dyn Configured<F>>, ConfigError> {
    let config: K = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::new(F::SECTION, e.message().to_string()))?;
    Ok(Box::new(config))
}

/// Every registered kind of `F`.
pub fn all<F: Family>() -> &'static [Entry<F>] {
    F::registered()
}

/// The entry of `kind` in family `F`.
pub fn find<F: Family>(kind: &str) -> Option<&'static Entry<F>> {
    all::<F>().iter().find(|e| e.kind == kind)
}

/// A configured kind with its type erased: what [`Spec`] holds.
trait Configured<F: Family>: fmt::Debug + Send + Sync {
    fn kind(&self) -> &'static str;
    fn capabilities(&self) -> F::Capabilities;
    fn validate(&self) -> Result<(), ConfigError>;
    fn build(&self, input: F::Input<'_>) -> F::Output;
    fn to_table(&self) -> toml::Table;
    fn clone_box(&self) -> Box<dyn Configured<F>>;
    fn as_any(&self) -> &dyn Any;
}

impl<F: Family, K: Kind<F>> Configured<F> for K {
    fn kind(&self) -> &'static str {
        K::KIND
    }
    fn capabilities(&self) -> F::Capabilities {
        Kind::capabilities(self)
    }
    fn validate(&self) -> Result<(), ConfigError> {
        Kind::validate(self).map_err(|e| e.at(F::SECTION))
    }
    fn build(&self, input: F::Input<'_>) -> F::Output {
        Kind::build(self, input, Validated(()))
    }
    fn to_table(&self) -> toml::Table {
        let mut table = toml::Table::new();
        table.insert(F::TAG.into(), toml::Value::String(K::KIND.into()));
        if let Ok(toml::Value::Table(fields)) = toml::Value::try_from(self) {
            table.extend(fields);
        }
        table
    }
    fn clone_box(&self) -> Box<dyn Configured<F>> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// A section of the scenario: a registered kind of family `F`, its settings, and the family's
/// [common keys](Family::COMMON_KEYS) that were set.
pub struct Spec<F: Family> {
    config: Box<dyn Configured<F>>,
    common: toml::Table,
}

impl<F: Family> Spec<F> {
    /// A specification from a configuration value.
    pub fn new<K: Kind<F>>(config: K) -> Self {
        Self {
            config: Box::new(config),
            common: toml::Table::new(),
        }
    }

    /// Parses the section's table (with its tag key).
    pub fn from_table(mut table: toml::Table) -> Result<Self, ConfigError> {
        let mut common = toml::Table::new();
        for key in F::COMMON_KEYS {
            if let Some(v) = table.remove(*key) {
                common.insert((*key).to_string(), v);
            }
        }
        let tag_key = format!("{}.{}", F::SECTION, F::TAG);
        let kind = match table.remove(F::TAG) {
            Some(toml::Value::String(k)) => k,
            Some(other) => {
                return Err(ConfigError::new(
                    tag_key,
                    format!("must be a string, got {other}"),
                ));
            }
            None => return Err(ConfigError::new(tag_key, "missing")),
        };
        let entry = find::<F>(&kind).ok_or_else(|| {
            let known: Vec<&str> = all::<F>().iter().map(|e| e.kind).collect();
            ConfigError::new(
                tag_key,
                format!(
                    "unknown {} `{kind}`; known: {}",
                    F::SECTION,
                    known.join(", ")
                ),
            )
        })?;
        let config = (entry.parse)(table)?;
        Ok(Self { config, common })
    }

    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        self.config.kind()
    }

    /// What the configured kind needs and provides.
    pub fn capabilities(&self) -> F::Capabilities {
        self.config.capabilities()
    }

    /// The configuration, when it is of type `K`.
    pub fn config<K: Kind<F>>(&self) -> Option<&K> {
        self.config.as_any().downcast_ref::<K>()
    }

    /// The value of a [common key](Family::COMMON_KEYS), when the section sets it.
    pub fn common(&self, key: &str) -> Option<&toml::Value> {
        self.common.get(key)
    }

    /// The value of a [common key](Family::COMMON_KEYS) as `T`, when the section sets it; an error
    /// names the key (`section.key`) when the value is not a `T`.
    pub fn common_as<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ConfigError> {
        self.common
            .get(key)
            .map(|v| {
                v.clone().try_into().map_err(|e: toml::de::Error| {
                    ConfigError::new(format!("{}.{key}", F::SECTION), e.message().to_string())
                })
            })
            .transpose()
    }

    /// Sets (or with `None` removes) a [common key](Family::COMMON_KEYS).
    ///
    /// # Panics
    /// If `key` is not one of the family's common keys (a caller's bug).
    pub fn set_common(&mut self, key: &str, value: Option<toml::Value>) {
        assert!(F::COMMON_KEYS.contains(&key), "`{key}` is not a common key");
        match value {
            Some(v) => self.common.insert(key.to_string(), v),
            None => self.common.remove(key),
        };
    }

    /// Checks the settings, naming the bad key; the checked specification is what builds.
    pub fn validate(&self) -> Result<Valid<'_, F>, ConfigError> {
        self.config.validate()?;
        Ok(Valid(self))
    }

    /// The resolved table (with the tag key, every default filled in, and the common keys set).
    pub fn to_table(&self) -> toml::Table {
        let mut t = self.config.to_table();
        t.extend(self.common.clone());
        t
    }
}

/// A specification that passed [`Spec::validate`]: the only thing that builds.
pub struct Valid<'a, F: Family>(&'a Spec<F>);

impl<F: Family> Clone for Valid<'_, F> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<F: Family> Copy for Valid<'_, F> {}

impl<F: Family> fmt::Debug for Valid<'_, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Valid").field(self.0).finish()
    }
}

impl<F: Family> Valid<'_, F> {
    /// Builds what the specification describes.
    pub fn build(&self, input: F::Input<'_>) -> F::Output {
        self.0.config.build(input)
    }

    /// The specification.
    pub fn spec(&self) -> &Spec<F> {
        self.0
    }
}

impl<F: Family> Default for Spec<F> {
    fn default() -> Self {
        F::default_spec()
    }
}

impl<F: Family> Clone for Spec<F> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone_box(),
            common: self.common.clone(),
        }
    }
}

impl<F: Family> fmt::Debug for Spec<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.config.fmt(f)?;
        if !self.common.is_empty() {
            write!(f, " {:?}", self.common)?;
        }
        Ok(())
    }
}

impl<F: Family> PartialEq for Spec<F> {
    fn eq(&self, other: &Self) -> bool {
        self.to_table() == other.to_table()
    }
}

impl<F: Family> Serialize for Spec<F> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_table().serialize(serializer)
    }
}

impl<'de, F: Family> Deserialize<'de> for Spec<F> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        Self::from_table(table).map_err(serde::de::Error::custom)
    }
}

/// Checks a family's registry: kinds are unique, and every example parses, validates, builds with
/// `input` and writes back to a table that parses to the same specification. For each family's tests.
pub fn check_family<F: Family>(mut input: impl FnMut() -> F::Input<'static>) {
    let mut kinds: Vec<&str> = all::<F>().iter().map(|e| e.kind).collect();
    let n = kinds.len();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), n, "{}: a kind is registered twice", F::SECTION);
    for e in all::<F>() {
        let spec = e.example_spec().unwrap_or_else(|err| {
            panic!("{} {}: example does not parse: {err}", F::SECTION, e.kind)
        });
        let valid = spec.validate().unwrap_or_else(|err| {
            panic!(
                "{} {}: example does not validate: {err}",
                F::SECTION,
                e.kind
            )
        });
        assert_eq!(spec.kind(), e.kind);
        let _built = valid.build(input());
        let again = Spec::<F>::from_table(spec.to_table()).expect("the resolved table parses");
        assert_eq!(
            again,
            spec,
            "{} {}: resolved table round trip",
            F::SECTION,
            e.kind
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy family: shapes that build their area.
    struct Shapes;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Square {
        side: f64,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Dot {}

    impl Family for Shapes {
        const SECTION: &'static str = "shape";
        type Capabilities = bool;
        type Input<'a> = f64;
        type Output = f64;
        fn registered() -> &'static [Entry<Self>] {
            static ALL: &[Entry<Shapes>] = &[Entry::of::<Square>(), Entry::of::<Dot>()];
            ALL
        }
        fn default_spec() -> Spec<Self> {
            Spec::new(Dot {})
        }
        const COMMON_KEYS: &'static [&'static str] = &["colour"];
    }

    impl Kind<Shapes> for Square {
        const KIND: &'static str = "square";
        const SUMMARY: &'static str = "a square";
        const EXAMPLE: &'static str = "side = 2.0";
        fn capabilities(&self) -> bool {
            true
        }
        fn validate(&self) -> Result<(), ConfigError> {
            crate::config::positive("side", self.side)
        }
        fn build(&self, scale: f64, _: Validated) -> f64 {
            self.side * self.side * scale
        }
    }

    impl Kind<Shapes> for Dot {
        const KIND: &'static str = "dot";
        const SUMMARY: &'static str = "a dot";
        fn capabilities(&self) -> bool {
            false
        }
        fn build(&self, _: f64, _: Validated) -> f64 {
            0.0
        }
    }

    fn spec(text: &str) -> Result<Spec<Shapes>, ConfigError> {
        Spec::from_table(toml::from_str(text).unwrap())
    }

    #[test]
    fn specs_parse_validate_build_and_round_trip() {
        check_family::<Shapes>(|| 1.0);
        let s = spec("kind = \"square\"\nside = 3.0").unwrap();
        assert_eq!(s.kind(), "square");
        assert!(s.capabilities());
        assert_eq!(s.validate().unwrap().build(2.0), 18.0);
        assert_eq!(s.config::<Square>(), Some(&Square { side: 3.0 }));
        assert_eq!(s.config::<Dot>(), None);
        assert_eq!(Spec::<Shapes>::default().kind(), "dot");
        assert_eq!(s.to_table().get("side"), Some(&toml::Value::Float(3.0)));
    }

    #[test]
    fn errors_name_the_key() {
        let e = spec("kind = \"circle\"").unwrap_err();
        assert_eq!(e.key, "shape.kind");
        assert!(e.message.contains("square, dot"), "{e}");
        let e = spec("kind = \"square\"\nside = 1.0\nradius = 2").unwrap_err();
        assert_eq!(e.key, "shape");
        assert!(e.message.contains("radius"), "{e}");
        let e = spec("side = 1.0").unwrap_err();
        assert_eq!(e.key, "shape.kind");
        let e = spec("kind = 3").unwrap_err();
        assert_eq!(e.key, "shape.kind");
        let e = spec("kind = \"square\"\nside = -1.0")
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.key, "shape.side");
    }

    #[test]
    fn common_keys_are_kept_next_to_any_kind() {
        for kind in ["square\"\nside = 1.0", "dot\""] {
            let s = spec(&format!("kind = \"{kind}\ncolour = \"red\"")).unwrap();
            assert_eq!(s.common("colour"), Some(&toml::Value::String("red".into())));
            assert_eq!(Spec::<Shapes>::from_table(s.to_table()).unwrap(), s);
        }
        let s = spec("kind = \"dot\"\ncolour = 3").unwrap();
        assert_eq!(s.common_as::<i64>("colour").unwrap(), Some(3));
        assert_eq!(
            s.common_as::<String>("colour").unwrap_err().key,
            "shape.colour"
        );
        let mut s = spec("kind = \"dot\"").unwrap();
        assert_eq!(s.common("colour"), None);
        assert_eq!(s.common_as::<String>("colour").unwrap(), None);
        assert!(!s.to_table().contains_key("colour"));
        s.set_common("colour", Some(toml::Value::String("blue".into())));
        assert_ne!(s, spec("kind = \"dot\"").unwrap());
        s.set_common("colour", None);
        assert_eq!(s, spec("kind = \"dot\"").unwrap());
        // A key that is not common is still the kind's to refuse.
        assert!(spec("kind = \"dot\"\nshade = 1").is_err());
    }
}
