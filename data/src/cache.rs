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

    /// The cached training set, to be read row by row, from the first place that holds a whole one
    /// with this key.
    pub(crate) fn train_rows(&self) -> Option<TrainRows> {
        self.places
            .iter()
            .find_map(|p| open(p, &self.key))
            .map(|opened| TrainRows { opened })
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

/// A folder of decoded-data cache files and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFolder {
    /// The folder.
    pub path: PathBuf,
    /// Number of cache files in it.
    pub files: usize,
    /// Their total size in bytes.
    pub bytes: u64,
}

/// The folders that hold decoded-data cache files for data under `root`: the `.fedsim-cache` folders
/// next to data sets (up to three levels below `root`) and the user cache folder
/// (`~/.cache/fedsim/decoded`), each with its file count and size; empty folders are left out.
/// Deleting any of them only costs the next run the decoding.
pub fn folders(root: &Path) -> Vec<CacheFolder> {
    let mut found = Vec::new();
    let mut frontier = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = frontier.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if e.file_name() == ".fedsim-cache" {
                found.push(path);
            } else if depth < 3 {
                frontier.push((path, depth + 1));
            }
        }
    }
    found.sort();
    found.extend(crate::root::user_cache_dir().map(|d| d.join("fedsim").join("decoded")));
    found
        .into_iter()
        .filter_map(|path| {
            let (mut files, mut bytes) = (0, 0);
            for e in std::fs::read_dir(&path).ok()?.filter_map(Result::ok) {
                let Ok(meta) = e.metadata() else { continue };
                if meta.is_file() && e.path().extension().is_some_and(|x| x == "bin") {
                    files += 1;
                    bytes += meta.len();
                }
            }
            (files > 0).then_some(CacheFolder { path, files, bytes })
        })
        .collect()
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

/// A cache file that passed every check: its header and where its arrays lie.
struct Opened {
    path: PathBuf,
    file: std::fs::File,
    header: Header,
    train: Layout,
    test: Layout,
}

