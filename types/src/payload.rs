//! Typed messages exchanged between the server half and the client half of a strategy.
//!
//! A [`Payload`] is a list of named tensors. The gRPC runtime maps it one-to-one onto its wire format;
//! the simulator passes it in memory. [`Payload::encoded_len`] is the size of the tensor data as the
//! wire carries it (values, indices, shapes, names), used for `bytes_up` / `bytes_down`.

use serde::{Deserialize, Serialize};

/// The data of one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TensorData {
    /// Dense `f32` values with a row-major shape.
    F32 {
        /// Shape; the product equals `values.len()`.
        shape: Vec<usize>,
        /// Values.
        values: Vec<f32>,
    },
    /// Dense `f64` values with a row-major shape.
    F64 {
        /// Shape; the product equals `values.len()`.
        shape: Vec<usize>,
        /// Values.
        values: Vec<f64>,
    },
    /// A sparse `f32` vector of length `len`: `values[j]` sits at `indices[j]`.
    Sparse {
        /// Dense length.
        len: usize,
        /// Positions, each `< len`.
        indices: Vec<u32>,
        /// Values at those positions.
        values: Vec<f32>,
    },
    /// Unsigned integers, e.g. a ranking (a permutation of edge indices).
    U32 {
        /// Values.
        values: Vec<u32>,
    },
    /// An opaque encoded buffer (e.g. bit-packed indices), counted byte for byte.
    Bytes {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// One number.
    Scalar {
        /// The value.
        value: f64,
    },
}

impl TensorData {
    /// A dense 1-D `f32` tensor.
    pub fn vector(values: Vec<f32>) -> Self {
        TensorData::F32 {
            shape: vec![values.len()],
            values,
        }
    }

    /// A dense 1-D `f64` tensor holding a copy of `values`.
    pub fn vector_f64(values: &[f64]) -> Self {
        TensorData::F64 {
            shape: vec![values.len()],
            values: values.to_vec(),
        }
    }

    /// Bytes this tensor occupies on the wire (data plus shape), excluding framing.
    pub fn encoded_len(&self) -> usize {
        match self {
            TensorData::F32 { shape, values } => values.len() * 4 + shape.len() * 8,
            TensorData::F64 { shape, values } => values.len() * 8 + shape.len() * 8,
            TensorData::Sparse {
                indices, values, ..
            } => indices.len() * 4 + values.len() * 4 + 8,
            TensorData::U32 { values } => values.len() * 4,
            TensorData::Bytes { bytes } => bytes.len(),
            TensorData::Scalar { .. } => 8,
        }
    }

    /// Checks internal consistency: shapes match lengths, indices in range, numbers finite.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            TensorData::F32 { shape, values } => {
                check_shape(shape, values.len())?;
                match values.iter().position(|v| !v.is_finite()) {
                    Some(i) => Err(format!("value {i} is not finite ({})", values[i])),
                    None => Ok(()),
                }
            }
            TensorData::F64 { shape, values } => {
                check_shape(shape, values.len())?;
                match values.iter().position(|v| !v.is_finite()) {
                    Some(i) => Err(format!("value {i} is not finite ({})", values[i])),
                    None => Ok(()),
                }
            }
            TensorData::Sparse {
                len,
                indices,
                values,
            } => {
                if indices.len() != values.len() {
                    return Err(format!(
                        "{} indices but {} values",
                        indices.len(),
                        values.len()
                    ));
                }
                if let Some(i) = indices.iter().position(|&ix| ix as usize >= *len) {
                    return Err(format!(
                        "index {} out of range for length {len}",
                        indices[i]
                    ));
                }
                match values.iter().position(|v| !v.is_finite()) {
                    Some(i) => Err(format!("value {i} is not finite ({})", values[i])),
                    None => Ok(()),
                }
            }
            TensorData::Scalar { value } if !value.is_finite() => {
                Err(format!("scalar is not finite ({value})"))
            }
            _ => Ok(()),
        }
    }
}

fn check_shape(shape: &[usize], len: usize) -> Result<(), String> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("shape overflows")?;
    if n != len {
        Err(format!(
            "shape {shape:?} holds {n} values but {len} were sent"
        ))
    } else {
        Ok(())
    }
}

