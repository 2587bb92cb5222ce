//! One process per state or worker directory: an exclusive advisory lock (`flock`) on a file
//! in the directory, held for the life of the process that owns the directory.
//!
//! Two coordinators replaying one journal, or two workers sharing one shuffle directory,
//! corrupt each other's state without a word; so the second process refuses to start and
//! names the PID that holds the lock. The lock file keeps that PID as text. The kernel drops
//! the lock when its holder exits, however it exits, so a stale file from a crashed process
//! never blocks a restart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// A held directory lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

/// Why a directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum DirLockError {
    /// Another process holds the lock.
    #[error("{} is in use by process {pid} (it holds {}); stop it or use another directory", .dir.display(), .lock.display())]
    Held {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
        /// The holder's PID as its lock file says (`unknown` if unreadable).
        pid: String,
    },
    /// The lock file could not be made or locked.
    #[error("cannot lock {}", .lock.display())]
    Io {
        /// The lock file.
        lock: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl DirLock {
    /// Locks `dir` (made if missing) for this process through the file `dir/name`.
    ///
    /// # Errors
    /// [`DirLockError::Held`] naming the holder's PID when another process has it.
    pub fn acquire(dir: &Path, name: &str) -> Result<DirLock, DirLockError> {
        let lock = dir.join(name);
        let io = |source| DirLockError::Io {
            lock: lock.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(DirLockError::Held {
                    dir: dir.to_path_buf(),
                    lock,
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid.into()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock {
            _file: file,
            path: lock,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path(), "x.lock").unwrap();
        let err = DirLock::acquire(dir.path(), "x.lock").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("process {}", std::process::id())),
            "{msg}"
        );
        assert!(DirLock::acquire(dir.path(), "other.lock").is_ok());
        drop(held);
        DirLock::acquire(dir.path(), "x.lock").unwrap();
    }
}
