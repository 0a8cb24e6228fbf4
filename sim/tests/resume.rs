//! Checkpoint and resume for every registered strategy: a run interrupted after round 3, restored into a
//! fresh engine from its snapshot (as `fedsim server --resume` does) and continued, ends with the same
//! model bits as an uninterrupted run. Client state (h_i, c_i, g_i, …) lives with the clients, as in the
//! gRPC runtime, so it carries over; everything the server keeps must be in the strategy's saved state.

use std::sync::Arc;

use fedsim_algorithms::strategy::registry;
use fedsim_engine::{Engine, Scenario};
use fedsim_sim::{ClientStates, run_round};
use fedsim_types::ClientId;

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

/// Runs rounds until the engine has done `until` rounds (or all), keeping client states in `states`.
fn drive(engine: &mut Engine, states: &mut ClientStates, until: u64) {
    let all: Vec<ClientId> = (0..engine.scenario().clients as u32).collect();
    let mut done = 0;
    while !engine.is_done() && done < until {
        run_round(engine, states, &all).expect("round");
        done += 1;
    }
}

#[test]
fn every_strategy_resumes_to_the_same_model() {
    // Every registered strategy (its registry example), then the variants.
    // Asynchronous strategies keep no checkpoints (tasks in flight are not saved; `--resume` refuses
    // them), so they are left out.
    let synchronous = registry::all().iter().filter(|e| {
        !e.example_spec()
            .is_ok_and(|spec| spec.capabilities().asynchronous)
    });
    let skipped = registry::all().len() - synchronous.clone().count();
    let cases = synchronous
        .map(|e| (e.example_table(), e.example_settings))
        .chain(VARIANTS.iter().map(|t| (t.to_string(), &[][..])));
    let mut covered = 0;
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
    assert_eq!(covered + skipped, registry::all().len() + VARIANTS.len());
    assert_eq!(skipped, 2, "fedbuff and fedasync");
}
