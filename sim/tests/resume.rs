//! Checkpoint and resume for every registered strategy: a run interrupted after round 3, restored into a
//! fresh engine from its snapshot (as `fedsim server --resume` does) and continued, ends with the same
//! model bits as an uninterrupted run. Client state (h_i, c_i, g_i, …) lives with the clients, as in the
//! gRPC runtime, so it carries over; everything the server keeps must be in the strategy's saved state.
//! Asynchronous strategies (FedBuff, FedAsync) are interrupted after their third server update with
//! tasks in flight, some of them finished but not yet applied: the snapshot keeps the tasks, and the
//! restored engine hands them out again.

use std::sync::Arc;

use fedsim_algorithms::strategy::registry;
use fedsim_engine::engine::{AsyncStep, RoundEnd};
use fedsim_engine::{ClientOutcome, Engine, Scenario};
use fedsim_nn::Scratch;
use fedsim_sim::{ClientStates, run_asynchronous, run_federated_evaluation, run_round};
use fedsim_types::{ClientId, Payload};

const BASE: &str = r#"
name = "resume"
seed = 3
rounds = 6
clients = 12
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
p = 0.4
[eval]
every = 1
"#;

/// Variants of registered kinds whose server state differs from their registry example's.
const VARIANTS: &[&str] = &[
    r#"kind = "fedavg"
weighting = "all_clients""#,
    r#"kind = "fedau"
cutoff = 2"#,
    r#"kind = "fedavg"
aggregator = { kind = "trimmed_mean", trim = 1 }"#,
    r#"kind = "fedavg"
aggregator = { kind = "multi_krum", f = 1 }"#,
];

/// Asynchronous cases beyond the registry examples: clients of different speeds and bandwidths, so
/// tasks finish out of start order and several model versions are in flight at once.
const ASYNC_VARIANTS: &[(&str, &[&str])] = &[(
    r#"kind = "fedbuff"
concurrency = 8
buffer_size = 2"#,
    &[
        "system={samples_per_s=100, speed={dist=\"lognormal\", sigma=1}, upload_bps={dist=\"uniform\", low=1e4, high=1e5}, latency_s=0.01, jitter=0.3}",
    ],
)];

/// Runs rounds until the engine has done `until` rounds (or all), keeping client states in `states`;
/// an asynchronous engine makes `until` server updates (or runs to the end).
fn drive(engine: &mut Engine, states: &mut ClientStates, until: u64) {
    let all: Vec<ClientId> = (0..engine.scenario().clients as u32).collect();
    if engine.is_asynchronous() {
        if until == u64::MAX {
            run_asynchronous(engine, &all, &mut |_| Ok(())).expect("asynchronous run");
        } else {
            drive_async(engine, &all, until);
        }
        return;
    }
    let mut done = 0;
    while !engine.is_done() && done < until {
        run_round(engine, states, &all).expect("round");
        done += 1;
    }
}

/// Steps an asynchronous engine as the simulator does (started tasks are queued and trained when the
/// engine waits, their results submitted together) until it has made `until` server updates. Tasks
/// still queued then are abandoned, as a killed coordinator's are.
fn drive_async(engine: &mut Engine, all: &[ClientId], until: u64) {
    let mut queued: Vec<(u64, ClientId, Arc<Payload>)> = Vec::new();
    let mut updates = 0;
    while updates < until {
        match engine.step(all).expect("step") {
            AsyncStep::Start(task) => queued.extend(
                task.selected
                    .iter()
                    .map(|&c| (task.round, c, task.broadcast.clone())),
            ),
            AsyncStep::Wait => {
                assert!(!queued.is_empty(), "the engine waits with no task to run");
                for (batch, c, broadcast) in std::mem::take(&mut queued) {
                    let outcome = train(engine, batch, c, &broadcast);
                    let _ = engine.submit(batch, c, outcome);
                }
                engine.take_verdicts();
            }
            AsyncStep::Ended(end) => {
                engine.take_verdicts();
                if let RoundEnd::EvaluationDue = end {
                    run_federated_evaluation(engine, all).expect("federated evaluation");
                }
                updates += 1;
            }
            AsyncStep::Done => return,
        }
    }
}

/// Trains one started task of an asynchronous run (no client state).
fn train(engine: &Engine, batch: u64, c: ClientId, broadcast: &Payload) -> ClientOutcome {
    engine.train_async_task(batch, c, broadcast, &mut Scratch::default())
}

#[test]
fn every_strategy_resumes_to_the_same_model() {
    // Every registered strategy (its registry example), asynchronous ones included, then the variants.
    let cases = registry::all()
        .iter()
        .map(|e| (e.example_table(), e.example_settings))
        .chain(VARIANTS.iter().map(|t| (t.to_string(), &[][..])))
        .chain(ASYNC_VARIANTS.iter().map(|(t, o)| (t.to_string(), *o)));
    let (mut covered, mut asynchronous) = (0, 0);
    for (table, overrides) in cases {
        covered += 1;
        let text = format!("{BASE}\n[strategy]\n{table}\n");
        let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
        let scenario =
            Scenario::parse(&text, &overrides).unwrap_or_else(|e| panic!("{table}: {e}"));
        let data = Arc::new(scenario.load_data().expect("synthetic data"));

        let mut straight = Engine::new(scenario.clone(), data.clone(), "sim").expect("engine");
        let mut states = ClientStates::default();
        drive(&mut straight, &mut states, u64::MAX);

        let mut first = Engine::new(scenario.clone(), data.clone(), "sim").expect("engine");
        let mut states = ClientStates::default();
        drive(&mut first, &mut states, 3);
        let snapshot = first.snapshot();
        drop(first);
        if let Some(a) = &snapshot.asynchronous {
            asynchronous += 1;
            assert!(
                !a.flights.is_empty(),
                "{table}: no task in flight at the snapshot; the test would not cover restoring them"
            );
        }
        let mut resumed = Engine::new(scenario, data, "sim").expect("engine");
        resumed
            .restore(snapshot)
            .unwrap_or_else(|e| panic!("{table}: restore: {e}"));
        drive(&mut resumed, &mut states, u64::MAX);

        let bits = |g: &[f32]| g.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(straight.global()),
            bits(resumed.global()),
            "{table}: the resumed run ended with a different model"
        );
    }
    assert_eq!(
        covered,
        registry::all().len() + VARIANTS.len() + ASYNC_VARIANTS.len()
    );
    assert_eq!(
        asynchronous,
        2 + ASYNC_VARIANTS.len(),
        "fedbuff, fedasync and the asynchronous variants"
    );
}
