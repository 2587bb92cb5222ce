//! `quern coordinator`, `quern worker` and `quern local`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use coordinator::CoordinatorConfig;
use jobs::Registry;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use worker::WorkerConfig;

use crate::util::{write_atomic, ADDR_FILE};

/// When the coordinator checks tokens.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMode {
    /// On when the RPC or HTTP listener is bound beyond loopback.
    Auto,
    /// Always.
    On,
    /// Never (refused on a listener beyond loopback unless forced with a warning).
    Off,
}

#[derive(Args, Debug)]
pub struct CoordinatorArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Check a bearer token with a role on every RPC and API call; `auto` turns it on as soon
    /// as the RPC or HTTP listener is bound beyond loopback.
    #[arg(long, value_enum, default_value_t = AuthMode::Auto)]
    auth: AuthMode,
    /// The token file (hashed tokens and their roles; `quern token create` adds to it).
    /// Default: <state-dir>/tokens.json.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Directory for the coordinator's state.
    #[arg(long, default_value = ".quern/coordinator")]
    state_dir: PathBuf,
    /// Worker heartbeat interval, in milliseconds.
    #[arg(long, default_value_t = 200)]
    heartbeat_ms: u64,
    /// Seconds of silence after which a worker is declared dead.
    #[arg(long, default_value_t = 10)]
    worker_timeout_s: u64,
    /// Milliseconds a job waits for a slot beside a map's data before running it elsewhere.
    #[arg(long, default_value_t = 3000)]
    locality_wait_ms: u64,
    /// Milliseconds a task must run before it may get a backup attempt (it also needs its
    /// phase to have nothing left to start and to have run 1.5 times its peers' median).
    #[arg(long, default_value_t = coordinator::DEFAULT_SPECULATION_FLOOR.as_millis() as u64)]
    speculation_floor_ms: u64,
    /// Fetch-failure reports against one map output after which the map is re-run.
    #[arg(long, default_value_t = coordinator::DEFAULT_FETCH_FAILURE_THRESHOLD)]
    fetch_failure_threshold: u32,
    /// Finished jobs kept in the history (UI, API, `quern job list`), across restarts; the
    /// oldest beyond this are forgotten.
    #[arg(long, default_value_t = coordinator::DEFAULT_KEEP_JOBS)]
    keep_jobs: usize,
    /// Compact the journal each time it has grown by this much (64MiB, 1GiB) and by its size
    /// at the last compaction: the task records of jobs forgotten beyond --keep-jobs are
    /// dropped. It is also compacted at every start.
    #[arg(long, default_value = "64MiB", value_parser = crate::util::parse_size)]
    journal_compact_after: u64,
    /// Attempts of one task lost with their workers (killed, not failed: they do not count
    /// toward a job's --max-attempts) after which the job fails: a task that takes down
    /// every worker it runs on.
    #[arg(long, default_value_t = coordinator::DEFAULT_MAX_LOST_ATTEMPTS)]
    max_lost_attempts: u32,
    /// Output one job may write (e.g. 500GiB); a job past it fails and its output is
    /// discarded. 0: no limit.
    #[arg(long, default_value = "1TiB", value_parser = crate::util::parse_size)]
    max_job_output: u64,
    /// Submissions (jobs, schedules, backfills, job binaries) one caller (token, client
    /// certificate, or address) may make per minute; more are refused until the rate allows.
    /// 0: no limit.
    #[arg(long, default_value_t = 120)]
    submit_rate: u32,
    /// Submissions one caller may make at once, before --submit-rate applies.
    #[arg(long, default_value_t = 30)]
    submit_burst: u32,
    /// For tests: read the time schedules see from this file (RFC 3339) instead of the clock.
    #[arg(long, hide = true)]
    clock_file: Option<PathBuf>,
    /// How often schedules and backfills are looked at, in milliseconds.
    #[arg(long, default_value_t = 1000, hide = true)]
    schedule_tick_ms: u64,
    /// Serve the web UI, the JSON API (/api/v1/) and Prometheus metrics (/metrics) here.
    #[arg(long)]
    http: Option<SocketAddr>,
    #[command(flatten)]
    tls: ServerTlsArgs,
    /// Mutual TLS: every client must present a certificate signed by --tls-ca; a call without
    /// a token is then identified by its certificate's role (its organizational unit).
    #[arg(long, requires = "tls_ca")]
    mtls: bool,
}

