//! Attempts that did not succeed and jobs that end without success: what counts against a
//! task (failed, not killed or cancelled), skip mode, fetch failures, kills.
//!
//! May touch: attempts, task states, a job's end, the journal outbox.

use super::*;

impl State {
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
            Outcome::Cancelled
        } else {
            Outcome::Failed
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
                    job.tally_stale();
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
                    let limit = job.spec.max_bad_records;
                    if map.skip.panicked(offset, job.skipped.len(), limit) {
                        tracing::warn!(job = %a.job, map = a.index, offset, "skipping a record the map panicked on twice");
                        // In a group of files: the file, at its own offset.
                        let (path, at) = job.splits[a.index as usize].split.locate(offset);
                        job.skipped.push(SkippedRecord {
                            path: path.to_string(),
                            offset: at,
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
    pub(super) fn end_attempt(
        &mut self,
        attempt: AttemptId,
        outcome: Outcome,
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
        self.lose_attempt(attempt, error, true, now)
    }

    /// Ends `attempt` as lost (killed, not failed); with `counts`, against its task's
    /// `--max-lost-attempts` (a worker lost while running it may be the task's doing; an
    /// assignment whose heartbeat answer never arrived is not).
    pub(super) fn lose_attempt(
        &mut self,
        attempt: AttemptId,
        error: &str,
        counts: bool,
        now: Instant,
    ) -> Vec<Action> {
        let Some((a, mut actions)) = self.end_attempt(attempt, Outcome::Killed, error, now) else {
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
        tracing::warn!(job = %a.job, %attempt, task = a.kind.name(), index = a.index, %error, "attempt lost");
        task.lost += u32::from(counts);
        if counts && task.lost >= max_lost {
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
            job.tally_stale();
        }
        actions
    }

    pub(super) fn count_failure(
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
            job.tally_stale();
        }
        Vec::new()
    }

    /// Handles a reducer's report that a map output could not be fetched: the map runs again
    /// (if the lost output is still the one on record).
    pub fn fetch_failure(
        &mut self,
        reducer: AttemptId,
        map_index: u32,
        map_attempt: AttemptId,
        now: Instant,
    ) {
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
            // The run again goes to another worker where one is live: a worker whose map
            // outputs cannot be fetched (a hung disk, a shuffle service that stalls) may still
            // heartbeat and run maps, and would make the same unfetchable output again.
            if let Some(w) = task.winner.as_ref().and_then(|w| w.worker) {
                task.failed_on.push(w);
            }
            task.output_lost(now);
            job.tally_stale();
            map_lost(
                &mut job.lost_outputs,
                &self.metrics,
                &mut self.outbox,
                job_id,
                map_index,
            );
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

    pub(super) fn end_job(
        &mut self,
        job_id: JobId,
        state: JobState,
        error: String,
        now: Instant,
    ) -> Vec<Action> {
        let at_ms = self.unix_ms(now);
        let Some(job) = self.jobs.get_mut(&job_id) else {
            return Vec::new();
        };
        if job.state.is_over() {
            return Vec::new();
        }
        self.outbox.push(Record::Ended {
            job: job_id,
            state,
            error: Some(error.clone()),
            at_ms,
        });
        tracing::warn!(job = %job_id, ?state, %error, "job ended");
        self.metrics.job_ended(state.name());
        job.state = state;
        job.error = Some(error);
        job.finished = Some(now);
        job.finished_ms = at_ms;
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

    pub(super) fn release_shuffle(&mut self, job_id: JobId) {
        if let Some(job) = self.jobs.get(&job_id) {
            for w in &job.shuffle_workers {
                if let Some(w) = self.workers.get_mut(w) {
                    w.cleanups.push(job_id);
                }
            }
        }
    }
}
