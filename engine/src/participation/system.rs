//! System heterogeneity on a virtual clock (the scenario's `[system]` section): every client has a
//! profile (compute speed, download and upload bandwidth, latency), and a round's work takes it
//!
//! `latency + bytes_down / download + samples / (samples_per_s · jitter) + bytes_up / upload`
//!
//! virtual seconds, with the runtime's exact encoded message sizes. The round engine closes rounds by
//! these times (deadline, quorum) and records each round's virtual duration; `[events] stragglers` is
//! the special case of unlimited bandwidth and no latency.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::events::{SpeedDist, SpeedSpec, Stragglers};
use fedsim_types::ConfigError;
use fedsim_types::rng::{Purpose, unit};

/// A per-client rate (bytes per second): one number for everyone, one per client, or drawn per client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Rate {
    /// The same rate for everyone.
    Constant(f64),
    /// One rate per client.
    List(Vec<f64>),
    /// Drawn per client.
    Dist(RateDist),
}

/// Distributions of per-client rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateDist {
    /// `median · exp(N(0, sigma²))`: heavy-tailed, as measured device bandwidths are.
    Lognormal {
        /// The median rate.
        median: f64,
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

/// The scenario's `[system]` section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// Samples per virtual second of local work of a client with speed factor 1.
    #[serde(default = "default_rate")]
    pub samples_per_s: f64,
    /// Speed factor per client (1 = nominal).
    #[serde(default = "default_speed")]
    pub speed: SpeedSpec,
    /// Download bandwidth per client, bytes per second (unlimited when absent).
    #[serde(default)]
    pub download_bps: Option<Rate>,
    /// Upload bandwidth per client, bytes per second (unlimited when absent).
    #[serde(default)]
    pub upload_bps: Option<Rate>,
    /// Latency of every client, seconds (added once per round).
    #[serde(default)]
    pub latency_s: f64,
    /// Per-round compute jitter: a client's work takes `exp(jitter · z)` times as long in a round, z
    /// standard normal drawn from (seed, round, client).
    #[serde(default)]
    pub jitter: f64,
    /// A CSV trace with one row per client (`client,samples_per_s,download_bps,upload_bps,latency_s`;
    /// 0 bandwidth = unlimited), replacing the other profile keys.
    #[serde(default)]
    pub trace: Option<PathBuf>,
    /// Online intervals in virtual seconds (FedScale-style availability): a CSV with a header and rows
    /// `client,start_s,end_s` (any number per client). A listed client is available only while the
    /// virtual clock is inside one of its intervals, and a client whose round would end after its
    /// interval does not report; clients without rows are always online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<PathBuf>,
    /// Virtual deadline of every round, seconds (0 = none).
    #[serde(default)]
    pub deadline_s: f64,
    /// Clients past the deadline report the steps they finished in time instead of being dropped.
    #[serde(default)]
    pub partial_work: bool,
}

fn default_speed() -> SpeedSpec {
    SpeedSpec::Constant(1.0)
}
fn default_rate() -> f64 {
    1000.0
}

impl From<&Stragglers> for SystemConfig {
    /// `[events] stragglers`: compute only (unlimited bandwidth, no latency).
    fn from(s: &Stragglers) -> Self {
        Self {
            samples_per_s: s.samples_per_s,
            speed: s.speed.clone(),
            download_bps: None,
            upload_bps: None,
            latency_s: 0.0,
            jitter: 0.0,
            trace: None,
            online: None,
            deadline_s: s.deadline_s,
            partial_work: s.partial_work,
        }
    }
}

/// One client's system profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    /// Samples per virtual second.
    pub samples_per_s: f64,
    /// Download bytes per second (infinite = unlimited).
    pub download_bps: f64,
    /// Upload bytes per second (infinite = unlimited).
    pub upload_bps: f64,
    /// Latency, seconds.
    pub latency_s: f64,
}

impl Profile {
    /// Virtual seconds of the transfers and the latency of a round: everything but local work.
    pub fn network_s(&self, bytes_down: u64, bytes_up: u64) -> f64 {
        self.latency_s + bytes_down as f64 / self.download_bps + bytes_up as f64 / self.upload_bps
    }

    /// Virtual seconds of `samples` samples of local work, slowed by `jitter` (1 = none).
    pub fn compute_s(&self, samples: usize, jitter: f64) -> f64 {
        samples as f64 / self.samples_per_s * jitter
    }

