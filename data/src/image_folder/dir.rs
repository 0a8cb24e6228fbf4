//! Listing an image folder stored as a directory tree.

use std::path::{Path, PathBuf};

use super::{Content, Listed, is_image_name};
use crate::DataError;
use crate::util::{format_err, io_err};

/// Deepest folder nesting inside a class folder (guards against symbolic-link loops).
const MAX_DEPTH: usize = 32;

/// The listed images of the splits and the class folders seen, as `(split, class)`.
pub(super) type Listing = (Vec<Listed>, Vec<(String, String)>);

/// Lists the images of `train_split` (and `test_split`) under `path`, or under its only subfolder that
/// holds `train_split`.
pub(super) fn list(
    path: &Path,
    train_split: &str,
    test_split: Option<&str>,
) -> Result<Listing, DataError> {
    let root = find_root(path, train_split)?;
    let mut listed = Vec::new();
    let mut class_dirs = Vec::new();
    for split in [Some(train_split), test_split].into_iter().flatten() {
        let split_dir = root.join(split);
        if !split_dir.is_dir() {
            continue; // a missing test split is reported once the listing is complete
        }
        for (class, class_dir) in subfolders(&split_dir)? {
            class_dirs.push((split.to_string(), class.clone()));
            let mut files = Vec::new();
            walk(&class_dir, "", 0, &mut files)?;
            listed.extend(files.into_iter().map(|(rest, p)| Listed {
                split: split.to_string(),
                class: class.clone(),
                rest,
                content: Content::File(p),
            }));
        }
    }
    Ok((listed, class_dirs))
}

/// `path` when it holds the training split, else its only subfolder that does.
fn find_root(path: &Path, train_split: &str) -> Result<PathBuf, DataError> {
    if path.join(train_split).is_dir() {
        return Ok(path.to_path_buf());
    }
    let inner: Vec<PathBuf> = subfolders(path)?
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| p.join(train_split).is_dir())
        .collect();
    match inner.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format_err(
            path,
            format!(
                "no `{train_split}/` folder here or in a folder directly under it (the image-folder layout is \
                 ROOT/{train_split}/<class>/<image>)"
            ),
        )),
        several => Err(format_err(
            path,
            format!(
                "several folders hold a `{train_split}/` folder ({}); point data.path at one of them",
                several
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Entries of `dir`, sorted by name, without the names starting with `.`: `(name, path, is_dir)`.
fn entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        let p = e.path();
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            return Err(format_err(&p, "file name is not valid UTF-8"));
        };
        if name.starts_with('.') {
            continue; // hidden files and folders (.DS_Store, ._x.jpg, .ipynb_checkpoints) are not data
        }
        let is_dir = p.is_dir();
        out.push((name, p, is_dir));
    }
    out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The subfolders of `dir`, sorted by name.
fn subfolders(dir: &Path) -> Result<Vec<(String, PathBuf)>, DataError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|e| e.2)
        .map(|(n, p, _)| (n, p))
        .collect())
}

/// Appends the image files under `dir` as `(path inside the class folder, path)`.
fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, PathBuf)>,
) -> Result<(), DataError> {
    if depth > MAX_DEPTH {
        return Err(format_err(
            dir,
            format!("folders nested more than {MAX_DEPTH} deep (a symbolic-link loop?)"),
        ));
    }
    for (name, p, is_dir) in entries(dir)? {
        let rest = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        if is_dir {
            walk(&p, &rest, depth + 1, out)?;
        } else if is_image_name(&name) {
            out.push((rest, p));
        }
    }
    Ok(())
}
