//! The worker side of the state: registration, heartbeats (which also hand out work), liveness,
//! a worker replaced on its directory, and the map outputs a returning worker still holds.
//!
//! May touch: workers, and through [`State::declare_dead`] the attempts and map winners of
//! the dead worker. Placement itself is in `placement`.

use super::*;

impl State {
    /// How many workers are alive (from the per-host counts, without a scan).
    pub fn live_workers(&self) -> usize {
        self.live_hosts.values().map(|h| h.workers).sum()
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
        let host = self.live_hosts.entry(storage_host.clone()).or_default();
        host.workers += 1;
        host.slots += 1;
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
                last_seq: 0,
                unconfirmed: Vec::new(),
            },
        );
        id
    }

    /// Tasks that a free slot could start now: the running jobs' pending maps, and their
    /// pending reduces once all their maps are done. A heartbeat held for work is answered
    /// when this grows.
    pub fn startable_tasks(&mut self) -> usize {
        self.jobs
            .values_mut()
            .filter(|j| j.state == JobState::Running)
            .map(|j| {
                j.refresh_tally();
                let reduces = if j.all_done(TaskKind::Map) {
                    j.pending_count(TaskKind::Reduce)
                } else {
                    0
                };
                j.pending_count(TaskKind::Map) + reduces
            })
            .sum()
    }

    /// Records the task slots and GPUs a worker declared.
    pub fn set_worker_slots(&mut self, worker: WorkerId, slots: u32, gpus: u32) {
        if let Some(w) = self.workers.get_mut(&worker) {
            if let Some(h) = self.live_hosts.get_mut(&w.storage_host).filter(|_| w.alive) {
                h.slots = h.slots - w.slots.max(1) + slots.max(1);
            }
            w.slots = slots;
            w.gpus = gpus;
        }
    }

    /// Returns true if `worker` is registered, alive, and speaks this epoch.
    pub fn is_current(&self, worker: WorkerId, epoch: Epoch) -> bool {
        epoch == self.epoch && self.workers.get(&worker).is_some_and(|w| w.alive)
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

    /// Handles heartbeat number `seq` of `worker`, which lists `running` as the attempts it
    /// runs (those it reports in the same heartbeat were applied first): answers as
    /// [`State::heartbeat`] does, with these checks first (`seq` 0: none), and the actions
    /// of the attempts found lost and how many there were.
    ///
    /// - An attempt assigned in the answer to an earlier heartbeat and not listed never
    ///   reached the worker (the answer was lost, or the worker gave up waiting for it; the
    ///   worker sends the next heartbeat only after that): it is lost and runs again, rather
    ///   than waiting forever for a report (or, for a worker that keeps heartbeating, for the
    ///   worker timeout, which never comes).
    /// - A heartbeat numbered lower than one already heard was given up on by its worker,
    ///   which will not see this answer: it gets nothing (its reports were applied).
    ///
    /// The same heartbeat heard again (a held one looking for work) is answered without the
    /// checks.
    pub fn heartbeat_numbered(
        &mut self,
        worker: WorkerId,
        seq: u64,
        running: &[u64],
        free: u32,
        now: Instant,
    ) -> (pb::HeartbeatResponse, Vec<Action>, usize) {
        let Some(w) = self.workers.get_mut(&worker) else {
            return Default::default();
        };
        let (mut actions, mut lost_count) = (Vec::new(), 0);
        if seq != 0 {
            if seq < w.last_seq {
                return Default::default();
            }
            if seq > w.last_seq {
                w.last_seq = seq;
                // Assigned before this heartbeat was sent: listed (it runs), ended (reported,
                // so gone from the attempts), or lost.
                let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut w.unconfirmed)
                    .into_iter()
                    .partition(|(_, s)| *s < seq);
                w.unconfirmed = later;
                let lost: Vec<AttemptId> = due
                    .into_iter()
                    .map(|(a, _)| a)
                    .filter(|a| !running.contains(&a.0) && self.attempts.contains_key(a))
                    .collect();
                lost_count = lost.len();
                for attempt in lost {
                    let why = format!(
                        "its assignment never reached {worker} (the heartbeat answer was lost)"
                    );
                    actions.extend(self.lose_attempt(attempt, &why, false, now));
                    // Should it run after all, it is stopped.
                    if let Some(w) = self.workers.get_mut(&worker) {
                        w.cancels.push(attempt);
                    }
                }
            }
        }
        let reply = self.heartbeat(worker, free, now);
        if seq != 0 {
            if let Some(w) = self.workers.get_mut(&worker) {
                w.unconfirmed.extend(
                    reply
                        .assignments
                        .iter()
                        .map(|a| (AttemptId(a.attempt_id), seq)),
                );
            }
        }
        (reply, actions, lost_count)
    }

    /// Declares dead the workers silent past the worker timeout, forgets those dead (silent)
    /// for ten timeouts and at least [`KEEP_DEAD_WORKERS`], and runs again the recovered maps
    /// no worker reclaimed.
    pub fn expire_workers(&mut self, now: Instant) -> Vec<Action> {
        self.prune_history();
        self.check_tallies(now);
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
        // Dead workers stay listed (API, page, metrics) for a while, then go: a worker that
        // comes back registers anew, so nothing asks for a dead one's id but those lists, and
        // a cluster whose workers come and go would otherwise list every one it ever had.
        let keep = self
            .timeouts
            .worker
            .saturating_mul(10)
            .max(KEEP_DEAD_WORKERS);
        let before = self.workers.len();
        self.workers
            .retain(|_, w| w.alive || now.saturating_duration_since(w.last_seen) <= keep);
        if self.workers.len() < before {
            tracing::info!(
                forgotten = before - self.workers.len(),
                "forgot workers dead for longer than {keep:?}"
            );
        }
        if now.duration_since(self.started) > self.timeouts.worker {
            self.expire_unclaimed_maps(now);
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
    pub(super) fn declare_dead(
        &mut self,
        id: WorkerId,
        replacement: Option<(WorkerId, &HashSet<(JobId, u32, AttemptId)>)>,
        now: Instant,
    ) -> Vec<Action> {
        let mut actions = Vec::new();
        let w = self.workers.get_mut(&id).expect("known worker");
        if std::mem::replace(&mut w.alive, false) {
            if let Some(h) = self.live_hosts.get_mut(&w.storage_host) {
                h.workers -= 1;
                h.slots -= w.slots.max(1);
                if h.workers == 0 {
                    self.live_hosts.remove(&w.storage_host);
                }
            }
        }
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
                t.lost_winner = t.output_lost(now);
                job.tally.stale = true;
                let (lost, job_id) = (&mut job.lost_outputs, job.id);
                map_lost(lost, &self.metrics, &mut self.outbox, job_id, i as u32);
            }
        }
        actions
    }

    /// Runs again the recovered maps whose worker did not come back in time.
    pub(super) fn expire_unclaimed_maps(&mut self, now: Instant) {
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
                    t.output_lost(now);
                    job.tally.stale = true;
                    let (lost, job_id) = (&mut job.lost_outputs, job.id);
                    map_lost(lost, &self.metrics, &mut self.outbox, job_id, i as u32);
                }
            }
        }
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
                job.tally.stale = true;
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
}
