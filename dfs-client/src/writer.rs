//! Writing a file that becomes visible atomically.
//!
//! Bytes go to a hidden temporary file (beside the target for local files, in the system's
//! temporary directory for remote stores); [`Writer::commit`] makes them visible at once: a
//! rename for local files, an upload to a temporary name and a filer rename for SeaweedFS, a
//! single (multipart) put for S3, where an object appears whole or not at all.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use crate::DfsError;

/// Makes the temporary file visible at its target.
pub(crate) type Committer = Box<dyn FnOnce(&std::path::Path) -> Result<(), DfsError> + Send>;

/// A file being written.
pub struct Writer {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    written: u64,
    commit: Option<Committer>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("tmp", &self.tmp)
            .field("written", &self.written)
            .finish()
    }
}

impl Writer {
    pub(crate) fn new(tmp: PathBuf, commit: Committer) -> Result<Self, DfsError> {
        let file = File::create(&tmp).map_err(|e| DfsError::io(&tmp, e))?;
        // Megabyte buffers: very large write() calls are slow on these VMs, tiny ones cost syscalls.
        Ok(Writer {
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            written: 0,
            commit: Some(commit),
        })
    }

    /// Appends bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<(), DfsError> {
        let out = self.out.as_mut().expect("writer used after commit");
        out.write_all(data)
            .map_err(|e| DfsError::io(&self.tmp, e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Returns the bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes, syncs and makes the file visible at its path.
    pub fn commit(mut self) -> Result<(), DfsError> {
        let out = self.out.take().expect("writer committed twice");
        let file = out
            .into_inner()
            .map_err(|e| DfsError::io(&self.tmp, e.into_error()))?;
        file.sync_data().map_err(|e| DfsError::io(&self.tmp, e))?;
        drop(file);
        let commit = self.commit.take().expect("committer present until commit");
        let res = commit(&self.tmp);
        let _ = std::fs::remove_file(&self.tmp);
        res
    }
}

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Writer::write(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Returns a fresh temporary path in the system's temporary directory.
pub(crate) fn spool_path() -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        ".quern-upload-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}
