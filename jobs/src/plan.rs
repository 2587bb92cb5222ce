//! Planning: inputs become splits, one map task each.

use dfs_client::{DfsError, Storage};

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
/// split per file for whole files and tar shards, placed beside the file's first piece.
///
/// # Errors
/// As [`plan_splits`].
pub fn plan_inputs(
    storage: &Storage,
    inputs: &[String],
    split_size: u64,
    format: crate::InputFormat,
) -> Result<Vec<PlannedSplit>, DfsError> {
    let split_size = if format.whole_files() {
        u64::MAX
    } else {
        split_size.max(1)
    };
    let mut out = Vec::new();
    for input in inputs {
        for file in storage.list(input)? {
            if file.len == 0 {
                continue;
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
            // A compressed file cannot be entered at an arbitrary byte: one split, read whole.
            if format.whole_files() || crate::input::Codec::of(&file.path).is_some() {
                out.push(PlannedSplit {
                    split: Split {
                        path: file.path.clone(),
                        start: 0,
                        end: file.len,
                    },
                    file_len: file.len,
                    hosts: pieces.first().map(|p| p.hosts.clone()).unwrap_or_default(),
                });
                continue;
            }
            for piece in pieces {
                let mut start = piece.offset;
                let piece_end = piece.offset + piece.len;
                while start < piece_end {
                    let end = (start + split_size).min(piece_end);
                    out.push(PlannedSplit {
                        split: Split {
                            path: file.path.clone(),
                            start,
                            end,
                        },
                        file_len: file.len,
                        hosts: piece.hosts.clone(),
                    });
                    start = end;
                }
            }
        }
    }
    Ok(out)
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
