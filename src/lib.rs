//! Quern: a MapReduce-style batch engine. This crate is the `quern` command line, usable as a
//! library so that a crate of custom jobs can be a Quern binary of its own:
//!
//! ```no_run
//! use quern::sdk::{self, Combiner, Job, MapContext, ReduceContext, Values};
//! use quern::{JobInfo, Registry};
//!
//! struct Lengths;
//!
//! impl Job for Lengths {
//!     type Key = u64;
//!     type Value = u64;
//!     const COMBINE: Option<Combiner<u64>> = Some(sdk::sum);
//!     fn map(&mut self, line: &[u8], ctx: &mut MapContext<'_, Self>) {
//!         ctx.emit(&(line.len() as u64), 1);
//!     }
//!     fn reduce(&self, len: u64, n: Values<'_, u64>, out: &mut ReduceContext<'_>) {
//!         out.write_line(format!("{len}\t{}", n.sum::<u64>()).as_bytes());
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let mut jobs = Registry::builtin();
//!     jobs.register(JobInfo {
//!         name: "line-lengths",
//!         about: "how many lines have each length",
//!         make: |_params| Ok(Box::new(Lengths)),
//!     });
//!     quern::main_with(jobs)
//! }
//! ```
//!
//! `./target/release/myjobs job submit line-lengths --input ... --output ...` then uploads the
//! binary to the cluster, whose workers fetch it (verified by its SHA-256) and run its
//! executors; `./target/release/myjobs run --local line-lengths ...` runs it in-process.
//! Each subcommand parses its flags and calls a library function; see `quern --help`.

mod bench;
mod certcmd;
mod cluster;
mod config;
mod demo;
mod fs;
mod gen;
mod jobcmd;
mod output;
#[cfg(feature = "photos")]
mod photoscmd;
mod schedcmd;
mod tokencmd;
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

/// Quern: a MapReduce-style batch engine.
#[derive(Parser, Debug)]
#[command(name = "quern", version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Settings file (default: ./quern.toml, else ~/.config/quern/quern.toml); flags and
    /// QUERN_* variables override it. `quern config show` prints the result.
    #[arg(long, global = true, env = "QUERN_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the coordinator daemon.
    Coordinator(cluster::CoordinatorArgs),
    /// Run a worker daemon.
    Worker(cluster::WorkerArgs),
    /// Start an embedded cluster on loopback: a coordinator and N worker processes.
    Local(cluster::LocalArgs),
    /// Submit and manage jobs on a running cluster.
    #[command(subcommand)]
    Job(jobcmd::JobCommand),
    /// Run a job sequentially in this process, with no daemons (the debugging mode and oracle).
    Run(RunArgs),
    /// Cron schedules: a job template run once per logical time.
    #[command(subcommand)]
    Schedule(schedcmd::ScheduleCommand),
    /// Run a schedule's template over a past range of logical times.
    Backfill(schedcmd::BackfillArgs),
    /// Use storage: local files, seaweedfs://FILER/path, s3://bucket/key.
    #[command(subcommand)]
    Fs(fs::FsCommand),
    /// Generate test data.
    #[command(subcommand)]
    Gen(gen::GenCommand),
    /// Photo re-inference tools (pack photos into shards for the `photos` job).
    #[cfg(feature = "photos")]
    #[command(subcommand)]
    Photos(photoscmd::PhotosCommand),
    /// Bearer tokens for a cluster with authentication on: create, list, revoke.
    #[command(subcommand)]
    Token(tokencmd::TokenCommand),
    /// Certificates for a cluster with TLS: a CA and certificates for a test cluster.
    #[command(subcommand)]
    Certs(certcmd::CertsCommand),
    /// Start a local cluster, generate an access log, run `views` and `top-photos`, show results.
    Demo(demo::DemoArgs),
    /// List the jobs this binary can run (the same as `quern job types`).
    Jobs(output::OutputArgs),
    /// The settings in effect (quern.toml, QUERN_* variables) and where each comes from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script: `quern completions bash > /etc/bash_completion.d/quern`
    /// (zsh: as `_quern` in a directory of $fpath; fish: ~/.config/fish/completions/quern.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages for quern and each of its commands (quern.1, quern-job-submit.1, ...)
    /// into a directory: `quern man --out /usr/local/share/man/man1`.
    Man {
        /// The directory to write them to (made if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Benchmarks of Quern itself (the coordinator under thousands of simulated workers).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run one task attempt (started by a worker; not for direct use).
    #[command(hide = true)]
    Executor {
        /// The task file (one attempt).
        #[arg(long, required_unless_present = "serve")]
        task: Option<PathBuf>,
        /// Serve attempts of one job, one per line of stdin, until its end.
        #[arg(long, conflicts_with = "task")]
        serve: bool,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print each setting, its value and its source (environment, file or default).
    Show(output::OutputArgs),
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Run locally, sequentially, in this process: the only mode `run` has, so it may be
    /// left out (`quern run views ...` is `quern run --local views ...`).
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    job: jobcmd::JobSpecArgs,
    /// Scratch directory for map outputs and spills (default: a temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

/// Writes `quern.1` and a page per command and subcommand (`quern-job-submit.1`) into `out`.
fn man_pages(out: &std::path::Path) -> Result<u8> {
    use anyhow::Context;
    std::fs::create_dir_all(out).with_context(|| format!("making {}", out.display()))?;
    /// Page `quern-job-list` (`name`), whose synopsis reads `quern job list` (`bin`).
    fn write(
        cmd: &clap::Command,
        (name, bin): (&str, &str),
        out: &std::path::Path,
        n: &mut usize,
    ) -> Result<()> {
        use anyhow::Context;
        let cmd = cmd.clone().name(name.to_string()).bin_name(bin.to_string());
        let path = out.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
        *n += 1;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let sub_name = format!("{name}-{}", sub.get_name());
            let sub_bin = format!("{bin} {}", sub.get_name());
            write(sub, (&sub_name, &sub_bin), out, n)?;
        }
        Ok(())
    }
    let mut n = 0;
    write(
        &<Cli as clap::CommandFactory>::command(),
        ("quern", "quern"),
        out,
        &mut n,
    )?;
    println!("wrote {n} man pages to {}", out.display());
    Ok(0)
}

/// Logs to stderr, or appends to `file` (made with its directory) when given and it opens.
fn init_tracing(format: LogFormat, default: &str, file: Option<&std::path::Path>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUERN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let opened = file.and_then(|f| {
        let open = std::fs::create_dir_all(f.parent().unwrap_or(f)).and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
        });
        match open {
            Ok(log) => Some(log),
            Err(e) => {
                eprintln!(
                    "warning: cannot log to {}: {e}; logging to stderr",
                    f.display()
                );
                None
            }
        }
    });
    // Colour only on a terminal: a log file or a pipe gets plain text.
    let tty = opened.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(tty);
    match (opened, format) {
        (Some(log), LogFormat::Text) => builder.with_writer(std::sync::Mutex::new(log)).init(),
        (Some(log), LogFormat::Json) => builder
            .json()
            .with_writer(std::sync::Mutex::new(log))
            .init(),
        (None, LogFormat::Text) => builder.with_writer(std::io::stderr).init(),
        (None, LogFormat::Json) => builder.json().with_writer(std::io::stderr).init(),
    }
}

