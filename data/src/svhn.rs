//! SVHN cropped digits (Netzer et al. 2011): `train_32x32.mat` and `test_32x32.mat`.
//!
//! Each file is a MATLAB v5 MAT-file (read by the crate's MATLAB v5 reader) with two variables: `X`, a `uint8`
//! array of 32 × 32 × 3 × N (row, column, channel, image; column-major, so the row index varies
//! fastest), and `y`, N × 1 labels 1–10 where 10 stands for the digit 0. Images become channel-major
//! rows (`3×32×32`, as PyTorch), pixels scaled to [0, 1]; label 10 becomes class 0.

use std::path::{Path, PathBuf};

use fedsim_types::ImageShape;
use rayon::prelude::*;

use crate::matv5::{MatData, read_mat_arrays};
use crate::raw::RawImages;
use crate::util::{format_err, zeroed};
use crate::{DataError, Dataset};

/// File name of the SVHN training set.
pub const SVHN_TRAIN: &str = "train_32x32.mat";
/// File name of the SVHN test set.
pub const SVHN_TEST: &str = "test_32x32.mat";

/// Reads one SVHN `.mat` file as channel-major images with labels 0–9.
///
/// Errors: those of the MAT-file reader; [`DataError::Format`] naming the file and the variable (`X`,
/// `y`, or `y[k]` for a bad label) when the arrays do not have SVHN's types and shapes.
pub(crate) fn read_svhn_raw(path: &Path) -> Result<RawImages, DataError> {
    let mut arrays = read_mat_arrays(path, &["X", "y"])?.into_iter();
    let (Some(x), Some(y)) = (arrays.next(), arrays.next()) else {
        return Err(format_err(
            path,
            "internal error: MAT-file reader lost a variable",
        ));
    };
    let MatData::U8(pixels) = x.data else {
        return Err(format_err(path, "variable `X` is not a uint8 array"));
    };
    let &[h, w, c, n] = x.dims.as_slice() else {
        return Err(format_err(
            path,
            format!(
                "variable `X` has dimensions {:?}, expected 4 (height x width x channels x images)",
                x.dims
            ),
        ));
    };
    if c != 3 {
        return Err(format_err(
            path,
            format!(
                "variable `X` has {c} channels (dimensions {:?}), expected 3",
                x.dims
            ),
        ));
    }
    let MatData::F64(labels) = y.data else {
        return Err(format_err(
            path,
            "variable `y` is a uint8 array, expected double",
        ));
    };
    if y.dims != [n, 1] && y.dims != [1, n] {
        return Err(format_err(
            path,
            format!(
                "variable `y` has dimensions {:?}, expected {n} x 1 (one label per image of `X`)",
                y.dims
            ),
        ));
    }
    let labels = labels
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            if v.fract() == 0.0 && (0.0..=10.0).contains(&v) {
                Ok((v as u32) % 10)
            } else {
                Err(format_err(
                    path,
                    format!("variable `y[{k}]` is {v}, not a digit label 1..10"),
                ))
            }
        })
        .collect::<Result<Vec<u32>, DataError>>()?;
    let shape = ImageShape {
        channels: c,
        height: h,
        width: w,
    };
    let len = c * h * w;
    // Column-major X(i, j, ch, img) sits at i + h·j + h·w·ch + len·img: each image is contiguous, its
    // planes transposed (column-major); rows want ch·h·w + i·w + j.
    let mut out: Vec<u8> = zeroed(pixels.len(), "the SVHN images")?;
    if len > 0 {
        out.par_chunks_mut(len)
            .zip(pixels.par_chunks(len))
            .for_each(|(dst, src)| {
                for ch in 0..c {
                    for i in 0..h {
                        for j in 0..w {
                            dst[ch * h * w + i * w + j] = src[i + h * j + h * w * ch];
                        }
                    }
                }
            });
    }
    Ok(RawImages {
        pixels: out,
        labels,
        num_classes: 10,
        shape,
    })
}

/// The training and test files in `dir`.
pub(crate) fn svhn_files(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(SVHN_TRAIN), dir.join(SVHN_TEST))
}

