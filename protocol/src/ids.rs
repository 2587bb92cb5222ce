//! Id newtypes, so that a job id can never be passed where an attempt id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.strip_prefix($prefix)
                    .unwrap_or(s)
                    .parse()
                    .map($name)
                    .map_err(|_| IdError { prefix: $prefix })
            }
        }
    };
}

/// A string that is not an id of the kind wanted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an id such as {prefix}4 (or just 4)")]
pub struct IdError {
    prefix: &'static str,
}

id_type!(
    /// A job, unique within one coordinator state directory.
    JobId,
    "job-"
);
id_type!(
    /// A worker registration; a worker that re-registers gets a new id.
    WorkerId,
    "worker-"
);
id_type!(
    /// One attempt of one task; never reused, so it can key the commit of that attempt.
    AttemptId,
    "attempt-"
);
id_type!(
    /// The coordinator's incarnation: bumped at every start, carried on every worker RPC.
    Epoch,
    "epoch-"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_and_parse_with_their_prefix() {
        assert_eq!(JobId(7).to_string(), "job-7");
        assert_eq!("job-7".parse::<JobId>().unwrap(), JobId(7));
        assert_eq!("7".parse::<JobId>().unwrap(), JobId(7));
        assert_eq!(
            "foo".parse::<JobId>().unwrap_err().to_string(),
            "expected an id such as job-4 (or just 4)"
        );
        assert!("job-x".parse::<JobId>().is_err());
    }
}
