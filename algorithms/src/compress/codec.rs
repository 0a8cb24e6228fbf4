//! The wire helpers every format shares (LEB128 varints, bit packing, values at the wire precision, the
//! header check) and the sparse format of Top-k and Rand-k.

use super::{CompressError, Precision};

pub(super) fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
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
pub(super) struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

impl<'a> BitWriter<'a> {
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, acc: 0, n: 0 }
    }

    #[inline]
    pub(super) fn put(&mut self, v: u64, bits: u32) {
        self.acc |= v << self.n;
        self.n += bits;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    pub(super) fn finish(self) {
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
pub(super) struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
    acc: u64,
    n: u32,
}

impl<'a> BitReader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            acc: 0,
            n: 0,
        }
    }

    #[inline]
    pub(super) fn get(&mut self, bits: u32) -> u64 {
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

pub(super) fn put_value(out: &mut Vec<u8>, v: f64, precision: Precision) {
    match precision {
        Precision::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
        Precision::F64 => out.extend_from_slice(&v.to_le_bytes()),
    }
}

/// Checks that every value of `body` (a whole number of values) is finite; names the first bad one.
pub(super) fn check_values(body: &[u8], precision: Precision) -> Result<(), CompressError> {
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
pub(super) fn for_values(body: &[u8], precision: Precision, mut f: impl FnMut(usize, f64)) {
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
pub(super) fn checked(index: usize, v: f64, precision: Precision) -> Result<f64, CompressError> {
    let r = precision.round(v);
    if r.is_finite() {
        Ok(r)
    } else {
        Err(CompressError::NonFinite { index, value: v })
    }
}

pub(super) fn check_len(x: &[f64], d: usize) -> Result<(), CompressError> {
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
pub(super) fn read_header(
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

fn sparse_len(d: usize, k: usize, precision: Precision) -> usize {
    1 + varint_len(d as u64)
        + varint_len(k as u64)
        + (k * index_bits(d) as usize).div_ceil(8)
        + k * precision.bytes()
}

/// Writes the sparse format for ascending `indices` with values `value(j)`.
pub(super) fn write_sparse(
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
pub(super) fn read_sparse(
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

pub(super) fn first_non_finite(x: &[f64]) -> Result<(), CompressError> {
    match x.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(CompressError::NonFinite {
            index,
            value: x[index],
        }),
        None => Ok(()),
    }
}

/// The wire format Top-k and Rand-k share: `k` (index, value) pairs of a `dim`-vector under `tag`.
pub(super) struct Sparse {
    pub(super) dim: usize,
    pub(super) k: usize,
    pub(super) precision: Precision,
    pub(super) tag: u8,
}

impl Sparse {
    pub(super) fn encoded_len(&self) -> usize {
        sparse_len(self.dim, self.k, self.precision)
    }

    /// The papers' count: the values' bits only.
    pub(super) fn paper_bits(&self) -> u64 {
        (self.k * self.precision.bytes() * 8) as u64
    }

    pub(super) fn check_header(&self, buf: &[u8]) -> Result<(), CompressError> {
        read_header(buf, self.tag, self.dim, Some(self.k), self.encoded_len()).map(|_| ())
    }

    pub(super) fn decode_add(
        &self,
        buf: &[u8],
        scale: f64,
        out: &mut [f64],
    ) -> Result<(), CompressError> {
        sparse_decode_add(buf, self.tag, self.dim, self.k, self.precision, scale, out)
    }
}