/// TLS of a daemon's ports and of its connections to the others.
#[derive(Args, Debug, Clone, Default)]
pub struct ServerTlsArgs {
    /// Serve TLS with this certificate (PEM; `quern certs init` makes one); plaintext clients
    /// are then refused.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The cluster's CA (PEM): the certificates of the coordinator and workers this daemon
    /// connects to are checked against it.
    #[arg(long, env = protocol::tls::CA_ENV)]
    tls_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The server settings (with `client_ca` for mutual TLS) and the client settings.
    fn load(
        &self,
        mutual: bool,
    ) -> Result<(
        Option<protocol::tls::ServerTls>,
        Option<protocol::tls::ClientTls>,
    )> {
        let client_ca = if mutual { self.tls_ca.as_deref() } else { None };
        let server = protocol::tls::ServerTls::from_flags(
            self.tls_cert.as_deref(),
            self.tls_key.as_deref(),
            client_ca,
        )?;
        let client = match &self.tls_ca {
            // A daemon with a certificate presents it when it connects (mutual TLS).
            Some(ca) => Some(protocol::tls::ClientTls::load(
                ca,
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
            )?),
            None if server.is_some() => anyhow::bail!(
                "--tls-cert needs --tls-ca too: the cluster's CA, to check the other daemons' certificates"
            ),
            None => None,
        };
        Ok((server, client))
    }
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The coordinator's address.
    #[arg(long, env = "QUERN_COORDINATOR")]
    coordinator: String,
    /// Directory for shuffle files, task files and attempt logs.
    #[arg(long, default_value = ".quern/worker")]
    dir: PathBuf,
    /// The worker token it presents to the coordinator (`quern token create --role worker`).
    #[arg(long, env = "QUERN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Task slots (default: one per core).
    #[arg(long)]
    slots: Option<u32>,
    /// GPUs this worker offers to tasks that want one (default: the NVIDIA GPUs found, by
    /// their /dev/nvidiaN device files).
    #[arg(long)]
    gpus: Option<u32>,
    /// Address the shuffle service listens on (`0.0.0.0:7071`: every address, port 7071).
    #[arg(long, default_value = "127.0.0.1:0")]
    shuffle_listen: SocketAddr,
    /// This machine's name or address as the other machines reach it, advertised with the
    /// shuffle port (required when --shuffle-listen is on every address).
    #[arg(long)]
    advertise_host: Option<String>,
    /// The storage host this worker runs beside (default: this machine's host name).
    #[arg(long)]
    storage_host: Option<String>,
    /// Fault injection for tests: delay the start of every attempt by this many milliseconds.
    #[arg(long, default_value_t = 0, hide = true)]
    fault_delay_ms: u64,
    /// TLS: --tls-cert/--tls-key serve the shuffle port over TLS and are this worker's
    /// identity under mutual TLS; --tls-ca checks the coordinator and the other workers.
    #[command(flatten)]
    tls: ServerTlsArgs,
}

#[derive(Args, Debug)]
pub struct LocalArgs {
    /// Number of worker processes.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Task slots per worker (default: one per core).
    #[arg(long)]
    slots: Option<u32>,
    /// GPUs each worker offers to tasks that want one (default: the NVIDIA GPUs each finds).
    #[arg(long)]
    gpus: Option<u32>,
    /// Directory for all of the cluster's state.
    #[arg(long, default_value = ".quern")]
    dir: PathBuf,
    /// Address the coordinator listens on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Storage hosts the workers run beside, comma-separated, given out in turn (for example
    /// the volume servers of a local SeaweedFS); default: this machine's host name.
    #[arg(long, value_delimiter = ',')]
    storage_hosts: Vec<String>,
    /// Address of the web UI, JSON API (/api/v1/) and metrics (/metrics); port 0 picks one.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// Do not serve the web UI, API and metrics.
    #[arg(long)]
    no_http: bool,
    /// Check tokens on every call even on loopback: makes an admin token (written to
    /// <dir>/token, where the CLI finds it) and a worker token in <dir>/coordinator/tokens.json.
    #[arg(long)]
    auth: bool,
    /// Use TLS everywhere, with mutual TLS towards the coordinator: makes a CA and
    /// certificates in <dir>/tls (once), where the CLI finds them. The workers are identified
    /// by their certificates and carry no token.
    #[arg(long)]
    tls: bool,
    /// Log the coordinator to stderr instead of <dir>/logs/coordinator.log (the workers
    /// always log to <dir>/logs/worker-N.log).
    #[arg(long)]
    log_stderr: bool,
}

