//! `quern fs`: the storage client from the command line, for every backend.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use dfs_client::Storage;

use crate::util::human_bytes;

#[derive(Subcommand, Debug)]
pub enum FsCommand {
    /// List files: a file, a directory's data files, or a glob. Names starting with `_` or
    /// `.` are left out, as a job's input leaves them out; a glob that starts with one lists
    /// them (`quern fs ls 'out/views/_*'` shows `_SUCCESS` and `_MANIFEST.json`). So are the
    /// files of an earlier job's output (a directory holding `_SUCCESS`) below the one named:
    /// name the output to list it.
    Ls {
        /// A local path, a `seaweedfs://FILER/PATH` or an `s3://BUCKET/KEY` URL; may hold a glob.
        url: String,
        #[command(flatten)]
        output: crate::output::OutputArgs,
    },
    /// Show a file's size and its pieces with the hosts holding each replica.
    Stat {
        /// The file: a local path, `seaweedfs://...` or `s3://...`.
        url: String,
        #[command(flatten)]
        output: crate::output::OutputArgs,
    },
    /// Upload a local file, or a local directory's files (recursively, each to its path under
    /// the URL: `quern fs put photos/ seaweedfs://filer/photos` puts `photos/2024/cat.jpg` at
    /// `seaweedfs://filer/photos/2024/cat.jpg`; 8 files at a time).
    Put {
        /// The local file or directory to upload.
        local: PathBuf,
        /// Where it goes: `seaweedfs://...`, `s3://...` or a local path.
        url: String,
    },
    /// Download a file.
    Get {
        /// The file to download: `seaweedfs://...`, `s3://...` or a local path.
        url: String,
        /// The local file to write.
        local: PathBuf,
    },
    /// Print a file.
    Cat {
        /// The file to print: a local path, `seaweedfs://...` or `s3://...`.
        url: String,
    },
    /// Delete files or directories.
    Rm {
        /// What to delete (files, or directories with all under them).
        #[arg(required = true)]
        urls: Vec<String>,
    },
    /// Rename a file (on one backend).
    Mv {
        /// The file to rename.
        from: String,
        /// Its new name, on the same backend.
        to: String,
    },
}

pub fn run(cmd: FsCommand) -> Result<u8> {
    let storage = Storage::default();
    match cmd {
        FsCommand::Ls { url, output } => {
            let files = storage.list(&url)?;
            if output.json() {
                crate::output::print_json(&serde_json::Value::Array(
                    files
                        .iter()
                        .map(|f| serde_json::json!({"path": f.path, "len": f.len}))
                        .collect(),
                ));
                return Ok(0);
            }
            for f in files {
                println!("{:>14}  {}", f.len, f.path);
            }
        }
        FsCommand::Stat { url, output } => {
            let st = storage.stat(&url)?;
            if output.json() {
                let pieces: Vec<serde_json::Value> = storage
                    .locations(&url)?
                    .iter()
                    .map(
                        |p| serde_json::json!({"offset": p.offset, "len": p.len, "hosts": p.hosts}),
                    )
                    .collect();
                crate::output::print_json(
                    &serde_json::json!({"path": st.path, "len": st.len, "pieces": pieces}),
                );
                return Ok(0);
            }
            println!("{}  {} bytes ({})", st.path, st.len, human_bytes(st.len));
            for p in storage.locations(&url)? {
                let hosts = if p.hosts.is_empty() {
                    "(no locality)".to_string()
                } else {
                    p.hosts.join(", ")
                };
                println!("  piece {:>12} +{:<12} {}", p.offset, p.len, hosts);
            }
        }
        FsCommand::Put { local, url } => {
            let start = std::time::Instant::now();
            if local.is_dir() {
                let files = local_files(&local)?;
                let tty = std::io::stderr().is_terminal();
                // Several files at once (each upload mostly waits on the storage's answers),
                // as planning reads them.
                let done = std::sync::atomic::AtomicUsize::new(0);
                let sizes = jobs::par::map(&files, |(rel, path)| -> Result<u64> {
                    let size = put_file(&storage, path, &Storage::join(&url, rel), false)?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if tty {
                        eprint!("\r\x1b[2Kput {n} of {} files: {rel}", files.len());
                    }
                    Ok(size)
                })?;
                let total: u64 = sizes.iter().sum();
                if tty {
                    eprintln!();
                }
                eprintln!(
                    "put {} files, {}, to {url} in {:.1?}",
                    files.len(),
                    human_bytes(total),
                    start.elapsed()
                );
            } else {
                let total = put_file(&storage, &local, &url, std::io::stderr().is_terminal())?;
                eprintln!(
                    "put {} to {url} in {:.1?}",
                    human_bytes(total),
                    start.elapsed()
                );
            }
        }
        FsCommand::Get { url, local } => {
            want_file(&storage, &url)?;
            let data = storage.read_all(&url)?;
            std::fs::write(&local, &data)
                .with_context(|| format!("writing {}", local.display()))?;
        }
        FsCommand::Cat { url } => {
            want_file(&storage, &url)?;
            let data = storage.read_all(&url)?;
            std::io::stdout().write_all(&data)?;
        }
        FsCommand::Rm { urls } => {
            for u in urls {
                storage.delete(&u)?;
            }
        }
        FsCommand::Mv { from, to } => storage.rename(&from, &to)?,
    }
    Ok(0)
}

/// Fails, saying so, unless `url` names a file.
fn want_file(storage: &Storage, url: &str) -> Result<()> {
    match storage.probe(url)? {
        dfs_client::PathKind::File => Ok(()),
        dfs_client::PathKind::Missing => anyhow::bail!("{url} does not exist"),
        dfs_client::PathKind::Directory { .. } => {
            anyhow::bail!("{url} is a directory (`quern fs ls {url}` lists its files)")
        }
    }
}

/// Uploads one local file to `url`, with progress on a terminal when `progress`; returns its
/// size.
fn put_file(storage: &Storage, local: &std::path::Path, url: &str, progress: bool) -> Result<u64> {
    let mut f =
        std::fs::File::open(local).with_context(|| format!("opening {}", local.display()))?;
    let total = f.metadata()?.len();
    let mut w = storage.create(url)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.write(&buf[..n])?;
        if progress {
            eprint!(
                "\r\x1b[2Kspooling {} of {}",
                human_bytes(w.written()),
                human_bytes(total)
            );
        }
    }
    if progress {
        eprint!("\r\x1b[2Kuploading {}", human_bytes(total));
    }
    w.commit()?;
    if progress {
        eprintln!();
    }
    Ok(total)
}

/// The regular files under `dir`, recursively, sorted by their paths relative to it (with
/// `/` between components), each with its local path.
fn local_files(dir: &std::path::Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.is_file() {
                let rel = path.strip_prefix(dir).expect("under dir");
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .with_context(|| format!("{} is not a UTF-8 name", path.display()))?;
                out.push((rel.join("/"), path));
            }
        }
    }
    out.sort();
    Ok(out)
}
