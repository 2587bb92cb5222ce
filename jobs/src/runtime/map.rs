//! The map side: buffer, combine, sort, spill, merge.
//!
//! Emitted pairs go into a [`MapBuffer`] bounded by the task's memory budget. A job that
//! combines keeps one value per key in a hash table and folds each new value in at once (so
//! `views` holds one counter per photo, not one record per view); other jobs append the encoded
//! pair to an arena. When the estimated size reaches the budget, the buffer is sorted by
//! (partition, key) and written as a spill run; at the end the runs are merged (combining
//! again across runs) into the task's one output file. A task that never spills writes its
//! buffer straight to the output.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::format::{FileSummary, ShuffleFile, ShuffleWriter};
use super::merge::{prefix, Merger};
use super::table::{CombineTable, ShortKey, Upsert};
use super::TaskError;
use crate::sdk::{Counters, FastCounters, Job, Key, MapContext, Value};

/// Map-side settings of one task.
#[derive(Debug)]
pub struct MapConfig {
    /// Number of reduce partitions.
    pub partitions: u32,
    /// Memory budget of the sort buffer, in bytes.
    pub memory_budget: usize,
    /// Directory for spill files (removed when the task ends).
    pub spill_dir: PathBuf,
    /// Input offset of the first byte of the split's data, so records have absolute offsets.
    pub base_offset: u64,
    /// Absolute offsets of records to skip (skip mode), sorted.
    pub skip: Vec<u64>,
    /// The input file the split belongs to (see [`MapContext::input`]).
    pub input: String,
    /// A group split's files, where they start in its data: each is one record, whatever
    /// the format ([`crate::records::Records::group`]).
    pub group: Vec<crate::split::GroupMember>,
    /// How the split is cut into records.
    pub format: crate::InputFormat,
    /// The split ends before its file does: for tar, a piece of a shard, whose data ends at a
    /// member boundary rather than with the end-of-archive blocks.
    pub piece: bool,
    /// Where the task leaves the records its job listed as skipped
    /// ([`MapContext::list_skipped`]); the caller reports them after a success.
    pub listed: std::sync::Mutex<Vec<crate::output::SkippedRecord>>,
    /// The input is an earlier output's state file (an incremental run): its records are
    /// folded in as they are ([`run_state_map`]), not mapped.
    pub state: bool,
    /// Skip mode is on (`--max-bad-records`): every record goes to [`Job::map`] on its own,
    /// also for a job that maps blocks of lines ([`Job::map_lines`]), so that a panic names
    /// its record.
    pub skip_mode: bool,
}

/// What a map attempt was mapping, read back when job code panics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// The record at this input offset.
    Record(u64),
    /// A block of whole lines given to [`Job::map_lines`]: input offsets `start..end`.
    Lines {
        /// The offset of its first line.
        start: u64,
        /// The offset just past its last line.
        end: u64,
    },
}

/// How much of a split [`Job::map_lines`] gets at once, at most (a longer line is given
/// whole): small enough that a panic's block is a useful place to look.
const LINE_BLOCK: usize = 1 << 20;

/// Gives the lines of `input` (at input offset `base`) to [`Job::map_lines`] in blocks of
/// whole lines; returns how many lines there were, counted as [`crate::split::Lines`] counts
/// them.
fn map_line_blocks<J: Job>(
    job: &mut J,
    input: &[u8],
    base: u64,
    ctx: &mut MapContext<'_, J>,
) -> u64 {
    let mut lines = 0u64;
    let mut at = 0;
    while at < input.len() {
        let end = if input.len() - at <= LINE_BLOCK {
            input.len()
        } else {
            let cut = at + LINE_BLOCK;
            memchr::memrchr(b'\n', &input[at..cut])
                .map(|i| at + i + 1)
                .or_else(|| memchr::memchr(b'\n', &input[cut..]).map(|i| cut + i + 1))
                .unwrap_or(input.len())
        };
        let block = &input[at..end];
        let (start, stop) = (base + at as u64, base + end as u64);
        ctx.current.set(Mapping::Lines { start, end: stop });
        ctx.offset = start;
        job.map_lines(block, ctx);
        lines += memchr::memchr_iter(b'\n', block).count() as u64
            + u64::from(block.last() != Some(&b'\n'));
        if ctx.buffer.error.is_some() {
            break;
        }
        at = end;
    }
    lines
}

