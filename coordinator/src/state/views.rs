//! Read-only views of the state for the web UI, the JSON API and metrics.

use std::time::Instant;

use protocol::WorkerId;

use protocol::JobId;

use super::{State, TaskKind};

/// A worker as the UI shows it.
#[derive(Clone, Debug)]
pub struct WorkerView {
    /// Its id.
    pub id: WorkerId,
    /// Where it serves shuffle data.
    pub shuffle_addr: String,
    /// The storage host it runs beside.
    pub storage_host: String,
    /// Not declared dead.
    pub alive: bool,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// Attempts it is running.
    pub running: u32,
    /// Task slots it declared.
    pub slots: u32,
    /// The longest time between two of its heartbeats, in milliseconds.
    pub max_gap_ms: u64,
}

impl State {
    /// Every worker this incarnation knows, by id.
    pub fn workers_view(&self, now: Instant) -> Vec<WorkerView> {
        let mut out: Vec<WorkerView> = self
            .workers
            .iter()
            .map(|(id, w)| WorkerView {
                id: *id,
                shuffle_addr: w.shuffle_addr.clone(),
                storage_host: w.storage_host.clone(),
                alive: w.alive,
                last_seen_ms: now.saturating_duration_since(w.last_seen).as_millis() as u64,
                running: self.attempts.values().filter(|a| a.worker == *id).count() as u32,
                slots: w.slots,
                max_gap_ms: w.max_gap.as_millis() as u64,
            })
            .collect();
        out.sort_by_key(|w| w.id);
        out
    }
}

/// An attempt with where to find its log.
#[derive(Clone, Debug)]
pub struct AttemptView {
    /// The record.
    pub record: super::AttemptRecord,
    /// The worker's shuffle address, which also serves its attempt logs.
    pub worker_addr: String,
    /// For the attempt that won its task: bytes it read (a map's input, a reduce's fetched
    /// shuffle data) and wrote (a map's output, a reduce's part file).
    pub bytes: Option<(u64, u64)>,
}

impl State {
    /// The attempts of a job this incarnation started, in start order.
    pub fn attempts_of(&self, job: JobId) -> Option<Vec<AttemptView>> {
        let j = self.jobs.get(&job)?;
        Some(
            j.history
                .iter()
                .map(|r| AttemptView {
                    bytes: j
                        .tasks(r.kind)
                        .get(r.index as usize)
                        .and_then(|t| t.winner.as_ref())
                        .filter(|w| w.attempt == r.attempt)
                        .map(|w| match r.kind {
                            TaskKind::Map => (
                                w.counters.get("map_input_bytes"),
                                w.counters.get("map_output_materialized_bytes"),
                            ),
                            TaskKind::Reduce => (
                                w.counters.get("reduce_input_bytes"),
                                w.counters.get("output_bytes"),
                            ),
                        }),
                    record: r.clone(),
                    worker_addr: self
                        .workers
                        .get(&r.worker)
                        .map(|w| w.shuffle_addr.clone())
                        .unwrap_or_default(),
                })
                .collect(),
        )
    }
}
