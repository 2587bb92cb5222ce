//! Coverage: what an output read, so a later run can read only what is new.
//!
//! Every committed output records in its manifest, for each input file, the byte range it
//! covered (always from byte 0: an incremental run's coverage is the whole history it
//! continues), the file's size and modification time then, and a fingerprint of the covered
//! bytes. An incremental run (`--from PREVIOUS`) checks each covered file against its record
//! without reading it whole:
//!
//! - a file now shorter than its covered range **shrank** (truncated, rotated in place);
//! - a file whose covered bytes no longer match the fingerprint was **rewritten**;
//! - a covered file no longer among the inputs is **gone**;
//! - a file read whole (compressed, or a whole-file format such as tar shards) that changed in
//!   any way cannot be continued: a compressed stream cannot be entered where the last run
//!   stopped;
//! - a covered range that ended without a line terminator ended inside a line: if the file
//!   grew, that line's start was read as a whole line, so it **grew inside a line**.
//!
//! Each of these refuses the run, naming the file (or, with `--full-if-changed`, runs in
//! full). Files that only grew are read from where the coverage ends; files not covered are
//! read whole.
//!
//! The fingerprint is `sha256:` and the hex SHA-256 of the covered range's first and last
//! [`FINGERPRINT_EDGE`] bytes (of the whole range when it is at most twice that), so checking
//! a file costs at most two small reads however large it is.

use std::collections::HashMap;

use dfs_client::{DfsError, FileStatus, Storage};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::output::{self, Manifest};

/// How many bytes at each end of a covered range the fingerprint hashes.
pub const FINGERPRINT_EDGE: u64 = 4096;

/// One input file an output covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoveredFile {
    /// The file, as the input listing names it.
    pub path: String,
    /// First covered byte (0).
    pub start: u64,
    /// One past the last covered byte.
    pub end: u64,
    /// The file's size when it was planned.
    pub size: u64,
    /// Its modification time then, in milliseconds since the Unix epoch, where storage says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime_unix_ms: Option<u64>,
    /// `sha256:<hex>` of the covered range's first and last [`FINGERPRINT_EDGE`] bytes.
    pub fingerprint: String,
    /// Read whole (compressed, or a whole-file input format): it can only be covered whole.
    #[serde(default, skip_serializing_if = "is_false")]
    pub whole: bool,
    /// The covered range ends inside a line (no terminator at its end).
    #[serde(default, skip_serializing_if = "is_false")]
    pub open_line: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Whether `path` is read whole by a job whose input format is `format`.
pub fn read_whole(path: &str, format: crate::InputFormat) -> bool {
    format.whole_files() || crate::input::Codec::of(path).is_some()
}

