//! Scenario files: one TOML document naming the data, partition, model, strategy, participation
//! pattern and run length. Both runtimes read the same file.

use std::path::Path;

use fedsim_data::{DataRoot, DataSpec, PartitionSpec};
use fedsim_nn::{ModelSpec, ModelSpecExt};
use serde::{Deserialize, Serialize};

use fedsim_types::ConfigError;

use crate::EngineError;
pub use crate::eval::EvalConfig;

use crate::participation::{EventsConfig, ParticipationSpec, ParticipationSpecExt};
use fedsim_algorithms::strategy::StrategySpec;
use fedsim_algorithms::train::TrainConfig;

/// The scenario's `[round]` section: when a round closes. The same policy in both runtimes.
///
/// A round closes when every selected client has reported, or when `quorum` clients have reported
/// (the rest are dropped from the round), or when `deadline_s` seconds have passed (clients that have
/// not reported are dropped). The gRPC coordinator measures wall-clock seconds; the simulator measures
/// virtual seconds from its straggler model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundConfig {
    /// Close once this many selected clients reported (0 = wait for all).
    #[serde(default)]
    pub quorum: usize,
    /// Which `quorum` clients count: the first in virtual finish time (reproducible, the default), or
    /// in a deployment the first whose results arrive.
    #[serde(default)]
    pub quorum_order: QuorumOrder,
    /// The gRPC coordinator closes a round after this many wall-clock seconds (0 = no deadline). The
    /// default, 10 minutes, keeps one client that heartbeats but never reports from stalling the run.
    #[serde(default = "default_round_deadline")]
    pub deadline_s: f64,
    /// Refuse an update whose L2 norm (over all its values) exceeds this bound (0 = no bound). Both
    /// runtimes apply it when the update is validated.
    #[serde(default)]
    pub max_update_norm: f64,
}

fn default_round_deadline() -> f64 {
    600.0
}

impl Default for RoundConfig {
    fn default() -> Self {
        Self {
            quorum: 0,
            quorum_order: QuorumOrder::Virtual,
            deadline_s: default_round_deadline(),
            max_update_norm: 0.0,
        }
    }
}

/// A real fault the launcher injects (`[[deploy.faults]]`), when the given round starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// Round (1-based) during which the fault happens: it is injected once round `round − 1` has completed.
    pub round: u64,
    /// Fraction of client processes to kill (SIGKILL), chosen from the seed.
    #[serde(default)]
    pub kill_clients: f64,
    /// Restart the killed client processes after this many seconds (never when absent).
    #[serde(default)]
    pub restart_clients_after_s: Option<f64>,
    /// Kill the coordinator (SIGKILL) and restart it with `--resume`.
    #[serde(default)]
    pub kill_server: bool,
    /// Clients (`"1,4"`) that train in this round but submit just after its `round.deadline_s`, so the
    /// coordinator refuses their updates as late (they must keep their state from before the round).
    #[serde(default)]
    pub late_clients: Option<String>,
}

/// Which clients make a round's quorum (`round.quorum_order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuorumOrder {
    /// The k clients that finish first in virtual time (ties by id), chosen when the round is planned:
    /// both runtimes keep the same k, so runs are reproducible. In a deployment a hung member of the
    /// quorum keeps the round open until `deadline_s`.
    #[default]
    Virtual,
    /// In a deployment, every selected client trains and the first k results to arrive close the round
    /// (not reproducible: it depends on real timing). The simulator has no arrival order of its own and
    /// uses the virtual order.
    Arrival,
}

/// Where the sample counts that weight client updates come from (`deploy.sample_counts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleCounts {
    /// The size of the client's partition of the scenario's data set, which the coordinator loads.
    #[default]
    Partition,
    /// The count the client declares at join, capped at `deploy.max_declared_samples`.
    Declared,
}

