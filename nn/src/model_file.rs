//! Model parameters as **safetensors**: one named tensor per parameter tensor of the model's
//! [`Layout`], in PyTorch's layout, so `torch.nn.Module.load_state_dict(safetensors.torch.load_file(…))`
//! loads a file written here into the same architecture, and a file saved from PyTorch loads here.
//!
//! Names are the layout's (a layer stack's are PyTorch's `nn.Sequential` state-dict keys, `0.weight`,
//! `4.body.0.weight`); shapes and element order are PyTorch's: [`Model::torch_axes`] says how each
//! tensor's axes map (this crate stores weights input-major, PyTorch output-major). Values are `f32`
//! little-endian; files holding `f64` tensors are read too (rounded to `f32`). Reading checks the file
//! against the model: every tensor present with PyTorch's shape, none extra, every value finite.

use std::collections::HashMap;

use ndarray::{ArrayViewD, IxDyn};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::{Model, TensorSpec};

/// The metadata key naming the model that wrote a file (informational; reading checks the tensors).
pub const MODEL_KEY: &str = "fedsim.model";

/// Why a safetensors file does not fit a model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelFileError {
    /// The bytes are not a safetensors file.
    #[error("not a valid safetensors file: {0}")]
    Format(String),
    /// The model has a tensor the file lacks.
    #[error("no tensor `{name}` (the model {model} has {expected:?}); the file holds: {held}")]
    Missing {
        /// The tensor's name.
        name: String,
        /// The model's name.
        model: String,
        /// The shape the model expects (PyTorch's layout).
        expected: Vec<usize>,
        /// The names the file holds.
        held: String,
    },
    /// The file holds a tensor the model does not have.
    #[error("tensor `{name}` is not a parameter of the model {model}")]
    Extra {
        /// The tensor's name.
        name: String,
        /// The model's name.
        model: String,
    },
    /// A tensor has another shape than the model's.
    #[error("tensor `{name}` has shape {found:?}, the model {model} expects {expected:?}")]
    Shape {
        /// The tensor's name.
        name: String,
        /// The model's name.
        model: String,
        /// PyTorch's shape of the model's tensor.
        expected: Vec<usize>,
        /// The file's shape.
        found: Vec<usize>,
    },
    /// A tensor has an element type other than `F32` or `F64`.
    #[error("tensor `{name}` is {dtype}, expected F32 (or F64)")]
    Dtype {
        /// The tensor's name.
        name: String,
        /// The file's element type.
        dtype: String,
    },
    /// A tensor holds NaN or an infinity (a model with one is never used).
    #[error("tensor `{name}` holds a non-finite value at element {index}")]
    NonFinite {
        /// The tensor's name.
        name: String,
        /// Index of the first non-finite element (PyTorch's order).
        index: usize,
    },
}

/// PyTorch's axes of an input-major tensor of rank `rank` ([`Model::torch_axes`]'s default): the last
/// axis (the outputs) first, the others in order.
pub fn input_major_axes(rank: usize) -> Vec<usize> {
    match rank {
        0 | 1 => (0..rank).collect(),
        r => std::iter::once(r - 1).chain(0..r - 1).collect(),
    }
}

/// PyTorch's shape of `tensor`.
fn torch_shape(model: &dyn Model, tensor: &TensorSpec) -> Vec<usize> {
    model
        .torch_axes(tensor)
        .iter()
        .map(|&a| tensor.shape[a])
        .collect()
}

/// Every parameter tensor of `model` in PyTorch's layout: (name, shape, little-endian `f32` bytes).
fn torch_tensors(model: &dyn Model, params: &[f32]) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    model
        .layout()
        .tensors()
        .iter()
        .map(|t| {
            let ours = ArrayViewD::from_shape(IxDyn(&t.shape), &params[t.range()])
                .unwrap_or_else(|e| panic!("layout tensor {} does not fit: {e}", t.name));
            let axes = model.torch_axes(t);
            let torch = ours.permuted_axes(IxDyn(&axes));
            let bytes = torch.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t.name.clone(), torch.shape().to_vec(), bytes)
        })
        .collect()
}

