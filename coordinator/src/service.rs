//! The coordinator's gRPC service: checks epochs, drives the [`State`], and performs the
//! storage actions transitions ask for, outside the state lock.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dfs_client::Storage;
use jobs::output::{self, SkippedRecord};
use jobs::sdk::Counters;
use jobs::Registry;
use protocol::auth::{Authenticator, Role};
use protocol::pb::coordinator_service_server::{CoordinatorService, CoordinatorServiceServer};
use protocol::pb::*;
use protocol::{AttemptId, Epoch, FailureKind, JobId, JobSpec, WorkerId, MAX_MESSAGE_BYTES};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::journal::{GroupCommit, Journal, JournalDown};
use crate::schedule::Clock;
pub use error::ServiceError;

mod binaries;
mod error;
pub mod guard;
mod schedules;
use crate::state::{Action, ActionFailed, Page, State};

/// The coordinator service; cheap to clone.
#[derive(Clone)]
pub struct Coordinator {
    // A std Mutex: every critical section is short and synchronous (no I/O, no .await
    // inside): journal records are written after the lock is released (see `mutate`).
    state: Arc<Mutex<State>>,
    journal: Arc<GroupCommit>,
    registry: Arc<Registry>,
    storage: Storage,
    heartbeat_interval: Duration,
    clock: Clock,
    /// Where uploaded job binaries are kept.
    binaries: std::path::PathBuf,
    /// The token file every call is checked against; none: authentication is off.
    auth: Option<Arc<Authenticator>>,
    /// Whether clients present certificates of the cluster's CA (mutual TLS), whose
    /// organizational unit names their role.
    cert_roles: bool,
    /// How to reach workers' ports (TLS settings, when the cluster uses TLS).
    peer_tls: Option<Arc<protocol::tls::ClientTls>>,
    /// Submissions per caller.
    submit_limit: Arc<crate::limits::RateLimiter>,
    /// Woken when tasks that could start appear, for heartbeats held for work.
    work: Arc<tokio::sync::Notify>,
    /// Woken after every change of the state, for status requests held until their job is over.
    changed: Arc<tokio::sync::Notify>,
}

/// The longest a status request is held until its job is over, whatever the client asks.
const MAX_STATUS_WAIT: Duration = Duration::from_secs(1);

/// The longest a heartbeat is held for work, whatever the worker asks.
const MAX_WORK_WAIT: Duration = Duration::from_secs(5);

/// The role a client certificate names in its subject's organizational unit (`quern certs
/// init` writes it there); its chain was verified against the cluster's CA by the handshake.
fn cert_role(leaf: &tonic::transport::CertificateDer<'static>) -> Option<Role> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let role = cert
        .subject()
        .iter_organizational_unit()
        .find_map(|ou| ou.as_str().ok().and_then(Role::parse));
    role
}

