use super::*;

fn spec(maps: usize, reducers: u32) -> (JobSpec, Vec<PlannedSplit>) {
    let mut s = JobSpec::new("views", vec!["in".into()], "out");
    s.reducers = reducers;
    s.max_attempts = 2;
    let splits = (0..maps)
        .map(|i| PlannedSplit {
            split: jobs::split::Split::range("in", i as u64 * 10, i as u64 * 10 + 10),
            file_len: maps as u64 * 10,
            hosts: vec![if i % 2 == 0 { "a".into() } else { "b".into() }],
            state: false,
        })
        .collect();
    (s, splits)
}

fn state() -> State {
    State::new(Epoch(1), Timeouts::default(), Instant::now())
}

/// A state with worker `a:1` on host `a`, registered at `now`.
fn one_worker(now: Instant) -> (State, WorkerId) {
    let mut s = state();
    let a = s.register_worker("a:1".into(), "a".into(), now);
    (s, a)
}

/// A state with workers `a:1` on host `a` and `b:1` on host `b`, registered at `now`.
fn two_workers(now: Instant) -> (State, WorkerId, WorkerId) {
    let (mut s, a) = one_worker(now);
    let b = s.register_worker("b:1".into(), "b".into(), now);
    (s, a, b)
}

fn ids(resp: &pb::HeartbeatResponse) -> Vec<(i32, u32, AttemptId)> {
    resp.assignments
        .iter()
        .map(|a| (a.kind, a.index, AttemptId(a.attempt_id)))
        .collect()
}

#[test]
fn maps_go_to_free_slots_data_local_first_then_reduces_after_all_maps() {
    let now = Instant::now();
    let mut s = state();
    let wb = s.register_worker("b:1".into(), "b".into(), now);
    let (sp, splits) = spec(4, 2);
    let job = s.submit(sp, splits, now);
    let got = ids(&s.heartbeat(wb, 1, now));
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, 1, "the first split on host b is picked first");
    let rest = ids(&s.heartbeat(wb, 10, now));
    assert_eq!(
        rest.len(),
        3,
        "no reduce before every map is done: {rest:?}"
    );
    for (_, _, a) in got.iter().chain(&rest) {
        assert!(s
            .report_success(*a, Counters::default(), None, Instant::now())
            .is_empty());
    }
    let reduces = s.heartbeat(wb, 10, now);
    assert_eq!(reduces.assignments.len(), 2);
    assert_eq!(reduces.assignments[0].map_outputs.len(), 4);
    let st = s.status(job, now).unwrap();
    assert_eq!((st.maps_done, st.reduces_done), (4, 0));
    let c = st.counters.unwrap().values;
    assert_eq!((c["data_local_maps"], c["remote_maps"]), (2, 2));
}

#[test]
fn exactly_one_reduce_attempt_commits_and_late_reports_change_nothing() {
    let now = Instant::now();
    let (mut s, w) = one_worker(now);
    let (sp, splits) = spec(1, 1);
    let job = s.submit(sp, splits, now);
    let m = ids(&s.heartbeat(w, 1, now))[0].2;
    s.report_success(m, Counters::default(), None, Instant::now());
    let r = ids(&s.heartbeat(w, 1, now))[0].2;
    let actions = s.report_success(r, Counters::default(), Some((5, 9)), Instant::now());
    assert!(matches!(&actions[..], [Action::Commit { attempt, .. }] if *attempt == r));
    // A duplicate report of the same attempt is ignored.
    assert!(s
        .report_success(r, Counters::default(), Some((5, 9)), Instant::now())
        .is_empty());
    let publish = s.commit_done(job, 0, r, Ok(()), now);
    let [Action::Publish { manifest, .. }] = &publish[..] else {
        panic!("{publish:?}")
    };
    assert_eq!(
        manifest.parts,
        vec![PartInfo {
            name: "part-00000".into(),
            bytes: 5,
            crc32: 9
        }]
    );
    s.publish_done(job, Ok(()), now);
    assert_eq!(
        s.status(job, now).unwrap().state,
        pb::JobState::Succeeded as i32
    );
}

#[test]
fn retryable_failures_retry_until_the_cap_then_fail_the_job_naming_the_task() {
    let now = Instant::now();
    let (mut s, w) = one_worker(now);
    let (sp, splits) = spec(1, 1);
    let job = s.submit(sp, splits, now);
    let a1 = ids(&s.heartbeat(w, 1, now))[0].2;
    assert!(s
        .report_failure(a1, FailureKind::Retryable, "boom", None, now)
        .is_empty());
    let a2 = ids(&s.heartbeat(w, 1, now))[0].2;
    assert_ne!(a1, a2);
    let actions = s.report_failure(a2, FailureKind::Retryable, "boom again", None, now);
    assert!(matches!(&actions[..], [Action::Discard { .. }]));
    let st = s.status(job, now).unwrap();
    assert_eq!(st.state, pb::JobState::Failed as i32);
    assert!(
        st.error.contains("map 0 failed 2 attempts") && st.error.contains("boom again"),
        "{}",
        st.error
    );
    assert!(st.error.contains(&w.to_string()), "{}", st.error);
    assert!(s.heartbeat(w, 1, now).assignments.is_empty());
}

