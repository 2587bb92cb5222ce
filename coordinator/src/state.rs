//! The coordinator's state machine: jobs, tasks, attempts, workers.
//!
//! Everything here is synchronous and does no I/O, so it can be tested without a network.
//! Methods take `now` instead of reading the clock. Storage work that a transition needs (a
//! commit rename, publishing `_SUCCESS`, discarding a failed output) is returned as an
//! [`Action`] for the service to perform outside the lock, after which it calls back
//! ([`State::commit_done`], [`State::publish_done`]).
//!
//! Invariants: an attempt id is never reused; a task has at most one winning attempt, and only
//! the winner's counters count; a report from an unknown or stale attempt changes nothing.
//!
//! Layout: this file holds the data (jobs, tasks, attempts, workers, the journal outbox) and
//! job submission; each concern that changes it has a module of its own: `workers`
//! (registration, liveness, held outputs), `placement` (what runs where), `attempts`
//! (success and the commit protocol), `failures` (what counts against a task, kills),
//! `recovery` (journal replay), `schedules` (cron schedules and backfills) and `views`
//! (read-only answers for the UI, API and metrics).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use dfs_client::Storage;
use jobs::output::{part_name, Manifest, PartInfo, SkippedRecord, TEMPORARY};
use jobs::plan::{Plan, PlannedSplit};
use jobs::sdk::Counters;
use protocol::pb;
use protocol::{AttemptId, Epoch, FailureKind, JobId, JobSpec, WorkerId};

use crate::journal::Record;

// One concern per module; each `impl State` block there says what it may touch.
mod attempts;
mod failures;
mod placement;
mod recovery;
mod schedules;
mod tally;
mod views;
mod workers;

pub use schedules::{
    compute_due, Backfill, CancelBackfillError, Due, FailureNotice, Firing, HistoryEntry, Origin,
    Schedule, Skip, BACKFILL_PRIORITY,
};
pub use views::{AttemptPage, AttemptView, Page, WorkerView};

