//! Placement: which pending task (or straggler's backup) runs on a worker with free slots,
//! honouring locality (delay scheduling), GPU slots, per-job exclusion and speculation, and
//! the assignment a started attempt is sent as.
//!
//! May touch: a task's state and running attempts, the attempt table, placement counters.
//! Never ends a job or a task.

use super::*;

impl State {
    /// Picks tasks for `free` slots of `worker`: data-local maps first; maps that no live
    /// worker holds locally next; maps another worker holds only after the job has waited
    /// `locality_wait` for it (delay scheduling); reduces once every map is done; then
    /// backups of stragglers. Jobs are served by priority (backfills last), then oldest first.
    pub(super) fn assign(
        &mut self,
        worker: WorkerId,
        mut free: u32,
        now: Instant,
    ) -> Vec<pb::TaskAssignment> {
        let mut out = Vec::new();
        let offer = Offer::new(&self.workers, worker, self.timeouts.locality_wait, now);
        let mut free_gpus = self.free_gpus(worker);
        let mut job_ids: Vec<(i32, JobId)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Running)
            .map(|(id, j)| (-j.spec.priority, *id))
            .collect();
        job_ids.sort_unstable();
        for (_, id) in job_ids {
            if free == 0 {
                break;
            }
            let job = self.jobs.get_mut(&id).expect("listed job");
            let Some((mut picks, gpu_maps)) = offer.picks(job, free as usize, &mut free_gpus)
            else {
                continue;
            };
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

    /// GPU slots of `worker` not taken by a running map of a job that wants a GPU.
    fn free_gpus(&self, worker: WorkerId) -> u32 {
        let busy = self
            .attempts
            .values()
            .filter(|a| {
                a.worker == worker
                    && a.kind == TaskKind::Map
                    && self.jobs.get(&a.job).is_some_and(|j| j.spec.gpu)
            })
            .count() as u32;
        self.workers[&worker].gpus.saturating_sub(busy)
    }

    /// Returns up to `room` running tasks of a job that deserve a backup attempt on `worker`:
    /// their phase has nothing left to start, they have run longer than the floor and more
    /// than 1.5 times the median of their finished peers, they have no backup yet, and they
    /// run elsewhere. Backups are capped at a tenth of the phase's running tasks (at least one).
    pub(super) fn stragglers(
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

    pub(super) fn start_attempt(
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
            outcome: Outcome::Running,
            error: String::new(),
            local,
        });
        if kind == TaskKind::Map {
            job.shuffle_workers.insert(worker);
        }
        tracing::debug!(job = %job_id, %attempt, kind = kind.name(), index, %worker, "attempt assigned");
        self.assignment(job_id, kind, index, attempt)
    }

    /// The message that tells a worker to run `attempt`.
    fn assignment(
        &self,
        job_id: JobId,
        kind: TaskKind,
        index: u32,
        attempt: AttemptId,
    ) -> pb::TaskAssignment {
        let job = &self.jobs[&job_id];
        let map_outputs = if kind == TaskKind::Reduce {
            self.map_outputs(job_id)
        } else {
            Vec::new()
        };
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
            kind: kind.to_pb() as i32,
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
                job.maps[index as usize].skip.skipped().to_vec()
            } else {
                Vec::new()
            },
        }
    }

    pub(super) fn map_outputs(&self, job_id: JobId) -> Vec<pb::MapOutputLocation> {
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
}

/// A task to start: its kind, index, and whether it runs beside its data.
type Pick = (TaskKind, u32, bool);

/// A worker's free slots as placement sees them: the worker, its storage host and the live
/// cluster, at one moment.
struct Offer {
    worker: WorkerId,
    host: String,
    /// Live workers and their storage hosts.
    live: Vec<(WorkerId, String)>,
    /// Whether any live worker has GPUs: then maps of jobs that want one run only in free
    /// GPU slots; on a cluster without GPUs they run like any task.
    gpu_cluster: bool,
    locality_wait: Duration,
    now: Instant,
}

