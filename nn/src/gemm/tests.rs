use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

#[allow(clippy::too_many_arguments)]
fn reference(
    m: usize,
    n: usize,
    k: usize,
    at: impl Fn(usize, usize) -> f32,
    bt: impl Fn(usize, usize) -> f32,
    c0: impl Fn(usize, usize) -> f32,
    init: Init<'_>,
    relu: bool,
) -> Vec<f64> {
    let mut out = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = match init {
                Init::Zero => 0.0,
                Init::Acc => c0(i, j) as f64,
                Init::RowBias(b) => b[i] as f64,
                Init::ColBias(b) => b[j] as f64,
            };
            for p in 0..k {
                s += at(i, p) as f64 * bt(p, j) as f64;
            }
            if relu {
                s = s.max(0.0);
            }
            out[i * n + j] = s;
        }
    }
    out
}

fn shapes() -> Vec<(usize, usize, usize)> {
    let mut v = vec![
        (1, 1, 1),
        (10, 200, 784),
        (64, 200, 200),
        (7, 10, 300),
        (13, 31, 0),
        (300, 31, 0),
        (200, 33, 10),
        (300, 40, 300),
        (700, 37, 70),
        (401, 300, 20),
        // B beyond STREAM_B_BYTES into a C within STREAM_C_BYTES (short reduction blocks).
        (10, 520, 1100),
    ];
    for m in [1, 2, 3, 5, 6, 7, 12, 13] {
        for n in [1, 7, 8, 9, 16, 17, 24, 25, 40] {
            for k in [1, 5, 8, 9, 17, 260, 513] {
                v.push((m, n, k));
            }
        }
    }
    v
}

fn check_close(got: &[f32], want: &[f64], k: usize, what: &str) {
    for (idx, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-5 * (k as f64 + 1.0).sqrt() * (1.0 + w.abs());
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}: element {idx}: got {g}, want {w}"
        );
    }
}

#[test]
fn nn_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (m, n, k) in shapes() {
        for (case, (transposed_a, relu)) in [(false, false), (true, true), (false, true)]
            .into_iter()
            .enumerate()
        {
            // A either row-major (rsa = k + 3) or column-major (csa = m + 2).
            let (rsa, csa) = if transposed_a { (1, m + 2) } else { (k + 3, 1) };
            let a = rand_vec(&mut rng, extent(m, k, rsa, csa).max(1));
            let rsb = n + 5;
            let b = rand_vec(&mut rng, extent(k, n, rsb, 1).max(1));
            let rsc = n + 1;
            let c0 = rand_vec(&mut rng, extent(m, n, rsc, 1));
            let rb = rand_vec(&mut rng, m);
            let cb = rand_vec(&mut rng, n);
            let init = match case {
                0 => Init::Acc,
                1 => Init::RowBias(&rb),
                _ => Init::ColBias(&cb),
            };
            let want = reference(
                m,
                n,
                k,
                |i, p| a[i * rsa + p * csa],
                |p, j| b[p * rsb + j],
                |i, j| c0[i * rsc + j],
                init,
                relu,
            );
            let mut c = c0.clone();
            nn(m, n, k, &a, rsa, csa, &b, rsb, &mut c, rsc, init, relu);
            let got: Vec<f32> = (0..m * n).map(|ij| c[(ij / n) * rsc + ij % n]).collect();
            check_close(&got, &want, k, &format!("nn {m}x{n}x{k} case {case}"));
            let mut c = c0.clone();
            portable::nn(m, n, k, &a, rsa, csa, &b, rsb, &mut c, rsc, init, relu);
            let got: Vec<f32> = (0..m * n).map(|ij| c[(ij / n) * rsc + ij % n]).collect();
            check_close(
                &got,
                &want,
                k,
                &format!("portable nn {m}x{n}x{k} case {case}"),
            );
        }
        let a = rand_vec(&mut rng, m * k);
        let b = rand_vec(&mut rng, k * n);
        let mut c = vec![f32::NAN; m * n];
        nn(m, n, k, &a, k, 1, &b, n, &mut c, n, Init::Zero, false);
        let want = reference(
            m,
            n,
            k,
            |i, p| a[i * k + p],
            |p, j| b[p * n + j],
            |_, _| 0.0,
            Init::Zero,
            false,
        );
        check_close(&c, &want, k, &format!("nn zero {m}x{n}x{k}"));
    }
}

