//! A reader for the small part of the MATLAB v5 MAT-file format that data sets such as SVHN use:
//! named, real, numeric N-dimensional arrays, stored plainly or zlib-compressed (MATLAB's default since
//! version 7, still format "5").
//!
//! No maintained crate reads this format with errors that say where a file is broken (the `matfile`
//! crate has a single occasional maintainer and reports position-less parser errors), hence this
//! reader. It follows "MAT-File Format" (The MathWorks, MATLAB 7 and later), chapter "Version 5 MAT-File
//! Format":
//!
//! - A 128-byte header: 116 bytes of text starting `MATLAB 5.0 MAT-file`, 8 bytes of subsystem offset,
//!   a 2-byte version (`0x0100`) and the endian indicator `IM` (little-endian file) or `MI` (big-endian).
//! - Then data elements, one per variable, each an 8-byte tag — data type (`u32`), byte count (`u32`) —
//!   and its data. A tag whose first 4 bytes have a non-zero upper half is a "small data element": type
//!   in the lower 16 bits, byte count (≤ 4) in the upper 16, data in the tag's last 4 bytes.
//! - `miCOMPRESSED` (15): the data is a zlib stream that inflates to one complete element.
//! - `miMATRIX` (14): sub-elements, each padded to a multiple of 8 bytes: array flags (`miUINT32`
//!   × 2; class in the low byte of the first, bit `0x0800` = complex), dimensions (`miINT32` × n), the
//!   name (`miINT8`), the real part (any numeric type; MATLAB may store e.g. a `double` array of small
//!   integers as `miUINT8` to save space), then the imaginary part when complex.
//!
//! Supported: numeric classes; a `uint8` array stored as `miUINT8` stays bytes ([`MatData::U8`]), every
//! other numeric array is converted to `f64` ([`MatData::F64`]). Refused with an error naming the variable:
//! complex, sparse, cell, struct, object and char arrays that are asked for (others are skipped). Not
//! supported: MATLAB v4 files and v7.3 files (HDF5).

use std::io::Read;
use std::path::Path;

use crate::DataError;
use crate::util::{format_err, io_err};

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// Array classes (`mxCLASS`) of the array flags.
const MX_UINT8: u8 = 9;
const MX_NUMERIC: std::ops::RangeInclusive<u8> = 6..=15;

/// Length of the file header.
const HEADER_LEN: usize = 128;

/// The values of an array, column-major as MATLAB stores them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MatData {
    /// A `uint8` array.
    U8(Vec<u8>),
    /// Any other numeric array, converted to `f64`.
    F64(Vec<f64>),
}

/// A named numeric array of a MAT-file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MatArray {
    /// Variable name.
    pub(crate) name: String,
    /// Dimensions (at least 2), first fastest-varying (column-major).
    pub(crate) dims: Vec<usize>,
    /// The `dims` product of values.
    pub(crate) data: MatData,
}

/// Reads the variables `wanted` of the MAT-file `path`, in the order of `wanted`.
///
/// Errors: [`DataError::Io`] when the file cannot be read; [`DataError::Format`] naming the file and the
/// byte offset of the element at fault (and the offset inside its decompressed data, for compressed
/// elements) for a malformed or truncated file, a variable that is not a real numeric array, or a
/// variable of `wanted` that the file lacks.
pub(crate) fn read_mat_arrays(path: &Path, wanted: &[&str]) -> Result<Vec<MatArray>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let big = check_header(path, &bytes)?;
    let mut found: Vec<Option<MatArray>> = vec![None; wanted.len()];
    let mut at = HEADER_LEN;
    while at < bytes.len() && found.iter().any(Option::is_none) {
        let r = Reader {
            path,
            bytes: &bytes,
            big,
            within: None,
        };
        let tag = r.tag(at)?;
        let end = r.data_end(at, &tag)?;
        match tag.ty {
            MI_COMPRESSED => {
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(&bytes[tag.data..end])
                    .read_to_end(&mut inflated)
                    .map_err(|e| {
                        format_err(
                            path,
                            format!(
                                "byte offset {at}: compressed element of {} bytes does not inflate: {e}",
                                tag.len
                            ),
                        )
                    })?;
                let inner = Reader {
                    path,
                    bytes: &inflated,
                    big,
                    within: Some(at),
                };
                let inner_tag = inner.tag(0)?;
                inner.data_end(0, &inner_tag)?;
                if inner_tag.ty == MI_MATRIX {
                    inner.matrix(0, &inner_tag, wanted, &mut found)?;
                }
            }
            MI_MATRIX => r.matrix(at, &tag, wanted, &mut found)?,
            _ => {} // other top-level elements carry no variable of interest
        }
        at = end;
    }
    wanted
        .iter()
        .zip(found)
        .map(|(name, a)| {
            a.ok_or_else(|| format_err(path, format!("no variable `{name}` in the MAT-file")))
        })
        .collect()
}

