//! Placement: which pending task (or straggler's backup) runs on a worker with free slots,
//! honouring locality (delay scheduling), GPU slots, per-job exclusion and speculation, and
//! the assignment a started attempt is sent as.
//!
//! May touch: a task's state and running attempts, the attempt table, placement counters.
//! Never ends a job or a task.

use super::*;

impl State {
    /// Picks tasks for `free` slots of `worker`: data-local maps first; maps that no live
    /// worker holds locally next; then maps held only by hosts with more pending maps than
    /// slots (the map would wait there for a slot anyway); other maps another worker holds
    /// only after the job has waited `locality_wait` for it (delay scheduling); reduces once
    /// every map is done; then backups of stragglers. Jobs are served by priority (backfills
    /// last), then oldest first.
    pub(super) fn assign(
        &mut self,
        worker: WorkerId,
        mut free: u32,
        now: Instant,
    ) -> Vec<pb::TaskAssignment> {
        let mut out = Vec::new();
        if free == 0 {
            return out;
        }
        let mut job_ids: Vec<(i32, JobId)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.state == JobState::Running)
            .map(|(id, j)| (-j.spec.priority, *id))
            .collect();
        job_ids.sort_unstable();
        // Computed for the first job that wants a GPU, kept up to date after.
        let mut free_gpus = None;
        for (_, id) in job_ids {
            if free == 0 {
                break;
            }
            if self.jobs[&id].spec.gpu && free_gpus.is_none() {
                free_gpus = Some(self.free_gpus(worker));
            }
            let offer = Offer {
                worker,
                host: &self.workers[&worker].storage_host,
                workers: &self.workers,
                live_hosts: &self.live_hosts,
                locality_wait: self.timeouts.locality_wait,
                now,
            };
            let job = self.jobs.get_mut(&id).expect("listed job");
            job.refresh_tally();
            let Some((mut picks, gpu_maps)) = offer.picks(job, free as usize, &mut free_gpus)
            else {
                continue;
            };
            if picks.len() < free as usize && job.spec.speculation && !gpu_maps {
                job.refresh_medians();
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
    /// The job's tally and medians are fresh.
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
            if job.pending_tasks(kind).next().is_some() {
                continue;
            }
            let Some(median) = job.median(kind) else {
                continue;
            };
            let tasks = job.tasks(kind);
            let running: Vec<(u32, &Task)> = job
                .running_tasks(kind)
                .map(|i| (i, &tasks[i as usize]))
                .collect();
            let cap = (running.len() / 10).max(1);
            let mut backups = running.iter().filter(|(_, t)| t.running.len() > 1).count();
            // A reduce attempt is handed the location of every map's output: none may start
            // (a backup no more than a first attempt) while a map output is missing, as it is
            // when a lost one is produced again, or it would reduce part of the input.
            if kind == TaskKind::Reduce && !reduces_ready(job) {
                continue;
            }
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
                    out.push((kind, i, false));
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
        task.running.push(attempt);
        task.started += 1;
        let number = task.started;
        job.set_state(kind, index, TaskState::Running);
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
            number,
        });
        if kind == TaskKind::Map {
            job.shuffle_workers.insert(worker);
        }
        tracing::debug!(job = %job_id, %attempt, kind = kind.name(), index, %worker, "attempt assigned");
        self.assignment(job_id, kind, index, attempt, number)
    }

    /// The message that tells a worker to run `attempt`.
    fn assignment(
        &self,
        job_id: JobId,
        kind: TaskKind,
        index: u32,
        attempt: AttemptId,
        number: u32,
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
                state: s.state,
                files: s
                    .split
                    .files
                    .iter()
                    .map(|f| pb::GroupFile {
                        path: f.path.clone(),
                        len: f.len,
                        name: f.name.clone(),
                    })
                    .collect(),
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
            number,
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

/// Whether a reduce attempt of `job` may start: every map is done and its output has a known
/// location (a map recovered from the journal has none until its worker offers it back).
fn reduces_ready(job: &Job) -> bool {
    job.all_done(TaskKind::Map)
        && job
            .maps
            .iter()
            .all(|t| t.winner.as_ref().is_some_and(|w| w.worker.is_some()))
}

impl Job {
    /// Takes the median run time of each phase's winners again when their number grew by
    /// more than 1% since it was last taken (so a heartbeat never sorts 100,000 run times).
    fn refresh_medians(&mut self) {
        for kind in [TaskKind::Map, TaskKind::Reduce] {
            let slot = tally::kind_slot(kind);
            let Some(d) = self.durations.get(&kind) else {
                continue;
            };
            let (taken_over, _) = self.medians[slot];
            if d.len() > taken_over + taken_over / 100 {
                let mut d = d.clone();
                let mid = d.len() / 2;
                let median = *d.select_nth_unstable(mid).1;
                self.medians[slot] = (d.len(), Some(median));
            }
        }
    }

    /// The median run time of `kind`'s winners (as of [`Job::refresh_medians`]).
    fn median(&self, kind: TaskKind) -> Option<Duration> {
        self.medians[tally::kind_slot(kind)].1
    }
}

/// A worker's free slots as placement sees them: the worker, its storage host and the live
/// cluster, at one moment.
struct Offer<'a> {
    worker: WorkerId,
    host: &'a str,
    workers: &'a HashMap<WorkerId, Worker>,
    /// Live workers and their slots per storage host.
    live_hosts: &'a HashMap<String, LiveHost>,
    locality_wait: Duration,
    now: Instant,
}

