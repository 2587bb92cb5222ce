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