/// Returns the fingerprint of `path`'s first `end` bytes and whether they end inside a line.
///
/// # Errors
/// Storage errors; [`DfsError::OutOfRange`]-like errors if the file is shorter than `end`.
pub fn fingerprint(storage: &Storage, path: &str, end: u64) -> Result<(String, bool), DfsError> {
    let mut h = Sha256::new();
    let ranges = if end <= 2 * FINGERPRINT_EDGE {
        vec![(0, end)]
    } else {
        vec![
            (0, FINGERPRINT_EDGE),
            (end - FINGERPRINT_EDGE, FINGERPRINT_EDGE),
        ]
    };
    let mut last = None;
    for (start, len) in ranges {
        let bytes = storage.read_range(path, start, len)?;
        if (bytes.len() as u64) < len {
            // Shorter than its record: report it as the range it could not read.
            return Err(DfsError::OutOfRange {
                path: path.to_string(),
                start,
                end: start + len,
                len: start + bytes.len() as u64,
            });
        }
        h.update(&bytes);
        last = bytes.last().copied();
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((format!("sha256:{hex}"), last.is_some_and(|b| b != b'\n')))
}

/// Records `file` as covered from its start to its current length.
///
/// # Errors
/// Storage errors.
pub fn cover(
    storage: &Storage,
    file: &FileStatus,
    format: crate::InputFormat,
) -> Result<CoveredFile, DfsError> {
    let whole = read_whole(&file.path, format);
    let (fingerprint, open_line) = fingerprint(storage, &file.path, file.len)?;
    Ok(CoveredFile {
        path: file.path.clone(),
        start: 0,
        end: file.len,
        size: file.len,
        mtime_unix_ms: file.mtime_ms,
        fingerprint,
        whole,
        open_line: open_line && !whole,
    })
}

/// Why an incremental run cannot continue an earlier output: a covered input file changed
/// in a way it cannot continue, or the output was written by another definition of the job.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Change {
    /// Shorter than the range covered.
    #[error("input {path} shrank: {from} covered its first {covered} bytes, it now has {now}")]
    Shrank {
        /// The file.
        path: String,
        /// The earlier output.
        from: String,
        /// Bytes covered there.
        covered: u64,
        /// Its length now.
        now: u64,
    },
    /// The covered bytes differ from the fingerprint.
    #[error("input {path} was rewritten: its first {covered} bytes are not those {from} covered")]
    Rewritten {
        /// The file.
        path: String,
        /// The earlier output.
        from: String,
        /// Bytes covered there.
        covered: u64,
    },
    /// A file read whole that changed.
    #[error("input {path} changed since {from} read it whole ({covered} bytes, now {now}); a compressed file or a whole-file input cannot be continued where a run stopped, so add new data as new files")]
    ChangedWhole {
        /// The file.
        path: String,
        /// The earlier output.
        from: String,
        /// Its length then.
        covered: u64,
        /// Its length now.
        now: u64,
    },
    /// Covered, and no longer among the inputs.
    #[error("input {path} is gone: {from} covered it, and the inputs no longer hold it")]
    Gone {
        /// The file.
        path: String,
        /// The earlier output.
        from: String,
    },
    /// The earlier output was written by another version of the job ([`crate::Job::VERSION`]).
    #[error("{from} was written by version {was} of job {job}, and this run is version {now}, which computes its results otherwise: its state cannot be folded in")]
    OtherVersion {
        /// The earlier output.
        from: String,
        /// The job.
        job: String,
        /// The version that wrote it.
        was: u32,
        /// The version of this run.
        now: u32,
    },
    /// The earlier output was written with other parameters.
    #[error("{from} was written with parameters {was}, and this run has {now}: its state may count something else, so it is not folded in")]
    OtherParams {
        /// The earlier output.
        from: String,
        /// Its parameters (`k=v,k=v`, or `none`).
        was: String,
        /// This run's.
        now: String,
    },
    /// The covered range ended inside a line, and the file grew.
    #[error("input {path} grew inside a line: {from} read its first {covered} bytes, which ended without a line terminator, as a whole last line")]
    GrewInsideLine {
        /// The file.
        path: String,
        /// The earlier output.
        from: String,
        /// Bytes covered there.
        covered: u64,
    },
}

/// An earlier output an incremental run continues: what it covered and its state files.
#[derive(Clone, Debug)]
pub struct Base {
    /// The output directory.
    pub from: String,
    /// The version of the job that wrote it.
    pub job_version: u32,
    /// The parameters it was written with.
    pub params: std::collections::BTreeMap<String, String>,
    /// Its coverage, by path.
    pub coverage: HashMap<String, CoveredFile>,
    /// Its state files (`_state/part-*`) and their lengths, in partition order.
    pub state: Vec<FileStatus>,
}

/// Why an earlier output cannot be continued.
#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    /// Not a finished output.
    #[error("{from} is not a finished output (it has no _SUCCESS)")]
    Unfinished {
        /// The directory.
        from: String,
    },
    /// The manifest cannot be read.
    #[error("the manifest of {from} cannot be read: {reason}")]
    Manifest {
        /// The directory.
        from: String,
        /// Why.
        reason: String,
    },
    /// Written by another job.
    #[error("{from} was written by job {was}, not {job}")]
    OtherJob {
        /// The directory.
        from: String,
        /// Its job.
        was: String,
        /// The job asked for.
        job: String,
    },
    /// Its manifest records no coverage.
    #[error("{from} records no coverage (it was written before Quern recorded what outputs read); run once in full to start a chain")]
    NoCoverage {
        /// The directory.
        from: String,
    },
    /// It keeps no state.
    #[error("{from} keeps no state (no _state/): job {job} cannot fold new input into an earlier result (a job keeps state when it has a combiner and sets Job::STATE)")]
    NoState {
        /// The directory.
        from: String,
        /// The job.
        job: String,
    },
    /// The manifest lists a state file for some partitions only.
    #[error(
        "{from} lists state files for {state} of its {parts} partitions; its state is incomplete"
    )]
    StateIncomplete {
        /// The directory.
        from: String,
        /// State files listed.
        state: usize,
        /// Part files listed.
        parts: usize,
    },
    /// A state file listed in the manifest is missing or of another size.
    #[error("state file {path} of {from} is missing or not the size its manifest records ({bytes} bytes)")]
    StateMissing {
        /// The directory.
        from: String,
        /// The state file.
        path: String,
        /// Its recorded size.
        bytes: u64,
    },
    /// The run would write into the output it continues.
    #[error("--output {output} is the output it continues (--from); write the new view to a new directory")]
    SameOutput {
        /// The directory.
        output: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] DfsError),
}

