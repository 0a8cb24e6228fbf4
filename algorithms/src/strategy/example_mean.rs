//! The worked example of adding a strategy (README, "Adding a strategy"): the unweighted mean of the
//! participants' model deltas, applied with a server learning rate.
//!
//! The whole algorithm is this file plus one line in the `strategies!` list of [`super`]: the client
//! half ([`Strategy::local_update`], plain local SGD), the server half (`begin_round` → `accept` →
//! `finish_round`), and the `[strategy]` table ([`ExampleMeanConfig`], registered through
//! [`Kind<Strategies>`](Kind)). Scenario checks, both runtimes and the tests that cover every registered strategy
//! (sim/launch equivalence, resume) pick it up from the registration.

use fedsim_types::ConfigError;
use serde::{Deserialize, Serialize};

use fedsim_types::registry::{Kind, Validated};

use super::registry::{Capabilities, Strategies};
use super::{ClientState, Reporter, Strategy, StrategyError, dense};
use crate::{ClientId, LocalTrainer, Payload};

/// `[strategy] kind = "example_mean"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExampleMeanConfig {
    /// Server learning rate: the global model moves by `server_lr` times the mean delta.
    #[serde(default = "one")]
    pub server_lr: f32,
}

fn one() -> f32 {
    1.0
}

impl Kind<Strategies> for ExampleMeanConfig {
    const KIND: &'static str = "example_mean";
    const SUMMARY: &'static str =
        "the README's example strategy: unweighted mean of the participants' deltas";

    fn capabilities(&self) -> Capabilities {
        Capabilities::DENSE_DELTA
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.server_lr.is_finite() && self.server_lr > 0.0 {
            Ok(())
        } else {
            Err(ConfigError::new(
                "server_lr",
                format!("must be positive, got {}", self.server_lr),
            ))
        }
    }

    fn build(&self, _: (), _: Validated) -> Box<dyn Strategy> {
        Box::new(ExampleMean {
            server_lr: self.server_lr,
            sum: Vec::new(),
            count: 0,
        })
    }
}

/// The server half's state: the running sum of this round's deltas (in f64, so the order of a few
/// hundred additions does not matter to the f32 result in practice; the engine feeds clients in
/// ascending id anyway).
#[derive(Debug)]
pub struct ExampleMean {
    server_lr: f32,
    sum: Vec<f64>,
    count: usize,
}

impl Strategy for ExampleMean {
    fn name(&self) -> String {
        format!("example_mean(server_lr={})", self.server_lr)
    }

    fn broadcast(&self, _round: u64, global: &[f32]) -> Payload {
        dense::model_task(global)
    }

    fn begin_round(&mut self, _round: u64, _selected: &[ClientId], global: &[f32]) {
        self.sum.clear();
        self.sum.resize(global.len(), 0.0);
        self.count = 0;
    }

    fn accept(&mut self, reporter: Reporter, mut update: Payload) -> Result<(), StrategyError> {
        let delta = dense::take_delta(reporter.id, &mut update, self.sum.len())?;
        for (s, d) in self.sum.iter_mut().zip(&delta) {
            *s += f64::from(*d);
        }
        self.count += 1;
        Ok(())
    }

    fn finish_round(&mut self, _round: u64, global: &mut [f32], _reported: &[ClientId]) {
        if self.count == 0 {
            return;
        }
        let scale = f64::from(self.server_lr) / self.count as f64;
        for (g, s) in global.iter_mut().zip(&self.sum) {
            *g += (s * scale) as f32;
        }
    }

    fn local_update(
        &self,
        trainer: &mut LocalTrainer<'_>,
        _state: &mut ClientState,
        task: &Payload,
    ) -> Result<Payload, StrategyError> {
        super::fedavg::local_sgd_delta(trainer, task)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::TensorData;
    use crate::strategy::StrategySpec;

    fn build(server_lr: f32) -> Box<dyn super::Strategy> {
        let spec = StrategySpec::new(ExampleMeanConfig { server_lr });
        spec.validate().expect("valid settings").build(())
    }

    fn update(delta: &[f32]) -> Payload {
        Payload::new().with(dense::DELTA, TensorData::vector(delta.to_vec()))
    }

    proptest! {
        /// Aggregating identical updates moves the model by exactly that update (server_lr = 1).
        #[test]
        fn identical_updates_aggregate_to_that_update(
            delta in prop::collection::vec(-1e3f32..1e3, 1..20),
            clients in 1usize..12,
        ) {
            let mut s = build(1.0);
            let mut global = vec![0.5f32; delta.len()];
            let before = global.clone();
            let ids: Vec<ClientId> = (0..clients as u32).collect();
            s.begin_round(0, &ids, &global);
            for &id in &ids {
                s.accept(Reporter { id, num_samples: 7, staleness: 0 }, update(&delta)).unwrap();
            }
            s.finish_round(0, &mut global, &ids);
            for ((g, b), d) in global.iter().zip(&before).zip(&delta) {
                prop_assert_eq!(*g, b + d);
            }
        }
    }

    #[test]
    fn no_reporters_leave_the_model_alone_and_bad_updates_are_refused() {
        let mut s = build(0.5);
        let mut global = vec![1.0f32; 3];
        s.begin_round(0, &[0], &global);
        let err = s.accept(
            Reporter {
                id: 0,
                num_samples: 1,
                staleness: 0,
            },
            update(&[1.0, 2.0]),
        );
        assert!(err.is_err());
        s.finish_round(0, &mut global, &[]);
        assert_eq!(global, vec![1.0; 3]);
        assert!(
            StrategySpec::new(ExampleMeanConfig { server_lr: 0.0 })
                .validate()
                .is_err()
        );
    }
}
