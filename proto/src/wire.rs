//! Encoding of [`Payload`]s for the wire: typed tensors as little-endian bytes, split into chunks.

use bytes::Bytes;
use fedsim_types::{NamedTensor, Payload, TensorData};
use prost::Message;

use crate::v1;

/// Size of the data chunks a payload is streamed in.
pub const CHUNK_BYTES: usize = 256 << 10;

/// HTTP/2 flow-control window of one stream, set on both ends (the HTTP/2 default of 64 KiB, or
/// hyper's 1 MiB, is less than one chunk and throttles a model transfer to one chunk per scheduling
/// round trip on a busy machine).
pub const STREAM_WINDOW: u32 = 8 << 20;

/// HTTP/2 flow-control window of a connection (shared by the streams of the clients a process hosts).
pub const CONNECTION_WINDOW: u32 = 32 << 20;

/// A malformed message from the network.
#[derive(Debug, thiserror::Error)]
#[error("malformed payload: {0}")]
pub struct WireError(pub String);

fn le_f32(v: &[f32]) -> Bytes {
    let mut b = vec![0u8; v.len() * 4];
    for (dst, x) in b.chunks_exact_mut(4).zip(v) {
        dst.copy_from_slice(&x.to_le_bytes());
    }
    b.into()
}

fn le_f64(v: &[f64]) -> Bytes {
    let mut b = vec![0u8; v.len() * 8];
    for (dst, x) in b.chunks_exact_mut(8).zip(v) {
        dst.copy_from_slice(&x.to_le_bytes());
    }
    b.into()
}

fn le_u32(v: &[u32]) -> Bytes {
    let mut b = vec![0u8; v.len() * 4];
    for (dst, x) in b.chunks_exact_mut(4).zip(v) {
        dst.copy_from_slice(&x.to_le_bytes());
    }
    b.into()
}

fn from_le<const N: usize, T>(
    b: &[u8],
    what: &str,
    f: impl Fn([u8; N]) -> T,
) -> Result<Vec<T>, WireError> {
    if !b.len().is_multiple_of(N) {
        return Err(WireError(format!(
            "{what}: {} bytes is not a multiple of {N}",
            b.len()
        )));
    }
    Ok(b.chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            f(a)
        })
        .collect())
}

/// Converts a core payload to its protobuf message.
pub fn to_proto(p: &Payload) -> v1::Payload {
    use v1::tensor::Data;
    let tensors = p
        .tensors
        .iter()
        .map(|t| {
            let data = match &t.data {
                TensorData::F32 { shape, values } => Data::Dense(v1::Dense {
                    dtype: v1::DType::F32 as i32,
                    shape: shape.iter().map(|&d| d as u64).collect(),
                    data: le_f32(values),
                }),
                TensorData::F64 { shape, values } => Data::Dense(v1::Dense {
                    dtype: v1::DType::F64 as i32,
                    shape: shape.iter().map(|&d| d as u64).collect(),
                    data: le_f64(values),
                }),
                TensorData::Sparse {
                    len,
                    indices,
                    values,
                } => Data::Sparse(v1::Sparse {
                    len: *len as u64,
                    indices: le_u32(indices),
                    values: le_f32(values),
                }),
                TensorData::U32 { values } => Data::U32s(le_u32(values)),
                TensorData::Bytes { bytes } => Data::Raw(Bytes::copy_from_slice(bytes)),
                TensorData::Scalar { value } => Data::Scalar(*value),
            };
            v1::Tensor {
                name: t.name.clone(),
                data: Some(data),
            }
        })
        .collect();
    v1::Payload { tensors }
}

