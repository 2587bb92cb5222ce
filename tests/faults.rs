//! Faults on real processes: a straggling worker and a zombie worker.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use support::*;

/// A coordinator and workers as separate processes; `delays[i]` slows worker i's attempts.
fn cluster(dir: &std::path::Path, delays: &[u64], extra: &[&str]) -> (Procs, String) {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec!["--worker-timeout-s", "2"];
    args.extend_from_slice(extra);
    let mut procs = vec![spawn_coordinator(port, dir, &args)];
    for (i, d) in delays.iter().enumerate() {
        let delay = d.to_string();
        procs.push(spawn_worker(
            &addr,
            &dir.join(format!("worker-{i}")),
            &["--fault-delay-ms", &delay],
        ));
    }
    (Procs(procs), addr)
}

/// Waits until the coordinator answers, then submits once and returns the CLI's output.
fn submit(addr: &str, args: &[&str], input: &std::path::Path, out: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !run(quern().args(["job", "list"]).env("QUERN_COORDINATOR", addr))
        .status
        .success()
    {
        assert!(Instant::now() < deadline, "the coordinator never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let res = run(quern()
        .args(["job", "submit"])
        .args(args)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .env("QUERN_COORDINATOR", addr));
    String::from_utf8_lossy(&res.stdout).into_owned() + &String::from_utf8_lossy(&res.stderr)
}

fn oracle(input: &std::path::Path, out: &std::path::Path, args: &[&str]) {
    ok(quern()
        .args(["run", "--local"])
        .args(args)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out));
}

