//! Decoded images kept as bytes: the common form of the image readers (CIFAR, SVHN, image folders)
//! before the conversion to `f32`, so that a client process can convert only its own rows.

use fedsim_types::ImageShape;
use ndarray::Array2;
use rayon::prelude::*;

use crate::util::{check_u32_len, zeroed};
use crate::{DataError, Dataset};

/// Images of one shape as bytes, channel-major (`C×H×W`, like PyTorch) and image after image, with
/// their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawImages {
    /// `len() · shape.channels · shape.height · shape.width` bytes.
    pub(crate) pixels: Vec<u8>,
    /// Class of every image.
    pub(crate) labels: Vec<u32>,
    /// Number of classes.
    pub(crate) num_classes: usize,
    /// Shape of every image.
    pub(crate) shape: ImageShape,
}

impl RawImages {
    /// Bytes per image.
    pub(crate) fn image_len(&self) -> usize {
        image_len(self.shape)
    }

    /// All images, scaled to `p / 255`.
    pub(crate) fn to_dataset(&self) -> Result<Dataset, DataError> {
        let n = self.labels.len();
        check_u32_len(n, "the image set")?;
        self.rows_dataset(&(0..n as u32).collect::<Vec<_>>())
    }

    /// The images `rows` (each `< len`), in that order, scaled to `p / 255`.
    pub(crate) fn rows_dataset(&self, rows: &[u32]) -> Result<Dataset, DataError> {
        let len = self.image_len();
        let x = scale_rows(rows.len(), len, |i, out| {
            let r = rows[i] as usize;
            out.copy_from_slice(&self.pixels[r * len..(r + 1) * len]);
        })?;
        Ok(Dataset {
            x: x.into(),
            y: rows.iter().map(|&r| self.labels[r as usize]).collect(),
            num_classes: self.num_classes,
            image: Some(self.shape),
        })
    }
}

/// Bytes (and features) per image of `shape`.
pub(crate) fn image_len(shape: ImageShape) -> usize {
    shape.channels * shape.height * shape.width
}

/// A `rows × len` matrix of `p / 255`, where `fill(i, bytes)` writes the `len` bytes of row `i`; rows
/// are filled in parallel (each row on its own, so the result does not depend on the thread count).
pub(crate) fn scale_rows(
    rows: usize,
    len: usize,
    fill: impl Fn(usize, &mut [u8]) + Sync,
) -> Result<Array2<f32>, DataError> {
    let cells = rows
        .checked_mul(len)
        .ok_or_else(|| DataError::Spec("image set too large for memory".into()))?;
    let mut x: Vec<f32> = zeroed(cells, "the image set")?;
    if len > 0 {
        let table: [f32; 256] = std::array::from_fn(|p| p as f32 / 255.0);
        x.par_chunks_mut(len).enumerate().for_each_init(
            || vec![0u8; len],
            |bytes, (i, out)| {
                fill(i, bytes);
                for (o, &p) in out.iter_mut().zip(bytes.iter()) {
                    *o = table[p as usize];
                }
            },
        );
    }
    Array2::from_shape_vec((rows, len), x)
        .map_err(|e| DataError::Spec(format!("internal error: image matrix shape: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_scaled_and_selected() {
        let raw = RawImages {
            pixels: (0..24).map(|i| (i * 10) as u8).collect(),
            labels: vec![0, 1, 2, 1],
            num_classes: 3,
            shape: ImageShape {
                channels: 2,
                height: 1,
                width: 3,
            },
        };
        let all = raw.to_dataset().unwrap();
        assert_eq!(all.x.dim(), (4, 6));
        assert_eq!(all.x[[1, 0]], 60.0 / 255.0);
        assert_eq!(all.y, vec![0, 1, 2, 1]);
        let some = raw.rows_dataset(&[3, 0]).unwrap();
        assert_eq!(some.x.row(0), all.x.row(3));
        assert_eq!(some.x.row(1), all.x.row(0));
        assert_eq!(some.y, vec![1, 0]);
        assert_eq!(some.image, all.image);
        assert_eq!(raw.rows_dataset(&[]).unwrap().x.dim(), (0, 6));
    }
}
