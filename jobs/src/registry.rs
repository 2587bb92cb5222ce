//! Job names to job constructors, and the type-erased [`DynJob`] the executor runs.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use bytes::Bytes;

use crate::runtime::map::{run_map, run_state_map, MapConfig};
use crate::runtime::reduce::{run_reduce, ReduceSummary};
use crate::runtime::TaskError;
use crate::sdk::{Counters, Job};

/// Job parameters (`--param k=v`).
pub type Params = BTreeMap<String, String>;

/// A job name or its parameters are not valid.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// No job has this name.
    #[error("unknown job {name:?}; known jobs: {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The registered names.
        known: String,
    },
    /// A parameter the job does not take.
    #[error("job {job} takes no parameter {param:?} (it takes: {accepted})")]
    UnknownParam {
        /// The job.
        job: String,
        /// The parameter.
        param: String,
        /// The parameters it does take.
        accepted: String,
    },
    /// A parameter with a bad value.
    #[error("parameter {param}={value:?} of job {job}: {reason}")]
    BadParam {
        /// The job.
        job: String,
        /// The parameter.
        param: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A job with its types erased, so one executor can run any registered job. The runners
/// behind it are monomorphised per job, so erasure costs one virtual call per task.
pub trait DynJob: Send + Sync {
    /// Runs the task-level setup.
    ///
    /// # Errors
    /// The job's error.
    fn setup(&mut self, task: &crate::sdk::TaskSetup<'_>) -> Result<(), crate::sdk::HookError>;
    /// Runs a map task over `input` and writes its output file at `out`; `current` holds what
    /// is being mapped (read it after a panic). With `cfg.state`,
    /// `input` is a state file of an earlier output, folded in as it is.
    fn run_map(
        &mut self,
        input: &[u8],
        cfg: &MapConfig,
        out: &Path,
        current: &Cell<crate::runtime::map::Mapping>,
    ) -> Result<Counters, TaskError>;
    /// How the job's input is cut into records.
    fn input_format(&self) -> crate::InputFormat;
    /// Whether its map tasks want a GPU.
    fn wants_gpu(&self) -> bool;
    /// The parameters that name files ([`crate::Job::PATH_PARAMS`]).
    fn path_params(&self) -> &'static [&'static str];
    /// Whether the job keeps state beside its output ([`crate::Job::STATE`] with a combiner).
    fn keeps_state(&self) -> bool;
    /// The version of its definition ([`crate::Job::VERSION`]).
    fn version(&self) -> u32;
    /// Runs a reduce task over `runs` (one per map, in map order) into `out`, and its state
    /// into `state` where the job keeps state; more than
    /// [`crate::runtime::reduce::MERGE_FACTOR`] runs are first merged down to that many in
    /// files of `scratch` (counted as `reduce_merged_bytes`).
    fn run_reduce(
        &self,
        runs: Vec<crate::runtime::format::Run>,
        out: &mut dyn Write,
        state: Option<&mut dyn Write>,
        scratch: &std::path::Path,
    ) -> Result<ReduceSummary, TaskError>;
}

impl<J: Job> DynJob for J {
    fn setup(&mut self, task: &crate::sdk::TaskSetup<'_>) -> Result<(), crate::sdk::HookError> {
        Job::setup(self, task)
    }

    fn input_format(&self) -> crate::InputFormat {
        J::INPUT
    }

    fn wants_gpu(&self) -> bool {
        Job::wants_gpu(self)
    }

    fn path_params(&self) -> &'static [&'static str] {
        J::PATH_PARAMS
    }

    fn run_map(
        &mut self,
        input: &[u8],
        cfg: &MapConfig,
        out: &Path,
        current: &Cell<crate::runtime::map::Mapping>,
    ) -> Result<Counters, TaskError> {
        if cfg.state {
            run_state_map(self, Bytes::copy_from_slice(input), cfg, out)
        } else {
            run_map(self, input, cfg, out, current)
        }
    }

    fn keeps_state(&self) -> bool {
        J::STATE && J::COMBINE.is_some()
    }

    fn version(&self) -> u32 {
        J::VERSION
    }

    fn run_reduce(
        &self,
        runs: Vec<crate::runtime::format::Run>,
        out: &mut dyn Write,
        state: Option<&mut dyn Write>,
        scratch: &std::path::Path,
    ) -> Result<ReduceSummary, TaskError> {
        let (runs, merged) = crate::runtime::reduce::merge_passes(
            runs,
            crate::runtime::reduce::MERGE_FACTOR,
            scratch,
        )?;
        let mut summary = run_reduce(self, runs, out, state)?;
        if merged > 0 {
            summary.counters.add("reduce_merged_bytes", merged);
        }
        Ok(summary)
    }
}

