//! Unit and property tests of every compressor and of the shared wire format.

use proptest::prelude::*;
use rand::{RngExt, SeedableRng};

use super::codec::{read_sparse, varint_len};
use super::natural::{MANT_MASK, MIN_EXP};
use super::*;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn all_specs() -> Vec<CompressorSpec> {
    let mut v = vec![
        CompressorSpec::new(IdentityConfig {
            precision: Precision::F32,
        }),
        CompressorSpec::new(IdentityConfig {
            precision: Precision::F64,
        }),
        CompressorSpec::new(NaturalConfig { contractive: true }),
        CompressorSpec::new(NaturalConfig { contractive: false }),
    ];
    for k in [1, 2, 3, 7, 50] {
        for precision in [Precision::F32, Precision::F64] {
            v.push(CompressorSpec::new(TopKConfig {
                k: Some(k),
                fraction: None,
                precision,
            }));
            for scaled in [false, true] {
                v.push(CompressorSpec::new(RandKConfig {
                    k: Some(k),
                    fraction: None,
                    scaled,
                    precision,
                }));
            }
        }
    }
    v
}

/// Reference Top-k by a full sort (magnitude descending, then index ascending).
fn top_k_reference(x: &[f64], k: usize) -> Vec<u32> {
    let mut ix: Vec<u32> = (0..x.len() as u32).collect();
    ix.sort_by(|&a, &b| {
        x[b as usize]
            .abs()
            .total_cmp(&x[a as usize].abs())
            .then(a.cmp(&b))
    });
    ix.truncate(k);
    ix.sort_unstable();
    ix
}

/// Vectors with ties, zeros and a wide range of magnitudes.
fn vector() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![
            Just(0.0),
            Just(1.0),
            Just(-1.0),
            -1e3f64..1e3,
            (-30i32..30, any::<bool>()).prop_map(|(e, s)| if s {
                2f64.powi(e)
            } else {
                -(2f64.powi(e))
            }),
            -1e-30f64..1e-30,
        ],
        1..300,
    )
}

