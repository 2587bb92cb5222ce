//! `quern run --local`: the whole job, sequentially, in this process, with no daemons.
//!
//! It runs the same map and reduce runners as the cluster, over the same splits, and commits
//! the same way, so its output is the oracle a cluster run is compared with byte for byte.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use dfs_client::Storage;
use protocol::JobSpec;

use crate::input::read_input;
use crate::output::{self, Manifest, PartInfo};
use crate::plan::{plan_job, Plan, PlanError};
use crate::registry::{JobError, Registry};
use crate::runtime::map::{mmap, MapConfig};
use crate::runtime::{format::ShuffleFile, panic_message, Run, TaskError};
use crate::sdk::Counters;

/// Errors of a local run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Unknown job or bad parameters.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Planning or committing touched storage and failed.
    #[error(transparent)]
    Storage(#[from] dfs_client::DfsError),
    /// The job cannot be planned (an incremental run's base is unusable, say).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The output could not be committed.
    #[error(transparent)]
    Output(#[from] output::OutputError),
    /// The job's setup (loading a model or a lookup table, say) failed.
    #[error("job setup failed")]
    Setup(#[source] crate::sdk::HookError),
    /// A task failed.
    #[error("{task} failed: {source}")]
    Task {
        /// Which task, e.g. `map 3`.
        task: String,
        /// Why.
        #[source]
        source: TaskError,
    },
}

/// What a local run did.
#[derive(Debug, Clone)]
pub struct LocalReport {
    /// Job counters, summed over tasks.
    pub counters: Counters,
    /// Map tasks run.
    pub maps: usize,
    /// Why an incremental run ran in full (`--full-if-changed`).
    pub full_because: Option<crate::coverage::Change>,
    /// What the inputs held that was not read ([`crate::plan::Plan::not_read_warning`]).
    pub not_read_warning: Option<String>,
}

/// Progress of a local run, for a progress display.
#[derive(Debug, Clone, Copy)]
pub struct LocalProgress {
    /// Map tasks done.
    pub maps_done: usize,
    /// Map tasks in all.
    pub maps_total: usize,
    /// Reduce tasks done.
    pub reduces_done: u32,
    /// Reduce tasks in all.
    pub reduces_total: u32,
    /// Input bytes read so far.
    pub bytes_read: u64,
}

fn guarded<T>(task: &str, f: impl FnOnce() -> Result<T, TaskError>) -> Result<T, LocalError> {
    let res = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(TaskError::Panicked {
            message: panic_message(&*p),
            record: None,
        })
    });
    res.map_err(|source| LocalError::Task {
        task: task.to_string(),
        source,
    })
}

/// Runs `spec` to completion, using `work_dir` for map outputs and spills.
///
/// # Errors
/// [`LocalError`]; on error the output directory holds no part files and no `_SUCCESS`.
pub fn run_local(
    registry: &Registry,
    spec: &JobSpec,
    work_dir: &Path,
    progress: &mut dyn FnMut(LocalProgress),
) -> Result<LocalReport, LocalError> {
    let storage = Storage::default();
    let mut job = registry.create(&spec.job, &spec.params)?;
    // The version is the job's own, as a cluster sets it at submit.
    let spec = &JobSpec {
        version: job.version(),
        ..spec.clone()
    };
    let setup = crate::sdk::TaskSetup::new(&spec.inputs, spec.reducers, &storage);
    job.setup(&setup).map_err(LocalError::Setup)?;
    let mode = if spec.overwrite {
        output::OutputMode::Overwrite
    } else {
        output::OutputMode::New
    };
    // Inputs first (as on a cluster): a run refused for its input must not have replaced its
    // output.
    let plan = plan_job(&storage, spec, job.input_format())?;
    output::prepare_output(&storage, &spec.output, &spec.inputs, mode)?;
    std::fs::create_dir_all(work_dir).map_err(|e| LocalError::Task {
        task: "setup".into(),
        source: TaskError::io(work_dir, e),
    })?;
    // Every map attempt gets a job of its own, set up afresh, as on a cluster: state a job
    // keeps per task never leaks from a failed attempt into its retry.
    let new_job = || -> Result<Box<dyn crate::DynJob>, TaskError> {
        let mut job = registry.create(&spec.job, &spec.params)?;
        job.setup(&setup).map_err(TaskError::Setup)?;
        Ok(job)
    };
    let result = run_tasks(&storage, (&*job, &new_job), spec, &plan, work_dir, progress);
    let _ = std::fs::remove_dir_all(work_dir);
    if result.is_err() {
        let _ = output::discard(&storage, &spec.output, spec.reducers);
    }
    result
}

/// Runs one map task with the cluster's retry rules: up to `max_attempts` attempts; in skip
/// mode, a record the map panicked on twice is skipped by the next attempt and listed.
fn run_map_attempts(
    new_job: &NewJob<'_>,
    spec: &JobSpec,
    split: &crate::split::Split,
    input: &[u8],
    mut cfg: MapConfig,
    out: &Path,
    skipped: &mut Vec<output::SkippedRecord>,
    listed: &mut Vec<output::SkippedRecord>,
) -> Result<Counters, TaskError> {
    let mut skip_mode = crate::runtime::SkipMode::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        cfg.listed.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let res =
            new_job().and_then(|mut job| crate::runtime::map_attempt(&mut *job, input, &cfg, out));
        let (message, offset) = match res {
            // Listed as the cluster lists it: the attempt's error, offset included.
            Err(
                e @ TaskError::Panicked {
                    record: Some(offset),
                    ..
                },
            ) if attempt < spec.max_attempts => (e.to_string(), offset),
            other => {
                listed.append(&mut cfg.listed.lock().unwrap_or_else(|e| e.into_inner()));
                return other;
            }
        };
        if skip_mode.panicked(offset, skipped.len(), spec.max_bad_records) {
            let (path, at) = split.locate(offset);
            skipped.push(output::SkippedRecord {
                path: path.to_string(),
                offset: at,
                message,
            });
            cfg.skip = skip_mode.skipped().to_vec();
        }
    }
}