/// Checks the 128-byte header; returns whether the file is big-endian.
fn check_header(path: &Path, bytes: &[u8]) -> Result<bool, DataError> {
    if bytes.len() < HEADER_LEN {
        return Err(format_err(
            path,
            format!(
                "truncated: {} bytes, shorter than the 128-byte MAT-file header",
                bytes.len()
            ),
        ));
    }
    if bytes.starts_with(b"MATLAB 7.3 MAT-file") {
        return Err(format_err(
            path,
            "a MATLAB 7.3 (HDF5) MAT-file; only version 5 files (MATLAB's -v7 or -v6) are supported",
        ));
    }
    if !bytes.starts_with(b"MATLAB 5.0 MAT-file") {
        return Err(format_err(
            path,
            "not a MATLAB 5 MAT-file: the header text (bytes 0..19) is not `MATLAB 5.0 MAT-file`",
        ));
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(format_err(
                path,
                format!("bad endian indicator {other:?} at byte offset 126, expected `IM` or `MI`"),
            ));
        }
    };
    let v = [bytes[124], bytes[125]];
    let version = if big {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    };
    if version != 0x0100 {
        return Err(format_err(
            path,
            format!(
                "unsupported MAT-file version {version:#06x} at byte offset 124, expected 0x0100"
            ),
        ));
    }
    Ok(big)
}

/// A data element's tag.
#[derive(Debug, Clone, Copy)]
struct Tag {
    /// Data type (`mi…`).
    ty: u32,
    /// Bytes of data.
    len: usize,
    /// Position of the data.
    data: usize,
    /// Whether this is a small data element (8 bytes in all).
    small: bool,
}

/// Reads elements from `bytes` (the file, or the inflated data of a compressed element).
struct Reader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    big: bool,
    /// File offset of the compressed element `bytes` was inflated from.
    within: Option<usize>,
}