fn norm2(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn encoded_size_and_round_trip(x in vector(), seed in any::<u64>()) {
        for spec in all_specs() {
            let c = spec.validate().unwrap().build(x.len());
            let mut buf = Vec::new();
            c.encode(&x, &mut rng(seed), &mut buf).unwrap();
            prop_assert_eq!(buf.len(), c.encoded_len(), "{}", c.name());
            c.check_header(&buf).unwrap();
            let mut y = vec![f64::NAN; x.len()];
            c.decode(&buf, &mut y).unwrap();
            // decode_add accumulates the same vector.
            let mut z = vec![1.0; x.len()];
            c.decode_add(&buf, 2.0, &mut z).unwrap();
            for (a, b) in y.iter().zip(&z) {
                prop_assert_eq!(1.0 + 2.0 * a, *b);
            }
            // Deterministic from the random stream.
            let mut again = Vec::new();
            c.encode(&x, &mut rng(seed), &mut again).unwrap();
            prop_assert_eq!(&buf, &again);
        }
    }

    #[test]
    fn top_k_keeps_exactly_the_k_largest(x in vector(), k in 1usize..40) {
        let d = x.len();
        for precision in [Precision::F32, Precision::F64] {
            let c = CompressorSpec::new(TopKConfig { k: Some(k), fraction: None, precision }).validate().unwrap().build(d);
            let mut buf = Vec::new();
            c.encode(&x, &mut rng(0), &mut buf).unwrap();
            let mut y = vec![0.0; d];
            c.decode(&buf, &mut y).unwrap();
            let keep = k.min(d);
            let want = top_k_reference(&x, keep);
            for j in 0..d {
                let kept = want.binary_search(&(j as u32)).is_ok();
                let expect = if kept { precision.round(x[j]) } else { 0.0 };
                prop_assert_eq!(y[j], expect, "j {} k {}", j, keep);
            }
            // Contraction (deterministic): ||C(x) − x||² ≤ (1 − k/d)||x||², up to f32 rounding.
            let err: f64 = y.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum();
            let bound = (1.0 - c.alpha().unwrap()) * norm2(&x);
            let slack = 1e-12 * norm2(&x);
            prop_assert!(err <= bound + slack, "{} > {}", err, bound);
        }
    }

    #[test]
    fn rand_k_keeps_k_values_unchanged_or_scaled(x in vector(), k in 1usize..40, seed in any::<u64>()) {
        let d = x.len();
        for scaled in [false, true] {
            let c = CompressorSpec::new(RandKConfig { k: Some(k), fraction: None, scaled, precision: Precision::F64 }).validate().unwrap().build(d);
            let mut buf = Vec::new();
            c.encode(&x, &mut rng(seed), &mut buf).unwrap();
            let keep = k.min(d);
            let s = if scaled && keep < d { d as f64 / keep as f64 } else { 1.0 };
            let mut ix = Vec::new();
            if keep < d {
                let tag = TAG_SPARSE | TAG_F64 | if scaled { TAG_SCALED } else { 0 };
                read_sparse(&buf, tag, d, keep, Precision::F64, &mut ix).unwrap();
                prop_assert_eq!(ix.len(), keep);
            } else {
                ix = (0..d as u32).collect();
            }
            let mut y = vec![0.0; d];
            c.decode(&buf, &mut y).unwrap();
            for j in 0..d {
                let kept = ix.binary_search(&(j as u32)).is_ok();
                prop_assert_eq!(y[j], if kept { s * x[j] } else { 0.0 });
            }
        }
    }

    #[test]
    fn natural_rounds_to_a_neighbouring_power_of_two(x in vector(), seed in any::<u64>()) {
        for contractive in [false, true] {
            let c = CompressorSpec::new(NaturalConfig { contractive }).validate().unwrap().build(x.len());
            let s = if contractive { 8.0 / 9.0 } else { 1.0 };
            let mut buf = Vec::new();
            c.encode(&x, &mut rng(seed), &mut buf).unwrap();
            let mut y = vec![0.0; x.len()];
            c.decode(&buf, &mut y).unwrap();
            for (&v, &q) in x.iter().zip(&y) {
                if v == 0.0 {
                    prop_assert_eq!(q, 0.0);
                    continue;
                }
                let q = q / s;
                if v.abs() < 2f64.powi(MIN_EXP) {
                    prop_assert!(q == 0.0 || q.abs() == 2f64.powi(MIN_EXP));
                    continue;
                }
                prop_assert_eq!(q.signum(), v.signum());
                let lo = f64::from_bits(v.abs().to_bits() & !MANT_MASK);
                prop_assert!(q.abs() == lo || q.abs() == 2.0 * lo, "{} -> {}", v, q);
                if v.abs() == lo {
                    prop_assert_eq!(q.abs(), lo, "powers of two are kept");
                }
            }
        }
    }

    #[test]
    fn identity_and_full_sparsifiers_decode_to_x_at_their_precision(x in vector(), seed in any::<u64>()) {
        // C = identity: decode(encode(x)) = x rounded to the wire precision, in exactly
        // (header + d values) bytes; Top-k and Rand-k with k ≥ d are the identity too.
        let d = x.len();
        for precision in [Precision::F32, Precision::F64] {
            for spec in [
                CompressorSpec::new(IdentityConfig { precision }),
                CompressorSpec::new(TopKConfig { k: Some(d), fraction: None, precision }),
                CompressorSpec::new(RandKConfig { k: Some(d + 3), fraction: None, scaled: true, precision }),
            ] {
                let c = spec.validate().unwrap().build(d);
                prop_assert_eq!(c.alpha(), Some(1.0));
                let mut buf = Vec::new();
                c.encode(&x, &mut rng(seed), &mut buf).unwrap();
                prop_assert_eq!(buf.len(), c.encoded_len());
                prop_assert_eq!(buf.len(), 1 + varint_len(d as u64) + d * precision.bytes());
                let mut y = vec![f64::NAN; d];
                c.decode(&buf, &mut y).unwrap();
                for (a, b) in y.iter().zip(&x) {
                    prop_assert_eq!(*a, precision.round(*b));
                }
            }
        }
    }

    #[test]
    fn rand_k_keeps_k_distinct_sorted_indices_and_contracts(x in vector(), k in 1usize..40, seed in any::<u64>()) {
        // decode(encode(x)) = C(x) for unscaled Rand-k: exactly min(k, d) distinct coordinates of x kept
        // unchanged (so ||C(x) − x||² = Σ over the dropped coordinates), the rest zero.
        let d = x.len();
        let c = CompressorSpec::new(RandKConfig { k: Some(k), fraction: None, scaled: false, precision: Precision::F64 }).validate().unwrap().build(d);
        let mut buf = Vec::new();
        c.encode(&x, &mut rng(seed), &mut buf).unwrap();
        let mut y = vec![0.0; d];
        c.decode(&buf, &mut y).unwrap();
        let keep = k.min(d);
        if keep < d {
            let mut ix = Vec::new();
            read_sparse(&buf, TAG_SPARSE | TAG_F64, d, keep, Precision::F64, &mut ix).unwrap();
            prop_assert!(ix.windows(2).all(|w| w[0] < w[1]), "indices strictly increasing");
            prop_assert!(ix.iter().all(|&j| (j as usize) < d));
            let dropped: f64 = (0..d as u32).filter(|j| ix.binary_search(j).is_err()).map(|j| x[j as usize].powi(2)).sum();
            let err: f64 = y.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum();
            prop_assert_eq!(err, dropped);
        } else {
            prop_assert_eq!(&y, &x);
        }
    }

    #[test]
    fn decoders_never_panic_on_garbage(bytes in prop::collection::vec(any::<u8>(), 0..64), d in 1usize..40) {
        for spec in all_specs() {
            let c = spec.validate().unwrap().build(d);
            let mut out = vec![0.5; d];
            if c.decode_add(&bytes, 1.0, &mut out).is_err() {
                prop_assert!(out.iter().all(|&v| v == 0.5), "output touched on error");
            }
        }
    }

    #[test]
    fn mutated_buffers_are_rejected_or_decode_cleanly(x in vector(), pos in any::<prop::sample::Index>(), bit in 0u8..8, seed in any::<u64>()) {
        for spec in all_specs() {
            let c = spec.validate().unwrap().build(x.len());
            let mut buf = Vec::new();
            c.encode(&x, &mut rng(seed), &mut buf).unwrap();
            let i = pos.index(buf.len());
            buf[i] ^= 1 << bit;
            let mut out = vec![0.0; x.len()];
            if c.decode_add(&buf, 1.0, &mut out).is_ok() {
                prop_assert!(out.iter().all(|v| v.is_finite()));
            }
            // Truncated and extended buffers are always rejected.
            buf.pop();
            prop_assert!(c.decode_add(&buf, 1.0, &mut out).is_err());
            buf.extend_from_slice(&[0, 0]);
            prop_assert!(c.decode_add(&buf, 1.0, &mut out).is_err());
        }
    }
}

