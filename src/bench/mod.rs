//! `quern bench scheduler`: how far one coordinator goes.
//!
//! For each cluster size it starts a real coordinator process (pinned to one CPU), registers
//! that many simulated workers over the real gRPC protocol (see [`sim`]), measures the idle
//! cluster's heartbeats, then submits one job of many small maps and measures it to its end:
//! assignments per second, heartbeat latency, the coordinator's CPU and memory, the journal's
//! bytes and syncs per task, the time to plan the job, and the size of the answers about it.

mod coord;
mod sim;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use prost::Message;
use protocol::pb;
use protocol::{JobId, JobSpec, JobState};
use tokio_util::sync::CancellationToken;

use coord::{CoordProc, Usage};
use sim::{Model, Rpc, Stats};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// One coordinator under simulated workers: heartbeats, assignments, journal, memory.
    Scheduler(SchedulerArgs),
}

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Cluster sizes to measure, one fresh coordinator each.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,5000")]
    workers: Vec<usize>,
    /// Map tasks of the measured job (1 KiB splits of a sparse input file).
    #[arg(long, default_value_t = 100_000)]
    maps: u64,
    /// Reduce tasks of the measured job.
    #[arg(long, default_value_t = 10)]
    reduces: u32,
    /// Task slots per simulated worker.
    #[arg(long, default_value_t = 2)]
    slots: u32,
    /// The coordinator's heartbeat interval, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    heartbeat_ms: u64,
    /// How long a simulated task runs, in milliseconds (0: reported as soon as assigned).
    #[arg(long, default_value_t = 0)]
    task_ms: u64,
    /// Seconds of the idle cluster's heartbeats measured before the job is submitted.
    #[arg(long, default_value_t = 10)]
    idle_s: u64,
    /// gRPC connections the simulated workers share (at most one per worker).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// The CPU the coordinator is pinned to; the simulated workers run on the others.
    #[arg(long, default_value_t = 0)]
    coordinator_cpu: usize,
    /// Seconds the job may take before the run is given up.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// Working directory (coordinator state, input, output); default: a temporary directory,
    /// removed afterwards.
    #[arg(long)]
    dir: Option<PathBuf>,
}

pub async fn run(c: BenchCommand) -> Result<u8> {
    match c {
        BenchCommand::Scheduler(a) => scheduler(a).await,
    }
}

/// What one phase of heartbeats looked like.
struct Beats {
    per_s: f64,
    p50: u32,
    p99: u32,
}

impl Beats {
    fn of(latencies: &[u32], secs: f64) -> Beats {
        let at = |q: f64| {
            latencies
                .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0)
        };
        Beats {
            per_s: latencies.len() as f64 / secs,
            p50: at(0.50),
            p99: at(0.99),
        }
    }

    fn show(&self) -> String {
        format!("{} / {}", ms(self.p50), ms(self.p99))
    }
}

/// One cluster size's figures.
struct Row {
    workers: usize,
    register_s: f64,
    idle: Beats,
    idle_cpu: f64,
    idle_rss: u64,
    plan: Duration,
    job_s: f64,
    attempts: u64,
    tasks: u64,
    busy: Beats,
    job_cpu: f64,
    cpu_per_task: Duration,
    rss_after: u64,
    journal_bytes: u64,
    fsyncs: u64,
    answers: Answers,
    errors: u64,
}

