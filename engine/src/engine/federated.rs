//! Federated evaluation rounds (`[eval] federated`): after a round closes, the chosen clients evaluate
//! the new global model on their local test sets, and the round's record gains the distribution of
//! their results. The same protocol as training, once for both runtimes: [`Engine::begin_evaluation`]
//! picks the clients, [`Engine::submit_evaluation`] validates each result, [`Engine::end_evaluation`]
//! folds them into the record and writes it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use fedsim_types::rng::{Purpose, stream};
use fedsim_types::{ClientId, Payload, TensorData};
use rand::seq::index;

use super::Engine;
use crate::EngineError;
use crate::fedeval::{ClientEval, FedEvalStats};
use crate::protocol::{EvalTask, Refusal};
use crate::report::RoundRecord;
use crate::scenario::SampleCounts;

/// An evaluation that is open for results.
#[derive(Debug)]
pub(super) struct OpenEvaluation {
    round: u64,
    clients: Vec<ClientId>,
    results: BTreeMap<ClientId, ClientEval>,
    failed: BTreeMap<ClientId, String>,
    started: Instant,
}

impl Engine {
    /// Whether the round that just closed (`self.next_round` rounds done) is followed by a federated
    /// evaluation.
    pub(super) fn federated_due(&self, last: bool) -> bool {
        self.scenario
            .eval
            .federated
            .as_ref()
            .is_some_and(|f| last || self.next_round.is_multiple_of(f.every))
    }

    /// Records a finished round: folds it into the summary, writes it and returns it.
    pub(super) fn record(&mut self, rec: RoundRecord) -> Result<RoundRecord, EngineError> {
        self.summary.observe(&rec, &self.scenario.eval.targets);
        if let Some(w) = self.writer.as_mut() {
            w.round(&rec)?;
        }
        Ok(rec)
    }

    /// Starts the federated evaluation that [`Engine::end_round`] said is due: picks the evaluating
    /// clients among `available` (ascending) that the scenario's events leave reachable in the round
    /// just closed, drawn from (seed, round) when `eval.federated.clients` asks for fewer than all.
    pub fn begin_evaluation(&mut self, available: &[ClientId]) -> Result<EvalTask, EngineError> {
        let (Some(cfg), true, None) = (
            self.scenario.eval.federated.as_ref(),
            self.awaiting_record.is_some(),
            self.evaluation.as_ref(),
        ) else {
            return Err(EngineError::Protocol(
                "begin_evaluation without a due evaluation".into(),
            ));
        };
        let round = self.next_round - 1;
        let reachable = self.participation.reachable(round, available);
        let n = cfg.how_many(reachable.len());
        let mut clients = if n == reachable.len() {
            reachable
        } else {
            let mut rng = stream(self.scenario.seed, Purpose::EvalSelection, round, 0);
            index::sample(&mut rng, reachable.len(), n)
                .into_iter()
                .map(|i| reachable[i])
                .collect()
        };
        clients.sort_unstable();
        self.evaluation = Some(OpenEvaluation {
            round,
            clients: clients.clone(),
            results: BTreeMap::new(),
            failed: BTreeMap::new(),
            started: Instant::now(),
        });
        Ok(EvalTask {
            round,
            clients,
            model: Arc::new(Payload::new().with("global", TensorData::vector(self.global.clone()))),
        })
    }

    /// The clients of the open evaluation that have not reported yet.
    pub fn awaiting_evaluation(&self) -> Vec<ClientId> {
        self.evaluation.as_ref().map_or_else(Vec::new, |e| {
            e.clients
                .iter()
                .copied()
                .filter(|c| !e.results.contains_key(c) && !e.failed.contains_key(c))
                .collect()
        })
    }

