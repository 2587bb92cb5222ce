use std::time::Instant;

use chrono::{TimeZone, Utc};

use super::*;
use crate::schedule::{parse_logical, Catchup};
use crate::state::{Epoch, Timeouts};

fn t(s: &str) -> Logical {
    parse_logical(s).unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    Utc.from_utc_datetime(&t(s))
}

fn hourly(catchup: Catchup, max_catchup: u32, concurrency: Concurrency) -> ScheduleSpec {
    ScheduleSpec {
        name: "hourly".into(),
        cron: "0 * * * *".into(),
        tz: "UTC".into(),
        template: JobSpec::new("views", vec!["logs/{{date}}/{{hour}}".into()], "out/{{ts}}"),
        catchup,
        max_catchup,
        concurrency,
        start: Some(t("2026-01-01T00:00")),
        incremental: false,
        on_failure: Default::default(),
    }
}

/// Ticks at `now` and submits what fires; returns the logical times started.
fn tick(s: &mut State, now: &str) -> Vec<Logical> {
    let (firings, _) = s.schedule_tick(utc(now), Instant::now());
    let mut out = Vec::new();
    for f in firings {
        let spec = f.spec.unwrap();
        s.submit_with(spec, Vec::new(), Some(f.origin.clone()), Instant::now());
        out.push(f.origin.logical);
    }
    out
}

fn hours(from: &str, n: i64) -> Vec<Logical> {
    (0..n)
        .map(|h| t(from) + chrono::Duration::hours(h))
        .collect()
}

fn finish_all(s: &mut State) {
    let running: Vec<JobId> = s
        .jobs
        .values()
        .filter(|j| !j.state.is_over())
        .map(|j| j.id)
        .collect();
    for j in running {
        s.end_job(j, JobState::Succeeded, String::new(), Instant::now());
    }
}

fn skipped(s: &State) -> u64 {
    s.schedule("hourly")
        .unwrap()
        .skips
        .iter()
        .map(|k| k.count)
        .sum()
}

fn state_with(spec: ScheduleSpec) -> State {
    let mut s = State::new(Epoch(1), Timeouts::default(), std::time::Instant::now());
    s.add_schedule(spec, utc("2026-01-01T00:00")).unwrap();
    s
}

#[test]
fn catch_up_after_downtime_under_each_policy() {
    // Down from just after 00:00 until 05:00:10: 01:00-05:00 are due at once.
    for (catchup, max, runs, skips) in [
        (Catchup::None, 0, hours("2026-01-01T05:00", 1), 4),
        (Catchup::Latest, 0, hours("2026-01-01T05:00", 1), 4),
        (Catchup::All, 0, hours("2026-01-01T01:00", 5), 0),
        (Catchup::All, 2, hours("2026-01-01T04:00", 2), 3),
    ] {
        let mut s = state_with(hourly(catchup, max, Concurrency::Allow));
        assert_eq!(
            tick(&mut s, "2026-01-01T00:00:05"),
            hours("2026-01-01T00:00", 1)
        );
        assert_eq!(
            tick(&mut s, "2026-01-01T05:00:10"),
            runs,
            "{catchup:?} {max}"
        );
        assert_eq!(skipped(&s), skips, "{catchup:?} {max}");
        // Every logical time is accounted for, once.
        let h = s.history("hourly", Instant::now());
        assert_eq!(h.iter().map(|e| e.count).sum::<u64>(), 6);
    }
    // Found late (05:40), `none` runs nothing: 05:00 is past its grace.
    let mut s = state_with(hourly(Catchup::None, 0, Concurrency::Allow));
    tick(&mut s, "2026-01-01T00:00:05");
    assert_eq!(tick(&mut s, "2026-01-01T05:40"), vec![]);
    assert_eq!(skipped(&s), 5);
}

