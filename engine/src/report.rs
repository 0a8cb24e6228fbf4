//! Run outputs shared by both runtimes: `metrics.jsonl` (one JSON object per round), `summary.json`,
//! `scenario.toml` (the resolved scenario), `model.bin` (final parameters) and `model.safetensors` (the
//! same, in PyTorch's layout).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{ClientId, EngineError};
use fedsim_nn::{Model, model_file};

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// Rounds completed (1-based: the first round is round 1).
    pub round: u64,
    /// Seconds since the run started.
    pub wall_s: f64,
    /// Clients selected for the round.
    pub selected: usize,
    /// Clients whose updates were aggregated.
    pub participants: usize,
    /// Ids of the clients whose updates were aggregated, ascending.
    pub participant_ids: Vec<ClientId>,
    /// Global training loss on the union of client data (evaluation rounds only).
    pub train_loss: Option<f64>,
    /// Global training accuracy on the same samples (evaluation rounds only).
    pub train_accuracy: Option<f64>,
    /// Test accuracy in [0, 1] (evaluation rounds only).
    pub test_accuracy: Option<f64>,
    /// Mean test loss (evaluation rounds only).
    pub test_loss: Option<f64>,
    /// Lowest per-class test accuracy (evaluation rounds only).
    pub worst_class_accuracy: Option<f64>,
    /// Per-class test accuracy (evaluation rounds only; null for classes absent from the test set).
    pub class_accuracy: Option<Vec<Option<f64>>>,
    /// Bytes sent from clients to the server this round.
    pub bytes_up: u64,
    /// Bytes sent from the server to clients this round.
    pub bytes_down: u64,
    /// Seconds spent in local training (wall time of the parallel phase, or waiting for clients).
    pub time_train_s: f64,
    /// Seconds spent aggregating.
    pub time_aggregate_s: f64,
    /// Seconds spent evaluating.
    pub time_eval_s: f64,
    /// Seconds for the whole round.
    pub time_round_s: f64,
    /// Strategy- and runtime-specific metrics.
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
}

/// `summary.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Strategy name.
    pub strategy: String,
    /// Runtime that produced the run (`sim`, `grpc`).
    pub runtime: String,
    /// Rounds completed.
    pub rounds: u64,
    /// Number of model parameters.
    pub num_params: usize,
    /// A layer stack's layers, one line each (key, kind, input and output shapes); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_layers: Vec<String>,
    /// The file the initial model was read from (`model.init_from`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// The training set's per-channel mean and standard deviation, when `data.normalize =
    /// "per_channel"` standardised the images with them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalization: Option<fedsim_data::ChannelStats>,
    /// Test accuracy after the last round.
    pub final_test_accuracy: Option<f64>,
    /// Test loss after the last round.
    pub final_test_loss: Option<f64>,
    /// Training loss after the last round.
    pub final_train_loss: Option<f64>,
    /// Worst per-class test accuracy after the last round.
    pub final_worst_class_accuracy: Option<f64>,
    /// Best test accuracy over evaluated rounds.
    pub best_test_accuracy: Option<f64>,
    /// Round of the best test accuracy.
    pub best_round: Option<u64>,
    /// For each target accuracy, the first round whose test accuracy reached it (null if never).
    pub rounds_to_target: BTreeMap<String, Option<u64>>,
    /// Total seconds.
    pub total_wall_s: f64,
    /// Total bytes uplink.
    pub bytes_up: u64,
    /// Total bytes downlink.
    pub bytes_down: u64,
    /// SHA-256 of the final parameters (little-endian f32 bytes), hex.
    pub final_model_hash: String,
    /// Per-client participation counts (index = client id), when tracked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub participation_counts: Vec<u32>,
    /// Virtual seconds of the run so far (the `[system]` clock), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_time_s: Option<f64>,
    /// Virtual seconds until each `eval.targets` accuracy was first reached (the `[system]` clock).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub virtual_time_to_target: BTreeMap<String, Option<f64>>,
    /// The last federated evaluation's per-client results (client, samples, accuracy, loss), in
    /// client order, when the run has at most 100,000 clients.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_evals: Vec<crate::fedeval::ClientEval>,
    /// Extra figures from the strategy or runtime.
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
}

