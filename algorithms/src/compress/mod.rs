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

mod codec;
mod identity;
mod natural;
mod rand_k;
#[cfg(test)]
mod tests;
mod top_k;

use fedsim_types::ConfigError;
use fedsim_types::registry::{Entry, Family, Kind, Spec, Validated};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use codec::index_bits;
pub use identity::Identity;
pub use natural::Natural;
pub use rand_k::RandK;
pub use top_k::{TopK, top_k_indices};

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

/// The compressor family: the `compressor = { kind = ..., ... }` key of a strategy. Every kind is
/// registered in [`REGISTERED`], with its wire precision as its capability.
///
/// Sparsifiers take the number of kept coordinates as `k` or as `fraction` of d (`k = max(1, ⌊fraction·d⌋)`);
/// one that keeps every coordinate is built as the identity.
#[derive(Debug, Clone, Copy)]
pub struct Compressors;

/// What a configured compressor declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressorCapabilities {
    /// The identity kind (no compression).
    pub identity: bool,
    /// Wire precision of the values it sends (F32 for natural compression's codes).
    pub precision: Precision,
}

impl Family for Compressors {
    const SECTION: &'static str = "compressor";
    type Capabilities = CompressorCapabilities;
    /// The dimension d of the vectors to compress.
    type Input<'a> = usize;
    type Output = Box<dyn Compressor>;

    fn registered() -> &'static [Entry<Self>] {
        REGISTERED
    }

    /// Top-1 in f32: the EF21 papers' logistic-regression setting.
    fn default_spec() -> Spec<Self> {
        Spec::new(TopKConfig {
            k: Some(1),
            fraction: None,
            precision: Precision::F32,
        })
    }
}

/// Every compressor kind, one line each.
static REGISTERED: &[Entry<Compressors>] = &[
    Entry::of::<IdentityConfig>(),
    Entry::of::<TopKConfig>(),
    Entry::of::<RandKConfig>(),
    Entry::of::<NaturalConfig>(),
];

/// A strategy's `compressor` setting: a registered compressor kind and its settings.
pub type CompressorSpec = Spec<Compressors>;

/// `kind = "identity"`: no compression, all d values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Wire precision of the values.
    #[serde(default)]
    pub precision: Precision,
}

impl Kind<Compressors> for IdentityConfig {
    const KIND: &'static str = "identity";
    const SUMMARY: &'static str = "no compression: all d values";

    fn capabilities(&self) -> CompressorCapabilities {
        CompressorCapabilities {
            identity: true,
            precision: self.precision,
        }
    }

    fn build(&self, dim: usize, _: Validated) -> Box<dyn Compressor> {
        Box::new(Identity {
            dim,
            precision: self.precision,
        })
    }
}

/// `kind = "top_k"`: the k entries of largest magnitude (ties: lower index first); α = k/d;
/// deterministic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopKConfig {
    /// Number of kept coordinates.
    #[serde(default)]
    pub k: Option<usize>,
    /// Kept fraction of the coordinates (instead of `k`).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Wire precision of the values.
    #[serde(default)]
    pub precision: Precision,
}

impl Kind<Compressors> for TopKConfig {
    const KIND: &'static str = "top_k";
    const SUMMARY: &'static str = "Top-k: the k entries of largest magnitude";
    const EXAMPLE: &'static str = "k = 1";

    fn capabilities(&self) -> CompressorCapabilities {
        CompressorCapabilities {
            identity: false,
            precision: self.precision,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_keep(self.k, self.fraction)
    }

    fn build(&self, dim: usize, _: Validated) -> Box<dyn Compressor> {
        sparsifier(self.k, self.fraction, self.precision, dim, |k| {
            Box::new(TopK {
                dim,
                k,
                precision: self.precision,
            })
        })
    }
}

/// `kind = "rand_k"`: k coordinates drawn uniformly without replacement from the client's random
/// stream. Unscaled (α = k/d, biased; the form EF21 uses) or `scaled` by d/k (unbiased, ω = d/k − 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandKConfig {
    /// Number of kept coordinates.
    #[serde(default)]
    pub k: Option<usize>,
    /// Kept fraction of the coordinates (instead of `k`).
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Multiply kept values by d/k (unbiased form).
    #[serde(default)]
    pub scaled: bool,
    /// Wire precision of the values.
    #[serde(default)]
    pub precision: Precision,
}