#[test]
fn rand_k_contracts_in_expectation() {
    // E||C(x) − x||² = (1 − k/d)||x||² exactly for unscaled Rand-k, (d/k − 1)||x||² scaled.
    let x: Vec<f64> = (0..50)
        .map(|i| ((i * 37 % 11) as f64 - 5.0) * 0.3)
        .collect();
    let (d, k) = (50usize, 5usize);
    for scaled in [false, true] {
        let c = CompressorSpec::new(RandKConfig {
            k: Some(k),
            fraction: None,
            scaled,
            precision: Precision::F64,
        })
        .validate()
        .unwrap()
        .build(d);
        let trials = 20_000;
        let mut total = 0.0;
        let mut mean = vec![0.0; d];
        let mut y = vec![0.0; d];
        let mut buf = Vec::new();
        let mut r = rng(42);
        for _ in 0..trials {
            c.encode(&x, &mut r, &mut buf).unwrap();
            c.decode(&buf, &mut y).unwrap();
            total += y.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum::<f64>();
            for (m, v) in mean.iter_mut().zip(&y) {
                *m += v / trials as f64;
            }
        }
        let got = total / trials as f64 / norm2(&x);
        let want = if scaled {
            d as f64 / k as f64 - 1.0
        } else {
            1.0 - k as f64 / d as f64
        };
        assert!(
            (got - want).abs() < 0.02 * want,
            "scaled {scaled}: {got} vs {want}"
        );
        if scaled {
            assert_eq!(c.alpha(), None);
            let bias: f64 = mean.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum();
            assert!(bias < 0.02 * norm2(&x), "scaled Rand-k is unbiased: {bias}");
        } else {
            assert!((c.alpha().unwrap() - 0.1).abs() < 1e-15);
            assert!(got <= 1.0 - c.alpha().unwrap() + 0.01);
        }
    }
}