impl Summary {
    /// Folds one round's record into the running summary.
    pub fn observe(&mut self, r: &RoundRecord, targets: &[f64]) {
        self.rounds = r.round;
        if let Some(&t) = r.extra.get("virtual_time_s") {
            self.virtual_time_s = Some(t);
        }
        self.total_wall_s = r.wall_s;
        self.bytes_up += r.bytes_up;
        self.bytes_down += r.bytes_down;
        if let Some(acc) = r.test_accuracy {
            self.final_test_accuracy = Some(acc);
            self.final_test_loss = r.test_loss;
            self.final_worst_class_accuracy = r.worst_class_accuracy;
            if self.best_test_accuracy.is_none_or(|b| acc > b) {
                self.best_test_accuracy = Some(acc);
                self.best_round = Some(r.round);
            }
            let clock = r.extra.get("virtual_time_s").copied();
            for t in targets {
                let e = self.rounds_to_target.entry(target_key(*t)).or_insert(None);
                if e.is_none() && acc >= *t {
                    *e = Some(r.round);
                }
                if let Some(now) = clock {
                    let v = self
                        .virtual_time_to_target
                        .entry(target_key(*t))
                        .or_insert(None);
                    if v.is_none() && acc >= *t {
                        *v = Some(now);
                    }
                }
            }
        }
        if r.train_loss.is_some() {
            self.final_train_loss = r.train_loss;
        }
    }
}

/// The key of a target accuracy in `rounds_to_target`, e.g. `0.97`.
pub fn target_key(t: f64) -> String {
    format!("{t}")
}

