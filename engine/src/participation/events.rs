//! Scripted events on top of any participation model (the scenario's `[events]` section), and the
//! [`Scheduler`] that turns model + events into each round's plan.
//!
//! Semantics, applied in this order every round:
//! 1. *Availability*: clients in an outage window, clients before their join round and clients after
//!    their leave round are not available (on top of the runtime's own connectivity).
//! 2. *Selection*: the participation model picks among the available clients.
//! 3. *Dropout*: each selected client independently never reports with probability `dropout`; selected
//!    clients in a `drops` window never report.
//! 4. *Stragglers*: a selected client with speed factor s needs `samples / (samples_per_s · s)` virtual
//!    seconds for its local work; past `deadline_s` it is dropped, or with `partial_work = true` it
//!    reports the steps it finished in time (dropped if none).
//! 5. *Quorum* (`[round] quorum = k`): only the k clients that finish first in virtual time (ties by id)
//!    report; the others are dropped.
//!
//! All of it is computed by the round engine, so the simulator and the gRPC coordinator apply the same
//! events to the same clients.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use fedsim_algorithms::Work;

use super::Participation;
use super::system::{Online, Profile, SystemConfig};
use crate::ClientId;
use fedsim_types::ConfigError;
use fedsim_types::rng::{Purpose, unit};

/// A set of clients: explicit ids (`clients = "0-9,12"`) or a seed-chosen fraction (`fraction = 0.3`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// First affected round (1-based, inclusive).
    #[serde(default = "one")]
    pub start: u64,
    /// First unaffected round (1-based, exclusive); none = until the end.
    #[serde(default)]
    pub end: Option<u64>,
    /// Affected client ids: `"0-9,12"`.
    #[serde(default)]
    pub clients: Option<String>,
    /// Affected fraction of all clients, chosen from the seed.
    #[serde(default)]
    pub fraction: Option<f64>,
}

fn one() -> u64 {
    1
}

/// Per-client speed factors of the straggler model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SpeedSpec {
    /// The same speed for everyone.
    Constant(f64),
    /// One factor per client.
    List(Vec<f64>),
    /// Drawn per client.
    Dist(SpeedDist),
}

/// Distributions of speed factors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum SpeedDist {
    /// exp(N(0, sigma²)).
    Lognormal {
        /// Standard deviation of the log.
        sigma: f64,
    },
    /// Uniform in [low, high].
    Uniform {
        /// Lower bound.
        low: f64,
        /// Upper bound.
        high: f64,
    },
}

/// The straggler model: virtual compute time against a per-round deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stragglers {
    /// Speed factor per client (1 = nominal).
    #[serde(default = "default_speed")]
    pub speed: SpeedSpec,
    /// Samples per virtual second of a client with speed 1.
    #[serde(default = "default_rate")]
    pub samples_per_s: f64,
    /// Virtual deadline of every round, seconds (0 = none).
    #[serde(default)]
    pub deadline_s: f64,
    /// Clients past the deadline report the steps they finished instead of being dropped.
    #[serde(default)]
    pub partial_work: bool,
}

fn default_speed() -> SpeedSpec {
    SpeedSpec::Constant(1.0)
}
fn default_rate() -> f64 {
    1000.0
}

/// The scenario's `[events]` section.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Probability that a selected client never reports.
    #[serde(default)]
    pub dropout: f64,
    /// Outage windows: `[[events.outages]]` with `start`, `end`, and `clients` or `fraction`.
    #[serde(default)]
    pub outages: Vec<Window>,
    /// Late joins: the clients are unavailable before `start`.
    #[serde(default)]
    pub joins: Vec<Window>,
    /// Departures: the clients are unavailable from `start` on, for good.
    #[serde(default)]
    pub leaves: Vec<Window>,
    /// Scripted dropouts: clients in the window that are selected never report (unlike an outage,
    /// they are selected first, as a client that fails mid-round is).
    #[serde(default)]
    pub drops: Vec<Window>,
    /// The straggler model.
    #[serde(default)]
    pub stragglers: Option<Stragglers>,
}

