//! The decoded-data cache: an image data set decoded (and normalised) once is written as one binary
//! file that later runs, and every client process of a launch, memory-map instead of decoding again.
//!
//! Where: in a `.fedsim-cache` folder next to the source when that folder can be written, else under
//! the user's cache directory (`~/.cache/fedsim/decoded`; the development copy of the data is
//! read-only). What: a small JSON header (the cache key, shapes, labels' counts, the normalisation
//! statistics) then, 64-byte aligned, the training features (f32, little-endian), training labels (u32),
//! test features and test labels. The key names the data specification, the format version and the
//! size and modification time of every source file, so a changed source (or setting) never matches an
//! old file. Mapped features are shared between processes through the page cache and copied only if a
//! run writes to them. A missing, stale, truncated or unreadable cache is decoded again and rewritten
//! (atomically: a temporary file renamed into place); a cache that cannot be written only costs the
//! next run the decoding.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use ndarray::{ArrayView2, CowArray, Ix2};
use serde::{Deserialize, Serialize};

use crate::normalize::ChannelStats;
use crate::{DataSpec, Dataset};

/// Bumped whenever the file layout or the decoders' output changes.
const FORMAT: u32 = 1;
const MAGIC: &[u8; 8] = b"FSDCACHE";
const ALIGN: usize = 64;

/// One data set's description in the header.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Part {
    rows: usize,
    cols: usize,
    num_classes: usize,
    image: Option<fedsim_types::ImageShape>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    key: String,
    train: Part,
    test: Part,
    normalization: Option<ChannelStats>,
}

/// Where a data set's cache file may live, and its key.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    key: String,
    /// Candidate paths, preferred first: next to the source (unless its folder is read-only), then
    /// under the user's cache directory.
    places: Vec<PathBuf>,
}

/// The cache entry of a data specification (sources under their final paths); `None` for data sets
/// that are not cached (not an image data set, or a source that is a folder tree). Only reads
/// metadata: nothing is created until [`Entry::store`].
pub(crate) fn locate(spec: &DataSpec) -> Option<Entry> {
    let (kind, files) = match spec {
        DataSpec::Mnist { dir, .. } | DataSpec::FashionMnist { dir, .. } => ("idx", list(dir)?),
        DataSpec::Cifar10 { dir, .. } | DataSpec::Cifar100 { dir, .. } => ("cifar", list(dir)?),
        DataSpec::Svhn { dir, .. } => ("svhn", list(dir)?),
        // An archive is one file; a folder tree would need every image's time stamp.
        DataSpec::ImageFolder { path, .. } if path.is_file() => {
            ("image_folder", vec![path.clone()])
        }
        _ => return None,
    };
    let mut key = format!(
        "fedsim decoded v{FORMAT}\n{}\n",
        serde_json::to_string(spec).ok()?
    );
    for f in &files {
        let meta = std::fs::metadata(f).ok()?;
        let mtime = meta
            .modified()
            .ok()?
            .duration_since(UNIX_EPOCH)
            .ok()?
            .as_nanos();
        key.push_str(&format!("{} {} {mtime}\n", f.display(), meta.len()));
    }
    let name = format!("{kind}-{:016x}.bin", fnv1a(key.as_bytes()));
    let source_dir = files.first()?.parent()?;
    // Permission bits are honoured even for a user, such as root, whom the system would let write
    // anyway: a shared read-only copy of the data stays untouched.
    let read_only = std::fs::metadata(source_dir).map_or(true, |m| m.permissions().readonly());
    let places = (!read_only)
        .then(|| source_dir.join(".fedsim-cache").join(&name))
        .into_iter()
        .chain(crate::root::user_cache_dir().map(|d| d.join("fedsim").join("decoded").join(&name)))
        .collect();
    Some(Entry { key, places })
}

impl Entry {
    /// The cached data set, from the first place that holds a whole one with this key.
    pub(crate) fn load(&self) -> Option<(Dataset, Dataset, Option<ChannelStats>)> {
        self.places.iter().find_map(|p| load(p, &self.key))
    }

