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