/// Parses `0-9,12` into ids.
pub fn parse_id_list(s: &str) -> Result<Vec<ClientId>, String> {
    let mut ids = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| {
            x.trim()
                .parse::<ClientId>()
                .map_err(|_| format!("`{x}` is not a client id"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty range {part}"));
                }
                ids.extend(a..=b);
            }
            None => ids.push(num(part)?),
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn check_window(key: &str, w: &Window, num_clients: usize) -> Result<(), ConfigError> {
    let err = |sub: &str, msg: String| ConfigError::new(format!("{key}{sub}"), msg);
    match (&w.clients, w.fraction) {
        (Some(_), Some(_)) => return Err(err("", "give clients or fraction, not both".into())),
        (None, None) => return Err(err("", "give clients or fraction".into())),
        (Some(s), None) => {
            let ids = parse_id_list(s).map_err(|e| err(".clients", e))?;
            if let Some(c) = ids.iter().find(|&&c| c as usize >= num_clients) {
                return Err(err(
                    ".clients",
                    format!("client {c} out of range (the scenario has {num_clients} clients)"),
                ));
            }
        }
        (None, Some(f)) if !(0.0..=1.0).contains(&f) => {
            return Err(err(".fraction", format!("must be in [0, 1], got {f}")));
        }
        _ => {}
    }
    if w.start == 0 {
        return Err(err(".start", "rounds are 1-based".into()));
    }
    if w.end.is_some_and(|e| e < w.start) {
        return Err(err("", "end is before start".into()));
    }
    Ok(())
}

impl EventsConfig {
    /// Checks values, naming the bad key.
    pub fn validate(&self, num_clients: usize) -> Result<(), ConfigError> {
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ConfigError::new(
                "events.dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        for (i, w) in self.outages.iter().enumerate() {
            check_window(&format!("events.outages[{i}]"), w, num_clients)?;
        }
        for (i, w) in self.joins.iter().enumerate() {
            check_window(&format!("events.joins[{i}]"), w, num_clients)?;
        }
        for (i, w) in self.leaves.iter().enumerate() {
            check_window(&format!("events.leaves[{i}]"), w, num_clients)?;
        }
        for (i, w) in self.drops.iter().enumerate() {
            check_window(&format!("events.drops[{i}]"), w, num_clients)?;
        }
        if let Some(s) = &self.stragglers {
            SystemConfig::from(s).validate("events.stragglers", num_clients)?;
        }
        Ok(())
    }

    fn has_availability_events(&self) -> bool {
        !(self.outages.is_empty() && self.joins.is_empty() && self.leaves.is_empty())
    }
}

/// Checks a speed specification (`key` names it in errors).
pub(super) fn check_speed(
    key: &str,
    speed: &SpeedSpec,
    num_clients: usize,
) -> Result<(), ConfigError> {
    match speed {
        SpeedSpec::Constant(v) if !(v.is_finite() && *v > 0.0) => {
            Err(ConfigError::new(key, format!("must be positive, got {v}")))
        }
        SpeedSpec::List(v)
            if v.len() != num_clients || v.iter().any(|x| !(x.is_finite() && *x > 0.0)) =>
        {
            Err(ConfigError::new(
                key,
                format!("must list {num_clients} positive factors"),
            ))
        }
        SpeedSpec::Dist(SpeedDist::Lognormal { sigma })
            if !(sigma.is_finite() && *sigma >= 0.0) =>
        {
            Err(ConfigError::new(
                format!("{key}.sigma"),
                format!("must be non-negative, got {sigma}"),
            ))
        }
        SpeedSpec::Dist(SpeedDist::Uniform { low, high }) if !(*low > 0.0 && low <= high) => {
            Err(ConfigError::new(key, "need 0 < low <= high"))
        }
        _ => Ok(()),
    }
}

/// A resolved client set: explicit sorted ids, or a fraction tested per client.
#[derive(Debug, Clone)]
enum Members {
    Ids(Vec<ClientId>),
    Fraction(f64, u64),
}

impl Members {
    fn of(w: &Window, salt: u64) -> Self {
        match (&w.clients, w.fraction) {
            (Some(s), _) => Members::Ids(parse_id_list(s).unwrap_or_default()),
            (None, Some(f)) => Members::Fraction(f, salt),
            (None, None) => Members::Ids(Vec::new()),
        }
    }

    fn contains(&self, seed: u64, c: ClientId) -> bool {
        match self {
            Members::Ids(v) => v.binary_search(&c).is_ok(),
            Members::Fraction(f, salt) => {
                unit(seed, Purpose::Events, u64::MAX, c as u64, *salt) < *f
            }
        }
    }
}

/// What a round will look like before any client runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundPlan {
    /// Clients the participation model selected, ascending.
    pub selected: Vec<ClientId>,
    /// Selected clients that will not report, with the scripted reason.
    pub dropped: Vec<(ClientId, String)>,
    /// Step budgets of partially working stragglers.
    pub max_steps: BTreeMap<ClientId, usize>,
    /// Whether the round lasts until the virtual deadline: a selected client is dropped or cut short
    /// by it.
    pub waits_for_deadline: bool,
    /// Virtual seconds the federation waits with nobody online (`[system] online`).
    pub idle_s: f64,
}

impl RoundPlan {
    /// Selected clients that are expected to run (selected minus dropped), ascending.
    pub fn to_run(&self) -> Vec<ClientId> {
        let dropped: std::collections::HashSet<ClientId> =
            self.dropped.iter().map(|(c, _)| *c).collect();
        self.selected
            .iter()
            .copied()
            .filter(|c| !dropped.contains(c))
            .collect()
    }
}

/// Participation model plus scripted events: plans each round.
pub struct Scheduler {
    model: Box<dyn Participation>,
    events: EventsConfig,
    seed: u64,
    quorum: usize,
    outages: Vec<(u64, Option<u64>, Members)>,
    joins: Vec<(u64, Members)>,
    leaves: Vec<(u64, Members)>,
    drops: Vec<(u64, Option<u64>, Members)>,
    /// The system model (`[system]`, or `[events] stragglers`) and every client's profile.
    system: Option<(SystemConfig, Vec<Profile>)>,
    /// Message sizes the plan times transfers with: the last round's broadcast and largest update.
    bytes: (u64, u64),
    /// Online intervals in virtual seconds (`[system] online`).
    online: Option<Online>,
    /// The virtual clock at the start of the round being planned.
    clock: f64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("events", &self.events)
            .finish()
    }
}