#[test]
fn nt_matches_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for (m, n, k) in shapes() {
        for (case, (col_major_c, relu)) in
            [(false, false), (true, true), (false, true), (true, false)]
                .into_iter()
                .enumerate()
        {
            let lda = k + 1;
            let ldb = k + 2;
            let a = rand_vec(&mut rng, extent(m, k, lda, 1).max(1));
            let b = rand_vec(&mut rng, extent(n, k, ldb, 1).max(1));
            let (rsc, csc) = if col_major_c { (1, m + 3) } else { (n + 2, 1) };
            let c0 = rand_vec(&mut rng, extent(m, n, rsc, csc));
            let rb = rand_vec(&mut rng, m);
            let cb = rand_vec(&mut rng, n);
            let init = match case {
                0 => Init::Acc,
                1 => Init::RowBias(&rb),
                2 => Init::ColBias(&cb),
                _ => Init::Zero,
            };
            let want = reference(
                m,
                n,
                k,
                |i, p| a[i * lda + p],
                |p, j| b[j * ldb + p],
                |i, j| c0[i * rsc + j * csc],
                init,
                relu,
            );
            let mut c = c0.clone();
            nt(m, n, k, &a, lda, &b, ldb, &mut c, rsc, csc, init, relu);
            let got: Vec<f32> = (0..m * n)
                .map(|ij| c[(ij / n) * rsc + (ij % n) * csc])
                .collect();
            check_close(&got, &want, k, &format!("nt {m}x{n}x{k} case {case}"));
            let mut c = c0.clone();
            portable::nt(m, n, k, &a, lda, &b, ldb, &mut c, rsc, csc, init, relu);
            let got: Vec<f32> = (0..m * n)
                .map(|ij| c[(ij / n) * rsc + (ij % n) * csc])
                .collect();
            check_close(
                &got,
                &want,
                k,
                &format!("portable nt {m}x{n}x{k} case {case}"),
            );
        }
    }
}

#[test]
#[should_panic(expected = "too short")]
fn short_slices_are_rejected() {
    let a = vec![0.0; 5];
    let b = vec![0.0; 6];
    let mut c = vec![0.0; 6];
    nn(2, 3, 3, &a, 3, 1, &b, 3, &mut c, 3, Init::Zero, false);
}

/// On-CPU time of this thread in seconds (Linux), so timings ignore time spent descheduled.
fn cpu_time() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |ns| ns * 1e-9)
}

