//! The fault suite: every scenario of docs/RELIABILITY.md on real processes (a coordinator
//! and three workers on loopback), with `kill -9`, `SIGSTOP`/`SIGCONT`, failpoints and a small
//! tmpfs, on `views` and on the `identity` job. Each run must end byte-identical to
//! `quern run --local`, or in its documented clean failure; on `identity` the checker also
//! counts lost, duplicated and unexpected record ids, so a loss and a duplicate cannot
//! cancel out.
//!
//! `QUERN_FAULTS=fast` (the default, run by `scripts/test.sh`): every scenario once, on
//! `identity`, plus 3 chaos runs. `QUERN_FAULTS=full` (`scripts/faults.sh`): every scenario on
//! both jobs with 3 seeds for the fault's moment and target, plus a chaos loop of 20 runs.
//! Either writes `target/faults/report.json` and `target/faults/report.txt`.
#![cfg(feature = "failpoints")]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

const WORKERS: usize = 3;
/// A worker silent this long is dead (the coordinator's `--worker-timeout-s`).
const WORKER_TIMEOUT_S: u64 = 2;
/// A run that has not ended by then is reported as hung.
const RUN_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum JobKind {
    Views,
    Identity,
    /// `views` run incrementally: from an earlier output over part of its input, which has
    /// grown since (an appended tail and a new file).
    Incremental,
}

impl JobKind {
    /// The label in reports.
    fn name(self) -> &'static str {
        match self {
            JobKind::Views => "views",
            JobKind::Identity => "identity",
            JobKind::Incremental => "views --from",
        }
    }

    /// The job it runs.
    fn job(self) -> &'static str {
        match self {
            JobKind::Views | JobKind::Incremental => "views",
            JobKind::Identity => "identity",
        }
    }
}

/// What a scenario must end in.
#[derive(Clone, Copy)]
enum Expect {
    /// Success, byte-identical to the oracle.
    Success,
    /// Failure whose error contains this text, with no `_SUCCESS` and no part files.
    CleanFailure(&'static str),
}

/// How a scenario's cluster is set up.
#[derive(Default)]
struct Setup {
    coordinator_args: Vec<String>,
    coordinator_env: Vec<(String, String)>,
    worker_env: [Vec<(String, String)>; WORKERS],
    worker_args: [Vec<String>; WORKERS],
    job_args: Vec<String>,
    /// A tmpfs of this size over worker 1's directory.
    small_disk: Option<&'static str>,
}

impl Setup {
    /// Jobs with no backup attempts: a fault that only a backup would get round must be
    /// mended by what the scenario tests.
    fn without_speculation() -> Self {
        Setup {
            job_args: vec!["--speculation".into(), "off".into()],
            ..Setup::default()
        }
    }

    fn all_workers(self, failpoints: &str) -> Self {
        self.all_workers_env("FAILPOINTS", failpoints)
    }

    fn all_workers_env(mut self, key: &str, value: &str) -> Self {
        for env in &mut self.worker_env {
            env.push((key.into(), value.into()));
        }
        self
    }

    fn worker(mut self, i: usize, failpoints: &str) -> Self {
        self.worker_env[i].push(("FAILPOINTS".into(), failpoints.into()));
        self
    }

