//! CSV reader: a header row naming the columns, one sample per following row.
//!
//! One column (named by the caller) holds non-negative integer class labels (`3` or `3.0`); every other
//! column is an `f32` feature. `num_classes` is the largest label + 1. Fields are separated by commas and may
//! be double-quoted (`"a,b"`, with `""` for a literal quote); quoted fields may not span lines. Surrounding
//! spaces are ignored, `\r\n` line ends are accepted and blank lines are skipped. Files may be
//! gzip-compressed (detected from the magic bytes).

use std::borrow::Cow;
use std::path::Path;

use ndarray::Array2;

use crate::util::{MAX_CLASSES, check_u32_len, format_err, read_maybe_gz, utf8_text};
use crate::{DataError, Dataset};

/// Splits one CSV line into fields, unquoting quoted ones.
fn split_fields(line: &str) -> Result<Vec<Cow<'_, str>>, String> {
    if !line.contains('"') {
        return Ok(line.split(',').map(|f| Cow::Borrowed(f.trim())).collect());
    }
    let mut fields = Vec::new();
    let mut rest = line;
    loop {
        let trimmed = rest.trim_start();
        if let Some(body) = trimmed.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = body.char_indices();
            let after = loop {
                match chars.next() {
                    None => return Err("unterminated quoted field".into()),
                    Some((i, '"')) => {
                        if body[i + 1..].starts_with('"') {
                            value.push('"');
                            chars.next();
                        } else {
                            break &body[i + 1..];
                        }
                    }
                    Some((_, c)) => value.push(c),
                }
            };
            fields.push(Cow::Owned(value));
            let after = after.trim_start();
            if after.is_empty() {
                return Ok(fields);
            }
            match after.strip_prefix(',') {
                Some(r) => rest = r,
                None => return Err("unexpected text after a closing quote".into()),
            }
        } else {
            match rest.find(',') {
                Some(i) => {
                    let f = &rest[..i];
                    if f.contains('"') {
                        return Err("stray quote inside an unquoted field".into());
                    }
                    fields.push(Cow::Borrowed(f.trim()));
                    rest = &rest[i + 1..];
                }
                None => {
                    if rest.contains('"') {
                        return Err("stray quote inside an unquoted field".into());
                    }
                    fields.push(Cow::Borrowed(rest.trim()));
                    return Ok(fields);
                }
            }
        }
    }
}

fn parse_label(s: &str) -> Option<u32> {
    if let Ok(v) = s.parse::<u32>() {
        return Some(v);
    }
    let f: f64 = s.parse().ok()?;
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= f64::from(u32::MAX)).then_some(f as u32)
}

/// A parsed CSV file: feature names in column order, features row-major, labels.
struct Table {
    feature_names: Vec<String>,
    x: Vec<f32>,
    y: Vec<u32>,
}

