//! Natural compression: randomised rounding to powers of two, 9 bits per coordinate.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::codec::{
    BitReader, BitWriter, check_len, first_non_finite, put_varint, read_header, varint_len,
};
use super::{CompressError, Compressor, TAG_NATURAL, TAG_SCALED};

pub(super) const MANT_MASK: u64 = (1u64 << 52) - 1;
/// Smallest exponent sent; code = e + 127.
pub(super) const MIN_EXP: i32 = -126;
const MAX_EXP: i32 = 128;

/// Natural compression: every value randomly rounded to one of the two neighbouring powers of two so that
/// the mean is kept (`2^⌊a⌋` with probability `(2^⌈a⌉ − |x|)/2^⌊a⌋`, a = log2|x|); 9 bits per coordinate.
/// `contractive` scales by 8/9 (α = 8/9), otherwise unbiased with ω = 1/8.
#[derive(Debug, Clone)]
pub struct Natural {
    pub(super) dim: usize,
    pub(super) contractive: bool,
}

impl Natural {
    fn tag(&self) -> u8 {
        TAG_NATURAL | if self.contractive { TAG_SCALED } else { 0 }
    }

    fn scale(&self) -> f64 {
        if self.contractive { 8.0 / 9.0 } else { 1.0 }
    }

    /// Magnitude of exponent code `c` (1..=255), times the scale.
    fn magnitude(&self, c: u64) -> f64 {
        let e = c as i32 - 127;
        // 2^e exactly (e ∈ [−126, 128] is a normal f64).
        f64::from_bits(((e + 1023) as u64) << 52) * self.scale()
    }
}

/// One natural-compression code (sign bit 8, exponent code bits 0–7) of a finite `v`, with the uniform
/// 52-bit draw `r`.
#[inline]
fn natural_code(v: f64, r: u64) -> u64 {
    if v == 0.0 {
        return 0;
    }
    let bits = v.to_bits();
    let sign = bits >> 63;
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let e = biased - 1023;
    let code = if biased != 0 && e >= MIN_EXP {
        // |v| = 2^e · (1 + f), f = frac/2^52: round up with probability f.
        let up = i32::from(r < (bits & MANT_MASK));
        ((e + up).min(MAX_EXP) + 127) as u64
    } else {
        // Below 2^−126: 2^−126 with probability |v|/2^−126, else 0.
        let p = v.abs() * 2f64.powi(-MIN_EXP);
        let u = r as f64 * (1.0 / (1u64 << 52) as f64);
        if u < p { 1 } else { 0 }
    };
    if code == 0 { 0 } else { code | (sign << 8) }
}

impl Compressor for Natural {
    fn name(&self) -> String {
        format!(
            "natural({}{})",
            self.dim,
            if self.contractive { ", ×8/9" } else { "" }
        )
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn alpha(&self) -> Option<f64> {
        Some(if self.contractive {
            8.0 / 9.0
        } else {
            7.0 / 8.0
        })
    }
    fn omega(&self) -> Option<f64> {
        (!self.contractive).then_some(1.0 / 8.0)
    }
    fn is_random(&self) -> bool {
        true
    }
    fn encoded_len(&self) -> usize {
        1 + varint_len(self.dim as u64) + (9 * self.dim).div_ceil(8)
    }
    fn paper_bits(&self) -> u64 {
        9 * self.dim as u64
    }

    /// The per-coordinate uniform draws come from a counter-based SplitMix64 sequence keyed by one 64-bit
    /// draw from `rng` (cheap, deterministic per client and round).
    fn encode(
        &self,
        x: &[f64],
        rng: &mut ChaCha8Rng,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        check_len(x, self.dim)?;
        first_non_finite(x)?;
        out.clear();
        out.reserve(self.encoded_len());
        out.push(self.tag());
        put_varint(out, self.dim as u64);
        let key = rng.next_u64();
        let code = |j: usize, v: f64| {
            let r = if v == 0.0 {
                0
            } else {
                fedsim_types::rng::mix64(
                    key.wrapping_add((j as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                ) >> 12
            };
            natural_code(v, r)
        };
        // Eight 9-bit codes fill nine bytes exactly (least significant bit first).
        let mut groups = x.chunks_exact(8);
        let mut j = 0;
        for g in &mut groups {
            let mut lo = 0u64;
            for (l, &v) in g.iter().enumerate().take(7) {
                lo |= code(j + l, v) << (9 * l);
            }
            let c7 = code(j + 7, g[7]);
            lo |= (c7 & 1) << 63;
            out.extend_from_slice(&lo.to_le_bytes());
            out.push((c7 >> 1) as u8);
            j += 8;
        }
        let mut bw = BitWriter::new(out);
        for (l, &v) in groups.remainder().iter().enumerate() {
            bw.put(code(j + l, v), 9);
        }
        bw.finish();
        Ok(())
    }

    fn check_header(&self, buf: &[u8]) -> Result<(), CompressError> {
        read_header(buf, self.tag(), self.dim, None, self.encoded_len()).map(|_| ())
    }

    fn decode_add(&self, buf: &[u8], scale: f64, out: &mut [f64]) -> Result<(), CompressError> {
        check_len(out, self.dim)?;
        let pos = read_header(buf, self.tag(), self.dim, None, self.encoded_len())?;
        let body = &buf[pos..];
        // Validation pass: "negative zero" codes are not canonical.
        if let Some(i) = natural_codes(body, self.dim).position(|c| c == 0x100) {
            return Err(CompressError::Malformed(format!(
                "code {i} is a signed zero"
            )));
        }
        let mut table = [0.0f64; 512];
        for c in 1..256u64 {
            let m = scale * self.magnitude(c);
            table[c as usize] = m;
            table[(c | 0x100) as usize] = -m;
        }
        for (o, c) in out.iter_mut().zip(natural_codes(body, self.dim)) {
            *o += table[c as usize];
        }
        Ok(())
    }
}

/// The `d` 9-bit codes of a natural-compression body (whose length was checked).
fn natural_codes(body: &[u8], d: usize) -> impl Iterator<Item = u64> + '_ {
    let split = (9 * (d / 8)).min(body.len());
    let groups = body[..split].chunks_exact(9).flat_map(|g| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&g[..8]);
        let lo = u64::from_le_bytes(b);
        let hi = g[8] as u64;
        (0..8).map(move |l| {
            if l < 7 {
                (lo >> (9 * l)) & 0x1ff
            } else {
                (lo >> 63) | (hi << 1)
            }
        })
    });
    let mut tail = BitReader::new(&body[split..]);
    groups.chain((0..d % 8).map(move |_| tail.get(9)))
}
