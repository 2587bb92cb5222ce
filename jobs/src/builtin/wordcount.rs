//! `wordcount`: words are maximal runs of ASCII letters, lower-cased; output `word<TAB>count`.

use crate::registry::{check_params, DynJob, JobError, JobInfo, Params};
use crate::sdk::{self, push_u64, Combiner, Job, MapContext, ReduceContext, Values};

/// The `wordcount` job.
pub struct WordCount;

/// Registration of [`WordCount`].
pub const WORDCOUNT: JobInfo = JobInfo {
    name: "wordcount",
    about: "count words (maximal runs of ASCII letters, lower-cased)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("wordcount", p, &[])?;
        Ok(Box::new(WordCount))
    },
};

impl Job for WordCount {
    type Key = Vec<u8>;
    type Value = u64;
    const COMBINE: Option<Combiner<u64>> = Some(sdk::sum);
    const STATE: bool = true;

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        let mut word = Vec::with_capacity(32);
        for &b in record {
            if b.is_ascii_alphabetic() {
                word.push(b.to_ascii_lowercase());
            } else if !word.is_empty() {
                ctx.emit_encoded(&word, 1);
                word.clear();
            }
        }
        if !word.is_empty() {
            ctx.emit_encoded(&word, 1);
        }
    }

    fn reduce(&self, word: Vec<u8>, counts: Values<'_, u64>, out: &mut ReduceContext<'_>) {
        let total: u64 = counts.sum();
        let buf = out.buffer();
        buf.extend_from_slice(&word);
        buf.push(b'\t');
        push_u64(buf, total);
        out.end_line();
    }
}