#[test]
fn an_assignment_a_later_heartbeat_does_not_list_is_lost_and_runs_again() {
    let now = Instant::now();
    // One lost attempt counted would fail the job.
    let timeouts = Timeouts {
        max_lost_attempts: 1,
        ..Timeouts::default()
    };
    let mut s = State::new(Epoch(1), timeouts, now);
    let w = s.register_worker("a:1".into(), "a".into(), now);
    let (sp, splits) = spec(2, 1);
    let job = s.submit(sp, splits, now);
    // Heartbeat 1's answer assigns a map; heartbeat 2 lists it: it runs.
    let (r1, _, lost) = s.heartbeat_numbered(w, 1, &[], 1, now);
    let [(_, first, a1)] = ids(&r1)[..] else {
        panic!("{r1:?}")
    };
    assert_eq!(lost, 0);
    let (r2, _, lost) = s.heartbeat_numbered(w, 2, &[a1.0], 1, now);
    let [(_, second, a2)] = ids(&r2)[..] else {
        panic!("{r2:?}")
    };
    assert_eq!(lost, 0);
    assert_ne!(first, second);
    // Heartbeat 2's answer never arrived: heartbeat 3 lists only the first attempt. The
    // second is lost (not a failure, and not counted against the task's lost attempts) and
    // its map is assigned again, in the same answer.
    let (r3, _, lost) = s.heartbeat_numbered(w, 3, &[a1.0], 1, now);
    assert_eq!(lost, 1);
    let [(_, again, a3)] = ids(&r3)[..] else {
        panic!("{r3:?}")
    };
    assert_eq!(again, second);
    assert_ne!(a3, a2);
    // Should it run after all, it is cancelled.
    assert_eq!(r3.cancel_attempts, vec![a2.0]);
    // A late heartbeat (numbered below one heard) gets nothing and loses nothing.
    let (late, _, lost) = s.heartbeat_numbered(w, 2, &[], 1, now);
    assert_eq!((late.assignments.len(), lost), (0, 0));
    // The same heartbeat heard again (held for work) is not checked again.
    let (_, _, lost) = s.heartbeat_numbered(w, 3, &[], 1, now);
    assert_eq!(lost, 0);
    let st = s.status(job, now).unwrap();
    assert_eq!(st.state, pb::JobState::Running as i32);
    // Unnumbered heartbeats (0) are not checked.
    let (_, _, lost) = s.heartbeat_numbered(w, 0, &[], 1, now);
    assert_eq!(lost, 0);
}

#[test]
fn a_dead_worker_loses_its_attempts_and_its_unfetched_map_outputs() {
    let t0 = Instant::now();
    let (mut s, w1) = one_worker(t0);
    let (sp, splits) = spec(2, 1);
    let job = s.submit(sp, splits, t0);
    let first = ids(&s.heartbeat(w1, 1, t0))[0].2;
    s.report_success(first, Counters::default(), None, Instant::now());
    let second = ids(&s.heartbeat(w1, 1, t0))[0].2;
    let t1 = t0 + Duration::from_secs(11);
    let w2 = s.register_worker("b:1".into(), "b".into(), t1);
    s.expire_workers(t1);
    assert!(!s.is_current(w1, Epoch(1)));
    // Both maps run again on the live worker; the late report of the lost attempt is ignored.
    assert!(s
        .report_success(second, Counters::default(), None, Instant::now())
        .is_empty());
    let again = ids(&s.heartbeat(w2, 10, t1));
    assert_eq!(
        again.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![1, 0],
        "the split local to b first"
    );
    assert_eq!(s.status(job, t1).unwrap().maps_done, 0);
}

#[test]
fn a_fetch_failure_reruns_the_map_and_requeues_the_reduce() {
    let now = Instant::now();
    let (mut s, w) = one_worker(now);
    let (sp, splits) = spec(1, 1);
    let job = s.submit(sp, splits, now);
    let m = ids(&s.heartbeat(w, 1, now))[0].2;
    s.report_success(m, Counters::default(), None, Instant::now());
    // Below the threshold a report only requeues the reducer; the map output stands.
    for _ in 1..DEFAULT_FETCH_FAILURE_THRESHOLD {
        let r = ids(&s.heartbeat(w, 1, now))[0];
        assert_eq!(r.0, pb::TaskKind::Reduce as i32);
        s.fetch_failure(r.2, 0, m, Instant::now());
        s.report_failure(r.2, FailureKind::LostInput, "cannot fetch map 0", None, now);
    }
    let r = ids(&s.heartbeat(w, 1, now))[0].2;
    s.fetch_failure(r, 0, m, Instant::now());
    s.report_failure(r, FailureKind::LostInput, "cannot fetch map 0", None, now);
    let next = ids(&s.heartbeat(w, 2, now));
    assert_eq!(next.len(), 1, "only the map runs again: {next:?}");
    assert_eq!(next[0].0, pb::TaskKind::Map as i32);
    let st = s.status(job, now).unwrap();
    assert_eq!(st.state, pb::JobState::Running as i32);
    let c = st.counters.unwrap().values;
    assert_eq!(
        c["fetch_failures"],
        u64::from(DEFAULT_FETCH_FAILURE_THRESHOLD)
    );
    // A report against the lost output (the map's old attempt) changes nothing more.
    s.fetch_failure(r, 0, m, Instant::now());
    assert_eq!(ids(&s.heartbeat(w, 2, now)).len(), 0);
}

#[test]
fn a_map_whose_output_could_not_be_fetched_runs_again_on_another_worker() {
    let now = Instant::now();
    let (mut s, a, b) = two_workers(now);
    let (sp, splits) = spec(1, 1);
    s.submit(sp, splits, now);
    // The map (local to host a) runs on a; every reduce attempt fails to fetch it.
    let m = ids(&s.heartbeat(a, 1, now))[0].2;
    s.report_success(m, Counters::default(), None, now);
    for _ in 0..DEFAULT_FETCH_FAILURE_THRESHOLD {
        let r = ids(&s.heartbeat(b, 1, now))[0].2;
        s.fetch_failure(r, 0, m, now);
        s.report_failure(r, FailureKind::LostInput, "cannot fetch map 0", None, now);
    }
    // a still heartbeats and has a free slot, but the map goes to b at once: off its host,
    // without a locality wait for a host whose only worker it avoids.
    assert!(ids(&s.heartbeat(a, 1, now)).is_empty());
    let again = ids(&s.heartbeat(b, 1, now));
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0, pb::TaskKind::Map as i32);
}

#[test]
fn killing_a_job_cancels_its_running_attempts() {
    let now = Instant::now();
    let (mut s, w) = one_worker(now);
    let (sp, splits) = spec(2, 1);
    let job = s.submit(sp, splits, now);
    let running = ids(&s.heartbeat(w, 2, now));
    assert!(s.kill(job, now).is_some());
    assert!(s.kill(job, now).is_none());
    let resp = s.heartbeat(w, 2, now);
    let mut cancelled = resp.cancel_attempts.clone();
    cancelled.sort();
    assert_eq!(
        cancelled,
        running.iter().map(|a| a.2 .0).collect::<Vec<_>>()
    );
    assert!(resp.assignments.is_empty());
    assert_eq!(resp.finished_jobs, vec![job.0]);
}