    /// The virtual time at which the client finishes a round: latency, download, `samples` of local
    /// work (slowed by `jitter`), upload.
    pub fn finish_s(&self, samples: usize, jitter: f64, bytes_down: u64, bytes_up: u64) -> f64 {
        self.compute_s(samples, jitter) + self.network_s(bytes_down, bytes_up)
    }
}

/// A standard normal from two counter-based uniforms of (seed, round, client) (Box–Muller).
fn normal(seed: u64, round: u64, client: u64, salt: u64) -> f64 {
    let u1 = unit(seed, Purpose::Events, round, client, salt).max(f64::MIN_POSITIVE);
    let u2 = unit(seed, Purpose::Events, round, client, salt + 1);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Per-client speed factors of a [`SpeedSpec`].
pub(super) fn speed_factors(speed: &SpeedSpec, n: usize, seed: u64) -> Vec<f64> {
    match speed {
        SpeedSpec::Constant(v) => vec![*v; n],
        SpeedSpec::List(v) => v.clone(),
        SpeedSpec::Dist(SpeedDist::Uniform { low, high }) => (0..n)
            .map(|c| low + (high - low) * unit(seed, Purpose::Events, u64::MAX, c as u64, 1))
            .collect(),
        SpeedSpec::Dist(SpeedDist::Lognormal { sigma }) => (0..n)
            .map(|c| (sigma * normal(seed, u64::MAX, c as u64, 2)).exp())
            .collect(),
    }
}

/// Per-client rates of a [`Rate`] (`salt` separates the download and upload draws).
fn rates(rate: Option<&Rate>, n: usize, seed: u64, salt: u64) -> Vec<f64> {
    match rate {
        None => vec![f64::INFINITY; n],
        Some(Rate::Constant(v)) => vec![*v; n],
        Some(Rate::List(v)) => v.clone(),
        Some(Rate::Dist(RateDist::Uniform { low, high })) => (0..n)
            .map(|c| low + (high - low) * unit(seed, Purpose::Events, u64::MAX - 1, c as u64, salt))
            .collect(),
        Some(Rate::Dist(RateDist::Lognormal { median, sigma })) => (0..n)
            .map(|c| median * (sigma * normal(seed, u64::MAX - 1, c as u64, salt)).exp())
            .collect(),
    }
}

fn check_rate(key: &str, rate: Option<&Rate>, n: usize) -> Result<(), ConfigError> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    let bad = |msg: String| Err(ConfigError::new(key, msg));
    match rate {
        Some(Rate::Constant(v)) if !positive(*v) => bad(format!("must be positive, got {v}")),
        Some(Rate::List(v)) if v.len() != n || !v.iter().all(|&x| positive(x)) => {
            bad(format!("must list {n} positive rates"))
        }
        Some(Rate::Dist(RateDist::Lognormal { median, sigma }))
            if !(positive(*median) && sigma.is_finite() && *sigma >= 0.0) =>
        {
            bad("needs median > 0 and sigma >= 0".into())
        }
        Some(Rate::Dist(RateDist::Uniform { low, high })) if !(positive(*low) && low <= high) => {
            bad("needs 0 < low <= high".into())
        }
        _ => Ok(()),
    }
}

impl SystemConfig {
    /// Checks values, naming the bad key (`section` is `system` or `events.stragglers`).
    pub fn validate(&self, section: &str, num_clients: usize) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{section}.{k}");
        if !(self.samples_per_s.is_finite() && self.samples_per_s > 0.0) {
            return Err(ConfigError::new(
                key("samples_per_s"),
                format!("must be positive, got {}", self.samples_per_s),
            ));
        }
        for (name, v) in [
            ("deadline_s", self.deadline_s),
            ("latency_s", self.latency_s),
            ("jitter", self.jitter),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(ConfigError::new(
                    key(name),
                    format!("must be non-negative, got {v}"),
                ));
            }
        }
        super::events::check_speed(&key("speed"), &self.speed, num_clients)?;
        check_rate(
            &key("download_bps"),
            self.download_bps.as_ref(),
            num_clients,
        )?;
        check_rate(&key("upload_bps"), self.upload_bps.as_ref(), num_clients)
    }

    /// Every client's profile: from the trace when given, else drawn from the seed.
    pub fn profiles(&self, num_clients: usize, seed: u64) -> Result<Vec<Profile>, ConfigError> {
        if let Some(path) = &self.trace {
            return read_trace(path, num_clients);
        }
        let speed = speed_factors(&self.speed, num_clients, seed);
        let down = rates(self.download_bps.as_ref(), num_clients, seed, 20);
        let up = rates(self.upload_bps.as_ref(), num_clients, seed, 30);
        Ok((0..num_clients)
            .map(|c| Profile {
                samples_per_s: self.samples_per_s * speed[c],
                download_bps: down[c],
                upload_bps: up[c],
                latency_s: self.latency_s,
            })
            .collect())
    }

    /// Client `client`'s compute slowdown in `round` (0-based): `exp(jitter · z)`, exactly 1 without
    /// jitter.
    pub fn jitter_factor(&self, seed: u64, round: u64, client: u64) -> f64 {
        if self.jitter == 0.0 {
            return 1.0;
        }
        (self.jitter * normal(seed, round, client, 40)).exp()
    }
}