impl Coordinator {
    /// The storage client the coordinator plans and commits with (for the storage browser).
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Wraps a state.
    pub fn new(
        state: State,
        journal: Journal,
        registry: Registry,
        heartbeat_interval: Duration,
    ) -> Self {
        Coordinator {
            state: Arc::new(Mutex::new(state)),
            journal: Arc::new(GroupCommit::new(journal, CancellationToken::new())),
            registry: Arc::new(registry),
            storage: Storage::default(),
            heartbeat_interval,
            clock: Clock::System,
            binaries: std::env::temp_dir().join("quern-binaries"),
            auth: None,
            cert_roles: false,
            peer_tls: None,
            submit_limit: Arc::new(crate::limits::RateLimiter::new(
                crate::limits::SubmitRate::default(),
            )),
            work: Arc::new(tokio::sync::Notify::new()),
            changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Limits each caller's submissions to `rate`.
    pub fn with_submit_rate(mut self, rate: crate::limits::SubmitRate) -> Self {
        self.submit_limit = Arc::new(crate::limits::RateLimiter::new(rate));
        self
    }

    /// Takes a submission (already authorized by the [`guard`]) from the caller's rate limit.
    #[allow(clippy::result_large_err)]
    fn limit_submission<T>(&self, request: &Request<T>) -> Result<(), ServiceError> {
        self.limit_caller(&self.caller(request))
    }

    /// Takes one submission from `caller`'s allowance (`--submit-rate`).
    pub(crate) fn limit_caller(&self, caller: &str) -> Result<(), ServiceError> {
        self.submit_limit
            .take(caller, Instant::now())
            .map_err(|wait| {
                ServiceError::resource_exhausted(format!(
                    "too many submissions from this caller: retry in {:.1} s (coordinator --submit-rate)",
                    wait.as_secs_f64()
                ))
            })
    }

    /// Who made an authorized call, for per-caller limits: the certificate's fingerprint
    /// when the certificate identified it, the token's id (never the secret) when a token
    /// did, else the caller's address.
    fn caller<T>(&self, request: &Request<T>) -> String {
        let header = request
            .metadata()
            .get(protocol::auth::HEADER)
            .and_then(|v| v.to_str().ok());
        if self.cert_roles && (header.is_none() || self.auth.is_none()) {
            let certs = request.peer_certs();
            let leaf = certs.as_deref().and_then(|c| c.first());
            let der = leaf.map_or(&[][..], |c| c.as_ref());
            let sha = protocol::binary::sha256_hex(der).unwrap_or_default();
            return format!("cert:{}", &sha[..sha.len().min(16)]);
        }
        if self.auth.is_some() {
            // `qrn_<id>_<secret>`
            let id = header.and_then(|h| h.split('_').nth(1)).unwrap_or_default();
            return format!("token:{id}");
        }
        request
            .remote_addr()
            .map_or_else(|| "anonymous".to_string(), |a| format!("ip:{}", a.ip()))
    }

    /// With `cert_roles`, a call without a token is identified by its client certificate's
    /// role (mutual TLS); `peer_tls` is how workers are reached.
    pub fn with_tls(
        mut self,
        cert_roles: bool,
        peer_tls: Option<protocol::tls::ClientTls>,
    ) -> Self {
        self.cert_roles = cert_roles;
        self.peer_tls = peer_tls.map(Arc::new);
        self
    }

    /// How workers' ports are reached: their TLS settings, if the cluster uses TLS.
    pub fn peer_tls(&self) -> Option<&protocol::tls::ClientTls> {
        self.peer_tls.as_deref()
    }

    /// Checks every call's bearer token against `auth`.
    pub fn with_auth(mut self, auth: Arc<Authenticator>) -> Self {
        self.auth = Some(auth);
        self
    }

    /// The token checker, when authentication is on (the HTTP server uses it too).
    pub fn auth(&self) -> Option<&Arc<Authenticator>> {
        self.auth.as_ref()
    }

    /// Keeps uploaded job binaries in `dir`.
    pub fn with_binaries(mut self, dir: std::path::PathBuf) -> Self {
        self.binaries = dir;
        self
    }

    /// Reads schedule time from `clock` instead of the system clock.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Returns the gRPC server, with explicit message limits, every call authorized first
    /// ([`guard`]).
    pub fn into_server(self) -> guard::Guarded<CoordinatorServiceServer<Self>> {
        let policy = guard::Policy {
            auth: self.auth.clone(),
            cert_roles: self.cert_roles,
        };
        let server = CoordinatorServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        guard::Guarded::new(server, policy)
    }

    /// Reads the state. What is read may include changes whose journal records are still
    /// being written: for answers that promise nothing (status, lists, the UI); a worker
    /// RPC's answer goes through [`Self::mutate`].
    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.lock().expect("coordinator state lock poisoned"))
    }

    /// Changes the state and returns once the change, and every change before it, is in the
    /// journal on disk: the records are queued under the state lock and written after it is
    /// released, in one group commit with those of concurrent changes.
    ///
    /// # Errors
    /// [`JournalDown`] when the journal cannot be written; the coordinator then stops (see
    /// [`Self::stopping`]) and nothing is changed any more.
    pub async fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> Result<R, JournalDown> {
        let (r, upto) = {
            let mut state = self.state.lock().expect("coordinator state lock poisoned");
            if let Some(down) = self.journal.down() {
                return Err(down.clone());
            }
            let r = f(&mut state);
            (r, self.journal.queue(state.take_records()))
        };
        self.journal.wait_durable(upto).await?;
        self.changed.notify_waiters();
        Ok(r)
    }

    /// Cancelled when the coordinator must stop on its own (its journal cannot be written).
    pub fn stopping(&self) -> CancellationToken {
        self.journal.stop_token()
    }

    /// Why the coordinator stopped on its own, if it did.
    pub fn journal_down(&self) -> Option<JournalDown> {
        self.journal.down().cloned()
    }

    fn check_worker(&self, worker: u64, epoch: u64) -> Result<(), ServiceError> {
        if self.read(|s| s.is_current(WorkerId(worker), Epoch(epoch))) {
            Ok(())
        } else {
            Err(ServiceError::failed_precondition(
                "stale or unknown worker registration; register again",
            ))
        }
    }

