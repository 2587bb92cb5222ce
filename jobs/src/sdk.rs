//! The job SDK: what a map/reduce job implements, and the contexts it is called with.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::partition::Partitioner;
use crate::runtime::map::MapBuffer;
use crate::runtime::merge::Merger;
pub use crate::InputFormat;

/// A malformed encoded key or value (corrupt shuffle data or a codec bug).
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {reason}")]
pub struct CodecError {
    /// Key or value.
    pub what: &'static str,
    /// What was wrong.
    pub reason: String,
}

/// A shuffle key. Its encoding must preserve order: keys are sorted by their encoded bytes,
/// so `a < b` must hold exactly when `encode(a) < encode(b)`.
pub trait Key: Sized + Send + 'static {
    /// Appends the order-preserving encoding of `self`.
    fn encode_key(&self, out: &mut Vec<u8>);
    /// Decodes a whole encoded key.
    ///
    /// # Errors
    /// [`CodecError`] if the bytes are not an encoding of this type.
    fn decode_key(bytes: &[u8]) -> Result<Self, CodecError>;
}

macro_rules! unsigned_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            fn encode_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_key(bytes: &[u8]) -> Result<Self, CodecError> {
                let arr = bytes.try_into().map_err(|_| CodecError {
                    what: "key",
                    reason: format!("expected {} bytes, got {}", std::mem::size_of::<$t>(), bytes.len()),
                })?;
                Ok(<$t>::from_be_bytes(arr))
            }
        }
    )*};
}
unsigned_key!(u8, u16, u32, u64);

impl Key for i64 {
    fn encode_key(&self, out: &mut Vec<u8>) {
        // Flipping the sign bit makes two's complement sort as unsigned big-endian bytes.
        out.extend_from_slice(&((*self as u64) ^ (1 << 63)).to_be_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Result<Self, CodecError> {
        u64::decode_key(bytes).map(|u| (u ^ (1 << 63)) as i64)
    }
}

impl Key for Vec<u8> {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(bytes.to_vec())
    }
}

/// Fixed-size bytes (a hash, a record's fixed-width key): decoded without an allocation.
impl<const N: usize> Key for [u8; N] {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_key(bytes: &[u8]) -> Result<Self, CodecError> {
        bytes.try_into().map_err(|_| CodecError {
            what: "key",
            reason: format!("expected {N} bytes, got {}", bytes.len()),
        })
    }
}

impl Key for String {
    fn encode_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
    fn decode_key(bytes: &[u8]) -> Result<Self, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError {
            what: "key",
            reason: e.to_string(),
        })
    }
}

/// A shuffle value: any serde type, encoded with postcard (a maintained, compact serde codec).
pub trait Value: Serialize + DeserializeOwned + Send + 'static {
    /// Appends the encoding of `self`.
    fn encode_value(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every serde-derived type serialises.
        postcard::to_io(self, out).expect("postcard encodes into a Vec");
    }
    /// Decodes a value.
    ///
    /// # Errors
    /// [`CodecError`] if the bytes are not an encoding of this type.
    fn decode_value(bytes: &[u8]) -> Result<Self, CodecError> {
        postcard::from_bytes(bytes).map_err(|e| CodecError {
            what: "value",
            reason: e.to_string(),
        })
    }
}

impl<T: Serialize + DeserializeOwned + Send + 'static> Value for T {}

/// A map-side combiner: folds `next` into `acc`. It must be associative and commutative.
pub type Combiner<V> = fn(acc: &mut V, next: V);

/// The combiner of counts and sums: `Some(sdk::sum)` as a job's [`Job::COMBINE`].
pub fn sum<T: std::ops::AddAssign>(acc: &mut T, next: T) {
    *acc += next;
}

