//! After a warm-up call, training steps and evaluations of the layer-stack presets allocate nothing
//! (issue #14: a round of many clients does not allocate per step), and the scratch memory a
//! training thread keeps is what `Sequential::scratch_floats` reports.

use fedsim_nn::{
    EvalStats, ImageShape, InputSpec, Model, Scratch, Sequential, SequentialConfig,
    stack::LayerSpec,
};
use ndarray::Array2;

mod common;
use common::allocations;

fn image(c: usize, h: usize, w: usize) -> InputSpec {
    InputSpec {
        features: c * h * w,
        num_classes: 10,
        image: Some(ImageShape {
            channels: c,
            height: h,
            width: w,
        }),
    }
}

fn build<E: std::fmt::Display>(layers: Result<Vec<LayerSpec>, E>, input: &InputSpec) -> Sequential {
    let layers = layers.unwrap_or_else(|e| panic!("{e}"));
    Sequential::new(&layers, input, Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn preset(name: &str, input: &InputSpec) -> Sequential {
    // Parsed from TOML, as a scenario's `[model]` table would be, so that defaults fill the rest.
    let cfg: SequentialConfig =
        toml::from_str(&format!("preset = \"{name}\"")).unwrap_or_else(|e| panic!("{e}"));
    build(cfg.resolve(), input)
}

/// Warm-up, then training steps at `batch` and `small` samples (a smaller last batch of an epoch)
/// and evaluations must not allocate; the scratch must not exceed the reported bound.
fn check(name: &str, model: &Sequential, batch: usize, small: usize) {
    let x = Array2::from_shape_fn((batch, model.input_len()), |(i, j)| {
        ((i * 31 + j * 7) % 13) as f32 / 13.0 - 0.4
    });
    let y: Vec<u32> = (0..batch).map(|i| (i % 10) as u32).collect();
    let params = model.init_params(1);
    let mut grad = vec![0.0; params.len()];
    let mut scratch = Scratch::default();
    scratch.start_noise(7);
    let mut stats = EvalStats::new(10);
    // Warm-up: buffers grow to their working size (the GEMM's packing buffers too).
    model.loss_grad(&params, x.view(), &y, &mut grad, &mut scratch);
    model.evaluate(&params, x.view(), &y, &mut scratch, &mut stats);
    model.loss_grad(&params, x.view(), &y, &mut grad, &mut scratch);
    let before = allocations();
    for rows in [batch, small, batch] {
        let xs = x.slice(ndarray::s![..rows, ..]);
        model.loss_grad(&params, xs, &y[..rows], &mut grad, &mut scratch);
    }
    let steps = allocations() - before;
    assert_eq!(
        steps, 0,
        "{name}: {steps} allocations in 3 warmed-up training steps"
    );
    let before = allocations();
    model.evaluate(&params, x.view(), &y, &mut scratch, &mut stats);
    assert_eq!(
        allocations() - before,
        0,
        "{name}: allocations in a warmed-up evaluation"
    );
    let kept: usize = scratch.bufs.iter().map(Vec::capacity).sum();
    let bound = model.scratch_floats(batch.min(model.pass_rows()), true);
    assert!(
        kept <= bound,
        "{name}: the scratch holds {kept} floats, more than the reported {bound}"
    );
}

#[test]
fn warmed_up_stack_steps_do_not_allocate() {
    let cifar = image(3, 32, 32);
    check("cnn_cifar", &preset("cnn_cifar", &cifar), 32, 7);
    // More samples than one pass holds: the batch runs in several passes.
    let m = preset("cnn_cifar", &cifar);
    check("cnn_cifar, several passes", &m, m.pass_rows() + 5, 3);
    check("resnet8_gn", &preset("resnet8_gn", &cifar), 6, 2);
    check("conv4", &preset("conv4", &image(3, 16, 16)), 5, 2);
    check("cnn", &preset("cnn", &image(1, 28, 28)), 10, 3);
    // Dropout, average pooling and a flat group norm (the noise stream is open).
    let text = r#"layers = [{conv2d = {out = 4, kernel = 3, stride = 2, padding = 1}}, "relu",
        {avg_pool = {size = 2, stride = 2}}, {dropout = {p = 0.25}}, "flatten", {dense = {units = 8}},
        {group_norm = {groups = 2}}, "relu", "dense"]"#;
    let cfg: SequentialConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    check("small stack", &build(cfg.resolve(), &image(2, 9, 9)), 9, 4);
}