pub use protocol::{JobState, TaskKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TaskState {
    Pending,
    Running,
    /// A reduce attempt's part file is being renamed into place.
    Committing(AttemptId),
    Done,
}

#[derive(Debug, Clone)]
struct Winner {
    attempt: AttemptId,
    /// `None` for a map recovered from the journal whose worker has not re-registered yet.
    worker: Option<WorkerId>,
    counters: Counters,
    local: bool,
    part: Option<PartInfo>,
    /// A reduce's state file, for a job that keeps state.
    state: Option<PartInfo>,
    /// When a replacement worker took it over: fetch failures reported by reducers that
    /// started before (and so fetched from the address it replaced) do not count.
    replaced_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct Task {
    state: TaskState,
    failures: u32,
    /// Attempts lost with their workers (killed, not failed).
    lost: u32,
    /// A map's winner whose worker was declared dead: if a worker comes back on that
    /// directory holding the same attempt's output before the map is done again, it wins
    /// again (and the re-run is cancelled).
    lost_winner: Option<Winner>,
    running: Vec<AttemptId>,
    winner: Option<Winner>,
    /// Skip mode: records the map panicked on, and those its attempts skip.
    skip: jobs::runtime::SkipMode,
    /// Workers on which an attempt of this task failed: a retry goes elsewhere if it can.
    failed_on: Vec<WorkerId>,
    /// Fetch-failure reports against this map's current output.
    fetch_reports: u32,
    /// Attempts started (since the coordinator started): numbers them.
    started: u32,
    /// When it last became ready to run again (an attempt ended, or its output was lost);
    /// none: since its job was submitted.
    ready: Option<Instant>,
}

impl Task {
    fn new() -> Self {
        Task {
            state: TaskState::Pending,
            failures: 0,
            lost: 0,
            lost_winner: None,
            running: Vec::new(),
            winner: None,
            skip: Default::default(),
            failed_on: Vec::new(),
            fetch_reports: 0,
            started: 0,
            ready: None,
        }
    }

    /// Its finished map output is gone: the map waits to run again. Returns the winner the
    /// task had. The caller reports it with [`map_lost`], and marks the job's tally stale.
    fn output_lost(&mut self, now: Instant) -> Option<Winner> {
        self.state = TaskState::Pending;
        self.ready = Some(now);
        self.winner.take()
    }
}

/// Counts, meters and journals that map `index` of `job` runs again because its output is
/// gone (see [`Task::output_lost`]).
fn map_lost(
    lost_outputs: &mut u64,
    metrics: &crate::metrics::Metrics,
    outbox: &mut Vec<Record>,
    job: JobId,
    index: u32,
) {
    *lost_outputs += 1;
    metrics.map_output_lost();
    outbox.push(Record::MapLost { job, index });
}

/// One job.
#[derive(Debug)]
pub struct Job {
    id: JobId,
    /// What was submitted.
    pub spec: JobSpec,
    /// Where it is.
    pub state: JobState,
    splits: Vec<PlannedSplit>,
    /// What its output covers (for the manifest).
    coverage: Vec<jobs::coverage::CoveredFile>,
    /// Input entries not read for their names (for the manifest).
    not_read: Vec<jobs::output::NotRead>,
    maps: Vec<Task>,
    reduces: Vec<Task>,
    error: Option<String>,
    submitted: Instant,
    finished: Option<Instant>,
    /// Wall-clock times (ms since the Unix epoch; 0: not known, in journals from before
    /// they were kept), journaled, so they and the elapsed time survive a restart.
    submitted_ms: u64,
    finished_ms: u64,
    shuffle_workers: HashSet<WorkerId>,
    fetch_failures: u64,
    /// Since when maps that could run data-local elsewhere have been passed over.
    locality_wait_since: Option<Instant>,
    /// Maps completed before a coordinator restart, recovered from the journal.
    recovered_maps: u64,
    /// Failed attempts per worker; a worker at [`EXCLUDE_AFTER`] gets no more of this job.
    worker_failures: HashMap<WorkerId, u32>,
    /// Run times of winning attempts, per phase, to tell stragglers from their peers.
    durations: HashMap<TaskKind, Vec<Duration>>,
    /// Backup attempts started for stragglers.
    backups: u64,
    /// Map attempts started away from their data because every host holding it had more
    /// pending maps than slots.
    rebalanced: u64,
    /// Attempts started, and attempts that failed (cancelled ones not counted).
    attempts: u64,
    /// Finished map outputs lost (to a dead worker or fetch failures) and produced again.
    lost_outputs: u64,
    failed_attempts: u64,
    /// Attempts lost with their workers.
    killed_attempts: u64,
    /// Finished map outputs kept when their worker was replaced by one restarted on its
    /// directory.
    kept_outputs: u64,
    /// Records skipped in skip mode.
    skipped: Vec<SkippedRecord>,
    /// When a map attempt last ended (reduces are ready from when the last map is done).
    last_map_end: Option<Instant>,
    /// Records the job's maps listed as skipped (winning attempts only; no duplicates).
    listed: Vec<SkippedRecord>,
    /// The schedule or backfill that started it.
    origin: Option<Origin>,
    /// Every attempt of this incarnation, in start order (for the UI and `quern job logs`).
    history: Vec<AttemptRecord>,
    /// Its tasks by state, for placement.
    tally: tally::Tally,
    /// The median run time of winning attempts per phase (by `tally::kind_slot`), and how many
    /// attempts it was taken over (see [`Job::refresh_medians`]).
    medians: [(usize, Option<Duration>); 2],
    /// The winners' counters as last merged for its status, and when (see `views`).
    counters_cache: std::cell::RefCell<Option<(Instant, Counters)>>,
}

/// How an attempt ended, or that it has not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Running,
    /// It finished and won (or lost the race to a backup that finished first).
    Succeeded,
    /// It failed; counts toward the task's `--max-attempts`.
    Failed,
    /// Cancelled by the coordinator (its job ended, or another attempt won).
    Cancelled,
    /// Lost with its worker; counts toward `--max-lost-attempts` only.
    Killed,
}

impl Outcome {
    /// The outcome's name, as the UI, the API and `quern job logs` show it.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
            Outcome::Killed => "killed",
        }
    }
}

/// One attempt as the UI and `quern job logs` show it.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// Its id.
    pub attempt: AttemptId,
    /// Map or reduce.
    pub kind: TaskKind,
    /// The task.
    pub index: u32,
    /// Where it ran.
    pub worker: WorkerId,
    /// When it started and ended.
    pub started: Instant,
    /// When it ended, if it has.
    pub finished: Option<Instant>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed.
    pub error: String,
    /// Whether it ran beside its data (maps).
    pub local: bool,
    /// Its number among its task's attempts (from 1; counted since the coordinator started).
    pub number: u32,
}

impl AttemptRecord {
    /// The name people read and type: `job-4/map-3/2`, the second attempt of map 3 of job 4.
    pub fn name(&self, job: JobId) -> String {
        protocol::task::attempt_name(job, self.kind, self.index, self.number)
    }
}

