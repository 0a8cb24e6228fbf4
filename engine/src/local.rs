//! A client's local update, run the same way by the simulator's threads and by a client process.

use fedsim_algorithms::train::ClientData;
use fedsim_nn::{Model, Scratch};
use fedsim_types::rng::{Purpose, stream, stream_key};

use crate::{ClientId, ClientState, LocalTrainer, Payload, Strategy, StrategyError, TrainConfig};

/// Runs one client's local update: the single place where a client's random stream is derived, so the
/// simulator and a client process compute bit-identical updates.
#[allow(clippy::too_many_arguments)]
pub fn run_client(
    strategy: &dyn Strategy,
    model: &dyn Model,
    data: ClientData<'_>,
    train: &TrainConfig,
    seed: u64,
    round: u64,
    client: ClientId,
    state: &mut ClientState,
    task: &Payload,
    max_steps: Option<usize>,
    scratch: &mut Scratch,
) -> Result<Payload, StrategyError> {
    let rng = stream(seed, Purpose::LocalTraining, round, client as u64);
    // Dropout masks come from their own stream keyed by (seed, round, client) and the step number,
    // so they are the same in every runtime and for any thread count.
    scratch.start_noise(stream_key(seed, Purpose::LayerNoise, round, client as u64));
    let mut trainer = LocalTrainer::new(model, data, train, round, client, rng, scratch);
    trainer.max_steps = max_steps;
    trainer.augment_key = train
        .augment
        .filter(|a| a.is_active())
        .map(|_| stream_key(seed, Purpose::Augmentation, round, client as u64));
    let update = strategy.local_update(&mut trainer, state, task);
    trainer.scratch.stop_noise();
    update
}

/// One client's federated evaluation: the global model `global` on the client's local test samples
/// `test`, after `personalize_steps` local SGD steps on its training samples `train_data` (on a copy;
/// 0 steps evaluates `global` as it is). Nothing of the client's strategy state is read or changed. The
/// simulator and a client process both evaluate here, so their results are bit-identical.
#[allow(clippy::too_many_arguments)]
pub fn run_evaluation(
    model: &dyn Model,
    global: &[f32],
    train_data: ClientData<'_>,
    test: ClientData<'_>,
    train: &TrainConfig,
    personalize_steps: usize,
    seed: u64,
    round: u64,
    client: ClientId,
    eval_batch: usize,
    scratch: &mut Scratch,
) -> crate::fedeval::ClientEval {
    let personalized;
    let params = if personalize_steps > 0 && !train_data.is_empty() {
        // Exactly `personalize_steps` minibatch steps, with the scenario's learning rate (at this
        // round), batch size, momentum and augmentation, from a stream of their own.
        let config = TrainConfig {
            steps: Some(personalize_steps),
            ..train.clone()
        };
        let rng = stream(seed, Purpose::Personalization, round, client as u64);
        scratch.start_noise(stream_key(
            seed,
            Purpose::Personalization,
            round,
            u64::MAX - client as u64,
        ));
        let mut trainer =
            LocalTrainer::new(model, train_data, &config, round, client, rng, scratch);
        trainer.augment_key = config.augment.filter(|a| a.is_active()).map(|_| {
            stream_key(
                seed,
                Purpose::Personalization,
                u64::MAX - round,
                client as u64,
            )
        });
        let mut p = global.to_vec();
        trainer.sgd(&mut p, None);
        trainer.scratch.stop_noise();
        personalized = p;
        &personalized[..]
    } else {
        global
    };
    let stats = crate::eval::evaluate(model, params, test.dataset, Some(test.indices), eval_batch);
    crate::fedeval::ClientEval {
        client,
        samples: stats.count as u64,
        accuracy: if stats.count > 0 {
            stats.accuracy()
        } else {
            0.0
        },
        loss: if stats.count > 0 {
            stats.mean_loss()
        } else {
            0.0
        },
    }
}
