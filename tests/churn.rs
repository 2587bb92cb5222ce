//! The classic MapReduce crash test (MIT 6.5840's `test-mr.sh`) against real processes on
//! default settings (issue 17): a third of the attempts kill their worker process, a third
//! stall for up to 10 s, loops restart dead workers on their own directories, and the job must still finish
//! well within 120 s with the sequential oracle's output.
//!
//! `QUERN_CRASH_RUNS=N` repeats it N times (default 1), for measuring how often it passes.
//! Each run prints its seed (the crash job's dice per attempt); `QUERN_CRASH_SEED=S` replays
//! from it (run `i` uses `S + i - 1`; the schedule still varies with timing).

mod support;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::*;

/// Workers that are started again on their directory whenever they die, until dropped.
struct RestartLoops {
    stop: Arc<AtomicBool>,
    loops: Vec<JoinHandle<u32>>,
}

impl RestartLoops {
    fn start(addr: &str, dirs: Vec<PathBuf>) -> RestartLoops {
        let stop = Arc::new(AtomicBool::new(false));
        let loops = dirs
            .into_iter()
            .map(|dir| {
                let (stop, addr) = (stop.clone(), addr.to_string());
                std::thread::spawn(move || {
                    let mut starts = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut child = spawn_worker(&addr, &dir, &[]);
                        starts += 1;
                        loop {
                            if stop.load(Ordering::Relaxed) {
                                let _ = child.kill();
                                let _ = child.wait();
                                return starts;
                            }
                            if child.try_wait().ok().flatten().is_some() {
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        // As in the classic test's loop: a short pause, then start it again.
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    starts
                })
            })
            .collect();
        RestartLoops { stop, loops }
    }

    /// Stops the loops and their workers; returns how many times workers were started.
    fn finish(mut self) -> u32 {
        self.stop.store(true, Ordering::Relaxed);
        self.loops.drain(..).map(|l| l.join().unwrap_or(0)).sum()
    }
}

impl Drop for RestartLoops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.loops.drain(..) {
            let _ = l.join();
        }
    }
}

fn oracle(inputs: &[PathBuf], out: &Path) {
    let mut cmd = quern();
    cmd.args([
        "run",
        "--local",
        "fail",
        "--param",
        "panic_on=no line holds this",
    ])
    .args(["--reducers", "10"]);
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    ok(cmd.arg("--output").arg(out));
}

fn parts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    read_output(dir)
        .into_iter()
        .filter(|(k, _)| k.starts_with("part-"))
        .collect()
}

fn one_run(run: u32, seed: u64, inputs: &[PathBuf], expected: &Path) {
    eprintln!("crash run {run}: seed {seed}");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    // Default settings: worker timeout, attempts, speculation, as a user runs it.
    let coordinator = Procs(vec![spawn_coordinator(port, dir.path(), &[])]);
    let up = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < up, "the coordinator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let loops = RestartLoops::start(
        &addr,
        (0..3)
            .map(|i| dir.path().join(format!("worker-{i}")))
            .collect(),
    );
    let out = dir.path().join("out");
    let started = Instant::now();
    let mut cmd = quern();
    cmd.args(["job", "submit", "crash", "--reducers", "10"])
        .args([
            "--param",
            "rate=67",
            "--param",
            "stall_ms=10000",
            "--param",
            "kill=worker",
            "--param",
            &format!("seed={seed}"),
        ])
        .env("QUERN_COORDINATOR", &addr);
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    let mut child = cmd
        .arg("--output")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = started + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("crash run {run} (seed {seed}): the job did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let done = child.wait_with_output().unwrap();
    let took = started.elapsed();
    let starts = loops.finish();
    drop(coordinator);
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success(),
        "crash run {run} (seed {seed}): {stdout}{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let c = counters(&stdout);
    eprintln!(
        "crash run {run}: {:.1} s, {} worker starts, attempts {}, killed {}, failed {}, backups {}, kept map outputs {}, lost map outputs {}",
        took.as_secs_f64(),
        starts,
        c["attempts"],
        c["killed_attempts"],
        c["failed_attempts"],
        c["backup_attempts"],
        c["kept_map_outputs"],
        c["lost_map_outputs"]
    );
    if parts(&out) != parts(expected) {
        // Which part files differ, and how, before the assertion fails; the run's directory
        // (coordinator and worker logs) is kept for a look.
        let (got, want) = (parts(&out), parts(expected));
        for ((name, g), (_, w)) in got.iter().zip(&want).filter(|(g, w)| g != w) {
            let lines = |b: &[u8]| -> std::collections::BTreeSet<String> {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(str::to_string)
                    .collect()
            };
            let (g, w) = (lines(g), lines(w));
            eprintln!(
                "{name}: {} lines, the oracle's {}; {} only here, {} only in the oracle",
                g.len(),
                w.len(),
                g.difference(&w).count(),
                w.difference(&g).count()
            );
        }
        eprintln!("{stdout}\nrun directory kept: {}", dir.keep().display());
    }
    assert!(
        parts(&out) == parts(expected),
        "crash run {run} (seed {seed}): output differs from the oracle"
    );
    // Nothing of the job shows before it is whole: no part file is left outside the commit.
    assert!(out.join("_SUCCESS").exists());
}

#[test]
fn the_classic_crash_test_finishes_on_default_settings_with_the_oracles_output() {
    let dir = tempfile::tempdir().unwrap();
    // Eight input files, as in the classic test.
    let inputs: Vec<PathBuf> = (0..8)
        .map(|i| {
            let p = dir.path().join(format!("pg-{i}.txt"));
            ok(quern()
                .args([
                    "gen",
                    "words",
                    "--size",
                    "96KiB",
                    "--seed",
                    &(40 + i).to_string(),
                    "--out",
                ])
                .arg(&p));
            p
        })
        .collect();
    let expected = dir.path().join("oracle");
    oracle(&inputs, &expected);
    let runs: u32 = std::env::var("QUERN_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seed: u64 = std::env::var("QUERN_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    for run in 1..=runs {
        one_run(run, seed + u64::from(run) - 1, &inputs, &expected);
    }
}
