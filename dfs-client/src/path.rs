//! Storage URLs: which backend, which path, validated once at the API boundary, before any I/O.
//!
//! Forms: a plain path or `file:///abs/path` (local files); `seaweedfs://FILER_HOST:PORT/path`;
//! `s3://bucket/key`. Rules for every backend: no NUL byte, no `..` component, no empty or
//! `.` component (a leading `./` of a plain relative path is allowed and dropped, a trailing
//! `/` is allowed), at most 255 bytes per component and 4096 in all. Globs (`*`, `?`) are
//! allowed in the last component of a listing.

use std::path::PathBuf;

use crate::DfsError;

/// Longest path component accepted.
pub const MAX_COMPONENT: usize = 255;
/// Longest path accepted.
pub const MAX_PATH: usize = 4096;

/// The backend a URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Plain paths and `file://` URLs.
    Local,
    /// A SeaweedFS filer at `host:port`.
    SeaweedFs {
        /// The filer's `host:port`.
        filer: String,
    },
    /// An S3-compatible bucket.
    S3 {
        /// The bucket.
        bucket: String,
    },
}

/// A parsed storage URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DfsPath {
    /// Which backend serves it.
    pub backend: Backend,
    /// The path within that backend: a file-system path for local files, an absolute path
    /// (`/a/b`) for SeaweedFS, a key without leading `/` for S3.
    pub path: String,
}

impl DfsPath {
    /// Returns the local file-system path (local backend only).
    pub fn local(&self) -> PathBuf {
        PathBuf::from(&self.path)
    }

    /// Parses and validates a URL or plain path.
    ///
    /// # Errors
    /// [`DfsError::UnsupportedScheme`] for an unknown scheme, [`DfsError::InvalidPath`] naming
    /// the rule a path breaks.
    pub fn parse(url: &str) -> Result<Self, DfsError> {
        let invalid = |reason: &'static str| DfsError::InvalidPath {
            url: url.to_string(),
            reason,
        };
        if url.contains('\0') {
            return Err(invalid("a path may not hold a NUL byte"));
        }
        if url.len() > MAX_PATH {
            return Err(invalid("a path may be at most 4096 bytes"));
        }
        let (backend, rest) = if let Some(rest) = url.strip_prefix("file://") {
            (Backend::Local, rest.to_string())
        } else if let Some(rest) = url.strip_prefix("seaweedfs://") {
            let (filer, path) = rest
                .split_once('/')
                .ok_or_else(|| invalid("seaweedfs:// needs FILER_HOST:PORT/path"))?;
            if filer.is_empty() || !filer.contains(':') {
                return Err(invalid("seaweedfs:// needs FILER_HOST:PORT/path"));
            }
            (
                Backend::SeaweedFs {
                    filer: filer.to_string(),
                },
                format!("/{path}"),
            )
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid("s3:// needs a bucket"));
            }
            (
                Backend::S3 {
                    bucket: bucket.to_string(),
                },
                key.to_string(),
            )
        } else if url.contains("://") {
            return Err(DfsError::UnsupportedScheme {
                url: url.to_string(),
            });
        } else {
            (
                Backend::Local,
                url.strip_prefix("./").unwrap_or(url).to_string(),
            )
        };
        let body = rest.trim_end_matches('/');
        let body = if backend == Backend::Local || matches!(backend, Backend::SeaweedFs { .. }) {
            body.strip_prefix('/').unwrap_or(body)
        } else {
            body
        };
        if body.is_empty() && backend == Backend::Local {
            return Err(invalid("empty path"));
        }
        if !body.is_empty() {
            for c in body.split('/') {
                match c {
                    "" => return Err(invalid("a path may not hold an empty component (`//`)")),
                    "." => return Err(invalid("a path may not hold a `.` component")),
                    ".." => return Err(invalid("a path may not hold a `..` component")),
                    c if c.len() > MAX_COMPONENT => {
                        return Err(invalid("a path component may be at most 255 bytes"))
                    }
                    _ => {}
                }
            }
        }
        let path = match backend {
            Backend::Local => rest.trim_end_matches('/').to_string(),
            Backend::SeaweedFs { .. } => format!("/{body}"),
            Backend::S3 { .. } => body.to_string(),
        };
        Ok(DfsPath { backend, path })
    }

    /// Returns the URL of `name` inside this directory.
    pub fn child_url(&self, name: &str) -> String {
        match &self.backend {
            Backend::Local => format!("{}/{name}", self.path.trim_end_matches('/')),
            Backend::SeaweedFs { filer } => format!(
                "seaweedfs://{filer}{}/{name}",
                self.path.trim_end_matches('/')
            ),
            Backend::S3 { bucket } if self.path.is_empty() => format!("s3://{bucket}/{name}"),
            Backend::S3 { bucket } => format!("s3://{bucket}/{}/{name}", self.path),
        }
    }

    /// Returns the URL of this path.
    pub fn url(&self) -> String {
        match &self.backend {
            Backend::Local => self.path.clone(),
            Backend::SeaweedFs { filer } => format!("seaweedfs://{filer}{}", self.path),
            Backend::S3 { bucket } => format!("s3://{bucket}/{}", self.path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_url_form() {
        assert_eq!(DfsPath::parse("a/b").unwrap().path, "a/b");
        assert_eq!(DfsPath::parse("./a/b/").unwrap().path, "a/b");
        assert_eq!(DfsPath::parse("file:///tmp/x").unwrap().path, "/tmp/x");
        let s = DfsPath::parse("seaweedfs://127.0.0.1:8888/logs/a.log").unwrap();
        assert_eq!(
            s.backend,
            Backend::SeaweedFs {
                filer: "127.0.0.1:8888".into()
            }
        );
        assert_eq!(s.path, "/logs/a.log");
        assert_eq!(s.url(), "seaweedfs://127.0.0.1:8888/logs/a.log");
        let s3 = DfsPath::parse("s3://bucket/out/part-0").unwrap();
        assert_eq!(
            (s3.backend, s3.path.as_str()),
            (
                Backend::S3 {
                    bucket: "bucket".into()
                },
                "out/part-0"
            )
        );
        assert_eq!(DfsPath::parse("s3://bucket").unwrap().path, "");
    }

    #[test]
    fn refuses_bad_paths_naming_the_rule_for_every_backend() {
        let long = "x".repeat(256);
        let cases = [
            ("../../etc/passwd", "`..`"),
            ("a/../b", "`..`"),
            ("a//b", "empty component"),
            ("a/./b", "`.` component"),
            ("a\0b", "NUL"),
            (long.as_str(), "255 bytes"),
        ];
        for prefix in ["", "file:///base/", "seaweedfs://h:1/", "s3://bucket/"] {
            for (path, rule) in cases {
                let url = format!("{prefix}{path}");
                match DfsPath::parse(&url) {
                    Err(DfsError::InvalidPath { reason, .. }) => {
                        assert!(reason.contains(rule), "{url}: {reason}")
                    }
                    other => panic!("{url:?} accepted: {other:?}"),
                }
            }
        }
        assert!(matches!(
            DfsPath::parse(&"a/".repeat(2100)),
            Err(DfsError::InvalidPath { .. })
        ));
        assert!(matches!(
            DfsPath::parse("gopher://x"),
            Err(DfsError::UnsupportedScheme { .. })
        ));
        assert!(matches!(
            DfsPath::parse(""),
            Err(DfsError::InvalidPath { .. })
        ));
        assert!(matches!(
            DfsPath::parse("seaweedfs://nofiler"),
            Err(DfsError::InvalidPath { .. })
        ));
    }
}
