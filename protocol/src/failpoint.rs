//! Named failpoints for the fault suite.
//!
//! With the `failpoints` cargo feature, [`hit`] evaluates a [`fail`] point configured through
//! the `FAILPOINTS` environment variable (`name=action;name=action`, actions such as
//! `sleep(2000)`, `pause`, `panic(msg)` or `return`). A test sets it on one process and its
//! children, waits for the process to reach the point, then `kill -9`s it from outside. To let
//! the test see that moment, a reached point that is configured writes a marker file
//! `NAME.PID` into `$QUERN_FAILPOINT_DIR` (when set) before its action runs.
//!
//! Without the feature (every release build) [`hit`] is an inlined `false` and nothing of the
//! `fail` crate is compiled in.
//!
//! The points:
//!
//! | name | process | where |
//! |---|---|---|
//! | `attempt.crash` | executor | first thing in an attempt; `return`: SIGKILL the worker and exit |
//! | `map.start` | executor | before a map attempt reads its split |
//! | `map.spill` | executor | before a map attempt writes a spill file |
//! | `map.done` | executor | after the map output is written, before the result |
//! | `reduce.fetch` | executor | before a reduce attempt fetches map outputs |
//! | `reduce.write` | executor | after a reduce attempt's first output write |
//! | `shuffle.serve` | worker | before the shuffle service reads a partition to send |
//! | `task.fail` | worker | `return`: every attempt on this worker fails |
//! | `report.twice` | worker | `return`: every task report is sent twice |
//! | `heartbeat.lose` | worker | `return`: a heartbeat answer with assignments is dropped on arrival |
//! | `commit.rename` | coordinator | between a reduce's commit authorization and its rename |
//! | `job.publish` | coordinator | after every reduce committed, before `_SUCCESS` |
//! | `journal.append` | coordinator | before journal records are written; `return`: the write fails |

/// Reads `FAILPOINTS` once at process start (a no-op without the `failpoints` feature).
///
/// # Panics
/// With the feature, if `FAILPOINTS` is malformed: a fault test with a typo must not pass.
pub fn setup() {
    #[cfg(feature = "failpoints")]
    std::mem::forget(fail::FailScenario::setup());
}

/// Evaluates the failpoint `name`; returns true if its action is `return`.
#[inline]
pub fn hit(name: &str) -> bool {
    #[cfg(feature = "failpoints")]
    {
        if fail::list().iter().any(|(n, _)| n == name) {
            mark(name);
        }
        fail::eval(name, |_| ()).is_some()
    }
    #[cfg(not(feature = "failpoints"))]
    {
        let _ = name;
        false
    }
}

#[cfg(feature = "failpoints")]
fn mark(name: &str) {
    if let Some(dir) = std::env::var_os("QUERN_FAILPOINT_DIR") {
        let path = std::path::Path::new(&dir).join(format!("{name}.{}", std::process::id()));
        let _ = std::fs::write(path, b"");
    }
}