/// A map/reduce job.
///
/// ```
/// use jobs::sdk::{Combiner, Job, MapContext, ReduceContext, Values};
///
/// /// Words per first letter, with a map-side combine.
/// struct Initials;
///
/// impl Job for Initials {
///     type Key = String;
///     type Value = u64;
///     const COMBINE: Option<Combiner<u64>> = Some(|acc, n| *acc += n);
///
///     fn map(&mut self, line: &[u8], ctx: &mut MapContext<'_, Self>) {
///         for word in line.split(|b| *b == b' ').filter(|w| !w.is_empty()) {
///             ctx.emit(&(word[0] as char).to_string(), 1);
///         }
///     }
///
///     fn reduce(&self, initial: String, n: Values<'_, u64>, out: &mut ReduceContext<'_>) {
///         out.write_line(format!("{initial}\t{}", n.sum::<u64>()).as_bytes());
///     }
/// }
/// ```
///
/// A job value lives for one task attempt: it is built from the job's parameters,
/// [`Job::setup`] runs, then `map` is called once per input record (a line, without its line
/// terminator) and [`Job::map_end`] once after the last; or, in a reduce task, `reduce` once
/// per key, in increasing key order within each partition, with all values of that key. So
/// `map` takes `&mut self`: per-task state (a batch for a model, a running total) is a plain
/// field, no lock needed. When [`Job::COMBINE`] is set, values of equal keys are folded with it
/// on the map side, in memory and when spilling.
pub trait Job: Send + Sync + Sized + 'static {
    /// The shuffle key.
    type Key: Key;
    /// The shuffle value.
    type Value: Value;
    /// The map-side combiner, if values of one key may be folded before the shuffle (a count,
    /// a sum, a set union). `None` (the default) ships every emitted value to the reducer.
    const COMBINE: Option<Combiner<Self::Value>> = None;
    /// How input files are cut into records: lines (the default), whole files, or the members
    /// of tar shards ([`crate::InputFormat`]).
    const INPUT: crate::InputFormat = crate::InputFormat::Lines;
    /// The parameters whose values name files (a model, a lookup table). At submit they are
    /// made absolute like `--input` (workers run elsewhere) and must exist, so a wrong path
    /// fails the submission rather than every attempt on the workers.
    const PATH_PARAMS: &'static [&'static str] = &[];
    /// Whether the job keeps its state beside its output, so that a later run can continue
    /// from that output (`--from`: an incremental run reads only the input it did not cover
    /// and folds it into this state). The state is every key with its values folded by
    /// [`Job::COMBINE`] into one, under the output's `_state/`; `reduce` is then called with
    /// that one folded value. A job can keep state only if it has a combiner and its `reduce`
    /// depends on the fold of a key's values alone (a count, a sum, a histogram, a top-N over
    /// counts), which is what a combiner already promises. Ignored without a combiner.
    const STATE: bool = false;
    /// The version of the job's definition: raise it when a change makes the job compute
    /// something else from the same input (another tokeniser, a fixed parser, another key),
    /// so that the state of an output written before cannot be folded into a run of the new
    /// definition: an incremental run (`--from`) of another version is refused, or with
    /// `--full-if-changed` runs in full. Recorded in each output's manifest.
    const VERSION: u32 = 1;

    /// Called once per task before any record: load a model or a lookup table, or sample the
    /// input (see [`TaskSetup`]). Not called when a job is only checked (at submit).
    ///
    /// # Errors
    /// Any error (a `String` converts with `.into()` or `?`); the attempt fails with it,
    /// causes included, and is retried like any failed attempt.
    fn setup(&mut self, task: &TaskSetup<'_>) -> Result<(), HookError> {
        let _ = task;
        Ok(())
    }

    /// Maps one input record.
    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>);

    /// Maps a block of whole lines of [`crate::InputFormat::Lines`] input, terminators
    /// included (`\n`, or `\r\n`; the last line of a file may have none). The default gives
    /// each line to [`Job::map`], as its own record; a job whose map of a block is the same
    /// as mapping each of its lines in turn (words, which never span lines, say) can do the
    /// block at once, without a call and a line search per line. Then
    /// [`MapContext::offset`] is the block's first line's, and a panic names the block, not
    /// a line; in skip mode (`--max-bad-records`) every line goes to [`Job::map`] instead.
    fn map_lines(&mut self, lines: &[u8], ctx: &mut MapContext<'_, Self>) {
        let start = ctx.offset;
        for line in crate::split::Lines::new(lines) {
            let offset = start + (line.as_ptr() as usize - lines.as_ptr() as usize) as u64;
            ctx.current
                .set(crate::runtime::map::Mapping::Record(offset));
            ctx.offset = offset;
            self.map(line, ctx);
            if ctx.buffer.error.is_some() {
                break;
            }
        }
    }

    /// Called once per map task after its last record: emit what was held back, for example
    /// the results of records batched for a model. Hadoop's `cleanup`.
    ///
    /// # Errors
    /// Any error; the attempt fails with it and is retried like any failed attempt (no record
    /// is blamed, so skip mode does not start).
    fn map_end(&mut self, ctx: &mut MapContext<'_, Self>) -> Result<(), HookError> {
        let _ = ctx;
        Ok(())
    }

    /// Reduces one key and all its values to output.
    fn reduce(&self, key: Self::Key, values: Values<'_, Self::Value>, out: &mut ReduceContext<'_>);

    /// How each reduce's part file is written: `None` (the default) writes the lines `reduce`
    /// writes, as they are; a [`PartWriter`] gets those lines instead, in order, and writes
    /// the part file from them at the end (a columnar format such as Parquet, for example).
    /// Called once per reduce task.
    fn part_writer(&self) -> Option<Box<dyn PartWriter>> {
        None
    }

    /// Whether this job's map tasks want a GPU. Where some worker has GPUs, the scheduler runs
    /// them only in GPU slots (one per GPU); on a cluster without GPUs they run like any task.
    fn wants_gpu(&self) -> bool {
        false
    }

    /// Returns how this task's keys are assigned to reducers; asked once per map task, after
    /// [`Job::setup`]. The default is the stable hash ([`Partitioner::Hash`]).
    fn partitioner(&self) -> Partitioner {
        Partitioner::Hash
    }
}

