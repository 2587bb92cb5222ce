//! Cron schedules and backfills, the pure part: parsing a schedule, the logical times a cron
//! expression names in a time zone, template expansion, and which times are due.
//!
//! **Logical times** are wall-clock times in the schedule's zone (`2026-03-29T02:30`). Each
//! (schedule, logical time) runs at most once. A logical time runs at its instant: a local time
//! that occurs twice (autumn fall-back) runs once, at its first occurrence; a local time that a
//! spring-forward skips runs once, at the same wall-clock time shifted past the gap
//! (02:30 becomes 03:30).
//!
//! **Templates** in inputs, output and parameters: `{{date}}` (`2026-11-27`), `{{hour}}`
//! (`07`), `{{minute}}` (`30`), `{{ts}}` (`20261127T073000`), each with an optional offset in
//! seconds, minutes, hours or days: `{{date-1d}}`, `{{hour+2h}}`.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{Duration as Span, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use protocol::JobSpec;
use serde::{Deserialize, Serialize};

/// A logical time: wall-clock time in the schedule's zone.
pub type Logical = NaiveDateTime;

/// How often the coordinator looks for due times, unless configured.
pub const DEFAULT_TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// Under `--catchup none`, a time is on time (and runs) if found within this of its instant.
pub const ON_TIME_GRACE_S: i64 = 60;

/// What runs after the coordinator was down across several firing times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Catchup {
    /// Only a time found on time runs; missed ones are recorded as skipped.
    None,
    /// The latest missed time runs; older ones are skipped.
    #[default]
    Latest,
    /// Every missed time runs, up to `max_catchup` (the most recent ones).
    All,
}

/// What a firing does while the schedule's previous run is still active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Concurrency {
    /// Both run.
    Allow,
    /// The firing is skipped (and recorded).
    #[default]
    Forbid,
    /// The active run is killed and the new one starts.
    Replace,
}

/// Which logical times of a range a backfill runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Reprocess {
    /// Only times that never ran (and whose output has no `_SUCCESS`).
    #[default]
    None,
    /// Also times whose run failed or was killed.
    Failed,
    /// Every time, replacing outputs that exist.
    All,
}

