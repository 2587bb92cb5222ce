//! Bearer tokens with roles: who may call what on a Quern cluster.
//!
//! A token is `qrn_<id>_<secret>`: the id (16 hex digits) names its entry in the token file,
//! the secret is 32 random bytes in hex. The file keeps only the SHA-256 of each token, its
//! role, a name and when it was made, so reading the file does not give a token away; a
//! presented token is hashed and compared with the stored hash in constant time. (A slow
//! password hash buys nothing for 256-bit random secrets.)
//!
//! Roles: `admin` may call everything; `submit` may submit, kill and schedule jobs and read;
//! `read` may only read (status, lists, logs, the web UI and API); `worker` is what worker
//! daemons present (register, heartbeat, report, fetch job binaries) and nothing else.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The metadata key (and HTTP header) a token travels in: `authorization: Bearer <token>`.
pub const HEADER: &str = "authorization";
/// Environment variable the CLI and daemons read a token from.
pub const TOKEN_ENV: &str = "QUERN_TOKEN";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Submit, kill and schedule jobs, upload job binaries; and read.
    Submit,
    /// Read: job status, lists, logs, the web UI and API.
    Read,
    /// A worker daemon: register, heartbeat, report, fetch job binaries.
    Worker,
}

impl Role {
    /// Parses `admin`, `submit`, `read` or `worker`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "submit" => Some(Role::Submit),
            "read" => Some(Role::Read),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }

    /// Whether a token of this role may do what needs `need`.
    pub fn allows(self, need: Role) -> bool {
        match self {
            Role::Admin => true,
            Role::Submit => matches!(need, Role::Submit | Role::Read),
            Role::Read => need == Role::Read,
            Role::Worker => need == Role::Worker,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::Submit => "submit",
            Role::Read => "read",
            Role::Worker => "worker",
        })
    }
}

/// One token of the token file (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// The id the token starts with.
    pub id: String,
    /// A name for people (`ci`, `worker-3`, `alice`).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    /// When it was made (seconds since the Unix epoch).
    pub created: u64,
}

/// Errors reading or writing the token file.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("token file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a token file.
    #[error("token file {path} is malformed: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No token has that id or name.
    #[error("no token {0:?}")]
    Unknown(String),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `authorization: Bearer` header.
    #[error("authentication required: send a token (`--token`, or QUERN_TOKEN) as `authorization: Bearer <token>`")]
    Missing,
    /// A token that matches no entry (wrong, revoked, or malformed).
    #[error("invalid or revoked token")]
    Invalid,
    /// A valid token whose role does not allow the call.
    #[error("the {role} role may not {what}")]
    Role {
        /// The token's role.
        role: Role,
        /// What was asked.
        what: String,
    },
}

/// The token file: entries, loaded from and saved to a JSON file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile {
    /// The tokens.
    pub tokens: Vec<TokenEntry>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(hex(&buf))
}

/// Writes a secret file atomically (a temporary file renamed into place), readable by its
/// owner only, creating its directory: token files, tokens, keys.
///
/// # Errors
/// The I/O error.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // A name of its own per call: threads of one process may write the same file at once
    // (two attempts of a job keeping its secret), and each rename must find its own file.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// SHA-256 of a token, hex.
pub fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the comparison from being turned into an early exit.
    std::hint::black_box(diff) == 0
}

/// The id part of a token, if it has the token form.
fn token_id(token: &str) -> Option<&str> {
    let rest = token.strip_prefix("qrn_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 16 && secret.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(id)
}

impl TokenFile {
    /// Reads the file at `path`; a missing file is an empty one.
    ///
    /// # Errors
    /// [`TokenError`] for an unreadable or malformed file.
    pub fn load(path: &Path) -> Result<TokenFile, TokenError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| TokenError::Malformed {
                path: path.into(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
            Err(source) => Err(TokenError::Io {
                path: path.into(),
                source,
            }),
        }
    }

    /// Writes the file atomically, readable by its owner only.
    ///
    /// # Errors
    /// [`TokenError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let mut json = serde_json::to_vec_pretty(self).expect("token file serialises");
        json.push(b'\n');
        write_private(path, &json).map_err(|source| TokenError::Io {
            path: path.into(),
            source,
        })
    }

    /// Makes a token with `role` and `name`, adds its entry, and returns the token (shown
    /// once; only its hash is kept).
    ///
    /// # Errors
    /// [`TokenError::Io`] if no randomness can be read.
    pub fn create(&mut self, role: Role, name: &str) -> Result<String, TokenError> {
        let io = |source| TokenError::Io {
            path: "/dev/urandom".into(),
            source,
        };
        let token = format!(
            "qrn_{}_{}",
            random_hex(8).map_err(io)?,
            random_hex(32).map_err(io)?
        );
        let id = token_id(&token)
            .expect("a token we made has the token form")
            .to_string();
        let created = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.tokens.push(TokenEntry {
            id,
            name: name.to_string(),
            role,
            sha256: digest(&token),
            created,
        });
        Ok(token)
    }

    /// Removes the token with this id or name.
    ///
    /// # Errors
    /// [`TokenError::Unknown`].
    pub fn revoke(&mut self, id_or_name: &str) -> Result<TokenEntry, TokenError> {
        let i = self
            .tokens
            .iter()
            .position(|t| t.id == id_or_name || t.name == id_or_name)
            .ok_or_else(|| TokenError::Unknown(id_or_name.to_string()))?;
        Ok(self.tokens.remove(i))
    }

    /// The role of `token`, if it is one of this file's.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let id = token_id(token)?;
        let entry = self.tokens.iter().find(|t| t.id == id)?;
        let presented = digest(token);
        constant_time_eq(presented.as_bytes(), entry.sha256.as_bytes()).then_some(entry.role)
    }
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the hashes.
        f.debug_struct("Authenticator")
            .field("path", &self.path)
            .finish()
    }
}