/// What a task's [`Job::setup`] can see: the job's inputs and partition count, and a
/// deterministic sample of its input records (every task sees the same sample, so tasks that
/// derive something from it, such as range partition boundaries, agree).
pub struct TaskSetup<'a> {
    /// The job's inputs, as submitted (files, directories or globs).
    pub inputs: &'a [String],
    /// The number of reduce partitions.
    pub partitions: u32,
    /// Whether this task is a reduce (so a job can skip loading what only its map uses).
    /// `quern run --local` sets up one job for all tasks, with this false.
    pub reduce: bool,
    /// The task's index: its split for a map, its partition for a reduce (0 in `quern run
    /// --local`).
    pub index: u32,
    /// A number unique to this attempt within its cluster, never reused (0 in `quern run
    /// --local`): for choices that must differ between attempts of one task.
    pub attempt: u64,
    pub(crate) storage: &'a dfs_client::Storage,
}

impl<'a> TaskSetup<'a> {
    /// A setup context over `inputs` read through `storage`.
    pub fn new(inputs: &'a [String], partitions: u32, storage: &'a dfs_client::Storage) -> Self {
        TaskSetup {
            inputs,
            partitions,
            reduce: false,
            index: 0,
            attempt: 0,
            storage,
        }
    }

    /// The job's storage (local paths and storage URLs), for a job that keeps files of its
    /// own beside its output (a cache of earlier results, say).
    pub fn storage(&self) -> &'a dfs_client::Storage {
        self.storage
    }

    /// Reads a whole file (a model, a lookup table) from the job's storage: a local path or
    /// a storage URL.
    ///
    /// # Errors
    /// [`SetupError::Read`], naming the path.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, SetupError> {
        self.storage
            .read_all(path)
            .map(|b| b.to_vec())
            .map_err(|source| SetupError::Read {
                path: path.to_string(),
                source,
            })
    }

    /// Up to `n` whole records (lines) spread evenly over the inputs: the first line starting
    /// after each of `n` evenly spaced byte positions. The same inputs give the same sample.
    ///
    /// # Errors
    /// [`SetupError::Inputs`] or [`SetupError::Read`].
    pub fn sample_records(&self, n: usize) -> Result<Vec<Vec<u8>>, SetupError> {
        let mut files: Vec<(String, u64)> = Vec::new();
        for s in crate::plan::plan_splits(self.storage, self.inputs, u64::MAX / 4)
            .map_err(SetupError::Inputs)?
        {
            if files.last().is_none_or(|(p, _)| *p != s.split.path) {
                files.push((s.split.path, s.file_len));
            }
        }
        let total: u64 = files.iter().map(|f| f.1).sum();
        let mut out = Vec::with_capacity(n);
        if total == 0 || n == 0 {
            return Ok(out);
        }
        // Where each record is looked for: (file, offset), in sample order.
        let mut at: Vec<(usize, u64)> = Vec::with_capacity(n);
        let (mut file, mut base) = (0usize, 0u64);
        for i in 0..n as u64 {
            let pos = total / n as u64 * i;
            while pos >= base + files[file].1 {
                base += files[file].1;
                file += 1;
            }
            at.push((file, pos - base));
        }
        // Each file's windows in one storage call (a local file is opened once, not once a
        // record). A small window first: it holds the record whenever lines are short; the
        // rest get 64 KiB. The record is the same either way, the small window being the
        // start of the large one. (The windows were 64 KiB each, opened one by one: a sort's
        // sample of 10,000 read 655 MB in every task and cost more than its maps.)
        let mut found: Vec<Option<Vec<u8>>> = vec![None; at.len()];
        for (f, (path, file_len)) in files.iter().enumerate() {
            // `at` is in file order.
            let mine: Vec<usize> =
                (at.partition_point(|a| a.0 < f)..at.partition_point(|a| a.0 <= f)).collect();
            let mut retry = Vec::new();
            for window in [4096u64, 64 * 1024] {
                let ask: &[usize] = if window == 4096 { &mine } else { &retry };
                if ask.is_empty() {
                    continue;
                }
                let ranges: Vec<(u64, u64)> = ask
                    .iter()
                    .map(|&k| (at[k].1, window.min(file_len - at[k].1)))
                    .collect();
                let data =
                    self.storage
                        .read_ranges(path, &ranges)
                        .map_err(|source| SetupError::Read {
                            path: path.clone(),
                            source,
                        })?;
                let mut again = Vec::new();
                for (&k, data) in ask.iter().zip(&data) {
                    match first_whole_line(data, at[k].1 == 0) {
                        Some(line) => found[k] = Some(line.to_vec()),
                        None if (data.len() as u64) < file_len - at[k].1 => again.push(k),
                        None => {}
                    }
                }
                retry = again;
            }
        }
        out.extend(found.into_iter().flatten());
        Ok(out)
    }
}

