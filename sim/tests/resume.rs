//! Checkpoint and resume for every registered strategy: a run interrupted after round 3, restored into a
//! fresh engine from its snapshot (as `fedsim server --resume` does) and continued, ends with the same
//! model bits as an uninterrupted run. Client state (h_i, c_i, g_i, …) lives with the clients, as in the
//! gRPC runtime, so it carries over; everything the server keeps must be in the strategy's saved state.

use std::sync::Arc;

use fedsim_core::{ClientId, Engine, Scenario};
use fedsim_sim::{ClientStates, run_round};

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

/// One `[strategy]` table per registered kind (plus variants whose server state differs).
const STRATEGIES: &[&str] = &[
    r#"kind = "fedavg""#,
    r#"kind = "fedavg"
weighting = "all_clients""#,
    r#"kind = "fedau""#,
    r#"kind = "fedau"
cutoff = 2"#,
    r#"kind = "mifa""#,
    r#"kind = "fedvarp""#,
    r#"kind = "fedprox"
mu = 0.1"#,
    r#"kind = "scaffold""#,
    r#"kind = "fedspeed""#,
    r#"kind = "feddyn""#,
    r#"kind = "fedavgm""#,
    r#"kind = "fedadagrad""#,
    r#"kind = "fedadam""#,
    r#"kind = "fedyogi""#,
    r#"kind = "fedavg_ef21"
compressor = { kind = "top_k", fraction = 0.2 }"#,
    r#"kind = "ef21"
step_size = 0.5
compressor = { kind = "top_k", k = 3 }"#,
    r#"kind = "ef21_plus"
step_size = 0.5
compressor = { kind = "top_k", k = 3 }"#,
    r#"kind = "ef"
step_size = 0.5
compressor = { kind = "top_k", k = 3 }"#,
    r#"kind = "gd"
step_size = 0.5"#,
    r#"kind = "fedavg"
aggregator = { kind = "trimmed_mean", trim = 1 }"#,
    r#"kind = "fedavg"
aggregator = { kind = "multi_krum", f = 1 }"#,
];

/// Strategies that need other scenario settings: (`[strategy]` table, `--set` overrides).
const WITH_OVERRIDES: &[(&str, &[&str])] = &[(
    r#"kind = "frl""#,
    &[
        "model={kind=\"supermask_mlp\", hidden=[8]}",
        "train.momentum=0.9",
    ],
)];

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
    let cases = STRATEGIES
        .iter()
        .map(|t| (*t, &[][..]))
        .chain(WITH_OVERRIDES.iter().copied());
    for (table, overrides) in cases {
        let text = format!("{BASE}\n[strategy]\n{table}\n");
        let overrides: Vec<String> = overrides.iter().map(|o| o.to_string()).collect();
        let scenario =
            Scenario::parse(&text, &overrides).unwrap_or_else(|e| panic!("{table}: {e}"));
        let data = Arc::new(
            fedsim_data::load_federated(
                &scenario.data,
                &scenario.partition,
                scenario.clients,
                scenario.seed,
            )
            .expect("synthetic data"),
        );

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
}