/// A named tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    /// Name, unique within its payload (e.g. `delta`, `model`, `ranking.fc1`).
    pub name: String,
    /// The data.
    pub data: TensorData,
}

/// An ordered list of named tensors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Payload {
    /// The tensors, in the order the strategy put them.
    pub tensors: Vec<NamedTensor>,
}

impl Payload {
    /// An empty payload.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tensor (builder style).
    pub fn with(mut self, name: impl Into<String>, data: TensorData) -> Self {
        self.push(name, data);
        self
    }

    /// Adds or replaces a tensor.
    pub fn push(&mut self, name: impl Into<String>, data: TensorData) {
        let name = name.into();
        match self.tensors.iter_mut().find(|t| t.name == name) {
            Some(t) => t.data = data,
            None => self.tensors.push(NamedTensor { name, data }),
        }
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .map(|t| &t.data)
    }

    /// Mutable access to a tensor by name.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut TensorData> {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .map(|t| &mut t.data)
    }

    /// Removes and returns a tensor.
    pub fn take(&mut self, name: &str) -> Option<TensorData> {
        let i = self.tensors.iter().position(|t| t.name == name)?;
        Some(self.tensors.remove(i).data)
    }

    /// Whether the payload holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The dense `f32` vector called `name` with exactly `len` values, or a descriptive error.
    pub fn dense(&self, name: &str, len: usize) -> Result<&[f32], String> {
        match self.get(name) {
            Some(TensorData::F32 { values, .. }) if values.len() == len => Ok(values),
            Some(TensorData::F32 { values, .. }) => Err(format!(
                "tensor `{name}` has {} values, expected {len}",
                values.len()
            )),
            Some(_) => Err(format!("tensor `{name}` is not a dense f32 tensor")),
            None => Err(format!("tensor `{name}` is missing")),
        }
    }

    /// Takes the dense `f32` vector called `name` with exactly `len` values.
    pub fn take_dense(&mut self, name: &str, len: usize) -> Result<Vec<f32>, String> {
        self.dense(name, len)?;
        match self.take(name) {
            Some(TensorData::F32 { values, .. }) => Ok(values),
            _ => Err(format!("tensor `{name}` is missing")),
        }
    }

    /// A scalar called `name`.
    pub fn scalar(&self, name: &str) -> Result<f64, String> {
        match self.get(name) {
            Some(TensorData::Scalar { value }) => Ok(*value),
            Some(_) => Err(format!("tensor `{name}` is not a scalar")),
            None => Err(format!("scalar `{name}` is missing")),
        }
    }

    /// Bytes of all tensors on the wire, names included, framing excluded.
    pub fn encoded_len(&self) -> usize {
        self.tensors
            .iter()
            .map(|t| t.name.len() + t.data.encoded_len())
            .sum()
    }

    /// Heap bytes held (for memory reports).
    pub fn heap_bytes(&self) -> usize {
        self.encoded_len()
    }

    /// Validates every tensor (shapes, index ranges, finiteness), naming the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        for t in &self.tensors {
            t.data
                .validate()
                .map_err(|e| format!("tensor `{}`: {e}", t.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_problem() {
        let p = Payload::new().with("delta", TensorData::vector(vec![1.0, f32::NAN]));
        assert!(p.validate().unwrap_err().contains("delta"));
        let p = Payload::new().with(
            "d",
            TensorData::F32 {
                shape: vec![3],
                values: vec![1.0],
            },
        );
        assert!(p.validate().unwrap_err().contains("shape"));
        let p = Payload::new().with(
            "s",
            TensorData::Sparse {
                len: 2,
                indices: vec![5],
                values: vec![1.0],
            },
        );
        assert!(p.validate().unwrap_err().contains("out of range"));
    }

    #[test]
    fn dense_checks_length() {
        let p = Payload::new().with("x", TensorData::vector(vec![1.0; 4]));
        assert!(p.dense("x", 4).is_ok());
        assert!(p.dense("x", 5).is_err());
        assert!(p.dense("y", 4).is_err());
    }
}
