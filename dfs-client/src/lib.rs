//! One storage API for Quern over the file systems it runs on.
//!
//! The engine never implements its own file system: it is a client of real storage. A path is
//! a URL whose scheme picks the backend; this crate offers list, stat, read a byte range, write
//! a file that becomes visible atomically, rename, delete, and [`Storage::locations`], which says
//! which hosts hold each piece of a file so the scheduler can place work beside its data.
//!
//! Layout:
//! - [`path`]: URL parsing and validation (one set of rules for every backend);
//! - [`local`]: plain paths and `file://` URLs (the embedded default); reads are memory-mapped;
//! - [`seaweedfs`]: `seaweedfs://FILER/path`: chunked, replicated, with chunk locations;
//! - [`s3`]: `s3://bucket/key` on any S3-compatible store, through `object_store`;
//! - [`writer`]: files that become visible atomically on commit;
//! - [`config`]: endpoints, chunk size and replication.
//!
//! ```no_run
//! let storage = dfs_client::Storage::default();
//! let files = storage.list("testdata/weblog")?;
//! for f in &files {
//!     let head = storage.read_range(&f.path, 0, 16)?;
//!     println!("{} {} bytes, starts {:?}", f.path, f.len, head);
//! }
//! # Ok::<(), dfs_client::DfsError>(())
//! ```
#![warn(missing_docs)]

pub mod config;
pub mod local;
pub mod path;
pub mod s3;
pub mod seaweedfs;
pub mod writer;

use std::io;
use std::path::PathBuf;

use bytes::Bytes;

pub use config::StorageConfig;
pub use path::{Backend, DfsPath};
pub use writer::Writer;

/// Errors from any storage backend.
#[derive(Debug, thiserror::Error)]
pub enum DfsError {
    /// The path has a scheme no backend serves.
    #[error("unsupported storage scheme in {url:?}: use a plain path, file://, seaweedfs://FILER/path or s3://bucket/key")]
    UnsupportedScheme {
        /// The offending URL.
        url: String,
    },
    /// The path is malformed or tries to escape its root.
    #[error("invalid storage path {url:?}: {reason}")]
    InvalidPath {
        /// The offending URL.
        url: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// Nothing exists at the path.
    #[error("no such file: {path}")]
    NotFound {
        /// The missing path.
        path: String,
    },
    /// An input is there, but holds no file to read: a directory with no files in it or below
    /// it, or whose entries were all passed over for their names.
    #[error("input {path} holds no file to read: {why}")]
    NothingToRead {
        /// The path or glob.
        path: String,
        /// Why.
        why: String,
    },
    /// A read asked for bytes past the end of the file.
    #[error("range {start}..{end} is past the end of {path} ({len} bytes)")]
    OutOfRange {
        /// The file.
        path: String,
        /// Start of the requested range.
        start: u64,
        /// End of the requested range.
        end: u64,
        /// The file's length.
        len: u64,
    },
    /// A local I/O error.
    #[error("storage i/o error on {}", .path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A remote store failed or answered something unexpected.
    #[error("storage error at {url}: {message}")]
    Remote {
        /// What was being accessed.
        url: String,
        /// What went wrong.
        message: String,
    },
}

impl DfsError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::NotFound {
            DfsError::NotFound {
                path: path.display().to_string(),
            }
        } else {
            DfsError::Io { path, source }
        }
    }
}

/// One file as listed by [`Storage::list`] or [`Storage::stat`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStatus {
    /// The file's full URL (or plain path for local files).
    pub path: String,
    /// Length in bytes.
    pub len: u64,
    /// Last modification, in milliseconds since the Unix epoch, where the backend says.
    pub mtime_ms: Option<u64>,
}

/// What a path names, as [`Storage::probe`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing.
    Missing,
    /// A file.
    File,
    /// A directory (on object stores: a prefix with objects under it).
    Directory {
        /// The name of one entry in it, hidden and metadata names included; none if empty.
        some_entry: Option<String>,
    },
}

/// A piece of a file and the hosts holding a replica of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Offset of the piece in the file.
    pub offset: u64,
    /// Length of the piece.
    pub len: u64,
    /// Storage hosts that hold a replica (empty: no locality, as for object stores).
    pub hosts: Vec<String>,
}