impl Scheduler {
    /// A scheduler over `model` with `events`, for `num_clients` clients; `quorum` from `[round]`.
    pub fn new(
        model: Box<dyn Participation>,
        events: EventsConfig,
        num_clients: usize,
        seed: u64,
        quorum: usize,
    ) -> Self {
        let outages = events
            .outages
            .iter()
            .enumerate()
            .map(|(i, w)| (w.start, w.end, Members::of(w, 100 + i as u64)))
            .collect();
        let joins = events
            .joins
            .iter()
            .enumerate()
            .map(|(i, w)| (w.start, Members::of(w, 200 + i as u64)))
            .collect();
        let leaves = events
            .leaves
            .iter()
            .enumerate()
            .map(|(i, w)| (w.start, Members::of(w, 300 + i as u64)))
            .collect();
        let drops = events
            .drops
            .iter()
            .enumerate()
            .map(|(i, w)| (w.start, w.end, Members::of(w, 400 + i as u64)))
            .collect();
        // Stragglers are the system model without transfers; their profiles cannot fail to build.
        let system = events.stragglers.as_ref().map(|s| {
            let cfg = SystemConfig::from(s);
            let profiles = cfg.profiles(num_clients, seed).unwrap_or_default();
            (cfg, profiles)
        });
        Self {
            model,
            events,
            seed,
            quorum,
            outages,
            joins,
            leaves,
            drops,
            system,
            bytes: (0, 0),
            online: None,
            clock: 0.0,
        }
    }

