//! The data root: the one directory under which scenarios name their data sets.
//!
//! A scenario's data paths (`[data] dir`, `path`, `test_path`) that are relative are taken under the
//! data root — `dir = "mnist"` is `ROOT/mnist`, and so are `./mnist` and `sub/../mnist` (a relative
//! path is never taken from the working directory or from the scenario file's folder, so one
//! scenario file finds its data on every machine and in every process of a deployment). Absolute
//! paths are kept as they are.
//!
//! The root is, in order: the `--data-dir` flag, the environment variable [`DATA_ENV`]
//! (`FEDSIM_DATA`), or the user's cache directory (`$XDG_CACHE_HOME/fedsim`, else
//! `~/.cache/fedsim` on Linux; `~/Library/Caches/fedsim` on macOS; `%LOCALAPPDATA%\fedsim` on
//! Windows). A relative root is taken from the working directory and made absolute once, so that
//! processes started elsewhere (`fedsim launch`) see the same folder.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::catalog::{self, DataSet};
use crate::{DataError, DataSpec};

/// The environment variable naming the data root when `--data-dir` is not given.
pub const DATA_ENV: &str = "FEDSIM_DATA";

/// Where the data root came from (said in messages, so a user knows what to change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootSource {
    /// The `--data-dir` flag (or a root the program chose itself).
    Flag,
    /// The environment variable `FEDSIM_DATA`.
    Env,
    /// The user's cache directory, the default.
    UserCache,
}

impl fmt::Display for RootSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RootSource::Flag => "from --data-dir",
            RootSource::Env => "from FEDSIM_DATA",
            RootSource::UserCache => "the default: the user cache directory",
        })
    }
}

/// The data root: an absolute directory and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRoot {
    path: PathBuf,
    source: RootSource,
}

impl DataRoot {
    /// The root `flag` names (`--data-dir`), else `FEDSIM_DATA`, else the user cache directory's
    /// `fedsim` folder. An empty flag or variable counts as absent. Fails only when none of them is
    /// available (no home directory) or the working directory cannot be read for a relative root.
    pub fn locate(flag: Option<&Path>) -> Result<DataRoot, DataError> {
        let env = std::env::var_os(DATA_ENV).filter(|v| !v.is_empty());
        let (path, source) = match (flag.filter(|p| !p.as_os_str().is_empty()), env) {
            (Some(p), _) => (p.to_path_buf(), RootSource::Flag),
            (None, Some(e)) => (PathBuf::from(e), RootSource::Env),
            (None, None) => match user_cache_dir() {
                Some(c) => (c.join("fedsim"), RootSource::UserCache),
                None => {
                    return Err(DataError::Spec(format!(
                        "no data root: there is no user cache directory (HOME is not set); pass --data-dir DIR or set {DATA_ENV}"
                    )));
                }
            },
        };
        Ok(DataRoot {
            path: absolute(&path)?,
            source,
        })
    }

    /// A root at `path` (made absolute against the working directory when it can be), reported as
    /// if given with `--data-dir`.
    pub fn at(path: impl Into<PathBuf>) -> DataRoot {
        let path = path.into();
        DataRoot {
            path: absolute(&path).unwrap_or(path),
            source: RootSource::Flag,
        }
    }

    /// The root directory (absolute).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the root came from.
    pub fn source(&self) -> RootSource {
        self.source
    }

    /// `path` taken under the root when it is relative; an absolute path is returned unchanged.
    pub fn join(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.path.join(path)
        }
    }

    /// `spec` with its relative paths taken under the root, after checking that each of them exists:
    /// a missing one is a [`DataError::Missing`] that says which `fedsim data fetch` command gets it
    /// (for the data sets the fetcher knows) or where to put it.
    pub fn resolve(&self, spec: &DataSpec) -> Result<DataSpec, DataError> {
        let resolved = spec.under_root(self);
        for path in resolved.paths() {
            if !path.exists() {
                return Err(self.missing(spec, path, "does not exist"));
            }
        }
        Ok(resolved)
    }

    /// Turns a loader's "file not found" error for `spec` (the scenario's own, unresolved spec) into
    /// a [`DataError::Missing`] with the same advice as [`DataRoot::resolve`]; other errors are
    /// returned unchanged.
    pub fn explain(&self, spec: &DataSpec, error: DataError) -> DataError {
        match error {
            DataError::Io { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
                self.missing(spec, &path, &source.to_string())
            }
            other => other,
        }
    }

    /// The [`DataError::Missing`] for `path` (a file or folder of `spec` that is not there).
    fn missing(&self, spec: &DataSpec, path: &Path, what: &str) -> DataError {
        let root = format!("data root {} ({})", self.path.display(), self.source);
        let flag = match self.source {
            RootSource::Flag => format!(" --data-dir {}", self.path.display()),
            RootSource::Env | RootSource::UserCache => String::new(),
        };
        let hint = match catalog::for_spec(spec) {
            // The scenario names the data set where the fetcher puts it: fetching is all it takes.
            Some(set) if path.starts_with(self.path.join(set.scenario_path)) => format!(
                "{what}; {root}. Run `fedsim data fetch {}{flag}`, or set --data-dir / {DATA_ENV} to a folder holding {}",
                set.name,
                shown(set)
            ),
            Some(set) => format!(
                "{what}; {root}. `fedsim data fetch {}{flag}` puts it in {} (name it `{}` in the scenario), or put the files at {}",
                set.name,
                self.path.join(set.scenario_path).display(),
                set.scenario_path,
                path.display()
            ),
            None => format!(
                "{what}; {root}. Put the files there, set --data-dir / {DATA_ENV}, or give an absolute path"
            ),
        };
        DataError::Missing {
            path: path.to_path_buf(),
            hint,
        }
    }
}

