//! `quern job ...` and `quern run --local`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use coordinator::client::{JobState, JobStatus};
use coordinator::Client;
use jobs::Registry;
use protocol::{JobId, JobSpec};

use crate::util::{find_coordinator, human_bytes, parse_size};

/// What a job runs: shared by `job submit` and `run --local`.
#[derive(Args, Debug, Clone)]
pub struct JobSpecArgs {
    /// The job to run (see `quern jobs`).
    pub job: String,
    /// Input files, directories or globs (repeatable).
    #[arg(long = "input", required = true, num_args = 1..)]
    pub inputs: Vec<String>,
    /// Output directory: a new or empty directory (see --overwrite).
    #[arg(long)]
    pub output: String,
    /// Replace what the output directory holds (an earlier output, a killed job's leftovers,
    /// other files) instead of refusing it. It is replaced when the job commits: a job that
    /// fails leaves it as it was.
    #[arg(long)]
    pub overwrite: bool,
    /// Run incrementally from an earlier output of this job: read only the input it did not
    /// cover (new files, and what was appended to files it read) and fold that into its
    /// state. The output is the same as a full run over all the input. Refused, naming the
    /// file, if an input it covered shrank, was rewritten or is gone, and if it was written by
    /// another version of the job or with other parameters (see docs/INCREMENTAL.md).
    #[arg(long, value_name = "EARLIER_OUTPUT")]
    pub from: Option<String>,
    /// With --from: run in full (with a warning) instead of refusing when an input it
    /// covered changed, or the job or its parameters did.
    #[arg(long, requires = "from")]
    pub full_if_changed: bool,
    /// Number of reduce tasks (part files).
    #[arg(long, env = "QUERN_REDUCERS", default_value_t = 1)]
    pub reducers: u32,
    /// Job parameter `key=value` (repeatable).
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
    /// Bytes per map split.
    #[arg(long, env = "QUERN_SPLIT_SIZE", value_parser = parse_size, default_value = "64MiB")]
    pub split_size: u64,
    /// Sort-buffer memory per task; maps and reduces spill to disk beyond it.
    #[arg(long, env = "QUERN_TASK_MEMORY", value_parser = parse_size, default_value = "128MiB")]
    pub task_memory: u64,
    /// Attempts per task before the job fails.
    #[arg(long, env = "QUERN_MAX_ATTEMPTS", default_value_t = 4)]
    pub max_attempts: u32,
    /// Backup attempts for straggling tasks (`off` for jobs with side effects).
    #[arg(long, value_parser = ["on", "off"], default_value = "on")]
    pub speculation: String,
    /// Skip mode: skip up to N records on which the map function panics twice (listed in
    /// `_skipped/` beside the output); 0 fails the job instead.
    #[arg(long, default_value_t = 0)]
    pub max_bad_records: u64,
}

/// How people find a submitted job again: `job submit --name/--label`.
#[derive(Args, Debug, Clone, Default)]
pub struct JobMetaArgs {
    /// A name for the job, shown by `job list`, `job status`, the API and the web UI
    /// (several jobs may share one).
    #[arg(long)]
    pub name: Option<String>,
    /// A label `key=value` (repeatable) to find and group jobs by: `job list --label
    /// team=vision`. Keys as job names (letters, digits, `.`, `_`, `-`).
    #[arg(long = "label", value_parser = parse_param)]
    pub labels: Vec<(String, String)>,
}

impl JobMetaArgs {
    /// Puts the name and labels into `spec`.
    pub fn apply(&self, spec: &mut JobSpec) {
        if let Some(n) = &self.name {
            spec.name = n.clone();
        }
        spec.labels.extend(self.labels.iter().cloned());
    }
}

/// Makes a local path absolute (workers and executors may run in another directory) and
/// resolves its `.` and `..` components lexically, so `../logs/x.log` names what it names in
/// the shell (the storage layer refuses `..` in the paths it is given). URLs are left alone:
/// `..` stays refused inside remote keys.
pub(crate) fn absolute(path: &str) -> Result<String> {
    if path.contains("://") {
        return Ok(path.to_string());
    }
    let abs = std::path::absolute(path).with_context(|| format!("resolving {path}"))?;
    let mut clean = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::CurDir => {}
            c => clean.push(c),
        }
    }
    Ok(clean.display().to_string())
}

