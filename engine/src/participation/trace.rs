//! Participation traces: replay recorded or measured participation from CSV, and record a run's.
//!
//! Two formats, told apart by the header:
//! - `round,client`: one row per participation (1-based rounds);
//! - `client,start,end`: availability intervals, the client is selected in rounds `start ≤ r < end`
//!   (1-based).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::Participation;
use crate::ClientId;

/// Replays a trace.
#[derive(Debug, Clone)]
pub struct TraceReplay {
    /// Selected clients per 1-based round, ascending.
    rounds: BTreeMap<u64, Vec<ClientId>>,
    /// Intervals per client (1-based, half-open).
    intervals: Vec<(ClientId, u64, u64)>,
}

fn err(path: &Path, line: usize, msg: impl std::fmt::Display) -> String {
    format!("{} line {line}: {msg}", path.display())
}

impl TraceReplay {
    /// Reads a trace file for a population of `num_clients`.
    pub fn load(path: &Path, num_clients: usize) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, num_clients).map_err(|(line, msg)| err(path, line, msg))
    }

    /// Parses trace text; errors carry the 1-based line number.
    pub fn parse(text: &str, num_clients: usize) -> Result<Self, (usize, String)> {
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or((1, "empty trace".to_string()))?;
        let cols: Vec<String> = header
            .split(',')
            .map(|c| c.trim().to_ascii_lowercase())
            .collect();
        let intervals_format = match cols
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["round", "client"] => false,
            ["client", "start", "end"] => true,
            _ => {
                return Err((
                    1,
                    format!("header must be `round,client` or `client,start,end`, got `{header}`"),
                ));
            }
        };
        let mut out = Self {
            rounds: BTreeMap::new(),
            intervals: Vec::new(),
        };
        for (i, line) in lines {
            let n = i + 1;
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let num = |k: usize| -> Result<u64, (usize, String)> {
                fields
                    .get(k)
                    .ok_or((n, format!("expected {} fields", cols.len())))?
                    .parse::<u64>()
                    .map_err(|_| (n, format!("`{}` is not a non-negative integer", fields[k])))
            };
            if fields.len() != cols.len() {
                return Err((
                    n,
                    format!("expected {} fields, got {}", cols.len(), fields.len()),
                ));
            }
            let check_client = |c: u64| {
                if c as usize >= num_clients {
                    Err((
                        n,
                        format!("client {c} out of range (the scenario has {num_clients} clients)"),
                    ))
                } else {
                    Ok(c as ClientId)
                }
            };
            if intervals_format {
                let (c, a, b) = (check_client(num(0)?)?, num(1)?, num(2)?);
                if a == 0 || b < a {
                    return Err((
                        n,
                        format!("interval [{a}, {b}) must have 1 <= start <= end"),
                    ));
                }
                out.intervals.push((c, a, b));
            } else {
                let (r, c) = (num(0)?, check_client(num(1)?)?);
                if r == 0 {
                    return Err((n, "rounds are 1-based".into()));
                }
                out.rounds.entry(r).or_default().push(c);
            }
        }
        for v in out.rounds.values_mut() {
            v.sort_unstable();
            v.dedup();
        }
        Ok(out)
    }

    fn trace_clients(&self, round1: u64) -> Vec<ClientId> {
        let mut v: Vec<ClientId> = self.rounds.get(&round1).cloned().unwrap_or_default();
        v.extend(
            self.intervals
                .iter()
                .filter(|(_, a, b)| (*a..*b).contains(&round1))
                .map(|(c, _, _)| *c),
        );
        v.sort_unstable();
        v.dedup();
        v
    }
}

impl Participation for TraceReplay {
    fn select(&mut self, round: u64, available: &[ClientId]) -> Vec<ClientId> {
        self.trace_clients(round + 1)
            .into_iter()
            .filter(|c| available.binary_search(c).is_ok())
            .collect()
    }
}

/// Writes the clients that took part in each round as a `round,client` trace.
#[derive(Debug)]
pub struct TraceRecorder {
    out: std::io::BufWriter<std::fs::File>,
}

impl TraceRecorder {
    /// Creates the trace file.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(out, "round,client")?;
        Ok(Self { out })
    }

    /// Records one round (1-based) and its participants.
    pub fn record(&mut self, round: u64, clients: &[ClientId]) -> std::io::Result<()> {
        for c in clients {
            writeln!(self.out, "{round},{c}")?;
        }
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_replay() {
        let mut t = TraceReplay::parse("round,client\n1,3\n1,0\n2,2\n", 4).unwrap();
        assert_eq!(t.select(0, &[0, 1, 2, 3]), vec![0, 3]);
        assert_eq!(t.select(0, &[1, 3]), vec![3], "availability still applies");
        assert_eq!(t.select(1, &[0, 1, 2, 3]), vec![2]);
        let mut t = TraceReplay::parse("client,start,end\n1,2,4\n", 3).unwrap();
        assert!(t.select(0, &[0, 1, 2]).is_empty());
        assert_eq!(t.select(1, &[0, 1, 2]), vec![1]);
        assert_eq!(t.select(2, &[0, 1, 2]), vec![1]);
        assert!(t.select(3, &[0, 1, 2]).is_empty());
    }

    #[test]
    fn bad_traces_name_the_line() {
        assert_eq!(
            TraceReplay::parse("round,client\n1,9\n", 4).unwrap_err().0,
            2
        );
        assert!(
            TraceReplay::parse("when,who\n", 4)
                .unwrap_err()
                .1
                .contains("header")
        );
        assert!(
            TraceReplay::parse("round,client\n0,1\n", 4)
                .unwrap_err()
                .1
                .contains("1-based")
        );
        assert!(
            TraceReplay::parse("round,client\n1,x\n", 4)
                .unwrap_err()
                .1
                .contains("`x`")
        );
        assert!(TraceReplay::parse("client,start,end\n1,5,2\n", 4).is_err());
    }
}
