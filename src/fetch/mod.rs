//! `fedsim data fetch` and `fedsim data list`: downloads the data sets of
//! [`fedsim_data::catalog`] into the data root, verifies them and reports what is there.
//!
//! A fetch downloads each file to `DEST.part` beside its destination (an interrupted download is
//! resumed from there with an HTTP range request), checks its size and SHA-256, and installs it in
//! the layout the loaders read: as downloaded (MNIST's `.gz`, SVHN's `.mat`), gzip-compressed (LIBSVM
//! text) or unpacked (CIFAR archives, whose unpacked files' digests go to a `DEST.sha256` stamp so
//! that later checks can verify them). A file already installed and verified is not downloaded again.
//!
//! Two environment variables exist for tests only (a loopback server stands in for the real
//! addresses): `FEDSIM_FETCH_BASE_URL` replaces every address by `BASE/FILE_NAME`, and
//! `FEDSIM_FETCH_SHA256` names a file of `HEX  FILE_NAME` lines (the `sha256sum` format) that replace
//! the recorded digests of those downloads (their size is then not checked).

mod download;
mod install;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use fedsim_data::DataRoot;
use fedsim_data::catalog::{self, DataSet, Install, RemoteFile};

pub(crate) use install::Status;

/// Test-only: replaces every download address by `BASE/FILE_NAME`.
const BASE_URL_ENV: &str = "FEDSIM_FETCH_BASE_URL";
/// Test-only: a `sha256sum`-format file whose digests replace the recorded ones, by file name.
const SHA256_ENV: &str = "FEDSIM_FETCH_SHA256";

/// One download of a data set, with the test-only overrides applied.
#[derive(Debug, Clone)]
pub(crate) struct FileSpec {
    /// The download's file name (`train-images-idx3-ubyte.gz`, `a9a`).
    pub(crate) file_name: String,
    /// Addresses, tried in order.
    pub(crate) urls: Vec<String>,
    /// Expected size in bytes, when known.
    pub(crate) size: Option<u64>,
    /// SHA-256 of the download.
    pub(crate) sha256: String,
    /// SHA-256 of the decompressed content of a gzip file (accepts recompressed or raw copies).
    pub(crate) content_sha256: Option<String>,
    /// How it is installed.
    pub(crate) install: Install,
    /// The installed file or folder (absolute).
    pub(crate) dest: PathBuf,
    /// For an archive: the files that must be in `dest`.
    pub(crate) members: Vec<String>,
}

impl FileSpec {
    /// Where the download is written while it is under way.
    pub(crate) fn part(&self) -> PathBuf {
        self.dest
            .parent()
            .unwrap_or(Path::new("."))
            .join(format!("{}.part", self.file_name))
    }

    /// How to install the file by hand, for error messages.
    fn by_hand(&self) -> String {
        let url = self.urls.first().map_or("?", String::as_str);
        let dest = self.dest.display();
        match self.install {
            Install::Keep => format!("download {url} (SHA-256 {}) to {dest}", self.sha256),
            Install::Gzip => format!(
                "download {url} (SHA-256 {}) and save it gzip-compressed (or as it is) as {dest}",
                self.sha256
            ),
            Install::UnpackTarGz => format!(
                "download {url} (SHA-256 {}) and unpack it in {} (giving {dest}/)",
                self.sha256,
                self.dest.parent().unwrap_or(Path::new(".")).display()
            ),
        }
    }
}

/// The test-only overrides of addresses and digests, read from the environment.
#[derive(Debug, Default)]
struct Overrides {
    base_url: Option<String>,
    sha256: HashMap<String, String>,
}

impl Overrides {
    fn from_env() -> Result<Overrides> {
        let base_url = std::env::var(BASE_URL_ENV)
            .ok()
            .filter(|b| !b.is_empty())
            .map(|b| b.trim_end_matches('/').to_string());
        let mut sha256 = HashMap::new();
        if let Some(file) = std::env::var_os(SHA256_ENV).filter(|v| !v.is_empty()) {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {SHA256_ENV}={}", file.to_string_lossy()))?;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let (hex, name) = line
                    .split_once(char::is_whitespace)
                    .with_context(|| format!("{SHA256_ENV}: `{line}` is not `HEX  FILE_NAME`"))?;
                sha256.insert(
                    name.trim().trim_start_matches('*').to_string(),
                    hex.to_ascii_lowercase(),
                );
            }
        }
        Ok(Overrides { base_url, sha256 })
    }

    /// `file` of a data set, installed under `root`, with the overrides applied.
    fn apply(&self, root: &DataRoot, file: &RemoteFile) -> FileSpec {
        let file_name = file.file_name().to_string();
        let urls = match &self.base_url {
            Some(base) => vec![format!("{base}/{file_name}")],
            None => file.urls.iter().map(|u| u.to_string()).collect(),
        };
        let (size, sha256, content_sha256) = match self.sha256.get(&file_name) {
            // A test's own file: its digest is the one given, its size is not known, and for text
            // stored gzip-compressed the content digest is the download's.
            Some(hex) => (
                None,
                hex.clone(),
                (file.install == Install::Gzip).then(|| hex.clone()),
            ),
            None => (
                Some(file.size),
                file.sha256.to_string(),
                file.content_sha256.map(str::to_string),
            ),
        };
        FileSpec {
            file_name,
            urls,
            size,
            sha256,
            content_sha256,
            install: file.install,
            dest: root.join(Path::new(file.dest)),
            members: file.members.iter().map(|m| m.to_string()).collect(),
        }
    }
}

