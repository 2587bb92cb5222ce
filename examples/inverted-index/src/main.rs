//! `inverted-index`: a Quern job binary with one extra job. For every word (a maximal run of
//! ASCII letters, lower-cased), the sorted list of the documents (input files, by name) it
//! appears in: `word<TAB>doc1,doc2,...`.
//!
//! ```sh
//! cargo build --release
//! ./target/release/inverted-index job submit inverted-index --input docs/ --output out/index
//! ./target/release/inverted-index run --local inverted-index --input docs/ --output out/local
//! # new documents arrived: index only them, folded into the index so far
//! ./target/release/inverted-index job submit inverted-index --input docs/ --output out/index-2 \
//!     --from out/index
//! ```

use std::collections::BTreeSet;

use quern::sdk::{Combiner, Job, MapContext, ReduceContext, Values};
use quern::{JobInfo, Registry};

/// The job. Values are sets of document names, merged on the map side by `union`, so a
/// word repeated in a document crosses the shuffle once per map task. The reduce depends on
/// the union of a word's sets alone, so the job keeps state (`STATE`): each output holds every
/// word with its set under `_state/`, and a run `--from` it reads only new documents and the
/// grown tails of old ones.
struct InvertedIndex;

impl Job for InvertedIndex {
    type Key = String;
    type Value = BTreeSet<String>;
    const COMBINE: Option<Combiner<BTreeSet<String>>> = Some(union);
    const STATE: bool = true;

    fn map(&mut self, line: &[u8], ctx: &mut MapContext<'_, Self>) {
        let doc = ctx
            .input()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        for word in line
            .split(|b| !b.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
        {
            let word = String::from_utf8_lossy(word).to_ascii_lowercase();
            ctx.emit(&word, BTreeSet::from([doc.clone()]));
        }
    }

    fn reduce(
        &self,
        word: String,
        docs: Values<'_, BTreeSet<String>>,
        out: &mut ReduceContext<'_>,
    ) {
        let all: BTreeSet<String> = docs.flatten().collect();
        let list: Vec<&str> = all.iter().map(String::as_str).collect();
        out.write_line(format!("{word}\t{}", list.join(",")).as_bytes());
    }
}

/// Merges two sets of document names (the combiner).
fn union(acc: &mut BTreeSet<String>, next: BTreeSet<String>) {
    acc.extend(next);
}

fn main() -> std::process::ExitCode {
    let mut jobs = Registry::builtin();
    jobs.register(JobInfo {
        name: "inverted-index",
        about: "word -> sorted list of the documents (input files) it appears in",
        make: |params| {
            quern::registry::check_params("inverted-index", params, &[])?;
            Ok(Box::new(InvertedIndex))
        },
    });
    quern::main_with(jobs)
}