    /// The virtual clock at the start of the next round (online intervals are looked up at it).
    pub fn set_clock(&mut self, t: f64) {
        self.clock = t;
    }

    /// Uses the `[system]` model: every client's profile is built (or read from its trace) here.
    pub fn set_system(
        &mut self,
        cfg: &SystemConfig,
        num_clients: usize,
    ) -> Result<(), ConfigError> {
        self.system = Some((cfg.clone(), cfg.profiles(num_clients, self.seed)?));
        if let Some(path) = &cfg.online {
            self.online = Some(Online::read(path, num_clients)?);
        }
        Ok(())
    }

    /// The message sizes the next plans time transfers with (the runtime's exact encoded sizes of the
    /// last round: its broadcast and its largest update).
    pub fn set_message_bytes(&mut self, down: u64, up: u64) {
        self.bytes = (down, up);
    }

    /// Client `c`'s virtual finish time in `round` (0-based) for `samples` samples of local work and
    /// the exact message sizes; `None` without a system model.
    pub fn finish_s(
        &self,
        round: u64,
        c: ClientId,
        samples: usize,
        down: u64,
        up: u64,
    ) -> Option<f64> {
        let (cfg, profiles) = self.system.as_ref()?;
        let jitter = cfg.jitter_factor(self.seed, round, c as u64);
        Some(profiles[c as usize].finish_s(samples, jitter, down, up))
    }

    /// Whether scripted events or online intervals can make an available client unreachable.
    pub fn filters_availability(&self) -> bool {
        self.events.has_availability_events() || self.online.is_some()
    }

    /// When client `c`, online at virtual time `t`, goes offline (`[system] online`; infinite without
    /// online intervals or for a client that is always online).
    pub fn offline_at(&self, c: ClientId, t: f64) -> f64 {
        self.online.as_ref().map_or(f64::INFINITY, |o| {
            o.online_until(c as usize, t).unwrap_or(t)
        })
    }

    /// The first virtual time after `t` at which a client comes online (`[system] online`), if any.
    pub fn next_online_after(&self, t: f64) -> Option<f64> {
        self.online.as_ref()?.next_start_after(t)
    }

    /// Whether a system model (`[system]` or `events.stragglers`) runs a virtual clock.
    pub fn has_system(&self) -> bool {
        self.system.is_some()
    }

    /// The system model's virtual round deadline in seconds (0 = none, or no model).
    pub fn deadline_s(&self) -> f64 {
        self.system.as_ref().map_or(0.0, |(cfg, _)| cfg.deadline_s)
    }

    /// Stops choosing a quorum when rounds are planned (every selected client runs; the caller closes
    /// the round at the first `quorum` arrivals).
    pub fn quorum_by_arrival(&mut self) {
        self.quorum = 0;
    }

    /// The participation model.
    pub fn model(&self) -> &dyn Participation {
        self.model.as_ref()
    }

    /// Mutable access to the participation model (for checkpoints).
    pub fn model_mut(&mut self) -> &mut dyn Participation {
        self.model.as_mut()
    }

    /// The clients of `available` that the scripted events leave reachable in `round` (0-based):
    /// neither in an outage, nor not yet joined, nor gone.
    pub fn reachable(&self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        available
            .iter()
            .copied()
            .filter(|&c| !self.hidden(c, round + 1) && self.is_online(c))
            .collect()
    }

    /// Whether client `c` is online at the current virtual clock (always, without online intervals).
    fn is_online(&self, c: ClientId) -> bool {
        self.online
            .as_ref()
            .is_none_or(|o| o.online_until(c as usize, self.clock).is_some())
    }

    /// Whether scripted events make client `c` unavailable in 1-based round `r`.
    fn hidden(&self, c: ClientId, r: u64) -> bool {
        self.outages
            .iter()
            .any(|(a, b, m)| r >= *a && b.is_none_or(|b| r < b) && m.contains(self.seed, c))
            || self
                .joins
                .iter()
                .any(|(a, m)| r < *a && m.contains(self.seed, c))
            || self
                .leaves
                .iter()
                .any(|(a, m)| r >= *a && m.contains(self.seed, c))
    }