/// A worker that failed this many attempts of a job is given no more of its tasks.
pub const EXCLUDE_AFTER: u32 = 3;

impl Job {
    fn tasks(&self, kind: TaskKind) -> &[Task] {
        match kind {
            TaskKind::Map => &self.maps,
            TaskKind::Reduce => &self.reduces,
        }
    }

    fn tasks_mut(&mut self, kind: TaskKind) -> &mut Vec<Task> {
        match kind {
            TaskKind::Map => &mut self.maps,
            TaskKind::Reduce => &mut self.reduces,
        }
    }
}

#[derive(Debug)]
struct Worker {
    shuffle_addr: String,
    storage_host: String,
    last_seen: Instant,
    alive: bool,
    cancels: Vec<AttemptId>,
    cleanups: Vec<JobId>,
    /// Task slots it declared (for the UI).
    slots: u32,
    /// GPUs it declared: GPU slots for the map tasks of jobs that want one.
    gpus: u32,
    /// The longest time between two of its heartbeats (a busy or stalled coordinator shows
    /// here first).
    max_gap: Duration,
    /// `host:directory` it runs in (empty: not said): a later registration from the same
    /// place replaces it.
    home: String,
    /// The highest heartbeat number it sent that was heard (0: none numbered).
    last_seq: u64,
    /// Attempts assigned to it in the answer to a numbered heartbeat, with that number, that
    /// no later heartbeat has listed yet (see [`State::heartbeat_numbered`]): only these are
    /// checked, not every attempt of the cluster.
    unconfirmed: Vec<(AttemptId, u64)>,
}

/// The live workers on one storage host and the task slots they declared between them.
#[derive(Debug, Clone, Copy, Default)]
struct LiveHost {
    workers: usize,
    /// Slots; a worker that has not declared any counts as one.
    slots: u32,
}

#[derive(Debug, Clone, Copy)]
struct Attempt {
    job: JobId,
    kind: TaskKind,
    index: u32,
    worker: WorkerId,
    local: bool,
    started: Instant,
}

/// Why an action the coordinator performed on storage failed: its error and causes, as
/// text, because it goes into the journal and into the job's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ActionFailed(pub String);

impl ActionFailed {
    /// The failure of `e`, causes included.
    pub fn of(e: &dyn std::error::Error) -> Self {
        ActionFailed(protocol::error_chain(e))
    }
}

/// Storage work the service must do outside the state lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Rename a reduce attempt's staged part file into place, then call [`State::commit_done`].
    Commit {
        /// The job.
        job: JobId,
        /// The reduce task.
        index: u32,
        /// The winning attempt.
        attempt: AttemptId,
        /// Its staged file.
        from: String,
        /// The final part file.
        to: String,
        /// Its staged state file and where it goes, for a job that keeps state (moved first).
        state: Option<(String, String)>,
    },
    /// Delete a losing attempt's staged file.
    DeleteStaged {
        /// The file.
        path: String,
    },
    /// Write the manifest and `_SUCCESS`, then call [`State::publish_done`].
    Publish {
        /// The job.
        job: JobId,
        /// Its output directory.
        output: String,
        /// The manifest to write.
        manifest: Manifest,
        /// Records skipped in skip mode, listed in `_skipped/`.
        skipped: Vec<SkippedRecord>,
    },
    /// Remove a failed or killed job's partial output.
    Discard {
        /// The output directory.
        output: String,
        /// Its number of part files.
        reducers: u32,
    },
}

/// The least time a dead worker stays listed (API, page, metrics) after its last heartbeat;
/// ten worker timeouts where that is longer (see [`State::expire_workers`]).
pub const KEEP_DEAD_WORKERS: Duration = Duration::from_secs(600);

/// Timeouts and thresholds of the state machine.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A worker silent this long is dead.
    pub worker: Duration,
    /// How long a job passes over a free slot for a map that another live worker holds
    /// locally before running it remotely (delay scheduling).
    pub locality_wait: Duration,
    /// A task gets a backup attempt only after running this long (and clearly longer than
    /// its finished peers).
    pub speculation_floor: Duration,
    /// A map output is declared lost (and the map re-run) after this many fetch-failure
    /// reports against it, from any reducers and their retries.
    pub fetch_failure_threshold: u32,
    /// Finished jobs kept listed (with their counters, duration and outcome); older ones are
    /// forgotten, oldest first.
    pub keep_jobs: usize,
    /// Bytes of output one job may write (its committed parts); a job that goes past it
    /// fails and its output is discarded. Zero: no limit.
    pub max_job_output: u64,
    /// Attempts of one task lost with their workers after which its job fails.
    pub max_lost_attempts: u32,
}

