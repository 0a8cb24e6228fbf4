//! Checkpoints: the engine's state between rounds, written atomically after every round.
//!
//! The file `checkpoint.bin` in the run directory is an encoded [`Payload`] (the wire format) holding the
//! run id, the scenario hash, the round number, the global model, the strategy's server state, the
//! participation state, the per-client participation counts and the running summary. No RNG state is
//! needed: every random stream is derived from (seed, round, client).

use std::path::{Path, PathBuf};

use fedsim_engine::engine::Snapshot;
use fedsim_engine::report::write_atomic;
use fedsim_proto::wire;
use fedsim_types::{Payload, TensorData};

use crate::ServerError;

/// File name of the checkpoint inside the run directory.
pub const FILE: &str = "checkpoint.bin";

const STRATEGY_PREFIX: &str = "strategy/";

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes a checkpoint atomically.
pub fn save(
    dir: &Path,
    run_id: &str,
    scenario_hash: &str,
    snap: &Snapshot,
) -> Result<(), ServerError> {
    let mut p = Payload::new()
        .with(
            "run_id",
            TensorData::Bytes {
                bytes: run_id.as_bytes().to_vec(),
            },
        )
        .with(
            "scenario_hash",
            TensorData::Bytes {
                bytes: scenario_hash.as_bytes().to_vec(),
            },
        )
        .with(
            "next_round",
            TensorData::Bytes {
                bytes: snap.next_round.to_le_bytes().to_vec(),
            },
        )
        .with("global", TensorData::vector(snap.global.clone()))
        .with(
            "participation_state",
            TensorData::Bytes {
                bytes: snap.participation_state.clone(),
            },
        )
        .with(
            "summary",
            TensorData::Bytes {
                bytes: snap.summary_json.as_bytes().to_vec(),
            },
        )
        .with(
            "participation_counts",
            TensorData::U32 {
                values: snap.participation_counts.clone(),
            },
        );
    for t in &snap.strategy_state.tensors {
        p.push(format!("{STRATEGY_PREFIX}{}", t.name), t.data.clone());
    }
    write_atomic(&path(dir), &wire::encode(&p)).map_err(ServerError::Core)
}

fn bad(dir: &Path, msg: impl Into<String>) -> ServerError {
    ServerError::File {
        path: path(dir),
        msg: msg.into(),
    }
}

fn read(dir: &Path) -> Result<Payload, ServerError> {
    let bytes = std::fs::read(path(dir))
        .map_err(|e| bad(dir, format!("cannot read the checkpoint: {e}")))?;
    wire::decode(&bytes).map_err(|e| bad(dir, format!("corrupt checkpoint: {e}")))
}

fn bytes_of<'a>(dir: &Path, p: &'a Payload, name: &str) -> Result<&'a [u8], ServerError> {
    match p.get(name) {
        Some(TensorData::Bytes { bytes }) => Ok(bytes),
        _ => Err(bad(dir, format!("corrupt checkpoint: `{name}` missing"))),
    }
}

fn string_of(dir: &Path, p: &Payload, name: &str) -> Result<String, ServerError> {
    String::from_utf8(bytes_of(dir, p, name)?.to_vec())
        .map_err(|_| bad(dir, format!("corrupt checkpoint: `{name}`")))
}

/// The run id stored in a checkpoint.
pub fn read_run_id(dir: &Path) -> Result<String, ServerError> {
    string_of(dir, &read(dir)?, "run_id")
}

/// Reads a checkpoint written for the scenario with hash `scenario_hash`.
pub fn load(dir: &Path, scenario_hash: &str) -> Result<Snapshot, ServerError> {
    let p = read(dir)?;
    if string_of(dir, &p, "scenario_hash")? != scenario_hash {
        return Err(bad(
            dir,
            "the checkpoint was written for a different scenario",
        ));
    }
    let round_bytes: [u8; 8] = bytes_of(dir, &p, "next_round")?
        .try_into()
        .map_err(|_| bad(dir, "corrupt checkpoint: `next_round`"))?;
    let global = match p.get("global") {
        Some(TensorData::F32 { values, .. }) => values.clone(),
        _ => return Err(bad(dir, "corrupt checkpoint: `global` missing")),
    };
    let participation_counts = match p.get("participation_counts") {
        Some(TensorData::U32 { values }) => values.clone(),
        _ => {
            return Err(bad(
                dir,
                "corrupt checkpoint: `participation_counts` missing",
            ));
        }
    };
    let mut strategy_state = Payload::new();
    for t in &p.tensors {
        if let Some(name) = t.name.strip_prefix(STRATEGY_PREFIX) {
            strategy_state.push(name, t.data.clone());
        }
    }
    Ok(Snapshot {
        next_round: u64::from_le_bytes(round_bytes),
        global,
        strategy_state,
        participation_state: bytes_of(dir, &p, "participation_state")?.to_vec(),
        summary_json: string_of(dir, &p, "summary")?,
        participation_counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("fedsim-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let snap = Snapshot {
            next_round: 7,
            global: vec![1.0, 2.0],
            strategy_state: Payload::new().with("h", TensorData::vector(vec![0.5])),
            participation_state: vec![1, 2, 3],
            summary_json: "{}".into(),
            participation_counts: vec![3, 4],
        };
        save(&dir, "run1", "hash", &snap).unwrap();
        assert_eq!(read_run_id(&dir).unwrap(), "run1");
        assert_eq!(load(&dir, "hash").unwrap(), snap);
        assert!(
            load(&dir, "other")
                .unwrap_err()
                .to_string()
                .contains("different scenario")
        );
        std::fs::write(dir.join(FILE), b"garbage").unwrap();
        assert!(
            load(&dir, "hash")
                .unwrap_err()
                .to_string()
                .contains("corrupt")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
