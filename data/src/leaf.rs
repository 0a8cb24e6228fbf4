//! LEAF's JSON format (Caldas et al. 2018), as its preprocessing writes FEMNIST and the other image
//! sets: `DIR/train/*.json` and `DIR/test/*.json`, each file an object
//!
//! ```json
//! {"users": ["f0000_14", ...], "num_samples": [143, ...],
//!  "user_data": {"f0000_14": {"x": [[0.0, 1.0, ...], ...], "y": [7, ...]}, ...}}
//! ```
//!
//! (other keys, such as `hierarchies`, are ignored). `x` holds one row of numbers per sample, `y` one
//! integer class per sample. Files are read in sorted name order (in parallel) and writers in the order
//! of each file's `users`; a writer's samples are consecutive rows, so the natural partition gives each
//! kept writer its block of rows, one client per writer.
//!
//! Writers with fewer than `min_samples` training samples are dropped, then `writer_fraction` of the rest
//! are kept, drawn from the seed (LEAF's `--sf` and `-k`). A dropped writer's test samples are dropped too;
//! test-only writers (LEAF's split by user) are kept. Errors name the file and the key (`user_data.f0001.y`)
//! or the line and column of a JSON syntax error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ndarray::Array2;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::de::{DeserializeSeed, Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::util::{MAX_CLASSES, check_u32_len, format_err, io_err, rng_for, zeroed};
use crate::{DataError, Dataset, Partition};

/// The settings of `[data] kind = "leaf"`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeafOptions {
    /// Writers with fewer training samples are dropped.
    pub min_samples: usize,
    /// Fraction of the remaining writers kept, in (0, 1].
    pub writer_fraction: f64,
    /// Image shape of the rows, if they are images.
    pub shape: Option<fedsim_types::ImageShape>,
    /// Number of classes; by default the largest label in the files plus one.
    pub classes: Option<usize>,
}

/// A LEAF data set: training rows grouped by writer, the test rows, and the writers kept.
#[derive(Debug, Clone)]
pub struct LeafData {
    /// Training samples, writer after writer.
    pub train: Dataset,
    /// Test samples of the kept writers and of test-only writers.
    pub test: Dataset,
    /// Kept writer `k` owns its block of training rows.
    pub natural: Partition,
    /// Names of the kept writers, in client order.
    pub writers: Vec<String>,
}

/// `x`: rows of numbers, stored flat.
#[derive(Debug, Default)]
struct Rows {
    values: Vec<f32>,
    rows: usize,
    width: Option<usize>,
}

impl<'de> Deserialize<'de> for Rows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowsVisitor;
        impl<'de> Visitor<'de> for RowsVisitor {
            type Value = Rows;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of rows of numbers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Rows, A::Error> {
                let mut rows = Rows::default();
                while seq
                    .next_element_seed(Row {
                        out: &mut rows.values,
                        width: &mut rows.width,
                        index: rows.rows,
                    })?
                    .is_some()
                {
                    rows.rows += 1;
                }
                Ok(rows)
            }
        }
        d.deserialize_seq(RowsVisitor)
    }
}

/// One row of `x`, appended to `out`; all rows must have the first row's length.
struct Row<'a> {
    out: &'a mut Vec<f32>,
    width: &'a mut Option<usize>,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a row of numbers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let start = self.out.len();
        while let Some(v) = seq.next_element::<f32>()? {
            self.out.push(v);
        }
        let n = self.out.len() - start;
        match *self.width {
            None => *self.width = Some(n),
            Some(w) if w != n => {
                return Err(A::Error::custom(format!(
                    "row {} of `x` has {n} values, the rows before it {w}",
                    self.index
                )));
            }
            Some(_) => {}
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
struct UserData {
    x: Rows,
    y: Vec<f64>,
}

#[derive(Debug, Deserialize)]
struct LeafFile {
    users: Vec<String>,
    num_samples: Vec<u64>,
    user_data: HashMap<String, UserData>,
}

/// One writer's samples, checked.
#[derive(Debug)]
struct Writer {
    name: String,
    file: usize,
    x: Vec<f32>,
    y: Vec<u32>,
}

/// The `.json` files of `dir`, sorted by name.
fn json_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let p = e.map_err(|e| io_err(dir, e))?.path();
        if p.is_file()
            && p.extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("json"))
        {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(format_err(
            dir,
            "no .json file (LEAF's train/ and test/ folders hold them)",
        ));
    }
    Ok(files)
}