/// The storage client: routes each call to the backend its URL names.
#[derive(Clone, Debug)]
pub struct Storage {
    local: local::LocalBackend,
    seaweedfs: seaweedfs::SeaweedFs,
    s3: s3::S3,
}

impl Default for Storage {
    /// Returns a client configured from the environment ([`StorageConfig::from_env`]).
    fn default() -> Self {
        Storage::new(StorageConfig::from_env())
    }
}

macro_rules! dispatch {
    ($self:ident, $p:ident, $method:ident ( $($arg:expr),* )) => {
        match &$p.backend {
            Backend::Local => $self.local.$method(&$p $(, $arg)*),
            Backend::SeaweedFs { .. } => $self.seaweedfs.$method(&$p $(, $arg)*),
            Backend::S3 { .. } => $self.s3.$method(&$p $(, $arg)*),
        }
    };
}

impl Storage {
    /// Returns a client with `config`.
    pub fn new(config: StorageConfig) -> Self {
        Storage {
            local: local::LocalBackend,
            seaweedfs: seaweedfs::SeaweedFs::new(config.clone()),
            s3: s3::S3::new(config),
        }
    }

    /// Returns the files at `url`, sorted by path: the file itself; the data files of a
    /// directory, recursively; or, for a glob (`*`, `?`) in the last path component, the files
    /// it matches and the data files of the directories it matches. Names starting with `_`
    /// or `.` are skipped at every level below (an earlier output's `_SUCCESS`, `_temporary/`
    /// and hidden files never become input), and by a glob unless it starts with one itself;
    /// so is what lies in a directory below the one named (or matched) that holds `_SUCCESS`:
    /// an earlier job's output, written inside the input directory.
    ///
    /// # Errors
    /// [`DfsError::NotFound`] when nothing matches; [`DfsError::NothingToRead`] when a
    /// directory or glob is there but holds no file to read.
    pub fn list(&self, url: &str) -> Result<Vec<FileStatus>, DfsError> {
        self.list_skipping(url).map(|(files, _)| files)
    }

    /// As [`Storage::list`], and the entries the listing passed over, sorted, so that a job
    /// can say what it did not read: those passed over for their names (`_` or `.` first: an
    /// earlier output's markers, hidden files, and directories with such names, each once,
    /// not what is below them), and directories below the one named that hold `_SUCCESS`
    /// (an earlier job's output, each once: [`SKIPPED_OUTPUT`]).
    ///
    /// # Errors
    /// As [`Storage::list`].
    pub fn list_skipping(&self, url: &str) -> Result<(Vec<FileStatus>, Vec<Skipped>), DfsError> {
        let p = DfsPath::parse(url)?;
        let mut names = Vec::new();
        let listed = dispatch!(self, p, list(&mut names));
        names.sort();
        names.dedup();
        let files = match listed {
            // Something is there: say what, rather than that nothing is.
            Err(DfsError::NotFound { .. }) if !names.is_empty() => {
                return Err(DfsError::NothingToRead {
                    path: url.to_string(),
                    why: format!(
                        "{} of its entries passed over for their names, starting with _ or . (hidden, or an earlier output's marker): {}{}",
                        names.len(),
                        names[..names.len().min(3)].join(", "),
                        if names.len() > 3 { ", ..." } else { "" }
                    ),
                });
            }
            Err(DfsError::NotFound { .. }) if p.backend == Backend::Local && p.local().is_dir() => {
                return Err(DfsError::NothingToRead {
                    path: url.to_string(),
                    why: "it is a directory with no file in it or below it".to_string(),
                });
            }
            other => other?,
        };
        let (files, outputs) = without_nested_outputs(&p, files, &mut names);
        if files.is_empty() {
            return Err(DfsError::NothingToRead {
                path: url.to_string(),
                why: format!(
                    "every file in it is inside an earlier job's output below it ({}{}): name such an output as an input to read it",
                    outputs[..outputs.len().min(3)].join(", "),
                    if outputs.len() > 3 { ", ..." } else { "" }
                ),
            });
        }
        let mut skipped: Vec<Skipped> = names
            .into_iter()
            .map(|path| Skipped {
                path,
                why: SKIPPED_NAME.to_string(),
            })
            .chain(outputs.into_iter().map(|path| Skipped {
                path,
                why: SKIPPED_OUTPUT.to_string(),
            }))
            .collect();
        skipped.sort();
        Ok((files, skipped))
    }

