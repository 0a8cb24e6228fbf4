//! IDX reader for MNIST and Fashion-MNIST.
//!
//! The IDX format is a big-endian header (magic number `0x0000_08nn` where `08` means unsigned bytes and `nn`
//! the number of dimensions, then one `u32` per dimension) followed by the raw data. Images are `idx3`
//! (count × rows × cols), labels `idx1` (count). Files may be gzip-compressed or raw; compression is detected
//! from the content, not the name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use ndarray::Array2;

use crate::util::{find_gz_or_raw, format_err, io_err, is_gzip, read_maybe_gz};
use crate::{DataError, Dataset};

/// Magic number of an IDX file of unsigned bytes with 3 dimensions (images).
pub const IDX3_UBYTE_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with 1 dimension (labels).
pub const IDX1_UBYTE_MAGIC: u32 = 0x0000_0801;

/// File names of the MNIST / Fashion-MNIST training images (without `.gz`).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// File names of the MNIST / Fashion-MNIST training labels (without `.gz`).
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// File names of the MNIST / Fashion-MNIST test images (without `.gz`).
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// File names of the MNIST / Fashion-MNIST test labels (without `.gz`).
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Number of classes of MNIST and Fashion-MNIST.
pub const MNIST_CLASSES: usize = 10;

/// Images read from an `idx3-ubyte` file: `count` images of `height × width` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// Pixels, image after image, row-major, `count · height · width` bytes.
    pub pixels: Vec<u8>,
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn check_magic(
    path: &Path,
    bytes: &[u8],
    expected: u32,
    header_len: usize,
) -> Result<(), DataError> {
    if bytes.len() < 4 {
        return Err(format_err(
            path,
            format!(
                "truncated: the file holds {} bytes, too short for the 4-byte IDX magic number",
                bytes.len()
            ),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != expected {
        return Err(format_err(
            path,
            format!("bad magic number {magic:#010x}, expected {expected:#010x} (bytes 0..4)"),
        ));
    }
    if bytes.len() < header_len {
        return Err(format_err(
            path,
            format!(
                "truncated: the file holds {} bytes, shorter than the {header_len}-byte IDX header",
                bytes.len()
            ),
        ));
    }
    Ok(())
}

/// An open IDX file, decompressing on the fly when the content starts with the gzip magic bytes.
struct Stream<'a> {
    path: &'a Path,
    reader: Box<dyn Read + Send + 'a>,
    gzip: bool,
    /// Upper bound on the decompressed size (for capacity reservations).
    max_len: usize,
}

impl<'a> Stream<'a> {
    fn open(path: &'a Path) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|e| io_err(path, e))?;
        let len = file.metadata().map_err(|e| io_err(path, e))?.len();
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        let mut br = BufReader::with_capacity(1 << 16, file);
        let gzip = is_gzip(br.fill_buf().map_err(|e| io_err(path, e))?);
        let (reader, max_len): (Box<dyn Read + Send>, usize) = if gzip {
            (Box::new(MultiGzDecoder::new(br)), len.saturating_mul(1032))
        } else {
            (Box::new(br), len)
        };
        Ok(Self {
            path,
            reader,
            gzip,
            max_len,
        })
    }

    /// Reads into `buf` until it is full or the data ends; returns the number of bytes read.
    fn read_full(&mut self, buf: &mut [u8]) -> Result<usize, DataError> {
        let mut got = 0;
        while got < buf.len() {
            match self.reader.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if self.gzip => {
                    return Err(format_err(
                        self.path,
                        format!("gzip data is corrupt or truncated: {e}"),
                    ));
                }
                Err(e) => return Err(io_err(self.path, e)),
            }
        }
        Ok(got)
    }
}

/// Receives the pixel bytes of an image file.
trait PixelSink {
    /// Called once before the data with the bytes per image and (a bound on) the number of pixel bytes.
    fn start(&mut self, image_len: usize, n: usize);
    /// Called with consecutive chunks of pixel bytes.
    fn push(&mut self, chunk: &[u8]);
}

impl PixelSink for Vec<u8> {
    fn start(&mut self, _image_len: usize, n: usize) {
        self.reserve_exact(n);
    }
    fn push(&mut self, chunk: &[u8]) {
        self.extend_from_slice(chunk);
    }
}

/// Converts pixels to `p / 255` as they arrive.
struct Scaled {
    table: [f32; 256],
    data: Vec<f32>,
}

impl PixelSink for Scaled {
    fn start(&mut self, _image_len: usize, n: usize) {
        self.data.reserve_exact(n);
    }
    fn push(&mut self, chunk: &[u8]) {
        self.data
            .extend(chunk.iter().map(|&p| self.table[p as usize]));
    }
}

/// Keeps only the images `rows` (ascending, no repeats), converted to `p / 255`; the others are decoded
/// past and dropped.
struct ScaledRows<'r> {
    table: [f32; 256],
    rows: &'r [u32],
    image_len: usize,
    /// Position in `rows` of the next image to keep.
    next: usize,
    /// Pixel bytes seen so far.
    seen: usize,
    data: Vec<f32>,
}

