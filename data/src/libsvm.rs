//! LIBSVM text reader: one sample per line, `label idx:value idx:value ...` with 1-based feature indices.
//!
//! Files may be gzip-compressed (detected from the magic bytes) or plain text. Blank lines are skipped and
//! anything after `#` on a line is a comment. The output is a dense matrix; absent features are 0.
//!
//! Labels are mapped to classes `0..C-1` by sorting the distinct raw labels: for binary sets the smaller raw
//! label becomes class 0 (`{-1,+1} → {0,1}`, `{1,2} → {0,1}`, `{0,1} → {0,1}`).

use std::path::Path;

use ndarray::Array2;

use crate::util::{MAX_CLASSES, check_u32_len, format_err, read_maybe_gz, utf8_text, zeroed};
use crate::{DataError, Dataset};

/// A parsed LIBSVM file before the label mapping and densification.
#[derive(Debug, Clone, Default)]
struct Sparse {
    labels: Vec<f64>,
    row_ptr: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f32>,
    max_index: usize,
}

fn parse(path: &Path, features: Option<usize>) -> Result<Sparse, DataError> {
    let bytes = read_maybe_gz(path)?;
    let text = utf8_text(path, &bytes)?;
    let mut sp = Sparse {
        row_ptr: vec![0],
        ..Sparse::default()
    };
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let line = line.split('#').next().unwrap_or("");
        let mut toks = line.split_ascii_whitespace();
        let Some(label_tok) = toks.next() else {
            continue;
        };
        let label: f64 = label_tok.parse().map_err(|_| {
            format_err(
                path,
                format!("line {lineno}: label '{label_tok}' is not a number"),
            )
        })?;
        if !label.is_finite() {
            return Err(format_err(
                path,
                format!("line {lineno}: label '{label_tok}' is not finite"),
            ));
        }
        let start = sp.cols.len();
        let mut sorted = true;
        let mut prev = 0usize;
        for tok in toks {
            let Some((idx_s, val_s)) = tok.split_once(':') else {
                return Err(format_err(
                    path,
                    format!("line {lineno}: token '{tok}' is not of the form index:value"),
                ));
            };
            let idx: usize = idx_s.parse().map_err(|_| {
                format_err(
                    path,
                    format!("line {lineno}: feature index '{idx_s}' is not a positive integer"),
                )
            })?;
            if idx == 0 {
                return Err(format_err(
                    path,
                    format!("line {lineno}: feature index 0 is not 1-based"),
                ));
            }
            if let Some(f) = features
                && idx > f
            {
                return Err(format_err(
                    path,
                    format!(
                        "line {lineno}: feature index {idx} exceeds the number of features {f}"
                    ),
                ));
            }
            if idx > u32::MAX as usize {
                return Err(format_err(
                    path,
                    format!("line {lineno}: feature index {idx} is too large"),
                ));
            }
            let val: f32 = val_s.parse().map_err(|_| {
                format_err(
                    path,
                    format!("line {lineno}: value '{val_s}' of feature {idx} is not a number"),
                )
            })?;
            if !val.is_finite() {
                return Err(format_err(
                    path,
                    format!(
                        "line {lineno}: value '{val_s}' of feature {idx} is not finite (NaN or infinite)"
                    ),
                ));
            }
            if idx <= prev {
                sorted = false;
            }
            prev = idx;
            sp.max_index = sp.max_index.max(idx);
            sp.cols.push((idx - 1) as u32);
            sp.vals.push(val);
        }
        if !sorted {
            let mut seen: Vec<u32> = sp.cols[start..].to_vec();
            seen.sort_unstable();
            if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
                return Err(format_err(
                    path,
                    format!("line {lineno}: feature index {} appears twice", w[0] + 1),
                ));
            }
        }
        // `-0` and `0` are the same label (the label map compares with `total_cmp`).
        sp.labels.push(if label == 0.0 { 0.0 } else { label });
        sp.row_ptr.push(sp.cols.len());
    }
    if sp.labels.is_empty() {
        return Err(format_err(path, "the file holds no samples"));
    }
    check_u32_len(sp.labels.len(), &path.display().to_string())?;
    Ok(sp)
}

