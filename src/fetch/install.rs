//! Checking installed data sets against their digests, and installing verified downloads.

use std::fmt;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fedsim_data::catalog::Install;
use sha2::{Digest, Sha256};

use super::FileSpec;

/// The state of an installed file (or of a whole data set, see [`Status::worse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Installed. `verified` is false only for archive contents unpacked by hand, which have no
    /// digest to check against.
    Present {
        /// Whether every digest was checked and matched.
        verified: bool,
    },
    /// Not installed (a `.part` download may be waiting to be resumed).
    Missing,
    /// Installed, but a digest does not match; the reason names the file.
    Corrupt(String),
}

impl Status {
    /// The status of a data set from those of two of its files: corrupt over missing over present.
    pub(crate) fn worse(self, other: Status) -> Status {
        match (self, other) {
            (c @ Status::Corrupt(_), _) | (_, c @ Status::Corrupt(_)) => c,
            (Status::Missing, _) | (_, Status::Missing) => Status::Missing,
            (Status::Present { verified: a }, Status::Present { verified: b }) => {
                Status::Present { verified: a && b }
            }
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Status::Present { verified: true } => f.write_str("present"),
            Status::Present { verified: false } => {
                f.write_str("present (unpacked by hand: not verified)")
            }
            Status::Missing => f.write_str("missing"),
            Status::Corrupt(why) => write!(f, "corrupt ({why})"),
        }
    }
}

/// SHA-256 of a file, lowercase hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    sha256_reader(BufReader::with_capacity(1 << 20, f))
        .with_context(|| format!("reading {}", path.display()))
}

/// SHA-256 of a stream, lowercase hex.
fn sha256_reader(mut r: impl Read) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file's content, gunzipped when it starts with the gzip magic bytes.
fn content_sha256(path: &Path) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut magic = [0u8; 2];
    let gz = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let r = BufReader::with_capacity(1 << 20, f);
    let digest = if gz {
        sha256_reader(flate2::read::MultiGzDecoder::new(r))
    } else {
        sha256_reader(r)
    };
    // A truncated or damaged gzip stream is corrupt content, not a failure of the check.
    Ok(digest.unwrap_or_else(|e| format!("unreadable: {e}")))
}

/// Whether a single installed file matches: its bytes have the download's digest, or its
/// (decompressed) content has the content digest.
fn check_single(file: &FileSpec, path: &Path) -> Result<Status> {
    if file.install == Install::Keep && sha256_file(path)? == file.sha256 {
        return Ok(Status::Present { verified: true });
    }
    if let Some(content) = &file.content_sha256
        && content_sha256(path)? == *content
    {
        return Ok(Status::Present { verified: true });
    }
    Ok(Status::Corrupt(format!(
        "{}: SHA-256 does not match the recorded digest",
        path.display()
    )))
}

/// The stamp that records the digests of an archive's unpacked files: `DEST.sha256`.
fn stamp_path(file: &FileSpec) -> PathBuf {
    let mut s = file.dest.clone().into_os_string();
    s.push(".sha256");
    PathBuf::from(s)
}

/// The stamp's first line, tying it to the archive it was unpacked from.
fn stamp_header(file: &FileSpec) -> String {
    format!(
        "# fedsim data fetch: unpacked from {} (SHA-256 {})",
        file.file_name, file.sha256
    )
}