impl Offer {
    fn new(
        workers: &HashMap<WorkerId, Worker>,
        worker: WorkerId,
        locality_wait: Duration,
        now: Instant,
    ) -> Offer {
        Offer {
            worker,
            host: workers[&worker].storage_host.clone(),
            live: workers
                .iter()
                .filter(|(_, w)| w.alive)
                .map(|(id, w)| (*id, w.storage_host.clone()))
                .collect(),
            gpu_cluster: workers.values().any(|w| w.alive && w.gpus > 0),
            locality_wait,
            now,
        }
    }

    /// Up to `free` of `job`'s pending tasks for this worker, and whether the job's maps use
    /// GPU slots; None when the job has excluded this worker. Backups are not chosen here.
    fn picks(&self, job: &mut Job, free: usize, free_gpus: &mut u32) -> Option<(Vec<Pick>, bool)> {
        let excluded =
            |w: &WorkerId| job.worker_failures.get(w).copied().unwrap_or(0) >= EXCLUDE_AFTER;
        // Exclusion stops below the attempt cap; if every live worker is excluded the job
        // still runs, and fails at the cap with its last error.
        if excluded(&self.worker) && !self.live.iter().all(|(w, _)| excluded(w)) {
            return None;
        }
        // Only workers that may run this job's tasks count for delay scheduling.
        let job_hosts: HashSet<&String> = self
            .live
            .iter()
            .filter(|(w, _)| !excluded(w))
            .map(|(_, h)| h)
            .collect();
        // A task that failed on this worker goes elsewhere while some other worker may run it.
        let avoid = |t: &Task| {
            t.failed_on.contains(&self.worker)
                && self
                    .live
                    .iter()
                    .any(|(w, _)| !excluded(w) && !t.failed_on.contains(w))
        };
        let gpu_maps = self.gpu_cluster && job.spec.gpu;
        let (mut local, mut anywhere, mut elsewhere) = (Vec::new(), Vec::new(), Vec::new());
        for (i, t) in job.maps.iter().enumerate() {
            if t.state != TaskState::Pending || avoid(t) || (gpu_maps && *free_gpus == 0) {
                continue;
            }
            let hosts = &job.splits[i].hosts;
            if hosts.contains(&self.host) {
                local.push((TaskKind::Map, i as u32, true));
            } else if hosts.iter().any(|h| job_hosts.contains(h)) {
                elsewhere.push((TaskKind::Map, i as u32, false));
            } else {
                anywhere.push((TaskKind::Map, i as u32, false));
            }
        }
        // Reduces start when every map is done and its output has a known location.
        let reduces: Vec<Pick> = if job.maps_done()
            && job
                .maps
                .iter()
                .all(|t| t.winner.as_ref().is_some_and(|w| w.worker.is_some()))
        {
            job.reduces
                .iter()
                .enumerate()
                .filter(|(_, t)| t.state == TaskState::Pending && !avoid(t))
                .map(|(i, _)| (TaskKind::Reduce, i as u32, true))
                .collect()
        } else {
            Vec::new()
        };
        let mut picks = local;
        if !picks.is_empty() {
            job.locality_wait_since = None;
        }
        picks.append(&mut anywhere);
        if picks.len() < free && !elsewhere.is_empty() {
            let since = *job.locality_wait_since.get_or_insert(self.now);
            if self.now.duration_since(since) >= self.locality_wait {
                picks.append(&mut elsewhere);
            }
        }
        picks.extend(reduces);
        picks.truncate(free);
        if gpu_maps {
            let mut room = *free_gpus;
            picks.retain(|(kind, _, _)| {
                *kind == TaskKind::Reduce || room.checked_sub(1).map(|r| room = r).is_some()
            });
            *free_gpus = room;
        }
        Some((picks, gpu_maps))
    }
}
