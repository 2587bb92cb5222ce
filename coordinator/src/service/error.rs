//! The one error type of the coordinator's RPCs, and the one place it becomes a gRPC status
//! (Quickwit's `ServiceError` is the model): a handler or helper returns a [`ServiceError`],
//! domain errors convert into it with `?`, and [`From<ServiceError> for Status`] decides each
//! code.

use jobs::output::OutputError;
use tonic::Status;

use crate::journal::JournalDown;
use crate::schedule::ScheduleError;
use crate::state::CancelBackfillError;

/// Why a coordinator RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request itself is wrong (a bad spec, path, parameter or schedule).
    #[error("{0}")]
    InvalidArgument(String),
    /// What the request names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// What the request would create exists already.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is well formed but the cluster is not in a state to do it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller asked too often.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The coordinator failed doing it.
    #[error("{0}")]
    Internal(String),
    /// The output directory cannot be used.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A schedule definition or backfill range is not valid.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// A backfill cannot be cancelled.
    #[error(transparent)]
    Backfill(#[from] CancelBackfillError),
    /// The journal cannot be written: the coordinator is stopping.
    #[error(transparent)]
    Journal(#[from] JournalDown),
    /// The caller's request stream failed (an upload cut short): passed back as it came.
    #[error("{}", .0.message())]
    Stream(#[from] Status),
}

impl ServiceError {
    /// A bad request.
    pub fn invalid_argument(m: impl Into<String>) -> Self {
        ServiceError::InvalidArgument(m.into())
    }

    /// Nothing by that name.
    pub fn not_found(m: impl Into<String>) -> Self {
        ServiceError::NotFound(m.into())
    }

    /// It exists already.
    pub fn already_exists(m: impl Into<String>) -> Self {
        ServiceError::AlreadyExists(m.into())
    }

    /// Not now, or not here.
    pub fn failed_precondition(m: impl Into<String>) -> Self {
        ServiceError::FailedPrecondition(m.into())
    }

    /// Too often.
    pub fn resource_exhausted(m: impl Into<String>) -> Self {
        ServiceError::ResourceExhausted(m.into())
    }

    /// The coordinator's own failure.
    pub fn internal(m: impl Into<String>) -> Self {
        ServiceError::Internal(m.into())
    }
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let text = protocol::error_chain(&e);
        match e {
            ServiceError::InvalidArgument(_) | ServiceError::Schedule(_) => {
                Status::invalid_argument(text)
            }
            ServiceError::NotFound(_) => Status::not_found(text),
            ServiceError::AlreadyExists(_) => Status::already_exists(text),
            ServiceError::FailedPrecondition(_) => Status::failed_precondition(text),
            ServiceError::ResourceExhausted(_) => Status::resource_exhausted(text),
            ServiceError::Internal(_) => Status::internal(text),
            ServiceError::Journal(_) => Status::unavailable(text),
            ServiceError::Stream(s) => s,
            ServiceError::Output(o) => match o {
                OutputError::Exists { .. } | OutputError::NotEmpty { .. } => {
                    Status::already_exists(text)
                }
                OutputError::NotADirectory { .. } | OutputError::InputInside { .. } => {
                    Status::invalid_argument(text)
                }
                OutputError::Storage(_) | OutputError::MissingPart { .. } => {
                    Status::failed_precondition(text)
                }
            },
            ServiceError::Backfill(b) => match b {
                CancelBackfillError::NotFound { .. } => Status::not_found(text),
                CancelBackfillError::Over { .. } => Status::failed_precondition(text),
            },
        }
    }
}

impl From<JournalDown> for Status {
    fn from(e: JournalDown) -> Status {
        ServiceError::from(e).into()
    }
}
