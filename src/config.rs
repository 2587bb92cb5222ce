//! `quern.toml`: the CLI's settings in a file. Each setting is also an environment variable
//! and most are flags; the order is flags over environment over file over defaults. The file
//! is read before the flags are parsed: each setting it holds whose variable is not set
//! becomes that variable, so one layer (the environment, which the daemons and the storage
//! client read too) carries both. `quern config show` prints the merged result and where
//! each value came from. See docs/CLI.md.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// A setting: its key in the file, its environment variable, what it is.
pub struct Setting {
    /// `coordinator`, `tls.ca`, `submit.reducers`, ...
    pub key: &'static str,
    /// The variable it sets.
    pub env: &'static str,
    /// For `config show` and the docs.
    pub about: &'static str,
}

/// Every setting the file may hold.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "coordinator",
        env: "QUERN_COORDINATOR",
        about: "the coordinator's gRPC address (--coordinator)",
    },
    Setting {
        key: "token",
        env: "QUERN_TOKEN",
        about: "the token to call with (prefer the environment or <dir>/token for secrets)",
    },
    Setting {
        key: "log",
        env: "QUERN_LOG",
        about: "log filter, e.g. info or debug",
    },
    Setting {
        key: "tls.ca",
        env: "QUERN_TLS_CA",
        about: "CA certificate to trust (--tls-ca)",
    },
    Setting {
        key: "tls.cert",
        env: "QUERN_TLS_CERT",
        about: "client certificate for mutual TLS (--tls-cert)",
    },
    Setting {
        key: "tls.key",
        env: "QUERN_TLS_KEY",
        about: "its key (--tls-key)",
    },
    Setting {
        key: "submit.reducers",
        env: "QUERN_REDUCERS",
        about: "default --reducers",
    },
    Setting {
        key: "submit.split_size",
        env: "QUERN_SPLIT_SIZE",
        about: "default --split-size, e.g. 128MiB",
    },
    Setting {
        key: "submit.task_memory",
        env: "QUERN_TASK_MEMORY",
        about: "default --task-memory",
    },
    Setting {
        key: "submit.max_attempts",
        env: "QUERN_MAX_ATTEMPTS",
        about: "default --max-attempts",
    },
    Setting {
        key: "storage.seaweedfs_master",
        env: "QUERN_SEAWEEDFS_MASTER",
        about: "SeaweedFS master for locality lookups",
    },
    Setting {
        key: "storage.seaweedfs_chunk_mb",
        env: "QUERN_SEAWEEDFS_CHUNK_MB",
        about: "chunk size of files written to SeaweedFS",
    },
    Setting {
        key: "storage.seaweedfs_replication",
        env: "QUERN_SEAWEEDFS_REPLICATION",
        about: "replication of files written to SeaweedFS, e.g. 001",
    },
    Setting {
        key: "storage.local_volume_servers",
        env: "QUERN_LOCAL_VOLUME_SERVERS",
        about: "SeaweedFS volume servers on this host, read from their files (a worker's executors add its --storage-host)",
    },
    Setting {
        key: "storage.short_circuit_reads",
        env: "QUERN_SHORT_CIRCUIT_READS",
        about: "read chunks of local volume servers from their files (default true)",
    },
    Setting {
        key: "storage.seaweedfs_io_timeout_s",
        env: "QUERN_SEAWEEDFS_IO_TIMEOUT_S",
        about: "longest wait, in seconds, for the next bytes from a SeaweedFS server before a read moves on to another replica (default 60)",
    },
    Setting {
        key: "shuffle.fetch_timeout_s",
        env: "QUERN_FETCH_TIMEOUT_S",
        about: "longest wait, in seconds, for the next bytes of a map output a reduce fetches before it reports the output lost (default 120)",
    },
    Setting {
        key: "storage.s3_endpoint",
        env: "QUERN_S3_ENDPOINT",
        about: "S3-compatible endpoint URL",
    },
    Setting {
        key: "storage.s3_region",
        env: "AWS_REGION",
        about: "S3 region (keys come from the environment only)",
    },
];

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The environment (or a flag, which `config show` does not see).
    Env,
    /// The config file.
    File(PathBuf),
    /// Not set: the command's default applies.
    Unset,
}