impl PixelSink for ScaledRows<'_> {
    fn start(&mut self, image_len: usize, n: usize) {
        self.image_len = image_len;
        self.data
            .reserve_exact(self.rows.len().saturating_mul(image_len).min(n));
    }
    fn push(&mut self, chunk: &[u8]) {
        let end = self.seen + chunk.len();
        while let Some(&r) = self.rows.get(self.next) {
            let (s, e) = (
                r as usize * self.image_len,
                (r as usize + 1) * self.image_len,
            );
            if s >= end && self.image_len > 0 {
                break;
            }
            let (a, b) = (s.max(self.seen), e.min(end));
            if a < b {
                let part = &chunk[a - self.seen..b - self.seen];
                self.data
                    .extend(part.iter().map(|&p| self.table[p as usize]));
            }
            if e > end {
                break; // the image continues in the next chunk
            }
            self.next += 1;
        }
        self.seen = end;
    }
}

/// Streams an `idx3-ubyte` file: checks the header, then hands the pixel bytes to `sink` in chunks.
/// Returns `(count, height, width)`.
fn stream_images(
    path: &Path,
    sink: &mut impl PixelSink,
) -> Result<(usize, usize, usize), DataError> {
    let mut s = Stream::open(path)?;
    let mut header = [0u8; 16];
    let got = s.read_full(&mut header)?;
    check_magic(path, &header[..got], IDX3_UBYTE_MAGIC, 16)?;
    let count = be_u32(&header, 4) as usize;
    let height = be_u32(&header, 8) as usize;
    let width = be_u32(&header, 12) as usize;
    let expected = count
        .checked_mul(height)
        .and_then(|v| v.checked_mul(width))
        .ok_or_else(|| {
            format_err(
                path,
                format!("header dimensions {count} x {height} x {width} (bytes 4..16) overflow"),
            )
        })?;
    if count > 0 && (height == 0 || width == 0) {
        return Err(format_err(
            path,
            format!("header says {count} images of {height}x{width}: empty images"),
        ));
    }
    sink.start(height * width, expected.min(s.max_len));
    let mut buf = vec![0u8; 1 << 16];
    let mut have = 0usize;
    loop {
        let n = s.read_full(&mut buf)?;
        if n == 0 {
            break;
        }
        let take = n.min(expected - have.min(expected));
        sink.push(&buf[..take]);
        have += n;
    }
    if have < expected {
        return Err(format_err(
            path,
            format!(
                "truncated: header says {count} images of {height}x{width} but the file holds {have} bytes of pixel \
                 data (expected {expected})"
            ),
        ));
    }
    if have > expected {
        return Err(format_err(
            path,
            format!(
                "header says {count} images of {height}x{width} ({expected} bytes) but the file holds {} extra bytes \
                 after them (from byte offset {})",
                have - expected,
                16 + expected
            ),
        ));
    }
    Ok((count, height, width))
}

/// Reads an `idx3-ubyte` image file (gzip-compressed or raw).
///
/// Errors: [`DataError::Io`] if the file cannot be read; [`DataError::Format`] for a bad magic number, a
/// truncated header or pixel block, trailing bytes, or corrupt gzip data.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let mut pixels = Vec::new();
    let (count, height, width) = stream_images(path, &mut pixels)?;
    Ok(IdxImages {
        count,
        height,
        width,
        pixels,
    })
}

/// Reads an `idx3-ubyte` image file straight into a `count × (height·width)` matrix of pixels scaled to `[0, 1]`.
fn read_idx_images_scaled(
    path: &Path,
) -> Result<(Array2<f32>, fedsim_types::ImageShape), DataError> {
    // Exact `p / 255` for every byte value.
    let mut sink = Scaled {
        table: std::array::from_fn(|p| p as f32 / 255.0),
        data: Vec::new(),
    };
    let (count, height, width) = stream_images(path, &mut sink)?;
    let x = Array2::from_shape_vec((count, height * width), sink.data)
        .map_err(|e| format_err(path, format!("cannot shape pixel data: {e}")))?;
    Ok((
        x,
        fedsim_types::ImageShape {
            channels: 1,
            height,
            width,
        },
    ))
}