    /// Plans `round` (0-based): availability, selection, dropouts, stragglers and quorum. `work` gives a
    /// client's full local work.
    pub fn plan(
        &mut self,
        round: u64,
        available: &[ClientId],
        work: &dyn Fn(ClientId) -> Work,
    ) -> RoundPlan {
        let filtered;
        let available = if self.events.has_availability_events() || self.online.is_some() {
            filtered = self.reachable(round, available);
            &filtered[..]
        } else {
            available
        };
        let selected = self.model.select(round, available);
        let mut plan = RoundPlan {
            selected,
            ..RoundPlan::default()
        };
        if let (Some(online), true) = (&self.online, available.is_empty()) {
            // Nobody is online: the federation waits for the next client to come online.
            plan.idle_s = online
                .next_start_after(self.clock)
                .map_or(0.0, |t| t - self.clock);
        }
        let mut finish: Vec<(f64, ClientId)> = Vec::new();
        for &c in &plan.selected {
            if self.events.dropout > 0.0
                && unit(self.seed, Purpose::Events, round, c as u64, 10) < self.events.dropout
            {
                plan.dropped.push((c, "scripted dropout".into()));
                plan.waits_for_deadline |= self.deadline_s() > 0.0;
                continue;
            }
            let r = round + 1;
            if self
                .drops
                .iter()
                .any(|(a, b, m)| r >= *a && b.is_none_or(|b| r < b) && m.contains(self.seed, c))
            {
                plan.dropped.push((c, "scripted drop".into()));
                plan.waits_for_deadline |= self.deadline_s() > 0.0;
                continue;
            }
            let w = work(c);
            let (mut t, rate, net, deadline, partial) = match &self.system {
                Some((cfg, profiles)) => {
                    let p = &profiles[c as usize];
                    let jitter = cfg.jitter_factor(self.seed, round, c as u64);
                    let net = p.network_s(self.bytes.0, self.bytes.1);
                    (
                        p.compute_s(w.samples, jitter) + net,
                        p.samples_per_s / jitter,
                        net,
                        cfg.deadline_s,
                        cfg.partial_work,
                    )
                }
                None => (w.samples as f64, 1.0, 0.0, 0.0, false),
            };
            if deadline > 0.0 && t > deadline {
                let per_step = if w.steps == 0 {
                    0.0
                } else {
                    w.samples as f64 / w.steps as f64
                };
                let fit = if per_step > 0.0 && deadline > net {
                    ((deadline - net) * rate / per_step).floor() as usize
                } else {
                    0
                };
                plan.waits_for_deadline = true;
                if partial && fit > 0 {
                    plan.max_steps.insert(c, fit.min(w.steps));
                    t = deadline;
                } else {
                    plan.dropped.push((
                        c,
                        format!("straggler: needs {t:.1} virtual s, deadline {deadline} s"),
                    ));
                    continue;
                }
            }
            if let Some(end) = self
                .online
                .as_ref()
                .and_then(|o| o.online_until(c as usize, self.clock))
                .filter(|&end| self.clock + t > end)
            {
                plan.dropped.push((
                    c,
                    format!("went offline at {end} virtual s before it finished"),
                ));
                plan.max_steps.remove(&c);
                continue;
            }
            finish.push((t, c));
        }
        if self.quorum > 0 && finish.len() > self.quorum {
            finish.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, c) in &finish[self.quorum..] {
                plan.dropped
                    .push((c, "round closed at quorum before it finished".into()));
                plan.max_steps.remove(&c);
            }
        }
        plan.dropped.sort_by_key(|(c, _)| *c);
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::participation::models::Full;

    fn work(_: ClientId) -> Work {
        Work {
            steps: 10,
            samples: 100,
        }
    }

    fn sched(events: EventsConfig, n: usize, quorum: usize) -> Scheduler {
        events.validate(n).unwrap();
        Scheduler::new(Box::new(Full), events, n, 1, quorum)
    }