/// Reads SVHN from `dir`: returns `(train, test)`.
pub fn read_svhn_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let (train, test) = svhn_files(dir);
    let train = read_svhn_raw(&train)?;
    let test = read_svhn_raw(&test)?;
    if train.shape != test.shape {
        return Err(format_err(
            &dir.join(SVHN_TEST),
            format!(
                "images are {:?} but the training images are {:?}",
                test.shape, train.shape
            ),
        ));
    }
    Ok((train.to_dataset()?, test.to_dataset()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matv5::testutil::*;

    /// Pixel value of image `n`, row `i`, column `j`, channel `c` in the test files.
    fn px(n: usize, i: usize, j: usize, c: usize) -> u8 {
        (n * 50 + i * 7 + j * 3 + c * 100) as u8
    }

    /// An SVHN file of `labels.len()` images of `h x w`, written as MATLAB does (column-major X, y as
    /// doubles), each variable compressed or not.
    fn svhn_file(o: Order, h: usize, w: usize, labels: &[f64], compress: bool) -> Vec<u8> {
        let n = labels.len();
        let mut x = Vec::new();
        for img in 0..n {
            for c in 0..3 {
                for j in 0..w {
                    for i in 0..h {
                        x.push(px(img, i, j, c));
                    }
                }
            }
        }
        let xm = matrix(
            o,
            "X",
            UINT8,
            &[h as u32, w as u32, 3, n as u32],
            TY_UINT8,
            &x,
        );
        let yb: Vec<u8> = labels
            .iter()
            .flat_map(|v| {
                if o.0 {
                    v.to_be_bytes()
                } else {
                    v.to_le_bytes()
                }
            })
            .collect();
        let ym = matrix(o, "y", DOUBLE, &[n as u32, 1], TY_DOUBLE, &yb);
        let (xm, ym) = if compress {
            (compressed(o, &xm), compressed(o, &ym))
        } else {
            (xm, ym)
        };
        [header(o), xm, ym].concat()
    }

    #[test]
    fn reads_column_major_images_and_maps_label_10_to_0() {
        let tmp = tempfile::tempdir().unwrap();
        for (compress, big) in [(false, false), (true, false), (true, true)] {
            let o = Order(big);
            std::fs::write(
                tmp.path().join(SVHN_TRAIN),
                svhn_file(o, 4, 5, &[1.0, 10.0, 3.0], compress),
            )
            .unwrap();
            std::fs::write(
                tmp.path().join(SVHN_TEST),
                svhn_file(o, 4, 5, &[10.0], compress),
            )
            .unwrap();
            let (train, test) = read_svhn_dir(tmp.path()).unwrap();
            assert_eq!(train.y, vec![1, 0, 3]);
            assert_eq!(test.y, vec![0]);
            assert_eq!(train.num_classes, 10);
            assert_eq!(
                train.image,
                Some(ImageShape {
                    channels: 3,
                    height: 4,
                    width: 5
                })
            );
            // Row of image 2: channel-major, then row i, then column j.
            for (c, i, j) in [(0, 0, 0), (0, 3, 1), (1, 2, 4), (2, 1, 3)] {
                assert_eq!(
                    train.x[[2, c * 20 + i * 5 + j]],
                    f32::from(px(2, i, j, c)) / 255.0,
                    "c={c} i={i} j={j}"
                );
            }
        }
    }

    #[test]
    fn malformed_svhn_files_name_the_variable() {
        let tmp = tempfile::tempdir().unwrap();
        let o = Order(false);
        let p = tmp.path().join("s.mat");
        let check = |bytes: Vec<u8>, want: &str| {
            std::fs::write(&p, bytes).unwrap();
            let msg = read_svhn_raw(&p).unwrap_err().to_string();
            assert!(msg.contains("s.mat") && msg.contains(want), "{msg}");
        };
        check(svhn_file(o, 2, 2, &[1.0, 11.0], true), "`y[1]` is 11");
        check(svhn_file(o, 2, 2, &[0.5], false), "`y[0]` is 0.5");
        // y with the wrong number of labels.
        let mut f = svhn_file(o, 2, 2, &[1.0, 2.0], false);
        let y = matrix(o, "y", DOUBLE, &[3, 1], TY_DOUBLE, &[0u8; 24]);
        let x_end = f.len() - matrix(o, "y", DOUBLE, &[2, 1], TY_DOUBLE, &[0u8; 16]).len();
        f.truncate(x_end);
        f.extend(y);
        check(f, "variable `y` has dimensions [3, 1], expected 2 x 1");
        // X of the wrong rank, and a missing y.
        let x3 = matrix(o, "X", UINT8, &[2, 2, 3], TY_UINT8, &[0; 12]);
        check([header(o), x3.clone()].concat(), "no variable `y`");
        let y = matrix(o, "y", DOUBLE, &[1, 1], TY_DOUBLE, &[0u8; 8]);
        check(
            [header(o), x3, y].concat(),
            "variable `X` has dimensions [2, 2, 3]",
        );
        // A truncated file: the compressed y is cut.
        let f = svhn_file(o, 2, 2, &[1.0], true);
        let cut = f.len() - 3;
        std::fs::write(&p, &f[..cut]).unwrap();
        let msg = read_svhn_raw(&p).unwrap_err().to_string();
        assert!(msg.contains("s.mat") && msg.contains("truncated"), "{msg}");
    }
}
