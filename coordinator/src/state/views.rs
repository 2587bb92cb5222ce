//! Read-only views of the state for the web UI, the JSON API and metrics.

use std::time::{Duration, Instant};

use jobs::sdk::Counters;
use protocol::{pb, AttemptId, JobId, WorkerId};

use super::{Job, State, Task, TaskKind, TaskState};

/// A worker as the UI shows it.
#[derive(Clone, Debug)]
pub struct WorkerView {
    /// Its id.
    pub id: WorkerId,
    /// Where it serves shuffle data.
    pub shuffle_addr: String,
    /// The storage host it runs beside.
    pub storage_host: String,
    /// Not declared dead.
    pub alive: bool,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// Attempts it is running.
    pub running: u32,
    /// Task slots it declared.
    pub slots: u32,
    /// The longest time between two of its heartbeats, in milliseconds.
    pub max_gap_ms: u64,
    /// Where it runs, `host:directory` (empty for a worker that did not say).
    pub home: String,
}

impl State {
    /// Every worker this incarnation knows, by id.
    pub fn workers_view(&self, now: Instant) -> Vec<WorkerView> {
        let mut out: Vec<WorkerView> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerView {
                id: *id,
                shuffle_addr: w.shuffle_addr.clone(),
                storage_host: w.storage_host.clone(),
                alive: w.alive,
                last_seen_ms: now.saturating_duration_since(w.last_seen).as_millis() as u64,
                running: self.attempts.values().filter(|a| a.worker == *id).count() as u32,
                slots: w.slots,
                max_gap_ms: w.max_gap.as_millis() as u64,
                home: w.home.clone(),
            })
            .collect();
        out.sort_by_key(|w| w.id);
        out
    }
}

/// An attempt with where to find its log.
#[derive(Clone, Debug)]
pub struct AttemptView {
    /// The record.
    pub record: super::AttemptRecord,
    /// The worker's shuffle address, which also serves its attempt logs.
    pub worker_addr: String,
    /// For the attempt that won its task: bytes it read (a map's input, a reduce's fetched
    /// shuffle data) and wrote (a map's output, a reduce's part file).
    pub bytes: Option<(u64, u64)>,
}

/// Which of a job's attempts to list: `limit` of them (none: all) from the `offset`-th, in
/// start order. A job of 100,000 tasks has at least as many attempts: the UI and the API ask
/// for a page at a time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// Attempts skipped from the first.
    pub offset: usize,
    /// Attempts listed at most (none: all the rest).
    pub limit: Option<usize>,
}

/// A page of a job's attempts.
#[derive(Clone, Debug)]
pub struct AttemptPage {
    /// Attempts the job has in all (this incarnation).
    pub total: usize,
    /// When its first attempt started (the timeline's origin).
    pub first_started: Option<Instant>,
    /// The page.
    pub attempts: Vec<AttemptView>,
}

impl State {
    /// A page of the attempts of a job this incarnation started, in start order.
    pub fn attempts_of(&self, job: JobId, page: Page) -> Option<AttemptPage> {
        let j = self.jobs.get(&job)?;
        let rest = j.history.iter().skip(page.offset);
        Some(AttemptPage {
            total: j.history.len(),
            first_started: j.history.first().map(|r| r.started),
            attempts: rest
                .take(page.limit.unwrap_or(usize::MAX))
                .map(|r| self.attempt_view(j, r))
                .collect(),
        })
    }

    /// One attempt of a job (found by binary search: the history is in attempt-id order).
    pub fn attempt_of(&self, job: JobId, attempt: AttemptId) -> Option<AttemptView> {
        let j = self.jobs.get(&job)?;
        let at = j
            .history
            .binary_search_by_key(&attempt, |r| r.attempt)
            .ok()?;
        Some(self.attempt_view(j, &j.history[at]))
    }

    fn attempt_view(&self, j: &Job, r: &super::AttemptRecord) -> AttemptView {
        AttemptView {
            bytes: j
                .tasks(r.kind)
                .get(r.index as usize)
                .and_then(|t| t.winner.as_ref())
                .filter(|w| w.attempt == r.attempt)
                .map(|w| match r.kind {
                    TaskKind::Map => (
                        w.counters.get("map_input_bytes"),
                        w.counters.get("map_output_materialized_bytes"),
                    ),
                    TaskKind::Reduce => (
                        w.counters.get("reduce_input_bytes"),
                        w.counters.get("output_bytes"),
                    ),
                }),
            record: r.clone(),
            worker_addr: self
                .workers
                .get(&r.worker)
                .map(|w| w.shuffle_addr.clone())
                .unwrap_or_default(),
        }
    }
}

