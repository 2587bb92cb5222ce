//! `--output text|json` of the read commands: text for people, one JSON document on stdout for
//! scripts. The JSON of jobs, schedules and backfills is the HTTP API's
//! ([`coordinator::json`]); every schema is in docs/CLI.md.

use clap::{Args, ValueEnum};
use serde_json::Value;

/// How a read command prints what it found.
#[derive(Args, Debug, Clone, Copy)]
pub struct OutputArgs {
    /// Print as text for people, or as one JSON document for scripts (schema in docs/CLI.md).
    #[arg(long = "output", short = 'o', value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// See [`OutputArgs`].
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Tables and summaries.
    Text,
    /// One JSON document (an object, or an array of them).
    Json,
}

impl OutputArgs {
    /// Whether JSON was asked for.
    pub fn json(self) -> bool {
        self.format == Format::Json
    }
}

/// Prints `v` as pretty JSON, then a newline.
pub fn print_json(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("a JSON value serialises")
    );
}