/// Attempts of one task lost with their workers after which its job fails, unless
/// configured: far more than the worker deaths a task meets by chance, so only a task that
/// takes down the workers it runs on reaches it.
pub const DEFAULT_MAX_LOST_ATTEMPTS: u32 = 10;

/// How long a task runs before it may get a backup attempt, unless configured. Short, as
/// Spark's `spark.speculation.minTaskRuntime` (100 ms) is: a backup also needs its phase to
/// have nothing left to start and the task to have run 1.5 times its finished peers' median,
/// and at most a tenth of a phase's running tasks have one, so a floor this low costs little
/// and covers stalls of a few seconds, which a floor of 10 s waited out.
pub const DEFAULT_SPECULATION_FLOOR: Duration = Duration::from_secs(1);

/// Finished jobs kept listed, unless configured.
pub const DEFAULT_KEEP_JOBS: usize = 1000;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            worker: Duration::from_secs(10),
            locality_wait: Duration::from_secs(3),
            speculation_floor: DEFAULT_SPECULATION_FLOOR,
            fetch_failure_threshold: DEFAULT_FETCH_FAILURE_THRESHOLD,
            keep_jobs: DEFAULT_KEEP_JOBS,
            max_lost_attempts: DEFAULT_MAX_LOST_ATTEMPTS,
            max_job_output: DEFAULT_MAX_JOB_OUTPUT,
        }
    }
}

/// Output one job may write, unless configured: 1 TiB.
pub const DEFAULT_MAX_JOB_OUTPUT: u64 = 1 << 40;

/// Fetch-failure reports after which a map output is declared lost, unless configured.
pub const DEFAULT_FETCH_FAILURE_THRESHOLD: u32 = 3;

/// The whole coordinator state.
#[derive(Debug)]
pub struct State {
    /// This incarnation's epoch.
    pub epoch: Epoch,
    timeouts: Timeouts,
    next_job: u64,
    next_worker: u64,
    next_attempt: u64,
    jobs: BTreeMap<JobId, Job>,
    workers: HashMap<WorkerId, Worker>,
    /// Live workers and their slots per storage host (placement's locality and backlogs,
    /// without a scan of every worker).
    live_hosts: HashMap<String, LiveHost>,
    /// When the tallies were last checked against the tasks.
    tallies_checked: Instant,
    /// A reading of the monotonic clock and the wall clock (ms since the Unix epoch) taken
    /// together, so that wall times follow from the `now` every method is given.
    wall_base: (Instant, u64),
    attempts: HashMap<AttemptId, Attempt>,
    /// Prometheus counters and histograms, fed as events happen.
    metrics: crate::metrics::Metrics,
    /// The master key jobs' shuffle secrets are derived from.
    shuffle_key: Vec<u8>,
    /// Journal records of changes not yet written (see [`State::take_records`]).
    outbox: Vec<Record>,
    /// When this incarnation started: maps recovered from the journal whose worker has not
    /// come back within the worker timeout of it run again.
    started: Instant,
    schedules: BTreeMap<String, Schedule>,
    backfills: BTreeMap<u64, Backfill>,
    next_backfill: u64,
}

/// Returns the staging path of a reduce attempt's part file.
pub fn staging_path(output: &str, attempt: AttemptId, partition: u32) -> String {
    Storage::join(
        &Storage::join(&Storage::join(output, TEMPORARY), &attempt.to_string()),
        &part_name(partition),
    )
}

impl State {
    /// Returns an empty state for `epoch`, starting `now`.
    pub fn new(epoch: Epoch, timeouts: Timeouts, now: Instant) -> Self {
        State {
            epoch,
            timeouts,
            next_job: 1,
            next_worker: 1,
            // Attempt ids carry the epoch in their high bits, so they stay unique across restarts.
            next_attempt: epoch.0 << 32,
            jobs: BTreeMap::new(),
            workers: HashMap::new(),
            live_hosts: HashMap::new(),
            tallies_checked: now,
            wall_base: (now, unix_ms_now()),
            attempts: HashMap::new(),
            metrics: crate::metrics::Metrics::new(),
            // Replaced by the persisted key when the coordinator serves (see `lib.rs`).
            shuffle_key: protocol::auth::new_shuffle_key().unwrap_or_default(),
            outbox: Vec::new(),
            started: now,
            schedules: BTreeMap::new(),
            backfills: BTreeMap::new(),
            next_backfill: 0,
        }
    }

