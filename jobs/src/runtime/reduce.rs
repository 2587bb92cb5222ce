//! The reduce side: merge every map's run of one partition, group by key, call reduce.

use std::io::Write;

use bytes::Bytes;

use super::merge::Merger;
use super::TaskError;
use crate::sdk::{Counters, FastCounters, Job, Key, ReduceContext, Values};

/// Output is handed to the writer in pieces of about this size.
const FLUSH_BYTES: usize = 1 << 20;

/// What a reduce wrote.
#[derive(Clone, Debug, Default)]
pub struct ReduceSummary {
    /// The task's counters.
    pub counters: Counters,
    /// Bytes written.
    pub output_bytes: u64,
    /// CRC32 of the bytes written.
    pub output_crc32: u32,
}

/// Runs `job`'s reduce over `runs` (one run of blocks per map, in map order) and writes the
/// output lines to `out`.
///
/// # Errors
/// [`TaskError`] if a run is corrupt or the output cannot be written.
pub fn run_reduce<J: Job>(
    job: &J,
    runs: Vec<Bytes>,
    out: &mut dyn Write,
) -> Result<ReduceSummary, TaskError> {
    let input_bytes: u64 = runs.iter().map(|r| r.len() as u64).sum();
    let mut merger = Merger::new(runs)?;
    let mut buf = Vec::with_capacity(FLUSH_BYTES + 4096);
    let mut fast = FastCounters::default();
    let mut hasher = crc32fast::Hasher::new();
    let (mut written, mut groups, mut records_out) = (0u64, 0u64, 0u64);
    let mut key = Vec::new();
    let mut error = None;
    let io = |e| TaskError::io("reduce output", e);
    loop {
        match merger.next_key()? {
            Some(k) => {
                key.clear();
                key.extend_from_slice(k);
            }
            None => break,
        }
        groups += 1;
        let typed = J::Key::decode_key(&key)?;
        let mut ctx = ReduceContext {
            out: &mut buf,
            records: 0,
            counters: &mut fast,
        };
        let values = Values {
            merger: &mut merger,
            key: &key,
            error: &mut error,
            _v: std::marker::PhantomData,
        };
        job.reduce(typed, values, &mut ctx);
        records_out += ctx.records;
        if let Some(e) = error.take() {
            return Err(TaskError::Format(super::FormatError::Corrupt { reason: e }));
        }
        while merger.next_value_for(&key)?.is_some() {}
        if buf.len() >= FLUSH_BYTES {
            hasher.update(&buf);
            out.write_all(&buf).map_err(io)?;
            written += buf.len() as u64;
            buf.clear();
        }
    }
    hasher.update(&buf);
    out.write_all(&buf).map_err(io)?;
    out.flush().map_err(io)?;
    written += buf.len() as u64;
    let mut counters = Counters::default();
    counters.add("reduce_input_bytes", input_bytes);
    counters.add("reduce_input_groups", groups);
    counters.add("reduce_output_records", records_out);
    counters.add("output_bytes", written);
    fast.drain_into(&mut counters);
    Ok(ReduceSummary {
        counters,
        output_bytes: written,
        output_crc32: hasher.finalize(),
    })
}
