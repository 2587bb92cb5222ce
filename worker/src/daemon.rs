//! The worker daemon: register, heartbeat, run attempts in executor processes, report.
//!
//! Work is pulled: each heartbeat says how many slots are free and gets back assignments,
//! attempts to cancel, and jobs whose shuffle files can go. Each attempt runs in its own
//! executor child process; a tokio task waits for it and queues its report, and the worker
//! heartbeats at once: the heartbeat carries the report and brings the next task, one RPC
//! for both. A report the coordinator did not get goes again with the next heartbeat. If the
//! coordinator answers that this registration is stale (it restarted, or declared this worker
//! dead), the worker drops the queued reports (the coordinator refuses them) and registers
//! again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::pb::coordinator_service_client::CoordinatorServiceClient;
use protocol::pb::{
    self, HeartbeatRequest, RegisterWorkerRequest, ReportFetchFailureRequest, ReportTaskRequest,
};
use protocol::{AttemptId, Epoch, FailureKind, WorkerId, MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use crate::shuffle::ShuffleService;
use crate::task::{from_assignment, ExecutorResult, ExecutorTask};
use crate::{WorkerConfig, WorkerError};

type Client = CoordinatorServiceClient<protocol::auth::Authed<Channel>>;

#[derive(Clone, Copy, Debug)]
struct Registration {
    worker: WorkerId,
    epoch: Epoch,
    interval: Duration,
}

/// The attempts this worker runs: their cancel tokens, the reports of those that ended,
/// waiting for the next heartbeat, the tasks that run them (awaited at shutdown), the wake-up
/// a finished one gives the heartbeat loop (its report goes, and its slot is offered, at once
/// rather than at the next tick), and the idle executors kept for the next attempt of their
/// job.
#[derive(Default)]
struct Attempts {
    running: Mutex<HashMap<AttemptId, CancellationToken>>,
    reports: Mutex<Vec<ReportTaskRequest>>,
    tasks: tokio_util::task::TaskTracker,
    wake: tokio::sync::Notify,
    executors: crate::executors::Pool,
}

/// How much longer than the coordinator may hold it a heartbeat's answer is waited for.
const HEARTBEAT_GRACE: Duration = Duration::from_secs(10);

/// How long a stopping worker waits for its cancelled attempts to report.
const REPORT_GRACE: Duration = Duration::from_secs(5);

impl Attempts {
    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<AttemptId, CancellationToken>> {
        self.running.lock().expect("running map lock")
    }

    fn reports(&self) -> std::sync::MutexGuard<'_, Vec<ReportTaskRequest>> {
        self.reports.lock().expect("report queue lock")
    }

    /// Queues an ended attempt's report, frees its slot and wakes the heartbeat loop.
    fn ended(&self, attempt: AttemptId, report: ReportTaskRequest) {
        self.reports().push(report);
        self.running().remove(&attempt);
        self.wake.notify_one();
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkerError {
    let context = context.into();
    move |source| WorkerError::Io { context, source }
}

/// Runs a worker until `shutdown` is cancelled.
///
/// # Errors
/// [`WorkerError`] if the shuffle port cannot be bound or the coordinator never answers.
pub async fn serve(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    // Held until this function returns: one worker per directory.
    let _lock = protocol::dirlock::DirLock::acquire(&config.dir, "worker.lock")?;
    for sub in ["shuffle", "tasks", "work", "logs"] {
        let d = config.dir.join(sub);
        tokio::fs::create_dir_all(&d)
            .await
            .map_err(io_err(format!("create {}", d.display())))?;
    }
    let listener = TcpListener::bind(config.shuffle_listen)
        .await
        .map_err(io_err("bind shuffle port"))?;
    let bound = listener
        .local_addr()
        .map_err(io_err("read shuffle address"))?;
    let shuffle_addr = advertised(bound, config.advertise_host.as_deref())?;
    let server = protocol::tls::server(config.tls.as_ref())
        .map_err(|e| WorkerError::Tls(protocol::error_chain(&e)))?
        .add_service(ShuffleService::new(config.dir.clone()).into_server())
        .serve_with_incoming_shutdown(
            protocol::tls::incoming(listener),
            shutdown.clone().cancelled_owned(),
        );
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %protocol::error_chain(&e), "shuffle service failed");
        }
    });
    tracing::info!(%shuffle_addr, slots = config.slots, "shuffle service listening");
    tasks.spawn(watch_dir(config.dir.clone(), shutdown.clone()));
    tasks.spawn(prune_loop(config.dir.clone(), shutdown.clone()));
    let attempts = Arc::new(Attempts::default());
    tasks.spawn(reap_loop(attempts.clone(), shutdown.clone()));
    let client = connect(&config, &shutdown).await?;
    let result = heartbeat_loop(&config, client.clone(), shuffle_addr, &attempts, &shutdown).await;
    shutdown.cancel();
    // Cancelled by the heartbeat loop, each attempt kills its executor and queues its report;
    // the queue then goes one report at a time, there being no more heartbeats. A coordinator
    // that does not answer is not waited for beyond the grace.
    attempts.tasks.close();
    let last_reports = async {
        attempts.tasks.wait().await;
        let queued = std::mem::take(&mut *attempts.reports());
        for req in queued {
            send_report(client.clone(), req).await;
        }
    };
    if tokio::time::timeout(REPORT_GRACE, last_reports)
        .await
        .is_err()
    {
        tracing::warn!(
            left = attempts.tasks.len(),
            "attempts still reporting at shutdown; leaving them"
        );
    }
    attempts.executors.reap(Duration::ZERO);
    // Every task the worker started for itself ends before it returns.
    while tasks.join_next().await.is_some() {}
    result
}

