//! What a worker hands an executor process, and what the executor hands back. Both travel as
//! JSON files in the worker's directory: user code may print to stdout, so stdout is no channel.

use std::path::PathBuf;

use jobs::sdk::Counters;
use jobs::split::Split;
use protocol::{pb, AttemptId, FailureKind, JobId, JobSpec};
use serde::{Deserialize, Serialize};

pub use protocol::TaskKind;

/// Where one map's output can be fetched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapOutput {
    /// The map task's index.
    pub map_index: u32,
    /// The attempt that produced it.
    pub attempt: AttemptId,
    /// The shuffle service holding it.
    pub addr: String,
}

/// One attempt, as an executor runs it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutorTask {
    /// This attempt.
    pub attempt: AttemptId,
    /// Its job.
    pub job_id: JobId,
    /// What to do: a map's or a reduce's own inputs.
    pub work: Work,
    /// Task index (split number or partition).
    pub index: u32,
    /// The job spec.
    pub spec: JobSpec,
    /// Map: where to write the output file. Reduce: the staging path of the part file.
    pub output: String,
    /// What its files on this worker are named: `job-4-map-3-2-attempt-77` (see
    /// [`protocol::task::attempt_file_stem`]).
    #[serde(default)]
    pub stem: String,
    /// Scratch directory for spills and fetched runs (removed after the attempt).
    pub work_dir: PathBuf,
    /// Where to write the [`ExecutorResult`].
    pub result_path: PathBuf,
    /// The job's shuffle secret (reduces sign their fetches with it).
    #[serde(default)]
    pub shuffle_secret: Vec<u8>,
}

/// A map's or a reduce's own inputs: a map always has its split, a reduce its map outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Work {
    /// A map over one split.
    Map {
        /// The split.
        split: Split,
        /// Its file's length.
        file_len: u64,
        /// Input offsets of records to skip (skip mode).
        skip: Vec<u64>,
        /// The split is an earlier output's state file (an incremental run).
        #[serde(default)]
        state: bool,
    },
    /// A reduce of one partition.
    Reduce {
        /// Every map's output, in map order.
        map_outputs: Vec<MapOutput>,
        /// How many maps the job has (0 from an older coordinator: not checked).
        #[serde(default)]
        map_count: u32,
    },
}

impl ExecutorTask {
    /// Map or reduce.
    pub fn kind(&self) -> TaskKind {
        match self.work {
            Work::Map { .. } => TaskKind::Map,
            Work::Reduce { .. } => TaskKind::Reduce,
        }
    }
}

/// An assignment the worker cannot run as it came.
#[derive(Debug, thiserror::Error)]
pub enum BadAssignment {
    /// Its task kind is unset or unknown.
    #[error("assignment of attempt {0} has no known task kind")]
    Kind(AttemptId),
    /// It carries no job spec.
    #[error("assignment of attempt {0} has no job spec")]
    Spec(AttemptId),
    /// Its job spec cannot be read.
    #[error("assignment of attempt {0} has a bad job spec")]
    BadSpec(AttemptId, #[source] protocol::SpecError),
    /// A map without its split.
    #[error("map assignment of attempt {0} has no split")]
    Split(AttemptId),
}

/// A map output that a reducer could not fetch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostMap {
    /// The map task.
    pub map_index: u32,
    /// The attempt whose output was lost.
    pub attempt: AttemptId,
    /// Why.
    pub reason: FetchFailure,
    /// Details for the log.
    pub detail: String,
}

/// Why a fetch failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FetchFailure {
    /// The shuffle service did not answer.
    Unreachable,
    /// It answered that it has no such output.
    NotFound,
    /// The data failed its checksums.
    Corrupt,
}

impl FetchFailure {
    /// Returns the wire form.
    pub fn to_pb(self) -> pb::FetchFailureReason {
        match self {
            FetchFailure::Unreachable => pb::FetchFailureReason::Unreachable,
            FetchFailure::NotFound => pb::FetchFailureReason::NotFound,
            FetchFailure::Corrupt => pb::FetchFailureReason::Corrupt,
        }
    }
}

/// What an attempt did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecutorResult {
    /// The error, if it failed.
    pub error: Option<(FailureKind, String)>,
    /// Its counters.
    pub counters: Counters,
    /// Reduce: bytes of the staged part file.
    pub output_bytes: u64,
    /// Reduce: CRC32 of the staged part file.
    pub output_crc32: u32,
    /// Reduce: map outputs it could not fetch.
    pub lost_maps: Vec<LostMap>,
    /// Map: the input offset of the record the map function panicked on.
    pub bad_record: Option<u64>,
    /// Map: records the job listed as skipped, for the job's skip file.
    #[serde(default)]
    pub listed: Vec<jobs::output::SkippedRecord>,
    /// Reduce of a job that keeps state: size and CRC32 of the staged state file.
    #[serde(default)]
    pub state: Option<(u64, u32)>,
}

/// Returns the path of a map output file inside a worker directory.
pub fn map_output_path(
    dir: &std::path::Path,
    job: JobId,
    map_index: u32,
    attempt: AttemptId,
) -> PathBuf {
    dir.join("shuffle")
        .join(job.to_string())
        .join(format!("map-{map_index:05}-{}.out", attempt.0))
}

/// Builds the executor's task from an assignment.
///
/// # Errors
/// [`BadAssignment`] when a part the task needs is missing.
pub fn from_assignment(
    a: pb::TaskAssignment,
    dir: &std::path::Path,
) -> Result<ExecutorTask, BadAssignment> {
    let attempt = AttemptId(a.attempt_id);
    let job_id = JobId(a.job_id);
    let spec = JobSpec::from_pb(a.spec.ok_or(BadAssignment::Spec(attempt))?)
        .map_err(|e| BadAssignment::BadSpec(attempt, e))?;
    let kind = TaskKind::from_pb(a.kind).ok_or(BadAssignment::Kind(attempt))?;
    let stem = protocol::task::attempt_file_stem(job_id, kind, a.index, a.number, attempt);
    let (work, output) = match kind {
        TaskKind::Map => {
            let s = a.split.ok_or(BadAssignment::Split(attempt))?;
            let work = Work::Map {
                split: Split {
                    path: s.path,
                    start: s.start,
                    end: s.end,
                    files: s
                        .files
                        .into_iter()
                        .map(|f| jobs::split::GroupFile {
                            path: f.path,
                            len: f.len,
                            name: f.name,
                        })
                        .collect(),
                },
                file_len: s.file_len,
                skip: a.skip_offsets,
                state: s.state,
            };
            let output = map_output_path(dir, job_id, a.index, attempt);
            (work, output.display().to_string())
        }
        TaskKind::Reduce => {
            let map_outputs = a
                .map_outputs
                .into_iter()
                .map(|m| MapOutput {
                    map_index: m.map_index,
                    attempt: AttemptId(m.attempt_id),
                    addr: m.shuffle_addr,
                })
                .collect();
            let map_count = a.map_count;
            (
                Work::Reduce {
                    map_outputs,
                    map_count,
                },
                a.staging_path,
            )
        }
    };
    Ok(ExecutorTask {
        attempt,
        job_id,
        work,
        index: a.index,
        spec,
        output,
        work_dir: dir.join("work").join(&stem),
        stem,
        result_path: dir.join("tasks").join(format!("{attempt}.result.json")),
        shuffle_secret: a.shuffle_secret,
    })
}
