//! The committed form of a job's output: part files, a manifest, and `_SUCCESS` last.
//!
//! Readers treat a directory without `_SUCCESS` as absent. A job writes only into a new or
//! empty directory, or replaces what is there when asked to ([`prepare_output`]). The manifest lists every part
//! file with its size and CRC32 and holds nothing run-specific (no ids, no times), so the
//! output of a cluster run is byte-identical to that of `quern run --local`.

use dfs_client::{DfsError, PathKind, Storage};
use serde::{Deserialize, Serialize};

/// Name of the marker written last.
pub const SUCCESS: &str = "_SUCCESS";
/// Name of the manifest.
pub const MANIFEST: &str = "_MANIFEST.json";
/// Directory for attempts' staged files inside the output.
pub const TEMPORARY: &str = "_temporary";
/// Directory of a job's state inside its output (jobs that keep state: [`crate::Job::STATE`]).
pub const STATE: &str = "_state";

/// One committed part file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    /// File name, e.g. `part-00000`.
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// CRC32 of its contents.
    pub crc32: u32,
}

/// The manifest of a committed output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The job that wrote it.
    pub job: String,
    /// The version of the job's definition ([`crate::Job::VERSION`]; 1 in outputs written
    /// before versions were recorded).
    #[serde(default = "protocol::spec::first_version")]
    pub job_version: u32,
    /// The job's parameters, where it keeps state (they say what the state counts).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub params: std::collections::BTreeMap<String, String>,
    /// The part files, in partition order.
    pub parts: Vec<PartInfo>,
    /// The state files under `_state/`, in partition order (jobs that keep state).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<PartInfo>,
    /// What the output covers: each input file read, and how far (outputs of older versions
    /// have none).
    #[serde(default)]
    pub coverage: Vec<crate::coverage::CoveredFile>,
    /// The entries under the inputs that were not read, and why (a name starting with `_` or
    /// `.`; a file named twice), sorted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_read: Vec<NotRead>,
}

impl Manifest {
    /// The manifest of an output of `spec` with these part and state files. The parameters
    /// are recorded beside state only, where a later run `--from` this output must have the
    /// same (outputs without state are compared across runs whose parameters only say how
    /// to compute, such as a batch size or a cache).
    pub fn of(
        spec: &protocol::JobSpec,
        parts: Vec<PartInfo>,
        state: Vec<PartInfo>,
        coverage: Vec<crate::coverage::CoveredFile>,
        not_read: Vec<NotRead>,
    ) -> Manifest {
        Manifest {
            job: spec.job.clone(),
            job_version: spec.version,
            params: if state.is_empty() {
                Default::default()
            } else {
                spec.params.clone()
            },
            parts,
            state,
            coverage,
            not_read,
        }
    }
}

/// An entry under a job's inputs that it did not read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NotRead {
    /// The path or URL.
    pub path: String,
    /// Why.
    pub why: String,
}

/// A record skipped in skip mode: the map function panicked on it twice.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRecord {
    /// The input file.
    pub path: String,
    /// The record's offset in it.
    pub offset: u64,
    /// The panic message.
    pub message: String,
}

/// Where skipped records are listed, inside the output.
pub const SKIPPED: &str = "_skipped/records.tsv";

/// Returns the name of partition `r`'s part file.
pub fn part_name(r: u32) -> String {
    format!("part-{r:05}")
}

/// `text` as one field of a tab-separated line: a backslash, tab, line feed or carriage
/// return in it written as `\\`, `\t`, `\n`, `\r` (as PostgreSQL's text format and Hive
/// write them), so that a name holding one cannot split a line or a field. Text without
/// them is returned as it is.
pub fn tsv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains(['\\', '\t', '\n', '\r']) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Returns where partition `r`'s committed part file waits for the job's commit: inside the
/// output's `_temporary/`, so that the output directory holds no part file before all of them
/// move into place at [`publish`] (Hadoop's v1 committer), and readers that glob `part-*`
/// never see a partial output.
pub fn committed_path(output: &str, r: u32) -> String {
    Storage::join(
        &Storage::join(&Storage::join(output, TEMPORARY), "committed"),
        &part_name(r),
    )
}

