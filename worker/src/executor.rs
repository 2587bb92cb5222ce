//! The executor process: runs map and reduce attempts. The worker daemon starts it as `quern
//! executor --serve` and hands it one attempt at a time over its stdin, getting the result
//! back on its stdout (see [`serve`]); `quern executor --task FILE` runs one attempt from a
//! task file and writes its result file, for debugging. A panic in job code is caught and
//! reported as the attempt's error; if the process dies some other way the daemon reports
//! the exit status and the end of its log.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use dfs_client::Storage;
use jobs::input::read_input;
use jobs::registry::Registry;
use jobs::runtime::map::MapConfig;
use jobs::runtime::{panic_message, Run, TaskError};
use protocol::FailureKind;

use crate::task::{ExecutorResult, ExecutorTask, MapOutput, TaskKind, Work};

/// Reducers fetch from at most this many map outputs at once: enough to hide latency, few
/// enough to bound the bytes in flight to a few partitions.
const PARALLEL_FETCHES: usize = 8;

/// Runs the task in `task_file` and writes its result; returns the process exit code.
pub fn run(registry: &Registry, task_file: &Path) -> i32 {
    let task: ExecutorTask = match std::fs::read(task_file)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, file = %task_file.display(), "cannot read task file");
            return 2;
        }
    };
    let mut after_reply = AfterReply::new();
    let json =
        serde_json::to_vec(&attempt(registry, &task, &mut after_reply)).expect("result serialises");
    let tmp = task.result_path.with_extension("tmp");
    match std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &task.result_path)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cannot write result file");
            3
        }
    }
}

/// What an attempt leaves to be dropped after its result is sent: a map's input. Unmapping
/// a 64 MiB split takes the kernel 2-3 ms (a page-table entry per 4 KiB page read), which
/// delayed every map's report, and with it the worker's next assignment, by as much.
type AfterReply = Vec<bytes::Bytes>;

/// Runs one attempt and returns its result, whatever happened: a panic in job code is a
/// retryable failure. Its scratch directory is removed after.
fn attempt(
    registry: &Registry,
    task: &ExecutorTask,
    after_reply: &mut AfterReply,
) -> ExecutorResult {
    let span = tracing::info_span!("task", attempt = %task.attempt, kind = ?task.kind(), index = task.index);
    let _enter = span.enter();
    let started = std::time::Instant::now();
    match &task.work {
        crate::task::Work::Map { split, skip, .. } => tracing::info!(
            job = %task.spec.job,
            input = %split.path,
            bytes = format!("{}..{}", split.start, split.end),
            skipping = skip.len(),
            "map started"
        ),
        crate::task::Work::Reduce { map_outputs, .. } => tracing::info!(
            job = %task.spec.job,
            map_outputs = map_outputs.len(),
            "reduce started"
        ),
    }
    let result = catch_unwind(AssertUnwindSafe(|| execute(registry, task, after_reply)))
        .unwrap_or_else(|p| ExecutorResult {
            error: Some((
                FailureKind::Retryable,
                TaskError::Panicked {
                    message: panic_message(&*p),
                    record: None,
                }
                .to_string(),
            )),
            ..Default::default()
        });
    let _ = std::fs::remove_dir_all(&task.work_dir);
    let ms = started.elapsed().as_millis() as u64;
    if let Some((kind, e)) = &result.error {
        tracing::error!(?kind, error = %e, ms, "attempt failed");
    } else {
        // What it did, in its counters (those that are not zero).
        let did: Vec<String> = result
            .counters
            .0
            .iter()
            .filter(|(_, v)| **v > 0)
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        tracing::info!(ms, counters = %did.join(" "), "attempt succeeded");
    }
    result
}