    /// Hands in one evaluating client's result for `round` (0-based): its evaluation, or why it has
    /// none. Refused: a stale, unchosen or duplicate result, and an impossible one (accuracy outside
    /// [0, 1], a negative or non-finite loss, a sample count other than the client's local test size
    /// where this side knows it). A refused result counts as the client's failure to evaluate.
    pub fn submit_evaluation(
        &mut self,
        round: u64,
        client: ClientId,
        result: Result<ClientEval, String>,
    ) -> Result<(), Refusal> {
        let known_size = self
            .data
            .local_test
            .as_ref()
            .filter(|_| self.scenario.deploy.sample_counts == SampleCounts::Partition)
            .map(|p| p.client_len(client as usize) as u64);
        // Declared sizes weight the means only up to the cap of the weighting policy.
        let cap = match self.scenario.deploy.sample_counts {
            SampleCounts::Declared => self.scenario.deploy.max_declared_samples,
            SampleCounts::Partition => u64::MAX,
        };
        let Some(open) = self.evaluation.as_mut().filter(|e| e.round == round) else {
            return Err(Refusal::Stale { round: round + 1 });
        };
        if open.clients.binary_search(&client).is_err() {
            return Err(Refusal::NotSelected {
                client,
                round: round + 1,
            });
        }
        if open.results.contains_key(&client) || open.failed.contains_key(&client) {
            return Err(Refusal::Duplicate {
                client,
                round: round + 1,
            });
        }
        let e = match result {
            Ok(e) => e,
            Err(reason) => {
                tracing::info!(round = round + 1, client, %reason, "client could not evaluate");
                open.failed.insert(client, reason);
                return Ok(());
            }
        };
        match check_result(e, known_size) {
            Ok(mut e) => {
                e.client = client;
                e.samples = e.samples.min(cap);
                open.results.insert(client, e);
                Ok(())
            }
            Err(msg) => {
                tracing::warn!(round = round + 1, client, error = %msg, "evaluation result refused");
                open.failed.insert(client, msg.clone());
                Err(Refusal::InvalidEvaluation { client, msg })
            }
        }
    }

    /// Closes the evaluation: clients that have not reported are left out, the statistics of the
    /// others join the round's record, which is then written and returned.
    pub fn end_evaluation(&mut self) -> Result<RoundRecord, EngineError> {
        let (Some(open), Some(mut rec)) = (self.evaluation.take(), self.awaiting_record.take())
        else {
            return Err(EngineError::Protocol(
                "end_evaluation without an open evaluation".into(),
            ));
        };
        let evals: Vec<ClientEval> = open.results.values().copied().collect();
        let x = &mut rec.extra;
        x.insert("fed_selected".into(), open.clients.len() as f64);
        x.insert(
            "fed_missing".into(),
            (open.clients.len() - open.results.len()) as f64,
        );
        if let Some(s) = FedEvalStats::of(&evals) {
            x.insert("fed_clients".into(), s.clients as f64);
            x.insert("fed_accuracy".into(), s.weighted_accuracy);
            x.insert("fed_loss".into(), s.weighted_loss);
            x.insert("fed_mean_accuracy".into(), s.mean_accuracy);
            x.insert("fed_std_accuracy".into(), s.std_accuracy);
            x.insert("fed_p10_accuracy".into(), s.p10_accuracy);
            x.insert("fed_min_accuracy".into(), s.min_accuracy);
            for (k, v) in [
                ("final_fed_accuracy", s.weighted_accuracy),
                ("final_fed_mean_accuracy", s.mean_accuracy),
                ("final_fed_p10_accuracy", s.p10_accuracy),
                ("final_fed_min_accuracy", s.min_accuracy),
            ] {
                self.summary.extra.insert(k.into(), v);
            }
        } else {
            x.insert("fed_clients".into(), 0.0);
        }
        let secs = open.started.elapsed().as_secs_f64();
        x.insert("time_fed_eval_s".into(), secs);
        rec.time_round_s += secs;
        rec.wall_s = self.started.elapsed().as_secs_f64();
        if self.scenario.clients <= 100_000 {
            self.summary.client_evals = evals;
        }
        self.record(rec)
    }
}

/// The checks of one evaluation result; `Err` names the impossible value.
fn check_result(e: ClientEval, known_size: Option<u64>) -> Result<ClientEval, String> {
    if !(e.accuracy.is_finite() && (0.0..=1.0).contains(&e.accuracy)) {
        return Err(format!(
            "impossible accuracy {} (must be in [0, 1])",
            e.accuracy
        ));
    }
    if !(e.loss.is_finite() && e.loss >= 0.0) {
        return Err(format!(
            "impossible loss {} (must be finite and not negative)",
            e.loss
        ));
    }
    if let Some(n) = known_size.filter(|&n| n != e.samples) {
        return Err(format!(
            "impossible sample count {} (the client's local test set has {n} samples)",
            e.samples
        ));
    }
    Ok(e)
}