macro_rules! parse_enum {
    ($t:ty, $what:literal, $($s:literal => $v:expr),+) => {
        impl FromStr for $t {
            type Err = ScheduleError;
            fn from_str(s: &str) -> Result<Self, ScheduleError> {
                match s {
                    $($s => Ok($v),)+
                    _ => Err(ScheduleError(format!(
                        concat!("unknown ", $what, " {:?} (expected one of: {})"),
                        s,
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }
        impl $t {
            /// The name used on the command line.
            pub fn name(self) -> &'static str {
                $(if self == $v { return $s; })+
                unreachable!()
            }
        }
    };
}

parse_enum!(Catchup, "catch-up policy", "none" => Catchup::None, "latest" => Catchup::Latest, "all" => Catchup::All);
parse_enum!(Concurrency, "concurrency policy", "allow" => Concurrency::Allow, "forbid" => Concurrency::Forbid, "replace" => Concurrency::Replace);
parse_enum!(Reprocess, "reprocess mode", "none" => Reprocess::None, "failed" => Reprocess::Failed, "all" => Reprocess::All);

/// A schedule as the user defined it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleSpec {
    /// Its name: letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// A cron expression of 5 fields (or 6, with seconds first).
    pub cron: String,
    /// An IANA time zone name, e.g. `Europe/Berlin`.
    pub tz: String,
    /// The job to run, with templates in its inputs, output and parameters.
    pub template: JobSpec,
    /// Catch-up policy.
    pub catchup: Catchup,
    /// Under [`Catchup::All`], at most this many missed times run (0: all).
    pub max_catchup: u32,
    /// Overlap policy.
    pub concurrency: Concurrency,
    /// No logical time before this runs (default: the time the schedule was added).
    pub start: Option<Logical>,
    /// Each run continues from the output of the last successful run before it (`--from`).
    #[serde(default)]
    pub incremental: bool,
    /// Retries and the failure notice.
    #[serde(default)]
    pub on_failure: FailurePolicy,
}

/// What a schedule does when a run fails.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailurePolicy {
    /// A failed logical time runs again up to this many times.
    pub retries: u32,
    /// Seconds from a failure to its retry.
    pub retry_delay_s: u64,
    /// An http:// or https:// URL POSTed a JSON notice when a logical time failed for good (empty: none).
    pub webhook: String,
    /// When the webhook was set (ms since the Unix epoch): failures from before are not
    /// announced (set by the coordinator).
    #[serde(default)]
    pub since_ms: u64,
}

/// Most retries a schedule may ask for.
pub const MAX_RETRIES: u32 = 100;

/// A schedule that cannot be accepted, or a template that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScheduleError(pub String);

fn err(msg: impl Into<String>) -> ScheduleError {
    ScheduleError(msg.into())
}

/// The expression a cron macro stands for (Vixie cron's `@yearly` ... `@hourly`); any other
/// expression as it is.
///
/// # Errors
/// A macro cron has and this does not (`@reboot`, a misspelt one).
fn cron_macro(expr: &str) -> Result<&str, ScheduleError> {
    Ok(match expr.trim() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        m if m.starts_with('@') => {
            return Err(err(format!(
                "bad cron expression {m:?}: the macros are @yearly (or @annually), @monthly, @weekly, @daily (or @midnight) and @hourly"
            )))
        }
        e => e,
    })
}

impl ScheduleSpec {
    /// Reads a schedule definition from the wire, checking every field.
    ///
    /// # Errors
    /// [`ScheduleError`] naming the field at fault.
    pub fn from_pb(d: protocol::pb::ScheduleDef) -> Result<ScheduleSpec, ScheduleError> {
        let template = d
            .template
            .map(protocol::JobSpec::from_pb)
            .ok_or_else(|| ScheduleError("a schedule needs a job".into()))?
            .map_err(|e| ScheduleError(e.to_string()))?;
        if template.inputs.is_empty() || template.output.is_empty() {
            return Err(ScheduleError(
                "a schedule needs --input and --output templates".into(),
            ));
        }
        let or = |s: String, d: &str| if s.is_empty() { d.to_string() } else { s };
        Ok(ScheduleSpec {
            name: d.name,
            cron: d.cron,
            tz: or(d.tz, "UTC"),
            template,
            catchup: or(d.catchup, "latest").parse::<Catchup>()?,
            max_catchup: d.max_catchup,
            concurrency: or(d.concurrency, "forbid").parse::<Concurrency>()?,
            start: if d.start.is_empty() {
                None
            } else {
                Some(parse_logical(&d.start)?)
            },
            incremental: d.incremental,
            on_failure: FailurePolicy {
                retries: d.retries,
                retry_delay_s: d.retry_delay_s,
                webhook: d.on_failure_webhook,
                since_ms: 0,
            },
        })
    }
}

/// A checked schedule: its cron expression parsed and its zone known.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The definition.
    pub spec: ScheduleSpec,
    cron: Cron,
    tz: Tz,
}

/// Checks a name of a schedule (or anything else the user names): see
/// [`protocol::check_name`].
pub fn check_name(what: &str, name: &str) -> Result<(), ScheduleError> {
    protocol::check_name(what, name).map_err(|e| err(e.to_string()))
}