/// Serves attempts of one job, one per line of stdin: `LOG_FILE<TAB>TASK` (the task as
/// compact JSON, which holds no raw tab or newline). Each runs with stdout and stderr sent to
/// its log, and is answered on a line of the original stdout with its result as JSON. No
/// files pass between the worker and its executor: on small tasks, creating and deleting them
/// cost more than the work. Returns at the end of stdin, or 2 on a request it cannot read.
pub fn serve(registry: &Registry) -> i32 {
    use std::io::{BufRead, Write};
    use std::os::fd::{AsRawFd, FromRawFd};
    jobs::runtime::keep_freed_memory();
    // Replies go to a private copy of stdout: what job code prints goes to the attempt log.
    // SAFETY: dup of an open descriptor; the new descriptor is owned by `replies` alone.
    let reply_fd = unsafe { libc::dup(1) };
    if reply_fd < 0 {
        tracing::error!("cannot duplicate stdout");
        return 2;
    }
    // SAFETY: `reply_fd` is a fresh descriptor nothing else owns.
    let mut replies = unsafe { std::fs::File::from_raw_fd(reply_fd) };
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { return 2 };
        let Some((log, task)) = line.split_once('\t') else {
            tracing::error!("malformed executor request");
            return 2;
        };
        match std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            Ok(f) => {
                // SAFETY: dup2 onto the standard descriptors; `f` stays open until both are
                // replaced, and the descriptors it duplicates into outlive it.
                unsafe {
                    libc::dup2(f.as_raw_fd(), 1);
                    libc::dup2(f.as_raw_fd(), 2);
                }
            }
            Err(e) => tracing::warn!(error = %e, log, "cannot open attempt log"),
        }
        let task: ExecutorTask = match serde_json::from_str(task) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "unreadable executor request");
                return 2;
            }
        };
        let mut after_reply = AfterReply::new();
        let result = serde_json::to_string(&attempt(registry, &task, &mut after_reply))
            .expect("result serialises");
        if writeln!(replies, "{result}")
            .and_then(|()| replies.flush())
            .is_err()
        {
            return 0;
        }
        drop(after_reply);
    }
    0
}

fn failed(e: &TaskError) -> ExecutorResult {
    let bad_record = match e {
        TaskError::Panicked { record, .. } => *record,
        _ => None,
    };
    ExecutorResult {
        error: Some((e.kind(), e.report())),
        bad_record,
        ..Default::default()
    }
}

fn execute(
    registry: &Registry,
    task: &ExecutorTask,
    after_reply: &mut AfterReply,
) -> ExecutorResult {
    if protocol::failpoint::hit("attempt.crash") {
        // `return`: this attempt takes its worker down with it, as the tasks of the classic
        // crash test do (the fault suite's churn scenario).
        // SAFETY: kill(2) on our parent (the worker daemon); no memory is involved.
        unsafe { libc::kill(libc::getppid(), libc::SIGKILL) };
        std::process::exit(1);
    }
    let mut job = match registry.create(&task.spec.job, &task.spec.params) {
        Ok(j) => j,
        Err(e) => return failed(&e.into()),
    };
    let storage = Storage::default();
    let mut setup = jobs::sdk::TaskSetup::new(&task.spec.inputs, task.spec.reducers, &storage);
    setup.reduce = task.kind() == TaskKind::Reduce;
    setup.index = task.index;
    setup.attempt = task.attempt.0;
    if let Err(e) = job.setup(&setup) {
        return failed(&TaskError::Setup(e));
    }
    match &task.work {
        Work::Map {
            split,
            file_len,
            skip,
            state,
        } => run_map(
            &storage,
            &mut *job,
            task,
            (split, *file_len, skip, *state),
            after_reply,
        )
        .unwrap_or_else(|e| failed(&e)),
        Work::Reduce {
            map_outputs,
            map_count,
        } => match incomplete(map_outputs, *map_count) {
            Some(error) => ExecutorResult {
                error: Some((FailureKind::Retryable, error)),
                ..Default::default()
            },
            None => run_reduce(&storage, &*job, task, map_outputs),
        },
    }
}