/// The data sets `names` stands for (groups such as `libsvm` expanded, repeats dropped), or an error
/// listing the names that exist.
fn expand(names: &[String]) -> Result<Vec<&'static DataSet>> {
    let mut sets: Vec<&'static DataSet> = Vec::new();
    for name in names {
        let members: Vec<&str> = match catalog::GROUPS.iter().find(|(g, _)| g == name) {
            Some((_, members)) => members.to_vec(),
            None => vec![name.as_str()],
        };
        for m in members {
            let Some(set) = catalog::find(m) else {
                let known: Vec<&str> = catalog::DATA_SETS
                    .iter()
                    .map(|s| s.name)
                    .chain(catalog::GROUPS.iter().map(|(g, _)| *g))
                    .collect();
                bail!("unknown data set `{name}`; known: {}", known.join(", "));
            };
            if !sets.iter().any(|s| s.name == set.name) {
                sets.push(set);
            }
        }
    }
    Ok(sets)
}

/// `fedsim data fetch NAME...`: downloads, verifies and installs each data set under `root`.
pub(crate) fn fetch(root: &DataRoot, names: &[String]) -> Result<()> {
    let sets = expand(names)?;
    let overrides = Overrides::from_env()?;
    let agent = download::agent();
    eprintln!("data root: {} ({})", root.path().display(), root.source());
    for set in sets {
        let files: Vec<FileSpec> = set.files.iter().map(|f| overrides.apply(root, f)).collect();
        let mut fetched = false;
        for file in &files {
            match install::check(file)? {
                Status::Present { .. } => continue,
                Status::Corrupt(why) => eprintln!(
                    "{}: {} is corrupt ({why}): downloading it again",
                    set.name,
                    file.dest.display()
                ),
                Status::Missing => {}
            }
            fetched = true;
            download::download(&agent, file).map_err(|e| {
                anyhow::anyhow!(
                    "fetching {}: {e:#}\nTo install it by hand: {}; `fedsim data list` then checks it.",
                    set.name,
                    file.by_hand()
                )
            })?;
            install::install(file).with_context(|| format!("installing {}", set.name))?;
        }
        let place = root.join(Path::new(set.scenario_path));
        if fetched {
            eprintln!("{}: fetched and verified in {}", set.name, place.display());
        } else {
            eprintln!(
                "{}: already present and verified in {}",
                set.name,
                place.display()
            );
        }
    }
    Ok(())
}

/// `fedsim data list`: the data root and, per data set, its status and place.
pub(crate) fn list(root: &DataRoot) -> Result<String> {
    let overrides = Overrides::from_env()?;
    let mut out = format!("data root: {} ({})\n", root.path().display(), root.source());
    let width = catalog::DATA_SETS
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "{:width$}  {:<7}  PLACE", "NAME", "STATUS");
    for set in catalog::DATA_SETS {
        let mut status = Status::Present { verified: true };
        let mut partial = false;
        for f in set.files {
            let spec = overrides.apply(root, f);
            partial |= spec.part().is_file();
            status = status.worse(install::check(&spec)?);
        }
        let place = root.join(Path::new(set.scenario_path));
        let (word, detail) = match &status {
            Status::Present { verified: true } => ("present", None),
            Status::Present { verified: false } => (
                "present",
                Some("unpacked by hand: no digest to verify it against".to_string()),
            ),
            Status::Missing if partial => (
                "missing",
                Some(format!(
                    "a partial download is waiting: `fedsim data fetch {}` resumes it",
                    set.name
                )),
            ),
            Status::Missing => ("missing", None),
            Status::Corrupt(why) => ("corrupt", Some(why.clone())),
        };
        let _ = writeln!(out, "{:width$}  {word:<7}  {}", set.name, place.display());
        if let Some(d) = detail {
            let _ = writeln!(out, "{:width$}  {:<7}  ({d})", "", "");
        }
    }
    let caches = fedsim_data::decoded_cache_folders(root.path());
    if caches.is_empty() {
        out.push_str("decoded-data cache: empty\n");
    } else {
        out.push_str(
            "decoded-data cache (image data sets decoded once and mapped by later runs; delete a \
             folder to reclaim its space, the next run decodes again):\n",
        );
        for c in caches {
            let _ = writeln!(
                out,
                "  {}  {} file{}, {:.1} MiB",
                c.path.display(),
                c.files,
                if c.files == 1 { "" } else { "s" },
                c.bytes as f64 / f64::from(1 << 20)
            );
        }
    }
    Ok(out)
}
