//! The result store (`--param results=DIR`): what earlier runs computed, so that a re-run pays
//! only for what changed.
//!
//! A photo's result is keyed by a SHA-256 over the photo's bytes and everything else that
//! decides its line: the model file's bytes, the class names, the preprocessing version
//! ([`crate::preprocess::VERSION`]), the precision, the kind of device (a GPU's scores differ
//! from the CPU's in the last digits; on a GPU the batch size too) and whether embeddings are
//! asked for. A result is
//! reused only when that key matches, so a reused line is byte for byte the line a full run
//! writes; anything else changed means the photo is computed again.
//!
//! The store holds one file per shard (per map split: `<shard file>-<hash of its path>-<first
//! member's offset>.jsonl`), written by the shard's map task when it succeeds with every
//! result of the shard, reused or computed. A map task reads only its own shard's file, so a
//! run reads the store in proportion to its input, whatever the store's size. A photo that
//! moved to another shard (the shards were packed again) is computed again: new photos are
//! best packed into new shards, which `quern photos pack` into a new directory does.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The first line of every store file.
const HEADER: &str = r#"{"quern_photos_results":1}"#;

/// A result, as stored and reused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The five best classes, best first, with their scores.
    pub top5: Vec<(usize, f32)>,
    /// The pooled features, when the run asked for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
}

/// One line of a store file.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The result key, hex.
    k: String,
    #[serde(flatten)]
    result: Stored,
}

/// What every result key of a run starts from: the model (the SHA-256 of its weights file),
/// its class names and the settings that change its output.
pub fn salt(
    model_sha256: &[u8],
    labels: &[String],
    precision: &str,
    device: &str,
    embeddings: bool,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"quern photos result\0");
    h.update(model_sha256);
    for l in labels {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    h.update(crate::preprocess::VERSION.to_le_bytes());
    h.update(precision.as_bytes());
    h.update(b"\0");
    h.update(device.as_bytes());
    h.update([u8::from(embeddings)]);
    h.finalize().into()
}

/// A photo's result key (hex) under `salt`.
pub fn key(salt: &[u8; 32], photo: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(photo);
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store file of the split of `input` whose first member is at `offset`.
pub fn file_name(input: &str, offset: u64) -> String {
    let base: String = input
        .rsplit('/')
        .next()
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path_hash = hex(&Sha256::digest(input.as_bytes())[..8]);
    format!("{base}-{path_hash}-{offset}.jsonl")
}

/// Why a store file was not used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// It could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: dfs_client::DfsError,
    },
    /// It is not a store file (or one of another version).
    #[error("{path} is not a photos result file (line {line})")]
    Format {
        /// The file.
        path: String,
        /// The first bad line, from 1.
        line: usize,
    },
    /// It could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: dfs_client::DfsError,
    },
}

/// Reads the store file `path`: its results by key; none when there is no such file.
///
/// # Errors
/// [`StoreError`] for a file that exists and cannot be read or parsed.
pub fn load(
    storage: &dfs_client::Storage,
    path: &str,
) -> Result<HashMap<String, Stored>, StoreError> {
    let read = |source| StoreError::Read {
        path: path.to_string(),
        source,
    };
    if !storage.exists(path).map_err(read)? {
        return Ok(HashMap::new());
    }
    let data = storage.read_all(path).map_err(read)?;
    let bad = |line| StoreError::Format {
        path: path.to_string(),
        line,
    };
    let text = std::str::from_utf8(&data).map_err(|_| bad(1))?;
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        return Err(bad(1));
    }
    let mut out = HashMap::new();
    for (i, line) in lines.enumerate() {
        let e: Entry = serde_json::from_str(line).map_err(|_| bad(i + 2))?;
        if e.result.top5.is_empty() {
            return Err(bad(i + 2));
        }
        out.insert(e.k, e.result);
    }
    Ok(out)
}

/// Writes `results` as the store file `path`: to a name of its own attempt first, then
/// renamed over the old file, so a reader sees the old file or the new one, whole.
///
/// # Errors
/// [`StoreError::Write`].
pub fn save(
    storage: &dfs_client::Storage,
    path: &str,
    attempt: u64,
    mut results: Vec<(String, Stored)>,
) -> Result<(), StoreError> {
    results.sort_by(|a, b| a.0.cmp(&b.0));
    results.dedup_by(|a, b| a.0 == b.0);
    let mut text = String::from(HEADER);
    text.push('\n');
    for (k, result) in results {
        let line = serde_json::to_string(&Entry { k, result }).expect("a result serialises");
        text.push_str(&line);
        text.push('\n');
    }
    let tmp = format!("{path}.tmp-{attempt}");
    let write = |source| StoreError::Write {
        path: path.to_string(),
        source,
    };
    storage.write_all(&tmp, text.as_bytes()).map_err(write)?;
    storage.rename(&tmp, path).map_err(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_survive_the_store_exactly_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dfs_client::Storage::default();
        let path = dir.path().join("s.jsonl").display().to_string();
        assert!(
            load(&storage, &path).unwrap().is_empty(),
            "no file: nothing"
        );
        let a = Stored {
            top5: vec![
                (967, 0.992_713_4),
                (504, 1.0e-7),
                (1, 0.0),
                (2, 0.3),
                (3, 0.1),
            ],
            embedding: Some(vec![0.1, f32::MIN_POSITIVE, 3.402_823_5e38]),
        };
        let b = Stored {
            top5: vec![(5, 0.5); 5],
            embedding: None,
        };
        save(
            &storage,
            &path,
            7,
            vec![("bb".into(), b.clone()), ("aa".into(), a.clone())],
        )
        .unwrap();
        let back = load(&storage, &path).unwrap();
        assert_eq!(back.len(), 2);
        // Scores come back bit for bit, so a reused line is the line a full run writes.
        assert_eq!(back["aa"], a);
        assert_eq!(back["bb"], b);
        assert!(!dir.path().join("s.jsonl.tmp-7").exists());

        std::fs::write(&path, "{\"quern_photos_results\":2}\n").unwrap();
        assert!(matches!(
            load(&storage, &path),
            Err(StoreError::Format { line: 1, .. })
        ));
        std::fs::write(&path, format!("{HEADER}\n{{\"k\":\"x\"}}\n")).unwrap();
        assert!(matches!(
            load(&storage, &path),
            Err(StoreError::Format { line: 2, .. })
        ));
    }

    #[test]
    fn keys_change_with_anything_that_changes_the_line() {
        let labels = vec!["cat".to_string(), "dog".to_string()];
        let s = salt(b"model", &labels, "F32", "cpu", false);
        let k = key(&s, b"photo");
        assert_eq!(k.len(), 64);
        assert_eq!(
            k,
            key(&salt(b"model", &labels, "F32", "cpu", false), b"photo")
        );
        for other in [
            key(&s, b"photo!"),
            key(&salt(b"model2", &labels, "F32", "cpu", false), b"photo"),
            key(&salt(b"model", &labels[..1], "F32", "cpu", false), b"photo"),
            key(&salt(b"model", &labels, "F16", "cpu", false), b"photo"),
            key(&salt(b"model", &labels, "F32", "cuda", false), b"photo"),
            key(&salt(b"model", &labels, "F32", "cpu", true), b"photo"),
        ] {
            assert_ne!(k, other);
        }
        let name = file_name("/data/shards/shard 000001.tar", 512);
        assert!(
            name.starts_with("shard_000001.tar-") && name.ends_with("-512.jsonl"),
            "{name}"
        );
        assert_ne!(name, file_name("/other/shard 000001.tar", 512));
    }
}