/// Checks the installed form of `file`.
pub(crate) fn check(file: &FileSpec) -> Result<Status> {
    match file.install {
        Install::Keep | Install::Gzip => {
            // MNIST's loaders also read the files uncompressed: such a copy counts when the
            // content digest is known.
            let raw = file
                .dest
                .to_str()
                .and_then(|d| d.strip_suffix(".gz"))
                .map(PathBuf::from)
                .filter(|_| file.content_sha256.is_some() && file.install == Install::Keep);
            match std::iter::once(file.dest.clone())
                .chain(raw)
                .find(|p| p.is_file())
            {
                Some(p) => check_single(file, &p),
                None => Ok(Status::Missing),
            }
        }
        Install::UnpackTarGz => {
            if !file.members.iter().all(|m| file.dest.join(m).is_file()) {
                return Ok(Status::Missing);
            }
            let Ok(stamp) = std::fs::read_to_string(stamp_path(file)) else {
                return Ok(Status::Present { verified: false });
            };
            if stamp.lines().next() != Some(stamp_header(file).as_str()) {
                return Ok(Status::Corrupt(format!(
                    "{} is from another archive",
                    stamp_path(file).display()
                )));
            }
            for line in stamp.lines().skip(1) {
                let Some((want, name)) = line.split_once("  ") else {
                    continue;
                };
                let path = file.dest.join(name);
                if !path.is_file() || sha256_file(&path)? != want {
                    return Ok(Status::Corrupt(format!(
                        "{}: SHA-256 does not match the one recorded when it was unpacked",
                        path.display()
                    )));
                }
            }
            Ok(Status::Present { verified: true })
        }
    }
}

/// Installs the verified download `file.part()` as `file` says, then removes the download.
pub(crate) fn install(file: &FileSpec) -> Result<()> {
    let part = file.part();
    match file.install {
        Install::Keep => std::fs::rename(&part, &file.dest)
            .with_context(|| format!("moving {} to {}", part.display(), file.dest.display()))?,
        Install::Gzip => {
            let tmp = with_suffix(&file.dest, ".tmp");
            {
                let mut input = BufReader::new(
                    File::open(&part).with_context(|| format!("opening {}", part.display()))?,
                );
                let out =
                    File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                std::io::copy(&mut input, &mut gz)
                    .and_then(|_| gz.finish())
                    .and_then(|mut f| f.flush())
                    .with_context(|| format!("writing {}", tmp.display()))?;
            }
            std::fs::rename(&tmp, &file.dest)
                .with_context(|| format!("moving {} to {}", tmp.display(), file.dest.display()))?;
            std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
        }
        Install::UnpackTarGz => {
            unpack(file, &part)?;
            std::fs::remove_file(&part).with_context(|| format!("removing {}", part.display()))?;
        }
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.to_path_buf().into_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Unpacks the `.tar.gz` at `archive` into the parent of `file.dest` (regular files and folders
/// only, never outside it), checks that the expected members arrived, and writes the stamp with
/// their digests.
fn unpack(file: &FileSpec, archive: &Path) -> Result<()> {
    let into = file.dest.parent().unwrap_or(Path::new("."));
    let f = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(BufReader::new(f)));
    let entries = tar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
        let kind = entry.header().entry_type();
        // Links could point outside the data root: the data sets need none.
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        // `unpack_in` refuses paths that would leave `into` (absolute, or with `..`).
        entry
            .unpack_in(into)
            .with_context(|| format!("unpacking {} into {}", archive.display(), into.display()))?;
    }
    let mut stamp = stamp_header(file);
    stamp.push('\n');
    for m in &file.members {
        let path = file.dest.join(m);
        if !path.is_file() {
            bail!(
                "{} did not contain {}: it is not the expected archive",
                archive.display(),
                path.display()
            );
        }
        stamp.push_str(&format!("{}  {m}\n", sha256_file(&path)?));
    }
    let stamp_file = stamp_path(file);
    std::fs::write(&stamp_file, stamp)
        .with_context(|| format!("writing {}", stamp_file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_of_a_data_set_is_its_worst_file() {
        let ok = Status::Present { verified: true };
        let bad = Status::Corrupt("x".into());
        assert_eq!(ok.clone().worse(Status::Missing), Status::Missing);
        assert_eq!(Status::Missing.worse(bad.clone()), bad);
        assert_eq!(
            ok.clone().worse(Status::Present { verified: false }),
            Status::Present { verified: false }
        );
        assert_eq!(ok.clone().worse(ok.clone()), ok);
    }

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_reader(&b"abc"[..]).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