    /// Returns a running job whose output is `output`, if any.
    pub fn job_writing(&self, output: &str) -> Option<JobId> {
        self.jobs
            .values()
            .find(|j| !j.state.is_over() && j.spec.output == output)
            .map(|j| j.id)
    }

    /// The wall-clock time of `now`, in ms since the Unix epoch.
    pub fn unix_ms(&self, now: Instant) -> u64 {
        let (base, base_ms) = self.wall_base;
        // Rounded down on both sides of the base, so that spans between times are exact.
        let nanos = match now.checked_duration_since(base) {
            Some(d) => d.as_nanos() as i128,
            None => -(base.duration_since(now).as_nanos() as i128),
        };
        (base_ms as i128 + nanos.div_euclid(1_000_000)).max(0) as u64
    }

    /// Adds a planned job (its splits, or its whole plan with the coverage it records).
    pub fn submit(&mut self, spec: JobSpec, plan: impl Into<Plan>, now: Instant) -> JobId {
        self.submit_with(spec, plan, None, now)
    }

    /// Adds a planned job that a schedule or backfill started.
    pub fn submit_with(
        &mut self,
        spec: JobSpec,
        plan: impl Into<Plan>,
        origin: Option<Origin>,
        now: Instant,
    ) -> JobId {
        let Plan {
            splits,
            coverage,
            not_read,
            ..
        } = plan.into();
        let id = JobId(self.next_job);
        self.next_job += 1;
        let at_ms = self.unix_ms(now);
        self.outbox.push(Record::Submitted {
            job: id,
            spec: spec.clone(),
            splits: splits.clone(),
            coverage: coverage.clone(),
            not_read: not_read.clone(),
            origin: origin.clone(),
            at_ms,
        });
        let job = Job {
            id,
            maps: splits.iter().map(|_| Task::new()).collect(),
            reduces: (0..spec.reducers).map(|_| Task::new()).collect(),
            spec,
            state: JobState::Running,
            splits,
            coverage,
            not_read,
            error: None,
            submitted: now,
            finished: None,
            submitted_ms: at_ms,
            finished_ms: 0,
            shuffle_workers: HashSet::new(),
            fetch_failures: 0,
            locality_wait_since: None,
            recovered_maps: 0,
            worker_failures: HashMap::new(),
            durations: HashMap::new(),
            backups: 0,
            rebalanced: 0,
            attempts: 0,
            failed_attempts: 0,
            killed_attempts: 0,
            kept_outputs: 0,
            lost_outputs: 0,
            skipped: Vec::new(),
            listed: Vec::new(),
            last_map_end: None,
            origin,
            history: Vec::new(),
            tally: tally::Tally::stale(),
            medians: [(0, None); 2],
            counters_cache: std::cell::RefCell::new(None),
        };
        tracing::info!(job = %id, name = %job.spec.job, maps = job.maps.len(), reduces = job.reduces.len(), "job submitted");
        self.jobs.insert(id, job);
        id
    }

    /// Declares workers silent past the timeout dead: their attempts fail, and map outputs
    /// on their disks that a running job still needs are produced again.
    /// The job binaries that unfinished jobs run (kept however old they are).
    pub fn binaries_in_use(&self) -> std::collections::HashSet<String> {
        self.jobs
            .values()
            .filter(|j| !j.state.is_over() && !j.spec.binary.is_empty())
            .map(|j| j.spec.binary.clone())
            .collect()
    }

    /// The shuffle secret of `job` (also what its attempt logs are opened with).
    pub fn job_secret(&self, job: JobId) -> Vec<u8> {
        protocol::auth::job_secret(&self.shuffle_key, job.0)
    }

    /// Derives jobs' shuffle secrets from `key` (kept across restarts by the caller).
    pub fn set_shuffle_key(&mut self, key: Vec<u8>) {
        self.shuffle_key = key;
    }

    /// The last (up to 1024) scheduling latencies, in seconds, for `/metrics`.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Forgets the oldest finished jobs beyond [`Timeouts::keep_jobs`] (journaled, so they stay
    /// forgotten after a restart). Returns how many were forgotten.
    pub fn prune_history(&mut self) -> usize {
        let finished: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state.is_over())
            .map(|(id, _)| *id)
            .collect();
        let excess = finished.len().saturating_sub(self.timeouts.keep_jobs);
        let mut oldest = finished;
        oldest.sort_unstable();
        for job in oldest.into_iter().take(excess) {
            self.forget_job(job);
            self.outbox.push(Record::Forgotten { job });
        }
        excess
    }
}

#[cfg(test)]
mod tests;

/// The wall clock now, in ms since the Unix epoch.
pub(crate) fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