#[test]
fn a_straggling_worker_gets_a_backup_attempt_and_the_output_is_unchanged() {
    let inputs = inputs("2MiB");
    let dir = tempfile::tempdir().unwrap();
    // Worker 1 is 30 s behind on every attempt: only backups can finish its tasks in time.
    // Worker 0 takes 300 ms an attempt, so that it cannot run every map before worker 1's
    // first heartbeat (a few milliseconds a task otherwise).
    let (_procs, addr) = cluster(
        dir.path(),
        &[300, 30_000],
        &["--speculation-floor-ms", "1000", "--locality-wait-ms", "0"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let out = dir.path().join("views");
    let args = ["views", "--reducers", "2", "--split-size", "256KiB"];
    let start = Instant::now();
    let stdout = submit(&addr, &args, &inputs.log, &out);
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "the job waited for the straggler"
    );
    let c = counters(&stdout);
    assert!(c["backup_attempts"] >= 1, "{c:?}");
    let expected = dir.path().join("oracle");
    oracle(&inputs.log, &expected, &args);
    assert_eq!(read_output(&out), read_output(&expected));
}

#[test]
fn a_zombie_worker_resumed_after_its_timeout_changes_nothing() {
    let inputs = inputs("2MiB");
    let dir = tempfile::tempdir().unwrap();
    // Worker 1's attempts start late, so it is mid-attempt when it is frozen.
    let (procs, addr) = cluster(dir.path(), &[0, 1500], &["--locality-wait-ms", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    let out = dir.path().join("views");
    let args = ["views", "--reducers", "2", "--split-size", "256KiB"];
    let submitter = quern()
        .args(["job", "submit"])
        .args(args)
        .arg("--input")
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out)
        .env("QUERN_COORDINATOR", &addr)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let zombie = procs.0[2].id() as i32;
    // SAFETY: signalling our own child processes.
    unsafe { libc::kill(zombie, libc::SIGSTOP) };
    std::thread::sleep(Duration::from_secs(4));
    unsafe { libc::kill(zombie, libc::SIGCONT) };
    let done = submitter.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}");
    let expected = dir.path().join("oracle");
    oracle(&inputs.log, &expected, &args);
    assert_eq!(read_output(&out), read_output(&expected));
    // Let the resumed zombie report whatever it had; the committed output must not change.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(read_output(&out), read_output(&expected));
}

/// A small tmpfs mounted over a worker's directory, so that its disk fills up.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs as root and must be able to mount a tmpfs"
            );
            eprintln!("cannot mount a tmpfs (not root?); skipping");
            return None;
        }
        Some(SmallDisk(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_full_disk_fails_attempts_with_a_clear_reason_and_they_run_elsewhere() {
    let inputs = inputs("2MiB");
    let dir = tempfile::tempdir().unwrap();
    // Declared before the cluster, so the cluster's processes are gone when it is unmounted.
    let Some(_disk) = SmallDisk::mount(&dir.path().join("worker-1"), "96k") else {
        return;
    };
    // Worker 0 is slowed so that the full worker surely gets tasks, even on a loaded machine.
    let (_procs, addr) = cluster(dir.path(), &[300, 0], &["--locality-wait-ms", "0"]);
    std::thread::sleep(Duration::from_millis(1000));
    let out = dir.path().join("lines");
    let args = [
        "fail",
        "--param",
        "panic_on=no line holds this",
        "--reducers",
        "2",
        "--split-size",
        "256KiB",
    ];
    let stdout = submit(&addr, &args, &inputs.log, &out);
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    let expected = dir.path().join("oracle");
    oracle(&inputs.log, &expected, &args);
    assert_eq!(read_output(&out), read_output(&expected));
    let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    assert!(
        log.contains("no space left on the worker"),
        "no attempt failed for lack of space"
    );
}

#[test]
fn when_every_disk_is_full_the_job_fails_cleanly() {
    let inputs = inputs("1MiB");
    let dir = tempfile::tempdir().unwrap();
    let Some(_d0) = SmallDisk::mount(&dir.path().join("worker-0"), "96k") else {
        return;
    };
    let Some(_d1) = SmallDisk::mount(&dir.path().join("worker-1"), "96k") else {
        return;
    };
    let (_procs, addr) = cluster(dir.path(), &[0, 0], &[]);
    std::thread::sleep(Duration::from_millis(500));
    let out = dir.path().join("lines");
    let args = [
        "fail",
        "--param",
        "panic_on=no line holds this",
        "--split-size",
        "512KiB",
        "--max-attempts",
        "3",
    ];
    let stdout = submit(&addr, &args, &inputs.log, &out);
    assert!(stdout.contains("state:    failed"), "{stdout}");
    assert!(stdout.contains("no space left on the worker"), "{stdout}");
    assert!(!out.join("_SUCCESS").exists() && !out.join("part-00000").exists());
}

#[test]
fn a_worker_killed_mid_job_loses_nothing_and_duplicates_nothing() {
    let inputs = inputs("4MiB");
    let dir = tempfile::tempdir().unwrap();
    // Attempts start 100 ms late, so the job is still mapping when the worker dies.
    let (mut procs, addr) = cluster(dir.path(), &[100, 100], &["--locality-wait-ms", "0"]);
    std::thread::sleep(Duration::from_millis(500));
    let out = dir.path().join("lines");
    // Every input line is a key counted once: a lost record is a missing line, a duplicated
    // one a count of 2, so the comparison with the oracle catches both.
    let args = [
        "fail",
        "--param",
        "panic_on=no line holds this",
        "--reducers",
        "3",
        "--split-size",
        "128KiB",
    ];
    let submitter = quern()
        .args(["job", "submit"])
        .args(args)
        .arg("--input")
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out)
        .env("QUERN_COORDINATOR", &addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = run(quern()
            .args(["job", "status", "job-1"])
            .env("QUERN_COORDINATOR", &addr));
        if maps_done(&String::from_utf8_lossy(&status.stdout)) >= 6 {
            break;
        }
        assert!(Instant::now() < deadline, "maps did not progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Worker 1 dies with finished map outputs on its disk and an attempt in flight.
    procs.0[2].kill().unwrap();
    let done = submitter.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(done.status.success(), "{stdout}");
    let expected = dir.path().join("oracle");
    oracle(&inputs.log, &expected, &args);
    assert_eq!(read_output(&out), read_output(&expected));
}

/// A coordinator that cannot write its journal answers no change and stops, naming the
/// journal: it must not go on with promises it could not keep after a crash.
#[cfg(feature = "failpoints")]
#[test]
fn a_coordinator_that_cannot_write_its_journal_refuses_the_change_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("access.log");
    ok(quern()
        .args(["gen", "weblog", "--size", "64KiB", "--out"])
        .arg(&input));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut coordinator = Procs(vec![quern()
        .args(["coordinator", "--listen", &addr])
        .arg("--state-dir")
        .arg(dir.path().join("coordinator"))
        .env("FAILPOINTS", "journal.append=return")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()]);
    let said = submit(&addr, &["views"], &input, &dir.path().join("out"));
    assert!(
        said.contains("cannot write its journal"),
        "the submitter is told why: {said}"
    );
    let child = &mut coordinator.0[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the coordinator did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(log.contains("journal"), "{log}");
    assert!(!dir.path().join("out").join("_SUCCESS").exists());
}