pub use jobs::registry::JobInfo;

/// The jobs of the `quern` binary: [`Registry::builtin`], plus `photos` when built with the
/// `photos` feature (the default).
pub fn builtin_registry() -> Registry {
    #[allow(unused_mut)]
    let mut r = Registry::builtin();
    #[cfg(feature = "photos")]
    r.register_builtin(photos::PHOTOS);
    r
}
pub use jobs::{builtin, registry, sdk, Registry};

/// Runs the `quern` command line with the jobs of `registry`: the `main` of `quern` itself
/// (with [`Registry::builtin`]) and of any crate of custom jobs.
pub fn main_with(registry: Registry) -> ExitCode {
    // The settings file first: what it holds becomes environment for the flags to read.
    // An executor inherits its worker's environment, settings included, and reads no file.
    let args: Vec<String> = std::env::args().collect();
    let executor = args.get(1).is_some_and(|a| a == "executor");
    let no_file = ["--config".to_string(), "none".to_string()];
    if let Err(e) = config::load(if executor { &no_file } else { &args }) {
        eprintln!("error: {}", protocol::error_chain(e.as_ref()));
        return ExitCode::FAILURE;
    }
    let cli = Cli::parse();
    // Daemons log their lifecycle; user commands stay quiet unless something goes wrong.
    let default_level = match cli.command {
        Command::Coordinator(_)
        | Command::Worker(_)
        | Command::Local(_)
        | Command::Executor { .. } => "info",
        _ => "warn",
    };
    let log_file = match &cli.command {
        Command::Local(a) => a.log_file(),
        _ => None,
    };
    init_tracing(cli.log_format, default_level, log_file.as_deref());
    protocol::failpoint::setup();
    quiet_on_closed_stdout();
    let result = match cli.command {
        Command::Executor { task, serve } => {
            let code = match task {
                Some(task) if !serve => worker::executor::run(&registry, &task),
                _ => worker::executor::serve(&registry),
            };
            return ExitCode::from(code as u8);
        }
        Command::Coordinator(a) => {
            runtime().and_then(|rt| rt.block_on(cluster::coordinator(a, registry)))
        }
        Command::Worker(a) => runtime().and_then(|rt| rt.block_on(cluster::worker(a))),
        Command::Local(a) => runtime().and_then(|rt| rt.block_on(cluster::local(a, registry))),
        Command::Job(c) => runtime().and_then(|rt| rt.block_on(jobcmd::run(c, &registry))),
        Command::Run(a) => jobcmd::run_local(&registry, a.job, a.work_dir),
        Command::Schedule(c) => {
            runtime().and_then(|rt| rt.block_on(schedcmd::schedule(c, &registry)))
        }
        Command::Backfill(a) => runtime().and_then(|rt| rt.block_on(schedcmd::backfill(a))),
        Command::Gen(c) => gen::run(c),
        Command::Bench(c) => runtime().and_then(|rt| rt.block_on(bench::run(c))),
        Command::Fs(c) => fs::run(c),
        Command::Token(c) => tokencmd::run(c),
        Command::Certs(c) => certcmd::run(c),
        #[cfg(feature = "photos")]
        Command::Photos(c) => photoscmd::run(c),
        Command::Demo(a) => runtime().and_then(|rt| rt.block_on(demo::run(a, registry))),
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "quern", &mut script);
            // A closed pipe (`| head`) is not an error.
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(0),
            }
        }
        Command::Man { out } => man_pages(&out),
        Command::Config(ConfigCommand::Show(o)) => config::show(o.json()),
        Command::Jobs(o) => jobcmd::list_types(&registry, o.json()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Each cause once: a message that already quotes its source is not followed by
            // that source again.
            eprintln!("error: {}", protocol::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// A command whose reader went away (`quern job list | head -1`) ends quietly with status
/// 141 (128 + SIGPIPE, what a shell reports for `cat` in the same place), as Unix tools do,
/// instead of panicking in `println!`. SIGPIPE itself stays ignored: gRPC writes to a socket
/// the peer closed must come back as errors, not kill the process.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
