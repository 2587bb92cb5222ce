//! Schedules and backfills in the coordinator state: which logical times fire, the history
//! of each schedule, and backfills over past ranges. Everything here is journaled, so a
//! restarted coordinator knows which (schedule, logical time) pairs have run.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use protocol::{JobId, JobSpec};
use serde::{Deserialize, Serialize};

use super::{Action, JobState, State};
use crate::journal::Record;
use crate::schedule::{
    catch_up, show, Compiled, Concurrency, Logical, Reprocess, ScheduleError, ScheduleSpec,
};

/// Priority of backfill jobs: below every scheduled or submitted job.
pub const BACKFILL_PRIORITY: i32 = -10;

/// Where a job came from, when a schedule or a backfill started it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// The schedule.
    pub schedule: String,
    /// The logical time the job runs for.
    pub logical: Logical,
    /// The backfill that started it, if one did.
    pub backfill: Option<u64>,
}

/// A logical time that did not start a job: skipped by policy, or failed to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// The first logical time of the range.
    pub logical: Logical,
    /// The last one (the same for a single time).
    pub through: Logical,
    /// How many logical times the range holds.
    pub count: u64,
    /// Why: "skipped: ..." or "failed to start: ...".
    pub note: String,
    /// The backfill this happened in, if any.
    pub backfill: Option<u64>,
    /// When (ms since the Unix epoch; 0 in journals from before it was kept).
    #[serde(default)]
    pub at_ms: u64,
}

/// A schedule and what it has done.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// The checked definition.
    pub compiled: Compiled,
    /// Paused schedules fire nothing; times passing meanwhile are caught up on resume by
    /// the catch-up policy.
    pub paused: bool,
    /// The last logical time decided (run or skipped): nothing at or before it fires again.
    pub cursor: Option<Logical>,
    /// Logical times that started no job.
    pub skips: Vec<Skip>,
    /// Logical times whose final failure the webhook was told of, with the failure count.
    pub notified: BTreeSet<(Logical, u32)>,
    /// How the runs of jobs no longer kept (`--keep-jobs`) ended, by logical time: what
    /// they decided (a time that ran does not run again) outlives them.
    pub forgotten: BTreeMap<Logical, JobState>,
}

/// A notice for a schedule's webhook: a logical time failed for good.
#[derive(Clone, Debug)]
pub struct FailureNotice {
    /// Where it goes.
    pub url: String,
    /// `{"schedule", "logical_time", "failures", "error", "job", "output"}`.
    pub body: serde_json::Value,
}

/// What the schedule's own runs (not backfills) of one logical time came to.
#[derive(Debug, Default)]
struct Tally {
    /// Runs that failed, and firings that failed to start.
    failures: u32,
    /// A run is active.
    running: bool,
    /// When the latest one ended, and its error if it failed (None: succeeded or killed).
    last: Option<(u64, Option<(String, Option<JobId>)>)>,
}

impl Tally {
    fn ended(&mut self, at_ms: u64, failed: Option<(String, Option<JobId>)>) {
        if failed.is_some() {
            self.failures += 1;
        }
        if self.last.as_ref().is_none_or(|(t, _)| at_ms >= *t) {
            self.last = Some((at_ms, failed));
        }
    }

    /// The error of a time whose latest run failed and none is active.
    fn failed(&self) -> Option<(u64, &(String, Option<JobId>))> {
        match &self.last {
            Some((at, Some(f))) if !self.running => Some((*at, f)),
            _ => None,
        }
    }
}

/// A backfill: a schedule's template over a list of past logical times.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backfill {
    /// Its id.
    pub id: u64,
    /// The schedule.
    pub schedule: String,
    /// The logical times to run, in order.
    pub times: Vec<Logical>,
    /// At most this many of its jobs run at once.
    pub max_active: u32,
    /// The reprocess mode it was started with.
    pub reprocess: Reprocess,
    /// Cancelled as a whole.
    pub cancelled: bool,
    /// How its runs of jobs no longer kept ended (rebuilt from the journal's `Submitted`,
    /// `Ended` and `Forgotten` records, so not journaled itself).
    #[serde(skip)]
    pub forgotten: BTreeMap<Logical, JobState>,
}

