//! The committed form of a job's output: part files, a manifest, and `_SUCCESS` last.
//!
//! Readers treat a directory without `_SUCCESS` as absent. The manifest lists every part
//! file with its size and CRC32 and holds nothing run-specific (no ids, no times), so the
//! output of a cluster run is byte-identical to that of `quern run --local`.

use dfs_client::{DfsError, Storage};
use serde::{Deserialize, Serialize};

/// Name of the marker written last.
pub const SUCCESS: &str = "_SUCCESS";
/// Name of the manifest.
pub const MANIFEST: &str = "_MANIFEST.json";
/// Directory for attempts' staged files inside the output.
pub const TEMPORARY: &str = "_temporary";

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
    /// The part files, in partition order.
    pub parts: Vec<PartInfo>,
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

/// Fails if `output` already holds a committed output or part files, so a job never mixes
/// its files with another's.
///
/// # Errors
/// [`OutputError::Exists`] naming the directory.
pub fn check_output_free(storage: &Storage, output: &str) -> Result<(), OutputError> {
    let taken = storage.exists(&Storage::join(output, SUCCESS))?
        || storage.exists(&Storage::join(output, &part_name(0)))?;
    if taken {
        return Err(OutputError::Exists {
            output: output.to_string(),
        });
    }
    Ok(())
}

/// Writes the manifest, then `_SUCCESS`, and removes the staging directory.
///
/// # Errors
/// Storage errors.
pub fn publish(
    storage: &Storage,
    output: &str,
    manifest: &Manifest,
    skipped: &[SkippedRecord],
) -> Result<(), OutputError> {
    if !skipped.is_empty() {
        let mut list = skipped.to_vec();
        list.sort_by(|a, b| (&a.path, a.offset).cmp(&(&b.path, b.offset)));
        let text: String = list
            .iter()
            .map(|r| {
                format!(
                    "{}\t{}\t{}\n",
                    r.path,
                    r.offset,
                    r.message.replace(['\t', '\n'], " ")
                )
            })
            .collect();
        storage.write_all(&Storage::join(output, SKIPPED), text.as_bytes())?;
    }
    let mut json = serde_json::to_vec_pretty(manifest).expect("manifest serialises");
    json.push(b'\n');
    storage.write_all(&Storage::join(output, MANIFEST), &json)?;
    storage.write_all(&Storage::join(output, SUCCESS), b"")?;
    storage.delete(&Storage::join(output, TEMPORARY))?;
    Ok(())
}

/// Removes every file a failed job may have left in `output` (part files, staging, manifest).
///
/// # Errors
/// Storage errors.
pub fn discard(storage: &Storage, output: &str, reducers: u32) -> Result<(), OutputError> {
    storage.delete(&Storage::join(output, TEMPORARY))?;
    storage.delete(&Storage::join(output, MANIFEST))?;
    for r in 0..reducers {
        storage.delete(&Storage::join(output, &part_name(r)))?;
    }
    Ok(())
}

/// Errors committing an output.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The output directory already holds an output.
    #[error("output {output} already holds a job's output; remove it or choose another directory")]
    Exists {
        /// The directory.
        output: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] DfsError),
}
