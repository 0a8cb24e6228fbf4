//! Compressors for communication-efficient uplinks (`../shared/algorithms.md` §4.4): Top-k, Rand-k
//! (unscaled and scaled), natural compression and the identity.
//!
//! A [`Compressor`] is built for one dimension `d` from a [`CompressorSpec`] (the `compressor = {...}` key of
//! a strategy). It reports its contraction parameter α (`E||C(x) − x||² ≤ (1 − α)||x||²`), the exact size of
//! its encoded buffer, and the bits the EF21 papers count ([`Compressor::paper_bits`]). Encoding writes a
//! real byte buffer (carried as a `TensorData::Bytes` tensor, so `bytes_up` counts it byte for byte);
//! decoding validates the buffer completely (header, length, index range and order, finiteness) before it
//! touches the output, so a malformed network payload is an error, never a panic or a partial update.
//!
//! Wire format (little-endian), `w = ⌈log2 d⌉` index bits, `b` value bytes (4 for `precision = "f32"`,
//! 8 for `"f64"`):
//!
//! | compressor | layout | bytes |
//! |---|---|---|
//! | identity | tag, varint d, d values | 1 + |d| + b·d |
//! | Top-k, Rand-k | tag, varint d, varint k, k indices bit-packed (w bits each, ascending), k values | 1 + |d| + |k| + ⌈k·w/8⌉ + b·k |
//! | natural | tag, varint d, d codes of 9 bits (bit 8 = sign, bits 0–7 = exponent code) | 1 + |d| + ⌈9d/8⌉ |
//!
//! (`|v|` is the LEB128 varint length of v.) Values are rounded to the wire precision inside the
//! compressor, so `C(x)` is exactly what the receiver decodes. A sparsifier keeping `k ≥ d` coordinates is
//! the identity (and is encoded as such).
//!
//! Natural compression writes `sign·2^e` with `e ∈ [−126, 128]` (exponent code `e + 127`, code 0 = zero):
//! the f32 exponent range. Magnitudes below `2^−126` are rounded to 0 or `2^−126` with the probability that
//! keeps the mean; magnitudes at or above `2^129` saturate at `2^128` (neither occurs with gradients).

use std::cell::RefCell;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Errors of encoding or decoding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompressError {
    /// The input holds a NaN or an infinity (or a value too large for the wire precision).
    #[error("input value {index} is not finite or overflows the wire precision ({value})")]
    NonFinite {
        /// Position of the value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The input has the wrong length.
    #[error("input has {got} values, the compressor was built for {expected}")]
    Length {
        /// Dimension the compressor was built for.
        expected: usize,
        /// Length given.
        got: usize,
    },
    /// An encoded buffer is malformed; the message says how.
    #[error("malformed encoded buffer: {0}")]
    Malformed(String),
}

/// Precision of the values a compressor transmits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// 32-bit floats (the papers' convention).
    #[default]
    F32,
    /// 64-bit floats.
    F64,
}

impl Precision {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F64 => 8,
        }
    }

    /// `v` rounded to this precision.
    pub fn round(self, v: f64) -> f64 {
        match self {
            Precision::F32 => v as f32 as f64,
            Precision::F64 => v,
        }
    }

    fn tag_bit(self) -> u8 {
        match self {
            Precision::F32 => 0,
            Precision::F64 => TAG_F64,
        }
    }
}

const TAG_IDENTITY: u8 = 1;
const TAG_SPARSE: u8 = 2;
const TAG_NATURAL: u8 = 3;
const TAG_F64: u8 = 0x80;
const TAG_SCALED: u8 = 0x40;

