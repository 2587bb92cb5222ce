//! `crash`: the classic MapReduce crash test. It counts lines like `fail` does (same output),
//! but each map and reduce attempt, at random, exits its process at once or stalls for up to
//! `stall_ms` (default 10000, as in the classic test): `rate` of every 200 attempts exit
//! (default 50, a quarter), as many stall, and the others run normally. With `kill=worker`
//! an attempt that exits takes its worker process down with it (SIGKILL to the executor's
//! parent), as the classic test's tasks do. The choice is random per attempt, so retries
//! and backups eventually get through; the output must still equal the sequential run of
//! `fail` on the same input. With `seed=N` the choice is a function of the seed and the
//! attempt's number, so a run can be replayed with the same dice (the schedule itself still
//! varies with timing).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::registry::{check_params, int_param, DynJob, JobError, JobInfo, Params};
use crate::sdk::{
    self, push_u64, Combiner, HookError, Job, MapContext, ReduceContext, TaskSetup, Values,
};

/// The `crash` job.
pub struct Crash {
    rate: u64,
    stall_ms: u64,
    kill_worker: bool,
    seed: Option<u64>,
    /// This attempt's dice, drawn at setup; `u64::MAX` once acted on.
    roll: AtomicU64,
}

/// Registration of [`Crash`].
pub const CRASH: JobInfo = JobInfo {
    name: "crash",
    about: "fault injection: counts lines; attempts randomly exit or stall (crash test)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("crash", p, &["rate", "stall_ms", "kill", "seed"])?;
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
        let seed = match p.get("seed") {
            None => None,
            Some(_) => Some(int_param("crash", p, "seed", 0, 0, u64::MAX)?),
        };
        Ok(Box::new(Crash {
            rate: int_param("crash", p, "rate", 50, 0, 100)?,
            stall_ms: int_param("crash", p, "stall_ms", 10_000, 0, 600_000)?,
            kill_worker,
            seed,
            roll: AtomicU64::new(u64::MAX),
        }))
    },
};

/// SplitMix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Crash {
    /// This attempt's dice: from the seed and the attempt's number, or from the clock.
    fn draw(&self, task: &TaskSetup<'_>) -> u64 {
        let entropy = match self.seed {
            Some(seed) => seed ^ mix(task.attempt),
            None => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0);
                nanos ^ u64::from(std::process::id()).rotate_left(32)
            }
        };
        mix(entropy) & (u64::MAX >> 1)
    }

    /// Once per attempt: maybe exit, maybe stall.
    fn misbehave(&self) {
        let roll = self.roll.swap(u64::MAX, Ordering::Relaxed);
        if roll == u64::MAX {
            return;
        }
        let pick = roll % 200;
        if pick < self.rate {
            if self.kill_worker {
                eprintln!("crash job: killing this attempt's worker on purpose");
                // SAFETY: kill(2) on our parent (the worker daemon); no memory is involved.
                unsafe { libc::kill(libc::getppid(), libc::SIGKILL) };
            }
            eprintln!("crash job: exiting this attempt on purpose");
            std::process::exit(1);
        } else if pick < 2 * self.rate {
            let ms = (roll >> 8) % (self.stall_ms + 1);
            eprintln!("crash job: stalling this attempt for {ms} ms");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}

impl Job for Crash {
    type Key = Vec<u8>;
    type Value = u64;
    const COMBINE: Option<Combiner<u64>> = Some(sdk::sum);

    fn setup(&mut self, task: &TaskSetup<'_>) -> Result<(), HookError> {
        self.roll.store(self.draw(task), Ordering::Relaxed);
        Ok(())
    }

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        self.misbehave();
        ctx.emit_encoded(record, 1);
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