/// How many records ahead of the one it writes a map's writer asks for (see [`prefetch`]).
const PREFETCH_AHEAD: usize = 8;

/// Asks the CPU to start loading `bytes` into its caches: the cache lines of its first,
/// 65th and last byte (all of a record of up to 128 bytes; the CPU's own prefetcher follows
/// longer ones).
#[inline(always)]
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for at in [0, 64, bytes.len().saturating_sub(1)] {
        if let Some(b) = bytes.get(at) {
            // SAFETY: a prefetch only hints the caches, and `b` is a byte of `bytes`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    std::ptr::from_ref(b).cast(),
                );
            }
        }
    }
}

/// Fixed bookkeeping per buffered pair, on top of its key and value bytes.
const ENTRY_OVERHEAD: usize = 32;

struct Entry {
    partition: u32,
    prefix: u64,
    offset: usize,
    key_len: u32,
    value_len: u32,
}

/// The map-side buffer of one task.
pub struct MapBuffer<J: Job> {
    partitions: u32,
    budget: usize,
    used: usize,
    table: CombineTable<J::Value>,
    arena: Vec<u8>,
    entries: Vec<Entry>,
    spill_dir: PathBuf,
    spills: Vec<PathBuf>,
    spilled_bytes: u64,
    spilled_records: u64,
    emitted: u64,
    pub(crate) error: Option<TaskError>,
    partitioner: crate::partition::Partitioner,
}

impl<J: Job> MapBuffer<J> {
    fn new(cfg: &MapConfig, partitioner: crate::partition::Partitioner) -> Self {
        MapBuffer {
            partitions: cfg.partitions.max(1),
            budget: cfg.memory_budget.max(4096),
            used: 0,
            table: CombineTable::new(),
            arena: Vec::new(),
            entries: Vec::new(),
            spill_dir: cfg.spill_dir.clone(),
            spills: Vec::new(),
            spilled_bytes: 0,
            spilled_records: 0,
            emitted: 0,
            error: None,
            partitioner,
        }
    }

    // No check of `self.error` in the inserts: it cost word count a tenth of its time. After
    // a failed spill the pairs of the current record (or block of lines) still go into the
    // buffer, no further spill is tried, and the task loop stops at the record's end.

    #[inline(always)]
    pub(crate) fn insert(&mut self, key: &[u8], value: J::Value) {
        self.emitted += 1;
        if let Some(combine) = J::COMBINE {
            if let Upsert::Vacant(value) = self.table.upsert(key, value, combine) {
                self.insert_new(key, value);
            }
        } else {
            self.append(key, |arena| value.encode_value(arena));
        }
    }

    /// [`Self::insert`] of a key the caller has as padded words (a tokeniser's words): the
    /// combining table finds it by its words, and its bytes are made only for a new key.
    #[inline(always)]
    pub(crate) fn insert_short(&mut self, key: ShortKey, value: J::Value) {
        let Some(combine) = J::COMBINE else {
            return self.insert(&key.padded_bytes()[..key.len()], value);
        };
        self.emitted += 1;
        if let Upsert::Vacant(value) = self.table.upsert_short(key, value, combine) {
            self.insert_new(&key.padded_bytes()[..key.len()], value);
        }
    }

    /// Adds a key that is not in the combining table.
    #[inline(always)]
    fn insert_new(&mut self, key: &[u8], value: J::Value) {
        self.used += self.table.insert(key, value) + ENTRY_OVERHEAD;
        self.spill_if_full();
    }

    /// [`Self::insert`] of a value in a borrowed form that encodes as its owned form does
    /// (see [`crate::MapContext::emit_borrowed`]): a job without a combiner encodes it into
    /// the buffer as it is, with no owned value made and dropped per record.
    #[inline]
    pub(crate) fn insert_borrowed<B>(&mut self, key: &[u8], value: &B)
    where
        B: serde::Serialize + ToOwned<Owned = J::Value> + ?Sized,
    {
        if J::COMBINE.is_some() {
            return self.insert(key, value.to_owned());
        }
        self.emitted += 1;
        self.append(key, |arena| {
            postcard::to_io(value, arena).expect("postcard encodes into a Vec");
        });
    }

