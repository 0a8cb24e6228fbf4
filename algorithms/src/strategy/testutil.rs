//! Test helpers shared by strategy tests: a two-client quadratic problem.

use fedsim_data::Dataset;
use fedsim_nn::{EvalStats, Layout, Model, Scratch};
use ndarray::{Array2, ArrayView2};

use super::{ClientState, Init, Reporter, Strategy, dense};
use crate::train::ClientData;
use crate::{LocalTrainer, Payload, TensorData, TrainConfig};

/// `f(w) = mean over rows [a, b…] of (a/2)||w − b||²`: a client's quadratic, carried in its data.
#[derive(Debug)]
struct Quadratic {
    layout: Layout,
    d: usize,
}

impl Quadratic {
    fn new(d: usize) -> Self {
        let mut layout = Layout::new();
        layout.push("w", &[d]);
        Self { layout, d }
    }
}

impl Model for Quadratic {
    fn name(&self) -> String {
        "quadratic".into()
    }
    fn layout(&self) -> &Layout {
        &self.layout
    }
    fn input_len(&self) -> usize {
        self.d + 1
    }
    fn num_classes(&self) -> usize {
        2
    }
    fn init_params(&self, _seed: u64) -> Vec<f32> {
        vec![0.0; self.d]
    }
    fn loss_grad(
        &self,
        w: &[f32],
        x: ArrayView2<'_, f32>,
        _y: &[u32],
        grad: &mut [f32],
        _s: &mut Scratch,
    ) -> f32 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        let n = x.nrows() as f32;
        for row in x.rows() {
            let a = row[0];
            for j in 0..self.d {
                let r = w[j] - row[j + 1];
                grad[j] += a * r / n;
                loss += 0.5 * a * r * r / n;
            }
        }
        loss
    }
    fn evaluate(
        &self,
        _: &[f32],
        _: ArrayView2<'_, f32>,
        _: &[u32],
        _: &mut Scratch,
        _: &mut EvalStats,
    ) {
    }
    fn train_flops_per_sample(&self) -> f64 {
        0.0
    }
    fn eval_flops_per_sample(&self) -> f64 {
        0.0
    }
}

/// Runs `rounds` rounds of full participation of two quadratic clients; returns the final model.
pub(crate) fn two_clients(strategy: &mut dyn Strategy, rounds: u64) -> f32 {
    let (a, b) = ([1.0f32, 3.0], [0.0f32, 4.0]);
    let model = Quadratic::new(1);
    let data: Vec<Dataset> = (0..2)
        .map(|i| Dataset {
            x: Array2::from_shape_vec((1, 2), vec![a[i], b[i]])
                .unwrap()
                .into(),
            y: vec![0],
            num_classes: 2,
            image: None,
        })
        .collect();
    let cfg = TrainConfig {
        lr: 0.05,
        batch_size: 1,
        steps: Some(50),
        ..TrainConfig::default()
    };
    let mut global = vec![0.0f32];
    strategy.init(&Init {
        global: &global,
        num_clients: 2,
        probabilities: None,
        model: None,
        data: None,
    });
    let mut states = [ClientState::default(), ClientState::default()];
    let mut scratch = Scratch::default();
    for round in 0..rounds {
        let task = strategy.broadcast(round, &global);
        strategy.begin_round(round, &[0, 1], &global);
        for i in 0..2 {
            let cd = ClientData {
                dataset: &data[i],
                indices: &[0],
            };
            let rng = fedsim_types::rng::stream(
                0,
                fedsim_types::rng::Purpose::LocalTraining,
                round,
                i as u64,
            );
            let mut t = LocalTrainer::new(&model, cd, &cfg, round, i as u32, rng, &mut scratch);
            let up = strategy
                .local_update(&mut t, &mut states[i], &task)
                .unwrap();
            strategy
                .accept(
                    Reporter {
                        id: i as u32,
                        num_samples: 1,
                        staleness: 0,
                    },
                    up,
                )
                .unwrap();
        }
        strategy.finish_round(round, &mut global, &[0, 1]);
    }
    global[0]
}

/// Runs the client half of `strategy` once for client `client` in `round` on a one-sample quadratic
/// problem of dimension `d` (target `b = 1` everywhere), from the global model `global`.
pub(crate) fn one_update(
    strategy: &dyn Strategy,
    client: u32,
    round: u64,
    global: &[f32],
) -> crate::Payload {
    let d = global.len();
    let model = Quadratic::new(d);
    let mut row = vec![1.0f32];
    row.extend(std::iter::repeat_n(1.0f32, d));
    let data = Dataset {
        x: Array2::from_shape_vec((1, d + 1), row).unwrap().into(),
        y: vec![0],
        num_classes: 2,
        image: None,
    };
    let cfg = TrainConfig {
        lr: 0.1,
        batch_size: 1,
        steps: Some(5),
        ..TrainConfig::default()
    };
    let mut scratch = Scratch::default();
    let cd = ClientData {
        dataset: &data,
        indices: &[0],
    };
    let rng = fedsim_types::rng::stream(
        0,
        fedsim_types::rng::Purpose::LocalTraining,
        round,
        client as u64,
    );
    let mut t = LocalTrainer::new(&model, cd, &cfg, round, client, rng, &mut scratch);
    let task = strategy.broadcast(round, global);
    strategy
        .local_update(&mut t, &mut ClientState::default(), &task)
        .unwrap()
}

/// Initialises `strategy` for `num_clients` clients around the global model `global`, with no model or
/// data attached.
pub(crate) fn init_plain(strategy: &mut dyn Strategy, global: &[f32], num_clients: usize) {
    strategy.init(&Init {
        global,
        num_clients,
        probabilities: None,
        model: None,
        data: None,
    });
}

/// Hands `strategy` client `id`'s one-sample dense update `delta`.
pub(crate) fn send_delta(strategy: &mut dyn Strategy, id: u32, delta: Vec<f32>) {
    strategy
        .accept(
            Reporter {
                id,
                num_samples: 1,
                staleness: 0,
            },
            Payload::new().with(dense::DELTA, TensorData::vector(delta)),
        )
        .unwrap();
}
