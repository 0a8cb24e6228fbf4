//! Helpers shared by the readers, the generator and the partitioners: file reading with transparent gzip
//! decoding, seed derivation and error construction.

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::{Array2, s};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{DataError, Dataset};

/// The two magic bytes that start every gzip member.
pub(crate) const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Largest number of classes a reader accepts (guards against absurd label values allocating huge tables).
pub(crate) const MAX_CLASSES: usize = 1 << 20;

/// Builds a [`DataError::Format`] for `path`.
pub(crate) fn format_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Builds a [`DataError::Io`] for `path`.
pub(crate) fn io_err(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `bytes` start with the gzip magic number.
pub(crate) fn is_gzip(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[..2] == GZIP_MAGIC
}

/// Reads a whole file; when its content starts with the gzip magic bytes it is decompressed (all members).
///
/// A missing or unreadable file gives [`DataError::Io`]; corrupt or truncated gzip data gives
/// [`DataError::Format`].
pub(crate) fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| io_err(path, e))?;
    if !is_gzip(&raw) {
        return Ok(raw);
    }
    // The gzip trailer stores the uncompressed size modulo 2^32: use it as a capacity hint, bounded by the
    // maximal deflate ratio so that a forged trailer cannot trigger a huge allocation.
    let hint = if raw.len() >= 18 {
        let t = &raw[raw.len() - 4..];
        let isize = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize;
        isize.min(raw.len().saturating_mul(1032)).saturating_add(64)
    } else {
        0
    };
    let mut out = Vec::with_capacity(hint);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| format_err(path, format!("gzip data is corrupt or truncated: {e}")))?;
    Ok(out)
}

/// Tries `dir/name.gz`, then `dir/name`; returns the first that exists (as a path) or an I/O error naming both.
pub(crate) fn find_gz_or_raw(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    Err(DataError::Io {
        path: raw.clone(),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!(
                "file not found (tried {} and {})",
                gz.display(),
                raw.display()
            ),
        ),
    })
}

/// Converts UTF-8 bytes to text, reporting the line of the first invalid byte.
pub(crate) fn utf8_text<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, DataError> {
    std::str::from_utf8(bytes).map_err(|e| {
        let at = e.valid_up_to();
        let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
        format_err(
            path,
            format!("line {line}: invalid UTF-8 at byte offset {at}"),
        )
    })
}

/// SplitMix64 finaliser: a bijective mixing of 64 bits.
pub(crate) fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent seed for the purpose named `tag` from the user's `seed`.
pub(crate) fn derive_seed(seed: u64, tag: &str) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64; // FNV-1a of the tag
    for b in tag.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    splitmix64(seed ^ splitmix64(h))
}

/// A reproducible generator for purpose `tag`, stream `stream` (e.g. a client index).
pub(crate) fn rng_for(seed: u64, tag: &str, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, tag));
    rng.set_stream(stream);
    rng
}

/// A vector of `n` zeros, or a [`DataError::Spec`] naming `what` if the memory cannot be reserved.
pub(crate) fn zeroed<T: Clone + Default>(n: usize, what: &str) -> Result<Vec<T>, DataError> {
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| DataError::Spec(format!("{what} is too large for memory ({n} values)")))?;
    v.resize(n, T::default());
    Ok(v)
}

/// Checks that `n` samples can be addressed by the `u32` indices of a [`crate::Partition`].
pub(crate) fn check_u32_len(n: usize, what: &str) -> Result<(), DataError> {
    if n > u32::MAX as usize {
        return Err(DataError::Spec(format!(
            "{what} has {n} samples; at most {} are supported",
            u32::MAX
        )));
    }
    Ok(())
}

/// Splits off the last `test_fraction` of the rows of `data` as a test set.
///
/// The test set holds `round(len · test_fraction)` rows, the training set the rest, both in file order.
/// `test_fraction = 0` gives an empty test set (same features, classes and image shape). `test_fraction` must be
/// in `[0, 1)` and the training part must keep at least one row.
pub fn split_tail(data: Dataset, test_fraction: f64) -> Result<(Dataset, Dataset), DataError> {
    if !(test_fraction.is_finite() && (0.0..1.0).contains(&test_fraction)) {
        return Err(DataError::Spec(format!(
            "data.test_fraction must be in [0, 1), got {test_fraction}"
        )));
    }
    let n = data.len();
    let n_test = ((n as f64) * test_fraction).round() as usize;
    let n_test = n_test.min(n);
    let n_train = n - n_test;
    if n_train == 0 {
        return Err(DataError::Spec(format!(
            "data.test_fraction = {test_fraction} leaves no training samples out of {n}"
        )));
    }
    let test = Dataset {
        x: data.x.slice(s![n_train.., ..]).to_owned().into(),
        y: data.y[n_train..].to_vec(),
        num_classes: data.num_classes,
        image: data.image,
    };
    let mut train = data;
    if n_test > 0 {
        train.x = train.x.slice(s![..n_train, ..]).to_owned().into();
        train.y.truncate(n_train);
    }
    Ok((train, test))
}

/// An empty data set shaped like `like` (same features, classes and image shape).
pub fn empty_like(like: &Dataset) -> Dataset {
    Dataset {
        x: Array2::zeros((0, like.features())).into(),
        y: Vec::new(),
        num_classes: like.num_classes,
        image: like.image,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: usize) -> Dataset {
        Dataset {
            x: Array2::from_shape_fn((n, 2), |(i, j)| (i * 2 + j) as f32).into(),
            y: (0..n as u32).map(|i| i % 3).collect(),
            num_classes: 3,
            image: None,
        }
    }

    #[test]
    fn split_tail_takes_last_rows() {
        let (tr, te) = split_tail(toy(10), 0.3).unwrap();
        assert_eq!(tr.len(), 7);
        assert_eq!(te.len(), 3);
        assert_eq!(te.x[[0, 0]], 14.0);
        assert_eq!(te.y, vec![1, 2, 0]);
        assert_eq!(tr.x.nrows(), 7);
    }

    #[test]
    fn split_tail_zero_gives_empty_test() {
        let (tr, te) = split_tail(toy(5), 0.0).unwrap();
        assert_eq!(tr.len(), 5);
        assert!(te.is_empty());
        assert_eq!(te.features(), 2);
        assert_eq!(te.num_classes, 3);
    }

    #[test]
    fn split_tail_rejects_bad_fractions() {
        for f in [-0.1, 1.0, 1.5, f64::NAN] {
            let e = split_tail(toy(5), f).unwrap_err().to_string();
            assert!(e.contains("test_fraction"), "{e}");
        }
        let e = split_tail(toy(1), 0.9).unwrap_err().to_string();
        assert!(e.contains("no training samples"), "{e}");
    }

    #[test]
    fn derived_seeds_differ() {
        assert_ne!(derive_seed(1, "a"), derive_seed(1, "b"));
        assert_ne!(derive_seed(1, "a"), derive_seed(2, "a"));
        assert_eq!(derive_seed(7, "x"), derive_seed(7, "x"));
    }
}
