//! The S3 backend, over the `object_store` crate (any S3-compatible store; tested against
//! SeaweedFS's S3 gateway). Object stores have no locality, so [`S3::locations`] names no
//! hosts. An object appears whole when its (multipart) upload completes, so writes are
//! atomic; a rename is a copy and a delete.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::config::StorageConfig;
use crate::path::{Backend, DfsPath};
use crate::writer::{spool_path, Writer};
use crate::{glob_names, is_data_file, DfsError, FileStatus, Piece};

/// Upload parts of this size (S3 needs at least 5 MiB per part but the last).
const PART_BYTES: usize = 16 << 20;

/// Talks to S3-compatible stores.
#[derive(Clone, Debug)]
pub struct S3 {
    config: StorageConfig,
    stores: Arc<Mutex<HashMap<String, Arc<AmazonS3>>>>,
}

/// One runtime for every blocking call into the async client; storage calls come from
/// executor threads and the coordinator's blocking pool, never from inside a runtime.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("quern-s3")
            .enable_all()
            .build()
            .expect("start the S3 client runtime")
    })
}

fn bucket(p: &DfsPath) -> &str {
    match &p.backend {
        Backend::S3 { bucket } => bucket,
        _ => unreachable!("s3 backend called with another backend's path"),
    }
}

fn err(p: &DfsPath, e: object_store::Error) -> DfsError {
    match e {
        object_store::Error::NotFound { .. } => DfsError::NotFound { path: p.url() },
        e => DfsError::Remote {
            url: p.url(),
            message: e.to_string(),
        },
    }
}

impl S3 {
    /// Returns a client with `config`.
    pub fn new(config: StorageConfig) -> Self {
        S3 {
            config,
            stores: Arc::default(),
        }
    }