#[test]
fn delay_scheduling_waits_for_the_worker_beside_the_data_then_gives_up() {
    let t0 = Instant::now();
    let (mut s, wa, wb) = two_workers(t0);
    // Two slots beside a: its two splits are no backlog (see the test below).
    s.set_worker_slots(wa, 2, 0);
    let (sp, splits) = spec(4, 1);
    let job = s.submit(sp, splits, t0);
    // b takes its own two splits and is not given a's.
    let b = ids(&s.heartbeat(wb, 4, t0));
    assert_eq!(b.iter().map(|a| a.1).collect::<Vec<_>>(), vec![1, 3]);
    assert!(ids(&s.heartbeat(wb, 4, t0 + Duration::from_secs(1))).is_empty());
    // a arrives in time and runs one of its splits locally.
    let a = ids(&s.heartbeat(wa, 1, t0 + Duration::from_secs(2)));
    assert_eq!(a.iter().map(|a| a.1).collect::<Vec<_>>(), vec![0]);
    // The last split of a waits, then runs on b once the wait is over.
    assert!(ids(&s.heartbeat(wb, 4, t0 + Duration::from_secs(3))).is_empty());
    let late = ids(&s.heartbeat(wb, 4, t0 + Duration::from_secs(7)));
    assert_eq!(late.iter().map(|a| a.1).collect::<Vec<_>>(), vec![2]);
    for (_, _, attempt) in b.iter().chain(&a).chain(&late) {
        s.report_success(*attempt, Counters::default(), None, Instant::now());
    }
    let c = s.status(job, t0).unwrap().counters.unwrap().values;
    assert_eq!((c["data_local_maps"], c["remote_maps"]), (3, 1));
}