/// The shuffle address told to the coordinator (and by it to reducers on other machines):
/// `host` with the bound port, or the bound address itself when it is a specific one.
fn advertised(bound: std::net::SocketAddr, host: Option<&str>) -> Result<String, WorkerError> {
    match host {
        Some(h) if h.contains(':') && !h.starts_with('[') => Ok(format!("[{h}]:{}", bound.port())),
        Some(h) => Ok(format!("{h}:{}", bound.port())),
        None if bound.ip().is_unspecified() => Err(WorkerError::NoAdvertiseAddress(bound)),
        None => Ok(bound.to_string()),
    }
}

/// A worker whose directory was removed (a test's temporary directory, a decommissioned
/// disk) has nowhere to keep map outputs or logs: it stops instead of heartbeating on.
async fn watch_dir(dir: PathBuf, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        if !tokio::fs::try_exists(dir.join("worker.lock"))
            .await
            .unwrap_or(true)
        {
            tracing::error!(dir = %dir.display(), "worker directory removed; stopping");
            stop.cancel();
            return;
        }
    }
}

/// Attempt logs are kept for `quern job logs` and the UI, but not without bound; a job's
/// secret goes once nothing of the job is left to serve; cached job binaries go unused.
async fn prune_loop(dir: PathBuf, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let dir = dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            prune_logs(&dir.join("logs"), KEEP_LOGS);
            let removed = crate::shuffle::prune_secrets(&dir);
            if removed > 0 {
                tracing::info!(removed, "job secrets no longer needed removed");
            }
            let removed = crate::binaries::prune(&dir, crate::binaries::CACHE_RETENTION);
            if removed > 0 {
                tracing::info!(removed, "unused job binaries removed from the cache");
            }
        })
        .await;
    }
}

/// Executors kept for the next attempt of their job do not wait for ever.
async fn reap_loop(attempts: Arc<Attempts>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => attempts.executors.reap(crate::executors::IDLE_TIMEOUT),
        }
    }
}

/// The coordinator's endpoint, [`protocol::tls::watched`]: a connection to a coordinator whose
/// host stopped answering is dropped within half a minute, and the channel connects again.
fn coordinator_endpoint(config: &WorkerConfig) -> Result<Endpoint, tonic::transport::Error> {
    protocol::tls::endpoint(&config.coordinator, config.client_tls.as_ref())
        .map(protocol::tls::watched)
}

