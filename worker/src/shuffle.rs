//! The shuffle service and its client.
//!
//! The worker daemon (not the executor) serves map output, so output stays fetchable after the
//! map's executor has exited. A fetch names (job, map, attempt, partition); the service
//! memory-maps the map's output file, finds the partition through its index, and streams it in
//! frames of [`SHUFFLE_FRAME_BYTES`], far below any message-size limit. The fetcher checks
//! every block checksum on arrival, so a corrupt output is blamed on the right map.

use std::path::PathBuf;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use jobs::runtime::format::{verify_run, ShuffleFile};
use protocol::pb::worker_service_client::WorkerServiceClient;
use protocol::pb::worker_service_server::WorkerService;
use protocol::pb::{
    FetchLogRequest, FetchLogResponse, FetchPartitionRequest, FetchPartitionResponse,
};
use protocol::{AttemptId, JobId, MAX_MESSAGE_BYTES, SHUFFLE_FRAME_BYTES};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::task::{map_output_path, FetchFailure, LostMap, MapOutput};

/// Where a worker keeps a job's shuffle secret (owner-readable only): outside the job's
/// shuffle directory, so that map outputs stay servable after a worker restart and attempt
/// logs stay readable after the job's shuffle files are gone.
pub fn job_secret_path(dir: &std::path::Path, job: JobId) -> PathBuf {
    dir.join("secrets").join(job.to_string())
}

/// Where an attempt's log is kept: `logs/<stem>.log`, its stem
/// ([`protocol::task::attempt_file_stem`]) starting with its job, so that a job's secret can
/// go when the last of its logs has.
pub fn attempt_log_path(dir: &std::path::Path, stem: &str) -> PathBuf {
    dir.join("logs").join(format!("{stem}.log"))
}

/// Finds the log of `attempt` of `job`: the file of `logs/` named `<job>-...-<attempt>.log`
/// (also `<job>-<attempt>.log`, as workers named them before).
fn find_attempt_log(dir: &std::path::Path, job: JobId, attempt: AttemptId) -> Option<PathBuf> {
    let (prefix, suffix) = (format!("{job}-"), format!("-{attempt}.log"));
    let old = format!("{job}-{attempt}.log");
    std::fs::read_dir(dir.join("logs"))
        .ok()?
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n == old || (n.starts_with(&prefix) && n.ends_with(&suffix)))
        })
        .map(|e| e.path())
}