/// Reads the images `rows` (ascending, no repeats) of an `idx3-ubyte` file into a `rows.len() × (height·width)`
/// matrix of pixels scaled to `[0, 1]`, decoding past the other images without keeping them: memory is
/// O(kept images), not O(file). Returns the matrix, the image shape and the number of images in the file.
///
/// Errors: those of [`read_idx_images`], and [`DataError::Format`] when a row is not below the file's image
/// count.
pub fn read_idx_images_rows(
    path: &Path,
    rows: &[u32],
) -> Result<(Array2<f32>, fedsim_types::ImageShape, usize), DataError> {
    debug_assert!(rows.windows(2).all(|w| w[0] < w[1]), "rows must ascend");
    let mut sink = ScaledRows {
        table: std::array::from_fn(|p| p as f32 / 255.0),
        rows,
        image_len: 0,
        next: 0,
        seen: 0,
        data: Vec::new(),
    };
    let (count, height, width) = stream_images(path, &mut sink)?;
    if let Some(&r) = rows.iter().find(|&&r| r as usize >= count) {
        return Err(format_err(
            path,
            format!("image {r} asked for, but the file holds {count} images"),
        ));
    }
    let x = Array2::from_shape_vec((rows.len(), height * width), sink.data)
        .map_err(|e| format_err(path, format!("cannot shape pixel data: {e}")))?;
    let shape = fedsim_types::ImageShape {
        channels: 1,
        height,
        width,
    };
    Ok((x, shape, count))
}

/// Reads an `idx1-ubyte` label file (gzip-compressed or raw) and checks every label is `< num_classes`.
///
/// Errors: [`DataError::Io`] if the file cannot be read; [`DataError::Format`] for a bad magic number, a
/// truncated file, trailing bytes, corrupt gzip data or a label out of range (with its byte offset).
pub fn read_idx_labels(path: &Path, num_classes: usize) -> Result<Vec<u8>, DataError> {
    let mut bytes = read_maybe_gz(path)?;
    check_magic(path, &bytes, IDX1_UBYTE_MAGIC, 8)?;
    let count = be_u32(&bytes, 4) as usize;
    let have = bytes.len() - 8;
    if have < count {
        return Err(format_err(
            path,
            format!(
                "truncated: header says {count} labels but the file holds {have} bytes of label data"
            ),
        ));
    }
    if have > count {
        return Err(format_err(
            path,
            format!(
                "header says {count} labels but the file holds {} extra bytes after them (from byte offset {})",
                have - count,
                8 + count
            ),
        ));
    }
    bytes.drain(..8);
    if let Some(i) = bytes.iter().position(|&l| l as usize >= num_classes) {
        return Err(format_err(
            path,
            format!(
                "label {} of sample {i} (byte offset {}) is out of range, expected 0..{}",
                bytes[i],
                8 + i,
                num_classes.saturating_sub(1)
            ),
        ));
    }
    Ok(bytes)
}

/// Reads an image file and its label file into a [`Dataset`] with 10 classes.
///
/// Pixels are scaled to `[0, 1]` (divided by 255); `image` is `1 × height × width` from the header. The two
/// files must hold the same number of samples.
pub fn read_idx_pair(images: &Path, labels: &Path) -> Result<Dataset, DataError> {
    // Decode the (large) image file on a second thread while this one reads the labels.
    let (img, lab) = std::thread::scope(|scope| {
        let handle = scope.spawn(|| read_idx_images_scaled(images));
        let lab = read_idx_labels(labels, MNIST_CLASSES);
        let img = handle.join().unwrap_or_else(|_| {
            Err(format_err(
                images,
                "internal error: the image-decoding thread panicked",
            ))
        });
        (img, lab)
    });
    let (x, shape) = img?;
    let lab = lab?;
    if lab.len() != x.nrows() {
        return Err(format_err(
            labels,
            format!(
                "holds {} labels but {} holds {} images",
                lab.len(),
                images.display(),
                x.nrows()
            ),
        ));
    }
    Ok(Dataset {
        x: x.into(),
        y: lab.into_iter().map(u32::from).collect(),
        num_classes: MNIST_CLASSES,
        image: Some(shape),
    })
}