/// The first whole line (without its `\n`) of a window of a file: the window's first line
/// when `at_start` (the window starts the file), else the one after the line the window
/// starts in. `None` when the window holds no such line.
fn first_whole_line(data: &[u8], at_start: bool) -> Option<&[u8]> {
    let start = if at_start {
        0
    } else {
        memchr::memchr(b'\n', data)? + 1
    };
    let rest = &data[start..];
    memchr::memchr(b'\n', rest).map(|end| &rest[..end])
}

/// What a job's hook returns when it cannot go on: any error, its causes kept (they are shown
/// with the attempt's failure). A `String` or `&str` converts with `.into()` or `?`.
pub type HookError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Writes a reduce's part file in a format of the job's own from the lines its `reduce`
/// wrote ([`Job::part_writer`]), to `out` as it goes (so a part need not be held whole).
pub trait PartWriter {
    /// Takes one output line, without its line break.
    ///
    /// # Errors
    /// A line it cannot encode, or an error writing to `out`: the attempt fails, and the job
    /// with it (the same lines would fail again).
    fn line(&mut self, line: &[u8], out: &mut dyn std::io::Write) -> Result<(), HookError>;

    /// Writes the rest of the part file to `out`, after the last line.
    ///
    /// # Errors
    /// As [`PartWriter::line`].
    fn finish(self: Box<Self>, out: &mut dyn std::io::Write) -> Result<(), HookError>;
}

/// Why [`TaskSetup`] could not read what a job asked for.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: dfs_client::DfsError,
    },
    /// The job's inputs could not be listed.
    #[error("cannot list the job's inputs")]
    Inputs(#[source] dfs_client::DfsError),
}

/// Named counters of a task or job.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters(pub BTreeMap<String, u64>);

