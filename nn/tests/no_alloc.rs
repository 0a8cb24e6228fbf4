//! After a warm-up call, training steps and evaluations of every model allocate nothing.

use fedsim_nn::{Cnn, EvalStats, ImageShape, LogReg, Mlp, Model, Scratch};
use ndarray::Array2;

mod common;
use common::allocations;

fn check(model: &dyn Model, batch: usize) {
    let x = Array2::from_shape_fn((batch, model.input_len()), |(i, j)| {
        ((i * 31 + j * 7) % 13) as f32 / 13.0
    });
    let y: Vec<u32> = (0..batch)
        .map(|i| (i % model.num_classes()) as u32)
        .collect();
    let params = model.init_params(1);
    let mut grad = vec![0.0; params.len()];
    let mut scratch = Scratch::default();
    let mut stats = EvalStats::new(model.num_classes());
    // Warm-up: buffers grow to their working size.
    model.loss_grad(&params, x.view(), &y, &mut grad, &mut scratch);
    model.evaluate(&params, x.view(), &y, &mut scratch, &mut stats);
    model.loss_grad(&params, x.view(), &y, &mut grad, &mut scratch);
    let before = allocations();
    for _ in 0..3 {
        model.loss_grad(&params, x.view(), &y, &mut grad, &mut scratch);
    }
    let steps = allocations() - before;
    assert_eq!(
        steps,
        0,
        "{}: {steps} allocations in 3 warmed-up training steps",
        model.name()
    );
    model.evaluate(&params, x.view(), &y, &mut scratch, &mut stats);
    let before = allocations();
    model.evaluate(&params, x.view(), &y, &mut scratch, &mut stats);
    assert_eq!(
        allocations() - before,
        0,
        "{}: allocations in a warmed-up evaluation",
        model.name()
    );
}

#[test]
fn warmed_up_steps_do_not_allocate() {
    check(&LogReg::new(784, 10), 32);
    check(&Mlp::new(784, &[200, 200], 10), 64);
    check(&Mlp::new(50, &[20], 3), 600);
    let cnn = Cnn::new(
        ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        },
        [32, 64],
        512,
        10,
    );
    check(&cnn.unwrap_or_else(|e| panic!("{e}")), 20);
    let small = Cnn::new(
        ImageShape {
            channels: 3,
            height: 8,
            width: 8,
        },
        [4, 6],
        16,
        5,
    );
    check(&small.unwrap_or_else(|e| panic!("{e}")), 70);
}
