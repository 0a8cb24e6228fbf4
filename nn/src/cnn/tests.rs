use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::conv::{Planes, col2im, im2col};
use super::pool::{maxpool, maxpool_backward};
use super::*;
use crate::testutil::{check_gradient, toy_problem, train_toy};

fn shape(channels: usize, height: usize, width: usize) -> ImageShape {
    ImageShape {
        channels,
        height,
        width,
    }
}

fn small(chunk: usize) -> Cnn {
    let mut m = Cnn::new(shape(2, 8, 8), [3, 4], 5, 3).unwrap_or_else(|e| panic!("{e}"));
    m.chunk = chunk;
    m
}

/// [`small`] with conv2 run one input channel at a time.
fn small_grouped(chunk: usize) -> Cnn {
    let mut m = small(chunk);
    m.group_budget = 1;
    assert_eq!(m.groups(chunk.min(3)).count(), 3);
    m
}

#[test]
fn mcmahan_cnn_has_1663370_parameters() {
    let m = Cnn::new(shape(1, 28, 28), [32, 64], 512, 10).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.num_params(), 1_663_370);
    let names = crate::testutil::tensor_names(&m);
    assert_eq!(
        names,
        [
            "conv1.weight",
            "conv1.bias",
            "conv2.weight",
            "conv2.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias"
        ]
    );
    assert_eq!(
        m.layout().get("fc1.weight").map(|t| t.shape.clone()),
        Some(vec![3136, 512])
    );
    let conv1 = 2.0 * 784.0 * 25.0 * 32.0;
    let conv2 = 2.0 * 196.0 * 25.0 * 32.0 * 64.0;
    let fc = 2.0 * (3136.0 * 512.0 + 512.0 * 10.0);
    assert_eq!(m.eval_flops_per_sample(), conv1 + conv2 + fc);
    assert_eq!(
        m.train_flops_per_sample(),
        2.0 * (conv1 + conv2 + fc) + conv2 + fc
    );
    assert_eq!(m.name(), "cnn(1x28x28-c32-c64-fc512-10)");
}

#[test]
fn invalid_shapes_are_rejected() {
    for (img, ch, fc) in [
        (shape(1, 30, 28), [32, 64], 512),
        (shape(1, 28, 6), [32, 64], 512),
        (shape(0, 28, 28), [32, 64], 512),
    ] {
        let e = Cnn::new(img, ch, fc, 10);
        assert!(
            matches!(e, Err(NnError::InvalidSpec(_))),
            "{img:?} should be rejected"
        );
    }
    assert!(matches!(
        Cnn::new(shape(1, 28, 28), [0, 64], 512, 10),
        Err(NnError::InvalidSpec(_))
    ));
    let msg = Cnn::new(shape(3, 30, 30), [32, 64], 512, 10)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(msg.contains("multiples of 4"), "{msg}");
    assert!(Cnn::new(shape(3, 32, 32), [32, 64], 512, 10).is_ok());
}

#[test]
fn im2col_matches_direct_indexing_and_col2im_is_its_adjoint() {
    // Sample-major planes (the input batch) and channel-major ones (a chunk: merged copies), on
    // images down to 2 × 2 (every shift leaves the image).
    for (cin, cb, h, w, chunk_major) in [
        (2, 3, 4, 8, false),
        (2, 3, 4, 8, true),
        (3, 2, 2, 2, true),
        (1, 4, 6, 4, true),
    ] {
        let planes = if chunk_major {
            Planes {
                base: 5,
                b_stride: h * w,
                c_stride: cb * h * w,
            }
        } else {
            Planes {
                base: 5,
                b_stride: cin * h * w,
                c_stride: h * w,
            }
        };
        check_im2col(cin, cb, h, w, planes);
    }
}

fn check_im2col(cin: usize, cb: usize, h: usize, w: usize, planes: Planes) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let src: Vec<f32> = (0..5 + cb * cin * h * w)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let p = cb * h * w;
    let mut col = vec![f32::NAN; cin * 25 * p];
    im2col(&src, planes, cin, cb, h, w, &mut col);
    for ci in 0..cin {
        for kh in 0..5 {
            for kw in 0..5 {
                for b in 0..cb {
                    for y in 0..h {
                        for x in 0..w {
                            let (sy, sx) =
                                (y as isize + kh as isize - 2, x as isize + kw as isize - 2);
                            let want = if sy < 0 || sx < 0 || sy >= h as isize || sx >= w as isize {
                                0.0
                            } else {
                                src[planes.base
                                    + b * planes.b_stride
                                    + ci * planes.c_stride
                                    + sy as usize * w
                                    + sx as usize]
                            };
                            let got = col[((ci * 5 + kh) * 5 + kw) * p + (b * h + y) * w + x];
                            assert_eq!(got, want);
                        }
                    }
                }
            }
        }
    }
    // <im2col(u), v> == <u, col2im(v)>.
    let v: Vec<f32> = (0..col.len())
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let lhs: f64 = col.iter().zip(&v).map(|(a, b)| *a as f64 * *b as f64).sum();
    let mut back = vec![0.0f32; src.len()];
    col2im(&mut v.clone(), cin, cb, h, w, &mut back, planes);
    let rhs: f64 = back
        .iter()
        .zip(&src)
        .map(|(a, b)| *a as f64 * *b as f64)
        .sum();
    assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
    assert!(back[..5].iter().all(|&z| z == 0.0));
}