/// The logical times of one schedule due at a tick, found outside the state lock (a long
/// outage of a frequent schedule can make this walk long).
#[derive(Clone, Debug)]
pub struct Due {
    /// The schedule.
    pub name: String,
    /// Its cursor when the walk started.
    pub cursor: Option<Logical>,
    /// The due times, in order.
    pub times: Vec<Logical>,
}

/// Walks each schedule's due logical times at `now` (no lock needed).
pub fn compute_due(work: Vec<(Compiled, Option<Logical>)>, now: DateTime<Utc>) -> Vec<Due> {
    work.into_iter()
        .map(|(c, cursor)| Due {
            name: c.spec.name.clone(),
            cursor,
            times: c.due(cursor, now),
        })
        .filter(|d| !d.times.is_empty())
        .collect()
}

/// A job that a schedule or backfill wants started (planned and submitted outside the lock).
#[derive(Clone, Debug)]
pub struct Firing {
    /// Where it comes from.
    pub origin: Origin,
    /// The expanded job, or why the template could not be expanded.
    pub spec: Result<JobSpec, ScheduleError>,
    /// Whether an existing output must be removed first (a backfill under `--reprocess all`).
    pub replace_output: bool,
}

/// One line of a schedule's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The logical time (the first of a skipped range).
    pub logical: Logical,
    /// The last logical time of a skipped range.
    pub through: Logical,
    /// How many logical times the line stands for.
    pub count: u64,
    /// The job, for a run.
    pub job: Option<JobId>,
    /// "running", "succeeded", "failed", "killed", "skipped" or "failed to start".
    pub state: String,
    /// Run time so far, or in all.
    pub duration_ms: u64,
    /// The output directory, for a run.
    pub output: String,
    /// Why it was skipped, or how it failed.
    pub note: String,
    /// The backfill it belongs to.
    pub backfill: Option<u64>,
}

impl State {
    /// Adds a schedule; times before `start` (default: `now`, in the schedule's zone) never
    /// run.
    ///
    /// # Errors
    /// A [`ScheduleError`] for a bad definition or a name in use.
    pub fn add_schedule(
        &mut self,
        mut spec: ScheduleSpec,
        now: DateTime<Utc>,
    ) -> Result<(), ScheduleError> {
        if self.schedules.contains_key(&spec.name) {
            return Err(ScheduleError(format!(
                "a schedule named {:?} exists; remove it first",
                spec.name
            )));
        }
        let compiled = Compiled::new_schedule(spec.clone())?;
        if spec.start.is_none() {
            spec.start = Some(compiled.local(now));
        }
        spec.on_failure.since_ms = super::unix_ms_now();
        let compiled = Compiled::new(spec.clone())?;
        self.outbox
            .push(Record::ScheduleAdded { spec: spec.clone() });
        tracing::info!(schedule = %spec.name, cron = %spec.cron, tz = %spec.tz, "schedule added");
        self.schedules.insert(
            spec.name.clone(),
            Schedule {
                compiled,
                paused: false,
                cursor: None,
                skips: Vec::new(),
                notified: BTreeSet::new(),
                forgotten: BTreeMap::new(),
            },
        );
        Ok(())
    }

    /// Changes a schedule's definition in place: its history, cursor and pause state stay,
    /// so times it ran do not run again; a spec without a start keeps the old start. False
    /// if there is no schedule of that name.
    pub fn update_schedule(&mut self, mut spec: ScheduleSpec) -> Result<bool, ScheduleError> {
        let Some(old) = self.schedules.get(&spec.name) else {
            return Ok(false);
        };
        if spec.start.is_none() {
            spec.start = old.compiled.spec.start;
        }
        let old_policy = &old.compiled.spec.on_failure;
        spec.on_failure.since_ms = if spec.on_failure.webhook == old_policy.webhook {
            old_policy.since_ms
        } else {
            super::unix_ms_now()
        };
        Compiled::new_schedule(spec.clone())?;
        let compiled = Compiled::new(spec.clone())?;
        self.outbox
            .push(Record::ScheduleUpdated { spec: spec.clone() });
        tracing::info!(schedule = %spec.name, cron = %spec.cron, tz = %spec.tz, "schedule changed");
        if let Some(s) = self.schedules.get_mut(&spec.name) {
            s.compiled = compiled;
        }
        Ok(true)
    }

