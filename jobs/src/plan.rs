//! Planning: inputs become splits, one map task each.

use dfs_client::{DfsError, FileStatus, Storage};
use protocol::JobSpec;

use crate::coverage::{self, Base, BaseError, Change, CoveredFile};
use crate::split::Split;

/// One planned map task: its split, the file's length, and the storage hosts holding it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlannedSplit {
    /// The byte range.
    pub split: Split,
    /// Length of the whole file (the reader needs it to finish the last line).
    pub file_len: u64,
    /// Storage hosts holding a replica of the split's first byte.
    pub hosts: Vec<String>,
    /// The file is an earlier output's state, folded in as it is (an incremental run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state: bool,
}

/// A job's plan: its map tasks and the input they cover.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// One map task each: new input first, then an incremental run's state files.
    pub splits: Vec<PlannedSplit>,
    /// What the output will cover (recorded in its manifest).
    pub coverage: Vec<CoveredFile>,
    /// Why an incremental run runs in full instead (`--full-if-changed`).
    pub full_because: Option<Change>,
}

impl From<Vec<PlannedSplit>> for Plan {
    /// A plan of these splits that records no coverage.
    fn from(splits: Vec<PlannedSplit>) -> Self {
        Plan {
            splits,
            ..Plan::default()
        }
    }
}