fn run_map(
    storage: &Storage,
    job: &mut dyn jobs::DynJob,
    task: &ExecutorTask,
    (split, file_len, skip, state): (&jobs::split::Split, u64, &[u64], bool),
    after_reply: &mut AfterReply,
) -> Result<ExecutorResult, TaskError> {
    protocol::failpoint::hit("map.start");
    // An executor runs one task at a time, so the process's count is this map's.
    let direct_before = dfs_client::seaweedfs::short_circuit_bytes();
    let read = if state {
        jobs::input::InputData {
            offset: 0,
            data: storage.read_all(&split.path)?,
            ..Default::default()
        }
    } else {
        read_input(storage, split, file_len, job.input_format(), &task.work_dir)?
    };
    let (offset, input, group) = (read.offset, read.data, read.group);
    after_reply.push(input.clone());
    let out = Path::new(&task.output);
    let dir = out.parent().expect("map output has a directory");
    std::fs::create_dir_all(dir).map_err(|e| TaskError::Io {
        path: dir.into(),
        source: e,
    })?;
    let tmp = out.with_extension("tmp");
    let cfg = MapConfig {
        partitions: task.spec.reducers,
        memory_budget: task.spec.task_memory as usize,
        spill_dir: task.work_dir.join("spill"),
        base_offset: offset,
        skip: skip.to_vec(),
        input: split.path.clone(),
        group,
        format: job.input_format(),
        piece: split.end < file_len,
        listed: Default::default(),
        state,
        skip_mode: task.spec.max_bad_records > 0,
    };
    let mut counters = jobs::runtime::map_attempt(job, &input, &cfg, &tmp)?;
    if let Some(n) = read.compressed_bytes {
        counters.add("map_input_compressed_bytes", n);
    }
    let direct = dfs_client::seaweedfs::short_circuit_bytes() - direct_before;
    if direct > 0 {
        counters.add("map_input_short_circuit_bytes", direct);
    }
    std::fs::rename(&tmp, out).map_err(|e| TaskError::Io {
        path: out.into(),
        source: e,
    })?;
    protocol::failpoint::hit("map.done");
    Ok(ExecutorResult {
        counters,
        listed: cfg.listed.into_inner().unwrap_or_else(|e| e.into_inner()),
        ..Default::default()
    })
}

/// Why a reduce's list of map outputs is not one output of each of the job's `map_count` maps
/// (`None` when it is, or when an older coordinator did not say how many there are). A
/// reduce over part of its input would commit wrong output as if it were right.
fn incomplete(map_outputs: &[MapOutput], map_count: u32) -> Option<String> {
    if map_count == 0 {
        return None;
    }
    let mut seen = vec![false; map_count as usize];
    for m in map_outputs {
        match seen.get_mut(m.map_index as usize) {
            Some(s) if !*s => *s = true,
            _ => {
                return Some(format!(
                    "the assignment names map {} twice or out of range (of {map_count} maps); refusing to reduce",
                    m.map_index
                ))
            }
        }
    }
    let missing = seen.iter().filter(|s| !**s).count();
    (missing > 0).then(|| {
        format!(
            "the assignment lists {} of the job's {map_count} map outputs; refusing to reduce part of the input",
            map_outputs.len()
        )
    })
}

fn run_reduce(
    storage: &Storage,
    job: &dyn jobs::DynJob,
    task: &ExecutorTask,
    map_outputs: &[MapOutput],
) -> ExecutorResult {
    protocol::failpoint::hit("reduce.fetch");
    let (fetched, on_disk) = match fetch_all(task, map_outputs) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let shuffle_bytes: u64 = fetched.iter().map(Run::len).sum();
    let attempt = || -> Result<ExecutorResult, TaskError> {
        let mut w = storage.create(&task.output)?;
        let mut state = match job.keeps_state() {
            true => Some(storage.create(&jobs::output::state_staging(&task.output))?),
            false => None,
        };
        let summary = job.run_reduce(
            fetched,
            &mut FailAfterFirstWrite(&mut w, false),
            state.as_mut().map(|w| w as &mut dyn std::io::Write),
            &task.work_dir,
        )?;
        // The state first: the part file's arrival is what the attempt's success stands on.
        if let Some(state) = state {
            state.commit()?;
        }
        w.commit()?;
        let mut counters = summary.counters;
        counters.add("shuffle_bytes", shuffle_bytes);
        counters.add("reduce_spilled_bytes", on_disk);
        Ok(ExecutorResult {
            counters,
            output_bytes: summary.output_bytes,
            output_crc32: summary.output_crc32,
            state: summary.state.map(|s| (s.bytes, s.crc32)),
            ..Default::default()
        })
    };
    attempt().unwrap_or_else(|e| failed(&e))
}

