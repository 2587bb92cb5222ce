//! The job spec: what a user submits, in its domain form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pb;

/// Default split size: 64 MiB.
pub const DEFAULT_SPLIT_SIZE: u64 = 64 * 1024 * 1024;
/// Default sort-buffer budget of one task: 128 MiB, so that the records of a default split
/// fit with their bookkeeping (32 bytes per record) and a map writes its output without
/// spilling first.
pub const DEFAULT_TASK_MEMORY: u64 = 128 * 1024 * 1024;
/// Default attempts per task.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 4;
/// Most parameters a spec may carry.
pub const MAX_PARAMS: usize = 64;
/// Longest parameter value.
pub const MAX_PARAM_BYTES: usize = 4096;
/// Most labels on one job.
pub const MAX_LABELS: usize = 32;
/// Longest job name or label value, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most input paths a spec may name (each may be a directory or a glob).
pub const MAX_INPUTS: usize = 1024;
/// Most reduce tasks of one job.
pub const MAX_REDUCERS: u32 = 100_000;
/// Smallest split size.
pub const MIN_SPLIT_SIZE: u64 = 1024;
/// Most attempts per task.
pub const MAX_ATTEMPTS: u32 = 100;

/// How a job's input is cut into records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum InputFormat {
    /// One record per line, without its terminator (text, JSON lines, CSV ...). Splits cut
    /// files at any byte; a line belongs to the split it starts in.
    #[default]
    Lines,
    /// As [`InputFormat::Lines`], but each record keeps its terminator (`\n` or `\r\n`; a
    /// last line without one has none): for jobs that write their input records back
    /// unchanged, such as `sort`.
    RawLines,
    /// One record per file, the whole file; its name is the file's path under the input.
    /// Files are grouped many to a split, up to the split size, by storage host.
    WholeFiles,
    /// One record per regular member of a tar file (a WebDataset-style shard); its name is
    /// the member's path. A shard larger than the split size is read in pieces cut at member
    /// boundaries. A file whose name does not end in `.tar` (`.tar.gz`, `.tar.zst`) is a loose
    /// file, read as by [`InputFormat::WholeFiles`].
    Tar,
}

impl InputFormat {
    /// Every format, in the order the docs list them.
    pub const ALL: [InputFormat; 4] = [
        InputFormat::Lines,
        InputFormat::RawLines,
        InputFormat::WholeFiles,
        InputFormat::Tar,
    ];

    /// The name used in job specs, on the wire and in the journal.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Lines => "lines",
            InputFormat::RawLines => "raw-lines",
            InputFormat::WholeFiles => "whole-files",
            InputFormat::Tar => "tar",
        }
    }

    /// Reads a name; the empty name (a spec that says nothing) is [`InputFormat::Lines`].
    pub fn from_name(s: &str) -> Option<Self> {
        if s.is_empty() {
            return Some(InputFormat::Lines);
        }
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Whether a split is always a whole file.
    pub fn whole_files(self) -> bool {
        matches!(self, InputFormat::WholeFiles | InputFormat::Tar)
    }
}

impl Serialize for InputFormat {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for InputFormat {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        InputFormat::from_name(&name)
            .ok_or_else(|| serde::de::Error::custom(SpecError::InputFormat(name)))
    }
}