#[test]
fn an_idle_worker_takes_maps_off_a_host_with_more_pending_maps_than_slots() {
    let t0 = Instant::now();
    let (mut s, wa, wb) = two_workers(t0);
    s.set_worker_slots(wa, 1, 0);
    s.set_worker_slots(wb, 8, 0);
    // Six splits, all beside a, which has one slot; none beside b.
    let (sp, mut splits) = spec(6, 1);
    for split in &mut splits {
        split.hosts = vec!["a".into()];
    }
    let job = s.submit(sp, splits, t0);
    let a = ids(&s.heartbeat(wa, 1, t0));
    assert_eq!(a.iter().map(|a| a.1).collect::<Vec<_>>(), vec![0]);
    // Five wait for a's one slot: b takes them without waiting, until one is left for a.
    let b = ids(&s.heartbeat(wb, 8, t0));
    assert_eq!(b.iter().map(|a| a.1).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    // The last is delay scheduling's case: a's running map ends first.
    assert!(ids(&s.heartbeat(wb, 8, t0 + Duration::from_secs(1))).is_empty());
    for (_, _, attempt) in a.iter().chain(&b) {
        s.report_success(*attempt, Counters::default(), None, Instant::now());
    }
    let last = ids(&s.heartbeat(wa, 1, t0 + Duration::from_secs(2)));
    assert_eq!(last.iter().map(|a| a.1).collect::<Vec<_>>(), vec![5]);
    s.report_success(last[0].2, Counters::default(), None, Instant::now());
    let c = s.status(job, t0).unwrap().counters.unwrap().values;
    assert_eq!(
        (
            c["data_local_maps"],
            c["remote_maps"],
            c["rebalanced_map_attempts"]
        ),
        (2, 4, 4)
    );
}

#[test]
fn a_restarted_coordinator_resumes_from_its_journal_without_rerunning_finished_maps() {
    let t0 = Instant::now();
    let timeouts = Timeouts::default();
    let (mut s, w) = one_worker(t0);
    let (sp, splits) = spec(3, 1);
    let job = s.submit(sp, splits, t0);
    let maps = ids(&s.heartbeat(w, 2, t0));
    for (_, _, a) in &maps {
        s.report_success(
            *a,
            Counters(std::iter::once(("map_input_bytes".to_string(), 10)).collect()),
            None,
            Instant::now(),
        );
    }
    let mut journal = s.take_records();
    assert_eq!(journal.len(), 3, "submitted, then two maps: {journal:?}");

    // Crash. The new incarnation knows the job and its two finished maps.
    let (mut r, unfinished) = State::recover(Epoch(2), timeouts, journal.clone(), t0);
    assert!(unfinished.is_empty());
    assert!(
        r.take_records().is_empty(),
        "replayed records are not written again"
    );
    let st = r.status(job, t0).unwrap();
    assert_eq!((st.state, st.maps_done), (pb::JobState::Running as i32, 2));
    // The worker comes back holding only the first map's output.
    let w2 = r.register_worker("a:2".into(), "a".into(), t0);
    r.claim_outputs(w2, &[(job, maps[0].1, maps[0].2)], t0);
    let next = ids(&r.heartbeat(w2, 10, t0));
    let never = (0..3).find(|i| maps.iter().all(|m| m.1 != *i)).unwrap();
    assert_eq!(
        next.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![never],
        "only the never-finished map runs"
    );
    // The unclaimed output is given up after the worker timeout and its map runs again.
    r.report_success(next[0].2, Counters::default(), None, Instant::now());
    assert!(
        ids(&r.heartbeat(w2, 10, t0)).is_empty(),
        "no reduce while a map output has no home"
    );
    let t1 = t0 + Duration::from_secs(11);
    r.heartbeat(w2, 0, t1);
    r.expire_workers(t1);
    let rerun = ids(&r.heartbeat(w2, 10, t1));
    assert_eq!(
        rerun.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![maps[1].1]
    );
    r.report_success(rerun[0].2, Counters::default(), None, Instant::now());
    let reduce = ids(&r.heartbeat(w2, 10, t1));
    assert_eq!(reduce[0].0, pb::TaskKind::Reduce as i32);
    r.report_success(
        reduce[0].2,
        Counters::default(),
        Some((1, 2)),
        Instant::now(),
    );
    let publish = r.commit_done(job, 0, reduce[0].2, Ok(()), t1);
    assert!(matches!(&publish[..], [Action::Publish { .. }]));
    assert_eq!(
        r.status(job, t1).unwrap().counters.unwrap().values["recovered_maps"],
        2
    );

    // Crash again mid-publish: the next incarnation publishes again (it is idempotent).
    journal.extend(r.take_records());
    let (again, unfinished) = State::recover(Epoch(3), timeouts, journal.clone(), t1);
    assert!(
        matches!(&unfinished[..], [Action::Publish { job: j, .. }] if *j == job),
        "{unfinished:?}"
    );
    assert_eq!(again.status(job, t1).unwrap().reduces_done, 1);
    let mut again = again;
    again.publish_done(job, Ok(()), t1);
    journal.extend(again.take_records());
    let (last, unfinished) = State::recover(Epoch(4), timeouts, journal, t1);
    assert!(unfinished.is_empty());
    assert_eq!(
        last.status(job, t1).unwrap().state,
        pb::JobState::Succeeded as i32
    );
}

#[test]
fn submit_and_end_times_are_journaled_and_the_elapsed_time_survives_a_restart() {
    let t0 = Instant::now();
    let mut s = state();
    let (sp, splits) = spec(2, 1);
    let job = s.submit(sp, splits, t0);
    s.kill(job, t0 + Duration::from_secs(5)).unwrap();
    let st = s.status(job, t0 + Duration::from_secs(9)).unwrap();
    assert_eq!(st.elapsed_ms, 5000);
    assert_eq!(st.finished_unix_ms - st.submitted_unix_ms, 5000);
    assert!(
        st.submitted_unix_ms > 1_700_000_000_000,
        "{}",
        st.submitted_unix_ms
    );

    // A later incarnation replays the journal at another instant: the times are the journal's.
    let later = t0 + Duration::from_secs(100);
    let (r, _) = State::recover(Epoch(2), Timeouts::default(), s.take_records(), later);
    let again = r.status(job, later).unwrap();
    assert_eq!(
        (
            again.elapsed_ms,
            again.submitted_unix_ms,
            again.finished_unix_ms
        ),
        (5000, st.submitted_unix_ms, st.finished_unix_ms)
    );
}

#[test]
fn a_worker_that_fails_three_attempts_of_a_job_gets_no_more_of_it() {
    let now = Instant::now();
    let (mut s, wa, wb) = two_workers(now);
    let (mut sp, mut splits) = spec(4, 1);
    splits.iter_mut().for_each(|s| s.hosts = vec!["a".into()]);
    sp.max_attempts = 10;
    let job = s.submit(sp, splits, now);
    let mut failed = Vec::new();
    for _ in 0..EXCLUDE_AFTER {
        let a = ids(&s.heartbeat(wa, 1, now));
        assert_eq!(a.len(), 1);
        assert!(
            !failed.contains(&a[0].1),
            "a retry goes to another worker while one is free"
        );
        failed.push(a[0].1);
        s.report_failure(a[0].2, FailureKind::Retryable, "disk on fire", None, now);
    }
    assert!(
        s.heartbeat(wa, 4, now).assignments.is_empty(),
        "a is excluded from the job"
    );
    let on_b = ids(&s.heartbeat(wb, 4, now + Duration::from_secs(5)));
    assert_eq!(
        on_b.len(),
        4,
        "b runs every map, including those that failed on a"
    );
    assert_eq!(
        s.status(job, now).unwrap().state,
        pb::JobState::Running as i32
    );
}

#[test]
fn a_straggler_gets_one_backup_and_the_first_to_finish_wins() {
    let t0 = Instant::now();
    let (mut s, wa, wb) = two_workers(t0);
    let (sp, mut splits) = spec(3, 1);
    splits.iter_mut().for_each(|s| s.hosts = vec!["a".into()]);
    let job = s.submit(sp, splits, t0);
    let on_a = ids(&s.heartbeat(wa, 3, t0));
    assert_eq!(on_a.len(), 3);
    // Two maps take 2 s; the third is still running at 15 s.
    let t2 = t0 + Duration::from_secs(2);
    s.report_success(on_a[0].2, Counters::default(), None, t2);
    s.report_success(on_a[1].2, Counters::default(), None, t2);
    let slow = on_a[2];
    assert!(
        ids(&s.heartbeat(wb, 2, t0 + Duration::from_millis(2500))).is_empty(),
        "not yet 1.5 times its peers' median (2 s)"
    );
    let t15 = t0 + Duration::from_secs(15);
    assert!(
        ids(&s.heartbeat(wa, 2, t15)).is_empty(),
        "never a backup on the same worker"
    );
    let backup = ids(&s.heartbeat(wb, 2, t15));
    assert_eq!(backup.iter().map(|a| a.1).collect::<Vec<_>>(), vec![slow.1]);
    assert!(
        ids(&s.heartbeat(wb, 2, t15)).is_empty(),
        "one backup per task"
    );
    // The backup wins: the original is cancelled and its late report changes nothing.
    s.report_success(backup[0].2, Counters::default(), None, t15);
    assert_eq!(s.heartbeat(wa, 0, t15).cancel_attempts, vec![slow.2 .0]);
    assert!(s
        .report_success(slow.2, Counters::default(), None, t15)
        .is_empty());
    assert!(s.is_winner(backup[0].2) && !s.is_winner(slow.2));
    let st = s.status(job, t15).unwrap();
    let c = st.counters.unwrap().values;
    assert_eq!(
        (st.maps_done, c["backup_attempts"], c["remote_maps"]),
        (3, 1, 1)
    );
}

/// The crash test found it: a straggling reduce got a backup while a lost map output was
/// being produced again, and the backup, handed the outputs of the maps done at that moment,
/// reduced part of the input and committed it. No reduce attempt starts before every map
/// output is there again.
#[test]
fn no_backup_reduce_starts_while_a_map_output_is_missing() {
    let t0 = Instant::now();
    let (mut s, wa, wb) = two_workers(t0);
    let wc = s.register_worker("c:1".into(), "c".into(), t0);
    let (sp, mut splits) = spec(2, 2);
    splits.iter_mut().for_each(|s| s.hosts = vec!["a".into()]);
    let job = s.submit(sp, splits, t0);
    let maps = ids(&s.heartbeat(wa, 2, t0));
    assert_eq!(maps.len(), 2);
    let t1 = t0 + Duration::from_secs(1);
    for m in &maps {
        s.report_success(m.2, Counters::default(), None, t1);
    }
    let on_b = ids(&s.heartbeat(wb, 1, t1));
    let on_c = ids(&s.heartbeat(wc, 1, t1));
    assert_eq!((on_b.len(), on_c.len()), (1, 1), "one reduce each");
    // The reduce on b is done in a second; the one on c straggles.
    let t2 = t1 + Duration::from_secs(1);
    for action in s.report_success(on_b[0].2, Counters::default(), Some((0, 0)), t2) {
        if let Action::Commit {
            job,
            index,
            attempt,
            ..
        } = action
        {
            s.commit_done(job, index, attempt, Ok(()), t2);
        }
    }
    // Worker a, which holds both map outputs, goes silent and is declared dead: both maps
    // run again.
    let t = t2 + Duration::from_secs(60);
    s.heartbeat(wc, 0, t);
    s.heartbeat(wb, 0, t);
    s.expire_workers(t);
    assert_eq!(s.status(job, t).unwrap().maps_done, 0);
    let picks = s.heartbeat(wb, 4, t);
    assert!(
        picks
            .assignments
            .iter()
            .all(|a| a.kind == pb::TaskKind::Map as i32),
        "only the maps, no backup reduce: {:?}",
        ids(&picks)
    );
    // Once both are done again, a backup may start, and it is handed both outputs.
    for m in ids(&picks) {
        s.report_success(m.2, Counters::default(), None, t);
    }
    let backup = s.heartbeat(wb, 4, t);
    assert_eq!(backup.assignments.len(), 1, "{:?}", ids(&backup));
    assert_eq!(backup.assignments[0].kind, pb::TaskKind::Reduce as i32);
    assert_eq!(backup.assignments[0].map_outputs.len(), 2);
}

#[test]
fn no_backup_before_the_speculation_floor_however_quick_the_peers() {
    let t0 = Instant::now();
    let (mut s, wa, wb) = two_workers(t0);
    let (sp, mut splits) = spec(2, 1);
    splits.iter_mut().for_each(|s| s.hosts = vec!["a".into()]);
    s.submit(sp, splits, t0);
    let on_a = ids(&s.heartbeat(wa, 2, t0));
    let quick = t0 + Duration::from_millis(50);
    s.report_success(on_a[0].2, Counters::default(), None, quick);
    let floor = Timeouts::default().speculation_floor;
    let before = t0 + floor - Duration::from_millis(100);
    assert!(ids(&s.heartbeat(wb, 2, before)).is_empty());
    let backup = ids(&s.heartbeat(wb, 2, t0 + floor));
    assert_eq!(
        backup.iter().map(|a| a.1).collect::<Vec<_>>(),
        vec![on_a[1].1]
    );
}

#[test]
fn jobs_with_speculation_off_get_no_backups() {
    let t0 = Instant::now();
    let (mut s, wa, wb) = two_workers(t0);
    let (mut sp, mut splits) = spec(2, 1);
    splits.iter_mut().for_each(|s| s.hosts = vec!["a".into()]);
    sp.speculation = false;
    s.submit(sp, splits, t0);
    let on_a = ids(&s.heartbeat(wa, 2, t0));
    s.report_success(
        on_a[0].2,
        Counters::default(),
        None,
        t0 + Duration::from_secs(1),
    );
    assert!(ids(&s.heartbeat(wb, 2, t0 + Duration::from_secs(60))).is_empty());
}

#[test]
fn map_outputs_a_worker_brings_back_are_deleted_once_their_job_is_over() {
    let now = Instant::now();
    let mut s = state();
    let (sp, splits) = spec(1, 1);
    let over = s.submit(sp, splits, now);
    let (sp, splits) = spec(1, 1);
    let running = s.submit(sp, splits, now);
    assert!(s.kill(over, now).is_some());
    // A worker (a zombie, or one outliving a coordinator restart) registers with outputs of
    // a job that is over and a stale output of a running one.
    let w = s.register_worker("b:1".into(), "b".into(), now);
    s.claim_outputs(
        w,
        &[(over, 0, AttemptId(7)), (running, 0, AttemptId(8))],
        now,
    );
    assert_eq!(s.heartbeat(w, 0, now).finished_jobs, vec![over.0]);
    assert!(s.kill(running, now).is_some());
    assert_eq!(s.heartbeat(w, 0, now).finished_jobs, vec![running.0]);
}

#[test]
fn higher_priority_jobs_get_slots_first_so_backfills_never_starve_todays_run() {
    let now = Instant::now();
    let (mut s, w) = one_worker(now);
    let (mut backfill, splits) = spec(2, 1);
    backfill.priority = BACKFILL_PRIORITY;
    let old = s.submit(backfill, splits, now);
    let (today, splits) = spec(2, 1);
    let new = s.submit(today, splits, now);
    let got: Vec<u64> = s
        .heartbeat(w, 2, now)
        .assignments
        .iter()
        .map(|a| a.job_id)
        .collect();
    assert_eq!(got, vec![new.0, new.0], "the older backfill waits");
    let got = s.heartbeat(w, 1, now).assignments;
    assert_eq!(got[0].job_id, old.0, "and gets slots the others leave");
}

#[test]
fn gpu_maps_run_only_in_gpu_slots_where_the_cluster_has_gpus() {
    let now = Instant::now();
    let (mut s, cpu) = one_worker(now);
    s.set_worker_slots(cpu, 8, 0);
    let gpu = s.register_worker("b:1".into(), "b".into(), now);
    s.set_worker_slots(gpu, 8, 1);
    let (mut sp, splits) = spec(4, 1);
    sp.gpu = true;
    sp.speculation = false;
    s.submit(sp, splits, now);
    assert!(
        ids(&s.heartbeat(cpu, 8, now)).is_empty(),
        "a worker without GPUs gets no GPU map"
    );
    let first = ids(&s.heartbeat(gpu, 8, now));
    assert_eq!(first.len(), 1, "one GPU, one GPU map at a time: {first:?}");
    assert!(ids(&s.heartbeat(gpu, 7, now)).is_empty());
    s.report_success(first[0].2, Counters::default(), None, Instant::now());
    assert_eq!(
        ids(&s.heartbeat(gpu, 8, now)).len(),
        1,
        "the freed GPU slot is used again"
    );
    // A job that wants no GPU runs on the worker without one meanwhile.
    let (plain, splits) = spec(1, 1);
    s.submit(plain, splits, now);
    assert_eq!(ids(&s.heartbeat(cpu, 8, now)).len(), 1);
}

#[test]
fn gpu_maps_run_on_cpu_slots_where_no_worker_has_a_gpu() {
    let now = Instant::now();
    let (mut s, w) = one_worker(now);
    s.set_worker_slots(w, 4, 0);
    let (mut sp, splits) = spec(3, 1);
    sp.gpu = true;
    s.submit(sp, splits, now);
    assert_eq!(ids(&s.heartbeat(w, 4, now)).len(), 3);
}

#[test]
fn records_a_winning_map_listed_go_to_the_skip_file_once_and_survive_a_restart() {
    let now = Instant::now();
    let (mut s, w) = one_worker(now);
    let (sp, splits) = spec(1, 1);
    let job = s.submit(sp, splits, now);
    let m = ids(&s.heartbeat(w, 1, now))[0].2;
    let listed = |offset| SkippedRecord {
        path: "in".into(),
        offset,
        message: "bad photo".into(),
    };
    s.add_listed(m, vec![listed(7)]);
    let mut journal = s.take_records();
    assert!(
        journal.iter().all(|r| !matches!(r, Record::Listed { .. })),
        "not a winner yet"
    );
    s.report_success(m, Counters::default(), None, now);
    s.add_listed(m, vec![listed(512), listed(1024)]);
    s.add_listed(m, vec![listed(512)]);
    journal.extend(s.take_records());
    let (mut r, _) = State::recover(Epoch(2), Timeouts::default(), journal, now);
    let w2 = r.register_worker("a:1".into(), "a".into(), now);
    r.claim_outputs(w2, &[(job, 0, m)], now);
    let red = ids(&r.heartbeat(w2, 1, now))[0].2;
    r.report_success(red, Counters::default(), Some((0, 0)), now);
    let publish = r.commit_done(job, 0, red, Ok(()), now);
    let [Action::Publish { skipped, .. }] = &publish[..] else {
        panic!("{publish:?}")
    };
    assert_eq!(
        skipped.iter().map(|r| r.offset).collect::<Vec<_>>(),
        vec![512, 1024]
    );
}

#[test]
fn the_oldest_finished_jobs_beyond_the_retention_are_forgotten_for_good() {
    let now = Instant::now();
    let timeouts = Timeouts {
        keep_jobs: 2,
        ..Timeouts::default()
    };
    let mut s = State::new(Epoch(1), timeouts, Instant::now());
    let w = s.register_worker("a:1".into(), "a".into(), now);
    let mut jobs = Vec::new();
    for _ in 0..4 {
        let (sp, splits) = spec(1, 1);
        let job = s.submit(sp, splits, now);
        s.kill(job, now);
        jobs.push(job);
    }
    let (sp, splits) = spec(1, 1);
    let running = s.submit(sp, splits, now);
    let ended = |s: &State| s.metrics().encode();
    assert!(ended(&s).contains("quern_jobs_ended_total{state=\"killed\"} 4"));
    assert_eq!(s.prune_history(), 2);
    // Counters only grow: forgetting jobs does not take them back (issue 15).
    assert!(ended(&s).contains("quern_jobs_ended_total{state=\"killed\"} 4"));
    assert!(s.status(jobs[0], now).is_none() && s.status(jobs[1], now).is_none());
    assert!(s.status(jobs[2], now).is_some() && s.status(running, now).is_some());
    let records = s.take_records();
    let (r, _) = State::recover(Epoch(2), timeouts, records.clone(), now);
    assert!(r.status(jobs[1], now).is_none() && r.status(jobs[3], now).is_some());
    // The compacted journal replays to the same jobs, and ids go on after the last one.
    let (mut c, _) = State::recover(Epoch(3), timeouts, crate::journal::compact(records), now);
    for j in &jobs {
        assert_eq!(
            c.status(*j, now).map(|s| s.state),
            r.status(*j, now).map(|s| s.state)
        );
    }
    let (sp, splits) = spec(1, 1);
    assert!(c.submit(sp, splits, now) > running);
    let _ = w;
}

#[test]
fn a_compacted_journal_drops_forgotten_jobs_tasks_and_replays_to_the_same_state() {
    let now = Instant::now();
    let timeouts = Timeouts {
        keep_jobs: 1,
        ..Timeouts::default()
    };
    let (mut s, w) = one_worker(now);
    s.timeouts = timeouts;
    // Three jobs of four maps and a reduce each, run to the end; two are then forgotten.
    let mut jobs = Vec::new();
    for _ in 0..3 {
        let (sp, splits) = spec(4, 1);
        let job = s.submit(sp, splits, now);
        loop {
            let maps = ids(&s.heartbeat(w, 4, now));
            if maps.is_empty() || maps[0].0 == pb::TaskKind::Reduce as i32 {
                let r = maps
                    .first()
                    .map(|m| m.2)
                    .unwrap_or_else(|| ids(&s.heartbeat(w, 1, now))[0].2);
                s.report_success(r, Counters::default(), Some((5, 9)), now);
                s.commit_done(job, 0, r, Ok(()), now);
                s.publish_done(job, Ok(()), now);
                break;
            }
            for (_, _, m) in maps {
                s.report_success(m, Counters::default(), None, now);
            }
        }
        assert_eq!(
            s.status(job, now).unwrap().state,
            pb::JobState::Succeeded as i32
        );
        jobs.push(job);
    }
    assert_eq!(s.prune_history(), 2);
    let records = s.take_records();
    let compacted = crate::journal::compact(records.clone());
    let tasks = |rs: &[Record], job: JobId| {
        rs.iter()
            .filter(|r| matches!(r, Record::MapDone { job: j, .. } | Record::ReduceDone { job: j, .. } if *j == job))
            .count()
    };
    assert_eq!(tasks(&records, jobs[0]), 5);
    assert_eq!(tasks(&compacted, jobs[0]), 0);
    assert_eq!(tasks(&compacted, jobs[2]), 5);
    let (a, _) = State::recover(Epoch(2), timeouts, records, now);
    let (b, _) = State::recover(Epoch(2), timeouts, compacted, now);
    assert_eq!(a.list(now), b.list(now));
}

/// A state running a job of one map (at most 2 attempts) and one reduce, whose tasks may lose
/// `max_lost` attempts with their workers; with the time it was submitted.
fn one_map_job_with_max_lost_attempts(max_lost: u32) -> (State, JobId, Instant) {
    let t = Instant::now();
    let timeouts = Timeouts {
        max_lost_attempts: max_lost,
        ..Timeouts::default()
    };
    let mut s = State::new(Epoch(1), timeouts, t);
    let (sp, splits) = spec(1, 1);
    let job = s.submit(sp, splits, t);
    (s, job, t)
}

#[test]
fn attempts_lost_with_their_workers_are_killed_not_failed_up_to_their_own_bound() {
    let (mut s, job, mut t) = one_map_job_with_max_lost_attempts(3);
    // max_attempts is 2: two worker deaths used to fail the job (issue 17).
    for round in 1..=3 {
        let w = s.register_worker(format!("a:{round}"), "a".into(), t);
        let a = ids(&s.heartbeat(w, 1, t))[0].2;
        t += Duration::from_secs(11);
        s.register_worker(format!("b:{round}"), "b".into(), t);
        let actions = s.expire_workers(t);
        let st = s.status(job, t).unwrap();
        if round < 3 {
            assert_eq!(st.state, pb::JobState::Running as i32, "round {round}");
            assert!(actions.is_empty());
        } else {
            assert_eq!(st.state, pb::JobState::Failed as i32);
            assert!(
                st.error.contains("map 0 lost 3 attempts")
                    && st.error.contains("--max-lost-attempts 3"),
                "{}",
                st.error
            );
            assert!(st.error.contains(&a.to_string()), "{}", st.error);
        }
        let c = st.counters.unwrap().values;
        assert_eq!(c["failed_attempts"], 0);
        assert_eq!(c["killed_attempts"], round);
        // Other workers stay alive for the next round; they hold nothing.
        for w in s.workers.values_mut() {
            w.last_seen = t;
        }
    }
}

#[test]
fn lost_attempts_count_from_a_tasks_last_success() {
    // A map that finished and ran again because its output died with its worker is not a
    // task that takes its workers down: its earlier losses do not count against the bound.
    // (The crash test failed a job this way: a map re-run after output losses reached 10.)
    let (mut s, job, mut t) = one_map_job_with_max_lost_attempts(3);
    let lose = |s: &mut State, round: u32, succeed: bool, t: &mut Instant| {
        let w = s.register_worker(format!("a:{round}"), "a".into(), *t);
        let (_, _, a) = ids(&s.heartbeat(w, 1, *t))[0];
        if succeed {
            s.report_success(a, Counters::default(), None, *t);
        }
        *t += Duration::from_secs(11);
        s.register_worker(format!("b:{round}"), "b".into(), *t);
        s.expire_workers(*t);
        for w in s.workers.values_mut() {
            w.last_seen = *t;
        }
        s.status(job, *t).unwrap()
    };
    for round in 1..=2 {
        lose(&mut s, round, false, &mut t);
    }
    // The third attempt finishes; its worker then dies with the output.
    let st = lose(&mut s, 3, true, &mut t);
    assert_eq!((st.state, st.maps_done), (pb::JobState::Running as i32, 0));
    for round in 4..=5 {
        let st = lose(&mut s, round, false, &mut t);
        assert_eq!(st.state, pb::JobState::Running as i32, "round {round}");
    }
    let st = lose(&mut s, 6, false, &mut t);
    assert_eq!(st.state, pb::JobState::Failed as i32);
    assert!(st.error.contains("map 0 lost 3 attempts"), "{}", st.error);
}

#[test]
fn a_worker_restarted_on_its_directory_replaces_the_old_one_at_once_and_keeps_its_outputs() {
    let t0 = Instant::now();
    let (mut s, old) = one_worker(t0);
    s.replace_worker_at(old, "a:/w", &[], t0);
    let (sp, splits) = spec(3, 1);
    let job = s.submit(sp, splits, t0);
    let maps = ids(&s.heartbeat(old, 3, t0));
    assert_eq!(maps.len(), 3);
    let (m0, m1, running) = (maps[0].2, maps[1].2, maps[2].2);
    s.report_success(m0, Counters::default(), None, t0);
    s.report_success(m1, Counters::default(), None, t0);
    // Restarted within a second, long before the heartbeat timeout; its disk still holds
    // map 0's output and a stale file of a losing attempt of map 1.
    let t1 = t0 + Duration::from_secs(1);
    let new = s.register_worker("a:2".into(), "a".into(), t1);
    let stale = AttemptId(m1.0 + 1000);
    let held = [(job, maps[0].1, m0), (job, maps[1].1, stale)];
    s.replace_worker_at(new, "a:/w", &held, t1);
    assert!(
        !s.is_current(old, Epoch(1)),
        "the old worker is dead at once"
    );
    // Fenced: the old worker's late report of its running attempt changes nothing.
    assert!(s
        .report_success(running, Counters::default(), None, t1)
        .is_empty());
    let st = s.status(job, t1).unwrap();
    assert_eq!(
        st.maps_done, 1,
        "map 0 kept, map 1 (only a stale file held) lost"
    );
    let c = st.counters.unwrap().values;
    assert_eq!(
        (
            c["kept_map_outputs"],
            c["lost_map_outputs"],
            c["killed_attempts"]
        ),
        (1, 1, 1)
    );
    assert_eq!(
        ids(&s.heartbeat(new, 10, t1)).len(),
        2,
        "maps 1 and 2 run again"
    );
}

#[test]
fn fetch_failures_against_a_replaced_workers_address_do_not_rerun_a_kept_map() {
    let t0 = Instant::now();
    let (mut s, old) = one_worker(t0);
    s.replace_worker_at(old, "a:/w", &[], t0);
    let other = s.register_worker("b:1".into(), "b".into(), t0);
    let (sp, splits) = spec(1, 1);
    let job = s.submit(sp, splits, t0);
    let m = ids(&s.heartbeat(old, 1, t0))[0].2;
    s.report_success(m, Counters::default(), None, t0);
    let reduce = ids(&s.heartbeat(other, 1, t0))[0].2;
    let t1 = t0 + Duration::from_secs(1);
    let new = s.register_worker("a:2".into(), "a".into(), t1);
    s.replace_worker_at(new, "a:/w", &[(job, 0, m)], t1);
    // The reducer fetched from the old address before the replacement: its reports do not
    // count against the output the new worker serves.
    for _ in 0..5 {
        s.fetch_failure(reduce, 0, m, Instant::now());
    }
    assert_eq!(s.status(job, t1).unwrap().maps_done, 1);
    // A reducer started after the replacement that cannot fetch does count.
    s.report_failure(
        reduce,
        FailureKind::LostInput,
        "cannot fetch map 0",
        None,
        t1,
    );
    let t2 = t1 + Duration::from_secs(1);
    for _ in 0..DEFAULT_FETCH_FAILURE_THRESHOLD {
        let r = ids(&s.heartbeat(other, 1, t2))[0].2;
        s.fetch_failure(r, 0, m, Instant::now());
        s.report_failure(r, FailureKind::LostInput, "cannot fetch map 0", None, t2);
    }
    assert_eq!(s.status(job, t2).unwrap().maps_done, 0);
}

#[test]
fn a_worker_back_after_the_timeout_reclaims_its_map_outputs_and_the_rerun_is_cancelled() {
    let t0 = Instant::now();
    let (mut s, old) = one_worker(t0);
    let (sp, splits) = spec(2, 1);
    let job = s.submit(sp, splits, t0);
    let maps = ids(&s.heartbeat(old, 2, t0));
    for (_, _, a) in &maps {
        s.report_success(*a, Counters::default(), None, t0);
    }
    // Silent past the timeout: declared dead, both outputs lost and the maps run again
    // on another worker.
    let t1 = t0 + Duration::from_secs(11);
    let other = s.register_worker("b:1".into(), "b".into(), t1);
    s.expire_workers(t1);
    let reruns = ids(&s.heartbeat(other, 1, t1));
    assert_eq!(reruns.len(), 1);
    // It comes back on its directory with both files: they win again, the re-run is
    // cancelled, and a stale file (another attempt) wins nothing.
    let t2 = t1 + Duration::from_secs(1);
    let back = s.register_worker("a:2".into(), "a".into(), t2);
    s.replace_worker_at(back, "a:/w", &[], t2);
    s.claim_outputs(
        back,
        &[(job, maps[0].1, maps[0].2), (job, maps[1].1, maps[1].2)],
        t2,
    );
    let st = s.status(job, t2).unwrap();
    assert_eq!(st.maps_done, 2);
    assert_eq!(st.counters.unwrap().values["kept_map_outputs"], 2);
    let hb = s.heartbeat(other, 1, t2);
    assert!(hb.cancel_attempts.contains(&reruns[0].2 .0));
    // The re-run's late success changes nothing; the reduce runs next.
    assert!(s
        .report_success(reruns[0].2, Counters::default(), None, t2)
        .is_empty());
    assert_eq!(ids(&hb)[0].0, pb::TaskKind::Reduce as i32);
    // After a coordinator restart the journal says both maps are done.
    let (r, _) = State::recover(Epoch(2), Timeouts::default(), s.take_records(), t2);
    assert_eq!(r.status(job, t2).unwrap().maps_done, 2);
}

#[test]
fn dead_workers_stay_listed_for_a_while_then_are_forgotten() {
    let t0 = Instant::now();
    let (mut s, a, b) = two_workers(t0);
    let (sp, splits) = spec(2, 1);
    let job = s.submit(sp, splits, t0);
    let maps = ids(&s.heartbeat(a, 2, t0));
    for (_, _, m) in &maps {
        s.report_success(*m, Counters::default(), None, t0);
    }
    let listed = |s: &State, t| -> Vec<(WorkerId, bool)> {
        s.workers_view(t).iter().map(|w| (w.id, w.alive)).collect()
    };
    // a goes silent: dead, still listed; b heartbeats on and runs the lost maps again.
    let mut t = t0;
    while t < t0 + KEEP_DEAD_WORKERS + Duration::from_secs(60) {
        t += Duration::from_secs(5);
        s.heartbeat(b, 0, t);
        s.expire_workers(t);
        if t == t0 + Duration::from_secs(15) {
            assert_eq!(listed(&s, t), [(a, false), (b, true)]);
        }
    }
    assert_eq!(listed(&s, t), [(b, true)], "forgotten after its time");
    // Nothing that named it breaks: the job runs on, on b (the lost map again, then the
    // reduce).
    for _ in 0..3 {
        for (_, _, x) in ids(&s.heartbeat(b, 1, t)) {
            s.report_success(x, Counters::default(), None, t);
        }
    }
    let st = s.status(job, t).unwrap();
    assert_eq!((st.maps_done, st.reduces_running), (2, 1), "{st:?}");
    // Its attempts stay in the job's history, with no address to fetch their logs from.
    let page = s
        .attempts_of(
            job,
            Page {
                offset: 0,
                limit: None,
            },
        )
        .unwrap();
    assert!(page
        .attempts
        .iter()
        .any(|v| v.record.worker == a && v.worker_addr.is_empty()));
}

#[test]
fn a_backlog_counts_only_the_slots_of_workers_the_job_may_use() {
    let now = Instant::now();
    let mut s = state();
    let a1 = s.register_worker("a1:1".into(), "a".into(), now);
    let a2 = s.register_worker("a2:1".into(), "a".into(), now);
    let b = s.register_worker("b:1".into(), "b".into(), now);
    for w in [a1, a2] {
        s.set_worker_slots(w, 1, 0);
    }
    s.set_worker_slots(b, 4, 0);
    let (mut sp, mut splits) = spec(3, 1);
    splits.iter_mut().for_each(|s| s.hosts = vec!["a".into()]);
    sp.max_attempts = 10;
    s.submit(sp, splits, now);
    // a1 fails three maps and is excluded: host a has one slot for the job, not two.
    for _ in 0..EXCLUDE_AFTER {
        let got = ids(&s.heartbeat(a1, 1, now));
        s.report_failure(got[0].2, FailureKind::Retryable, "disk on fire", None, now);
    }
    assert!(s.heartbeat(a1, 1, now).assignments.is_empty());
    // Three maps wait for a2's one slot: b takes two at once, without the locality wait.
    assert_eq!(ids(&s.heartbeat(b, 4, now)).len(), 2);
}