    /// Performs actions (and the actions their outcomes lead to) until none are left, on a
    /// task of their own: an RPC whose caller goes away (a reducer killed while its commit is
    /// under way) must not cancel a commit half-way, with the rename done and never recorded.
    /// Kills a running job (for the RPC and the HTTP API); false when it is not running.
    ///
    /// # Errors
    /// [`JournalDown`]: the kill could not be made durable.
    pub async fn kill_job_now(&self, id: JobId) -> Result<bool, JournalDown> {
        let actions = self.mutate(|s| s.kill(id, Instant::now())).await?;
        let killed = actions.is_some();
        self.run_actions(actions.unwrap_or_default()).await;
        Ok(killed)
    }

    async fn run_actions(&self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        let this = self.clone();
        let _ = tokio::spawn(async move { this.perform(actions).await }).await;
    }

    async fn perform(&self, mut actions: Vec<Action>) {
        while let Some(action) = actions.pop() {
            let storage = self.storage.clone();
            let done = tokio::task::spawn_blocking({
                let action = action.clone();
                move || -> Result<(), ActionFailed> {
                    match action {
                        Action::Commit {
                            from, to, state, ..
                        } => {
                            protocol::failpoint::hit("commit.rename");
                            // The state first: a reduce counts as committed when its part
                            // file is in place.
                            if let Some((from, to)) = state {
                                storage.rename(&from, &to).map_err(|e| ActionFailed::of(&e))?;
                            }
                            storage.rename(&from, &to).map_err(|e| ActionFailed::of(&e))
                        }
                        Action::DeleteStaged { path } => {
                            storage.delete(&path).map_err(|e| ActionFailed::of(&e))
                        }
                        Action::Publish {
                            output,
                            manifest,
                            skipped,
                            ..
                        } => {
                            protocol::failpoint::hit("job.publish");
                            output::publish(&storage, &output, &manifest, &skipped)
                                .map_err(|e| ActionFailed::of(&e))
                        }
                        Action::Discard { output, reducers } => {
                            // Attempts being cancelled may still write into `_temporary` while
                            // it is removed: try again a little later before giving up.
                            let mut tries = 0;
                            loop {
                                match output::discard(&storage, &output, reducers) {
                                    Ok(()) => break Ok(()),
                                    Err(e) if tries < 2 => {
                                        tracing::debug!(%output, error = %protocol::error_chain(&e), "cleanup retried");
                                        tries += 1;
                                        std::thread::sleep(std::time::Duration::from_millis(300 << tries));
                                    }
                                    Err(e) => break Err(ActionFailed::of(&e)),
                                }
                            }
                        }
                    }
                }
            })
            .await
            .unwrap_or_else(|e| Err(ActionFailed::of(&e)));
            let now = Instant::now();
            let next = match action {
                Action::Commit {
                    job,
                    index,
                    attempt,
                    ..
                } => {
                    self.mutate(|s| s.commit_done(job, index, attempt, done, now))
                        .await
                }
                Action::Publish { job, .. } => {
                    self.mutate(|s| s.publish_done(job, done, now)).await
                }
                Action::DeleteStaged { path } | Action::Discard { output: path, .. } => {
                    if let Err(e) = done {
                        tracing::warn!(%path, error = %e, "cleanup failed");
                    }
                    Ok(Vec::new())
                }
            };
            match next {
                Ok(next) => actions.extend(next),
                // The coordinator is stopping; a restart finishes the commit from the journal.
                Err(_) => return,
            }
        }
    }

    /// Performs the actions a recovery left unfinished (publishing outputs).
    pub(crate) async fn finish_recovered(&self, actions: Vec<Action>) {
        self.run_actions(actions).await;
    }