/// Makes a job and runs its setup, for one map attempt.
type NewJob<'a> = dyn Fn() -> Result<Box<dyn crate::DynJob>, TaskError> + 'a;

/// Runs the maps (each attempt with a job from `new_job`), then the reduces with `job`.
fn run_tasks(
    storage: &Storage,
    (job, new_job): (&dyn crate::DynJob, &NewJob<'_>),
    spec: &JobSpec,
    plan: &Plan,
    work_dir: &Path,
    progress: &mut dyn FnMut(LocalProgress),
) -> Result<LocalReport, LocalError> {
    let splits = &plan.splits;
    let mut counters = Counters::default();
    let mut p = LocalProgress {
        maps_done: 0,
        maps_total: splits.len(),
        reduces_done: 0,
        reduces_total: spec.reducers,
        bytes_read: 0,
    };
    let mut skipped = Vec::new();
    let mut listed = Vec::new();
    let mut map_files = Vec::with_capacity(splits.len());
    for (i, planned) in splits.iter().enumerate() {
        let out = work_dir.join(format!("map-{i:05}"));
        let c = run_map(
            storage,
            (job.input_format(), new_job),
            spec,
            (i, planned),
            work_dir,
            &out,
            (&mut skipped, &mut listed),
        )?;
        p.bytes_read += c.get("map_input_bytes");
        counters.merge(&c);
        map_files.push(out);
        p.maps_done += 1;
        progress(p);
    }
    // Each map output's index is read from a mapping; the reduces read their runs a block at
    // a time from the files, so memory does not grow with the input.
    let files = map_files
        .iter()
        .map(|f| {
            guarded("reduce input", || {
                let index = ShuffleFile::open(mmap(f)?)?;
                let file = std::fs::File::open(f).map_err(|e| TaskError::io(f, e))?;
                Ok((std::sync::Arc::new(file), index))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut parts = Vec::new();
    let mut states = Vec::new();
    for r in 0..spec.reducers {
        let summary = guarded(&format!("reduce {r}"), || {
            let committed = output::committed_path(&spec.output, r);
            let mut w = storage.create(&committed)?;
            let mut state = match job.keeps_state() {
                true => Some(storage.create(&output::state_staging(&committed))?),
                false => None,
            };
            let s = job.run_reduce(
                files
                    .iter()
                    .map(|(file, index)| {
                        let range = index.partition_range(r);
                        Run::File {
                            file: file.clone(),
                            start: range.start,
                            len: range.end - range.start,
                        }
                    })
                    .collect(),
                &mut w,
                state.as_mut().map(|w| w as &mut dyn std::io::Write),
                work_dir,
            )?;
            w.commit()?;
            if let Some(state) = state {
                state.commit()?;
            }
            Ok(s)
        })?;
        counters.merge(&summary.counters);
        parts.push(PartInfo {
            name: output::part_name(r),
            bytes: summary.output_bytes,
            crc32: summary.output_crc32,
        });
        if let Some(s) = summary.state {
            states.push(PartInfo {
                name: output::part_name(r),
                bytes: s.bytes,
                crc32: s.crc32,
            });
        }
        p.reduces_done += 1;
        progress(p);
    }
    let manifest = Manifest::of(
        spec,
        parts,
        states,
        plan.coverage.clone(),
        plan.not_read.clone(),
    );
    output::publish(
        storage,
        &spec.output,
        &manifest,
        &[skipped, listed].concat(),
    )?;
    Ok(LocalReport {
        counters,
        maps: splits.len(),
        full_because: plan.full_because.clone(),
        not_read_warning: plan.not_read_warning(),
    })
}

/// Map task `i`: reads its split and runs it (with the cluster's retry and skip rules) into
/// `out`, adding to the records skipped and listed so far; returns its counters.
fn run_map(
    storage: &Storage,
    (format, new_job): (crate::InputFormat, &NewJob<'_>),
    spec: &JobSpec,
    (i, planned): (usize, &crate::plan::PlannedSplit),
    work_dir: &Path,
    out: &Path,
    (skipped, listed): (
        &mut Vec<output::SkippedRecord>,
        &mut Vec<output::SkippedRecord>,
    ),
) -> Result<Counters, LocalError> {
    let task = format!("map {i}");
    let read = guarded(&task, || {
        Ok(if planned.state {
            crate::input::InputData {
                offset: 0,
                data: storage.read_all(&planned.split.path)?,
                ..Default::default()
            }
        } else {
            read_input(storage, &planned.split, planned.file_len, format, work_dir)?
        })
    })?;
    let cfg = MapConfig {
        partitions: spec.reducers,
        memory_budget: spec.task_memory as usize,
        spill_dir: work_dir.join(format!("spill-{i:05}")),
        base_offset: read.offset,
        skip: Vec::new(),
        input: planned.split.path.clone(),
        group: read.group,
        format,
        piece: planned.split.end < planned.file_len,
        listed: Default::default(),
        state: planned.state,
        skip_mode: spec.max_bad_records > 0,
    };
    let split = &planned.split;
    let mut c = run_map_attempts(new_job, spec, split, &read.data, cfg, out, skipped, listed)
        .map_err(|source| LocalError::Task { task, source })?;
    if let Some(n) = read.compressed_bytes {
        c.add("map_input_compressed_bytes", n);
    }
    Ok(c)
}