impl State {
    /// What job `id` was submitted as.
    pub fn spec_of(&self, id: JobId) -> Option<&protocol::JobSpec> {
        self.jobs.get(&id).map(|j| &j.spec)
    }

    /// Whether job `id` is over (None for an unknown job): cheaper than [`Self::status`].
    pub fn is_over(&self, id: JobId) -> Option<bool> {
        self.jobs.get(&id).map(|j| j.state.is_over())
    }

    /// Returns the status of one job.
    pub fn status(&self, job_id: JobId, now: Instant) -> Option<pb::JobStatus> {
        let job = self.jobs.get(&job_id)?;
        let count = |ts: &[Task], s: fn(&TaskState) -> bool| {
            ts.iter().filter(|t| s(&t.state)).count() as u32
        };
        let mut counters = job.winners_counters(now);
        counters.add("fetch_failures", job.fetch_failures);
        counters.add("recovered_maps", job.recovered_maps);
        counters.add("backup_attempts", job.backups);
        counters.add("rebalanced_map_attempts", job.rebalanced);
        counters.add("attempts", job.attempts);
        counters.add("failed_attempts", job.failed_attempts);
        counters.add("killed_attempts", job.killed_attempts);
        counters.add("kept_map_outputs", job.kept_outputs);
        counters.add("lost_map_outputs", job.lost_outputs);
        let end = job.finished.unwrap_or(now);
        // From the journaled wall times where known, so that a restart keeps it.
        let elapsed_ms = match (job.submitted_ms, job.finished_ms) {
            (s, f) if s > 0 && f > 0 => f.saturating_sub(s),
            (s, _) if s > 0 && !job.state.is_over() => self.unix_ms(now).saturating_sub(s),
            _ => end.duration_since(job.submitted).as_millis() as u64,
        };
        Some(pb::JobStatus {
            job_id: job_id.0,
            job: job.spec.job.clone(),
            state: job.state.to_pb() as i32,
            maps_total: job.maps.len() as u32,
            maps_done: count(&job.maps, |s| *s == TaskState::Done),
            reduces_total: job.reduces.len() as u32,
            reduces_done: count(&job.reduces, |s| *s == TaskState::Done),
            bytes_read: counters.get("map_input_bytes"),
            elapsed_ms,
            submitted_unix_ms: job.submitted_ms,
            finished_unix_ms: job.finished_ms,
            error: job.error.clone().unwrap_or_default(),
            output: job.spec.output.clone(),
            name: job.spec.name.clone(),
            labels: job.spec.labels.clone().into_iter().collect(),
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

/// A job with more tasks than this has its winners' counters merged at most once per
/// [`COUNTERS_FRESH`] while it runs: 100,000 maps take tens of milliseconds to merge, and
/// every `job status`, page refresh and waiting client asks.
const CACHE_COUNTERS_OVER: usize = 1000;
const COUNTERS_FRESH: Duration = Duration::from_secs(1);

impl Job {
    /// The counters of the winning attempts merged, with the data-local and remote map
    /// counts. For a big job, taken again at most once a second while it runs, and once more
    /// after it ended.
    fn winners_counters(&self, now: Instant) -> Counters {
        let big = self.maps.len() + self.reduces.len() > CACHE_COUNTERS_OVER;
        let mut cache = self.counters_cache.borrow_mut();
        if let Some((at, c)) = &*cache {
            let fresh = match self.finished {
                Some(end) => *at >= end,
                None => now.saturating_duration_since(*at) < COUNTERS_FRESH,
            };
            if big && fresh {
                return c.clone();
            }
        }
        let mut counters = Counters::default();
        let (mut local, mut remote) = (0, 0);
        for t in self.maps.iter().chain(self.reduces.iter()) {
            if let Some(w) = &t.winner {
                counters.merge(&w.counters);
            }
        }
        for t in &self.maps {
            match &t.winner {
                Some(w) if w.local => local += 1,
                Some(_) => remote += 1,
                None => {}
            }
        }
        counters.add("data_local_maps", local);
        counters.add("remote_maps", remote);
        if big {
            *cache = Some((now, counters.clone()));
        }
        counters
    }
}