#[test]
fn natural_is_unbiased_with_variance_at_most_an_eighth() {
    let x: Vec<f64> = (1..=40).map(|i| (i as f64 * 0.731).sin() * 3.0).collect();
    let c = CompressorSpec::new(NaturalConfig { contractive: false })
        .validate()
        .unwrap()
        .build(x.len());
    let trials = 20_000;
    let mut mean = vec![0.0; x.len()];
    let mut var = 0.0;
    let mut y = vec![0.0; x.len()];
    let mut buf = Vec::new();
    let mut r = rng(7);
    for _ in 0..trials {
        c.encode(&x, &mut r, &mut buf).unwrap();
        c.decode(&buf, &mut y).unwrap();
        var += y.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / trials as f64;
        for (m, v) in mean.iter_mut().zip(&y) {
            *m += v / trials as f64;
        }
    }
    for (m, v) in mean.iter().zip(&x) {
        assert!((m - v).abs() < 0.02 * v.abs().max(0.1), "{m} vs {v}");
    }
    assert!(var <= norm2(&x) / 8.0, "{var}");
    // The contractive form: E||C(x) − x||² ≤ (1 − 8/9)||x||².
    let c = CompressorSpec::new(NaturalConfig { contractive: true })
        .validate()
        .unwrap()
        .build(x.len());
    let mut err = 0.0;
    for _ in 0..trials {
        c.encode(&x, &mut r, &mut buf).unwrap();
        c.decode(&buf, &mut y).unwrap();
        err += y.iter().zip(&x).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / trials as f64;
    }
    assert!(err <= (1.0 / 9.0) * norm2(&x) * 1.01, "{err}");
    assert_eq!(c.alpha(), Some(8.0 / 9.0));
}

#[test]
fn sizes_follow_the_documented_formulas() {
    // d = 68 (phishing), Top-1 in f32: tag + varint(68) + varint(1) + ⌈7/8⌉ + 4 = 8 bytes.
    let c = CompressorSpec::default().validate().unwrap().build(68);
    assert_eq!(c.encoded_len(), 8);
    assert_eq!(c.paper_bits(), 32);
    assert_eq!(index_bits(68), 7);
    assert_eq!(index_bits(64), 6);
    assert_eq!(index_bits(1_000_000), 20);
    assert_eq!(index_bits(1), 0);
    // d = 10⁶, k = 10⁴: 1 + 3 + 2 + 25,000 + 40,000.
    let c = CompressorSpec::new(TopKConfig {
        k: None,
        fraction: Some(0.01),
        precision: Precision::F32,
    })
    .validate()
    .unwrap()
    .build(1_000_000);
    assert_eq!(c.encoded_len(), 65_006);
    let c = CompressorSpec::new(NaturalConfig { contractive: true })
        .validate()
        .unwrap()
        .build(1_000_000);
    assert_eq!(c.encoded_len(), 1 + 3 + 1_125_000);
    assert_eq!(c.paper_bits(), 9_000_000);
    // k ≥ d is the identity.
    let c = CompressorSpec::new(TopKConfig {
        k: Some(5),
        fraction: None,
        precision: Precision::F64,
    })
    .validate()
    .unwrap()
    .build(5);
    assert_eq!(c.alpha(), Some(1.0));
    assert_eq!(c.encoded_len(), 1 + 1 + 40);
}

#[test]
fn top_k_selection_is_exact_on_large_vectors() {
    let d = 100_000;
    let mut r = rng(3);
    let random: Vec<f64> = (0..d).map(|_| r.random_range(-1.0..1.0)).collect();
    let ties: Vec<f64> = (0..d).map(|j| ((j * 7919) % 3) as f64 - 1.0).collect();
    // Large values exactly on the sampling stride (24 for d = 10⁵): the sampled bound keeps too few
    // candidates and the selection falls back to every entry.
    let skewed: Vec<f64> = (0..d)
        .map(|j| {
            if j % 24 == 0 {
                10.0 + (j % 97) as f64
            } else {
                0.5
            }
        })
        .collect();
    let sparse: Vec<f64> = (0..d)
        .map(|j| if j % 1013 == 5 { j as f64 } else { 0.0 })
        .collect();
    let mut ix = Vec::new();
    for x in [&random, &ties, &skewed, &sparse] {
        for k in [2, 10, 1000, 4000, 50_000, d - 1] {
            top_k_indices(x, k, &mut ix);
            assert_eq!(ix, top_k_reference(x, k), "k = {k}");
        }
    }
}