    /// Appends a pair to the arena of a job without a combiner; `encode` appends the value.
    #[inline(always)]
    fn append(&mut self, key: &[u8], encode: impl FnOnce(&mut Vec<u8>)) {
        let partition = self.partitioner.partition(key, self.partitions);
        let offset = self.arena.len();
        self.arena.extend_from_slice(key);
        encode(&mut self.arena);
        let value_len = self.arena.len() - offset - key.len();
        self.entries.push(Entry {
            partition,
            prefix: prefix(key),
            offset,
            key_len: key.len() as u32,
            value_len: value_len as u32,
        });
        self.used += key.len() + value_len + ENTRY_OVERHEAD;
        self.spill_if_full();
    }

    #[inline(always)]
    fn spill_if_full(&mut self) {
        if self.used >= self.budget && self.error.is_none() {
            if let Err(e) = self.spill() {
                self.error = Some(e);
            }
        }
    }

    /// Makes room for the pairs of `input_len` bytes of input, as a job that emits about its
    /// input (a sort) does, up to the budget: an arena grown by doubling copies what it holds
    /// each time, and may end at twice its size. Room not written is not memory used.
    fn expect_input(&mut self, input_len: usize) {
        if J::COMBINE.is_none() {
            self.arena
                .reserve((input_len + input_len / 8).min(self.budget));
        }
    }

    /// Writes the buffer, sorted, to `out`; returns what was written.
    fn write_sorted<W: std::io::Write>(&mut self, out: W) -> Result<(W, FileSummary), TaskError> {
        let mut w = ShuffleWriter::new(out, self.partitions);
        if J::COMBINE.is_some() {
            let mut buf = Vec::new();
            let (partitioner, partitions) = (&self.partitioner, self.partitions);
            let drained = self
                .table
                .drain_sorted(|k| partitioner.partition(k, partitions));
            for (partition, key, value) in drained.iter() {
                buf.clear();
                value.encode_value(&mut buf);
                w.push(partition, key, &buf)?;
            }
        } else {
            let arena = &self.arena;
            let key = |e: &Entry| &arena[e.offset..e.offset + e.key_len as usize];
            // Stable, so equal keys keep emission order.
            self.entries.sort_by(|a, b| {
                (a.partition, a.prefix)
                    .cmp(&(b.partition, b.prefix))
                    .then_with(|| key(a).cmp(key(b)))
            });
            for (i, e) in self.entries.iter().enumerate() {
                // Sorted, the records are read from all over the arena: a cache miss each,
                // unless asked for a few records ahead.
                if let Some(n) = self.entries.get(i + PREFETCH_AHEAD) {
                    let len = (n.key_len + n.value_len) as usize;
                    prefetch(&arena[n.offset..n.offset + len]);
                }
                let k = e.offset + e.key_len as usize;
                w.push(
                    e.partition,
                    &arena[e.offset..k],
                    &arena[k..k + e.value_len as usize],
                )?;
            }
            self.entries.clear();
            self.arena.clear();
        }
        self.used = 0;
        Ok(w.finish()?)
    }

    fn spill(&mut self) -> Result<(), TaskError> {
        protocol::failpoint::hit("map.spill");
        std::fs::create_dir_all(&self.spill_dir).map_err(|e| TaskError::io(&self.spill_dir, e))?;
        let path = self
            .spill_dir
            .join(format!("spill-{:05}", self.spills.len()));
        let file = File::create(&path).map_err(|e| TaskError::io(&path, e))?;
        let (_, summary) = self.write_sorted(BufWriter::with_capacity(1 << 20, file))?;
        tracing::debug!(spill = %path.display(), bytes = summary.bytes, "spilled map buffer");
        self.spilled_bytes += summary.bytes;
        self.spilled_records += summary.records;
        self.spills.push(path);
        Ok(())
    }

