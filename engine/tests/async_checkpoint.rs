//! Snapshots of asynchronous runs (FedBuff): a snapshot taken between server updates with tasks in
//! flight restores into a fresh engine, which starts those tasks again (same dispatch numbers, same
//! tasks) before anything new, and the run ends with the same model as one never interrupted. A
//! snapshot that does not fit the engine is refused with a reason.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fedsim_engine::engine::{AsyncStep, Snapshot};
use fedsim_engine::{ClientOutcome, Engine, Scenario};
use fedsim_nn::Scratch;
use fedsim_types::{ClientId, Payload};

const SCENARIO: &str = r#"
name = "async-checkpoint"
seed = 11
rounds = 8
clients = 10
[data]
kind = "synthetic"
features = 6
classes = 3
samples_per_client = 16
test_samples = 50
[partition]
scheme = "natural"
[model]
kind = "logreg"
[train]
lr = 0.05
batch_size = 4
steps = 2
[strategy]
kind = "fedbuff"
concurrency = 5
buffer_size = 2
[participation]
kind = "full"
[system]
samples_per_s = 50
speed = { dist = "lognormal", sigma = 1 }
upload_bps = { dist = "uniform", low = 1e4, high = 1e5 }
latency_s = 0.01
[eval]
every = 4
train_loss = false
"#;

fn engine_with(settings: &[&str]) -> Engine {
    let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    let scenario = Scenario::parse(SCENARIO, &settings).expect("scenario");
    let data = Arc::new(scenario.load_data().expect("synthetic data"));
    Engine::new(scenario, data, "test").expect("engine")
}

fn engine() -> Engine {
    engine_with(&[])
}

/// A started task: (dispatch, client) and the task it was handed.
type Started = BTreeMap<(u64, ClientId), Arc<Payload>>;

fn train(engine: &Engine, batch: u64, c: ClientId, task: &Payload) -> ClientOutcome {
    let outcome = engine.train_async_task(batch, c, task, &mut Scratch::default());
    assert!(
        !matches!(outcome, ClientOutcome::Dropped(_)),
        "local update failed: {outcome:?}"
    );
    outcome
}

/// Steps `engine` until it has made `updates` server updates (or is done). When it waits, only the
/// oldest started task is trained and submitted, so tasks stay in flight; every start is recorded in
/// `started`.
fn run(engine: &mut Engine, updates: u64, started: &mut Started) {
    let all: Vec<ClientId> = (0..engine.scenario().clients as u32).collect();
    let mut queue: Vec<(u64, ClientId)> = Vec::new();
    let mut made = 0;
    while made < updates {
        match engine.step(&all).expect("step") {
            AsyncStep::Start(task) => {
                for &c in &task.selected {
                    queue.push((task.round, c));
                    started.insert((task.round, c), task.broadcast.clone());
                }
            }
            AsyncStep::Wait => {
                let (batch, c) = queue.remove(0);
                let outcome = train(engine, batch, c, &started[&(batch, c)]);
                engine.submit(batch, c, outcome).expect("accepted");
            }
            AsyncStep::Ended(_) => {
                engine.take_verdicts();
                made += 1;
            }
            AsyncStep::Done => return,
        }
    }
}

