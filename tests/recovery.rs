//! The coordinator is killed with SIGKILL mid-job and restarted on the same state directory:
//! the job resumes from the journal, maps that had finished are not run again, the waiting
//! CLI rides out the restart, and the output is byte-identical to the oracle.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn a_coordinator_killed_mid_job_resumes_from_its_journal() {
    let inputs = inputs("16MiB");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut procs = Procs(vec![spawn_coordinator(
        port,
        dir.path(),
        &["--worker-timeout-s", "5"],
    )]);
    for i in 0..2 {
        procs.0.push(spawn_worker(
            &addr,
            &dir.path().join(format!("worker-{i}")),
            &[],
        ));
    }
    let job = |args: &[&str]| {
        let mut c = quern();
        c.arg("job").args(args).env("QUERN_COORDINATOR", &addr);
        c
    };
    let out = dir.path().join("views");
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let res = run(job(&[
            "submit",
            "--detach",
            "views",
            "--reducers",
            "2",
            "--split-size",
            "128KiB",
            "--input",
        ])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out));
        if res.status.success() {
            break String::from_utf8(res.stdout).unwrap().trim().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "coordinator never accepted the job: {res:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let waiter = job(&["wait", &id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Let a good share of the maps finish, then kill the coordinator outright.
    let mut done_before = 0;
    while done_before < 30 {
        assert!(Instant::now() < deadline, "maps did not progress");
        done_before = maps_done(&ok(&mut job(&["status", &id])));
        std::thread::sleep(Duration::from_millis(20));
    }
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    procs.0[0] = spawn_coordinator(port, dir.path(), &["--worker-timeout-s", "5"]);

    let waited = waiter.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&waited.stdout);
    assert!(
        waited.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    let c = counters(&stdout);
    assert!(
        c["recovered_maps"] >= u64::from(done_before),
        "finished maps were run again: {c:?} ({done_before} done before)"
    );

    let oracle = dir.path().join("oracle");
    ok(Command::new(env!("CARGO_BIN_EXE_quern"))
        .args([
            "run",
            "--local",
            "views",
            "--reducers",
            "2",
            "--split-size",
            "128KiB",
            "--input",
        ])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&oracle));
    assert_eq!(read_output(&out), read_output(&oracle));
}

/// A long-lived coordinator's journal follows what it remembers: the task lines of jobs
/// forgotten beyond `--keep-jobs` go when the journal is compacted (as it grows, and at a
/// restart), and the restarted coordinator shows the same jobs and gives out new ids.
#[test]
fn the_journal_drops_forgotten_jobs_tasks_as_it_grows_and_at_a_restart() {
    let inputs = inputs("256KiB");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let flags = ["--keep-jobs", "1", "--journal-compact-after", "4KiB"];
    let mut procs = Procs(vec![spawn_coordinator(port, dir.path(), &flags)]);
    procs
        .0
        .push(spawn_worker(&addr, &dir.path().join("worker"), &[]));
    let job = |args: &[&str]| {
        let mut c = quern();
        c.arg("job").args(args).env("QUERN_COORDINATOR", &addr);
        c
    };
    let submit = |n: u32| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = dir.path().join(format!("views-{n}"));
            let res = run(
                job(&["submit", "views", "--split-size", "16KiB", "--input"])
                    .arg(&inputs.log)
                    .arg("--output")
                    .arg(&out),
            );
            if res.status.success() {
                return String::from_utf8(res.stdout).unwrap();
            }
            assert!(Instant::now() < deadline, "{res:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let journal = dir.path().join("coordinator/journal.log");
    // The jobs the journal says were forgotten.
    let forgotten = || -> Vec<u64> {
        (1..=8u64)
            .filter(|id| {
                std::fs::read_to_string(&journal)
                    .unwrap()
                    .lines()
                    .any(|l| l.contains(&format!("{{\"Forgotten\":{{\"job\":{id}}}}}")))
            })
            .collect()
    };
    for n in 1..=8 {
        submit(n);
        // Finished jobs are forgotten by a periodic sweep (every heartbeat interval), and a
        // submit returns the moment its job ends: under load, several jobs could end between
        // two sweeps, and the compactions in between would find nothing to drop. What is
        // tested here is what the journal keeps of forgotten jobs, so wait for the sweep.
        let deadline = Instant::now() + Duration::from_secs(20);
        while n > 1 && !forgotten().contains(&u64::from(n - 1)) {
            assert!(Instant::now() < deadline, "job {} not forgotten", n - 1);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let lines_of = |job_id: u64| {
        std::fs::read_to_string(&journal)
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!("\"job\":{job_id},")) && l.contains("MapDone"))
            .count()
    };
    // As it grew, the journal dropped the task lines of the jobs it had forgotten: the first
    // ones are gone, the last one is whole, and it holds far fewer than the 8 x 16 maps run
    // (it is compacted whenever it doubled: at most about four jobs' lines).
    assert_eq!((lines_of(1), lines_of(2)), (0, 0));
    assert!(lines_of(8) >= 16, "{}", lines_of(8));
    let total: usize = (1..=8).map(lines_of).sum();
    assert!(total <= 6 * 16, "{total} map lines");
    let before = ok(&mut job(&["list"]));
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    let forgotten = forgotten();
    assert!(forgotten.len() >= 6, "{forgotten:?}");
    procs.0[0] = spawn_coordinator(port, dir.path(), &flags);
    let deadline = Instant::now() + Duration::from_secs(20);
    let after = loop {
        let res = run(&mut job(&["list"]));
        if res.status.success() {
            break String::from_utf8(res.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "{res:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Opening it compacted the lines of every job it had forgotten; the history is what it
    // was.
    for id in &forgotten {
        assert_eq!(lines_of(*id), 0, "job-{id}");
    }
    let rows = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    // (A job that ended just before the stop may be forgotten only now.)
    let earlier = rows(&before);
    assert!(
        rows(&after).iter().all(|r| earlier.contains(r)),
        "{before}\n{after}"
    );
    assert!(after.contains("job-8"), "{after}");
    let ninth = submit(9);
    assert!(ninth.contains("job-9"), "{ninth}");
}
