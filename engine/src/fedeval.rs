//! Federated evaluation's summary statistics: how the global model serves each evaluating client,
//! not only the average (`../shared/algorithms.md`: FedAU's claim is about rarely participating
//! clients, whose accuracy the mean hides).

use serde::{Deserialize, Serialize};

use fedsim_types::ConfigError;

/// `[eval] federated = { every, clients, personalize_steps }`: every `every` rounds the global model is
/// evaluated by some clients on their local test sets (both runtimes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedEvalConfig {
    /// Evaluate after every this many rounds (the last round is always evaluated).
    #[serde(default = "one")]
    pub every: u64,
    /// Which available clients evaluate: `"all"`, a fraction in (0, 1] or a count.
    #[serde(default)]
    pub clients: EvalClients,
    /// Local SGD steps each client fine-tunes a copy of the model for before evaluating it
    /// (personalised accuracy); 0 evaluates the global model as it is.
    #[serde(default)]
    pub personalize_steps: usize,
}

fn one() -> u64 {
    1
}

/// How many of the available clients evaluate: `"all"`, a fraction (a float) or a count (an integer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvalClients {
    /// This many clients (fewer when fewer are available).
    Count(u64),
    /// This fraction of the available clients, rounded, at least one.
    Fraction(f64),
    /// `"all"`: every available client.
    Named(String),
}

impl Default for EvalClients {
    fn default() -> Self {
        EvalClients::Named("all".into())
    }
}

impl FederatedEvalConfig {
    /// Checks the settings, naming the bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.every == 0 {
            return Err(ConfigError::new(
                "eval.federated.every",
                "must be at least 1",
            ));
        }
        let key = "eval.federated.clients";
        match &self.clients {
            EvalClients::Count(0) => Err(ConfigError::new(key, "a count must be at least 1")),
            EvalClients::Fraction(f) if !(*f > 0.0 && *f <= 1.0) => Err(ConfigError::new(
                key,
                format!("a fraction must be in (0, 1], got {f}"),
            )),
            EvalClients::Named(n) if n != "all" => Err(ConfigError::new(
                key,
                format!("must be \"all\", a fraction in (0, 1] or a count, got \"{n}\""),
            )),
            _ => Ok(()),
        }
    }

    /// How many of `available` clients evaluate.
    pub fn how_many(&self, available: usize) -> usize {
        match &self.clients {
            EvalClients::Count(c) => (*c as usize).min(available),
            EvalClients::Fraction(f) => ((f * available as f64).round() as usize)
                .clamp(1, available.max(1))
                .min(available),
            EvalClients::Named(_) => available,
        }
    }
}

/// One client's evaluation of the global model on its local test set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientEval {
    /// The client.
    pub client: u32,
    /// Local test samples evaluated.
    pub samples: u64,
    /// Accuracy on them, in [0, 1].
    pub accuracy: f64,
    /// Mean loss on them.
    pub loss: f64,
}

/// The distribution of per-client results of one federated evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FedEvalStats {
    /// Clients that evaluated (with at least one test sample).
    pub clients: usize,
    /// Accuracy over all their samples (sample-weighted mean of the clients' accuracies).
    pub weighted_accuracy: f64,
    /// Loss over all their samples (sample-weighted mean).
    pub weighted_loss: f64,
    /// Unweighted mean of the clients' accuracies.
    pub mean_accuracy: f64,
    /// Population standard deviation of the clients' accuracies.
    pub std_accuracy: f64,
    /// 10th percentile of the clients' accuracies (linear interpolation between order statistics,
    /// NumPy's default).
    pub p10_accuracy: f64,
    /// The lowest client accuracy.
    pub min_accuracy: f64,
}

/// `q`-quantile (`q` in [0, 1]) of sorted values, interpolating linearly between order statistics
/// (NumPy's `percentile` default).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

impl FedEvalStats {
    /// The statistics of `evals`, ignoring clients with no test samples; `None` when none is left.
    /// Sums run in the order given (client order), so the result is deterministic.
    pub fn of(evals: &[ClientEval]) -> Option<Self> {
        let used: Vec<&ClientEval> = evals.iter().filter(|e| e.samples > 0).collect();
        if used.is_empty() {
            return None;
        }
        let n = used.len() as f64;
        let samples: f64 = used.iter().map(|e| e.samples as f64).sum();
        let weighted = |f: fn(&ClientEval) -> f64| {
            used.iter().map(|e| f(e) * e.samples as f64).sum::<f64>() / samples
        };
        let mean = used.iter().map(|e| e.accuracy).sum::<f64>() / n;
        let var = used
            .iter()
            .map(|e| (e.accuracy - mean).powi(2))
            .sum::<f64>()
            / n;
        let mut sorted: Vec<f64> = used.iter().map(|e| e.accuracy).collect();
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            clients: used.len(),
            weighted_accuracy: weighted(|e| e.accuracy),
            weighted_loss: weighted(|e| e.loss),
            mean_accuracy: mean,
            std_accuracy: var.sqrt(),
            p10_accuracy: quantile(&sorted, 0.1),
            min_accuracy: sorted[0],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(client: u32, samples: u64, accuracy: f64, loss: f64) -> ClientEval {
        ClientEval {
            client,
            samples,
            accuracy,
            loss,
        }
    }

    /// Five clients, values worked out by hand:
    /// accuracies 0.9, 0.5, 0.8, 1.0, 0.6 on 10, 30, 20, 10, 30 samples; losses 0.2, 1.0, 0.4, 0.1, 0.8.
    #[test]
    fn statistics_match_hand_computed_values() {
        let evals = [
            eval(0, 10, 0.9, 0.2),
            eval(1, 30, 0.5, 1.0),
            eval(2, 20, 0.8, 0.4),
            eval(3, 10, 1.0, 0.1),
            eval(4, 30, 0.6, 0.8),
            eval(5, 0, 0.0, 0.0), // no test samples: left out
        ];
        let s = FedEvalStats::of(&evals).unwrap();
        assert_eq!(s.clients, 5);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        // (9 + 15 + 16 + 10 + 18) / 100
        close(s.weighted_accuracy, 0.68);
        // (2 + 30 + 8 + 1 + 24) / 100
        close(s.weighted_loss, 0.65);
        // 3.8 / 5
        close(s.mean_accuracy, 0.76);
        // deviations 0.14, -0.26, 0.04, 0.24, -0.16: squares 0.0196 + 0.0676 + 0.0016 + 0.0576 +
        // 0.0256 = 0.172, / 5 = 0.0344
        close(s.std_accuracy, 0.0344f64.sqrt());
        // sorted 0.5, 0.6, 0.8, 0.9, 1.0: position 0.1 · 4 = 0.4 → 0.5 + 0.4 · 0.1
        close(s.p10_accuracy, 0.54);
        close(s.min_accuracy, 0.5);
    }

    #[test]
    fn one_client_and_no_client() {
        let s = FedEvalStats::of(&[eval(3, 7, 0.25, 2.0)]).unwrap();
        assert_eq!(
            (
                s.mean_accuracy,
                s.std_accuracy,
                s.p10_accuracy,
                s.min_accuracy
            ),
            (0.25, 0.0, 0.25, 0.25)
        );
        assert_eq!(FedEvalStats::of(&[]), None);
        assert_eq!(FedEvalStats::of(&[eval(1, 0, 0.0, 0.0)]), None);
    }
}
