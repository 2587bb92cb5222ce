//! What a failed attempt means for scheduling.

use serde::{Deserialize, Serialize};

use crate::pb;

/// How the coordinator treats a failed attempt, decided by the side that failed so that
/// nobody parses error strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureKind {
    /// Run the task again (counts towards its attempts).
    Retryable,
    /// An upstream map output could not be read: re-run that map, then this task.
    LostInput,
    /// Retrying cannot help: fail the job.
    Fatal,
    /// The coordinator cancelled the attempt.
    Cancelled,
}

impl FailureKind {
    /// Returns the wire form.
    pub fn to_pb(self) -> pb::FailureKind {
        match self {
            FailureKind::Retryable => pb::FailureKind::Retryable,
            FailureKind::LostInput => pb::FailureKind::LostInput,
            FailureKind::Fatal => pb::FailureKind::Fatal,
            FailureKind::Cancelled => pb::FailureKind::Cancelled,
        }
    }

    /// Reads the wire form; an unknown value is treated as retryable.
    pub fn from_pb(kind: i32) -> Self {
        match pb::FailureKind::try_from(kind) {
            Ok(pb::FailureKind::LostInput) => FailureKind::LostInput,
            Ok(pb::FailureKind::Fatal) => FailureKind::Fatal,
            Ok(pb::FailureKind::Cancelled) => FailureKind::Cancelled,
            _ => FailureKind::Retryable,
        }
    }

    /// Returns the gRPC status code an RPC failing with this kind should carry.
    pub fn to_code(self) -> tonic::Code {
        match self {
            FailureKind::Retryable => tonic::Code::Unavailable,
            FailureKind::LostInput => tonic::Code::NotFound,
            FailureKind::Fatal => tonic::Code::InvalidArgument,
            FailureKind::Cancelled => tonic::Code::Cancelled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_the_wire() {
        for k in [
            FailureKind::Retryable,
            FailureKind::LostInput,
            FailureKind::Fatal,
            FailureKind::Cancelled,
        ] {
            assert_eq!(FailureKind::from_pb(k.to_pb() as i32), k);
        }
        assert_eq!(FailureKind::from_pb(99), FailureKind::Retryable);
    }
}
