//! Test support shared by Quern's integration tests, the example job crates and the storage
//! client's tests: the stock `quern` binary, a `quern local` cluster of real processes, a
//! SeaweedFS cluster of a test's own, child processes that die with the test, and helpers to
//! run commands and read outputs. Everything a helper starts is stopped when its guard drops,
//! also when the test fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The stock `quern` binary, built beside the tests by the workspace.
pub fn stock_quern() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .join("quern");
    assert!(
        path.exists(),
        "no stock quern binary at {}: run the workspace's tests (cargo test --release --workspace)",
        path.display()
    );
    path
}

/// Writes `size` of generated input of `kind` (`weblog`, `words`, ...) with `seed` to `out`,
/// with the stock `quern gen`.
pub fn generate(kind: &str, size: &str, seed: u64, out: &Path) {
    check(
        Command::new(stock_quern())
            .args([
                "gen",
                kind,
                "--size",
                size,
                "--seed",
                &seed.to_string(),
                "--out",
            ])
            .arg(out)
            .output()
            .expect("quern gen runs"),
    );
}

/// Panics with the output of a failed command; returns its stdout.
pub fn check(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How to start a [`Cluster`].
#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// Worker processes.
    pub workers: u32,
    /// Task slots per worker.
    pub slots: u32,
    /// Storage hosts the workers sit beside, given out in turn (`--storage-hosts`).
    pub storage_hosts: &'a [String],
    /// Extra environment of the cluster's processes.
    pub env: &'a [(&'a str, &'a str)],
    /// The binary to run (default: [`stock_quern`]).
    pub binary: Option<&'a Path>,
    /// More arguments of `quern local` (`--auth`, say).
    pub args: &'a [&'a str],
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            workers: 1,
            slots: 2,
            storage_hosts: &[],
            env: &[],
            binary: None,
            args: &[],
        }
    }
}

/// A `quern local` cluster (a coordinator and its worker processes) in a temporary directory
/// of its own; stopped (SIGTERM, then SIGKILL after 10 s) on drop.
pub struct Cluster {
    /// The cluster's directory; its state is in `.quern` below it, and tests may keep
    /// their inputs and outputs beside it.
    pub dir: tempfile::TempDir,
    /// Its state directory (worker directories are below it).
    pub state: PathBuf,
    /// The coordinator's address.
    pub addr: String,
    binary: PathBuf,
    child: Child,
}

impl Cluster {
    /// Starts `workers` workers with two slots each.
    pub fn start(workers: u32) -> Cluster {
        Cluster::start_with(Options {
            workers,
            ..Options::default()
        })
    }

    /// Starts a cluster as `o` says.
    pub fn start_with(o: Options<'_>) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state = dir.path().join(".quern");
        let binary = o.binary.map_or_else(stock_quern, Path::to_path_buf);
        let mut cmd = Command::new(&binary);
        cmd.env("QUERN_CONFIG", "none")
            .arg("local")
            .args(["--workers", &o.workers.to_string()])
            .args(["--slots", &o.slots.to_string()])
            .arg("--dir")
            .arg(&state);
        if !o.storage_hosts.is_empty() {
            cmd.arg("--storage-hosts").arg(o.storage_hosts.join(","));
        }
        cmd.envs(o.env.iter().copied()).args(o.args);
        let child = cmd
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
        let addr = std::fs::read_to_string(&addr_file)
            .expect("address file")
            .trim()
            .to_string();
        Cluster {
            dir,
            state,
            addr,
            binary,
            child,
        }
    }

    /// `quern job ...` against this cluster.
    pub fn job(&self) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("job").env("QUERN_COORDINATOR", &self.addr);
        c
    }

    /// The process ids of its workers.
    pub fn worker_pids(&self) -> Vec<u32> {
        let out = Command::new("pgrep")
            .args(["-P", &self.child.id().to_string()])
            .output()
            .expect("pgrep runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// How many workers hold a fetched job binary.
    pub fn workers_with_binaries(&self) -> usize {
        std::fs::read_dir(&self.state)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.path().join("binaries").is_dir())
                    .count()
            })
            .unwrap_or(0)
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

/// Returns an environment variable that `scripts/test.sh` sets when it starts SeaweedFS.
/// Under CI a missing one fails the test; elsewhere the test is skipped with a note.
pub fn seaweedfs_var(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set: CI must start SeaweedFS first (scripts/test.sh)")
        }
        _ => {
            eprintln!("{var} not set; skipping (scripts/test.sh starts SeaweedFS)");
            None
        }
    }
}