/// A compressor's settings: the `compressor = { kind = ..., ... }` key of a strategy.
///
/// Sparsifiers take the number of kept coordinates as `k` or as `fraction` of d (`k = max(1, ⌊fraction·d⌋)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CompressorSpec {
    /// No compression: all d values.
    Identity {
        /// Wire precision of the values.
        #[serde(default)]
        precision: Precision,
    },
    /// The k entries of largest magnitude (ties: lower index first); α = k/d; deterministic.
    TopK {
        /// Number of kept coordinates.
        #[serde(default)]
        k: Option<usize>,
        /// Kept fraction of the coordinates (instead of `k`).
        #[serde(default)]
        fraction: Option<f64>,
        /// Wire precision of the values.
        #[serde(default)]
        precision: Precision,
    },
    /// k coordinates drawn uniformly without replacement from the client's random stream. Unscaled
    /// (α = k/d, biased; the form EF21 uses) or `scaled` by d/k (unbiased, ω = d/k − 1).
    RandK {
        /// Number of kept coordinates.
        #[serde(default)]
        k: Option<usize>,
        /// Kept fraction of the coordinates (instead of `k`).
        #[serde(default)]
        fraction: Option<f64>,
        /// Multiply kept values by d/k (unbiased form).
        #[serde(default)]
        scaled: bool,
        /// Wire precision of the values.
        #[serde(default)]
        precision: Precision,
    },
    /// Natural compression (Horváth et al.): randomised rounding of every value to a power of two,
    /// unbiased with ω = 1/8, 9 bits per coordinate. `contractive = true` (default, the EF21 form) scales by
    /// 1/(1 + ω) = 8/9, giving α = 8/9; `false` sends the unbiased values (α = 7/8).
    Natural {
        /// Scale by 8/9 (the contractive form for EF21).
        #[serde(default = "yes")]
        contractive: bool,
    },
}

fn yes() -> bool {
    true
}

impl Default for CompressorSpec {
    /// Top-1 in f32: the EF21 papers' logistic-regression setting.
    fn default() -> Self {
        CompressorSpec::TopK {
            k: Some(1),
            fraction: None,
            precision: Precision::F32,
        }
    }
}

fn keep_count(k: Option<usize>, fraction: Option<f64>, d: usize) -> usize {
    let k = match (k, fraction) {
        (Some(k), _) => k,
        (None, Some(f)) => ((f * d as f64).floor() as usize).max(1),
        (None, None) => 1,
    };
    k.min(d)
}

fn check_keep(key: &str, k: Option<usize>, fraction: Option<f64>) -> Result<(), String> {
    match (k, fraction) {
        (Some(_), Some(_)) => Err(format!("{key}: set either k or fraction, not both")),
        (None, None) => Err(format!("{key}: needs k or fraction")),
        (Some(0), None) => Err(format!("{key}.k must be at least 1")),
        (None, Some(f)) if !(f.is_finite() && f > 0.0 && f <= 1.0) => {
            Err(format!("{key}.fraction must be in (0, 1], got {f}"))
        }
        _ => Ok(()),
    }
}

impl CompressorSpec {
    /// Checks values; `key` names the setting in messages (e.g. `strategy.compressor`).
    pub fn validate(&self, key: &str) -> Result<(), String> {
        match self {
            CompressorSpec::Identity { .. } | CompressorSpec::Natural { .. } => Ok(()),
            CompressorSpec::TopK { k, fraction, .. }
            | CompressorSpec::RandK { k, fraction, .. } => check_keep(key, *k, *fraction),
        }
    }

    /// Whether the spec is the identity (or a sparsifier that keeps everything) for dimension `d`.
    pub fn is_identity(&self, d: usize) -> bool {
        match self {
            CompressorSpec::Identity { .. } => true,
            CompressorSpec::TopK { k, fraction, .. }
            | CompressorSpec::RandK { k, fraction, .. } => keep_count(*k, *fraction, d) >= d,
            CompressorSpec::Natural { .. } => false,
        }
    }