/// Per-client online intervals in virtual seconds (`[system] online`).
#[derive(Debug, Clone, PartialEq)]
pub struct Online {
    /// Per client, its intervals `[start, end)` sorted by start; `None` = always online.
    intervals: Vec<Option<Vec<(f64, f64)>>>,
}

impl Online {
    /// Reads `client,start_s,end_s` rows (after a header) for `n` clients.
    pub fn read(path: &std::path::Path, n: usize) -> Result<Self, ConfigError> {
        let err =
            |msg: String| ConfigError::new("system.online", format!("{}: {msg}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut intervals: Vec<Option<Vec<(f64, f64)>>> = vec![None; n];
        for (i, line) in text.lines().enumerate().skip(1) {
            if line.trim().is_empty() {
                continue;
            }
            let at = |msg: String| err(format!("line {}: {msg}", i + 1));
            let f: Vec<&str> = line.split(',').map(str::trim).collect();
            if f.len() != 3 {
                return Err(at(format!(
                    "{} fields, expected client,start_s,end_s",
                    f.len()
                )));
            }
            let client: usize = f[0]
                .parse()
                .ok()
                .filter(|&c| c < n)
                .ok_or_else(|| at(format!("`{}` is not a client id below {n}", f[0])))?;
            let time = |j: usize| {
                f[j].parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| {
                        at(format!(
                            "`{}` is not a non-negative number of seconds",
                            f[j]
                        ))
                    })
            };
            let (start, end) = (time(1)?, time(2)?);
            if end <= start {
                return Err(at(format!(
                    "the interval ends ({end}) before it starts ({start})"
                )));
            }
            intervals[client]
                .get_or_insert_with(Vec::new)
                .push((start, end));
        }
        for list in intervals.iter_mut().flatten() {
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Ok(Self { intervals })
    }

    /// When client `c`, online at virtual time `t`, goes offline (infinite for a client that is
    /// always online); `None` when it is offline at `t`.
    pub fn online_until(&self, c: usize, t: f64) -> Option<f64> {
        match &self.intervals[c] {
            None => Some(f64::INFINITY),
            Some(list) => list
                .iter()
                .find(|&&(a, b)| a <= t && t < b)
                .map(|&(_, b)| b),
        }
    }

    /// The earliest time after `t` at which a listed client comes online.
    pub fn next_start_after(&self, t: f64) -> Option<f64> {
        self.intervals
            .iter()
            .flatten()
            .flat_map(|list| list.iter().map(|&(a, _)| a))
            .filter(|&a| a > t)
            .min_by(f64::total_cmp)
    }
}

/// Reads a profile trace: a header line, then `client,samples_per_s,download_bps,upload_bps,latency_s`
/// for every client (0 bandwidth = unlimited).
fn read_trace(path: &std::path::Path, n: usize) -> Result<Vec<Profile>, ConfigError> {
    let key = "system.trace";
    let err = |msg: String| ConfigError::new(key, format!("{}: {msg}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let mut out: Vec<Option<Profile>> = vec![None; n];
    for (i, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let at = |msg: String| err(format!("line {}: {msg}", i + 1));
        if f.len() != 5 {
            return Err(at(format!("{} fields, expected 5", f.len())));
        }
        let num = |j: usize| {
            f[j].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| at(format!("`{}` is not a non-negative number", f[j])))
        };
        let client: usize = f[0]
            .parse()
            .ok()
            .filter(|&c| c < n)
            .ok_or_else(|| at(format!("`{}` is not a client id below {n}", f[0])))?;
        let unlimited = |v: f64| if v == 0.0 { f64::INFINITY } else { v };
        let speed = num(1)?;
        if speed == 0.0 {
            return Err(at("samples_per_s must be positive".into()));
        }
        if out[client].is_some() {
            return Err(at(format!("client {client} is listed twice")));
        }
        out[client] = Some(Profile {
            samples_per_s: speed,
            download_bps: unlimited(num(2)?),
            upload_bps: unlimited(num(3)?),
            latency_s: num(4)?,
        });
    }
    out.into_iter()
        .enumerate()
        .map(|(c, p)| p.ok_or_else(|| err(format!("no row for client {c}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand: 0.5 s latency, 2000 B down at 1000 B/s (2 s), 200 samples at 100 samples/s
    /// (2 s), 1000 B up at 500 B/s (2 s).
    #[test]
    fn a_finish_time_adds_latency_transfers_and_work() {
        let p = Profile {
            samples_per_s: 100.0,
            download_bps: 1000.0,
            upload_bps: 500.0,
            latency_s: 0.5,
        };
        assert_eq!(p.finish_s(200, 1.0, 2000, 1000), 6.5);
        // Twice as slow in this round: 4 s of work.
        assert_eq!(p.finish_s(200, 2.0, 2000, 1000), 8.5);
        let unlimited = Profile {
            download_bps: f64::INFINITY,
            upload_bps: f64::INFINITY,
            latency_s: 0.0,
            ..p
        };
        assert_eq!(unlimited.finish_s(200, 1.0, 2000, 1000), 2.0);
    }

    #[test]
    fn profiles_are_drawn_per_client_and_read_from_traces() {
        let cfg: SystemConfig = toml::from_str(
            "samples_per_s = 10\ndownload_bps = { dist = \"lognormal\", median = 1e6, sigma = 1 }\nupload_bps = 2e5\nlatency_s = 0.1",
        )
        .unwrap();
        cfg.validate("system", 50).unwrap();
        let p = cfg.profiles(50, 7).unwrap();
        assert_eq!(p, cfg.profiles(50, 7).unwrap(), "deterministic");
        assert!(
            p.iter()
                .all(|q| q.upload_bps == 2e5 && q.samples_per_s == 10.0)
        );
        let mut down: Vec<f64> = p.iter().map(|q| q.download_bps).collect();
        down.sort_by(f64::total_cmp);
        assert!(
            down[0] < 5e5 && down[49] > 2e6,
            "heavy-tailed around the median: {down:?}"
        );
        assert_eq!(cfg.jitter_factor(7, 3, 1), 1.0);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trace.csv");
        std::fs::write(&path, "client,samples_per_s,download_bps,upload_bps,latency_s\n1,5,0,100,0.2\n0,10,1000,50,0\n").unwrap();
        let traced = SystemConfig {
            trace: Some(path.clone()),
            ..cfg.clone()
        };
        let p = traced.profiles(2, 7).unwrap();
        assert_eq!(p[1].download_bps, f64::INFINITY);
        assert_eq!((p[0].samples_per_s, p[0].upload_bps), (10.0, 50.0));
        let e = traced.profiles(3, 7).unwrap_err().to_string();
        assert!(e.contains("no row for client 2"), "{e}");
        std::fs::write(&path, "h\n0,10,1000,50\n").unwrap();
        let e = traced.profiles(1, 7).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("4 fields"), "{e}");
    }

    #[test]
    fn online_intervals_say_who_is_reachable_and_until_when() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.csv");
        std::fs::write(&path, "client,start_s,end_s\n0,10,20\n0,0,5\n1,3,4\n").unwrap();
        let on = Online::read(&path, 3).unwrap();
        assert_eq!(on.online_until(0, 0.0), Some(5.0));
        assert_eq!(on.online_until(0, 5.0), None, "intervals are half-open");
        assert_eq!(on.online_until(0, 12.0), Some(20.0));
        assert_eq!(
            on.online_until(2, 1e9),
            Some(f64::INFINITY),
            "no rows: always online"
        );
        assert_eq!(on.next_start_after(5.0), Some(10.0));
        assert_eq!(on.next_start_after(2.0), Some(3.0));
        assert_eq!(on.next_start_after(20.0), None);
        std::fs::write(&path, "h\n0,5,5\n").unwrap();
        let e = Online::read(&path, 1).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("ends"), "{e}");
    }
}
