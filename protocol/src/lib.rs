//! Quern's wire protocol: the gRPC services between coordinator, workers and clients, the id
//! newtypes that travel on them, and the [`FailureKind`] that tells the coordinator what to do
//! with a failed attempt.
//!
//! Layout:
//! - [`pb`]: code generated from `proto/quern/v1/*.proto` (one service per process);
//! - [`ids`]: `JobId`, `WorkerId`, `AttemptId`, `Epoch`;
//! - [`failure`]: `FailureKind` and its mapping to and from the wire;
//! - [`spec`]: the [`JobSpec`] a user submits;
//! - [`task`]: [`TaskKind`] and [`JobState`], shared by every process;
//! - [`failpoint`]: named points where fault tests pause, slow or fail a process;
//! - [`dirlock`]: one process per state or worker directory;
//! - [`binary`]: hashing and platform checks of uploaded job binaries;
//! - [`auth`]: tokens, roles, shuffle and log HMACs;
//! - [`tls`]: TLS settings of servers and clients.
#![warn(missing_docs)]

pub mod auth;
pub mod binary;
pub mod dirlock;
pub mod failpoint;
pub mod failure;
pub mod ids;
pub mod pb;
pub mod spec;
pub mod task;
pub mod tls;

pub use failure::FailureKind;
pub use ids::{AttemptId, Epoch, JobId, WorkerId};
pub use spec::{InputFormat, JobSpec, SpecError};
pub use task::{JobState, TaskKind};

/// An error with its causes, joined with `: `; a cause already written out by the error
/// before it (as `"...: {source}"` does) is not repeated. The one way Quern shows an error's
/// chain to people (a connection's "transport error" alone does not say that the
/// certificate was refused).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Largest gRPC message any Quern service accepts or sends. Bulk data moves in frames far
/// below this (see [`SHUFFLE_FRAME_BYTES`]).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Size of one shuffle frame on the wire.
pub const SHUFFLE_FRAME_BYTES: usize = 1024 * 1024;

/// A name that breaks the rule of [`check_name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad {what} name {name:?}: use 1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-'")]
pub struct NameError {
    /// What the name names (`job`, `schedule`, ...).
    pub what: String,
    /// The name.
    pub name: String,
}

/// Checks a name people give to something (a schedule, a job, a parameter key, a
/// certificate): 1-64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`, so that it is safe as
/// a file name, a URL segment and a log field.
///
/// # Errors
/// [`NameError`], naming `what` and the rule.
pub fn check_name(what: &str, name: &str) -> Result<(), NameError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(NameError {
            what: what.to_string(),
            name: name.to_string(),
        })
    }
}

/// The Quern version of this build; a job binary must be built against the cluster's version.
pub const QUERN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// This build's platform, `arch-os` (e.g. `x86_64-linux`); a job binary must match the
/// cluster's.
pub fn platform() -> String {
    format!("{}-{}", std::env::consts::ARCH, std::env::consts::OS)
}

/// Largest job binary a coordinator accepts.
pub const MAX_BINARY_BYTES: u64 = 1 << 30;
