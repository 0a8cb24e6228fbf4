//! Cost of `[train] augment = { crop_padding = 4, hflip = true }` against the training step it is
//! part of: one augmented CIFAR-10 batch (B = 32, 3×32×32) and one `cnn_cifar` training step
//! (forward and backward) on the same batch, one thread.
//!
//! Run: `cargo bench -p fedsim-algorithms --bench augment`; the ratio of the two medians is the
//! augmentation's share of a step (target: under 5%).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fedsim_algorithms::augment::Augment;
use fedsim_nn::stack::{InitScheme, SequentialConfig};
use fedsim_nn::{InputSpec, Model, Scratch, Sequential};
use fedsim_types::ImageShape;
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const B: usize = 32;
const IMAGE: ImageShape = ImageShape {
    channels: 3,
    height: 32,
    width: 32,
};

fn batch() -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Array2::from_shape_fn((B, 3 * 32 * 32), |_| rng.random_range(0.0f32..1.0));
    let y = (0..B as u32).map(|i| i % 10).collect();
    (x, y)
}

fn bench(c: &mut Criterion) {
    let aug = Augment {
        crop_padding: 4,
        hflip: true,
    };
    let (x, y) = batch();
    let mut step = 0u64;
    let mut tmp = Vec::new();
    let mut work = x.clone();
    c.bench_function("augment crop4+flip, B=32 3x32x32", |b| {
        b.iter(|| {
            step += 1;
            aug.apply(7, step, IMAGE, &mut work, &mut tmp);
            black_box(&work);
        })
    });

    let cfg = SequentialConfig {
        preset: Some("cnn_cifar".into()),
        layers: Vec::new(),
        init: InitScheme::Pytorch,
        supermask: None,
    };
    let input = InputSpec {
        features: 3 * 32 * 32,
        num_classes: 10,
        image: Some(IMAGE),
    };
    let model = match cfg.resolve().map(|l| Sequential::new(&l, &input, cfg.init)) {
        Ok(Ok(m)) => m,
        _ => panic!("cnn_cifar builds"),
    };
    let params = model.init_params(1);
    let mut grad = vec![0.0f32; params.len()];
    let mut scratch = Scratch::default();
    c.bench_function("cnn_cifar training step, B=32", |b| {
        b.iter(|| black_box(model.loss_grad(&params, x.view(), &y, &mut grad, &mut scratch)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
