//! Central evaluation: the global model on the scenario's test set (and the training loss on the
//! clients' training samples), at the coordinator or in the simulator.

use fedsim_data::FederatedData;
use fedsim_types::rng::{Purpose, stream};
use rand::seq::index;

use super::Engine;
use crate::Scenario;
use crate::report::RoundRecord;

impl Engine {
    /// Evaluates the global model into `rec`: test accuracy, loss and per-class accuracy, and when
    /// asked the training loss and the full gradient's norm.
    pub(super) fn evaluate_into(&self, rec: &mut RoundRecord) {
        let chunk = self.scenario.eval.batch_size;
        let test = crate::eval::evaluate_streaming(
            self.model.as_ref(),
            &self.global,
            &self.data.test,
            None,
            chunk,
            self.stream_eval,
        );
        if test.count > 0 {
            rec.test_accuracy = Some(test.accuracy());
            rec.test_loss = Some(test.mean_loss());
            let per_class = test.class_accuracy();
            rec.worst_class_accuracy = per_class.iter().flatten().copied().reduce(f64::min);
            rec.class_accuracy = Some(per_class);
        }
        if self.scenario.eval.grad_norm {
            rec.extra.insert(
                "grad_norm_sq".into(),
                crate::eval::full_gradient_norm_sq(self.model.as_ref(), &self.global, &self.data),
            );
        }
        if self.scenario.eval.train_loss {
            let ix = self.train_eval_indices.as_deref();
            let train = crate::eval::evaluate_streaming(
                self.model.as_ref(),
                &self.global,
                &self.data.train,
                ix,
                chunk,
                self.stream_eval,
            );
            if train.count > 0 {
                rec.train_loss = Some(train.mean_loss());
                rec.train_accuracy = Some(train.accuracy());
            }
        }
    }
}

/// The training samples used for the global training loss: `None` means every row of the training set.
pub(super) fn train_eval_indices(scenario: &Scenario, data: &FederatedData) -> Option<Vec<u32>> {
    let p = &data.partition;
    let covers_all = p.total() == data.train.len();
    let cap = scenario.eval.train_loss_samples;
    if covers_all && (cap == 0 || cap >= data.train.len()) {
        return None;
    }
    let mut union: Vec<u32> = (0..p.num_clients())
        .flat_map(|k| p.client(k).iter().copied())
        .collect();
    union.sort_unstable();
    if cap > 0 && cap < union.len() {
        let mut rng = stream(scenario.seed, Purpose::Data, u64::MAX, 0);
        let mut pick: Vec<u32> = index::sample(&mut rng, union.len(), cap)
            .into_iter()
            .map(|i| union[i])
            .collect();
        pick.sort_unstable();
        union = pick;
    }
    Some(union)
}
