//! A typed client of the coordinator, for the CLI and tests.

use std::collections::BTreeMap;
use std::time::Duration;

use protocol::auth::{Authed, ClientAuth};
use protocol::pb::coordinator_service_client::CoordinatorServiceClient;
use protocol::pb::{
    self, AddScheduleRequest, AttemptInfo, BackfillStatus, BinaryChunk, CancelBackfillRequest,
    GetJobRequest, HasBinaryRequest, KillJobRequest, ListAttemptsRequest, ListBackfillsRequest,
    ListJobsRequest, ListSchedulesRequest, ScheduleDef, ScheduleHistoryRequest,
    ScheduleHistoryResponse, ScheduleInfo, ScheduleOp, SetScheduleRequest, StartBackfillRequest,
    StartBackfillResponse, SubmitJobRequest,
};
use protocol::{JobId, JobSpec, MAX_MESSAGE_BYTES};
use tonic::transport::Channel;

/// How long [`Client::wait`] keeps trying an unreachable coordinator.
pub const RECONNECT_PATIENCE: Duration = Duration::from_secs(60);

/// How often [`Client::wait`] reports progress while a job runs.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

pub use protocol::JobState;

/// A job's progress and counters.
#[derive(Clone, Debug)]
pub struct JobStatus {
    /// Its id.
    pub id: JobId,
    /// The job name.
    pub job: String,
    /// Where it is.
    pub state: JobState,
    /// Map tasks in all.
    pub maps_total: u32,
    /// Map tasks done.
    pub maps_done: u32,
    /// Map tasks running.
    pub maps_running: u32,
    /// Reduce tasks in all.
    pub reduces_total: u32,
    /// Reduce tasks done.
    pub reduces_done: u32,
    /// Reduce tasks running.
    pub reduces_running: u32,
    /// Input bytes read by finished maps.
    pub bytes_read: u64,
    /// Time since submission (to the end, once over).
    pub elapsed: Duration,
    /// Counters of the winning attempts.
    pub counters: BTreeMap<String, u64>,
    /// Why it failed.
    pub error: String,
    /// Its output directory.
    pub output: String,
    /// When it was submitted and when it ended, in ms since the Unix epoch (0: not known,
    /// or not ended).
    pub submitted_unix_ms: u64,
    /// See `submitted_unix_ms`.
    pub finished_unix_ms: u64,
    /// Its name (`--name`; empty: none).
    pub name: String,
    /// Its labels (`--label key=value`).
    pub labels: BTreeMap<String, String>,
}

impl From<pb::JobStatus> for JobStatus {
    fn from(s: pb::JobStatus) -> Self {
        // A state this client does not know (a newer coordinator's) reads as still running:
        // the waiter keeps asking rather than report an end that did not happen.
        let state = JobState::from_pb(s.state).unwrap_or(JobState::Running);
        JobStatus {
            id: JobId(s.job_id),
            job: s.job,
            state,
            maps_total: s.maps_total,
            maps_done: s.maps_done,
            maps_running: s.maps_running,
            reduces_total: s.reduces_total,
            reduces_done: s.reduces_done,
            reduces_running: s.reduces_running,
            bytes_read: s.bytes_read,
            elapsed: Duration::from_millis(s.elapsed_ms),
            counters: s
                .counters
                .map(|c| c.values.into_iter().collect())
                .unwrap_or_default(),
            error: s.error,
            output: s.output,
            submitted_unix_ms: s.submitted_unix_ms,
            finished_unix_ms: s.finished_unix_ms,
            name: s.name,
            labels: s.labels.into_iter().collect(),
        }
    }
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection.
    #[error("cannot connect to the coordinator at {addr}: {}", connect_reason(.error))]
    Connect {
        /// The address tried.
        addr: String,
        /// Why (summarised in the message, so not a source: the chain would repeat it).
        error: tonic::transport::Error,
    },
    /// The client's TLS settings cannot be used.
    #[error("TLS settings: {0}")]
    Tls(String),
    /// The coordinator refused the call, or the connection under it failed.
    #[error("{}", status_message(.0))]
    Rpc(tonic::Status),
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        ClientError::Rpc(s)
    }
}

/// Why a connection could not be made: for a refused one, what that means and what to do;
/// else the transport's own chain of errors.
fn connect_reason(e: &tonic::transport::Error) -> String {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return "connection refused: nothing listens there. Is the cluster running? \
                        (`quern local` starts one; --coordinator or QUERN_COORDINATOR name another)"
                    .into();
            }
        }
        cause = c.source();
    }
    protocol::error_chain(e)
}

