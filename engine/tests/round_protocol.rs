//! The round protocol both runtimes share ([`fedsim_engine::Engine`]): refusals of stale, unselected and
//! duplicate results, client-id ordering with verdicts, payloads kept outside memory, and the rule that
//! a round whose aggregate is not finite is never committed.

use std::sync::Arc;

use fedsim_engine::engine::{PayloadSource, Refusal, RoundIo};
use fedsim_engine::{ClientOutcome, Engine, Scenario};
use fedsim_types::{ClientId, Payload, TensorData};

const SCENARIO: &str = r#"
name = "protocol"
seed = 5
rounds = 4
clients = 4
[data]
kind = "synthetic"
features = 6
classes = 3
samples_per_client = 10
test_samples = 50
[model]
kind = "logreg"
[strategy]
kind = "fedavg"
[participation]
kind = "full"
[eval]
every = 1
train_loss = false
"#;

fn engine() -> Engine {
    engine_with(&[])
}

fn engine_with(settings: &[&str]) -> Engine {
    let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
    let scenario = Scenario::parse(SCENARIO, &settings).expect("scenario");
    let data = Arc::new(scenario.load_data().expect("synthetic data"));
    Engine::new(scenario, data, "test").expect("engine")
}

fn delta(engine: &Engine, value: f32) -> Payload {
    Payload::new().with(
        "delta",
        TensorData::vector(vec![value; engine.global().len()]),
    )
}

const ALL: [ClientId; 4] = [0, 1, 2, 3];

#[test]
fn stale_unselected_and_duplicate_results_are_refused() {
    let mut e = engine();
    let task = e.begin_round(&[0, 1, 2]);
    assert_eq!(task.selected, vec![0, 1, 2]);
    let d = delta(&e, 0.0);
    let stale = e.submit(task.round + 1, 0, ClientOutcome::update(d.clone(), 10));
    assert!(matches!(stale, Err(Refusal::Stale { .. })), "{stale:?}");
    let unselected = e.submit(task.round, 3, ClientOutcome::update(d.clone(), 10));
    assert!(matches!(
        unselected,
        Err(Refusal::NotSelected { client: 3, .. })
    ));
    e.submit(task.round, 1, ClientOutcome::update(d.clone(), 10))
        .unwrap();
    let again = e.submit(task.round, 1, ClientOutcome::update(d.clone(), 10));
    assert!(matches!(again, Err(Refusal::Duplicate { client: 1, .. })));
    let short = Payload::new().with("delta", TensorData::vector(vec![0.0; 3]));
    let invalid = e.submit(task.round, 2, ClientOutcome::update(short, 10));
    assert!(matches!(invalid, Err(Refusal::Invalid(_))), "{invalid:?}");
    assert_eq!(e.awaiting(), vec![0]);
    assert_eq!(e.awaiting_count(), 1);
    assert_eq!(e.updates_received(), 1);
}

#[test]
fn updates_are_folded_in_client_order_and_each_gets_a_verdict() {
    let mut e = engine();
    let task = e.begin_round(&ALL);
    let d = delta(&e, 0.01);
    // Client 2 arrives first: it waits for 0 and 1.
    e.submit(task.round, 2, ClientOutcome::update(d.clone(), 10))
        .unwrap();
    assert!(e.take_verdicts().is_empty());
    e.submit(task.round, 0, ClientOutcome::update(d.clone(), 10))
        .unwrap();
    let v: Vec<ClientId> = e.take_verdicts().iter().map(|v| v.client).collect();
    assert_eq!(v, vec![0]);
    e.submit(
        task.round,
        1,
        ClientOutcome::Dropped("could not train".into()),
    )
    .unwrap();
    let v: Vec<ClientId> = e.take_verdicts().iter().map(|v| v.client).collect();
    assert_eq!(v, vec![2], "1 dropped, so 2 is folded in next");
    // Client 3 never reports: it is dropped when the round closes.
    let rec = e
        .end_round(RoundIo::default())
        .unwrap()
        .into_record()
        .unwrap();
    assert_eq!(rec.participant_ids, vec![0, 2]);
    assert!(e.take_verdicts().is_empty());
}

