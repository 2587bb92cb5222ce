//! The Quern coordinator: plans jobs into tasks, hands tasks to workers through their
//! heartbeats, commits exactly one attempt per task, and publishes each job's output.
//!
//! Layout:
//! - [`state`]: the state machine (jobs, tasks, attempts, workers), pure and clock-injected,
//!   one module per concern (workers, placement, attempts, failures, recovery, schedules,
//!   views);
//! - [`journal`]: the append-only log that lets a restarted coordinator resume its jobs, and
//!   its group commit (records written outside the state lock);
//! - [`service`]: the gRPC service around it (`read`/`mutate` the state), which performs the
//!   storage actions the state asks for;
//! - [`http`]: the web UI, JSON API and metrics endpoint;
//! - [`schedule`]: cron expressions and catch-up policies of schedules;
//! - [`client`]: a typed client with a method per RPC, for the CLI and tests;
//! - [`limits`]: per-caller submission rate limits;
//! - [`metrics`]: Prometheus counters, histograms and gauges (prometheus-client).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let config = coordinator::CoordinatorConfig::new(".quern/coordinator");
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! coordinator::serve(listener, config, jobs::Registry::builtin(), shutdown).await?;
//! # Ok(()) }
//! ```

pub mod client;
pub mod http;
pub mod journal;
pub mod json;
pub mod limits;
pub mod metrics;
pub mod schedule;
pub mod service;
pub mod state;

use std::path::PathBuf;
use std::time::Duration;

use jobs::Registry;
use protocol::Epoch;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use client::Client;
pub use service::Coordinator;
pub use state::{
    DEFAULT_FETCH_FAILURE_THRESHOLD, DEFAULT_KEEP_JOBS, DEFAULT_MAX_JOB_OUTPUT,
    DEFAULT_MAX_LOST_ATTEMPTS, DEFAULT_SPECULATION_FLOOR,
};

/// Settings of the coordinator.
#[derive(Debug)]
pub struct CoordinatorConfig {
    /// Directory for the coordinator's durable state.
    pub state_dir: PathBuf,
    /// How often workers heartbeat.
    pub heartbeat_interval: Duration,
    /// A worker silent this long is declared dead.
    pub worker_timeout: Duration,
    /// How long a job waits for a slot beside a map's data before running it elsewhere.
    pub locality_wait: Duration,
    /// How long a task runs before it may get a backup attempt.
    pub speculation_floor: Duration,
    /// Fetch-failure reports after which a map output is declared lost and the map re-run.
    pub fetch_failure_threshold: u32,
    /// Finished jobs kept listed across restarts; older ones are forgotten.
    pub keep_jobs: usize,
    /// Journal bytes appended after which the journal is compacted (forgotten jobs' task
    /// records dropped).
    pub journal_compact_after: u64,
    /// Attempts of one task lost with their workers after which the job fails (a task that
    /// takes down every worker it runs on).
    pub max_lost_attempts: u32,
    /// Bytes of output one job may write (zero: no limit).
    pub max_job_output: u64,
    /// Submissions (jobs, schedules, backfills, binaries) one caller may make per minute,
    /// and in a burst (zero: no limit).
    pub submit_rate: limits::SubmitRate,
    /// Where schedules read the time.
    pub clock: schedule::Clock,
    /// How often schedules and backfills are looked at.
    pub schedule_tick: Duration,
    /// Where the web UI, JSON API and metrics are served (none: not served).
    pub http: Option<TcpListener>,
    /// The token file every RPC and API call is checked against (none: no checks).
    pub auth: Option<std::sync::Arc<protocol::auth::Authenticator>>,
    /// TLS for the gRPC and HTTP ports (none: plaintext). With a client CA (mutual TLS),
    /// every client must present a certificate it signed, whose role then identifies it.
    pub tls: Option<protocol::tls::ServerTls>,
    /// How the coordinator reaches workers (for attempt logs): the cluster's CA.
    pub peer_tls: Option<protocol::tls::ClientTls>,
}

impl CoordinatorConfig {
    /// Returns defaults with state under `state_dir`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        CoordinatorConfig {
            state_dir: state_dir.into(),
            heartbeat_interval: Duration::from_millis(200),
            worker_timeout: Duration::from_secs(10),
            locality_wait: Duration::from_secs(3),
            speculation_floor: state::DEFAULT_SPECULATION_FLOOR,
            fetch_failure_threshold: state::DEFAULT_FETCH_FAILURE_THRESHOLD,
            keep_jobs: state::DEFAULT_KEEP_JOBS,
            journal_compact_after: journal::DEFAULT_COMPACT_AFTER,
            max_lost_attempts: state::DEFAULT_MAX_LOST_ATTEMPTS,
            max_job_output: state::DEFAULT_MAX_JOB_OUTPUT,
            submit_rate: limits::SubmitRate::default(),
            clock: schedule::Clock::System,
            schedule_tick: schedule::DEFAULT_TICK,
            http: None,
            auth: None,
            tls: None,
            peer_tls: None,
        }
    }
}