impl LocalArgs {
    /// Where the coordinator of this cluster logs: a file in the state directory, so that a
    /// cluster started in the background does not write into the terminal; `None` with
    /// --log-stderr.
    pub fn log_file(&self) -> Option<PathBuf> {
        (!self.log_stderr).then(|| self.dir.join("logs").join("coordinator.log"))
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

pub async fn coordinator(a: CoordinatorArgs, registry: Registry) -> Result<u8> {
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("binding {}", a.listen))?;
    let beyond_loopback =
        !a.listen.ip().is_loopback() || a.http.is_some_and(|h| !h.ip().is_loopback());
    let auth_on = match a.auth {
        AuthMode::On => true,
        AuthMode::Off => false,
        AuthMode::Auto => beyond_loopback,
    };
    let tokens = a
        .tokens
        .clone()
        .unwrap_or_else(|| a.state_dir.join("tokens.json"));
    let mut config = CoordinatorConfig::new(a.state_dir);
    if auth_on {
        let auth = protocol::auth::Authenticator::open(&tokens)?;
        if auth.tokens() == 0 && !a.mtls {
            anyhow::bail!(
                "authentication is on{} but {} holds no tokens: create them with `quern token create --tokens {} --role admin --name you` (and `--role worker` for the workers)",
                if beyond_loopback { " (a listener is bound beyond loopback)" } else { "" },
                tokens.display(),
                tokens.display()
            );
        }
        config.auth = Some(std::sync::Arc::new(auth));
    } else if beyond_loopback {
        tracing::warn!("authentication is OFF on a listener beyond loopback: anyone who reaches it can run code on this cluster");
    }
    config.heartbeat_interval = Duration::from_millis(a.heartbeat_ms.max(10));
    config.worker_timeout = Duration::from_secs(a.worker_timeout_s.max(1));
    config.locality_wait = Duration::from_millis(a.locality_wait_ms);
    config.speculation_floor = Duration::from_millis(a.speculation_floor_ms);
    config.fetch_failure_threshold = a.fetch_failure_threshold.max(1);
    config.keep_jobs = a.keep_jobs;
    config.journal_compact_after = a.journal_compact_after;
    config.max_lost_attempts = a.max_lost_attempts.max(1);
    config.max_job_output = a.max_job_output;
    config.submit_rate = coordinator::limits::SubmitRate {
        per_minute: a.submit_rate,
        burst: a.submit_burst,
    };
    if let Some(f) = a.clock_file {
        config.clock = coordinator::schedule::Clock::File(f);
    }
    config.schedule_tick = Duration::from_millis(a.schedule_tick_ms.max(10));
    (config.tls, config.peer_tls) = a.tls.load(a.mtls)?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    if let Some(h) = a.http {
        let l = tokio::net::TcpListener::bind(h)
            .await
            .with_context(|| format!("binding {h} for the web UI"))?;
        println!(
            "web UI, JSON API (/api/v1/) and metrics (/metrics) at {scheme}://{}/",
            l.local_addr()?
        );
        config.http = Some(l);
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    coordinator::serve(listener, config, registry, shutdown).await?;
    Ok(0)
}

pub async fn worker(a: WorkerArgs) -> Result<u8> {
    let mut config = WorkerConfig::new(a.coordinator.clone(), a.dir);
    (config.tls, config.client_tls) = a.tls.load(false)?;
    config.token = a.token;
    if let Some(s) = a.slots {
        config.slots = s.max(1);
    }
    if let Some(g) = a.gpus {
        config.gpus = g;
    }
    tracing::info!(slots = config.slots, gpus = config.gpus, "worker slots");
    if let Some(h) = a.storage_host {
        config.storage_host = h;
    }
    config.shuffle_listen = a.shuffle_listen;
    config.advertise_host = a.advertise_host;
    config.fault_delay = Duration::from_millis(a.fault_delay_ms);
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        stop.cancel();
    });
    worker::serve(config, shutdown).await?;
    Ok(0)
}

/// A running embedded cluster: the coordinator in this process, workers as child processes.
pub struct LocalCluster {
    /// Where the web UI is served, if it is.
    pub http_addr: Option<String>,
    pub addr: String,
    dir: PathBuf,
    workers: Vec<Child>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), coordinator::CoordinatorError>>,
    /// Held while the cluster runs: one `quern local` per directory.
    _lock: protocol::dirlock::DirLock,
}