/// Why a job cannot be planned.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The output it continues cannot be used.
    #[error(transparent)]
    Base(#[from] BaseError),
    /// An input it covered changed.
    #[error("cannot continue from {from}: input {change}; pass --full-if-changed to run in full instead")]
    Changed {
        /// The output it continues.
        from: String,
        /// How.
        change: Change,
    },
    /// Storage failed (an input that matches nothing is [`DfsError::NotFound`]).
    #[error(transparent)]
    Storage(#[from] DfsError),
}

/// Plans `spec`, whose job reads input in `format`: every input file cut into splits as by
/// [`plan_inputs`], with the coverage the output will record. An incremental run
/// ([`JobSpec::from`]) plans only the input its base did not cover (new files, and the grown
/// tails of covered ones), then one split per state file of the base; an input the base
/// covered that changed otherwise refuses the run ([`PlanError::Changed`]), or with
/// [`JobSpec::full_if_changed`] plans it in full ([`Plan::full_because`]).
///
/// # Errors
/// [`PlanError`].
pub fn plan_job(
    storage: &Storage,
    spec: &JobSpec,
    format: crate::InputFormat,
) -> Result<Plan, PlanError> {
    if spec.from.is_empty() {
        return Ok(plan_with(storage, spec, format, None)?.expect("no base, no change"));
    }
    if spec.from.trim_end_matches('/') == spec.output.trim_end_matches('/') {
        return Err(BaseError::SameOutput {
            output: spec.output.clone(),
        }
        .into());
    }
    let base = Base::load(storage, &spec.from, &spec.job)?;
    match plan_with(storage, spec, format, Some(&base))? {
        Ok(plan) => Ok(plan),
        Err(change) if spec.full_if_changed => {
            tracing::warn!(from = %spec.from, %change, "input changed: running in full");
            let mut plan = plan_with(storage, spec, format, None)?.expect("no base, no change");
            plan.full_because = Some(change);
            Ok(plan)
        }
        Err(change) => Err(PlanError::Changed {
            from: spec.from.clone(),
            change,
        }),
    }
}

fn plan_with(
    storage: &Storage,
    spec: &JobSpec,
    format: crate::InputFormat,
    base: Option<&Base>,
) -> Result<Result<Plan, Change>, DfsError> {
    let mut plan = Plan::default();
    let mut seen = std::collections::HashSet::new();
    for input in &spec.inputs {
        for file in storage.list(input)? {
            seen.insert(file.path.clone());
            let start = match base {
                Some(b) => match b.continue_from(storage, &file)? {
                    Ok(start) => start,
                    Err(change) => return Ok(Err(change)),
                },
                None => 0,
            };
            if file.len == 0 {
                continue;
            }
            plan.coverage.push(coverage::cover(storage, &file, format)?);
            if start < file.len {
                file_splits(
                    storage,
                    &file,
                    start,
                    spec.split_size,
                    format,
                    &mut plan.splits,
                )?;
            }
        }
    }
    if let Some(b) = base {
        let mut covered: Vec<_> = b.coverage.keys().collect();
        covered.sort();
        if let Some(gone) = covered.into_iter().find(|p| !seen.contains(*p)) {
            return Ok(Err(Change::Gone {
                path: gone.clone(),
                from: b.from.clone(),
            }));
        }
        for st in &b.state {
            let hosts = storage
                .locations(&st.path)?
                .first()
                .map(|p| p.hosts.clone())
                .unwrap_or_default();
            plan.splits.push(PlannedSplit {
                split: Split {
                    path: st.path.clone(),
                    start: 0,
                    end: st.len,
                },
                file_len: st.len,
                hosts,
                state: true,
            });
        }
    }
    Ok(Ok(plan))
}

/// Returns the splits of `inputs` (files, directories or globs), in input order then file
/// order. Splits follow the pieces storage reports (a SeaweedFS chunk, or a whole local file),
/// so each map task reads data held together on one set of hosts; a piece larger than
/// `split_size` is cut further. A compressed file (`.gz`, `.zst`) is one split. Empty files
/// have no splits.
///
/// # Errors
/// Storage errors; an input that matches nothing is [`DfsError::NotFound`].
pub fn plan_splits(
    storage: &Storage,
    inputs: &[String],
    split_size: u64,
) -> Result<Vec<PlannedSplit>, DfsError> {
    plan_inputs(storage, inputs, split_size, crate::InputFormat::Lines)
}

/// Plans the splits of a job whose input is in `format`: as [`plan_splits`] for lines; one
/// split per file for whole files, placed beside the file's first piece; a tar shard larger
/// than `split_size` in pieces cut at member boundaries ([`crate::records::tar_cuts`]).
///
/// # Errors
/// As [`plan_splits`].
pub fn plan_inputs(
    storage: &Storage,
    inputs: &[String],
    split_size: u64,
    format: crate::InputFormat,
) -> Result<Vec<PlannedSplit>, DfsError> {
    let mut out = Vec::new();
    for input in inputs {
        for file in storage.list(input)? {
            file_splits(storage, &file, 0, split_size, format, &mut out)?;
        }
    }
    Ok(out)
}

/// Adds the splits of `file` from byte `from` on (0, or where an earlier output's coverage
/// ends) to `out`.
fn file_splits(
    storage: &Storage,
    file: &FileStatus,
    from: u64,
    split_size: u64,
    format: crate::InputFormat,
    out: &mut Vec<PlannedSplit>,
) -> Result<(), DfsError> {
    let piece_size = split_size.max(1);
    let split_size = if format.whole_files() {
        u64::MAX
    } else {
        piece_size
    };
    if file.len <= from {
        return Ok(());
    }
    let mut pieces = storage.locations(&file.path)?;
    pieces.sort_by_key(|p| p.offset);
    let covers = pieces.first().is_some_and(|p| p.offset == 0)
        && pieces
            .windows(2)
            .all(|w| w[0].offset + w[0].len == w[1].offset)
        && pieces.last().is_some_and(|p| p.offset + p.len == file.len);
    if !covers {
        pieces = vec![dfs_client::Piece {
            offset: 0,
            len: file.len,
            hosts: Vec::new(),
        }];
    }
    let range = |start: u64, end: u64, hosts: Vec<String>| PlannedSplit {
        split: Split {
            path: file.path.clone(),
            start,
            end,
        },
        file_len: file.len,
        hosts,
        state: false,
    };
    let host_of = |at: u64| {
        pieces
            .iter()
            .find(|p| p.offset <= at && at < p.offset + p.len)
            .map(|p| p.hosts.clone())
            .unwrap_or_default()
    };
    // A large tar shard: pieces of about the split size, cut at member boundaries, each
    // placed beside the storage piece its first member is in.
    if format == crate::InputFormat::Tar
        && from == 0
        && file.len > piece_size
        && crate::input::Codec::of(&file.path).is_none()
    {
        let cuts = crate::records::tar_cuts(file.len, piece_size, |at, len| {
            storage.read_range(&file.path, at, len).map(|b| b.to_vec())
        })?;
        for (i, &start) in cuts.iter().enumerate() {
            let end = cuts.get(i + 1).copied().unwrap_or(file.len);
            out.push(range(start, end, host_of(start)));
        }
        return Ok(());
    }
    // A compressed file cannot be entered at an arbitrary byte: one split, read whole.
    if coverage::read_whole(&file.path, format) {
        out.push(range(0, file.len, host_of(0)));
        return Ok(());
    }
    for piece in pieces {
        let piece_end = piece.offset + piece.len;
        let mut start = piece.offset.max(from);
        while start < piece_end {
            let end = (start + split_size).min(piece_end);
            out.push(range(start, end, piece.hosts.clone()));
            start = end;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_cut_into_ranges_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![b'x'; 10]).unwrap();
        std::fs::write(dir.path().join("b"), b"").unwrap();
        std::fs::write(dir.path().join("c"), vec![b'x'; 4]).unwrap();
        let d = dir.path().display().to_string();
        let plan = plan_splits(&Storage::default(), &[d], 4).unwrap();
        let ranges: Vec<_> = plan
            .iter()
            .map(|p| {
                (
                    p.split.path.rsplit('/').next().unwrap().to_string(),
                    p.split.start,
                    p.split.end,
                )
            })
            .collect();
        assert_eq!(
            ranges,
            [
                ("a".into(), 0, 4),
                ("a".into(), 4, 8),
                ("a".into(), 8, 10),
                ("c".to_string(), 0, 4)
            ]
        );
        assert!(plan.iter().all(|p| p.hosts == [dfs_client::local_host()]));
    }
}