fn parse_table(path: &Path, label_column: &str) -> Result<Table, DataError> {
    let bytes = read_maybe_gz(path)?;
    let text = utf8_text(path, &bytes)?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((h, header)) = lines.next() else {
        return Err(format_err(
            path,
            "the file is empty (expected a header row)",
        ));
    };
    let names =
        split_fields(header).map_err(|m| format_err(path, format!("line {}: {m}", h + 1)))?;
    let mut label_col = None;
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(format_err(
                path,
                format!("line {}: column '{n}' appears twice in the header", h + 1),
            ));
        }
        if n == label_column {
            label_col = Some(i);
        }
    }
    let Some(label_col) = label_col else {
        return Err(format_err(
            path,
            format!(
                "line {}: the header has no label column '{label_column}' (columns: {})",
                h + 1,
                names.join(", ")
            ),
        ));
    };
    let feature_names: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != label_col)
        .map(|(_, n)| n.to_string())
        .collect();
    if feature_names.is_empty() {
        return Err(format_err(
            path,
            format!(
                "line {}: the header has no feature columns besides '{label_column}'",
                h + 1
            ),
        ));
    }
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (i, line) in lines {
        let lineno = i + 1;
        let fields =
            split_fields(line).map_err(|m| format_err(path, format!("line {lineno}: {m}")))?;
        if fields.len() != names.len() {
            return Err(format_err(
                path,
                format!(
                    "line {lineno}: ragged row with {} fields, the header has {}",
                    fields.len(),
                    names.len()
                ),
            ));
        }
        for (j, f) in fields.iter().enumerate() {
            if j == label_col {
                let l = parse_label(f).filter(|&l| (l as usize) < MAX_CLASSES).ok_or_else(|| {
                    format_err(
                        path,
                        format!(
                            "line {lineno}: label '{f}' in column '{label_column}' is not an integer in 0..{MAX_CLASSES}"
                        ),
                    )
                })?;
                y.push(l);
            } else {
                let v: f32 = f.parse().map_err(|_| {
                    format_err(
                        path,
                        format!(
                            "line {lineno}: value '{f}' in column '{}' is not a number",
                            names[j]
                        ),
                    )
                })?;
                if !v.is_finite() {
                    return Err(format_err(
                        path,
                        format!(
                            "line {lineno}: value '{f}' in column '{}' is not finite (NaN or infinite)",
                            names[j]
                        ),
                    ));
                }
                x.push(v);
            }
        }
    }
    if y.is_empty() {
        return Err(format_err(path, "the file holds a header but no samples"));
    }
    check_u32_len(y.len(), &path.display().to_string())?;
    Ok(Table {
        feature_names,
        x,
        y,
    })
}

fn to_dataset(path: &Path, t: Table, num_classes: usize) -> Result<Dataset, DataError> {
    let x = Array2::from_shape_vec((t.y.len(), t.feature_names.len()), t.x)
        .map_err(|e| format_err(path, format!("cannot shape feature matrix: {e}")))?;
    Ok(Dataset {
        x: x.into(),
        y: t.y,
        num_classes,
        image: None,
    })
}

fn max_label(t: &Table) -> usize {
    t.y.iter().copied().max().map_or(0, |m| m as usize + 1)
}

/// Reads a CSV file with a header row; `label_column` names the label column, every other column is a
/// feature (in file order).
///
/// Errors: [`DataError::Io`] if the file cannot be read; [`DataError::Format`] (with the line number) for a
/// missing label column, a duplicated column name, a ragged row, a non-numeric or non-finite feature, a label
/// that is not a non-negative integer, broken quoting, or a file without samples.
pub fn read_csv(path: &Path, label_column: &str) -> Result<Dataset, DataError> {
    let t = parse_table(path, label_column)?;
    let c = max_label(&t);
    to_dataset(path, t, c)
}