/// Returns where a reduce attempt stages its state file, given where it stages its part file.
pub fn state_staging(staged_part: &str) -> String {
    format!("{staged_part}.state")
}

/// What to do with an output location that already holds something.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    /// Refuse it: only a missing path or an empty directory is taken.
    New,
    /// Replace what is there when the job commits (`--overwrite`): until then it stays as it
    /// was, so a job that fails leaves it.
    Overwrite,
}

/// Checks and prepares `output` before a job is accepted, by one rule on every backend:
/// - a missing path or an empty directory is taken;
/// - a file is refused (an output is a directory);
/// - a directory holding `_SUCCESS` (a finished job's output) or anything else (a killed
///   job's leftovers, unrelated files) is refused, unless `mode` is [`OutputMode::Overwrite`],
///   which leaves it in place until [`publish`] replaces it (only a killed job's `_temporary/`
///   is removed now); an input inside the output is then refused, since the commit would
///   delete it;
/// - the location must be writable: a marker is written under `_temporary/` and removed, so
///   an unwritable output fails the submission, not every reduce after every map.
///
/// # Errors
/// [`OutputError`] naming the output and the rule; storage errors.
pub fn prepare_output(
    storage: &Storage,
    output: &str,
    inputs: &[String],
    mode: OutputMode,
) -> Result<(), OutputError> {
    match storage.probe(output)? {
        PathKind::Missing | PathKind::Directory { some_entry: None } => {}
        PathKind::File => {
            return Err(OutputError::NotADirectory {
                output: output.to_string(),
            })
        }
        PathKind::Directory {
            some_entry: Some(entry),
        } => {
            if mode == OutputMode::New {
                return Err(if storage.exists(&Storage::join(output, SUCCESS))? {
                    OutputError::Exists {
                        output: output.to_string(),
                    }
                } else {
                    OutputError::NotEmpty {
                        output: output.to_string(),
                        entry,
                    }
                });
            }
            let inside = format!("{}/", output.trim_end_matches('/'));
            if let Some(input) = inputs
                .iter()
                .find(|i| i.as_str() == output || i.starts_with(&inside))
            {
                return Err(OutputError::InputInside {
                    output: output.to_string(),
                    input: input.clone(),
                });
            }
            tracing::info!(%output, "output to be replaced when the job commits");
            storage.delete(&Storage::join(output, TEMPORARY))?;
        }
    }
    let marker = Storage::join(&Storage::join(output, TEMPORARY), "_write-check");
    storage.write_all(&marker, b"")?;
    storage.delete(&Storage::join(output, TEMPORARY))?;
    Ok(())
}

/// Name of the marker, inside `_temporary/`, that [`publish`] has removed what the output
/// held before.
const CLEARED: &str = "_cleared";

/// Moves the committed part files into place, writes the manifest, then `_SUCCESS`, and
/// removes the staging directory. Whatever else the output holds (an earlier output that
/// `--overwrite` replaces, unrelated files) is removed first, `_SUCCESS` before the rest, so
/// that no reader takes a mix of the two for an output.
///
/// It may be run again after it was cut short (a coordinator restarted during the commit):
/// the removal is done once (a marker in `_temporary/` says it was), part files already moved
/// stay, and once `_temporary/` is gone nothing is removed again.
///
/// # Errors
/// Storage errors.
pub fn publish(
    storage: &Storage,
    output: &str,
    manifest: &Manifest,
    skipped: &[SkippedRecord],
) -> Result<(), OutputError> {
    let staging = Storage::join(output, TEMPORARY);
    let cleared = Storage::join(&staging, CLEARED);
    if storage.exists(&staging)? && !storage.exists(&cleared)? {
        let earlier = storage.entries(output)?;
        if earlier.iter().any(|e| e != TEMPORARY) {
            tracing::info!(%output, "replacing what the output held");
            storage.delete(&Storage::join(output, SUCCESS))?;
            for name in earlier.iter().filter(|e| *e != TEMPORARY && *e != SUCCESS) {
                storage.delete(&Storage::join(output, name))?;
            }
        }
        storage.write_all(&cleared, b"")?;
    }
    if !skipped.is_empty() {
        let mut list = skipped.to_vec();
        list.sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
        let text: String = list
            .iter()
            .map(|r| {
                format!(
                    "{}\t{}\t{}\n",
                    tsv_field(&r.path),
                    r.offset,
                    tsv_field(&r.message)
                )
            })
            .collect();
        storage.write_all(&Storage::join(output, SKIPPED), text.as_bytes())?;
    }
    // The parts move into place first, then the manifest, then `_SUCCESS`. A publish cut
    // short (a coordinator crash) is run again after recovery and finds some parts moved.
    for part in &manifest.parts {
        let index = part_index(output, &part.name)?;
        let (from, to) = (
            committed_path(output, index),
            Storage::join(output, &part.name),
        );
        move_committed(storage, output, &part.name, (&from, &to))?;
    }
    for state in &manifest.state {
        let index = part_index(output, &state.name)?;
        let (from, to) = (
            state_staging(&committed_path(output, index)),
            Storage::join(&Storage::join(output, STATE), &state.name),
        );
        move_committed(storage, output, &state.name, (&from, &to))?;
    }
    let mut json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    json.push(b'\n');
    storage.write_all(&Storage::join(output, MANIFEST), &json)?;
    storage.write_all(&Storage::join(output, SUCCESS), b"")?;
    storage.delete(&Storage::join(output, TEMPORARY))?;
    Ok(())
}

