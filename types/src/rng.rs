//! Deterministic random streams keyed by (seed, purpose, round, client).
//!
//! Every random decision in a run draws from its own stream, so results do not depend on thread
//! scheduling or on which runtime (simulator or gRPC) executes a client.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a random stream is used for; part of the stream key so uses never share numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Purpose {
    /// Initial global model.
    ModelInit = 1,
    /// Client selection / participation.
    Participation = 2,
    /// Local training (shuffles, sampled minibatches).
    LocalTraining = 3,
    /// Data generation and partitioning.
    Data = 4,
    /// Compressor randomness.
    Compression = 5,
    /// Scripted events and attacks.
    Events = 6,
    /// Strategy-specific server randomness.
    Server = 7,
    /// Stochastic layers in local training (dropout masks), apart from the training stream so that a
    /// model with dropout draws the same shuffles and minibatches as one without.
    LayerNoise = 8,
    /// Data augmentation in local training (crops and flips), apart from the training stream for the
    /// same reason.
    Augmentation = 9,
    /// Which clients take part in a federated evaluation.
    EvalSelection = 10,
    /// A client's fine-tuning before a personalised evaluation (`eval.federated.personalize_steps`):
    /// its minibatches, dropout masks and augmentation.
    Personalization = 11,
}

/// SplitMix64 finaliser: a bijective 64-bit mixer.
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives a 64-bit key from the run seed and stream coordinates.
pub fn stream_key(seed: u64, purpose: Purpose, round: u64, client: u64) -> u64 {
    let mut h = mix64(seed);
    h = mix64(h ^ purpose as u64);
    h = mix64(h ^ round);
    mix64(h ^ client)
}

/// A portable, reproducible generator for the given stream.
pub fn stream(seed: u64, purpose: Purpose, round: u64, client: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream_key(seed, purpose, round, client))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a = stream(1, Purpose::LocalTraining, 3, 7).next_u64();
        let b = stream(1, Purpose::LocalTraining, 3, 7).next_u64();
        let c = stream(1, Purpose::LocalTraining, 3, 8).next_u64();
        let d = stream(1, Purpose::Participation, 3, 7).next_u64();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}

/// A uniform number in [0, 1) that depends only on the run seed, purpose, round, client and `salt`:
/// a counter-based draw, cheap enough to make for millions of clients every round.
pub fn unit(seed: u64, purpose: Purpose, round: u64, client: u64, salt: u64) -> f64 {
    let h = mix64(stream_key(seed, purpose, round, client) ^ mix64(salt));
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn unit_draws_are_uniform_enough() {
        let n = 100_000;
        let mean: f64 = (0..n)
            .map(|c| unit(3, Purpose::Participation, 7, c, 0))
            .sum::<f64>()
            / n as f64;
        assert!((mean - 0.5).abs() < 0.01, "{mean}");
        assert!((0..1000).all(|c| (0.0..1.0).contains(&unit(1, Purpose::Events, 0, c, 9))));
    }
}