/// Errors that stop the coordinator.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The state directory could not be used.
    #[error("coordinator state i/o error on {}", .path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(journal::JournalError),
    /// The journal could not be written while serving: the coordinator stopped.
    #[error(transparent)]
    JournalDown(journal::JournalDown),
    /// The gRPC server failed.
    #[error("coordinator server failed")]
    Transport(#[from] tonic::transport::Error),
    /// Another process owns the state directory.
    #[error(transparent)]
    Locked(#[from] protocol::dirlock::DirLockError),
}

/// The shuffle master key in `<state_dir>/shuffle.key`, made (owner-readable only) on first
/// use: jobs' shuffle secrets derive from it, so they survive restarts.
fn shuffle_key(state_dir: &std::path::Path) -> Result<Vec<u8>, CoordinatorError> {
    let path = state_dir.join("shuffle.key");
    let err = |source: std::io::Error| CoordinatorError::State {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(k) if k.len() == protocol::auth::SHUFFLE_KEY_BYTES => return Ok(k),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let key = protocol::auth::new_shuffle_key().map_err(err)?;
    protocol::auth::write_private(&path, &key).map_err(err)?;
    Ok(key)
}

/// Reads, increments and durably writes the epoch in `state_dir`.
fn next_epoch(state_dir: &std::path::Path) -> Result<Epoch, CoordinatorError> {
    let err = |path: PathBuf| move |source| CoordinatorError::State { path, source };
    std::fs::create_dir_all(state_dir).map_err(err(state_dir.into()))?;
    let path = state_dir.join("epoch");
    let prev = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let epoch = prev + 1;
    let tmp = state_dir.join("epoch.tmp");
    std::fs::write(&tmp, epoch.to_string()).map_err(err(tmp.clone()))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(err(tmp.clone()))?;
    std::fs::rename(&tmp, &path).map_err(err(path))?;
    Ok(Epoch(epoch))
}

/// Serves the coordinator on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// [`CoordinatorError`] if the state directory is unusable or the server fails.
pub async fn serve(
    listener: TcpListener,
    mut config: CoordinatorConfig,
    registry: Registry,
    shutdown: CancellationToken,
) -> Result<(), CoordinatorError> {
    // Held until this function returns: one coordinator per state directory, so a second one
    // can neither replay the journal nor bump the epoch under the first.
    let _lock = protocol::dirlock::DirLock::acquire(&config.state_dir, "coordinator.lock")?;
    let (coordinator, unfinished, epoch) = recover(&mut config, registry)?;
    coordinator.finish_recovered(unfinished).await;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, epoch = epoch.0, "coordinator listening");
    }
    let mut tasks = background(&coordinator, &mut config, &shutdown);
    let result = protocol::tls::server(config.tls.as_ref())?
        .add_service(coordinator.clone().into_server())
        .serve_with_incoming_shutdown(
            protocol::tls::incoming(listener),
            shutdown.clone().cancelled_owned(),
        )
        .await;
    shutdown.cancel();
    // Every task the coordinator started ends before it returns.
    while tasks.join_next().await.is_some() {}
    if let Some(down) = coordinator.journal_down() {
        return Err(CoordinatorError::JournalDown(down));
    }
    Ok(result?)
}

/// A new incarnation: bumps the epoch, replays the journal and builds the service. Returns it
/// with the actions the crash left unfinished, and the epoch.
fn recover(
    config: &mut CoordinatorConfig,
    registry: Registry,
) -> Result<(Coordinator, Vec<state::Action>, Epoch), CoordinatorError> {
    let epoch = next_epoch(&config.state_dir)?;
    let (mut journal, records) =
        journal::Journal::open(&config.state_dir).map_err(CoordinatorError::Journal)?;
    journal.set_compact_after(config.journal_compact_after);
    let timeouts = state::Timeouts {
        worker: config.worker_timeout,
        locality_wait: config.locality_wait,
        speculation_floor: config.speculation_floor,
        fetch_failure_threshold: config.fetch_failure_threshold,
        keep_jobs: config.keep_jobs,
        max_lost_attempts: config.max_lost_attempts,
        max_job_output: config.max_job_output,
    };
    let (mut state, unfinished) =
        state::State::recover(epoch, timeouts, records, std::time::Instant::now());
    state.set_shuffle_key(shuffle_key(&config.state_dir)?);
    let mut coordinator = Coordinator::new(state, journal, registry, config.heartbeat_interval)
        .with_clock(config.clock.clone())
        .with_binaries(config.state_dir.join("binaries"))
        .with_submit_rate(config.submit_rate)
        .with_tls(
            config.tls.as_ref().is_some_and(|t| t.mutual()),
            config.peer_tls.take(),
        );
    if let Some(auth) = config.auth.clone() {
        tracing::info!(tokens = %auth.path().display(), "authentication on: every call needs a token");
        coordinator = coordinator.with_auth(auth);
    }
    Ok((coordinator, unfinished, epoch))
}

/// Starts the coordinator's own tasks (worker expiry, schedules, binary pruning, the web UI,
/// and the stop on a journal failure), each ending with `shutdown`.
fn background(
    coordinator: &Coordinator,
    config: &mut CoordinatorConfig,
    shutdown: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    // A journal that cannot be written stops everything, as a shutdown does.
    let (stopping, stop) = (coordinator.stopping(), shutdown.clone());
    tasks.spawn(async move {
        tokio::select! {
            () = stopping.cancelled() => stop.cancel(),
            () = stop.cancelled() => {}
        }
    });
    let c = coordinator.clone();
    tasks.spawn(c.expire_workers_loop(config.heartbeat_interval, shutdown.clone()));
    let c = coordinator.clone();
    tasks.spawn(c.schedule_loop(config.schedule_tick, shutdown.clone()));
    tasks.spawn(coordinator.clone().prune_binaries_loop(shutdown.clone()));
    if let Some(l) = config.http.take() {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(%addr, "web UI, API and metrics listening");
        }
        let c = coordinator.clone();
        tasks.spawn(http::serve(l, c, config.tls.clone(), shutdown.clone()));
    }
    tasks
}
