//! TLS for every Quern connection: the coordinator's gRPC and HTTP ports, the workers' shuffle
//! ports, and the clients of each.
//!
//! A cluster is either all TLS or all plaintext. With TLS, every server presents a certificate
//! signed by the cluster's CA, and every client checks it against that CA; a plaintext client
//! fails its handshake. With mutual TLS the coordinator also asks each client for a
//! certificate signed by the CA: a worker (or any client) is then identified by its
//! certificate, whose organizational unit names its role (see `quern certs init`).
//!
//! Clients find their settings in flags or in the environment ([`CA_ENV`], [`CERT_ENV`],
//! [`KEY_ENV`]); a worker hands its settings to its executors through the same variables.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

/// The CA certificate (PEM file) a client trusts; set, every connection uses TLS.
pub const CA_ENV: &str = "QUERN_TLS_CA";
/// A client's own certificate (PEM file), for mutual TLS.
pub const CERT_ENV: &str = "QUERN_TLS_CERT";
/// The key (PEM file) of [`CERT_ENV`]'s certificate.
pub const KEY_ENV: &str = "QUERN_TLS_KEY";

/// A TLS file that could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Settings that do not go together.
    #[error("{0}")]
    Config(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A PEM file that should hold `what` (`CERTIFICATE`, `PRIVATE KEY`): a clear error when it
/// does not.
fn pem(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    let data = read(path)?;
    let text = String::from_utf8_lossy(&data);
    // A key's label may name its kind (`BEGIN EC PRIVATE KEY`).
    let found = match what {
        "PRIVATE KEY" => text.contains("PRIVATE KEY-----"),
        _ => text.contains(&format!("-----BEGIN {what}")),
    };
    if !found {
        return Err(TlsError::Config(format!(
            "{} holds no PEM {}",
            path.display(),
            what.to_lowercase()
        )));
    }
    Ok(data)
}

/// A server's TLS settings: its certificate and key, and for mutual TLS the CA whose
/// certificates clients must present.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The certificate chain, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
    /// The CA of client certificates (PEM), when clients must present one.
    pub client_ca_pem: Option<Vec<u8>>,
}

impl ServerTls {
    /// Reads the server's certificate and key, and the client CA if any.
    ///
    /// # Errors
    /// [`TlsError`] for a missing or unreadable file, or one that holds no PEM of its kind.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, TlsError> {
        Ok(ServerTls {
            cert_pem: pem(cert, "CERTIFICATE")?,
            key_pem: pem(key, "PRIVATE KEY")?,
            client_ca_pem: client_ca.map(|p| pem(p, "CERTIFICATE")).transpose()?,
        })
    }

    /// Reads `--tls-cert`/`--tls-key` (both or neither).
    ///
    /// # Errors
    /// [`TlsError`] when only one is given, or a file cannot be used.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        client_ca: Option<&Path>,
    ) -> Result<Option<ServerTls>, TlsError> {
        match (cert, key) {
            (Some(c), Some(k)) => ServerTls::load(c, k, client_ca).map(Some),
            (None, None) if client_ca.is_none() => Ok(None),
            (None, None) => Err(TlsError::Config(
                "mutual TLS (--mtls) needs the server's own --tls-cert and --tls-key".into(),
            )),
            _ => Err(TlsError::Config(
                "--tls-cert and --tls-key go together".into(),
            )),
        }
    }

    /// Whether clients must present a certificate (mutual TLS).
    pub fn mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// The settings for a tonic server.
    pub fn tonic(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(Identity::from_pem(
            self.cert_pem.clone(),
            self.key_pem.clone(),
        ));
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca.clone())),
            None => config,
        }
    }
}

/// A client's TLS settings: the CA it trusts and, for mutual TLS, its own certificate.
#[derive(Clone, Debug)]
pub struct ClientTls {
    /// The CA's certificate, PEM.
    pub ca_pem: Vec<u8>,
    /// The client's certificate and key (PEM), if it has one.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    files: (PathBuf, Option<(PathBuf, PathBuf)>),
}