/// Reads `len` bytes at `offset`.
fn read_at(file: &mut std::fs::File, offset: usize, len: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    file.seek(SeekFrom::Start(offset as u64))?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Checks a data set's arrays starting at `*at` against the file's length (labels read and checked
/// below `num_classes`) and moves past them.
fn layout(
    file: &mut std::fs::File,
    file_len: usize,
    at: &mut usize,
    part: &Part,
) -> Option<Layout> {
    let start = padded(*at);
    let x = start..start.checked_add(part.rows.checked_mul(part.cols)?.checked_mul(4)?)?;
    let y_start = padded(x.end);
    let y_end = y_start.checked_add(part.rows.checked_mul(4)?)?;
    if y_end > file_len {
        return None;
    }
    let y: Vec<u32> = read_at(file, y_start, y_end - y_start)
        .ok()?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if y.iter().any(|&l| l as usize >= part.num_classes) {
        return None;
    }
    *at = y_end;
    Some(Layout { x, y })
}

/// The cache file at `path` when its key is `key` and it is whole.
fn open(path: &Path, key: &str) -> Option<Opened> {
    if !cfg!(target_endian = "little") {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let file_len = usize::try_from(file.metadata().ok()?.len()).ok()?;
    if file_len < 16 {
        return None;
    }
    let start = read_at(&mut file, 0, 16).ok()?;
    if &start[..8] != MAGIC {
        return None;
    }
    let hlen = usize::try_from(u64::from_le_bytes(start[8..16].try_into().ok()?)).ok()?;
    if 16usize.checked_add(hlen)? > file_len {
        return None;
    }
    let header: Header = serde_json::from_slice(&read_at(&mut file, 16, hlen).ok()?).ok()?;
    if header.key != key {
        return None;
    }
    let mut at = 16 + hlen;
    let train = layout(&mut file, file_len, &mut at, &header.train)?;
    let test = layout(&mut file, file_len, &mut at, &header.test)?;
    Some(Opened {
        path: path.to_path_buf(),
        file,
        header,
        train,
        test,
    })
}

/// The mappings of cache files this process keeps (for the rest of the process), so that
/// [`advise`] can tell mapped features from owned ones.
static MAPS: std::sync::Mutex<Vec<&'static memmap2::Mmap>> = std::sync::Mutex::new(Vec::new());

/// What [`advise`] does with the pages of mapped features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Residency {
    /// Map every page the features touch now, in one call, instead of one page fault at a time.
    Load,
    /// Drop the pages that lie wholly inside the features from this process's resident set: they
    /// stay in the system's page cache and are mapped again, without reading the disk, on the next
    /// access.
    Release,
}

/// Applies `what` to the pages under `features` when they lie in a mapped cache file; does nothing
/// for features held in the process's own memory (or on systems without these hints).
pub(crate) fn advise(features: &[f32], what: Residency) {
    let (start, len) = (features.as_ptr() as usize, std::mem::size_of_val(features));
    let Ok(maps) = MAPS.lock() else { return };
    let Some(map) = maps.iter().find(|m| {
        let base = m.as_ptr() as usize;
        start >= base && start + len <= base + m.len()
    }) else {
        return;
    };
    let page = 4096;
    let offset = start - map.as_ptr() as usize;
    match what {
        Residency::Load => {
            #[cfg(target_os = "linux")]
            {
                let first = offset / page * page;
                let _ =
                    map.advise_range(memmap2::Advice::PopulateRead, first, offset + len - first);
            }
        }
        Residency::Release => {
            // Whole pages only: a partly covered page may hold rows still in use.
            let first = offset.div_ceil(page) * page;
            let end = (offset + len) / page * page;
            if end > first {
                // SAFETY: the map is a read-only shared file mapping that lives for the rest of the
                // process; dropping its pages only makes the next access read them again from the page
                // cache, so every view of it keeps seeing the same bytes.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        first,
                        end - first,
                    )
                };
            }
        }
    }
}

/// The cached data set at `path` when its key is `key` and it is whole: (train, test, normalisation).
/// The features are views of the mapped file, which stays mapped for the rest of the process (only a
/// file that passed every check is kept mapped).
fn load(path: &Path, key: &str) -> Option<(Dataset, Dataset, Option<ChannelStats>)> {
    let opened = open(path, key)?;
    // SAFETY: the file is only ever replaced by rename, never written in place, so the mapped pages
    // do not change under the views made from them.
    let map = unsafe { memmap2::Mmap::map(&opened.file) }.ok()?;
    // The test features come last of the two arrays the views are made from.
    if map.len() < opened.test.x.end {
        return None;
    }
    let map: &'static memmap2::Mmap = Box::leak(Box::new(map));
    if let Ok(mut maps) = MAPS.lock() {
        maps.push(map);
    }
    let bytes: &'static [u8] = map;
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
    let Opened {
        header,
        train,
        test,
        ..
    } = opened;
    Some((
        view(train, &header.train)?,
        view(test, &header.test)?,
        header.normalization,
    ))
}

/// The training set of a cache file, read row by row: what a client process that hosts a few clients
/// needs, without mapping (and so without counting in its resident memory) the whole file.
pub(crate) struct TrainRows {
    opened: Opened,
}

impl TrainRows {
    /// Every training sample's label.
    pub(crate) fn labels(&self) -> &[u32] {
        &self.opened.train.y
    }

    /// The cache file.
    pub(crate) fn path(&self) -> &Path {
        &self.opened.path
    }

    /// Number of classes.
    pub(crate) fn num_classes(&self) -> usize {
        self.opened.header.train.num_classes
    }

