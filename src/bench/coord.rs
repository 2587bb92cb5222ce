//! The measured coordinator: a `quern coordinator` child process of this binary, pinned to one
//! CPU, and what can be read about it from outside (its CPU time and memory from `/proc`, its
//! journal's size, its metrics).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::sim::Rpc;

/// A running coordinator, killed when dropped.
pub struct CoordProc {
    child: Child,
    state: PathBuf,
    /// Its gRPC address.
    pub addr: String,
    http: String,
}

/// A process's CPU time so far and its resident memory now.
pub struct Usage {
    pub cpu: Duration,
    pub rss: u64,
}

impl Usage {
    /// The share of one core used between `a` and `b`, `secs` apart.
    pub fn share(a: &Usage, b: &Usage, secs: f64) -> f64 {
        (b.cpu.saturating_sub(a.cpu)).as_secs_f64() / secs
    }
}

fn free_addr() -> Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

/// Keeps this process (the simulated workers) off `cpu` when the machine has others.
pub fn pin_self_away_from(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n > 1 {
        pin(0, (0..n).filter(|c| *c != cpu));
    }
}

/// Sets the CPUs process `pid` (0: this one) may run on; best effort.
fn pin(pid: libc::pid_t, cpus: impl Iterator<Item = usize>) {
    // SAFETY: `set` is a plain bit set initialised by CPU_ZERO, and sched_setaffinity only
    // reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

impl CoordProc {
    /// Starts `quern coordinator` with its state under `dir`, on CPU `cpu` only.
    pub fn start(dir: &Path, heartbeat_ms: u64, cpu: usize) -> Result<CoordProc> {
        let (addr, http) = (free_addr()?, free_addr()?);
        let state = dir.join("coordinator");
        let log = std::fs::File::create(dir.join("coordinator.log"))?;
        let exe = std::env::current_exe().context("finding this binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["coordinator", "--auth", "off", "--submit-rate", "0"])
            .args(["--listen", &addr, "--http", &http])
            .arg("--state-dir")
            .arg(&state)
            .args(["--heartbeat-ms", &heartbeat_ms.to_string()])
            .env("QUERN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().context("starting the coordinator")?;
        pin(child.id() as libc::pid_t, std::iter::once(cpu));
        Ok(CoordProc {
            child,
            state,
            addr,
            http,
        })
    }

    /// Opens `n` gRPC connections, waiting for the coordinator to listen.
    pub async fn connect(&self, n: usize) -> Result<Vec<Rpc>> {
        let endpoint = protocol::tls::endpoint(&self.addr, None)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let first = loop {
            match endpoint.connect().await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("the coordinator at {} did not listen: {e}", self.addr),
            }
        };
        let mut out = vec![Rpc::new(first)];
        for _ in 1..n {
            out.push(Rpc::new(endpoint.connect().await?));
        }
        Ok(out
            .into_iter()
            .map(|r| r.max_decoding_message_size(protocol::MAX_MESSAGE_BYTES))
            .collect())
    }

    /// Its CPU time (user and system) and resident memory, from `/proc`.
    pub fn usage(&self) -> Result<Usage> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the command name: state is the first, utime the 12th, stime the 13th.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, r)| r.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let cpu = Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024;
        Ok(Usage { cpu, rss })
    }

    /// The size of its journal file.
    pub fn journal_bytes(&self) -> u64 {
        std::fs::metadata(self.state.join("journal.log")).map_or(0, |m| m.len())
    }

    /// Journal syncs so far (its metrics' `quern_journal_append_seconds_count`).
    pub async fn journal_syncs(&self) -> Result<u64> {
        let metrics = self.get("/metrics").await?;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("quern_journal_append_seconds_count "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
            .context("no quern_journal_append_seconds_count in the coordinator's metrics")
    }

    /// GETs `path` from its HTTP port.
    pub async fn get(&self, path: &str) -> Result<String> {
        let url = format!("http://{}{path}", self.http);
        tokio::task::spawn_blocking(move || -> Result<String> {
            let mut r = ureq::get(&url)
                .call()
                .with_context(|| format!("GET {url}"))?;
            Ok(r.body_mut().with_config().limit(1 << 30).read_to_string()?)
        })
        .await?
    }
}

impl Drop for CoordProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
