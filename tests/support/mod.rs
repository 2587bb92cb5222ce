//! Test support: the real `quern` binary, real clusters of real processes on loopback.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub fn quern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quern"))
}

/// Runs a command and returns its output, printing it when `QUERN_TEST_VERBOSE` is set.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("quern runs");
    if std::env::var_os("QUERN_TEST_VERBOSE").is_some() {
        eprintln!(
            "{cmd:?}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Generated inputs shared by a test: a web log and a words file.
pub struct Inputs {
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub words: PathBuf,
}

pub fn inputs(size: &str) -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let words = dir.path().join("words.txt");
    ok(quern()
        .args(["gen", "weblog", "--size", size, "--seed", "11", "--out"])
        .arg(&log));
    ok(quern()
        .args(["gen", "words", "--size", size, "--seed", "12", "--out"])
        .arg(&words));
    Inputs { dir, log, words }
}

/// Every file of an output directory, by name.
pub fn read_output(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Parses the `counters:` block the CLI prints.
pub fn counters(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("counters:"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// A `quern local` cluster: a coordinator and N worker processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub addr: String,
    child: Child,
}

impl Cluster {
    pub fn start(workers: u32) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".quern");
        let child = quern()
            .args([
                "local",
                "--workers",
                &workers.to_string(),
                "--slots",
                "2",
                "--dir",
            ])
            .arg(&state)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("quern local starts");
        let addr_file = state.join("coordinator.addr");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !addr_file.exists() {
            assert!(Instant::now() < deadline, "local cluster did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let addr = std::fs::read_to_string(addr_file)
            .unwrap()
            .trim()
            .to_string();
        Cluster { dir, addr, child }
    }

    /// `quern job ...` against this cluster.
    pub fn job(&self) -> Command {
        let mut c = quern();
        c.arg("job").env("QUERN_COORDINATOR", &self.addr);
        c
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep")
            .args(["-P", &self.child.id().to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