    /// Removes a schedule (its jobs, running or not, stay); false if there is none.
    pub fn remove_schedule(&mut self, name: &str) -> bool {
        let found = self.schedules.remove(name).is_some();
        if found {
            self.outbox.push(Record::ScheduleRemoved {
                name: name.to_string(),
            });
            for b in self.backfills.values_mut().filter(|b| b.schedule == name) {
                b.cancelled = true;
            }
        }
        found
    }

    /// Pauses or resumes a schedule; false if there is none.
    pub fn pause_schedule(&mut self, name: &str, paused: bool) -> bool {
        let Some(s) = self.schedules.get_mut(name) else {
            return false;
        };
        s.paused = paused;
        self.outbox.push(Record::SchedulePaused {
            name: name.to_string(),
            paused,
        });
        true
    }

    /// Returns a schedule.
    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules.get(name)
    }

    /// Returns every schedule, by name.
    pub fn schedules(&self) -> impl Iterator<Item = &Schedule> {
        self.schedules.values()
    }

    /// Jobs started for `schedule` (by it or its backfills), oldest first.
    fn jobs_of<'a>(&'a self, schedule: &'a str) -> impl Iterator<Item = &'a super::Job> + 'a {
        self.jobs
            .values()
            .filter(move |j| j.origin.as_ref().is_some_and(|o| o.schedule == schedule))
    }

    /// Decides which logical times of every schedule are due at `now`: returns the jobs to
    /// start and the actions (killing runs replaced under `--concurrency replace`).
    pub fn schedule_tick(
        &mut self,
        now: DateTime<Utc>,
        mono: std::time::Instant,
    ) -> (Vec<Firing>, Vec<Action>) {
        let due = compute_due(self.due_work(), now);
        self.apply_due(due, now, mono)
    }

    /// What [`compute_due`] needs, taken under the state lock: each active schedule with
    /// its cursor.
    pub fn due_work(&self) -> Vec<(Compiled, Option<Logical>)> {
        self.schedules
            .values()
            .filter(|s| !s.paused)
            .map(|s| (s.compiled.clone(), s.cursor))
            .collect()
    }

    /// Applies due times found by [`compute_due`] (outside the lock): returns the jobs to
    /// start and the actions. A schedule changed meanwhile (removed, paused, its cursor moved)
    /// is left for the next tick.
    pub fn apply_due(
        &mut self,
        due: Vec<Due>,
        now: DateTime<Utc>,
        mono: std::time::Instant,
    ) -> (Vec<Firing>, Vec<Action>) {
        let mut firings = Vec::new();
        let mut actions = Vec::new();
        for Due {
            name,
            cursor,
            times: due,
        } in due
        {
            let Some(s) = self.schedules.get(&name) else {
                continue;
            };
            if s.paused || s.cursor != cursor {
                continue;
            }
            let Some(&last) = due.last() else {
                continue;
            };
            let c = s.compiled.clone();
            let (run, skipped) = catch_up(
                &due,
                |t| c.instant(t),
                now,
                c.spec.catchup,
                c.spec.max_catchup,
            );
            if let (Some(first), Some(through)) = (skipped.first(), skipped.last()) {
                let note = format!(
                    "skipped: missed while the coordinator was down or the schedule paused (--catchup {})",
                    c.spec.catchup.name()
                );
                tracing::warn!(schedule = %name, from = %show(*first), through = %show(*through), count = skipped.len(), "missed logical times skipped");
                self.record_skip(
                    &name,
                    Skip {
                        logical: *first,
                        through: *through,
                        count: skipped.len() as u64,
                        note,
                        backfill: None,
                        at_ms: 0,
                    },
                );
            }
            for t in run {
                if let Some(firing) = self.fire_due(&name, &c, t, mono, &mut actions) {
                    firings.push(firing);
                }
            }
            if let Some(s) = self.schedules.get_mut(&name) {
                s.cursor = Some(s.cursor.map_or(last, |c| c.max(last)));
            }
        }
        (firings, actions)
    }

    /// One due logical time `t` of schedule `name`: its firing, unless `--concurrency
    /// forbid` skips it while a run is active; under `replace` the active runs are killed
    /// (their actions added to `actions`).
    fn fire_due(
        &mut self,
        name: &str,
        c: &Compiled,
        t: Logical,
        mono: std::time::Instant,
        actions: &mut Vec<Action>,
    ) -> Option<Firing> {
        let active: Vec<JobId> = self
            .jobs_of(name)
            .filter(|j| !j.state.is_over())
            .map(|j| j.id)
            .collect();
        match (c.spec.concurrency, active.is_empty()) {
            (Concurrency::Forbid, false) => {
                let ids: Vec<String> = active.iter().map(|j| j.to_string()).collect();
                let note = format!(
                    "skipped: {} still running (--concurrency forbid)",
                    ids.join(", ")
                );
                let skip = Skip {
                    logical: t,
                    through: t,
                    count: 1,
                    note,
                    backfill: None,
                    at_ms: 0,
                };
                self.record_skip(name, skip);
                return None;
            }
            (Concurrency::Replace, false) => {
                for j in active {
                    tracing::info!(schedule = %name, job = %j, "replacing the active run");
                    let why = format!(
                        "replaced by the run for {} (--concurrency replace)",
                        show(t)
                    );
                    actions.extend(self.kill_with(j, why, mono).unwrap_or_default());
                }
            }
            _ => {}
        }
        Some(Firing {
            origin: Origin {
                schedule: name.to_string(),
                logical: t,
                backfill: None,
            },
            spec: c.expand(t).map(|spec| self.chained(c, t, spec)),
            replace_output: false,
        })
    }

    /// For an incremental schedule, `spec` (of logical time `t`) continues from the output of
    /// the schedule's last successful run before `t`, if any (a first run, or one after
    /// every earlier run failed, runs in full). Re-processing a time recomputes it from the
    /// run before it, so a chain is right whatever order its times run in.
    fn chained(&self, c: &Compiled, t: Logical, mut spec: JobSpec) -> JobSpec {
        if !c.spec.incremental {
            return spec;
        }
        let base = self
            .jobs_of(&c.spec.name)
            .filter(|j| j.state == JobState::Succeeded && j.spec.output != spec.output)
            .filter_map(|j| Some((j.origin.as_ref()?.logical, j)))
            .filter(|(l, _)| *l < t)
            .max_by_key(|(l, j)| (*l, j.id));
        if let Some((_, j)) = base {
            spec.from = j.spec.output.clone();
        }
        spec
    }

    fn record_skip(&mut self, name: &str, mut skip: Skip) {
        skip.at_ms = super::unix_ms_now();
        self.outbox.push(Record::ScheduleSkipped {
            name: name.to_string(),
            skip: skip.clone(),
        });
        if let Some(s) = self.schedules.get_mut(name) {
            if skip.backfill.is_none() {
                s.cursor = Some(s.cursor.map_or(skip.through, |c| c.max(skip.through)));
            }
            s.skips.push(skip);
        }
    }

    /// Records that a firing could not start its job (its template or its input plan failed).
    pub fn firing_failed(&mut self, origin: &Origin, error: &str) {
        tracing::warn!(schedule = %origin.schedule, logical = %show(origin.logical), %error, "scheduled run failed to start");
        self.record_skip(
            &origin.schedule.clone(),
            Skip {
                logical: origin.logical,
                through: origin.logical,
                count: 1,
                note: format!("failed to start: {error}"),
                backfill: origin.backfill,
                at_ms: 0,
            },
        );
    }

    /// Whether a firing may still start: its schedule (and backfill) exist and are live.
    pub fn firing_wanted(&self, origin: &Origin) -> bool {
        self.schedules.contains_key(&origin.schedule)
            && origin
                .backfill
                .is_none_or(|b| self.backfills.get(&b).is_some_and(|b| !b.cancelled))
    }

    /// Starts a backfill of `times`; returns its id.
    pub fn start_backfill(
        &mut self,
        schedule: &str,
        times: Vec<Logical>,
        max_active: u32,
        reprocess: Reprocess,
    ) -> u64 {
        self.next_backfill += 1;
        let b = Backfill {
            id: self.next_backfill,
            schedule: schedule.to_string(),
            times,
            max_active: max_active.max(1),
            reprocess,
            cancelled: false,
            forgotten: BTreeMap::new(),
        };
        tracing::info!(
            backfill = b.id,
            schedule,
            times = b.times.len(),
            "backfill started"
        );
        self.outbox.push(Record::BackfillStarted {
            backfill: b.clone(),
        });
        self.backfills.insert(b.id, b);
        self.next_backfill
    }

    /// Cancels a backfill: no more of its times start and its running jobs are killed.
    ///
    /// # Errors
    /// No such backfill, or one that has finished: finished things are final, and cancelling
    /// a done backfill must not turn it into a cancelled one.
    pub fn cancel_backfill(
        &mut self,
        id: u64,
        mono: std::time::Instant,
    ) -> Result<Vec<Action>, CancelBackfillError> {
        let (_, finished, _, _, total) = self
            .backfill_progress(id)
            .ok_or(CancelBackfillError::NotFound { id })?;
        let b = self
            .backfills
            .get_mut(&id)
            .ok_or(CancelBackfillError::NotFound { id })?;
        if b.cancelled || finished == total {
            return Err(CancelBackfillError::Over {
                id,
                state: if b.cancelled { "cancelled" } else { "finished" },
            });
        }
        b.cancelled = true;
        self.outbox.push(Record::BackfillCancelled { id });
        let running: Vec<JobId> = self
            .jobs
            .values()
            .filter(|j| {
                !j.state.is_over() && j.origin.as_ref().is_some_and(|o| o.backfill == Some(id))
            })
            .map(|j| j.id)
            .collect();
        let mut actions = Vec::new();
        for j in running {
            actions.extend(
                self.kill_with(j, format!("backfill {id} cancelled"), mono)
                    .unwrap_or_default(),
            );
        }
        Ok(actions)
    }

    /// The logical times of a backfill that have started (a job or a failure to start).
    fn backfill_started(&self, id: u64, schedule: &str) -> BTreeSet<Logical> {
        let mut done: BTreeSet<Logical> = self
            .jobs_of(schedule)
            .filter_map(|j| j.origin.as_ref())
            .filter(|o| o.backfill == Some(id))
            .map(|o| o.logical)
            .collect();
        if let Some(b) = self.backfills.get(&id) {
            done.extend(b.forgotten.keys());
        }
        if let Some(s) = self.schedules.get(schedule) {
            done.extend(
                s.skips
                    .iter()
                    .filter(|k| k.backfill == Some(id))
                    .map(|k| k.logical),
            );
        }
        done
    }

    /// Progress of a backfill: (started, finished, failed, running, total).
    pub fn backfill_progress(&self, id: u64) -> Option<(usize, usize, usize, usize, usize)> {
        let b = self.backfills.get(&id)?;
        let jobs: Vec<&super::Job> = self
            .jobs_of(&b.schedule)
            .filter(|j| j.origin.as_ref().is_some_and(|o| o.backfill == Some(id)))
            .collect();
        let failed_to_start = self.schedules.get(&b.schedule).map_or(0, |s| {
            s.skips.iter().filter(|k| k.backfill == Some(id)).count()
        });
        let running = jobs.iter().filter(|j| !j.state.is_over()).count();
        let succeeded = jobs
            .iter()
            .filter(|j| j.state == JobState::Succeeded)
            .count()
            + b.forgotten
                .values()
                .filter(|s| **s == JobState::Succeeded)
                .count();
        let ran = jobs.len() + b.forgotten.len();
        let failed = ran - running - succeeded + failed_to_start;
        let started = ran + failed_to_start;
        Some((started, succeeded + failed, failed, running, b.times.len()))
    }

    /// Every backfill, by id.
    pub fn backfills(&self) -> impl Iterator<Item = &Backfill> {
        self.backfills.values()
    }

    /// The next logical times of running backfills to start, up to each one's `max_active`.
    pub fn backfill_tick(&mut self) -> Vec<Firing> {
        let mut out = Vec::new();
        for b in self.backfills.values().filter(|b| !b.cancelled) {
            let Some(s) = self.schedules.get(&b.schedule) else {
                continue;
            };
            let running = self
                .jobs_of(&b.schedule)
                .filter(|j| {
                    !j.state.is_over()
                        && j.origin.as_ref().is_some_and(|o| o.backfill == Some(b.id))
                })
                .count();
            let started = self.backfill_started(b.id, &b.schedule);
            let room = (b.max_active as usize).saturating_sub(running);
            for &t in b.times.iter().filter(|t| !started.contains(t)).take(room) {
                let spec = s.compiled.expand(t).map(|mut spec| {
                    spec.priority = BACKFILL_PRIORITY;
                    self.chained(&s.compiled, t, spec)
                });
                out.push(Firing {
                    origin: Origin {
                        schedule: b.schedule.clone(),
                        logical: t,
                        backfill: Some(b.id),
                    },
                    spec,
                    replace_output: b.reprocess == Reprocess::All,
                });
            }
        }
        out
    }

    /// What the schedule's own runs of each logical time came to (backfills aside).
    fn tallies(&self, name: &str) -> BTreeMap<Logical, Tally> {
        let mut out: BTreeMap<Logical, Tally> = BTreeMap::new();
        for j in self.jobs_of(name) {
            let Some(o) = j.origin.as_ref().filter(|o| o.backfill.is_none()) else {
                continue;
            };
            let t = out.entry(o.logical).or_default();
            match j.state {
                s if !s.is_over() => t.running = true,
                JobState::Failed => {
                    let error = j.error.clone().unwrap_or_default();
                    t.ended(j.finished_ms, Some((error, Some(j.id))));
                }
                // Succeeded, or killed on purpose: nothing to retry.
                _ => t.ended(j.finished_ms, None),
            }
        }
        if let Some(s) = self.schedules.get(name) {
            for k in &s.skips {
                if k.backfill.is_none() && k.note.starts_with("failed to start") {
                    let t = out.entry(k.logical).or_default();
                    t.ended(k.at_ms, Some((k.note.clone(), None)));
                }
            }
        }
        out
    }

    /// Drops a finished job from the state (`--keep-jobs`), keeping what a schedule or
    /// backfill that started it needs: the time it ran stays run (the schedule's cursor,
    /// its outcomes) and the backfill's time stays started, with its outcome counted.
    pub(super) fn forget_job(&mut self, job: JobId) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        let Some(o) = j.origin else {
            return;
        };
        if let Some(s) = self.schedules.get_mut(&o.schedule) {
            s.forgotten.insert(o.logical, j.state);
            if o.backfill.is_none() {
                s.cursor = Some(s.cursor.map_or(o.logical, |c| c.max(o.logical)));
            }
        }
        if let Some(b) = o.backfill.and_then(|id| self.backfills.get_mut(&id)) {
            b.forgotten.insert(o.logical, j.state);
        }
    }

    /// Retries due at `now_ms` (wall clock): each logical time whose latest own run failed,
    /// with failures left under `--retries`, `--retry-delay` after it failed. Under
    /// `--concurrency forbid` a retry waits while another run of the schedule is active.
    pub fn retry_tick(&self, now_ms: u64) -> Vec<Firing> {
        let mut out = Vec::new();
        for s in self.schedules.values().filter(|s| !s.paused) {
            let c = &s.compiled;
            let policy = &c.spec.on_failure;
            if policy.retries == 0 {
                continue;
            }
            let busy = self.jobs_of(&c.spec.name).any(|j| !j.state.is_over());
            if busy && c.spec.concurrency == Concurrency::Forbid {
                continue;
            }
            for (t, tally) in self.tallies(&c.spec.name) {
                let Some((at_ms, _)) = tally.failed() else {
                    continue;
                };
                if tally.failures > policy.retries
                    || at_ms.saturating_add(policy.retry_delay_s.saturating_mul(1000)) > now_ms
                {
                    continue;
                }
                tracing::info!(schedule = %c.spec.name, logical = %show(t), failures = tally.failures, "retrying a failed logical time");
                out.push(Firing {
                    origin: Origin {
                        schedule: c.spec.name.clone(),
                        logical: t,
                        backfill: None,
                    },
                    spec: c.expand(t).map(|spec| self.chained(c, t, spec)),
                    replace_output: true,
                });
            }
        }
        out
    }

    /// Notices for the webhooks: logical times whose latest own run failed with no retry
    /// left, not announced yet and failed since the webhook was set. Each is journaled as
    /// announced before it is sent (at most once).
    pub fn notify_tick(&mut self) -> Vec<FailureNotice> {
        let mut out = Vec::new();
        let mut told = Vec::new();
        for s in self.schedules.values() {
            let c = &s.compiled;
            let policy = &c.spec.on_failure;
            if policy.webhook.is_empty() {
                continue;
            }
            for (t, tally) in self.tallies(&c.spec.name) {
                let Some((at_ms, (error, job))) = tally.failed() else {
                    continue;
                };
                if tally.failures <= policy.retries
                    || at_ms < policy.since_ms
                    || s.notified.contains(&(t, tally.failures))
                {
                    continue;
                }
                told.push((c.spec.name.clone(), t, tally.failures));
                out.push(FailureNotice {
                    url: policy.webhook.clone(),
                    body: serde_json::json!({
                        "schedule": c.spec.name,
                        "logical_time": show(t),
                        "failures": tally.failures,
                        "error": error,
                        "job": job.map(|j| j.to_string()),
                        "output": c.expand(t).map(|s| s.output).unwrap_or_default(),
                    }),
                });
            }
        }
        for (name, logical, failures) in told {
            self.outbox.push(Record::ScheduleNotified {
                name: name.clone(),
                logical,
                failures,
            });
            if let Some(s) = self.schedules.get_mut(&name) {
                s.notified.insert((logical, failures));
            }
        }
        out
    }

    /// The latest state of each logical time of `schedule` that ran or failed to start (a
    /// failure to start reads as failed).
    pub fn outcomes(&self, schedule: &str) -> BTreeMap<Logical, JobState> {
        let mut out = BTreeMap::new();
        if let Some(s) = self.schedules.get(schedule) {
            out.extend(s.forgotten.iter().map(|(t, st)| (*t, *st)));
            for k in s.skips.iter().filter(|k| k.note.starts_with("failed")) {
                out.insert(k.logical, JobState::Failed);
            }
        }
        for j in self.jobs_of(schedule) {
            if let Some(o) = &j.origin {
                out.insert(o.logical, j.state);
            }
        }
        out
    }

    /// A schedule's history, oldest logical time first.
    pub fn history(&self, schedule: &str, now: std::time::Instant) -> Vec<HistoryEntry> {
        let mut out = Vec::new();
        if let Some(s) = self.schedules.get(schedule) {
            for k in &s.skips {
                out.push(HistoryEntry {
                    logical: k.logical,
                    through: k.through,
                    count: k.count,
                    job: None,
                    state: if k.note.starts_with("failed") {
                        "failed to start".into()
                    } else {
                        "skipped".into()
                    },
                    duration_ms: 0,
                    output: String::new(),
                    note: k.note.clone(),
                    backfill: k.backfill,
                });
            }
        }
        for j in self.jobs_of(schedule) {
            let o = j.origin.as_ref().expect("jobs_of has an origin");
            out.push(HistoryEntry {
                logical: o.logical,
                through: o.logical,
                count: 1,
                job: Some(j.id),
                state: j.state.name().to_string(),
                duration_ms: j
                    .finished
                    .unwrap_or(now)
                    .duration_since(j.submitted)
                    .as_millis() as u64,
                output: j.spec.output.clone(),
                note: j.error.clone().unwrap_or_default(),
                backfill: o.backfill,
            });
        }
        out.sort_by(|a, b| (a.logical, a.job).cmp(&(b.logical, b.job)));
        out
    }

    /// Replays a schedule record of the journal.
    pub(super) fn replay_schedule(&mut self, r: Record) {
        match r {
            Record::ScheduleAdded { spec } => match Compiled::new(spec) {
                Ok(compiled) => {
                    self.schedules.insert(
                        compiled.spec.name.clone(),
                        Schedule {
                            compiled,
                            paused: false,
                            cursor: None,
                            skips: Vec::new(),
                            notified: BTreeSet::new(),
                            forgotten: BTreeMap::new(),
                        },
                    );
                }
                Err(e) => tracing::error!(error = %e, "journaled schedule no longer valid"),
            },
            Record::ScheduleUpdated { spec } => match Compiled::new(spec) {
                Ok(compiled) => {
                    if let Some(s) = self.schedules.get_mut(&compiled.spec.name) {
                        s.compiled = compiled;
                    }
                }
                Err(e) => tracing::error!(error = %e, "journaled schedule no longer valid"),
            },
            Record::ScheduleRemoved { name } => {
                self.schedules.remove(&name);
            }
            Record::ScheduleNotified {
                name,
                logical,
                failures,
            } => {
                if let Some(s) = self.schedules.get_mut(&name) {
                    s.notified.insert((logical, failures));
                }
            }
            Record::SchedulePaused { name, paused } => {
                if let Some(s) = self.schedules.get_mut(&name) {
                    s.paused = paused;
                }
            }
            Record::ScheduleSkipped { name, skip } => {
                if let Some(s) = self.schedules.get_mut(&name) {
                    if skip.backfill.is_none() {
                        s.cursor = Some(s.cursor.map_or(skip.through, |c| c.max(skip.through)));
                    }
                    s.skips.push(skip);
                }
            }
            Record::BackfillStarted { backfill } => {
                self.next_backfill = self.next_backfill.max(backfill.id);
                self.backfills.insert(backfill.id, backfill);
            }
            Record::BackfillCancelled { id } => {
                if let Some(b) = self.backfills.get_mut(&id) {
                    b.cancelled = true;
                }
            }
            _ => {}
        }
    }

    /// After replay: a schedule's cursor also covers the times its jobs ran for.
    pub(super) fn settle_cursors(&mut self) {
        let ran: Vec<(String, Logical)> = self
            .jobs
            .values()
            .filter_map(|j| j.origin.as_ref())
            .filter(|o| o.backfill.is_none())
            .map(|o| (o.schedule.clone(), o.logical))
            .collect();
        for (name, t) in ran {
            if let Some(s) = self.schedules.get_mut(&name) {
                s.cursor = Some(s.cursor.map_or(t, |c| c.max(t)));
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// Why a backfill cannot be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelBackfillError {
    /// There is no such backfill.
    #[error("no backfill {id}")]
    NotFound {
        /// The backfill asked for.
        id: u64,
    },
    /// It is over already.
    #[error("backfill {id} is already {state}")]
    Over {
        /// The backfill.
        id: u64,
        /// `finished` or `cancelled`.
        state: &'static str,
    },
}