/// Converts a protobuf payload to a core payload, checking every field (dtype, shape against data
/// length, index ranges, finiteness). Linear in the number of tensors.
pub fn from_proto(p: v1::Payload) -> Result<Payload, WireError> {
    use v1::tensor::Data;
    let mut out = Payload::new();
    let mut names = std::collections::HashSet::with_capacity(p.tensors.len());
    for t in p.tensors {
        if !names.insert(t.name.clone()) {
            return Err(WireError(format!("tensor `{}` appears twice", t.name)));
        }
        let name = t.name;
        let ctx = |m: String| WireError(format!("tensor `{name}`: {m}"));
        let data = match t.data.ok_or_else(|| ctx("no data".into()))? {
            Data::Dense(d) => {
                let shape: Vec<usize> = d
                    .shape
                    .iter()
                    .map(|&s| {
                        usize::try_from(s).map_err(|_| ctx(format!("dimension {s} too large")))
                    })
                    .collect::<Result<_, _>>()?;
                match v1::DType::try_from(d.dtype) {
                    Ok(v1::DType::F32) => TensorData::F32 {
                        shape,
                        values: from_le(&d.data, "f32 data", f32::from_le_bytes)
                            .map_err(|e| ctx(e.0))?,
                    },
                    Ok(v1::DType::F64) => TensorData::F64 {
                        shape,
                        values: from_le(&d.data, "f64 data", f64::from_le_bytes)
                            .map_err(|e| ctx(e.0))?,
                    },
                    _ => return Err(ctx(format!("unknown dtype {}", d.dtype))),
                }
            }
            Data::Sparse(s) => TensorData::Sparse {
                len: usize::try_from(s.len).map_err(|_| ctx("length too large".into()))?,
                indices: from_le(&s.indices, "indices", u32::from_le_bytes)
                    .map_err(|e| ctx(e.0))?,
                values: from_le(&s.values, "values", f32::from_le_bytes).map_err(|e| ctx(e.0))?,
            },
            Data::U32s(b) => TensorData::U32 {
                values: from_le(&b, "u32 data", u32::from_le_bytes).map_err(|e| ctx(e.0))?,
            },
            Data::Raw(b) => TensorData::Bytes { bytes: b.to_vec() },
            Data::Scalar(value) => TensorData::Scalar { value },
        };
        data.validate().map_err(ctx)?;
        out.tensors.push(NamedTensor { name, data });
    }
    Ok(out)
}

/// Encodes a payload to bytes.
pub fn encode(p: &Payload) -> Bytes {
    to_proto(p).encode_to_vec().into()
}

/// Decodes and validates a payload from a trusted source (a checkpoint this process wrote); network
/// input goes through [`decode_untrusted`].
pub fn decode(bytes: &[u8]) -> Result<Payload, WireError> {
    decode_bytes(Bytes::copy_from_slice(bytes))
}

/// Decodes and validates a trusted payload held in `bytes`; tensor data is sliced out of `bytes`, not
/// copied, until it is converted to numbers.
pub fn decode_bytes(bytes: Bytes) -> Result<Payload, WireError> {
    let msg =
        v1::Payload::decode(bytes).map_err(|e| WireError(format!("undecodable protobuf: {e}")))?;
    from_proto(msg)
}

/// Bounds on a payload's structure, checked on the encoded bytes before anything is decoded: without
/// them a few megabytes of empty tensors or of shape dimensions decode into hundreds of megabytes of
/// per-tensor bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most tensors in one payload.
    pub max_tensors: usize,
    /// Most dimensions in one dense tensor's shape.
    pub max_rank: usize,
}

impl DecodeLimits {
    /// Most dimensions of any tensor fedsim sends (models send vectors; rank 8 leaves room).
    pub const MAX_RANK: usize = 8;

    /// Limits for payloads whose schema the receiver does not know: 4,096 tensors of rank at most
    /// [`Self::MAX_RANK`].
    pub const GENEROUS: Self = Self {
        max_tensors: 4096,
        max_rank: Self::MAX_RANK,
    };

    /// Limits for a payload that may carry at most `max_tensors` tensors.
    pub fn tensors(max_tensors: usize) -> Self {
        Self {
            max_tensors,
            max_rank: Self::MAX_RANK,
        }
    }
}