    /// The training samples `rows` (in the given order; indices below the training set's length).
    pub(crate) fn read(&mut self, rows: &[u32]) -> std::io::Result<Dataset> {
        let part = &self.opened.header.train;
        let (cols, stride) = (part.cols, part.cols * 4);
        let mut x = Vec::with_capacity(rows.len() * cols);
        let mut y = Vec::with_capacity(rows.len());
        // Runs of consecutive rows are read in one call.
        let mut i = 0;
        while i < rows.len() {
            let first = rows[i] as usize;
            let mut n = 1;
            while i + n < rows.len() && rows[i + n] as usize == first + n {
                n += 1;
            }
            if first + n > part.rows {
                return Err(std::io::Error::other(format!(
                    "row {} is past the cached training set's {} rows",
                    first + n - 1,
                    part.rows
                )));
            }
            let offset = self.opened.train.x.start + first * stride;
            let bytes = read_at(&mut self.opened.file, offset, n * stride)?;
            x.extend(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            );
            y.extend_from_slice(&self.opened.train.y[first..first + n]);
            i += n;
        }
        let x = ndarray::Array2::from_shape_vec((rows.len(), cols), x)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Dataset {
            x: x.into(),
            y,
            num_classes: part.num_classes,
            image: part.image,
        })
    }
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

    #[test]
    fn rows_read_from_the_file_equal_the_mapped_rows_and_rows_past_the_end_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.bin");
        let (train, test) = (data(9, 0.5), data(2, 1.0));
        store(&path, "k", &train, &test, None).unwrap();
        let entry = Entry {
            key: "k".into(),
            places: vec![tmp.path().join("missing.bin"), path.clone()],
        };
        let mut rows = entry.train_rows().expect("hit");
        assert_eq!(rows.labels(), &train.y[..]);
        assert_eq!((rows.num_classes(), rows.path()), (3, path.as_path()));
        let pick = [0u32, 1, 2, 5, 7, 8];
        let got = rows.read(&pick).unwrap();
        assert!(!got.x.is_view(), "rows are copied, not mapped");
        assert_eq!(got.x, train.select(&pick).x);
        assert_eq!(got.y, train.select(&pick).y);
        assert_eq!(got.image, train.image);
        let err = rows.read(&[3, 9]).unwrap_err().to_string();
        assert!(err.contains("row 9") && err.contains("9 rows"), "{err}");
        let wrong = Entry {
            key: "other".into(),
            places: vec![path],
        };
        assert!(wrong.train_rows().is_none());
    }

    /// This process's resident KiB of the mapping that holds `addr` (from /proc/self/smaps).
    fn resident_kib(addr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = a <= addr && addr < b;
                continue;
            }
            if inside && let Some(v) = line.strip_prefix("Rss:") {
                return v.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn released_pages_of_mapped_features_leave_the_resident_set_and_read_back_the_same() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.bin");
        // 2,048 rows of 1,024 features: 8 MiB of features.
        let train = Dataset {
            x: ndarray::Array2::from_shape_fn((2048, 1024), |(i, j)| (i * 7 + j) as f32).into(),
            y: vec![0; 2048],
            num_classes: 1,
            image: None,
        };
        store(&path, "k", &train, &data(1, 0.0), None).unwrap();
        let (mapped, _, _) = load(&path, "k").unwrap();
        let sum = |d: &Dataset| d.x.iter().map(|&v| f64::from(v)).sum::<f64>();
        let expected = sum(&train);
        assert_eq!(sum(&mapped), expected, "every page touched");
        let addr = mapped.x.as_ptr() as usize;
        let before = resident_kib(addr);
        assert!(
            before >= 7 * 1024,
            "{before} KiB resident after touching 8 MiB"
        );
        mapped.release_pages(0..mapped.len());
        let after = resident_kib(addr);
        assert!(
            after <= 1024,
            "{after} KiB still resident after the release"
        );
        assert_eq!(sum(&mapped), expected, "the same values after the release");
        // Owned features are left alone.
        train.release_pages(0..train.len());
        assert_eq!(sum(&train), expected);
    }
}