impl Counters {
    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &str, n: u64) {
        // Found without allocating: a job's status adds up every task's counters.
        match self.0.get_mut(name) {
            Some(v) => *v += n,
            None => {
                self.0.insert(name.to_string(), n);
            }
        }
    }

    /// Returns counter `name` (0 if absent).
    pub fn get(&self, name: &str) -> u64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Returns what a finished job's summary must warn about, each naming its counter: most
    /// input records malformed, input that produced no output, input files cut short, records
    /// skipped, and text that is not UTF-8. A job that "succeeds" like that has almost surely
    /// read the wrong data.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let records = self.get("map_input_records");
        let malformed = self.get("malformed_records");
        if records > 0 && malformed * 2 > records {
            out.push(format!(
                "{malformed} of {records} input records ({:.0}%) were malformed (counter malformed_records): is this the input the job expects?",
                malformed as f64 * 100.0 / records as f64
            ));
        } else if records > 0 && malformed * 100 >= records {
            // More than stray lines: records of a shape the job does not know, left out of
            // its output.
            out.push(format!(
                "{malformed} of {records} input records ({:.1}%) were malformed and left out (counter malformed_records)",
                malformed as f64 * 100.0 / records as f64
            ));
        }
        if records > 0
            && self.0.contains_key("reduce_output_records")
            && self.get("reduce_output_records") == 0
        {
            out.push(format!(
                "{records} input records produced no output records (counter reduce_output_records is 0)"
            ));
        }
        let cut = self.get("corrupt_inputs");
        if cut > 0 {
            out.push(format!(
                "{cut} input file(s) were cut short or corrupt: {} bytes after the cut were not read (counters corrupt_inputs, unread_input_bytes; listed in _skipped/records.tsv)",
                self.get("unread_input_bytes")
            ));
        }
        let skipped = self.get("skipped_records");
        if skipped > 0 {
            out.push(format!(
                "{skipped} records were skipped (counter skipped_records; listed in _skipped/records.tsv)"
            ));
        }
        let not_utf8 = self.get(crate::builtin::wordcount::NOT_UTF8);
        if not_utf8 > 0 {
            out.push(format!(
                "{not_utf8} input bytes were not UTF-8 and were read as breaks between words (counter {}): is some of the text in another encoding, such as Latin-1?",
                crate::builtin::wordcount::NOT_UTF8
            ));
        }
        out
    }

    /// Adds every counter of `other`.
    pub fn merge(&mut self, other: &Counters) {
        for (k, v) in &other.0 {
            self.add(k, *v);
        }
    }
}

/// Cheap counters for hot loops: `&'static str` names, merged into [`Counters`] at task end.
#[derive(Debug, Default)]
pub(crate) struct FastCounters(Vec<(&'static str, u64)>);

impl FastCounters {
    pub(crate) fn add(&mut self, name: &'static str, n: u64) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v += n,
            None => self.0.push((name, n)),
        }
    }

    pub(crate) fn drain_into(&mut self, out: &mut Counters) {
        for (k, v) in self.0.drain(..) {
            out.add(k, v);
        }
    }
}

/// What `map` emits into; also carries job counters and parameters.
pub struct MapContext<'a, J: Job> {
    pub(crate) buffer: &'a mut MapBuffer<J>,
    pub(crate) counters: &'a mut FastCounters,
    pub(crate) scratch: Vec<u8>,
    pub(crate) input: &'a str,
    pub(crate) offset: u64,
    pub(crate) record_name: &'a [u8],
    pub(crate) listed: &'a mut Vec<crate::output::SkippedRecord>,
    /// The files of a group split, where they start in its data.
    pub(crate) group: &'a [crate::split::GroupMember],
    /// What is being mapped, read back if job code panics.
    pub(crate) current: &'a std::cell::Cell<crate::runtime::map::Mapping>,
}

