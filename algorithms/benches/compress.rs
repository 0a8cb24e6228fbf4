//! Compressor throughput: encode and decode of a d = 10⁶ f64 vector, sparsifiers keeping k = 1% (10⁴).
//!
//! Run: `cargo bench -p fedsim-algorithms --bench compress`. Throughput is reported for the dense input (8·d
//! bytes of f64 per call), so encode and decode figures are comparable across compressors. A full-sort
//! Top-k is included as a reference for the O(d) selection.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fedsim_algorithms::compress::{
    CompressorSpec, IdentityConfig, NaturalConfig, Precision, RandKConfig, TopKConfig,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const D: usize = 1_000_000;
const K: usize = 10_000;

fn input() -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    (0..D).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn specs() -> Vec<(&'static str, CompressorSpec)> {
    vec![
        (
            "top_k",
            CompressorSpec::new(TopKConfig {
                k: Some(K),
                fraction: None,
                precision: Precision::F32,
            }),
        ),
        (
            "rand_k",
            CompressorSpec::new(RandKConfig {
                k: Some(K),
                fraction: None,
                scaled: false,
                precision: Precision::F32,
            }),
        ),
        (
            "natural",
            CompressorSpec::new(NaturalConfig { contractive: true }),
        ),
        (
            "identity",
            CompressorSpec::new(IdentityConfig {
                precision: Precision::F32,
            }),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let x = input();
    let mut group = c.benchmark_group("compress_1e6");
    group.throughput(Throughput::Bytes((D * 8) as u64));
    group.sample_size(20);
    for (name, spec) in specs() {
        let comp = spec.validate().unwrap().build(D);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let mut buf = Vec::with_capacity(comp.encoded_len());
        group.bench_function(format!("{name}/encode"), |b| {
            b.iter(|| {
                comp.encode(black_box(&x), &mut rng, &mut buf).unwrap();
                black_box(buf.len())
            })
        });
        comp.encode(&x, &mut rng, &mut buf).unwrap();
        let mut out = vec![0.0f64; D];
        group.bench_function(format!("{name}/decode"), |b| {
            b.iter(|| {
                comp.decode(black_box(&buf), &mut out).unwrap();
                black_box(out[0])
            })
        });
    }
    // Reference: Top-k by sorting all d magnitudes (what the O(d) selection avoids).
    group.bench_function("top_k_full_sort_reference/encode", |b| {
        b.iter(|| {
            let mut ix: Vec<u32> = (0..D as u32).collect();
            ix.sort_unstable_by(|&a, &b| {
                x[b as usize]
                    .abs()
                    .total_cmp(&x[a as usize].abs())
                    .then(a.cmp(&b))
            });
            ix.truncate(K);
            ix.sort_unstable();
            black_box(ix.len())
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
