//! The SeaweedFS backend: a client of a real chunked, replicated file system.
//!
//! Names live in the filer (HTTP: list, stat with `?metadata=true`, PUT, rename with
//! `?mv.from=`, DELETE). A file's metadata lists its chunks (`file_id`, offset, size); the
//! master says which volume servers hold each chunk's volume (`/dir/lookup`). Reads go
//! straight to a volume server holding the chunk, with an HTTP range, and fail over to the
//! next replica on a refused connection, an error status or a short read; that is also what
//! [`Storage::locations`](crate::Storage::locations) reports, so map tasks can be placed beside
//! their chunk. A chunk held by a volume server on this host
//! ([`StorageConfig::local_volume_servers`]) is read from that server's files instead
//! ([`volume_files`]), falling back to HTTP wherever that cannot be done with every check
//! passed.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Deserialize;

use crate::config::StorageConfig;
use crate::path::DfsPath;
use crate::writer::{spool_path, Writer};
use crate::{glob_names, is_data_file, DfsError, FileStatus, Piece};

pub mod volume_files;

pub use volume_files::short_circuit_bytes;

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(rename = "FullPath")]
    full_path: String,
    #[serde(rename = "FileSize", default)]
    file_size: u64,
    #[serde(rename = "Mode", default)]
    mode: u64,
    /// RFC 3339.
    #[serde(rename = "Mtime", default)]
    mtime: String,
    #[serde(default)]
    chunks: Option<Vec<Chunk>>,
}

impl Entry {
    fn is_dir(&self) -> bool {
        // Go's os.ModeDir.
        self.mode & (1 << 31) != 0
    }
}

#[derive(Debug, Clone, Deserialize)]
struct Chunk {
    file_id: String,
    #[serde(default)]
    offset: u64,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct Listing {
    #[serde(rename = "Entries", default)]
    entries: Option<Vec<Entry>>,
    #[serde(rename = "LastFileName", default)]
    last_file_name: String,
    #[serde(rename = "ShouldDisplayLoadMore", default)]
    more: bool,
}

#[derive(Debug, Deserialize)]
struct Lookup {
    #[serde(default)]
    locations: Vec<Location>,
    #[serde(default)]
    error: String,
}

#[derive(Debug, Deserialize)]
struct Location {
    url: String,
}

/// Talks to SeaweedFS filers, masters and volume servers.
#[derive(Clone)]
pub struct SeaweedFs {
    agent: ureq::Agent,
    config: StorageConfig,
    // Volume id -> volume servers; a std Mutex, held only to read or fill the map.
    volumes: Arc<Mutex<HashMap<String, Vec<String>>>>,
}

impl std::fmt::Debug for SeaweedFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeaweedFs")
            .field("config", &self.config)
            .finish()
    }
}

fn filer_of(p: &DfsPath) -> &str {
    match &p.backend {
        crate::Backend::SeaweedFs { filer } => filer,
        _ => unreachable!("seaweedfs backend called with another backend's path"),
    }
}

/// Percent-encodes a path for a URL (everything but unreserved characters and `/`).
fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// How long a volume server a read failed on is asked after the others.
const FAILED_FOR: Duration = Duration::from_secs(60);

/// Volume servers a read of this process failed on lately, with when: asked after the other
/// replicas for [`FAILED_FOR`] (as HDFS's client keeps its dead nodes), so that a server that
/// stopped answering costs each process one I/O timeout rather than one per chunk. A
/// process-wide list: an executor serves many tasks, each with a storage client of its own.
fn failed_servers() -> std::sync::MutexGuard<'static, HashMap<String, Instant>> {
    static FAILED: std::sync::OnceLock<Mutex<HashMap<String, Instant>>> =
        std::sync::OnceLock::new();
    FAILED
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The order in which a chunk's replicas on `hosts` are read over HTTP: those on this host
/// (`local`) first, then the others in the master's order, and last those a read failed on
/// within [`FAILED_FOR`].
fn read_order(mut hosts: Vec<String>, local: &[String]) -> Vec<String> {
    let mut failed = failed_servers();
    failed.retain(|_, at| at.elapsed() < FAILED_FOR);
    hosts.sort_by_key(|h| (failed.contains_key(h), !local.contains(h)));
    hosts
}