/// How long a job secret is kept after it was first kept even with nothing of its job left
/// (its first attempt may be about to start).
pub const SECRET_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes the job secrets that nothing needs any more: no attempt log of the job is left to
/// serve, no map output of it is left in the shuffle directory, and the secret is older than
/// [`SECRET_GRACE`]. Returns how many were removed.
pub fn prune_secrets(dir: &std::path::Path) -> usize {
    let Ok(secrets) = std::fs::read_dir(dir.join("secrets")) else {
        return 0;
    };
    let logs: Vec<String> = std::fs::read_dir(dir.join("logs"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut removed = 0;
    for e in secrets.filter_map(Result::ok) {
        let Ok(job) = e.file_name().into_string() else {
            continue;
        };
        let prefix = format!("{job}-");
        let young = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < SECRET_GRACE);
        let needed = young
            || logs.iter().any(|l| l.starts_with(&prefix))
            || dir.join("shuffle").join(&job).exists();
        if !needed && std::fs::remove_file(e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Keeps `secret` for `job` (once; later map attempts of the job bring the same one).
///
/// # Errors
/// The write error.
pub fn keep_job_secret(dir: &std::path::Path, job: JobId, secret: &[u8]) -> std::io::Result<()> {
    let path = job_secret_path(dir, job);
    if path.exists() {
        return Ok(());
    }
    protocol::auth::write_private(&path, secret)
}

/// Serves the map outputs under one worker directory.
#[derive(Clone, Debug)]
pub struct ShuffleService {
    dir: PathBuf,
}

impl ShuffleService {
    /// Serves outputs under `dir`.
    pub fn new(dir: PathBuf) -> Self {
        ShuffleService { dir }
    }

    /// Returns the gRPC server for this service, with explicit message limits.
    pub fn into_server(self) -> protocol::pb::worker_service_server::WorkerServiceServer<Self> {
        protocol::pb::worker_service_server::WorkerServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

type FrameStream = Pin<Box<dyn Stream<Item = Result<FetchPartitionResponse, Status>> + Send>>;

fn read_partition(path: PathBuf, partition: u32) -> Result<Bytes, Status> {
    let file = std::fs::File::open(&path).map_err(|_| Status::not_found("no such map output"))?;
    // SAFETY: map outputs are written once, renamed into place, and only deleted (never
    // modified) afterwards; a deleted file stays readable through the map.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Status::internal(e.to_string()))?;
    let file =
        ShuffleFile::open(Bytes::from_owner(map)).map_err(|e| Status::data_loss(e.to_string()))?;
    if partition >= file.partitions() {
        return Err(Status::invalid_argument("partition out of range"));
    }
    Ok(file.partition(partition))
}

#[tonic::async_trait]
impl WorkerService for ShuffleService {
    type FetchPartitionStream = FrameStream;

    async fn fetch_log(
        &self,
        request: Request<FetchLogRequest>,
    ) -> Result<Response<FetchLogResponse>, Status> {
        const MAX: u64 = 1 << 20;
        let r = request.into_inner();
        // Only a caller the coordinator gave this attempt's log token to reads the log.
        let secret = tokio::fs::read(job_secret_path(&self.dir, JobId(r.job_id)))
            .await
            .unwrap_or_default();
        if !protocol::auth::check_log_token(&secret, r.job_id, r.attempt_id, &r.token) {
            return Err(Status::permission_denied(
                "log token does not match this job and attempt",
            ));
        }
        let attempt = AttemptId(r.attempt_id);
        let (dir, job) = (self.dir.clone(), JobId(r.job_id));
        let data = tokio::task::spawn_blocking(move || -> std::io::Result<(Vec<u8>, bool)> {
            use std::io::{Read, Seek, SeekFrom};
            let path = find_attempt_log(&dir, job, attempt)
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?;
            let mut f = std::fs::File::open(&path)?;
            let len = f.metadata()?.len();
            let start = len.saturating_sub(MAX);
            f.seek(SeekFrom::Start(start))?;
            let mut buf = Vec::with_capacity((len - start) as usize);
            f.read_to_end(&mut buf)?;
            Ok((buf, start > 0))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|_| Status::not_found(format!("no log of {attempt} on this worker")))?;
        Ok(Response::new(FetchLogResponse {
            data: data.0,
            truncated: data.1,
        }))
    }

    async fn fetch_partition(
        &self,
        request: Request<FetchPartitionRequest>,
    ) -> Result<Response<Self::FetchPartitionStream>, Status> {
        let r = request.into_inner();
        // Only a reducer of this job, for this map output and partition, gets the data.
        let secret = job_secret_path(&self.dir, JobId(r.job_id));
        let secret = tokio::fs::read(&secret).await.unwrap_or_default();
        if !protocol::auth::check_shuffle_token(
            &secret,
            r.job_id,
            r.map_index,
            r.map_attempt_id,
            r.partition,
            &r.token,
        ) {
            return Err(Status::permission_denied(
                "shuffle token does not match this job, map and partition",
            ));
        }
        let path = map_output_path(
            &self.dir,
            JobId(r.job_id),
            r.map_index,
            AttemptId(r.map_attempt_id),
        );
        // Reading through an mmap can page-fault, so it stays off the runtime threads.
        let data = tokio::task::spawn_blocking(move || {
            protocol::failpoint::hit("shuffle.serve");
            read_partition(path, r.partition)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        let total = data.len() as u64;
        let mut frames = Vec::with_capacity(data.len() / SHUFFLE_FRAME_BYTES + 1);
        let mut at = 0;
        loop {
            let end = (at + SHUFFLE_FRAME_BYTES).min(data.len());
            frames.push(Ok(FetchPartitionResponse {
                total_bytes: total,
                data: data.slice(at..end),
            }));
            at = end;
            if at >= data.len() {
                break;
            }
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(frames))))
    }
}

/// The connections of one reduce's fetches, one per worker address: HTTP/2 carries the
/// fetches from one worker side by side, so a reduce over thousands of maps on a few hosts
/// opens a few connections rather than one per map output (each a TCP and HTTP/2 handshake,
/// and a TLS one where TLS is on). A worker that cannot be reached is tried once per reduce;
/// every fetch from it is then lost with that error. The connections are
/// [`protocol::tls::watched`]: a worker whose host went away fails its fetches within half a
/// minute, and the reduce reports them so that its maps run again.
#[derive(Default)]
pub struct Connections {
    by_addr: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<ConnectOnce>>>,
}

type ConnectOnce = tokio::sync::OnceCell<Result<tonic::transport::Channel, String>>;

impl Connections {
    /// The connection to `addr`, made by the first fetch that asks for it (those asking
    /// meanwhile wait for it).
    async fn to(&self, addr: &str) -> Result<tonic::transport::Channel, String> {
        let once = self
            .by_addr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(addr.to_owned())
            .or_default()
            .clone();
        once.get_or_init(|| async {
            let tls = protocol::tls::env_client().map_err(|e| protocol::error_chain(e))?;
            let connect = async {
                protocol::tls::watched(protocol::tls::endpoint(addr, tls)?)
                    .connect()
                    .await
            };
            connect.await.map_err(|e| protocol::error_chain(&e))
        })
        .await
        .clone()
    }
}

/// The variable holding how long, in seconds, a reduce waits for the next bytes of a map
/// output before it reports the output lost (default [`DEFAULT_FETCH_TIMEOUT`]).
pub const FETCH_TIMEOUT_ENV: &str = "QUERN_FETCH_TIMEOUT_S";

/// Spark's `spark.network.timeout` (Hadoop waits 180 s: `mapreduce.reduce.shuffle.read.timeout`).
pub const DEFAULT_FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// [`FETCH_TIMEOUT_ENV`] or its default, read once.
fn fetch_timeout() -> std::time::Duration {
    static READ: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();
    *READ.get_or_init(|| {
        std::env::var(FETCH_TIMEOUT_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|s| *s > 0)
            .map_or(DEFAULT_FETCH_TIMEOUT, std::time::Duration::from_secs)
    })
}

/// Fetches partition `partition` of one map output over `connections`; the result has passed
/// its checksums.
///
/// # Errors
/// A [`LostMap`] saying why the output could not be had.
pub async fn fetch(
    job: JobId,
    partition: u32,
    m: &MapOutput,
    secret: &[u8],
    connections: &Connections,
) -> Result<Bytes, LostMap> {
    let lost = |reason, detail: String| LostMap {
        map_index: m.map_index,
        attempt: m.attempt,
        reason,
        detail,
    };
    let channel = connections
        .to(&m.addr)
        .await
        .map_err(|e| lost(FetchFailure::Unreachable, e))?;
    let mut client = WorkerServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let req = FetchPartitionRequest {
        job_id: job.0,
        map_index: m.map_index,
        map_attempt_id: m.attempt.0,
        partition,
        token: protocol::auth::shuffle_token(secret, job.0, m.map_index, m.attempt.0, partition),
    };
    let status_reason = |s: &Status| match s.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => FetchFailure::NotFound,
        tonic::Code::DataLoss => FetchFailure::Corrupt,
        _ => FetchFailure::Unreachable,
    };
    // A worker that answers pings but sends nothing (its disk hangs, its reads are stuck) is
    // waited for this long at a time, not for as long as it stays stuck.
    let patience = fetch_timeout();
    let stalled = || {
        lost(
            FetchFailure::Unreachable,
            format!(
                "no data from {} for {} s ({FETCH_TIMEOUT_ENV})",
                m.addr,
                patience.as_secs()
            ),
        )
    };
    let mut stream = tokio::time::timeout(patience, client.fetch_partition(req))
        .await
        .map_err(|_| stalled())?
        .map_err(|s| lost(status_reason(&s), s.message().to_string()))?
        .into_inner();
    let mut buf = BytesMut::new();
    let mut total = None;
    while let Some(frame) = tokio::time::timeout(patience, stream.message())
        .await
        .map_err(|_| stalled())?
        .map_err(|s| lost(status_reason(&s), s.message().to_string()))?
    {
        let expected = *total.get_or_insert(frame.total_bytes);
        if buf.is_empty() && expected as usize > buf.capacity() {
            // The declared size is checked against what arrives; reserve only a frame's worth
            // up front so a lying peer cannot make us allocate.
            buf.reserve((expected as usize).min(SHUFFLE_FRAME_BYTES * 4));
        }
        buf.extend_from_slice(&frame.data);
        if buf.len() as u64 > expected {
            return Err(lost(
                FetchFailure::Corrupt,
                "more bytes than declared".into(),
            ));
        }
    }
    if buf.len() as u64 != total.unwrap_or(0) {
        return Err(lost(
            FetchFailure::Corrupt,
            format!("got {} of {:?} bytes", buf.len(), total),
        ));
    }
    let data = buf.freeze();
    verify_run(&data).map_err(|e| lost(FetchFailure::Corrupt, e.to_string()))?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_secret_goes_only_when_nothing_of_its_job_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["secrets", "logs", "shuffle"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let old = std::time::SystemTime::now() - SECRET_GRACE * 2;
        for j in 1..=4 {
            let job = JobId(j);
            keep_job_secret(d, job, &[j as u8; 32]).unwrap();
            if j != 4 {
                std::fs::File::options()
                    .write(true)
                    .open(job_secret_path(d, job))
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        }
        // job-1: a log left; job-2: map output left; job-3: nothing; job-4: nothing but young.
        let stem = |job: u64, attempt: u64| {
            protocol::task::attempt_file_stem(
                JobId(job),
                protocol::TaskKind::Map,
                0,
                1,
                AttemptId(attempt),
            )
        };
        std::fs::write(attempt_log_path(d, &stem(1, 7)), b"x").unwrap();
        std::fs::write(attempt_log_path(d, &stem(10, 8)), b"x").unwrap();
        std::fs::create_dir_all(d.join("shuffle").join(JobId(2).to_string())).unwrap();
        assert_eq!(prune_secrets(d), 1);
        let left: Vec<bool> = (1..=4)
            .map(|j| job_secret_path(d, JobId(j)).exists())
            .collect();
        assert_eq!(left, [true, true, false, true]);
        // A log is found by its job and attempt, in today's name and in the old one.
        assert_eq!(
            find_attempt_log(d, JobId(1), AttemptId(7)),
            Some(d.join("logs/job-1-map-0-1-attempt-7.log"))
        );
        assert_eq!(find_attempt_log(d, JobId(10), AttemptId(7)), None);
        std::fs::write(d.join("logs/job-3-attempt-9.log"), b"x").unwrap();
        assert!(find_attempt_log(d, JobId(3), AttemptId(9)).is_some());
        assert_eq!(find_attempt_log(d, JobId(1), AttemptId(9)), None);
    }
}
