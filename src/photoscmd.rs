//! `quern photos`: tools for the photo re-inference job.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Subcommand;

/// Photo tools.
#[derive(Subcommand, Debug)]
pub enum PhotosCommand {
    /// Pack a directory of photos (.jpg, .jpeg, .png, with optional <stem>.json metadata) into
    /// WebDataset-style tar shards for the `photos` job, in a deterministic order.
    Pack {
        /// The directory of photos (searched recursively).
        dir: PathBuf,
        /// Where the shards go (shard-000000.tar, ...).
        #[arg(long)]
        out: PathBuf,
        /// About this many bytes per shard.
        #[arg(long, default_value = "256MiB", value_parser = crate::util::parse_size)]
        shard_size: u64,
    },
}

/// Runs a `quern photos` command.
///
/// # Errors
/// Packing errors.
pub fn run(cmd: PhotosCommand) -> anyhow::Result<u8> {
    match cmd {
        PhotosCommand::Pack {
            dir,
            out,
            shard_size,
        } => {
            let tty = std::io::stderr().is_terminal();
            let mut last = std::time::Instant::now();
            let packed = photos::pack::pack(&dir, &out, shard_size, &mut |done, total| {
                if tty && (done == total || last.elapsed().as_millis() >= 200) {
                    last = std::time::Instant::now();
                    let width = 30 * done / total.max(1);
                    eprint!(
                        "\r[{}{}] {done}/{total} photos",
                        "#".repeat(width as usize),
                        " ".repeat(30 - width as usize)
                    );
                }
            })?;
            if tty {
                eprintln!();
            }
            println!(
                "packed {} ({} with metadata, {} bytes) into {} in {}",
                crate::util::plural(packed.photos as u64, "photo"),
                packed.sidecars,
                packed.bytes,
                crate::util::plural(packed.shards as u64, "shard"),
                out.display()
            );
            Ok(0)
        }
    }
}