    /// Removes unused job binaries every hour until `shutdown`.
    pub async fn prune_binaries_loop(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let this = self.clone();
            let _ = tokio::task::spawn_blocking(move || this.prune_binaries()).await;
        }
    }

    /// Declares silent workers dead, every heartbeat interval, until `shutdown`.
    pub async fn expire_workers_loop(self, every: Duration, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let expired = self.mutate(|s| {
                let before = s.startable_tasks();
                let actions = s.expire_workers(Instant::now());
                (actions, s.startable_tasks() > before)
            });
            let Ok((actions, new_work)) = expired.await else {
                return;
            };
            if new_work {
                // A dead worker's tasks are to run again.
                self.work.notify_waiters();
            }
            self.run_actions(actions).await;
        }
    }

    /// Checks `spec` and plans its splits; for a job of the cluster's own binary, also sets
    /// what the job itself says about its input format and GPU use.
    /// Plans and accepts a job (for `SubmitJob` and `POST /api/v1/jobs`); returns its id and
    /// the warnings for the submitter.
    pub(crate) async fn submit_spec(
        &self,
        spec: JobSpec,
    ) -> Result<(JobId, Vec<String>), ServiceError> {
        let this = self.clone();
        let (spec, plan) = tokio::task::spawn_blocking(move || {
            let mut spec = spec;
            this.plan(&mut spec).map(|s| (spec, s))
        })
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))??;
        let warnings = plan
            .full_because
            .iter()
            .map(|c| format!("runs in full, not from {}: {c}", spec.from))
            .chain(plan.not_read_warning())
            .collect();
        let id = self
            .mutate(|state| match state.job_writing(&spec.output) {
                Some(other) => Err(ServiceError::already_exists(format!(
                    "{other} is already writing {}",
                    spec.output
                ))),
                None => Ok(state.submit(spec, plan, Instant::now())),
            })
            .await??;
        self.work.notify_waiters();
        Ok((id, warnings))
    }

    fn plan(&self, spec: &mut JobSpec) -> Result<jobs::plan::Plan, ServiceError> {
        spec.validate()
            .map_err(|e| ServiceError::InvalidArgument(e.to_string()))?;
        let mut format = spec.input_format;
        if spec.binary.is_empty() {
            let job = self
                .registry
                .create(&spec.job, &spec.params)
                .map_err(|e| ServiceError::invalid_argument(e.to_string()))?;
            format = job.input_format();
            spec.gpu = job.wants_gpu();
            spec.version = job.version();
        } else if !self.has_binary(&spec.binary)? {
            // The job and its parameters are checked by the binary that has them, at submit.
            return Err(ServiceError::failed_precondition(format!(
                "job binary {} was not uploaded to this cluster",
                spec.binary
            )));
        }
        if spec.inputs.is_empty() {
            return Err(ServiceError::invalid_argument(
                "a job needs at least one --input",
            ));
        }
        if spec.output.is_empty() {
            return Err(ServiceError::invalid_argument("a job needs an --output"));
        }
        // Paths are checked before any storage is touched: a bad one is the caller's error.
        for path in spec.inputs.iter().chain(std::iter::once(&spec.output)) {
            dfs_client::DfsPath::parse(path)
                .map_err(|e| ServiceError::invalid_argument(e.to_string()))?;
        }
        if !spec.from.is_empty() {
            dfs_client::DfsPath::parse(&spec.from)
                .map_err(|e| ServiceError::invalid_argument(e.to_string()))?;
        }
        // Inputs first: a job refused for its input must not have replaced its output.
        let plan = jobs::plan::plan_job(&self.storage, spec, format).map_err(|e| match e {
            jobs::plan::PlanError::Storage(e) => ServiceError::invalid_argument(e.to_string()),
            e => ServiceError::failed_precondition(protocol::error_chain(&e)),
        })?;
        let mode = if spec.overwrite {
            output::OutputMode::Overwrite
        } else {
            output::OutputMode::New
        };
        output::prepare_output(&self.storage, &spec.output, &spec.inputs, mode)?;
        Ok(plan)
    }
}

