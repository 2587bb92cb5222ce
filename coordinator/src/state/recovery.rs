//! The journal side of the state: records of changes, and a new incarnation rebuilt from them.

use super::*;

impl State {
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
        let mut s = State::new(epoch, timeouts, now);
        for r in records {
            s.replay(r, now);
        }
        // Replay set task states directly.
        for job in s.jobs.values_mut() {
            job.tally_stale();
        }
        s.settle_cursors();
        // Records replayed above are already in the journal.
        s.outbox.clear();
        let actions = s.resume_recovered();
        (s, actions)
    }

    /// Applies one journal record to the state being rebuilt.
    fn replay(&mut self, r: Record, now: Instant) {
        match r {
            Record::Submitted {
                job,
                spec,
                splits,
                coverage,
                not_read,
                origin,
                at_ms,
            } => {
                self.next_job = self.next_job.max(job.0);
                let plan = jobs::plan::Plan {
                    splits,
                    coverage,
                    full_because: None,
                    not_read,
                };
                let id = self.submit_with(spec, plan, origin, now);
                if let Some(j) = self.jobs.get_mut(&id) {
                    j.submitted_ms = at_ms;
                }
            }
            Record::MapDone {
                job,
                index,
                attempt,
                counters,
                local,
            } => self.replay_winner(
                job,
                TaskKind::Map,
                index,
                attempt,
                counters,
                local,
                (None, None),
            ),
            Record::ReduceDone {
                job,
                index,
                attempt,
                counters,
                part,
                state,
            } => self.replay_winner(
                job,
                TaskKind::Reduce,
                index,
                attempt,
                counters,
                true,
                (Some(part), state),
            ),
            Record::Forgotten { job } => self.forget_job(job),
            Record::Listed { job, records } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.listed.extend(records);
                }
            }
            Record::MapLost { job, index } => {
                if let Some(t) = self.task_mut(job, TaskKind::Map, index) {
                    t.state = TaskState::Pending;
                    t.winner = None;
                }
            }
            Record::Publishing { .. } => {}
            r @ (Record::ScheduleAdded { .. }
            | Record::ScheduleUpdated { .. }
            | Record::ScheduleRemoved { .. }
            | Record::SchedulePaused { .. }
            | Record::ScheduleSkipped { .. }
            | Record::ScheduleNotified { .. }
            | Record::BackfillStarted { .. }
            | Record::BackfillCancelled { .. }) => self.replay_schedule(r),
            Record::Ended {
                job,
                state,
                error,
                at_ms,
            } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.state = state;
                    j.error = error;
                    j.finished = Some(now);
                    j.finished_ms = at_ms;
                }
            }
        }
    }

    fn task_mut(&mut self, job: JobId, kind: TaskKind, index: u32) -> Option<&mut Task> {
        self.jobs
            .get_mut(&job)?
            .tasks_mut(kind)
            .get_mut(index as usize)
    }

    /// A journaled winner: done, its worker unknown until one reclaims a map's output.
    #[allow(clippy::too_many_arguments)]
    fn replay_winner(
        &mut self,
        job: JobId,
        kind: TaskKind,
        index: u32,
        attempt: AttemptId,
        counters: Counters,
        local: bool,
        (part, state): (Option<PartInfo>, Option<PartInfo>),
    ) {
        if let Some(t) = self.task_mut(job, kind, index) {
            t.state = TaskState::Done;
            t.winner = Some(Winner {
                attempt,
                worker: None,
                counters,
                local,
                part,
                state,
                replaced_at: None,
            });
        }
    }

    /// Counts what each running job got back from the journal, and publishes those whose
    /// reduces had all committed before the crash.
    fn resume_recovered(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        for job in self
            .jobs
            .values_mut()
            .filter(|j| j.state == JobState::Running)
        {
            let done = |ts: &[Task]| ts.iter().filter(|t| t.state == TaskState::Done).count();
            let (maps, reduces) = (done(&job.maps), done(&job.reduces));
            tracing::info!(job = %job.id, maps_recovered = maps, reduces_recovered = reduces, "job recovered from the journal");
            job.recovered_maps = maps as u64;
            if reduces == job.reduces.len() {
                actions.push(Self::start_publishing(job, &mut self.outbox));
            }
        }
        actions
    }
}
