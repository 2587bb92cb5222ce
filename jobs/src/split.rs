//! Splits of line-oriented inputs.
//!
//! A split is a byte range `[start, end)` of a file. A record (a line) belongs to the split in
//! which it *starts*: a split whose `start` is not 0 skips the partial line before its first
//! line start, and every split reads past its `end` to finish its last line. So each line is
//! read exactly once whatever the split size, including lines longer than a split.
//! Line terminators (`\n`, or `\r\n`) are not part of a record; a last line without a
//! terminator is still a record.

use bytes::Bytes;
use dfs_client::{DfsError, Storage};

/// A byte range of one input file, or a group of whole files.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Split {
    /// The file (for a group, its first file).
    pub path: String,
    /// First byte of the range.
    pub start: u64,
    /// One past the last byte of the range.
    pub end: u64,
    /// A group of whole files (loose files, many to a split, as Hadoop's
    /// `CombineFileInputFormat` makes them), each one record; empty for a byte range. The
    /// group is read as its files laid end to end, so `[start, end)` is `[0, total length)`
    /// and a record's offset is where its file starts in that run ([`Split::locate`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<GroupFile>,
}

/// One file of a group split.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GroupFile {
    /// The file.
    pub path: String,
    /// Its length when the job was planned.
    pub len: u64,
    /// Its name as a record: its path under the input it was listed from (`2024/cat.jpg`
    /// for a file `photos/2024/cat.jpg` of input `photos`).
    pub name: String,
}

/// One file of a group split as read ([`crate::input::read_group`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupMember {
    /// The file.
    pub path: String,
    /// Its record name ([`GroupFile::name`]).
    pub name: String,
    /// Where its bytes start in the group's data.
    pub start: u64,
}

impl GroupMember {
    /// The file of `group` (as read, in order) whose bytes hold `offset` of the group's data.
    pub fn at(group: &[GroupMember], offset: u64) -> Option<&GroupMember> {
        let after = group.partition_point(|m| m.start <= offset);
        group.get(after.checked_sub(1)?)
    }
}

impl Split {
    /// A byte range of `path`.
    pub fn range(path: impl Into<String>, start: u64, end: u64) -> Self {
        Split {
            path: path.into(),
            start,
            end,
            files: Vec::new(),
        }
    }

    /// A group of whole files. `files` must not be empty.
    pub fn group(files: Vec<GroupFile>) -> Self {
        Split {
            path: files[0].path.clone(),
            start: 0,
            end: files.iter().map(|f| f.len).sum(),
            files,
        }
    }

    /// Where a record at `offset` of this split's data lies: its file and its offset in that
    /// file. For a byte range, the split's file and `offset` itself; for a group, the file
    /// whose bytes hold `offset` (each file is one record, so usually offset 0 in it).
    pub fn locate(&self, offset: u64) -> (&str, u64) {
        let mut start = 0;
        for (i, f) in self.files.iter().enumerate() {
            if offset < start + f.len || i + 1 == self.files.len() {
                return (&f.path, offset.saturating_sub(start));
            }
            start += f.len;
        }
        (&self.path, offset)
    }
}

const PROBE: u64 = 64 * 1024;

/// Returns the position just past the first `\n` at or after `from`, or `len` if none.
fn after_newline(
    storage: &Storage,
    path: &str,
    mut from: u64,
    len: u64,
    probe: u64,
) -> Result<u64, DfsError> {
    while from < len {
        let chunk = storage.read_range(path, from, probe)?;
        if let Some(i) = memchr::memchr(b'\n', &chunk) {
            return Ok(from + i as u64 + 1);
        }
        from += chunk.len() as u64;
    }
    Ok(len)
}

/// Returns the bytes of the records that start in `split`: from the first line start at or
/// after `split.start` to the end of the last line starting before `split.end`, with the
/// file offset of their first byte.
///
/// One read covers the byte before the split, the split and 64 KiB after it, which holds
/// the last line's end unless that line is longer: one request (and, in SeaweedFS or S3, one
/// lookup of the file) per split, not one for each end and one for the body.
///
/// # Errors
/// Storage errors reading the file.
pub fn read_split(
    storage: &Storage,
    split: &Split,
    file_len: u64,
) -> Result<(u64, Bytes), DfsError> {
    read_split_probing(storage, split, file_len, PROBE)
}