#[test]
fn a_clock_that_jumps_never_reruns_a_logical_time() {
    let mut s = state_with(hourly(Catchup::All, 0, Concurrency::Allow));
    assert_eq!(tick(&mut s, "2026-01-01T03:00:01").len(), 4);
    // Back two hours, then forward to where it was: nothing runs again.
    assert_eq!(tick(&mut s, "2026-01-01T01:00:01"), vec![]);
    assert_eq!(tick(&mut s, "2026-01-01T03:30"), vec![]);
    // Forward a day: the missed times run (policy all), each once.
    let ran = tick(&mut s, "2026-01-02T03:00:01");
    assert_eq!(ran, hours("2026-01-01T04:00", 24));
    assert_eq!(s.jobs.len(), 28);
}

#[test]
fn overlap_policies_with_a_run_longer_than_its_interval() {
    // forbid: the 01:00 firing is skipped while 00:00 runs.
    let mut s = state_with(hourly(Catchup::Latest, 0, Concurrency::Forbid));
    assert_eq!(tick(&mut s, "2026-01-01T00:00:01").len(), 1);
    assert_eq!(tick(&mut s, "2026-01-01T01:00:01"), vec![]);
    let h = s.history("hourly", Instant::now());
    assert!(h[1].note.contains("job-1 still running"), "{h:?}");
    finish_all(&mut s);
    assert_eq!(tick(&mut s, "2026-01-01T02:00:01").len(), 1);

    // replace: the 00:00 run is killed and 01:00 starts.
    let mut s = state_with(hourly(Catchup::Latest, 0, Concurrency::Replace));
    tick(&mut s, "2026-01-01T00:00:01");
    assert_eq!(tick(&mut s, "2026-01-01T01:00:01").len(), 1);
    let h = s.history("hourly", Instant::now());
    assert_eq!(
        (h[0].state.as_str(), h[1].state.as_str()),
        ("killed", "running")
    );
    assert!(h[0]
        .note
        .contains("replaced by the run for 2026-01-01T01:00:00"));

    // allow: both run.
    let mut s = state_with(hourly(Catchup::Latest, 0, Concurrency::Allow));
    tick(&mut s, "2026-01-01T00:00:01");
    tick(&mut s, "2026-01-01T01:00:01");
    let h = s.history("hourly", Instant::now());
    assert!(h.iter().all(|e| e.state == "running") && h.len() == 2);
}

#[test]
fn schedules_and_their_runs_survive_a_restart_without_a_second_run() {
    let mut s = state_with(hourly(Catchup::All, 0, Concurrency::Allow));
    tick(&mut s, "2026-01-01T02:00:01");
    s.pause_schedule("hourly", true);
    let records = s.take_records();
    // A coordinator killed mid-run comes back: the same runs, the same cursor, no refire.
    let (mut r, _) = State::recover(Epoch(2), Timeouts::default(), records, Instant::now());
    assert!(r.schedule("hourly").unwrap().paused);
    assert_eq!(r.jobs.len(), 3);
    r.pause_schedule("hourly", false);
    assert_eq!(tick(&mut r, "2026-01-01T02:30"), vec![]);
    assert_eq!(
        tick(&mut r, "2026-01-01T03:00:01"),
        hours("2026-01-01T03:00", 1)
    );
}

#[test]
fn a_paused_schedule_fires_nothing_and_catches_up_on_resume() {
    let mut s = state_with(hourly(Catchup::Latest, 0, Concurrency::Allow));
    s.pause_schedule("hourly", true);
    assert_eq!(tick(&mut s, "2026-01-01T03:00:01"), vec![]);
    s.pause_schedule("hourly", false);
    assert_eq!(
        tick(&mut s, "2026-01-01T03:00:02"),
        hours("2026-01-01T03:00", 1)
    );
    assert_eq!(skipped(&s), 3);
}

