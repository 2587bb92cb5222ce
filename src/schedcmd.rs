//! `quern schedule ...` and `quern backfill ...`.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use protocol::pb::{ScheduleDef, ScheduleInfo, ScheduleOp, StartBackfillRequest};

use crate::jobcmd::{connect, parse_param, ClusterArgs, JobSpecArgs};
use crate::output::{print_json, OutputArgs};
use crate::util::{human_bytes, parse_size};
use coordinator::json;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Add a schedule: one run of a job template per logical time of a cron expression.
    Add(AddArgs),
    /// Change a schedule in place: only the flags given change. Its history, the times it
    /// ran and whether it is paused stay, so no time runs twice.
    Update(UpdateArgs),
    /// List schedules with their next logical time.
    List {
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Show a schedule's definition and its recent history.
    Show {
        /// The schedule.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Stop a schedule from firing (times passing meanwhile follow its catch-up policy).
    Pause {
        /// The schedule.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Let a paused schedule fire again.
    Resume {
        /// The schedule.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove a schedule (its past and running jobs stay).
    Rm {
        /// The schedule.
        name: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Run a schedule's job now for one logical time (the latest that is due, or --at), even
    /// if that time ran before: a one-time backfill with --reprocess all.
    Run {
        /// The schedule.
        name: String,
        /// The logical time (a date, or a date-time like 2026-11-01T06:00); it must be one
        /// the cron expression gives, and not after now.
        #[arg(long)]
        at: Option<String>,
        /// Return once started instead of following the run.
        #[arg(long)]
        detach: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Every logical time of a schedule: run id, state, duration and output, or why skipped.
    History {
        /// The schedule.
        name: String,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// The schedule's name (letters, digits, '.', '_', '-').
    name: String,
    /// Cron expression: 5 fields (minute hour day-of-month month day-of-week), or 6 with
    /// seconds first, e.g. "0 6 * * *" for 06:00 every day.
    #[arg(long)]
    cron: String,
    /// IANA time zone the expression and templates are read in.
    #[arg(long, default_value = "UTC")]
    tz: String,
    /// The job to run (see `quern jobs`).
    #[arg(long)]
    job: String,
    /// Input template (repeatable): {{date}}, {{hour}}, {{minute}}, {{ts}}, with offsets
    /// such as {{date-1d}}, expand to the logical time.
    #[arg(long = "input", required = true, num_args = 1..)]
    inputs: Vec<String>,
    /// Output template, e.g. out/views/{{date}}.
    #[arg(long)]
    output: String,
    /// Job parameter `key=value` (repeatable; values may hold templates).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Number of reduce tasks.
    #[arg(long, default_value_t = 1)]
    reducers: u32,
    /// Bytes per map split.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    split_size: u64,
    /// After downtime: run none of the missed times, only the latest, or all of them.
    #[arg(long, value_parser = ["none", "latest", "all"], default_value = "latest")]
    catchup: String,
    /// With --catchup all: run at most the N most recent missed times (0: no limit); the
    /// others are recorded as skipped.
    #[arg(long, default_value_t = 0)]
    max_catchup: u32,
    /// While the previous run is active: run both, skip the new one, or kill the old one.
    #[arg(long, value_parser = ["allow", "forbid", "replace"], default_value = "forbid")]
    concurrency: String,
    /// First logical time that may run (default: now), e.g. 2026-11-01.
    #[arg(long)]
    start: Option<String>,
    /// Each run continues from the output of the last successful run before it (as `job
    /// submit --from`): it reads only what was appended to the input since, for jobs that
    /// keep state. Give the whole growing input (no date in --input) and a dated --output.
    #[arg(long)]
    incremental: bool,
    /// Run a failed logical time (or one that failed to start, such as for input not there
    /// yet) again, up to N times.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Wait this long after a failure before its retry (30s, 10m, 2h).
    #[arg(long, value_parser = crate::util::parse_span_secs, default_value = "5m")]
    retry_delay: u64,
    /// POST a JSON notice to this http:// or https:// URL when a logical time has failed for
    /// good (its retries spent): {"schedule", "logical_time", "failures", "error", "job",
    /// "output"}.
    #[arg(long, value_name = "URL")]
    on_failure_webhook: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The schedule.
    name: String,
    /// New cron expression.
    #[arg(long)]
    cron: Option<String>,
    /// New time zone.
    #[arg(long)]
    tz: Option<String>,
    /// New input templates (repeatable; replace all the old ones).
    #[arg(long = "input", num_args = 1..)]
    inputs: Vec<String>,
    /// New output template.
    #[arg(long)]
    output: Option<String>,
    /// Set a job parameter `key=value` (repeatable; others stay).
    #[arg(long = "param", value_parser = parse_param)]
    params: Vec<(String, String)>,
    /// Remove a job parameter (repeatable).
    #[arg(long = "unset-param", value_name = "KEY")]
    unset_params: Vec<String>,
    /// New number of reduce tasks.
    #[arg(long)]
    reducers: Option<u32>,
    /// New bytes per map split.
    #[arg(long, value_parser = parse_size)]
    split_size: Option<u64>,
    /// New catch-up policy.
    #[arg(long, value_parser = ["none", "latest", "all"])]
    catchup: Option<String>,
    /// New limit of missed times run under --catchup all.
    #[arg(long)]
    max_catchup: Option<u32>,
    /// New overlap policy.
    #[arg(long, value_parser = ["allow", "forbid", "replace"])]
    concurrency: Option<String>,
    /// Chain runs from the last successful one (`on`) or run each in full (`off`).
    #[arg(long, value_parser = ["on", "off"])]
    incremental: Option<String>,
    /// New number of retries of a failed logical time.
    #[arg(long)]
    retries: Option<u32>,
    /// New wait before a retry (30s, 10m, 2h).
    #[arg(long, value_parser = crate::util::parse_span_secs)]
    retry_delay: Option<u64>,
    /// New failure webhook (an http:// or https:// URL; "" removes it).
    #[arg(long, value_name = "URL")]
    on_failure_webhook: Option<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

#[derive(Args, Debug)]
pub struct BackfillArgs {
    /// The schedule whose template runs over the range.
    name: Option<String>,
    /// First logical time (a date, or a date-time like 2026-11-01T06:00).
    #[arg(long, required_unless_present_any = ["list", "cancel"])]
    from: Option<String>,
    /// Last logical time; a date alone includes its whole day.
    #[arg(long, required_unless_present_any = ["list", "cancel"])]
    to: Option<String>,
    /// Which times run: none (only those that never ran), failed (also failed ones), all.
    #[arg(long, value_parser = ["none", "failed", "all"], default_value = "none")]
    reprocess: String,
    /// At most this many of the backfill's jobs at once.
    #[arg(long, default_value_t = 2)]
    max_active: u32,
    /// List the logical times, their input and output paths, whether each input exists and
    /// its bytes, and what would run; start nothing.
    #[arg(long)]
    dry_run: bool,
    /// Return once the backfill is started instead of following its progress.
    #[arg(long)]
    detach: bool,
    /// List backfills and their progress.
    #[arg(long, conflicts_with_all = ["name", "cancel"])]
    list: bool,
    /// Cancel a backfill (its running jobs are killed, no more of its times start).
    #[arg(long, value_name = "ID", conflicts_with = "name")]
    cancel: Option<u64>,
    /// For --list and --dry-run.
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    cluster: ClusterArgs,
}

fn print_info(s: &ScheduleInfo) {
    let d = s.def.clone().unwrap_or_default();
    let t = d.template.clone().unwrap_or_default();
    println!(
        "schedule:    {}{}",
        d.name,
        if s.paused { " (paused)" } else { "" }
    );
    println!("cron:        {}  ({})", d.cron, d.tz);
    println!(
        "job:         {} --input {} --output {}",
        t.job,
        t.inputs.join(" "),
        t.output
    );
    for (k, v) in &t.params {
        println!("  param      {k}={v}");
    }
    println!(
        "policies:    catchup {}{}, concurrency {}",
        d.catchup,
        if d.max_catchup > 0 {
            format!(" (max {})", d.max_catchup)
        } else {
            String::new()
        },
        d.concurrency
    );
    println!("start:       {}", d.start);
    if d.incremental {
        println!("incremental: each run continues from the last successful one");
    }
    if d.retries > 0 {
        println!(
            "retries:     {} ({} s after a failure)",
            d.retries, d.retry_delay_s
        );
    }
    if !d.on_failure_webhook.is_empty() {
        println!("on failure:  POST {}", d.on_failure_webhook);
    }
    println!(
        "last:        {}",
        if s.last.is_empty() { "-" } else { &s.last }
    );
    println!("next:        {} (at {})", s.next, s.next_at_utc);
    println!("runs:        {}", s.runs);
}

pub async fn schedule(cmd: ScheduleCommand, registry: &jobs::Registry) -> Result<u8> {
    match cmd {
        ScheduleCommand::Add(a) => {
            let mut template = JobSpecArgs {
                job: a.job.clone(),
                inputs: a.inputs.clone(),
                output: a.output.clone(),
                reducers: a.reducers,
                params: a.params.clone(),
                split_size: a.split_size,
                task_memory: protocol::spec::DEFAULT_TASK_MEMORY,
                max_attempts: protocol::spec::DEFAULT_MAX_ATTEMPTS,
                speculation: "on".into(),
                max_bad_records: 0,
                overwrite: false,
                from: None,
                full_if_changed: false,
            }
            .to_spec()?;
            let mut c = connect(&a.cluster).await?;
            crate::jobcmd::ship(&mut c, registry, &mut template).await?;
            let def = ScheduleDef {
                name: a.name,
                cron: a.cron,
                tz: a.tz,
                template: Some(template.to_pb()),
                catchup: a.catchup,
                max_catchup: a.max_catchup,
                concurrency: a.concurrency,
                start: a.start.unwrap_or_default(),
                incremental: a.incremental,
                retries: a.retries,
                retry_delay_s: a.retry_delay,
                on_failure_webhook: a.on_failure_webhook.unwrap_or_default(),
            };
            if let Some(s) = c.add_schedule(def).await? {
                print_info(&s);
            }
            Ok(0)
        }
        ScheduleCommand::Update(a) => {
            let mut c = connect(&a.cluster).await?;
            let Some(info) = c.schedule_history(&a.name).await?.schedule else {
                bail!("no schedule named {:?}", a.name);
            };
            let mut def = info.def.unwrap_or_default();
            let mut t = def.template.take().unwrap_or_default();
            let mut changed = false;
            update(&mut changed, &mut def.cron, a.cron);
            update(&mut changed, &mut def.tz, a.tz);
            update(&mut changed, &mut def.catchup, a.catchup);
            update(&mut changed, &mut def.concurrency, a.concurrency);
            update(
                &mut changed,
                &mut def.on_failure_webhook,
                a.on_failure_webhook,
            );
            if let Some(o) = a.output {
                t.output = crate::jobcmd::absolute(&o)?;
                changed = true;
            }
            if !a.inputs.is_empty() {
                t.inputs = a
                    .inputs
                    .iter()
                    .map(|i| crate::jobcmd::absolute(i))
                    .collect::<Result<_>>()?;
                changed = true;
            }
            for (k, v) in a.params {
                t.params.insert(k, v);
                changed = true;
            }
            for k in a.unset_params {
                if t.params.remove(&k).is_none() {
                    bail!("{} has no parameter {k:?}", a.name);
                }
                changed = true;
            }
            update(&mut changed, &mut t.reducers, a.reducers);
            update(&mut changed, &mut t.split_size, a.split_size);
            update(&mut changed, &mut def.max_catchup, a.max_catchup);
            update(&mut changed, &mut def.retries, a.retries);
            update(&mut changed, &mut def.retry_delay_s, a.retry_delay);
            let incremental = a.incremental.map(|i| i == "on");
            update(&mut changed, &mut def.incremental, incremental);
            if !changed {
                bail!("nothing to change: give the flags to change (see `quern schedule update --help`)");
            }
            def.template = Some(t);
            if let Some(s) = c.update_schedule(def).await? {
                print_info(&s);
            }
            Ok(0)
        }
        ScheduleCommand::List { output, cluster } => {
            let mut c = connect(&cluster).await?;
            let schedules = c.schedules().await?;
            if output.json() {
                print_json(&Value::Array(
                    schedules.iter().map(json::schedule).collect(),
                ));
                return Ok(0);
            }
            println!(
                "{:<20} {:<16} {:<14} {:<8} {:<20} {:>5}",
                "NAME", "CRON", "TZ", "STATE", "NEXT", "RUNS"
            );
            for s in schedules {
                let d = s.def.unwrap_or_default();
                println!(
                    "{:<20} {:<16} {:<14} {:<8} {:<20} {:>5}",
                    d.name,
                    d.cron,
                    d.tz,
                    if s.paused { "paused" } else { "active" },
                    s.next,
                    s.runs
                );
            }
            Ok(0)
        }
        ScheduleCommand::Show {
            name,
            output,
            cluster,
        } => {
            let mut c = connect(&cluster).await?;
            let r = c.schedule_history(&name).await?;
            if output.json() {
                let recent = &r.entries[r.entries.len().saturating_sub(10)..];
                print_json(&json!({
                    "schedule": r.schedule.as_ref().map(json::schedule),
                    "recent": recent.iter().map(json::history_entry).collect::<Vec<_>>(),
                }));
                return Ok(0);
            }
            if let Some(s) = &r.schedule {
                print_info(s);
            }
            println!("recent:");
            print_history(&r.entries[r.entries.len().saturating_sub(10)..]);
            Ok(0)
        }
        ScheduleCommand::History {
            name,
            output,
            cluster,
        } => {
            let mut c = connect(&cluster).await?;
            let r = c.schedule_history(&name).await?;
            if output.json() {
                print_json(&Value::Array(
                    r.entries.iter().map(json::history_entry).collect(),
                ));
                return Ok(0);
            }
            print_history(&r.entries);
            Ok(0)
        }
        ScheduleCommand::Run {
            name,
            at,
            detach,
            cluster,
        } => {
            let mut c = connect(&cluster).await?;
            let Some(info) = c.schedule_history(&name).await?.schedule else {
                bail!("no schedule named {name:?}");
            };
            let spec = coordinator::schedule::ScheduleSpec::from_pb(info.def.unwrap_or_default())?;
            let compiled = coordinator::schedule::Compiled::new(spec)?;
            let t = match at {
                Some(at) => {
                    let t = coordinator::schedule::parse_logical(&at)?;
                    if compiled.between(t, t).is_empty() {
                        bail!(
                            "{at} is not a logical time of {:?}; the next one after it is {}",
                            compiled.spec.cron,
                            compiled.next_after(t).map_or("never".into(), |n| n
                                .format("%Y-%m-%dT%H:%M:%S")
                                .to_string())
                        );
                    }
                    t
                }
                None => compiled
                    .last_at_or_before(compiled.local_now())
                    .ok_or_else(|| anyhow::anyhow!("{name} has no logical time due yet"))?,
            };
            let t = t.format("%Y-%m-%dT%H:%M:%S").to_string();
            eprintln!("running {name} for {t}");
            backfill(BackfillArgs {
                name: Some(name),
                from: Some(t.clone()),
                to: Some(t),
                reprocess: "all".into(),
                max_active: 1,
                dry_run: false,
                detach,
                list: false,
                cancel: None,
                output: OutputArgs {
                    format: crate::output::Format::Text,
                },
                cluster,
            })
            .await
        }
        ScheduleCommand::Pause { name, cluster } => set(cluster, name, ScheduleOp::Pause).await,
        ScheduleCommand::Resume { name, cluster } => set(cluster, name, ScheduleOp::Resume).await,
        ScheduleCommand::Rm { name, cluster } => set(cluster, name, ScheduleOp::Remove).await,
    }
}

async fn set(cluster: ClusterArgs, name: String, op: ScheduleOp) -> Result<u8> {
    let mut c = connect(&cluster).await?;
    c.set_schedule(&name, op).await?;
    let done = match op {
        ScheduleOp::Pause => "paused",
        ScheduleOp::Resume => "resumed",
        _ => "removed",
    };
    println!("schedule {name} {done}");
    Ok(0)
}

fn print_history(entries: &[protocol::pb::HistoryEntry]) {
    println!(
        "{:<20} {:<8} {:<16} {:>9} {:<9} OUTPUT / NOTE",
        "LOGICAL TIME", "RUN", "STATE", "DURATION", "BACKFILL"
    );
    for e in entries {
        let run = if e.job_id > 0 {
            format!("job-{}", e.job_id)
        } else {
            "-".into()
        };
        let logical = if e.count > 1 {
            format!("{} .. {} ({})", e.logical, e.through, e.count)
        } else {
            e.logical.clone()
        };
        let what = match (e.output.is_empty(), e.note.is_empty()) {
            (false, true) => e.output.clone(),
            (false, false) => format!("{} ({})", e.output, e.note),
            _ => e.note.clone(),
        };
        println!(
            "{:<20} {:<8} {:<16} {:>8.1}s {:<9} {}",
            logical,
            run,
            e.state,
            e.duration_ms as f64 / 1000.0,
            if e.backfill_id > 0 {
                e.backfill_id.to_string()
            } else {
                "-".into()
            },
            what
        );
    }
}

fn print_backfills(backfills: &[protocol::pb::BackfillStatus]) {
    println!(
        "{:>4} {:<20} {:<10} {:>6} {:>8} {:>7} {:>7} {:<9}",
        "ID", "SCHEDULE", "REPROCESS", "TOTAL", "FINISHED", "FAILED", "RUNNING", "STATE"
    );
    for b in backfills {
        let state = json::backfill_state(b);
        println!(
            "{:>4} {:<20} {:<10} {:>6} {:>8} {:>7} {:>7} {:<9}",
            b.id, b.schedule, b.reprocess, b.total, b.finished, b.failed, b.running, state
        );
    }
}

/// The dry run's table: each logical time, whether it would run and why.
fn print_plan(times: &[protocol::pb::BackfillTime]) {
    println!(
        "{:<20} {:<4} {:<7} {:>10}  {:<44} INPUT -> OUTPUT",
        "LOGICAL TIME", "RUN", "INPUT", "BYTES", "WHY"
    );
    for t in times {
        println!(
            "{:<20} {:<4} {:<7} {:>10}  {:<44} {} -> {}",
            t.logical,
            if t.run { "yes" } else { "no" },
            if t.input_exists { "exists" } else { "MISSING" },
            human_bytes(t.input_bytes),
            t.reason,
            t.inputs.join(","),
            t.output
        );
    }
    let run: Vec<_> = times.iter().filter(|t| t.run).collect();
    println!(
        "dry run: {} of {} logical times would run, reading {}",
        run.len(),
        times.len(),
        human_bytes(run.iter().map(|t| t.input_bytes).sum())
    );
}

pub async fn backfill(a: BackfillArgs) -> Result<u8> {
    let mut c = connect(&a.cluster).await?;
    if a.list {
        let backfills = c.backfills().await?;
        if a.output.json() {
            print_json(&Value::Array(
                backfills.iter().map(json::backfill).collect(),
            ));
        } else {
            print_backfills(&backfills);
        }
        return Ok(0);
    }
    if let Some(id) = a.cancel {
        c.cancel_backfill(id).await?;
        println!("backfill {id} cancelled");
        return Ok(0);
    }
    let Some(name) = a.name else {
        bail!("name the schedule to backfill (or use --list / --cancel ID)");
    };
    let r = c
        .start_backfill(StartBackfillRequest {
            schedule: name.clone(),
            from: a.from.unwrap_or_default(),
            to: a.to.unwrap_or_default(),
            reprocess: a.reprocess,
            max_active: a.max_active,
            dry_run: a.dry_run,
        })
        .await?;
    let runs = r.times.iter().filter(|t| t.run).count();
    if a.dry_run {
        if a.output.json() {
            print_json(&Value::Array(
                r.times
                    .iter()
                    .map(|t| {
                        json!({"logical": t.logical, "run": t.run, "reason": t.reason,
                               "inputs": t.inputs, "input_exists": t.input_exists,
                               "input_bytes": t.input_bytes, "output": t.output})
                    })
                    .collect(),
            ));
        } else {
            print_plan(&r.times);
        }
        return Ok(0);
    }
    if r.backfill_id == 0 {
        println!(
            "nothing to backfill: all {} logical times are done (see --reprocess)",
            r.times.len()
        );
        return Ok(0);
    }
    let id = r.backfill_id;
    println!(
        "backfill {id}: {runs} of {} logical times to run",
        r.times.len()
    );
    if a.detach {
        return Ok(0);
    }
    let tty = std::io::stderr().is_terminal();
    loop {
        let Some(b) = c.backfills().await?.into_iter().find(|b| b.id == id) else {
            bail!("backfill {id} vanished");
        };
        if tty {
            eprint!(
                "\r\x1b[2Kbackfill {id}: {}/{} done, {} running, {} failed",
                b.finished, b.total, b.running, b.failed
            );
        }
        if b.finished == b.total || (b.cancelled && b.running == 0) {
            if tty {
                eprintln!();
            }
            println!(
                "backfill {id} {}: {} of {} done, {} failed",
                if b.cancelled { "cancelled" } else { "finished" },
                b.finished,
                b.total,
                b.failed
            );
            return Ok(if b.failed == 0 && !b.cancelled { 0 } else { 1 });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sets `field` to `value` when one was given, noting that something changed.
fn update<T>(changed: &mut bool, field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
        *changed = true;
    }
}