async fn scheduler(a: SchedulerArgs) -> Result<u8> {
    // Removed when dropped, at the end.
    let tmp = tempfile::Builder::new()
        .prefix("quern-bench-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    coord::pin_self_away_from(a.coordinator_cpu);
    let mut rows = Vec::new();
    for &w in &a.workers {
        eprintln!("bench scheduler: {w} workers, a job of {} maps", a.maps);
        let row = measure(&a, w, &dir.join(format!("w{w}"))).await?;
        eprintln!(
            "  {:.0} assignments/s, heartbeat p50/p99 {}",
            row.attempts as f64 / row.job_s,
            row.busy.show()
        );
        rows.push(row);
    }
    print!("{}", table(&a, &rows));
    Ok(0)
}

async fn measure(a: &SchedulerArgs, workers: usize, dir: &Path) -> Result<Row> {
    std::fs::create_dir_all(dir)?;
    let input = dir.join("input.log");
    // Sparse: a million maps cost no disk, and no map reads it.
    std::fs::File::create(&input)?.set_len(a.maps * protocol::spec::MIN_SPLIT_SIZE)?;
    let coord = CoordProc::start(dir, a.heartbeat_ms, a.coordinator_cpu)?;
    let rpcs = coord
        .connect(a.connections.clamp(1, workers.max(1)))
        .await?;
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let _stop_on_exit = stop.clone().drop_guard();
    let model = Model {
        slots: a.slots,
        task: Duration::from_millis(a.task_ms),
    };
    let started = Instant::now();
    let mut sims = sim::start(&rpcs, workers, model, &stats, &stop)
        .await
        .context("registering the simulated workers")?;
    let register_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(a.heartbeat_ms.max(500))).await;
    stats.take_latencies();
    let u0 = coord.usage()?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(a.idle_s.max(1))).await;
    let (u1, idle_s) = (coord.usage()?, t0.elapsed().as_secs_f64());
    let idle = Beats::of(&stats.take_latencies(), idle_s);

    let (journal0, syncs0) = (coord.journal_bytes(), coord.journal_syncs().await?);
    let mut spec = JobSpec::new(
        "views",
        vec![input.display().to_string()],
        dir.join("out").display().to_string(),
    );
    spec.split_size = protocol::spec::MIN_SPLIT_SIZE;
    spec.reducers = a.reduces;
    let mut client = coordinator::Client::connect(&coord.addr).await?;
    let (assigned0, uj0) = (stats.assigned.load(Ordering::Relaxed), coord.usage()?);
    let t = Instant::now();
    let id = client.submit(&spec).await?;
    let plan = t.elapsed();
    let j0 = Instant::now();
    stats.take_latencies();
    wait_for(&mut client, id, Duration::from_secs(a.timeout_s)).await?;
    let job_s = j0.elapsed().as_secs_f64();
    let uj1 = coord.usage()?;
    let busy = Beats::of(&stats.take_latencies(), job_s);
    let attempts = stats.assigned.load(Ordering::Relaxed) - assigned0;
    let tasks = a.maps + u64::from(a.reduces);
    let (journal1, syncs1) = (coord.journal_bytes(), coord.journal_syncs().await?);
    let answers = answer_sizes(&rpcs[0], &coord, id).await?;
    stop.cancel();
    while sims.join_next().await.is_some() {}
    Ok(Row {
        workers,
        register_s,
        idle,
        idle_cpu: Usage::share(&u0, &u1, idle_s),
        idle_rss: u1.rss,
        plan,
        job_s,
        attempts,
        tasks,
        busy,
        job_cpu: Usage::share(&uj0, &uj1, job_s + plan.as_secs_f64()),
        cpu_per_task: (uj1.cpu - uj0.cpu) / attempts.max(1) as u32,
        rss_after: uj1.rss,
        journal_bytes: journal1.saturating_sub(journal0),
        fsyncs: syncs1.saturating_sub(syncs0),
        answers,
        errors: stats.errors.load(Ordering::Relaxed),
    })
}