/// A refusal's message; for a connection that failed under the call (a TLS handshake
/// refused, a plaintext client at a TLS port), what failed and a hint.
fn status_message(s: &tonic::Status) -> String {
    use tonic::Code;
    let source = std::error::Error::source(s);
    // The server answers with a gRPC status of its own; a failed connection leaves a status
    // made on this side, with the transport error as its source or no message of its own.
    let connection = matches!(
        s.code(),
        Code::Unknown | Code::Internal | Code::Unavailable | Code::Cancelled
    ) && (source.is_some() || s.message() == "operation was canceled");
    if let Some(http) = s
        .message()
        .strip_prefix("grpc-status header missing, mapped from HTTP status code ")
    {
        return format!(
            "the address answered with HTTP status {http}, not with Quern's gRPC: is it the web UI's port? \
             The coordinator's gRPC address is the one it logs as `coordinator listening` \
             (a `quern local` writes it to .quern/coordinator.addr, and the web UI's to .quern/http.addr)"
        );
    }
    if !connection {
        return s.message().to_string();
    }
    format!(
        "connection to the coordinator failed: {} (a cluster with TLS needs --tls-ca, and with mutual TLS --tls-cert/--tls-key)",
        source.map_or_else(|| s.message().to_string(), protocol::error_chain)
    )
}

/// A connection to a coordinator.
#[derive(Clone, Debug)]
pub struct Client {
    inner: CoordinatorServiceClient<Authed<Channel>>,
}

impl Client {
    /// Connects to `addr` (`host:port` or a URL), with the token and TLS settings of the
    /// environment (`QUERN_TOKEN`, `QUERN_TLS_CA`, ...).
    ///
    /// # Errors
    /// [`ClientError::Connect`].
    pub async fn connect(addr: &str) -> Result<Self, ClientError> {
        let tls =
            protocol::tls::ClientTls::from_env().map_err(|e| ClientError::Tls(e.to_string()))?;
        Client::connect_with(addr, ClientAuth::from_env(), tls.as_ref()).await
    }