    fn coordinator(mut self, failpoints: &str) -> Self {
        self.coordinator_env
            .push(("FAILPOINTS".into(), failpoints.into()));
        self
    }
}

struct Scenario {
    name: &'static str,
    jobs: &'static [JobKind],
    expect: Expect,
    setup: fn(JobKind, u64) -> Setup,
    /// Injects the fault; returns when it happened (None: the moment never came).
    inject: fn(&mut Cluster3, u64) -> Option<Instant>,
}

const BOTH: &[JobKind] = &[JobKind::Identity, JobKind::Views];
/// Scenarios that also run an incremental job: faults during the maps over new input and
/// the earlier output's state, and during the commit of parts and state files.
const WITH_INCREMENTAL: &[JobKind] = &[JobKind::Identity, JobKind::Views, JobKind::Incremental];
const IDENTITY: &[JobKind] = &[JobKind::Identity];

/// The poison record of the poison scenarios: one id per seed.
fn poison_id(seed: u64) -> String {
    format!("r{:012}", 1000 + seed * 2017)
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "kill a worker mid-map",
            jobs: WITH_INCREMENTAL,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("map.start=sleep(300)"),
            inject: |c, seed| {
                c.wait_maps(1 + seed as u32)?;
                let at = c.fault();
                c.kill_worker(seed as usize % WORKERS);
                Some(at)
            },
        },
        Scenario {
            name: "kill a worker after its maps, before reducers fetched",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("reduce.fetch=sleep(1500)"),
            inject: |c, seed| {
                c.wait_marker("reduce.fetch")?;
                let at = c.fault();
                c.kill_worker(seed as usize % WORKERS);
                Some(at)
            },
        },
        Scenario {
            name: "kill a worker while it serves shuffle data",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, seed| {
                Setup::default().worker(seed as usize % WORKERS, "shuffle.serve=sleep(2000)")
            },
            inject: |c, seed| {
                c.wait_marker("shuffle.serve")?;
                let at = c.fault();
                c.kill_worker(seed as usize % WORKERS);
                Some(at)
            },
        },
        Scenario {
            name: "kill a reducer mid-write",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("reduce.write=sleep(1500)"),
            inject: |c, seed| {
                let pid = c.wait_marker_nth("reduce.write", seed as usize)?;
                let at = c.fault();
                kill_pid(pid, libc::SIGKILL);
                Some(at)
            },
        },
        Scenario {
            name: "kill a reducer between commit authorization and rename",
            jobs: WITH_INCREMENTAL,
            expect: Expect::Success,
            setup: |_, _| Setup::default().coordinator("commit.rename=sleep(1500)"),
            inject: |c, seed| {
                c.wait_marker("commit.rename")?;
                let at = c.fault();
                c.kill_worker(seed as usize % WORKERS);
                Some(at)
            },
        },
        Scenario {
            name: "kill the coordinator mid-map and restart it",
            jobs: WITH_INCREMENTAL,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("map.start=sleep(300)"),
            inject: |c, seed| {
                c.wait_maps(1 + seed as u32)?;
                let at = c.fault();
                c.kill_coordinator();
                c.start_coordinator(false);
                Some(at)
            },
        },
        Scenario {
            name: "kill the coordinator during job commit and restart it",
            jobs: WITH_INCREMENTAL,
            expect: Expect::Success,
            setup: |_, seed| {
                Setup::default().coordinator(if seed % 2 == 0 {
                    "commit.rename=sleep(1500)"
                } else {
                    "job.publish=sleep(1500)"
                })
            },
            inject: |c, seed| {
                c.wait_marker(if seed % 2 == 0 {
                    "commit.rename"
                } else {
                    "job.publish"
                })?;
                let at = c.fault();
                c.kill_coordinator();
                c.start_coordinator(false);
                Some(at)
            },
        },
        Scenario {
            name: "stop the coordinator past the heartbeat timeout",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("map.start=sleep(300)"),
            inject: |c, seed| {
                c.wait_maps(1 + seed as u32)?;
                let pid = c.coordinator.as_ref()?.id();
                let at = c.fault();
                c.freeze(pid, Duration::from_secs(WORKER_TIMEOUT_S * 2));
                Some(at)
            },
        },
        Scenario {
            name: "a straggler (one worker 10x slower)",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, seed| {
                let mut s = Setup::default().all_workers("map.start=sleep(200)");
                s.worker_args[seed as usize % WORKERS] =
                    vec!["--fault-delay-ms".into(), "2000".into()];
                s.coordinator_args = vec!["--speculation-floor-ms".into(), "500".into()];
                s
            },
            inject: |c, _| Some(c.fault()),
        },
        Scenario {
            name: "a zombie worker (stopped past the timeout, then resumed)",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("map.start=sleep(300)"),
            inject: |c, seed| {
                c.wait_maps(1 + seed as u32)?;
                let pid = c.workers[seed as usize % WORKERS].as_ref()?.id();
                let at = c.fault();
                c.freeze(pid, Duration::from_secs(WORKER_TIMEOUT_S * 2));
                Some(at)
            },
        },
        Scenario {
            name: "duplicate completion reports",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("report.twice=return"),
            inject: |c, _| Some(c.fault()),
        },
        Scenario {
            // The answer carrying a worker's first assignments is dropped on arrival, as if
            // lost on the way; the worker keeps heartbeating, so the worker timeout never
            // comes, and without speculation no backup stands in: the coordinator must see
            // from the next heartbeat that the attempts never arrived.
            name: "a heartbeat answer lost on the way",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, seed| {
                Setup::without_speculation()
                    .worker(seed as usize % WORKERS, "heartbeat.lose=1*return")
            },
            inject: |c, _| Some(c.fault()),
        },
        Scenario {
            // One worker's shuffle reads hang past the run's deadline (a stuck disk) while it
            // heartbeats and answers pings: reduces give up on its outputs after the fetch
            // timeout (1 s here), report them, and the maps run again on other workers. No
            // speculation, so nothing else would end the wait.
            name: "a worker whose shuffle reads hang",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, seed| {
                Setup::without_speculation()
                    .all_workers_env("QUERN_FETCH_TIMEOUT_S", "1")
                    .worker(seed as usize % WORKERS, "shuffle.serve=sleep(150000)")
            },
            inject: |c, _| Some(c.fault()),
        },
        Scenario {
            name: "a poison record in skip mode",
            jobs: IDENTITY,
            expect: Expect::Success,
            setup: |_, seed| Setup {
                job_args: vec![
                    "--param".into(),
                    format!("panic_on={}", poison_id(seed)),
                    "--max-bad-records".into(),
                    "5".into(),
                ],
                ..Setup::default()
            },
            inject: |c, _| Some(c.fault()),
        },
        Scenario {
            name: "a poison record without skip mode",
            jobs: IDENTITY,
            expect: Expect::CleanFailure("poison record"),
            setup: |_, seed| Setup {
                job_args: vec!["--param".into(), format!("panic_on={}", poison_id(seed))],
                ..Setup::default()
            },
            inject: |c, _| Some(c.fault()),
        },
        Scenario {
            name: "a worker that fails every attempt",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, seed| Setup::default().worker(seed as usize % WORKERS, "task.fail=return"),
            inject: |c, _| Some(c.fault()),
        },
        Scenario {
            name: "all workers killed and one restarted",
            jobs: BOTH,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("map.start=sleep(300)"),
            inject: |c, seed| {
                c.wait_maps(1 + seed as u32)?;
                let at = c.fault();
                for i in 0..WORKERS {
                    c.kill_worker(i);
                }
                std::thread::sleep(Duration::from_millis(500));
                c.start_worker(seed as usize % WORKERS);
                Some(at)
            },
        },
        Scenario {
            // The classic crash test's churn (tests/churn.rs) on the identity job: a third of
            // the attempts SIGKILL their worker, half the rest stall 4 s, and dead workers are
            // started again on their directories until the job ends.
            name: "crash test: attempts kill or stall, workers restart",
            jobs: IDENTITY,
            expect: Expect::Success,
            setup: |_, _| Setup::default().all_workers("attempt.crash=33%return->50%sleep(4000)"),
            inject: |c, _| {
                let at = c.fault();
                c.restart_dead_workers_until_the_job_ends();
                Some(at)
            },
        },
        Scenario {
            name: "disk full on one worker",
            jobs: BOTH,
            expect: Expect::Success,
            // Sized so that map outputs (small for `views`, whose combiner folds them) do not
            // all fit.
            setup: |job, _| Setup {
                small_disk: Some(if job == JobKind::Views { "12k" } else { "96k" }),
                ..Setup::default().all_workers("map.start=sleep(100)")
            },
            inject: |c, _| Some(c.fault()),
        },
    ]
}