/// An update the runtime keeps elsewhere (like the coordinator's spool files) until its turn.
#[derive(Debug)]
struct Elsewhere(Payload);

impl PayloadSource for Elsewhere {
    fn peek(&self) -> Option<&Payload> {
        None
    }
    fn load(self: Box<Self>) -> Result<Payload, String> {
        Ok(self.0)
    }
}

#[test]
fn payloads_kept_elsewhere_are_validated_when_folded_in() {
    let mut e = engine();
    let task = e.begin_round(&ALL);
    let bad = Payload::new().with(
        "delta",
        TensorData::vector(vec![f32::NAN; e.global().len()]),
    );
    // Not in memory: accepted on arrival, refused when its turn comes.
    e.submit(task.round, 1, ClientOutcome::update(Elsewhere(bad), 10))
        .unwrap();
    e.submit(task.round, 0, ClientOutcome::update(delta(&e, 0.0), 10))
        .unwrap();
    let verdicts = e.take_verdicts();
    assert_eq!(verdicts.len(), 2);
    assert!(verdicts[0].folded.is_ok());
    assert!(verdicts[1].folded.as_ref().unwrap_err().contains("finite"));
}

#[test]
fn a_round_whose_aggregate_is_not_finite_is_rejected_and_the_model_kept() {
    // A server learning rate of 4 makes the step from two finite but huge updates overflow f32.
    let mut e = engine_with(&["strategy.server_lr=4.0"]);
    let before = e.global().to_vec();
    let task = e.begin_round(&ALL);
    for c in [0, 1] {
        e.submit(
            task.round,
            c,
            ClientOutcome::update(delta(&e, f32::MAX), 1_000),
        )
        .unwrap();
    }
    for c in [2, 3] {
        e.submit(task.round, c, ClientOutcome::update(delta(&e, 0.0), 10))
            .unwrap();
    }
    let rec = e
        .end_round(RoundIo::default())
        .unwrap()
        .into_record()
        .unwrap();
    assert_eq!(rec.extra.get("round_rejected"), Some(&1.0));
    assert!(rec.participant_ids.is_empty());
    assert_eq!(e.global(), &before[..], "the previous model is kept");
    assert!(e.global().iter().all(|v| v.is_finite()));
    // The run goes on: an honest round is committed (step = 4 × 0.125).
    let task = e.begin_round(&ALL);
    for c in ALL {
        e.submit(task.round, c, ClientOutcome::update(delta(&e, 0.125), 10))
            .unwrap();
    }
    let rec = e
        .end_round(RoundIo::default())
        .unwrap()
        .into_record()
        .unwrap();
    assert_eq!(rec.participant_ids, ALL.to_vec());
    assert!(
        e.global()
            .iter()
            .zip(&before)
            .all(|(a, b)| (a - b - 0.5).abs() < 1e-5)
    );
    let snap = e.snapshot();
    assert!(snap.global.iter().all(|v| v.is_finite()));
}

/// One round in which client 0 sends a delta of 1 claiming 10^12 samples and the others send 0
/// declaring 10: how far the first parameter moved.
fn attacker_shift(mut e: Engine) -> f32 {
    let before = e.global()[0];
    let task = e.begin_round(&ALL);
    e.submit(
        task.round,
        0,
        ClientOutcome::update(delta(&e, 1.0), 1_000_000_000_000),
    )
    .unwrap();
    for c in [1, 2, 3] {
        e.submit(task.round, c, ClientOutcome::update(delta(&e, 0.0), 10))
            .unwrap();
    }
    e.end_round(RoundIo::default())
        .unwrap()
        .into_record()
        .unwrap();
    e.global()[0] - before
}