#[tonic::async_trait]
impl CoordinatorService for Coordinator {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let r = request.into_inner();
        let (id, epoch, actions) = self
            .mutate(|state| {
                let now = Instant::now();
                let id = state.register_worker(r.shuffle_addr.clone(), r.storage_host.clone(), now);
                state.set_worker_slots(id, r.cpu_slots, r.gpus);
                let held: Vec<_> = r
                    .held_outputs
                    .iter()
                    .map(|h| (JobId(h.job_id), h.map_index, AttemptId(h.attempt_id)))
                    .collect();
                // A worker restarted on its directory replaces the one that ran there at once, and
                // keeps the finished map outputs it finds on its disk.
                let actions = if r.dir.is_empty() {
                    Vec::new()
                } else {
                    state.replace_worker_at(id, &format!("{}:{}", r.host, r.dir), &held, now)
                };
                state.claim_outputs(id, &held, now);
                (id, state.epoch.0, actions)
            })
            .await?;
        tracing::info!(worker = %id, host = %r.host, shuffle = %r.shuffle_addr, slots = r.cpu_slots, "worker registered");
        self.run_actions(actions).await;
        Ok(Response::new(RegisterWorkerResponse {
            worker_id: id.0,
            epoch,
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let r = request.into_inner();
        self.check_worker(r.worker_id, r.epoch)?;
        // Made before the state is read, so that work appearing after this answer is computed
        // still wakes it.
        let work = self.work.notified();
        // The reports first, so the slots they free are offered in this same answer; one
        // journal wait covers both. A report counts only from its own worker's current
        // registration, as `ReportTask` checks it.
        let (reply, actions, new_work) = self
            .mutate(|s| {
                let now = Instant::now();
                let mut actions = Vec::new();
                let before = (!r.reports.is_empty()).then(|| s.startable_tasks());
                for report in r.reports {
                    if report.worker_id == r.worker_id
                        && s.is_current(WorkerId(report.worker_id), Epoch(report.epoch))
                    {
                        actions.extend(apply_report(s, report, now).0);
                    }
                }
                let new_work = before.is_some_and(|b| s.startable_tasks() > b);
                let (reply, lost, lost_count) = s.heartbeat_numbered(
                    WorkerId(r.worker_id),
                    r.seq,
                    &r.running_attempts,
                    r.free_slots,
                    now,
                );
                actions.extend(lost);
                // Their tasks wait again, for any worker.
                (reply, actions, new_work || lost_count > 0)
            })
            .await?;
        if new_work {
            self.work.notify_waiters();
        }
        self.run_actions(actions).await;
        let idle = reply.assignments.is_empty()
            && reply.cancel_attempts.is_empty()
            && reply.finished_jobs.is_empty();
        if !idle || r.free_slots == 0 || r.wait_for_work_ms == 0 {
            return Ok(Response::new(reply));
        }
        // Nothing to do: wait for work, up to what the worker allows.
        let wait = Duration::from_millis(r.wait_for_work_ms.into()).min(MAX_WORK_WAIT);
        if tokio::time::timeout(wait, work).await.is_err() {
            return Ok(Response::new(reply));
        }
        self.check_worker(r.worker_id, r.epoch)?;
        let (reply, actions, _) = self
            .mutate(|s| {
                s.heartbeat_numbered(
                    WorkerId(r.worker_id),
                    r.seq,
                    &r.running_attempts,
                    r.free_slots,
                    Instant::now(),
                )
            })
            .await?;
        self.run_actions(actions).await;
        Ok(Response::new(reply))
    }

    async fn report_task(
        &self,
        request: Request<ReportTaskRequest>,
    ) -> Result<Response<ReportTaskResponse>, Status> {
        let r = request.into_inner();
        self.check_worker(r.worker_id, r.epoch)?;
        let (actions, accepted, new_work) = self
            .mutate(|s| {
                let before = s.startable_tasks();
                let (actions, accepted) = apply_report(s, r, Instant::now());
                (actions, accepted, s.startable_tasks() > before)
            })
            .await?;
        if new_work {
            self.work.notify_waiters();
        }
        self.run_actions(actions).await;
        Ok(Response::new(ReportTaskResponse { accepted }))
    }

    async fn report_fetch_failure(
        &self,
        request: Request<ReportFetchFailureRequest>,
    ) -> Result<Response<ReportFetchFailureResponse>, Status> {
        let r = request.into_inner();
        self.check_worker(r.worker_id, r.epoch)?;
        let reason =
            FetchFailureReason::try_from(r.reason).unwrap_or(FetchFailureReason::Unspecified);
        tracing::warn!(reducer = %AttemptId(r.attempt_id), map = r.map_index, ?reason, detail = %r.detail, "fetch failure");
        self.mutate(|s| {
            s.fetch_failure(
                AttemptId(r.attempt_id),
                r.map_index,
                AttemptId(r.map_attempt_id),
                Instant::now(),
            )
        })
        .await?;
        Ok(Response::new(ReportFetchFailureResponse {}))
    }

    async fn submit_job(
        &self,
        request: Request<SubmitJobRequest>,
    ) -> Result<Response<SubmitJobResponse>, Status> {
        self.limit_submission(&request)?;
        let spec = JobSpec::from_pb(
            request
                .into_inner()
                .spec
                .ok_or_else(|| ServiceError::invalid_argument("missing spec"))?,
        )
        .map_err(|e| ServiceError::invalid_argument(e.to_string()))?;
        let (id, warnings) = self.submit_spec(spec).await?;
        Ok(Response::new(SubmitJobResponse {
            job_id: id.0,
            warnings,
        }))
    }

    async fn get_job(
        &self,
        request: Request<GetJobRequest>,
    ) -> Result<Response<GetJobResponse>, Status> {
        let request = request.into_inner();
        let id = JobId(request.job_id);
        let wait = Duration::from_millis(request.wait_until_over_ms.into()).min(MAX_STATUS_WAIT);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Made before the state is read, so that an end after the read still wakes it.
            let changed = self.changed.notified();
            let over = self
                .read(|s| s.is_over(id))
                .ok_or_else(|| ServiceError::not_found(format!("no job {id}")))?;
            if over || tokio::time::Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
        let status = self
            .read(|s| s.status(id, Instant::now()))
            .ok_or_else(|| ServiceError::not_found(format!("no job {id}")))?;
        Ok(Response::new(GetJobResponse {
            status: Some(status),
        }))
    }

    async fn list_jobs(
        &self,
        _request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsResponse>, Status> {
        Ok(Response::new(ListJobsResponse {
            jobs: self.read(|s| s.list(Instant::now())),
        }))
    }

    async fn kill_job(
        &self,
        request: Request<KillJobRequest>,
    ) -> Result<Response<KillJobResponse>, Status> {
        let killed = self
            .kill_job_now(JobId(request.into_inner().job_id))
            .await?;
        Ok(Response::new(KillJobResponse { killed }))
    }

    async fn add_schedule(
        &self,
        request: Request<AddScheduleRequest>,
    ) -> Result<Response<AddScheduleResponse>, Status> {
        self.limit_submission(&request)?;
        let schedule = self.add_schedule_rpc(request.into_inner()).await?;
        Ok(Response::new(AddScheduleResponse {
            schedule: Some(schedule),
        }))
    }

    async fn list_schedules(
        &self,
        _request: Request<ListSchedulesRequest>,
    ) -> Result<Response<ListSchedulesResponse>, Status> {
        Ok(Response::new(ListSchedulesResponse {
            schedules: self.list_schedules_rpc(),
        }))
    }

    async fn set_schedule(
        &self,
        request: Request<SetScheduleRequest>,
    ) -> Result<Response<SetScheduleResponse>, Status> {
        self.limit_submission(&request)?;
        self.set_schedule_rpc(request.into_inner()).await?;
        Ok(Response::new(SetScheduleResponse {}))
    }

    async fn schedule_history(
        &self,
        request: Request<ScheduleHistoryRequest>,
    ) -> Result<Response<ScheduleHistoryResponse>, Status> {
        Ok(Response::new(self.history_rpc(&request.into_inner().name)?))
    }

    async fn start_backfill(
        &self,
        request: Request<StartBackfillRequest>,
    ) -> Result<Response<StartBackfillResponse>, Status> {
        self.limit_submission(&request)?;
        Ok(Response::new(
            self.start_backfill_rpc(request.into_inner()).await?,
        ))
    }

    async fn list_backfills(
        &self,
        _request: Request<ListBackfillsRequest>,
    ) -> Result<Response<ListBackfillsResponse>, Status> {
        Ok(Response::new(ListBackfillsResponse {
            backfills: self.list_backfills_rpc(),
        }))
    }

    async fn cancel_backfill(
        &self,
        request: Request<CancelBackfillRequest>,
    ) -> Result<Response<CancelBackfillResponse>, Status> {
        self.cancel_backfill_rpc(request.into_inner().id).await?;
        Ok(Response::new(CancelBackfillResponse { cancelled: true }))
    }

    async fn has_binary(
        &self,
        request: Request<HasBinaryRequest>,
    ) -> Result<Response<HasBinaryResponse>, Status> {
        Ok(Response::new(
            self.has_binary_rpc(&request.into_inner().sha256)?,
        ))
    }

    async fn upload_binary(
        &self,
        request: Request<tonic::Streaming<BinaryChunk>>,
    ) -> Result<Response<UploadBinaryResponse>, Status> {
        self.limit_submission(&request)?;
        self.upload_binary_rpc(request.into_inner()).await?;
        Ok(Response::new(UploadBinaryResponse {}))
    }

    async fn list_attempts(
        &self,
        request: Request<ListAttemptsRequest>,
    ) -> Result<Response<ListAttemptsResponse>, Status> {
        let r = request.into_inner();
        let id = JobId(r.job_id);
        // At most a full page: 100,000 attempts (about 96 bytes each) would not fit in one
        // message.
        let limit = if r.limit == 0 {
            MAX_ATTEMPTS_PAGE
        } else {
            r.limit
        };
        let page = Page {
            offset: usize::try_from(r.offset).unwrap_or(usize::MAX),
            limit: Some(usize::try_from(limit.min(MAX_ATTEMPTS_PAGE)).unwrap_or(usize::MAX)),
        };
        let now = Instant::now();
        let (secret, page) = self.read(|s| (s.job_secret(id), s.attempts_of(id, page)));
        let page = page.ok_or_else(|| ServiceError::not_found(format!("no job {id}")))?;
        let total = page.total as u64;
        let attempts = page
            .attempts
            .into_iter()
            .map(|a| {
                let r = a.record;
                AttemptInfo {
                    name: r.name(id),
                    number: r.number,
                    attempt_id: r.attempt.0,
                    kind: r.kind.to_pb() as i32,
                    index: r.index,
                    worker_id: r.worker.0,
                    worker_addr: a.worker_addr,
                    outcome: r.outcome.name().into(),
                    error: r.error,
                    duration_ms: r
                        .finished
                        .unwrap_or(now)
                        .duration_since(r.started)
                        .as_millis() as u64,
                    local: r.local,
                    log_token: protocol::auth::log_token(&secret, id.0, r.attempt.0),
                }
            })
            .collect();
        Ok(Response::new(ListAttemptsResponse { attempts, total }))
    }

    type FetchBinaryStream = binaries::BinaryStream;

    async fn fetch_binary(
        &self,
        request: Request<FetchBinaryRequest>,
    ) -> Result<Response<Self::FetchBinaryStream>, Status> {
        Ok(Response::new(
            self.fetch_binary_rpc(&request.into_inner().sha256).await?,
        ))
    }
}

/// The most attempts one `ListAttempts` answer holds.
const MAX_ATTEMPTS_PAGE: u64 = 20_000;

/// Applies one attempt's report (alone, or carried by a heartbeat): the actions it leads to,
/// and whether the attempt won its task.
fn apply_report(state: &mut State, r: ReportTaskRequest, now: Instant) -> (Vec<Action>, bool) {
    let attempt = AttemptId(r.attempt_id);
    if !r.success {
        let kind = FailureKind::from_pb(r.failure_kind);
        let actions = state.report_failure(attempt, kind, &r.error, r.bad_record_offset, now);
        return (actions, false);
    }
    let counters = Counters(
        r.counters
            .map(|c| c.values.into_iter().collect())
            .unwrap_or_default(),
    );
    let actions = state.report_success_with_state(
        attempt,
        counters,
        (
            Some((r.output_bytes, r.output_crc32)),
            r.state.map(|s| (s.bytes, s.crc32)),
        ),
        now,
    );
    if !r.listed.is_empty() {
        let listed = r
            .listed
            .into_iter()
            .map(|l| SkippedRecord {
                path: l.path,
                offset: l.offset,
                message: l.reason,
            })
            .collect();
        state.add_listed(attempt, listed);
    }
    (actions, state.is_winner(attempt))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A coordinator with a fresh journal in `dir`.
    fn coordinator(dir: &std::path::Path) -> Coordinator {
        let (journal, records) = Journal::open(dir).unwrap();
        let timeouts = crate::state::Timeouts::default();
        let (state, _) = State::recover(Epoch(1), timeouts, records, Instant::now());
        Coordinator::new(state, journal, Registry::builtin(), Duration::from_secs(1))
    }

    async fn register(c: &Coordinator, host: &str) -> (u64, u64) {
        let r = c
            .register_worker(Request::new(RegisterWorkerRequest {
                host: host.into(),
                shuffle_addr: format!("{host}:7071"),
                cpu_slots: 1,
                storage_host: host.into(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        (r.worker_id, r.epoch)
    }

    async fn heartbeat(
        c: &Coordinator,
        (worker_id, epoch): (u64, u64),
        reports: Vec<ReportTaskRequest>,
    ) -> HeartbeatResponse {
        c.heartbeat(Request::new(HeartbeatRequest {
            worker_id,
            epoch,
            free_slots: 1,
            reports,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
    }

    /// Submits an `identity` job over a two-line file in `dir`; returns its id.
    async fn submit_identity(c: &Coordinator, dir: &std::path::Path) -> u64 {
        let input = dir.join("in.txt");
        std::fs::write(&input, "a\nb\n").unwrap();
        let spec = JobSpec::new(
            "identity",
            vec![input.display().to_string()],
            dir.join("out").display().to_string(),
        );
        c.submit_job(Request::new(SubmitJobRequest {
            spec: Some(spec.to_pb()),
        }))
        .await
        .unwrap()
        .into_inner()
        .job_id
    }

    async fn maps_done(c: &Coordinator, job_id: u64) -> u32 {
        let status = c
            .get_job(Request::new(GetJobRequest {
                job_id,
                wait_until_over_ms: 0,
            }))
            .await;
        status.unwrap().into_inner().status.unwrap().maps_done
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_heartbeat_applies_its_workers_reports_before_it_assigns() {
        let dir = tempfile::tempdir().unwrap();
        let c = coordinator(&dir.path().join("state"));
        let (w1, w2) = (register(&c, "h1").await, register(&c, "h2").await);
        let job_id = submit_identity(&c, dir.path()).await;
        // One map, to the first worker that asks.
        let map = heartbeat(&c, w1, Vec::new()).await.assignments;
        assert_eq!(map.len(), 1);
        assert_eq!(map[0].kind, TaskKind::Map as i32);
        let done = |worker_id, epoch| ReportTaskRequest {
            worker_id,
            epoch,
            attempt_id: map[0].attempt_id,
            success: true,
            ..Default::default()
        };
        // Not counted: a report in another worker's heartbeat, and one from a registration
        // that is not current.
        let other = heartbeat(&c, w2, vec![done(w1.0, w1.1)]).await;
        assert!(other.assignments.is_empty(), "{other:?}");
        heartbeat(&c, w1, vec![done(w1.0, w1.1 + 1)]).await;
        assert_eq!(maps_done(&c, job_id).await, 0);
        // Counted: the map is done, and the slot it freed gets the reduce in the same answer.
        let next = heartbeat(&c, w1, vec![done(w1.0, w1.1)]).await;
        assert_eq!(maps_done(&c, job_id).await, 1);
        assert_eq!(next.assignments.len(), 1, "{next:?}");
        assert_eq!(next.assignments[0].kind, TaskKind::Reduce as i32);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_held_status_answers_when_its_job_ends_or_at_its_deadline() {
        use protocol::pb::JobState;
        let dir = tempfile::tempdir().unwrap();
        let c = coordinator(&dir.path().join("state"));
        let job_id = submit_identity(&c, dir.path()).await;
        let status = |wait_until_over_ms| {
            let c = c.clone();
            async move {
                let r = c.get_job(Request::new(GetJobRequest {
                    job_id,
                    wait_until_over_ms,
                }));
                r.await.unwrap().into_inner().status.unwrap().state
            }
        };
        // A running job: answered at once without a wait, at the deadline with one.
        assert_eq!(status(0).await, JobState::Running as i32);
        let asked = std::time::Instant::now();
        assert_eq!(status(200).await, JobState::Running as i32);
        assert!(asked.elapsed() >= Duration::from_millis(200));
        // Held (a wait of a minute is cut to a second), and answered when the job ends.
        let held = tokio::spawn(status(60_000));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "the job runs: the answer waits");
        assert!(c.kill_job_now(JobId(job_id)).await.unwrap());
        let state = tokio::time::timeout(Duration::from_millis(600), held)
            .await
            .expect("answered when the job ended, not at the deadline")
            .unwrap();
        assert_eq!(state, JobState::Killed as i32);
        // An ended job's status is not held.
        assert_eq!(status(60_000).await, JobState::Killed as i32);
    }

    /// An idle worker's heartbeat that may wait for work, sent in the background; checked,
    /// after a while, to be waiting still.
    async fn held_heartbeat(
        c: &Coordinator,
        (worker_id, epoch): (u64, u64),
    ) -> tokio::task::JoinHandle<HeartbeatResponse> {
        let c = c.clone();
        let held = tokio::spawn(async move {
            c.heartbeat(Request::new(HeartbeatRequest {
                worker_id,
                epoch,
                free_slots: 1,
                wait_for_work_ms: 60_000,
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner()
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!held.is_finished(), "with nothing to do, the answer waits");
        held
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_idle_workers_heartbeat_waits_and_gets_the_work_that_appears() {
        let dir = tempfile::tempdir().unwrap();
        let c = coordinator(&dir.path().join("state"));
        let (w1, w2) = (register(&c, "h1").await, register(&c, "h2").await);
        // A job submitted while w2 waits: its map goes to w2 at once.
        let waiting = held_heartbeat(&c, w2).await;
        submit_identity(&c, dir.path()).await;
        let map = waiting.await.unwrap().assignments;
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(map[0].kind, TaskKind::Map as i32);
        // w1 waits while the map runs; its end makes the reduce ready, which goes to w1.
        let waiting = held_heartbeat(&c, w1).await;
        c.report_task(Request::new(ReportTaskRequest {
            worker_id: w2.0,
            epoch: w2.1,
            attempt_id: map[0].attempt_id,
            success: true,
            ..Default::default()
        }))
        .await
        .unwrap();
        let reduce = waiting.await.unwrap().assignments;
        assert_eq!(reduce.len(), 1, "{reduce:?}");
        assert_eq!(reduce[0].kind, TaskKind::Reduce as i32);
    }
}
