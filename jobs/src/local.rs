//! `quern run --local`: the whole job, sequentially, in this process, with no daemons.
//!
//! It runs the same map and reduce runners as the cluster, over the same splits, and commits
//! the same way, so its output is the oracle a cluster run is compared with byte for byte.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use dfs_client::Storage;
use protocol::JobSpec;

use crate::output::{self, Manifest, PartInfo};
use crate::plan::plan_splits;
use crate::registry::{JobError, Registry};
use crate::runtime::map::{mmap, MapConfig};
use crate::runtime::{format::ShuffleFile, panic_message, TaskError};
use crate::sdk::Counters;
use crate::split::read_split;

/// Errors of a local run.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// Unknown job or bad parameters.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Planning or committing touched storage and failed.
    #[error(transparent)]
    Storage(#[from] dfs_client::DfsError),
    /// The output could not be committed.
    #[error(transparent)]
    Output(#[from] output::OutputError),
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
    let job = registry.create(&spec.job, &spec.params)?;
    output::check_output_free(&storage, &spec.output)?;
    let splits = plan_splits(&storage, &spec.inputs, spec.split_size)?;
    std::fs::create_dir_all(work_dir).map_err(|e| LocalError::Task {
        task: "setup".into(),
        source: TaskError::io(work_dir, e),
    })?;
    let result = run_tasks(&storage, &*job, spec, &splits, work_dir, progress);
    let _ = std::fs::remove_dir_all(work_dir);
    if result.is_err() {
        let _ = output::discard(&storage, &spec.output, spec.reducers);
    }
    result
}

fn run_tasks(
    storage: &Storage,
    job: &dyn crate::DynJob,
    spec: &JobSpec,
    splits: &[crate::plan::PlannedSplit],
    work_dir: &Path,
    progress: &mut dyn FnMut(LocalProgress),
) -> Result<LocalReport, LocalError> {
    let mut counters = Counters::default();
    let mut p = LocalProgress {
        maps_done: 0,
        maps_total: splits.len(),
        reduces_done: 0,
        reduces_total: spec.reducers,
        bytes_read: 0,
    };
    let mut map_files = Vec::with_capacity(splits.len());
    for (i, planned) in splits.iter().enumerate() {
        let task = format!("map {i}");
        let out = work_dir.join(format!("map-{i:05}"));
        let cfg = MapConfig {
            partitions: spec.reducers,
            memory_budget: spec.task_memory as usize,
            spill_dir: work_dir.join(format!("spill-{i:05}")),
        };
        let c = guarded(&task, || {
            let input = read_split(storage, &planned.split, planned.file_len)?;
            job.run_map(&input, &cfg, &out)
        })?;
        p.bytes_read += c.get("map_input_bytes");
        counters.merge(&c);
        map_files.push(out);
        p.maps_done += 1;
        progress(p);
    }
    let files = map_files
        .iter()
        .map(|f| guarded("reduce input", || Ok(ShuffleFile::open(mmap(f)?)?)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut parts = Vec::new();
    for r in 0..spec.reducers {
        let name = output::part_name(r);
        let summary = guarded(&format!("reduce {r}"), || {
            let mut w = storage.create(&dfs_client::Storage::join(&spec.output, &name))?;
            let s = job.run_reduce(files.iter().map(|f| f.partition(r)).collect(), &mut w)?;
            w.commit()?;
            Ok(s)
        })?;
        counters.merge(&summary.counters);
        parts.push(PartInfo {
            name,
            bytes: summary.output_bytes,
            crc32: summary.output_crc32,
        });
        p.reduces_done += 1;
        progress(p);
    }
    output::publish(
        storage,
        &spec.output,
        &Manifest {
            job: spec.job.clone(),
            parts,
        },
    )?;
    Ok(LocalReport {
        counters,
        maps: splits.len(),
    })
}
