//! Helpers shared by the models' tests: finite-difference gradient checks and a toy problem.

use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{EvalStats, Model, Scratch, Sgd};

/// Mean loss of `params` on `(x, y)`, through `evaluate` (the per-sample losses are summed in f64).
fn mean_loss(
    model: &dyn Model,
    params: &[f32],
    x: &Array2<f32>,
    y: &[u32],
    scratch: &mut Scratch,
) -> f64 {
    let mut stats = EvalStats::new(model.num_classes());
    model.evaluate(params, x.view(), y, scratch, &mut stats);
    stats.loss_sum / y.len() as f64
}

/// Checks `loss_grad` against central finite differences on a random batch of `batch` samples.
///
/// Every coordinate is checked when there are at most 400 parameters; otherwise the first, middle
/// and last coordinate of every tensor plus random ones (at least 150 in all). A coordinate passes when
/// `|fd − g| / max(|fd|, |g|, floor) < 1e-2` with `fd` the central difference of step 2.5e-3 (steps 1e-2
/// and 5e-3 are computed too); coordinates whose differences at 5e-3 and 2.5e-3 disagree sit on a ReLU
/// or max-pool kink and are skipped (at most 10% may be). `floor` is 2e-3 × the largest gradient entry.
pub(crate) fn check_gradient(model: &dyn Model, batch: usize, seed: u64) {
    check_gradient_with(model, batch, seed, 1e-2, 2e-3);
}

/// [`check_gradient`] with the relative tolerance `tol` (also the kink threshold, instead of 1e-2)
/// and the floor `floor_frac` × the largest gradient entry (instead of 2e-3): deep `f32` networks
/// lose about 1e-6 of the loss to rounding, which small-step differences amplify.
pub(crate) fn check_gradient_with(
    model: &dyn Model,
    batch: usize,
    seed: u64,
    tol: f64,
    floor_frac: f64,
) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = model.num_classes();
    let x = Array2::from_shape_fn((batch, model.input_len()), |_| {
        rng.random_range(-2.0f32..2.0)
    });
    let y: Vec<u32> = (0..batch).map(|_| rng.random_range(0..k as u32)).collect();
    // Larger than the default initialisation so that the gradients stand well above f32 noise.
    let params: Vec<f32> = model.init_params(seed).iter().map(|w| 2.0 * w).collect();
    let mut scratch = Scratch::default();
    let mut grad = vec![f32::NAN; params.len()];
    let loss = model.loss_grad(&params, x.view(), &y, &mut grad, &mut scratch);
    assert!(
        grad.iter().all(|g| g.is_finite()),
        "gradient not fully written"
    );
    let l0 = mean_loss(model, &params, &x, &y, &mut scratch);
    assert!(
        (l0 - loss as f64).abs() < 1e-5 * (1.0 + l0.abs()),
        "loss_grad {loss} vs evaluate {l0}"
    );

    let n = params.len();
    let mut coords: Vec<usize> = Vec::new();
    if n <= 400 {
        coords.extend(0..n);
    } else {
        for t in model.layout().tensors() {
            let r = t.range();
            coords.extend([r.start, r.start + r.len() / 2, r.end - 1]);
            for _ in 0..8 {
                coords.push(rng.random_range(r.clone()));
            }
        }
        while coords.len() < 150 {
            coords.push(rng.random_range(0..n));
        }
    }
    let gmax = grad.iter().fold(0.0f32, |m, g| m.max(g.abs())) as f64;
    let floor = floor_frac * gmax.max(1e-2);
    let mut p = params.clone();
    let mut fd = |i: usize, eps: f32| -> f64 {
        let w = params[i];
        p[i] = w + eps;
        let up = (p[i] as f64) - w as f64;
        let lp = mean_loss(model, &p, &x, &y, &mut scratch);
        p[i] = w - eps;
        let down = w as f64 - (p[i] as f64);
        let lm = mean_loss(model, &p, &x, &y, &mut scratch);
        p[i] = w;
        (lp - lm) / (up + down)
    };
    let mut skipped = 0;
    let mut worst = 0.0f64;
    for &i in &coords {
        // Steps 1e-2, 5e-3, 2.5e-3: the smallest is the estimate; if it disagrees with the middle one a
        // ReLU or max-pool kink lies within 5e-3 of the point and the coordinate is skipped.
        let d1 = fd(i, 1e-2);
        let d2 = fd(i, 5e-3);
        let d3 = fd(i, 2.5e-3);
        if (d2 - d3).abs() > tol * d2.abs().max(d3.abs()).max(floor) {
            skipped += 1;
            continue;
        }
        let g = grad[i] as f64;
        let rel = (d3 - g).abs() / d3.abs().max(g.abs()).max(floor);
        worst = worst.max(rel);
        if std::env::var("GRADCHECK_VERBOSE").is_ok() {
            eprintln!("coord {i}: g {g:.6} fd {d1:.6} {d2:.6} {d3:.6} rel {rel:.2e}");
            continue;
        }
        assert!(
            rel < tol,
            "{}: coordinate {i}: analytic {g}, finite differences {d1} {d2} {d3} (rel {rel:.2e})",
            model.name()
        );
    }
    assert!(
        skipped * 10 <= coords.len(),
        "{}: {skipped} of {} coordinates on kinks",
        model.name(),
        coords.len()
    );
    eprintln!(
        "{}: {} coordinates, {skipped} skipped, worst rel err {worst:.2e}",
        model.name(),
        coords.len()
    );
}

/// A separable toy problem: `classes` random centres in `[-1, 1]^features`, each sample its class
/// centre plus uniform noise of amplitude 0.3.
pub(crate) fn toy_problem(
    n: usize,
    features: usize,
    classes: usize,
    seed: u64,
) -> (Array2<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres = Array2::from_shape_fn((classes, features), |_| rng.random_range(-1.0f32..1.0));
    let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    let x = Array2::from_shape_fn((n, features), |(i, j)| {
        centres[[y[i] as usize, j]] + rng.random_range(-0.3f32..0.3)
    });
    (x, y)
}

/// Trains with plain SGD for `steps` mini-batches of `batch` (cycling through the data) and returns the
/// training accuracy.
pub(crate) fn train_toy(
    model: &dyn Model,
    x: &Array2<f32>,
    y: &[u32],
    lr: f32,
    steps: usize,
    batch: usize,
) -> f64 {
    let mut params = model.init_params(42);
    let mut grad = vec![0.0; params.len()];
    let mut opt = Sgd::new(0.5, 0.0);
    let mut scratch = Scratch::default();
    let n = y.len();
    for s in 0..steps {
        let start = (s * batch) % (n - batch + 1);
        let xb = x.slice(ndarray::s![start..start + batch, ..]);
        let loss = model.loss_grad(
            &params,
            xb,
            &y[start..start + batch],
            &mut grad,
            &mut scratch,
        );
        assert!(loss.is_finite());
        opt.step(lr, &mut params, &grad);
    }
    let mut stats = EvalStats::new(model.num_classes());
    model.evaluate(&params, x.view(), y, &mut scratch, &mut stats);
    stats.accuracy()
}

/// The names of a model's parameter tensors, in layout order.
pub(crate) fn tensor_names(model: &dyn Model) -> Vec<String> {
    model
        .layout()
        .tensors()
        .iter()
        .map(|t| t.name.clone())
        .collect()
}