    fn store(&self, p: &DfsPath) -> Result<Arc<AmazonS3>, DfsError> {
        let b = bucket(p);
        let mut stores = self.stores.lock().expect("s3 store cache lock");
        if let Some(s) = stores.get(b) {
            return Ok(s.clone());
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(b)
            .with_region(&self.config.s3_region);
        if let Some(ep) = &self.config.s3_endpoint {
            builder = builder
                .with_endpoint(ep)
                .with_allow_http(ep.starts_with("http://"));
        }
        match (&self.config.s3_access_key, &self.config.s3_secret_key) {
            (Some(k), Some(s)) => builder = builder.with_access_key_id(k).with_secret_access_key(s),
            _ => builder = builder.with_skip_signature(true),
        }
        let store = Arc::new(builder.build().map_err(|e| err(p, e))?);
        stores.insert(b.to_string(), store.clone());
        Ok(store)
    }

    fn key(p: &DfsPath) -> Key {
        Key::from(p.path.as_str())
    }

    fn status(p: &DfsPath, key: &Key, len: u64, mtime_ms: Option<u64>) -> FileStatus {
        FileStatus {
            path: format!("s3://{}/{}", bucket(p), key),
            len,
            mtime_ms,
        }
    }

    /// Returns the objects directly under `prefix` and the "directories" (common prefixes)
    /// there.
    fn children(
        &self,
        p: &DfsPath,
        prefix: &Key,
    ) -> Result<(Vec<object_store::ObjectMeta>, Vec<Key>), DfsError> {
        let store = self.store(p)?;
        let prefix = prefix.clone();
        let list = runtime()
            .block_on(async move { store.list_with_delimiter(Some(&prefix)).await })
            .map_err(|e| err(p, e))?;
        Ok((list.objects, list.common_prefixes))
    }

    pub(crate) fn list(
        &self,
        p: &DfsPath,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<FileStatus>, DfsError> {
        let (dir, name) = p.path.rsplit_once('/').unwrap_or(("", &p.path));
        let mut out = Vec::new();
        let url = |key: &Key| format!("s3://{}/{}", bucket(p), key);
        if name.contains(['*', '?']) {
            let (objects, prefixes) = self.children(p, &Key::from(dir))?;
            for o in objects {
                let n = o.location.filename().unwrap_or("");
                if glob_names(name, n, &url(&o.location), skipped) {
                    out.push(Self::status(
                        p,
                        &o.location,
                        o.size,
                        millis(&o.last_modified),
                    ));
                }
            }
            for prefix in prefixes {
                let n = prefix.filename().unwrap_or("");
                if glob_names(name, n, &url(&prefix), skipped) {
                    self.walk(p, &prefix, &mut out, skipped)?;
                }
            }
        } else {
            match self.stat(p) {
                Ok(st) => out.push(st),
                Err(DfsError::NotFound { .. }) => self.walk(p, &Self::key(p), &mut out, skipped)?,
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Err(DfsError::NotFound { path: p.url() });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Adds the data objects under `prefix` at any depth, skipping those with a `_` or `.`
    /// name anywhere below the prefix (into `skipped`: the key up to that name).
    fn walk(
        &self,
        p: &DfsPath,
        prefix: &Key,
        out: &mut Vec<FileStatus>,
        skipped: &mut Vec<String>,
    ) -> Result<(), DfsError> {
        let store = self.store(p)?;
        let at = prefix.clone();
        let objects: Vec<_> = runtime()
            .block_on(async move { store.list(Some(&at)).try_collect().await })
            .map_err(|e| err(p, e))?;
        let depth = prefix.parts().count();
        for o in objects {
            let parts: Vec<_> = o.location.parts().collect();
            match parts
                .iter()
                .skip(depth)
                .position(|c| !is_data_file(c.as_ref()))
            {
                None => out.push(Self::status(
                    p,
                    &o.location,
                    o.size,
                    millis(&o.last_modified),
                )),
                Some(i) => skipped.push(format!(
                    "s3://{}/{}",
                    bucket(p),
                    Key::from_iter(parts[..depth + i + 1].iter().cloned())
                )),
            }
        }
        Ok(())
    }

    pub(crate) fn stat(&self, p: &DfsPath) -> Result<FileStatus, DfsError> {
        if p.path.is_empty() {
            return Err(DfsError::NotFound { path: p.url() });
        }
        let (store, key) = (self.store(p)?, Self::key(p));
        let meta = runtime()
            .block_on(async { store.head(&key).await })
            .map_err(|e| err(p, e))?;
        Ok(Self::status(
            p,
            &key,
            meta.size,
            millis(&meta.last_modified),
        ))
    }

    pub(crate) fn entries(&self, p: &DfsPath) -> Result<Vec<String>, DfsError> {
        let (objects, dirs) = self.children(p, &Self::key(p))?;
        Ok(objects
            .iter()
            .map(|o| o.location.filename().unwrap_or("").to_string())
            .chain(dirs.iter().map(|d| d.filename().unwrap_or("").to_string()))
            .collect())
    }

    pub(crate) fn probe(&self, p: &DfsPath) -> Result<crate::PathKind, DfsError> {
        match self.stat(p) {
            Ok(_) => return Ok(crate::PathKind::File),
            Err(DfsError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let (objects, dirs) = self.children(p, &Self::key(p))?;
        let some_entry = objects
            .first()
            .map(|o| o.location.filename().unwrap_or("").to_string())
            .or_else(|| dirs.first().map(|d| d.filename().unwrap_or("").to_string()));
        Ok(match some_entry {
            // An object store has no empty directories: a prefix without objects is nothing.
            None => crate::PathKind::Missing,
            some_entry => crate::PathKind::Directory { some_entry },
        })
    }

    pub(crate) fn exists(&self, p: &DfsPath) -> Result<bool, DfsError> {
        match self.stat(p) {
            Ok(_) => Ok(true),
            Err(DfsError::NotFound { .. }) => {
                let (objects, dirs) = self.children(p, &Self::key(p))?;
                Ok(!objects.is_empty() || !dirs.is_empty())
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn read_range(&self, p: &DfsPath, start: u64, len: u64) -> Result<Bytes, DfsError> {
        let size = self.stat(p)?.len;
        if start > size {
            return Err(DfsError::OutOfRange {
                path: p.url(),
                start,
                end: start.saturating_add(len),
                len: size,
            });
        }
        let end = start.saturating_add(len).min(size);
        if end == start {
            return Ok(Bytes::new());
        }
        let (store, key) = (self.store(p)?, Self::key(p));
        runtime()
            .block_on(async { store.get_range(&key, start..end).await })
            .map_err(|e| err(p, e))
    }

    pub(crate) fn create(&self, p: &DfsPath) -> Result<Writer, DfsError> {
        let (this, target) = (self.clone(), p.clone());
        Writer::new(spool_path(), Box::new(move |tmp| this.upload(&target, tmp)))
    }

    fn upload(&self, p: &DfsPath, file: &std::path::Path) -> Result<(), DfsError> {
        let (store, key) = (self.store(p)?, Self::key(p));
        let mut f = std::fs::File::open(file).map_err(|e| DfsError::io(file, e))?;
        let len = f.metadata().map_err(|e| DfsError::io(file, e))?.len() as usize;
        let mut read_part = |n: usize| -> Result<Bytes, DfsError> {
            let mut buf = vec![0; n];
            f.read_exact(&mut buf).map_err(|e| DfsError::io(file, e))?;
            Ok(Bytes::from(buf))
        };
        if len <= PART_BYTES {
            let body = read_part(len)?;
            runtime()
                .block_on(async { store.put(&key, PutPayload::from(body)).await })
                .map_err(|e| err(p, e))?;
            return Ok(());
        }
        let mut upload = runtime()
            .block_on(async { store.put_multipart(&key).await })
            .map_err(|e| err(p, e))?;
        let mut left = len;
        while left > 0 {
            let n = left.min(PART_BYTES);
            let part = match read_part(n) {
                Ok(part) => part,
                Err(e) => {
                    let _ = runtime().block_on(upload.abort());
                    return Err(e);
                }
            };
            if let Err(e) = runtime().block_on(upload.put_part(PutPayload::from(part))) {
                let _ = runtime().block_on(upload.abort());
                return Err(err(p, e));
            }
            left -= n;
        }
        runtime()
            .block_on(upload.complete())
            .map_err(|e| err(p, e))?;
        Ok(())
    }

    pub(crate) fn rename(&self, from: &DfsPath, to: &DfsPath) -> Result<(), DfsError> {
        if bucket(from) != bucket(to) {
            return Err(DfsError::InvalidPath {
                url: to.url(),
                reason: "an S3 rename stays within one bucket",
            });
        }
        let (store, a, b) = (self.store(from)?, Self::key(from), Self::key(to));
        runtime()
            .block_on(async { store.rename(&a, &b).await })
            .map_err(|e| err(from, e))
    }

    pub(crate) fn delete(&self, p: &DfsPath) -> Result<(), DfsError> {
        let store = self.store(p)?;
        let key = Self::key(p);
        runtime()
            .block_on(async {
                match store.delete(&key).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
                // A "directory": every object under the prefix.
                let under: Vec<Key> = store
                    .list(Some(&key))
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await?;
                for k in under {
                    match store.delete(&k).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .map_err(|e| err(p, e))
    }

    pub(crate) fn locations(&self, p: &DfsPath) -> Result<Vec<Piece>, DfsError> {
        let st = self.stat(p)?;
        Ok(vec![Piece {
            offset: 0,
            len: st.len,
            hosts: Vec::new(),
        }])
    }
}

/// Milliseconds since the Unix epoch of an object's last modification (`None` before 1970).
fn millis(t: &chrono::DateTime<chrono::Utc>) -> Option<u64> {
    u64::try_from(t.timestamp_millis()).ok()
}
