//! `inverted-index`: a Quern job binary with one extra job. For every word (as the built-in
//! `wordcount` finds them: a maximal run of Unicode letters, lower-cased), the sorted list of
//! the documents (input files, by name) it appears in: `word<TAB>doc1,doc2,...`.
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

use quern::builtin::wordcount;
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
    /// Version 1 split words at every letter beyond ASCII: an index it wrote is not continued.
    const VERSION: u32 = 2;

    fn map(&mut self, line: &[u8], ctx: &mut MapContext<'_, Self>) {
        let doc = ctx
            .input()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string();
        // The engine's tokeniser: the bytes of each word are UTF-8, lower-cased. Bytes that
        // are not UTF-8 separate words and are counted under the counter the job summary
        // warns about.
        let not_utf8 = wordcount::for_each_word(line, |word| {
            let word = String::from_utf8_lossy(word.bytes).into_owned();
            ctx.emit(&word, BTreeSet::from([doc.clone()]));
        });
        if not_utf8 > 0 {
            ctx.count(wordcount::NOT_UTF8, not_utf8);
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