fn bits(g: &[f32]) -> Vec<u32> {
    g.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn a_snapshot_with_tasks_in_flight_restores_and_starts_them_again() {
    let mut straight = engine();
    run(&mut straight, u64::MAX, &mut Started::new());
    assert!(straight.is_done());

    let mut first = engine();
    let mut started = Started::new();
    run(&mut first, 2, &mut started);
    let snap = first.snapshot();
    let a = snap.asynchronous.clone().expect("asynchronous part");
    assert!(!a.flights.is_empty(), "no task in flight at the snapshot");
    assert!(
        a.broadcasts.windows(2).all(|w| w[0].0 < w[1].0),
        "each model version's task once, ascending"
    );
    let in_flight: BTreeSet<(u64, ClientId)> =
        a.flights.iter().map(|f| (f.batch, f.client)).collect();

    let mut resumed = engine();
    resumed.restore(snap.clone()).expect("restore");
    assert_eq!(resumed.next_round(), 2);
    assert_eq!(resumed.global(), first.global());
    // The restored engine's own snapshot is the one it came from.
    assert_eq!(resumed.snapshot().asynchronous, Some(a.clone()));

    // Its first steps start exactly the tasks in flight, one dispatch each, with the tasks they had.
    let all: Vec<ClientId> = (0..10).collect();
    let mut again = BTreeSet::new();
    let mut batches = Vec::new();
    loop {
        match resumed.step(&all).expect("step") {
            AsyncStep::Start(task) if task.round < a.next_batch => {
                assert!(
                    task.selected.windows(2).all(|w| w[0] < w[1]),
                    "clients ascending"
                );
                batches.push(task.round);
                for &c in &task.selected {
                    assert_eq!(
                        *task.broadcast,
                        *started[&(task.round, c)],
                        "client {c} of dispatch {} is handed another task",
                        task.round
                    );
                    again.insert((task.round, c));
                }
            }
            AsyncStep::Start(task) => {
                // Then new dispatches, numbered on from the snapshot's counter.
                assert_eq!(task.round, a.next_batch);
                break;
            }
            other => panic!("expected the restored tasks, then a new dispatch: {other:?}"),
        }
    }
    assert_eq!(again, in_flight);
    assert!(
        batches.windows(2).all(|w| w[0] < w[1]),
        "one start per dispatch"
    );

    // Continued from the snapshot (tasks trained in order of their first start), the run ends with
    // the uninterrupted run's model.
    let mut resumed = engine();
    resumed.restore(snap).expect("restore");
    run(&mut resumed, u64::MAX, &mut started);
    assert!(resumed.is_done());
    assert_eq!(bits(resumed.global()), bits(straight.global()));
}

#[test]
fn snapshots_that_do_not_fit_are_refused_with_a_reason() {
    let mut first = engine();
    run(&mut first, 1, &mut Started::new());
    let snap = first.snapshot();
    let a = snap.asynchronous.clone().expect("asynchronous part");
    assert!(!a.flights.is_empty());

    let refused = |snap: Snapshot| -> String {
        let mut e = engine();
        let before = bits(e.global());
        let err = e.restore(snap).expect_err("refused").to_string();
        assert_eq!(
            bits(e.global()),
            before,
            "a refused snapshot changes nothing"
        );
        err
    };
    let mut bad = snap.clone();
    bad.asynchronous.as_mut().unwrap().flights[0].client = 99;
    assert!(refused(bad).contains("10 clients"));

    let mut bad = snap.clone();
    bad.asynchronous.as_mut().unwrap().broadcasts.clear();
    assert!(refused(bad).contains("no task saved"));

    let mut bad = snap.clone();
    let f = bad.asynchronous.as_ref().unwrap().flights[0].clone();
    bad.asynchronous.as_mut().unwrap().flights.push(f);
    let err = refused(bad);
    assert!(
        err.contains("two tasks") || err.contains("at most"),
        "{err}"
    );

    let mut bad = snap.clone();
    bad.asynchronous.as_mut().unwrap().now_s = f64::NAN;
    assert!(refused(bad).contains("virtual time"));

    let mut bad = snap.clone();
    bad.asynchronous = None;
    assert!(refused(bad).contains("no asynchronous state"));

    // A synchronous engine refuses an asynchronous snapshot, and the other way round.
    let mut fedavg = engine_with(&["strategy={kind=\"fedavg\"}"]);
    let err = fedavg.restore(snap).expect_err("refused").to_string();
    assert!(err.contains("runs in rounds"), "{err}");
}

/// Resumed after any of its server updates, a run ends with the uninterrupted run's model, also when
/// tasks cut short by their client going offline (`[system] online`: known at dispatch, never handed
/// out) are in flight at the snapshot.
#[test]
fn resuming_after_any_server_update_gives_the_same_model() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let online = dir.path().join("online.csv");
    let mut rows = String::from("client,start_s,end_s\n");
    for c in 5..10 {
        rows.push_str(&format!("{c},0,0.6\n"));
    }
    std::fs::write(&online, rows).expect("online intervals");
    let system = format!(
        "system={{samples_per_s=50, speed={{dist=\"lognormal\", sigma=1}}, online=\"{}\"}}",
        online.display()
    );
    let settings = ["rounds=16", system.as_str()];
    let mut straight = engine_with(&settings);
    run(&mut straight, u64::MAX, &mut Started::new());
    assert!(straight.is_done());
    let mut offline_in_flight = false;
    for k in 1..16 {
        let mut first = engine_with(&settings);
        let mut started = Started::new();
        run(&mut first, k, &mut started);
        let snap = first.snapshot();
        let a = snap.asynchronous.as_ref().expect("asynchronous part");
        offline_in_flight |= a.flights.iter().any(|f| f.offline_s < f.ready_s);
        let mut resumed = engine_with(&settings);
        resumed.restore(snap).expect("restore");
        run(&mut resumed, u64::MAX, &mut started);
        assert!(resumed.is_done());
        assert_eq!(
            bits(resumed.global()),
            bits(straight.global()),
            "resumed after server update {k}"
        );
    }
    assert!(
        offline_in_flight,
        "no snapshot held a task cut short by going offline; the test would not cover them"
    );
}