/// Reads and checks one LEAF file: its writers in `users` order, and the row width.
fn read_file(path: &Path, index: usize) -> Result<FileWriters, DataError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let mut f: LeafFile =
        serde_json::from_slice(&bytes).map_err(|e| format_err(path, format!("LEAF JSON: {e}")))?;
    drop(bytes);
    if f.num_samples.len() != f.users.len() {
        return Err(format_err(
            path,
            format!(
                "`num_samples` has {} entries but `users` has {}",
                f.num_samples.len(),
                f.users.len()
            ),
        ));
    }
    let mut width: Option<usize> = None;
    let mut writers = Vec::with_capacity(f.users.len());
    for (k, user) in f.users.iter().enumerate() {
        let Some(d) = f.user_data.remove(user) else {
            return Err(format_err(
                path,
                format!("`user_data.{user}` is missing (the writer is listed in `users[{k}]`)"),
            ));
        };
        if d.y.len() != d.x.rows {
            return Err(format_err(
                path,
                format!(
                    "`user_data.{user}.y` has {} labels but `user_data.{user}.x` has {} rows",
                    d.y.len(),
                    d.x.rows
                ),
            ));
        }
        if f.num_samples[k] != d.y.len() as u64 {
            return Err(format_err(
                path,
                format!(
                    "`num_samples[{k}]` is {} but `user_data.{user}` holds {} samples",
                    f.num_samples[k],
                    d.y.len()
                ),
            ));
        }
        if let Some(w) = d.x.width {
            match width {
                Some(v) if v != w => {
                    return Err(format_err(
                        path,
                        format!(
                            "`user_data.{user}.x` rows have {w} values, earlier writers' rows {v}"
                        ),
                    ));
                }
                _ => width = Some(w),
            }
        }
        let y =
            d.y.iter()
                .enumerate()
                .map(|(i, &v)| {
                    if v.fract() == 0.0 && v >= 0.0 && v < MAX_CLASSES as f64 {
                        Ok(v as u32)
                    } else {
                        Err(format_err(
                            path,
                            format!("`user_data.{user}.y[{i}]` is {v}, not a class index"),
                        ))
                    }
                })
                .collect::<Result<Vec<u32>, DataError>>()?;
        writers.push(Writer {
            name: user.clone(),
            file: index,
            x: d.x.values,
            y,
        });
    }
    if let Some(extra) = f.user_data.keys().next() {
        return Err(format_err(
            path,
            format!("`user_data.{extra}` belongs to no writer of `users`"),
        ));
    }
    Ok((writers, width))
}

/// The writers of one file and the length of its rows (`None` without rows).
type FileWriters = (Vec<Writer>, Option<usize>);

/// The files of a split, their writers in order, and the length of their rows.
struct Split {
    files: Vec<PathBuf>,
    writers: Vec<Writer>,
    width: Option<usize>,
}

/// Reads the `.json` files of `dir` in parallel; writers in file order, then `users` order.
fn read_split(dir: &Path) -> Result<Split, DataError> {
    let files = json_files(dir)?;
    let parsed: Vec<Result<FileWriters, DataError>> = files
        .par_iter()
        .enumerate()
        .map(|(i, p)| read_file(p, i))
        .collect();
    let mut writers = Vec::new();
    let mut width: Option<(usize, usize)> = None;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, r) in parsed.into_iter().enumerate() {
        let (ws, w) = r?;
        if let Some(w) = w {
            match width {
                Some((v, j)) if v != w => {
                    return Err(format_err(
                        &files[i],
                        format!(
                            "rows have {w} values but those of {} have {v}",
                            files[j].display()
                        ),
                    ));
                }
                _ => width = Some((w, i)),
            }
        }
        for wr in ws {
            if let Some(&j) = seen.get(&wr.name) {
                return Err(format_err(
                    &files[i],
                    format!(
                        "writer `{}` also appears in {}",
                        wr.name,
                        files[j].display()
                    ),
                ));
            }
            seen.insert(wr.name.clone(), i);
            writers.push(wr);
        }
    }
    Ok(Split {
        files,
        writers,
        width: width.map(|w| w.0),
    })
}

/// Stacks the samples of `writers` into a data set (consuming their buffers one by one).
fn stack(
    writers: Vec<Writer>,
    width: usize,
    num_classes: usize,
    shape: Option<fedsim_types::ImageShape>,
) -> Result<Dataset, DataError> {
    let n: usize = writers.iter().map(|w| w.y.len()).sum();
    check_u32_len(n, "the LEAF data set")?;
    let mut x: Vec<f32> = zeroed(n.saturating_mul(width), "the LEAF data set")?;
    x.clear();
    let mut y = Vec::with_capacity(n);
    for w in writers {
        x.extend_from_slice(&w.x);
        y.extend_from_slice(&w.y);
    }
    let x = Array2::from_shape_vec((n, width), x)
        .map_err(|e| DataError::Spec(format!("internal error: LEAF matrix shape: {e}")))?;
    Ok(Dataset {
        x: x.into(),
        y,
        num_classes,
        image: shape,
    })
}