/// The workers a job has excluded (after [`EXCLUDE_AFTER`] failures each). Rare, so only a
/// job that has some pays for a look at every live worker.
struct Exclusions<'a> {
    excluded: HashSet<WorkerId>,
    /// Live workers that may run the job's tasks, and their storage hosts.
    allowed: Vec<(WorkerId, &'a str)>,
    /// The slots of those workers, by storage host (a worker that declared none counts as
    /// one): looked up for every map with hosts, so not summed again for each.
    host_slots: HashMap<&'a str, u32>,
}

impl<'a> Exclusions<'a> {
    fn of(job: &Job, workers: &'a HashMap<WorkerId, Worker>) -> Option<Exclusions<'a>> {
        let excluded: HashSet<WorkerId> = job
            .worker_failures
            .iter()
            .filter(|(_, n)| **n >= EXCLUDE_AFTER)
            .map(|(w, _)| *w)
            .collect();
        if excluded.is_empty() {
            return None;
        }
        let mut allowed = Vec::new();
        let mut host_slots: HashMap<&str, u32> = HashMap::new();
        for (id, w) in workers {
            if w.alive && !excluded.contains(id) {
                allowed.push((*id, w.storage_host.as_str()));
                *host_slots.entry(w.storage_host.as_str()).or_default() += w.slots.max(1);
            }
        }
        Some(Exclusions {
            excluded,
            allowed,
            host_slots,
        })
    }
}

impl Offer<'_> {
    /// Whether a live worker that may run `job`'s tasks is on `host` (so a map stored there
    /// is worth waiting for).
    fn job_host(&self, ex: Option<&Exclusions>, host: &str) -> bool {
        match ex {
            None => self.live_hosts.contains_key(host),
            Some(x) => x.host_slots.contains_key(host),
        }
    }

    /// Whether `host` has a live worker that may run task `t`: one the job has not excluded
    /// and `t` has not failed on (nor lost its output on). A map stored only on hosts without
    /// one is not worth waiting for.
    fn host_for(&self, ex: Option<&Exclusions>, host: &str, t: &Task) -> bool {
        self.job_host(ex, host)
            && (t.failed_on.is_empty()
                || self.workers.iter().any(|(id, w)| {
                    w.alive
                        && w.storage_host == host
                        && !t.failed_on.contains(id)
                        && ex.is_none_or(|x| !x.excluded.contains(id))
                }))
    }

    /// Whether every live host holding a map (`hosts`) has more pending maps than its
    /// workers have slots, counting those already `taken` off it in this offer: the map
    /// could not start there before a running one ends, so an idle worker elsewhere should
    /// run it rather than wait. Not a host with a running map only: that is delay
    /// scheduling's case. Only the slots of workers the job has not excluded count.
    fn backlogged(
        &self,
        job: &Job,
        ex: Option<&Exclusions>,
        hosts: &[String],
        taken: &HashMap<&str, usize>,
    ) -> bool {
        let slots_on = |h: &str| -> Option<u32> {
            match ex {
                None => self.live_hosts.get(h).map(|l| l.slots),
                Some(x) => x.host_slots.get(h).copied(),
            }
        };
        let mut live = hosts
            .iter()
            .filter_map(|h| Some((h, slots_on(h)?)))
            .peekable();
        live.peek().is_some()
            && live.all(|(h, slots)| {
                let pending = job.pending_count_on(h) - taken.get(h.as_str()).unwrap_or(&0);
                pending > slots as usize
            })
    }