fn part_index(output: &str, name: &str) -> Result<u32, OutputError> {
    name.strip_prefix("part-")
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| OutputError::MissingPart {
            output: output.to_string(),
            part: name.to_string(),
        })
}

/// Moves one committed file into place; a move done before (a publish run again after a
/// crash) is found done.
fn move_committed(
    storage: &Storage,
    output: &str,
    name: &str,
    (from, to): (&str, &str),
) -> Result<(), OutputError> {
    if storage.exists(from)? {
        storage.rename(from, to)?;
    } else if !storage.exists(to)? {
        return Err(OutputError::MissingPart {
            output: output.to_string(),
            part: name.to_string(),
        });
    }
    Ok(())
}

/// Removes every file a failed or killed job may have left in `output` (part files, staging,
/// state, manifest, skip list). Every removal is tried even when one fails. An output that
/// still holds `_SUCCESS` is an earlier job's that `--overwrite` was to replace (the failed
/// job's commit never began): only the staging directory is removed, and it stays whole.
///
/// # Errors
/// The first storage error.
pub fn discard(storage: &Storage, output: &str, reducers: u32) -> Result<(), OutputError> {
    if storage.exists(&Storage::join(output, SUCCESS))? {
        storage.delete(&Storage::join(output, TEMPORARY))?;
        return Ok(());
    }
    let mut first = None;
    let names = [TEMPORARY, MANIFEST, STATE, "_skipped"]
        .into_iter()
        .map(String::from)
        .chain((0..reducers).map(part_name));
    for name in names {
        if let Err(e) = storage.delete(&Storage::join(output, &name)) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), |e| Err(e.into()))
}

