//! Checkpoints: the engine's state between rounds, written atomically after every round.
//!
//! The file `checkpoint.bin` in the run directory is an encoded [`Payload`] (the wire format) holding the
//! run id, the scenario hash, the round number, the global model, the strategy's server state, the
//! participation state, the per-client participation counts and the running summary. No RNG state is
//! needed: every random stream is derived from (seed, round, client).
//!
//! An asynchronous run (FedBuff, FedAsync) is checkpointed after every server update and adds its
//! clock and dispatch counters (`async/state`), its tasks in flight (`async/flights`, fixed-size
//! little-endian records) and the task of every model version they train from (`async/versions`, and
//! that task's tensors under `async/task/VERSION/`). A checkpoint without these keys is a synchronous
//! run's (as every checkpoint written before asynchronous runs kept any).

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;
use std::sync::Arc;

use fedsim_engine::engine::{AsyncSnapshot, FlightSnapshot, Snapshot};
use fedsim_engine::report::write_atomic;
use fedsim_proto::wire;
use fedsim_types::{Payload, TensorData};

use crate::ServerError;

/// File name of the checkpoint inside the run directory.
pub const FILE: &str = "checkpoint.bin";

const STRATEGY_PREFIX: &str = "strategy/";

/// Key of an asynchronous run's clock and counters.
const ASYNC_STATE: &str = "async/state";
/// Key of an asynchronous run's tasks in flight.
const ASYNC_FLIGHTS: &str = "async/flights";
/// Key of the model versions whose tasks are saved.
const ASYNC_VERSIONS: &str = "async/versions";
/// Prefix of the saved tasks' tensors: `async/task/VERSION/NAME`.
const ASYNC_TASK_PREFIX: &str = "async/task/";

/// Words (8 bytes each) of `async/state`: now_s, last_update_s, next_batch, next_seq, arrivals, idle,
/// dispatch_due.
const STATE_WORDS: usize = 7;
/// Words of one record of `async/flights`: client, seq, batch, version, start_s, samples, down,
/// ready_s, offline_s.
const FLIGHT_WORDS: usize = 9;

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
    if let Some(a) = &snap.asynchronous {
        encode_async(&mut p, a);
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
    let asynchronous =
        decode_async(&p).map_err(|m| bad(dir, format!("corrupt checkpoint: {m}")))?;
    Ok(Snapshot {
        next_round: u64::from_le_bytes(round_bytes),
        global,
        strategy_state,
        participation_state: bytes_of(dir, &p, "participation_state")?.to_vec(),
        summary_json: string_of(dir, &p, "summary")?,
        participation_counts,
        asynchronous,
    })
}

fn bytes(bytes: Vec<u8>) -> TensorData {
    TensorData::Bytes { bytes }
}

/// Adds an asynchronous run's state to checkpoint payload `p`.
fn encode_async(p: &mut Payload, a: &AsyncSnapshot) {
    let words: [u64; STATE_WORDS] = [
        a.now_s.to_bits(),
        a.last_update_s.to_bits(),
        a.next_batch,
        a.next_seq,
        a.arrivals,
        u64::from(a.idle),
        u64::from(a.dispatch_due),
    ];
    p.push(ASYNC_STATE, bytes(le_words(&words)));
    let flights: Vec<u64> = a
        .flights
        .iter()
        .flat_map(|f| {
            [
                u64::from(f.client),
                f.seq,
                f.batch,
                f.version,
                f.start_s.to_bits(),
                f.samples,
                f.down,
                f.ready_s.to_bits(),
                f.offline_s.to_bits(),
            ]
        })
        .collect();
    p.push(ASYNC_FLIGHTS, bytes(le_words(&flights)));
    let versions: Vec<u64> = a.broadcasts.iter().map(|(v, _)| *v).collect();
    p.push(ASYNC_VERSIONS, bytes(le_words(&versions)));
    for (v, task) in &a.broadcasts {
        for t in &task.tensors {
            p.push(format!("{ASYNC_TASK_PREFIX}{v}/{}", t.name), t.data.clone());
        }
    }
}

