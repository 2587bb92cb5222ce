//! The worker's cache of job binaries: fetched from the coordinator by SHA-256 the first time
//! a task needs one, verified, and kept under `<dir>/binaries/<sha256>`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use protocol::binary::{valid_sha256, Hasher};
use protocol::pb::coordinator_service_client::CoordinatorServiceClient;
use protocol::pb::FetchBinaryRequest;
use tokio::io::AsyncWriteExt;
use tonic::transport::Channel;

/// How long a cached binary stays unused before it is removed (a later task of its job
/// fetches it again; a running executor keeps its file open).
pub const CACHE_RETENTION: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 3600);

/// Removes cached binaries (and partial fetches) unused for longer than `retention`.
/// Returns how many went.
pub fn prune(dir: &Path, retention: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join("binaries")) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > retention)
        })
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// One fetch at a time per worker: concurrent attempts of a new job wait for the first.
static FETCH: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Why a job binary could not be made ready on this worker.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not a SHA-256 in hex.
    #[error("bad job binary hash {0:?}")]
    BadHash(String),
    /// The coordinator did not hand it over.
    #[error("cannot fetch job binary {sha}: {message}")]
    Rpc {
        /// The binary.
        sha: String,
        /// What the coordinator or the connection said.
        message: String,
    },
    /// A local file could not be written.
    #[error("cannot {what} {}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Its bytes hash to something else.
    #[error("job binary {sha} arrived with hash {got} ({size} bytes): refused")]
    Mismatch {
        /// The binary asked for.
        sha: String,
        /// The hash of what arrived.
        got: String,
        /// Bytes that arrived.
        size: u64,
    },
}

impl FetchError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        FetchError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    fn rpc(sha: &str, status: tonic::Status) -> Self {
        FetchError::Rpc {
            sha: sha.to_string(),
            message: status.message().to_string(),
        }
    }
}

/// Returns the path of job binary `sha`, fetching it from the coordinator if it is not cached.
///
/// # Errors
/// [`FetchError`]: a bad hash, an unreachable coordinator, a local file that cannot be
/// written, or a binary whose bytes do not hash to `sha`.
pub async fn ensure(
    dir: &Path,
    client: &mut CoordinatorServiceClient<protocol::auth::Authed<Channel>>,
    sha: &str,
) -> Result<PathBuf, FetchError> {
    if !valid_sha256(sha) {
        return Err(FetchError::BadHash(sha.to_string()));
    }
    let cache = dir.join("binaries");
    let path = cache.join(sha);
    let _one = FETCH.lock().await;
    if tokio::fs::metadata(&path).await.is_ok() {
        // Its modification time is its last use, for the pruner.
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.set_modified(std::time::SystemTime::now());
        }
        return Ok(path);
    }
    tokio::fs::create_dir_all(&cache)
        .await
        .map_err(|e| FetchError::io("create", &cache, e))?;
    let tmp = cache.join(format!("{sha}.partial"));
    let mut stream = client
        .fetch_binary(FetchBinaryRequest {
            sha256: sha.to_string(),
        })
        .await
        .map_err(|e| FetchError::rpc(sha, e))?
        .into_inner();
    let mut file = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| FetchError::io("write", &tmp, e))?;
    let mut hasher = Hasher::default();
    let mut size = 0u64;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|e| FetchError::rpc(sha, e))?
    {
        hasher.update(&chunk.data);
        size += chunk.data.len() as u64;
        file.write_all(&chunk.data)
            .await
            .map_err(|e| FetchError::io("write", &tmp, e))?;
    }
    file.sync_all()
        .await
        .map_err(|e| FetchError::io("write", &tmp, e))?;
    drop(file);
    let got = hasher.finish();
    if got != sha {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(FetchError::Mismatch {
            sha: sha.to_string(),
            got,
            size,
        });
    }
    tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .await
        .map_err(|e| FetchError::io("make executable", &tmp, e))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|e| FetchError::io("install", &path, e))?;
    tracing::info!(
        binary = sha,
        bytes = size,
        "job binary fetched and verified"
    );
    Ok(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cached_binaries_unused_past_the_retention_go() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("binaries");
        std::fs::create_dir_all(&cache).unwrap();
        let old = std::time::SystemTime::now() - super::CACHE_RETENTION * 2;
        for (name, is_old) in [("a".repeat(64), true), ("b".repeat(64), false)] {
            let file = std::fs::File::create(cache.join(name)).unwrap();
            if is_old {
                file.set_modified(old).unwrap();
            }
        }
        assert_eq!(super::prune(dir.path(), super::CACHE_RETENTION), 1);
        assert!(cache.join("b".repeat(64)).exists());
        assert_eq!(super::prune(dir.path(), super::CACHE_RETENTION), 0);
    }
}