/// Decodes and validates a payload from the network: [`DecodeLimits`] are checked on the encoded bytes
/// first (one linear pass, no allocation), then the payload is decoded as by [`decode_bytes`].
pub fn decode_untrusted(bytes: Bytes, limits: DecodeLimits) -> Result<Payload, WireError> {
    check_limits(&bytes, limits)?;
    decode_bytes(bytes)
}

/// One field of an encoded protobuf message, as the scanner sees it.
enum Field<'a> {
    Varint,
    LengthDelimited(&'a [u8]),
    Fixed,
}

/// Walks the top-level fields of an encoded message without decoding them.
fn scan_fields<'a>(
    mut b: &'a [u8],
    mut visit: impl FnMut(u64, Field<'a>) -> Result<(), WireError>,
) -> Result<(), WireError> {
    let varint = |b: &mut &'a [u8]| {
        prost::encoding::decode_varint(b)
            .map_err(|e| WireError(format!("undecodable protobuf: {e}")))
    };
    while !b.is_empty() {
        let key = varint(&mut b)?;
        let skip = |b: &mut &'a [u8], n: usize| -> Result<&'a [u8], WireError> {
            if b.len() < n {
                return Err(WireError("undecodable protobuf: truncated field".into()));
            }
            let (value, rest) = b.split_at(n);
            *b = rest;
            Ok(value)
        };
        let field = match key & 7 {
            0 => {
                varint(&mut b)?;
                Field::Varint
            }
            1 => {
                skip(&mut b, 8)?;
                Field::Fixed
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?)
                    .map_err(|_| WireError("undecodable protobuf: length too large".into()))?;
                Field::LengthDelimited(skip(&mut b, len)?)
            }
            5 => {
                skip(&mut b, 4)?;
                Field::Fixed
            }
            t => {
                return Err(WireError(format!(
                    "undecodable protobuf: unsupported wire type {t}"
                )));
            }
        };
        visit(key >> 3, field)?;
    }
    Ok(())
}

/// Checks `limits` on an encoded `Payload`: counts its tensors and each dense tensor's dimensions.
fn check_limits(bytes: &[u8], limits: DecodeLimits) -> Result<(), WireError> {
    // Field numbers of `fedsim.v1.Payload.tensors`, `Tensor.dense` and `Dense.shape`.
    const TENSORS: u64 = 1;
    const DENSE: u64 = 2;
    const SHAPE: u64 = 2;
    let mut count = 0usize;
    scan_fields(bytes, |field, value| {
        let (TENSORS, Field::LengthDelimited(tensor)) = (field, value) else {
            return Ok(());
        };
        count += 1;
        if count > limits.max_tensors {
            return Err(WireError(format!(
                "more than {} tensors (the most an update of this run carries)",
                limits.max_tensors
            )));
        }
        let mut rank = 0usize;
        scan_fields(tensor, |field, value| {
            let (DENSE, Field::LengthDelimited(dense)) = (field, value) else {
                return Ok(());
            };
            scan_fields(dense, |field, value| {
                rank += match (field, value) {
                    // Packed: one varint per byte whose top bit is clear.
                    (SHAPE, Field::LengthDelimited(packed)) => {
                        packed.iter().filter(|&&b| b < 0x80).count()
                    }
                    (SHAPE, _) => 1,
                    _ => 0,
                };
                if rank > limits.max_rank {
                    return Err(WireError(format!(
                        "tensor {count}: shape has more than {} dimensions",
                        limits.max_rank
                    )));
                }
                Ok(())
            })
        })
    })
}

/// Bytes a message occupies in a gRPC stream: its protobuf encoding plus the 5-byte gRPC frame header
/// (compression flag and length). HTTP/2 and TLS framing are not counted.
pub fn grpc_message_len(encoded_len: usize) -> u64 {
    encoded_len as u64 + 5
}

/// Splits encoded bytes into chunks of [`CHUNK_BYTES`] without copying.
pub fn chunks(bytes: &Bytes) -> impl Iterator<Item = Bytes> + '_ {
    (0..bytes.len())
        .step_by(CHUNK_BYTES)
        .map(move |s| bytes.slice(s..(s + CHUNK_BYTES).min(bytes.len())))
}

