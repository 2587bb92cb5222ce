//! The local-file backend: the embedded default. Reads are memory-mapped, so a split of a file
//! in the page cache costs no copy; writes go to a hidden temporary beside the target and are
//! renamed into place, which is atomic on POSIX file systems.

use std::collections::HashSet;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::writer::Writer;
use crate::{glob_names, is_data_file, DfsError, DfsPath, FileStatus, Piece};

/// Serves plain paths and `file://` URLs.
#[derive(Clone, Debug, Default)]
pub struct LocalBackend;

fn status(path: &Path) -> Result<FileStatus, DfsError> {
    let meta = fs::metadata(path).map_err(|e| DfsError::io(path, e))?;
    Ok(FileStatus {
        path: path.display().to_string(),
        len: meta.len(),
        mtime_ms: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64),
    })
}

/// Adds the data files under `dir`, recursively: names starting with `_` or `.` are skipped
/// at every level, symbolic links are followed, except a link to a directory that holds the
/// link (a loop, skipped with a warning), and a directory reached twice is read once.
fn walk(
    dir: &Path,
    seen: &mut HashSet<PathBuf>,
    out: &mut Vec<FileStatus>,
    skipped: &mut Vec<String>,
) -> Result<(), DfsError> {
    let real = fs::canonicalize(dir).map_err(|e| DfsError::io(dir, e))?;
    if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        let holder = dir
            .parent()
            .and_then(|p| fs::canonicalize(p).ok())
            .unwrap_or_default();
        if holder.starts_with(&real) {
            tracing::warn!(link = %dir.display(), target = %real.display(), "input link loop skipped");
            return Ok(());
        }
    }
    if !seen.insert(real) {
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(|e| DfsError::io(dir, e))? {
        let entry = entry.map_err(|e| DfsError::io(dir, e))?;
        let n = entry.file_name().to_string_lossy().into_owned();
        let child = dir.join(&n);
        if !is_data_file(&n) {
            skipped.push(child.display().to_string());
            continue;
        }
        if child.is_dir() {
            walk(&child, seen, out, skipped)?;
        } else if child.is_file() {
            out.push(status(&child)?);
        } else {
            // A broken link, a socket or a FIFO: named as input, and not readable as data.
            return Err(DfsError::InvalidPath {
                url: child.display().to_string(),
                reason: "an input entry is neither a file nor a directory (a broken link?)",
            });
        }
    }
    Ok(())
}

