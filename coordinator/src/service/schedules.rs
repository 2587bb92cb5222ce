//! The schedule and backfill RPCs, and the loop that starts due runs.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jobs::output;
use protocol::pb::*;
use tokio_util::sync::CancellationToken;

use super::{Coordinator, ServiceError};
use crate::schedule::{
    parse_logical, show, Compiled, Logical, Reprocess, ScheduleError, ScheduleSpec,
};
use crate::state::{Firing, JobState, Schedule};

fn bad(e: ScheduleError) -> ServiceError {
    ServiceError::Schedule(e)
}

fn info(s: &Schedule, runs: u32, now: DateTime<Utc>) -> ScheduleInfo {
    let c = &s.compiled;
    let spec = &c.spec;
    // The next time: after the cursor, or from now for a schedule that has not fired yet.
    let from = s
        .cursor
        .unwrap_or_else(|| c.local(now).max(spec.start.unwrap_or_default()));
    let next = c.next_after(from);
    ScheduleInfo {
        def: Some(ScheduleDef {
            name: spec.name.clone(),
            cron: spec.cron.clone(),
            tz: spec.tz.clone(),
            template: Some(spec.template.to_pb()),
            catchup: spec.catchup.name().into(),
            max_catchup: spec.max_catchup,
            concurrency: spec.concurrency.name().into(),
            start: spec.start.map(show).unwrap_or_default(),
            incremental: spec.incremental,
            retries: spec.on_failure.retries,
            retry_delay_s: spec.on_failure.retry_delay_s,
            on_failure_webhook: spec.on_failure.webhook.clone(),
        }),
        paused: s.paused,
        last: s.cursor.map(show).unwrap_or_default(),
        next: next.map(show).unwrap_or_default(),
        next_at_utc: next
            .map(|t| {
                c.instant(t)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_default(),
        runs,
    }
}

impl Coordinator {
    fn schedule_info(&self, name: &str) -> Option<ScheduleInfo> {
        let now = self.clock.now();
        self.read(|state| {
            let s = state.schedule(name)?;
            let runs = state
                .history(name, Instant::now())
                .iter()
                .filter(|e| e.job.is_some())
                .count() as u32;
            Some(info(s, runs, now))
        })
    }

    pub(super) async fn add_schedule_rpc(
        &self,
        r: AddScheduleRequest,
    ) -> Result<ScheduleInfo, ServiceError> {
        let def = r
            .def
            .ok_or_else(|| ServiceError::invalid_argument("missing schedule"))?;
        let spec = ScheduleSpec::from_pb(def).map_err(bad)?;
        let compiled = Compiled::new_schedule(spec.clone()).map_err(bad)?;
        // The job must exist and take these parameters (checked on the first expansion).
        let sample = compiled
            .expand(compiled.next_after(Logical::default()).unwrap_or_default())
            .map_err(bad)?;
        if sample.binary.is_empty() {
            self.registry
                .create(&sample.job, &sample.params)
                .map_err(|e| ServiceError::invalid_argument(e.to_string()))?;
        } else if !self.has_binary(&sample.binary)? {
            return Err(ServiceError::failed_precondition(format!(
                "job binary {} was not uploaded to this cluster",
                sample.binary
            )));
        }
        let name = spec.name.clone();
        let now = self.clock.now();
        if r.replace {
            let found = self
                .mutate(|s| s.update_schedule(spec))
                .await?
                .map_err(bad)?;
            if !found {
                return Err(ServiceError::not_found(format!(
                    "no schedule named {name:?}"
                )));
            }
        } else {
            self.mutate(|s| s.add_schedule(spec, now))
                .await?
                .map_err(|e| ServiceError::already_exists(e.0))?;
        }
        self.schedule_info(&name)
            .ok_or_else(|| ServiceError::internal("schedule vanished"))
    }

    /// Every schedule, as the API shows it.
    pub fn schedule_infos(&self) -> Vec<ScheduleInfo> {
        self.list_schedules_rpc()
    }

    /// A schedule's history, as the API shows it.
    ///
    /// # Errors
    /// `NotFound` for an unknown schedule.
    pub fn schedule_history(&self, name: &str) -> Result<ScheduleHistoryResponse, ServiceError> {
        self.history_rpc(name)
    }

    pub(super) fn list_schedules_rpc(&self) -> Vec<ScheduleInfo> {
        let names: Vec<String> = self.read(|state| {
            state
                .schedules()
                .map(|s| s.compiled.spec.name.clone())
                .collect()
        });
        names.iter().filter_map(|n| self.schedule_info(n)).collect()
    }

    pub(crate) async fn set_schedule_rpc(&self, r: SetScheduleRequest) -> Result<(), ServiceError> {
        let op = ScheduleOp::try_from(r.op).unwrap_or(ScheduleOp::Unspecified);
        let found = match op {
            ScheduleOp::Pause => self.mutate(|s| s.pause_schedule(&r.name, true)).await?,
            ScheduleOp::Resume => self.mutate(|s| s.pause_schedule(&r.name, false)).await?,
            ScheduleOp::Remove => self.mutate(|s| s.remove_schedule(&r.name)).await?,
            ScheduleOp::Unspecified => {
                return Err(ServiceError::invalid_argument("no operation given"))
            }
        };
        if found {
            Ok(())
        } else {
            Err(ServiceError::not_found(format!(
                "no schedule named {:?}",
                r.name
            )))
        }
    }

    pub(super) fn history_rpc(&self, name: &str) -> Result<ScheduleHistoryResponse, ServiceError> {
        let schedule = self
            .schedule_info(name)
            .ok_or_else(|| ServiceError::not_found(format!("no schedule named {name:?}")))?;
        let entries = self
            .read(|s| s.history(name, Instant::now()))
            .into_iter()
            .map(|e| HistoryEntry {
                logical: show(e.logical),
                through: show(e.through),
                count: e.count,
                job_id: e.job.map_or(0, |j| j.0),
                state: e.state,
                duration_ms: e.duration_ms,
                output: e.output,
                note: e.note,
                backfill_id: e.backfill.unwrap_or(0),
            })
            .collect();
        Ok(ScheduleHistoryResponse {
            schedule: Some(schedule),
            entries,
        })
    }

    /// Runs schedule `name` now for logical time `at` (default: the latest one due), as a
    /// one-time backfill of that time with `--reprocess all` (what `quern schedule run`
    /// does); returns the backfill's id and the logical time.
    pub(crate) async fn run_schedule_now(
        &self,
        name: &str,
        at: Option<&str>,
    ) -> Result<(u64, String), ServiceError> {
        let compiled = self
            .read(|state| state.schedule(name).map(|s| s.compiled.clone()))
            .ok_or_else(|| ServiceError::not_found(format!("no schedule named {name:?}")))?;
        let t = match at {
            Some(at) => {
                let t = parse_logical(at).map_err(bad)?;
                if compiled.between(t, t).is_empty() {
                    return Err(ServiceError::invalid_argument(format!(
                        "{at} is not a logical time of {:?}; the next one after it is {}",
                        compiled.spec.cron,
                        compiled.next_after(t).map_or("never".into(), show)
                    )));
                }
                t
            }
            None => compiled
                .last_at_or_before(compiled.local(self.clock.now()))
                .ok_or_else(|| {
                    ServiceError::failed_precondition(format!("{name} has no logical time due yet"))
                })?,
        };
        let t = show(t);
        let r = self
            .start_backfill_rpc(StartBackfillRequest {
                schedule: name.to_string(),
                from: t.clone(),
                to: t.clone(),
                reprocess: "all".into(),
                max_active: 1,
                dry_run: false,
            })
            .await?;
        Ok((r.backfill_id, t))
    }

    pub(crate) async fn start_backfill_rpc(
        &self,
        r: StartBackfillRequest,
    ) -> Result<StartBackfillResponse, ServiceError> {
        let compiled = self
            .read(|state| state.schedule(&r.schedule).map(|s| s.compiled.clone()))
            .ok_or_else(|| {
                ServiceError::not_found(format!("no schedule named {:?}", r.schedule))
            })?;
        let from = parse_logical(&r.from).map_err(bad)?;
        let mut to = parse_logical(&r.to).map_err(bad)?;
        if !r.to.contains(['T', ' ']) {
            // A date alone ends with its day.
            to += chrono::Duration::days(1) - chrono::Duration::seconds(1);
        }
        if to < from {
            return Err(ServiceError::invalid_argument(format!(
                "--to {} is before --from {}",
                r.to, r.from
            )));
        }
        let reprocess = if r.reprocess.is_empty() {
            Reprocess::None
        } else {
            r.reprocess.parse::<Reprocess>().map_err(bad)?
        };
        let times = compiled.between(from, to);
        const MAX_TIMES: usize = 100_000;
        if times.len() > MAX_TIMES {
            return Err(ServiceError::invalid_argument(format!(
                "the range holds {} logical times; split it (at most {MAX_TIMES} per backfill)",
                times.len()
            )));
        }
        // Times yet to come have no input yet; the schedule runs them when they come.
        let now = compiled.local(self.clock.now());
        if let Some(first) = times.iter().find(|t| **t > now) {
            let now = now.format("%Y-%m-%dT%H:%M:%S");
            return Err(ServiceError::invalid_argument(format!(
                "the range reaches into the future: {} is after now ({now} in {}); the schedule runs such times when they come, so end the backfill at --to {now} or earlier",
                first.format("%Y-%m-%dT%H:%M:%S"),
                compiled.spec.tz,
            )));
        }
        let outcomes = self.read(|s| s.outcomes(&r.schedule));
        let this = self.clone();
        let plan = tokio::task::spawn_blocking(move || {
            times
                .into_iter()
                .map(|t| this.backfill_time(&compiled, t, outcomes.get(&t).copied(), reprocess))
                .collect::<Result<Vec<_>, ServiceError>>()
        })
        .await
        .map_err(|e| ServiceError::internal(e.to_string()))??;
        let run: Vec<Logical> = plan
            .iter()
            .filter(|(_, b)| b.run)
            .map(|(t, _)| *t)
            .collect();
        let backfill_id = if r.dry_run || run.is_empty() {
            0
        } else {
            self.mutate(|s| s.start_backfill(&r.schedule, run, r.max_active.max(1), reprocess))
                .await?
        };
        Ok(StartBackfillResponse {
            backfill_id,
            times: plan.into_iter().map(|(_, b)| b).collect(),
        })
    }

    /// Decides whether a backfill runs logical time `t`, and describes it.
    fn backfill_time(
        &self,
        c: &Compiled,
        t: Logical,
        before: Option<JobState>,
        reprocess: Reprocess,
    ) -> Result<(Logical, BackfillTime), ServiceError> {
        let spec = c.expand(t).map_err(bad)?;
        let (input_exists, input_bytes) =
            match jobs::plan::plan_splits(&self.storage, &spec.inputs, spec.split_size) {
                Ok(splits) => (
                    true,
                    splits.iter().map(|s| s.split.end - s.split.start).sum(),
                ),
                Err(_) => (false, 0),
            };
        let done = self
            .storage
            .exists(&dfs_client::Storage::join(&spec.output, output::SUCCESS))
            .unwrap_or(false);
        let (run, reason) = match (reprocess, before, done) {
            (_, Some(JobState::Running | JobState::Publishing), _) => (false, "running now"),
            (Reprocess::All, _, true) => (true, "reprocess all: output replaced"),
            (Reprocess::All, _, false) => (true, "reprocess all"),
            (_, _, true) => (false, "output has _SUCCESS"),
            (_, None, false) => (true, "never ran"),
            (Reprocess::Failed, Some(JobState::Failed | JobState::Killed), false) => {
                (true, "failed before")
            }
            (Reprocess::None, Some(JobState::Failed | JobState::Killed), false) => {
                (false, "failed before (use --reprocess failed)")
            }
            (_, Some(JobState::Succeeded), false) => {
                (true, "succeeded before, but its output is gone")
            }
        };
        let reason = if run && !input_exists {
            format!("{reason}; input missing, it will fail")
        } else {
            reason.to_string()
        };
        Ok((
            t,
            BackfillTime {
                logical: show(t),
                inputs: spec.inputs.clone(),
                output: spec.output.clone(),
                input_exists,
                input_bytes,
                run,
                reason,
            },
        ))
    }

    pub(crate) fn list_backfills_rpc(&self) -> Vec<BackfillStatus> {
        self.read(|state| {
            state
                .backfills()
                .map(|b| {
                    let (started, finished, failed, running, total) =
                        state.backfill_progress(b.id).unwrap_or_default();
                    BackfillStatus {
                        id: b.id,
                        schedule: b.schedule.clone(),
                        total: total as u32,
                        started: started as u32,
                        finished: finished as u32,
                        failed: failed as u32,
                        running: running as u32,
                        cancelled: b.cancelled,
                        reprocess: b.reprocess.name().into(),
                    }
                })
                .collect()
        })
    }

    pub(super) async fn cancel_backfill_rpc(&self, id: u64) -> Result<(), ServiceError> {
        let actions = self
            .mutate(|s| s.cancel_backfill(id, Instant::now()))
            .await??;
        self.run_actions(actions).await;
        Ok(())
    }

    /// Starts due scheduled runs and backfill runs every `tick`, until `shutdown`.
    pub async fn schedule_loop(self, tick: Duration, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = self.clock.now();
            // Walking due times can take long after a long outage: not under the lock.
            let work = self.read(|s| s.due_work());
            let due = tokio::task::spawn_blocking(move || crate::state::compute_due(work, now))
                .await
                .unwrap_or_default();
            let Ok((mut firings, actions)) =
                self.mutate(|s| s.apply_due(due, now, Instant::now())).await
            else {
                return;
            };
            self.run_actions(actions).await;
            let Ok(more) = self.mutate(|s| s.backfill_tick()).await else {
                return;
            };
            firings.extend(more);
            let wall_ms = crate::state::unix_ms_now();
            firings.extend(self.read(|s| s.retry_tick(wall_ms)));
            let Ok(notices) = self.mutate(|s| s.notify_tick()).await else {
                return;
            };
            for n in notices {
                let ca = self.peer_tls().map(|t| t.ca_pem.clone());
                tokio::task::spawn_blocking(move || deliver(&n, ca.as_deref()));
            }
            for f in firings {
                self.fire(f).await;
            }
        }
    }

    /// Plans and submits one firing, or records why it could not start.
    ///
    /// (A retry fired at one tick is submitted, or recorded as failed to start, before the
    /// next tick looks: firings run in this loop, one after another.)
    async fn fire(&self, f: Firing) {
        let spec = match f.spec {
            Ok(s) => s,
            Err(e) => {
                // A journal that cannot be written stops the coordinator; nothing more to do.
                let _ = self.mutate(|s| s.firing_failed(&f.origin, &e.0)).await;
                return;
            }
        };
        let this = self.clone();
        let replace = f.replace_output;
        let planned = tokio::task::spawn_blocking(move || {
            let mut spec = spec;
            if replace {
                this.clear_output(&spec.output, spec.reducers)?;
            }
            this.plan(&mut spec).map(|splits| (spec, splits))
        })
        .await
        .unwrap_or_else(|e| Err(ServiceError::internal(e.to_string())));
        // A journal that cannot be written stops the coordinator; nothing more to do then.
        let _ = self.mutate(|state| {
            if !state.firing_wanted(&f.origin) {
                return;
            }
            match planned {
                Ok((spec, splits)) => {
                    if let Some(other) = state.job_writing(&spec.output) {
                        let e = format!("{other} is already writing {}", spec.output);
                        return state.firing_failed(&f.origin, &e);
                    }
                    let job =
                        state.submit_with(spec, splits, Some(f.origin.clone()), Instant::now());
                    tracing::info!(schedule = %f.origin.schedule, logical = %show(f.origin.logical), %job, backfill = ?f.origin.backfill, "scheduled run started");
                }
                Err(e) => state.firing_failed(&f.origin, &e.to_string()),
            }
        }).await;
        self.work.notify_waiters();
    }

    /// Removes a committed output so that a backfill under `--reprocess all` can replace it.
    fn clear_output(&self, out: &str, reducers: u32) -> Result<(), ServiceError> {
        let join = |name: &str| dfs_client::Storage::join(out, name);
        let err = |e: String| ServiceError::internal(format!("cannot clear {out}: {e}"));
        // `_SUCCESS` first: from then on the directory is not an output.
        self.storage
            .delete(&join(output::SUCCESS))
            .map_err(|e| err(e.to_string()))?;
        output::discard(&self.storage, out, reducers).map_err(|e| err(e.to_string()))?;
        self.storage
            .delete(&join("_skipped"))
            .map_err(|e| err(e.to_string()))
    }
}

/// POSTs a failure notice to its webhook (10 s to answer); a failure is logged, not retried
/// (the notice was journaled as sent: at most once).
fn deliver(n: &crate::state::FailureNotice, cluster_ca: Option<&[u8]>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .tls_config(webhook_tls(cluster_ca))
        .build()
        .into();
    match agent
        .post(&n.url)
        .header("content-type", "application/json")
        .send(n.body.to_string())
    {
        Ok(_) => {
            tracing::info!(url = %n.url, schedule = %n.body["schedule"], logical = %n.body["logical_time"], "failure notice sent")
        }
        Err(e) => tracing::warn!(url = %n.url, error = %e, "failure notice could not be sent"),
    }
}

/// How an https webhook is checked: against the system's CA certificates (`SSL_CERT_FILE`
/// and `SSL_CERT_DIR` are honoured, as by OpenSSL) and the cluster's own CA (`--tls-ca`),
/// so that a relay with a certificate from either is trusted.
fn webhook_tls(cluster_ca: Option<&[u8]>) -> ureq::tls::TlsConfig {
    use ureq::tls::{Certificate, PemItem, RootCerts};
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "system CA certificates could not all be read");
    }
    let mut roots: Vec<Certificate<'static>> = native
        .certs
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    for item in cluster_ca.into_iter().flat_map(ureq::tls::parse_pem) {
        if let Ok(PemItem::Certificate(c)) = item {
            roots.push(c);
        }
    }
    ureq::tls::TlsConfig::builder()
        .root_certs(RootCerts::new_with_certs(&roots))
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .build()
}