/// How `quern local` (and `quern demo`) set up their cluster.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// Where the coordinator listens.
    pub listen: SocketAddr,
    /// Worker processes.
    pub workers: u32,
    /// Task slots per worker (none: one per core).
    pub slots: Option<u32>,
    /// GPUs per worker (none: the workers detect them).
    pub gpus: Option<u32>,
    /// Storage hosts given to the workers in turn.
    pub storage_hosts: Vec<String>,
    /// Where the web UI is served (none: not served).
    pub http: Option<SocketAddr>,
    /// Check tokens.
    pub auth: bool,
    /// TLS everywhere, mutual towards the coordinator.
    pub tls: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers: 2,
            slots: None,
            gpus: None,
            storage_hosts: Vec::new(),
            http: None,
            auth: false,
            tls: false,
        }
    }
}

impl LocalCluster {
    /// Starts a coordinator and worker processes as `o` says, all under `dir`.
    pub async fn start(dir: &Path, o: &LocalOptions, registry: Registry) -> Result<Self> {
        // Before anything in `dir` is touched: a second `quern local` on it refuses to start.
        let lock = protocol::dirlock::DirLock::acquire(dir, "local.lock")?;
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let (auth_checker, worker_token) = if o.auth {
            local_tokens(dir, o.tls)?
        } else {
            (None, None)
        };
        let tls_dir = dir.join(crate::certcmd::LOCAL_TLS_DIR);
        if o.tls && !tls_dir.join("ca.pem").exists() {
            crate::certcmd::init(&tls_dir, &[], &[], 365)?;
        }
        let tls = |name: &str| tls_dir.join(name);
        let listener = tokio::net::TcpListener::bind(o.listen)
            .await
            .with_context(|| format!("binding {}", o.listen))?;
        let addr = listener.local_addr()?.to_string();
        let shutdown = CancellationToken::new();
        let mut config = CoordinatorConfig::new(dir.join("coordinator"));
        config.auth = auth_checker;
        if o.tls {
            config.tls = Some(protocol::tls::ServerTls::load(
                &tls("coordinator.pem"),
                &tls("coordinator.key"),
                Some(&tls("ca.pem")),
            )?);
            config.peer_tls = Some(protocol::tls::ClientTls::load(&tls("ca.pem"), None, None)?);
        }
        let mut http_addr = None;
        if let Some(h) = o.http {
            let l = tokio::net::TcpListener::bind(h)
                .await
                .with_context(|| format!("binding {h} for the web UI"))?;
            http_addr = Some(l.local_addr()?.to_string());
            config.http = Some(l);
        }
        let server = tokio::spawn(coordinator::serve(
            listener,
            config,
            registry,
            shutdown.clone(),
        ));
        let exe = std::env::current_exe().context("locating the quern binary")?;
        let mut children = Vec::new();
        for i in 0..o.workers {
            let mut cmd = worker_command(&exe, dir, i, &addr, o, worker_token.as_deref())?;
            children.push(cmd.spawn().context("starting a worker process")?);
        }
        write_atomic(&dir.join(ADDR_FILE), addr.as_bytes())?;
        if let Some(h) = &http_addr {
            write_atomic(&dir.join("http.addr"), h.as_bytes())?;
        }
        Ok(LocalCluster {
            addr,
            http_addr,
            dir: dir.to_path_buf(),
            workers: children,
            shutdown,
            server,
            _lock: lock,
        })
    }