/// The scenario's `[deploy]` section: settings of the gRPC runtime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    /// Clients that must have joined before round 1 starts (0 = all of the scenario's clients).
    #[serde(default)]
    pub min_clients: usize,
    /// Seconds to wait for `min_clients` before giving up.
    #[serde(default = "default_wait")]
    pub wait_timeout_s: f64,
    /// A client that has not been heard from for this long is disconnected (and dropped from its round).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_timeout_s: f64,
    /// Largest accepted message (payload) in MiB.
    #[serde(default = "default_max_message")]
    pub max_message_mib: usize,
    /// Where the sample counts that weight updates (FedAvg's `n_k`, …) come from: the scenario's
    /// partition (default; a count a client declares is never trusted as a weight), or the counts
    /// clients declare, capped at `max_declared_samples` (deployments where clients bring their own
    /// data).
    #[serde(default)]
    pub sample_counts: SampleCounts,
    /// Cap on a declared sample count when `sample_counts = "declared"` (required then).
    #[serde(default)]
    pub max_declared_samples: u64,
    /// Most network connections the coordinator keeps open at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds a new connection may take to send its first bytes, and a request (other than a result
    /// upload, which is bounded per chunk) to arrive and be answered.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_s: f64,
    /// A connection from which nothing arrives for this many seconds is closed (clients heartbeat
    /// every `heartbeat_timeout_s / 4`).
    #[serde(default = "default_idle_connection")]
    pub idle_connection_s: f64,
    /// A task download the client takes nothing of for this many seconds is abandoned and its
    /// download slot freed (the client may ask again).
    #[serde(default = "default_send_timeout")]
    pub send_timeout_s: f64,
    /// Faults the launcher injects.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    /// In which order an asynchronous run (FedBuff, FedAsync) applies finished updates.
    #[serde(default, skip_serializing_if = "ApplyOrder::is_virtual")]
    pub order: ApplyOrder,
}

/// In which order the coordinator of an asynchronous run applies finished updates (`deploy.order`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyOrder {
    /// By virtual finish time (computed by the coordinator from the `[system]` profiles and the exact
    /// message sizes, never claimed by a client): a deployment gives the simulator's model bit for bit.
    #[default]
    Virtual,
    /// As updates arrive (real deployments): not reproducible, and the summary says so.
    Arrival,
}

impl ApplyOrder {
    fn is_virtual(&self) -> bool {
        *self == ApplyOrder::Virtual
    }
}

fn default_wait() -> f64 {
    120.0
}
fn default_heartbeat() -> f64 {
    10.0
}
fn default_max_message() -> usize {
    1024
}
fn default_max_connections() -> usize {
    1024
}
fn default_request_timeout() -> f64 {
    30.0
}
fn default_idle_connection() -> f64 {
    120.0
}
fn default_send_timeout() -> f64 {
    30.0
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            min_clients: 0,
            wait_timeout_s: default_wait(),
            heartbeat_timeout_s: default_heartbeat(),
            max_message_mib: default_max_message(),
            sample_counts: SampleCounts::Partition,
            max_declared_samples: 0,
            max_connections: default_max_connections(),
            request_timeout_s: default_request_timeout(),
            idle_connection_s: default_idle_connection(),
            send_timeout_s: default_send_timeout(),
            faults: Vec::new(),
            order: ApplyOrder::Virtual,
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
    /// Scripted events on top of the participation model.
    #[serde(default)]
    pub events: EventsConfig,
    /// System heterogeneity on a virtual clock: client compute speeds, bandwidths, latencies
    /// (absent: no virtual clock, unless `events.stragglers` sets the compute part).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<crate::participation::system::SystemConfig>,
    /// Evaluation.
    #[serde(default)]
    pub eval: EvalConfig,
    /// When a round closes.
    #[serde(default)]
    pub round: RoundConfig,
    /// The gRPC runtime.
    #[serde(default)]
    pub deploy: DeployConfig,
    /// Malicious clients and their attack (absent: every client is honest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack: Option<fedsim_algorithms::attack::AttackConfig>,
    /// The data root that relative `[data]` paths are taken under (`--data-dir`, `FEDSIM_DATA`, the
    /// user cache directory; see [`fedsim_data::root`]). Not part of the scenario file, its text or
    /// its hash: each process sets its own, so a coordinator and its clients may keep their data in
    /// different places. `None`: located from the environment when the data is loaded.
    #[serde(skip)]
    pub data_root: Option<DataRoot>,
}

