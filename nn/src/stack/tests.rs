use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::ModelSpec;
use crate::testutil::{check_gradient, check_gradient_with, toy_problem, train_toy};
use crate::{ImageShape, NnError};

pub(super) fn image(c: usize, h: usize, w: usize, classes: usize) -> InputSpec {
    InputSpec {
        features: c * h * w,
        num_classes: classes,
        image: Some(ImageShape {
            channels: c,
            height: h,
            width: w,
        }),
    }
}

pub(super) fn flat(features: usize, classes: usize) -> InputSpec {
    InputSpec {
        features,
        num_classes: classes,
        image: None,
    }
}

/// The `[model]` table `text` parsed and validated (errors as the scenario reports them).
pub(super) fn spec(text: &str) -> Result<ModelSpec, ConfigError> {
    let s = ModelSpec::from_table(toml::from_str(text).unwrap())?;
    s.validate()?;
    Ok(s)
}

/// The layers of `[model]` table `text` built for `input`.
pub(super) fn build(text: &str, input: &InputSpec) -> Result<Sequential, ConfigError> {
    let s = spec(text)?;
    let cfg = s.config::<SequentialConfig>().unwrap();
    Sequential::new(&cfg.resolve()?, input, cfg.init)
}

pub(super) fn must(text: &str, input: &InputSpec) -> Sequential {
    build(text, input).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn presets_mlp_and_cnn_have_todays_parameter_counts() {
    let m = must("kind = \"sequential\"\npreset = \"mlp\"", &flat(784, 10));
    assert_eq!(m.num_params(), 199_210);
    let m = must(
        "kind = \"sequential\"\npreset = \"cnn\"",
        &image(1, 28, 28, 10),
    );
    assert_eq!(m.num_params(), 1_663_370);
    // The same stacks written out.
    let mlp = "kind = \"sequential\"\nlayers = [{dense = {units = 200}}, \"relu\", \
               {dense = {units = 200}}, \"relu\", {dense = {units = 10}}]";
    assert_eq!(must(mlp, &flat(784, 10)).num_params(), 199_210);
    let cnn = "kind = \"sequential\"\nlayers = [\
        {conv2d = {out = 32, kernel = 5, padding = \"same\"}}, \"relu\", {max_pool = {size = 2}}, \
        {conv2d = {out = 64, kernel = 5, padding = \"same\"}}, \"relu\", {max_pool = {size = 2}}, \
        \"flatten\", {dense = {units = 512}}, \"relu\", {dense = {units = 10}}]";
    let m = must(cnn, &image(1, 28, 28, 10));
    assert_eq!(m.num_params(), 1_663_370);
    assert_eq!(
        m.layout().get("0.weight").map(|t| t.shape.clone()),
        Some(vec![1, 5, 5, 32])
    );
    assert_eq!(
        m.layout().get("7.weight").map(|t| t.shape.clone()),
        Some(vec![3136, 512])
    );
    // Same FLOPs as the hand-written CNN.
    let hand = crate::Cnn::new(
        ImageShape {
            channels: 1,
            height: 28,
            width: 28,
        },
        [32, 64],
        512,
        10,
    )
    .unwrap();
    assert_eq!(m.eval_flops_per_sample(), hand.eval_flops_per_sample());
    assert_eq!(m.train_flops_per_sample(), hand.train_flops_per_sample());
}

#[test]
fn every_preset_builds_on_its_data() {
    for (name, input) in [
        ("mlp", flat(784, 10)),
        ("cnn", image(1, 28, 28, 10)),
        ("cnn_cifar", image(3, 32, 32, 10)),
        ("cnn_fmnist", image(1, 28, 28, 10)),
        ("conv4", image(3, 32, 32, 10)),
        ("conv8", image(3, 32, 32, 10)),
        ("resnet8_gn", image(3, 32, 32, 10)),
        ("resnet18_gn", image(3, 32, 32, 10)),
    ] {
        let m = must(
            &format!("kind = \"sequential\"\npreset = \"{name}\""),
            &input,
        );
        eprintln!("{name}: {} parameters", m.num_params());
        assert!(m.num_params() > 0);
    }
    // FedAU's CIFAR CNN: FC 2048 -> 256 -> 64 -> 10.
    let m = must(
        "kind = \"sequential\"\npreset = \"cnn_cifar\"",
        &image(3, 32, 32, 10),
    );
    assert_eq!(
        m.layout().get("7.weight").map(|t| t.shape.clone()),
        Some(vec![2048, 256])
    );
    // The ResNets' exact counts, by hand, are in `shortcut_tests::resnet_presets_have_...`.
    let m = must(
        "kind = \"sequential\"\npreset = \"resnet18_gn\"",
        &image(3, 32, 32, 10),
    );
    assert_eq!(m.num_params(), 11_173_962);
}

#[test]
fn malformed_stacks_fail_validation_naming_the_layer() {
    for (layers, key, words) in [
        (
            "[\"relu\", {conv3d = {out = 2}}]",
            "model.layers[1]",
            &["unknown layer", "conv3d"][..],
        ),
        (
            "[{conv2d = {out = 0, kernel = 3}}]",
            "model.layers[0]",
            &["conv2d", "out", "positive"],
        ),
        (
            "[\"flatten\", {dense = {units = 0}}]",
            "model.layers[1]",
            &["dense", "units"],
        ),
        (
            "[{conv2d = {out = 4}}]",
            "model.layers[0]",
            &["missing `kernel`"],
        ),
        (
            "[{conv2d = {out = 4, kernel = 3, stride = 2, padding = \"same\"}}]",
            "model.layers[0]",
            &["same", "stride"],
        ),
        (
            "[{conv2d = {out = 4, kernel = 3, pad = 1}}]",
            "model.layers[0]",
            &["unknown key `pad`"],
        ),
        (
            "[{dropout = {p = 1.0}}]",
            "model.layers[0]",
            &["dropout", "[0, 1)"],
        ),
        (
            "[{group_norm = {groups = 0}}]",
            "model.layers[0]",
            &["groups"],
        ),
        ("[{max_pool = {}}]", "model.layers[0]", &["missing `size`"]),
        (
            "[{residual = {layers = []}}]",
            "model.layers[0]",
            &["empty"],
        ),
        (
            "[{residual = {layers = [\"relu\", \"nope\"]}}]",
            "model.layers[0].residual.layers[1]",
            &["unknown layer"],
        ),
        ("[3]", "model.layers[0]", &["integer"]),
        ("[{relu = {x = 1}}]", "model.layers[0]", &["no options"]),
    ] {
        let text = format!("kind = \"sequential\"\nlayers = {layers}");
        let e = spec(&text).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        for w in words {
            assert!(e.message.contains(w), "{text}: {e}");
        }
    }
    for (text, key) in [
        ("kind = \"sequential\"", "model.layers"),
        ("kind = \"sequential\"\npreset = \"vgg\"", "model.preset"),
        (
            "kind = \"sequential\"\npreset = \"mlp\"\nlayers = [\"relu\"]",
            "model.layers",
        ),
    ] {
        assert_eq!(spec(text).unwrap_err().key, key, "{text}");
    }
    assert!(spec("kind = \"sequential\"\npreset = \"mlp\"\ninit = \"xavier\"").is_err());
}

#[test]
fn shape_mismatches_fail_at_build_naming_layer_kind_and_shapes() {
    let img = image(3, 8, 8, 10);
    for (layers, input, key, words) in [
        // A dense layer on an image: both shapes in the message.
        (
            "[{conv2d = {out = 4, kernel = 3}}, {dense = {units = 10}}]",
            &img,
            "layers[1]",
            &["dense", "4x6x6", "flat"][..],
        ),
        (
            "[{conv2d = {out = 4, kernel = 3}}]",
            &flat(10, 10),
            "layers[0]",
            &["conv2d", "10 (flat)", "image"],
        ),
        (
            "[{conv2d = {out = 4, kernel = 11}}]",
            &img,
            "layers[0]",
            &["kernel 11", "3x8x8"],
        ),
        (
            "[{max_pool = {size = 9}}]",
            &img,
            "layers[0]",
            &["max_pool", "window 9"],
        ),
        (
            "[{group_norm = {groups = 2}}]",
            &img,
            "layers[0]",
            &["group_norm", "3 channels"],
        ),
        (
            "[\"flatten\", \"global_avg_pool\"]",
            &img,
            "layers[1]",
            &["global_avg_pool", "192 (flat)"],
        ),
        // The network must end with one output per class.
        (
            "[\"flatten\", {dense = {units = 7}}]",
            &img,
            "layers[1]",
            &["7 (flat)", "10 classes"],
        ),
        (
            "[{conv2d = {out = 10, kernel = 8}}]",
            &img,
            "layers[0]",
            &["10x1x1", "10 classes"],
        ),
        // Inside a residual block, and a body whose shape no shortcut can match.
        (
            "[{residual = {layers = [\"relu\", {dense = {units = 3}}]}}]",
            &img,
            "layers[0].residual.layers[1]",
            &["dense", "3x8x8"],
        ),
        (
            "[{residual = {layers = [\"flatten\"]}}, \"dense\"]",
            &img,
            "layers[0]",
            &["residual", "3x8x8", "192 (flat)"],
        ),
    ] {
        let text = format!("kind = \"sequential\"\nlayers = {layers}");
        let e = build(&text, input).unwrap_err();
        assert_eq!(e.key, key, "{text}: {e}");
        for w in words {
            assert!(e.message.contains(w), "{text}: {e}");
        }
        // Through the registry, the error names the section too.
        let err = spec(&text)
            .unwrap()
            .validate()
            .unwrap()
            .build(input)
            .unwrap_err();
        assert!(
            matches!(&err, NnError::InvalidSpec(m) if m.contains(&format!("model.{key}"))),
            "{err}"
        );
    }
}

#[test]
fn resolved_table_fills_in_defaults_and_parses_back() {
    let s = spec(
        "kind = \"sequential\"\nlayers = [{conv2d = {out = 2, kernel = 3}}, {max_pool = {size = 2}}, \"flatten\", \"dense\"]",
    )
    .unwrap();
    let t = s.to_table();
    let text = toml::to_string(&t).unwrap();
    assert!(text.contains("stride = 2"), "{text}");
    assert!(text.contains("bias = true"), "{text}");
    assert!(text.contains("init = \"pytorch\""), "{text}");
    assert_eq!(ModelSpec::from_table(t).unwrap(), s);
}

#[test]
fn init_follows_pytorch_or_kaiming_normal() {
    let text = "layers = [{conv2d = {out = 8, kernel = 3}}, {group_norm = {groups = 2}}, \"flatten\", {dense = {units = 300}}, \"relu\", \"dense\"]";
    let input = image(2, 6, 6, 10);
    let m = must(&format!("kind = \"sequential\"\n{text}"), &input);
    let p = m.init_params(3);
    let range = |name: &str| m.layout().get(name).unwrap().range();
    let max_abs = |name: &str| p[range(name)].iter().fold(0.0f32, |a, v| a.max(v.abs()));
    // conv fan-in 2·3·3 = 18, dense fan-ins 8·4·4 = 128 and 300.
    for (name, fan) in [
        ("0.weight", 18.0f32),
        ("0.bias", 18.0),
        ("3.weight", 128.0),
        ("3.bias", 128.0),
        ("5.weight", 300.0),
    ] {
        let b = 1.0 / fan.sqrt();
        assert!(max_abs(name) <= b, "{name}: {}", max_abs(name));
        if name.ends_with("weight") {
            assert!(max_abs(name) > 0.9 * b, "{name}: {}", max_abs(name));
        }
    }
    assert!(p[range("1.weight")].iter().all(|&v| v == 1.0));
    assert!(p[range("1.bias")].iter().all(|&v| v == 0.0));
    assert_eq!(p, m.init_params(3));
    assert_ne!(p, m.init_params(4));

    let m = must(
        &format!("kind = \"sequential\"\ninit = \"kaiming_normal\"\n{text}"),
        &input,
    );
    let p = m.init_params(3);
    let w = &p[m.layout().get("3.weight").unwrap().range()];
    let var = w.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / w.len() as f64;
    assert!((var / (2.0 / 128.0) - 1.0).abs() < 0.05, "variance {var}");
    assert!(
        p[m.layout().get("3.bias").unwrap().range()]
            .iter()
            .all(|&v| v == 0.0)
    );
    assert!(
        p[m.layout().get("1.weight").unwrap().range()]
            .iter()
            .all(|&v| v == 1.0)
    );
}

/// Conv2d with a 3×3 kernel, stride 2, padding 1 on a 4×4 image 1..16, checked by hand.
#[test]
fn conv_stride_2_padding_1_by_hand() {
    let conv = conv::Conv {
        cin: 1,
        cout: 1,
        k: 3,
        stride: 2,
        pad: 1,
        h: 4,
        w: 4,
        ho: 2,
        wo: 2,
        w_off: 0,
        b_off: Some(9),
    };
    let x: Vec<f32> = (1..=16).map(|v| v as f32).collect();
    let mut col = vec![0.0; conv.col_len(1)];
    let mut dcol = col.clone();
    // All-ones kernel, bias 0.5: each output is its window's sum. Output (oy, ox) covers input rows
    // and columns 2·o − 1 ..= 2·o + 1 (the −1 is padding): (0,0) = 1+2+5+6, (0,1) = 2+3+4+6+7+8,
    // (1,0) = 5+6+9+10+13+14, (1,1) = 6+7+8+10+11+12+14+15+16.
    let mut params = vec![1.0f32; 10];
    params[9] = 0.5;
    let mut y = vec![0.0; 4];
    conv.forward(&params, &x, &mut y, 1, &mut col);
    assert_eq!(y, [14.5, 30.5, 57.5, 99.5]);
    // Backward with dy = [1, 2, 3, 4]: db = 10; dW[dy][dx] = Σ_o dy_o · x[2·oy + dy − 1][2·ox + dx − 1]
    // (e.g. dW[1][1] = 1·1 + 2·3 + 3·9 + 4·11 = 78); dx counts, for each pixel, the dy of the windows
    // covering it (e.g. pixel (1,1) is in all four: 10).
    let dy = [1.0f32, 2.0, 3.0, 4.0];
    let mut grad = vec![f32::NAN; 10];
    let mut dx = vec![f32::NAN; 16];
    conv.backward(
        &params,
        &x,
        &dy,
        Some(&mut dx),
        false,
        &mut grad,
        false,
        1,
        &mut col,
        &mut dcol,
    );
    assert_eq!(
        grad,
        [24.0, 43.0, 50.0, 44.0, 78.0, 88.0, 68.0, 118.0, 128.0, 10.0]
    );
    #[rustfmt::skip]
    let want_dx = [
        1.0, 3.0, 2.0, 2.0,
        4.0, 10.0, 6.0, 6.0,
        3.0, 7.0, 4.0, 4.0,
        3.0, 7.0, 4.0, 4.0,
    ];
    assert_eq!(dx, want_dx);
    // Kernel 1..9 (row-major): output (0,0) = 5·1 + 6·2 + 8·5 + 9·6 + 0.5; with dy = [1, 0, 0, 0] the
    // input gradient is the kernel's lower-right 2×2 block on pixels (0..2, 0..2).
    for (i, p) in params[..9].iter_mut().enumerate() {
        *p = (i + 1) as f32;
    }
    conv.forward(&params, &x, &mut y, 1, &mut col);
    assert_eq!(y[0], 111.5);
    conv.backward(
        &params,
        &x,
        &[1.0, 0.0, 0.0, 0.0],
        Some(&mut dx),
        false,
        &mut grad,
        false,
        1,
        &mut col,
        &mut dcol,
    );
    #[rustfmt::skip]
    let want_dx = [
        5.0, 6.0, 0.0, 0.0,
        8.0, 9.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
        0.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(dx, want_dx);
}

/// Finite-difference checks of every layer kind (dropout inactive: see
/// `dropout_gradient_matches_finite_differences_with_the_same_mask`).
///
/// A ReLU input within ~1e-3 of zero is a kink the checker cannot detect (its three differences
/// then agree with each other but not with the gradient); with seed 11 the GroupNorm + ReLU stack
/// has one such unit, which is why the seed is 12. `backward_is_the_adjoint_of_forward` and the
/// kink-free network of `whole_network_gradient_matches_finite_differences` check the same code
/// without kinks.
#[test]
fn gradients_match_finite_differences_for_every_layer() {
    let img = image(2, 7, 7, 3);
    for layers in [
        // conv2d: stride 2 + padding 1 with bias; "same" without bias; even kernel, stride 3.
        "[{conv2d = {out = 3, kernel = 3, stride = 2, padding = 1}}, \"flatten\", \"dense\"]",
        "[{conv2d = {out = 2, kernel = 3, padding = \"same\", bias = false}}, \"flatten\", \"dense\"]",
        "[{conv2d = {out = 2, kernel = 2, stride = 3, padding = 2}}, \"flatten\", \"dense\"]",
        // Pools (overlapping windows: see `pool_backward_is_the_adjoint_of_forward`), global average
        // pooling.
        "[{conv2d = {out = 3, kernel = 2}}, {max_pool = {size = 2}}, \"flatten\", \"dense\"]",
        "[{conv2d = {out = 3, kernel = 2}}, {avg_pool = {size = 2, stride = 1}}, \"flatten\", \"dense\"]",
        "[{conv2d = {out = 4, kernel = 3}}, \"global_avg_pool\", \"dense\"]",
        // dense with and without bias, relu, dropout (inactive here).
        "[\"flatten\", {dense = {units = 6, bias = false}}, \"relu\", {dropout = {p = 0.3}}, \"dense\"]",
        // group_norm on an image and on a flat tensor.
        "[{conv2d = {out = 4, kernel = 3}}, {group_norm = {groups = 2}}, \"relu\", \"flatten\", \"dense\"]",
        "[\"flatten\", {dense = {units = 8}}, {group_norm = {groups = 2}}, \"dense\"]",
        // Residual blocks: identity, 1x1-conv projection with stride 2, dense projection.
        "[{conv2d = {out = 2, kernel = 3, padding = 1}}, {residual = {layers = [{conv2d = {out = 2, kernel = 3, padding = 1}}, \"relu\"]}}, \"flatten\", \"dense\"]",
        "[{residual = {layers = [{conv2d = {out = 4, kernel = 3, stride = 2, padding = 1}}, {group_norm = {groups = 2}}, \"relu\", {conv2d = {out = 4, kernel = 3, padding = 1}}]}}, \"relu\", \"flatten\", \"dense\"]",
        "[\"flatten\", {residual = {layers = [{dense = {units = 5}}, \"relu\"]}}, \"dense\"]",
    ] {
        let m = must(&format!("kind = \"sequential\"\nlayers = {layers}"), &img);
        if layers.contains("relu") {
            // ReLU kinks: per coordinate, the differences may straddle one; along a direction
            // moving every parameter, each kink weighs little.
            check_directional(&m, 5, 12, 3e-2);
        } else if layers.contains("max_pool") {
            // Arg-max switches are kinks too (`backward_is_the_adjoint_of_forward` checks the
            // max-pooling backward exactly).
            check_gradient_with(&m, 5, 12, 3e-2, 1e-2);
        } else {
            check_gradient(&m, 5, 12);
        }
    }
}

#[test]
fn whole_network_gradient_matches_finite_differences() {
    // Seeds 1–7: five pass at 3e-2, two (5 and 7) have a ReLU within ~1e-3 of zero.
    const SEED: u64 = 1;
    // A small ResNet: conv stem, GN, max-pool, an identity block and a projection block, global
    // pooling, dense head; with more samples than one pass so pass gradients are summed. (Every ReLU
    // and max-pool is a kink the finite differences may straddle, so the batch is small.)
    let text = "kind = \"sequential\"\nlayers = [\
        {conv2d = {out = 4, kernel = 3, padding = 1, bias = false}}, {group_norm = {groups = 2}}, \"relu\", \
        {max_pool = {size = 2}}, \
        {residual = {layers = [{conv2d = {out = 4, kernel = 3, padding = 1}}, {group_norm = {groups = 2}}, \"relu\"]}}, \
        {residual = {layers = [{conv2d = {out = 6, kernel = 3, stride = 2, padding = 1}}, {group_norm = {groups = 3}}]}}, \
        \"relu\", \"global_avg_pool\", {dense = {units = 5}}, \"relu\", \"dense\"]";
    let mut m = must(text, &image(3, 8, 8, 4));
    check_gradient_with(&m, 3, SEED, 3e-2, 1e-2);
    m.pass_rows = 2;
    check_gradient_with(&m, 3, SEED, 3e-2, 1e-2);
    // The same structure without kinks (average pooling, no ReLU): every coordinate must agree.
    let smooth = "kind = \"sequential\"\nlayers = [\
        {conv2d = {out = 4, kernel = 3, padding = 1, bias = false}}, {group_norm = {groups = 2}}, \
        {avg_pool = {size = 2}}, \
        {residual = {layers = [{conv2d = {out = 4, kernel = 3, padding = 1}}, {group_norm = {groups = 2}}]}}, \
        {residual = {layers = [{conv2d = {out = 6, kernel = 3, stride = 2, padding = 1}}, {group_norm = {groups = 3}}]}}, \
        \"global_avg_pool\", {dense = {units = 5}}, \"dense\"]";
    check_gradient(&must(smooth, &image(3, 8, 8, 4)), 7, 5);
}

/// Pooling, flattening and the convolution's input gradient are linear maps (max-pooling for fixed
/// arg-maxes): each backward must be the adjoint of its forward, `<f(x), g> = <x, f*(g)>`.
#[test]
fn backward_is_the_adjoint_of_forward() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut rand =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect() };
    let dot = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(&u, &v)| u as f64 * v as f64)
            .sum::<f64>()
    };
    let (c, rows) = (3, 2);
    for (size, stride) in [(3, 2), (2, 2), (2, 1), (3, 3)] {
        let (h, w) = (7, 6);
        let (ho, wo) = ((h - size) / stride + 1, (w - size) / stride + 1);
        let g = pool::Pool2d {
            h,
            w,
            size,
            stride,
            ho,
            wo,
        };
        let x = rand(c * rows * h * w);
        let dy = rand(c * rows * ho * wo);
        let (mut y, mut idx, mut dx) =
            (vec![0.0; dy.len()], vec![0.0; dy.len()], vec![0.0; x.len()]);
        g.max_forward(&x, &mut y, &mut idx);
        g.max_backward(&idx, &dy, &mut dx);
        assert!(
            (dot(&y, &dy) - dot(&x, &dx)).abs() < 1e-5,
            "max {size}/{stride}"
        );
        g.avg_forward(&x, &mut y);
        g.avg_backward(&dy, &mut dx);
        assert!(
            (dot(&y, &dy) - dot(&x, &dx)).abs() < 1e-5,
            "avg {size}/{stride}"
        );
    }
    let (hw, x) = (5, rand(c * rows * 5));
    let dy = rand(rows * c);
    let (mut y, mut dx) = (vec![0.0; dy.len()], vec![0.0; x.len()]);
    pool::global_avg_forward(&x, c, hw, rows, &mut y);
    pool::global_avg_backward(&dy, c, hw, rows, &mut dx);
    assert!((dot(&y, &dy) - dot(&x, &dx)).abs() < 1e-5);
    let mut f = vec![0.0; x.len()];
    dense::flatten(&x, &mut f, c, hw, rows, false);
    let mut back = vec![0.0; x.len()];
    dense::flatten(&f, &mut back, c, hw, rows, true);
    assert_eq!(back, x);
    // Convolutions of every geometry: the input gradient is the adjoint of x -> conv(x) (no bias).
    for (k, stride, pad) in [(3, 2, 1), (2, 3, 2), (5, 1, 2), (1, 2, 0), (4, 1, 0)] {
        let (cin, cout, h, w) = (2, 3, 7, 6);
        let (ho, wo) = (
            (h + 2 * pad - k) / stride + 1,
            (w + 2 * pad - k) / stride + 1,
        );
        let conv = conv::Conv {
            cin,
            cout,
            k,
            stride,
            pad,
            h,
            w,
            ho,
            wo,
            w_off: 0,
            b_off: None,
        };
        let params = rand(cin * k * k * cout);
        let x = rand(cin * rows * h * w);
        let dy = rand(cout * rows * ho * wo);
        let mut col = vec![0.0; conv.col_len(rows)];
        let mut dcol = col.clone();
        let mut y = vec![0.0; dy.len()];
        conv.forward(&params, &x, &mut y, rows, &mut col);
        let (mut dx, mut grad) = (vec![0.0; x.len()], vec![0.0; params.len()]);
        conv.backward(
            &params,
            &x,
            &dy,
            Some(&mut dx),
            false,
            &mut grad,
            false,
            rows,
            &mut col,
            &mut dcol,
        );
        assert!(
            (dot(&y, &dy) - dot(&x, &dx)).abs() < 1e-4,
            "conv k{k} s{stride} p{pad}"
        );
        // And the weight gradient: <conv_w(x), dy> is linear in w.
        assert!(
            (dot(&y, &dy) - dot(&params, &grad)).abs() < 1e-4,
            "conv dW k{k} s{stride} p{pad}"
        );
    }
}

