//! Job binaries on the coordinator: uploads checked (version, platform, size, hash) and stored
//! by SHA-256 under `<state-dir>/binaries/`, served to workers in frames.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::pin::Pin;

use protocol::binary::{check_runnable, valid_sha256, Hasher};
use protocol::pb::{BinaryChunk, HasBinaryResponse};
use protocol::{platform, MAX_BINARY_BYTES, QUERN_VERSION, SHUFFLE_FRAME_BYTES};
use tokio::io::AsyncWriteExt;
use tokio_stream::Stream;
use tonic::{Status, Streaming};

use super::{Coordinator, ServiceError};

/// How long an uploaded binary is kept after it was last uploaded, asked for or submitted
/// with, when no unfinished job runs it.
pub const BINARY_RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// How long an upload's partial file may sit before it is taken for abandoned.
const PARTIAL_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

/// Marks a kept binary as used now (its modification time is its last use).
pub(crate) fn touch(path: &std::path::Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Removes the binaries in `dir` unused for longer than `retention` that no unfinished job
/// runs (`in_use`), and abandoned partial uploads. Returns how many files went.
pub fn prune(
    dir: &std::path::Path,
    in_use: &std::collections::HashSet<String>,
    retention: std::time::Duration,
) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().to_string();
        let age = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .unwrap_or_default();
        let stale = if valid_sha256(&name) {
            age > retention && !in_use.contains(&name)
        } else {
            age > PARTIAL_RETENTION
        };
        if stale && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Frames of a binary sent to a worker.
pub type BinaryStream = Pin<Box<dyn Stream<Item = Result<BinaryChunk, Status>> + Send>>;

/// Checks what an upload's first frame says of the binary: its Quern version, platform and
/// size.
fn check_header(first: &BinaryChunk) -> Result<(), ServiceError> {
    if first.quern_version != QUERN_VERSION {
        return Err(ServiceError::failed_precondition(format!(
            "the job binary is built against Quern {}; this cluster runs Quern {QUERN_VERSION}: rebuild it against {QUERN_VERSION}",
            first.quern_version
        )));
    }
    if first.platform != platform() {
        return Err(ServiceError::failed_precondition(format!(
            "the job binary is built for {}; this cluster runs on {}",
            first.platform,
            platform()
        )));
    }
    if first.size > MAX_BINARY_BYTES {
        return Err(ServiceError::invalid_argument(format!(
            "the job binary is {} bytes; the limit is {MAX_BINARY_BYTES}",
            first.size
        )));
    }
    Ok(())
}

impl Coordinator {
    fn binary_path(&self, sha: &str) -> Result<PathBuf, ServiceError> {
        if !valid_sha256(sha) {
            return Err(ServiceError::invalid_argument(format!(
                "bad job binary hash {sha:?}: expected 64 lower-case hex digits"
            )));
        }
        Ok(self.binaries.join(sha))
    }

    /// Whether binary `sha` was uploaded (and if so, marks it used now).
    pub(crate) fn has_binary(&self, sha: &str) -> Result<bool, ServiceError> {
        let path = self.binary_path(sha)?;
        let present = path.is_file();
        if present {
            touch(&path);
        }
        Ok(present)
    }

    /// Removes binaries no job needs any more ([`prune`] with [`BINARY_RETENTION`]).
    pub fn prune_binaries(&self) -> usize {
        let in_use = self.read(|s| s.binaries_in_use());
        let removed = prune(&self.binaries, &in_use, BINARY_RETENTION);
        if removed > 0 {
            tracing::info!(removed, "unused job binaries removed");
        }
        removed
    }

    pub(super) fn has_binary_rpc(&self, sha: &str) -> Result<HasBinaryResponse, ServiceError> {
        Ok(HasBinaryResponse {
            present: self.has_binary(sha)?,
        })
    }

    pub(super) async fn upload_binary_rpc(
        &self,
        mut frames: Streaming<BinaryChunk>,
    ) -> Result<(), ServiceError> {
        let first = frames
            .message()
            .await?
            .ok_or_else(|| ServiceError::invalid_argument("empty upload"))?;
        let sha = first.sha256.clone();
        let path = self.binary_path(&sha)?;
        check_header(&first)?;
        let io = |e: std::io::Error| ServiceError::internal(format!("storing the job binary: {e}"));
        tokio::fs::create_dir_all(&self.binaries)
            .await
            .map_err(io)?;
        let tmp = self
            .binaries
            .join(format!("{sha}.partial-{}", std::process::id()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(io)?;
        let mut hasher = Hasher::default();
        let mut head = Vec::new();
        let mut size = 0u64;
        let declared = first.size;
        let mut next = Some(first);
        let result = async {
            while let Some(chunk) = next.take() {
                size += chunk.data.len() as u64;
                if size > declared {
                    return Err(ServiceError::invalid_argument(format!(
                        "the job binary is larger than the {declared} bytes it declared"
                    )));
                }
                if head.len() < 64 {
                    head.extend_from_slice(&chunk.data[..chunk.data.len().min(64 - head.len())]);
                }
                hasher.update(&chunk.data);
                file.write_all(&chunk.data).await.map_err(io)?;
                next = frames.message().await?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        let got = hasher.finish();
        let refuse = |msg: String| async {
            let _ = tokio::fs::remove_file(&tmp).await;
            Err(ServiceError::invalid_argument(msg))
        };
        if got != sha {
            return refuse(format!(
                "the job binary's bytes hash to {got}, not {sha} ({size} of {declared} bytes received)"
            ))
            .await;
        }
        if let Err(e) = check_runnable(&head) {
            return refuse(format!("the job binary cannot run here: {e}")).await;
        }
        tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)?;
        tracing::info!(binary = %sha, bytes = size, "job binary uploaded");
        Ok(())
    }

    pub(super) async fn fetch_binary_rpc(&self, sha: &str) -> Result<BinaryStream, ServiceError> {
        let path = self.binary_path(sha)?;
        let data = tokio::fs::read(&path).await.map_err(|_| {
            ServiceError::not_found(format!("no job binary {sha} on this coordinator"))
        })?;
        let data = bytes::Bytes::from(data);
        let size = data.len() as u64;
        let sha = sha.to_string();
        let frames: Vec<Result<BinaryChunk, Status>> = data
            .chunks(SHUFFLE_FRAME_BYTES)
            .map(|c| {
                Ok(BinaryChunk {
                    sha256: sha.clone(),
                    size,
                    quern_version: QUERN_VERSION.into(),
                    platform: platform(),
                    data: data.slice_ref(c),
                })
            })
            .collect();
        Ok(Box::pin(tokio_stream::iter(frames)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_unused_binaries_and_abandoned_uploads_go() {
        let dir = tempfile::tempdir().unwrap();
        let sha = |c: char| c.to_string().repeat(64);
        let old = std::time::SystemTime::now() - BINARY_RETENTION * 2;
        for (name, age_old) in [
            (sha('a'), true),                        // old, unused: goes
            (sha('b'), true),                        // old, run by an unfinished job: stays
            (sha('c'), false),                       // recent: stays
            (format!("{}.partial", sha('d')), true), // abandoned upload: goes
        ] {
            let file = std::fs::File::create(dir.path().join(&name)).unwrap();
            if age_old {
                file.set_modified(old).unwrap();
            }
        }
        let in_use = [sha('b')].into_iter().collect();
        assert_eq!(prune(dir.path(), &in_use, BINARY_RETENTION), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [sha('b'), sha('c')]);
        // A use makes an old binary recent again.
        touch(&dir.path().join(sha('b')));
        assert_eq!(prune(dir.path(), &Default::default(), BINARY_RETENTION), 0);
    }
}