/// Waits for job `id` to succeed; an error if it ends otherwise or takes too long.
async fn wait_for(client: &mut coordinator::Client, id: JobId, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let s = client.status(id).await?;
        match s.state {
            JobState::Succeeded => return Ok(()),
            JobState::Failed | JobState::Killed => {
                bail!("{id} ended {}: {}", s.state.name(), s.error)
            }
            _ if start.elapsed() > timeout => {
                bail!(
                    "{id} still running after {timeout:?}: {} of {} maps done",
                    s.maps_done,
                    s.maps_total
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The sizes of the answers about a job, in bytes.
struct Answers {
    /// Its status, as a gRPC message and as the JSON API's body.
    status: (usize, usize),
    /// All its attempts, likewise.
    attempts: (usize, usize),
    /// The page of attempts the web UI asks for (500), as JSON.
    page: usize,
}

/// The sizes of the answers about job `id`.
async fn answer_sizes(rpc: &Rpc, coord: &CoordProc, id: JobId) -> Result<Answers> {
    let mut rpc = rpc.clone();
    let status = rpc
        .get_job(pb::GetJobRequest {
            job_id: id.0,
            wait_until_over_ms: 0,
        })
        .await?
        .into_inner()
        .encoded_len();
    // Page by page, as a client must: one answer holds at most 20,000.
    let mut listed = 0;
    let mut offset = 0;
    loop {
        let page = rpc
            .list_attempts(pb::ListAttemptsRequest {
                job_id: id.0,
                offset,
                limit: 10_000,
            })
            .await?
            .into_inner();
        listed += page.encoded_len();
        offset += page.attempts.len() as u64;
        if page.attempts.is_empty() || offset >= page.total {
            break;
        }
    }
    let json = |path: String| async move { coord.get(&path).await.map(|b| b.len()) };
    Ok(Answers {
        status: (status, json(format!("/api/v1/jobs/{}", id.0)).await?),
        attempts: (
            listed,
            json(format!("/api/v1/jobs/{}/attempts", id.0)).await?,
        ),
        page: json(format!("/api/v1/jobs/{}/attempts?limit=500", id.0)).await?,
    })
}

fn ms(micros: u32) -> String {
    format!("{:.1} ms", f64::from(micros) / 1000.0)
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1 << 20) as f64)
}

fn size(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

/// The figures as two Markdown tables, with the settings they were measured under.
fn table(a: &SchedulerArgs, rows: &[Row]) -> String {
    let mut s = format!(
        "Settings: heartbeat every {} ms, {} slots per worker, tasks reported after {} ms, \
         a job of {} maps (1 KiB splits) and {} reduces, {} gRPC connections, coordinator \
         pinned to CPU {}.\n\n",
        a.heartbeat_ms, a.slots, a.task_ms, a.maps, a.reduces, a.connections, a.coordinator_cpu
    );
    s += "Idle cluster:\n\n| workers | registered in | heartbeats/s | heartbeat p50 / p99 | coordinator CPU | coordinator RSS |\n|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        s += &format!(
            "| {} | {:.2} s | {:.0} | {} | {:.0}% | {} |\n",
            r.workers,
            r.register_s,
            r.idle.per_s,
            r.idle.show(),
            r.idle_cpu * 100.0,
            mib(r.idle_rss)
        );
    }
    s += "\nOne job, submit to end:\n\n| workers | plan (submit) | attempts | assignments/s | heartbeat p50 / p99 | coordinator CPU | CPU per attempt | RSS after | journal per task | fsyncs per task | job status (gRPC / JSON) | all attempts (gRPC in pages of 10,000 / JSON) | a page of 500 (JSON) | RPC errors |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        s += &format!(
            "| {} | {:.2} s | {} | {:.0} | {} | {:.0}% | {:.0} µs | {} | {:.0} B | {:.3} | {} / {} | {} / {} | {} | {} |\n",
            r.workers,
            r.plan.as_secs_f64(),
            r.attempts,
            r.attempts as f64 / r.job_s,
            r.busy.show(),
            r.job_cpu * 100.0,
            r.cpu_per_task.as_secs_f64() * 1e6,
            mib(r.rss_after),
            r.journal_bytes as f64 / r.tasks as f64,
            r.fsyncs as f64 / r.tasks as f64,
            size(r.answers.status.0),
            size(r.answers.status.1),
            size(r.answers.attempts.0),
            size(r.answers.attempts.1),
            size(r.answers.page),
            r.errors
        );
    }
    s
}