/// A coordinator and [`WORKERS`] workers, each a process that a scenario may kill and restart.
struct Cluster3 {
    dir: PathBuf,
    addr: String,
    marks: PathBuf,
    coordinator: Option<Child>,
    workers: Vec<Option<Child>>,
    coordinator_args: Vec<String>,
    coordinator_env: Vec<(String, String)>,
    worker_env: [Vec<(String, String)>; WORKERS],
    worker_args: [Vec<String>; WORKERS],
    /// The coordinator's "acted on a fault" counters just before the fault.
    acted_before: u64,
    /// When a restarted coordinator first answered.
    restarted: Option<Instant>,
    /// Threads that will resume frozen processes.
    thaws: Vec<std::thread::JoinHandle<()>>,
}

/// Counters that grow when the coordinator acts on a fault: an attempt failed, was lost with
/// its worker or was backed up, a finished map's output was lost, a fetch failure was reported, or a restarted
/// coordinator recovered maps.
fn acted(status: &str) -> u64 {
    let c = counters(status);
    [
        "failed_attempts",
        "killed_attempts",
        "lost_map_outputs",
        "fetch_failures",
        "backup_attempts",
        "recovered_maps",
    ]
    .iter()
    .map(|k| c.get(*k).copied().unwrap_or(0))
    .sum()
}

impl Cluster3 {
    /// Marks the moment of the fault (called just before it): returns it, and remembers
    /// the counters it is detected by.
    fn fault(&mut self) -> Instant {
        self.acted_before = self.status().map(|s| acted(&s)).unwrap_or(0);
        Instant::now()
    }
    fn start(dir: &Path, setup: &Setup) -> Cluster3 {
        let port = free_port();
        let marks = dir.join("failpoints");
        std::fs::create_dir_all(&marks).unwrap();
        let mut c = Cluster3 {
            dir: dir.to_path_buf(),
            addr: format!("127.0.0.1:{port}"),
            marks,
            coordinator: None,
            workers: (0..WORKERS).map(|_| None).collect(),
            coordinator_args: setup.coordinator_args.clone(),
            coordinator_env: setup.coordinator_env.clone(),
            worker_env: setup.worker_env.clone(),
            worker_args: setup.worker_args.clone(),
            acted_before: 0,
            restarted: None,
            thaws: Vec::new(),
        };
        c.start_coordinator(true);
        for i in 0..WORKERS {
            c.start_worker(i);
        }
        c
    }