fn densify(
    path: &Path,
    sp: &Sparse,
    features: usize,
    classes: &[f64],
) -> Result<Dataset, DataError> {
    let n = sp.labels.len();
    let cells = n.checked_mul(features).ok_or_else(|| {
        format_err(
            path,
            format!("{n} samples x {features} features is too large for a dense matrix"),
        )
    })?;
    if features == 0 {
        return Err(format_err(
            path,
            "no feature index appears in the file; set data.features",
        ));
    }
    let mut data: Vec<f32> = zeroed(cells, &format!("the dense matrix of {}", path.display()))?;
    for r in 0..n {
        let row = &mut data[r * features..(r + 1) * features];
        for k in sp.row_ptr[r]..sp.row_ptr[r + 1] {
            row[sp.cols[k] as usize] = sp.vals[k];
        }
    }
    let y = sp
        .labels
        .iter()
        .map(|l| {
            classes
                .binary_search_by(|c| c.total_cmp(l))
                .map(|c| c as u32)
        })
        .collect::<Result<Vec<u32>, usize>>()
        .map_err(|_| format_err(path, "internal error: label missing from the label map"))?;
    let x = Array2::from_shape_vec((n, features), data)
        .map_err(|e| format_err(path, format!("cannot shape feature matrix: {e}")))?;
    Ok(Dataset {
        x: x.into(),
        y,
        num_classes: classes.len(),
        image: None,
    })
}

fn label_map(path: &Path, sets: &[&Sparse]) -> Result<Vec<f64>, DataError> {
    let mut classes: Vec<f64> = sets.iter().flat_map(|s| s.labels.iter().copied()).collect();
    classes.sort_unstable_by(f64::total_cmp);
    classes.dedup();
    if classes.len() > MAX_CLASSES {
        return Err(format_err(
            path,
            format!(
                "{} distinct labels; at most {MAX_CLASSES} are supported",
                classes.len()
            ),
        ));
    }
    Ok(classes)
}

fn check_features(features: Option<usize>) -> Result<(), DataError> {
    if features == Some(0) {
        return Err(DataError::Spec(
            "data.features must be at least 1, got 0".into(),
        ));
    }
    Ok(())
}

/// Reads a LIBSVM file (gzip or plain) into a dense [`Dataset`].
///
/// `features` fixes the number of columns; indices beyond it are an error. Without it, the number of features
/// is the largest index seen. Labels are mapped to `0..C-1` in sorted order of the distinct raw labels.
///
/// Errors: [`DataError::Io`] if the file cannot be read; [`DataError::Format`] (with the line number) for a
/// non-numeric or non-finite label or value, a token that is not `index:value`, a zero or non-integer index,
/// an index beyond `features`, a repeated index, or an empty file.
pub fn read_libsvm(path: &Path, features: Option<usize>) -> Result<Dataset, DataError> {
    check_features(features)?;
    let sp = parse(path, features)?;
    let classes = label_map(path, &[&sp])?;
    densify(path, &sp, features.unwrap_or(sp.max_index), &classes)
}