fn client_on(config: &WorkerConfig, channel: Channel) -> Client {
    let auth = protocol::auth::ClientAuth::new(config.token.as_deref());
    CoordinatorServiceClient::with_interceptor(channel, auth)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
}

async fn connect(
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<Client, WorkerError> {
    let deadline = Instant::now() + config.connect_timeout;
    loop {
        let channel = async { coordinator_endpoint(config)?.connect().await };
        match channel.await {
            Ok(c) => return Ok(client_on(config, c)),
            Err(e) if Instant::now() >= deadline => {
                return Err(WorkerError::Coordinator {
                    addr: config.coordinator.clone(),
                    message: protocol::error_chain(&e),
                })
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.cancelled() => {
                return Err(WorkerError::Coordinator { addr: config.coordinator.clone(), message: "shut down".into() })
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Replaces `client` by one on a new connection, made at its first call: a call that got no
/// answer in time may have been on a connection that is stuck (the old one closes when its
/// last call ends).
fn renew(config: &WorkerConfig, client: &mut Client) {
    match coordinator_endpoint(config) {
        Ok(e) => *client = client_on(config, e.connect_lazy()),
        Err(e) => tracing::warn!(error = %e, "coordinator endpoint"),
    }
}

async fn register(
    config: &WorkerConfig,
    client: &mut Client,
    shuffle_addr: &str,
) -> Result<Registration, tonic::Status> {
    let mut req = tonic::Request::new(RegisterWorkerRequest {
        host: dfs_client::local_host(),
        shuffle_addr: shuffle_addr.to_string(),
        cpu_slots: config.slots,
        gpus: config.gpus,
        storage_host: config.storage_host.clone(),
        held_outputs: held_outputs(&config.dir),
        dir: std::fs::canonicalize(&config.dir)
            .unwrap_or_else(|_| config.dir.clone())
            .display()
            .to_string(),
    });
    req.set_timeout(HEARTBEAT_GRACE);
    let r = client.register_worker(req).await?.into_inner();
    tracing::info!(worker = %WorkerId(r.worker_id), epoch = r.epoch, "registered with coordinator");
    Ok(Registration {
        worker: WorkerId(r.worker_id),
        epoch: Epoch(r.epoch),
        interval: Duration::from_millis(r.heartbeat_interval_ms.max(10)),
    })
}

/// Returns true when the file system holding `dir` has less than 64 KiB free.
fn disk_nearly_full(dir: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statvfs fills the zeroed struct it is given and reads a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return false;
    }
    (st.f_bavail as u64).saturating_mul(st.f_frsize as u64) < 64 * 1024
}

/// Describes an I/O error, saying plainly when the disk is full.
fn describe_io(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        format!("no space left on the worker's disk ({e})")
    } else {
        e.to_string()
    }
}

/// Lists the map outputs under a worker directory (`shuffle/job-J/map-M-A.out`).
fn held_outputs(dir: &std::path::Path) -> Vec<pb::HeldOutput> {
    let mut out = Vec::new();
    let Ok(jobs) = std::fs::read_dir(dir.join("shuffle")) else {
        return out;
    };
    for job in jobs.flatten() {
        let Ok(job_id) = job.file_name().to_string_lossy().parse::<protocol::JobId>() else {
            continue;
        };
        let Ok(files) = std::fs::read_dir(job.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            let parsed = name
                .strip_prefix("map-")
                .and_then(|n| n.strip_suffix(".out"))
                .and_then(|n| n.split_once('-'))
                .and_then(|(m, a)| Some((m.parse().ok()?, a.parse().ok()?)));
            if let Some((map_index, attempt_id)) = parsed {
                out.push(pb::HeldOutput {
                    job_id: job_id.0,
                    map_index,
                    attempt_id,
                });
            }
        }
    }
    out
}

async fn heartbeat_loop(
    config: &WorkerConfig,
    mut client: Client,
    shuffle_addr: String,
    attempts: &Arc<Attempts>,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let mut reg: Option<Registration> = None;
    let mut delay = Duration::from_millis(100);
    // Numbers this process's heartbeats (see `HeartbeatRequest.seq`).
    let mut seq = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
            _ = attempts.wake.notified() => {}
        }
        let Some(r) = reg else {
            let sent = std::time::Instant::now();
            match register(config, &mut client, &shuffle_addr).await {
                Ok(r) => {
                    delay = r.interval;
                    reg = Some(r);
                }
                Err(e) => {
                    tracing::warn!(error = %e.message(), "registration failed; retrying");
                    delay = Duration::from_millis(500);
                    if sent.elapsed() >= HEARTBEAT_GRACE {
                        renew(config, &mut client);
                    }
                }
            }
            continue;
        };
        let (free, running): (u32, Vec<u64>) = {
            let map = attempts.running();
            (
                config.slots.saturating_sub(map.len() as u32),
                map.keys().map(|a| a.0).collect(),
            )
        };
        // Taken after the slots are counted: an attempt that ends in between is reported
        // now and offers its slot next time, never the other way round.
        let reports = std::mem::take(&mut *attempts.reports());
        // With nothing running, nothing can end while the answer is awaited: the coordinator
        // may hold it until there is work, up to two intervals, after which the next one goes
        // at once (below): one heartbeat every two intervals while idle, as an interval's
        // hold and an interval's sleep gave before.
        let hold = r.interval * 2;
        let wait_for_work_ms = if running.is_empty() && free > 0 {
            u32::try_from(hold.as_millis()).unwrap_or(u32::MAX)
        } else {
            0
        };
        seq += 1;
        let mut req = tonic::Request::new(HeartbeatRequest {
            worker_id: r.worker.0,
            epoch: r.epoch.0,
            free_slots: free,
            running_attempts: running,
            reports: reports.clone(),
            wait_for_work_ms,
            seq,
        });
        // An answer that has not come by then is not waited for: on a connection to a host
        // that went silent, TCP's retransmission backoff could keep it away for minutes after
        // the host is back (26 s late after a 30 s partition). What the coordinator assigned
        // in it is found lost at the next heartbeat, which numbers it.
        let give_up = hold + HEARTBEAT_GRACE;
        req.set_timeout(give_up);
        let sent = std::time::Instant::now();
        let answer = match client.heartbeat(req).await {
            Ok(resp)
                if !resp.get_ref().assignments.is_empty()
                    && protocol::failpoint::hit("heartbeat.lose") =>
            {
                tracing::info!(
                    assignments = resp.get_ref().assignments.len(),
                    "failpoint heartbeat.lose: dropped the answer"
                );
                Err(tonic::Status::unavailable("failpoint heartbeat.lose"))
            }
            answer => answer,
        };
        match answer {
            Ok(resp) => {
                // An idle worker is reachable for new work only while the coordinator holds
                // its heartbeat: sleeping an interval between holds left a job submitted
                // meanwhile waiting for it (one of three workers started its first map
                // ~150 ms late in most jobs). So it heartbeats again at once after a hold
                // that lasted (the hold took the place of the sleep) or an answer that only
                // cleaned up after a finished job, and after any other quick answer (woken
                // for work another worker took) within a tenth of an interval: at most ten
                // heartbeats an interval even from a coordinator that never holds.
                let idle = wait_for_work_ms > 0 && resp.get_ref().assignments.is_empty();
                let held = sent.elapsed() >= hold / 2;
                let cleanup = !resp.get_ref().finished_jobs.is_empty()
                    || !resp.get_ref().cancel_attempts.is_empty();
                delay = match (idle, held || cleanup) {
                    (true, true) => Duration::ZERO,
                    (true, false) => r.interval / 10,
                    (false, _) => r.interval,
                };
                if !reports.is_empty() && protocol::failpoint::hit("report.twice") {
                    let n = reports.len();
                    for req in reports {
                        let _ = client.report_task(req).await;
                    }
                    tracing::info!(
                        reports = n,
                        "failpoint report.twice: sent the reports again"
                    );
                }
                let resp = resp.into_inner();
                handle_heartbeat(config, &client, r, attempts, resp);
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                tracing::warn!(reason = %s.message(), dropped_reports = reports.len(), "coordinator refused registration; registering again");
                reg = None;
                delay = Duration::from_millis(10);
            }
            Err(s) => {
                tracing::warn!(error = %s.message(), "heartbeat failed");
                delay = r.interval;
                // Sent again, first, with the next heartbeat.
                attempts.reports().splice(0..0, reports);
                if sent.elapsed() >= give_up {
                    renew(config, &mut client);
                }
            }
        }
    }
    for token in attempts.running().values() {
        token.cancel();
    }
    Ok(())
}

fn handle_heartbeat(
    config: &WorkerConfig,
    client: &Client,
    reg: Registration,
    attempts: &Arc<Attempts>,
    resp: pb::HeartbeatResponse,
) {
    for id in resp.cancel_attempts {
        if let Some(t) = attempts.running().get(&AttemptId(id)) {
            tracing::info!(attempt = %AttemptId(id), "cancelling attempt");
            t.cancel();
        }
    }
    for job in resp.finished_jobs {
        let dir = config
            .dir
            .join("shuffle")
            .join(protocol::JobId(job).to_string());
        attempts.tasks.spawn(async move {
            let _ = tokio::fs::remove_dir_all(dir).await;
        });
        attempts.executors.forget_job(protocol::JobId(job));
    }
    for a in resp.assignments {
        let attempt = AttemptId(a.attempt_id);
        let task = match from_assignment(a, &config.dir) {
            Ok(task) => task,
            Err(e) => {
                // Said to the coordinator, so the attempt does not wait for the worker timeout;
                // fatal, since every worker would get the same malformed task.
                tracing::error!(error = %e, "malformed assignment refused");
                let result = ExecutorResult {
                    error: Some((FailureKind::Fatal, e.to_string())),
                    ..Default::default()
                };
                attempts
                    .reports()
                    .push(report_request(reg, attempt, result));
                attempts.wake.notify_one();
                continue;
            }
        };
        let token = CancellationToken::new();
        attempts.running().insert(task.attempt, token.clone());
        let (config, client, this) = (config.clone(), client.clone(), attempts.clone());
        attempts.tasks.spawn(async move {
            let attempts = this;
            let attempt = task.attempt;
            let pool = &attempts.executors;
            let result = run_attempt(&config, &mut client.clone(), &task, token, pool).await;
            report_fetch_failures(client, reg, attempt, &result).await;
            attempts.ended(attempt, report_request(reg, attempt, result));
        });
    }
}

/// Runs one attempt in an executor process and returns its result.
async fn run_attempt(
    config: &WorkerConfig,
    client: &mut Client,
    task: &ExecutorTask,
    cancel: CancellationToken,
    pool: &crate::executors::Pool,
) -> ExecutorResult {
    let fail = |kind, msg: String| ExecutorResult {
        error: Some((kind, msg)),
        ..Default::default()
    };
    if !config.fault_delay.is_zero() {
        tokio::select! {
            _ = tokio::time::sleep(config.fault_delay) => {}
            _ = cancel.cancelled() => return fail(FailureKind::Cancelled, "attempt cancelled".into()),
        }
    }
    if protocol::failpoint::hit("task.fail") {
        return fail(
            FailureKind::Retryable,
            "failpoint task.fail: this worker fails every attempt".into(),
        );
    }
    let log_path = crate::shuffle::attempt_log_path(&config.dir, &task.stem);
    let started = match prepare(config, task, &log_path).await {
        Ok(log) => executor_for(config, client, task, log, pool).await,
        Err(e) => Err(e),
    };
    let (key, mut exec) = match started {
        Ok(started) => started,
        Err(e) => return fail(FailureKind::Retryable, e),
    };
    let json = serde_json::to_string(task).expect("task serialises");
    let reply = tokio::select! {
        r = exec.run(&json, &log_path) => r,
        _ = cancel.cancelled() => {
            exec.kill().await;
            discard_work(task).await;
            return fail(FailureKind::Cancelled, "attempt cancelled".into());
        }
    };
    let Some(reply) = reply else {
        let why = no_result(config, exec, &log_path).await;
        discard_work(task).await;
        return fail(FailureKind::Retryable, why);
    };
    let result: ExecutorResult = serde_json::from_str(&reply).unwrap_or_else(|e| {
        fail(
            FailureKind::Retryable,
            format!("unreadable executor result: {e}"),
        )
    });
    // Only an executor that ran its attempt cleanly is fit for the next one.
    if result.error.is_none() {
        pool.put(key, exec);
    } else {
        exec.kill().await;
    }
    result
}

/// Keeps the job's shuffle secret and creates the attempt log; returns the log.
async fn prepare(
    config: &WorkerConfig,
    task: &ExecutorTask,
    log_path: &PathBuf,
) -> Result<std::fs::File, String> {
    // The shuffle service checks reducers' fetch tokens and log readers' tokens with the
    // job's secret.
    crate::shuffle::keep_job_secret(&config.dir, task.job_id, &task.shuffle_secret)
        .map_err(|e| format!("cannot keep the job's shuffle secret: {}", describe_io(&e)))?;
    std::fs::File::create(log_path)
        .map_err(|e| format!("cannot create attempt log: {}", describe_io(&e)))
}

/// An executor for the task: an idle one of its job (what the job loaded stays loaded), or a
/// new one of the job's executable (an uploaded binary is fetched once and cached).
async fn executor_for(
    config: &WorkerConfig,
    client: &mut Client,
    task: &ExecutorTask,
    log: std::fs::File,
    pool: &crate::executors::Pool,
) -> Result<(crate::executors::Key, crate::executors::Executor), String> {
    tracing::debug!(attempt = %task.attempt, kind = ?task.kind(), index = task.index, "starting executor");
    let executable = if task.spec.binary.is_empty() {
        config.executable.clone()
    } else {
        crate::binaries::ensure(&config.dir, client, &task.spec.binary)
            .await
            .map_err(|e| protocol::error_chain(&e))?
    };
    let key = crate::executors::Key {
        job: task.job_id,
        exe: executable.clone(),
    };
    let exec = match pool.take(&key) {
        Some(e) => e,
        None => crate::executors::spawn(
            &executable,
            log,
            config.client_tls.as_ref(),
            &config.storage_host,
        )
        .map_err(|e| format!("cannot start executor: {e}"))?,
    };
    Ok((key, exec))
}

/// Why an executor left no result: how it exited, the end of its log, and a full disk.
async fn no_result(
    config: &WorkerConfig,
    exec: crate::executors::Executor,
    log_path: &PathBuf,
) -> String {
    let status = exec.exit_status().await;
    let tail = log_tail(log_path).await;
    // An executor that died without answering may have died of a full disk.
    let full = if disk_nearly_full(&config.dir) {
        "no space left on the worker's disk; "
    } else {
        ""
    };
    format!("{full}executor exited without a result ({status}): {tail}")
}

/// Removes the scratch directory of an attempt whose executor did not finish it (one that
/// finishes removes it itself).
async fn discard_work(task: &ExecutorTask) {
    let _ = tokio::fs::remove_dir_all(&task.work_dir).await;
}

/// Returns the last lines of an attempt log, for an error message.
async fn log_tail(path: &PathBuf) -> String {
    let text = tokio::fs::read(path).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" | ")
}

/// Tells the coordinator of the map outputs a reduce could not fetch, before its own report.
async fn report_fetch_failures(
    mut client: Client,
    reg: Registration,
    attempt: AttemptId,
    result: &ExecutorResult,
) {
    for lost in &result.lost_maps {
        let req = ReportFetchFailureRequest {
            worker_id: reg.worker.0,
            epoch: reg.epoch.0,
            attempt_id: attempt.0,
            map_index: lost.map_index,
            map_attempt_id: lost.attempt.0,
            reason: lost.reason.to_pb() as i32,
            detail: lost.detail.clone(),
        };
        if let Err(e) = client.report_fetch_failure(req).await {
            tracing::warn!(error = %e.message(), "cannot report fetch failure");
        }
    }
}

/// An ended attempt's report.
fn report_request(
    reg: Registration,
    attempt: AttemptId,
    result: ExecutorResult,
) -> ReportTaskRequest {
    let (kind, error) = result
        .error
        .clone()
        .unwrap_or((FailureKind::Retryable, String::new()));
    ReportTaskRequest {
        worker_id: reg.worker.0,
        epoch: reg.epoch.0,
        attempt_id: attempt.0,
        success: result.error.is_none(),
        counters: Some(pb::Counters {
            values: result.counters.0.into_iter().collect(),
        }),
        failure_kind: kind.to_pb() as i32,
        error,
        output_bytes: result.output_bytes,
        output_crc32: result.output_crc32,
        lost_maps: result.lost_maps.iter().map(|l| l.map_index).collect(),
        bad_record_offset: result.bad_record,
        listed: result
            .listed
            .iter()
            .map(|r| pb::ListedRecord {
                path: r.path.clone(),
                offset: r.offset,
                reason: r.message.clone(),
            })
            .collect(),
        state: result
            .state
            .map(|(bytes, crc32)| pb::StagedFile { bytes, crc32 }),
    }
}

/// Sends a report on its own (a stopping worker has no more heartbeats to carry it), retrying
/// a few times: a report lost to a transient error would leave its task hanging until the
/// worker is declared dead.
async fn send_report(mut client: Client, req: ReportTaskRequest) {
    let attempt = AttemptId(req.attempt_id);
    for i in 0..5u32 {
        match client.report_task(req.clone()).await {
            Ok(_) => return,
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                tracing::info!(%attempt, "report refused as stale");
                return;
            }
            Err(s) => {
                tracing::warn!(error = %s.message(), %attempt, "report failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 << i)).await;
            }
        }
    }
}

/// Attempt logs a worker keeps (the newest ones).
pub const KEEP_LOGS: usize = 5000;

/// Deletes all but the `keep` most recently modified files of `dir`; returns how many went.
pub fn prune_logs(dir: &std::path::Path, keep: usize) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep {
        return 0;
    }
    files.sort();
    let excess = files.len() - keep;
    files
        .into_iter()
        .take(excess)
        .filter(|(_, p)| std::fs::remove_file(p).is_ok())
        .count()
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_newest_logs_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            std::fs::write(dir.path().join(format!("attempt-{i}.log")), b"x").unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert_eq!(super::prune_logs(dir.path(), 2), 3);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["attempt-3.log", "attempt-4.log"]);
        assert_eq!(super::prune_logs(dir.path(), 2), 0);
    }

    #[test]
    fn the_advertised_address_is_the_given_host_or_a_specific_bound_one() {
        let any: std::net::SocketAddr = "0.0.0.0:7071".parse().unwrap();
        let one: std::net::SocketAddr = "10.0.0.5:7071".parse().unwrap();
        assert_eq!(
            super::advertised(any, Some("w1.example")).unwrap(),
            "w1.example:7071"
        );
        assert_eq!(
            super::advertised(any, Some("fd00::5")).unwrap(),
            "[fd00::5]:7071"
        );
        assert_eq!(super::advertised(one, None).unwrap(), "10.0.0.5:7071");
        let err = super::advertised(any, None).unwrap_err().to_string();
        assert!(err.contains("--advertise-host"), "{err}");
    }
}