/// Encodes `params` of `model` as a safetensors file (PyTorch's names, shapes and element order), with
/// `metadata` (plus the model's name under [`MODEL_KEY`]) in its header.
///
/// # Panics
/// If `params` does not have the model's length (a caller's bug, not input).
pub fn to_safetensors(
    model: &dyn Model,
    params: &[f32],
    metadata: &[(&str, String)],
) -> Result<Vec<u8>, ModelFileError> {
    assert_eq!(
        params.len(),
        model.num_params(),
        "parameters of another model"
    );
    let tensors = torch_tensors(model, params);
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| ModelFileError::Format(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut info: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    info.insert(MODEL_KEY.into(), model.name());
    info.insert("format".into(), "pt".into());
    safetensors::serialize(views, Some(info)).map_err(|e| ModelFileError::Format(e.to_string()))
}

/// Whether `bytes` look like a safetensors file (an 8-byte header length, then a JSON object).
pub fn is_safetensors(bytes: &[u8]) -> bool {
    bytes.len() >= 9 && bytes[8] == b'{' && {
        let mut n = [0u8; 8];
        n.copy_from_slice(&bytes[..8]);
        u64::from_le_bytes(n) <= (bytes.len() - 8) as u64
    }
}

/// Reads the parameters of `model` from safetensors `bytes` (PyTorch's layout), checking every name,
/// shape, element type and value.
pub fn from_safetensors(model: &dyn Model, bytes: &[u8]) -> Result<Vec<f32>, ModelFileError> {
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| ModelFileError::Format(e.to_string()))?;
    let layout = model.layout();
    for name in file.names() {
        if layout.get(name).is_none() {
            return Err(ModelFileError::Extra {
                name: name.to_string(),
                model: model.name(),
            });
        }
    }
    let mut params = vec![0.0f32; layout.len()];
    for t in layout.tensors() {
        let expected = torch_shape(model, t);
        let view = file.tensor(&t.name).map_err(|_| {
            let mut held: Vec<&str> = file.names();
            held.sort_unstable();
            ModelFileError::Missing {
                name: t.name.clone(),
                model: model.name(),
                expected: expected.clone(),
                held: held.join(", "),
            }
        })?;
        if view.shape() != expected.as_slice() {
            return Err(ModelFileError::Shape {
                name: t.name.clone(),
                model: model.name(),
                expected,
                found: view.shape().to_vec(),
            });
        }
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_le_bytes(b) as f32
                })
                .collect(),
            other => {
                return Err(ModelFileError::Dtype {
                    name: t.name.clone(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(ModelFileError::NonFinite {
                name: t.name.clone(),
                index,
            });
        }
        // PyTorch's tensor viewed with our axes order gives our element order when iterated.
        let axes = model.torch_axes(t);
        let mut inverse = vec![0; axes.len()];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        let torch = ArrayViewD::from_shape(IxDyn(&expected), &values)
            .map_err(|e| ModelFileError::Format(format!("tensor `{}`: {e}", t.name)))?;
        for (dst, v) in params[t.range()]
            .iter_mut()
            .zip(torch.permuted_axes(IxDyn(&inverse)).iter())
        {
            *dst = *v;
        }
    }
    Ok(params)
}

/// The file's header metadata (`__metadata__`), if any.
pub fn metadata(bytes: &[u8]) -> Result<HashMap<String, String>, ModelFileError> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| ModelFileError::Format(e.to_string()))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogReg, Mlp};

    fn mlp() -> Mlp {
        Mlp::new(6, &[4], 3)
    }

    #[test]
    fn input_major_axes_put_the_outputs_first() {
        assert_eq!(input_major_axes(1), vec![0]);
        assert_eq!(input_major_axes(2), vec![1, 0]);
        assert_eq!(input_major_axes(4), vec![3, 0, 1, 2]);
    }

    #[test]
    fn round_trip_is_exact_and_uses_pytorch_shapes() {
        let m = mlp();
        let p = m.init_params(7);
        let bytes = to_safetensors(&m, &p, &[("note", "x".into())]).unwrap();
        assert!(is_safetensors(&bytes));
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("fc1.weight").unwrap().shape(), &[4, 6]);
        assert_eq!(file.tensor("fc2.weight").unwrap().shape(), &[3, 4]);
        // PyTorch's fc1.weight[o][i] is our fc1.weight[i][o].
        let w = file.tensor("fc1.weight").unwrap();
        let at = |o: usize, i: usize| {
            let k = (o * 6 + i) * 4;
            f32::from_le_bytes(w.data()[k..k + 4].try_into().unwrap())
        };
        assert_eq!(at(2, 5), p[5 * 4 + 2]);
        assert_eq!(from_safetensors(&m, &bytes).unwrap(), p);
        let meta = metadata(&bytes).unwrap();
        assert_eq!(meta.get("note").map(String::as_str), Some("x"));
        assert_eq!(meta.get(MODEL_KEY), Some(&m.name()));
    }

    #[test]
    fn logreg_weights_are_already_in_pytorch_order() {
        let m = LogReg::new(5, 3);
        let p = m.init_params(1);
        let bytes = to_safetensors(&m, &p, &[]).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("weight").unwrap().shape(), &[3, 5]);
        assert_eq!(from_safetensors(&m, &bytes).unwrap(), p);
    }

    /// A file with the given tensors (F32 unless `dtype` says otherwise).
    fn file_with(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, v)| {
                (
                    n.to_string(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(&str, TensorView<'_>)> = bytes
            .iter()
            .map(|(n, s, b)| {
                (
                    n.as_str(),
                    TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn good() -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
        vec![
            ("fc1.weight", vec![4, 6], vec![0.5; 24]),
            ("fc1.bias", vec![4], vec![0.0; 4]),
            ("fc2.weight", vec![3, 4], vec![0.25; 12]),
            ("fc2.bias", vec![3], vec![0.0; 3]),
        ]
    }

    #[test]
    fn mismatches_are_named() {
        let m = mlp();
        assert!(from_safetensors(&m, &file_with(&good())).is_ok());

        let mut t = good();
        t.remove(1);
        let e = from_safetensors(&m, &file_with(&t)).unwrap_err();
        assert!(
            matches!(&e, ModelFileError::Missing { name, .. } if name == "fc1.bias"),
            "{e}"
        );

        let mut t = good();
        t.push(("fc3.weight", vec![1], vec![0.0]));
        let e = from_safetensors(&m, &file_with(&t)).unwrap_err();
        assert!(e.to_string().contains("fc3.weight"), "{e}");

        let mut t = good();
        t[0] = ("fc1.weight", vec![6, 4], vec![0.5; 24]); // our layout, not PyTorch's
        let e = from_safetensors(&m, &file_with(&t)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "tensor `fc1.weight` has shape [6, 4], the model {} expects [4, 6]",
                m.name()
            )
        );

        let mut t = good();
        t[2].2[7] = f32::NAN;
        let e = from_safetensors(&m, &file_with(&t)).unwrap_err();
        assert_eq!(
            e,
            ModelFileError::NonFinite {
                name: "fc2.weight".into(),
                index: 7
            }
        );

        for junk in [&b""[..], b"12345678{", &[255u8; 32][..]] {
            assert!(matches!(
                from_safetensors(&m, junk),
                Err(ModelFileError::Format(_))
            ));
        }
    }

    #[test]
    fn f64_tensors_are_read() {
        let m = LogReg::new(2, 2);
        let vals = [1.0f64, -2.0, 3.5, 0.25];
        let w: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = [0.5f64, -0.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let views = vec![
            (
                "weight",
                TensorView::new(Dtype::F64, vec![2, 2], &w).unwrap(),
            ),
            ("bias", TensorView::new(Dtype::F64, vec![2], &b).unwrap()),
        ];
        let bytes = safetensors::serialize(views, None).unwrap();
        assert_eq!(
            from_safetensors(&m, &bytes).unwrap(),
            vec![1.0, -2.0, 3.5, 0.25, 0.5, -0.5]
        );
    }
}