impl Reader<'_> {
    fn err(&self, at: usize, msg: impl std::fmt::Display) -> DataError {
        let place = match self.within {
            Some(c) => {
                format!("compressed element at byte offset {c}, decompressed byte offset {at}")
            }
            None => format!("byte offset {at}"),
        };
        format_err(self.path, format!("{place}: {msg}"))
    }

    fn u32_at(&self, at: usize) -> Result<u32, DataError> {
        let b: [u8; 4] = self
            .bytes
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| self.err(at, "truncated: the data ends inside a 4-byte field"))?;
        Ok(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn tag(&self, at: usize) -> Result<Tag, DataError> {
        let first = self.u32_at(at)?;
        if first >> 16 != 0 {
            let len = (first >> 16) as usize;
            if len > 4 {
                return Err(self.err(
                    at,
                    format!("small data element claims {len} bytes (at most 4)"),
                ));
            }
            return Ok(Tag {
                ty: first & 0xffff,
                len,
                data: at + 4,
                small: true,
            });
        }
        let len = self.u32_at(at + 4)? as usize;
        Ok(Tag {
            ty: first,
            len,
            data: at + 8,
            small: false,
        })
    }

    /// End of the element's data; an error when it runs past the data.
    fn data_end(&self, at: usize, tag: &Tag) -> Result<usize, DataError> {
        let end = tag.data.saturating_add(tag.len);
        if end > self.bytes.len() {
            return Err(self.err(
                at,
                format!(
                    "truncated: element of type {} declares {} bytes of data but only {} remain",
                    tag.ty,
                    tag.len,
                    self.bytes.len().saturating_sub(tag.data)
                ),
            ));
        }
        Ok(end)
    }

    /// Where the sub-element after `tag` starts: small elements take 8 bytes, others are padded to 8.
    fn next_sub(&self, tag: &Tag) -> usize {
        if tag.small {
            tag.data + 4
        } else {
            tag.data + tag.len.div_ceil(8) * 8
        }
    }

    /// Parses the `miMATRIX` element at `at`; stores it in `found` when its name is wanted.
    fn matrix(
        &self,
        at: usize,
        tag: &Tag,
        wanted: &[&str],
        found: &mut [Option<MatArray>],
    ) -> Result<(), DataError> {
        let end = tag.data + tag.len;
        // Array flags.
        let flags = self.tag(tag.data)?;
        if flags.ty != MI_UINT32 || flags.len != 8 {
            return Err(self.err(
                tag.data,
                format!(
                    "array flags must be 8 bytes of type miUINT32, found {} bytes of type {}",
                    flags.len, flags.ty
                ),
            ));
        }
        self.data_end(tag.data, &flags)?;
        let word = self.u32_at(flags.data)?;
        let class = (word & 0xff) as u8;
        let complex = word & 0x0800 != 0;
        // Dimensions.
        let dims_at = self.next_sub(&flags);
        let dims_tag = self.tag(dims_at)?;
        self.data_end(dims_at, &dims_tag)?;
        if dims_tag.ty != MI_INT32 || dims_tag.len % 4 != 0 || dims_tag.len < 8 {
            return Err(self.err(
                dims_at,
                format!(
                    "dimensions must be at least two miINT32 values, found {} bytes of type {}",
                    dims_tag.len, dims_tag.ty
                ),
            ));
        }
        let mut dims = Vec::with_capacity(dims_tag.len / 4);
        for k in 0..dims_tag.len / 4 {
            let d = self.u32_at(dims_tag.data + 4 * k)? as i32;
            let d = usize::try_from(d)
                .map_err(|_| self.err(dims_tag.data + 4 * k, format!("negative dimension {d}")))?;
            dims.push(d);
        }
        // Name.
        let name_at = self.next_sub(&dims_tag);
        let name_tag = self.tag(name_at)?;
        self.data_end(name_at, &name_tag)?;
        if name_tag.ty != MI_INT8 && name_tag.ty != MI_UINT8 {
            return Err(self.err(
                name_at,
                format!(
                    "array name must be of type miINT8, found type {}",
                    name_tag.ty
                ),
            ));
        }
        let name = std::str::from_utf8(&self.bytes[name_tag.data..name_tag.data + name_tag.len])
            .map_err(|_| self.err(name_at, "array name is not ASCII"))?
            .to_string();
        let Some(slot) = wanted.iter().position(|w| *w == name) else {
            return Ok(());
        };
        if complex || !MX_NUMERIC.contains(&class) {
            let what = if complex {
                "complex".to_string()
            } else {
                format!("of class {class} (not a numeric array)")
            };
            return Err(self.err(
                at,
                format!("variable `{name}` is {what}; only real numeric arrays are supported"),
            ));
        }
        // Real part.
        let pr_at = self.next_sub(&name_tag);
        let pr = self.tag(pr_at)?;
        let pr_end = self.data_end(pr_at, &pr)?;
        if pr_end > end {
            return Err(self.err(
                pr_at,
                format!("data of `{name}` runs past the end of its array element"),
            ));
        }
        let count = dims
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| {
                self.err(dims_at, format!("dimensions {dims:?} of `{name}` overflow"))
            })?;
        let width = match pr.ty {
            MI_INT8 | MI_UINT8 => 1,
            MI_INT16 | MI_UINT16 => 2,
            MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
            MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
            t => {
                return Err(self.err(pr_at, format!("data of `{name}` has unsupported type {t}")));
            }
        };
        if pr.len != count.saturating_mul(width) {
            return Err(self.err(
                pr_at,
                format!(
                    "`{name}` has dimensions {dims:?} ({count} values) but its data holds {} bytes of {width}-byte values",
                    pr.len
                ),
            ));
        }
        let raw = &self.bytes[pr.data..pr_end];
        let data = if class == MX_UINT8 && pr.ty == MI_UINT8 {
            MatData::U8(raw.to_vec())
        } else {
            MatData::F64(self.to_f64(pr.ty, raw))
        };
        found[slot] = Some(MatArray { name, dims, data });
        Ok(())
    }

    /// Converts `raw` values of storage type `ty` to `f64`.
    fn to_f64(&self, ty: u32, raw: &[u8]) -> Vec<f64> {
        let big = self.big;
        macro_rules! conv {
            ($t:ty, $n:expr) => {
                raw.chunks_exact($n)
                    .map(|c| {
                        let mut b = [0u8; $n];
                        b.copy_from_slice(c);
                        (if big {
                            <$t>::from_be_bytes(b)
                        } else {
                            <$t>::from_le_bytes(b)
                        }) as f64
                    })
                    .collect()
            };
        }
        match ty {
            MI_INT8 => raw.iter().map(|&b| f64::from(b as i8)).collect(),
            MI_UINT8 => raw.iter().map(|&b| f64::from(b)).collect(),
            MI_INT16 => conv!(i16, 2),
            MI_UINT16 => conv!(u16, 2),
            MI_INT32 => conv!(i32, 4),
            MI_UINT32 => conv!(u32, 4),
            MI_SINGLE => conv!(f32, 4),
            MI_INT64 => conv!(i64, 8),
            MI_UINT64 => conv!(u64, 8),
            _ => conv!(f64, 8),
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Writes MAT-files by hand, byte for byte as the format specification lays them out.

    use std::io::Write;

    use super::*;

    /// Byte order of a written file.
    #[derive(Clone, Copy)]
    pub(crate) struct Order(pub(crate) bool);

    impl Order {
        pub(crate) fn u32(self, v: u32) -> [u8; 4] {
            if self.0 {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        }
    }

    /// The 128-byte header.
    pub(crate) fn header(o: Order) -> Vec<u8> {
        let mut h = b"MATLAB 5.0 MAT-file, Platform: test, Created on: by hand".to_vec();
        h.resize(116, b' ');
        h.extend_from_slice(&[0; 8]);
        if o.0 {
            h.extend_from_slice(&0x0100u16.to_be_bytes());
            h.extend_from_slice(b"MI");
        } else {
            h.extend_from_slice(&0x0100u16.to_le_bytes());
            h.extend_from_slice(b"IM");
        }
        h
    }

    /// A data element: full tag, data, zero padding to 8 bytes; a small element when `data` fits in 4
    /// bytes and `small` is set.
    pub(crate) fn element(o: Order, ty: u32, data: &[u8], small: bool) -> Vec<u8> {
        let mut e = Vec::new();
        if small && data.len() <= 4 {
            e.extend_from_slice(&o.u32(((data.len() as u32) << 16) | ty));
            e.extend_from_slice(data);
            e.resize(8, 0);
            return e;
        }
        e.extend_from_slice(&o.u32(ty));
        e.extend_from_slice(&o.u32(data.len() as u32));
        e.extend_from_slice(data);
        e.resize(8 + data.len().div_ceil(8) * 8, 0);
        e
    }

    /// An `miMATRIX` element of class `class` named `name`, real part of storage type `ty`.
    pub(crate) fn matrix(
        o: Order,
        name: &str,
        class: u8,
        dims: &[u32],
        ty: u32,
        pr: &[u8],
    ) -> Vec<u8> {
        let mut body = element(
            o,
            MI_UINT32,
            &[o.u32(u32::from(class)), o.u32(0)].concat(),
            false,
        );
        let d: Vec<u8> = dims.iter().flat_map(|&d| o.u32(d)).collect();
        body.extend(element(o, MI_INT32, &d, false));
        body.extend(element(o, MI_INT8, name.as_bytes(), true));
        body.extend(element(o, ty, pr, true));
        element(o, MI_MATRIX, &body, false)
    }

    /// An `miCOMPRESSED` element holding `inner` (no padding after it, as MATLAB writes it).
    pub(crate) fn compressed(o: Order, inner: &[u8]) -> Vec<u8> {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(inner).unwrap();
        let z = z.finish().unwrap();
        let mut e = o.u32(MI_COMPRESSED).to_vec();
        e.extend_from_slice(&o.u32(z.len() as u32));
        e.extend(z);
        e
    }

    pub(crate) const DOUBLE: u8 = 6;
    pub(crate) const UINT8: u8 = MX_UINT8;
    pub(crate) const TY_UINT8: u32 = MI_UINT8;
    pub(crate) const TY_DOUBLE: u32 = MI_DOUBLE;
    pub(crate) const TY_INT16: u32 = MI_INT16;
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn doubles(o: Order, v: &[f64]) -> Vec<u8> {
        v.iter()
            .flat_map(|x| {
                if o.0 {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                }
            })
            .collect()
    }

    #[test]
    fn plain_compressed_small_and_big_endian_elements() {
        let tmp = tempfile::tempdir().unwrap();
        for big in [false, true] {
            let o = Order(big);
            let a = matrix(o, "A", UINT8, &[2, 3], TY_UINT8, &[1, 2, 3, 4, 5, 6]);
            let b = matrix(
                o,
                "b",
                DOUBLE,
                &[3, 1],
                TY_DOUBLE,
                &doubles(o, &[1.5, -2.0, 10.0]),
            );
            // A double array stored as int16, and a tiny one in a small element (2 bytes).
            let c = matrix(
                o,
                "c",
                DOUBLE,
                &[1, 2],
                TY_INT16,
                &[
                    if big { [0, 7] } else { [7, 0] },
                    if big { [0xff, 0xfe] } else { [0xfe, 0xff] },
                ]
                .concat(),
            );
            let skipped = matrix(o, "other", DOUBLE, &[1, 1], TY_DOUBLE, &doubles(o, &[0.0]));
            let file = [header(o), skipped, a, compressed(o, &b), compressed(o, &c)].concat();
            let p = write(tmp.path(), "t.mat", &file);
            let got = read_mat_arrays(&p, &["b", "A", "c"]).unwrap();
            assert_eq!(got[0].dims, vec![3, 1]);
            assert_eq!(got[0].data, MatData::F64(vec![1.5, -2.0, 10.0]));
            assert_eq!(got[1].name, "A");
            assert_eq!(got[1].data, MatData::U8(vec![1, 2, 3, 4, 5, 6]));
            assert_eq!(got[2].data, MatData::F64(vec![7.0, -2.0]));
        }
    }

    #[test]
    fn malformed_files_name_the_file_and_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let o = Order(false);
        let a = matrix(o, "A", UINT8, &[4, 4], TY_UINT8, &[9; 16]);
        let good = [header(o), a.clone()].concat();
        let check = |name: &str, bytes: &[u8], want: &str| {
            let p = write(tmp.path(), name, bytes);
            let e = read_mat_arrays(&p, &["A"]).unwrap_err();
            assert!(matches!(e, DataError::Format { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains(name) && msg.contains(want), "{name}: {msg}");
        };
        check(
            "short.mat",
            &good[..100],
            "shorter than the 128-byte MAT-file header",
        );
        check(
            "cut.mat",
            &good[..good.len() - 10],
            "byte offset 128: truncated: element of type 14",
        );
        let mut v73 = good.clone();
        v73[..19].copy_from_slice(b"MATLAB 7.3 MAT-file");
        check("v73.mat", &v73, "7.3 (HDF5)");
        let mut text = good.clone();
        text[0] = b'X';
        check("text.mat", &text, "not a MATLAB 5 MAT-file");
        let mut endian = good.clone();
        endian[126] = b'X';
        check("endian.mat", &endian, "bad endian indicator");
        check("none.mat", &header(o), "no variable `A`");
        // Data shorter than the dimensions say: 15 bytes for 4x4.
        let short = matrix(o, "A", UINT8, &[4, 4], TY_UINT8, &[9; 15]);
        check(
            "dims.mat",
            &[header(o), short].concat(),
            "byte offset 176: `A` has dimensions [4, 4] (16 values) but its data holds 15 bytes",
        );
        // A char array under the wanted name.
        let chars = matrix(o, "A", 4, &[1, 2], TY_UINT8, &[65, 66]);
        check(
            "char.mat",
            &[header(o), chars].concat(),
            "variable `A` is of class 4",
        );
        // A compressed element cut short, and one with corrupt zlib data.
        let z = compressed(o, &a);
        let mut cut = [header(o), z.clone()].concat();
        cut.truncate(cut.len() - 5);
        check("zcut.mat", &cut, "byte offset 128: truncated");
        let mut bad = [header(o), z.clone()].concat();
        let n = bad.len();
        bad[n - 8..].copy_from_slice(&[0xff; 8]);
        check("zbad.mat", &bad, "byte offset 128: compressed element");
        // A compressed element whose inflated matrix is itself cut: a decompressed offset.
        let inner = &a[..a.len() - 8];
        check(
            "zinner.mat",
            &[header(o), compressed(o, inner)].concat(),
            "compressed element at byte offset 128, decompressed byte offset 0: truncated",
        );
    }
}