/// `path` made absolute: the canonical path when it exists (`../shared/data` reads as
/// `/work/shared/data` in messages), else joined to the working directory.
fn absolute(path: &Path) -> Result<PathBuf, DataError> {
    if let Ok(p) = std::fs::canonicalize(path) {
        return Ok(p);
    }
    std::path::absolute(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// How a data set's place under the root reads in a message: `mnist/`, `libsvm/a9a.txt.gz`.
fn shown(set: &DataSet) -> String {
    if set.scenario_path.contains('.') {
        set.scenario_path.to_string()
    } else {
        format!("{}/", set.scenario_path)
    }
}

/// The user's cache directory: `$XDG_CACHE_HOME` (when absolute, as the XDG specification asks),
/// else `$HOME/.cache` on Linux and other Unix systems; `$HOME/Library/Caches` on macOS;
/// `%LOCALAPPDATA%` on Windows. Written out rather than taken from a crate: these few lines are all
/// fedsim needs.
pub fn user_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if cfg!(windows) {
        return var("LOCALAPPDATA");
    }
    if cfg!(target_os = "macos") {
        return var("HOME").map(|h| h.join("Library/Caches"));
    }
    var("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| var("HOME").map(|h| h.join(".cache")))
}

/// The development copy of the data sets for this crate's tests: `$FEDSIM_DATA` (a relative value is
/// taken from the workspace root, as `.ci/run` sets `FEDSIM_DATA=../shared/data`), else
/// `../shared/data` beside the workspace; `sub` is joined to it.
#[cfg(test)]
pub(crate) fn dev_data(sub: &str) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let base = match std::env::var_os(DATA_ENV).filter(|v| !v.is_empty()) {
        Some(d) => workspace.join(d),
        None => workspace.join("../shared/data"),
    };
    base.join(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mnist(dir: &str) -> DataSpec {
        DataSpec::Mnist {
            dir: dir.into(),
            normalize: Default::default(),
        }
    }

    #[test]
    fn relative_paths_go_under_the_root_and_absolute_ones_stay() {
        let root = DataRoot::at("/data");
        assert_eq!(root.join(Path::new("mnist")), Path::new("/data/mnist"));
        assert_eq!(root.join(Path::new("./mnist")), Path::new("/data/./mnist"));
        assert_eq!(root.join(Path::new("/x/mnist")), Path::new("/x/mnist"));
        let spec = DataSpec::Libsvm {
            path: "libsvm/a9a.txt.gz".into(),
            test_path: Some("/t/a9a.t".into()),
            test_fraction: 0.0,
            features: None,
        };
        let r = spec.under_root(&root);
        assert_eq!(
            r.paths(),
            [Path::new("/data/libsvm/a9a.txt.gz"), Path::new("/t/a9a.t")]
        );
    }

    #[test]
    fn a_missing_data_set_names_the_fetch_command() {
        let empty = tempfile::tempdir().unwrap();
        let root = DataRoot::at(empty.path());
        let e = root.resolve(&mnist("mnist")).unwrap_err().to_string();
        assert!(
            e.contains("fedsim data fetch mnist --data-dir")
                && e.contains(&empty.path().join("mnist").display().to_string()),
            "{e}"
        );
        // Elsewhere than where the fetcher puts it: the message says both places.
        let e = root
            .resolve(&mnist("/nowhere/mnist"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/nowhere/mnist") && e.contains("name it `mnist`"),
            "{e}"
        );
        // A data set the fetcher does not know.
        let csv = DataSpec::Csv {
            path: "mine.csv".into(),
            label_column: "label".into(),
            test_path: None,
            test_fraction: 0.0,
        };
        let e = root.resolve(&csv).unwrap_err().to_string();
        assert!(e.contains("mine.csv") && e.contains("absolute path"), "{e}");
        // A loader's not-found error gets the same advice.
        let io = DataError::Io {
            path: empty.path().join("mnist/train-images-idx3-ubyte"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        };
        let e = root.explain(&mnist("mnist"), io).to_string();
        assert!(e.contains("fedsim data fetch mnist"), "{e}");
    }

    #[test]
    fn synthetic_data_needs_no_root() {
        let spec = DataSpec::Synthetic {
            alpha: 1.0,
            beta: 1.0,
            features: 2,
            classes: 2,
            samples_per_client: 2,
            test_samples: 2,
        };
        let root = DataRoot::at("/nonexistent");
        assert_eq!(root.resolve(&spec).unwrap(), spec);
    }
}
