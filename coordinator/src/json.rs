//! The JSON forms of jobs, schedules and backfills: one schema for the HTTP API
//! (`/api/v1/...`) and the CLI's `--output json`, documented in docs/API.md. Fields are only
//! ever added; none is renamed or dropped.

use protocol::pb;
use serde_json::{json, Value};

use crate::client::JobStatus;

/// A job: `{"id", "job", "name", "labels", "state", "maps": {"done", "running", "total"}, "reduces": {...},
/// "elapsed_ms", "input_bytes", "output_bytes", "output", "submitted_at", "finished_at",
/// "error", "warnings", "counters"}`; the times in RFC 3339 (UTC), null when not known.
pub fn job(s: &JobStatus) -> Value {
    let warnings = if s.state == protocol::JobState::Succeeded {
        jobs::Counters(s.counters.iter().map(|(k, v)| (k.clone(), *v)).collect()).warnings()
    } else {
        Vec::new()
    };
    json!({
        "id": s.id.to_string(),
        "job": s.job,
        "name": s.name,
        "labels": s.labels,
        "state": s.state.name(),
        "maps": {"done": s.maps_done, "running": s.maps_running, "total": s.maps_total},
        "reduces": {"done": s.reduces_done, "running": s.reduces_running, "total": s.reduces_total},
        "elapsed_ms": s.elapsed.as_millis() as u64,
        "input_bytes": s.bytes_read,
        "output_bytes": s.counters.get("output_bytes").copied().unwrap_or(0),
        "output": s.output,
        "submitted_at": rfc3339(s.submitted_unix_ms),
        "finished_at": rfc3339(s.finished_unix_ms),
        "error": s.error,
        "warnings": warnings,
        "counters": s.counters,
    })
}

/// A schedule: `{"name", "cron", "tz", "paused", "last", "next", "next_at_utc", "runs",
/// "catchup", "max_catchup", "concurrency", "start", "incremental", "retries", "retry_delay_s", "on_failure_webhook", "template": {"job", "inputs", "output",
/// "params", "reducers"}}`.
pub fn schedule(s: &pb::ScheduleInfo) -> Value {
    let d = s.def.clone().unwrap_or_default();
    let t = d.template.unwrap_or_default();
    json!({
        "name": d.name,
        "cron": d.cron,
        "tz": d.tz,
        "paused": s.paused,
        "last": s.last,
        "next": s.next,
        "next_at_utc": s.next_at_utc,
        "runs": s.runs,
        "catchup": d.catchup,
        "max_catchup": d.max_catchup,
        "concurrency": d.concurrency,
        "start": d.start,
        "incremental": d.incremental,
        "retries": d.retries,
        "retry_delay_s": d.retry_delay_s,
        "on_failure_webhook": d.on_failure_webhook,
        "template": {
            "job": t.job,
            "inputs": t.inputs,
            "output": t.output,
            "params": t.params.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
            "reducers": t.reducers,
        },
    })
}

/// One entry of a schedule's history: `{"logical", "through", "count", "job", "state",
/// "duration_ms", "output", "note", "backfill"}` (`job` and `backfill` null when none).
pub fn history_entry(e: &pb::HistoryEntry) -> Value {
    json!({
        "logical": e.logical,
        "through": e.through,
        "count": e.count,
        "job": (e.job_id > 0).then(|| protocol::JobId(e.job_id).to_string()),
        "state": e.state,
        "duration_ms": e.duration_ms,
        "output": e.output,
        "note": e.note,
        "backfill": (e.backfill_id > 0).then_some(e.backfill_id),
    })
}

/// A backfill: `{"id", "schedule", "reprocess", "total", "started", "finished", "failed",
/// "running", "cancelled", "state"}`; `state` is `running`, `done` or `cancelled`.
pub fn backfill(b: &pb::BackfillStatus) -> Value {
    json!({
        "id": b.id,
        "schedule": b.schedule,
        "reprocess": b.reprocess,
        "total": b.total,
        "started": b.started,
        "finished": b.finished,
        "failed": b.failed,
        "running": b.running,
        "cancelled": b.cancelled,
        "state": backfill_state(b),
    })
}

/// `running`, `done` or `cancelled`.
pub fn backfill_state(b: &pb::BackfillStatus) -> &'static str {
    if b.cancelled {
        "cancelled"
    } else if b.finished == b.total {
        "done"
    } else {
        "running"
    }
}

/// `ms` since the Unix epoch in RFC 3339, UTC, to the millisecond; `None` for 0 (not known).
pub fn rfc3339(ms: u64) -> Option<String> {
    (ms > 0)
        .then(|| chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64))
        .flatten()
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// `ms` since the Unix epoch as local time for people (`2026-12-04 09:15:02`); `-` for 0.
pub fn local_time(ms: u64) -> String {
    match chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms as i64) {
        Some(t) if ms > 0 => t
            .with_timezone(&chrono::Local)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string(),
        _ => "-".into(),
    }
}
