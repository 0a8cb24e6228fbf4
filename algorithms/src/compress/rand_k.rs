//! Rand-k: k coordinates uniformly without replacement, unscaled or scaled by d/k.

use rand_chacha::ChaCha8Rng;

use super::codec::{Sparse, check_len, checked, write_sparse};
use super::{CompressError, Compressor, Precision, TAG_SCALED, TAG_SPARSE};

/// Rand-k: k coordinates uniformly without replacement; unscaled (α = k/d) or scaled by d/k (unbiased).
#[derive(Debug, Clone)]
pub struct RandK {
    pub(super) dim: usize,
    pub(super) k: usize,
    pub(super) scaled: bool,
    pub(super) precision: Precision,
}

impl RandK {
    fn tag(&self) -> u8 {
        TAG_SPARSE | self.precision.tag_bit() | if self.scaled { TAG_SCALED } else { 0 }
    }

    fn sparse(&self) -> Sparse {
        Sparse {
            dim: self.dim,
            k: self.k,
            precision: self.precision,
            tag: self.tag(),
        }
    }
}

impl Compressor for RandK {
    fn name(&self) -> String {
        format!(
            "rand_k({} of {}{})",
            self.k,
            self.dim,
            if self.scaled { ", scaled" } else { "" }
        )
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn alpha(&self) -> Option<f64> {
        let q = self.k as f64 / self.dim as f64;
        if self.scaled {
            // E||C(x) − x||² = (d/k − 1)||x||²: contractive only when that is below 1.
            let omega = 1.0 / q - 1.0;
            (omega < 1.0).then_some(1.0 - omega)
        } else {
            Some(q)
        }
    }
    fn omega(&self) -> Option<f64> {
        self.scaled.then(|| self.dim as f64 / self.k as f64 - 1.0)
    }
    fn is_random(&self) -> bool {
        true
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
        rng: &mut ChaCha8Rng,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        check_len(x, self.dim)?;
        let mut ix: Vec<u32> = rand::seq::index::sample(rng, self.dim, self.k)
            .into_iter()
            .map(|j| j as u32)
            .collect();
        ix.sort_unstable();
        let s = if self.scaled {
            self.dim as f64 / self.k as f64
        } else {
            1.0
        };
        write_sparse(out, self.tag(), self.dim, &ix, self.precision, |j| {
            let v = x[j];
            if v.is_finite() {
                checked(j, s * v, self.precision)
            } else {
                Err(CompressError::NonFinite { index: j, value: v })
            }
        })
    }

    fn check_header(&self, buf: &[u8]) -> Result<(), CompressError> {
        self.sparse().check_header(buf)
    }

    fn decode_add(&self, buf: &[u8], scale: f64, out: &mut [f64]) -> Result<(), CompressError> {
        self.sparse().decode_add(buf, scale, out)
    }
}
