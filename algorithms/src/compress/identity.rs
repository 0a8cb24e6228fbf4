//! The identity: no compression, all d values at the wire precision.

use rand_chacha::ChaCha8Rng;

use super::codec::{
    check_len, check_values, checked, for_values, put_value, put_varint, read_header, varint_len,
};
use super::{CompressError, Compressor, Precision, TAG_IDENTITY};

/// No compression: all d values at the wire precision.
#[derive(Debug, Clone)]
pub struct Identity {
    pub(super) dim: usize,
    pub(super) precision: Precision,
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
