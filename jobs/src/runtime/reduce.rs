//! The reduce side: merge every map's run of one partition, group by key, call reduce.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::format::{Run, ShuffleFile, ShuffleWriter};
use super::merge::Merger;
use super::TaskError;
use crate::sdk::{Counters, FastCounters, Job, Key, ReduceContext, Value, ValueSource, Values};

/// Output is handed to the writer in pieces of about this size.
const FLUSH_BYTES: usize = 1 << 20;

/// The most runs one merge reads at once (Hadoop's `io.sort.factor`): a merge holds a block
/// of each, so a reduce over more map outputs merges some of them into files first
/// ([`merge_passes`]) and its memory stays the same however many maps the job has.
pub const MERGE_FACTOR: usize = 100;

/// Brings `runs` (in map order) down to at most `factor` by merging consecutive runs into
/// unnamed files in `scratch`, as few as needed: each pass merges groups of at most `factor`
/// runs from the front until what is merged and what is left number `factor`. Groups are
/// consecutive and keep their place, so equal keys' values still come in map order. Returns
/// the runs and the bytes written to files.
///
/// # Errors
/// [`TaskError`] if a run is corrupt or a file cannot be written.
pub fn merge_passes(
    mut runs: Vec<Run>,
    factor: usize,
    scratch: &Path,
) -> Result<(Vec<Run>, u64), TaskError> {
    let factor = factor.max(2);
    let mut written = 0;
    while runs.len() > factor {
        let mut rest: std::collections::VecDeque<Run> = runs.into();
        let mut merged = Vec::new();
        // Each merge of k runs leaves k - 1 fewer; with fewer than two left unmerged, another
        // pass takes the merged ones.
        while merged.len() + rest.len() > factor && rest.len() >= 2 {
            let excess = merged.len() + rest.len() - factor;
            let take = (excess + 1).min(factor).min(rest.len());
            let group: Vec<Run> = rest.drain(..take).collect();
            let (run, bytes) = merge_to_file(group, scratch)?;
            written += bytes;
            merged.push(run);
        }
        merged.extend(rest);
        runs = merged;
    }
    Ok((runs, written))
}

/// Merges `runs` into one run in an unnamed file in `scratch`; returns it and its length.
fn merge_to_file(runs: Vec<Run>, scratch: &Path) -> Result<(Run, u64), TaskError> {
    let io = |e| TaskError::io(scratch, e);
    std::fs::create_dir_all(scratch).map_err(io)?;
    let file = tempfile::tempfile_in(scratch).map_err(io)?;
    let mut merger = Merger::new(runs)?;
    let mut w = ShuffleWriter::new(std::io::BufWriter::with_capacity(1 << 20, &file), 1);
    while let Some((k, v)) = merger.next_record()? {
        w.push(0, k, v)?;
    }
    let (out, _) = w.finish()?;
    out.into_inner().map_err(|e| io(e.into_error()))?;
    // The run's place in the file, from the file's index.
    // SAFETY: read-only map of an unnamed file this task just wrote.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
    let range = ShuffleFile::open(bytes::Bytes::from_owner(map))?.partition_range(0);
    let len = range.end - range.start;
    Ok((
        Run::File {
            file: Arc::new(file),
            start: range.start,
            len,
        },
        len,
    ))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    /// A run of `keys` (sorted here), each with the run's number as its value.
    fn run(keys: &[u8], tag: u8) -> Run {
        let mut sorted = keys.to_vec();
        sorted.sort_unstable();
        let mut w = ShuffleWriter::new(Vec::new(), 1);
        for k in &sorted {
            w.push(0, &[*k], &[tag]).unwrap();
        }
        let (data, _) = w.finish().unwrap();
        Run::Memory(ShuffleFile::open(Bytes::from(data)).unwrap().partition(0))
    }

    fn merged(runs: Vec<Run>) -> Vec<(u8, u8)> {
        let mut m = Merger::new(runs).unwrap();
        let mut out = Vec::new();
        while let Some((k, v)) = m.next_record().unwrap() {
            out.push((k[0], v[0]));
        }
        out
    }

    proptest! {
        #[test]
        fn merging_in_passes_keeps_every_record_in_the_same_order(
            keys in proptest::collection::vec(proptest::collection::vec(0u8..6, 0..8), 0..40),
            factor in 2usize..6,
        ) {
            let runs: Vec<Run> = keys.iter().enumerate().map(|(i, k)| run(k, i as u8)).collect();
            let dir = tempfile::tempdir().unwrap();
            let (passed, written) = merge_passes(runs.clone(), factor, dir.path()).unwrap();
            prop_assert!(passed.len() <= factor);
            if runs.len() <= factor {
                prop_assert_eq!(written, 0);
            }
            // Equal keys' values still come in run (map) order.
            prop_assert_eq!(merged(passed), merged(runs));
            // The files are unnamed: nothing is left in the directory.
            prop_assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    #[test]
    fn a_pass_merges_only_as_many_runs_as_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let runs: Vec<Run> = (0..12).map(|i| run(&[i, i + 1], i)).collect();
        let (passed, _) = merge_passes(runs.clone(), 10, dir.path()).unwrap();
        // Three runs merged into one, nine left as they were.
        assert_eq!(passed.len(), 10);
        assert!(matches!(passed[0], Run::File { .. }));
        assert!(passed[1..].iter().all(|r| matches!(r, Run::Memory(_))));
        assert_eq!(merged(passed), merged(runs));
    }
}