impl Scenario {
    /// Reads a scenario file and applies `key=value` overrides (dotted keys, TOML values).
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self, EngineError> {
        let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, overrides).map_err(|e| match e {
            EngineError::Config { file: None, error } => EngineError::Config {
                file: Some(path.to_path_buf()),
                error,
            },
            other => other,
        })
    }

    /// Parses scenario text and applies `key=value` overrides.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self, EngineError> {
        let document = |e: toml::de::Error| ConfigError::document(e.to_string());
        let scenario: Scenario = if overrides.is_empty() {
            toml::from_str(text).map_err(document)?
        } else {
            let mut table: toml::Table = toml::from_str(text).map_err(document)?;
            for o in overrides {
                apply_override(&mut table, o).map_err(|m| ConfigError::new("--set", m))?;
            }
            let merged =
                toml::to_string(&table).map_err(|e| ConfigError::document(e.to_string()))?;
            toml::from_str(&merged)
                .map_err(|e| ConfigError::document(format!("after --set overrides: {e}")))?
        };
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks values that serde cannot, and that the sections fit together (the strategy's
    /// capabilities against the model and the participation model), naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_values()?;
        self.strategy.validate()?;
        self.model.validate()?;
        self.partition.validate()?;
        let caps = self.strategy.capabilities();
        let kind = self.strategy.kind();
        if caps.needs_supermask_model && !self.model.is_supermask() {
            return Err(ConfigError::new(
                "model.kind",
                format!(
                    "strategy \"{kind}\" needs a supermask model (model.kind = \"supermask_mlp\" or \"supermask_cnn\", or a \"sequential\" stack with model.supermask)"
                ),
            ));
        }
        if caps.needs_supermask_model && self.model.init_from()?.is_some() {
            return Err(ConfigError::new(
                "model.init_from",
                format!(
                    "strategy \"{kind}\" cannot start from a file: its clients rebuild the initial edge scores from model.seed"
                ),
            ));
        }
        if caps.needs_smoothness && !self.model.states_smoothness() {
            return Err(ConfigError::new(
                "model.kind",
                format!(
                    "strategy \"{kind}\" as configured needs the model's smoothness constants L_i, which model.kind = \"logreg_nonconvex\" states; with another model set strategy.step_size (and do not use ef21_w)"
                ),
            ));
        }
        if caps.needs_probabilities && !self.participation.has_probabilities() {
            return Err(ConfigError::new(
                "participation.kind",
                format!(
                    "strategy \"{kind}\" weights by known participation probabilities, which participation.kind = \"bernoulli\", \"markov\" or \"cyclic\" provide"
                ),
            ));
        }
        if let Some(a) = &self.attack {
            a.validate(self.clients, &self.strategy)?;
        }
        self.validate_external()?;
        Ok(())
    }

    /// `data.kind = "external"` (the samples live on the clients): this side can neither evaluate
    /// centrally nor know the clients' sample counts or labels.
    fn validate_external(&self) -> Result<(), ConfigError> {
        if !self.data.is_external() {
            return Ok(());
        }
        if self.eval.central {
            return Err(ConfigError::new(
                "eval.central",
                "must be false with data.kind = \"external\": the coordinator has no test set (evaluate with eval.federated)",
            ));
        }
        if self.deploy.sample_counts == SampleCounts::Partition {
            return Err(ConfigError::new(
                "deploy.sample_counts",
                "must be \"declared\" with data.kind = \"external\": the coordinator has no partition to count samples in",
            ));
        }
        if self.participation.needs_labels() {
            return Err(ConfigError::new(
                "participation.kind",
                "ties participation to labels, which the coordinator does not have with data.kind = \"external\"",
            ));
        }
        Ok(())
    }

    /// The checks of single values (the first part of [`Scenario::validate`]).
    fn validate_values(&self) -> Result<(), ConfigError> {
        if self.name.trim().is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.rounds == 0 {
            return Err(ConfigError::new("rounds", "must be at least 1"));
        }
        if self.clients == 0 {
            return Err(ConfigError::new("clients", "must be at least 1"));
        }
        if self.clients > u32::MAX as usize {
            return Err(ConfigError::new(
                "clients",
                format!("must be at most {}", u32::MAX),
            ));
        }
        self.train.validate()?;
        self.participation.validate_for(self.clients)?;
        if let Some(a) = &self.attack
            && a.redraw_malicious_majority
            && !self.participation.can_redraw()
        {
            return Err(ConfigError::new(
                "attack.redraw_malicious_majority",
                "needs participation.kind = \"uniform\" or \"bernoulli\" (rounds that are independent draws)",
            ));
        }
        self.events.validate(self.clients)?;
        if let Some(system) = &self.system {
            if self.events.stragglers.is_some() {
                return Err(ConfigError::new(
                    "system",
                    "give [system] or events.stragglers, not both ([system] is the general form: events.stragglers is [system] without transfers and latency)",
                ));
            }
            system.validate("system", self.clients)?;
        }
        if self.eval.every == 0 {
            return Err(ConfigError::new("eval.every", "must be at least 1"));
        }
        if let Some(f) = &self.eval.federated {
            f.validate()?;
        }
        if !self.eval.central && self.eval.federated.is_none() {
            return Err(ConfigError::new(
                "eval.central",
                "is false but eval.federated is not set: nothing would evaluate the model",
            ));
        }
        if !self.eval.central && (self.eval.stop_at_targets || !self.eval.targets.is_empty()) {
            return Err(ConfigError::new(
                "eval.targets",
                "target accuracies are central test accuracies; they need eval.central = true",
            ));
        }
        if self.eval.batch_size == 0 {
            return Err(ConfigError::new("eval.batch_size", "must be at least 1"));
        }
        if self.eval.stop_at_targets && self.eval.targets.is_empty() {
            return Err(ConfigError::new(
                "eval.stop_at_targets",
                "needs at least one accuracy in eval.targets",
            ));
        }
        if let Some(t) = self.eval.targets.iter().find(|t| !(0.0..=1.0).contains(*t)) {
            return Err(ConfigError::new(
                "eval.targets",
                format!("must be accuracies in [0, 1], got {t}"),
            ));
        }
        if !(self.round.max_update_norm.is_finite() && self.round.max_update_norm >= 0.0) {
            return Err(ConfigError::new(
                "round.max_update_norm",
                format!(
                    "must be a non-negative number (0 = no bound), got {}",
                    self.round.max_update_norm
                ),
            ));
        }
        if !(self.round.deadline_s.is_finite() && self.round.deadline_s >= 0.0) {
            return Err(ConfigError::new(
                "round.deadline_s",
                format!(
                    "must be a non-negative number, got {}",
                    self.round.deadline_s
                ),
            ));
        }
        let d = &self.deploy;
        if d.min_clients > self.clients {
            return Err(ConfigError::new(
                "deploy.min_clients",
                format!("{} exceeds clients ({})", d.min_clients, self.clients),
            ));
        }
        for (key, v) in [
            ("deploy.wait_timeout_s", d.wait_timeout_s),
            ("deploy.heartbeat_timeout_s", d.heartbeat_timeout_s),
            ("deploy.request_timeout_s", d.request_timeout_s),
            ("deploy.idle_connection_s", d.idle_connection_s),
            ("deploy.send_timeout_s", d.send_timeout_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::new(
                    key,
                    format!("must be a positive number, got {v}"),
                ));
            }
        }
        if d.idle_connection_s <= d.heartbeat_timeout_s / 4.0 {
            return Err(ConfigError::new(
                "deploy.idle_connection_s",
                format!(
                    "{} s would close connections between heartbeats (every heartbeat_timeout_s / 4 = {} s)",
                    d.idle_connection_s,
                    d.heartbeat_timeout_s / 4.0
                ),
            ));
        }
        if d.max_connections == 0 {
            return Err(ConfigError::new(
                "deploy.max_connections",
                "must be at least 1",
            ));
        }
        if d.max_message_mib == 0 {
            return Err(ConfigError::new(
                "deploy.max_message_mib",
                "must be at least 1",
            ));
        }
        if d.sample_counts == SampleCounts::Declared && d.max_declared_samples == 0 {
            return Err(ConfigError::new(
                "deploy.max_declared_samples",
                "must be set (at least 1) with deploy.sample_counts = \"declared\": a declared count is used as a weight only up to a stated cap",
            ));
        }
        for (i, f) in d.faults.iter().enumerate() {
            if f.round == 0 || f.round > self.rounds {
                return Err(ConfigError::new(
                    format!("deploy.faults[{i}].round"),
                    format!("must be in 1..={}, got {}", self.rounds, f.round),
                ));
            }
            if !(0.0..=1.0).contains(&f.kill_clients) {
                return Err(ConfigError::new(
                    format!("deploy.faults[{i}].kill_clients"),
                    format!("must be a fraction in [0, 1], got {}", f.kill_clients),
                ));
            }
            if let Some(ids) = &f.late_clients {
                let key = format!("deploy.faults[{i}].late_clients");
                let parsed = crate::participation::events::parse_id_list(ids)
                    .map_err(|m| ConfigError::new(key.clone(), m))?;
                if let Some(bad) = parsed.iter().find(|&&c| c as usize >= self.clients) {
                    return Err(ConfigError::new(
                        key,
                        format!("client {bad} is out of range (clients = {})", self.clients),
                    ));
                }
                if self.round.deadline_s <= 0.0 {
                    return Err(ConfigError::new(
                        key,
                        "needs a round deadline (round.deadline_s > 0): late means after it",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Builds the strategy, wrapped in [`fedsim_algorithms::attack::Attacked`] when the scenario has an `[attack]`
    /// section. Every runtime builds its strategy here, so server and client halves agree.
    pub fn build_strategy(&self) -> Result<Box<dyn crate::Strategy>, ConfigError> {
        let inner = self.strategy.validate()?.build(());
        Ok(match &self.attack {
            Some(a) => Box::new(fedsim_algorithms::attack::Attacked::new(
                inner,
                a.clone(),
                self.clients,
                &self.strategy,
            )),
            None => inner,
        })
    }

    /// Loads the scenario's data set and splits it among its clients: the one entry point every
    /// runtime (simulator, coordinator, client process) loads federated data through, so all of them
    /// see the same partition.
    pub fn load_data(&self) -> Result<fedsim_data::FederatedData, EngineError> {
        let (root, data) = self.resolved_data()?;
        fedsim_data::load_federated(&data, &self.partition, self.clients, self.seed)
            .map_err(|e| root.explain(&self.data, e).into())
    }

    /// The data root ([`Scenario::data_root`], else located from the environment) and the `[data]`
    /// section with its relative paths taken under it. A path that does not exist is an error that
    /// says how to get the data (`fedsim data fetch NAME`) or where to put it.
    pub fn resolved_data(&self) -> Result<(DataRoot, DataSpec), EngineError> {
        let root = match &self.data_root {
            Some(root) => root.clone(),
            // Synthetic data reads no file: it needs no root, even where none can be located.
            None if self.data.paths().is_empty() => DataRoot::at("."),
            None => DataRoot::locate(None)?,
        };
        let data = root.resolve(&self.data)?;
        Ok((root, data))
    }

    /// The share of the clients `clients` (partition indices) of [`Self::load_data`]: the same partition,
    /// but only those clients' training samples are held (no test set). A client process loads its data
    /// here, so it holds its own clients' samples rather than the whole data set.
    pub fn load_hosted_data(
        &self,
        clients: &[usize],
    ) -> Result<fedsim_data::HostedPartitions, EngineError> {
        let (root, data) = self.resolved_data()?;
        fedsim_data::load_hosted(&data, &self.partition, self.clients, self.seed, clients)
            .map_err(|e| root.explain(&self.data, e).into())
    }

    /// The input the model is built for, read as cheaply as the data allows: the stated input of
    /// `data.kind = "external"`, else the columns, classes and image shape of the training set with no
    /// client's rows decoded (MNIST, CIFAR, SVHN and image folders then read labels and headers only;
    /// other data sets are loaded and dropped). For commands that need the architecture, not the data.
    pub fn input_spec(&self) -> Result<fedsim_types::InputSpec, EngineError> {
        if let Some(external) = self.data.external_input() {
            return Ok(external?.input_spec());
        }
        Ok(self.load_hosted_data(&[])?.train.input_spec())
    }

    /// Clients that must join before the first round (the gRPC runtime).
    pub fn min_clients(&self) -> usize {
        if self.deploy.min_clients == 0 {
            self.clients
        } else {
            self.deploy.min_clients
        }
    }

    /// SHA-256 of the resolved scenario, hex: lets a client check it runs the coordinator's scenario.
    pub fn hash(&self) -> String {
        crate::report::sha256_hex(self.to_toml().as_bytes())
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
    fn bad_values_carry_their_key_path() {
        let cases: &[(&[&str], &str, &str)] = &[
            (&["train.lr=-1"], "train.lr", "must be a positive number"),
            (
                &["train={lr=0.1, epochs=0}"],
                "train.epochs",
                "must be at least 1",
            ),
            (
                &["participation={kind=\"bernoulli\", p=2}"],
                "participation.p",
                "must be in (0, 1]",
            ),
            (
                &[
                    "participation={kind=\"bernoulli\", p=[0.5, 0.5, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]}",
                ],
                "participation.p[2]",
                "must be in (0, 1]",
            ),
            (
                &["participation={kind=\"uniform\", fraction=3}"],
                "participation.fraction",
                "must be in [0, 1]",
            ),
            (&["eval.every=0"], "eval.every", "must be at least 1"),
            (&["rounds=0"], "rounds", "must be at least 1"),
            (&["name=\" \""], "name", "must not be empty"),
            (
                &["deploy.min_clients=11"],
                "deploy.min_clients",
                "exceeds clients",
            ),
            (
                &["deploy.faults=[{round=1}, {round=2}, {round=9}]"],
                "deploy.faults[2].round",
                "must be in 1..=3",
            ),
            (
                &["events.outages=[{clients=\"0-3\", start=1}, {fraction=2, start=1}]"],
                "events.outages[1].fraction",
                "must be in [0, 1]",
            ),
            (&["events.dropout=1"], "events.dropout", "must be in [0, 1)"),
            (
                &["attack={kind=\"scaling\", fraction=1.5}"],
                "attack.fraction",
                "must be in [0, 1]",
            ),
            (
                &["attack={kind=\"scaling\", clients=[10]}"],
                "attack.clients",
                "does not exist",
            ),
        ];
        for (sets, key, message) in cases {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            match Scenario::parse(MINIMAL, &sets) {
                Err(EngineError::Config { error, .. }) => {
                    assert_eq!(error.key, *key, "{sets:?}: {error}");
                    assert!(error.message.contains(message), "{sets:?}: {error}");
                    assert_eq!(error.to_string(), format!("{key}: {}", error.message));
                }
                other => panic!("{sets:?}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn relative_data_paths_are_taken_under_the_data_root_which_the_hash_ignores() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("libsvm")).unwrap();
        std::fs::write(
            root.path().join("libsvm/x.svm"),
            "1 1:1\n2 2:1\n1 1:0.5\n2 2:2\n",
        )
        .unwrap();
        let text = MINIMAL.replace(
            "kind = \"synthetic\"",
            "kind = \"libsvm\"\npath = \"libsvm/x.svm\"",
        );
        let mut s = Scenario::parse(
            &text,
            &["partition.scheme=\"iid\"".into(), "clients=2".into()],
        )
        .unwrap();
        let (toml, hash) = (s.to_toml(), s.hash());
        s.data_root = Some(DataRoot::at(root.path()));
        assert_eq!((s.to_toml(), s.hash()), (toml, hash));
        assert_eq!(s.load_data().unwrap().train.len(), 4);
        // Elsewhere, the error says where it looked and how to get the data.
        let empty = tempfile::tempdir().unwrap();
        s.data_root = Some(DataRoot::at(empty.path()));
        let e = s.load_data().unwrap_err().to_string();
        assert!(
            e.contains(&empty.path().join("libsvm/x.svm").display().to_string())
                && e.contains("does not exist"),
            "{e}"
        );
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

    #[test]
    fn frl_attack_and_aggregator_keys() {
        let frl = [
            "model={kind=\"supermask_mlp\", hidden=[8]}".to_string(),
            "strategy={kind=\"frl\"}".to_string(),
        ];
        let s = Scenario::parse(MINIMAL, &frl).unwrap();
        assert_eq!(Scenario::parse(&s.to_toml(), &[]).unwrap(), s);
        let e = Scenario::parse(MINIMAL, &["strategy={kind=\"frl\"}".into()]).unwrap_err();
        assert!(e.to_string().contains("supermask"), "{e}");
        let mut with_attack = frl.to_vec();
        with_attack.push("attack={kind=\"rank_reversal\", fraction=0.2, start_round=3}".into());
        let s = Scenario::parse(MINIMAL, &with_attack).unwrap();
        assert_eq!(s.attack.as_ref().map(|a| a.start_round), Some(3));
        assert_eq!(Scenario::parse(&s.to_toml(), &[]).unwrap(), s);
        let e = Scenario::parse(MINIMAL, &["attack={kind=\"scaling\", fraction=1.5}".into()])
            .unwrap_err();
        assert!(e.to_string().contains("attack.fraction"), "{e}");
        let e = Scenario::parse(
            MINIMAL,
            &["attack={kind=\"scaling\", fraction=0.1, power=3}".into()],
        )
        .unwrap_err();
        assert!(e.to_string().contains("power"), "{e}");
        let redraw = "attack={kind=\"agr_tailored\", fraction=0.2, knowledge=\"full\", redraw_malicious_majority=true}";
        let s = Scenario::parse(MINIMAL, &[redraw.into()]).unwrap();
        assert!(
            s.attack
                .as_ref()
                .is_some_and(|a| a.redraw_malicious_majority)
        );
        assert_eq!(Scenario::parse(&s.to_toml(), &[]).unwrap(), s);
        let e = Scenario::parse(
            MINIMAL,
            &[
                redraw.into(),
                "participation={kind=\"markov\", p=0.5, q=0.1}".into(),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("redraw_malicious_majority"), "{e}");
        let e = Scenario::parse(
            MINIMAL,
            &["attack={kind=\"agr_tailored\", fraction=0.2, knowledge=\"most\"}".into()],
        )
        .unwrap_err();
        assert!(e.to_string().contains("knowledge"), "{e}");
        let s = Scenario::parse(
            MINIMAL,
            &[
                "strategy={kind=\"fedavg\", aggregator={kind=\"trimmed_mean\", trim=\"oracle\"}}"
                    .into(),
            ],
        )
        .unwrap();
        assert_eq!(Scenario::parse(&s.to_toml(), &[]).unwrap(), s);
        assert!(
            s.build_strategy()
                .unwrap()
                .name()
                .contains("trimmed_mean(b=oracle)")
        );
        let e = Scenario::parse(
            MINIMAL,
            &[
                "strategy={kind=\"fedavg\", aggregator={kind=\"norm_clipping\", max_norm=-1}}"
                    .into(),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_norm"), "{e}");
    }
}