impl LocalBackend {
    pub(crate) fn list(
        &self,
        p: &DfsPath,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<FileStatus>, DfsError> {
        let path = &p.local();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        if name.contains(['*', '?']) {
            let dir = path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            for entry in fs::read_dir(dir).map_err(|e| DfsError::io(dir, e))? {
                let entry = entry.map_err(|e| DfsError::io(dir, e))?;
                let n = entry.file_name().to_string_lossy().into_owned();
                let child = dir.join(&n);
                if glob_names(&name, &n, &child.display().to_string(), skipped) {
                    if child.is_dir() {
                        walk(&child, &mut seen, &mut out, skipped)?;
                    } else if child.is_file() {
                        out.push(status(&child)?);
                    }
                }
            }
        } else if path.is_dir() {
            walk(path, &mut seen, &mut out, skipped)?;
        } else {
            out.push(status(path)?);
        }
        if out.is_empty() {
            return Err(DfsError::NotFound {
                path: path.display().to_string(),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    pub(crate) fn stat(&self, p: &DfsPath) -> Result<FileStatus, DfsError> {
        status(&p.local())
    }

    pub(crate) fn read_range(&self, p: &DfsPath, start: u64, len: u64) -> Result<Bytes, DfsError> {
        let (path, file, file_len) = open_to_read(p)?;
        let end = range_end(p, start, len, file_len)?;
        if end == start {
            return Ok(Bytes::new());
        }
        // SAFETY: the map is read-only; Quern writes files only through atomic renames, so a
        // mapped file is never truncated underneath a reader by Quern itself.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DfsError::io(&path, e))?;
        Ok(Bytes::from_owner(map).slice(start as usize..end as usize))
    }

    /// Small ranges of one file, read into memory (a map of the whole file for each would
    /// cost more than the copy).
    pub(crate) fn read_ranges(
        &self,
        p: &DfsPath,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<Bytes>, DfsError> {
        use std::os::unix::fs::FileExt;
        let (path, file, file_len) = open_to_read(p)?;
        ranges
            .iter()
            .map(|&(start, len)| {
                let end = range_end(p, start, len, file_len)?;
                let mut buf = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut buf, start)
                    .map_err(|e| DfsError::io(&path, e))?;
                Ok(Bytes::from(buf))
            })
            .collect()
    }

    pub(crate) fn create(&self, p: &DfsPath) -> Result<Writer, DfsError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let target = p.local();
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| DfsError::io(dir, e))?;
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = target.with_file_name(format!(
            ".{name}.tmp-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // Beside the target, so the commit is a rename within one file system: atomic.
        Writer::new(
            tmp,
            Box::new(move |tmp| fs::rename(tmp, &target).map_err(|e| DfsError::io(&target, e))),
        )
    }

    pub(crate) fn rename(&self, from: &DfsPath, to: &DfsPath) -> Result<(), DfsError> {
        let (from, to) = (from.local(), to.local());
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| DfsError::io(dir, e))?;
        }
        fs::rename(&from, &to).map_err(|e| DfsError::io(&from, e))
    }

    pub(crate) fn delete(&self, p: &DfsPath) -> Result<(), DfsError> {
        let path = p.local();
        let res = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
            Ok(_) => fs::remove_file(&path),
            Err(_) => return Ok(()),
        };
        match res {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DfsError::io(&path, e)),
            _ => Ok(()),
        }
    }

    pub(crate) fn entries(&self, p: &DfsPath) -> Result<Vec<String>, DfsError> {
        let path = p.local();
        // A missing directory is `DfsError::NotFound`, which `Storage::entries` takes as empty.
        let dir = fs::read_dir(&path).map_err(|e| DfsError::io(&path, e))?;
        dir.map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| DfsError::io(&path, e))
        })
        .collect()
    }

    pub(crate) fn probe(&self, p: &DfsPath) -> Result<crate::PathKind, DfsError> {
        let path = p.local();
        match fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(crate::PathKind::Missing),
            Err(e) => Err(DfsError::io(&path, e)),
            Ok(m) if m.is_dir() => {
                let mut entries = fs::read_dir(&path).map_err(|e| DfsError::io(&path, e))?;
                let some_entry = match entries.next() {
                    Some(e) => Some(
                        e.map_err(|e| DfsError::io(&path, e))?
                            .file_name()
                            .to_string_lossy()
                            .into_owned(),
                    ),
                    None => None,
                };
                Ok(crate::PathKind::Directory { some_entry })
            }
            Ok(_) => Ok(crate::PathKind::File),
        }
    }

    pub(crate) fn exists(&self, p: &DfsPath) -> bool {
        p.local().exists()
    }

    pub(crate) fn locations(&self, p: &DfsPath) -> Result<Vec<Piece>, DfsError> {
        let st = status(&p.local())?;
        Ok(vec![Piece {
            offset: 0,
            len: st.len,
            hosts: vec![crate::local_host()],
        }])
    }
}

/// A file opened to read: its local path, the file and its length.
fn open_to_read(p: &DfsPath) -> Result<(PathBuf, File, u64), DfsError> {
    let path = p.local();
    let file = File::open(&path).map_err(|e| DfsError::io(&path, e))?;
    let file_len = file.metadata().map_err(|e| DfsError::io(&path, e))?.len();
    Ok((path, file, file_len))
}

/// Where a read of `len` bytes at `start` of a file of `file_len` bytes ends (at the file's
/// end if that comes first); a start past the end is an error.
fn range_end(p: &DfsPath, start: u64, len: u64, file_len: u64) -> Result<u64, DfsError> {
    if start > file_len {
        return Err(DfsError::OutOfRange {
            path: p.path.clone(),
            start,
            end: start.saturating_add(len),
            len: file_len,
        });
    }
    Ok(start.saturating_add(len).min(file_len))
}

#[cfg(test)]
mod tests {
    use crate::{DfsError, Storage};