    /// The compressor for vectors of length `dim`.
    pub fn build(&self, dim: usize) -> Box<dyn Compressor> {
        if self.is_identity(dim) {
            let precision = match self {
                CompressorSpec::Identity { precision }
                | CompressorSpec::TopK { precision, .. }
                | CompressorSpec::RandK { precision, .. } => *precision,
                CompressorSpec::Natural { .. } => Precision::F32,
            };
            return Box::new(Identity { dim, precision });
        }
        match self {
            CompressorSpec::Identity { precision } => Box::new(Identity {
                dim,
                precision: *precision,
            }),
            CompressorSpec::TopK {
                k,
                fraction,
                precision,
            } => Box::new(TopK {
                dim,
                k: keep_count(*k, *fraction, dim),
                precision: *precision,
            }),
            CompressorSpec::RandK {
                k,
                fraction,
                scaled,
                precision,
            } => Box::new(RandK {
                dim,
                k: keep_count(*k, *fraction, dim),
                scaled: *scaled,
                precision: *precision,
            }),
            CompressorSpec::Natural { contractive } => Box::new(Natural {
                dim,
                contractive: *contractive,
            }),
        }
    }
}

/// A compression operator for vectors of one fixed dimension, with an exact wire format.
pub trait Compressor: Send + Sync + std::fmt::Debug {
    /// Short name, e.g. `top_k(1 of 68)`.
    fn name(&self) -> String;

    /// The dimension d the compressor was built for.
    fn dim(&self) -> usize;

    /// Contraction parameter α ∈ (0, 1]: `E||C(x) − x||² ≤ (1 − α)||x||²` for all x (ignoring the rounding
    /// of values to the wire precision). `None` when C is not contractive (scaled Rand-k with k ≤ d/2).
    fn alpha(&self) -> Option<f64>;

    /// Variance parameter ω when C is unbiased (`E C(x) = x`, `E||C(x) − x||² ≤ ω||x||²`), else `None`.
    fn omega(&self) -> Option<f64>;

    /// Whether C draws random numbers (then the contraction holds in expectation only).
    fn is_random(&self) -> bool;

    /// Exact length in bytes of every encoded buffer.
    fn encoded_len(&self) -> usize;

    /// Bits per compressed vector in the EF21 papers' convention: 32 (or 64) bits per transmitted value,
    /// indices and headers not counted; natural compression 9 bits per coordinate.
    fn paper_bits(&self) -> u64;

    /// Encodes `C(x)` into `out` (cleared first). Random compressors draw from `rng`.
    fn encode(
        &self,
        x: &[f64],
        rng: &mut ChaCha8Rng,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError>;

    /// Validates `buf` completely, then adds `scale · C(x)` to `out` (length d). On error `out` is unchanged.
    fn decode_add(&self, buf: &[u8], scale: f64, out: &mut [f64]) -> Result<(), CompressError>;

    /// Decodes `buf` into `out` (overwritten with the dense `C(x)`).
    fn decode(&self, buf: &[u8], out: &mut [f64]) -> Result<(), CompressError> {
        self.check_header(buf)?;
        out.fill(0.0);
        self.decode_add(buf, 1.0, out)
    }

    /// Cheap structural check of a buffer (tag, dimension and exact length), without reading values.
    fn check_header(&self, buf: &[u8]) -> Result<(), CompressError>;
}

// ---------------------------------------------------------------------------------------------------------
// Wire helpers

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a varint at `*pos`, advancing it.
fn get_varint(buf: &[u8], pos: &mut usize) -> Result<u64, CompressError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| CompressError::Malformed("truncated varint".into()))?;
        *pos += 1;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(CompressError::Malformed(
        "varint longer than 64 bits".into(),
    ))
}

/// `⌈log2 d⌉`: bits per index (0 when d ≤ 1).
pub fn index_bits(d: usize) -> u32 {
    if d <= 1 {
        0
    } else {
        usize::BITS - (d - 1).leading_zeros()
    }
}

