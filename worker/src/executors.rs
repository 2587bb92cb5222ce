//! Executor processes kept across the tasks of a job, so that what a job loads once per
//! process (a model, a lookup table) is loaded once per worker slot, not once per task.
//!
//! An executor started with `quern executor --serve` reads one request per line on stdin,
//! `LOG_FILE<TAB>TASK_JSON`, runs the attempt with its stdout and stderr sent to that log,
//! and answers with the attempt's result as JSON on a line. After an attempt that succeeded, the worker keeps the process idle for the next
//! attempt of the same job; one that failed, was cancelled or died is not reused. Idle
//! executors are stopped when their job finishes or after [`IDLE_TIMEOUT`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use protocol::JobId;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// How long an idle executor waits for another attempt of its job.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Which executors may serve an attempt: same job, same binary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The job.
    pub job: JobId,
    /// The executable.
    pub exe: PathBuf,
}

/// A running `quern executor --serve` process.
pub struct Executor {
    child: Child,
    stdin: ChildStdin,
    replies: BufReader<ChildStdout>,
    /// Attempts it has run.
    pub served: u64,
}

/// The idle executors of one worker, by job and binary; owned by the worker.
#[derive(Default)]
pub struct Pool {
    idle: Mutex<HashMap<Key, Vec<(Executor, Instant)>>>,
}

impl Pool {
    fn idle(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Vec<(Executor, Instant)>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes an idle executor for `key`, if there is one.
    pub fn take(&self, key: &Key) -> Option<Executor> {
        let mut idle = self.idle();
        let list = idle.get_mut(key)?;
        let e = list.pop().map(|(e, _)| e);
        if list.is_empty() {
            idle.remove(key);
        }
        e
    }

    /// Keeps `e` for the next attempt of its job.
    pub fn put(&self, key: Key, e: Executor) {
        self.idle()
            .entry(key)
            .or_default()
            .push((e, Instant::now()));
    }

    /// Stops the idle executors of `job`.
    pub fn forget_job(&self, job: JobId) {
        let stopped: Vec<_> = {
            let mut idle = self.idle();
            let keys: Vec<Key> = idle.keys().filter(|k| k.job == job).cloned().collect();
            keys.into_iter().filter_map(|k| idle.remove(&k)).collect()
        };
        // Dropping a process handle kills it (kill_on_drop).
        drop(stopped);
    }

    /// Stops executors idle for longer than `after` (all of them for zero).
    pub fn reap(&self, after: Duration) {
        let mut idle = self.idle();
        for list in idle.values_mut() {
            list.retain(|(_, since)| !after.is_zero() && since.elapsed() < after);
        }
        idle.retain(|_, l| !l.is_empty());
    }
}

/// Starts `exe executor --serve`, its stderr (until the first request) in `log`, fetching
/// map output with the worker's TLS settings `tls`, reading the chunks of `storage_host`
/// (the volume server this worker runs beside) from its files.
///
/// # Errors
/// The spawn error.
pub fn spawn(
    exe: &Path,
    log: std::fs::File,
    tls: Option<&protocol::tls::ClientTls>,
    storage_host: &str,
) -> std::io::Result<Executor> {
    let mut cmd = tokio::process::Command::new(exe);
    // Added to any the worker was given, so that one host's several volume servers can all be
    // named.
    let env = dfs_client::config::LOCAL_VOLUME_SERVERS_ENV;
    let local = match std::env::var(env) {
        Ok(v) if !v.is_empty() => format!("{v},{storage_host}"),
        _ => storage_host.to_string(),
    };
    cmd.env(env, local);
    for var in [
        protocol::tls::CA_ENV,
        protocol::tls::CERT_ENV,
        protocol::tls::KEY_ENV,
    ] {
        cmd.env_remove(var);
    }
    for (var, path) in tls.map(|t| t.env()).unwrap_or_default() {
        cmd.env(var, path);
    }
    cmd.arg("executor")
        .arg("--serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    // An executor dies with its worker, even one killed by SIGKILL: an orphan would go on
    // writing files for an attempt that nobody tracks any more.
    die_with_parent(&mut cmd, libc::SIGKILL);
    let mut child = cmd.spawn()?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(Executor {
        child,
        stdin,
        replies: BufReader::new(stdout),
        served: 0,
    })
}

impl Executor {
    /// Runs `task` (compact JSON), logging to `log`; returns the result line it answered
    /// (JSON), or `None` if the process died first or the log path cannot be sent.
    pub async fn run(&mut self, task: &str, log: &Path) -> Option<String> {
        let log = log.to_str()?;
        if log.contains(['\t', '\n']) || task.contains('\n') {
            return None;
        }
        let line = format!("{log}\t{task}\n");
        self.stdin.write_all(line.as_bytes()).await.ok()?;
        self.stdin.flush().await.ok()?;
        let mut reply = String::new();
        match self.replies.read_line(&mut reply).await {
            Ok(n) if n > 0 && reply.ends_with('\n') => {
                self.served += 1;
                reply.pop();
                Some(reply)
            }
            _ => None,
        }
    }

    /// Kills the process and waits for it.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits for the process to end (after it died) and describes how it ended.
    pub async fn exit_status(mut self) -> String {
        match tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(Ok(s)) => s.to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(_) => {
                let _ = self.child.start_kill();
                "no exit after its reply stream closed; killed".into()
            }
        }
    }
}

/// Makes the process `cmd` starts receive `signal` when the thread that started it (and so
/// its parent process) dies, however it dies (Linux `PR_SET_PDEATHSIG`; elsewhere nothing).
/// Start such children from a thread that lives as long as the parent process means to.
pub fn die_with_parent(cmd: &mut tokio::process::Command, signal: i32) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (cmd, signal);
}