    /// Whether `t` failed on this worker while some other live worker may run it.
    fn avoid(&self, ex: Option<&Exclusions>, t: &Task) -> bool {
        t.failed_on.contains(&self.worker)
            && match ex {
                None => self
                    .workers
                    .iter()
                    .any(|(id, w)| w.alive && !t.failed_on.contains(id)),
                Some(x) => x.allowed.iter().any(|(id, _)| !t.failed_on.contains(id)),
            }
    }

    /// Whether any live worker has GPUs: then maps of jobs that want one run only in free GPU
    /// slots; on a cluster without GPUs they run like any task.
    fn gpu_cluster(&self) -> bool {
        self.workers.values().any(|w| w.alive && w.gpus > 0)
    }

    /// Up to `free` of `job`'s pending tasks for this worker, and whether the job's maps use
    /// GPU slots; None when the job has excluded this worker. Backups are not chosen here.
    /// Reads the job's tally (fresh) and the pending tasks it needs, not every task.
    fn picks(
        &self,
        job: &mut Job,
        free: usize,
        free_gpus: &mut Option<u32>,
    ) -> Option<(Vec<Pick>, bool)> {
        let ex = Exclusions::of(job, self.workers);
        // Exclusion stops below the attempt cap; if every live worker is excluded the job
        // still runs, and fails at the cap with its last error.
        if let Some(x) = &ex {
            if x.excluded.contains(&self.worker) && !x.allowed.is_empty() {
                return None;
            }
        }
        let ex = ex.as_ref();
        let gpu_maps = job.spec.gpu && self.gpu_cluster();
        let room = if gpu_maps {
            free.min(free_gpus.unwrap_or(0) as usize)
        } else {
            free
        };
        let waited = |since: Option<Instant>| {
            self.locality_wait.is_zero()
                || since.is_some_and(|s| self.now.duration_since(s) >= self.locality_wait)
        };
        let can_wait_over = waited(job.locality_wait_since);
        let mut local: Vec<Pick> = job
            .pending_maps_on(self.host)
            .filter(|i| !self.avoid(ex, &job.maps[*i as usize]))
            .take(room)
            .map(|i| (TaskKind::Map, i, true))
            .collect();
        let (mut anywhere, mut busy, mut elsewhere) = (Vec::new(), Vec::new(), Vec::new());
        if local.len() < room {
            // Maps picked off backlogged hosts in this offer, per host.
            let mut taken: HashMap<&str, usize> = HashMap::new();
            for i in job.pending_tasks(TaskKind::Map) {
                let hosts = &job.splits[i as usize].hosts;
                if hosts.iter().any(|h| h == self.host) || self.avoid(ex, &job.maps[i as usize]) {
                    continue;
                }
                if !hosts
                    .iter()
                    .any(|h| self.host_for(ex, h, &job.maps[i as usize]))
                {
                    anywhere.push((TaskKind::Map, i, false));
                } else if self.backlogged(job, ex, hosts, &taken) {
                    for h in hosts {
                        *taken.entry(h.as_str()).or_default() += 1;
                    }
                    busy.push((TaskKind::Map, i, false));
                } else {
                    elsewhere.push((TaskKind::Map, i, false));
                }
                let sure = local.len() + anywhere.len() + busy.len();
                if sure >= room || (can_wait_over && sure + elsewhere.len() >= room) {
                    break;
                }
            }
        }
        let reduces = self.pending_reduces(job, ex, free);
        if !local.is_empty() {
            job.locality_wait_since = None;
        }
        local.append(&mut anywhere);
        job.rebalanced += busy.len().min(room.saturating_sub(local.len())) as u64;
        local.append(&mut busy);
        if local.len() < room && !elsewhere.is_empty() {
            let since = *job.locality_wait_since.get_or_insert(self.now);
            if waited(Some(since)) {
                local.append(&mut elsewhere);
            }
        }
        local.truncate(room);
        let mut picks = local;
        if gpu_maps {
            *free_gpus = Some(free_gpus.unwrap_or(0) - picks.len() as u32);
        }
        picks.extend(reduces);
        picks.truncate(free);
        Some((picks, gpu_maps))
    }

    /// Up to `free` pending reduces of `job`: they start when every map is done and its
    /// output has a known location.
    fn pending_reduces(&self, job: &Job, ex: Option<&Exclusions>, free: usize) -> Vec<Pick> {
        if job.pending_tasks(TaskKind::Reduce).next().is_none() || !reduces_ready(job) {
            return Vec::new();
        }
        job.pending_tasks(TaskKind::Reduce)
            .filter(|i| !self.avoid(ex, &job.reduces[*i as usize]))
            .take(free)
            .map(|i| (TaskKind::Reduce, i, true))
            .collect()
    }
}