    /// Writes the task's output file: the buffer itself, or the merge of all spill runs.
    fn finish(mut self, out: &Path) -> Result<(FileSummary, Counters), TaskError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let file = File::create(out).map_err(|e| TaskError::io(out, e))?;
        let writer = BufWriter::with_capacity(1 << 20, file);
        let summary = if self.spills.is_empty() {
            self.write_sorted(writer)?.1
        } else {
            if self.used > 0 {
                self.spill()?;
            }
            let summary = self.merge_spills(writer)?;
            for s in &self.spills {
                let _ = std::fs::remove_file(s);
            }
            summary
        };
        let mut counters = Counters::default();
        counters.add("map_output_records", self.emitted);
        if J::COMBINE.is_some() {
            counters.add("combine_input_records", self.emitted);
            counters.add("combine_output_records", summary.records);
        }
        counters.add("map_output_materialized_bytes", summary.bytes);
        counters.add("spilled_bytes", self.spilled_bytes);
        counters.add("spilled_records", self.spilled_records);
        Ok((summary, counters))
    }

    fn merge_spills(&self, out: BufWriter<File>) -> Result<FileSummary, TaskError> {
        let mut files = Vec::with_capacity(self.spills.len());
        for s in &self.spills {
            files.push(ShuffleFile::open(mmap(s)?)?);
        }
        let mut w = ShuffleWriter::new(out, self.partitions);
        let mut key = Vec::new();
        let mut buf = Vec::new();
        for p in 0..self.partitions {
            let mut m = Merger::new(files.iter().map(|f| f.partition(p)).collect())?;
            if let Some(combine) = J::COMBINE {
                while let Some((k, v)) = m.next_record()? {
                    key.clear();
                    key.extend_from_slice(k);
                    let mut acc = J::Value::decode_value(v)?;
                    while let Some(v) = m.next_value_for(&key)? {
                        combine(&mut acc, J::Value::decode_value(v)?);
                    }
                    buf.clear();
                    acc.encode_value(&mut buf);
                    w.push(p, &key, &buf)?;
                }
            } else {
                while let Some((k, v)) = m.next_record()? {
                    w.push(p, k, v)?;
                }
            }
        }
        Ok(w.finish()?.1)
    }
}

/// Memory-maps a local file read-only.
pub(crate) fn mmap(path: &Path) -> Result<Bytes, TaskError> {
    let file = File::open(path).map_err(|e| TaskError::io(path, e))?;
    if file.metadata().map_err(|e| TaskError::io(path, e))?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: read-only map of a file this task wrote and no one else modifies.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| TaskError::io(path, e))?;
    Ok(Bytes::from_owner(map))
}

