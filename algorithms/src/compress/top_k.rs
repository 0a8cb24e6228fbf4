//! Top-k: the k entries of largest magnitude, and the O(d) selection behind it.

use std::cell::RefCell;

use rand_chacha::ChaCha8Rng;

use super::codec::{Sparse, check_len, checked, first_non_finite, write_sparse};
use super::{CompressError, Compressor, Precision, TAG_SPARSE};

thread_local! {
    static KEYS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    static INDICES: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static CANDIDATES: RefCell<Vec<(u64, u32)>> = const { RefCell::new(Vec::new()) };
}

/// `|v|` as an order-preserving integer key (for finite v).
#[inline]
fn abs_key(v: f64) -> u64 {
    v.to_bits() & !(1u64 << 63)
}

/// Positions of the `k` entries of largest magnitude, ascending; ties go to the lower index.
///
/// O(d), never a full sort: a strided sample of ~4096 magnitudes gives, by `select_nth_unstable_by`, a lower
/// bound expected to leave about 2k entries above it; one pass collects those candidates (in index order);
/// `select_nth_unstable_by` on the candidates gives the exact k-th largest magnitude T. Every entry above the
/// bound is a candidate and there are at least k of them, so the k largest are all candidates; entries
/// above T are kept, then entries equal to T in index order. When the bound leaves fewer than k candidates
/// every entry is a candidate. `x` must be finite and `1 ≤ k < len`.
pub fn top_k_indices(x: &[f64], k: usize, out: &mut Vec<u32>) {
    out.clear();
    let d = x.len();
    debug_assert!(k >= 1 && k < d);
    if k == 1 {
        let mut best = 0usize;
        let mut best_key = abs_key(x[0]);
        for (j, &v) in x.iter().enumerate().skip(1) {
            let key = abs_key(v);
            if key > best_key {
                best = j;
                best_key = key;
            }
        }
        out.push(best as u32);
        return;
    }
    KEYS.with_borrow_mut(|keys| {
        CANDIDATES.with_borrow_mut(|cands| {
            let stride = (d / 4096).max(1);
            keys.clear();
            keys.extend(x.iter().step_by(stride).map(|&v| abs_key(v)));
            let m = keys.len();
            let want = ((2 * k * m).div_ceil(d) + 8).min(m);
            let (_, lower, _) = keys.select_nth_unstable_by(m - want, u64::cmp);
            let lower = *lower;
            cands.clear();
            for (j, &v) in x.iter().enumerate() {
                let key = abs_key(v);
                if key >= lower {
                    cands.push((key, j as u32));
                }
            }
            if cands.len() < k {
                cands.clear();
                cands.extend(x.iter().enumerate().map(|(j, &v)| (abs_key(v), j as u32)));
            }
            keys.clear();
            keys.extend(cands.iter().map(|c| c.0));
            let pos = keys.len() - k;
            let (_, t, _) = keys.select_nth_unstable_by(pos, u64::cmp);
            let threshold = *t;
            let above = cands.iter().filter(|c| c.0 > threshold).count();
            let mut ties = k - above;
            out.reserve(k);
            for &(key, j) in cands.iter() {
                if key > threshold {
                    out.push(j);
                } else if key == threshold && ties > 0 {
                    out.push(j);
                    ties -= 1;
                }
            }
        })
    });
}

/// Top-k: the k entries of largest magnitude, ties broken by lower index. α = k/d.
#[derive(Debug, Clone)]
pub struct TopK {
    pub(super) dim: usize,
    pub(super) k: usize,
    pub(super) precision: Precision,
}

impl TopK {
    fn tag(&self) -> u8 {
        TAG_SPARSE | self.precision.tag_bit()
    }

    fn sparse(&self) -> Sparse {
        Sparse {
            dim: self.dim,
            k: self.k,
            precision: self.precision,
            tag: self.tag(),
        }
    }

    /// Number of kept coordinates.
    pub fn k(&self) -> usize {
        self.k
    }
}

impl Compressor for TopK {
    fn name(&self) -> String {
        format!("top_k({} of {})", self.k, self.dim)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn alpha(&self) -> Option<f64> {
        Some(self.k as f64 / self.dim as f64)
    }
    fn omega(&self) -> Option<f64> {
        None
    }
    fn is_random(&self) -> bool {
        false
    }
    fn encoded_len(&self) -> usize {
        self.sparse().encoded_len()
    }
    fn paper_bits(&self) -> u64 {
        self.sparse().paper_bits()
    }

    fn encode(
        &self,
        x: &[f64],
        _rng: &mut ChaCha8Rng,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        check_len(x, self.dim)?;
        first_non_finite(x)?;
        INDICES.with_borrow_mut(|ix| {
            top_k_indices(x, self.k, ix);
            write_sparse(out, self.tag(), self.dim, ix, self.precision, |j| {
                checked(j, x[j], self.precision)
            })
        })
    }

    fn check_header(&self, buf: &[u8]) -> Result<(), CompressError> {
        self.sparse().check_header(buf)
    }

    fn decode_add(&self, buf: &[u8], scale: f64, out: &mut [f64]) -> Result<(), CompressError> {
        self.sparse().decode_add(buf, scale, out)
    }
}