    /// What two paths naming the same file have in common: a local file's real path (links
    /// resolved), a remote file's URL.
    pub fn file_identity(&self, path: &str) -> String {
        match DfsPath::parse(path) {
            Ok(p) if p.backend == Backend::Local => std::fs::canonicalize(p.local())
                .map_or_else(|_| path.to_string(), |r| r.display().to_string()),
            _ => path.to_string(),
        }
    }

    /// Returns the names of the entries directly in the directory at `url` (files and
    /// directories, those starting with `_` or `.` too), in no particular order; none when
    /// nothing is there.
    ///
    /// # Errors
    /// Storage errors other than the directory being absent.
    pub fn entries(&self, url: &str) -> Result<Vec<String>, DfsError> {
        let p = DfsPath::parse(url)?;
        match dispatch!(self, p, entries()) {
            Err(DfsError::NotFound { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Returns the status of one file.
    pub fn stat(&self, url: &str) -> Result<FileStatus, DfsError> {
        let p = DfsPath::parse(url)?;
        dispatch!(self, p, stat())
    }

    /// Returns `len` bytes at `start` (fewer if the file ends first).
    pub fn read_range(&self, url: &str, start: u64, len: u64) -> Result<Bytes, DfsError> {
        let p = DfsPath::parse(url)?;
        dispatch!(self, p, read_range(start, len))
    }

    /// Returns the bytes of each of `ranges` (start, length) of one file, as
    /// [`Storage::read_range`] would one at a time; a local file is opened once for all.
    ///
    /// # Errors
    /// As [`Storage::read_range`], for the first range that fails.
    pub fn read_ranges(&self, url: &str, ranges: &[(u64, u64)]) -> Result<Vec<Bytes>, DfsError> {
        let p = DfsPath::parse(url)?;
        match &p.backend {
            Backend::Local => self.local.read_ranges(&p, ranges),
            Backend::SeaweedFs { .. } | Backend::S3 { .. } => ranges
                .iter()
                .map(|&(start, len)| self.read_range(url, start, len))
                .collect(),
        }
    }

    /// Returns the whole file.
    pub fn read_all(&self, url: &str) -> Result<Bytes, DfsError> {
        self.read_range(url, 0, u64::MAX)
    }

    /// Starts writing a file that appears at `url` only when [`Writer::commit`] is called.
    pub fn create(&self, url: &str) -> Result<Writer, DfsError> {
        let p = DfsPath::parse(url)?;
        dispatch!(self, p, create())
    }

    /// Writes a whole file atomically.
    pub fn write_all(&self, url: &str, data: &[u8]) -> Result<(), DfsError> {
        let mut w = self.create(url)?;
        w.write(data)?;
        w.commit()
    }

    /// Renames `from` to `to` atomically, replacing `to` if it is a file. Both must be on the
    /// same backend.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), DfsError> {
        let (f, t) = (DfsPath::parse(from)?, DfsPath::parse(to)?);
        if f.backend != t.backend {
            return Err(DfsError::InvalidPath {
                url: to.to_string(),
                reason: "a rename stays on one backend",
            });
        }
        match &f.backend {
            Backend::Local => self.local.rename(&f, &t),
            Backend::SeaweedFs { .. } => self.seaweedfs.rename(&f, &t),
            Backend::S3 { .. } => self.s3.rename(&f, &t),
        }
    }

    /// Deletes a file or a directory tree; deleting nothing is not an error.
    pub fn delete(&self, url: &str) -> Result<(), DfsError> {
        let p = DfsPath::parse(url)?;
        dispatch!(self, p, delete())
    }

    /// Returns true if something exists at `url`.
    pub fn exists(&self, url: &str) -> Result<bool, DfsError> {
        let p = DfsPath::parse(url)?;
        match &p.backend {
            Backend::Local => Ok(self.local.exists(&p)),
            Backend::SeaweedFs { .. } => self.seaweedfs.exists(&p),
            Backend::S3 { .. } => self.s3.exists(&p),
        }
    }

    /// Returns what `url` names: nothing, a file, or a directory and whether it is empty.
    ///
    /// # Errors
    /// Storage errors other than the path being absent.
    pub fn probe(&self, url: &str) -> Result<PathKind, DfsError> {
        let p = DfsPath::parse(url)?;
        dispatch!(self, p, probe())
    }

    /// Returns the pieces of a file and the hosts that hold each one.
    pub fn locations(&self, url: &str) -> Result<Vec<Piece>, DfsError> {
        let p = DfsPath::parse(url)?;
        dispatch!(self, p, locations())
    }

    /// Joins a child name onto a directory URL.
    pub fn join(dir: &str, name: &str) -> String {
        format!("{}/{}", dir.trim_end_matches('/'), name)
    }
}

/// An entry under a listed path that was not listed as input, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Skipped {
    /// Its URL (a local path for local files).
    pub path: String,
    /// Why it was passed over.
    pub why: String,
}

/// Why an entry whose name starts with `_` or `.` is not input.
pub const SKIPPED_NAME: &str =
    "its name starts with _ or . (hidden, or an earlier output's marker)";

/// Why a directory below a listed one is not input: it holds `_SUCCESS`.
pub const SKIPPED_OUTPUT: &str = "an earlier job's output (it holds _SUCCESS) below the input named: name it as an input itself to read it";

/// Takes out of `files` those inside a directory that holds `_SUCCESS` (an earlier job's
/// output, of Quern or of any engine that marks its outputs so) below the level `listed`
/// names, and returns them with those directories, outermost only. A job's output written
/// inside its input directory would otherwise be read as input by the next run over that
/// directory. The directory `listed` names (or, for a glob, each it matches) is read whatever
/// it holds: naming an output reads it. The markers of the directories taken out leave
/// `markers`, which stand for them.
fn without_nested_outputs(
    listed: &DfsPath,
    files: Vec<FileStatus>,
    markers: &mut Vec<String>,
) -> (Vec<FileStatus>, Vec<String>) {
    let parent = |path: &str| path.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
    let named = listed.path.trim_end_matches('/').to_string();
    let glob = named.rsplit('/').next().unwrap_or("").contains(['*', '?']);
    let mut outputs: Vec<String> = markers
        .iter()
        .filter_map(|m| m.strip_suffix("/_SUCCESS"))
        .filter(|dir| {
            // Compared as parsed paths, so that each backend's spelling of a URL agrees.
            let Ok(at) = DfsPath::parse(dir) else {
                return false;
            };
            let at = at.path.trim_end_matches('/');
            if glob {
                parent(at) != parent(&named)
            } else {
                at != named
            }
        })
        .map(str::to_string)
        .collect();
    // Outermost only: an output inside another goes with it.
    let all = outputs.clone();
    outputs.retain(|dir| !all.iter().any(|o| dir.starts_with(&format!("{o}/"))));
    if outputs.is_empty() {
        return (files, outputs);
    }
    let inside = |path: &str| {
        outputs.iter().any(|dir| {
            path.strip_prefix(dir.as_str())
                .is_some_and(|r| r.starts_with('/'))
        })
    };
    markers.retain(|m| !inside(m));
    let files = files.into_iter().filter(|f| !inside(&f.path)).collect();
    (files, outputs)
}

/// Returns the name this machine's storage host goes by, for locality of local files.
pub fn local_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// Returns true for names listed as data: not hidden (`.`) and not metadata (`_`).
pub(crate) fn is_data_file(name: &str) -> bool {
    !(name.starts_with('_') || name.starts_with('.'))
}

/// Returns true when a glob in a listing's last component takes `name`: it matches, and it
/// is a data name unless the pattern itself names hidden or metadata files (`_*`, `.*`). A
/// name it matches but passes over for its name goes into `skipped` as `path`.
pub(crate) fn glob_names(pattern: &str, name: &str, path: &str, skipped: &mut Vec<String>) -> bool {
    if !glob_match(pattern.as_bytes(), name.as_bytes()) {
        return false;
    }
    let take = is_data_file(name) || !is_data_file(pattern);
    if !take {
        skipped.push(path.to_string());
    }
    take
}

/// Matches a file name against a glob of `*` and `?`.
pub(crate) fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    match (pattern.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pattern[1..], name) || (!name.is_empty() && glob_match(pattern, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pattern[1..], &name[1..]),
        (Some(p), Some(n)) if p == n => glob_match(&pattern[1..], &name[1..]),
        _ => false,
    }
}