/// Makes the parameters the job declares as paths ([`jobs::Job::PATH_PARAMS`]) absolute, and
/// checks that each names something, before the job is accepted.
pub(crate) fn resolve_path_params(registry: &Registry, spec: &mut JobSpec) -> Result<()> {
    let Ok(job) = registry.create(&spec.job, &spec.params) else {
        return Ok(());
    };
    let storage = dfs_client::Storage::default();
    for name in job.path_params() {
        let Some(value) = spec.params.get(*name).cloned() else {
            continue;
        };
        let path = absolute(&value)?;
        if !storage
            .exists(&path)
            .with_context(|| format!("parameter {name}={value}"))?
        {
            bail!("parameter {name}={value}: no such file ({path})");
        }
        spec.params.insert((*name).to_string(), path);
    }
    Ok(())
}

/// Parses `--param key=value`.
pub(crate) fn parse_param(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("expected key=value, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("empty parameter name in {s:?}"));
    }
    Ok((k.to_string(), v.to_string()))
}

impl JobSpecArgs {
    pub fn to_spec(&self) -> Result<JobSpec> {
        if self.reducers == 0 || self.reducers > protocol::spec::MAX_REDUCERS {
            bail!(
                "--reducers must be from 1 to {}",
                protocol::spec::MAX_REDUCERS
            );
        }
        let inputs = self
            .inputs
            .iter()
            .map(|i| absolute(i))
            .collect::<Result<Vec<_>>>()?;
        let mut spec = JobSpec::new(self.job.clone(), inputs, absolute(&self.output)?);
        spec.params = self.params.iter().cloned().collect();
        spec.reducers = self.reducers;
        // Both runners hold the spec to one set of rules (the coordinator checks it again).
        if self.split_size < protocol::spec::MIN_SPLIT_SIZE {
            bail!(
                "--split-size must be at least {} (each split is a map task)",
                protocol::spec::MIN_SPLIT_SIZE
            );
        }
        if self.task_memory == 0 {
            bail!("--task-memory must be more than 0");
        }
        spec.split_size = self.split_size;
        spec.task_memory = self.task_memory;
        spec.max_attempts = self.max_attempts.max(1);
        spec.speculation = self.speculation == "on";
        spec.max_bad_records = self.max_bad_records;
        spec.overwrite = self.overwrite;
        if let Some(from) = &self.from {
            spec.from = absolute(from)?;
        }
        spec.full_if_changed = self.full_if_changed;
        Ok(spec)
    }
}