/// Reads LEAF data from `dir/train` and `dir/test` and keeps the writers the options select
/// (the fraction drawn from `seed`).
///
/// Errors: [`DataError::Io`] for a missing folder or file; [`DataError::Format`] naming the file and the
/// key or JSON position; [`DataError::Spec`] for bad options (naming `data.writer_fraction`,
/// `data.shape`, `data.classes`) or when no writer is left.
pub fn read_leaf(dir: &Path, opts: &LeafOptions, seed: u64) -> Result<LeafData, DataError> {
    let f = opts.writer_fraction;
    if !(f.is_finite() && f > 0.0 && f <= 1.0) {
        return Err(DataError::Spec(format!(
            "data.writer_fraction must be in (0, 1], got {f}"
        )));
    }
    let Split {
        files: train_files,
        writers: train,
        width: train_w,
    } = read_split(&dir.join("train"))?;
    let Split {
        files: test_files,
        writers: test,
        width: test_w,
    } = read_split(&dir.join("test"))?;
    let width = match (train_w, test_w) {
        (Some(a), Some(b)) if a != b => {
            return Err(format_err(
                &test_files[0],
                format!(
                    "rows have {b} values but the training rows ({}) have {a}",
                    train_files[0].display()
                ),
            ));
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => 0,
    };
    if let Some(s) = opts.shape
        && s.channels * s.height * s.width != width
    {
        return Err(DataError::Spec(format!(
            "data.shape = [{}, {}, {}] has {} values but the LEAF rows have {width}",
            s.channels,
            s.height,
            s.width,
            s.channels * s.height * s.width
        )));
    }
    let largest = train
        .iter()
        .chain(&test)
        .flat_map(|w| w.y.iter())
        .max()
        .copied();
    let num_classes = match (opts.classes, largest) {
        (Some(c), Some(l)) if l as usize >= c => {
            let (w, files) = train
                .iter()
                .map(|w| (w, &train_files))
                .chain(test.iter().map(|w| (w, &test_files)))
                .find(|(w, _)| w.y.iter().any(|&v| v as usize >= c))
                .ok_or_else(|| DataError::Spec("internal error: label not found".into()))?;
            let i =
                w.y.iter()
                    .position(|&v| v as usize >= c)
                    .unwrap_or_default();
            return Err(format_err(
                &files[w.file],
                format!(
                    "`user_data.{}.y[{i}]` is {}, not below data.classes = {c}",
                    w.name, w.y[i]
                ),
            ));
        }
        (Some(c), _) => c,
        (None, l) => l.map_or(0, |l| l as usize + 1),
    };
    // Writers with enough samples, then the drawn fraction, in file order.
    let eligible: Vec<usize> = (0..train.len())
        .filter(|&k| train[k].y.len() >= opts.min_samples)
        .collect();
    let keep_n = ((eligible.len() as f64) * f).round() as usize;
    let mut chosen = eligible.clone();
    if keep_n < eligible.len() {
        chosen.shuffle(&mut rng_for(seed, "data.leaf.writers", 0));
        chosen.truncate(keep_n);
        chosen.sort_unstable();
    }
    if chosen.is_empty() {
        return Err(DataError::Spec(format!(
            "no LEAF writer left: {} writers, {} with at least data.min_samples = {} training samples, \
             data.writer_fraction = {f} of them keeps none",
            train.len(),
            eligible.len(),
            opts.min_samples
        )));
    }
    let mut keep = vec![false; train.len()];
    for &k in &chosen {
        keep[k] = true;
    }
    let dropped: std::collections::HashSet<&str> = train
        .iter()
        .zip(&keep)
        .filter(|(_, k)| !**k)
        .map(|(w, _)| w.name.as_str())
        .collect();
    let test: Vec<Writer> = test
        .into_iter()
        .filter(|w| !dropped.contains(w.name.as_str()))
        .collect();
    let kept: Vec<Writer> = train
        .into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(w, _)| w)
        .collect();
    let mut offsets = Vec::with_capacity(kept.len() + 1);
    offsets.push(0usize);
    for w in &kept {
        offsets.push(offsets.last().copied().unwrap_or(0) + w.y.len());
    }
    let writers = kept.iter().map(|w| w.name.clone()).collect();
    let total = offsets.last().copied().unwrap_or(0);
    check_u32_len(total, "the LEAF training set")?;
    let natural = Partition::from_csr(offsets, (0..total as u32).collect());
    Ok(LeafData {
        train: stack(kept, width, num_classes, opts.shape)?,
        test: stack(test, width, num_classes, opts.shape)?,
        natural,
        writers,
    })
}

#[cfg(test)]
mod tests;
