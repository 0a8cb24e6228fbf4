//! Asynchronous strategies (FedBuff, FedAsync) on the engine's event queue: the model depends only on
//! the clients' results, never on when or in which order they are submitted, so the simulator and a
//! deployment agree; `deploy.order = "arrival"` is the documented exception.

use std::sync::Arc;

use fedsim_engine::engine::{AsyncStep, RoundEnd};
use fedsim_engine::{ClientOutcome, Engine, Scenario};
use fedsim_nn::Scratch;
use fedsim_types::{ClientId, Payload};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

const BASE: &str = r#"
name = "async"
seed = 5
rounds = 12
clients = 16
[data]
kind = "synthetic"
features = 10
classes = 3
samples_per_client = 20
test_samples = 100
[partition]
scheme = "natural"
[model]
kind = "logreg"
[train]
lr = 0.05
batch_size = 5
steps = 3
[participation]
kind = "bernoulli"
p = 0.7
[system]
samples_per_s = 100
speed = { dist = "lognormal", sigma = 1 }
upload_bps = { dist = "uniform", low = 1e4, high = 1e5 }
latency_s = 0.01
jitter = 0.3
[eval]
every = 4
"#;

fn engine(strategy: &str) -> Engine {
    let text = format!("{BASE}\n[strategy]\n{strategy}\n");
    let scenario = Scenario::parse(&text, &[]).expect("scenario");
    let data = Arc::new(scenario.load_data().expect("synthetic data"));
    Engine::new(scenario, data, "test").expect("engine")
}

/// Trains one started task.
fn train(engine: &Engine, batch: u64, c: ClientId, broadcast: &Payload) -> ClientOutcome {
    let outcome = engine.train_async_task(batch, c, broadcast, &mut Scratch::default());
    assert!(
        !matches!(outcome, ClientOutcome::Dropped(_)),
        "local update failed: {outcome:?}"
    );
    outcome
}

/// Runs to the end. With `shuffle_seed`, results are held back and submitted a random few at a time
/// in random order (as results arrive over a network); without, each task's result is submitted as
/// soon as it is started. Returns the final model's bits and the participants and largest staleness of
/// every server update.
fn run(
    strategy: &str,
    shuffle_seed: Option<u64>,
    by_arrival: bool,
) -> (Vec<u32>, Vec<(Vec<u32>, u64)>) {
    let mut e = engine(strategy);
    if by_arrival {
        e.apply_in_arrival_order();
    }
    let all: Vec<ClientId> = (0..16).collect();
    let mut held: Vec<(u64, ClientId, ClientOutcome)> = Vec::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(shuffle_seed.unwrap_or(0));
    let mut participants = Vec::new();
    loop {
        match e.step(&all).expect("step") {
            AsyncStep::Start(task) => {
                for &c in &task.selected {
                    let outcome = train(&e, task.round, c, &task.broadcast);
                    if shuffle_seed.is_some() {
                        held.push((task.round, c, outcome));
                    } else {
                        e.submit(task.round, c, outcome).expect("accepted");
                    }
                }
            }
            AsyncStep::Wait => {
                assert!(!held.is_empty(), "the engine waits for nothing");
                held.shuffle(&mut rng);
                let n = rng.random_range(1..=held.len());
                for (batch, c, outcome) in held.drain(..n) {
                    e.submit(batch, c, outcome).expect("accepted");
                }
            }
            AsyncStep::Ended(RoundEnd::Recorded(rec)) => {
                let stale = rec.extra.get("staleness_max").copied().unwrap_or(0.0) as u64;
                participants.push((rec.participant_ids, stale));
            }
            AsyncStep::Ended(RoundEnd::EvaluationDue) => panic!("no federated evaluation here"),
            AsyncStep::Done => break,
        }
    }
    assert_eq!(e.next_round(), 12);
    // A run in arrival order says in its summary that it is not reproducible.
    let flag = e.summary().extra.get("reproducible").copied();
    assert_eq!(flag, by_arrival.then_some(0.0));
    (
        e.global().iter().map(|v| v.to_bits()).collect(),
        participants,
    )
}

#[test]
fn the_model_does_not_depend_on_when_results_arrive() {
    for strategy in [
        "kind = \"fedbuff\"\nconcurrency = 6\nbuffer_size = 3",
        "kind = \"fedasync\"\nconcurrency = 5\nalpha = 0.5\nstaleness = { kind = \"hinge\", a = 1.0, b = 1 }",
    ] {
        let (reference, order) = run(strategy, None, false);
        for seed in 1..4 {
            let (model, o) = run(strategy, Some(seed), false);
            assert_eq!(
                o, order,
                "{strategy}: arrival order {seed} changed who was applied"
            );
            assert_eq!(
                model, reference,
                "{strategy}: arrival order {seed} changed the model"
            );
        }
        // Stale updates happen (otherwise the test would not exercise the staleness weights).
        assert!(
            order.iter().any(|(_, stale)| *stale > 0),
            "{strategy}: no stale update"
        );
    }
}

#[test]
fn arrival_order_applies_updates_as_they_come() {
    let strategy = "kind = \"fedasync\"\nconcurrency = 5";
    let (virtual_order, a) = run(strategy, Some(7), false);
    let (arrival, b) = run(strategy, Some(7), true);
    assert!(
        a != b || virtual_order != arrival,
        "arrival order gave the virtual order's run: the test does not tell them apart"
    );
}

#[test]
fn stale_duplicate_and_unstarted_results_are_refused() {
    let mut e = engine("kind = \"fedbuff\"\nconcurrency = 2\nbuffer_size = 1");
    let all: Vec<ClientId> = (0..16).collect();
    let AsyncStep::Start(task) = e.step(&all).expect("step") else {
        panic!("the first step starts tasks");
    };
    assert_eq!(task.selected.len(), 2);
    let c = task.selected[0];
    let idle = (0..16).find(|x| !task.selected.contains(x)).unwrap();
    let outcome = |e: &Engine| train(e, task.round, c, &task.broadcast);
    let o = outcome(&e);
    assert!(e.submit(task.round + 1, c, o).is_err(), "wrong dispatch");
    let o = outcome(&e);
    assert!(e.submit(task.round, idle, o).is_err(), "not started");
    let o = outcome(&e);
    e.submit(task.round, c, o).expect("first result");
    let o = outcome(&e);
    assert!(e.submit(task.round, c, o).is_err(), "duplicate");
}
