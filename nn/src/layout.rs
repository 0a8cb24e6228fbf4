//! Flat parameter layouts: named tensors packed one after another in one `f32` vector.

use serde::{Deserialize, Serialize};

/// One named tensor inside a flat parameter vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Name such as `fc1.weight`.
    pub name: String,
    /// Shape, row-major.
    pub shape: Vec<usize>,
    /// Offset of the first element in the flat vector.
    pub offset: usize,
}

impl TensorSpec {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Index range of this tensor inside the flat vector.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The layout of a flat parameter vector: tensors in order, without gaps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    tensors: Vec<TensorSpec>,
    len: usize,
}

impl Layout {
    /// An empty layout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a tensor and returns its index in the layout.
    pub fn push(&mut self, name: impl Into<String>, shape: &[usize]) -> usize {
        let spec = TensorSpec {
            name: name.into(),
            shape: shape.to_vec(),
            offset: self.len,
        };
        self.len += spec.len();
        self.tensors.push(spec);
        self.tensors.len() - 1
    }

    /// Total number of parameters.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the layout holds no parameters.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The tensors, in order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Looks a tensor up by name.
    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_contiguous() {
        let mut l = Layout::new();
        l.push("w", &[3, 4]);
        l.push("b", &[4]);
        assert_eq!(l.len(), 16);
        assert_eq!(l.get("b").map(|t| t.range()), Some(12..16));
    }
}