/// Errors committing an output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output directory already holds a finished job's output.
    #[error("output {output} already holds a job's output (it has _SUCCESS); choose another directory, or pass --overwrite to replace it")]
    Exists {
        /// The directory.
        output: String,
    },
    /// The output directory holds something that is not a finished output.
    #[error("output {output} is not empty (it holds {entry:?} and no _SUCCESS: no finished job's output); choose a new or empty directory, or pass --overwrite to replace what is there")]
    NotEmpty {
        /// The directory.
        output: String,
        /// One thing in it.
        entry: String,
    },
    /// The output names a file.
    #[error("output {output} is a file; an output is a directory")]
    NotADirectory {
        /// The path.
        output: String,
    },
    /// A committed part file is neither waiting in `_temporary/` nor in place.
    #[error("part {part} of output {output} is missing at job commit")]
    MissingPart {
        /// The output.
        output: String,
        /// The part file.
        part: String,
    },
    /// `--overwrite` would delete an input of the job when it commits.
    #[error("input {input} lies inside output {output}, which --overwrite replaces when the job commits")]
    InputInside {
        /// The output.
        output: String,
        /// The input.
        input: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] DfsError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(parts: u32) -> Manifest {
        Manifest {
            job: "test".into(),
            job_version: 1,
            params: Default::default(),
            parts: (0..parts)
                .map(|r| PartInfo {
                    name: part_name(r),
                    bytes: 3,
                    crc32: 0,
                })
                .collect(),
            state: Vec::new(),
            not_read: Vec::new(),
            coverage: Vec::new(),
        }
    }

    /// An earlier output of three parts, a file of the user's, and a new job's two committed
    /// parts staged in `_temporary/`.
    fn earlier_and_staged(storage: &Storage, out: &str) {
        for r in 0..3 {
            storage
                .write_all(&Storage::join(out, &part_name(r)), b"old")
                .unwrap();
        }
        storage
            .write_all(&Storage::join(out, SUCCESS), b"")
            .unwrap();
        storage
            .write_all(&Storage::join(out, MANIFEST), b"{}")
            .unwrap();
        storage
            .write_all(&Storage::join(out, "notes.txt"), b"mine")
            .unwrap();
        prepare_output(storage, out, &[], OutputMode::Overwrite).unwrap();
        for r in 0..2 {
            storage.write_all(&committed_path(out, r), b"new").unwrap();
        }
    }

    fn names(dir: &std::path::Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn an_overwritten_output_stays_until_the_commit_replaces_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, out) = (Storage::default(), dir.path().display().to_string());
        earlier_and_staged(&storage, &out);
        // Until the commit, the earlier output is there as it was.
        assert!(dir.path().join(SUCCESS).exists() && dir.path().join("part-00002").exists());
        publish(&storage, &out, &manifest(2), &[]).unwrap();
        assert_eq!(
            names(dir.path()),
            [MANIFEST, SUCCESS, "part-00000", "part-00001"]
        );
        assert_eq!(
            std::fs::read(dir.path().join("part-00001")).unwrap(),
            b"new"
        );
        // Run again once it is done (a restarted coordinator): nothing changes.
        publish(&storage, &out, &manifest(2), &[]).unwrap();
        assert_eq!(
            names(dir.path()),
            [MANIFEST, SUCCESS, "part-00000", "part-00001"]
        );
    }

    #[test]
    fn a_failed_job_leaves_the_output_it_was_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, out) = (Storage::default(), dir.path().display().to_string());
        earlier_and_staged(&storage, &out);
        discard(&storage, &out, 2).unwrap();
        assert_eq!(
            names(dir.path()),
            [
                MANIFEST,
                SUCCESS,
                "notes.txt",
                "part-00000",
                "part-00001",
                "part-00002"
            ]
        );
        assert_eq!(
            std::fs::read(dir.path().join("part-00000")).unwrap(),
            b"old"
        );
        // Without an earlier output, what the job left is removed as before.
        let fresh = tempfile::tempdir().unwrap();
        let out = fresh.path().display().to_string();
        prepare_output(&storage, &out, &[], OutputMode::New).unwrap();
        storage.write_all(&committed_path(&out, 0), b"new").unwrap();
        storage
            .write_all(&Storage::join(&out, "part-00001"), b"moved")
            .unwrap();
        discard(&storage, &out, 2).unwrap();
        assert!(names(fresh.path()).is_empty());
    }

    #[test]
    fn a_commit_cut_short_finishes_when_run_again() {
        let dir = tempfile::tempdir().unwrap();
        let (storage, out) = (Storage::default(), dir.path().display().to_string());
        earlier_and_staged(&storage, &out);
        // Cut short after the earlier output was removed and one part moved.
        let staging = Storage::join(&out, TEMPORARY);
        for name in [
            SUCCESS,
            MANIFEST,
            "notes.txt",
            "part-00000",
            "part-00001",
            "part-00002",
        ] {
            storage.delete(&Storage::join(&out, name)).unwrap();
        }
        storage
            .write_all(&Storage::join(&staging, CLEARED), b"")
            .unwrap();
        storage
            .rename(&committed_path(&out, 0), &Storage::join(&out, "part-00000"))
            .unwrap();
        publish(&storage, &out, &manifest(2), &[]).unwrap();
        assert_eq!(
            names(dir.path()),
            [MANIFEST, SUCCESS, "part-00000", "part-00001"]
        );
        for r in 0..2 {
            assert_eq!(
                std::fs::read(dir.path().join(part_name(r))).unwrap(),
                b"new"
            );
        }
    }
}