/// Reads a CSV training file and its test file: `(train, test)`.
///
/// The test file must have the same columns, possibly in another order (features are matched by name).
/// Both data sets get `num_classes` = largest label in either file + 1.
pub fn read_csv_pair(
    train: &Path,
    test: &Path,
    label_column: &str,
) -> Result<(Dataset, Dataset), DataError> {
    let tr = parse_table(train, label_column)?;
    let mut te = parse_table(test, label_column)?;
    if te.feature_names != tr.feature_names {
        let mut sorted_tr = tr.feature_names.clone();
        let mut sorted_te = te.feature_names.clone();
        sorted_tr.sort();
        sorted_te.sort();
        if sorted_tr != sorted_te {
            return Err(format_err(
                test,
                format!(
                    "feature columns [{}] differ from those of the training file {} [{}]",
                    te.feature_names.join(", "),
                    train.display(),
                    tr.feature_names.join(", ")
                ),
            ));
        }
        // Reorder the test columns to the training order.
        let f = tr.feature_names.len();
        let src: Vec<usize> = tr
            .feature_names
            .iter()
            .map(|n| te.feature_names.iter().position(|m| m == n).unwrap_or(0))
            .collect();
        let mut x = Vec::with_capacity(te.x.len());
        for row in te.x.chunks_exact(f) {
            x.extend(src.iter().map(|&j| row[j]));
        }
        te.x = x;
        te.feature_names = tr.feature_names.clone();
    }
    let c = max_label(&tr).max(max_label(&te));
    Ok((to_dataset(train, tr, c)?, to_dataset(test, te, c)?))
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

    #[test]
    fn round_trip_raw_and_gz() {
        let text = "a,label, b\r\n1.5,2,-3\n\n0,0,1e2\r\n\"4\",1.0,\"5\"\n";
        let dir = tempfile::tempdir().unwrap();
        for gzip in [false, true] {
            let p = write(
                dir.path(),
                if gzip { "t.csv.gz" } else { "t.csv" },
                text,
                gzip,
            );
            let d = read_csv(&p, "label").unwrap();
            assert_eq!(d.len(), 3);
            assert_eq!(d.features(), 2);
            assert_eq!(d.num_classes, 3);
            assert_eq!(d.y, vec![2, 0, 1]);
            assert_eq!(d.x.row(0).to_vec(), vec![1.5, -3.0]);
            assert_eq!(d.x.row(1).to_vec(), vec![0.0, 100.0]);
            assert_eq!(d.x.row(2).to_vec(), vec![4.0, 5.0]);
        }
    }

    #[test]
    fn quoted_fields() {
        assert_eq!(
            split_fields(r#""x,y", "a""b" ,c"#).unwrap(),
            vec!["x,y", "a\"b", "c"]
        );
        assert_eq!(split_fields("a,,b").unwrap(), vec!["a", "", "b"]);
        assert!(split_fields(r#""open"#).is_err());
        assert!(split_fields(r#""a"b,c"#).is_err());
        assert!(split_fields(r#"a"b,c"#).is_err());
    }

    #[test]
    fn pair_matches_columns_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let tr = write(dir.path(), "tr.csv", "x,y,label\n1,2,0\n", false);
        let te = write(dir.path(), "te.csv", "label,y,x\n4,20,10\n", false);
        let (a, b) = read_csv_pair(&tr, &te, "label").unwrap();
        assert_eq!(a.num_classes, 5);
        assert_eq!(b.num_classes, 5);
        assert_eq!(b.x.row(0).to_vec(), vec![10.0, 20.0]);
        let bad = write(dir.path(), "bad.csv", "label,z,x\n0,1,2\n", false);
        let msg = read_csv_pair(&tr, &bad, "label").unwrap_err().to_string();
        assert!(msg.contains("bad.csv") && msg.contains("differ"), "{msg}");
    }

    #[test]
    fn malformed_files() {
        let cases: &[(&str, &str)] = &[
            (
                "a,b\n1,2\n",
                "line 1: the header has no label column 'label'",
            ),
            (
                "a,label\n1,0\n2,1,3\n",
                "line 3: ragged row with 3 fields, the header has 2",
            ),
            ("a,label\n1,0\n2\n", "line 3: ragged row with 1 fields"),
            (
                "a,label\nfoo,0\n",
                "line 2: value 'foo' in column 'a' is not a number",
            ),
            (
                "a,label\n,0\n",
                "line 2: value '' in column 'a' is not a number",
            ),
            (
                "a,label\nNaN,0\n",
                "line 2: value 'NaN' in column 'a' is not finite",
            ),
            (
                "a,label\n1,-1\n",
                "line 2: label '-1' in column 'label' is not an integer",
            ),
            (
                "a,label\n1,0.5\n",
                "line 2: label '0.5' in column 'label' is not an integer",
            ),
            ("a,label,a\n1,0,1\n", "column 'a' appears twice"),
            ("a,label\n\"1,0\n", "line 2: unterminated quoted field"),
            ("a,label\n", "no samples"),
            ("", "empty"),
            ("label\n1\n", "no feature columns"),
        ];
        let dir = tempfile::tempdir().unwrap();
        for (text, want) in cases {
            let p = write(dir.path(), "broken.csv", text, false);
            let e = read_csv(&p, "label").unwrap_err();
            assert!(matches!(e, DataError::Format { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("broken.csv") && msg.contains(want),
                "{msg:?} should contain {want:?}"
            );
        }
    }

    #[test]
    fn missing_file_is_io_error() {
        let e = read_csv(Path::new("/nonexistent/q.csv"), "label").unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().contains("q.csv"));
    }
}