/// A payload declaration that exceeds the receiver's limit.
#[derive(Debug, thiserror::Error)]
#[error("declared payload of {declared} bytes exceeds the limit of {limit} bytes")]
pub struct TooLarge {
    /// Declared bytes.
    pub declared: u64,
    /// The limit.
    pub limit: usize,
}

/// Reassembles a chunked payload of a declared length, refusing more than `max_len` bytes or more
/// than declared.
#[derive(Debug)]
pub struct Assembler {
    declared: usize,
    buf: Vec<u8>,
}

impl Assembler {
    /// Expects `declared` bytes; refuses declarations above `max_len`.
    pub fn new(declared: u64, max_len: usize) -> Result<Self, TooLarge> {
        let too_large = TooLarge {
            declared,
            limit: max_len,
        };
        let declared = usize::try_from(declared).map_err(|_| too_large)?;
        if declared > max_len {
            return Err(TooLarge {
                declared: declared as u64,
                limit: max_len,
            });
        }
        // The whole declared size is reserved at once (no regrowth copies). Untouched reserved pages
        // cost no resident memory, and the coordinator creates an assembler only for an authenticated,
        // selected client with the round's token, under the `deploy.max_message_mib` limit.
        Ok(Self {
            declared,
            buf: Vec::with_capacity(declared),
        })
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.buf.len()
    }