#[test]
fn top_k_ties_go_to_the_lower_index() {
    let x = [1.0, -3.0, 3.0, 0.5, -3.0, 2.0];
    let mut ix = Vec::new();
    top_k_indices(&x, 2, &mut ix);
    assert_eq!(ix, vec![1, 2]);
    top_k_indices(&x, 1, &mut ix);
    assert_eq!(ix, vec![1]);
    top_k_indices(&x, 4, &mut ix);
    assert_eq!(ix, vec![1, 2, 4, 5]);
    let zeros = [0.0; 7];
    top_k_indices(&zeros, 3, &mut ix);
    assert_eq!(ix, vec![0, 1, 2]);
}

#[test]
fn malformed_buffers_name_the_problem() {
    let c = CompressorSpec::new(TopKConfig {
        k: Some(2),
        fraction: None,
        precision: Precision::F32,
    })
    .validate()
    .unwrap()
    .build(100);
    let mut buf = Vec::new();
    c.encode(&[1.0; 100], &mut rng(0), &mut buf).unwrap();
    let mut out = vec![0.0; 100];
    // Indices 0 and 1 are packed in 7 bits each at byte 3: make both 0 (duplicate).
    let mut dup = buf.clone();
    dup[3] = 0;
    dup[4] &= !0x3f;
    let e = c.decode_add(&dup, 1.0, &mut out).unwrap_err();
    assert!(e.to_string().contains("strictly increasing"), "{e}");
    // An index ≥ d (127 in 7 bits).
    let mut big = buf.clone();
    big[3] = 0x7f;
    big[4] |= 0x3f;
    let e = c.decode_add(&big, 1.0, &mut out).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    // Wrong dimension.
    let other = CompressorSpec::new(TopKConfig {
        k: Some(2),
        fraction: None,
        precision: Precision::F32,
    })
    .validate()
    .unwrap()
    .build(99);
    assert!(
        other
            .decode_add(&buf, 1.0, &mut out[..99])
            .unwrap_err()
            .to_string()
            .contains("dimension")
    );
    // A non-finite value.
    let mut nan = buf.clone();
    let n = nan.len();
    nan[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(
        c.decode_add(&nan, 1.0, &mut out)
            .unwrap_err()
            .to_string()
            .contains("not finite")
    );
    assert!(out.iter().all(|&v| v == 0.0));
    // Encoding rejects non-finite input and values beyond f32.
    assert!(matches!(
        c.encode(&[f64::NAN; 100], &mut rng(0), &mut buf),
        Err(CompressError::NonFinite { .. })
    ));
    let mut huge = vec![0.0; 100];
    huge[3] = 1e300;
    assert!(matches!(
        c.encode(&huge, &mut rng(0), &mut buf),
        Err(CompressError::NonFinite { index: 3, .. })
    ));
}

#[test]
fn spec_validation_and_parsing() {
    let s: CompressorSpec = toml::from_str("kind = \"top_k\"\nk = 3").unwrap();
    assert!(s.validate().is_ok());
    let s: CompressorSpec =
        toml::from_str("kind = \"rand_k\"\nfraction = 0.5\nscaled = true").unwrap();
    let c = s.validate().unwrap().build(10);
    assert!(matches!(c.omega(), Some(w) if (w - 1.0).abs() < 1e-15));
    let s: CompressorSpec = toml::from_str("kind = \"top_k\"").unwrap();
    let e = s.validate().unwrap_err();
    assert!(e.message.contains("needs k"), "{e}");
    assert_eq!(e.key, "compressor");
    let s: CompressorSpec = toml::from_str("kind = \"top_k\"\nk = 0").unwrap();
    assert_eq!(s.validate().unwrap_err().key, "compressor.k");
    let s: CompressorSpec = toml::from_str("kind = \"top_k\"\nk = 1\nfraction = 0.1").unwrap();
    assert!(s.validate().is_err());
    let e = toml::from_str::<toml::Table>("kind = \"top_q\"")
        .map(|t| CompressorSpec::from_table(t).unwrap_err())
        .unwrap();
    assert_eq!(e.key, "compressor.kind");
    fedsim_types::registry::check_family::<Compressors>(|| 50);
    let s: CompressorSpec = toml::from_str("kind = \"natural\"").unwrap();
    assert_eq!(s, CompressorSpec::new(NaturalConfig { contractive: true }));
    assert!(toml::from_str::<CompressorSpec>("kind = \"top_k\"\nkk = 1").is_err());
}
