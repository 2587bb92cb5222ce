//! The kinds and states every process agrees on: one definition each, for the coordinator's
//! state, its journal, the worker, the client and the wire.

use serde::{Deserialize, Serialize};

use crate::pb;

/// Map or reduce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TaskKind {
    /// A map over one split.
    Map,
    /// A reduce of one partition.
    Reduce,
}

/// An attempt as people read and type it: `job-4/map-3/2`, the second attempt of map 3 of
/// job 4.
pub fn attempt_name(job: crate::JobId, kind: TaskKind, index: u32, number: u32) -> String {
    format!("{job}/{}-{index}/{number}", kind.name())
}

/// The name of an attempt's files on its worker (its log, its work directory):
/// `job-4-map-3-2-attempt-77`, readable first, then the attempt's id, which is unique also
/// where numbers start again (after a coordinator restart).
pub fn attempt_file_stem(
    job: crate::JobId,
    kind: TaskKind,
    index: u32,
    number: u32,
    attempt: crate::AttemptId,
) -> String {
    format!("{job}-{}-{index}-{number}-{attempt}", kind.name())
}

impl TaskKind {
    /// `map` or `reduce`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Map => "map",
            TaskKind::Reduce => "reduce",
        }
    }

    /// The wire's value.
    pub fn to_pb(self) -> pb::TaskKind {
        match self {
            TaskKind::Map => pb::TaskKind::Map,
            TaskKind::Reduce => pb::TaskKind::Reduce,
        }
    }

    /// From the wire's value; None for an unset or unknown one.
    pub fn from_pb(kind: i32) -> Option<TaskKind> {
        match pb::TaskKind::try_from(kind).ok()? {
            pb::TaskKind::Map => Some(TaskKind::Map),
            pb::TaskKind::Reduce => Some(TaskKind::Reduce),
            pb::TaskKind::Unspecified => None,
        }
    }
}

/// Where a job is in its life. Journaled by its lowercase name (`succeeded`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Tasks are running or waiting.
    Running,
    /// Every reduce committed; publishing the manifest and `_SUCCESS` (on the wire and for
    /// people: running).
    Publishing,
    /// Output committed.
    Succeeded,
    /// Failed; output discarded.
    Failed,
    /// Killed by a user; output discarded.
    Killed,
}

impl JobState {
    /// The state's name for people: running, succeeded, failed or killed.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running | JobState::Publishing => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Killed => "killed",
        }
    }

    /// Whether the job can change no more.
    pub fn is_over(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Killed
        )
    }

    /// The wire's value.
    pub fn to_pb(self) -> pb::JobState {
        match self {
            JobState::Running | JobState::Publishing => pb::JobState::Running,
            JobState::Succeeded => pb::JobState::Succeeded,
            JobState::Failed => pb::JobState::Failed,
            JobState::Killed => pb::JobState::Killed,
        }
    }

    /// From the wire's value; None for an unset or unknown one.
    pub fn from_pb(state: i32) -> Option<JobState> {
        match pb::JobState::try_from(state).ok()? {
            pb::JobState::Running => Some(JobState::Running),
            pb::JobState::Succeeded => Some(JobState::Succeeded),
            pb::JobState::Failed => Some(JobState::Failed),
            pb::JobState::Killed => Some(JobState::Killed),
            pb::JobState::Unspecified => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_cross_the_wire_and_the_journal_by_name() {
        for s in [
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Killed,
        ] {
            assert_eq!(JobState::from_pb(s.to_pb() as i32), Some(s));
        }
        assert_eq!(
            JobState::from_pb(JobState::Publishing.to_pb() as i32),
            Some(JobState::Running)
        );
        assert_eq!(
            serde_json::to_string(&JobState::Succeeded).unwrap(),
            "\"succeeded\""
        );
        assert!(serde_json::from_str::<JobState>("\"sideways\"").is_err());
        for k in [TaskKind::Map, TaskKind::Reduce] {
            assert_eq!(TaskKind::from_pb(k.to_pb() as i32), Some(k));
        }
        assert_eq!(TaskKind::from_pb(0), None);
    }
}
