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
use prometheus_client::registry::{Metric, Registry};

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

/// Registers `metric` under `name` and returns it (a handle on the registered one).
fn add<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
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
    gauges: Gauges,
}

/// The gauges: they describe the present and are set when `/metrics` is scraped.
#[derive(Debug)]
struct Gauges {
    jobs: Family<Labels, Gauge>,
    tasks: Family<Labels, Gauge>,
    heartbeat_lag: Family<Labels, FloatGauge>,
    heartbeat_gap_max: Family<Labels, FloatGauge>,
}

impl Gauges {
    fn new(r: &mut Registry) -> Self {
        Gauges {
            jobs: add(
                r,
                "quern_jobs",
                "Jobs the coordinator keeps (see --keep-jobs), by state.",
                Family::default(),
            ),
            tasks: add(
                r,
                "quern_tasks",
                "Tasks of running jobs by state.",
                Family::default(),
            ),
            heartbeat_lag: add(
                r,
                "quern_worker_heartbeat_lag_seconds",
                "Time since each worker's last heartbeat.",
                Family::default(),
            ),
            heartbeat_gap_max: add(
                r,
                "quern_worker_heartbeat_gap_max_seconds",
                "The longest time between two heartbeats of each worker.",
                Family::default(),
            ),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Returns a fresh set of metrics, all at zero.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let from_winners = FROM_WINNERS
            .iter()
            .map(|(name, counter, help)| (*counter, add(&mut r, name, help, Counter::default())))
            .collect();
        r.register(
            "quern_journal_append_seconds",
            "Journal append-and-sync latency.",
            JOURNAL_APPEND.clone(),
        );
        let inner = Inner {
            from_winners,
            failed_attempts: add(
                &mut r,
                "quern_failed_attempts",
                "Failed attempts (each one retried or fatal).",
                Counter::default(),
            ),
            backup_attempts: add(
                &mut r,
                "quern_backup_attempts",
                "Backup attempts for stragglers.",
                Counter::default(),
            ),
            fetch_failures: add(
                &mut r,
                "quern_fetch_failures",
                "Map output fetch failures reported.",
                Counter::default(),
            ),
            lost_map_outputs: add(
                &mut r,
                "quern_lost_map_outputs",
                "Finished map outputs lost and produced again.",
                Counter::default(),
            ),
            jobs_ended: add(
                &mut r,
                "quern_jobs_ended",
                "Jobs that ended, by how they ended.",
                Family::default(),
            ),
            task_duration: add(
                &mut r,
                "quern_task_duration_seconds",
                "Run time of winning task attempts.",
                Family::new_with_constructor(histogram as fn() -> Histogram),
            ),
            scheduling_latency: add(
                &mut r,
                "quern_scheduling_latency_seconds",
                "From a task becoming ready to run to its attempt's start.",
                histogram(),
            ),
            gauges: Gauges::new(&mut r),
            registry: r,
        };
        Metrics {
            inner: Arc::new(inner),
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
                .gauges
                .jobs
                .get_or_create(&vec![("state", state.to_string())])
                .set(*n as i64);
        }
        for (state, n) in tasks {
            self.inner
                .gauges
                .tasks
                .get_or_create(&vec![("state", state.to_string())])
                .set(*n as i64);
        }
    }

    /// Sets the per-worker heartbeat gauges to exactly these workers: (id, alive, seconds
    /// since the last heartbeat, longest gap in seconds).
    pub fn set_workers(&self, workers: &[(String, bool, f64, f64)]) {
        self.inner.gauges.heartbeat_lag.clear();
        self.inner.gauges.heartbeat_gap_max.clear();
        for (id, alive, lag, gap) in workers {
            self.inner
                .gauges
                .heartbeat_lag
                .get_or_create(&vec![("worker", id.clone()), ("alive", alive.to_string())])
                .set(*lag);
            self.inner
                .gauges
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
