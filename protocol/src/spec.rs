//! The job spec: what a user submits, in its domain form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pb;

/// Default split size: 64 MiB.
pub const DEFAULT_SPLIT_SIZE: u64 = 64 * 1024 * 1024;
/// Default sort-buffer budget of one task: 64 MiB.
pub const DEFAULT_TASK_MEMORY: u64 = 64 * 1024 * 1024;
/// Default attempts per task.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// Most parameters a spec may carry.
pub const MAX_PARAMS: usize = 64;
/// Longest parameter value.
pub const MAX_PARAM_BYTES: usize = 4096;
/// Most input paths a spec may name (each may be a directory or a glob).
pub const MAX_INPUTS: usize = 1024;
/// Most reduce tasks of one job.
pub const MAX_REDUCERS: u32 = 100_000;
/// Smallest split size.
pub const MIN_SPLIT_SIZE: u64 = 1024;
/// Most attempts per task.
pub const MAX_ATTEMPTS: u32 = 100;

/// A job to run: which job, over what, into where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Registered job name, e.g. `views`.
    pub job: String,
    /// Job parameters (`--param k=v`).
    pub params: BTreeMap<String, String>,
    /// Input files, directories or globs.
    pub inputs: Vec<String>,
    /// Output directory.
    pub output: String,
    /// Number of reduce tasks (and part files).
    pub reducers: u32,
    /// Bytes per map split.
    pub split_size: u64,
    /// Sort-buffer budget per task, in bytes.
    pub task_memory: u64,
    /// Attempts per task before the job fails.
    pub max_attempts: u32,
    /// Whether slow tasks may get backup attempts (off for jobs with side effects).
    pub speculation: bool,
    /// Skip mode: how many records that make the map panic twice may be skipped (0: off).
    pub max_bad_records: u64,
    /// Scheduling priority: tasks of higher-priority jobs are handed out first (backfills
    /// run below 0, so they never starve scheduled and submitted jobs).
    #[serde(default)]
    pub priority: i32,
    /// SHA-256 (hex) of the uploaded job binary whose executors run this job; empty for a job
    /// of the cluster's own binary.
    #[serde(default)]
    pub binary: String,
    /// How the job cuts its input into records (`lines`, `whole-files`, `tar`), so that a
    /// coordinator can plan a job of an uploaded binary it cannot inspect; empty: lines.
    #[serde(default)]
    pub input_format: String,
    /// Whether its map tasks want a GPU (set from the job at submit).
    #[serde(default)]
    pub gpu: bool,
    /// Replace what the output directory holds instead of refusing it (`--overwrite`).
    #[serde(default)]
    pub overwrite: bool,
}

impl JobSpec {
    /// Returns a spec with default sizes.
    pub fn new(job: impl Into<String>, inputs: Vec<String>, output: impl Into<String>) -> Self {
        JobSpec {
            job: job.into(),
            params: BTreeMap::new(),
            inputs,
            output: output.into(),
            reducers: 1,
            split_size: DEFAULT_SPLIT_SIZE,
            task_memory: DEFAULT_TASK_MEMORY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            speculation: true,
            max_bad_records: 0,
            priority: 0,
            binary: String::new(),
            input_format: String::new(),
            gpu: false,
            overwrite: false,
        }
    }

    /// Returns the wire form.
    pub fn to_pb(&self) -> pb::JobSpec {
        pb::JobSpec {
            job: self.job.clone(),
            params: self.params.clone().into_iter().collect(),
            inputs: self.inputs.clone(),
            output: self.output.clone(),
            reducers: self.reducers,
            split_size: self.split_size,
            task_memory: self.task_memory,
            max_attempts: self.max_attempts,
            no_speculation: !self.speculation,
            max_bad_records: self.max_bad_records,
            priority: self.priority,
            binary: self.binary.clone(),
            input_format: self.input_format.clone(),
            gpu: self.gpu,
            overwrite: self.overwrite,
        }
    }