/// `loss_grad` against finite differences of `loss_grad` itself, with the noise stream restarted
/// before every call so that every evaluation uses the same dropout mask.
#[test]
fn dropout_gradient_matches_finite_differences_with_the_same_mask() {
    let m = must(
        "kind = \"sequential\"\nlayers = [\"flatten\", {dense = {units = 16}}, \"relu\", {dropout = {p = 0.5}}, \"dense\"]",
        &image(1, 3, 3, 3),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x = Array2::from_shape_fn((6, 9), |_| rng.random_range(-2.0f32..2.0));
    let y: Vec<u32> = (0..6).map(|i| i % 3).collect();
    let p: Vec<f32> = m.init_params(1).iter().map(|v| 3.0 * v).collect();
    let mut s = Scratch::default();
    let mut run = |p: &[f32], g: &mut [f32]| {
        s.start_noise(99);
        m.loss_grad(p, x.view(), &y, g, &mut s) as f64
    };
    let mut g = vec![0.0; p.len()];
    let mut g2 = g.clone();
    let l0 = run(&p, &mut g);
    // Dropout is active: the loss differs from evaluation's, and half the hidden units pass nothing.
    let mut stats = EvalStats::new(3);
    m.evaluate(&p, x.view(), &y, &mut Scratch::default(), &mut stats);
    assert!((stats.mean_loss() - l0).abs() > 1e-4);
    let mut checked = 0;
    for i in (0..p.len()).step_by(3) {
        let mut q = p.clone();
        q[i] += 1e-2;
        let up = run(&q, &mut g2);
        q[i] -= 2e-2;
        let down = run(&q, &mut g2);
        let fd = (up - down) / 2e-2;
        let rel = (fd - g[i] as f64).abs() / fd.abs().max(g[i].abs() as f64).max(1e-2);
        assert!(
            rel < 2e-2,
            "coordinate {i}: analytic {}, finite differences {fd}",
            g[i]
        );
        checked += 1;
    }
    assert!(checked > 30);
}

#[test]
fn dropout_masks_depend_on_key_step_and_sample_only() {
    let mask = |key, step, row0, rows| {
        let mut m = vec![0.0f32; rows * 10];
        dense::DropMask::new(key, step, 1, 0.25).fill(&mut m, 10, None, row0, rows);
        m
    };
    let whole = mask(5, 0, 0, 6);
    let mut halves = mask(5, 0, 0, 4);
    halves.extend(mask(5, 0, 4, 2));
    assert_eq!(whole, halves);
    assert_ne!(whole, mask(5, 1, 0, 6));
    assert_ne!(whole, mask(6, 0, 0, 6));
    let kept = whole.iter().filter(|&&v| v > 0.0).count();
    assert!((35..=55).contains(&kept), "{kept} of 60 kept");
    assert!(whole.iter().all(|&v| v == 0.0 || v == 1.0 / 0.75));
    // Image layout: the same element gets the same draw as in the flat layout.
    let mut planes = vec![0.0f32; 2 * 2 * 5];
    dense::DropMask::new(5, 0, 1, 0.25).fill(&mut planes, 10, Some((2, 5)), 0, 2);
    for b in 0..2 {
        for c in 0..2 {
            for p in 0..5 {
                assert_eq!(planes[(c * 2 + b) * 5 + p], whole[b * 10 + c * 5 + p]);
            }
        }
    }
}

#[test]
fn dropout_steps_follow_the_noise_stream() {
    let m = must(
        "kind = \"sequential\"\nlayers = [{dense = {units = 32}}, {dropout = {p = 0.5}}, \"dense\"]",
        &flat(6, 3),
    );
    let (x, y) = toy_problem(8, 6, 3, 1);
    let p = m.init_params(0);
    let mut g = vec![0.0; p.len()];
    let mut s = Scratch::default();
    let mut losses = Vec::new();
    for _ in 0..2 {
        s.start_noise(7);
        losses.push(m.loss_grad(&p, x.view(), &y, &mut g, &mut s));
        losses.push(m.loss_grad(&p, x.view(), &y, &mut g, &mut s));
    }
    s.stop_noise();
    let off = m.loss_grad(&p, x.view(), &y, &mut g, &mut s);
    let mut stats = EvalStats::new(3);
    m.evaluate(&p, x.view(), &y, &mut s, &mut stats);
    assert_eq!(
        losses[0].to_bits(),
        losses[2].to_bits(),
        "same key, same step"
    );
    assert_eq!(losses[1].to_bits(), losses[3].to_bits());
    assert_ne!(losses[0], losses[1], "the step changes the mask");
    assert!(
        (off as f64 - stats.mean_loss()).abs() < 1e-6,
        "no stream: inactive"
    );
}

#[test]
fn bit_identical_across_threads_and_scratch_reuse() {
    let m = must(
        "kind = \"sequential\"\npreset = \"resnet8_gn\"",
        &image(3, 8, 8, 4),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = Array2::from_shape_fn((10, 192), |_| rng.random_range(-1.0f32..1.0));
    let y: Vec<u32> = (0..10).map(|i| i % 4).collect();
    let p = m.init_params(1);
    let mut g1 = vec![0.0; p.len()];
    let mut s = Scratch::default();
    let l1 = m.loss_grad(&p, x.view(), &y, &mut g1, &mut s);
    // Again on the warm scratch (after an evaluation of another size used it).
    let mut stats = EvalStats::new(4);
    m.evaluate(&p, x.view(), &y, &mut s, &mut stats);
    let mut g2 = vec![0.0; p.len()];
    let l2 = m.loss_grad(&p, x.view(), &y, &mut g2, &mut s);
    let (l3, g3) = std::thread::scope(|sc| {
        sc.spawn(|| {
            let mut g = vec![0.0; p.len()];
            let l = m.loss_grad(&p, x.view(), &y, &mut g, &mut Scratch::default());
            (l, g)
        })
        .join()
        .unwrap()
    });
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert_eq!(l1.to_bits(), l3.to_bits());
    assert!(g1.iter().zip(&g2).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!(g1.iter().zip(&g3).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert!((stats.mean_loss() - l1 as f64).abs() < 1e-5);
}

#[test]
fn warm_scratch_does_not_grow() {
    let m = must(
        "kind = \"sequential\"\npreset = \"cnn_cifar\"",
        &image(3, 32, 32, 10),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = Array2::from_shape_fn((20, 3072), |_| rng.random_range(-1.0f32..1.0));
    let y: Vec<u32> = (0..20).map(|i| i % 10).collect();
    let p = m.init_params(1);
    let mut g = vec![0.0; p.len()];
    let mut s = Scratch::default();
    m.loss_grad(&p, x.view(), &y, &mut g, &mut s);
    let caps: Vec<(usize, *const f32)> =
        s.bufs.iter().map(|b| (b.capacity(), b.as_ptr())).collect();
    for rows in [20, 7, 20] {
        m.loss_grad(
            &p,
            x.slice(ndarray::s![..rows, ..]),
            &y[..rows],
            &mut g,
            &mut s,
        );
    }
    let after: Vec<(usize, *const f32)> =
        s.bufs.iter().map(|b| (b.capacity(), b.as_ptr())).collect();
    assert_eq!(caps, after, "no buffer was reallocated");
    eprintln!(
        "cnn_cifar: {} passes of {} rows, {:.1} MiB of scratch at B=20",
        20usize.div_ceil(m.pass_rows()),
        m.pass_rows(),
        m.scratch_floats(20, true) as f64 * 4.0 / (1 << 20) as f64
    );
}

#[test]
fn learns_a_separable_problem() {
    let (x, y) = toy_problem(200, 16, 4, 3);
    let m = must(
        "kind = \"sequential\"\nlayers = [{dense = {units = 32}}, \"relu\", {group_norm = {groups = 4}}, {residual = {layers = [{dense = {units = 32}}, \"relu\"]}}, \"dense\"]",
        &flat(16, 4),
    );
    let acc = train_toy(&m, &x, &y, 0.1, 300, 20);
    assert!(acc > 0.95, "accuracy {acc}");
}

#[test]
fn summary_lists_layers_with_shapes() {
    let m = must(
        "kind = \"sequential\"\nlayers = [{conv2d = {out = 4, kernel = 3, padding = 1}}, {residual = {layers = [\"relu\"]}}, \"global_avg_pool\", \"dense\"]",
        &image(1, 5, 5, 3),
    );
    let s = m.summary();
    assert_eq!(
        s,
        [
            "layers[0] (conv2d): 1x5x5 -> 4x5x5",
            "layers[1] (residual): 4x5x5 -> 4x5x5",
            "  layers[1].residual.layers[0] (relu): 4x5x5 -> 4x5x5",
            "layers[2] (global_avg_pool): 4x5x5 -> 4 (flat)",
            "layers[3] (dense): 4 (flat) -> 3 (flat)",
        ]
    );
}
/// Directional finite differences: `<∇L, v>` against `(L(θ + h·v) − L(θ − h·v)) / 2h` for random
/// directions `v` over every parameter at once. For deep `f32` networks the per-coordinate check
/// drowns in rounding (a single coordinate moves the loss by ~1e-5) and in ReLU kinks; a direction
/// moving every parameter changes the loss by far more than the rounding, and each kink crossed
/// weighs little in the sum.
pub(super) fn check_directional(model: &dyn Model, batch: usize, seed: u64, tol: f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = model.num_classes();
    let x = Array2::from_shape_fn((batch, model.input_len()), |_| {
        rng.random_range(-2.0f32..2.0)
    });
    let y: Vec<u32> = (0..batch).map(|_| rng.random_range(0..k as u32)).collect();
    let p = model.init_params(seed);
    let mut s = Scratch::default();
    let mut g = vec![0.0; p.len()];
    model.loss_grad(&p, x.view(), &y, &mut g, &mut s);
    let mut loss = |q: &[f32]| {
        let mut st = EvalStats::new(k);
        model.evaluate(q, x.view(), &y, &mut s, &mut st);
        st.mean_loss()
    };
    for _ in 0..6 {
        // Each coordinate moves by up to h times its tensor's initial scale.
        let v: Vec<f32> = p
            .iter()
            .map(|w| rng.random_range(-1.0f32..1.0) * w.abs().max(0.05))
            .collect();
        let gv: f64 = g.iter().zip(&v).map(|(&a, &b)| a as f64 * b as f64).sum();
        let fd = |h: f32, loss: &mut dyn FnMut(&[f32]) -> f64| {
            let up: Vec<f32> = p.iter().zip(&v).map(|(&w, &d)| w + h * d).collect();
            let down: Vec<f32> = p.iter().zip(&v).map(|(&w, &d)| w - h * d).collect();
            (loss(&up) - loss(&down)) / (2.0 * h as f64)
        };
        // Richardson extrapolation of the steps 2e-3 and 1e-3 cancels the h² term of the
        // curvature, which is large along directions that move every weight.
        let (d1, d2) = (fd(2e-3, &mut loss), fd(1e-3, &mut loss));
        let est = (4.0 * d2 - d1) / 3.0;
        let rel = (est - gv).abs() / gv.abs().max(1e-3);
        assert!(
            rel < tol,
            "{}: <g, v> = {gv}, differences {d1} {d2} -> {est} (rel {rel:.2e})",
            model.name()
        );
        eprintln!(
            "{}: <g, v> = {gv:.6}, extrapolated {est:.6} (rel {rel:.1e})",
            model.name()
        );
    }
}
