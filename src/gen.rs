//! `quern gen`: deterministic test data.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use jobs::gen::{Generator, RecordsGen, SortRecordsGen, WeblogGen, WordsGen};

use crate::util::{human_bytes, parse_size};

#[derive(Subcommand, Debug)]
pub enum GenCommand {
    /// An access log of a photo service (Apache combined format plus latency).
    Weblog(GenArgs),
    /// Lines of words, for `wordcount`.
    Words(GenArgs),
    /// `ID<TAB>PAYLOAD` records with unique ids, for `identity`.
    Records(GenArgs),
    /// 100-byte records with 10-byte keys (the TeraSort layout), for `sort`.
    SortRecords(GenArgs),
}

#[derive(Args, Debug)]
pub struct GenArgs {
    /// How much to write, e.g. 1GiB.
    #[arg(long, value_parser = parse_size, default_value = "64MiB")]
    size: u64,
    /// Random seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: GenCommand) -> Result<u8> {
    let (kind, args) = match &cmd {
        GenCommand::Weblog(a) => ("weblog", a),
        GenCommand::Words(a) => ("words", a),
        GenCommand::Records(a) => ("records", a),
        GenCommand::SortRecords(a) => ("sort-records", a),
    };
    generate(
        kind,
        args.size,
        args.seed,
        &args.out,
        std::io::stderr().is_terminal(),
    )?;
    Ok(0)
}

/// Writes `size` bytes of `kind` data to `out` (atomically), with a progress line if `tty`.
pub fn generate(kind: &str, size: u64, seed: u64, out: &std::path::Path, tty: bool) -> Result<u64> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let start = std::time::Instant::now();
    let mut progress = |done: u64| {
        if tty {
            eprint!(
                "\rgenerating {kind}: {} of {}",
                human_bytes(done),
                human_bytes(size)
            );
        }
    };
    let written = match kind {
        "weblog" => WeblogGen::new(seed).write(size, &mut w, &mut progress)?,
        "records" => RecordsGen::new(seed).write(size, &mut w, &mut progress)?,
        "sort-records" => SortRecordsGen::new(seed).write(size, &mut w, &mut progress)?,
        _ => WordsGen::new(seed).write(size, &mut w, &mut progress)?,
    };
    w.flush()?;
    std::fs::rename(&tmp, out)?;
    if tty {
        eprintln!();
    }
    eprintln!(
        "wrote {} of {kind} data to {} in {:.1?}",
        human_bytes(written),
        out.display(),
        start.elapsed()
    );
    Ok(written)
}
