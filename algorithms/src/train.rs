//! Local training on one client's data: the shared SGD loop that every strategy's client half uses.

use fedsim_data::Dataset;
use fedsim_nn::{Model, Scratch, Sgd};
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use fedsim_types::ConfigError;

use crate::ClientId;
use crate::augment::Augment;

/// The scenario's `[train]` section: how a client trains locally each round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Local learning rate at round 0.
    pub lr: f32,
    /// Multiplier applied to the learning rate after every round (`lr_t = lr · lr_decay^t`).
    #[serde(default = "one")]
    pub lr_decay: f32,
    /// Minibatch size; 0 means the whole local data set as one batch (McMahan's B = ∞).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Local epochs E (ignored when `steps` is set).
    #[serde(default = "one_usize")]
    pub epochs: usize,
    /// Local SGD steps Q instead of epochs: each step draws a full minibatch from a reshuffled stream.
    #[serde(default)]
    pub steps: Option<usize>,
    /// Heavy-ball momentum (0 disables).
    #[serde(default)]
    pub momentum: f32,
    /// L2 weight decay.
    #[serde(default)]
    pub weight_decay: f32,
    /// Drop the last short minibatch of an epoch (false keeps it, as PyTorch's DataLoader does).
    #[serde(default)]
    pub drop_last: bool,
    /// Random crops and flips of training images (none by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augment>,
}

fn one() -> f32 {
    1.0
}
fn one_usize() -> usize {
    1
}
fn default_batch() -> usize {
    10
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            lr: 0.05,
            lr_decay: 1.0,
            batch_size: default_batch(),
            epochs: 1,
            steps: None,
            momentum: 0.0,
            weight_decay: 0.0,
            drop_last: false,
            augment: None,
        }
    }
}

impl TrainConfig {
    /// Checks values, naming the bad key (`train.lr`, `train.epochs`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ConfigError::new(
                "train.lr",
                format!("must be a positive number, got {}", self.lr),
            ));
        }
        if !(self.lr_decay.is_finite() && self.lr_decay > 0.0) {
            return Err(ConfigError::new(
                "train.lr_decay",
                format!("must be positive, got {}", self.lr_decay),
            ));
        }
        if self.steps.is_none() && self.epochs == 0 {
            return Err(ConfigError::new(
                "train.epochs",
                "must be at least 1 (or set train.steps)",
            ));
        }
        if self.steps == Some(0) {
            return Err(ConfigError::new("train.steps", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return Err(ConfigError::new(
                "train.momentum",
                format!("must be in [0, 1), got {}", self.momentum),
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::new(
                "train.weight_decay",
                format!("must be non-negative, got {}", self.weight_decay),
            ));
        }
        Ok(())
    }

    /// The full local work of a client with `n` samples: SGD steps and samples processed.
    pub fn work(&self, n: usize) -> Work {
        if n == 0 {
            return Work {
                steps: 0,
                samples: 0,
            };
        }
        let b = if self.batch_size == 0 {
            n
        } else {
            self.batch_size.min(n)
        };
        match self.steps {
            Some(q) => Work {
                steps: q,
                samples: q * b,
            },
            None => {
                let per_epoch = if self.drop_last && !n.is_multiple_of(b) && n > b {
                    n / b
                } else {
                    n.div_ceil(b)
                };
                let samples = if self.drop_last && n > b {
                    per_epoch * b
                } else {
                    n
                };
                Work {
                    steps: per_epoch * self.epochs,
                    samples: samples * self.epochs,
                }
            }
        }
    }

    /// Learning rate in `round`.
    pub fn lr_at(&self, round: u64) -> f32 {
        self.lr * self.lr_decay.powi(round.min(i32::MAX as u64) as i32)
    }
}

/// One client's local samples: rows of a shared data set.
#[derive(Debug, Clone, Copy)]
pub struct ClientData<'a> {
    /// The data set the indices point into.
    pub dataset: &'a Dataset,
    /// The client's sample indices.
    pub indices: &'a [u32],
}

impl ClientData<'_> {
    /// Number of local samples.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether the client has no samples.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// What one call of local training did.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TrainReport {
    /// SGD steps taken.
    pub steps: usize,
    /// Samples processed (counting repeats).
    pub samples: usize,
    /// Mean training loss over the steps (before each step's update).
    pub mean_loss: f64,
}

/// A hook that may change the gradient before the optimiser step: `(params, grad)`.
pub type GradHook<'h> = &'h mut dyn FnMut(&[f32], &mut [f32]);

/// Everything a strategy's client half needs to train: model, local data, configuration and the
/// client's random stream for this round.
pub struct LocalTrainer<'a> {
    /// The model.
    pub model: &'a dyn Model,
    /// The client's data.
    pub data: ClientData<'a>,
    /// Local training configuration.
    pub config: &'a TrainConfig,
    /// Current round.
    pub round: u64,
    /// The client.
    pub client: ClientId,
    /// This client's random stream for this round.
    pub rng: ChaCha8Rng,
    /// Per-thread scratch memory.
    pub scratch: &'a mut Scratch,
    /// At most this many steps this round (a straggler reporting partial work).
    pub max_steps: Option<usize>,
    /// Key of this client's augmentation stream this round ([`crate::augment`]); without it training
    /// batches are not augmented.
    pub augment_key: Option<u64>,
    /// Training batches augmented so far this round (the augmentation's step number).
    augment_step: u64,
    augment_tmp: Vec<f32>,
    batch_x: Array2<f32>,
    batch_y: Vec<u32>,
    order: Vec<u32>,
}