    /// Adds a chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), WireError> {
        if self.buf.len() + chunk.len() > self.declared {
            return Err(WireError(format!(
                "more data than the declared {} bytes",
                self.declared
            )));
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The encoded payload, once all declared bytes arrived (to decode elsewhere, e.g. off the async
    /// reactor, with [`decode_untrusted`]).
    pub fn into_bytes(self) -> Result<Bytes, WireError> {
        if self.buf.len() != self.declared {
            return Err(WireError(format!(
                "truncated: {} of {} declared bytes arrived",
                self.buf.len(),
                self.declared
            )));
        }
        Ok(Bytes::from(self.buf))
    }

    /// The decoded payload under [`DecodeLimits::GENEROUS`], once all declared bytes arrived.
    pub fn finish(self) -> Result<Payload, WireError> {
        decode_untrusted(self.into_bytes()?, DecodeLimits::GENEROUS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Payload {
        Payload::new()
            .with(
                "delta",
                TensorData::F32 {
                    shape: vec![2, 2],
                    values: vec![1.0, -2.0, 3.5, 0.0],
                },
            )
            .with(
                "h",
                TensorData::F64 {
                    shape: vec![1],
                    values: vec![0.25],
                },
            )
            .with(
                "s",
                TensorData::Sparse {
                    len: 10,
                    indices: vec![1, 9],
                    values: vec![0.5, -0.5],
                },
            )
            .with(
                "rank",
                TensorData::U32 {
                    values: vec![2, 0, 1],
                },
            )
            .with(
                "packed",
                TensorData::Bytes {
                    bytes: vec![1, 2, 3],
                },
            )
            .with("lr", TensorData::Scalar { value: 0.1 })
    }

    #[test]
    fn round_trip() {
        let p = sample();
        assert_eq!(decode(&encode(&p)).unwrap(), p);
    }

    #[test]
    fn chunked_round_trip() {
        let p = Payload::new().with(
            "big",
            TensorData::vector((0..700_000).map(|i| i as f32).collect()),
        );
        let bytes = encode(&p);
        let mut a = Assembler::new(bytes.len() as u64, usize::MAX).unwrap();
        let mut n = 0;
        for c in chunks(&bytes) {
            a.push(&c).unwrap();
            n += 1;
        }
        assert!(n >= 3);
        assert_eq!(a.finish().unwrap(), p);
    }

    #[test]
    fn malformed_messages_are_rejected() {
        let nan = Payload::new().with("d", TensorData::vector(vec![f32::NAN]));
        assert!(decode(&encode(&nan)).unwrap_err().0.contains("not finite"));
        let mut msg = to_proto(&Payload::new().with(
            "d",
            TensorData::F32 {
                shape: vec![3],
                values: vec![1.0; 3],
            },
        ));
        if let Some(v1::tensor::Data::Dense(d)) = msg.tensors[0].data.as_mut() {
            d.data.truncate(11);
        }
        let err = from_proto(msg).unwrap_err().0;
        assert!(err.contains("multiple of 4"), "{err}");
        let mut msg = to_proto(&Payload::new().with(
            "d",
            TensorData::F32 {
                shape: vec![4],
                values: vec![1.0; 3],
            },
        ));
        msg.tensors[0].name = "d".into();
        assert!(from_proto(msg).unwrap_err().0.contains("shape"));
        let sparse = to_proto(&Payload::new().with(
            "s",
            TensorData::Sparse {
                len: 2,
                indices: vec![7],
                values: vec![1.0],
            },
        ));
        assert!(from_proto(sparse).unwrap_err().0.contains("out of range"));
        assert!(decode(&[0xff, 0xff, 0xff]).is_err());
        let bytes = encode(&sample());
        let mut a = Assembler::new(bytes.len() as u64, usize::MAX).unwrap();
        a.push(&bytes[..bytes.len() - 1]).unwrap();
        assert!(a.finish().unwrap_err().0.contains("truncated"));
        assert!(Assembler::new(100, 10).is_err());
    }

    #[test]
    fn limits_refuse_many_tensors_and_deep_shapes_before_decoding() {
        let many = v1::Payload {
            tensors: (0..10)
                .map(|i| v1::Tensor {
                    name: format!("t{i}"),
                    data: Some(v1::tensor::Data::Scalar(1.0)),
                })
                .collect(),
        };
        let bytes: Bytes = many.encode_to_vec().into();
        assert!(decode_untrusted(bytes.clone(), DecodeLimits::tensors(10)).is_ok());
        let err = decode_untrusted(bytes, DecodeLimits::tensors(9))
            .unwrap_err()
            .0;
        assert!(err.contains("more than 9 tensors"), "{err}");

        let deep = v1::Payload {
            tensors: vec![v1::Tensor {
                name: "d".into(),
                data: Some(v1::tensor::Data::Dense(v1::Dense {
                    dtype: v1::DType::F32 as i32,
                    shape: vec![1; 9],
                    data: le_f32(&[1.0]),
                })),
            }],
        };
        let bytes: Bytes = deep.encode_to_vec().into();
        let err = decode_untrusted(bytes, DecodeLimits::GENEROUS)
            .unwrap_err()
            .0;
        assert!(err.contains("more than 8 dimensions"), "{err}");
        // A legitimate payload passes with its own tensor count as the limit.
        let p = sample();
        let n = p.tensors.len();
        assert_eq!(
            decode_untrusted(encode(&p), DecodeLimits::tensors(n)).unwrap(),
            p
        );
        // Garbage is an error, not a panic.
        assert!(
            decode_untrusted(Bytes::from_static(&[0x0a, 0xff]), DecodeLimits::GENEROUS).is_err()
        );
        assert!(decode_untrusted(Bytes::from_static(&[0x0b]), DecodeLimits::GENEROUS).is_err());
    }

    #[test]
    fn duplicate_names_are_found_in_linear_time() {
        // 200k distinct names decode quickly (a quadratic name check took minutes at this size).
        let p = v1::Payload {
            tensors: (0..200_000)
                .map(|i| v1::Tensor {
                    name: format!("t{i}"),
                    data: Some(v1::tensor::Data::Scalar(0.0)),
                })
                .collect(),
        };
        assert_eq!(from_proto(p).unwrap().tensors.len(), 200_000);
        let dup = v1::Payload {
            tensors: vec![
                v1::Tensor {
                    name: "x".into(),
                    data: Some(v1::tensor::Data::Scalar(0.0)),
                };
                2
            ],
        };
        assert!(from_proto(dup).unwrap_err().0.contains("appears twice"));
    }
}