    #[test]
    fn writes_appear_only_on_commit_and_read_back_by_range() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::default();
        let path = dir.path().join("out/part-0").display().to_string();
        let mut w = s.create(&path).unwrap();
        w.write(b"hello world").unwrap();
        assert!(!s.exists(&path).unwrap());
        w.commit().unwrap();
        assert_eq!(&s.read_range(&path, 6, 100).unwrap()[..], b"world");
        assert_eq!(s.stat(&path).unwrap().len, 11);
        let dropped = dir.path().join("out/part-1").display().to_string();
        s.create(&dropped).unwrap().write(b"x").unwrap();
        assert!(!s.exists(&dropped).unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            1
        );
    }

    #[test]
    fn lists_directories_and_globs_sorted_skipping_hidden() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["b.log", "a.log", "_SUCCESS", ".hidden", "c.txt"] {
            std::fs::write(dir.path().join(n), n).unwrap();
        }
        let s = Storage::default();
        let d = dir.path().display().to_string();
        let names = |v: Vec<crate::FileStatus>| {
            v.into_iter()
                .map(|f| f.path.rsplit('/').next().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        std::fs::create_dir_all(dir.path().join("_temporary/x")).unwrap();
        std::fs::write(dir.path().join("_temporary/x/part-0"), "x").unwrap();
        std::fs::write(dir.path().join(".a.log"), "x").unwrap();
        assert_eq!(names(s.list(&d).unwrap()), ["a.log", "b.log", "c.txt"]);
        // What was passed over is said, each hidden directory once (not what it holds).
        let (files, skipped) = s.list_skipping(&d).unwrap();
        assert_eq!(names(files), ["a.log", "b.log", "c.txt"]);
        let skipped: Vec<_> = skipped
            .iter()
            .map(|k| k.path.strip_prefix(&format!("{d}/")).unwrap())
            .collect();
        assert_eq!(skipped, [".a.log", ".hidden", "_SUCCESS", "_temporary"]);

        assert_eq!(
            names(s.list(&format!("{d}/*.log")).unwrap()),
            ["a.log", "b.log"]
        );
        // A glob passes over the hidden names it matches, and only those.
        let (_, skipped) = s.list_skipping(&format!("{d}/*.log")).unwrap();
        assert_eq!(skipped[0].path, format!("{d}/.a.log"));
        // A link names the same file as its target.
        std::os::unix::fs::symlink("a.log", dir.path().join("z.log")).unwrap();
        assert_eq!(
            s.file_identity(&format!("{d}/z.log")),
            s.file_identity(&format!("{d}/a.log"))
        );
        assert!(matches!(
            s.list(&format!("{d}/*.csv")),
            Err(DfsError::NotFound { .. })
        ));
        // Something there with nothing to read says what, rather than that nothing is.
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(empty.join("sub")).unwrap();
        let err = s.list(&empty.display().to_string()).unwrap_err();
        assert!(
            err.to_string().ends_with(
                "holds no file to read: it is a directory with no file in it or below it"
            ),
            "{err}"
        );
        let hidden = dir.path().join("hidden");
        std::fs::create_dir_all(&hidden).unwrap();
        for n in [".a", "_b", ".c", "_d"] {
            std::fs::write(hidden.join(n), n).unwrap();
        }
        let err = s.list(&hidden.display().to_string()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DfsError::NothingToRead { .. }), "{err}");
        let h = hidden.display();
        assert!(
            text.contains(&format!(
                "4 of its entries passed over for their names, starting with _ or . (hidden, or an earlier output's marker): {h}/.a, {h}/.c, {h}/_b, ..."
            )),
            "{text}"
        );
    }

    #[test]
    fn reading_past_the_end_is_an_error_and_missing_files_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::default();
        let p = dir.path().join("f").display().to_string();
        s.write_all(&p, b"abc").unwrap();
        assert!(matches!(
            s.read_range(&p, 4, 1),
            Err(DfsError::OutOfRange { .. })
        ));
        assert!(s.read_range(&p, 3, 1).unwrap().is_empty());
        let missing = dir.path().join("nope").display().to_string();
        assert!(matches!(s.stat(&missing), Err(DfsError::NotFound { .. })));
        s.delete(&missing).unwrap();
    }

    #[test]
    fn many_ranges_read_as_one_range_at_a_time_would() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::default();
        let p = dir.path().join("f").display().to_string();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        s.write_all(&p, &data).unwrap();
        let ranges = [(0, 10), (9_990, 100), (4_096, 4_096), (10_000, 5), (17, 0)];
        let got = s.read_ranges(&p, &ranges).unwrap();
        for (&(start, len), got) in ranges.iter().zip(&got) {
            assert_eq!(got, &s.read_range(&p, start, len).unwrap());
        }
        assert_eq!(got[1].len(), 10);
        assert!(matches!(
            s.read_ranges(&p, &[(0, 1), (10_001, 1)]),
            Err(DfsError::OutOfRange { .. })
        ));
    }
}
