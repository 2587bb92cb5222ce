//! What a worker hands an executor process, and what the executor hands back. Both travel as
//! JSON files in the worker's directory: user code may print to stdout, so stdout is no channel.

use std::path::PathBuf;

use jobs::sdk::Counters;
use jobs::split::Split;
use protocol::{pb, AttemptId, FailureKind, JobId, JobSpec};
use serde::{Deserialize, Serialize};

/// Which side of the job an attempt runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// A map over one split.
    Map,
    /// A reduce of one partition.
    Reduce,
}

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
    /// Map or reduce.
    pub kind: TaskKind,
    /// Task index (split number or partition).
    pub index: u32,
    /// The job spec.
    pub spec: JobSpec,
    /// Map: the split and its file's length.
    pub split: Option<(Split, u64)>,
    /// Reduce: every map's output, in map order.
    pub map_outputs: Vec<MapOutput>,
    /// Map: where to write the output file. Reduce: the staging path of the part file.
    pub output: String,
    /// Scratch directory for spills and fetched runs (removed after the attempt).
    pub work_dir: PathBuf,
    /// Where to write the [`ExecutorResult`].
    pub result_path: PathBuf,
    /// Map: input offsets of records to skip (skip mode).
    pub skip: Vec<u64>,
    /// The job's shuffle secret (reduces sign their fetches with it).
    #[serde(default)]
    pub shuffle_secret: Vec<u8>,
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
pub fn from_assignment(a: pb::TaskAssignment, dir: &std::path::Path) -> Option<ExecutorTask> {
    let attempt = AttemptId(a.attempt_id);
    let job_id = JobId(a.job_id);
    let spec = JobSpec::from_pb(a.spec?);
    let kind = match pb::TaskKind::try_from(a.kind).ok()? {
        pb::TaskKind::Map => TaskKind::Map,
        pb::TaskKind::Reduce => TaskKind::Reduce,
        pb::TaskKind::Unspecified => return None,
    };
    let split = a.split.map(|s| {
        (
            Split {
                path: s.path,
                start: s.start,
                end: s.end,
            },
            s.file_len,
        )
    });
    let output = match kind {
        TaskKind::Map => map_output_path(dir, job_id, a.index, attempt)
            .display()
            .to_string(),
        TaskKind::Reduce => a.staging_path,
    };
    Some(ExecutorTask {
        attempt,
        job_id,
        kind,
        index: a.index,
        spec,
        split,
        map_outputs: a
            .map_outputs
            .into_iter()
            .map(|m| MapOutput {
                map_index: m.map_index,
                attempt: AttemptId(m.attempt_id),
                addr: m.shuffle_addr,
            })
            .collect(),
        output,
        work_dir: dir.join("work").join(attempt.to_string()),
        result_path: dir.join("tasks").join(format!("{attempt}.result.json")),
        skip: a.skip_offsets,
        shuffle_secret: a.shuffle_secret,
    })
}