fn le_words(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// The little-endian words of `async` key `name`.
fn words_of(p: &Payload, name: &str) -> Result<Vec<u64>, String> {
    match p.get(name) {
        Some(TensorData::Bytes { bytes }) if bytes.len().is_multiple_of(8) => Ok(bytes
            .chunks_exact(8)
            .map(|c| {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                u64::from_le_bytes(w)
            })
            .collect()),
        Some(_) => Err(format!("`{name}` is malformed")),
        None => Err(format!("`{name}` missing")),
    }
}

/// An asynchronous run's state in checkpoint payload `p`, if it holds one (the shapes are checked
/// here; whether the state fits the scenario, by the engine's restore).
fn decode_async(p: &Payload) -> Result<Option<AsyncSnapshot>, String> {
    if p.get(ASYNC_STATE).is_none() {
        return Ok(None);
    }
    let state = words_of(p, ASYNC_STATE)?;
    let [now, last, next_batch, next_seq, arrivals, idle, due] = state[..] else {
        return Err(format!("`{ASYNC_STATE}` has {} words", state.len()));
    };
    let idle = u32::try_from(idle).map_err(|_| format!("`{ASYNC_STATE}`: idle count {idle}"))?;
    let dispatch_due = match due {
        0 => false,
        1 => true,
        _ => return Err(format!("`{ASYNC_STATE}`: dispatch flag {due}")),
    };
    let words = words_of(p, ASYNC_FLIGHTS)?;
    if !words.len().is_multiple_of(FLIGHT_WORDS) {
        return Err(format!("`{ASYNC_FLIGHTS}` has {} words", words.len()));
    }
    let mut flights = Vec::with_capacity(words.len() / FLIGHT_WORDS);
    for r in words.chunks_exact(FLIGHT_WORDS) {
        let client =
            u32::try_from(r[0]).map_err(|_| format!("`{ASYNC_FLIGHTS}`: client {}", r[0]))?;
        flights.push(FlightSnapshot {
            client,
            seq: r[1],
            batch: r[2],
            version: r[3],
            start_s: f64::from_bits(r[4]),
            samples: r[5],
            down: r[6],
            ready_s: f64::from_bits(r[7]),
            offline_s: f64::from_bits(r[8]),
        });
    }
    let mut tasks: BTreeMap<u64, Payload> = BTreeMap::new();
    for v in words_of(p, ASYNC_VERSIONS)? {
        if tasks.insert(v, Payload::new()).is_some() {
            return Err(format!("`{ASYNC_VERSIONS}` lists version {v} twice"));
        }
    }
    for t in &p.tensors {
        let Some(rest) = t.name.strip_prefix(ASYNC_TASK_PREFIX) else {
            continue;
        };
        let task = rest
            .split_once('/')
            .and_then(|(v, name)| Some((v.parse::<u64>().ok()?, name)))
            .and_then(|(v, name)| Some((tasks.get_mut(&v)?, name)));
        let Some((task, name)) = task else {
            return Err(format!("`{}` belongs to no saved model version", t.name));
        };
        task.push(name, t.data.clone());
    }
    Ok(Some(AsyncSnapshot {
        now_s: f64::from_bits(now),
        last_update_s: f64::from_bits(last),
        next_batch,
        next_seq,
        arrivals,
        idle,
        dispatch_due,
        flights,
        broadcasts: tasks.into_iter().map(|(v, t)| (v, Arc::new(t))).collect(),
    }))
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
            asynchronous: None,
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

    fn async_snapshot() -> Snapshot {
        let flight = |client, seq, version| FlightSnapshot {
            client,
            seq,
            batch: seq / 2,
            version,
            start_s: 0.25 * seq as f64,
            samples: 40,
            down: 1234,
            ready_s: 7.5,
            offline_s: f64::INFINITY,
        };
        let task = |v: f32| {
            Arc::new(
                Payload::new()
                    .with("global", TensorData::vector(vec![v, v + 1.0]))
                    .with("extra", TensorData::Scalar { value: 0.5 }),
            )
        };
        Snapshot {
            next_round: 3,
            global: vec![1.0, 2.0],
            strategy_state: Payload::new(),
            participation_state: vec![],
            summary_json: "{}".into(),
            participation_counts: vec![3, 4, 0],
            asynchronous: Some(AsyncSnapshot {
                now_s: 12.5,
                last_update_s: 11.0,
                next_batch: 4,
                next_seq: 7,
                arrivals: 5,
                idle: 0,
                dispatch_due: true,
                flights: vec![flight(0, 5, 2), flight(2, 6, 2), flight(1, 3, 1)],
                broadcasts: vec![(1, task(1.0)), (2, task(2.0))],
            }),
        }
    }

    #[test]
    fn asynchronous_state_round_trips_and_corruption_is_named() {
        let dir = std::env::temp_dir().join(format!("fedsim-ckpt-async-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let snap = async_snapshot();
        save(&dir, "run1", "hash", &snap).unwrap();
        assert_eq!(load(&dir, "hash").unwrap(), snap);

        // Damage one key at a time: each is a clear error, never a panic.
        let good = read(&dir).unwrap();
        let damage: [(&str, TensorData); 4] = [
            (ASYNC_STATE, bytes(vec![0; 8 * (STATE_WORDS - 1)])),
            (ASYNC_FLIGHTS, bytes(vec![0; 8 * FLIGHT_WORDS + 8])),
            (ASYNC_VERSIONS, bytes(vec![1; 3])),
            ("async/task/9/global", TensorData::vector(vec![0.0])),
        ];
        for (key, data) in damage {
            let mut p = good.clone();
            p.push(key, data);
            write_atomic(&path(&dir), &wire::encode(&p)).unwrap();
            let err = load(&dir, "hash").unwrap_err().to_string();
            assert!(err.contains("corrupt checkpoint"), "{key}: {err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