/// [`read_split`], reading `probe` bytes past the split's end (and as much at a time where a
/// line is longer).
fn read_split_probing(
    storage: &Storage,
    split: &Split,
    file_len: u64,
    probe: u64,
) -> Result<(u64, Bytes), DfsError> {
    let end = split.end.min(file_len);
    // The byte before the split says whether a line starts at its first byte.
    let from = split.start.saturating_sub(1);
    if end <= from {
        return Ok((split.start.min(file_len), Bytes::new()));
    }
    let read_end = end.saturating_add(probe).min(file_len);
    let data = storage.read_range(&split.path, from, read_end - from)?;
    // Past the first `\n` at or after `at`, searching what was read first.
    let after_newline_from = |at: u64| -> Result<u64, DfsError> {
        match memchr::memchr(b'\n', &data[(at - from) as usize..]) {
            Some(i) => Ok(at + i as u64 + 1),
            None => after_newline(storage, &split.path, read_end, file_len, probe),
        }
    };
    let begin = if split.start == 0 {
        0
    } else {
        after_newline_from(from)?
    };
    if begin >= end {
        return Ok((begin, Bytes::new()));
    }
    let stop = after_newline_from(end - 1)?;
    if stop <= read_end {
        return Ok((
            begin,
            data.slice((begin - from) as usize..(stop - from) as usize),
        ));
    }
    // The last line runs past what was read.
    let rest = storage.read_range(&split.path, read_end, stop - read_end)?;
    let mut out = Vec::with_capacity((stop - begin) as usize);
    out.extend_from_slice(&data[(begin - from) as usize..]);
    out.extend_from_slice(&rest);
    Ok((begin, Bytes::from(out)))
}

/// Iterates the records (lines without terminators) of a buffer returned by [`read_split`].
pub struct Lines<'a> {
    raw: RawLines<'a>,
}

impl<'a> Lines<'a> {
    /// Starts iterating `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Lines {
            raw: RawLines::new(data),
        }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let line = self.raw.next()?;
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

/// Iterates the records of a buffer returned by [`read_split`] with their terminators kept.
pub struct RawLines<'a> {
    rest: &'a [u8],
}

impl<'a> RawLines<'a> {
    /// Starts iterating `data`.
    pub fn new(data: &'a [u8]) -> Self {
        RawLines { rest: data }
    }
}

impl<'a> Iterator for RawLines<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let end = memchr::memchr(b'\n', self.rest).map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn records(content: &[u8], split_size: u64) -> Vec<Vec<u8>> {
        records_probing(content, split_size, PROBE)
    }

    /// The records of `content` read split by split, reading `probe` bytes past each split
    /// (small probes: lines longer than what was read past a split).
    fn records_probing(content: &[u8], split_size: u64, probe: u64) -> Vec<Vec<u8>> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in").display().to_string();
        std::fs::write(&path, content).unwrap();
        let storage = Storage::default();
        let len = content.len() as u64;
        let mut out = Vec::new();
        let mut start = 0;
        while start < len.max(1) {
            let split = Split::range(path.clone(), start, (start + split_size).min(len));
            let (offset, data) = read_split_probing(&storage, &split, len, probe).unwrap();
            assert!(
                offset >= start
                    && (data.is_empty() || offset == 0 || content[offset as usize - 1] == b'\n')
            );
            out.extend(Lines::new(&data).map(<[u8]>::to_vec));
            start += split_size;
        }
        out
    }

    fn expected(content: &[u8]) -> Vec<Vec<u8>> {
        Lines::new(content).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn lines_crossing_every_boundary_are_read_once() {
        let content = b"alpha\nbeta\r\ngamma delta\n\nepsilon";
        for size in 1..=content.len() as u64 + 1 {
            assert_eq!(
                records(content, size),
                expected(content),
                "split size {size}"
            );
        }
        assert_eq!(
            expected(content),
            vec![
                b"alpha".to_vec(),
                b"beta".to_vec(),
                b"gamma delta".to_vec(),
                vec![],
                b"epsilon".to_vec()
            ]
        );
    }

    #[test]
    fn raw_lines_keep_their_terminators_and_concatenate_back() {
        let content = b"a\r\nb\n\r\nlast";
        let raw: Vec<&[u8]> = RawLines::new(content).collect();
        assert_eq!(raw, [&b"a\r\n"[..], b"b\n", b"\r\n", b"last"]);
        assert_eq!(raw.concat(), content);
    }

    #[test]
    fn trailing_newline_makes_no_extra_record_and_empty_input_has_none() {
        assert_eq!(records(b"a\nb\n", 1), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(records(b"", 4).is_empty());
        assert_eq!(records(b"\n", 1), vec![Vec::<u8>::new()]);
    }

    #[test]
    fn a_split_inside_one_long_line_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in").display().to_string();
        std::fs::write(&path, b"0123456789\nab").unwrap();
        let storage = Storage::default();
        let split = Split::range(path, 3, 6);
        assert!(read_split(&storage, &split, 13).unwrap().1.is_empty());
    }

    proptest! {
        #[test]
        fn any_split_size_reads_every_record_once(
            lines in proptest::collection::vec("[a-z\r]{0,12}", 0..30),
            trailing in any::<bool>(),
            size in 1u64..40,
            probe in prop_oneof![1u64..6, Just(PROBE)],
        ) {
            let mut content = lines.join("\n").into_bytes();
            if trailing && !content.is_empty() {
                content.push(b'\n');
            }
            prop_assert_eq!(records_probing(&content, size, probe), expected(&content));
        }
    }
}