impl<J: Job> MapContext<'_, J> {
    /// The input file of the record being mapped (as given or listed: a path or URL), e.g.
    /// to tell documents apart, or the sides of a join.
    pub fn input(&self) -> &str {
        self.input
    }

    /// The byte offset of the record being mapped in its input file. For loose files read
    /// many to a task (whole files, [`crate::split::Split::files`]), where the file starts
    /// in the task's files laid end to end: unique within the task, as offsets are.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The name of the record being mapped: a tar member's path for
    /// [`crate::InputFormat::Tar`]; for a whole file (and a loose file given to a tar job),
    /// its path under the input it was listed from (`2024/cat.jpg` for `photos/2024/cat.jpg`
    /// of input `photos`); empty for lines.
    pub fn record_name(&self) -> &[u8] {
        self.record_name
    }

    /// Whether the record being mapped is a whole file read as one of a group of loose files
    /// ([`crate::split::Split::files`]): every record of [`crate::InputFormat::WholeFiles`],
    /// and a file of a tar job not named `*.tar`.
    pub fn whole_file(&self) -> bool {
        !self.group.is_empty()
    }

    /// Emits one key/value pair.
    pub fn emit(&mut self, key: &J::Key, value: J::Value) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        key.encode_key(&mut scratch);
        self.buffer.insert(&scratch, value);
        self.scratch = scratch;
    }

    /// Emits a pair whose key is already encoded (for example a `String` key as its UTF-8
    /// bytes), saving an allocation per record.
    #[inline(always)]
    pub fn emit_encoded(&mut self, key: &[u8], value: J::Value) {
        self.buffer.insert(key, value);
    }

    /// Emits a pair whose value is given in a borrowed form that the job's value type owns
    /// (`&str` for a `String`, `&[T]` for a `Vec<T>`, [`serde_bytes::Bytes`] for a
    /// `serde_bytes::ByteBuf`): a job without a combiner encodes it straight into its buffer,
    /// saving an allocation and a copy per record. The borrowed form must encode as the owned
    /// one does, as those pairs do.
    pub fn emit_borrowed<B>(&mut self, key: &[u8], value: &B)
    where
        B: Serialize + ToOwned<Owned = J::Value> + ?Sized,
    {
        self.buffer.insert_borrowed(key, value);
    }

    /// [`Self::emit_encoded`] for a key of up to 16 bytes, none zero, that the caller has as
    /// padded words (as [`crate::builtin::wordcount::Word`] hands them out): the combining
    /// table takes those instead of reading the bytes again.
    #[inline(always)]
    pub(crate) fn emit_short(&mut self, key: crate::runtime::table::ShortKey, value: J::Value) {
        self.buffer.insert_short(key, value);
    }

    /// Adds `n` to a named job counter.
    pub fn count(&mut self, name: &'static str, n: u64) {
        self.counters.add(name, n);
    }

    /// Lists the record at `offset` of the current input, with `reason`, in the job's skip
    /// file (`_skipped/records.tsv` in the output, beside skip mode's records): for input the
    /// job leaves out on purpose, such as a corrupt photo, so that it is accounted for. Count
    /// it too, with [`Self::count`]. Only the winning attempt's list is kept.
    pub fn list_skipped(&mut self, offset: u64, reason: &str) {
        // In a group of files, the record is listed as its own file's, at its own offset.
        let (path, offset) = match crate::split::GroupMember::at(self.group, offset) {
            Some(m) => (m.path.as_str(), offset - m.start),
            None => (self.input, offset),
        };
        self.listed.push(crate::output::SkippedRecord {
            path: path.to_string(),
            offset,
            message: reason.to_string(),
        });
    }
}

/// Where `reduce` writes its output lines; also carries job counters.
pub struct ReduceContext<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) records: u64,
    pub(crate) counters: &'a mut FastCounters,
}

impl ReduceContext<'_> {
    /// Writes one output line (a newline is appended).
    pub fn write_line(&mut self, line: &[u8]) {
        self.out.extend_from_slice(line);
        self.out.push(b'\n');
        self.records += 1;
    }

    /// Returns the output buffer to format a line into directly; call [`Self::end_line`] after.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        self.out
    }

    /// Ends a line written through [`Self::buffer`].
    pub fn end_line(&mut self) {
        self.out.push(b'\n');
        self.records += 1;
    }

    /// Ends a record written through [`Self::buffer`] that carries its own terminator (no
    /// newline is added): for jobs that write input records back unchanged.
    pub fn end_record(&mut self) {
        self.records += 1;
    }

    /// Adds `n` to a named job counter.
    pub fn count(&mut self, name: &'static str, n: u64) {
        self.counters.add(name, n);
    }
}

/// The values of one key, decoded lazily from the merged sorted runs (or, for a job that
/// keeps state, the one value they fold to).
pub struct Values<'a, V> {
    pub(crate) source: ValueSource<'a, V>,
}