/// Builds a job from its parameters.
pub type JobFactory = fn(&Params) -> Result<Box<dyn DynJob>, JobError>;

/// A registered job.
#[derive(Clone, Copy)]
pub struct JobInfo {
    /// The name users submit.
    pub name: &'static str,
    /// One line for `--help` and `quern jobs`.
    pub about: &'static str,
    /// The constructor.
    pub make: JobFactory,
}

/// The jobs a `quern` binary can run.
#[derive(Clone, Default)]
pub struct Registry {
    jobs: Vec<JobInfo>,
    /// Names whose registration is still the built-in one (not replaced by [`Self::register`]).
    builtin: Vec<&'static str>,
}

impl Registry {
    /// Returns the registry of built-in jobs.
    pub fn builtin() -> Self {
        let mut r = Registry::default();
        for info in crate::builtin::jobs() {
            r.register_builtin(info);
        }
        r
    }

    /// Adds a job that stock `quern` binaries carry too (the photos job, from its own crate),
    /// so submitting it ships no binary.
    pub fn register_builtin(&mut self, info: JobInfo) {
        self.register(info);
        self.builtin.push(info.name);
    }

    /// Returns whether `name` runs the built-in job of that name (a stock `quern` on the
    /// cluster runs the same code), rather than one this binary registered in its place.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&name)
    }

    /// Adds a job; a later registration of the same name replaces the earlier one (a job that
    /// replaces a built-in one is then shipped to the cluster like any custom job).
    pub fn register(&mut self, info: JobInfo) {
        self.jobs.retain(|j| j.name != info.name);
        self.builtin.retain(|n| *n != info.name);
        self.jobs.push(info);
    }

    /// Returns the registered jobs.
    pub fn jobs(&self) -> &[JobInfo] {
        &self.jobs
    }

    /// Builds job `name` with `params` (its per-task setup is run by whoever runs a task).
    ///
    /// # Errors
    /// [`JobError`] for an unknown name or bad parameters.
    pub fn create(&self, name: &str, params: &Params) -> Result<Box<dyn DynJob>, JobError> {
        let info = self
            .jobs
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| JobError::Unknown {
                name: name.to_string(),
                known: self
                    .jobs
                    .iter()
                    .map(|j| j.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        (info.make)(params)
    }
}

/// Checks that `params` holds only `accepted` names.
///
/// # Errors
/// [`JobError::UnknownParam`] naming the first unknown parameter.
pub fn check_params(job: &str, params: &Params, accepted: &[&str]) -> Result<(), JobError> {
    match params.keys().find(|k| !accepted.contains(&k.as_str())) {
        Some(k) => Err(JobError::UnknownParam {
            job: job.to_string(),
            param: k.clone(),
            accepted: if accepted.is_empty() {
                "none".to_string()
            } else {
                accepted.join(", ")
            },
        }),
        None => Ok(()),
    }
}

/// Parses an integer parameter, or returns `default` when absent.
///
/// # Errors
/// [`JobError::BadParam`] if the value is not an integer in `min..=max`.
pub fn int_param(
    job: &str,
    params: &Params,
    name: &str,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, JobError> {
    match params.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .ok_or_else(|| JobError::BadParam {
                job: job.to_string(),
                param: name.to_string(),
                value: v.clone(),
                reason: format!("expected an integer from {min} to {max}"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_registered_under_a_builtin_name_is_no_longer_builtin() {
        let mut r = Registry::builtin();
        assert!(r.is_builtin("wordcount") && r.is_builtin("views"));
        let mut mine = crate::builtin::jobs()
            .into_iter()
            .find(|j| j.name == "views")
            .unwrap();
        mine.name = "wordcount";
        r.register(mine);
        assert!(!r.is_builtin("wordcount"), "ship() must upload it");
        assert!(r.is_builtin("views"));
        assert!(!r.is_builtin("no-such-job"));
    }
}
