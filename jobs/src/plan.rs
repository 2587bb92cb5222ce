//! Planning: inputs become splits, one map task each.

use dfs_client::{DfsError, Storage};

use crate::split::Split;

/// One planned map task: its split, the file's length, and the storage hosts holding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedSplit {
    /// The byte range.
    pub split: Split,
    /// Length of the whole file (the reader needs it to finish the last line).
    pub file_len: u64,
    /// Storage hosts holding a replica of the split's first byte.
    pub hosts: Vec<String>,
}

/// Returns the splits of `inputs` (files, directories or globs), `split_size` bytes each, in
/// input order then file order. Empty files have no splits.
///
/// # Errors
/// Storage errors; an input that matches nothing is [`DfsError::NotFound`].
pub fn plan_splits(
    storage: &Storage,
    inputs: &[String],
    split_size: u64,
) -> Result<Vec<PlannedSplit>, DfsError> {
    let split_size = split_size.max(1);
    let mut out = Vec::new();
    for input in inputs {
        for file in storage.list(input)? {
            let pieces = storage.locations(&file.path)?;
            let mut start = 0;
            while start < file.len {
                let end = (start + split_size).min(file.len);
                let hosts = pieces
                    .iter()
                    .find(|p| p.offset <= start && start < p.offset + p.len)
                    .map(|p| p.hosts.clone())
                    .unwrap_or_default();
                out.push(PlannedSplit {
                    split: Split {
                        path: file.path.clone(),
                        start,
                        end,
                    },
                    file_len: file.len,
                    hosts,
                });
                start = end;
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