impl Kind<Compressors> for RandKConfig {
    const KIND: &'static str = "rand_k";
    const SUMMARY: &'static str = "Rand-k: k coordinates drawn uniformly, optionally scaled by d/k";
    const EXAMPLE: &'static str = "fraction = 0.2";

    fn capabilities(&self) -> CompressorCapabilities {
        CompressorCapabilities {
            identity: false,
            precision: self.precision,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_keep(self.k, self.fraction)
    }

    fn build(&self, dim: usize, _: Validated) -> Box<dyn Compressor> {
        sparsifier(self.k, self.fraction, self.precision, dim, |k| {
            Box::new(RandK {
                dim,
                k,
                scaled: self.scaled,
                precision: self.precision,
            })
        })
    }
}

/// `kind = "natural"`: natural compression (Horváth et al.), randomised rounding of every value to a
/// power of two, unbiased with ω = 1/8, 9 bits per coordinate. `contractive = true` (default, the EF21
/// form) scales by 1/(1 + ω) = 8/9, giving α = 8/9; `false` sends the unbiased values (α = 7/8).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaturalConfig {
    /// Scale by 8/9 (the contractive form for EF21).
    #[serde(default = "yes")]
    pub contractive: bool,
}

impl Kind<Compressors> for NaturalConfig {
    const KIND: &'static str = "natural";
    const SUMMARY: &'static str =
        "natural compression: values rounded to powers of two, 9 bits each";

    fn capabilities(&self) -> CompressorCapabilities {
        CompressorCapabilities {
            identity: false,
            precision: Precision::F32,
        }
    }

    fn build(&self, dim: usize, _: Validated) -> Box<dyn Compressor> {
        Box::new(Natural {
            dim,
            contractive: self.contractive,
        })
    }
}

fn yes() -> bool {
    true
}

/// Builds a compressor from a specification that is valid by construction (defaults, tests): a
/// convenience over `spec.validate()?.build(dim)` that reports a bad specification as an error.
pub fn build(spec: &CompressorSpec, dim: usize) -> Result<Box<dyn Compressor>, ConfigError> {
    Ok(spec.validate()?.build(dim))
}

fn keep_count(k: Option<usize>, fraction: Option<f64>, d: usize) -> usize {
    let k = match (k, fraction) {
        (Some(k), _) => k,
        (None, Some(f)) => ((f * d as f64).floor() as usize).max(1),
        (None, None) => 1,
    };
    k.min(d)
}

/// A sparsifier keeping `k` (or `fraction` of `dim`) coordinates, or the identity when that keeps every
/// coordinate.
fn sparsifier(
    k: Option<usize>,
    fraction: Option<f64>,
    precision: Precision,
    dim: usize,
    make: impl FnOnce(usize) -> Box<dyn Compressor>,
) -> Box<dyn Compressor> {
    let k = keep_count(k, fraction, dim);
    if k >= dim {
        Box::new(Identity { dim, precision })
    } else {
        make(k)
    }
}

fn check_keep(k: Option<usize>, fraction: Option<f64>) -> Result<(), ConfigError> {
    match (k, fraction) {
        (Some(_), Some(_)) => Err(ConfigError::document("set either k or fraction, not both")),
        (None, None) => Err(ConfigError::document("needs k or fraction")),
        (Some(0), None) => Err(ConfigError::new("k", "must be at least 1")),
        (None, Some(f)) if !(f.is_finite() && f > 0.0 && f <= 1.0) => Err(ConfigError::new(
            "fraction",
            format!("must be in (0, 1], got {f}"),
        )),
        _ => Ok(()),
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
