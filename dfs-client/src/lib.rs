//! One storage API for Quern over the file systems it runs on.
//!
//! The engine never implements its own file system: it is a client of real storage. A path is
//! a URL whose scheme picks the backend; this crate offers list, stat, read a byte range, write
//! a file that becomes visible atomically, rename, delete, and [`Storage::locations`], which says
//! which hosts hold each piece of a file so the scheduler can place work beside its data.
//!
//! Layout:
//! - [`local`]: plain paths and `file://` URLs (the embedded default); reads are memory-mapped;
//! - [`path`]: URL parsing and validation.
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

pub mod local;
pub mod path;

use std::io;
use std::path::PathBuf;

use bytes::Bytes;

pub use local::LocalWriter;
pub use path::{Backend, DfsPath};

/// Errors from any storage backend.
#[derive(Debug, thiserror::Error)]
pub enum DfsError {
    /// The path has a scheme no backend serves.
    #[error(
        "unsupported storage scheme in {url:?}: this build serves plain paths and file:// URLs"
    )]
    UnsupportedScheme {
        /// The offending URL.
        url: String,
    },
    /// The path is malformed or tries to escape its root.
    #[error("invalid storage path {url:?}: {reason}")]
    InvalidPath {
        /// The offending URL.
        url: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Nothing exists at the path.
    #[error("no such file: {path}")]
    NotFound {
        /// The missing path.
        path: String,
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
    /// An I/O error from the backend.
    #[error("storage i/o error on {}", .path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
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
}

/// A piece of a file and the hosts holding a replica of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    /// Offset of the piece in the file.
    pub offset: u64,
    /// Length of the piece.
    pub len: u64,
    /// Storage hosts that hold a replica.
    pub hosts: Vec<String>,
}

/// The storage client: routes each call to the backend its URL names.
#[derive(Clone, Debug, Default)]
pub struct Storage {
    local: local::LocalBackend,
}

impl Storage {
    fn resolve(&self, url: &str) -> Result<(DfsPath, &local::LocalBackend), DfsError> {
        let p = DfsPath::parse(url)?;
        match p.backend {
            Backend::Local => Ok((p, &self.local)),
        }
    }

    /// Returns the files at `url`: the file itself, the data files of a directory (sorted,
    /// skipping names that start with `_` or `.`), or the files whose name matches a glob
    /// (`*`, `?`) in the last path component.
    ///
    /// # Errors
    /// [`DfsError::NotFound`] when nothing matches.
    pub fn list(&self, url: &str) -> Result<Vec<FileStatus>, DfsError> {
        let (p, b) = self.resolve(url)?;
        b.list(&p)
    }

    /// Returns the status of one file.
    pub fn stat(&self, url: &str) -> Result<FileStatus, DfsError> {
        let (p, b) = self.resolve(url)?;
        b.stat(&p)
    }

    /// Returns `len` bytes at `start` (fewer if the file ends first).
    pub fn read_range(&self, url: &str, start: u64, len: u64) -> Result<Bytes, DfsError> {
        let (p, b) = self.resolve(url)?;
        b.read_range(&p, start, len)
    }

    /// Returns the whole file.
    pub fn read_all(&self, url: &str) -> Result<Bytes, DfsError> {
        self.read_range(url, 0, u64::MAX)
    }

    /// Starts writing a file that appears at `url` only when [`LocalWriter::commit`] is called.
    pub fn create(&self, url: &str) -> Result<LocalWriter, DfsError> {
        let (p, b) = self.resolve(url)?;
        b.create(&p)
    }

    /// Writes a whole file atomically.
    pub fn write_all(&self, url: &str, data: &[u8]) -> Result<(), DfsError> {
        let mut w = self.create(url)?;
        w.write(data)?;
        w.commit()
    }

    /// Renames `from` to `to` atomically, replacing `to` if it is a file.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), DfsError> {
        let (f, b) = self.resolve(from)?;
        let (t, _) = self.resolve(to)?;
        b.rename(&f, &t)
    }

    /// Deletes a file or a directory tree; deleting nothing is not an error.
    pub fn delete(&self, url: &str) -> Result<(), DfsError> {
        let (p, b) = self.resolve(url)?;
        b.delete(&p)
    }

    /// Returns true if something exists at `url`.
    pub fn exists(&self, url: &str) -> Result<bool, DfsError> {
        let (p, b) = self.resolve(url)?;
        Ok(b.exists(&p))
    }

    /// Returns the pieces of a file and the hosts that hold each one.
    pub fn locations(&self, url: &str) -> Result<Vec<Piece>, DfsError> {
        let (p, b) = self.resolve(url)?;
        b.locations(&p)
    }

    /// Joins a child name onto a directory URL.
    pub fn join(dir: &str, name: &str) -> String {
        format!("{}/{}", dir.trim_end_matches('/'), name)
    }
}

/// Returns the name this machine's storage host goes by, for locality.
pub fn local_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
