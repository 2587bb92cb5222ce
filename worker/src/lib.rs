//! The Quern worker daemon: registers with the coordinator, pulls tasks through heartbeats,
//! runs each attempt in an executor child process, and serves map output to reducers.
//!
//! Layout:
//! - [`daemon`]: registration, the heartbeat loop, executor supervision;
//! - [`executor`]: the executor process (`quern executor`): runs one map or reduce attempt;
//! - [`shuffle`]: the shuffle service (server) and the fetcher reducers use (client);
//! - [`task`]: the task description handed to an executor and the result it hands back.
//!
//! User code runs only in executors, so a panic or an out-of-memory kill in a map function
//! ends one attempt and never the daemon.

pub mod binaries;
pub mod daemon;
pub mod executor;
pub mod executors;
pub mod shuffle;
pub mod task;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use daemon::serve;

/// Settings of one worker daemon.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// The coordinator's address, e.g. `http://127.0.0.1:7070`.
    pub coordinator: String,
    /// Directory for shuffle files, scratch space and attempt logs.
    pub dir: PathBuf,
    /// Concurrent task slots (default: one per core).
    pub slots: u32,
    /// GPUs: how many tasks that want a GPU may run at once (default: the NVIDIA GPUs found).
    pub gpus: u32,
    /// The worker token it presents to the coordinator (when the coordinator checks tokens).
    pub token: Option<String>,
    /// Address the shuffle service listens on (port 0 picks one).
    pub shuffle_listen: SocketAddr,
    /// The host name or address other machines reach this worker at, advertised with the
    /// shuffle port; none: the listening address, which must then be a specific one.
    pub advertise_host: Option<String>,
    /// The storage host this worker runs beside, for data-local placement.
    pub storage_host: String,
    /// The binary that runs executors (`<exe> executor --serve`).
    pub executable: PathBuf,
    /// How long to keep retrying the coordinator at start-up.
    pub connect_timeout: Duration,
    /// Fault injection for tests: every attempt waits this long before it starts, as on a
    /// slow machine.
    pub fault_delay: Duration,
    /// TLS of the shuffle port (none: plaintext).
    pub tls: Option<protocol::tls::ServerTls>,
    /// How this worker and its executors reach the coordinator and other workers: the
    /// cluster's CA and, for mutual TLS, this worker's certificate.
    pub client_tls: Option<protocol::tls::ClientTls>,
}

impl WorkerConfig {
    /// Returns a config with defaults for a worker of the coordinator at `coordinator`.
    pub fn new(coordinator: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        WorkerConfig {
            coordinator: coordinator.into(),
            dir: dir.into(),
            slots: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            gpus: detect_gpus(),
            token: None,
            shuffle_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            advertise_host: None,
            storage_host: dfs_client::local_host(),
            executable: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("quern")),
            connect_timeout: Duration::from_secs(30),
            fault_delay: Duration::ZERO,
            tls: None,
            client_tls: None,
        }
    }
}

/// Counts the NVIDIA GPUs of this machine by their device files (`/dev/nvidia0`, ...).
pub fn detect_gpus() -> u32 {
    std::fs::read_dir("/dev").map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_prefix("nvidia"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            })
            .count() as u32
    })
}

/// Errors that stop a worker daemon.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// A local I/O step failed (binding the shuffle port, creating directories).
    #[error("worker i/o error: {context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The coordinator could not be reached or refused the worker.
    #[error("cannot reach coordinator at {addr}: {message}")]
    Coordinator {
        /// Its address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The TLS settings cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The shuffle port listens on every address and no address to advertise was given.
    #[error("the shuffle service listens on {0}, which other machines cannot be told to reach: give --advertise-host (this machine's name or address as the others see it)")]
    NoAdvertiseAddress(SocketAddr),
    /// Another process owns the worker directory.
    #[error(transparent)]
    Locked(#[from] protocol::dirlock::DirLockError),
}
