//! The task runtime: how map output is sorted, spilled, stored and merged, and how a reduce
//! consumes it.
//!
//! Data path of one job:
//!
//! ```text
//! split bytes --map--> MapBuffer (combine in a hash table, or append to an arena)
//!     --sort by (partition, key)--> spill runs (shuffle files) --merge--> one map output file
//! map output files --(fetch partition p of each)--> Merger (k-way, ties by map index)
//!     --group by key--> reduce --> part file
//! ```
//!
//! Layout:
//! - [`format`]: the shuffle/spill file: compressed, checksummed blocks plus a partition index;
//! - [`map`]: the map-side buffer and [`map::run_map`];
//! - [`merge`]: the k-way merge of sorted runs;
//! - [`reduce`]: [`reduce::run_reduce`];
//! - `table`: the map-side combining hash table.

pub mod format;
pub mod map;
pub mod merge;
pub mod reduce;
pub(crate) mod table;

use std::path::PathBuf;

use protocol::FailureKind;

pub use format::{FormatError, Run};

/// Errors that end a task attempt.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Reading input or writing output failed.
    #[error(transparent)]
    Storage(#[from] dfs_client::DfsError),
    /// An input file cannot be read whole (a corrupt or truncated compressed file).
    #[error("{0}")]
    Input(String),
    /// Shuffle or spill data is corrupt.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A key or value could not be decoded.
    #[error(transparent)]
    Codec(#[from] crate::sdk::CodecError),
    /// A local file (spill, map output) could not be written or read.
    #[error("task i/o error on {}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The job's own code panicked.
    #[error("job code panicked{}: {message}", .record.map(|o| format!(" on the record at input offset {o}")).unwrap_or_default())]
    Panicked {
        /// The panic message.
        message: String,
        /// The input offset of the record the map function was given, if it was a map.
        record: Option<u64>,
    },
    /// The job name or its parameters are not valid.
    #[error(transparent)]
    Job(#[from] crate::registry::JobError),
    /// The job's per-task setup failed (a model or lookup table could not be loaded).
    #[error("job setup failed")]
    Setup(#[source] crate::sdk::HookError),
    /// The job's part writer ([`crate::Job::part_writer`]) could not encode a reduce's output.
    #[error("the job's part writer failed")]
    PartWriter(#[source] crate::sdk::HookError),
    /// The job's [`crate::Job::map_end`] failed.
    #[error("the job's map_end failed")]
    MapEnd(#[source] crate::sdk::HookError),
}

impl From<crate::input::InputError> for TaskError {
    fn from(e: crate::input::InputError) -> Self {
        match e {
            crate::input::InputError::Storage(e) => TaskError::Storage(e),
            crate::input::InputError::Scratch { dir, source, .. } => {
                TaskError::Io { path: dir, source }
            }
            e @ (crate::input::InputError::Corrupt { .. }
            | crate::input::InputError::Unnamed { .. }
            | crate::input::InputError::Wide { .. }
            | crate::input::InputError::Changed { .. }) => TaskError::Input(e.to_string()),
        }
    }
}

/// Storage errors that no retry can mend: the path is not a directory (or is one), permission
/// is denied, the file system is read-only, or the name is invalid. A job hitting one fails at
/// once with the cause instead of spending its attempts.
fn is_permanent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::NotADirectory
            | K::IsADirectory
            | K::PermissionDenied
            | K::ReadOnlyFilesystem
            | K::InvalidFilename
    )
}

impl TaskError {
    /// Returns how the coordinator should treat this failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            TaskError::Job(_) | TaskError::Input(_) | TaskError::PartWriter(_) => {
                FailureKind::Fatal
            }
            TaskError::Storage(dfs_client::DfsError::Io { source, .. }) if is_permanent(source) => {
                FailureKind::Fatal
            }
            TaskError::Storage(dfs_client::DfsError::UnsupportedScheme { .. })
            | TaskError::Storage(dfs_client::DfsError::InvalidPath { .. }) => FailureKind::Fatal,
            _ => FailureKind::Retryable,
        }
    }

    /// Returns true if the error comes from a full disk (ENOSPC anywhere in its causes).
    pub fn is_no_space(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::StorageFull {
                    return true;
                }
            }
            cause = e.source();
        }
        false
    }

    /// Returns the message a person should see: a full disk says so first.
    pub fn report(&self) -> String {
        if self.is_no_space() {
            format!("no space left on the worker's disk: {}", error_chain(self))
        } else {
            error_chain(self)
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TaskError::Io {
            path: path.into(),
            source,
        }
    }
}

pub use protocol::error_chain;

/// Skip mode's rule (`--max-bad-records`), the same on a cluster and in `quern run --local`:
/// a record the map panicked on twice is skipped by the task's later attempts, while the job
/// has skipped fewer than its limit.
#[derive(Clone, Debug, Default)]
pub struct SkipMode {
    panics: std::collections::BTreeMap<u64, u32>,
    skip: Vec<u64>,
}

impl SkipMode {
    /// Notes a panic on the record at input offset `offset`, the job having skipped
    /// `skipped` records of at most `limit`; returns true when the record is skipped from
    /// now on.
    pub fn panicked(&mut self, offset: u64, skipped: usize, limit: u64) -> bool {
        let n = self.panics.entry(offset).or_default();
        *n += 1;
        if *n < 2 || skipped as u64 >= limit {
            return false;
        }
        self.skip.push(offset);
        self.skip.sort_unstable();
        true
    }

    /// The offsets later attempts skip, sorted ([`map::MapConfig::skip`]).
    pub fn skipped(&self) -> &[u64] {
        &self.skip
    }
}

/// One map attempt over a split's `input` into `out`, the same on a worker's executor and in
/// `quern run --local`: a panic in job code becomes [`TaskError::Panicked`] with the input
/// offset of the record being mapped (what skip mode keys on).
///
/// # Errors
/// What the map run failed with, or the panic.
pub fn map_attempt(
    job: &mut dyn crate::DynJob,
    input: &[u8],
    cfg: &map::MapConfig,
    out: &std::path::Path,
) -> Result<crate::sdk::Counters, TaskError> {
    let current = std::cell::Cell::new(map::Mapping::Record(cfg.base_offset));
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        job.run_map(input, cfg, out, &current)
    }))
    .unwrap_or_else(|p| {
        let message = panic_message(&*p);
        Err(match current.get() {
            map::Mapping::Record(offset) => TaskError::Panicked {
                message,
                record: Some(offset),
            },
            // No one record to blame: skip mode maps line by line (`MapConfig::skip_mode`).
            map::Mapping::Lines { start, end } => TaskError::Panicked {
                message: format!(
                    "{message} (mapping the lines at input offsets {start} to {end} as one block)"
                ),
                record: None,
            },
        })
    })
}

/// Makes the allocator keep memory a task frees for the next task of this process, instead of
/// handing it back to the kernel. Tasks allocate their large buffers (an input split read
/// from the network, the map's sort buffer, spill and merge buffers: tens of MiB each) again
/// and again; glibc serves large allocations (over 128 KiB at first, over at most 32 MiB as
/// it adapts) with a fresh `mmap` and returns them with `munmap`, so every task faulted all
/// its memory in again, 4 KiB at a time, and the kernel zeroed it first. Peak memory stays
/// what it was (the buffers are the same); between tasks the process keeps its peak.
/// Measured on `views` over SeaweedFS: about 20% faster (docs/PERFORMANCE.md).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets glibc's thresholds; called before the first task allocates.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Returns the message of a caught panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