    #[test]
    fn scripted_drops_select_then_drop() {
        let mut s = sched(
            EventsConfig {
                drops: vec![Window {
                    start: 2,
                    end: Some(3),
                    clients: Some("1,3".into()),
                    fraction: None,
                }],
                ..EventsConfig::default()
            },
            4,
            0,
        );
        let all = [0, 1, 2, 3];
        let p1 = s.plan(0, &all, &work);
        assert!(p1.dropped.is_empty());
        let p2 = s.plan(1, &all, &work);
        assert_eq!(
            p2.selected,
            vec![0, 1, 2, 3],
            "dropped clients are selected first"
        );
        let ids: Vec<_> = p2.dropped.iter().map(|(c, _)| *c).collect();
        assert_eq!(ids, vec![1, 3]);
        assert!(s.plan(2, &all, &work).dropped.is_empty());
    }

    #[test]
    fn outages_joins_and_leaves_hide_clients() {
        let ev = EventsConfig {
            outages: vec![Window {
                start: 2,
                end: Some(4),
                clients: Some("0-1".into()),
                fraction: None,
            }],
            joins: vec![Window {
                start: 3,
                end: None,
                clients: Some("5".into()),
                fraction: None,
            }],
            leaves: vec![Window {
                start: 4,
                end: None,
                clients: Some("4".into()),
                fraction: None,
            }],
            ..Default::default()
        };
        let mut s = sched(ev, 6, 0);
        let all: Vec<ClientId> = (0..6).collect();
        assert_eq!(s.plan(0, &all, &work).selected, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.plan(1, &all, &work).selected, vec![2, 3, 4]);
        assert_eq!(s.plan(2, &all, &work).selected, vec![2, 3, 4, 5]);
        assert_eq!(s.plan(3, &all, &work).selected, vec![0, 1, 2, 3, 5]);
    }

    #[test]
    fn dropout_rate_is_respected() {
        let mut s = sched(
            EventsConfig {
                dropout: 0.3,
                ..Default::default()
            },
            1000,
            0,
        );
        let all: Vec<ClientId> = (0..1000).collect();
        let p = s.plan(0, &all, &work);
        let rate = p.dropped.len() as f64 / 1000.0;
        assert!((rate - 0.3).abs() < 0.05, "{rate}");
        assert_eq!(
            p.selected.len(),
            1000,
            "dropped clients were still selected"
        );
    }

    #[test]
    fn stragglers_drop_or_report_partial_work() {
        let st = |partial| Stragglers {
            speed: SpeedSpec::List(vec![1.0, 0.5, 0.05]),
            samples_per_s: 100.0,
            deadline_s: 1.5,
            partial_work: partial,
        };
        let mut s = sched(
            EventsConfig {
                stragglers: Some(st(false)),
                ..Default::default()
            },
            3,
            0,
        );
        let p = s.plan(0, &[0, 1, 2], &work);
        assert_eq!(p.to_run(), vec![0]);
        let mut s = sched(
            EventsConfig {
                stragglers: Some(st(true)),
                ..Default::default()
            },
            3,
            0,
        );
        let p = s.plan(0, &[0, 1, 2], &work);
        assert_eq!(p.to_run(), vec![0, 1]);
        assert_eq!(
            p.max_steps.get(&1),
            Some(&7),
            "0.5·100·1.5 = 75 samples = 7 steps of 10"
        );
        assert_eq!(p.dropped.len(), 1, "client 2 finishes no step in time");
    }

    #[test]
    fn quorum_keeps_the_fastest() {
        let ev = EventsConfig {
            stragglers: Some(Stragglers {
                speed: SpeedSpec::List(vec![0.5, 2.0, 1.0, 4.0]),
                samples_per_s: 10.0,
                deadline_s: 0.0,
                partial_work: false,
            }),
            ..Default::default()
        };
        let mut s = sched(ev, 4, 2);
        assert_eq!(s.plan(0, &[0, 1, 2, 3], &work).to_run(), vec![1, 3]);
    }
}