impl<'a> LocalTrainer<'a> {
    /// A trainer for one client in one round.
    pub fn new(
        model: &'a dyn Model,
        data: ClientData<'a>,
        config: &'a TrainConfig,
        round: u64,
        client: ClientId,
        rng: ChaCha8Rng,
        scratch: &'a mut Scratch,
    ) -> Self {
        Self {
            model,
            data,
            config,
            round,
            client,
            rng,
            scratch,
            max_steps: None,
            augment_key: None,
            augment_step: 0,
            augment_tmp: Vec::new(),
            batch_x: Array2::zeros((0, 0)),
            batch_y: Vec::new(),
            order: Vec::new(),
        }
    }

    /// The learning rate of this round.
    pub fn lr(&self) -> f32 {
        self.config.lr_at(self.round)
    }

    /// Effective batch size (whole data set for 0, never more than the data).
    fn batch_size(&self) -> usize {
        let n = self.data.len();
        if self.config.batch_size == 0 {
            n
        } else {
            self.config.batch_size.min(n)
        }
    }

    /// The minibatches of this round as index lists, following `config` (epochs or steps).
    /// Drawn from the client's random stream.
    pub fn batches(&mut self) -> Vec<std::ops::Range<usize>> {
        let n = self.data.len();
        if n == 0 {
            return Vec::new();
        }
        let b = self.batch_size();
        let mut out = Vec::new();
        self.order.clear();
        match self.config.steps {
            Some(q) => {
                // Reshuffled stream of full batches (FedAU: a short tail is replaced by a fresh batch).
                let per_pass = n / b;
                let mut pos = per_pass; // force a shuffle first
                for _ in 0..q {
                    if pos == per_pass {
                        let mut perm: Vec<u32> = self.data.indices.to_vec();
                        perm.shuffle(&mut self.rng);
                        self.order.extend_from_slice(&perm);
                        pos = 0;
                    }
                    let start = self.order.len() - n + pos * b;
                    out.push(start..start + b);
                    pos += 1;
                }
            }
            None => {
                for _ in 0..self.config.epochs {
                    let base = self.order.len();
                    let mut perm: Vec<u32> = self.data.indices.to_vec();
                    perm.shuffle(&mut self.rng);
                    self.order.extend_from_slice(&perm);
                    let mut s = 0;
                    while s < n {
                        let e = (s + b).min(n);
                        if e - s < b && self.config.drop_last && s > 0 {
                            break;
                        }
                        out.push(base + s..base + e);
                        s = e;
                    }
                }
            }
        }
        if let Some(m) = self.max_steps {
            out.truncate(m);
        }
        out
    }

    /// Copies the samples at `order[range]` into the batch buffers.
    fn gather(&mut self, range: std::ops::Range<usize>) {
        let d = self.data.dataset.features();
        let len = range.len();
        if self.batch_x.dim() != (len, d) {
            self.batch_x = Array2::zeros((len, d));
        }
        self.batch_y.clear();
        let src = &self.data.dataset.x;
        for (row, &ix) in self.order[range].iter().enumerate() {
            self.batch_x.row_mut(row).assign(&src.row(ix as usize));
            self.batch_y.push(self.data.dataset.y[ix as usize]);
        }
    }

    /// Mean loss and gradient at `params` on the training minibatch `order[range]` (from
    /// [`Self::batches`]), augmented when the configuration asks for it.
    pub fn loss_grad(
        &mut self,
        params: &[f32],
        range: std::ops::Range<usize>,
        grad: &mut [f32],
    ) -> f32 {
        self.gather(range);
        if let (Some(aug), Some(key), Some(image)) = (
            self.config.augment,
            self.augment_key,
            self.data.dataset.image,
        ) {
            aug.apply(
                key,
                self.augment_step,
                image,
                &mut self.batch_x,
                &mut self.augment_tmp,
            );
            self.augment_step += 1;
        }
        self.loss_grad_same_batch(params, grad)
    }

    /// Mean loss and gradient at `params` on the given sample indices (e.g. a full pass in chunks),
    /// never augmented.
    pub fn loss_grad_on(&mut self, params: &[f32], indices: &[u32], grad: &mut [f32]) -> f32 {
        let start = self.order.len();
        self.order.extend_from_slice(indices);
        self.gather(start..start + indices.len());
        self.order.truncate(start);
        self.loss_grad_same_batch(params, grad)
    }

    /// Mean loss and gradient at `params` on the minibatch most recently gathered (no re-copy, the
    /// same augmentation).
    pub fn loss_grad_same_batch(&mut self, params: &[f32], grad: &mut [f32]) -> f32 {
        self.model.loss_grad(
            params,
            self.batch_x.view(),
            &self.batch_y,
            grad,
            self.scratch,
        )
    }

    /// Runs local SGD (momentum and weight decay from the config) on `params` in place. `hook` may
    /// modify each gradient before the optimiser step (e.g. FedProx's proximal term).
    pub fn sgd(&mut self, params: &mut [f32], mut hook: Option<GradHook<'_>>) -> TrainReport {
        let lr = self.lr();
        let mut opt = Sgd::new(self.config.momentum, self.config.weight_decay);
        let mut grad = vec![0.0f32; params.len()];
        let batches = self.batches();
        let mut report = TrainReport::default();
        let mut loss_sum = 0.0f64;
        for range in batches {
            report.samples += range.len();
            let loss = self.loss_grad(params, range, &mut grad);
            loss_sum += loss as f64;
            if let Some(h) = hook.as_mut() {
                h(params, &mut grad);
            }
            opt.step(lr, params, &grad);
            report.steps += 1;
        }
        if report.steps > 0 {
            report.mean_loss = loss_sum / report.steps as f64;
        }
        report
    }
}

/// A client's local work in a round: SGD steps and samples processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Steps.
    pub steps: usize,
    /// Samples processed.
    pub samples: usize,
}