/// A token file as the daemons use it: re-read when it changes on disk, so that
/// `quern token create` and `revoke` take effect without a restart.
pub struct Authenticator {
    path: PathBuf,
    cached: Mutex<(Option<SystemTime>, TokenFile)>,
}

impl Authenticator {
    /// Reads `path`.
    ///
    /// # Errors
    /// [`TokenError`] for an unreadable or malformed file.
    pub fn open(path: impl Into<PathBuf>) -> Result<Authenticator, TokenError> {
        let path = path.into();
        let file = TokenFile::load(&path)?;
        let mtime = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
        Ok(Authenticator {
            path,
            cached: Mutex::new((mtime, file)),
        })
    }

    /// The token file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many tokens the file holds.
    pub fn tokens(&self) -> usize {
        self.cached
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .tokens
            .len()
    }

    /// Checks the `authorization` value `header` for a call that needs `need`, described as
    /// `what` in a refusal.
    ///
    /// # Errors
    /// [`Denied`] saying why.
    pub fn check(&self, header: Option<&str>, need: Role, what: &str) -> Result<Role, Denied> {
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(Denied::Missing)?;
        let role = {
            let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if mtime != cached.0 {
                // A file being rewritten may be briefly unreadable: keep the last good one.
                if let Ok(f) = TokenFile::load(&self.path) {
                    *cached = (mtime, f);
                }
            }
            cached.1.role_of(token)
        }
        .ok_or(Denied::Invalid)?;
        if role.allows(need) {
            Ok(role)
        } else {
            Err(Denied::Role {
                role,
                what: what.to_string(),
            })
        }
    }
}

/// A client-side interceptor that sends a bearer token with every call (or nothing, when
/// there is no token).
#[derive(Clone, Debug, Default)]
pub struct ClientAuth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

/// A channel whose calls carry a token.
pub type Authed<T> = tonic::service::interceptor::InterceptedService<T, ClientAuth>;

impl ClientAuth {
    /// Sends `token`, if any. A token that is not a valid header value is not sent (the
    /// server then refuses the call as unauthenticated).
    pub fn new(token: Option<&str>) -> Self {
        ClientAuth(token.and_then(|t| bearer(t.trim()).parse().ok()))
    }

    /// Sends the token in `QUERN_TOKEN`, if set.
    pub fn from_env() -> Self {
        ClientAuth::new(std::env::var(TOKEN_ENV).ok().as_deref())
    }
}

impl tonic::service::Interceptor for ClientAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert(HEADER, v.clone());
        }
        Ok(req)
    }
}

fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Bytes of a coordinator's shuffle master key.
pub const SHUFFLE_KEY_BYTES: usize = 32;

/// A fresh random shuffle master key.
///
/// # Errors
/// If no randomness can be read.
pub fn new_shuffle_key() -> std::io::Result<Vec<u8>> {
    let mut key = vec![0u8; SHUFFLE_KEY_BYTES];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
    Ok(key)
}

/// A job's shuffle secret, derived from the coordinator's master key (so a restarted
/// coordinator gives the same secret to the same job).
pub fn job_secret(master: &[u8], job: u64) -> Vec<u8> {
    hmac(
        master,
        format!("quern shuffle secret of job {job}").as_bytes(),
    )
    .to_vec()
}

/// The token a reducer presents to fetch `partition` of a map output: an HMAC with the
/// job's secret over job, map, map attempt (whose id carries the coordinator epoch) and
/// partition.
pub fn shuffle_token(
    secret: &[u8],
    job: u64,
    map: u32,
    map_attempt: u64,
    partition: u32,
) -> Vec<u8> {
    hmac(
        secret,
        format!("fetch {job} {map} {map_attempt} {partition}").as_bytes(),
    )
    .to_vec()
}

