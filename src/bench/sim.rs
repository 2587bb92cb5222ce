//! Simulated workers: each registers, heartbeats and reports over the real gRPC protocol, as
//! the worker daemon does, but runs no executor. A task "runs" for a modelled duration; a
//! map's report carries the counters a real map reports, and a reduce writes its (empty)
//! staged part file where the assignment says, so the coordinator's commit renames a real
//! file. Like the daemon, a worker heartbeats at the interval the coordinator gives it and at
//! once when a task of its ends, the heartbeat carrying the ended tasks' reports (a freed
//! slot asks for work without waiting, in the same RPC that reports).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protocol::pb::coordinator_service_client::CoordinatorServiceClient;
use protocol::pb::{self, HeartbeatRequest, RegisterWorkerRequest, ReportTaskRequest};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub type Rpc = CoordinatorServiceClient<Channel>;

/// What the simulated workers saw, shared by all of them.
#[derive(Default)]
pub struct Stats {
    /// Heartbeat round trips since the last [`Stats::take_latencies`], in microseconds.
    latencies: Mutex<Vec<u32>>,
    /// Assignments received.
    pub assigned: AtomicU64,
    /// RPCs that failed (a worker the coordinator declared dead registers again).
    pub errors: AtomicU64,
}

impl Stats {
    /// The heartbeat latencies recorded since the last call, sorted.
    pub fn take_latencies(&self) -> Vec<u32> {
        let mut v = std::mem::take(&mut *self.latencies.lock().expect("stats lock"));
        v.sort_unstable();
        v
    }
}

/// One simulated worker's registration.
#[derive(Clone, Copy)]
struct Reg {
    id: u64,
    epoch: u64,
}

/// How the simulated workers behave.
#[derive(Clone, Copy)]
pub struct Model {
    /// Task slots each.
    pub slots: u32,
    /// How long a task runs.
    pub task: Duration,
}

/// Registers `n` workers over `rpcs` (worker `i` uses connection `i % rpcs.len()`) and runs
/// them until `stop`; returns the running set.
pub async fn start(
    rpcs: &[Rpc],
    n: usize,
    model: Model,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
) -> Result<JoinSet<()>, tonic::Status> {
    let mut regs = Vec::with_capacity(n);
    let mut interval = Duration::from_millis(200);
    for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
        let mut pending = JoinSet::new();
        for &i in chunk {
            let mut rpc = rpcs[i % rpcs.len()].clone();
            pending.spawn(async move { (i, register(&mut rpc, i, model.slots).await) });
        }
        while let Some(r) = pending.join_next().await {
            let (i, r) = r.expect("registration task");
            let (reg, every) = r?;
            interval = every;
            regs.push((i, reg));
        }
    }
    let mut set = JoinSet::new();
    for (i, reg) in regs {
        // Spread over the interval, as workers started at different times are.
        let offset = interval.mul_f64(i as f64 / n as f64);
        let w = Sim {
            rpc: rpcs[i % rpcs.len()].clone(),
            index: i,
            reg,
            model,
            stats: stats.clone(),
            running: Arc::new(AtomicU32::new(0)),
            reports: Arc::default(),
            wake: Arc::new(Notify::new()),
        };
        set.spawn(w.run(interval, offset, stop.clone()));
    }
    Ok(set)
}

async fn register(rpc: &mut Rpc, i: usize, slots: u32) -> Result<(Reg, Duration), tonic::Status> {
    let r = rpc
        .register_worker(RegisterWorkerRequest {
            host: format!("sim-{i}"),
            shuffle_addr: format!("sim-{i}:7071"),
            cpu_slots: slots,
            storage_host: format!("sim-{i}"),
            ..Default::default()
        })
        .await?
        .into_inner();
    let reg = Reg {
        id: r.worker_id,
        epoch: r.epoch,
    };
    Ok((reg, Duration::from_millis(r.heartbeat_interval_ms.max(10))))
}