/// Reads a LIBSVM training file and its test file consistently: `(train, test)`.
///
/// Both use the same number of features (`features`, or the largest index seen in either file) and the same
/// label map (sorted distinct raw labels of both files), so a class absent from one file keeps its number.
pub fn read_libsvm_pair(
    train: &Path,
    test: &Path,
    features: Option<usize>,
) -> Result<(Dataset, Dataset), DataError> {
    check_features(features)?;
    let sp_train = parse(train, features)?;
    let sp_test = parse(test, features)?;
    let classes = label_map(train, &[&sp_train, &sp_test])?;
    let f = features.unwrap_or(sp_train.max_index.max(sp_test.max_index));
    Ok((
        densify(train, &sp_train, f, &classes)?,
        densify(test, &sp_test, f, &classes)?,
    ))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &Path, name: &str, text: &str, gzip: bool) -> PathBuf {
        let p = dir.join(name);
        let bytes = if gzip {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text.as_bytes()).unwrap();
            e.finish().unwrap()
        } else {
            text.as_bytes().to_vec()
        };
        std::fs::write(&p, bytes).unwrap();
        p
    }

    const TINY: &str =
        "+1 1:0.5 3:2\n-1 2:1e-1\n\n# comment line\n+1 3:-4 # trailing comment\n-1\n";

    #[test]
    fn round_trip_raw_and_gz() {
        let dir = tempfile::tempdir().unwrap();
        for gzip in [false, true] {
            let p = write(
                dir.path(),
                if gzip { "tiny.txt.gz" } else { "tiny.txt" },
                TINY,
                gzip,
            );
            let d = read_libsvm(&p, None).unwrap();
            assert_eq!(d.len(), 4);
            assert_eq!(d.features(), 3);
            assert_eq!(d.num_classes, 2);
            assert_eq!(d.y, vec![1, 0, 1, 0]);
            assert_eq!(d.x.row(0).to_vec(), vec![0.5, 0.0, 2.0]);
            assert_eq!(d.x.row(1).to_vec(), vec![0.0, 0.1, 0.0]);
            assert_eq!(d.x.row(2).to_vec(), vec![0.0, 0.0, -4.0]);
            assert_eq!(d.x.row(3).to_vec(), vec![0.0, 0.0, 0.0]);
            assert!(d.image.is_none());
            let d = read_libsvm(&p, Some(5)).unwrap();
            assert_eq!(d.features(), 5);
        }
    }

    #[test]
    fn label_mapping_is_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.txt", "2 1:1\n1 1:1\n2 1:1\n", false);
        assert_eq!(read_libsvm(&p, None).unwrap().y, vec![1, 0, 1]);
        let p = write(
            dir.path(),
            "multi.txt",
            "3 1:1\n-2 1:1\n0.5 1:1\n3.0 1:1\n",
            false,
        );
        let d = read_libsvm(&p, None).unwrap();
        assert_eq!(d.y, vec![2, 0, 1, 2]);
        assert_eq!(d.num_classes, 3);
    }

    #[test]
    fn unsorted_indices_accepted_duplicates_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "u.txt", "1 3:3 1:1\n", false);
        assert_eq!(
            read_libsvm(&p, None).unwrap().x.row(0).to_vec(),
            vec![1.0, 0.0, 3.0]
        );
        let p = write(dir.path(), "dup.txt", "1 1:1\n1 3:3 2:1 3:4\n", false);
        let msg = read_libsvm(&p, None).unwrap_err().to_string();
        assert!(
            msg.contains("dup.txt") && msg.contains("line 2: feature index 3 appears twice"),
            "{msg}"
        );
    }

    #[test]
    fn pair_shares_features_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let tr = write(dir.path(), "tr", "1 1:1\n2 2:1\n", false);
        let te = write(dir.path(), "te", "3 4:1\n1 1:2\n", false);
        let (a, b) = read_libsvm_pair(&tr, &te, None).unwrap();
        assert_eq!(a.features(), 4);
        assert_eq!(b.features(), 4);
        assert_eq!(a.num_classes, 3);
        assert_eq!(a.y, vec![0, 1]);
        assert_eq!(b.y, vec![2, 0]);
    }

    fn err_of(text: &str, features: Option<usize>) -> (DataError, String) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "broken.svm", text, false);
        let e = read_libsvm(&p, features).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("broken.svm"), "{msg}");
        (e, msg)
    }

    #[test]
    fn malformed_files() {
        let cases: &[(&str, Option<usize>, &str)] = &[
            (
                "1 1:1\n1 0:2\n",
                None,
                "line 2: feature index 0 is not 1-based",
            ),
            (
                "1 1:1\nabc 1:2\n",
                None,
                "line 2: label 'abc' is not a number",
            ),
            (
                "1 1:1\n1 foo\n",
                None,
                "line 2: token 'foo' is not of the form index:value",
            ),
            (
                "1 x:1\n",
                None,
                "line 1: feature index 'x' is not a positive integer",
            ),
            (
                "1 -3:1\n",
                None,
                "line 1: feature index '-3' is not a positive integer",
            ),
            (
                "1 1:abc\n",
                None,
                "line 1: value 'abc' of feature 1 is not a number",
            ),
            (
                "1 1:1\n\n1 2:NaN\n",
                None,
                "line 3: value 'NaN' of feature 2 is not finite",
            ),
            (
                "1 1:inf\n",
                None,
                "line 1: value 'inf' of feature 1 is not finite",
            ),
            ("nan 1:1\n", None, "line 1: label 'nan' is not finite"),
            (
                "1 1:1\n1 7:1\n",
                Some(5),
                "line 2: feature index 7 exceeds the number of features 5",
            ),
            ("\n# nothing\n", None, "no samples"),
            ("1\n-1\n", None, "no feature index appears in the file"),
        ];
        for (text, f, want) in cases {
            let (e, msg) = err_of(text, *f);
            assert!(matches!(e, DataError::Format { .. }), "{msg}");
            assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        }
        let bytes = [b'1', b' ', 0xff, b'\n'];
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bin.svm");
        std::fs::write(&p, bytes).unwrap();
        let msg = read_libsvm(&p, None).unwrap_err().to_string();
        assert!(
            msg.contains("bin.svm") && msg.contains("line 1: invalid UTF-8"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_is_io_error() {
        let e = read_libsvm(Path::new("/nonexistent/dir/x.svm"), None).unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().contains("x.svm"));
    }

    #[test]
    fn real_libsvm_files() {
        let dir = crate::root::dev_data("libsvm");
        let expected = [
            ("a9a.txt.gz", 32561, 123),
            ("mushrooms.txt.gz", 8124, 112),
            ("phishing.txt.gz", 11055, 68),
            ("w8a.txt.gz", 49749, 300),
        ];
        for (name, n, f) in expected {
            let p = dir.join(name);
            if !p.is_file() {
                println!("skipping {name}: {} not found", p.display());
                continue;
            }
            let d = read_libsvm(&p, None).unwrap();
            assert_eq!((d.len(), d.features(), d.num_classes), (n, f, 2), "{name}");
            let counts = d.class_counts();
            assert!(counts.iter().all(|&c| c > 0), "{name}: {counts:?}");
            assert!(d.x.iter().all(|v| v.is_finite()));
        }
    }
}
