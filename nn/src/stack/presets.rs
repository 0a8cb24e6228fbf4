//! Named stacks (`preset = "…"`): today's `mlp` and `cnn`, FedAU's CNNs (`../shared/algorithms.md`
//! §2.7), FRL's Conv4/Conv8 (§5.2) and ResNets with GroupNorm(2) (§3.4). The last dense layer has as
//! many units as the data has classes.

use super::spec::{Conv2d, Dense, GroupNorm, LayerSpec, Padding, Pool, Residual};

fn conv(out: usize, kernel: usize, stride: usize, padding: Padding, bias: bool) -> LayerSpec {
    LayerSpec::Conv2d(Conv2d {
        out,
        kernel,
        stride,
        padding,
        bias,
    })
}

fn pool2() -> LayerSpec {
    LayerSpec::MaxPool(Pool { size: 2, stride: 2 })
}

fn dense(units: Option<usize>, bias: bool) -> LayerSpec {
    LayerSpec::Dense(Dense { units, bias })
}

fn gn2() -> LayerSpec {
    LayerSpec::GroupNorm(GroupNorm {
        groups: 2,
        eps: 1e-5,
    })
}

/// Dense layers of the given widths with ReLUs between them, then the class layer.
fn head(widths: &[usize], bias: bool) -> Vec<LayerSpec> {
    let mut v = vec![LayerSpec::Flatten];
    for &w in widths {
        v.extend([dense(Some(w), bias), LayerSpec::Relu]);
    }
    v.push(dense(None, bias));
    v
}

/// A ResNet basic block on `cin` channels: conv3×3 (stride) → GN → ReLU → conv3×3 → GN, plus the
/// shortcut, then ReLU. The shortcut is the identity when the shape is kept, else torchvision's
/// `downsample` with GroupNorm: bias-free conv1×1 (stride) → GN.
fn block(cin: usize, out: usize, stride: usize) -> [LayerSpec; 2] {
    let shortcut = (cin != out || stride != 1)
        .then(|| vec![conv(out, 1, stride, Padding::Size(0), false), gn2()]);
    [
        LayerSpec::Residual(Residual {
            layers: vec![
                conv(out, 3, stride, Padding::Size(1), false),
                gn2(),
                LayerSpec::Relu,
                conv(out, 3, 1, Padding::Size(1), false),
                gn2(),
            ],
            shortcut,
        }),
        LayerSpec::Relu,
    ]
}

/// A CIFAR-style ResNet: conv3×3 stem → GN → ReLU, then `blocks[i]` basic blocks of `widths[i]`
/// channels per stage (stride 2 at the start of every stage but the first), global average pooling
/// and the class layer.
fn resnet(stem: usize, widths: &[usize], blocks: usize) -> Vec<LayerSpec> {
    let mut v = vec![
        conv(stem, 3, 1, Padding::Size(1), false),
        gn2(),
        LayerSpec::Relu,
    ];
    let mut cin = stem;
    for (s, &w) in widths.iter().enumerate() {
        for b in 0..blocks {
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            v.extend(block(cin, w, stride));
            cin = w;
        }
    }
    v.extend([LayerSpec::GlobalAvgPool, dense(None, true)]);
    v
}

/// FRL's ConvN: pairs of bias-free conv3×3 ("same") with ReLU, each pair followed by 2×2
/// max-pooling, then dense 256 → 256 → classes (bias-free).
fn conv_n(widths: &[usize]) -> Vec<LayerSpec> {
    let mut v = Vec::new();
    for &w in widths {
        for _ in 0..2 {
            v.extend([conv(w, 3, 1, Padding::Same, false), LayerSpec::Relu]);
        }
        v.push(pool2());
    }
    v.extend(head(&[256, 256], false));
    v
}

/// The layers of preset `name`, `None` for an unknown name.
pub(super) fn expand(name: &str) -> Option<Vec<LayerSpec>> {
    let same5 = |c| conv(c, 5, 1, Padding::Same, true);
    let pad1 = |c| conv(c, 3, 1, Padding::Size(1), true);
    Some(match name {
        // McMahan's 2NN (on MNIST: 199,210 parameters).
        "mlp" => head(&[200, 200], true),
        // McMahan's CNN (on MNIST: 1,663,370 parameters).
        "cnn" => [
            same5(32),
            LayerSpec::Relu,
            pool2(),
            same5(64),
            LayerSpec::Relu,
            pool2(),
        ]
        .into_iter()
        .chain(head(&[512], true))
        .collect(),
        // FedAU's CIFAR-10 CNN: 2 × (conv3×3 32, pad 1 → ReLU → pool) → 256 → 64 → classes.
        "cnn_cifar" => [
            pad1(32),
            LayerSpec::Relu,
            pool2(),
            pad1(32),
            LayerSpec::Relu,
            pool2(),
        ]
        .into_iter()
        .chain(head(&[256, 64], true))
        .collect(),
        // FedAU's FashionMNIST CNN: 2 × (conv3×3 32, pad 1 → ReLU → pool) → 128 → classes.
        "cnn_fmnist" => [
            pad1(32),
            LayerSpec::Relu,
            pool2(),
            pad1(32),
            LayerSpec::Relu,
            pool2(),
        ]
        .into_iter()
        .chain(head(&[128], true))
        .collect(),
        "conv4" => conv_n(&[64, 128]),
        "conv8" => conv_n(&[64, 128, 256, 512]),
        "resnet8_gn" => resnet(16, &[16, 32, 64], 1),
        "resnet18_gn" => resnet(64, &[64, 128, 256, 512], 2),
        _ => return None,
    })
}