#[test]
fn declared_sample_counts_are_not_trusted_as_weights() {
    // Default policy: weights come from the partition, whatever a client declares.
    let moved = attacker_shift(engine());
    assert!(
        moved > 0.0 && moved < 0.6,
        "the attacker's weight is its partition's: moved {moved}"
    );
    // Declared counts, capped: the same attack moves the model by at most the cap's share.
    let moved = attacker_shift(engine_with(&[
        "deploy.sample_counts=\"declared\"",
        "deploy.max_declared_samples=10",
    ]));
    assert!(
        (moved - 0.25).abs() < 1e-6,
        "capped at 10 of 40 samples: moved {moved}"
    );

    // The declared policy needs a stated cap.
    let e = Scenario::parse(SCENARIO, &["deploy.sample_counts=\"declared\"".into()]).unwrap_err();
    assert!(e.to_string().contains("deploy.max_declared_samples"), "{e}");
}

#[test]
fn capabilities_are_checked_at_load() {
    // Known-probability weighting with a participation model that has no probabilities is refused
    // (it used to fall back to p = 1 silently).
    for participation in ["{kind=\"full\"}", "{kind=\"uniform\", fraction=0.5}"] {
        let e = Scenario::parse(
            SCENARIO,
            &[
                format!("participation={participation}"),
                "strategy={kind=\"fedavg\", weighting=\"known_probability\"}".into(),
            ],
        )
        .unwrap_err();
        assert!(e.to_string().contains("participation.kind"), "{e}");
    }
    let ok = Scenario::parse(
        SCENARIO,
        &[
            "participation={kind=\"bernoulli\", p=0.5}".into(),
            "strategy={kind=\"fedavgm\", weighting=\"known_probability\"}".into(),
        ],
    );
    assert!(ok.is_ok(), "{ok:?}");
    // FRL needs a supermask model.
    let e = Scenario::parse(SCENARIO, &["strategy={kind=\"frl\"}".into()]).unwrap_err();
    assert!(e.to_string().contains("model.kind"), "{e}");
}

#[test]
fn the_coordinator_has_a_round_deadline_by_default() {
    let s = Scenario::parse(SCENARIO, &[]).unwrap();
    assert_eq!(s.round.deadline_s, 600.0);
    let s = Scenario::parse(SCENARIO, &["round.deadline_s=0".into()]).unwrap();
    assert_eq!(s.round.deadline_s, 0.0, "0 turns it off");
}

#[test]
fn updates_over_the_norm_bound_are_refused() {
    let mut e = engine_with(&["round.max_update_norm=10.0"]);
    let task = e.begin_round(&ALL);
    let n = e.global().len() as f32;
    // Norm of a constant vector v over n values: |v| sqrt(n).
    let small = 9.0 / n.sqrt();
    let large = 11.0 / n.sqrt();
    // Kept elsewhere until its turn: accepted on arrival, refused when folded in.
    e.submit(
        task.round,
        2,
        ClientOutcome::update(Elsewhere(delta(&e, large)), 10),
    )
    .unwrap();
    e.submit(task.round, 0, ClientOutcome::update(delta(&e, small), 10))
        .unwrap();
    // In memory: refused on arrival.
    let refused = e.submit(task.round, 1, ClientOutcome::update(delta(&e, large), 10));
    assert!(
        matches!(&refused, Err(Refusal::Invalid(err)) if err.to_string().contains("max_update_norm")),
        "{refused:?}"
    );
    let verdicts = e.take_verdicts();
    let refused_later = verdicts
        .iter()
        .find(|v| v.client == 2)
        .expect("2 was folded in");
    assert!(
        refused_later
            .folded
            .as_ref()
            .unwrap_err()
            .contains("max_update_norm")
    );
    e.submit(task.round, 3, ClientOutcome::update(delta(&e, small), 10))
        .unwrap();
    let rec = e
        .end_round(RoundIo::default())
        .unwrap()
        .into_record()
        .unwrap();
    assert_eq!(rec.participant_ids, vec![0, 3]);
    let e = Scenario::parse(SCENARIO, &["round.max_update_norm=-1".into()]).unwrap_err();
    assert!(e.to_string().contains("round.max_update_norm"), "{e}");
}