/// What [`load`] found: the file read (if any), and each setting's value and source.
pub struct Loaded {
    /// The file read.
    pub file: Option<PathBuf>,
    /// By [`SETTINGS`] order.
    pub values: Vec<(Option<String>, Source)>,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// The file to read: `--config FILE` among `args`, else `QUERN_CONFIG`, else `./quern.toml`,
/// else `$XDG_CONFIG_HOME/quern/quern.toml` (`~/.config/quern/quern.toml`), if one exists;
/// an explicit file must exist, and `none` reads no file at all.
fn find(args: &[String]) -> Result<Option<PathBuf>> {
    let explicit = args
        .iter()
        .position(|a| a == "--config")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| {
            args.iter()
                .find_map(|a| a.strip_prefix("--config=").map(str::to_string))
        })
        .or_else(|| std::env::var("QUERN_CONFIG").ok().filter(|v| !v.is_empty()));
    if let Some(f) = explicit {
        if f == "none" {
            return Ok(None);
        }
        let f = PathBuf::from(f);
        if !f.is_file() {
            bail!("config file {} does not exist", f.display());
        }
        return Ok(Some(f));
    }
    let user = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))
        .map(|d| d.join("quern").join("quern.toml"));
    Ok([Some(PathBuf::from("quern.toml")), user]
        .into_iter()
        .flatten()
        .find(|f| f.is_file()))
}

/// Reads the config file (see [`find`]) and sets the variable of each setting it holds that
/// is not set already. Call before parsing the flags and before starting any thread.
///
/// # Errors
/// An unreadable file, bad TOML, an unknown key (naming the known ones) or a value that is
/// not a string, number or boolean.
pub fn load(args: &[String]) -> Result<&'static Loaded> {
    let file = find(args)?;
    let mut from_file = std::collections::HashMap::new();
    if let Some(f) = &file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("config file {}", f.display()))?;
        flatten("", &table, &mut from_file)
            .with_context(|| format!("config file {}", f.display()))?;
    }
    let values = SETTINGS
        .iter()
        .map(|s| {
            let env = std::env::var(s.env).ok().filter(|v| !v.is_empty());
            match (env, from_file.remove(s.key), &file) {
                (Some(v), _, _) => (Some(v), Source::Env),
                (None, Some(v), Some(f)) => {
                    std::env::set_var(s.env, &v);
                    (Some(v), Source::File(f.clone()))
                }
                _ => (None, Source::Unset),
            }
        })
        .collect();
    Ok(LOADED.get_or_init(|| Loaded { file, values }))
}

/// `a.b = v` pairs of `table`, checked against [`SETTINGS`].
fn flatten(
    prefix: &str,
    table: &toml::Table,
    out: &mut std::collections::HashMap<&'static str, String>,
) -> Result<()> {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let value = match v {
            toml::Value::Table(t) => {
                flatten(&key, t, out)?;
                continue;
            }
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => bail!(
                "{key}: expected a string, number or boolean, found {}",
                other.type_str()
            ),
        };
        let Some(s) = SETTINGS.iter().find(|s| s.key == key) else {
            let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
            bail!(
                "unknown setting {key:?}; the settings are {}",
                known.join(", ")
            );
        };
        out.insert(s.key, value);
    }
    Ok(())
}

/// `quern config show`: each setting, its value and where it came from.
pub fn show(json: bool) -> Result<u8> {
    let Some(loaded) = LOADED.get() else {
        bail!("the configuration was not loaded");
    };
    let source = |s: &Source| match s {
        Source::Env => "environment".to_string(),
        Source::File(f) => format!("file {}", f.display()),
        Source::Unset => "default".to_string(),
    };
    // A token is a secret: shown as set or not.
    let shown = |s: &Setting, v: &Option<String>| match (s.key, v) {
        ("token", Some(_)) => Some("(set)".to_string()),
        (_, v) => v.clone(),
    };
    if json {
        let settings: Vec<serde_json::Value> = SETTINGS
            .iter()
            .zip(&loaded.values)
            .map(|(s, (v, src))| {
                serde_json::json!({"key": s.key, "env": s.env, "value": shown(s, v), "source": source(src), "about": s.about})
            })
            .collect();
        crate::output::print_json(&serde_json::json!({
            "file": loaded.file.as_ref().map(|f| f.display().to_string()),
            "settings": settings,
        }));
        return Ok(0);
    }
    match &loaded.file {
        Some(f) => println!("config file: {}", f.display()),
        None => println!("config file: none (looked for --config, QUERN_CONFIG, ./quern.toml, ~/.config/quern/quern.toml)"),
    }
    println!(
        "{:<30} {:<28} {:<24} SOURCE",
        "SETTING", "VARIABLE", "VALUE"
    );
    for (s, (v, src)) in SETTINGS.iter().zip(&loaded.values) {
        println!(
            "{:<30} {:<28} {:<24} {}",
            s.key,
            s.env,
            shown(s, v).unwrap_or_else(|| "-".into()),
            source(src)
        );
    }
    println!("(a flag given on the command line overrides all of these)");
    Ok(0)
}