pub(crate) enum ValueSource<'a, V> {
    /// Decoded from the merger as the reduce asks.
    Merged {
        merger: &'a mut Merger,
        key: &'a [u8],
        error: &'a mut Option<String>,
    },
    /// Already folded with the job's combiner.
    Folded(Option<V>),
}

impl<V: Value> Iterator for Values<'_, V> {
    type Item = V;

    fn next(&mut self) -> Option<V> {
        let (merger, key, error) = match &mut self.source {
            ValueSource::Folded(v) => return v.take(),
            ValueSource::Merged { merger, key, error } => (merger, key, error),
        };
        if error.is_some() {
            return None;
        }
        match merger.next_value_for(key) {
            Ok(Some(bytes)) => match V::decode_value(bytes) {
                Ok(v) => Some(v),
                Err(e) => {
                    **error = Some(e.to_string());
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                **error = Some(e.to_string());
                None
            }
        }
    }
}

impl<V: Value> Values<'_, V> {
    /// Calls `f` with each value in a borrowed form that the value type owns (`&str` for a
    /// `String`, `&[u8]`-like [`serde_bytes::Bytes`] for a `serde_bytes::ByteBuf`), decoded
    /// in place from the shuffle's bytes: no owned value is made and dropped per value. The
    /// values are those [`Iterator::next`] gives, in the same order.
    pub fn for_each_borrowed<B>(self, mut f: impl FnMut(&B))
    where
        B: ?Sized + ToOwned<Owned = V>,
        V: std::borrow::Borrow<B>,
        for<'de> &'de B: serde::Deserialize<'de>,
    {
        let (merger, key, error) = match self.source {
            ValueSource::Folded(v) => {
                if let Some(v) = v {
                    f(std::borrow::Borrow::<B>::borrow(&v));
                }
                return;
            }
            ValueSource::Merged { merger, key, error } => (merger, key, error),
        };
        while error.is_none() {
            match merger.next_value_for(key) {
                Ok(Some(bytes)) => match postcard::from_bytes::<&B>(bytes) {
                    Ok(v) => f(v),
                    Err(e) => {
                        let e = CodecError {
                            what: "value",
                            reason: e.to_string(),
                        };
                        *error = Some(e.to_string());
                    }
                },
                Ok(None) => return,
                Err(e) => *error = Some(e.to_string()),
            }
        }
    }
}