/// Throughput of the products the models use (run with `--ignored --nocapture`; a name filter in
/// `GEMM_SHAPES` selects shapes; `GEMM_FLUSH_MB=64` also times each product with its operands
/// evicted by a sweep over that many MiB first, as when the weights come from memory).
#[test]
#[ignore = "timing report, not a check"]
fn shape_speeds() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    // (label, kind (true: nn, false: nt), m, n, k, a strides (rsa, csa) for nn)
    type Case = (&'static str, bool, usize, usize, usize, (usize, usize));
    let p1 = 3 * 784;
    let p2 = 3 * 196;
    let cases: Vec<Case> = vec![
        ("L1 6x16x256", true, 6, 16, 256, (256, 1)),
        ("L1 12x32x256", true, 12, 32, 256, (256, 1)),
        ("L1 10x32x256", true, 10, 32, 256, (256, 1)),
        ("L1 5x32x256", true, 5, 32, 256, (256, 1)),
        ("L1 8x32x256", true, 8, 32, 256, (256, 1)),
        ("L1 12x32x256 T", true, 12, 32, 256, (1, 12)),
        ("L1 nt 8x6x256", false, 8, 6, 256, (0, 0)),
        ("L2 60x96x256", true, 60, 96, 256, (256, 1)),
        ("2nn fwd1 B10", true, 10, 200, 784, (784, 1)),
        ("2nn fwd2 B10", true, 10, 200, 200, (200, 1)),
        ("2nn dW1 B10", true, 784, 200, 10, (1, 784)),
        ("2nn dW2 B10", true, 200, 200, 10, (1, 200)),
        ("2nn dX2 B10", false, 10, 200, 200, (0, 0)),
        ("2nn fwd1 B64", true, 64, 200, 784, (784, 1)),
        ("2nn fwd2 B64", true, 64, 200, 200, (200, 1)),
        ("2nn dW1 B64", true, 784, 200, 64, (1, 784)),
        ("2nn dW2 B64", true, 200, 200, 64, (1, 200)),
        ("2nn dX2 B64", false, 64, 200, 200, (0, 0)),
        ("conv1 fwd", true, 32, p1, 25, (1, 32)),
        ("conv2 fwd", true, 64, p2, 800, (1, 64)),
        ("conv2 dW", true, 800, 64, p2, (p2, 1)),
        ("conv2 dcol", true, 800, p2, 64, (64, 1)),
        ("conv1 dW nt", false, 25, 32, p1, (0, 0)),
        ("conv2 dW nt", false, 800, 64, p2, (0, 0)),
        ("fc1 fwd B10", true, 10, 512, 3136, (3136, 1)),
        ("fc1 dW B10", true, 3136, 512, 10, (1, 3136)),
        ("fc1 dX B10", false, 10, 3136, 512, (0, 0)),
        ("fc1 fwd B64", true, 64, 512, 3136, (3136, 1)),
        ("fc1 dW B64", true, 3136, 512, 64, (1, 3136)),
        ("fc1 dX B64", false, 64, 3136, 512, (0, 0)),
        ("logreg fwd B64", false, 64, 10, 784, (0, 0)),
        ("logreg dW B64", true, 10, 784, 64, (1, 10)),
        // The layer stack's cnn_cifar at B=32 (im2col chunks of 16 and 7 samples, as with a 2 MiB
        // im2col budget, and of one sample) and resnet8_gn.
        ("cc conv1 fwd", true, 32, 16 * 1024, 27, (1, 32)),
        ("cc conv1 dW nt", false, 27, 32, 16 * 1024, (0, 0)),
        ("cc conv2 fwd", true, 32, 7 * 256, 288, (1, 32)),
        ("cc conv2 dW nt", false, 288, 32, 7 * 256, (0, 0)),
        ("cc conv2 dcol", true, 288, 7 * 256, 32, (32, 1)),
        ("cc conv2 fwd 1", true, 32, 256, 288, (1, 32)),
        ("cc conv2 dW nt 1", false, 288, 32, 256, (0, 0)),
        ("cc conv2 dcol 1", true, 288, 256, 32, (32, 1)),
        ("cc fc1 fwd B32", true, 32, 256, 2048, (2048, 1)),
        ("cc fc1 dW B32", true, 2048, 256, 32, (1, 2048)),
        ("cc fc1 dX B32", false, 32, 2048, 256, (0, 0)),
        ("r8 s3 fwd", true, 64, 64 * 8, 576, (1, 64)),
        ("r8 s3 dW nt", false, 576, 64, 64 * 8, (0, 0)),
        ("r8 s3 dcol", true, 576, 64 * 8, 64, (64, 1)),
        ("r8 s1 fwd", true, 16, 1024 * 2, 144, (1, 16)),
        ("r8 s1 dW nt", false, 144, 16, 1024 * 2, (0, 0)),
        ("r8 s1 dcol", true, 144, 1024 * 2, 16, (16, 1)),
    ];
    let filter = std::env::var("GEMM_SHAPES").unwrap_or_default();
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::atomic::Ordering::Relaxed;
        let knob = |name: &str| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        if let Some(v) = knob("GEMM_KC") {
            x86::tune::KC_IN_PLACE.store(v, Relaxed);
        }
        if let Some(v) = knob("GEMM_PREFETCH") {
            x86::tune::PREFETCH.store(v, Relaxed);
        }
    }
    for (label, is_nn, m, n, k, (rsa, csa)) in cases {
        if !label.contains(filter.as_str()) {
            continue;
        }
        // `GEMM_PAD`: floats added to the row strides of B and C (nn) or A and B (nt), to see the
        // effect of strides that are multiples of 4 KiB (`GEMM_PAD_C=0`: C's stride unpadded).
        let pad = std::env::var("GEMM_PAD")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let (ldn, ldk) = (n + pad, k + pad);
        let a = rand_vec(&mut rng, m * ldk);
        let b = rand_vec(&mut rng, ldn.max(n) * ldk.max(k));
        let mut c = rand_vec(&mut rng, m * ldn);
        let run = |c: &mut [f32]| {
            if is_nn {
                let ldc = if std::env::var("GEMM_PAD_C").is_ok_and(|v| v == "0") {
                    n
                } else {
                    ldn
                };
                nn(m, n, k, &a, rsa, csa, &b, ldn, c, ldc, Init::Zero, false);
            } else {
                nt(m, n, k, &a, ldk, &b, ldk, c, n, 1, Init::Zero, false);
            }
        };
        run(&mut c);
        if let Some(mb) = std::env::var("GEMM_FLUSH_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            // Cold caches: evict the operands between runs by streaming over `mb` MiB.
            let mut junk = vec![1.0f32; mb << 18];
            let mut spent = 0.0;
            let mut runs = 0;
            while spent < 0.5 {
                for v in junk.iter_mut().step_by(16) {
                    *v += 1.0;
                }
                let t = cpu_time();
                run(&mut c);
                spent += cpu_time() - t;
                runs += 1;
            }
            std::hint::black_box(&junk);
            eprintln!(
                "{label:16} {m:5}x{n:5}x{k:5}  {:6.1} GFLOP/s cold",
                2.0 * (m * n * k) as f64 * runs as f64 / spent / 1e9
            );
        }
        // Best of three groups of at least 0.25 s of on-CPU time (the clock advances in ticks).
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = cpu_time();
            let mut runs = 0;
            // Batches of about 1e7 FLOPs keep the cost of reading the clock negligible.
            let batch = (1e7 / (2.0 * (m * n * k) as f64)).max(1.0) as usize;
            while cpu_time() - t < 0.25 {
                for _ in 0..batch {
                    run(&mut c);
                }
                runs += batch;
            }
            best = best.min((cpu_time() - t) / runs as f64);
        }
        eprintln!(
            "{label:16} {m:5}x{n:5}x{k:5}  {:6.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / best / 1e9
        );
    }
}