    /// Connects to `addr`, sending `auth`'s token with every call, over TLS when `tls` is
    /// given.
    ///
    /// # Errors
    /// [`ClientError::Connect`].
    pub async fn connect_with(
        addr: &str,
        auth: ClientAuth,
        tls: Option<&protocol::tls::ClientTls>,
    ) -> Result<Self, ClientError> {
        // Watched: a connection that went silent (a partition) is dropped, and the next call
        // opens a new one, rather than waiting out TCP's retransmission backoff.
        let connect = async {
            protocol::tls::watched(protocol::tls::endpoint(addr, tls)?)
                .connect()
                .await
        };
        let channel = connect.await.map_err(|error| ClientError::Connect {
            addr: addr.to_string(),
            error,
        })?;
        let inner = CoordinatorServiceClient::with_interceptor(channel, auth)
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Client { inner })
    }

    /// Whether the cluster holds the job binary with this SHA-256.
    pub async fn has_binary(&mut self, sha256: &str) -> Result<bool, ClientError> {
        let r = self
            .inner
            .has_binary(HasBinaryRequest {
                sha256: sha256.to_string(),
            })
            .await?;
        Ok(r.into_inner().present)
    }

    /// Uploads a job binary (`data`, whose SHA-256 is `sha256`) in shuffle-sized frames.
    pub async fn upload_binary(
        &mut self,
        sha256: &str,
        data: bytes::Bytes,
    ) -> Result<(), ClientError> {
        let frames: Vec<BinaryChunk> = data
            .chunks(protocol::SHUFFLE_FRAME_BYTES)
            .map(|c| BinaryChunk {
                sha256: sha256.to_string(),
                size: data.len() as u64,
                quern_version: protocol::QUERN_VERSION.into(),
                platform: protocol::platform(),
                data: data.slice_ref(c),
            })
            .collect();
        self.inner.upload_binary(tokio_stream::iter(frames)).await?;
        Ok(())
    }

    /// Every attempt of a job, oldest first.
    pub async fn attempts(&mut self, id: JobId) -> Result<Vec<AttemptInfo>, ClientError> {
        let r = self
            .inner
            .list_attempts(ListAttemptsRequest {
                job_id: id.0,
                ..Default::default()
            })
            .await?;
        Ok(r.into_inner().attempts)
    }

    /// Adds a schedule; returns it as the coordinator shows it.
    pub async fn add_schedule(
        &mut self,
        def: ScheduleDef,
    ) -> Result<Option<ScheduleInfo>, ClientError> {
        self.put_schedule(def, false).await
    }

    /// Changes the schedule of `def`'s name in place (its history stays); returns it.
    pub async fn update_schedule(
        &mut self,
        def: ScheduleDef,
    ) -> Result<Option<ScheduleInfo>, ClientError> {
        self.put_schedule(def, true).await
    }

    async fn put_schedule(
        &mut self,
        def: ScheduleDef,
        replace: bool,
    ) -> Result<Option<ScheduleInfo>, ClientError> {
        let r = self
            .inner
            .add_schedule(AddScheduleRequest {
                def: Some(def),
                replace,
            })
            .await?;
        Ok(r.into_inner().schedule)
    }

    /// Every schedule.
    pub async fn schedules(&mut self) -> Result<Vec<ScheduleInfo>, ClientError> {
        let r = self.inner.list_schedules(ListSchedulesRequest {}).await?;
        Ok(r.into_inner().schedules)
    }

    /// A schedule and its history.
    pub async fn schedule_history(
        &mut self,
        name: &str,
    ) -> Result<ScheduleHistoryResponse, ClientError> {
        let r = self
            .inner
            .schedule_history(ScheduleHistoryRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(r.into_inner())
    }

    /// Pauses, resumes or removes a schedule.
    pub async fn set_schedule(&mut self, name: &str, op: ScheduleOp) -> Result<(), ClientError> {
        self.inner
            .set_schedule(SetScheduleRequest {
                name: name.to_string(),
                op: op as i32,
            })
            .await?;
        Ok(())
    }

    /// Plans (and unless `dry_run`, starts) a backfill.
    pub async fn start_backfill(
        &mut self,
        request: StartBackfillRequest,
    ) -> Result<StartBackfillResponse, ClientError> {
        Ok(self.inner.start_backfill(request).await?.into_inner())
    }

    /// Every backfill.
    pub async fn backfills(&mut self) -> Result<Vec<BackfillStatus>, ClientError> {
        let r = self.inner.list_backfills(ListBackfillsRequest {}).await?;
        Ok(r.into_inner().backfills)
    }

    /// Cancels a backfill.
    pub async fn cancel_backfill(&mut self, id: u64) -> Result<(), ClientError> {
        self.inner
            .cancel_backfill(CancelBackfillRequest { id })
            .await?;
        Ok(())
    }

    /// Submits a job and returns its id.
    pub async fn submit(&mut self, spec: &JobSpec) -> Result<JobId, ClientError> {
        Ok(self.submit_warned(spec).await?.0)
    }

    /// Submits a job; returns its id and what the coordinator warns of (an incremental run
    /// that runs in full instead, say).
    ///
    /// # Errors
    /// As [`Client::submit`].
    pub async fn submit_warned(
        &mut self,
        spec: &JobSpec,
    ) -> Result<(JobId, Vec<String>), ClientError> {
        let r = self
            .inner
            .submit_job(SubmitJobRequest {
                spec: Some(spec.to_pb()),
            })
            .await?
            .into_inner();
        Ok((JobId(r.job_id), r.warnings))
    }

    /// Returns a job's status.
    pub async fn status(&mut self, id: JobId) -> Result<JobStatus, ClientError> {
        self.status_when_over(id, Duration::ZERO).await
    }

    /// Returns a job's status once it is over, or after `wait` (the coordinator holds the
    /// request; at most a second).
    async fn status_when_over(
        &mut self,
        id: JobId,
        wait: Duration,
    ) -> Result<JobStatus, ClientError> {
        let mut req = tonic::Request::new(GetJobRequest {
            job_id: id.0,
            wait_until_over_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        });
        // Not waited for past the coordinator's hold and a grace: [`Client::wait`] asks again.
        req.set_timeout(wait + Duration::from_secs(10));
        let r = self.inner.get_job(req).await?.into_inner();
        Ok(r.status
            .ok_or_else(|| tonic::Status::internal("empty status"))?
            .into())
    }

    /// Returns every job's status.
    pub async fn list(&mut self) -> Result<Vec<JobStatus>, ClientError> {
        let r = self.inner.list_jobs(ListJobsRequest {}).await?.into_inner();
        Ok(r.jobs.into_iter().map(Into::into).collect())
    }

    /// Kills a job; returns false if it was not running.
    pub async fn kill(&mut self, id: JobId) -> Result<bool, ClientError> {
        Ok(self
            .inner
            .kill_job(KillJobRequest { job_id: id.0 })
            .await?
            .into_inner()
            .killed)
    }

    /// Follows the job until it is over, calling `progress` with each status (about every
    /// [`PROGRESS_EVERY`]; the coordinator answers at once when the job ends). It rides out a
    /// coordinator restart: while the coordinator is unreachable it keeps trying for up to
    /// [`RECONNECT_PATIENCE`], and the restarted coordinator knows the job from its journal.
    pub async fn wait(
        &mut self,
        id: JobId,
        mut progress: impl FnMut(&JobStatus),
    ) -> Result<JobStatus, ClientError> {
        let mut unreachable_since: Option<std::time::Instant> = None;
        loop {
            let asked = std::time::Instant::now();
            match self.status_when_over(id, PROGRESS_EVERY).await {
                Ok(s) => {
                    unreachable_since = None;
                    progress(&s);
                    if s.state.is_over() {
                        return Ok(s);
                    }
                }
                // A coordinator going away mid-request surfaces as Unavailable, or as Unknown
                // or Cancelled from the transport (a reset connection); status is read-only,
                // so asking again is always safe.
                Err(ClientError::Rpc(status))
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                    ) =>
                {
                    let since = *unreachable_since.get_or_insert_with(std::time::Instant::now);
                    if since.elapsed() > RECONNECT_PATIENCE {
                        return Err(ClientError::Rpc(status));
                    }
                    tracing::debug!(error = %status.message(), "coordinator unreachable; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(e) => return Err(e),
            }
            // A coordinator that does not hold the request answers at once: ask again after
            // a short while, not in a busy loop.
            if let Some(rest) = Duration::from_millis(50).checked_sub(asked.elapsed()) {
                tokio::time::sleep(rest).await;
            }
        }
    }
}
