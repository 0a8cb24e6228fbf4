//! Total orders on scores and a linear-time argsort, shared by the supermask (its per-step top-k mask)
//! and FRL (client rankings and the server vote).

/// Order-preserving map of an `f32` to a `u32` (IEEE total order: −0 sorts just below +0, NaNs at
/// the ends).
#[inline]
pub fn ordered_bits(v: f32) -> u32 {
    let b = v.to_bits();
    if b & 0x8000_0000 != 0 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Bits of the key each pass of [`argsort_u32`] sorts on (2048 buckets).
const RADIX_BITS: u32 = 11;

/// Indices `0..values.len()` sorted by `values` ascending, ties by index ascending (a stable argsort).
///
/// A least-significant-digit radix sort in three passes of 11 bits over packed (value, index) keys,
/// O(n): rankings of a million edges are sorted every round, where a comparison sort costs 5–10x more.
///
/// # Panics
/// If there are more than `u32::MAX` values.
pub fn argsort_u32(values: &[u32]) -> Vec<u32> {
    let n = values.len();
    assert!(
        n <= u32::MAX as usize,
        "argsort_u32: {n} values do not fit 32-bit indices"
    );
    let mut keys: Vec<u64> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| ((v as u64) << 32) | i as u64)
        .collect();
    if n < 512 {
        // Keys are unique, so an unstable sort is deterministic; small inputs do not pay for the
        // histograms.
        keys.sort_unstable();
        return keys.into_iter().map(|k| k as u32).collect();
    }
    let buckets = 1usize << RADIX_BITS;
    let mut hist = vec![[0u32; 3]; buckets];
    for &v in values {
        for (pass, h) in [0, RADIX_BITS, 2 * RADIX_BITS].iter().enumerate() {
            hist[((v >> h) as usize) & (buckets - 1)][pass] += 1;
        }
    }
    let mut tmp = vec![0u64; n];
    for pass in 0..3 {
        let shift = 32 + pass as u32 * RADIX_BITS;
        // Every key in one bucket: this digit is already sorted.
        if hist.iter().any(|h| h[pass] as usize == n) {
            continue;
        }
        let mut next = vec![0u32; buckets];
        let mut sum = 0u32;
        for (b, h) in hist.iter().enumerate() {
            next[b] = sum;
            sum += h[pass];
        }
        for &k in &keys {
            let b = ((k >> shift) as usize) & (buckets - 1);
            tmp[next[b] as usize] = k;
            next[b] += 1;
        }
        std::mem::swap(&mut keys, &mut tmp);
    }
    keys.into_iter().map(|k| k as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(values: &[u32]) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..values.len() as u32).collect();
        idx.sort_by_key(|&i| values[i as usize]);
        idx
    }

    #[test]
    fn ordered_bits_follows_the_float_order() {
        let v = [
            f32::NEG_INFINITY,
            -2.0,
            -1e-30,
            -0.0,
            0.0,
            1e-30,
            3.0,
            f32::INFINITY,
        ];
        for w in v.windows(2) {
            assert!(ordered_bits(w[0]) < ordered_bits(w[1]), "{w:?}");
        }
    }

    #[test]
    fn large_inputs_with_ties_and_every_digit_in_use() {
        let mut x = 12345u64;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 32) as u32
        };
        for n in [512usize, 1000, 70_000] {
            let wide: Vec<u32> = (0..n).map(|_| next()).collect();
            assert_eq!(argsort_u32(&wide), reference(&wide));
            let ties: Vec<u32> = (0..n).map(|_| next() % 7 * 0x0040_0001).collect();
            assert_eq!(argsort_u32(&ties), reference(&ties));
            let same = vec![9u32; n];
            assert_eq!(argsort_u32(&same), reference(&same));
        }
    }

    proptest! {
        #[test]
        fn matches_a_stable_comparison_sort(values in prop::collection::vec(any::<u32>(), 0..2000)) {
            prop_assert_eq!(argsort_u32(&values), reference(&values));
        }
    }
}