/// Reads MNIST or Fashion-MNIST from `dir`: returns `(train, test)`.
///
/// Each of the four files ([`TRAIN_IMAGES`], [`TRAIN_LABELS`], [`TEST_IMAGES`], [`TEST_LABELS`]) is looked up as
/// `name.gz` first, then `name`. Training and test images must have the same size.
pub fn read_mnist_dir(dir: &Path) -> Result<(Dataset, Dataset), DataError> {
    let train_images = find_gz_or_raw(dir, TRAIN_IMAGES)?;
    let train_labels = find_gz_or_raw(dir, TRAIN_LABELS)?;
    let test_images = find_gz_or_raw(dir, TEST_IMAGES)?;
    let test_labels = find_gz_or_raw(dir, TEST_LABELS)?;
    let (train, test) = std::thread::scope(|scope| {
        let handle = scope.spawn(|| read_idx_pair(&test_images, &test_labels));
        let train = read_idx_pair(&train_images, &train_labels);
        let test = handle.join().unwrap_or_else(|_| {
            Err(format_err(
                &test_images,
                "internal error: the test-set reading thread panicked",
            ))
        });
        (train, test)
    });
    let (train, test) = (train?, test?);
    if train.image != test.image {
        return Err(format_err(
            &test_images,
            format!(
                "images are {:?} but the training images in {} are {:?}",
                test.image,
                train_images.display(),
                train.image
            ),
        ));
    }
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;

    fn idx3(count: u32, h: u32, w: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&IDX3_UBYTE_MAGIC.to_be_bytes());
        v.extend_from_slice(&count.to_be_bytes());
        v.extend_from_slice(&h.to_be_bytes());
        v.extend_from_slice(&w.to_be_bytes());
        v.extend_from_slice(pixels);
        v
    }

    fn idx1(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&IDX1_UBYTE_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Writes a tiny 2x3-pixel MNIST-like directory; `gzip` selects compressed files.
    fn tiny_dir(gzip: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let train_px: Vec<u8> = (0..4 * 6).map(|i| (i * 10) as u8).collect();
        let test_px: Vec<u8> = vec![255; 2 * 6];
        let files = [
            (TRAIN_IMAGES, idx3(4, 2, 3, &train_px)),
            (TRAIN_LABELS, idx1(&[0, 9, 3, 3])),
            (TEST_IMAGES, idx3(2, 2, 3, &test_px)),
            (TEST_LABELS, idx1(&[1, 2])),
        ];
        for (name, bytes) in files {
            if gzip {
                write(dir.path(), &format!("{name}.gz"), &gz(&bytes));
            } else {
                write(dir.path(), name, &bytes);
            }
        }
        dir
    }

    #[test]
    fn round_trip_raw_and_gz() {
        for gzip in [false, true] {
            let dir = tiny_dir(gzip);
            let (train, test) = read_mnist_dir(dir.path()).unwrap();
            assert_eq!(train.len(), 4);
            assert_eq!(train.features(), 6);
            assert_eq!(train.y, vec![0, 9, 3, 3]);
            assert_eq!(train.num_classes, 10);
            assert_eq!(
                train.image,
                Some(fedsim_types::ImageShape {
                    channels: 1,
                    height: 2,
                    width: 3
                })
            );
            assert_eq!(train.x[[0, 1]], 10.0 / 255.0);
            assert_eq!(train.x[[3, 5]], 230.0 / 255.0);
            assert_eq!(test.len(), 2);
            assert!(test.x.iter().all(|&v| v == 1.0));
            assert_eq!(test.y, vec![1, 2]);
        }
    }

    #[test]
    fn selected_rows_match_the_full_read() {
        // 300 images of 17x13 bytes: 66,300 bytes, so images straddle the 64 KiB read chunks.
        let (count, h, w) = (300u32, 17u32, 13u32);
        let px: Vec<u8> = (0..count * h * w).map(|i| (i * 7 % 251) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        for gzip in [false, true] {
            let bytes = idx3(count, h, w, &px);
            let path = write(dir.path(), "img", &if gzip { gz(&bytes) } else { bytes });
            let (full, shape) = read_idx_images_scaled(&path).unwrap();
            for rows in [
                vec![],
                vec![0, 1, 2],
                vec![5, 99, 296, 297, 299],
                (0..300).collect(),
            ] {
                let (x, s, n) = read_idx_images_rows(&path, &rows).unwrap();
                assert_eq!((s, n), (shape, 300));
                let ix: Vec<usize> = rows.iter().map(|&r| r as usize).collect();
                assert_eq!(x, full.select(ndarray::Axis(0), &ix), "{rows:?}");
            }
            let e = read_idx_images_rows(&path, &[3, 300]).unwrap_err();
            assert!(e.to_string().contains("image 300 asked for"), "{e}");
        }
    }

    #[test]
    fn gz_name_preferred_and_raw_fallback() {
        let dir = tiny_dir(false);
        // A gz file under the .gz name takes precedence over the raw file.
        write(
            dir.path(),
            &format!("{TRAIN_LABELS}.gz"),
            &gz(&idx1(&[1, 1, 1, 1])),
        );
        let (train, _) = read_mnist_dir(dir.path()).unwrap();
        assert_eq!(train.y, vec![1, 1, 1, 1]);
    }

    #[test]
    fn missing_file_is_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = read_mnist_dir(dir.path()).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains(TRAIN_IMAGES), "{msg}");
    }

    #[test]
    fn bad_magic() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = idx3(1, 1, 1, &[0]);
        bytes[3] = 0x01;
        let p = write(dir.path(), "imgs", &bytes);
        let e = read_idx_images(&p).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("imgs")
                && msg.contains("bad magic number 0x00000801, expected 0x00000803"),
            "{msg}"
        );
        // An image file given as labels.
        let p = write(dir.path(), "labs", &idx3(1, 1, 1, &[0]));
        let msg = read_idx_labels(&p, 10).unwrap_err().to_string();
        assert!(
            msg.contains("labs")
                && msg.contains("bad magic number 0x00000803, expected 0x00000801"),
            "{msg}"
        );
        let p = write(dir.path(), "zero", &[0u8; 20]);
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(
            msg.contains("bad magic number 0x00000000, expected 0x00000803"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "short-imgs", &idx3(3, 2, 2, &[0; 10]));
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("short-imgs"), "{msg}");
        assert!(
            msg.contains(
                "truncated: header says 3 images of 2x2 but the file holds 10 bytes of pixel data"
            ),
            "{msg}"
        );
        let p = write(dir.path(), "short-header", &idx3(3, 2, 2, &[])[..10]);
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(
            msg.contains("short-header") && msg.contains("shorter than the 16-byte IDX header"),
            "{msg}"
        );
        let p = write(dir.path(), "tiny", &[0x00, 0x00]);
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("tiny") && msg.contains("truncated"), "{msg}");
        let p = write(dir.path(), "short-labels", &idx1(&[1, 2, 3])[..9]);
        let msg = read_idx_labels(&p, 10).unwrap_err().to_string();
        assert!(
            msg.contains("short-labels")
                && msg.contains("header says 3 labels")
                && msg.contains("holds 1 bytes")
        );
        let p = write(dir.path(), "extra", &idx3(1, 1, 1, &[0, 0]));
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(
            msg.contains("extra") && msg.contains("1 extra bytes"),
            "{msg}"
        );
        // A truncated gzip stream.
        let full = gz(&idx3(50, 4, 4, &[7; 800]));
        let p = write(dir.path(), "cut.gz", &full[..full.len() / 2]);
        let msg = read_idx_images(&p).unwrap_err().to_string();
        assert!(msg.contains("cut.gz") && msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn label_out_of_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad-labels", &idx1(&[0, 1, 10, 2]));
        let e = read_idx_labels(&p, 10).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("bad-labels") && msg.contains("label 10 of sample 2 (byte offset 10)"),
            "{msg}"
        );
    }

    #[test]
    fn count_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let i = write(dir.path(), "imgs", &idx3(2, 1, 1, &[0, 0]));
        let l = write(dir.path(), "labs", &idx1(&[0, 1, 2]));
        let msg = read_idx_pair(&i, &l).unwrap_err().to_string();
        assert!(
            msg.contains("labs") && msg.contains("holds 3 labels") && msg.contains("2 images"),
            "{msg}"
        );
    }

    #[test]
    fn real_mnist() {
        let dir = crate::root::dev_data("mnist");
        if !dir.join(format!("{TRAIN_IMAGES}.gz")).is_file() {
            println!("skipping real_mnist: {} not found", dir.display());
            return;
        }
        let t0 = std::time::Instant::now();
        let (train, test) = read_mnist_dir(&dir).unwrap();
        let elapsed = t0.elapsed();
        println!("read MNIST in {elapsed:?}");
        assert_eq!(train.len(), 60_000);
        assert_eq!(test.len(), 10_000);
        assert_eq!(train.features(), 784);
        assert_eq!(
            train.image,
            Some(fedsim_types::ImageShape {
                channels: 1,
                height: 28,
                width: 28
            })
        );
        assert_eq!(
            train.class_counts(),
            vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
        );
        assert_eq!(
            test.class_counts(),
            vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
        );
        assert!(train.x.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(train.x.iter().any(|&v| v == 1.0));
    }
}