/// A spec that breaks one of the rules of [`JobSpec::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The job name or a parameter key breaks the name rule.
    #[error(transparent)]
    Name(#[from] crate::NameError),
    /// Too many parameters.
    #[error("at most {MAX_PARAMS} parameters")]
    TooManyParams,
    /// A parameter value too long or with control characters.
    #[error(
        "parameter {0:?}: a value is at most {MAX_PARAM_BYTES} bytes, without control characters"
    )]
    ParamValue(String),
    /// A job name too long or with control characters.
    #[error("a job name is at most {MAX_NAME_BYTES} bytes, without control characters")]
    JobName,
    /// Too many labels.
    #[error("at most {MAX_LABELS} labels")]
    TooManyLabels,
    /// A label value too long or with control characters.
    #[error("label {0:?}: a value is at most {MAX_NAME_BYTES} bytes, without control characters")]
    LabelValue(String),
    /// Too many inputs.
    #[error("at most {MAX_INPUTS} inputs (use a directory or a glob)")]
    TooManyInputs,
    /// A reducer count out of range.
    #[error("reducers must be 1 to {MAX_REDUCERS}")]
    Reducers,
    /// A split size too small.
    #[error("the split size must be at least {MIN_SPLIT_SIZE} bytes")]
    SplitSize,
    /// An attempt bound out of range.
    #[error("max attempts must be 1 to {MAX_ATTEMPTS}")]
    MaxAttempts,
    /// A job binary not named by a SHA-256.
    #[error("a job binary is named by its SHA-256: 64 lowercase hex digits")]
    Binary,
    /// An input format with no such name.
    #[error("unknown input format {0:?} (lines, raw-lines, whole-files or tar)")]
    InputFormat(String),
}

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
    /// How the job cuts its input into records, so that a coordinator can plan a job of an
    /// uploaded binary it cannot inspect (by name in the journal: `lines`, `raw-lines`,
    /// `whole-files`, `tar`; an empty name, as older journals hold, is lines).
    #[serde(default)]
    pub input_format: InputFormat,
    /// Whether its map tasks want a GPU (set from the job at submit).
    #[serde(default)]
    pub gpu: bool,
    /// Replace what the output directory holds instead of refusing it (`--overwrite`).
    #[serde(default)]
    pub overwrite: bool,
    /// An incremental run (`--from`): the earlier output of this job it continues. Only input
    /// that output did not cover is read, and the output's state is folded in. Empty: a full
    /// run.
    #[serde(default)]
    pub from: String,
    /// With [`JobSpec::from`]: run in full instead of refusing when an input file covered
    /// there shrank, was rewritten or is gone (`--full-if-changed`).
    #[serde(default)]
    pub full_if_changed: bool,
    /// A name for people (`--name`); several jobs may share one. Empty: none.
    #[serde(default)]
    pub name: String,
    /// Labels (`--label key=value`) to find and group jobs by.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The version of the job's definition (`Job::VERSION`, set from the job at submit): an
    /// incremental run continues only an output of the same version.
    #[serde(default = "first_version")]
    pub version: u32,
}