fn http_err(url: &str, e: ureq::Error) -> DfsError {
    match e {
        ureq::Error::StatusCode(404) => DfsError::NotFound {
            path: url.to_string(),
        },
        e => DfsError::Remote {
            url: url.to_string(),
            message: e.to_string(),
        },
    }
}

impl SeaweedFs {
    /// Returns a client with `config`.
    pub fn new(config: StorageConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(5)))
            .timeout_per_read(Some(config.seaweedfs_io_timeout))
            .timeout_per_write(Some(config.seaweedfs_io_timeout))
            .timeout_global(Some(Duration::from_secs(300)))
            .http_status_as_error(true)
            .build()
            .into();
        SeaweedFs {
            agent,
            config,
            volumes: Arc::default(),
        }
    }

    fn url(p: &DfsPath, path: &str) -> String {
        format!("http://{}{}", filer_of(p), encode(path))
    }

    fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, DfsError> {
        let mut resp = self
            .agent
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| http_err(url, e))?;
        let body = resp
            .body_mut()
            .read_to_vec()
            .map_err(|e| http_err(url, e))?;
        serde_json::from_slice(&body).map_err(|e| DfsError::Remote {
            url: url.to_string(),
            message: e.to_string(),
        })
    }

    fn entry(&self, p: &DfsPath) -> Result<Entry, DfsError> {
        self.get_json(&format!("{}?metadata=true", Self::url(p, &p.path)))
    }

    /// The URL of `full_path` on `p`'s filer.
    fn url_of(p: &DfsPath, full_path: &str) -> String {
        DfsPath {
            backend: p.backend.clone(),
            path: full_path.to_string(),
        }
        .url()
    }

    fn status(p: &DfsPath, e: &Entry) -> FileStatus {
        FileStatus {
            path: Self::url_of(p, &e.full_path),
            len: e.file_size,
            mtime_ms: chrono::DateTime::parse_from_rfc3339(&e.mtime)
                .ok()
                .and_then(|t| u64::try_from(t.timestamp_millis()).ok()),
        }
    }

    fn children(&self, p: &DfsPath, dir: &str) -> Result<Vec<Entry>, DfsError> {
        let mut out = Vec::new();
        let mut last = String::new();
        loop {
            let url = format!(
                "{}/?limit=1000&lastFileName={}",
                Self::url(p, dir.trim_end_matches('/')),
                encode(&last)
            );
            let l: Listing = self.get_json(&url)?;
            let entries = l.entries.unwrap_or_default();
            let n = entries.len();
            out.extend(entries);
            if !l.more || n == 0 {
                return Ok(out);
            }
            last = l.last_file_name;
        }
    }

    pub(crate) fn list(
        &self,
        p: &DfsPath,
        skipped: &mut Vec<String>,
    ) -> Result<Vec<FileStatus>, DfsError> {
        let (dir, name) = p.path.rsplit_once('/').unwrap_or(("", &p.path));
        let mut out = Vec::new();
        if name.contains(['*', '?']) {
            for e in self.children(p, if dir.is_empty() { "/" } else { dir })? {
                let n = e.full_path.rsplit('/').next().unwrap_or("");
                if glob_names(name, n, &Self::url_of(p, &e.full_path), skipped) {
                    if e.is_dir() {
                        self.walk(p, &e.full_path, &mut out, skipped)?;
                    } else {
                        out.push(Self::status(p, &e));
                    }
                }
            }
        } else {
            let e = self.entry(p)?;
            if e.is_dir() {
                self.walk(p, &p.path, &mut out, skipped)?;
            } else {
                out.push(Self::status(p, &e));
            }
        }
        if out.is_empty() {
            return Err(DfsError::NotFound { path: p.url() });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Adds the data files under `dir`, recursively, skipping `_` and `.` names at every level
    /// (into `skipped`).
    fn walk(
        &self,
        p: &DfsPath,
        dir: &str,
        out: &mut Vec<FileStatus>,
        skipped: &mut Vec<String>,
    ) -> Result<(), DfsError> {
        for c in self.children(p, dir)? {
            let n = c.full_path.rsplit('/').next().unwrap_or("");
            if !is_data_file(n) {
                skipped.push(Self::url_of(p, &c.full_path));
                continue;
            }
            if c.is_dir() {
                self.walk(p, &c.full_path, out, skipped)?;
            } else {
                out.push(Self::status(p, &c));
            }
        }
        Ok(())
    }

    pub(crate) fn stat(&self, p: &DfsPath) -> Result<FileStatus, DfsError> {
        Ok(Self::status(p, &self.entry(p)?))
    }

    pub(crate) fn entries(&self, p: &DfsPath) -> Result<Vec<String>, DfsError> {
        Ok(self
            .children(p, &p.path)?
            .iter()
            .map(|c| c.full_path.rsplit('/').next().unwrap_or("").to_string())
            .collect())
    }

    pub(crate) fn probe(&self, p: &DfsPath) -> Result<crate::PathKind, DfsError> {
        let e = match self.entry(p) {
            Ok(e) => e,
            Err(DfsError::NotFound { .. }) => return Ok(crate::PathKind::Missing),
            Err(e) => return Err(e),
        };
        if !e.is_dir() {
            return Ok(crate::PathKind::File);
        }
        let some_entry = self
            .children(p, &p.path)?
            .first()
            .map(|c| c.full_path.rsplit('/').next().unwrap_or("").to_string());
        Ok(crate::PathKind::Directory { some_entry })
    }

    pub(crate) fn exists(&self, p: &DfsPath) -> Result<bool, DfsError> {
        match self.entry(p) {
            Ok(_) => Ok(true),
            Err(DfsError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Returns the volume servers holding volume `vid`, asking the master unless cached.
    fn volume_servers(
        &self,
        p: &DfsPath,
        vid: &str,
        refresh: bool,
    ) -> Result<Vec<String>, DfsError> {
        if !refresh {
            if let Some(v) = self.volumes.lock().expect("volume cache lock").get(vid) {
                return Ok(v.clone());
            }
        }
        let master = match &self.config.seaweedfs_master {
            Some(m) => m.clone(),
            None => format!(
                "{}:9333",
                filer_of(p).rsplit_once(':').map_or(filer_of(p), |(h, _)| h)
            ),
        };
        let url = format!("http://{master}/dir/lookup?volumeId={vid}");
        let l: Lookup = self.get_json(&url)?;
        if l.locations.is_empty() {
            return Err(DfsError::Remote {
                url,
                message: format!("no volume server holds volume {vid}: {}", l.error),
            });
        }
        let hosts: Vec<String> = l.locations.into_iter().map(|l| l.url).collect();
        self.volumes
            .lock()
            .expect("volume cache lock")
            .insert(vid.to_string(), hosts.clone());
        Ok(hosts)
    }

    /// Reads `[start, end)` of one chunk, appending it to `out`: from the files of a replica's
    /// volume server on this host where there is one, else from any replica over HTTP
    /// (straight from the connection: a fresh buffer per chunk, copied over, cost as much
    /// again in page faults and copies as the read itself).
    fn read_chunk(
        &self,
        p: &DfsPath,
        chunk: &Chunk,
        start: u64,
        end: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), DfsError> {
        let vid = chunk.file_id.split(',').next().unwrap_or("");
        // Servers whose copy of the chunk failed its checksum here: the volume server would
        // serve a part of it unchecked, so they are not asked.
        let mut corrupt = Vec::new();
        // The first corrupt copy's error: the one to report, whatever else fails after it.
        let mut corrupt_err = None;
        let mut last_err = None;
        if self.config.short_circuit_reads {
            let hosts = self.volume_servers(p, vid, false)?;
            for server in hosts
                .iter()
                .filter(|h| self.config.local_volume_servers.contains(h))
            {
                match volume_files::read(&self.agent, server, &chunk.file_id, start, end, out) {
                    volume_files::Outcome::Read => return Ok(()),
                    volume_files::Outcome::Declined => {}
                    volume_files::Outcome::Corrupt(why) => {
                        if corrupt_err.is_none() {
                            corrupt_err = Some((
                                format!("http://{server}/{}", chunk.file_id),
                                format!("the copy in the volume's file is corrupt: {why}"),
                            ));
                        }
                        corrupt.push(server.clone());
                    }
                }
            }
        }
        for refresh in [false, true] {
            let hosts = self.volume_servers(p, vid, refresh)?;
            for host in read_order(hosts, &self.config.local_volume_servers) {
                if corrupt.contains(&host) {
                    continue;
                }
                let url = format!("http://{host}/{}", chunk.file_id);
                let want = (end - start) as usize;
                let before = out.len();
                let res = self
                    .agent
                    .get(&url)
                    .header("Range", &format!("bytes={start}-{}", end - 1))
                    .call()
                    .map_err(|e| http_err(&url, e))
                    .and_then(|mut r| {
                        r.body_mut()
                            .as_reader()
                            .take(want as u64 + 1)
                            .read_to_end(out)
                            .map_err(|e| DfsError::Remote {
                                url: url.clone(),
                                message: e.to_string(),
                            })
                    });
                match res {
                    Ok(n) if n == want => {
                        failed_servers().remove(&host);
                        return Ok(());
                    }
                    Ok(n) => {
                        last_err = Some(DfsError::Remote {
                            url,
                            message: format!("short read: {n} of {want} bytes"),
                        })
                    }
                    Err(e) => last_err = Some(e),
                }
                out.truncate(before);
                failed_servers().insert(host.clone(), Instant::now());
                tracing::warn!(chunk = %chunk.file_id, %host, "chunk read failed; trying another replica");
            }
        }
        Err(match (corrupt_err, last_err) {
            (Some((url, message)), None) => DfsError::Remote { url, message },
            // Another copy could not be read either: both are said.
            (Some((url, message)), Some(other)) => DfsError::Remote {
                url,
                message: format!("{message}; no other copy could be read: {other}"),
            },
            (None, last) => last.unwrap_or(DfsError::NotFound { path: p.url() }),
        })
    }

    pub(crate) fn read_range(&self, p: &DfsPath, start: u64, len: u64) -> Result<Bytes, DfsError> {
        let e = self.entry(p)?;
        if start > e.file_size {
            return Err(DfsError::OutOfRange {
                path: p.url(),
                start,
                end: start.saturating_add(len),
                len: e.file_size,
            });
        }
        let end = start.saturating_add(len).min(e.file_size);
        if end == start {
            return Ok(Bytes::new());
        }
        let mut chunks = e.chunks.unwrap_or_default();
        chunks.sort_by_key(|c| c.offset);
        let mut out = Vec::with_capacity((end - start) as usize);
        for c in chunks
            .iter()
            .filter(|c| c.offset < end && c.offset + c.size > start)
        {
            let from = start.max(c.offset) - c.offset;
            let to = end.min(c.offset + c.size) - c.offset;
            self.read_chunk(p, c, from, to, &mut out)?;
        }
        if out.len() as u64 != end - start {
            return Err(DfsError::Remote {
                url: p.url(),
                message: "chunks do not cover the file".into(),
            });
        }
        Ok(Bytes::from(out))
    }

    pub(crate) fn create(&self, p: &DfsPath) -> Result<Writer, DfsError> {
        let (this, target) = (self.clone(), p.clone());
        Writer::new(spool_path(), Box::new(move |tmp| this.upload(&target, tmp)))
    }

    fn upload(&self, target: &DfsPath, file: &std::path::Path) -> Result<(), DfsError> {
        let (dir, name) = target.path.rsplit_once('/').unwrap_or(("", &target.path));
        let tmp_name = format!("{dir}/.{name}.uploading-{}", std::process::id());
        let url = format!(
            "{}?maxMB={}&replication={}",
            Self::url(target, &tmp_name),
            self.config.seaweedfs_chunk_mb,
            self.config.seaweedfs_replication
        );
        let f = std::fs::File::open(file).map_err(|e| DfsError::io(file, e))?;
        let len = f.metadata().map_err(|e| DfsError::io(file, e))?.len();
        self.agent
            .put(&url)
            .header("Content-Length", &len.to_string())
            // A non-text content type under a name without a known extension: the filer then stores
            // chunks uncompressed, so a ranged read costs the range, not a whole chunk's
            // decompression on the volume server.
            .header("Content-Type", "application/x-quern-data")
            .send(ureq::SendBody::from_reader(
                &mut std::io::BufReader::with_capacity(1 << 20, f),
            ))
            .map_err(|e| http_err(&url, e))?;
        let tmp = DfsPath {
            backend: target.backend.clone(),
            path: tmp_name,
        };
        self.rename(&tmp, target)
    }

    pub(crate) fn rename(&self, from: &DfsPath, to: &DfsPath) -> Result<(), DfsError> {
        let url = format!("{}?mv.from={}", Self::url(to, &to.path), encode(&from.path));
        self.agent
            .post(&url)
            .send_empty()
            .map_err(|e| http_err(&url, e))?;
        Ok(())
    }

    pub(crate) fn delete(&self, p: &DfsPath) -> Result<(), DfsError> {
        let url = format!(
            "{}?recursive=true&ignoreRecursiveError=true",
            Self::url(p, &p.path)
        );
        match self.agent.delete(&url).call() {
            Ok(_) | Err(ureq::Error::StatusCode(404)) => Ok(()),
            Err(e) => Err(http_err(&url, e)),
        }
    }

    pub(crate) fn locations(&self, p: &DfsPath) -> Result<Vec<Piece>, DfsError> {
        let e = self.entry(p)?;
        let mut chunks = e.chunks.unwrap_or_default();
        chunks.sort_by_key(|c| c.offset);
        chunks
            .iter()
            .map(|c| {
                let vid = c.file_id.split(',').next().unwrap_or("");
                Ok(Piece {
                    offset: c.offset,
                    len: c.size,
                    hosts: self.volume_servers(p, vid, false)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_read_local_first_and_those_that_failed_lately_last() {
        let hosts = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = hosts(&["read-order-a:1", "read-order-b:1", "read-order-c:1"]);
        assert_eq!(read_order(all.clone(), &[]), all);
        let local = hosts(&["read-order-c:1"]);
        assert_eq!(
            read_order(all.clone(), &local),
            hosts(&["read-order-c:1", "read-order-a:1", "read-order-b:1"])
        );
        failed_servers().insert("read-order-a:1".into(), Instant::now());
        assert_eq!(
            read_order(all.clone(), &[]),
            hosts(&["read-order-b:1", "read-order-c:1", "read-order-a:1"])
        );
        // A local server that failed lately comes after those that did not (and before the
        // others that failed).
        failed_servers().insert("read-order-c:1".into(), Instant::now());
        assert_eq!(
            read_order(all.clone(), &local),
            hosts(&["read-order-b:1", "read-order-c:1", "read-order-a:1"])
        );
        // A failure older than the window no longer counts.
        if let Some(long_ago) = Instant::now().checked_sub(FAILED_FOR + Duration::from_secs(1)) {
            failed_servers().insert("read-order-a:1".into(), long_ago);
            failed_servers().insert("read-order-c:1".into(), long_ago);
            assert_eq!(read_order(all.clone(), &[]), all);
        }
    }
}