#[test]
fn a_backfill_runs_at_most_max_active_at_a_lower_priority_and_can_be_cancelled() {
    let mut s = state_with(hourly(Catchup::Latest, 0, Concurrency::Allow));
    let times = hours("2025-12-01T00:00", 5);
    let id = s.start_backfill("hourly", times.clone(), 2, Reprocess::None);
    let submit = |s: &mut State| {
        let fs = s.backfill_tick();
        for f in &fs {
            assert_eq!(f.spec.as_ref().unwrap().priority, BACKFILL_PRIORITY);
            s.submit_with(
                f.spec.clone().unwrap(),
                Vec::new(),
                Some(f.origin.clone()),
                Instant::now(),
            );
        }
        fs.len()
    };
    assert_eq!(submit(&mut s), 2);
    assert_eq!(submit(&mut s), 0, "max-active 2");
    finish_all(&mut s);
    assert_eq!(submit(&mut s), 2);
    assert_eq!(s.backfill_progress(id), Some((4, 2, 0, 2, 5)));
    s.cancel_backfill(id, Instant::now()).unwrap();
    assert_eq!(submit(&mut s), 0);
    let (started, finished, failed, running, total) = s.backfill_progress(id).unwrap();
    assert_eq!((started, finished, failed, running, total), (4, 4, 2, 0, 5));
    assert!(
        matches!(
            s.cancel_backfill(id, Instant::now()),
            Err(CancelBackfillError::Over {
                state: "cancelled",
                ..
            })
        ),
        "a cancelled backfill stays as it is"
    );
}

#[test]
fn a_duplicate_schedule_name_is_refused() {
    let mut s = state_with(hourly(Catchup::Latest, 0, Concurrency::Allow));
    let e = s
        .add_schedule(
            hourly(Catchup::Latest, 0, Concurrency::Allow),
            utc("2026-01-01"),
        )
        .unwrap_err();
    assert!(e.0.contains("exists"), "{e}");
}

#[test]
fn due_times_walked_outside_the_lock_apply_once() {
    let mut s = state_with(hourly(Catchup::All, 0, Concurrency::Allow));
    let now = utc("2026-01-01T02:00:01");
    let due = compute_due(s.due_work(), now);
    let (firings, _) = s.apply_due(due.clone(), now, Instant::now());
    assert_eq!(firings.len(), 3);
    // The same walk applied again (a stale result) starts nothing: the cursor moved.
    let (again, _) = s.apply_due(due, now, Instant::now());
    assert!(again.is_empty());
}

#[test]
fn runs_of_forgotten_jobs_stay_run_for_their_schedule_and_backfill() {
    let mut timeouts = Timeouts::default();
    timeouts.keep_jobs = 1;
    let mut s = State::new(Epoch(1), timeouts, Instant::now());
    s.add_schedule(
        hourly(Catchup::All, 0, Concurrency::Allow),
        utc("2026-01-01T00:00"),
    )
    .unwrap();
    // Three scheduled runs and a backfill of three times, all finished; all but one job
    // forgotten.
    assert_eq!(tick(&mut s, "2026-01-01T02:00:01").len(), 3);
    let id = s.start_backfill("hourly", hours("2025-12-01T00:00", 3), 3, Reprocess::None);
    for f in s.backfill_tick() {
        s.submit_with(f.spec.unwrap(), Vec::new(), Some(f.origin), Instant::now());
    }
    finish_all(&mut s);
    assert_eq!(s.prune_history(), 5);
    assert_eq!(s.jobs.len(), 1);
    let check = |s: &mut State| {
        assert!(
            s.backfill_tick().is_empty(),
            "a forgotten backfill time runs again"
        );
        assert_eq!(s.backfill_progress(id), Some((3, 3, 0, 0, 3)));
        assert_eq!(s.outcomes("hourly").len(), 6);
        assert_eq!(
            tick(s, "2026-01-01T02:30"),
            vec![],
            "a forgotten run fires again"
        );
    };
    check(&mut s);
    // The same after a restart: the journal holds the forgotten jobs' records.
    let records = s.take_records();
    let (mut r, _) = State::recover(Epoch(2), timeouts, records.clone(), Instant::now());
    assert_eq!(r.jobs.len(), 1);
    check(&mut r);
    // And from the compacted journal, which keeps only what the forgotten jobs' runs need.
    let compacted = crate::journal::compact(records);
    let (mut c, _) = State::recover(Epoch(3), timeouts, compacted, Instant::now());
    assert_eq!(c.jobs.len(), 1);
    check(&mut c);
}
