//! Listing an image folder stored in a `.tar` or `.tar.gz` archive, without unpacking it: the archive
//! is read once, front to back, keeping the bytes of the image members of the wanted splits.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use super::dir::Listing;
use super::{Content, Listed, is_image_name};
use crate::DataError;
use crate::util::{format_err, io_err, is_gzip};

/// A member path, split into its non-empty components (`./` and trailing `/` dropped).
fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

/// Lists the images of `train_split` (and `test_split`) in the archive `path`, whose tree sits at the
/// top of the archive or under one top directory.
pub(super) fn list(
    path: &Path,
    train_split: &str,
    test_split: Option<&str>,
) -> Result<Listing, DataError> {
    let file = File::open(path).map_err(|e| io_err(path, e))?;
    let mut br = BufReader::with_capacity(1 << 16, file);
    let gzip = is_gzip(br.fill_buf().map_err(|e| io_err(path, e))?);
    let reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(br))
    } else {
        Box::new(br)
    };
    let is_split = |c: &str| c == train_split || Some(c) == test_split;
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| format_err(path, format!("cannot read the tar archive: {e}")))?;
    let mut files: Vec<(Vec<String>, Vec<u8>)> = Vec::new();
    let mut dirs: Vec<Vec<String>> = Vec::new();
    // Where the last member read ended, for the message when the next one cannot be read.
    let mut last = String::from("the start of the archive");
    for entry in entries {
        let mut entry = entry.map_err(|e| {
            format_err(
                path,
                format!("corrupt or truncated archive: cannot read the member after {last}: {e}"),
            )
        })?;
        let at = entry.raw_header_position();
        let name = match entry.path() {
            Ok(p) => p.to_str().map(str::to_string).ok_or_else(|| {
                format_err(
                    path,
                    format!("member at tar byte offset {at}: name is not valid UTF-8"),
                )
            })?,
            Err(e) => {
                return Err(format_err(
                    path,
                    format!("member at tar byte offset {at}: bad name: {e}"),
                ));
            }
        };
        last = format!("member `{name}` (tar byte offset {at})");
        let comps = components(&name);
        if comps.iter().any(|c| c.starts_with('.') || c == "..") {
            continue; // hidden files (macOS `._x.jpg` resource forks, .DS_Store) are not data
        }
        let ty = entry.header().entry_type();
        if ty.is_dir() {
            dirs.push(comps);
            continue;
        }
        let regular = ty.is_file() || ty == tar::EntryType::Continuous;
        let wanted = comps.len() >= 3
            && (is_split(&comps[0]) || comps.len() >= 4 && is_split(&comps[1]))
            && comps.last().is_some_and(|n| is_image_name(n));
        if !(regular && wanted) {
            continue;
        }
        // The header's size bounds the capacity; a forged size cannot allocate beyond 64 MiB up front.
        let size = entry.size();
        let mut bytes = Vec::with_capacity((size as usize).min(1 << 26));
        entry.read_to_end(&mut bytes).map_err(|e| {
            format_err(
                path,
                format!(
                    "corrupt or truncated archive: member `{name}` (tar byte offset {at}, data at {}): {e}",
                    entry.raw_file_position()
                ),
            )
        })?;
        // A plain tar cut inside a member reads short without an error.
        if bytes.len() as u64 != size {
            return Err(format_err(
                path,
                format!(
                    "truncated archive: member `{name}` (tar byte offset {at}) holds {} of its {size} bytes",
                    bytes.len()
                ),
            ));
        }
        files.push((comps, bytes));
    }
    // The tree's root: the archive's top, or its one top directory holding the training split.
    let at_top = files.iter().any(|(c, _)| c[0] == train_split);
    let top: Option<String> = if at_top {
        None
    } else {
        let mut tops: Vec<&str> = files
            .iter()
            .filter(|(c, _)| c.len() >= 4 && c[1] == train_split)
            .map(|(c, _)| c[0].as_str())
            .collect();
        tops.sort_unstable();
        tops.dedup();
        match tops.as_slice() {
            [one] => Some(one.to_string()),
            [] => {
                return Err(format_err(
                    path,
                    format!(
                        "no `{train_split}/<class>/<image>` member in the archive, at its top or under one top \
                         directory (the image-folder layout is ROOT/{train_split}/<class>/<image>)"
                    ),
                ));
            }
            several => {
                return Err(format_err(
                    path,
                    format!(
                        "several top directories hold a `{train_split}/` tree: {}",
                        several.join(", ")
                    ),
                ));
            }
        }
    };
    let relative = |c: &[String]| -> Option<usize> {
        match &top {
            None => Some(0),
            Some(t) if c.first() == Some(t) => Some(1),
            Some(_) => None,
        }
    };
    let mut listed = Vec::new();
    for (c, bytes) in files {
        let Some(skip) = relative(&c) else { continue };
        let rel = &c[skip..];
        if rel.len() >= 3 && is_split(&rel[0]) {
            listed.push(Listed {
                split: rel[0].clone(),
                class: rel[1].clone(),
                rest: rel[2..].join("/"),
                content: Content::Bytes(bytes),
            });
        }
    }
    let class_dirs = dirs
        .iter()
        .filter_map(|c| {
            let rel = &c[relative(c)?..];
            (rel.len() == 2 && is_split(&rel[0])).then(|| (rel[0].clone(), rel[1].clone()))
        })
        .collect();
    Ok((listed, class_dirs))
}
