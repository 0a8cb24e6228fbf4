//! Server-side cost of FRL's vote and of the robust aggregators, at the sizes of the FRL issue:
//! 25 rankings of 10⁶ edges (one layer), and 25 updates of 10⁶ parameters.
//!
//! Run: `cargo bench -p fedsim-algorithms --bench robust`. `frl_vote/server_round` is what the coordinator does
//! per round: decode and validate 25 bit-packed rankings (20 bits per index), sum rank positions, sort
//! by reputation, and reassign the sorted initial scores. `frl_vote/vote_only` leaves out decoding.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fedsim_algorithms::robust;
use fedsim_algorithms::strategy::frl::{Frl, FrlConfig, pack_permutation, vote};
use fedsim_algorithms::strategy::{Init, Reporter, Strategy};
use fedsim_types::{Payload, TensorData};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D: usize = 1_000_000;
const M: usize = 25;

fn rankings() -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    (0..M)
        .map(|_| {
            let mut p: Vec<u32> = (0..D as u32).collect();
            p.shuffle(&mut rng);
            p
        })
        .collect()
}

fn bench_vote(c: &mut Criterion) {
    let rs = rankings();
    let packed: Vec<Payload> = rs
        .iter()
        .map(|r| {
            Payload::new().with(
                "ranking.all",
                TensorData::Bytes {
                    bytes: pack_permutation(r),
                },
            )
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let init: Vec<f32> = (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mut g = c.benchmark_group("frl_vote");
    g.sample_size(10);
    g.bench_function("server_round", |b| {
        let mut s = Frl::new(FrlConfig::default());
        s.init(&Init {
            global: &init,
            num_clients: M,
            probabilities: None,
            model: None,
            data: None,
        });
        let mut global = init.clone();
        b.iter(|| {
            s.begin_round(0, &[], &global);
            for (i, p) in packed.iter().enumerate() {
                s.accept(
                    Reporter {
                        id: i as u32,
                        num_samples: 1,
                        staleness: 0,
                    },
                    p.clone(),
                )
                .unwrap();
            }
            s.finish_round(0, &mut global, &[]);
            black_box(global[0])
        })
    });
    let refs: Vec<&[u32]> = rs.iter().map(Vec::as_slice).collect();
    g.bench_function("vote_only", |b| b.iter(|| black_box(vote(&refs))));
    g.finish();
}

fn bench_aggregators(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ups: Vec<Vec<f32>> = (0..M)
        .map(|_| (0..D).map(|_| rng.random_range(-1.0f32..1.0)).collect())
        .collect();
    let refs: Vec<&[f32]> = ups.iter().map(Vec::as_slice).collect();
    let mut g = c.benchmark_group("robust_25x1M");
    g.sample_size(10);
    g.bench_function("mean", |b| b.iter(|| black_box(robust::mean(&refs))));
    g.bench_function("median", |b| b.iter(|| black_box(robust::median(&refs))));
    g.bench_function("trimmed_mean_b5", |b| {
        b.iter(|| black_box(robust::trimmed_mean(&refs, 5)))
    });
    g.bench_function("multi_krum_f5", |b| {
        b.iter(|| black_box(robust::multi_krum(&refs, 5)))
    });
    g.bench_function("bulyan_f5", |b| {
        b.iter(|| black_box(robust::bulyan(&refs, 5)))
    });
    // The attacker's λ search (full knowledge: μ, σ over all 25 honest updates, the aggregate
    // simulated with 5 malicious copies and the 20 benign updates).
    for (name, target) in [
        (
            "agr_tailored_full_trimmed_mean_5",
            robust::AgrTarget::TrimmedMean,
        ),
        (
            "agr_tailored_full_multi_krum_5",
            robust::AgrTarget::MultiKrum,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(robust::agr_tailored(&refs, &refs[5..], 5, target)))
        });
    }
    g.finish();
}

criterion_group!(benches, bench_vote, bench_aggregators);
criterion_main!(benches);