impl Base {
    /// Reads the manifest of `from`, a finished output of `job`, and lists its state files.
    ///
    /// # Errors
    /// [`BaseError`] naming what makes `from` unusable.
    pub fn load(storage: &Storage, from: &str, job: &str) -> Result<Base, BaseError> {
        if !storage.exists(&Storage::join(from, output::SUCCESS))? {
            return Err(BaseError::Unfinished { from: from.into() });
        }
        let raw = storage.read_all(&Storage::join(from, output::MANIFEST))?;
        let manifest: Manifest = serde_json::from_slice(&raw).map_err(|e| BaseError::Manifest {
            from: from.into(),
            reason: e.to_string(),
        })?;
        if manifest.job != job {
            return Err(BaseError::OtherJob {
                from: from.into(),
                was: manifest.job,
                job: job.into(),
            });
        }
        if manifest.coverage.is_empty() {
            return Err(BaseError::NoCoverage { from: from.into() });
        }
        if manifest.state.is_empty() {
            return Err(BaseError::NoState {
                from: from.into(),
                job: job.into(),
            });
        }
        if manifest.state.len() != manifest.parts.len() {
            return Err(BaseError::StateIncomplete {
                from: from.into(),
                state: manifest.state.len(),
                parts: manifest.parts.len(),
            });
        }
        let dir = Storage::join(from, output::STATE);
        let mut state = Vec::with_capacity(manifest.state.len());
        for part in &manifest.state {
            let path = Storage::join(&dir, &part.name);
            let missing = || BaseError::StateMissing {
                from: from.into(),
                path: path.clone(),
                bytes: part.bytes,
            };
            match storage.stat(&path) {
                Ok(st) if st.len == part.bytes => state.push(st),
                Ok(_) | Err(DfsError::NotFound { .. }) => return Err(missing()),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Base {
            from: from.into(),
            job_version: manifest.job_version,
            params: manifest.params,
            coverage: manifest
                .coverage
                .into_iter()
                .map(|c| (c.path.clone(), c))
                .collect(),
            state,
        })
    }

    /// Checks that a run of `spec` computes what this output's state holds: the same version of
    /// the job, with the same parameters.
    ///
    /// # Errors
    /// [`Change::OtherVersion`] or [`Change::OtherParams`].
    pub fn same_definition(&self, spec: &protocol::JobSpec) -> Result<(), Change> {
        if self.job_version != spec.version {
            return Err(Change::OtherVersion {
                from: self.from.clone(),
                job: spec.job.clone(),
                was: self.job_version,
                now: spec.version,
            });
        }
        if self.params != spec.params {
            let text = |p: &std::collections::BTreeMap<String, String>| {
                if p.is_empty() {
                    "none".to_string()
                } else {
                    let pairs: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    pairs.join(",")
                }
            };
            return Err(Change::OtherParams {
                from: self.from.clone(),
                was: text(&self.params),
                now: text(&spec.params),
            });
        }
        Ok(())
    }

    /// Checks `file` (now listed among the inputs) against its coverage here, if any; returns
    /// the first byte not covered (0 for a file not covered), or how it changed.
    ///
    /// # Errors
    /// [`Change`] if the coverage cannot be continued; storage errors inside `Ok(Err(..))`.
    pub fn continue_from(
        &self,
        storage: &Storage,
        file: &FileStatus,
    ) -> Result<Result<u64, Change>, DfsError> {
        let Some(c) = self.coverage.get(&file.path) else {
            return Ok(Ok(0));
        };
        let from = self.from.clone();
        let path = file.path.clone();
        if file.len < c.end {
            return Ok(Err(Change::Shrank {
                path,
                from,
                covered: c.end,
                now: file.len,
            }));
        }
        if c.whole && file.len != c.end {
            return Ok(Err(Change::ChangedWhole {
                path,
                from,
                covered: c.end,
                now: file.len,
            }));
        }
        let (now, _) = match fingerprint(storage, &file.path, c.end) {
            Ok(f) => f,
            // Shrank between the listing and the read.
            Err(DfsError::OutOfRange { len, .. }) => {
                return Ok(Err(Change::Shrank {
                    path,
                    from,
                    covered: c.end,
                    now: len,
                }))
            }
            Err(e) => return Err(e),
        };
        if now != c.fingerprint {
            return Ok(Err(if c.whole {
                Change::ChangedWhole {
                    path,
                    from,
                    covered: c.end,
                    now: file.len,
                }
            } else {
                Change::Rewritten {
                    path,
                    from,
                    covered: c.end,
                }
            }));
        }
        if c.open_line && file.len > c.end {
            return Ok(Err(Change::GrewInsideLine {
                path,
                from,
                covered: c.end,
            }));
        }
        Ok(Ok(c.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(path: &std::path::Path) -> FileStatus {
        Storage::default()
            .stat(&path.display().to_string())
            .unwrap()
    }

    #[test]
    fn fingerprints_hash_both_ends_and_see_open_lines() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("log");
        let s = Storage::default();
        let p = f.display().to_string();
        std::fs::write(&f, b"a\nb\n").unwrap();
        let (fp, open) = fingerprint(&s, &p, 4).unwrap();
        assert!(fp.starts_with("sha256:") && fp.len() == 7 + 64);
        assert!(!open);
        assert!(fingerprint(&s, &p, 3).unwrap().1, "ends inside a line");
        // A large file: a change in the middle is not seen (by design), one at either end is.
        let mut big = vec![b'x'; 20_000];
        std::fs::write(&f, &big).unwrap();
        let base = fingerprint(&s, &p, 20_000).unwrap().0;
        big[10_000] = b'y';
        std::fs::write(&f, &big).unwrap();
        assert_eq!(fingerprint(&s, &p, 20_000).unwrap().0, base);
        big[19_999] = b'y';
        std::fs::write(&f, &big).unwrap();
        assert_ne!(fingerprint(&s, &p, 20_000).unwrap().0, base);
        assert!(matches!(
            fingerprint(&s, &p, 30_000),
            Err(DfsError::OutOfRange { .. })
        ));
    }

    #[test]
    fn covered_files_continue_or_say_how_they_changed() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::default();
        let f = dir.path().join("log");
        std::fs::write(&f, b"one\ntwo\n").unwrap();
        let c = cover(&s, &status(&f), crate::InputFormat::Lines).unwrap();
        assert_eq!(
            (c.start, c.end, c.size, c.whole, c.open_line),
            (0, 8, 8, false, false)
        );
        let base = Base {
            from: "prev".into(),
            job_version: 1,
            params: Default::default(),
            coverage: [(c.path.clone(), c.clone())].into(),
            state: Vec::new(),
        };
        let check = || base.continue_from(&s, &status(&f)).unwrap();
        assert_eq!(check(), Ok(8), "unchanged");
        std::fs::write(&f, b"one\ntwo\nthree\n").unwrap();
        assert_eq!(check(), Ok(8), "grew");
        std::fs::write(&f, b"one\n").unwrap();
        assert!(matches!(
            check(),
            Err(Change::Shrank {
                covered: 8,
                now: 4,
                ..
            })
        ));
        std::fs::write(&f, b"uno\ntwo\nthree\n").unwrap();
        assert!(matches!(check(), Err(Change::Rewritten { covered: 8, .. })));
        let other = dir.path().join("new");
        std::fs::write(&other, b"x\n").unwrap();
        assert_eq!(base.continue_from(&s, &status(&other)).unwrap(), Ok(0));

        // Compressed files are covered whole; any growth is a change.
        let gz = dir.path().join("log.gz");
        std::fs::write(&gz, b"not really gzip").unwrap();
        let c = cover(&s, &status(&gz), crate::InputFormat::Lines).unwrap();
        assert!(c.whole && !c.open_line);
        let base = Base {
            coverage: [(c.path.clone(), c)].into(),
            ..base.clone()
        };
        assert_eq!(base.continue_from(&s, &status(&gz)).unwrap(), Ok(15));
        std::fs::write(&gz, b"not really gzip, longer").unwrap();
        assert!(matches!(
            base.continue_from(&s, &status(&gz)).unwrap(),
            Err(Change::ChangedWhole { .. })
        ));

        // A range that ended inside a line cannot be continued once the file grows.
        std::fs::write(&f, b"one\ntw").unwrap();
        let c = cover(&s, &status(&f), crate::InputFormat::Lines).unwrap();
        assert!(c.open_line);
        let base = Base {
            coverage: [(c.path.clone(), c)].into(),
            ..base
        };
        assert_eq!(base.continue_from(&s, &status(&f)).unwrap(), Ok(6));
        std::fs::write(&f, b"one\ntwo\n").unwrap();
        assert!(matches!(
            base.continue_from(&s, &status(&f)).unwrap(),
            Err(Change::GrewInsideLine { covered: 6, .. })
        ));
    }
}