/// Appends the decimal form of `n` (no allocation).
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_records_are_warned_about_from_one_in_a_hundred() {
        let warned = |malformed: u64| {
            let mut c = Counters::default();
            c.add("map_input_records", 10_000);
            c.add("malformed_records", malformed);
            c.warnings()
        };
        // Stray lines (a generated log has one in a thousand) are in the counters only.
        assert_eq!(warned(0), Vec::<String>::new());
        assert_eq!(warned(99), Vec::<String>::new());
        assert_eq!(
            warned(100),
            ["100 of 10000 input records (1.0%) were malformed and left out (counter malformed_records)"]
        );
        assert_eq!(
            warned(5_001),
            ["5001 of 10000 input records (50%) were malformed (counter malformed_records): is this the input the job expects?"]
        );
    }

    #[test]
    fn a_sample_is_the_first_whole_line_after_each_position_whatever_the_line_lengths() {
        let dir = tempfile::tempdir().unwrap();
        // Short lines, lines of 5-9 KiB (past the first window), one of 70 KiB (past both:
        // nothing found there) and a last line without its line break, over two files.
        let mut files = Vec::new();
        for (f, long_every) in [(0, 7), (1, 3)] {
            let mut text = Vec::new();
            for i in 0..400usize {
                let len = if i % long_every == 0 {
                    5_000 + i * 10
                } else {
                    20 + i % 50
                };
                let len = if f == 1 && i == 100 { 70_000 } else { len };
                text.extend((0..len).map(|j| b'a' + ((i + j) % 26) as u8));
                if i < 399 {
                    text.push(b'\n');
                }
            }
            let path = dir.path().join(format!("in-{f}.txt"));
            std::fs::write(&path, &text).unwrap();
            files.push((path.display().to_string(), text));
        }
        let storage = dfs_client::Storage::default();
        let inputs = vec![dir.path().display().to_string()];
        let setup = TaskSetup::new(&inputs, 2, &storage);
        for n in [1, 7, 100, 999] {
            // What it is: the first whole line after each of n evenly spaced positions.
            let total: usize = files.iter().map(|f| f.1.len()).sum();
            let mut want = Vec::new();
            for i in 0..n {
                let mut pos = total / n * i;
                let (_, text) = files
                    .iter()
                    .find(|f| {
                        let here = pos < f.1.len();
                        if !here {
                            pos -= f.1.len();
                        }
                        here
                    })
                    .unwrap();
                let window = &text[pos..text.len().min(pos + 64 * 1024)];
                if let Some(line) = first_whole_line(window, pos == 0) {
                    want.push(line.to_vec());
                }
            }
            assert_eq!(setup.sample_records(n).unwrap(), want, "n = {n}");
        }
    }

    #[test]
    fn key_encodings_preserve_order() {
        let mut prev: Option<Vec<u8>> = None;
        for k in [-5i64, -1, 0, 1, 300, i64::MAX] {
            let mut e = Vec::new();
            k.encode_key(&mut e);
            assert_eq!(i64::decode_key(&e).unwrap(), k);
            if let Some(p) = prev {
                assert!(p < e);
            }
            prev = Some(e);
        }
        let mut a = Vec::new();
        9u64.encode_key(&mut a);
        let mut b = Vec::new();
        10u64.encode_key(&mut b);
        assert!(a < b);
        assert!(u64::decode_key(&a[..3]).is_err());
        let mut c = Vec::new();
        [1u8, 2, 3].encode_key(&mut c);
        assert_eq!(<[u8; 3]>::decode_key(&c).unwrap(), [1, 2, 3]);
        assert!(<[u8; 4]>::decode_key(&c).is_err());
    }

    #[test]
    fn values_round_trip_through_postcard() {
        let v = vec![(1u64, 2u64), (3, 4)];
        let mut e = Vec::new();
        v.encode_value(&mut e);
        assert_eq!(Vec::<(u64, u64)>::decode_value(&e).unwrap(), v);
        assert!(Vec::<(u64, u64)>::decode_value(&[0xff]).is_err());
    }

    #[test]
    fn borrowed_values_are_those_next_gives_and_a_bad_one_is_an_error() {
        use crate::runtime::format::{ShuffleFile, ShuffleWriter};
        use crate::runtime::merge::Merger;
        let run = |pairs: &[(&str, &[u8])]| {
            let mut w = ShuffleWriter::new(Vec::new(), 1);
            for (k, v) in pairs {
                w.push(0, k.as_bytes(), v).unwrap();
            }
            let (data, _) = w.finish().unwrap();
            ShuffleFile::open(bytes::Bytes::from(data))
                .unwrap()
                .partition(0)
        };
        let enc = |v: &str| {
            let mut e = Vec::new();
            v.to_string().encode_value(&mut e);
            e
        };
        let (x, y, z) = (enc("x"), enc("y"), enc("z"));
        // Values of key `a`, then of `b`; the last is not UTF-8.
        let collect = |borrowed: bool, bad: bool| {
            let bad_value: &[u8] = &[2, 0xff, 0xfe];
            let last = if bad { bad_value } else { &y };
            let runs = vec![run(&[("a", &x), ("b", last)]), run(&[("a", &z), ("b", &x)])];
            let mut m = Merger::new(runs).unwrap();
            let mut got = Vec::new();
            let mut error = None;
            for key in [&b"a"[..], b"b"] {
                assert_eq!(m.next_key().unwrap(), Some(key));
                let values = Values::<String> {
                    source: ValueSource::Merged {
                        merger: &mut m,
                        key,
                        error: &mut error,
                    },
                };
                if borrowed {
                    values.for_each_borrowed(|v: &str| got.push(v.to_string()));
                } else {
                    got.extend(values);
                }
            }
            (got, error)
        };
        assert_eq!(collect(true, false), collect(false, false));
        assert_eq!(collect(true, false).0, ["x", "z", "y", "x"]);
        let (got, error) = collect(true, true);
        assert_eq!(got, ["x", "z"]);
        assert!(error.is_some_and(|e| e.contains("value")));
    }

    #[test]
    fn push_u64_formats_decimal() {
        for n in [0u64, 7, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
