//! `crash`: the classic MapReduce crash test. It counts lines like `fail` does (same output),
//! but each map and reduce attempt, at random, exits its process at once or stalls for
//! `stall_ms` (default 3000): `rate` of every 200 attempts exit (default 50, a quarter), as
//! many stall, and the others run normally. With `kill=worker` an attempt that exits takes
//! its worker process down with it (SIGKILL to the executor's parent), as the classic test's
//! tasks do. The
//! choice is random per attempt, so retries and backups eventually get through; the output
//! must still equal the sequential run of `fail` on the same input.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::registry::{check_params, int_param, DynJob, JobError, JobInfo, Params};
use crate::sdk::{push_u64, Job, MapContext, ReduceContext, TaskSetup, Values};

/// The `crash` job.
pub struct Crash {
    rate: u64,
    stall_ms: u64,
    kill_worker: bool,
    decided: AtomicBool,
}

/// Registration of [`Crash`].
pub const CRASH: JobInfo = JobInfo {
    name: "crash",
    about: "fault injection: counts lines; attempts randomly exit or stall (crash test)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("crash", p, &["rate", "stall_ms", "kill"])?;
        let kill_worker = match p.get("kill").map(String::as_str) {
            None | Some("attempt") => false,
            Some("worker") => true,
            Some(other) => {
                return Err(JobError::BadParam {
                    job: "crash".into(),
                    param: "kill".into(),
                    value: other.into(),
                    reason: "expected attempt or worker".into(),
                })
            }
        };
        Ok(Box::new(Crash {
            rate: int_param("crash", p, "rate", 50, 0, 100)?,
            stall_ms: int_param("crash", p, "stall_ms", 3000, 0, 600_000)?,
            kill_worker,
            decided: AtomicBool::new(false),
        }))
    },
};

impl Crash {
    /// Once per attempt: maybe exit, maybe stall.
    fn misbehave(&self) {
        if self.decided.swap(true, Ordering::Relaxed) {
            return;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0);
        let roll = (nanos ^ u64::from(std::process::id()).wrapping_mul(0x9E37_79B9)) % 200;
        if roll < self.rate {
            if self.kill_worker {
                eprintln!("crash job: killing this attempt's worker on purpose");
                // SAFETY: kill(2) on our parent (the worker daemon); no memory is involved.
                unsafe { libc::kill(libc::getppid(), libc::SIGKILL) };
            }
            eprintln!("crash job: exiting this attempt on purpose");
            std::process::exit(1);
        } else if roll < 2 * self.rate {
            eprintln!("crash job: stalling this attempt for {} ms", self.stall_ms);
            std::thread::sleep(std::time::Duration::from_millis(self.stall_ms));
        }
    }
}

impl Job for Crash {
    type Key = Vec<u8>;
    type Value = u64;
    const COMBINES: bool = true;

    fn setup(&mut self, _task: &TaskSetup<'_>) -> Result<(), String> {
        self.decided.store(false, Ordering::Relaxed);
        Ok(())
    }

    fn map(&self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        self.misbehave();
        ctx.emit_encoded(record, 1);
    }

    fn combine(&self, acc: &mut u64, next: u64) {
        *acc += next;
    }

    fn reduce(&self, line: Vec<u8>, counts: Values<'_, u64>, out: &mut ReduceContext<'_>) {
        self.misbehave();
        let buf = out.buffer();
        buf.extend_from_slice(&line);
        buf.push(b'\t');
        push_u64(buf, counts.sum());
        out.end_line();
    }
}