/// The `export NAME=VALUE` lines a script printed (for `eval`), as a map.
pub fn exports(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.strip_prefix("export ")?.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `scripts/seaweedfs.sh` of the checkout under test: found from the directory of the package
/// whose tests run (cargo sets it when running them), not from where this crate was compiled
/// (a build cache shared by two checkouts would point into the other one).
fn seaweedfs_script() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    start
        .ancestors()
        .map(|d| d.join("scripts/seaweedfs.sh"))
        .find(|p| p.exists())
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/seaweedfs.sh"))
}

/// A SeaweedFS cluster of this test's own (so a test may kill parts of it), stopped on drop.
pub struct OwnSeaweedFs {
    /// Its directory: data, logs and pid files.
    pub dir: tempfile::TempDir,
    /// What `scripts/seaweedfs.sh start` exported (`QUERN_SEAWEEDFS_MASTER`, ...).
    pub env: BTreeMap<String, String>,
}

impl OwnSeaweedFs {
    /// Starts one on ports from `port_base`.
    pub fn start(port_base: u16) -> OwnSeaweedFs {
        let dir = tempfile::tempdir().expect("temporary directory");
        let out = Command::new("bash")
            .arg(seaweedfs_script())
            .arg("start")
            .arg(dir.path())
            .env("SEAWEEDFS_PORT_BASE", port_base.to_string())
            .output()
            .expect("scripts/seaweedfs.sh runs");
        // Stopped on drop from here on, also if the start failed halfway.
        let mut sw = OwnSeaweedFs {
            dir,
            env: BTreeMap::new(),
        };
        assert!(
            out.status.success(),
            "seaweedfs did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        sw.env = exports(&String::from_utf8_lossy(&out.stdout));
        sw
    }

    /// Kills volume server `i` (SIGKILL).
    pub fn kill_volume(&self, i: usize) {
        self.signal_volume(i, libc::SIGKILL);
    }

    /// Stops volume server `i` (SIGSTOP): it keeps its port and connections, and answers
    /// nothing until the guard returned is dropped (however the test ends, so that the
    /// server can then be stopped for good).
    #[must_use = "the server resumes when the guard is dropped"]
    pub fn stop_volume(&self, i: usize) -> StoppedVolume<'_> {
        self.signal_volume(i, libc::SIGSTOP);
        StoppedVolume(self, i)
    }

    fn signal_volume(&self, i: usize, signal: i32) {
        let pid = std::fs::read_to_string(self.dir.path().join(format!("volume{i}.pid")))
            .expect("volume pid file");
        let pid: i32 = pid.trim().parse().expect("a pid");
        // SAFETY: signalling a process this test started.
        unsafe { libc::kill(pid, signal) };
    }
}

/// A volume server stopped by [`OwnSeaweedFs::stop_volume`], resumed on drop.
pub struct StoppedVolume<'a>(&'a OwnSeaweedFs, usize);

impl Drop for StoppedVolume<'_> {
    fn drop(&mut self) {
        self.0.signal_volume(self.1, libc::SIGCONT);
    }
}

impl Drop for OwnSeaweedFs {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(seaweedfs_script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// Child processes killed (and resumed first, if stopped) when the test ends.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            // SAFETY: signalling our own child; a stopped one must be resumed to die cleanly.
            unsafe { libc::kill(c.id() as i32, libc::SIGCONT) };
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs `bin` with `args` plus `--input`s and `--output`, against `addr` if given; panics
/// with its output if it fails, and returns its stdout.
pub fn run_job(
    bin: &str,
    addr: Option<&str>,
    args: &[&str],
    inputs: &[&Path],
    out: &Path,
) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for i in inputs {
        cmd.arg("--input").arg(i);
    }
    cmd.arg("--output").arg(out);
    if let Some(a) = addr {
        cmd.env("QUERN_COORDINATOR", a);
    }
    check(cmd.output().expect("job binary runs"))
}

/// The part files of an output directory, concatenated in order.
pub fn read_parts(dir: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("output directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("part-"))
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("part file"))
        .collect()
}

/// Asserts that a cluster output and an oracle output hold the same bytes (parts and manifest).
pub fn assert_same_output(cluster: &Path, oracle: &Path) {
    assert!(
        read_parts(cluster) == read_parts(oracle),
        "part files differ: {} vs {}",
        cluster.display(),
        oracle.display()
    );
    assert_eq!(
        std::fs::read(cluster.join("_MANIFEST.json")).expect("manifest"),
        std::fs::read(oracle.join("_MANIFEST.json")).expect("manifest"),
    );
}