/// Where to find the cluster.
#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// Coordinator address (default: the `quern local` cluster of --dir).
    #[arg(long, env = "QUERN_COORDINATOR", global = true)]
    pub coordinator: Option<String>,
    /// State directory of a `quern local` cluster.
    #[arg(long, default_value = ".quern", global = true)]
    pub dir: PathBuf,
    /// The cluster's CA (PEM), for a cluster with TLS (default: <dir>/tls/ca.pem of a
    /// `quern local --tls`, if there).
    #[arg(long, env = protocol::tls::CA_ENV, global = true)]
    pub tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for a cluster with mutual TLS (default: <dir>/tls/admin.pem
    /// of a `quern local --tls`).
    #[arg(long, env = protocol::tls::CERT_ENV, global = true, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = protocol::tls::KEY_ENV, global = true, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ClusterArgs {
    /// The TLS settings to connect with: the flags, else those of a `quern local --tls` in
    /// --dir, else none (plaintext).
    pub fn tls(&self) -> Result<Option<protocol::tls::ClientTls>> {
        if let Some(ca) = &self.tls_ca {
            return Ok(Some(protocol::tls::ClientTls::load(
                ca,
                self.tls_cert.as_deref(),
                self.tls_key.as_deref(),
            )?));
        }
        let local = self.dir.join(crate::certcmd::LOCAL_TLS_DIR);
        if self.coordinator.is_none() && local.join("ca.pem").exists() {
            return Ok(Some(protocol::tls::ClientTls::load(
                &local.join("ca.pem"),
                Some(&local.join("admin.pem")),
                Some(&local.join("admin.key")),
            )?));
        }
        Ok(None)
    }
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// List the jobs this binary can run, with what each does (also `quern jobs`).
    Types {
        #[command(flatten)]
        output: crate::output::OutputArgs,
    },
    /// Submit a job, show its progress, and print its counters at the end.
    Submit {
        #[command(flatten)]
        spec: JobSpecArgs,
        #[command(flatten)]
        meta: JobMetaArgs,
        /// Print the job id and return at once.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show a job's state, progress and counters.
    Status {
        /// The job id (`job-N` or `N`).
        id: JobId,
        #[command(flatten)]
        output: crate::output::OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// List jobs, oldest first.
    List {
        /// Only jobs in this state.
        #[arg(long, value_parser = ["running", "succeeded", "failed", "killed"])]
        state: Option<String>,
        /// Only jobs submitted since: a span back from now (`90s`, `30m`, `2h`, `7d`) or a
        /// UTC time (`2026-12-01`, `2026-12-01T06:00`).
        #[arg(long, value_parser = parse_since)]
        since: Option<u64>,
        /// Only jobs of this name (`job submit --name`).
        #[arg(long)]
        name: Option<String>,
        /// Only jobs with this label `key=value` (repeatable: all must match).
        #[arg(long = "label", value_parser = parse_param)]
        labels: Vec<(String, String)>,
        /// Only the newest N (after the other filters).
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        output: crate::output::OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Wait for a job to end; exits non-zero unless it succeeded.
    Wait {
        /// The job id.
        id: JobId,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Kill a running job.
    Kill {
        /// The job id.
        id: JobId,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Print the logs of a job's attempts (kept on the workers that ran them): every attempt,
    /// or those of one task, or one attempt.
    Logs {
        /// The job id.
        id: JobId,
        /// Only this task: `map-N` or `reduce-N`.
        #[arg(long)]
        task: Option<String>,
        /// Only this attempt: its name (`job-4/map-3/2` or `map-3/2`: the second attempt of
        /// map 3), its number (`2`: the second attempt of --task, or of every task), or its id
        /// (`attempt-8589934593`).
        #[arg(long)]
        attempt: Option<String>,
        /// Keep printing new lines, and attempts as they start, until the job ends (Ctrl-C
        /// stops following).
        #[arg(long, short = 'f')]
        follow: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// `--since`: a span back from now (`90s`, `30m`, `2h`, `7d`) or a UTC date or date-time, as
/// ms since the Unix epoch.
fn parse_since(s: &str) -> Result<u64, String> {
    let unit = |c: char| match c {
        's' => Some(1_000u64),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    if let Some((n, ms)) = s
        .char_indices()
        .last()
        .and_then(|(i, c)| Some((s[..i].parse::<u64>().ok()?, unit(c)?)))
    {
        return Ok(now.saturating_sub(n.saturating_mul(ms)));
    }
    coordinator::schedule::parse_logical(s)
        .map(|t| t.and_utc().timestamp_millis().max(0) as u64)
        .map_err(|_| {
            format!("{s:?}: expected a span such as 30m, 2h or 7d, or a UTC time such as 2026-12-01 or 2026-12-01T06:00")
        })
}

pub async fn connect(c: &ClusterArgs) -> Result<Client> {
    let addr = find_coordinator(c.coordinator.as_deref(), &c.dir)?;
    let auth = protocol::auth::ClientAuth::new(crate::util::find_token(&c.dir).as_deref());
    Ok(Client::connect_with(&addr, auth, c.tls()?.as_ref()).await?)
}

/// Makes `spec` runnable on the cluster: a job this binary has and the stock `quern` does not
/// is checked here (name and parameters), and this binary is uploaded (once; it is stored by
/// its SHA-256) so that workers run its executors.
pub async fn ship(client: &mut Client, registry: &Registry, spec: &mut JobSpec) -> Result<()> {
    if let Ok(job) = registry.create(&spec.job, &spec.params) {
        spec.input_format = job.input_format();
        spec.gpu = job.wants_gpu();
        spec.version = job.version();
    }
    resolve_path_params(registry, spec)?;
    // A built-in job runs in the cluster's own executors; one this binary registered under a
    // built-in's name is its own code, shipped like any custom job.
    if registry.is_builtin(&spec.job)
        || (registry.create(&spec.job, &spec.params).is_err()
            && crate::builtin_registry().is_builtin(&spec.job))
    {
        return Ok(());
    }
    registry.create(&spec.job, &spec.params)?;
    let exe = std::env::current_exe().context("finding this binary")?;
    let file = std::fs::File::open(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let size = file.metadata()?.len();
    let sha = protocol::binary::sha256_hex(std::io::BufReader::new(file))?;
    if !client.has_binary(&sha).await? {
        let data = bytes::Bytes::from(
            std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?,
        );
        client
            .upload_binary(&sha, data)
            .await
            .context("uploading this job binary")?;
        eprintln!(
            "uploaded job binary {} ({}, sha256 {})",
            exe.file_name().unwrap_or_default().to_string_lossy(),
            human_bytes(size),
            &sha[..12]
        );
    }
    spec.binary = sha;
    Ok(())
}

/// `quern job types` and `quern jobs`: the job types of this binary.
pub fn list_types(registry: &Registry, json: bool) -> Result<u8> {
    if json {
        crate::output::print_json(&serde_json::Value::Array(
            registry
                .jobs()
                .iter()
                .map(|j| serde_json::json!({"name": j.name, "about": j.about}))
                .collect(),
        ));
    } else {
        for j in registry.jobs() {
            println!("{:<16} {}", j.name, j.about);
        }
    }
    Ok(0)
}

pub async fn run(cmd: JobCommand, registry: &Registry) -> Result<u8> {
    match cmd {
        JobCommand::Types { output } => list_types(registry, output.json()),
        JobCommand::Submit {
            spec,
            meta,
            detach,
            cluster,
        } => {
            let mut spec = spec.to_spec()?;
            meta.apply(&mut spec);
            let mut client = connect(&cluster).await?;
            ship(&mut client, registry, &mut spec).await?;
            let (id, warnings) = client
                .submit_warned(&spec)
                .await
                .context("submitting the job")?;
            for w in warnings {
                eprintln!("warning: {w}");
            }
            if detach {
                println!("{id}");
                return Ok(0);
            }
            eprintln!("submitted {id} ({})", spec.job);
            follow(&mut client, id).await
        }
        JobCommand::Status {
            id,
            output,
            cluster,
        } => {
            let s = connect(&cluster).await?.status(id).await?;
            if output.json() {
                crate::output::print_json(&coordinator::json::job(&s));
            } else {
                print_status(&s);
            }
            Ok(0)
        }
        JobCommand::List {
            state,
            since,
            name,
            labels,
            limit,
            output,
            cluster,
        } => {
            let mut jobs = connect(&cluster).await?.list().await?;
            jobs.retain(|j| {
                state.as_deref().is_none_or(|s| j.state.name() == s)
                    && since.is_none_or(|t| j.submitted_unix_ms >= t)
                    && name.as_deref().is_none_or(|n| j.name == n)
                    && labels.iter().all(|(k, v)| j.labels.get(k) == Some(v))
            });
            if let Some(n) = limit {
                jobs.drain(..jobs.len().saturating_sub(n));
            }
            if output.json() {
                crate::output::print_json(&serde_json::Value::Array(
                    jobs.iter().map(coordinator::json::job).collect(),
                ));
                return Ok(0);
            }
            // The NAME column is as wide as the longest name shown (at least 4, at most 32).
            let width = jobs
                .iter()
                .map(|j| j.name.chars().count())
                .max()
                .unwrap_or(0)
                .clamp(4, 32);
            println!(
                "{:<10} {:<16} {:<width$} {:<10} {:>9} {:>9} {:>10} {:>9}  {:<19}",
                "ID", "JOB", "NAME", "STATE", "MAPS", "REDUCES", "READ", "ELAPSED", "SUBMITTED"
            );
            for s in jobs {
                let name = match s.name.as_str() {
                    "" => "-".to_string(),
                    n if n.chars().count() > width => {
                        let cut: String = n.chars().take(width - 1).collect();
                        format!("{cut}…")
                    }
                    n => n.to_string(),
                };
                println!(
                    "{:<10} {:<16} {:<width$} {:<10} {:>9} {:>9} {:>10} {:>8.1}s  {:<19}",
                    s.id.to_string(),
                    s.job,
                    name,
                    s.state.name(),
                    format!("{}/{}", s.maps_done, s.maps_total),
                    format!("{}/{}", s.reduces_done, s.reduces_total),
                    human_bytes(s.bytes_read),
                    s.elapsed.as_secs_f64(),
                    coordinator::json::local_time(s.submitted_unix_ms)
                );
            }
            Ok(0)
        }
        JobCommand::Wait { id, cluster } => follow(&mut connect(&cluster).await?, id).await,
        JobCommand::Logs {
            id,
            task,
            attempt,
            follow,
            cluster,
        } => {
            let tls = cluster.tls()?;
            let mut client = connect(&cluster).await?;
            let filter = LogFilter::new(id, task, attempt)?;
            if follow {
                tokio::select! {
                    r = follow_logs(&mut client, tls.as_ref(), id, &filter) => r,
                    _ = tokio::signal::ctrl_c() => Ok(130),
                }
            } else {
                logs(&mut client, tls.as_ref(), id, &filter).await
            }
        }
        JobCommand::Kill { id, cluster } => {
            let mut c = connect(&cluster).await?;
            if c.kill(id).await? {
                println!("killed {id}");
                Ok(0)
            } else {
                match c.status(id).await {
                    Ok(s) => bail!("{id} is already {}", s.state.name()),
                    Err(_) => bail!(
                        "no job {id} on this cluster (`quern job list` shows the jobs it keeps)"
                    ),
                }
            }
        }
    }
}

/// Shows live progress until the job ends; prints counters; returns the exit code.
async fn follow(client: &mut Client, id: JobId) -> Result<u8> {
    let mut display = Progress::new();
    let status = tokio::select! {
        status = client.wait(id, |s| display.show(s)) => status?,
        _ = tokio::signal::ctrl_c() => {
            display.finish();
            eprintln!(
                "interrupted: {id} goes on running on the cluster; `quern job wait {id}` follows it again, `quern job kill {id}` stops it"
            );
            return Ok(130);
        }
    };
    display.finish();
    print_status(&status);
    match status.state {
        JobState::Succeeded => Ok(0),
        _ => {
            eprintln!("{id} {}: {}", status.state.name(), status.error);
            Ok(1)
        }
    }
}

/// `maps 3/8 (2 running)  reduces 0/4 (0 running)  read 1.2 GiB  300 MiB/s  elapsed 4.1s`.
fn progress_line(
    (maps_done, maps, maps_running): (u32, u32, String),
    (reduces_done, reduces, reduces_running): (u32, u32, String),
    bytes_read: u64,
    elapsed: Duration,
) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    format!(
        "maps {maps_done}/{maps}{maps_running}  reduces {reduces_done}/{reduces}{reduces_running}  read {}  {}/s  elapsed {secs:.1}s",
        human_bytes(bytes_read),
        human_bytes((bytes_read as f64 / secs) as u64),
    )
}

/// A one-line progress display: redrawn in place on a terminal, a line every few seconds
/// otherwise (so logs of CI runs stay readable).
struct Progress {
    tty: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    fn new() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            last: None,
            drawn: false,
        }
    }

    /// Shows a cluster job's status.
    fn show(&mut self, s: &JobStatus) {
        let running = |n: u32| format!(" ({n} running)");
        let line = progress_line(
            (s.maps_done, s.maps_total, running(s.maps_running)),
            (s.reduces_done, s.reduces_total, running(s.reduces_running)),
            s.bytes_read,
            s.elapsed,
        );
        self.draw(line, s.state.is_over());
    }

    /// Shows the progress of `quern run --local`, where one task runs at a time.
    fn show_local(&mut self, p: &jobs::local::LocalProgress, elapsed: Duration) {
        let line = progress_line(
            (p.maps_done as u32, p.maps_total as u32, String::new()),
            (p.reduces_done, p.reduces_total, String::new()),
            p.bytes_read,
            elapsed,
        );
        self.draw(line, false);
    }

    fn draw(&mut self, line: String, over: bool) {
        if self.tty {
            eprint!("\r\x1b[2K{line}");
            self.drawn = true;
        } else if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(5))
            || over
        {
            eprintln!("{line}");
            self.last = Some(Instant::now());
        }
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}

fn print_status(s: &JobStatus) {
    println!("job:      {} ({})", s.id, s.job);
    if !s.name.is_empty() {
        println!("name:     {}", s.name);
    }
    if !s.labels.is_empty() {
        println!("labels:   {}", labels_text(&s.labels));
    }
    println!("state:    {}", s.state.name());
    println!(
        "maps:     {}/{}   reduces: {}/{}",
        s.maps_done, s.maps_total, s.reduces_done, s.reduces_total
    );
    println!(
        "running:  {} maps, {} reduces",
        s.maps_running, s.reduces_running
    );
    println!("elapsed:  {:.2}s", s.elapsed.as_secs_f64());
    if s.submitted_unix_ms > 0 {
        println!(
            "times:    submitted {}, finished {} (local time)",
            coordinator::json::local_time(s.submitted_unix_ms),
            coordinator::json::local_time(s.finished_unix_ms)
        );
    }
    println!("output:   {}", s.output);
    if !s.error.is_empty() {
        println!("error:    {}", s.error);
    }
    print_counters(s.counters.iter().map(|(k, v)| (k.as_str(), *v)));
    print_warnings(&jobs::Counters(s.counters.clone().into_iter().collect()));
}

/// Labels as `k=v,k=v` (sorted by key).
fn labels_text(labels: &std::collections::BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join(",")
}

/// Prints the summary's warnings (see [`jobs::Counters::warnings`]) to stderr.
fn print_warnings(counters: &jobs::Counters) {
    for w in counters.warnings() {
        eprintln!("warning: {w}");
    }
}

/// Prints counters, bytes in human units.
pub fn print_counters<'a>(counters: impl Iterator<Item = (&'a str, u64)>) {
    println!("counters:");
    for (k, v) in counters {
        if k.ends_with("_bytes") {
            println!("  {k:<24} {v:>14}  ({})", human_bytes(v));
        } else {
            println!("  {k:<24} {v:>14}");
        }
    }
}

pub fn run_local(registry: &Registry, args: JobSpecArgs, work_dir: Option<PathBuf>) -> Result<u8> {
    let mut spec = args.to_spec()?;
    resolve_path_params(registry, &mut spec)?;
    let work = work_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("quern-local-{}-{}", std::process::id(), spec.job))
    });
    let start = Instant::now();
    let mut display = Progress::new();
    let mut progress = |p: jobs::local::LocalProgress| display.show_local(&p, start.elapsed());
    jobs::runtime::keep_freed_memory();
    let report = jobs::local::run_local(registry, &spec, &work, &mut progress);
    display.finish();
    let report = report?;
    if let Some(change) = &report.full_because {
        eprintln!("warning: ran in full, not from {}: {change}", spec.from);
    }
    if let Some(w) = &report.not_read_warning {
        eprintln!("warning: {w}");
    }
    println!(
        "job:      {} (local, {} maps, {} reducers)",
        spec.job, report.maps, spec.reducers
    );
    if !spec.from.is_empty() && report.full_because.is_none() {
        println!("from:     {}", spec.from);
    }
    println!("state:    succeeded");
    println!("elapsed:  {:.2}s", start.elapsed().as_secs_f64());
    println!("output:   {}", spec.output);
    print_counters(report.counters.0.iter().map(|(k, v)| (k.as_str(), *v)));
    print_warnings(&report.counters);
    Ok(0)
}

/// `quern job logs`: fetches each selected attempt's log from the worker that ran it.
/// Which attempts `job logs` shows.
struct LogFilter {
    /// `(is_map, index)` of `--task` (or of the task an attempt name names).
    task: Option<(bool, u32)>,
    attempt: Option<AttemptSel>,
}

/// Which attempt `--attempt` names.
enum AttemptSel {
    /// An attempt id.
    Id(u64),
    /// The Nth attempt (of the task, or of every task).
    Number(u32),
    /// A bare number: the Nth attempt of each task, or the attempt of that id.
    NumberOrId(u64),
}

/// Parses `map-N` or `reduce-N`.
fn parse_task(t: &str) -> Result<(bool, u32)> {
    match t.split_once('-') {
        Some((kind @ ("map" | "reduce"), n)) => Ok((
            kind == "map",
            n.parse::<u32>()
                .with_context(|| format!("bad task number in {t:?}"))?,
        )),
        _ => bail!("{t:?}: a task is map-N or reduce-N"),
    }
}

impl LogFilter {
    fn new(job: JobId, task: Option<String>, attempt: Option<String>) -> Result<LogFilter> {
        let mut task = task.as_deref().map(parse_task).transpose()?;
        let attempt = match attempt.as_deref() {
            None => None,
            Some(a) if a.contains('/') => {
                // job-4/map-3/2 or map-3/2
                let mut parts: Vec<&str> = a.split('/').collect();
                if parts.len() == 3 {
                    let named: JobId = parts[0]
                        .parse()
                        .with_context(|| format!("--attempt {a:?}: bad job"))?;
                    if named != job {
                        bail!("--attempt {a:?} is an attempt of {named}, not of {job}");
                    }
                    parts.remove(0);
                }
                let [t, n] = parts[..] else {
                    bail!("--attempt {a:?}: expected job-N/map-N/K, map-N/K, K or attempt-N");
                };
                let named = parse_task(t).with_context(|| format!("--attempt {a:?}"))?;
                if task.is_some_and(|t| t != named) {
                    bail!("--attempt {a:?} is not an attempt of --task");
                }
                task = Some(named);
                Some(AttemptSel::Number(n.parse().with_context(|| {
                    format!("--attempt {a:?}: bad attempt number {n:?}")
                })?))
            }
            Some(a) if a.starts_with("attempt-") => {
                Some(AttemptSel::Id(a.parse::<protocol::AttemptId>()?.0))
            }
            Some(a) => {
                let n: u64 = a.parse().with_context(|| {
                    format!("--attempt {a:?}: expected job-N/map-N/K, map-N/K, K or attempt-N")
                })?;
                Some(match task {
                    Some(_) => AttemptSel::Number(u32::try_from(n).unwrap_or(u32::MAX)),
                    None => AttemptSel::NumberOrId(n),
                })
            }
        };
        Ok(LogFilter { task, attempt })
    }

    fn wants(&self, a: &protocol::pb::AttemptInfo) -> bool {
        let is_map = a.kind == protocol::pb::TaskKind::Map as i32;
        let attempt = match self.attempt {
            None => true,
            Some(AttemptSel::Id(id)) => id == a.attempt_id,
            Some(AttemptSel::Number(n)) => n == a.number,
            Some(AttemptSel::NumberOrId(n)) => n == u64::from(a.number) || n == a.attempt_id,
        };
        attempt && self.task.is_none_or(|(m, n)| m == is_map && n == a.index)
    }
}

/// `== job-4/map-3/1 (attempt-N on worker-1, succeeded: error) ==`.
fn attempt_header(a: &protocol::pb::AttemptInfo) -> String {
    let error = if a.error.is_empty() {
        String::new()
    } else {
        format!(": {}", a.error)
    };
    format!(
        "== {} (attempt-{} on worker-{}, {}{error}) ==",
        a.name, a.attempt_id, a.worker_id, a.outcome
    )
}

/// The end (at most 1 MiB) of an attempt's log, from the worker that ran it.
async fn fetch_log(
    tls: Option<&protocol::tls::ClientTls>,
    job: JobId,
    a: &protocol::pb::AttemptInfo,
) -> Result<protocol::pb::FetchLogResponse> {
    use protocol::pb::worker_service_client::WorkerServiceClient;
    let channel = protocol::tls::endpoint(&a.worker_addr, tls)?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!(protocol::error_chain(&e)))?;
    let r = WorkerServiceClient::new(channel)
        .fetch_log(protocol::pb::FetchLogRequest {
            attempt_id: a.attempt_id,
            job_id: job.0,
            token: a.log_token.clone(),
        })
        .await?
        .into_inner();
    Ok(r)
}