impl ClientTls {
    /// Reads the CA and, if given, the client's certificate and key.
    ///
    /// # Errors
    /// [`TlsError`] for a file that cannot be used, or a certificate without its key.
    pub fn load(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<ClientTls, TlsError> {
        let files = match (cert, key) {
            (Some(c), Some(k)) => Some((c.to_path_buf(), k.to_path_buf())),
            (None, None) => None,
            _ => {
                return Err(TlsError::Config(
                    "a client certificate and its key go together".into(),
                ))
            }
        };
        let identity = match &files {
            Some((c, k)) => Some((pem(c, "CERTIFICATE")?, pem(k, "PRIVATE KEY")?)),
            None => None,
        };
        Ok(ClientTls {
            ca_pem: pem(ca, "CERTIFICATE")?,
            identity,
            files: (ca.to_path_buf(), files),
        })
    }

    /// Reads the settings named by [`CA_ENV`], [`CERT_ENV`] and [`KEY_ENV`]; `None` when no
    /// CA is named (plaintext).
    ///
    /// # Errors
    /// [`TlsError`] for files that cannot be used.
    pub fn from_env() -> Result<Option<ClientTls>, TlsError> {
        let var = |n| {
            std::env::var_os(n)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        match var(CA_ENV) {
            Some(ca) => {
                ClientTls::load(&ca, var(CERT_ENV).as_deref(), var(KEY_ENV).as_deref()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The environment that makes a child process (an executor) use these settings.
    pub fn env(&self) -> Vec<(&'static str, PathBuf)> {
        let mut env = vec![(CA_ENV, self.files.0.clone())];
        if let Some((c, k)) = &self.files.1 {
            env.push((CERT_ENV, c.clone()));
            env.push((KEY_ENV, k.clone()));
        }
        env
    }

    fn tonic(&self) -> ClientTlsConfig {
        let config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(self.ca_pem.clone()));
        match &self.identity {
            Some((c, k)) => config.identity(Identity::from_pem(c.clone(), k.clone())),
            None => config,
        }
    }
}

/// An endpoint for `addr` (`host:port` or a URL): `https` with `tls`'s settings, `http`
/// without. A URL's own scheme must agree.
///
/// # Errors
/// For an address that is not a URI, or `https://` without TLS settings.
pub fn endpoint(addr: &str, tls: Option<&ClientTls>) -> Result<Endpoint, tonic::transport::Error> {
    let rest = addr
        .strip_prefix("http://")
        .or_else(|| addr.strip_prefix("https://"))
        .unwrap_or(addr);
    let url = match tls {
        Some(_) => format!("https://{rest}"),
        None => format!("http://{rest}"),
    };
    let endpoint = Endpoint::from_shared(url)?;
    match tls {
        Some(t) => endpoint.tls_config(t.tonic()),
        None => Ok(endpoint),
    }
}

/// How long a connection to a Quern peer (a worker's to the coordinator, a reduce's to a
/// worker) may take to open.
pub const PEER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How often an open connection to a Quern peer is pinged, and how long the answer may take
/// before the connection is dropped and its calls fail: a peer whose host went away, or whose
/// process stopped, is given up on within half a minute rather than when TCP gives up (a
/// connection opening to a host that is gone took over a minute; one open, longer; after a
/// partition heals, TCP's retransmission backoff can leave an open one silent for minutes).
/// Generous, since a false alarm costs work done again (a busy peer's runtime answers pings
/// between its tasks' polls; how long that can take under load was not measured).
pub const PEER_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10);
/// See [`PEER_KEEPALIVE`].
pub const PEER_KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// `endpoint` with Quern's limits for a connection to a peer: [`PEER_CONNECT_TIMEOUT`], and
/// pings every [`PEER_KEEPALIVE`], idle or not, answered within [`PEER_KEEPALIVE_TIMEOUT`].
pub fn watched(endpoint: Endpoint) -> Endpoint {
    endpoint
        .connect_timeout(PEER_CONNECT_TIMEOUT)
        .http2_keep_alive_interval(PEER_KEEPALIVE)
        .keep_alive_timeout(PEER_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
}

/// The client TLS settings of this process's environment, read once. An executor fetches map
/// output with these.
///
/// # Errors
/// The [`TlsError`] met reading them (the same one on every call).
pub fn env_client() -> Result<Option<&'static ClientTls>, &'static TlsError> {
    static CACHED: std::sync::OnceLock<Result<Option<ClientTls>, TlsError>> =
        std::sync::OnceLock::new();
    CACHED
        .get_or_init(ClientTls::from_env)
        .as_ref()
        .map(Option::as_ref)
}

/// Concurrent HTTP/2 streams (calls) one connection may have open on a Quern server; more
/// wait for the client's turn (the stream limit is advertised in the HTTP/2 settings, and
/// calls beyond it queue on the server too).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 128;

/// Largest header block a Quern server accepts on one call.
pub const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// The connections `listener` accepts, for a gRPC server built by [`server`], with Nagle's
/// algorithm off. Quern's RPCs are small request-and-answer exchanges: with it on, a small
/// write waits for the peer's delayed acknowledgement (40 ms on Linux), which paced every
/// task of a cluster to one per 40-odd ms per worker. (tonic sets `TCP_NODELAY` only on the
/// listeners it binds itself.)
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}

/// A gRPC server builder with Quern's per-connection limits, over TLS when `tls` is given.
///
/// # Errors
/// When `tls`'s certificate or key cannot be used.
pub fn server(
    tls: Option<&ServerTls>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .concurrency_limit_per_connection(MAX_STREAMS_PER_CONNECTION as usize)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .http2_max_pending_accept_reset_streams(Some(64))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
    match tls {
        Some(t) => builder.tls_config(t.tonic()),
        None => Ok(builder),
    }
}
