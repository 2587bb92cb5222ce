//! The shuffle file: the one on-disk format for map output and spill runs.
//!
//! ```text
//! [block]* [index] [footer]
//! block  = raw_len:u32le comp_len:u32le crc32(comp):u32le comp_bytes (LZ4 block)
//! raw    = (varint key_len, varint value_len, key, value)*   sorted by key
//! index  = (offset:u64le, len:u64le) per partition: that partition's run of blocks
//! footer = partitions:u32le crc32(index):u32le "QRNSHF01"
//! ```
//!
//! A partition's bytes are a self-contained run of blocks, which is what the shuffle service
//! sends to a reducer. Every block is checksummed, so corruption anywhere is detected before a
//! record is decoded; declared sizes are checked before anything is allocated.

use std::fs::File;
use std::io::Write;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

/// Target uncompressed size of one block.
pub const BLOCK_BYTES: usize = 64 * 1024;
/// Largest uncompressed block a reader accepts (a single record may exceed [`BLOCK_BYTES`]).
pub const MAX_BLOCK_BYTES: usize = 256 * 1024 * 1024;
const MAGIC: &[u8; 8] = b"QRNSHF01";
const HEADER: usize = 12;
const FOOTER: usize = 16;

/// Corrupt or truncated shuffle data.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// A block's checksum does not match its bytes.
    #[error("shuffle block at offset {offset} fails its checksum")]
    Checksum {
        /// Offset of the block in its run.
        offset: usize,
    },
    /// The data is not a well-formed shuffle file.
    #[error("corrupt shuffle data: {reason}")]
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// Writing failed.
    #[error("failed to write shuffle data")]
    Write(#[source] std::io::Error),
    /// Reading a run kept in a local file failed.
    #[error("failed to read shuffle data")]
    Read(#[source] std::io::Error),
}

fn corrupt(reason: impl Into<String>) -> FormatError {
    FormatError::Corrupt {
        reason: reason.into(),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &[u8], pos: &mut usize) -> Option<usize> {
    let mut v: usize = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= usize::from(b & 0x7f).checked_shl(shift)?;
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

/// What a finished shuffle file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FileSummary {
    /// Total bytes written, index and footer included.
    pub bytes: u64,
    /// Records written.
    pub records: u64,
}

/// Writes records in (partition, key) order into a shuffle file.
pub struct ShuffleWriter<W: Write> {
    out: W,
    pos: u64,
    raw: Vec<u8>,
    comp: Vec<u8>,
    index: Vec<(u64, u64)>,
    partition: u32,
    partition_start: u64,
    partitions: u32,
    records: u64,
}

impl<W: Write> ShuffleWriter<W> {
    /// Starts a file with `partitions` partitions.
    pub fn new(out: W, partitions: u32) -> Self {
        ShuffleWriter {
            out,
            pos: 0,
            raw: Vec::with_capacity(BLOCK_BYTES + 1024),
            comp: Vec::new(),
            index: Vec::with_capacity(partitions as usize),
            partition: 0,
            partition_start: 0,
            partitions,
            records: 0,
        }
    }

    /// Appends a record to `partition`; partitions must come in non-decreasing order, and keys
    /// in increasing order within one.
    pub fn push(&mut self, partition: u32, key: &[u8], value: &[u8]) -> Result<(), FormatError> {
        debug_assert!(partition >= self.partition && partition < self.partitions);
        while self.partition < partition {
            self.end_partition()?;
        }
        put_varint(&mut self.raw, key.len());
        put_varint(&mut self.raw, value.len());
        self.raw.extend_from_slice(key);
        self.raw.extend_from_slice(value);
        self.records += 1;
        if self.raw.len() >= BLOCK_BYTES {
            self.flush_block()?;
        }
        Ok(())
    }

    fn flush_block(&mut self) -> Result<(), FormatError> {
        if self.raw.is_empty() {
            return Ok(());
        }
        self.comp
            .resize(lz4_flex::block::get_maximum_output_size(self.raw.len()), 0);
        let n = lz4_flex::block::compress_into(&self.raw, &mut self.comp)
            .map_err(|e| FormatError::Write(std::io::Error::other(e)))?;
        let mut header = [0u8; HEADER];
        header[0..4].copy_from_slice(&(self.raw.len() as u32).to_le_bytes());
        header[4..8].copy_from_slice(&(n as u32).to_le_bytes());
        header[8..12].copy_from_slice(&crc32fast::hash(&self.comp[..n]).to_le_bytes());
        self.out.write_all(&header).map_err(FormatError::Write)?;
        self.out
            .write_all(&self.comp[..n])
            .map_err(FormatError::Write)?;
        self.pos += (HEADER + n) as u64;
        self.raw.clear();
        Ok(())
    }

    fn end_partition(&mut self) -> Result<(), FormatError> {
        self.flush_block()?;
        self.index
            .push((self.partition_start, self.pos - self.partition_start));
        self.partition_start = self.pos;
        self.partition += 1;
        Ok(())
    }

    /// Writes the remaining partitions, the index and the footer; returns the writer.
    pub fn finish(mut self) -> Result<(W, FileSummary), FormatError> {
        while self.index.len() < self.partitions as usize {
            self.end_partition()?;
        }
        let mut tail = Vec::with_capacity(self.index.len() * 16 + FOOTER);
        for (off, len) in &self.index {
            tail.extend_from_slice(&off.to_le_bytes());
            tail.extend_from_slice(&len.to_le_bytes());
        }
        let crc = crc32fast::hash(&tail);
        tail.extend_from_slice(&self.partitions.to_le_bytes());
        tail.extend_from_slice(&crc.to_le_bytes());
        tail.extend_from_slice(MAGIC);
        self.out.write_all(&tail).map_err(FormatError::Write)?;
        self.out.flush().map_err(FormatError::Write)?;
        let summary = FileSummary {
            bytes: self.pos + tail.len() as u64,
            records: self.records,
        };
        Ok((self.out, summary))
    }
}

/// A whole shuffle file in memory (usually memory-mapped), split into its partitions.
#[derive(Clone, Debug)]
pub struct ShuffleFile {
    data: Bytes,
    index: Vec<Range<usize>>,
}

impl ShuffleFile {
    /// Checks the footer and index of `data`.
    ///
    /// # Errors
    /// [`FormatError`] if the file is truncated or its index is corrupt.
    pub fn open(data: Bytes) -> Result<Self, FormatError> {
        if data.len() < FOOTER || &data[data.len() - 8..] != MAGIC {
            return Err(corrupt("missing shuffle footer"));
        }
        let f = data.len() - FOOTER;
        let partitions = u32::from_le_bytes(data[f..f + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[f + 4..f + 8].try_into().expect("4 bytes"));
        let index_len = partitions
            .checked_mul(16)
            .filter(|&n| n <= f)
            .ok_or_else(|| corrupt("index too large"))?;
        let raw_index = &data[f - index_len..f];
        if crc32fast::hash(raw_index) != crc {
            return Err(corrupt("index fails its checksum"));
        }
        let body = f - index_len;
        let index = raw_index
            .chunks_exact(16)
            .map(|c| {
                let off = u64::from_le_bytes(c[..8].try_into().expect("8 bytes")) as usize;
                let len = u64::from_le_bytes(c[8..].try_into().expect("8 bytes")) as usize;
                off.checked_add(len)
                    .filter(|&end| end <= body)
                    .map(|end| off..end)
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| corrupt("partition range past the data"))?;
        Ok(ShuffleFile { data, index })
    }

    /// Returns the number of partitions.
    pub fn partitions(&self) -> u32 {
        self.index.len() as u32
    }

    /// Returns the blocks of one partition (empty if the partition is out of range).
    pub fn partition(&self, p: u32) -> Bytes {
        match self.index.get(p as usize) {
            Some(r) => self.data.slice(r.clone()),
            None => Bytes::new(),
        }
    }

    /// Returns where one partition's blocks lie in the file (empty if out of range).
    pub fn partition_range(&self, p: u32) -> Range<u64> {
        match self.index.get(p as usize) {
            Some(r) => r.start as u64..r.end as u64,
            None => 0..0,
        }
    }
}

/// A run of blocks (one partition of one shuffle file) as a merge reads it: in memory, or as
/// a byte range of a local file read one block at a time, so a reduce over more runs than fit
/// its memory budget holds one block per run, not the pages of every run it has read (a
/// memory-mapped run keeps each page it touched resident until the run is dropped).
#[derive(Clone, Debug)]
pub enum Run {
    /// Blocks in memory.
    Memory(Bytes),
    /// Blocks in `file` from byte `start`, `len` bytes long.
    File {
        /// The file, shared by every run kept in it.
        file: Arc<File>,
        /// Offset of the run's first block.
        start: u64,
        /// Length of the run in bytes.
        len: u64,
    },
}

impl Run {
    /// Returns the run's size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Run::Memory(b) => b.len() as u64,
            Run::File { len, .. } => *len,
        }
    }

    /// Returns true if the run holds no blocks.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl From<Bytes> for Run {
    fn from(b: Bytes) -> Self {
        Run::Memory(b)
    }
}

/// Checks every block checksum of a run of blocks without decompressing it, so a reducer can
/// tell which map's output is corrupt as soon as it arrives.
///
/// # Errors
/// [`FormatError`] at the first bad or truncated block.
pub fn verify_run(src: &[u8]) -> Result<(), FormatError> {
    let mut at = 0;
    while at < src.len() {
        at = block_at(src, at)?.2;
    }
    Ok(())
}

/// Returns the uncompressed length and the checked compressed bytes of the block at `at`,
/// and the offset of the next block.
/// Reads a block header: (raw length, compressed length, checksum of the compressed bytes).
fn parse_header(header: &[u8]) -> Result<(usize, usize, u32), FormatError> {
    let raw_len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
    let comp_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
    if raw_len > MAX_BLOCK_BYTES || raw_len == 0 {
        return Err(corrupt(format!("block declares {raw_len} bytes")));
    }
    Ok((raw_len, comp_len, crc))
}

fn block_at(src: &[u8], at: usize) -> Result<(usize, &[u8], usize), FormatError> {
    let header = src
        .get(at..at + HEADER)
        .ok_or_else(|| corrupt("truncated block header"))?;
    let (raw_len, comp_len, crc) = parse_header(header)?;
    let comp = src
        .get(at + HEADER..at + HEADER + comp_len)
        .ok_or_else(|| corrupt("truncated block"))?;
    if crc32fast::hash(comp) != crc {
        return Err(FormatError::Checksum { offset: at });
    }
    Ok((raw_len, comp, at + HEADER + comp_len))
}

/// Reads the records of one run of blocks, one block in memory at a time.
pub struct BlockCursor {
    src: Run,
    pos: usize,
    block: Vec<u8>,
    /// Compressed bytes of a block read from a file, and the header after it where the run
    /// goes on (read in the same call).
    comp: Vec<u8>,
    bpos: usize,
    key: Range<usize>,
    value: Range<usize>,
}

fn decompress(raw_len: usize, comp: &[u8], block: &mut Vec<u8>) -> Result<(), FormatError> {
    block.resize(raw_len, 0);
    let n = lz4_flex::block::decompress_into(comp, block)
        .map_err(|e| corrupt(format!("block does not decompress: {e}")))?;
    if n != raw_len {
        return Err(corrupt("block shorter than declared"));
    }
    Ok(())
}

impl BlockCursor {
    /// Starts reading `src`, a run of blocks (one partition).
    pub fn new(src: impl Into<Run>) -> Self {
        BlockCursor {
            src: src.into(),
            pos: 0,
            block: Vec::new(),
            comp: Vec::new(),
            bpos: 0,
            key: 0..0,
            value: 0..0,
        }
    }

    fn load_block(&mut self) -> Result<bool, FormatError> {
        let len = self.src.len() as usize;
        if self.pos >= len {
            return Ok(false);
        }
        match &self.src {
            Run::Memory(src) => {
                let (raw_len, comp, next) = block_at(src, self.pos)?;
                decompress(raw_len, comp, &mut self.block)?;
                self.pos = next;
            }
            Run::File { file, start, .. } => {
                // The header was read with the previous block, except for the first one.
                if self.pos == 0 {
                    if len < HEADER {
                        return Err(corrupt("truncated block header"));
                    }
                    self.comp.resize(HEADER, 0);
                    file.read_exact_at(&mut self.comp, *start)
                        .map_err(FormatError::Read)?;
                }
                let (raw_len, comp_len, crc) =
                    parse_header(&self.comp[self.comp.len() - HEADER..])?;
                let body = self.pos + HEADER;
                if comp_len > len - body {
                    return Err(corrupt("truncated block"));
                }
                let next = body + comp_len;
                // The block and, where the run goes on, the next block's header.
                let want = comp_len + if len - next >= HEADER { HEADER } else { 0 };
                self.comp.resize(want, 0);
                file.read_exact_at(&mut self.comp, start + body as u64)
                    .map_err(FormatError::Read)?;
                let comp = &self.comp[..comp_len];
                if crc32fast::hash(comp) != crc {
                    return Err(FormatError::Checksum { offset: self.pos });
                }
                decompress(raw_len, comp, &mut self.block)?;
                if next < len && want == comp_len {
                    return Err(corrupt("truncated block header"));
                }
                self.pos = next;
            }
        }
        self.bpos = 0;
        Ok(true)
    }

    /// Moves to the next record; returns false at the end of the run.
    pub fn advance(&mut self) -> Result<bool, FormatError> {
        if self.bpos >= self.block.len() && !self.load_block()? {
            self.key = 0..0;
            self.value = 0..0;
            return Ok(false);
        }
        let mut p = self.bpos;
        let klen = get_varint(&self.block, &mut p).ok_or_else(|| corrupt("bad key length"))?;
        let vlen = get_varint(&self.block, &mut p).ok_or_else(|| corrupt("bad value length"))?;
        let end = p.checked_add(klen).and_then(|k| k.checked_add(vlen));
        match end {
            Some(end) if end <= self.block.len() => {
                self.key = p..p + klen;
                self.value = p + klen..end;
                self.bpos = end;
                Ok(true)
            }
            _ => Err(corrupt("record past the end of its block")),
        }
    }

    /// Returns the current record's key.
    pub fn key(&self) -> &[u8] {
        &self.block[self.key.clone()]
    }

    /// Returns the current record's value.
    pub fn value(&self) -> &[u8] {
        &self.block[self.value.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(partitions: u32, per: usize) -> Vec<u8> {
        let mut w = ShuffleWriter::new(Vec::new(), partitions);
        for p in 0..partitions {
            if p == 1 {
                continue; // an empty partition in the middle
            }
            for i in 0..per {
                w.push(
                    p,
                    format!("k{i:06}").as_bytes(),
                    format!("v{p}-{i}").as_bytes(),
                )
                .unwrap();
            }
        }
        let (data, summary) = w.finish().unwrap();
        assert_eq!(summary.bytes as usize, data.len());
        data
    }

    fn read_all(src: Bytes) -> Result<Vec<(Vec<u8>, Vec<u8>)>, FormatError> {
        let mut c = BlockCursor::new(src);
        let mut out = Vec::new();
        while c.advance()? {
            out.push((c.key().to_vec(), c.value().to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn round_trips_partitions_across_many_blocks() {
        let file = ShuffleFile::open(Bytes::from(sample(3, 20_000))).unwrap();
        assert_eq!(file.partitions(), 3);
        assert!(read_all(file.partition(1)).unwrap().is_empty());
        let p2 = read_all(file.partition(2)).unwrap();
        assert_eq!(p2.len(), 20_000);
        assert_eq!(p2[19_999], (b"k019999".to_vec(), b"v2-19999".to_vec()));
        assert!(read_all(file.partition(9)).unwrap().is_empty());
    }

    #[test]
    fn a_flipped_byte_in_a_block_is_detected() {
        let clean = sample(3, 20_000);
        let file = ShuffleFile::open(Bytes::from(clean.clone())).unwrap();
        let p0 = file.partition(0).len();
        for at in [5, 40, p0 / 2, p0 - 1] {
            let mut bad = clean.clone();
            bad[at] ^= 0x20;
            let file = ShuffleFile::open(Bytes::from(bad)).unwrap();
            assert!(
                read_all(file.partition(0)).is_err(),
                "flip at {at} undetected"
            );
        }
    }

    #[test]
    fn verify_run_finds_corruption_without_decoding() {
        let clean = sample(1, 20_000);
        let file = ShuffleFile::open(Bytes::from(clean.clone())).unwrap();
        verify_run(&file.partition(0)).unwrap();
        let mut bad = clean;
        bad[100] ^= 1;
        let file = ShuffleFile::open(Bytes::from(bad)).unwrap();
        assert!(verify_run(&file.partition(0)).is_err());
        assert!(verify_run(&file.partition(0)[..30]).is_err());
    }

    #[test]
    fn truncated_or_corrupt_index_is_refused() {
        let clean = sample(2, 100);
        assert!(ShuffleFile::open(Bytes::from(clean[..clean.len() - 3].to_vec())).is_err());
        let mut bad = clean.clone();
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(ShuffleFile::open(Bytes::from(bad)).is_err());
        assert!(ShuffleFile::open(Bytes::new()).is_err());
    }

    #[test]
    fn a_huge_declared_block_is_refused_before_allocating() {
        let mut src = Vec::new();
        src.extend_from_slice(&u32::MAX.to_le_bytes());
        src.extend_from_slice(&4u32.to_le_bytes());
        src.extend_from_slice(&crc32fast::hash(b"abcd").to_le_bytes());
        src.extend_from_slice(b"abcd");
        assert!(matches!(
            read_all(Bytes::from(src)),
            Err(FormatError::Corrupt { .. })
        ));
    }

    fn read_file_run(
        data: &[u8],
        range: Range<u64>,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, FormatError> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(data).unwrap();
        let mut c = BlockCursor::new(Run::File {
            file: Arc::new(f),
            start: range.start,
            len: range.end - range.start,
        });
        let mut out = Vec::new();
        while c.advance()? {
            out.push((c.key().to_vec(), c.value().to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn a_run_read_from_a_file_matches_the_run_in_memory() {
        let data = sample(3, 20_000);
        let file = ShuffleFile::open(Bytes::from(data.clone())).unwrap();
        for p in 0..4 {
            assert_eq!(
                read_file_run(&data, file.partition_range(p)).unwrap(),
                read_all(file.partition(p)).unwrap(),
                "partition {p}"
            );
        }
        // Corruption and truncation anywhere are found as in memory.
        let r = file.partition_range(0);
        let len = (r.end - r.start) as usize;
        for at in [5, 40, len / 2, len - 1] {
            let mut bad = data.clone();
            bad[r.start as usize + at] ^= 0x20;
            assert!(read_file_run(&bad, r.clone()).is_err(), "flip at {at}");
        }
        for cut in [1, 11, 12, 13, len / 3, len - 1] {
            assert!(
                read_file_run(&data, r.start..r.start + cut as u64).is_err(),
                "cut at {cut}"
            );
        }
    }
}