/// Fetches this reduce's partition of every map output; runs that would push the total past
/// the task's memory budget are appended to one file of the work directory and read back a
/// block at a time. Returns the runs in map order and how many of their bytes are on disk.
fn fetch_all(
    task: &ExecutorTask,
    map_outputs: &[MapOutput],
) -> Result<(Vec<Run>, u64), ExecutorResult> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ExecutorResult {
            error: Some((
                FailureKind::Retryable,
                format!("cannot start fetch runtime: {e}"),
            )),
            ..Default::default()
        })?;
    let budget = task.spec.task_memory;
    rt.block_on(async {
        let mut runs: Vec<Option<Run>> = vec![None; map_outputs.len()];
        let mut spilled = SpilledRuns::new(task);
        let mut lost = Vec::new();
        let mut in_memory = 0u64;
        let mut set = tokio::task::JoinSet::new();
        let connections = std::sync::Arc::new(crate::shuffle::Connections::default());
        let mut next = 0;
        loop {
            while set.len() < PARALLEL_FETCHES && next < map_outputs.len() {
                let m = map_outputs[next].clone();
                let (job, partition) = (task.job_id, task.index);
                let secret = task.shuffle_secret.clone();
                let connections = connections.clone();
                set.spawn(async move {
                    let fetched =
                        crate::shuffle::fetch(job, partition, &m, &secret, &connections).await;
                    (next, fetched)
                });
                next += 1;
            }
            let Some(joined) = set.join_next().await else {
                break;
            };
            let (i, res) = joined.expect("fetch task does not panic");
            match res {
                Ok(data) if in_memory + data.len() as u64 <= budget => {
                    in_memory += data.len() as u64;
                    runs[i] = Some(Run::Memory(data));
                }
                Ok(data) => match spilled.push(&data) {
                    Ok(run) => runs[i] = Some(run),
                    Err(e) => return Err(failed(&e)),
                },
                Err(l) => lost.push(l),
            }
        }
        if !lost.is_empty() {
            lost.sort_by_key(|l| l.map_index);
            let names: Vec<String> = lost
                .iter()
                .map(|l| format!("map {} ({:?}: {})", l.map_index, l.reason, l.detail))
                .collect();
            return Err(ExecutorResult {
                error: Some((
                    FailureKind::LostInput,
                    format!("cannot fetch {}", names.join(", ")),
                )),
                lost_maps: lost,
                ..Default::default()
            });
        }
        let runs = runs
            .into_iter()
            .map(|r| r.expect("every run fetched"))
            .collect();
        Ok((runs, spilled.len))
    })
}

/// Runs that do not fit the reduce's memory budget, appended to one file of the attempt's
/// work directory and read back a block at a time by the merge.
struct SpilledRuns {
    path: std::path::PathBuf,
    file: Option<std::sync::Arc<std::fs::File>>,
    len: u64,
}

impl SpilledRuns {
    fn new(task: &ExecutorTask) -> Self {
        SpilledRuns {
            path: task.work_dir.join("fetched-runs"),
            file: None,
            len: 0,
        }
    }

    fn push(&mut self, data: &[u8]) -> Result<Run, TaskError> {
        let io = |e| TaskError::Io {
            path: self.path.clone(),
            source: e,
        };
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                if let Some(dir) = self.path.parent() {
                    std::fs::create_dir_all(dir).map_err(io)?;
                }
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&self.path)
                    .map_err(io)?;
                self.file.insert(std::sync::Arc::new(f)).clone()
            }
        };
        use std::os::unix::fs::FileExt;
        file.write_all_at(data, self.len).map_err(io)?;
        let run = Run::File {
            file,
            start: self.len,
            len: data.len() as u64,
        };
        self.len += data.len() as u64;
        Ok(run)
    }
}

/// Passes writes through, evaluating the `reduce.write` failpoint after the first one, so a
/// fault test can kill a reducer with part of its output written.
struct FailAfterFirstWrite<'a, W>(&'a mut W, bool);

impl<W: std::io::Write> std::io::Write for FailAfterFirstWrite<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        if !self.1 {
            self.1 = true;
            self.0.flush()?;
            protocol::failpoint::hit("reduce.write");
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::AttemptId;

    fn outputs(indexes: &[u32]) -> Vec<MapOutput> {
        indexes
            .iter()
            .map(|&i| MapOutput {
                map_index: i,
                attempt: AttemptId(u64::from(i) + 1),
                addr: "127.0.0.1:1".into(),
            })
            .collect()
    }

    #[test]
    fn a_reduce_refuses_an_assignment_missing_a_map_output() {
        assert_eq!(incomplete(&outputs(&[0, 1, 2]), 3), None);
        assert_eq!(incomplete(&outputs(&[]), 0), None, "older coordinators");
        let missing = incomplete(&outputs(&[0, 2]), 3).unwrap();
        assert!(
            missing.contains("2 of the job's 3 map outputs"),
            "{missing}"
        );
        assert!(incomplete(&outputs(&[0, 0, 1]), 3).is_some(), "twice");
        assert!(
            incomplete(&outputs(&[0, 1, 5]), 3).is_some(),
            "out of range"
        );
    }
}
