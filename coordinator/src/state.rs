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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use dfs_client::Storage;
use jobs::output::{part_name, Manifest, PartInfo, SkippedRecord, TEMPORARY};
use jobs::plan::PlannedSplit;
use jobs::sdk::Counters;
use protocol::pb;
use protocol::{AttemptId, Epoch, FailureKind, JobId, JobSpec, WorkerId};

use crate::journal::Record;

/// Map or reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// A map task.
    Map,
    /// A reduce task.
    Reduce,
}

impl TaskKind {
    /// `map` or `reduce`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Map => "map",
            TaskKind::Reduce => "reduce",
        }
    }
}

/// Where a job is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Tasks are running or waiting.
    Running,
    /// Every reduce committed; publishing the manifest and `_SUCCESS`.
    Publishing,
    /// Output committed.
    Succeeded,
    /// Failed; output discarded.
    Failed,
    /// Killed by a user; output discarded.
    Killed,
}

impl JobState {
    /// The state's name for people: running, succeeded, failed or killed.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running | JobState::Publishing => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Killed => "killed",
        }
    }

    fn is_over(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Killed
        )
    }

    fn to_pb(self) -> pb::JobState {
        match self {
            JobState::Running | JobState::Publishing => pb::JobState::Running,
            JobState::Succeeded => pb::JobState::Succeeded,
            JobState::Failed => pb::JobState::Failed,
            JobState::Killed => pb::JobState::Killed,
        }
    }
}

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
    /// Skip mode: panics per input offset, and the offsets to skip.
    panics: BTreeMap<u64, u32>,
    skip: Vec<u64>,
    /// Workers on which an attempt of this task failed: a retry goes elsewhere if it can.
    failed_on: Vec<WorkerId>,
    /// Fetch-failure reports against this map's current output.
    fetch_reports: u32,
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
            panics: BTreeMap::new(),
            skip: Vec::new(),
            failed_on: Vec::new(),
            fetch_reports: 0,
            ready: None,
        }
    }
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
    maps: Vec<Task>,
    reduces: Vec<Task>,
    error: Option<String>,
    submitted: Instant,
    finished: Option<Instant>,
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
    /// `running`, `succeeded`, `failed` or `cancelled`.
    pub outcome: &'static str,
    /// Why it failed.
    pub error: String,
    /// Whether it ran beside its data (maps).
    pub local: bool,
}

/// A worker that failed this many attempts of a job is given no more of its tasks.
pub const EXCLUDE_AFTER: u32 = 3;

impl Job {
    fn maps_done(&self) -> bool {
        self.maps.iter().all(|t| t.state == TaskState::Done)
    }

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
    /// Returns an empty state for `epoch`.
    pub fn new(epoch: Epoch, timeouts: Timeouts) -> Self {
        State {
            epoch,
            timeouts,
            next_job: 1,
            next_worker: 1,
            // Attempt ids carry the epoch in their high bits, so they stay unique across restarts.
            next_attempt: epoch.0 << 32,
            jobs: BTreeMap::new(),
            workers: HashMap::new(),
            attempts: HashMap::new(),
            metrics: crate::metrics::Metrics::new(),
            // Replaced by the persisted key when the coordinator serves (see `lib.rs`).
            shuffle_key: protocol::auth::new_shuffle_key().unwrap_or_default(),
            outbox: Vec::new(),
            started: Instant::now(),
            schedules: BTreeMap::new(),
            backfills: BTreeMap::new(),
            next_backfill: 0,
        }
    }

    /// Registers a worker and returns its new id.
    pub fn register_worker(
        &mut self,
        shuffle_addr: String,
        storage_host: String,
        now: Instant,
    ) -> WorkerId {
        let id = WorkerId(self.next_worker);
        self.next_worker += 1;
        self.workers.insert(
            id,
            Worker {
                shuffle_addr,
                storage_host,
                last_seen: now,
                alive: true,
                cancels: Vec::new(),
                cleanups: Vec::new(),
                slots: 0,
                gpus: 0,
                max_gap: Duration::ZERO,
                home: String::new(),
            },
        );
        id
    }

    /// Records the task slots and GPUs a worker declared.
    pub fn set_worker_slots(&mut self, worker: WorkerId, slots: u32, gpus: u32) {
        if let Some(w) = self.workers.get_mut(&worker) {
            w.slots = slots;
            w.gpus = gpus;
        }
    }

    /// Returns true if `worker` is registered, alive, and speaks this epoch.
    pub fn is_current(&self, worker: WorkerId, epoch: Epoch) -> bool {
        epoch == self.epoch && self.workers.get(&worker).is_some_and(|w| w.alive)
    }

    /// Returns a running job whose output is `output`, if any.
    pub fn job_writing(&self, output: &str) -> Option<JobId> {
        self.jobs
            .values()
            .find(|j| !j.state.is_over() && j.spec.output == output)
            .map(|j| j.id)
    }

    /// Adds a planned job.
    pub fn submit(&mut self, spec: JobSpec, splits: Vec<PlannedSplit>, now: Instant) -> JobId {
        self.submit_with(spec, splits, None, now)
    }

    /// Adds a planned job that a schedule or backfill started.
    pub fn submit_with(
        &mut self,
        spec: JobSpec,
        splits: Vec<PlannedSplit>,
        origin: Option<Origin>,
        now: Instant,
    ) -> JobId {
        let id = JobId(self.next_job);
        self.next_job += 1;
        self.outbox.push(Record::Submitted {
            job: id,
            spec: spec.clone(),
            splits: splits.clone(),
            origin: origin.clone(),
        });
        let job = Job {
            id,
            maps: splits.iter().map(|_| Task::new()).collect(),
            reduces: (0..spec.reducers).map(|_| Task::new()).collect(),
            spec,
            state: JobState::Running,
            splits,
            error: None,
            submitted: now,
            finished: None,
            shuffle_workers: HashSet::new(),
            fetch_failures: 0,
            locality_wait_since: None,
            recovered_maps: 0,
            worker_failures: HashMap::new(),
            durations: HashMap::new(),
            backups: 0,
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
        };
        tracing::info!(job = %id, name = %job.spec.job, maps = job.maps.len(), reduces = job.reduces.len(), "job submitted");
        self.jobs.insert(id, job);
        id
    }