    /// Writes the data set to the first place that can be written.
    pub(crate) fn store(
        &self,
        train: &Dataset,
        test: &Dataset,
        normalization: Option<&ChannelStats>,
    ) -> std::io::Result<()> {
        let mut last = std::io::Error::other("no place for the decoded-data cache");
        for place in &self.places {
            match store(place, &self.key, train, test, normalization) {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

/// The regular files directly in `dir` (sorted), or `dir` itself when it is a file.
fn list(dir: &Path) -> Option<Vec<PathBuf>> {
    if dir.is_file() {
        return Some(vec![dir.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    (!files.is_empty()).then_some(files)
}

/// 64-bit FNV-1a: names the cache file (the full key is checked inside).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn padded(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// Writes the decoded data set to `path` (atomically).
fn store(
    path: &Path,
    key: &str,
    train: &Dataset,
    test: &Dataset,
    normalization: Option<&ChannelStats>,
) -> std::io::Result<()> {
    let part = |d: &Dataset| Part {
        rows: d.len(),
        cols: d.features(),
        num_classes: d.num_classes,
        image: d.image,
    };
    let header = serde_json::to_vec(&Header {
        key: key.to_string(),
        train: part(train),
        test: part(test),
        normalization: normalization.cloned(),
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Unique per process and per call: threads of one process (tests) may write the same cache at once.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    out.write_all(MAGIC)?;
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    let mut written = 16 + header.len();
    let pad_to = |out: &mut std::io::BufWriter<std::fs::File>, written: &mut usize| {
        let target = padded(*written);
        out.write_all(&vec![0u8; target - *written])?;
        *written = target;
        std::io::Result::Ok(())
    };
    for d in [train, test] {
        pad_to(&mut out, &mut written)?;
        for v in d.x.iter() {
            out.write_all(&v.to_le_bytes())?;
        }
        written += 4 * d.x.len();
        pad_to(&mut out, &mut written)?;
        for v in &d.y {
            out.write_all(&v.to_le_bytes())?;
        }
        written += 4 * d.y.len();
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Where one data set's arrays lie in a cache file.
struct Layout {
    x: std::ops::Range<usize>,
    y: Vec<u32>,
}

/// Checks a data set's arrays starting at `*at` (labels below `num_classes`) and moves past them.
fn layout(bytes: &[u8], at: &mut usize, part: &Part) -> Option<Layout> {
    let start = padded(*at);
    let x = start..start.checked_add(part.rows.checked_mul(part.cols)?.checked_mul(4)?)?;
    let y_start = padded(x.end);
    let yb = bytes.get(y_start..y_start.checked_add(part.rows.checked_mul(4)?)?)?;
    bytes.get(x.clone())?;
    let y: Vec<u32> = yb
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if y.iter().any(|&l| l as usize >= part.num_classes) {
        return None;
    }
    *at = y_start + yb.len();
    Some(Layout { x, y })
}

/// The cached data set at `path` when its key is `key` and it is whole: (train, test, normalisation).
/// The features are views of the mapped file, which stays mapped for the rest of the process (only a
/// file that passed every check is kept mapped).
fn load(path: &Path, key: &str) -> Option<(Dataset, Dataset, Option<ChannelStats>)> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: the file is only ever replaced by rename, never written in place, so the mapped pages
    // do not change under the views made from them.
    let map = unsafe { memmap2::Mmap::map(&file) }.ok()?;
    if map.len() < 16 || &map[..8] != MAGIC {
        return None;
    }
    let hlen = u64::from_le_bytes(map[8..16].try_into().ok()?) as usize;
    let header: Header = serde_json::from_slice(map.get(16..16usize.checked_add(hlen)?)?).ok()?;
    if header.key != key {
        return None;
    }
    let mut at = 16 + hlen;
    let train = layout(&map, &mut at, &header.train)?;
    let test = layout(&map, &mut at, &header.test)?;
    let bytes: &'static [u8] = Box::leak(Box::new(map));
    let view = |l: Layout, part: &Part| -> Option<Dataset> {
        // The map is page-aligned and every array starts at a multiple of 64 bytes.
        // SAFETY: every bit pattern is a valid f32, and `align_to` only reinterprets the aligned middle.
        let (pre, xs, _) = unsafe { bytes[l.x].align_to::<f32>() };
        if !pre.is_empty() {
            return None;
        }
        let x: ArrayView2<'static, f32> =
            ArrayView2::from_shape((part.rows, part.cols), xs).ok()?;
        Some(Dataset {
            x: CowArray::<f32, Ix2>::from(x),
            y: l.y,
            num_classes: part.num_classes,
            image: part.image,
        })
    };
    Some((
        view(train, &header.train)?,
        view(test, &header.test)?,
        header.normalization,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    fn data(rows: usize, seed: f32) -> Dataset {
        Dataset {
            x: Array2::from_shape_fn((rows, 12), |(i, j)| seed + i as f32 * 0.5 - j as f32).into(),
            y: (0..rows as u32).map(|i| i % 3).collect(),
            num_classes: 3,
            image: Some(fedsim_types::ImageShape {
                channels: 3,
                height: 2,
                width: 2,
            }),
        }
    }

    #[test]
    fn a_stored_data_set_maps_back_bit_for_bit_and_a_wrong_key_or_truncation_misses() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.bin");
        let (train, test) = (data(7, 0.25), data(3, -1.0));
        store(&path, "k1", &train, &test, None).unwrap();
        let (a, b, norm) = load(&path, "k1").expect("hit");
        assert!(
            a.x.is_view() && b.x.is_view(),
            "features are mapped, not copied"
        );
        assert_eq!(a.x, train.x);
        assert_eq!(
            (a.y.clone(), b.y.clone()),
            (train.y.clone(), test.y.clone())
        );
        assert_eq!((a.image, b.num_classes, norm), (train.image, 3, None));
        assert!(load(&path, "k2").is_none(), "another key");
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 8).unwrap();
        assert!(load(&path, "k1").is_none(), "truncated");
        std::fs::write(&path, b"not a cache").unwrap();
        assert!(load(&path, "k1").is_none(), "garbage");
    }
}