/// The version of a job that says none (specs and manifests written before versions were).
pub fn first_version() -> u32 {
    1
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
            input_format: InputFormat::Lines,
            gpu: false,
            overwrite: false,
            from: String::new(),
            full_if_changed: false,
            name: String::new(),
            labels: BTreeMap::new(),
            version: first_version(),
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
            input_format: self.input_format.name().to_string(),
            gpu: self.gpu,
            overwrite: self.overwrite,
            from: self.from.clone(),
            full_if_changed: self.full_if_changed,
            name: self.name.clone(),
            labels: self.labels.clone().into_iter().collect(),
            version: self.version,
        }
    }

    /// Checks what a submitter may put in a spec, before anything is planned: names by
    /// [`crate::check_name`] (the job and each parameter key), parameter values without
    /// control characters and of bounded size, bounded counts, and sizes in range. Storage
    /// paths are checked by the storage layer when the job is planned.
    ///
    /// # Errors
    /// A message saying which rule the spec breaks.
    pub fn validate(&self) -> Result<(), SpecError> {
        crate::check_name("job", &self.job)?;
        if self.params.len() > MAX_PARAMS {
            return Err(SpecError::TooManyParams);
        }
        for (k, v) in &self.params {
            crate::check_name("parameter", k)?;
            if v.len() > MAX_PARAM_BYTES || v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(SpecError::ParamValue(k.clone()));
            }
        }
        if self.name.len() > MAX_NAME_BYTES || self.name.chars().any(char::is_control) {
            return Err(SpecError::JobName);
        }
        if self.labels.len() > MAX_LABELS {
            return Err(SpecError::TooManyLabels);
        }
        for (k, v) in &self.labels {
            crate::check_name("label", k)?;
            if v.len() > MAX_NAME_BYTES || v.chars().any(char::is_control) {
                return Err(SpecError::LabelValue(k.clone()));
            }
        }
        if self.inputs.len() > MAX_INPUTS {
            return Err(SpecError::TooManyInputs);
        }
        if self.reducers == 0 || self.reducers > MAX_REDUCERS {
            return Err(SpecError::Reducers);
        }
        if self.split_size < MIN_SPLIT_SIZE {
            return Err(SpecError::SplitSize);
        }
        if self.max_attempts == 0 || self.max_attempts > MAX_ATTEMPTS {
            return Err(SpecError::MaxAttempts);
        }
        if !self.binary.is_empty() && !crate::binary::valid_sha256(&self.binary) {
            return Err(SpecError::Binary);
        }
        Ok(())
    }

    /// Reads the wire form, filling defaults for zero sizes.
    ///
    /// # Errors
    /// [`SpecError::InputFormat`] for an input format with no such name.
    pub fn from_pb(p: pb::JobSpec) -> Result<Self, SpecError> {
        let or = |v: u64, d: u64| if v == 0 { d } else { v };
        let input_format = InputFormat::from_name(&p.input_format)
            .ok_or_else(|| SpecError::InputFormat(p.input_format.clone()))?;
        Ok(JobSpec {
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
            input_format,
            gpu: p.gpu,
            overwrite: p.overwrite,
            from: p.from,
            full_if_changed: p.full_if_changed,
            name: p.name,
            labels: p.labels.into_iter().collect(),
            version: p.version.max(first_version()),
        })
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
            (|s| s.inputs = vec!["a".into(); 2000], "inputs"),
            (|s| s.name = "a\u{1b}[31mb".into(), "job name"),
            (|s| s.name = "n".repeat(300), "job name"),
            (
                |s| {
                    s.labels.insert("team a".into(), "x".into());
                },
                "bad label name",
            ),
            (
                |s| {
                    s.labels.insert("team".into(), "x\ny".into());
                },
                "label \"team\"",
            ),
            (
                |s| {
                    s.labels = (0..40).map(|i| (format!("k{i}"), String::new())).collect();
                },
                "at most 32 labels",
            ),
        ];
        for (breaks, rule) in bad {
            let mut s = ok.clone();
            breaks(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(rule), "{err} (expected {rule})");
        }
    }

    #[test]
    fn spec_round_trips_and_zero_sizes_get_defaults() {
        let mut s = JobSpec::new("views", vec!["a".into()], "out");
        s.params.insert("n".into(), "3".into());
        s.reducers = 7;
        s.input_format = InputFormat::Tar;
        s.from = "out/views-1".into();
        s.full_if_changed = true;
        assert_eq!(JobSpec::from_pb(s.to_pb()), Ok(s));
        let d = JobSpec::from_pb(pb::JobSpec {
            job: "x".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (d.reducers, d.split_size, d.max_attempts),
            (1, DEFAULT_SPLIT_SIZE, 4)
        );
        assert_eq!(d.input_format, InputFormat::Lines);
        let zip = pb::JobSpec {
            input_format: "zip".into(),
            ..Default::default()
        };
        assert_eq!(
            JobSpec::from_pb(zip),
            Err(SpecError::InputFormat("zip".into()))
        );
    }

    #[test]
    fn input_formats_are_stored_by_name_and_older_empty_names_read_as_lines() {
        for f in InputFormat::ALL {
            let json = serde_json::to_string(&f).unwrap();
            assert_eq!(json, format!("\"{}\"", f.name()));
            assert_eq!(serde_json::from_str::<InputFormat>(&json).unwrap(), f);
        }
        let mut old = serde_json::to_value(JobSpec::new("v", vec![], "o")).unwrap();
        old["input_format"] = "".into();
        let spec: JobSpec = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(spec.input_format, InputFormat::Lines);
        old["input_format"] = "zip".into();
        assert!(serde_json::from_value::<JobSpec>(old).is_err());
    }
}