#[test]
fn pooling_records_first_positive_maximum() {
    let act = [1.0, 3.0, 0.0, 0.0, 3.0, 2.0, 0.0, 0.0];
    let mut pooled = [0.0; 2];
    let mut idx = [0.0; 2];
    maxpool(&act, 2, 4, &mut pooled, &mut idx);
    assert_eq!(pooled, [3.0, 0.0]);
    // Ties go to the first maximum; windows whose maximum is not positive pass no gradient.
    assert_eq!(idx, [1.0, -3.0]);
    let mut d = [0.0; 8];
    maxpool_backward(&idx, &[5.0, 7.0], &mut d);
    assert_eq!(d, [0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn gradient_matches_finite_differences() {
    // One chunk per sample, and all samples in one chunk.
    check_gradient(&small(1), 3, 31);
    check_gradient(&small(64), 3, 32);
    check_gradient(&small_grouped(1), 3, 34);
    check_gradient(&small_grouped(64), 3, 35);
    // The smallest valid image: the second convolution works on 2 × 2 planes.
    let tiny = Cnn::new(shape(1, 4, 4), [2, 3], 4, 2).unwrap_or_else(|e| panic!("{e}"));
    check_gradient(&tiny, 4, 33);
}

#[test]
fn chunking_and_micro_batches_do_not_change_results() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let rows = 70; // two micro-batches (64 + 6)
    let a = small(64);
    let x = Array2::from_shape_fn((rows, a.input_len()), |_| rng.random_range(-1.0f32..1.0));
    let y: Vec<u32> = (0..rows as u32).map(|i| i % 3).collect();
    let p = a.init_params(9);
    let mut ga = vec![0.0; a.num_params()];
    let la = a.loss_grad(&p, x.view(), &y, &mut ga, &mut Scratch::default());
    for b in [small(3), small_grouped(3), small_grouped(64)] {
        let mut gb = vec![0.0; a.num_params()];
        let lb = b.loss_grad(&p, x.view(), &y, &mut gb, &mut Scratch::default());
        assert!((la - lb).abs() < 1e-6);
        for (u, v) in ga.iter().zip(&gb) {
            assert!((u - v).abs() < 1e-5 * (1.0 + u.abs()), "{u} vs {v}");
        }
    }
    // Gradient over 70 rows = weighted mean of the gradients over rows 0..35 and 35..70.
    let mut g1 = vec![0.0; a.num_params()];
    let mut g2 = vec![0.0; a.num_params()];
    let mut s = Scratch::default();
    let l1 = a.loss_grad(
        &p,
        x.slice(ndarray::s![..35, ..]),
        &y[..35],
        &mut g1,
        &mut s,
    );
    let l2 = a.loss_grad(
        &p,
        x.slice(ndarray::s![35.., ..]),
        &y[35..],
        &mut g2,
        &mut s,
    );
    assert!((la - 0.5 * (l1 + l2)).abs() < 1e-5);
    for ((u, v), w) in ga.iter().zip(&g1).zip(&g2) {
        assert!(
            (u - 0.5 * (v + w)).abs() < 1e-5 * (1.0 + u.abs()),
            "{u} vs {v}, {w}"
        );
    }
}

#[test]
fn deterministic_across_threads_and_scratch() {
    let m = Cnn::new(shape(1, 12, 12), [4, 6], 16, 5).unwrap_or_else(|e| panic!("{e}"));
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x = Array2::from_shape_fn((9, m.input_len()), |_| rng.random_range(0.0f32..1.0));
    let y: Vec<u32> = (0..9).map(|i| i % 5).collect();
    let p = m.init_params(4);
    let mut g1 = vec![0.0; m.num_params()];
    let mut g2 = vec![0.0; m.num_params()];
    let mut s = Scratch::default();
    // Warm the scratch with an evaluation of a different batch size first.
    let mut st = EvalStats::new(5);
    m.evaluate(&p, x.slice(ndarray::s![..4, ..]), &y[..4], &mut s, &mut st);
    let l1 = m.loss_grad(&p, x.view(), &y, &mut g1, &mut s);
    let l2 = std::thread::scope(|sc| {
        sc.spawn(|| m.loss_grad(&p, x.view(), &y, &mut g2, &mut Scratch::default()))
            .join()
            .unwrap_or(f32::NAN)
    });
    assert_eq!(l1.to_bits(), l2.to_bits());
    assert_eq!(g1, g2);
}

#[test]
fn learns_a_separable_problem() {
    let m = Cnn::new(shape(1, 8, 8), [4, 8], 16, 4).unwrap_or_else(|e| panic!("{e}"));
    let (x, y) = toy_problem(200, 64, 4, 11);
    let acc = train_toy(&m, &x, &y, 0.05, 300, 10);
    assert!(acc >= 0.95, "accuracy {acc}");
}

#[test]
fn evaluation_agrees_with_loss_grad() {
    let m = small(2);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = Array2::from_shape_fn((100, m.input_len()), |_| rng.random_range(-1.0f32..1.0));
    let y: Vec<u32> = (0..100).map(|_| rng.random_range(0..3u32)).collect();
    let p = m.init_params(6);
    let mut stats = EvalStats::new(3);
    m.evaluate(&p, x.view(), &y, &mut Scratch::default(), &mut stats);
    assert_eq!(stats.count, 100);
    assert_eq!(stats.class_count.iter().sum::<u64>(), 100);
    assert_eq!(stats.class_correct.iter().sum::<u64>(), stats.correct);
    let mut g = vec![0.0; m.num_params()];
    let loss = m.loss_grad(&p, x.view(), &y, &mut g, &mut Scratch::default());
    assert!((stats.mean_loss() - loss as f64).abs() < 1e-5);
    // Predictions from a per-sample evaluation add up to the batch counts.
    let mut correct = 0;
    for i in 0..100 {
        let mut s = EvalStats::new(3);
        m.evaluate(
            &p,
            x.slice(ndarray::s![i..i + 1, ..]),
            &y[i..i + 1],
            &mut Scratch::default(),
            &mut s,
        );
        correct += s.correct;
    }
    assert_eq!(correct, stats.correct);
}
