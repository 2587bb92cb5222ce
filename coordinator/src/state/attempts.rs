//! Successful attempts and the commit protocol: the first success of a task wins (a map's
//! output stays on its worker; a reduce's part is renamed into place through an
//! [`Action::Commit`]), and once every reduce committed the job is published.
//!
//! May touch: a task's winner and state, job counters and parts, the journal outbox.

use super::*;

impl State {
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
        // A job's history is in start order, so in attempt-id order.
        self.jobs.values().any(|j| {
            let Ok(at) = j.history.binary_search_by_key(&attempt, |r| r.attempt) else {
                return false;
            };
            let r = &j.history[at];
            j.tasks(r.kind)[r.index as usize]
                .winner
                .as_ref()
                .is_some_and(|w| w.attempt == attempt)
        })
    }

    /// Ends an attempt: forgets it and takes it off its task's running list. Returns it if it
    /// was known and its job still exists.
    pub(super) fn finish_attempt(
        &mut self,
        attempt: AttemptId,
        outcome: Outcome,
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
        // The history is in start order, so in attempt-id order.
        if let Ok(at) = job.history.binary_search_by_key(&attempt, |r| r.attempt) {
            let r = &mut job.history[at];
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
        self.report_success_with_state(attempt, counters, (part, None), now)
    }

    /// As [`State::report_success`], for a reduce of a job that keeps state: `files` is the
    /// size and CRC32 of its staged part file and of its staged state file.
    pub fn report_success_with_state(
        &mut self,
        attempt: AttemptId,
        counters: Counters,
        files: (Option<(u64, u32)>, Option<(u64, u32)>),
        now: Instant,
    ) -> Vec<Action> {
        let Some(a) = self.finish_attempt(attempt, Outcome::Succeeded, "", now) else {
            return Vec::new();
        };
        let job = &self.jobs[&a.job];
        let output = job.spec.output.clone();
        let state = job.tasks(a.kind)[a.index as usize].state;
        let staged = || staging_path(&output, attempt, a.index);
        if job.state != JobState::Running
            || matches!(state, TaskState::Done | TaskState::Committing(_))
        {
            tracing::debug!(%attempt, "late or duplicate success ignored");
            return match a.kind {
                TaskKind::Reduce => vec![Action::DeleteStaged { path: staged() }],
                TaskKind::Map => Vec::new(),
            };
        }
        self.win(&a, attempt, counters, files, now);
        if a.kind == TaskKind::Map {
            return Vec::new();
        }
        if let Some(error) = self.over_output_quota(a.job) {
            let mut actions = vec![Action::DeleteStaged { path: staged() }];
            actions.extend(self.end_job(a.job, JobState::Failed, error, now));
            return actions;
        }
        let to = jobs::output::committed_path(&output, a.index);
        vec![Action::Commit {
            job: a.job,
            index: a.index,
            attempt,
            state: files.1.map(|_| {
                (
                    jobs::output::state_staging(&staged()),
                    jobs::output::state_staging(&to),
                )
            }),
            from: staged(),
            to,
        }]
    }

    /// Makes `attempt` its task's winner: a map is done (journaled), a reduce commits next;
    /// other attempts of the task (a backup or the original) are cancelled.
    fn win(
        &mut self,
        a: &Attempt,
        attempt: AttemptId,
        counters: Counters,
        (part, state): (Option<(u64, u32)>, Option<(u64, u32)>),
        now: Instant,
    ) {
        if a.kind == TaskKind::Map {
            self.outbox.push(Record::MapDone {
                job: a.job,
                index: a.index,
                attempt,
                counters: counters.clone(),
                local: a.local,
            });
        }
        let ran = now.duration_since(a.started);
        self.metrics.attempt_won(a.kind.name(), ran, &counters);
        let job = self.jobs.get_mut(&a.job).expect("the attempt's job");
        job.durations.entry(a.kind).or_default().push(ran);
        let task = &mut job.tasks_mut(a.kind)[a.index as usize];
        // Losses count toward --max-lost-attempts from a task's last success: a map run
        // again because its output died with a worker starts afresh.
        task.lost = 0;
        task.winner = Some(Winner {
            attempt,
            worker: Some(a.worker),
            counters,
            local: a.local,
            part: part.map(|(bytes, crc32)| PartInfo {
                name: part_name(a.index),
                bytes,
                crc32,
            }),
            state: state.map(|(bytes, crc32)| PartInfo {
                name: part_name(a.index),
                bytes,
                crc32,
            }),
            replaced_at: None,
        });
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
        job.set_state(a.kind, a.index, state);
    }

    /// Why the job must fail if its parts so far are more than one job may write.
    fn over_output_quota(&self, job: JobId) -> Option<String> {
        let quota = self.timeouts.max_job_output;
        let written: u64 = self.jobs[&job]
            .reduces
            .iter()
            .filter_map(|t| t.winner.as_ref()?.part.as_ref().map(|p| p.bytes))
            .sum();
        (quota > 0 && written > quota).then(|| {
            format!(
                "output quota exceeded: the job wrote {written} bytes, more than the {quota} one job may write (coordinator --max-job-output)"
            )
        })
    }

    /// Records the outcome of a commit rename; when the last reduce commits, returns the
    /// action publishing the job.
    pub fn commit_done(
        &mut self,
        job_id: JobId,
        index: u32,
        attempt: AttemptId,
        result: Result<(), ActionFailed>,
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
                        state: w.state.clone(),
                    });
                }
                job.set_state(TaskKind::Reduce, index, TaskState::Done);
            }
            Err(e) => {
                task.winner = None;
                job.set_state(TaskKind::Reduce, index, TaskState::Pending);
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

    pub(super) fn start_publishing(job: &mut Job, outbox: &mut Vec<Record>) -> Action {
        job.state = JobState::Publishing;
        outbox.push(Record::Publishing { job: job.id });
        let parts = job
            .reduces
            .iter()
            .filter_map(|t| t.winner.as_ref()?.part.clone())
            .collect();
        let state = job
            .reduces
            .iter()
            .filter_map(|t| t.winner.as_ref()?.state.clone())
            .collect();
        Action::Publish {
            job: job.id,
            output: job.spec.output.clone(),
            manifest: Manifest::of(
                &job.spec,
                parts,
                state,
                job.coverage.clone(),
                job.not_read.clone(),
            ),
            skipped: [job.skipped.clone(), job.listed.clone()].concat(),
        }
    }

    /// Records the outcome of publishing a job's output.
    pub fn publish_done(
        &mut self,
        job_id: JobId,
        result: Result<(), ActionFailed>,
        now: Instant,
    ) -> Vec<Action> {
        match result {
            Ok(()) => {
                let at_ms = self.unix_ms(now);
                if let Some(job) = self.jobs.get_mut(&job_id) {
                    job.state = JobState::Succeeded;
                    job.finished = Some(now);
                    job.finished_ms = at_ms;
                    self.metrics.job_ended("succeeded");
                    self.outbox.push(Record::Ended {
                        job: job_id,
                        state: JobState::Succeeded,
                        error: None,
                        at_ms,
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
}