struct Sim {
    rpc: Rpc,
    index: usize,
    reg: Reg,
    model: Model,
    stats: Arc<Stats>,
    running: Arc<AtomicU32>,
    /// Reports of ended tasks, for the next heartbeat.
    reports: Arc<Mutex<Vec<ReportTaskRequest>>>,
    wake: Arc<Notify>,
}

impl Sim {
    async fn run(mut self, interval: Duration, offset: Duration, stop: CancellationToken) {
        let mut tasks = JoinSet::new();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(offset) => {}
        }
        loop {
            let free = self
                .model
                .slots
                .saturating_sub(self.running.load(Ordering::Relaxed));
            let reports = std::mem::take(&mut *self.reports.lock().expect("report queue"));
            let started = Instant::now();
            let req = HeartbeatRequest {
                worker_id: self.reg.id,
                epoch: self.reg.epoch,
                free_slots: free,
                running_attempts: Vec::new(),
                reports,
                // Answered at once: the latencies measured are the coordinator's work.
                wait_for_work_ms: 0,
                // Not numbered: the simulated workers do not list what they run.
                seq: 0,
            };
            match self.rpc.heartbeat(req).await {
                Ok(r) => {
                    let micros = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                    self.stats
                        .latencies
                        .lock()
                        .expect("stats lock")
                        .push(micros);
                    for a in r.into_inner().assignments {
                        self.stats.assigned.fetch_add(1, Ordering::Relaxed);
                        self.running.fetch_add(1, Ordering::Relaxed);
                        tasks.spawn(self.finish(a));
                    }
                }
                Err(s) => {
                    // The reports are lost with the heartbeat (the coordinator declares a
                    // worker that stops answering dead).
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    if s.code() == tonic::Code::FailedPrecondition {
                        if let Ok((reg, _)) =
                            register(&mut self.rpc, self.index, self.model.slots).await
                        {
                            self.reg = reg;
                        }
                    }
                }
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                _ = self.wake.notified() => {}
            }
        }
        tasks.abort_all();
    }

    /// Runs one assignment for the modelled time and queues its report for the next
    /// heartbeat.
    fn finish(&self, a: pb::TaskAssignment) -> impl std::future::Future<Output = ()> + 'static {
        let (reg, model) = (self.reg, self.model);
        let (running, reports, wake) = (
            self.running.clone(),
            self.reports.clone(),
            self.wake.clone(),
        );
        async move {
            if !model.task.is_zero() {
                tokio::time::sleep(model.task).await;
            }
            let mut req = ReportTaskRequest {
                worker_id: reg.id,
                epoch: reg.epoch,
                attempt_id: a.attempt_id,
                success: true,
                ..Default::default()
            };
            if a.kind == pb::TaskKind::Reduce as i32 {
                if let Err(e) = stage_empty_part(&a.staging_path).await {
                    req.success = false;
                    req.failure_kind = pb::FailureKind::Retryable as i32;
                    req.error = e.to_string();
                }
            } else {
                req.counters = Some(map_counters(&a));
            }
            reports.lock().expect("report queue").push(req);
            running.fetch_sub(1, Ordering::Relaxed);
            wake.notify_one();
        }
    }
}

/// The counters a real map of a log job reports.
fn map_counters(a: &pb::TaskAssignment) -> pb::Counters {
    let bytes = a.split.as_ref().map_or(0, |s| s.end - s.start);
    let values = [
        ("map_input_records", bytes / 100),
        ("map_input_bytes", bytes),
        ("map_output_records", bytes / 100),
        ("combine_input_records", bytes / 100),
        ("combine_output_records", bytes / 400),
        ("map_output_materialized_bytes", bytes / 10),
    ];
    pb::Counters {
        values: values.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

/// Writes an empty part file at a reduce's staging path (a local path in this benchmark).
async fn stage_empty_part(path: &str) -> std::io::Result<()> {
    let path = std::path::Path::new(path);
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::write(path, b"").await
}
