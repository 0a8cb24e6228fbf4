//! `eval.stop_at_targets`: the run ends at the round that reaches the last target, that round is the
//! one a run without early stopping reports, and the final model is that of a run capped there.

use fedsim_engine::Scenario;
use fedsim_sim::{SimOptions, run};

const SCENARIO: &str = r#"
name = "stop"
seed = 5
rounds = 60
clients = 20
[data]
kind = "synthetic"
features = 20
classes = 4
samples_per_client = 40
test_samples = 400
[partition]
scheme = "natural"
[model]
kind = "logreg"
[train]
lr = 0.1
batch_size = 10
epochs = 1
[participation]
kind = "uniform"
fraction = 0.5
[eval]
every = 1
targets = [0.5]
"#;

fn summary(overrides: &[&str]) -> fedsim_engine::report::Summary {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let scenario = Scenario::parse(SCENARIO, &overrides).expect("scenario parses");
    run(
        scenario,
        None,
        &SimOptions {
            threads: Some(1),
            ..SimOptions::default()
        },
    )
    .expect("run succeeds")
}

#[test]
fn run_ends_at_the_round_reaching_the_target() {
    let full = summary(&[]);
    let reached = full.rounds_to_target["0.5"].expect("the full run reaches 50%");
    assert!(reached < 60, "target reached only at the cap ({reached})");
    let stopped = summary(&["eval.stop_at_targets=true"]);
    assert_eq!(stopped.rounds_to_target["0.5"], Some(reached));
    assert_eq!(
        stopped.rounds, reached,
        "the stopped run ends at the target round"
    );
    assert!(stopped.rounds < full.rounds);
    let capped = summary(&[&format!("rounds={reached}")]);
    assert_eq!(stopped.final_model_hash, capped.final_model_hash);
}

#[test]
fn stop_at_targets_without_targets_is_an_error() {
    let err = Scenario::parse(
        SCENARIO,
        &["eval.targets=[]".into(), "eval.stop_at_targets=true".into()],
    )
    .expect_err("no targets to stop at");
    assert!(err.to_string().contains("eval.stop_at_targets"), "{err}");
}
