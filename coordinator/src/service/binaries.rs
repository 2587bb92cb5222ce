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

use super::Coordinator;

/// Frames of a binary sent to a worker.
pub type BinaryStream = Pin<Box<dyn Stream<Item = Result<BinaryChunk, Status>> + Send>>;

impl Coordinator {
    fn binary_path(&self, sha: &str) -> Result<PathBuf, Status> {
        if !valid_sha256(sha) {
            return Err(Status::invalid_argument(format!(
                "bad job binary hash {sha:?}: expected 64 lower-case hex digits"
            )));
        }
        Ok(self.binaries.join(sha))
    }

    /// Whether binary `sha` was uploaded.
    pub(crate) fn has_binary(&self, sha: &str) -> Result<bool, Status> {
        Ok(self.binary_path(sha)?.is_file())
    }

    pub(super) fn has_binary_rpc(&self, sha: &str) -> Result<HasBinaryResponse, Status> {
        Ok(HasBinaryResponse {
            present: self.has_binary(sha)?,
        })
    }

    pub(super) async fn upload_binary_rpc(
        &self,
        mut frames: Streaming<BinaryChunk>,
    ) -> Result<(), Status> {
        let first = frames
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let sha = first.sha256.clone();
        let path = self.binary_path(&sha)?;
        if first.quern_version != QUERN_VERSION {
            return Err(Status::failed_precondition(format!(
                "the job binary is built against Quern {}; this cluster runs Quern {QUERN_VERSION}: rebuild it against {QUERN_VERSION}",
                first.quern_version
            )));
        }
        if first.platform != platform() {
            return Err(Status::failed_precondition(format!(
                "the job binary is built for {}; this cluster runs on {}",
                first.platform,
                platform()
            )));
        }
        if first.size > MAX_BINARY_BYTES {
            return Err(Status::invalid_argument(format!(
                "the job binary is {} bytes; the limit is {MAX_BINARY_BYTES}",
                first.size
            )));
        }
        let io = |e: std::io::Error| Status::internal(format!("storing the job binary: {e}"));
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
                    return Err(Status::invalid_argument(format!(
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
            Err(Status::invalid_argument(msg))
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

    pub(super) async fn fetch_binary_rpc(&self, sha: &str) -> Result<BinaryStream, Status> {
        let path = self.binary_path(sha)?;
        let data = tokio::fs::read(&path)
            .await
            .map_err(|_| Status::not_found(format!("no job binary {sha} on this coordinator")))?;
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
