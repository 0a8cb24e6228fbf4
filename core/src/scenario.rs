//! Scenario files: one TOML document naming the data, partition, model, strategy, participation
//! pattern and run length. Both runtimes read the same file.

use std::path::Path;

use fedsim_data::{DataSpec, PartitionSpec};
use fedsim_nn::ModelSpec;
use serde::{Deserialize, Serialize};

use crate::CoreError;
use crate::participation::ParticipationSpec;
use crate::strategy::StrategySpec;
use crate::train::TrainConfig;

/// The scenario's `[eval]` section: how often and on what the global model is evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many rounds (the last round is always evaluated).
    #[serde(default = "one")]
    pub every: u64,
    /// Also compute the global training loss on the union of all clients' data.
    #[serde(default = "yes")]
    pub train_loss: bool,
    /// Cap on the samples used for the training loss (0 = all); a fixed, seed-derived subset.
    #[serde(default)]
    pub train_loss_samples: usize,
    /// Target test accuracies (in [0, 1]); `summary.json` reports the first round reaching each.
    #[serde(default)]
    pub targets: Vec<f64>,
    /// Samples per evaluation chunk (the unit of parallel work; does not change results).
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
}

fn one() -> u64 {
    1
}
fn yes() -> bool {
    true
}
fn default_eval_batch() -> usize {
    500
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            every: 1,
            train_loss: true,
            train_loss_samples: 0,
            targets: Vec::new(),
            batch_size: default_eval_batch(),
        }
    }
}

/// A complete experiment description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Scenario name, used for the default output directory.
    pub name: String,
    /// Run seed: every random decision derives from it.
    #[serde(default)]
    pub seed: u64,
    /// Number of rounds.
    pub rounds: u64,
    /// Number of registered clients.
    pub clients: usize,
    /// The data set.
    pub data: DataSpec,
    /// How training data is split among clients.
    #[serde(default)]
    pub partition: PartitionSpec,
    /// The model.
    pub model: ModelSpec,
    /// Local training.
    #[serde(default)]
    pub train: TrainConfig,
    /// The federated algorithm.
    #[serde(default)]
    pub strategy: StrategySpec,
    /// Who takes part in each round.
    #[serde(default)]
    pub participation: ParticipationSpec,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalConfig,
}

impl Scenario {
    /// Reads a scenario file and applies `key=value` overrides (dotted keys, TOML values).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, CoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| CoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, overrides).map_err(|e| match e {
            CoreError::Scenario(m) => CoreError::Scenario(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parses scenario text and applies `key=value` overrides.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self, CoreError> {
        let scenario: Scenario = if overrides.is_empty() {
            toml::from_str(text).map_err(|e| CoreError::Scenario(e.to_string()))?
        } else {
            let mut table: toml::Table =
                toml::from_str(text).map_err(|e| CoreError::Scenario(e.to_string()))?;
            for o in overrides {
                apply_override(&mut table, o).map_err(CoreError::Scenario)?;
            }
            let merged = toml::to_string(&table).map_err(|e| CoreError::Scenario(e.to_string()))?;
            toml::from_str(&merged)
                .map_err(|e| CoreError::Scenario(format!("after --set overrides: {e}")))?
        };
        scenario.validate().map_err(CoreError::Scenario)?;
        Ok(scenario)
    }

    /// Checks values that serde cannot, naming the bad key.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if self.rounds == 0 {
            return Err("rounds must be at least 1".into());
        }
        if self.clients == 0 {
            return Err("clients must be at least 1".into());
        }
        if self.clients > u32::MAX as usize {
            return Err(format!("clients must be at most {}", u32::MAX));
        }
        self.train.validate()?;
        self.strategy.validate()?;
        self.participation.validate(self.clients)?;
        if self.eval.every == 0 {
            return Err("eval.every must be at least 1".into());
        }
        if self.eval.batch_size == 0 {
            return Err("eval.batch_size must be at least 1".into());
        }
        if let Some(t) = self.eval.targets.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(format!(
                "eval.targets must be accuracies in [0, 1], got {t}"
            ));
        }
        Ok(())
    }

    /// The fully resolved scenario as TOML (defaults filled in).
    pub fn to_toml(&self) -> String {
        toml::to_string(self)
            .unwrap_or_else(|e| format!("# could not serialise the scenario: {e}\n"))
    }
}

/// Applies one `a.b.c=value` override to a TOML table. The value is parsed as TOML (so `0.1`, `true`,
/// `[1, 2]` and `"text"` work); anything that does not parse is taken as a string.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), String> {
    let (key, raw) = assignment
        .split_once('=')
        .ok_or_else(|| format!("--set expects key=value, got `{assignment}`"))?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(format!("--set: invalid key `{key}`"));
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut cur = table;
    for p in &parts[..parts.len() - 1] {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cur = entry
            .as_table_mut()
            .ok_or_else(|| format!("--set {key}: `{p}` is not a section"))?;
    }
    cur.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
rounds = 3
clients = 10
[data]
kind = "synthetic"
[model]
kind = "logreg"
"#;

    #[test]
    fn defaults_fill_in() {
        let s = Scenario::parse(MINIMAL, &[]).unwrap();
        assert_eq!(s.train.batch_size, 10);
        assert_eq!(s.eval.every, 1);
        // The resolved scenario parses back to the same value.
        assert_eq!(Scenario::parse(&s.to_toml(), &[]).unwrap(), s);
    }

    #[test]
    fn unknown_keys_are_named() {
        let e = Scenario::parse(
            &format!("{MINIMAL}\n[train]\nlr = 0.1\nlearning_rate = 3\n"),
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("learning_rate"), "{e}");
        let e = Scenario::parse(&MINIMAL.replace("rounds = 3", "rounds = 3\nround = 4"), &[])
            .unwrap_err();
        assert!(e.to_string().contains("round"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Scenario::parse(MINIMAL, &["train.lr=-1".into()]).unwrap_err();
        assert!(e.to_string().contains("train.lr"), "{e}");
        let e = Scenario::parse(MINIMAL, &["rounds=\"many\"".into()]).unwrap_err();
        assert!(e.to_string().contains("rounds"), "{e}");
    }

    #[test]
    fn overrides_apply() {
        let s = Scenario::parse(
            MINIMAL,
            &[
                "train.lr=0.5".into(),
                "seed=9".into(),
                "data.alpha=0.5".into(),
            ],
        )
        .unwrap();
        assert_eq!(s.train.lr, 0.5);
        assert_eq!(s.seed, 9);
        assert!(matches!(s.data, DataSpec::Synthetic { alpha, .. } if alpha == 0.5));
    }
}