/// Runs `job`'s map over the records of `input` and writes the sorted, partitioned output
/// file at `out`. Returns the task's counters.
///
/// # Errors
/// [`TaskError`] if a spill or the output cannot be written.
pub fn run_map<J: Job>(
    job: &mut J,
    input: &[u8],
    cfg: &MapConfig,
    out: &Path,
    current: &std::cell::Cell<Mapping>,
) -> Result<Counters, TaskError> {
    let mut buffer = MapBuffer::new(cfg, job.partitioner());
    buffer.expect_input(input.len());
    let mut fast = FastCounters::default();
    let (mut records, mut skipped) = (0u64, 0u64);
    let mut listed = Vec::new();
    {
        let mut ctx = MapContext {
            buffer: &mut buffer,
            counters: &mut fast,
            scratch: Vec::new(),
            input: &cfg.input,
            offset: 0,
            record_name: &[],
            listed: &mut listed,
            group: &cfg.group,
            current,
        };
        let mut skip = cfg.skip.iter().copied().peekable();
        // Lines go to `map_lines` a block at a time, unless some must be skipped or a panic
        // must name its line.
        let blocks = cfg.format == crate::InputFormat::Lines
            && cfg.group.is_empty()
            && cfg.skip.is_empty()
            && !cfg.skip_mode;
        let mut input_records = if blocks {
            records = map_line_blocks(job, input, cfg.base_offset, &mut ctx);
            crate::records::Records::new(cfg.format, &[])
        } else if !cfg.group.is_empty() {
            crate::records::Records::group(&cfg.group, input)
        } else if cfg.piece {
            crate::records::Records::piece(cfg.format, input)
        } else {
            crate::records::Records::new(cfg.format, input)
        };
        for (name, line) in input_records.by_ref() {
            let offset =
                cfg.base_offset + (line.as_ptr() as usize - input.as_ptr() as usize) as u64;
            while skip.next_if(|&o| o < offset).is_some() {}
            if skip.next_if_eq(&offset).is_some() {
                skipped += 1;
                continue;
            }
            // Read back by the caller if `map` panics: which record did it.
            current.set(Mapping::Record(offset));
            ctx.offset = offset;
            // A whole file planned before files were grouped is named by its path.
            ctx.record_name = if name.is_empty() && cfg.format == crate::InputFormat::WholeFiles {
                cfg.input.as_bytes()
            } else {
                name
            };
            // Only a group's records change files (this loop is every job's hottest).
            if !cfg.group.is_empty() {
                if let Some(m) = crate::split::GroupMember::at(&cfg.group, offset - cfg.base_offset)
                {
                    ctx.input = &m.path;
                }
            }
            job.map(line, &mut ctx);
            records += 1;
            if ctx.buffer.error.is_some() {
                break;
            }
        }
        if let Some((e, 0)) = input_records
            .error()
            .filter(|_| records == 0 && cfg.base_offset == 0)
        {
            // Named as a shard but not a tar file at all: nothing of it could be read,
            // and no retry changes that.
            return Err(TaskError::Input(format!(
                "{} is named as a tar shard but is not a tar file ({e}); loose files are read as they are when their names do not end in .tar",
                cfg.input
            )));
        }
        // Tar members with no file data to read (links, devices): listed and counted.
        for (at, why) in input_records.passed_over() {
            ctx.list_skipped(cfg.base_offset + *at as u64, why);
            skipped += 1;
        }
        if let Some((e, at)) = input_records.error() {
            // A corrupt or truncated shard: its readable members are mapped, the rest is
            // counted and listed with where the cut is and how much was not read, not a
            // reason to fail the task again and again.
            tracing::warn!(input = %cfg.input, error = e, "input cut short");
            ctx.count("corrupt_inputs", 1);
            let unread = input.len().saturating_sub(at) as u64;
            ctx.count("unread_input_bytes", unread);
            ctx.list_skipped(
                cfg.base_offset + at as u64,
                &format!("input cut short ({e}): its last {unread} bytes were not read"),
            );
        }
        job.map_end(&mut ctx).map_err(TaskError::MapEnd)?;
    }
    let (_, mut counters) = buffer.finish(out)?;
    cfg.listed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(listed);
    counters.add("skipped_records", skipped);
    let _ = std::fs::remove_dir(&cfg.spill_dir);
    counters.add("map_input_records", records);
    counters.add("map_input_bytes", input.len() as u64);
    fast.drain_into(&mut counters);
    Ok(counters)
}

/// Runs the map task of an incremental run over one part of an earlier output's state (a
/// shuffle file of one partition, keys sorted, each with the fold of its values): every key
/// goes into the map buffer with its value as it is, so it is partitioned, combined and
/// shuffled like the new input's and folded into it in the reduces. Counts
/// `state_input_records`.
///
/// # Errors
/// [`TaskError`] if the state file is corrupt or a spill or the output cannot be written.
pub fn run_state_map<J: Job>(
    job: &J,
    state: Bytes,
    cfg: &MapConfig,
    out: &Path,
) -> Result<Counters, TaskError> {
    let input_bytes = state.len() as u64;
    let file = ShuffleFile::open(state)?;
    for p in 0..file.partitions() {
        // Every block's checksum, before anything of it is folded in.
        super::format::verify_run(&file.partition(p))?;
    }
    let mut merger = Merger::new((0..file.partitions()).map(|p| file.partition(p)).collect())?;
    let mut buffer = MapBuffer::<J>::new(cfg, job.partitioner());
    let mut records = 0u64;
    while let Some((key, value)) = merger.next_record()? {
        buffer.insert(key, J::Value::decode_value(value)?);
        records += 1;
        if buffer.error.is_some() {
            break;
        }
    }
    let (_, mut counters) = buffer.finish(out)?;
    let _ = std::fs::remove_dir(&cfg.spill_dir);
    counters.add("state_input_records", records);
    counters.add("state_input_bytes", input_bytes);
    Ok(counters)
}