/// SHA-256 of parameters as little-endian f32 bytes, hex-encoded.
pub fn model_hash(params: &[f32]) -> String {
    let mut h = Sha256::new();
    for v in params {
        h.update(v.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of bytes, hex-encoded.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const MODEL_MAGIC: &[u8; 8] = b"FEDSIMP1";

/// Writes parameters as `model.bin`: the 8 bytes `FEDSIMP1`, the count as u64 LE, then f32 LE values.
/// Written to a temporary file and renamed, so a crash never leaves a half-written model.
pub fn write_model(path: &Path, params: &[f32]) -> Result<(), EngineError> {
    let mut bytes = Vec::with_capacity(16 + params.len() * 4);
    bytes.extend_from_slice(MODEL_MAGIC);
    bytes.extend_from_slice(&(params.len() as u64).to_le_bytes());
    for v in params {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    write_atomic(path, &bytes)
}

/// Reads a `model.bin` written by [`write_model`].
pub fn read_model(path: &Path) -> Result<Vec<f32>, EngineError> {
    let bytes = std::fs::read(path).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    decode_model(path, &bytes)
}

/// Decodes the bytes of a `model.bin` read from `path` (named in errors).
fn decode_model(path: &Path, bytes: &[u8]) -> Result<Vec<f32>, EngineError> {
    let bad = |m: &str| EngineError::Malformed {
        path: path.into(),
        msg: m.to_string(),
    };
    if bytes.len() < 16 || &bytes[..8] != MODEL_MAGIC {
        return Err(bad("not a fedsim model file (bad magic)"));
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&bytes[8..16]);
    let n = u64::from_le_bytes(n) as usize;
    if bytes.len() != 16 + n.saturating_mul(4) {
        return Err(bad(&format!(
            "header says {n} parameters but the file holds {} bytes of data",
            bytes.len() - 16
        )));
    }
    Ok(bytes[16..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// Where a run's initial model came from (`model.init_from`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InitFrom {
    /// The file, as the scenario names it.
    pub path: String,
    /// SHA-256 of the parameters read (little-endian `f32`, like `final_model_hash`).
    pub sha256: String,
}

impl InitFrom {
    /// Reads the initial parameters of `model` from `path` ([`read_params`]), with the record of
    /// where they came from.
    pub fn read(path: &Path, model: &dyn Model) -> Result<(Vec<f32>, InitFrom), EngineError> {
        let params = read_params(path, model)?;
        let from = InitFrom {
            sha256: model_hash(&params),
            path: path.display().to_string(),
        };
        tracing::info!(file = %from.path, "initial model read from model.init_from");
        Ok((params, from))
    }
}

/// Reads the parameters of `model` from `path`: a `model.bin` ([`write_model`]) whose count must match
/// the model, or a safetensors file in PyTorch's layout ([`fedsim_nn::model_file`]) whose tensor names
/// and shapes must match it. Every error names the file.
pub fn read_params(path: &Path, model: &dyn Model) -> Result<Vec<f32>, EngineError> {
    let bytes = std::fs::read(path).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    let bad = |msg: String| EngineError::Malformed {
        path: path.into(),
        msg,
    };
    let params = if bytes.starts_with(MODEL_MAGIC) {
        let params = decode_model(path, &bytes)?;
        if params.len() != model.num_params() {
            return Err(bad(format!(
                "holds {} parameters, but the model {} has {}",
                params.len(),
                model.name(),
                model.num_params()
            )));
        }
        if let Some(i) = params.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("parameter {i} is not finite")));
        }
        params
    } else if model_file::is_safetensors(&bytes) {
        model_file::from_safetensors(model, &bytes).map_err(|e| bad(e.to_string()))?
    } else {
        return Err(bad(
            "neither a fedsim model.bin nor a safetensors file".into()
        ));
    };
    Ok(params)
}

/// Writes `params` of `model` as a safetensors file (PyTorch's tensor names, shapes and order),
/// atomically; `metadata` goes into the file's header.
pub fn write_safetensors(
    path: &Path,
    model: &dyn Model,
    params: &[f32],
    metadata: &[(&str, String)],
) -> Result<(), EngineError> {
    let bytes = model_file::to_safetensors(model, params, metadata).map_err(|e| {
        EngineError::Malformed {
            path: path.into(),
            msg: e.to_string(),
        }
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temporary file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let io = |source| EngineError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let written = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        // The file at `path` is untouched; do not leave a partial temporary next to it.
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// Writes a run directory: metrics as rounds complete, the rest at the end.
#[derive(Debug)]
pub struct RunWriter {
    dir: PathBuf,
    metrics: BufWriter<File>,
}

impl RunWriter {
    /// Creates `dir` (and parents), writes `scenario.toml`, opens `metrics.jsonl` (appending when
    /// `append` is set, as a resumed run does).
    pub fn create(dir: &Path, resolved_scenario: &str, append: bool) -> Result<Self, EngineError> {
        let io = |source| EngineError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        write_atomic(&dir.join("scenario.toml"), resolved_scenario.as_bytes())?;
        let mpath = dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&mpath)
            .map_err(|source| EngineError::Io {
                path: mpath.clone(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            metrics: BufWriter::new(file),
        })
    }

    /// Reopens a run directory after a crash: keeps the first `keep_rounds` lines of `metrics.jsonl`
    /// (the rounds the checkpoint covers) and appends from there.
    pub fn resume(
        dir: &Path,
        resolved_scenario: &str,
        keep_rounds: u64,
    ) -> Result<Self, EngineError> {
        let mpath = dir.join("metrics.jsonl");
        let text = std::fs::read_to_string(&mpath).unwrap_or_default();
        let kept: String = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(keep_rounds as usize)
            .map(|l| format!("{l}\n"))
            .collect();
        write_atomic(&mpath, kept.as_bytes())?;
        Self::create(dir, resolved_scenario, true)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one round to `metrics.jsonl` and flushes.
    pub fn round(&mut self, r: &RoundRecord) -> Result<(), EngineError> {
        let io = |source| EngineError::Io {
            path: self.dir.join("metrics.jsonl"),
            source,
        };
        let line = serde_json::to_string(r).map_err(|e| io(std::io::Error::other(e)))?;
        writeln!(self.metrics, "{line}").map_err(io)?;
        self.metrics.flush().map_err(io)
    }

    /// Writes `summary.json`, `model.bin` and `model.safetensors` (the same parameters in PyTorch's
    /// layout, for other tools).
    pub fn finish(
        &mut self,
        summary: &Summary,
        model: &dyn Model,
        params: &[f32],
    ) -> Result<(), EngineError> {
        let json = serde_json::to_string_pretty(summary).map_err(|e| EngineError::Io {
            path: self.dir.join("summary.json"),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.dir.join("summary.json"), json.as_bytes())?;
        write_model(&self.dir.join("model.bin"), params)?;
        let meta = [
            ("fedsim.scenario", summary.scenario.clone()),
            ("fedsim.rounds", summary.rounds.to_string()),
            ("fedsim.model_hash", summary.final_model_hash.clone()),
        ];
        write_safetensors(&self.dir.join("model.safetensors"), model, params, &meta)
    }
}

/// Reads every record of a `metrics.jsonl`.
pub fn read_metrics(path: &Path) -> Result<Vec<RoundRecord>, EngineError> {
    let text = std::fs::read_to_string(path).map_err(|source| EngineError::Io {
        path: path.into(),
        source,
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| EngineError::Malformed {
                path: path.into(),
                msg: format!("line {}: {e}", i + 1),
            })
        })
        .collect()
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`), if known.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_round_trip_and_rejects_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("model.bin");
        write_model(&p, &[1.0, -2.5, 3.25]).unwrap();
        assert_eq!(read_model(&p).unwrap(), vec![1.0, -2.5, 3.25]);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 2]).unwrap();
        assert!(
            read_model(&p)
                .unwrap_err()
                .to_string()
                .contains("header says 3")
        );
    }

    #[test]
    fn summary_tracks_targets() {
        let mut s = Summary::default();
        let targets = [0.5, 0.9];
        for (round, acc) in [(1, 0.3), (2, 0.6), (3, 0.55)] {
            s.observe(
                &RoundRecord {
                    round,
                    test_accuracy: Some(acc),
                    ..Default::default()
                },
                &targets,
            );
        }
        assert_eq!(s.rounds_to_target["0.5"], Some(2));
        assert_eq!(s.rounds_to_target["0.9"], None);
        assert_eq!(s.best_round, Some(2));
        assert_eq!(s.final_test_accuracy, Some(0.55));
    }
}
