//! The coordinator's Prometheus metrics, kept with `prometheus-client`.
//!
//! Counters are incremented and histograms observed when the event happens (an attempt wins
//! or fails, a job ends, an attempt starts, a journal append syncs), so they only grow, as
//! Prometheus requires, whatever job history is later pruned. Gauges describe the present and
//! are set when `/metrics` is scraped. Bytes and times of tasks are those of winning attempts.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use jobs::Counters;

/// Upper bounds (seconds) of the latency and duration buckets.
const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0];
/// Upper bounds (seconds) of the journal append buckets: an fsync takes micro- to
/// milliseconds.
const JOURNAL_BUCKETS: [f64; 10] = [
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Journal append-and-sync latency: observed by the journal, which has no handle on the
/// coordinator's metrics; registered with every [`Metrics`].
pub(crate) static JOURNAL_APPEND: LazyLock<Histogram> =
    LazyLock::new(|| Histogram::new(JOURNAL_BUCKETS));

/// Counters fed from the counters of winning attempts: (metric, task counter, help).
const FROM_WINNERS: [(&str, &str, &str); 7] = [
    (
        "quern_read_bytes",
        "map_input_bytes",
        "Input bytes read by winning map attempts.",
    ),
    (
        "quern_shuffled_bytes",
        "shuffle_bytes",
        "Bytes fetched by winning reduce attempts.",
    ),
    (
        "quern_written_bytes",
        "output_bytes",
        "Bytes of part files written by winning reduce attempts.",
    ),
    (
        "quern_spilled_bytes",
        "spilled_bytes",
        "Bytes spilled to disk by winning map attempts.",
    ),
    (
        "quern_model_busy_milliseconds",
        "model_busy_ms",
        "Time model tasks (photos) spent in model calls, on GPU or CPU.",
    ),
    (
        "quern_model_starved_milliseconds",
        "model_wait_ms",
        "Time model tasks (photos) waited for decoded input: GPU starved time on GPUs.",
    ),
    (
        "quern_gpu_tasks",
        "gpu_tasks",
        "Map tasks whose model ran on a GPU.",
    ),
];

/// Every metric the coordinator exports; cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    from_winners: Vec<(&'static str, Counter)>,
    jobs_ended: Family<Labels, Counter>,
    failed_attempts: Counter,
    backup_attempts: Counter,
    fetch_failures: Counter,
    lost_map_outputs: Counter,
    task_duration: Family<Labels, Histogram>,
    scheduling_latency: Histogram,
    jobs: Family<Labels, Gauge>,
    tasks: Family<Labels, Gauge>,
    heartbeat_lag: Family<Labels, FloatGauge>,
    heartbeat_gap_max: Family<Labels, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Returns a fresh set of metrics, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let from_winners = FROM_WINNERS
            .iter()
            .map(|(name, counter, help)| {
                let c = Counter::default();
                registry.register(*name, *help, c.clone());
                (*counter, c)
            })
            .collect();
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let failed_attempts = counter(
            &mut registry,
            "quern_failed_attempts",
            "Failed attempts (each one retried or fatal).",
        );
        let backup_attempts = counter(
            &mut registry,
            "quern_backup_attempts",
            "Backup attempts for stragglers.",
        );
        let fetch_failures = counter(
            &mut registry,
            "quern_fetch_failures",
            "Map output fetch failures reported.",
        );
        let lost_map_outputs = counter(
            &mut registry,
            "quern_lost_map_outputs",
            "Finished map outputs lost and produced again.",
        );
        let jobs_ended = Family::<Labels, Counter>::default();
        registry.register(
            "quern_jobs_ended",
            "Jobs that ended, by how they ended.",
            jobs_ended.clone(),
        );
        let task_duration =
            Family::<Labels, Histogram>::new_with_constructor(histogram as fn() -> Histogram);
        registry.register(
            "quern_task_duration_seconds",
            "Run time of winning task attempts.",
            task_duration.clone(),
        );
        let scheduling_latency = histogram();
        registry.register(
            "quern_scheduling_latency_seconds",
            "From a task becoming ready to run to its attempt's start.",
            scheduling_latency.clone(),
        );
        registry.register(
            "quern_journal_append_seconds",
            "Journal append-and-sync latency.",
            JOURNAL_APPEND.clone(),
        );
        let jobs = Family::<Labels, Gauge>::default();
        registry.register(
            "quern_jobs",
            "Jobs the coordinator keeps (see --keep-jobs), by state.",
            jobs.clone(),
        );
        let tasks = Family::<Labels, Gauge>::default();
        registry.register(
            "quern_tasks",
            "Tasks of running jobs by state.",
            tasks.clone(),
        );
        let heartbeat_lag = Family::<Labels, FloatGauge>::default();
        registry.register(
            "quern_worker_heartbeat_lag_seconds",
            "Time since each worker's last heartbeat.",
            heartbeat_lag.clone(),
        );
        let heartbeat_gap_max = Family::<Labels, FloatGauge>::default();
        registry.register(
            "quern_worker_heartbeat_gap_max_seconds",
            "The longest time between two heartbeats of each worker.",
            heartbeat_gap_max.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                from_winners,
                jobs_ended,
                failed_attempts,
                backup_attempts,
                fetch_failures,
                lost_map_outputs,
                task_duration,
                scheduling_latency,
                jobs,
                tasks,
                heartbeat_lag,
                heartbeat_gap_max,
            }),
        }
    }

    /// Records an attempt that won its task: its run time and the work its counters show.
    pub fn attempt_won(&self, kind: &str, run: Duration, counters: &Counters) {
        self.inner
            .task_duration
            .get_or_create(&vec![("kind", kind.to_string())])
            .observe(run.as_secs_f64());
        for (name, c) in &self.inner.from_winners {
            c.inc_by(counters.get(name));
        }
    }

    /// Records a failed attempt.
    pub fn attempt_failed(&self) {
        self.inner.failed_attempts.inc();
    }

    /// Records `n` backup attempts started.
    pub fn backups_started(&self, n: u64) {
        self.inner.backup_attempts.inc_by(n);
    }

    /// Records a reducer's report that it could not fetch a map output.
    pub fn fetch_failed(&self) {
        self.inner.fetch_failures.inc();
    }

    /// Records a finished map output that was lost and must be produced again.
    pub fn map_output_lost(&self) {
        self.inner.lost_map_outputs.inc();
    }

    /// Records a job that ended (`succeeded`, `failed` or `killed`).
    pub fn job_ended(&self, state: &str) {
        self.inner
            .jobs_ended
            .get_or_create(&vec![("state", state.to_string())])
            .inc();
    }

    /// Records the wait of an attempt from its task being ready to its start.
    pub fn attempt_scheduled(&self, wait: Duration) {
        self.inner.scheduling_latency.observe(wait.as_secs_f64());
    }

    /// Sets the gauges of kept jobs by state and of the tasks of running jobs.
    pub fn set_jobs(&self, by_state: &[(&str, u64)], tasks: &[(&str, u64)]) {
        for (state, n) in by_state {
            self.inner
                .jobs
                .get_or_create(&vec![("state", state.to_string())])
                .set(*n as i64);
        }
        for (state, n) in tasks {
            self.inner
                .tasks
                .get_or_create(&vec![("state", state.to_string())])
                .set(*n as i64);
        }
    }

    /// Sets the per-worker heartbeat gauges to exactly these workers: (id, alive, seconds
    /// since the last heartbeat, longest gap in seconds).
    pub fn set_workers(&self, workers: &[(String, bool, f64, f64)]) {
        self.inner.heartbeat_lag.clear();
        self.inner.heartbeat_gap_max.clear();
        for (id, alive, lag, gap) in workers {
            self.inner
                .heartbeat_lag
                .get_or_create(&vec![("worker", id.clone()), ("alive", alive.to_string())])
                .set(*lag);
            self.inner
                .heartbeat_gap_max
                .get_or_create(&vec![("worker", id.clone())])
                .set(*gap);
        }
    }

    /// Returns the text exposition (OpenMetrics) of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.inner.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_histograms_only_grow() {
        let m = Metrics::new();
        let mut c = Counters::default();
        c.add("map_input_bytes", 100);
        m.attempt_won("map", Duration::from_millis(20), &c);
        m.attempt_won("map", Duration::from_millis(30), &c);
        m.job_ended("succeeded");
        m.attempt_scheduled(Duration::from_millis(5));
        let text = m.encode();
        assert!(text.contains("quern_read_bytes_total 200"), "{text}");
        assert!(
            text.contains("quern_task_duration_seconds_count{kind=\"map\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("quern_jobs_ended_total{state=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("quern_scheduling_latency_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
