//! The tally: which of a job's tasks are pending, running and done, so that placement reads
//! the few tasks it may start instead of scanning every task of a 100,000-map job on every
//! heartbeat.
//!
//! The frequent moves keep it exact as they happen: an attempt starts (pending to running),
//! a map wins (running to done), a reduce wins (running to committing) and commits (to done).
//! Every rarer move (a failure, a lost output, a replayed journal, a reclaimed output) marks it
//! stale, and it is rebuilt from the tasks before it is next read. A periodic check
//! ([`Job::check_tally`]) rebuilds it anyway and says so if it had drifted: a move that
//! forgot to mark it costs a second's delay, never a task that is not run.
//!
//! May touch: the tally only.

use std::collections::BTreeSet;

use super::*;

/// A job's tasks by state, per kind (indexed by [`kind_slot`]: maps, then reduces).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Tally {
    /// Pending tasks, in index order.
    pending: [BTreeSet<u32>; 2],
    /// Pending maps by each storage host of their split.
    pending_on: HashMap<String, BTreeSet<u32>>,
    /// Running tasks (not committing), in index order.
    running: [BTreeSet<u32>; 2],
    /// Done tasks.
    done: [usize; 2],
    /// Some task's state changed without the tally: rebuild before reading.
    pub(super) stale: bool,
}

pub(super) fn kind_slot(kind: TaskKind) -> usize {
    match kind {
        TaskKind::Map => 0,
        TaskKind::Reduce => 1,
    }
}

impl Tally {
    /// A tally to be built from the tasks when first read.
    pub(super) fn stale() -> Tally {
        Tally {
            stale: true,
            ..Tally::default()
        }
    }

    /// The tally of `job`'s tasks as they are.
    fn of(job: &Job) -> Tally {
        let mut t = Tally::default();
        for kind in [TaskKind::Map, TaskKind::Reduce] {
            for (i, task) in job.tasks(kind).iter().enumerate() {
                t.add(job, kind, i as u32, task.state);
            }
        }
        t
    }

    fn add(&mut self, job: &Job, kind: TaskKind, index: u32, state: TaskState) {
        let k = kind_slot(kind);
        match state {
            TaskState::Pending => {
                self.pending[k].insert(index);
                if kind == TaskKind::Map {
                    for h in &job.splits[index as usize].hosts {
                        self.pending_on.entry(h.clone()).or_default().insert(index);
                    }
                }
            }
            TaskState::Running => {
                self.running[k].insert(index);
            }
            TaskState::Committing(_) => {}
            TaskState::Done => self.done[k] += 1,
        }
    }

    fn remove(&mut self, job: &Job, kind: TaskKind, index: u32, state: TaskState) {
        let k = kind_slot(kind);
        match state {
            TaskState::Pending => {
                self.pending[k].remove(&index);
                if kind == TaskKind::Map {
                    for h in &job.splits[index as usize].hosts {
                        if let Some(set) = self.pending_on.get_mut(h) {
                            set.remove(&index);
                            if set.is_empty() {
                                self.pending_on.remove(h);
                            }
                        }
                    }
                }
            }
            TaskState::Running => {
                self.running[k].remove(&index);
            }
            TaskState::Committing(_) => {}
            TaskState::Done => self.done[k] -= 1,
        }
    }
}

impl Job {
    /// Moves task `index` of `kind` to `state`, keeping the tally exact (if it is not stale).
    pub(super) fn set_state(&mut self, kind: TaskKind, index: u32, state: TaskState) {
        let old = std::mem::replace(&mut self.tasks_mut(kind)[index as usize].state, state);
        if !self.tally.stale {
            let mut tally = std::mem::take(&mut self.tally);
            tally.remove(self, kind, index, old);
            tally.add(self, kind, index, state);
            self.tally = tally;
        }
    }

    /// Says that task states changed without [`Job::set_state`].
    pub(super) fn tally_stale(&mut self) {
        self.tally.stale = true;
    }

    /// Rebuilds the tally if it is stale; the readers below need it fresh.
    pub(super) fn refresh_tally(&mut self) {
        // Unit tests check every exact tally against the tasks.
        #[cfg(test)]
        if !self.tally.stale {
            assert_eq!(
                self.tally,
                Tally::of(self),
                "the tally of {} drifted",
                self.id
            );
        }
        if self.tally.stale {
            self.tally = Tally::of(self);
        }
    }

    /// Pending tasks of `kind`, in index order.
    pub(super) fn pending_tasks(&self, kind: TaskKind) -> impl Iterator<Item = u32> + '_ {
        debug_assert!(!self.tally.stale, "tally read while stale");
        self.tally.pending[kind_slot(kind)].iter().copied()
    }

    /// Pending maps whose split has a copy on `host`, in index order.
    pub(super) fn pending_maps_on(&self, host: &str) -> impl Iterator<Item = u32> + '_ {
        debug_assert!(!self.tally.stale, "tally read while stale");
        self.tally
            .pending_on
            .get(host)
            .into_iter()
            .flat_map(|set| set.iter().copied())
    }

    /// How many tasks of `kind` are pending.
    pub(super) fn pending_count(&self, kind: TaskKind) -> usize {
        debug_assert!(!self.tally.stale, "tally read while stale");
        self.tally.pending[kind_slot(kind)].len()
    }

    /// How many pending maps have a copy on `host`.
    pub(super) fn pending_count_on(&self, host: &str) -> usize {
        debug_assert!(!self.tally.stale, "tally read while stale");
        self.tally.pending_on.get(host).map_or(0, BTreeSet::len)
    }

    /// Running tasks of `kind` (committing reduces not included), in index order.
    pub(super) fn running_tasks(&self, kind: TaskKind) -> impl Iterator<Item = u32> + '_ {
        debug_assert!(!self.tally.stale, "tally read while stale");
        self.tally.running[kind_slot(kind)].iter().copied()
    }

    /// Whether every task of `kind` is done.
    pub(super) fn all_done(&self, kind: TaskKind) -> bool {
        debug_assert!(!self.tally.stale, "tally read while stale");
        self.tally.done[kind_slot(kind)] == self.tasks(kind).len()
    }

    /// Rebuilds the tally and returns whether it had drifted from the tasks (a bug: some move
    /// changed a state without saying so).
    pub(super) fn check_tally(&mut self) -> bool {
        let truth = Tally::of(self);
        let drifted = !self.tally.stale && self.tally != truth;
        self.tally = truth;
        drifted
    }
}

/// How often [`State::check_tallies`] rebuilds every running job's tally.
const CHECK_EVERY: Duration = Duration::from_secs(10);

impl State {
    /// Every [`CHECK_EVERY`], rebuilds the tallies of running jobs from their tasks, and says
    /// (loudly: it is a bug) if one had drifted. Unit tests fail on it.
    pub(super) fn check_tallies(&mut self, now: Instant) {
        if now.saturating_duration_since(self.tallies_checked) < CHECK_EVERY {
            return;
        }
        self.tallies_checked = now;
        for job in self
            .jobs
            .values_mut()
            .filter(|j| j.state == JobState::Running)
        {
            if job.check_tally() {
                tracing::error!(job = %job.id, "placement's tally of task states had drifted; rebuilt");
                assert!(!cfg!(test), "the tally of {} drifted", job.id);
            }
        }
    }
}