/// Decodes a key for display in error messages and tests.
pub fn decode_key<J: Job>(bytes: &[u8]) -> Result<J::Key, TaskError> {
    Ok(J::Key::decode_key(bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::format::BlockCursor;
    use crate::sdk::{ReduceContext, Values};
    use proptest::prelude::*;

    /// A map of a split of lines at `base_offset`, with `partitions`, 1 MiB of memory and no
    /// skipped records, spilling under `dir`.
    fn lines_config(dir: &std::path::Path, partitions: u32, base_offset: u64) -> MapConfig {
        MapConfig {
            state: false,
            input: String::new(),
            group: Vec::new(),
            format: crate::InputFormat::Lines,
            piece: false,
            listed: Default::default(),
            partitions,
            memory_budget: 1 << 20,
            spill_dir: dir.join("spill"),
            base_offset,
            skip: Vec::new(),
            skip_mode: false,
        }
    }

    /// Emits the first three bytes of each record as key and its length as value; combines by summing when `C` is true.
    struct Prefix<const C: bool>;

    impl<const C: bool> Job for Prefix<C> {
        type Key = Vec<u8>;
        type Value = u64;
        const COMBINE: Option<crate::sdk::Combiner<u64>> = if C {
            Some(|acc, next| *acc += next)
        } else {
            None
        };

        fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
            ctx.emit_encoded(&record[..record.len().min(3)], record.len() as u64);
        }

        fn reduce(&self, _: Vec<u8>, _: Values<'_, u64>, _: &mut ReduceContext<'_>) {}
    }

    fn output<J: Job>(
        job: &mut J,
        input: &[u8],
        budget: usize,
    ) -> (Vec<Vec<(Vec<u8>, Vec<u8>)>>, Counters) {
        output_in_mode(job, input, budget, false)
    }

    fn output_in_mode<J: Job>(
        job: &mut J,
        input: &[u8],
        budget: usize,
        skip_mode: bool,
    ) -> (Vec<Vec<(Vec<u8>, Vec<u8>)>>, Counters) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = MapConfig {
            memory_budget: budget,
            skip_mode,
            ..lines_config(dir.path(), 3, 0)
        };
        let out = dir.path().join("out");
        let counters = run_map(
            job,
            input,
            &cfg,
            &out,
            &std::cell::Cell::new(Mapping::Record(0)),
        )
        .unwrap();
        let file = ShuffleFile::open(Bytes::from(std::fs::read(&out).unwrap())).unwrap();
        let parts = (0..3)
            .map(|p| {
                let mut c = BlockCursor::new(file.partition(p));
                let mut v = Vec::new();
                while c.advance().unwrap() {
                    v.push((c.key().to_vec(), c.value().to_vec()));
                }
                v
            })
            .collect();
        assert!(
            !dir.path().join("spill").exists(),
            "spill files are removed"
        );
        (parts, counters)
    }

    /// Counts its records and fails in `map_end`.
    struct FailsAtEnd(u64);

    impl Job for FailsAtEnd {
        type Key = Vec<u8>;
        type Value = u64;

        fn map(&mut self, _: &[u8], _: &mut MapContext<'_, Self>) {
            self.0 += 1;
        }

        fn map_end(&mut self, _: &mut MapContext<'_, Self>) -> Result<(), crate::sdk::HookError> {
            Err(format!("gave up after {} records", self.0).into())
        }

        fn reduce(&self, _: Vec<u8>, _: Values<'_, u64>, _: &mut ReduceContext<'_>) {}
    }

    #[test]
    fn a_failing_map_end_fails_the_attempt_as_retryable_with_its_state_seen() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = lines_config(dir.path(), 2, 0);
        let err = run_map(
            &mut FailsAtEnd(0),
            b"a\nb\nc\n",
            &cfg,
            &dir.path().join("out"),
            &std::cell::Cell::new(Mapping::Record(0)),
        )
        .unwrap_err();
        let chain = crate::runtime::error_chain(&err);
        assert!(chain.contains("gave up after 3 records"), "{chain}");
        assert_eq!(err.kind(), protocol::FailureKind::Retryable);
    }

    /// A spill that cannot be written fails the attempt, naming where it was to go, with or
    /// without a combiner; the map stops at the record whose pair filled the buffer.
    fn a_failed_spill_fails_the_map<J: Job>(mut job: J) {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("not-a-dir");
        std::fs::write(&blocker, b"").unwrap();
        let cfg = MapConfig {
            memory_budget: 4096,
            spill_dir: blocker.join("spill"),
            ..lines_config(dir.path(), 2, 0)
        };
        let input: Vec<u8> = (0..5000)
            .flat_map(|i| format!("{:03x}\n", i % 4096).into_bytes())
            .collect();
        let err = run_map(
            &mut job,
            &input,
            &cfg,
            &dir.path().join("out"),
            &std::cell::Cell::new(Mapping::Record(0)),
        )
        .unwrap_err();
        let chain = crate::runtime::error_chain(&err);
        assert!(chain.contains("not-a-dir"), "{chain}");
        assert!(!dir.path().join("out").exists(), "no output written");
    }

    #[test]
    fn a_spill_that_cannot_be_written_fails_the_map() {
        a_failed_spill_fails_the_map(Prefix::<true>);
        a_failed_spill_fails_the_map(Prefix::<false>);
    }

    fn check<J: Job>(job: &mut J, input: &[u8]) -> Result<(), TestCaseError> {
        let (big, c_big) = output(job, input, 1 << 30);
        let (small, c_small) = output(job, input, 4096);
        prop_assert_eq!(c_big.get("spilled_bytes"), 0);
        prop_assert_eq!(&big, &small);
        for part in &big {
            prop_assert!(
                part.windows(2).all(|w| w[0].0 <= w[1].0),
                "sorted within a partition"
            );
        }
        let records: usize = big.iter().map(Vec::len).sum();
        if c_small.get("spilled_records") > 0 {
            prop_assert!(c_small.get("spilled_bytes") > 0);
        }
        if J::COMBINE.is_none() {
            prop_assert_eq!(records as u64, c_big.get("map_output_records"));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn spilling_never_changes_the_map_output(
            lines in proptest::collection::vec("[a-e]{1,6}", 0..3000)
        ) {
            let input = lines.join("\n").into_bytes();
            check(&mut Prefix::<true>, &input)?;
            check(&mut Prefix::<false>, &input)?;
        }
    }

    #[test]
    fn a_job_mapping_blocks_of_lines_gives_what_it_gives_line_by_line() {
        // Blocks are cut at line ends near every MiB; a line longer than that is one block.
        let mut input = Vec::new();
        for i in 0..150_000 {
            input.extend_from_slice(match i % 5 {
                0 => b"The cat\r\n".as_slice(),
                1 => b"\n",
                2 => b"sat, on the MAT; 42 times\n",
                3 => b"a\rb\n",
                _ => b"\r\n",
            });
        }
        input.extend(std::iter::repeat_n(b"word ".as_slice(), 300_000).flatten());
        input.extend_from_slice(b"\nno newline at the end");
        let lines = crate::split::Lines::new(&input).count() as u64;
        let job = &mut crate::builtin::wordcount::WordCount;
        // In skip mode every line goes to `map` on its own.
        let (by_line, c_line) = output_in_mode(job, &input, 1 << 30, true);
        for budget in [1 << 30, 1 << 12] {
            let (by_block, c_block) = output_in_mode(job, &input, budget, false);
            assert_eq!(by_block, by_line);
            assert_eq!(c_block.get("map_input_records"), lines);
        }
        assert_eq!(c_line.get("map_input_records"), lines);
        assert_eq!(
            by_line.iter().map(Vec::len).sum::<usize>(),
            13,
            "distinct words"
        );
    }

    /// Panics in `map_lines` on a block holding "boom".
    struct BlockBoom;

    impl Job for BlockBoom {
        type Key = Vec<u8>;
        type Value = u64;

        fn map(&mut self, record: &[u8], _: &mut MapContext<'_, Self>) {
            assert!(record != b"boom", "boom");
        }

        fn map_lines(&mut self, lines: &[u8], _: &mut MapContext<'_, Self>) {
            assert!(memchr::memmem::find(lines, b"boom").is_none(), "boom");
        }

        fn reduce(&self, _: Vec<u8>, _: Values<'_, u64>, _: &mut ReduceContext<'_>) {}
    }

    #[test]
    fn a_panic_in_a_block_of_lines_names_the_block_and_in_skip_mode_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = lines_config(dir.path(), 1, 100);
        let out = dir.path().join("out");
        let err =
            crate::runtime::map_attempt(&mut BlockBoom, b"a\nboom\nc", &cfg, &out).unwrap_err();
        let TaskError::Panicked { message, record } = err else {
            panic!("{err}")
        };
        assert_eq!(record, None);
        assert!(
            message.ends_with("boom (mapping the lines at input offsets 100 to 108 as one block)"),
            "{message}"
        );
        cfg.skip_mode = true;
        let err =
            crate::runtime::map_attempt(&mut BlockBoom, b"a\nboom\nc", &cfg, &out).unwrap_err();
        assert!(
            matches!(
                err,
                TaskError::Panicked {
                    record: Some(102),
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Emits each record under its first byte, as a borrowed or an owned value.
    struct Whole<const BORROWED: bool, const C: bool>;

    impl<const BORROWED: bool, const C: bool> Job for Whole<BORROWED, C> {
        type Key = Vec<u8>;
        type Value = Vec<u8>;
        const COMBINE: Option<crate::sdk::Combiner<Vec<u8>>> = if C {
            Some(|acc, next| acc.extend(next))
        } else {
            None
        };

        fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
            let key = &record[..record.len().min(1)];
            if BORROWED {
                ctx.emit_borrowed(key, record);
            } else {
                ctx.emit_encoded(key, record.to_vec());
            }
        }

        fn reduce(&self, _: Vec<u8>, _: Values<'_, Vec<u8>>, _: &mut ReduceContext<'_>) {}
    }

    #[test]
    fn a_borrowed_value_is_buffered_as_its_owned_form() {
        let input = b"apple\nbanana\ncherry\navocado\n\nblueberry";
        for budget in [1 << 20, 64] {
            let (borrowed, c) = output(&mut Whole::<true, false>, input, budget);
            assert_eq!(
                borrowed,
                output(&mut Whole::<false, false>, input, budget).0
            );
            assert_eq!(c.get("map_output_records"), 6);
            let (borrowed, _) = output(&mut Whole::<true, true>, input, budget);
            assert_eq!(borrowed, output(&mut Whole::<false, true>, input, budget).0);
        }
    }

    #[test]
    fn skipped_offsets_are_not_mapped_and_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let input = b"aaa\nbbb\nccc\nddd";
        // Offsets 100 (aaa), 104 (bbb), 108 (ccc), 112 (ddd); 50 is before the split.
        let cfg = MapConfig {
            skip: vec![50, 104, 112],
            ..lines_config(dir.path(), 1, 100)
        };
        let current = std::cell::Cell::new(Mapping::Record(0));
        let c = run_map(
            &mut Prefix::<false>,
            input,
            &cfg,
            &dir.path().join("out"),
            &current,
        )
        .unwrap();
        assert_eq!(
            (c.get("map_input_records"), c.get("skipped_records")),
            (2, 2)
        );
        assert_eq!(
            current.get(),
            Mapping::Record(108),
            "the last record mapped"
        );
    }

    #[test]
    fn a_tiny_budget_spills() {
        let input: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("k{i}\n").into_bytes())
            .collect();
        let (_, c) = output(&mut Prefix::<false>, &input, 4096);
        assert!(
            c.get("spilled_bytes") > 0 && c.get("spilled_records") > 0,
            "{c:?}"
        );
    }
}
