//! The reduce side: merge every map's run of one partition, group by key, call reduce.

use std::io::Write;

use super::format::{Run, ShuffleWriter};
use super::merge::Merger;
use super::TaskError;
use crate::sdk::{Counters, FastCounters, Job, Key, ReduceContext, Value, ValueSource, Values};

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
    /// The state file written beside the output, for a job that keeps state.
    pub state: Option<Written>,
}

/// Size and CRC32 of a file a task wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Bytes.
    pub bytes: u64,
    /// CRC32 of them.
    pub crc32: u32,
}

/// A writer that counts and checksums what passes through it.
struct Checksummed<W> {
    inner: W,
    written: Written,
    hasher: crc32fast::Hasher,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `job`'s reduce over `runs` (one run of blocks per map, in map order) and writes the
/// output lines to `out`. With `state` (a job that keeps state), each key's values are first
/// folded with the job's combiner; the key and its folded value go to `state` (a shuffle file
/// of one partition, what an incremental run reads back), and `reduce` gets the folded value.
///
/// # Errors
/// [`TaskError`] if a run is corrupt or the output cannot be written.
pub fn run_reduce<J: Job>(
    job: &J,
    runs: Vec<Run>,
    out: &mut dyn Write,
    state: Option<&mut dyn Write>,
) -> Result<ReduceSummary, TaskError> {
    let fold = J::COMBINE.filter(|_| J::STATE);
    let mut state = match (state, fold) {
        (Some(w), Some(_)) => Some(ShuffleWriter::new(
            Checksummed {
                inner: w,
                written: Written::default(),
                hasher: crc32fast::Hasher::new(),
            },
            1,
        )),
        _ => None,
    };
    let mut encoded = Vec::new();
    let input_bytes: u64 = runs.iter().map(Run::len).sum();
    let mut merger = Merger::new(runs)?;
    let mut buf = Vec::with_capacity(FLUSH_BYTES + 4096);
    let mut fast = FastCounters::default();
    let (mut groups, mut records_out) = (0u64, 0u64);
    let mut key = Vec::new();
    let mut error = None;
    let io = |e| TaskError::io("reduce output", e);
    let mut out = Checksummed {
        inner: out,
        written: Written::default(),
        hasher: crc32fast::Hasher::new(),
    };
    let mut part_writer = job.part_writer();
    // The lines in `buf` go to the part file as they are, or through the job's part writer.
    let flush = |buf: &mut Vec<u8>,
                 out: &mut Checksummed<&mut dyn Write>,
                 part_writer: &mut Option<Box<dyn crate::sdk::PartWriter>>|
     -> Result<(), TaskError> {
        match part_writer {
            Some(w) => {
                for line in crate::split::RawLines::new(buf) {
                    let line = line.strip_suffix(b"\n").unwrap_or(line);
                    w.line(line, out).map_err(TaskError::PartWriter)?;
                }
            }
            None => out.write_all(buf).map_err(io)?,
        }
        buf.clear();
        Ok(())
    };
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
        let values = match (&mut state, fold) {
            (Some(w), Some(combine)) => {
                let mut acc: Option<J::Value> = None;
                while let Some(v) = merger.next_value_for(&key)? {
                    let v = J::Value::decode_value(v)?;
                    match &mut acc {
                        Some(a) => combine(a, v),
                        None => acc = Some(v),
                    }
                }
                let acc = acc.expect("a key has at least one value");
                encoded.clear();
                acc.encode_value(&mut encoded);
                w.push(0, &key, &encoded)?;
                Values {
                    source: ValueSource::Folded(Some(acc)),
                }
            }
            _ => Values {
                source: ValueSource::Merged {
                    merger: &mut merger,
                    key: &key,
                    error: &mut error,
                },
            },
        };
        job.reduce(typed, values, &mut ctx);
        records_out += ctx.records;
        if let Some(e) = error.take() {
            return Err(TaskError::Format(super::FormatError::Corrupt { reason: e }));
        }
        while merger.next_value_for(&key)?.is_some() {}
        if buf.len() >= FLUSH_BYTES {
            flush(&mut buf, &mut out, &mut part_writer)?;
        }
    }
    flush(&mut buf, &mut out, &mut part_writer)?;
    if let Some(w) = part_writer {
        w.finish(&mut out).map_err(TaskError::PartWriter)?;
    }
    out.flush().map_err(io)?;
    let written = out.written.bytes;
    let mut counters = Counters::default();
    counters.add("reduce_input_bytes", input_bytes);
    counters.add("reduce_input_groups", groups);
    counters.add("reduce_output_records", records_out);
    counters.add("output_bytes", written);
    fast.drain_into(&mut counters);
    let state = match state {
        Some(w) => {
            let (w, summary) = w.finish()?;
            counters.add("state_output_records", summary.records);
            counters.add("state_output_bytes", summary.bytes);
            Some(Written {
                bytes: w.written.bytes,
                crc32: w.hasher.finalize(),
            })
        }
        None => None,
    };
    Ok(ReduceSummary {
        counters,
        output_bytes: written,
        output_crc32: out.hasher.finalize(),
        state,
    })
}
