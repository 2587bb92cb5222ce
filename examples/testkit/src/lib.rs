//! Test support for the example job crates: a local cluster of the stock `quern` binary (so a
//! job binary must ship itself to it), and helpers to run a job binary and read outputs.

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

/// A `quern local` cluster of stock workers, killed on drop.
pub struct StockCluster {
    /// Its state directory (worker directories are below it).
    pub state: PathBuf,
    /// The coordinator's address.
    pub addr: String,
    child: Child,
}

impl StockCluster {
    /// Starts `workers` single-slot workers with state under `dir`.
    pub fn start(dir: &Path, workers: u32) -> StockCluster {
        let state = dir.join(".quern");
        let child = Command::new(stock_quern())
            .args([
                "local",
                "--workers",
                &workers.to_string(),
                "--slots",
                "1",
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
            assert!(Instant::now() < deadline, "cluster did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let addr = std::fs::read_to_string(&addr_file)
            .expect("address file")
            .trim()
            .to_string();
        StockCluster { state, addr, child }
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

impl Drop for StockCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