    /// Starts (or restarts) the coordinator on the same port and state directory; a restart
    /// runs without failpoints, so that it does not stop at the same point again.
    fn start_coordinator(&mut self, first: bool) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("coordinator.log"))
            .unwrap();
        let mut cmd = quern();
        cmd.args([
            "coordinator",
            "--listen",
            &self.addr,
            "--heartbeat-ms",
            "100",
        ])
        .args(["--worker-timeout-s", &WORKER_TIMEOUT_S.to_string()])
        .args(["--locality-wait-ms", "0"])
        .args(&self.coordinator_args)
        .arg("--state-dir")
        .arg(self.dir.join("coordinator"))
        .env("QUERN_FAILPOINT_DIR", &self.marks)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
        if first {
            cmd.envs(self.coordinator_env.iter().map(|(k, v)| (k, v)));
        }
        // The port of a killed coordinator may take a moment to be free again.
        self.coordinator = Some(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            assert!(Instant::now() < deadline, "the coordinator never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        if !first {
            self.restarted = Some(Instant::now());
        }
    }

    /// Stops process `pid` now and resumes it after `for_`, without waiting for that, so the
    /// run is watched while the process is frozen.
    fn freeze(&mut self, pid: u32, for_: Duration) {
        kill_pid(pid, libc::SIGSTOP);
        self.thaws.push(std::thread::spawn(move || {
            std::thread::sleep(for_);
            kill_pid(pid, libc::SIGCONT);
        }));
    }

    fn answers(&self) -> bool {
        command_within(
            quern()
                .args(["job", "list"])
                .env("QUERN_COORDINATOR", &self.addr),
            Duration::from_secs(2),
        )
        .is_some_and(|(ok, _)| ok)
    }

    fn start_worker(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("worker-{i}.log")))
            .unwrap();
        let child = quern()
            .args(["worker", "--coordinator", &format!("http://{}", self.addr)])
            .args(["--slots", "1", "--storage-host", &format!("host-{i}")])
            .args(&self.worker_args[i])
            .arg("--dir")
            .arg(self.dir.join(format!("worker-{i}")))
            .env("QUERN_FAILPOINT_DIR", &self.marks)
            .envs(self.worker_env[i].iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.workers[i] = Some(child);
    }

    /// Starts each worker that died again on its directory (after 200 ms, as the classic
    /// test's loop does) until the job ends; a worker dead at the end stays down.
    fn restart_dead_workers_until_the_job_ends(&mut self) {
        let deadline = Instant::now() + RUN_DEADLINE;
        while Instant::now() < deadline {
            let ended = self.status().is_some_and(|s| {
                ["succeeded", "failed", "killed"]
                    .iter()
                    .any(|e| s.contains(&format!("state:    {e}")))
            });
            for i in 0..WORKERS {
                let dead = self.workers[i]
                    .as_mut()
                    .is_some_and(|c| c.try_wait().ok().flatten().is_some());
                if dead {
                    self.workers[i] = None;
                    if !ended {
                        std::thread::sleep(Duration::from_millis(200));
                        self.start_worker(i);
                    }
                }
            }
            if ended {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_worker(&mut self, i: usize) {
        if let Some(mut c) = self.workers[i].take() {
            kill_pid(c.id(), libc::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn kill_coordinator(&mut self) {
        if let Some(mut c) = self.coordinator.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn status(&self) -> Option<String> {
        let (ok, out) = command_within(
            quern()
                .args(["job", "status", "job-1"])
                .env("QUERN_COORDINATOR", &self.addr),
            Duration::from_secs(2),
        )?;
        ok.then_some(out)
    }

    /// Waits until `n` maps are done; None if the job got past its maps first.
    fn wait_maps(&self, n: u32) -> Option<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(s) = self.status() {
                if maps_done(&s) >= n {
                    let (done, total) = maps_progress(&s);
                    return (total != done).then_some(());
                }
                if !s.contains("state:    running") {
                    return None;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for a process to reach the failpoint `name`; returns its pid.
    fn wait_marker(&self, name: &str) -> Option<u32> {
        self.wait_marker_nth(name, 0)
    }

    /// Like [`Self::wait_marker`], preferring the `nth` process (mod those seen) to reach it.
    fn wait_marker_nth(&self, name: &str, nth: usize) -> Option<u32> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let mut pids: Vec<u32> = std::fs::read_dir(&self.marks)
                .ok()?
                .filter_map(|e| {
                    let n = e.ok()?.file_name().into_string().ok()?;
                    n.strip_prefix(name)?.strip_prefix('.')?.parse().ok()
                })
                .collect();
            if !pids.is_empty() {
                // Give the other processes headed for the point a moment to reach it too.
                std::thread::sleep(Duration::from_millis(100));
                pids.sort_unstable();
                return Some(pids[nth % pids.len()]);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn live_workers(&self) -> Vec<usize> {
        (0..WORKERS)
            .filter(|i| self.workers[*i].is_some())
            .collect()
    }
}

impl Drop for Cluster3 {
    fn drop(&mut self) {
        for t in self.thaws.drain(..) {
            let _ = t.join();
        }
        for i in 0..WORKERS {
            self.kill_worker(i);
        }
        if let Some(c) = &self.coordinator {
            kill_pid(c.id(), libc::SIGCONT);
        }
        self.kill_coordinator();
    }
}

fn kill_pid(pid: u32, signal: i32) {
    // SAFETY: signalling a process this suite started.
    unsafe { libc::kill(pid as i32, signal) };
}

/// Runs `cmd`, killing it after `limit`; returns (success, stdout), or None on timeout.
fn command_within(cmd: &mut std::process::Command, limit: Duration) -> Option<(bool, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().ok()? {
            let mut out = String::new();
            child.stdout.take()?.read_to_string(&mut out).ok()?;
            return Some((status.success(), out));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tmpfs over a directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(dir.to_path_buf()))
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

/// Inputs and oracle outputs shared by every run.
struct Suite {
    _dir: tempfile::TempDir,
    root: PathBuf,
    log: PathBuf,
    records: PathBuf,
    /// The incremental job's input (grown since `base` was written) and its earlier output,
    /// with that output's files, which no run may change.
    growing: PathBuf,
    base: PathBuf,
    base_files: BTreeMap<String, Option<Vec<u8>>>,
    oracles: HashMap<(JobKind, Vec<String>), PathBuf>,
    /// Fault-free durations per job and pacing, for the slowdown column.
    baseline: HashMap<(JobKind, Option<String>), Duration>,
}

impl Suite {
    fn new() -> Suite {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let log = root.join("access.log");
        let records = root.join("records.tsv");
        ok(quern()
            .args(["gen", "weblog", "--size", "1MiB", "--seed", "21", "--out"])
            .arg(&log));
        ok(quern()
            .args(["gen", "records", "--size", "1MiB", "--seed", "22", "--out"])
            .arg(&records));
        // The incremental job's history: the first 70% of the log, then it grows.
        let growing = root.join("growing");
        std::fs::create_dir_all(&growing).unwrap();
        let text = std::fs::read(&log).unwrap();
        let cut = text[..text.len() * 7 / 10]
            .iter()
            .rposition(|&b| b == b'\n')
            .unwrap()
            + 1;
        std::fs::write(growing.join("a.log"), &text[..cut]).unwrap();
        let base = root.join("base");
        ok(quern()
            .args(["run", "--local"])
            .args(Self::job_args(JobKind::Views, &[]))
            .arg("--input")
            .arg(&growing)
            .arg("--output")
            .arg(&base));
        std::fs::write(growing.join("a.log"), &text).unwrap();
        ok(quern()
            .args(["gen", "weblog", "--size", "256KiB", "--seed", "23", "--out"])
            .arg(growing.join("b.log")));
        let base_files = snapshot(&base);
        Suite {
            _dir: dir,
            root,
            log,
            records,
            growing,
            base,
            base_files,
            oracles: HashMap::new(),
            baseline: HashMap::new(),
        }
    }

    fn input(&self, job: JobKind) -> &Path {
        match job {
            JobKind::Views => &self.log,
            JobKind::Incremental => &self.growing,
            JobKind::Identity => &self.records,
        }
    }

    /// The whole argument list of a job run (without `--input` and `--output`).
    fn job_args(job: JobKind, extra: &[String]) -> Vec<String> {
        let mut args: Vec<String> = [job.job(), "--reducers", "3", "--split-size", "128KiB"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend_from_slice(extra);
        args
    }

    /// The arguments of a run of `job` (the incremental one names its earlier output).
    fn args(&self, job: JobKind, extra: &[String]) -> Vec<String> {
        let mut args = Self::job_args(job, extra);
        if job == JobKind::Incremental {
            args.push("--from".into());
            args.push(self.base.display().to_string());
        }
        args
    }

    /// The oracle's output for these arguments (None: the oracle fails too).
    fn oracle(&mut self, job: JobKind, args: &[String]) -> Option<PathBuf> {
        let key = (job, args.to_vec());
        if let Some(p) = self.oracles.get(&key) {
            return p.exists().then(|| p.clone());
        }
        let out = self.root.join(format!("oracle-{}", self.oracles.len()));
        let res = run(quern()
            .args(["run", "--local"])
            .args(args)
            .arg("--input")
            .arg(self.input(job))
            .arg("--output")
            .arg(&out));
        self.oracles.insert(key, out.clone());
        res.status.success().then_some(out)
    }
}

/// The pacing failpoint a setup puts on every worker (slowing maps so that a fault lands
/// mid-phase); the slowdown of a run is measured against a fault-free run with the same pacing.
fn pacing(setup: &Setup) -> Option<String> {
    let first = setup.worker_env[0]
        .iter()
        .find(|(k, v)| k == "FAILPOINTS" && v.starts_with("map.start="))?;
    setup
        .worker_env
        .iter()
        .all(|env| env.contains(first))
        .then(|| first.1.clone())
}

/// Runs the fault-free baseline for `job` with this pacing, once per suite.
fn baseline(suite: &mut Suite, job: JobKind, pace: Option<String>) -> Option<Outcome> {
    if suite.baseline.contains_key(&(job, pace.clone())) {
        return None;
    }
    let sc = Scenario {
        name: "fault-free baseline",
        jobs: BOTH,
        expect: Expect::Success,
        setup: |_, ms| match ms {
            0 => Setup::default(),
            ms => Setup::default().all_workers(&format!("map.start=sleep({ms})")),
        },
        inject: |_, _| None,
    };
    let ms = pace
        .as_deref()
        .and_then(|p| {
            p.strip_prefix("map.start=sleep(")?
                .strip_suffix(')')?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    let mut r = run_one(suite, &sc, job, ms);
    suite.baseline.insert((job, pace.clone()), r.duration);
    r.slowdown = Some(1.0);
    r.scenario = match pace {
        Some(p) => format!("fault-free baseline ({p})"),
        None => "fault-free baseline".into(),
    };
    r.seed = 0;
    Some(r)
}

/// What one run came to.
struct Outcome {
    scenario: String,
    job: JobKind,
    seed: u64,
    outcome: String,
    pass: bool,
    byte_identical: Option<bool>,
    lost: Option<u64>,
    duplicated: Option<u64>,
    unexpected: Option<u64>,
    reexecuted: Option<u64>,
    detection_ms: Option<u64>,
    duration: Duration,
    slowdown: Option<f64>,
    detail: String,
}

/// Counts record ids of an `identity` output against the oracle's and the input's.
fn count_ids(out: &Path, oracle: &Path, input: &Path) -> (u64, u64, u64) {
    fn ids(dir: &Path) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if !e.file_name().to_string_lossy().starts_with("part-") {
                continue;
            }
            for l in std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
            {
                let id = l.split('\t').next().unwrap_or("").to_string();
                *m.entry(id).or_default() += 1;
            }
        }
        m
    }
    let got = ids(out);
    let want = ids(oracle);
    let input: std::collections::HashSet<String> = std::fs::read_to_string(input)
        .unwrap()
        .lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    let (mut lost, mut dup, mut unexpected) = (0, 0, 0);
    for (id, n) in &want {
        let g = got.get(id).copied().unwrap_or(0);
        lost += n.saturating_sub(g);
        dup += g.saturating_sub(*n);
    }
    for (id, n) in &got {
        if !want.contains_key(id) {
            if input.contains(id) {
                dup += n;
            } else {
                unexpected += n;
            }
        }
    }
    (lost, dup, unexpected)
}

/// Every entry of an output directory (files by content; a directory as a marker).
fn snapshot(dir: &Path) -> BTreeMap<String, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            // Subdirectories (`_state/`), by `dir/name`.
            for (sub, data) in snapshot(&e.path()) {
                out.insert(format!("{name}/{sub}"), data);
            }
        } else {
            out.insert(name, std::fs::read(e.path()).ok());
        }
    }
    out
}

/// Files a live worker still holds under `shuffle/` once the job is over (after a grace
/// period for the cleanup heartbeat).
fn leftovers(c: &Cluster3) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut left = Vec::new();
        for i in c.live_workers() {
            let dir = c.dir.join(format!("worker-{i}")).join("shuffle");
            let mut stack = vec![dir];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    } else {
                        left.push(format!("worker-{i}: {}", e.path().display()));
                    }
                }
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_one(suite: &mut Suite, sc: &Scenario, job: JobKind, seed: u64) -> Outcome {
    let setup = (sc.setup)(job, seed);
    let args = suite.args(job, &setup.job_args);
    let oracle = suite.oracle(job, &args);
    let dir = tempfile::tempdir().unwrap();
    let mut result = Outcome {
        scenario: sc.name.to_string(),
        job,
        seed,
        outcome: String::new(),
        pass: false,
        byte_identical: None,
        lost: None,
        duplicated: None,
        unexpected: None,
        reexecuted: None,
        detection_ms: None,
        duration: Duration::ZERO,
        slowdown: None,
        detail: String::new(),
    };
    let _disk = match setup.small_disk {
        Some(size) => match SmallDisk::mount(&dir.path().join("worker-1"), size) {
            Some(d) => Some(d),
            None => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI runs as root and must be able to mount a tmpfs"
                );
                result.outcome = "skipped (no tmpfs: not root)".into();
                result.pass = true;
                return result;
            }
        },
        None => None,
    };
    let mut cluster = Cluster3::start(dir.path(), &setup);
    let out = dir.path().join("out");
    let start = Instant::now();
    let submitter = quern()
        .args(["job", "submit"])
        .args(&args)
        .arg("--input")
        .arg(suite.input(job))
        .arg("--output")
        .arg(&out)
        .env("QUERN_COORDINATOR", &cluster.addr)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waiter = std::thread::spawn(move || submitter.wait_with_output());
    let fault = (sc.inject)(&mut cluster, seed);
    // Detection: a restarted coordinator answers, or the coordinator acts on the fault.
    if let (Some(at), Some(up)) = (fault, cluster.restarted) {
        result.detection_ms = Some(up.duration_since(at).as_millis() as u64);
    }
    let deadline = start + RUN_DEADLINE;
    while !waiter.is_finished() && Instant::now() < deadline {
        if let (Some(at), None) = (fault, result.detection_ms) {
            if cluster
                .status()
                .is_some_and(|s| acted(&s) > cluster.acted_before)
            {
                result.detection_ms = Some(at.elapsed().as_millis() as u64);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !waiter.is_finished() {
        result.outcome = "hung".into();
        result.duration = start.elapsed();
        result.detail = format!(
            "status: {} (run directory kept: {})",
            cluster.status().unwrap_or_default().replace('\n', " | "),
            dir.keep().display()
        );
        return result;
    }
    let done = waiter.join().unwrap().unwrap();
    result.duration = start.elapsed();
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    let c = counters(&stdout);
    let tasks = {
        let s: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("maps:"))
            .collect();
        s.first().map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.split('/').nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
    };
    if let (Some(a), Some(t)) = (c.get("attempts"), tasks) {
        result.reexecuted = Some(a.saturating_sub(t));
    }
    let succeeded = stdout.contains("state:    succeeded");
    let mut left = leftovers(&cluster);
    if job == JobKind::Incremental && snapshot(&suite.base) != suite.base_files {
        left.push("the earlier output it continued was changed".into());
    }
    match (sc.expect, &oracle) {
        (Expect::Success, Some(oracle)) => {
            let identical = succeeded && snapshot(&out) == snapshot(oracle);
            result.byte_identical = Some(identical);
            result.outcome = if succeeded { "succeeded" } else { "FAILED" }.into();
            if job == JobKind::Identity {
                let (l, d, u) = count_ids(&out, oracle, suite.input(job));
                (result.lost, result.duplicated, result.unexpected) = (Some(l), Some(d), Some(u));
            }
            result.pass = identical && left.is_empty();
        }
        (Expect::CleanFailure(text), _) => {
            let failed = stdout.contains("state:    failed") && stdout.contains(text);
            let files = snapshot(&out);
            let partial = files
                .keys()
                .any(|k| k.starts_with("part-") || k == "_SUCCESS");
            result.outcome = if failed && !partial {
                "failed cleanly".into()
            } else {
                "UNCLEAN".into()
            };
            result.pass = failed && !partial && left.is_empty();
        }
        (Expect::Success, None) => {
            result.outcome = "oracle failed".into();
        }
    }
    if !left.is_empty() {
        result.detail = format!("left behind: {}", left.join(", "));
    }
    if !result.pass && result.detail.is_empty() {
        result.detail = stdout
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap_or("")
            .to_string()
            + &String::from_utf8_lossy(&done.stderr);
    }
    if let Some(base) = suite.baseline.get(&(job, pacing(&setup))) {
        result.slowdown = Some(result.duration.as_secs_f64() / base.as_secs_f64());
    }
    if !result.pass {
        // Keep the evidence of a failing run.
        let kept = dir.keep();
        result.detail += &format!(" (run directory kept: {})", kept.display());
    }
    result
}

/// One chaos run: a random process killed at a random time, then restarted.
fn chaos(suite: &mut Suite, i: u64) -> Outcome {
    let mut rng = jobs::gen::Rng::new(0xC4A05 + i);
    let job = if i % 2 == 0 {
        JobKind::Identity
    } else {
        JobKind::Views
    };
    let victim = rng.below(WORKERS as u64 + 1) as usize;
    let delay = rng.below(2500);
    let sc = Scenario {
        name: "chaos",
        jobs: BOTH,
        expect: Expect::Success,
        setup: |_, _| Setup::default().all_workers("map.start=sleep(200)"),
        inject: |_, _| None,
    };
    // The victim and delay travel through the seed: the low bits pick the process, the rest
    // the delay in milliseconds.
    let seed = (delay << 8) | victim as u64;
    let chaos_sc = Scenario {
        inject: |c, seed| {
            std::thread::sleep(Duration::from_millis(seed >> 8));
            let victim = (seed & 0xFF) as usize;
            let at = c.fault();
            if victim == WORKERS {
                c.kill_coordinator();
                c.start_coordinator(false);
                Some(at)
            } else {
                c.kill_worker(victim);
                std::thread::sleep(Duration::from_millis(300));
                c.start_worker(victim);
                Some(at)
            }
        },
        ..sc
    };
    let mut o = run_one(suite, &chaos_sc, job, seed);
    o.scenario = format!(
        "chaos {i}: kill {} at {delay} ms",
        if victim == WORKERS {
            "the coordinator".to_string()
        } else {
            format!("worker {victim}")
        }
    );
    o.seed = i;
    o
}

fn fmt_opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn write_report(results: &[Outcome], mode: &str) -> String {
    // A scenario (the chaos loop is one) is byte-identical if every run of it is.
    let mut by_scenario: BTreeMap<String, bool> = BTreeMap::new();
    let mut clean_failures = std::collections::BTreeSet::new();
    for r in results
        .iter()
        .filter(|r| !r.scenario.starts_with("fault-free"))
    {
        let name = if r.scenario.starts_with("chaos") {
            "chaos".to_string()
        } else {
            r.scenario.clone()
        };
        match r.byte_identical {
            Some(identical) => *by_scenario.entry(name).or_insert(true) &= identical,
            None if r.outcome == "failed cleanly" => {
                clean_failures.insert(name);
            }
            None if r.outcome.starts_with("skipped") => {}
            None => *by_scenario.entry(name).or_insert(true) = false,
        }
    }
    let identical = by_scenario.values().filter(|i| **i).count();
    let lost: u64 = results.iter().filter_map(|r| r.lost).sum();
    let dup: u64 = results.iter().filter_map(|r| r.duplicated).sum();
    let passed = results.iter().filter(|r| r.pass).count();
    let headline = format!(
        "{identical} of {} scenarios byte-identical; lost {lost}, duplicated {dup}\n\
         ({} more end in their documented clean failure; {passed} of {} runs passed)",
        by_scenario.len(),
        clean_failures.len(),
        results.len()
    );
    let mut table = format!(
        "Quern fault suite ({mode})\n{headline}\n\n{:<58} {:<8} {:>4} {:<15} {:>5} {:>4} {:>4} {:>4} {:>5} {:>8} {:>8}\n",
        "scenario", "job", "seed", "outcome", "ident", "lost", "dup", "unex", "rerun", "detect", "slowdown"
    );
    for r in results {
        table += &format!(
            "{:<58} {:<8} {:>4} {:<15} {:>5} {:>4} {:>4} {:>4} {:>5} {:>8} {:>8}\n",
            r.scenario,
            r.job.name(),
            r.seed,
            r.outcome,
            fmt_opt(r.byte_identical.map(|b| if b { "yes" } else { "NO" })),
            fmt_opt(r.lost),
            fmt_opt(r.duplicated),
            fmt_opt(r.unexpected),
            fmt_opt(r.reexecuted),
            fmt_opt(r.detection_ms.map(|d| format!("{d}ms"))),
            fmt_opt(r.slowdown.map(|s| format!("{s:.2}x"))),
        );
        if !r.pass {
            table += &format!("    ^ {}\n", r.detail.trim());
        }
    }
    let json = json!({
        "mode": mode,
        "headline": headline,
        "runs": results.iter().map(|r| json!({
            "scenario": r.scenario,
            "job": r.job.name(),
            "seed": r.seed,
            "outcome": r.outcome,
            "pass": r.pass,
            "byte_identical": r.byte_identical,
            "lost": r.lost,
            "duplicated": r.duplicated,
            "unexpected": r.unexpected,
            "reexecuted_tasks": r.reexecuted,
            "detection_ms": r.detection_ms,
            "duration_ms": r.duration.as_millis() as u64,
            "slowdown": r.slowdown,
            "detail": r.detail,
        })).collect::<Vec<_>>(),
    });
    // Test binaries run in their package's directory; a path fixed at build time would point
    // into whichever checkout built a binary that several share through one target directory.
    let dir = std::env::current_dir().unwrap().join("target/faults");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&json).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join("report.txt"), &table).unwrap();
    table
}

#[test]
fn fault_suite() {
    let mode = std::env::var("QUERN_FAULTS").unwrap_or_else(|_| "fast".into());
    let full = mode == "full";
    let only = std::env::var("QUERN_FAULTS_ONLY").ok();
    let mut suite = Suite::new();
    let mut results = Vec::new();
    let jobs: &[JobKind] = if full {
        WITH_INCREMENTAL
    } else {
        &[JobKind::Identity, JobKind::Incremental]
    };
    let seeds: &[u64] = if full { &[0, 1, 2] } else { &[1] };
    for sc in scenarios() {
        if only.as_deref().is_some_and(|o| !sc.name.contains(o)) {
            continue;
        }
        for &job in jobs.iter().filter(|j| sc.jobs.contains(j)) {
            for &seed in seeds {
                let pace = pacing(&(sc.setup)(job, seed));
                results.extend(baseline(&mut suite, job, pace));
                let r = run_one(&mut suite, &sc, job, seed);
                eprintln!(
                    "{:<58} {:<8} seed {seed}: {} {}",
                    r.scenario,
                    job.name(),
                    r.outcome,
                    if r.pass { "ok" } else { "FAIL" }
                );
                results.push(r);
            }
        }
    }
    if only.is_none() {
        for i in 0..if full { 20 } else { 3 } {
            for job in BOTH {
                let pace = Some("map.start=sleep(200)".to_string());
                results.extend(baseline(&mut suite, *job, pace));
            }
            let r = chaos(&mut suite, i);
            eprintln!(
                "{}: {} {}",
                r.scenario,
                r.outcome,
                if r.pass { "ok" } else { "FAIL" }
            );
            results.push(r);
        }
    }
    let table = write_report(&results, &mode);
    eprintln!("{table}");
    let failed: Vec<&Outcome> = results.iter().filter(|r| !r.pass).collect();
    assert!(failed.is_empty(), "{} runs failed:\n{table}", failed.len());
}