    /// Checks what a submitter may put in a spec, before anything is planned: names by
    /// [`crate::check_name`] (the job and each parameter key), parameter values without
    /// control characters and of bounded size, bounded counts, and sizes in range. Storage
    /// paths are checked by the storage layer when the job is planned.
    ///
    /// # Errors
    /// A message saying which rule the spec breaks.
    pub fn validate(&self) -> Result<(), String> {
        crate::check_name("job", &self.job)?;
        if self.params.len() > MAX_PARAMS {
            return Err(format!("at most {MAX_PARAMS} parameters"));
        }
        for (k, v) in &self.params {
            crate::check_name("parameter", k)?;
            if v.len() > MAX_PARAM_BYTES || v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(format!(
                    "parameter {k:?}: a value is at most {MAX_PARAM_BYTES} bytes, without control characters"
                ));
            }
        }
        if self.inputs.len() > MAX_INPUTS {
            return Err(format!(
                "at most {MAX_INPUTS} inputs (use a directory or a glob)"
            ));
        }
        if self.reducers == 0 || self.reducers > MAX_REDUCERS {
            return Err(format!("reducers must be 1 to {MAX_REDUCERS}"));
        }
        if self.split_size < MIN_SPLIT_SIZE {
            return Err(format!(
                "the split size must be at least {MIN_SPLIT_SIZE} bytes"
            ));
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(format!("max attempts must be 1 to {MAX_ATTEMPTS}"));
        }
        if !self.binary.is_empty() && !crate::binary::valid_sha256(&self.binary) {
            return Err("a job binary is named by its SHA-256: 64 lowercase hex digits".into());
        }
        if !matches!(
            self.input_format.as_str(),
            "" | "lines" | "raw-lines" | "whole-files" | "tar"
        ) {
            return Err(format!(
                "unknown input format {:?} (lines, raw-lines, whole-files or tar)",
                self.input_format
            ));
        }
        Ok(())
    }

    /// Reads the wire form, filling defaults for zero sizes.
    pub fn from_pb(p: pb::JobSpec) -> Self {
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        JobSpec {
            job: p.job,
            params: p.params.into_iter().collect(),
            inputs: p.inputs,
            output: p.output,
            reducers: p.reducers.max(1),
            split_size: or(p.split_size, DEFAULT_SPLIT_SIZE),
            task_memory: or(p.task_memory, DEFAULT_TASK_MEMORY),
            max_attempts: if p.max_attempts == 0 {
                DEFAULT_MAX_ATTEMPTS
            } else {
                p.max_attempts
            },
            speculation: !p.no_speculation,
            max_bad_records: p.max_bad_records,
            priority: p.priority,
            binary: p.binary,
            input_format: p.input_format,
            gpu: p.gpu,
            overwrite: p.overwrite,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_breaking_a_rule_are_refused_naming_it() {
        let ok = JobSpec::new("views", vec!["a".into()], "out");
        assert_eq!(ok.validate(), Ok(()));
        type Breaks = fn(&mut JobSpec);
        let bad: Vec<(Breaks, &str)> = vec![
            (|s| s.job = "../../bin/sh".into(), "bad job name"),
            (|s| s.job = String::new(), "bad job name"),
            (|s| s.job = "views\0".into(), "bad job name"),
            (
                |s| {
                    s.params.insert("../k".into(), "v".into());
                },
                "bad parameter name",
            ),
            (
                |s| {
                    s.params.insert("k".into(), "a\nb".into());
                },
                "control characters",
            ),
            (
                |s| {
                    s.params.insert("k".into(), "x".repeat(5000));
                },
                "at most 4096 bytes",
            ),
            (|s| s.reducers = 0, "reducers"),
            (|s| s.split_size = 1, "split size"),
            (|s| s.max_attempts = 1000, "max attempts"),
            (|s| s.binary = "../../etc/passwd".into(), "SHA-256"),
            (|s| s.input_format = "zip".into(), "input format"),
            (|s| s.inputs = vec!["a".into(); 2000], "inputs"),
        ];
        for (breaks, rule) in bad {
            let mut s = ok.clone();
            breaks(&mut s);
            let err = s.validate().unwrap_err();
            assert!(err.contains(rule), "{err} (expected {rule})");
        }
    }

    #[test]
    fn spec_round_trips_and_zero_sizes_get_defaults() {
        let mut s = JobSpec::new("views", vec!["a".into()], "out");
        s.params.insert("n".into(), "3".into());
        s.reducers = 7;
        assert_eq!(JobSpec::from_pb(s.to_pb()), s);
        let d = JobSpec::from_pb(pb::JobSpec {
            job: "x".into(),
            ..Default::default()
        });
        assert_eq!(
            (d.reducers, d.split_size, d.max_attempts),
            (1, DEFAULT_SPLIT_SIZE, 4)
        );
    }
}