/// Whether `token` is the right one for that fetch, compared in constant time.
pub fn check_shuffle_token(
    secret: &[u8],
    job: u64,
    map: u32,
    map_attempt: u64,
    partition: u32,
    token: &[u8],
) -> bool {
    !secret.is_empty()
        && constant_time_eq(
            &shuffle_token(secret, job, map, map_attempt, partition),
            token,
        )
}

/// The token that opens one attempt's log on the worker that ran it.
pub fn log_token(secret: &[u8], job: u64, attempt: u64) -> Vec<u8> {
    hmac(secret, format!("log {job} {attempt}").as_bytes()).to_vec()
}

/// Whether `token` opens that attempt's log, compared in constant time.
pub fn check_log_token(secret: &[u8], job: u64, attempt: u64, token: &[u8]) -> bool {
    !secret.is_empty() && constant_time_eq(&log_token(secret, job, attempt), token)
}

/// Whether an address is loopback only (`127.0.0.0/8`, `::1`).
pub fn is_loopback(addr: &std::net::SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// The `authorization` header value for `token`.
pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shuffle_token_opens_only_its_own_job_map_and_partition() {
        let master = new_shuffle_key().unwrap();
        let (s1, s2) = (job_secret(&master, 1), job_secret(&master, 2));
        assert_eq!(
            s1,
            job_secret(&master, 1),
            "derived, so stable across restarts"
        );
        assert_ne!(s1, s2);
        let t = shuffle_token(&s1, 1, 3, 77, 0);
        assert!(check_shuffle_token(&s1, 1, 3, 77, 0, &t));
        // Another job (its own secret or this one), map, attempt or partition: refused.
        assert!(!check_shuffle_token(&s2, 2, 3, 77, 0, &t));
        assert!(!check_shuffle_token(&s1, 2, 3, 77, 0, &t));
        assert!(!check_shuffle_token(&s1, 1, 4, 77, 0, &t));
        assert!(!check_shuffle_token(&s1, 1, 3, 78, 0, &t));
        assert!(!check_shuffle_token(&s1, 1, 3, 77, 1, &t));
        assert!(!check_shuffle_token(
            &s1,
            1,
            3,
            77,
            0,
            &shuffle_token(&s2, 1, 3, 77, 0)
        ));
        assert!(!check_shuffle_token(&s1, 1, 3, 77, 0, b""));
        assert!(!check_shuffle_token(b"", 1, 3, 77, 0, &t));
        let l = log_token(&s1, 1, 77);
        assert!(check_log_token(&s1, 1, 77, &l));
        assert!(!check_log_token(&s1, 1, 78, &l) && !check_log_token(&s2, 2, 77, &l));
        assert!(
            !check_log_token(&s1, 1, 77, &t),
            "a fetch token is not a log token"
        );
    }

    #[test]
    fn tokens_check_their_role_and_are_stored_hashed() {
        let dir = std::env::temp_dir().join(format!("quern-auth-{}", std::process::id()));
        let path = dir.join("tokens.json");
        let mut f = TokenFile::default();
        let admin = f.create(Role::Admin, "root").unwrap();
        let reader = f.create(Role::Read, "dash").unwrap();
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&admin[20..]) && !text.contains(&reader[20..]),
            "secrets are not stored"
        );
        let auth = Authenticator::open(&path).unwrap();
        assert_eq!(
            auth.check(Some(&bearer(&admin)), Role::Submit, "submit"),
            Ok(Role::Admin)
        );
        assert_eq!(
            auth.check(Some(&bearer(&reader)), Role::Read, "read"),
            Ok(Role::Read)
        );
        assert!(matches!(
            auth.check(Some(&bearer(&reader)), Role::Submit, "submit"),
            Err(Denied::Role { .. })
        ));
        assert_eq!(auth.check(None, Role::Read, "read"), Err(Denied::Missing));
        assert_eq!(
            auth.check(Some("Bearer nonsense"), Role::Read, "read"),
            Err(Denied::Invalid)
        );
        let mut forged = reader.clone();
        forged.pop();
        forged.push(if reader.ends_with('0') { '1' } else { '0' });
        assert_eq!(
            auth.check(Some(&bearer(&forged)), Role::Read, "read"),
            Err(Denied::Invalid)
        );
        // Revoking takes effect without reopening.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut f = TokenFile::load(&path).unwrap();
        f.revoke("dash").unwrap();
        f.save(&path).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(1);
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(later).unwrap();
        assert_eq!(
            auth.check(Some(&bearer(&reader)), Role::Read, "read"),
            Err(Denied::Invalid)
        );
        assert!(Role::Worker.allows(Role::Worker) && !Role::Worker.allows(Role::Read));
        let _ = std::fs::remove_dir_all(dir);
    }
}
