//! Storage settings: where SeaweedFS's master is, how files are chunked and replicated, and
//! how to reach an S3-compatible store.

/// The variable naming the SeaweedFS volume servers on this host (comma-separated).
pub const LOCAL_VOLUME_SERVERS_ENV: &str = "QUERN_LOCAL_VOLUME_SERVERS";

/// Settings of the storage client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageConfig {
    /// SeaweedFS master (`host:port`); by default the filer's host on port 9333.
    pub seaweedfs_master: Option<String>,
    /// Chunk size of files written to SeaweedFS, in MiB.
    pub seaweedfs_chunk_mb: u32,
    /// Replication of files written to SeaweedFS (SeaweedFS notation: `000`, `001`, `010`...).
    pub seaweedfs_replication: String,
    /// SeaweedFS volume servers (`host:port`, as the master lists them) running on this host:
    /// chunks they hold are read from their volume files, not over HTTP. A worker's executors
    /// get the worker's `--storage-host`.
    pub local_volume_servers: Vec<String>,
    /// Whether chunks of local volume servers are read from their files (default true).
    pub short_circuit_reads: bool,
    /// Longest wait for the next bytes to or from a SeaweedFS server (master, filer, volume
    /// server) on an open connection; longer fails the request, and a read moves on to the
    /// next replica. Without it, a server that stopped answering but kept its connections
    /// (a stalled process, a host gone mid-transfer) held a read for the whole request's
    /// limit of 5 minutes. Default 60 s (as HDFS's client socket timeout).
    pub seaweedfs_io_timeout: std::time::Duration,
    /// S3 endpoint URL (for S3-compatible stores); `None` means AWS.
    pub s3_endpoint: Option<String>,
    /// S3 region.
    pub s3_region: String,
    /// S3 access key id.
    pub s3_access_key: Option<String>,
    /// S3 secret key.
    pub s3_secret_key: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            seaweedfs_master: None,
            seaweedfs_chunk_mb: 64,
            seaweedfs_replication: "000".into(),
            local_volume_servers: Vec::new(),
            short_circuit_reads: true,
            seaweedfs_io_timeout: std::time::Duration::from_secs(60),
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_access_key: None,
            s3_secret_key: None,
        }
    }
}

impl StorageConfig {
    /// Reads the settings from the environment: `QUERN_SEAWEEDFS_MASTER`,
    /// `QUERN_SEAWEEDFS_CHUNK_MB`, `QUERN_SEAWEEDFS_REPLICATION`,
    /// `QUERN_LOCAL_VOLUME_SERVERS` (comma-separated), `QUERN_SHORT_CIRCUIT_READS` (`0` or
    /// `false` turns them off), `QUERN_SEAWEEDFS_IO_TIMEOUT_S` (seconds, at least 1),
    /// `QUERN_S3_ENDPOINT`, and the usual `AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`.
    ///
    /// Storage is used by every process of a cluster (coordinator, workers, executors, the
    /// CLI), and executors inherit their worker's environment, so the environment is the one
    /// place all of them see.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let d = StorageConfig::default();
        StorageConfig {
            seaweedfs_master: var("QUERN_SEAWEEDFS_MASTER"),
            seaweedfs_chunk_mb: var("QUERN_SEAWEEDFS_CHUNK_MB")
                .and_then(|v| v.parse().ok())
                .unwrap_or(d.seaweedfs_chunk_mb),
            seaweedfs_replication: var("QUERN_SEAWEEDFS_REPLICATION")
                .unwrap_or(d.seaweedfs_replication),
            local_volume_servers: var(LOCAL_VOLUME_SERVERS_ENV)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            short_circuit_reads: var("QUERN_SHORT_CIRCUIT_READS")
                .map_or(d.short_circuit_reads, |v| {
                    !matches!(v.as_str(), "0" | "false")
                }),
            seaweedfs_io_timeout: var("QUERN_SEAWEEDFS_IO_TIMEOUT_S")
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|&s| s >= 1)
                .map_or(d.seaweedfs_io_timeout, std::time::Duration::from_secs),
            s3_endpoint: var("QUERN_S3_ENDPOINT"),
            s3_region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or(d.s3_region),
            s3_access_key: var("AWS_ACCESS_KEY_ID"),
            s3_secret_key: var("AWS_SECRET_ACCESS_KEY"),
        }
    }
}
