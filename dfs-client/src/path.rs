//! Storage URLs: which backend, which path, validated once at the API boundary.

use std::path::PathBuf;

use crate::DfsError;

/// The backend a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Plain paths and `file://` URLs.
    Local,
}

/// A parsed storage URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfsPath {
    /// Which backend serves it.
    pub backend: Backend,
    /// The path within that backend.
    pub path: PathBuf,
}

impl DfsPath {
    /// Parses a URL or plain path.
    ///
    /// # Errors
    /// [`DfsError::UnsupportedScheme`] for schemes this build does not serve, and
    /// [`DfsError::InvalidPath`] for empty paths and paths holding NUL bytes.
    pub fn parse(url: &str) -> Result<Self, DfsError> {
        let invalid = |reason| DfsError::InvalidPath {
            url: url.to_string(),
            reason,
        };
        if url.is_empty() {
            return Err(invalid("empty path"));
        }
        if url.contains('\0') {
            return Err(invalid("path holds a NUL byte"));
        }
        let rest = if let Some(rest) = url.strip_prefix("file://") {
            rest
        } else if url.contains("://") {
            return Err(DfsError::UnsupportedScheme {
                url: url.to_string(),
            });
        } else {
            url
        };
        if rest.is_empty() {
            return Err(invalid("empty path"));
        }
        Ok(DfsPath {
            backend: Backend::Local,
            path: PathBuf::from(rest),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_file_urls() {
        assert_eq!(DfsPath::parse("a/b").unwrap().path, PathBuf::from("a/b"));
        assert_eq!(
            DfsPath::parse("file:///tmp/x").unwrap().path,
            PathBuf::from("/tmp/x")
        );
    }

    #[test]
    fn refuses_unknown_schemes_and_bad_paths() {
        assert!(matches!(
            DfsPath::parse("gopher://x"),
            Err(DfsError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            DfsPath::parse(""),
            Err(DfsError::InvalidPath { .. })
        ));
        assert!(matches!(
            DfsPath::parse("a\0b"),
            Err(DfsError::InvalidPath { .. })
        ));
    }
}