    /// Handles a heartbeat: returns new assignments (at most `free` of them), attempts to
    /// cancel, and finished jobs whose shuffle files the worker may delete.
    pub fn heartbeat(
        &mut self,
        worker: WorkerId,
        free: u32,
        now: Instant,
    ) -> pb::HeartbeatResponse {
        let Some(w) = self.workers.get_mut(&worker) else {
            return pb::HeartbeatResponse::default();
        };
        w.max_gap = w.max_gap.max(now.saturating_duration_since(w.last_seen));
        w.last_seen = now;
        let cancel_attempts = std::mem::take(&mut w.cancels)
            .into_iter()
            .map(|a| a.0)
            .collect();
        let finished_jobs = std::mem::take(&mut w.cleanups)
            .into_iter()
            .map(|j| j.0)
            .collect();
        let assignments = self.assign(worker, free, now);
        pb::HeartbeatResponse {
            assignments,
            cancel_attempts,
            finished_jobs,
        }
    }

    /// Picks tasks for `free` slots of `worker`: data-local maps first; maps that no live
    /// worker holds locally next; maps another worker holds only after the job has waited
    /// `locality_wait` for it (delay scheduling); reduces once every map is done.
    fn assign(&mut self, worker: WorkerId, mut free: u32, now: Instant) -> Vec<pb::TaskAssignment> {
        let mut out = Vec::new();
        let host = self.workers[&worker].storage_host.clone();
        // GPU slots: where any live worker has GPUs, the maps of jobs that want one run
        // only in free GPU slots; on a cluster without GPUs they run like any task.
        let gpu_cluster = self.workers.values().any(|w| w.alive && w.gpus > 0);
        let mut free_gpus = self.workers[&worker].gpus.saturating_sub(
            self.attempts
                .values()
                .filter(|a| {
                    a.worker == worker
                        && a.kind == TaskKind::Map
                        && self.jobs.get(&a.job).is_some_and(|j| j.spec.gpu)
                })
                .count() as u32,
        );
        // Higher priority first (backfills last), then oldest first.
        let mut job_ids: Vec<(i32, JobId)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Running)
            .map(|(id, j)| (-j.spec.priority, *id))
            .collect();
        job_ids.sort_unstable();
        let job_ids: Vec<JobId> = job_ids.into_iter().map(|(_, id)| id).collect();
        for id in job_ids {
            if free == 0 {
                break;
            }
            let wait = self.timeouts.locality_wait;
            let live: Vec<WorkerId> = self
                .workers
                .iter()
                .filter(|(_, w)| w.alive)
                .map(|(id, _)| *id)
                .collect();
            let job = self.jobs.get_mut(&id).expect("listed job");
            let excluded =
                |w: &WorkerId| job.worker_failures.get(w).copied().unwrap_or(0) >= EXCLUDE_AFTER;
            // Exclusion stops below the attempt cap; if every live worker is excluded the job
            // still runs, and fails at the cap with its last error.
            if excluded(&worker) && !live.iter().all(excluded) {
                continue;
            }
            // Only workers that may run this job's tasks count for delay scheduling.
            let job_hosts: HashSet<&String> = live
                .iter()
                .filter(|w| !excluded(w))
                .filter_map(|w| self.workers.get(w).map(|w| &w.storage_host))
                .collect();
            let (mut local, mut anywhere, mut elsewhere) = (Vec::new(), Vec::new(), Vec::new());
            // A task that failed on this worker goes elsewhere while some other worker may run it.
            let avoid = |t: &Task| {
                t.failed_on.contains(&worker)
                    && live
                        .iter()
                        .any(|w| !excluded(w) && !t.failed_on.contains(w))
            };
            let gpu_maps = gpu_cluster && job.spec.gpu;
            for (i, t) in job.maps.iter().enumerate() {
                if t.state != TaskState::Pending || avoid(t) || (gpu_maps && free_gpus == 0) {
                    continue;
                }
                let hosts = &job.splits[i].hosts;
                if hosts.contains(&host) {
                    local.push((TaskKind::Map, i as u32, true));
                } else if hosts.iter().any(|h| job_hosts.contains(h)) {
                    elsewhere.push((TaskKind::Map, i as u32, false));
                } else {
                    anywhere.push((TaskKind::Map, i as u32, false));
                }
            }
            let mut picks = local;
            if !picks.is_empty() {
                job.locality_wait_since = None;
            }
            picks.append(&mut anywhere);
            if picks.len() < free as usize && !elsewhere.is_empty() {
                let since = *job.locality_wait_since.get_or_insert(now);
                if now.duration_since(since) >= wait {
                    picks.append(&mut elsewhere);
                }
            }
            // Reduces start when every map is done and its output has a known location.
            if job.maps_done()
                && job
                    .maps
                    .iter()
                    .all(|t| t.winner.as_ref().is_some_and(|w| w.worker.is_some()))
            {
                picks.extend(
                    job.reduces
                        .iter()
                        .enumerate()
                        .filter(|(_, t)| t.state == TaskState::Pending && !avoid(t))
                        .map(|(i, _)| (TaskKind::Reduce, i as u32, true)),
                );
            }
            picks.truncate(free as usize);
            if gpu_maps {
                let mut room = free_gpus;
                picks.retain(|(kind, _, _)| {
                    *kind == TaskKind::Reduce || room.checked_sub(1).map(|r| room = r).is_some()
                });
                free_gpus = room;
            }
            if picks.len() < free as usize && job.spec.speculation && !gpu_maps {
                let backups = self.stragglers(id, worker, now, free as usize - picks.len());
                self.jobs.get_mut(&id).expect("listed job").backups += backups.len() as u64;
                self.metrics.backups_started(backups.len() as u64);
                picks.extend(backups);
            }
            for (kind, index, local) in picks {
                out.push(self.start_attempt(id, kind, index, worker, local, now));
                free -= 1;
            }
        }
        out
    }

    /// Returns up to `room` running tasks of a job that deserve a backup attempt on `worker`:
    /// their phase has nothing left to start, they have run longer than the floor and more
    /// than 1.5 times the median of their finished peers, they have no backup yet, and they
    /// run elsewhere. Backups are capped at a tenth of the phase's running tasks (at least one).
    fn stragglers(
        &self,
        job_id: JobId,
        worker: WorkerId,
        now: Instant,
        room: usize,
    ) -> Vec<(TaskKind, u32, bool)> {
        let job = &self.jobs[&job_id];
        let mut out = Vec::new();
        for kind in [TaskKind::Map, TaskKind::Reduce] {
            let tasks = match kind {
                TaskKind::Map => &job.maps,
                TaskKind::Reduce => &job.reduces,
            };
            if tasks.iter().any(|t| t.state == TaskState::Pending) {
                continue;
            }
            let Some(median) = job.durations.get(&kind).and_then(|d| {
                let mut d = d.clone();
                d.sort();
                d.get(d.len() / 2).copied()
            }) else {
                continue;
            };
            let running: Vec<(usize, &Task)> = tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.state == TaskState::Running)
                .collect();
            let cap = (running.len() / 10).max(1);
            let mut backups = running.iter().filter(|(_, t)| t.running.len() > 1).count();
            for (i, t) in running {
                if out.len() >= room || backups >= cap {
                    break;
                }
                let [only] = t.running[..] else { continue };
                let Some(a) = self.attempts.get(&only) else {
                    continue;
                };
                let ran = now.duration_since(a.started);
                if a.worker != worker
                    && ran >= self.timeouts.speculation_floor
                    && ran.as_secs_f64() > 1.5 * median.as_secs_f64()
                {
                    tracing::info!(job = %job_id, task = kind.name(), index = i, attempt = %only, ran = ?ran, ?median, "starting a backup attempt for a straggler");
                    out.push((kind, i as u32, false));
                    backups += 1;
                }
            }
        }
        out
    }

    fn start_attempt(
        &mut self,
        job_id: JobId,
        kind: TaskKind,
        index: u32,
        worker: WorkerId,
        local: bool,
        now: Instant,
    ) -> pb::TaskAssignment {
        self.next_attempt += 1;
        let attempt = AttemptId(self.next_attempt);
        self.attempts.insert(
            attempt,
            Attempt {
                job: job_id,
                kind,
                index,
                worker,
                local,
                started: now,
            },
        );
        let map_outputs = if kind == TaskKind::Reduce {
            self.map_outputs(job_id)
        } else {
            Vec::new()
        };
        let job = self.jobs.get_mut(&job_id).expect("assigning a known job");
        let (submitted, last_map_end) = (job.submitted, job.last_map_end);
        let task = &mut job.tasks_mut(kind)[index as usize];
        if task.state == TaskState::Pending {
            // Scheduling latency: from when the task could run to its attempt's start.
            let mut ready = task.ready.unwrap_or(submitted);
            if kind == TaskKind::Reduce {
                ready = ready.max(last_map_end.unwrap_or(submitted));
            }
            self.metrics
                .attempt_scheduled(now.saturating_duration_since(ready));
        }
        task.state = TaskState::Running;
        task.running.push(attempt);
        job.attempts += 1;
        job.history.push(AttemptRecord {
            attempt,
            kind,
            index,
            worker,
            started: now,
            finished: None,
            outcome: "running",
            error: String::new(),
            local,
        });
        if kind == TaskKind::Map {
            job.shuffle_workers.insert(worker);
        }
        tracing::debug!(job = %job_id, %attempt, kind = kind.name(), index, %worker, "attempt assigned");
        let split = (kind == TaskKind::Map).then(|| {
            let s = &job.splits[index as usize];
            pb::InputSplit {
                path: s.split.path.clone(),
                start: s.split.start,
                end: s.split.end,
                file_len: s.file_len,
            }
        });
        pb::TaskAssignment {
            attempt_id: attempt.0,
            job_id: job_id.0,
            kind: match kind {
                TaskKind::Map => pb::TaskKind::Map,
                TaskKind::Reduce => pb::TaskKind::Reduce,
            } as i32,
            index,
            spec: Some(job.spec.to_pb()),
            split,
            map_count: job.maps.len() as u32,
            staging_path: if kind == TaskKind::Reduce {
                staging_path(&job.spec.output, attempt, index)
            } else {
                String::new()
            },
            map_outputs,
            shuffle_secret: protocol::auth::job_secret(&self.shuffle_key, job_id.0),
            skip_offsets: if kind == TaskKind::Map {
                job.maps[index as usize].skip.clone()
            } else {
                Vec::new()
            },
        }
    }

    fn map_outputs(&self, job_id: JobId) -> Vec<pb::MapOutputLocation> {
        let job = &self.jobs[&job_id];
        job.maps
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let w = t.winner.as_ref()?;
                let worker = w.worker?;
                Some(pb::MapOutputLocation {
                    map_index: i as u32,
                    attempt_id: w.attempt.0,
                    shuffle_addr: self
                        .workers
                        .get(&worker)
                        .map(|w| w.shuffle_addr.clone())
                        .unwrap_or_default(),
                    worker_id: worker.0,
                })
            })
            .collect()
    }

    /// Adds the records a map attempt listed as skipped, if the attempt won its map.
    pub fn add_listed(&mut self, attempt: AttemptId, records: Vec<SkippedRecord>) {
        let Some((&id, job)) = self.jobs.iter_mut().find(|(_, j)| {
            j.maps
                .iter()
                .any(|t| t.winner.as_ref().is_some_and(|w| w.attempt == attempt))
        }) else {
            return;
        };
        let fresh: Vec<SkippedRecord> = records
            .into_iter()
            .filter(|r| {
                !job.listed
                    .iter()
                    .any(|l| l.path == r.path && l.offset == r.offset)
            })
            .collect();
        if fresh.is_empty() {
            return;
        }
        job.listed.extend(fresh.iter().cloned());
        self.outbox.push(Record::Listed {
            job: id,
            records: fresh,
        });
    }

    /// Returns true if `attempt` is the winning attempt of a task of a job still on record.
    pub fn is_winner(&self, attempt: AttemptId) -> bool {
        self.jobs
            .values()
            .flat_map(|j| j.maps.iter().chain(j.reduces.iter()))
            .any(|t| t.winner.as_ref().is_some_and(|w| w.attempt == attempt))
    }

    /// Ends an attempt: forgets it and takes it off its task's running list. Returns it if it
    /// was known and its job still exists.
    fn finish_attempt(
        &mut self,
        attempt: AttemptId,
        outcome: &'static str,
        error: &str,
        now: Instant,
    ) -> Option<Attempt> {
        let a = self.attempts.remove(&attempt)?;
        let job = self.jobs.get_mut(&a.job)?;
        if let Some(t) = job.tasks_mut(a.kind).get_mut(a.index as usize) {
            t.ready = Some(now);
        }
        if a.kind == TaskKind::Map {
            job.last_map_end = Some(now);
        }
        if let Some(r) = job.history.iter_mut().rev().find(|r| r.attempt == attempt) {
            r.finished = Some(now);
            r.outcome = outcome;
            r.error = error.to_string();
        }
        job.tasks_mut(a.kind)[a.index as usize]
            .running
            .retain(|x| *x != attempt);
        Some(a)
    }

    /// Handles a successful attempt. A late or duplicate report changes nothing (a losing
    /// reduce's staged file is deleted).
    pub fn report_success(
        &mut self,
        attempt: AttemptId,
        counters: Counters,
        part: Option<(u64, u32)>,
        now: Instant,
    ) -> Vec<Action> {
        let Some(a) = self.finish_attempt(attempt, "succeeded", "", now) else {
            return Vec::new();
        };
        let job = self
            .jobs
            .get_mut(&a.job)
            .expect("finish_attempt checked the job");
        let output = job.spec.output.clone();
        let job_running = job.state == JobState::Running;
        let task = &mut job.tasks_mut(a.kind)[a.index as usize];
        let lost = !job_running
            || task.state == TaskState::Done
            || matches!(task.state, TaskState::Committing(_));
        if lost {
            tracing::debug!(%attempt, "late or duplicate success ignored");
            return match a.kind {
                TaskKind::Reduce => vec![Action::DeleteStaged {
                    path: staging_path(&output, attempt, a.index),
                }],
                TaskKind::Map => Vec::new(),
            };
        }
        let part = part.map(|(bytes, crc32)| PartInfo {
            name: part_name(a.index),
            bytes,
            crc32,
        });
        if a.kind == TaskKind::Map {
            self.outbox.push(Record::MapDone {
                job: a.job,
                index: a.index,
                attempt,
                counters: counters.clone(),
                local: a.local,
            });
        }
        self.metrics
            .attempt_won(a.kind.name(), now.duration_since(a.started), &counters);
        task.winner = Some(Winner {
            attempt,
            worker: Some(a.worker),
            counters,
            local: a.local,
            part,
            replaced_at: None,
        });
        // The first to finish wins; a backup or original still running is killed.
        for other in &task.running {
            if let Some(w) = self
                .attempts
                .get(other)
                .and_then(|o| self.workers.get_mut(&o.worker))
            {
                w.cancels.push(*other);
            }
        }
        let state = match a.kind {
            TaskKind::Map => TaskState::Done,
            TaskKind::Reduce => TaskState::Committing(attempt),
        };
        task.state = state;
        job.durations
            .entry(a.kind)
            .or_default()
            .push(now.duration_since(a.started));
        let written: u64 = job
            .reduces
            .iter()
            .filter_map(|t| t.winner.as_ref()?.part.as_ref().map(|p| p.bytes))
            .sum();
        let quota = self.timeouts.max_job_output;
        if a.kind == TaskKind::Reduce && quota > 0 && written > quota {
            let mut actions = vec![Action::DeleteStaged {
                path: staging_path(&output, attempt, a.index),
            }];
            actions.extend(self.end_job(
                a.job,
                JobState::Failed,
                format!(
                    "output quota exceeded: the job wrote {written} bytes, more than the {quota} one job may write (coordinator --max-job-output)"
                ),
                now,
            ));
            return actions;
        }
        match a.kind {
            TaskKind::Map => Vec::new(),
            TaskKind::Reduce => {
                vec![Action::Commit {
                    job: a.job,
                    index: a.index,
                    attempt,
                    from: staging_path(&output, attempt, a.index),
                    to: jobs::output::committed_path(&output, a.index),
                }]
            }
        }
    }

    /// Records the outcome of a commit rename; when the last reduce commits, returns the
    /// action publishing the job.
    pub fn commit_done(
        &mut self,
        job_id: JobId,
        index: u32,
        attempt: AttemptId,
        result: Result<(), String>,
        now: Instant,
    ) -> Vec<Action> {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Vec::new();
        };
        let task = &mut job.reduces[index as usize];
        if task.state != TaskState::Committing(attempt) {
            return Vec::new();
        }
        match result {
            Ok(()) => {
                task.state = TaskState::Done;
                if let Some(w) = &task.winner {
                    self.outbox.push(Record::ReduceDone {
                        job: job_id,
                        index,
                        attempt,
                        counters: w.counters.clone(),
                        part: w.part.clone().unwrap_or_else(|| PartInfo {
                            name: part_name(index),
                            bytes: 0,
                            crc32: 0,
                        }),
                    });
                }
            }
            Err(e) => {
                task.winner = None;
                task.state = TaskState::Pending;
                return self.count_failure(
                    job_id,
                    TaskKind::Reduce,
                    index,
                    (attempt, None),
                    &format!("commit failed: {e}"),
                    now,
                );
            }
        }
        if job.state == JobState::Running && job.reduces.iter().all(|t| t.state == TaskState::Done)
        {
            return vec![Self::start_publishing(job, &mut self.outbox)];
        }
        Vec::new()
    }

    fn start_publishing(job: &mut Job, outbox: &mut Vec<Record>) -> Action {
        job.state = JobState::Publishing;
        outbox.push(Record::Publishing { job: job.id });
        let parts = job
            .reduces
            .iter()
            .filter_map(|t| t.winner.as_ref()?.part.clone())
            .collect();
        Action::Publish {
            job: job.id,
            output: job.spec.output.clone(),
            manifest: Manifest {
                job: job.spec.job.clone(),
                parts,
            },
            skipped: [job.skipped.clone(), job.listed.clone()].concat(),
        }
    }

    /// Records the outcome of publishing a job's output.
    pub fn publish_done(
        &mut self,
        job_id: JobId,
        result: Result<(), String>,
        now: Instant,
    ) -> Vec<Action> {
        match result {
            Ok(()) => {
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.state = JobState::Succeeded;
                    job.finished = Some(now);
                    self.metrics.job_ended("succeeded");
                    self.outbox.push(Record::Ended {
                        job: job_id,
                        state: "succeeded".into(),
                        error: None,
                    });
                    tracing::info!(job = %job_id, "job succeeded");
                }
                self.release_shuffle(job_id);
                Vec::new()
            }
            Err(e) => self.end_job(
                job_id,
                JobState::Failed,
                format!("cannot publish output: {e}"),
                now,
            ),
        }
    }

    /// Handles a failed attempt.
    pub fn report_failure(
        &mut self,
        attempt: AttemptId,
        kind: FailureKind,
        error: &str,
        bad_record: Option<u64>,
        now: Instant,
    ) -> Vec<Action> {
        let outcome = if kind == FailureKind::Cancelled {
            "cancelled"
        } else {
            "failed"
        };
        let Some((a, mut actions)) = self.end_attempt(attempt, outcome, error, now) else {
            return Vec::new();
        };
        let job = self
            .jobs
            .get_mut(&a.job)
            .expect("finish_attempt checked the job");
        let job_running = job.state == JobState::Running;
        if job_running && kind != FailureKind::Cancelled {
            job.failed_attempts += 1;
            self.metrics.attempt_failed();
        }
        let task = &mut job.tasks_mut(a.kind)[a.index as usize];
        if !job_running || task.state != TaskState::Running {
            return actions;
        }
        tracing::warn!(job = %a.job, %attempt, kind = ?kind, task = a.kind.name(), index = a.index, %error, "attempt failed");

        match kind {
            FailureKind::Cancelled | FailureKind::LostInput => {
                if task.running.is_empty() {
                    task.state = TaskState::Pending;
                }
            }
            FailureKind::Fatal => {
                let msg = format!(
                    "{} {} {} on {} failed: {}",
                    a.kind.name(),
                    a.index,
                    attempt,
                    a.worker,
                    error
                );
                actions.extend(self.end_job(a.job, JobState::Failed, msg, now));
            }
            FailureKind::Retryable => {
                if let (TaskKind::Map, Some(offset)) = (a.kind, bad_record) {
                    // Skip mode: a record the map panicked on twice is skipped from now on.
                    let map = &mut job.maps[a.index as usize];
                    let n = map.panics.entry(offset).or_default();
                    *n += 1;
                    if *n >= 2 && (job.skipped.len() as u64) < job.spec.max_bad_records {
                        tracing::warn!(job = %a.job, map = a.index, offset, "skipping a record the map panicked on twice");
                        map.skip.push(offset);
                        map.skip.sort_unstable();
                        job.skipped.push(SkippedRecord {
                            path: job.splits[a.index as usize].split.path.clone(),
                            offset,
                            message: error.to_string(),
                        });
                    }
                }
                actions.extend(self.count_failure(
                    a.job,
                    a.kind,
                    a.index,
                    (attempt, Some(a.worker)),
                    error,
                    now,
                ))
            }
        }
        actions
    }

    /// Ends an attempt that did not succeed with `outcome`: returns it, with the removal of
    /// a reduce attempt's staged part file. None if it was over already.
    fn end_attempt(
        &mut self,
        attempt: AttemptId,
        outcome: &'static str,
        error: &str,
        now: Instant,
    ) -> Option<(Attempt, Vec<Action>)> {
        let a = self.finish_attempt(attempt, outcome, error, now)?;
        let mut actions = Vec::new();
        if a.kind == TaskKind::Reduce {
            let output = &self
                .jobs
                .get(&a.job)
                .expect("finish_attempt checked the job")
                .spec
                .output;
            actions.push(Action::DeleteStaged {
                path: staging_path(output, attempt, a.index),
            });
        }
        Some((a, actions))
    }

    /// Handles an attempt lost with its worker (the worker died, or a new one registered from
    /// its directory): the attempt is *killed*, not failed (Hadoop's distinction), so it does
    /// not count toward the job's `--max-attempts`; only a task that loses
    /// [`Timeouts::max_lost_attempts`] attempts this way fails its job.
    pub fn report_lost(&mut self, attempt: AttemptId, error: &str, now: Instant) -> Vec<Action> {
        let Some((a, mut actions)) = self.end_attempt(attempt, "killed", error, now) else {
            return Vec::new();
        };
        let max_lost = self.timeouts.max_lost_attempts.max(1);
        let job = self
            .jobs
            .get_mut(&a.job)
            .expect("finish_attempt checked the job");
        let job_running = job.state == JobState::Running;
        if job_running {
            job.killed_attempts += 1;
        }
        let task = &mut job.tasks_mut(a.kind)[a.index as usize];
        if !job_running || task.state != TaskState::Running {
            return actions;
        }
        tracing::warn!(job = %a.job, %attempt, task = a.kind.name(), index = a.index, %error, "attempt lost with its worker");
        task.lost += 1;
        if task.lost >= max_lost {
            let msg = format!(
                "{} {} lost {} attempts with their workers (--max-lost-attempts {max_lost}): a task that takes down the workers it runs on; last: {attempt} on {}: {error}",
                a.kind.name(),
                a.index,
                task.lost,
                a.worker
            );
            actions.extend(self.end_job(a.job, JobState::Failed, msg, now));
        } else if task.running.is_empty() {
            task.state = TaskState::Pending;
            task.ready = Some(now);
        }
        actions
    }

    fn count_failure(
        &mut self,
        job_id: JobId,
        kind: TaskKind,
        index: u32,
        (attempt, worker): (AttemptId, Option<WorkerId>),
        error: &str,
        now: Instant,
    ) -> Vec<Action> {
        let job = self.jobs.get_mut(&job_id).expect("failure of a known job");
        let max = job.spec.max_attempts;
        if let Some(w) = worker {
            let n = job.worker_failures.entry(w).or_default();
            *n += 1;
            if *n == EXCLUDE_AFTER {
                tracing::warn!(job = %job_id, worker = %w, failures = *n, "worker excluded from the job");
            }
        }
        let task = &mut job.tasks_mut(kind)[index as usize];
        task.failures += 1;
        task.failed_on.extend(worker);
        if task.failures >= max {
            let on = worker.map(|w| format!(" on {w}")).unwrap_or_default();
            let msg = format!(
                "{} {index} failed {} attempts; last: {attempt}{on}: {error}",
                kind.name(),
                task.failures
            );
            return self.end_job(job_id, JobState::Failed, msg, now);
        }
        if task.running.is_empty() {
            task.state = TaskState::Pending;
        }
        Vec::new()
    }

    /// Handles a reducer's report that a map output could not be fetched: the map runs again
    /// (if the lost output is still the one on record).
    pub fn fetch_failure(&mut self, reducer: AttemptId, map_index: u32, map_attempt: AttemptId) {
        let Some((job_id, reducer_started)) =
            self.attempts.get(&reducer).map(|a| (a.job, a.started))
        else {
            return;
        };
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return;
        };
        job.fetch_failures += 1;
        self.metrics.fetch_failed();
        let Some(task) = job.maps.get_mut(map_index as usize) else {
            return;
        };
        if !task.winner.as_ref().is_some_and(|w| {
            w.attempt == map_attempt && w.replaced_at.is_none_or(|t| t <= reducer_started)
        }) || job.state != JobState::Running
        {
            return;
        }
        task.fetch_reports += 1;
        if task.fetch_reports < self.timeouts.fetch_failure_threshold.max(1) {
            tracing::info!(job = %job_id, map = map_index, attempt = %map_attempt, reports = task.fetch_reports, "map output fetch failure reported");
        } else {
            task.fetch_reports = 0;
            tracing::warn!(job = %job_id, map = map_index, attempt = %map_attempt, "map output lost; running the map again");
            task.winner = None;
            task.state = TaskState::Pending;
            task.ready = Some(Instant::now());
            job.lost_outputs += 1;
            self.metrics.map_output_lost();
            self.outbox.push(Record::MapLost {
                job: job_id,
                index: map_index,
            });
        }
    }

    /// Kills a job; returns None if it was already over.
    pub fn kill(&mut self, job_id: JobId, now: Instant) -> Option<Vec<Action>> {
        self.kill_with(job_id, "killed by request".into(), now)
    }

    /// Kills a job, saying why; returns None if it was already over.
    pub fn kill_with(&mut self, job_id: JobId, why: String, now: Instant) -> Option<Vec<Action>> {
        let job = self.jobs.get(&job_id)?;
        if job.state.is_over() {
            return None;
        }
        Some(self.end_job(job_id, JobState::Killed, why, now))
    }

    fn end_job(
        &mut self,
        job_id: JobId,
        state: JobState,
        error: String,
        now: Instant,
    ) -> Vec<Action> {
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Vec::new();
        };
        if job.state.is_over() {
            return Vec::new();
        }
        let name = if state == JobState::Killed {
            "killed"
        } else {
            "failed"
        };
        self.outbox.push(Record::Ended {
            job: job_id,
            state: name.into(),
            error: Some(error.clone()),
        });
        tracing::warn!(job = %job_id, ?state, %error, "job ended");
        self.metrics.job_ended(name);
        job.state = state;
        job.error = Some(error);
        job.finished = Some(now);
        let running: Vec<AttemptId> = job
            .maps
            .iter()
            .chain(job.reduces.iter())
            .flat_map(|t| t.running.iter().copied())
            .collect();
        let (output, reducers) = (job.spec.output.clone(), job.spec.reducers);
        for attempt in running {
            if let Some(a) = self.attempts.get(&attempt) {
                if let Some(w) = self.workers.get_mut(&a.worker) {
                    w.cancels.push(attempt);
                }
            }
        }
        self.release_shuffle(job_id);
        vec![Action::Discard { output, reducers }]
    }

    fn release_shuffle(&mut self, job_id: JobId) {
        if let Some(job) = self.jobs.get(&job_id) {
            for w in &job.shuffle_workers {
                if let Some(w) = self.workers.get_mut(w) {
                    w.cleanups.push(job_id);
                }
            }
        }
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
            .filter(|(_, j)| {
                matches!(
                    j.state,
                    JobState::Succeeded | JobState::Failed | JobState::Killed
                )
            })
            .map(|(id, _)| *id)
            .collect();
        let excess = finished.len().saturating_sub(self.timeouts.keep_jobs);
        let mut oldest = finished;
        oldest.sort_unstable();
        for job in oldest.into_iter().take(excess) {
            self.jobs.remove(&job);
            self.outbox.push(Record::Forgotten { job });
        }
        excess
    }

    pub fn expire_workers(&mut self, now: Instant) -> Vec<Action> {
        self.prune_history();
        let dead: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.alive && now.duration_since(w.last_seen) > self.timeouts.worker)
            .map(|(id, _)| *id)
            .collect();
        let mut actions = Vec::new();
        for id in dead {
            tracing::warn!(worker = %id, "worker missed its heartbeats; declaring it dead");
            actions.extend(self.declare_dead(id, None, now));
        }
        if now.duration_since(self.started) > self.timeouts.worker {
            self.expire_unclaimed_maps();
        }
        actions
    }

    /// Records that worker `new` runs at `home` (`host:directory`) and declares every other
    /// live worker registered from there dead at once: a worker restarted on its directory
    /// means the old process is gone (the directory lock says so), so nothing waits for the
    /// heartbeat timeout. The finished map outputs of the old worker that `new` reports
    /// holding (`held`: job, map, attempt) stay the winners, now served by `new`; attempts
    /// the old one was running are lost (killed, not failed).
    pub fn replace_worker_at(
        &mut self,
        new: WorkerId,
        home: &str,
        held: &[(JobId, u32, AttemptId)],
        now: Instant,
    ) -> Vec<Action> {
        if let Some(w) = self.workers.get_mut(&new) {
            w.home = home.to_string();
        }
        let old: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(id, w)| **id != new && w.alive && w.home == home)
            .map(|(id, _)| *id)
            .collect();
        let held: HashSet<(JobId, u32, AttemptId)> = held.iter().copied().collect();
        let mut actions = Vec::new();
        for id in old {
            tracing::warn!(worker = %id, replacement = %new, %home, "worker restarted on its directory; declaring the old one dead");
            actions.extend(self.declare_dead(id, Some((new, &held)), now));
        }
        actions
    }

    /// Declares worker `id` dead: its attempts are lost (killed), and the finished map
    /// outputs on its disk that running jobs still need are produced again, except those a
    /// `replacement` on the same directory holds, which it serves from now on.
    fn declare_dead(
        &mut self,
        id: WorkerId,
        replacement: Option<(WorkerId, &HashSet<(JobId, u32, AttemptId)>)>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        self.workers.get_mut(&id).expect("known worker").alive = false;
        let lost: Vec<AttemptId> = self
            .attempts
            .iter()
            .filter(|(_, a)| a.worker == id)
            .map(|(k, _)| *k)
            .collect();
        for attempt in lost {
            actions.extend(self.report_lost(attempt, &format!("worker {id} was lost"), now));
        }
        for job in self
            .jobs
            .values_mut()
            .filter(|j| j.state == JobState::Running)
        {
            if job.reduces.iter().all(|t| t.state == TaskState::Done) {
                continue;
            }
            for (i, t) in job.maps.iter_mut().enumerate() {
                let Some(w) = t.winner.as_mut().filter(|w| w.worker == Some(id)) else {
                    continue;
                };
                if t.state != TaskState::Done {
                    continue;
                }
                if let Some((new, held)) = replacement {
                    if held.contains(&(job.id, i as u32, w.attempt)) {
                        // Kept: the same file, now served by the replacement. Fetch failures
                        // reported against the old address start over.
                        w.worker = Some(new);
                        w.replaced_at = Some(now);
                        t.fetch_reports = 0;
                        job.shuffle_workers.insert(new);
                        job.kept_outputs += 1;
                        continue;
                    }
                }
                t.lost_winner = t.winner.take();
                t.state = TaskState::Pending;
                t.ready = Some(now);
                job.lost_outputs += 1;
                self.metrics.map_output_lost();
                self.outbox.push(Record::MapLost {
                    job: job.id,
                    index: i as u32,
                });
            }
        }
        actions
    }

    /// Runs again the recovered maps whose worker did not come back in time.
    fn expire_unclaimed_maps(&mut self) {
        for job in self
            .jobs
            .values_mut()
            .filter(|j| j.state == JobState::Running)
        {
            for (i, t) in job.maps.iter_mut().enumerate() {
                if t.state == TaskState::Done
                    && t.winner.as_ref().is_some_and(|w| w.worker.is_none())
                {
                    tracing::warn!(job = %job.id, map = i, "recovered map output was not reclaimed; running the map again");
                    t.winner = None;
                    t.state = TaskState::Pending;
                    t.ready = Some(Instant::now());
                    job.lost_outputs += 1;
                    self.metrics.map_output_lost();
                    self.outbox.push(Record::MapLost {
                        job: job.id,
                        index: i as u32,
                    });
                }
            }
        }
    }

    /// Returns the journal records of the changes made since the last call, to be written
    /// (in order) before the changes are acknowledged.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.outbox)
    }

    /// Rebuilds the state of a new incarnation from the journal. Returns the state and the
    /// actions left unfinished at the crash (publishing outputs whose reduces all committed).
    pub fn recover(
        epoch: Epoch,
        timeouts: Timeouts,
        records: Vec<Record>,
        now: Instant,
    ) -> (State, Vec<Action>) {
        let mut s = State::new(epoch, timeouts);
        s.started = now;
        for r in records {
            match r {
                Record::Submitted {
                    job,
                    spec,
                    splits,
                    origin,
                } => {
                    s.next_job = s.next_job.max(job.0);
                    s.submit_with(spec, splits, origin, now);
                }
                Record::MapDone {
                    job,
                    index,
                    attempt,
                    counters,
                    local,
                } => {
                    if let Some(t) = s
                        .jobs
                        .get_mut(&job)
                        .and_then(|j| j.maps.get_mut(index as usize))
                    {
                        t.state = TaskState::Done;
                        t.winner = Some(Winner {
                            attempt,
                            worker: None,
                            counters,
                            local,
                            part: None,
                            replaced_at: None,
                        });
                    }
                }
                Record::Forgotten { job } => {
                    s.jobs.remove(&job);
                }
                Record::Listed { job, records } => {
                    if let Some(j) = s.jobs.get_mut(&job) {
                        j.listed.extend(records);
                    }
                }
                Record::MapLost { job, index } => {
                    if let Some(t) = s
                        .jobs
                        .get_mut(&job)
                        .and_then(|j| j.maps.get_mut(index as usize))
                    {
                        t.state = TaskState::Pending;
                        t.winner = None;
                    }
                }
                Record::ReduceDone {
                    job,
                    index,
                    attempt,
                    counters,
                    part,
                } => {
                    if let Some(t) = s
                        .jobs
                        .get_mut(&job)
                        .and_then(|j| j.reduces.get_mut(index as usize))
                    {
                        t.state = TaskState::Done;
                        t.winner = Some(Winner {
                            attempt,
                            worker: None,
                            counters,
                            local: true,
                            part: Some(part),
                            replaced_at: None,
                        });
                    }
                }
                Record::Publishing { .. } => {}
                r @ (Record::ScheduleAdded { .. }
                | Record::ScheduleRemoved { .. }
                | Record::SchedulePaused { .. }
                | Record::ScheduleSkipped { .. }
                | Record::BackfillStarted { .. }
                | Record::BackfillCancelled { .. }) => s.replay_schedule(r),
                Record::Ended { job, state, error } => {
                    if let Some(j) = s.jobs.get_mut(&job) {
                        j.state = match state.as_str() {
                            "succeeded" => JobState::Succeeded,
                            "killed" => JobState::Killed,
                            _ => JobState::Failed,
                        };
                        j.error = error;
                        j.finished = Some(now);
                    }
                }
            }
        }
        s.settle_cursors();
        // Records replayed above are already in the journal.
        s.outbox.clear();
        let mut actions = Vec::new();
        for job in s.jobs.values_mut().filter(|j| j.state == JobState::Running) {
            let (maps, reduces) = (
                job.maps
                    .iter()
                    .filter(|t| t.state == TaskState::Done)
                    .count(),
                job.reduces
                    .iter()
                    .filter(|t| t.state == TaskState::Done)
                    .count(),
            );
            tracing::info!(job = %job.id, maps_recovered = maps, reduces_recovered = reduces, "job recovered from the journal");
            job.recovered_maps = maps as u64;
            if job.reduces.iter().all(|t| t.state == TaskState::Done) {
                actions.push(Self::start_publishing(job, &mut s.outbox));
            }
        }
        (s, actions)
    }

    /// Gives the map outputs a (re-)registered worker still holds back to their tasks.
    pub fn claim_outputs(
        &mut self,
        worker: WorkerId,
        held: &[(JobId, u32, AttemptId)],
        now: Instant,
    ) {
        for (job_id, index, attempt) in held {
            let Some(job) = self
                .jobs
                .get_mut(job_id)
                .filter(|j| j.state == JobState::Running)
            else {
                // Files of a job that is over, or unknown here, are garbage: delete them.
                if let Some(w) = self.workers.get_mut(&worker) {
                    if !w.cleanups.contains(job_id) {
                        w.cleanups.push(*job_id);
                    }
                }
                continue;
            };
            // Claimed or stale, the worker holds files of the job: they go when it ends.
            job.shuffle_workers.insert(worker);
            let Some(t) = job.maps.get_mut(*index as usize) else {
                continue;
            };
            if let Some(w) = t.winner.as_mut() {
                if w.attempt == *attempt && w.worker.is_none() {
                    w.worker = Some(worker);
                }
                continue;
            }
            // The output of a winner whose worker was declared dead (it came back after the
            // timeout): it wins again, and the map's re-run is cancelled.
            if t.state != TaskState::Done
                && t.lost_winner
                    .as_ref()
                    .is_some_and(|w| w.attempt == *attempt)
            {
                let mut w = t.lost_winner.take().expect("checked");
                w.worker = Some(worker);
                w.replaced_at = Some(now);
                tracing::info!(job = %job_id, map = index, %attempt, %worker, "lost map output reclaimed from a returning worker");
                self.outbox.push(Record::MapDone {
                    job: *job_id,
                    index: *index,
                    attempt: *attempt,
                    counters: w.counters.clone(),
                    local: w.local,
                });
                t.winner = Some(w);
                t.state = TaskState::Done;
                t.fetch_reports = 0;
                for other in t.running.drain(..) {
                    if let Some(ow) = self
                        .attempts
                        .get(&other)
                        .and_then(|o| self.workers.get_mut(&o.worker))
                    {
                        ow.cancels.push(other);
                    }
                }
                job.kept_outputs += 1;
            }
        }
    }

    /// Returns the status of one job.
    pub fn status(&self, job_id: JobId, now: Instant) -> Option<pb::JobStatus> {
        let job = self.jobs.get(&job_id)?;
        let count = |ts: &[Task], s: fn(&TaskState) -> bool| {
            ts.iter().filter(|t| s(&t.state)).count() as u32
        };
        let mut counters = Counters::default();
        let (mut local, mut remote) = (0, 0);
        for t in job.maps.iter().chain(job.reduces.iter()) {
            if let Some(w) = &t.winner {
                counters.merge(&w.counters);
            }
        }
        for t in &job.maps {
            match &t.winner {
                Some(w) if w.local => local += 1,
                Some(_) => remote += 1,
                None => {}
            }
        }
        counters.add("data_local_maps", local);
        counters.add("remote_maps", remote);
        counters.add("fetch_failures", job.fetch_failures);
        counters.add("recovered_maps", job.recovered_maps);
        counters.add("backup_attempts", job.backups);
        counters.add("attempts", job.attempts);
        counters.add("failed_attempts", job.failed_attempts);
        counters.add("killed_attempts", job.killed_attempts);
        counters.add("kept_map_outputs", job.kept_outputs);
        counters.add("lost_map_outputs", job.lost_outputs);
        let end = job.finished.unwrap_or(now);
        Some(pb::JobStatus {
            job_id: job_id.0,
            job: job.spec.job.clone(),
            state: job.state.to_pb() as i32,
            maps_total: job.maps.len() as u32,
            maps_done: count(&job.maps, |s| *s == TaskState::Done),
            reduces_total: job.reduces.len() as u32,
            reduces_done: count(&job.reduces, |s| *s == TaskState::Done),
            bytes_read: counters.get("map_input_bytes"),
            elapsed_ms: end.duration_since(job.submitted).as_millis() as u64,
            error: job.error.clone().unwrap_or_default(),
            output: job.spec.output.clone(),
            // An ended job runs nothing: attempts still out are being cancelled.
            maps_running: if job.state.is_over() {
                0
            } else {
                count(&job.maps, |s| *s == TaskState::Running)
            },
            reduces_running: if job.state.is_over() {
                0
            } else {
                count(&job.reduces, |s| {
                    matches!(s, TaskState::Running | TaskState::Committing(_))
                })
            },
            counters: Some(pb::Counters {
                values: counters.0.into_iter().collect(),
            }),
        })
    }

    /// Returns the status of every job, oldest first.
    pub fn list(&self, now: Instant) -> Vec<pb::JobStatus> {
        self.jobs
            .keys()
            .filter_map(|id| self.status(*id, now))
            .collect()
    }
}

mod schedules;
mod views;

pub use schedules::{
    compute_due, Backfill, CancelBackfillError, Due, Firing, HistoryEntry, Origin, Schedule, Skip,
    BACKFILL_PRIORITY,
};
pub use views::AttemptView;
pub use views::WorkerView;

#[cfg(test)]
mod tests;
