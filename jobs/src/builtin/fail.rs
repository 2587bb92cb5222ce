//! `fail`: a fault-injection job. It counts lines like `wordcount` counts words, and its map
//! panics on every record containing one of the `|`-separated strings of its `panic_on`
//! parameter (default: every record), so tests and operators can watch a failing job be
//! retried, reported, or run in skip mode. With `delay_ms` each attempt first waits that long:
//! a job that stays running, to watch or kill.

use crate::registry::{check_params, int_param, DynJob, JobError, JobInfo, Params};
use crate::sdk::{
    self, push_u64, Combiner, HookError, Job, MapContext, ReduceContext, TaskSetup, Values,
};

/// The `fail` job.
pub struct Fail {
    panic_on: Vec<Vec<u8>>,
    delay: std::time::Duration,
}

/// Registration of [`Fail`].
pub const FAIL: JobInfo = JobInfo {
    name: "fail",
    about: "fault injection: map panics on records containing panic_on (default: all)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("fail", p, &["panic_on", "delay_ms"])?;
        let panic_on = p
            .get("panic_on")
            .map(|v| v.split('|').map(|s| s.as_bytes().to_vec()).collect())
            .unwrap_or_default();
        let delay_ms = int_param("fail", p, "delay_ms", 0, 0, 3_600_000)?;
        Ok(Box::new(Fail {
            panic_on,
            delay: std::time::Duration::from_millis(delay_ms),
        }))
    },
};

impl Job for Fail {
    type Key = Vec<u8>;
    type Value = u64;
    const COMBINE: Option<Combiner<u64>> = Some(sdk::sum);

    fn setup(&mut self, _task: &TaskSetup<'_>) -> Result<(), HookError> {
        std::thread::sleep(self.delay);
        Ok(())
    }

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        let hit = self.panic_on.is_empty()
            || self
                .panic_on
                .iter()
                .any(|p| p.is_empty() || record.windows(p.len()).any(|w| w == p.as_slice()));
        if hit {
            panic!(
                "injected failure on record {:?}",
                String::from_utf8_lossy(record)
            );
        }
        ctx.emit_encoded(record, 1);
    }

    fn reduce(&self, line: Vec<u8>, counts: Values<'_, u64>, out: &mut ReduceContext<'_>) {
        let buf = out.buffer();
        buf.extend_from_slice(&line);
        buf.push(b'\t');
        push_u64(buf, counts.sum());
        out.end_line();
    }
}