    /// Stops the workers (SIGTERM, then SIGKILL after 5 s) and the coordinator.
    pub async fn stop(mut self) -> Result<()> {
        for w in &self.workers {
            if let Some(pid) = w.id() {
                // SAFETY: kill(2) on a child process id we own; no memory is involved.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
        }
        for w in &mut self.workers {
            if tokio::time::timeout(Duration::from_secs(5), w.wait())
                .await
                .is_err()
            {
                let _ = w.kill().await;
            }
        }
        self.shutdown.cancel();
        let _ = std::fs::remove_file(self.dir.join(ADDR_FILE));
        self.server.await??;
        Ok(())
    }
}

/// The command that starts worker `i` of a `quern local` cluster in `dir`.
fn worker_command(
    exe: &Path,
    dir: &Path,
    i: u32,
    addr: &str,
    o: &LocalOptions,
    worker_token: Option<&str>,
) -> Result<tokio::process::Command> {
    let tls = |name: &str| dir.join(crate::certcmd::LOCAL_TLS_DIR).join(name);
    let log = std::fs::File::create(dir.join("logs").join(format!("worker-{i}.log")))?;
    let mut cmd = tokio::process::Command::new(&exe);
    cmd.arg("worker")
        .arg("--coordinator")
        .arg(&addr)
        .arg("--dir")
        .arg(dir.join(format!("worker-{i}")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    // A worker ends with its `quern local`, even one killed by SIGKILL: an orphan
    // would heartbeat to a coordinator that is gone, for ever. It is killed outright: the
    // coordinator died with the process, so a worker told to stop gracefully would only
    // retry its last reports into the void for its 5 s of grace (a `quern local` that is
    // stopped, not killed, still stops its workers gracefully; see `stop`). (Started from
    // the thread that runs the cluster until it stops.)
    worker::executors::die_with_parent(&mut cmd, libc::SIGKILL);
    if let Some(s) = o.slots {
        cmd.arg("--slots").arg(s.to_string());
    }
    if let Some(g) = o.gpus {
        cmd.arg("--gpus").arg(g.to_string());
    }
    match worker_token {
        Some(t) => cmd.env(protocol::auth::TOKEN_ENV, t),
        None => cmd.env_remove(protocol::auth::TOKEN_ENV),
    };
    cmd.env_remove(protocol::tls::CA_ENV);
    if o.tls {
        cmd.arg("--tls-cert")
            .arg(tls("worker.pem"))
            .arg("--tls-key")
            .arg(tls("worker.key"))
            .arg("--tls-ca")
            .arg(tls("ca.pem"));
    }
    if !o.storage_hosts.is_empty() {
        cmd.arg("--storage-host")
            .arg(&o.storage_hosts[i as usize % o.storage_hosts.len()]);
    }
    Ok(cmd)
}

/// With tokens on: an admin token for the CLI (`<dir>/token`) and one for the workers
/// (which under TLS are identified by their certificates instead). Returns the checker and
/// the workers' token.
fn local_tokens(
    dir: &Path,
    tls: bool,
) -> Result<(
    Option<std::sync::Arc<protocol::auth::Authenticator>>,
    Option<String>,
)> {
    let path = dir.join("coordinator").join("tokens.json");
    let mut file = protocol::auth::TokenFile::load(&path)?;
    let admin = file.create(protocol::auth::Role::Admin, "local-admin")?;
    let worker_token = if tls {
        None
    } else {
        Some(file.create(protocol::auth::Role::Worker, "local-workers")?)
    };
    file.save(&path)?;
    crate::util::write_private(&dir.join(crate::util::TOKEN_FILE), admin.as_bytes())?;
    let checker = std::sync::Arc::new(protocol::auth::Authenticator::open(&path)?);
    Ok((Some(checker), worker_token))
}

pub async fn local(a: LocalArgs, registry: Registry) -> Result<u8> {
    let options = LocalOptions {
        listen: a.listen,
        workers: a.workers.max(1),
        slots: a.slots,
        gpus: a.gpus,
        storage_hosts: a.storage_hosts.clone(),
        http: (!a.no_http).then_some(a.http),
        auth: a.auth,
        tls: a.tls,
    };
    let cluster = LocalCluster::start(&a.dir, &options, registry).await?;
    println!(
        "quern local cluster: coordinator at {} with {}; state in {}",
        cluster.addr,
        crate::util::plural(a.workers as u64, "worker"),
        a.dir.display()
    );
    if let Some(h) = &cluster.http_addr {
        let scheme = if a.tls { "https" } else { "http" };
        println!("web UI, JSON API (/api/v1/) and metrics (/metrics) at {scheme}://{h}/");
    }
    if a.tls {
        println!(
            "TLS on: the CA is {}",
            a.dir
                .join(crate::certcmd::LOCAL_TLS_DIR)
                .join("ca.pem")
                .display()
        );
    }
    match a.log_file() {
        Some(f) => println!(
            "logs in {} (coordinator.log, worker-N.log)",
            f.parent().unwrap_or(&a.dir).display()
        ),
        None => println!(
            "coordinator logs on stderr, workers' in {}",
            a.dir.join("logs").display()
        ),
    }
    println!(
        "submit jobs from this directory with `quern job submit ...`; Ctrl-C stops the cluster"
    );
    shutdown_signal().await;
    eprintln!("stopping cluster");
    cluster.stop().await?;
    Ok(0)
}