async fn logs(
    client: &mut Client,
    tls: Option<&protocol::tls::ClientTls>,
    id: JobId,
    filter: &LogFilter,
) -> Result<u8> {
    let mut shown = 0;
    for a in client.attempts(id).await? {
        if !filter.wants(&a) {
            continue;
        }
        shown += 1;
        println!("{}", attempt_header(&a));
        match fetch_log(tls, id, &a).await {
            Ok(r) => {
                if r.truncated {
                    println!("[... earlier lines left out]");
                }
                print!("{}", String::from_utf8_lossy(&r.data));
            }
            Err(e) => println!("[log not available: {e:#}]"),
        }
    }
    if shown == 0 {
        bail!("no attempt of {id} matches");
    }
    Ok(0)
}

/// `job logs --follow`: every second, the attempts that match and the new end of each one's
/// log, until the job has ended and every log has been read to its end.
async fn follow_logs(
    client: &mut Client,
    tls: Option<&protocol::tls::ClientTls>,
    id: JobId,
    filter: &LogFilter,
) -> Result<u8> {
    use std::collections::HashMap;
    use std::io::Write;
    /// What was printed of one attempt: its outcome, how much of its log, and that log's
    /// last bytes (to find the place again once the log is longer than what a worker sends).
    struct Seen {
        outcome: String,
        printed: usize,
        tail: Vec<u8>,
    }
    let mut seen: HashMap<u64, Seen> = HashMap::new();
    loop {
        // The state first: attempts and logs read after it include all the job wrote.
        let over = client.status(id).await?.state.is_over();
        for a in client.attempts(id).await? {
            if !filter.wants(&a) {
                continue;
            }
            let s = seen.entry(a.attempt_id).or_insert_with(|| Seen {
                outcome: String::new(),
                printed: 0,
                tail: Vec::new(),
            });
            if s.outcome != a.outcome {
                println!("{}", attempt_header(&a));
                s.outcome = a.outcome.clone();
            }
            let Ok(r) = fetch_log(tls, id, &a).await else {
                continue;
            };
            // The log only grows; the worker sends its last 1 MiB. Print what follows what
            // was printed (found again by its last bytes when the start was cut off).
            let new = if !r.truncated && r.data.len() >= s.printed {
                &r.data[s.printed..]
            } else {
                let tail = &s.tail[..];
                match r.data.windows(tail.len().max(1)).rposition(|w| w == tail) {
                    Some(at) if !tail.is_empty() => &r.data[at + tail.len()..],
                    _ => {
                        println!("[... lines left out]");
                        &r.data[..]
                    }
                }
            };
            if !new.is_empty() {
                print!("{}", String::from_utf8_lossy(new));
                s.printed += new.len();
                s.tail.extend_from_slice(new);
                let cut = s.tail.len().saturating_sub(256);
                s.tail.drain(..cut);
            }
        }
        std::io::stdout().flush()?;
        if over {
            if seen.is_empty() {
                bail!("no attempt of {id} matches");
            }
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::absolute;

    #[test]
    fn local_paths_become_absolute_with_dot_dot_resolved() {
        let cwd = std::env::current_dir().unwrap();
        let parent = cwd.parent().unwrap().display().to_string();
        assert_eq!(
            absolute("../logs/x.log").unwrap(),
            format!("{parent}/logs/x.log")
        );
        assert_eq!(absolute("/a/b/../c/./d/").unwrap(), "/a/c/d");
        assert_eq!(absolute("/../a").unwrap(), "/a");
        assert_eq!(absolute("s3://b/../k").unwrap(), "s3://b/../k");
    }
}