impl Compiled {
    /// Checks `spec`: its name, cron expression, time zone and every template.
    ///
    /// # Errors
    /// [`ScheduleError`] saying what is wrong.
    pub fn new(spec: ScheduleSpec) -> Result<Compiled, ScheduleError> {
        check_name("schedule", &spec.name)?;
        let f = &spec.on_failure;
        if f.retries > MAX_RETRIES {
            return Err(err(format!("--retries is at most {MAX_RETRIES}")));
        }
        if !f.webhook.is_empty() {
            let ok = ["http://", "https://"]
                .iter()
                .any(|p| f.webhook.len() > p.len() && f.webhook.starts_with(p))
                && !f
                    .webhook
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control());
            if !ok {
                return Err(err(format!(
                    "--on-failure-webhook {:?}: give an http:// or https:// URL",
                    f.webhook
                )));
            }
        }
        let expr = cron_macro(&spec.cron)?;
        let fields = expr.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(err(format!(
                "bad cron expression {:?}: expected 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first, or a macro such as @daily",
                spec.cron
            )));
        }
        let cron = Cron::from_str(expr)
            .map_err(|e| err(format!("bad cron expression {:?}: {e}", spec.cron)))?;
        let tz: Tz = spec.tz.parse().map_err(|_| {
            err(format!(
                "unknown time zone {:?} (use an IANA name such as UTC or Europe/Berlin)",
                spec.tz
            ))
        })?;
        let c = Compiled { spec, cron, tz };
        // Every template must expand; the first firing must exist.
        let sample = c
            .next_after(NaiveDateTime::default())
            .ok_or_else(|| err(format!("cron expression {:?} never fires", c.spec.cron)))?;
        c.expand(sample)?;
        Ok(c)
    }

    /// [`Compiled::new`] for a schedule being added, which must also give each run an output
    /// folder of its own: two runs writing one folder would see the second fail, or with
    /// `--overwrite` replace the first's output. (A journaled schedule is replayed with
    /// [`Compiled::new`], so one added before this check keeps running.)
    ///
    /// # Errors
    /// [`ScheduleError`] saying what is wrong.
    pub fn new_schedule(spec: ScheduleSpec) -> Result<Compiled, ScheduleError> {
        let c = Compiled::new(spec)?;
        let first = c
            .next_after(NaiveDateTime::default())
            .ok_or_else(|| err(format!("cron expression {:?} never fires", c.spec.cron)))?;
        if let Some(second) = c.next_after(first) {
            if c.expand(first)?.output == c.expand(second)?.output {
                return Err(err(format!(
                    "output template {:?} gives consecutive runs of {:?} the same folder: put the logical time in it as finely as the schedule fires, such as {{{{date}}}} for a daily schedule, or {{{{ts}}}}",
                    c.spec.template.output, c.spec.cron
                )));
            }
        }
        Ok(c)
    }

    /// The schedule's logical time now.
    pub fn local_now(&self) -> Logical {
        self.local(Utc::now())
    }

    /// The last logical time at or before `t` (looked for up to ten years back).
    pub fn last_at_or_before(&self, t: Logical) -> Option<Logical> {
        [1, 32, 367, 3653].into_iter().find_map(|days| {
            self.between(t - chrono::Duration::days(days), t)
                .last()
                .copied()
        })
    }

    /// The first logical time strictly after `t`.
    pub fn next_after(&self, t: Logical) -> Option<Logical> {
        // Wall-clock times are found in UTC, which has no daylight saving, then placed in
        // the zone by [`Compiled::instant`]; so each wall-clock time appears exactly once.
        self.cron
            .find_next_occurrence(&Utc.from_utc_datetime(&t), false)
            .ok()
            .map(|d| d.naive_utc())
    }

    /// When logical time `t` runs: its first occurrence in the zone; a time in a gap runs at
    /// the same wall-clock time read with the offset in force before the gap (02:30 in a
    /// spring-forward from 02:00 to 03:00 runs at 03:30).
    pub fn instant(&self, t: Logical) -> chrono::DateTime<Utc> {
        match self.tz.from_local_datetime(&t) {
            LocalResult::Single(d) => d.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
            LocalResult::None => {
                // Gaps last hours at most: find the offset a day before.
                let before = self
                    .tz
                    .from_local_datetime(&(t - Span::days(1)))
                    .earliest()
                    .map_or(0, |d| d.offset().fix().local_minus_utc());
                Utc.from_utc_datetime(&(t - Span::seconds(i64::from(before))))
            }
        }
    }

    /// The wall-clock time of `instant` in the schedule's zone.
    pub fn local(&self, instant: chrono::DateTime<Utc>) -> Logical {
        instant.with_timezone(&self.tz).naive_local()
    }

    /// The logical times after `after` (exclusive) whose instant is at or before `now`, in
    /// order, never earlier than the schedule's start.
    pub fn due(&self, after: Option<Logical>, now: chrono::DateTime<Utc>) -> Vec<Logical> {
        let mut out = Vec::new();
        let mut t = match (after, self.spec.start) {
            (Some(a), Some(s)) => a.max(s - Span::seconds(1)),
            (Some(a), None) => a,
            (None, Some(s)) => s - Span::seconds(1),
            (None, None) => return out,
        };
        while let Some(next) = self.next_after(t) {
            if self.instant(next) > now {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    /// The logical times in `[from, to]`.
    pub fn between(&self, from: Logical, to: Logical) -> Vec<Logical> {
        let mut out = Vec::new();
        let mut t = from - Span::seconds(1);
        while let Some(next) = self.next_after(t) {
            if next > to {
                break;
            }
            out.push(next);
            t = next;
        }
        out
    }

    /// The job of logical time `t`: every template expanded, named after the schedule (unless
    /// the template has a name) and labelled `schedule=NAME` and `logical_time=T`.
    ///
    /// # Errors
    /// A [`ScheduleError`] naming a bad template.
    pub fn expand(&self, t: Logical) -> Result<JobSpec, ScheduleError> {
        let mut spec = self.spec.template.clone();
        spec.inputs = spec
            .inputs
            .iter()
            .map(|s| expand(s, t))
            .collect::<Result<_, _>>()?;
        spec.output = expand(&spec.output, t)?;
        spec.params = spec
            .params
            .iter()
            .map(|(k, v)| Ok((k.clone(), expand(v, t)?)))
            .collect::<Result<BTreeMap<_, _>, ScheduleError>>()?
            .into_iter()
            .collect();
        if spec.name.is_empty() {
            spec.name = self.spec.name.clone();
        }
        spec.labels
            .insert("schedule".into(), self.spec.name.clone());
        spec.labels.insert("logical_time".into(), show(t));
        Ok(spec)
    }
}

/// Splits due times into those that run and those skipped, by catch-up policy.
pub fn catch_up(
    due: &[Logical],
    instant: impl Fn(Logical) -> chrono::DateTime<Utc>,
    now: chrono::DateTime<Utc>,
    catchup: Catchup,
    max_catchup: u32,
) -> (Vec<Logical>, Vec<Logical>) {
    let keep = match catchup {
        Catchup::None => due
            .iter()
            .filter(|t| (now - instant(**t)).num_seconds() <= ON_TIME_GRACE_S)
            .count()
            .min(1),
        Catchup::Latest => due.len().min(1),
        Catchup::All if max_catchup == 0 => due.len(),
        Catchup::All => due.len().min(max_catchup as usize),
    };
    let split = due.len() - keep;
    (due[split..].to_vec(), due[..split].to_vec())
}

/// Expands the templates of one string for logical time `t`.
///
/// # Errors
/// A [`ScheduleError`] naming an unknown variable, a bad offset or an unclosed `{{`.
pub fn expand(s: &str, t: Logical) -> Result<String, ScheduleError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after
            .find("}}")
            .ok_or_else(|| err(format!("unclosed '{{{{' in template {s:?}")))?;
        out.push_str(&expand_var(after[..j].trim(), t, s)?);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_var(var: &str, t: Logical, whole: &str) -> Result<String, ScheduleError> {
    let (name, offset) = match var.find(['+', '-']) {
        Some(i) => (&var[..i], Some(&var[i..])),
        None => (var, None),
    };
    let mut t = t;
    if let Some(off) = offset {
        let bad = || {
            err(format!(
                "bad offset {off:?} in template {whole:?} (use e.g. -1d, +2h, -30m, +10s)"
            ))
        };
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let body = &off[1..];
        let unit = body.chars().last().ok_or_else(bad)?;
        let n: i64 = body[..body.len() - 1].parse().map_err(|_| bad())?;
        let span = match unit {
            's' => Span::seconds(n),
            'm' => Span::minutes(n),
            'h' => Span::hours(n),
            'd' => Span::days(n),
            _ => return Err(bad()),
        };
        t = if sign < 0 { t - span } else { t + span };
    }
    Ok(match name.trim() {
        "date" => t.format("%Y-%m-%d").to_string(),
        "hour" => t.format("%H").to_string(),
        "minute" => t.format("%M").to_string(),
        "ts" => t.format("%Y%m%dT%H%M%S").to_string(),
        other => {
            return Err(err(format!(
                "unknown template variable {other:?} in {whole:?} (known: date, hour, minute, ts)"
            )))
        }
    })
}

/// Parses a date or date-time given on the command line: `2026-11-27`,
/// `2026-11-27T06:00` or `2026-11-27T06:00:00`.
///
/// # Errors
/// A [`ScheduleError`] showing the accepted forms.
pub fn parse_logical(s: &str) -> Result<Logical, ScheduleError> {
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists"));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    Err(err(format!(
        "bad date {s:?} (use 2026-11-27, 2026-11-27T06:00 or 2026-11-27T06:00:00)"
    )))
}

/// Formats a logical time for people and the journal.
pub fn show(t: Logical) -> String {
    t.format("%Y-%m-%dT%H:%M:%S").to_string()
}

#[cfg(test)]
mod tests;

/// Where the coordinator reads the time for schedules.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// The time written in a file (RFC 3339, e.g. `2026-11-27T06:00:00Z`): tests move the
    /// clock, forwards or back, without sleeping. An unreadable file reads as the system time.
    File(std::path::PathBuf),
}

impl Clock {
    /// The current time.
    pub fn now(&self) -> chrono::DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::File(path) => std::fs::read_to_string(path)
                .ok()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s.trim()).ok())
                .map_or_else(Utc::now, |d| d.with_timezone(&Utc)),
        }
    }
}