/// Packs values of `bits` bits each (≤ 32), least significant bit first.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, n: 0 }
    }

    #[inline]
    fn put(&mut self, v: u64, bits: u32) {
        self.acc |= v << self.n;
        self.n += bits;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    fn finish(self) {
        let mut acc = self.acc;
        let mut n = self.n;
        while n > 0 {
            self.out.push(acc as u8);
            acc >>= 8;
            n = n.saturating_sub(8);
        }
    }
}

/// Reads values of `bits` bits each (≤ 32) from a slice known to be long enough.
struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            acc: 0,
            n: 0,
        }
    }

    #[inline]
    fn get(&mut self, bits: u32) -> u64 {
        while self.n < bits {
            let b = self.buf.get(self.pos).copied().unwrap_or(0);
            self.acc |= (b as u64) << self.n;
            self.pos += 1;
            self.n += 8;
        }
        let v = self.acc & ((1u64 << bits) - 1);
        self.acc >>= bits;
        self.n -= bits;
        v
    }
}

fn put_value(out: &mut Vec<u8>, v: f64, precision: Precision) {
    match precision {
        Precision::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        Precision::F64 => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// Checks that every value of `body` (a whole number of values) is finite; names the first bad one.
fn check_values(body: &[u8], precision: Precision) -> Result<(), CompressError> {
    let bad = match precision {
        Precision::F32 => body.chunks_exact(4).position(|c| {
            u32::from_le_bytes([c[0], c[1], c[2], c[3]]) & 0x7f80_0000 == 0x7f80_0000
        }),
        Precision::F64 => body.chunks_exact(8).position(|c| {
            let mut b = [0u8; 8];
            b.copy_from_slice(c);
            u64::from_le_bytes(b) & 0x7ff0_0000_0000_0000 == 0x7ff0_0000_0000_0000
        }),
    };
    match bad {
        Some(i) => Err(CompressError::Malformed(format!("value {i} is not finite"))),
        None => Ok(()),
    }
}

/// Calls `f(i, value)` for every value of `body`.
#[inline]
fn for_values(body: &[u8], precision: Precision, mut f: impl FnMut(usize, f64)) {
    match precision {
        Precision::F32 => {
            for (i, c) in body.chunks_exact(4).enumerate() {
                f(i, f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64);
            }
        }
        Precision::F64 => {
            for (i, c) in body.chunks_exact(8).enumerate() {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f(i, f64::from_le_bytes(b));
            }
        }
    }
}

/// Checks that `v` survives the wire precision.
fn checked(index: usize, v: f64, precision: Precision) -> Result<f64, CompressError> {
    let r = precision.round(v);
    if r.is_finite() {
        Ok(r)
    } else {
        Err(CompressError::NonFinite { index, value: v })
    }
}

fn check_len(x: &[f64], d: usize) -> Result<(), CompressError> {
    if x.len() == d {
        Ok(())
    } else {
        Err(CompressError::Length {
            expected: d,
            got: x.len(),
        })
    }
}

/// Reads and checks `tag`, `d` (and `k`, when given) and the total length; returns the body offset.
fn read_header(
    buf: &[u8],
    tag: u8,
    d: usize,
    k: Option<usize>,
    total: usize,
) -> Result<usize, CompressError> {
    let t = *buf
        .first()
        .ok_or_else(|| CompressError::Malformed("empty buffer".into()))?;
    if t != tag {
        return Err(CompressError::Malformed(format!(
            "format tag {t:#04x}, expected {tag:#04x} (a different compressor or precision)"
        )));
    }
    let mut pos = 1;
    let got_d = get_varint(buf, &mut pos)?;
    if got_d != d as u64 {
        return Err(CompressError::Malformed(format!(
            "dimension {got_d}, expected {d}"
        )));
    }
    if let Some(k) = k {
        let got_k = get_varint(buf, &mut pos)?;
        if got_k != k as u64 {
            return Err(CompressError::Malformed(format!(
                "{got_k} kept coordinates, expected {k}"
            )));
        }
    }
    if buf.len() != total {
        return Err(CompressError::Malformed(format!(
            "{} bytes, expected {total}",
            buf.len()
        )));
    }
    Ok(pos)
}

// ---------------------------------------------------------------------------------------------------------
// Identity

/// No compression: all d values at the wire precision.
#[derive(Debug, Clone)]
pub struct Identity {
    dim: usize,
    precision: Precision,
}

impl Identity {
    fn tag(&self) -> u8 {
        TAG_IDENTITY | self.precision.tag_bit()
    }
}

impl Compressor for Identity {
    fn name(&self) -> String {
        format!("identity({})", self.dim)
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn alpha(&self) -> Option<f64> {
        Some(1.0)
    }
    fn omega(&self) -> Option<f64> {
        Some(0.0)
    }
    fn is_random(&self) -> bool {
        false
    }
    fn encoded_len(&self) -> usize {
        1 + varint_len(self.dim as u64) + self.dim * self.precision.bytes()
    }
    fn paper_bits(&self) -> u64 {
        (self.dim * self.precision.bytes() * 8) as u64
    }

    fn encode(
        &self,
        x: &[f64],
        _rng: &mut ChaCha8Rng,
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        check_len(x, self.dim)?;
        out.clear();
        out.reserve(self.encoded_len());
        out.push(self.tag());
        put_varint(out, self.dim as u64);
        for (i, &v) in x.iter().enumerate() {
            put_value(out, checked(i, v, self.precision)?, self.precision);
        }
        Ok(())
    }

    fn check_header(&self, buf: &[u8]) -> Result<(), CompressError> {
        read_header(buf, self.tag(), self.dim, None, self.encoded_len()).map(|_| ())
    }

    fn decode_add(&self, buf: &[u8], scale: f64, out: &mut [f64]) -> Result<(), CompressError> {
        check_len(out, self.dim)?;
        let pos = read_header(buf, self.tag(), self.dim, None, self.encoded_len())?;
        let body = &buf[pos..];
        check_values(body, self.precision)?;
        for_values(body, self.precision, |i, v| out[i] += scale * v);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Sparse formats (Top-k, Rand-k)

fn sparse_len(d: usize, k: usize, precision: Precision) -> usize {
    1 + varint_len(d as u64)
        + varint_len(k as u64)
        + (k * index_bits(d) as usize).div_ceil(8)
        + k * precision.bytes()
}

/// Writes the sparse format for ascending `indices` with values `value(j)`.
fn write_sparse(
    out: &mut Vec<u8>,
    tag: u8,
    d: usize,
    indices: &[u32],
    precision: Precision,
    value: impl Fn(usize) -> Result<f64, CompressError>,
) -> Result<(), CompressError> {
    out.clear();
    out.reserve(sparse_len(d, indices.len(), precision));
    out.push(tag);
    put_varint(out, d as u64);
    put_varint(out, indices.len() as u64);
    let w = index_bits(d);
    if w > 0 {
        let mut bw = BitWriter::new(out);
        for &j in indices {
            bw.put(j as u64, w);
        }
        bw.finish();
    }
    for &j in indices {
        put_value(out, value(j as usize)?, precision);
    }
    Ok(())
}

/// Parses and validates a sparse buffer; returns (indices, value offset).
fn read_sparse(
    buf: &[u8],
    tag: u8,
    d: usize,
    k: usize,
    precision: Precision,
    indices: &mut Vec<u32>,
) -> Result<usize, CompressError> {
    let pos = read_header(buf, tag, d, Some(k), sparse_len(d, k, precision))?;
    let w = index_bits(d);
    let ib = (k * w as usize).div_ceil(8);
    let mut br = BitReader::new(&buf[pos..pos + ib]);
    indices.clear();
    let mut prev: Option<u64> = None;
    for _ in 0..k {
        let j = if w == 0 { 0 } else { br.get(w) };
        if j >= d as u64 {
            return Err(CompressError::Malformed(format!(
                "index {j} out of range for dimension {d}"
            )));
        }
        if prev.is_some_and(|p| j <= p) {
            return Err(CompressError::Malformed(
                "indices are not strictly increasing".into(),
            ));
        }
        prev = Some(j);
        indices.push(j as u32);
    }
    let vpos = pos + ib;
    check_values(&buf[vpos..], precision)?;
    Ok(vpos)
}

fn sparse_decode_add(
    buf: &[u8],
    tag: u8,
    d: usize,
    k: usize,
    precision: Precision,
    scale: f64,
    out: &mut [f64],
) -> Result<(), CompressError> {
    check_len(out, d)?;
    let mut indices = Vec::with_capacity(k);
    let vpos = read_sparse(buf, tag, d, k, precision, &mut indices)?;
    for_values(&buf[vpos..], precision, |i, v| {
        out[indices[i] as usize] += scale * v
    });
    Ok(())
}

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

fn first_non_finite(x: &[f64]) -> Result<(), CompressError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(CompressError::NonFinite {
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

/// The wire format Top-k and Rand-k share: `k` (index, value) pairs of a `dim`-vector under `tag`.
struct Sparse {
    dim: usize,
    k: usize,
    precision: Precision,
    tag: u8,
}

impl Sparse {
    fn encoded_len(&self) -> usize {
        sparse_len(self.dim, self.k, self.precision)
    }

    /// The papers' count: the values' bits only.
    fn paper_bits(&self) -> u64 {
        (self.k * self.precision.bytes() * 8) as u64
    }

    fn check_header(&self, buf: &[u8]) -> Result<(), CompressError> {
        read_header(buf, self.tag, self.dim, Some(self.k), self.encoded_len()).map(|_| ())
    }

    fn decode_add(&self, buf: &[u8], scale: f64, out: &mut [f64]) -> Result<(), CompressError> {
        sparse_decode_add(buf, self.tag, self.dim, self.k, self.precision, scale, out)
    }
}

/// Top-k: the k entries of largest magnitude, ties broken by lower index. α = k/d.
#[derive(Debug, Clone)]
pub struct TopK {
    dim: usize,
    k: usize,
    precision: Precision,
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

/// Rand-k: k coordinates uniformly without replacement; unscaled (α = k/d) or scaled by d/k (unbiased).
#[derive(Debug, Clone)]
pub struct RandK {
    dim: usize,
    k: usize,
    scaled: bool,
    precision: Precision,
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

// ---------------------------------------------------------------------------------------------------------
// Natural compression

const MANT_MASK: u64 = (1u64 << 52) - 1;
/// Smallest exponent sent; code = e + 127.
const MIN_EXP: i32 = -126;
const MAX_EXP: i32 = 128;

/// Natural compression: every value randomly rounded to one of the two neighbouring powers of two so that
/// the mean is kept (`2^⌊a⌋` with probability `(2^⌈a⌉ − |x|)/2^⌊a⌋`, a = log2|x|); 9 bits per coordinate.
/// `contractive` scales by 8/9 (α = 8/9), otherwise unbiased with ω = 1/8.
#[derive(Debug, Clone)]
pub struct Natural {
    dim: usize,
    contractive: bool,
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{RngExt, SeedableRng};

    use super::*;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn all_specs() -> Vec<CompressorSpec> {
        let mut v = vec![
            CompressorSpec::Identity {
                precision: Precision::F32,
            },
            CompressorSpec::Identity {
                precision: Precision::F64,
            },
            CompressorSpec::Natural { contractive: true },
            CompressorSpec::Natural { contractive: false },
        ];
        for k in [1, 2, 3, 7, 50] {
            for precision in [Precision::F32, Precision::F64] {
                v.push(CompressorSpec::TopK {
                    k: Some(k),
                    fraction: None,
                    precision,
                });
                for scaled in [false, true] {
                    v.push(CompressorSpec::RandK {
                        k: Some(k),
                        fraction: None,
                        scaled,
                        precision,
                    });
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
                let c = spec.build(x.len());
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
                let c = CompressorSpec::TopK { k: Some(k), fraction: None, precision }.build(d);
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
                let c = CompressorSpec::RandK { k: Some(k), fraction: None, scaled, precision: Precision::F64 }.build(d);
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
                let c = CompressorSpec::Natural { contractive }.build(x.len());
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
                    CompressorSpec::Identity { precision },
                    CompressorSpec::TopK { k: Some(d), fraction: None, precision },
                    CompressorSpec::RandK { k: Some(d + 3), fraction: None, scaled: true, precision },
                ] {
                    let c = spec.build(d);
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
            let c = CompressorSpec::RandK { k: Some(k), fraction: None, scaled: false, precision: Precision::F64 }.build(d);
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
                let c = spec.build(d);
                let mut out = vec![0.5; d];
                if c.decode_add(&bytes, 1.0, &mut out).is_err() {
                    prop_assert!(out.iter().all(|&v| v == 0.5), "output touched on error");
                }
            }
        }

        #[test]
        fn mutated_buffers_are_rejected_or_decode_cleanly(x in vector(), pos in any::<prop::sample::Index>(), bit in 0u8..8, seed in any::<u64>()) {
            for spec in all_specs() {
                let c = spec.build(x.len());
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
            let c = CompressorSpec::RandK {
                k: Some(k),
                fraction: None,
                scaled,
                precision: Precision::F64,
            }
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
        let c = CompressorSpec::Natural { contractive: false }.build(x.len());
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
        let c = CompressorSpec::Natural { contractive: true }.build(x.len());
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
        let c = CompressorSpec::default().build(68);
        assert_eq!(c.encoded_len(), 8);
        assert_eq!(c.paper_bits(), 32);
        assert_eq!(index_bits(68), 7);
        assert_eq!(index_bits(64), 6);
        assert_eq!(index_bits(1_000_000), 20);
        assert_eq!(index_bits(1), 0);
        // d = 10⁶, k = 10⁴: 1 + 3 + 2 + 25,000 + 40,000.
        let c = CompressorSpec::TopK {
            k: None,
            fraction: Some(0.01),
            precision: Precision::F32,
        }
        .build(1_000_000);
        assert_eq!(c.encoded_len(), 65_006);
        let c = CompressorSpec::Natural { contractive: true }.build(1_000_000);
        assert_eq!(c.encoded_len(), 1 + 3 + 1_125_000);
        assert_eq!(c.paper_bits(), 9_000_000);
        // k ≥ d is the identity.
        let c = CompressorSpec::TopK {
            k: Some(5),
            fraction: None,
            precision: Precision::F64,
        }
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
        let c = CompressorSpec::TopK {
            k: Some(2),
            fraction: None,
            precision: Precision::F32,
        }
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
        let other = CompressorSpec::TopK {
            k: Some(2),
            fraction: None,
            precision: Precision::F32,
        }
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
        assert!(s.validate("c").is_ok());
        let s: CompressorSpec =
            toml::from_str("kind = \"rand_k\"\nfraction = 0.5\nscaled = true").unwrap();
        assert!(s.validate("c").is_ok());
        assert!(matches!(s.build(10).omega(), Some(w) if (w - 1.0).abs() < 1e-15));
        let s: CompressorSpec = toml::from_str("kind = \"top_k\"").unwrap();
        assert!(s.validate("c").unwrap_err().contains("needs k"));
        let s: CompressorSpec = toml::from_str("kind = \"top_k\"\nk = 1\nfraction = 0.1").unwrap();
        assert!(s.validate("c").is_err());
        let s: CompressorSpec = toml::from_str("kind = \"natural\"").unwrap();
        assert_eq!(s, CompressorSpec::Natural { contractive: true });
        assert!(toml::from_str::<CompressorSpec>("kind = \"top_k\"\nkk = 1").is_err());
    }
}
