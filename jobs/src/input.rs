//! A map task's input bytes: a byte range of a plain file, or a whole compressed file decoded
//! by its extension.
//!
//! Log archives are compressed in real life. A file whose name ends in `.gz` (gzip, several
//! members allowed, as `cat a.gz b.gz` makes), `.zst` (Zstandard, several frames allowed) or
//! `.bz2` (bzip2, several streams allowed, as `pbzip2` makes) is decoded transparently, on
//! every backend, in `run --local` and on a cluster alike. A file named for a compression
//! format Quern does not decode (`.xz`, `.lz4`, `.zip`, ...) is refused when the job is
//! planned ([`unreadable_compression`]), naming it: read as text it would only yield
//! malformed records. For the same reason a file read as text whose first bytes are a
//! compressed format's fails its task naming the format ([`InputError::Unnamed`]), and one
//! read as text lines that begins with a UTF-16 or UTF-32 byte-order mark fails naming the
//! encoding ([`InputError::Wide`]). No format here can be entered at an arbitrary byte, so the
//! planner gives each compressed file one
//! split ([`Codec::of`]); record offsets (for skip mode and error messages) are offsets in the
//! decoded bytes. A corrupt or truncated compressed file fails the task with a
//! [`InputError::Corrupt`] that names the file: no retry can mend it, and a partial read
//! would silently lose records. Decoding stops at [`MAX_DECODED_BYTES`].
//!
//! A decoded file is held in memory up to [`DECODED_IN_MEMORY`]; beyond that, the decoded
//! bytes go to an unnamed file in the task's scratch directory, which the task maps: its
//! memory stays flat however large the file decodes (the kernel pages the mapping in and out
//! as it is read), and the file is gone when the task ends, also when it dies.

use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use dfs_client::{DfsError, Storage};

use crate::split::{read_split, GroupMember, Split};

/// The most bytes one compressed input file may decode to: 16 GiB.
pub const MAX_DECODED_BYTES: u64 = 16 << 30;

/// The most decoded bytes of one compressed file held in memory; the rest goes to a scratch
/// file (see the module's documentation).
pub const DECODED_IN_MEMORY: usize = 64 << 20;

/// A compression format read transparently by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// gzip (`.gz`), one member or several.
    Gzip,
    /// Zstandard (`.zst`), one frame or several.
    Zstd,
    /// bzip2 (`.bz2`), one stream or several.
    Bzip2,
}

impl Codec {
    /// Returns the codec a file's name asks for (`.gz`, `.zst`, `.bz2`, in any case), if any.
    pub fn of(path: &str) -> Option<Codec> {
        let ext = extension(path)?;
        [Codec::Gzip, Codec::Zstd, Codec::Bzip2]
            .into_iter()
            .find(|c| ext.eq_ignore_ascii_case(c.extension()))
    }

    /// The codec's name as users know it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
            Codec::Bzip2 => "bzip2",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Codec::Gzip => "gz",
            Codec::Zstd => "zst",
            Codec::Bzip2 => "bz2",
        }
    }
}

/// The extension of the last component of `path`, if it has one.
fn extension(path: &str) -> Option<&str> {
    let name = path.rsplit('/').next().unwrap_or(path);
    Some(name.rsplit_once('.')?.1)
}

/// Compressed and archive formats named by extension that Quern does not decode, with the
/// names users know them by.
const UNREADABLE: [(&str, &str); 10] = [
    ("xz", "xz"),
    ("lzma", "LZMA"),
    ("lz", "lzip"),
    ("lz4", "LZ4"),
    ("br", "Brotli"),
    ("z", "compress (.Z)"),
    ("zip", "zip"),
    ("7z", "7-Zip"),
    ("rar", "RAR"),
    ("sz", "Snappy"),
];

/// The format of `path` when its name says it is compressed or archived in a format Quern does
/// not decode (`.xz`, `.lz4`, `.zip`, ...; in any case): such a file, read as text, would
/// yield only malformed records, so a job that reads it as lines is refused instead.
pub fn unreadable_compression(path: &str) -> Option<&'static str> {
    let ext = extension(path)?;
    UNREADABLE
        .iter()
        .find(|(e, _)| ext.eq_ignore_ascii_case(e))
        .map(|(_, name)| *name)
}

/// The encoding a text file beginning with `data` is in, if its byte-order mark says it is
/// UTF-16 or UTF-32 (bytes 0xFE and 0xFF are never UTF-8): read as UTF-8, every character
/// would carry zero bytes, and a job would count garbage.
fn wide_text_by_bom(data: &[u8]) -> Option<&'static str> {
    match data {
        [0xff, 0xfe, 0, 0, ..] => Some("UTF-32LE"),
        [0, 0, 0xfe, 0xff, ..] => Some("UTF-32BE"),
        [0xff, 0xfe, ..] => Some("UTF-16LE"),
        [0xfe, 0xff, ..] => Some("UTF-16BE"),
        _ => None,
    }
}

/// The compression format whose magic bytes `data` begins with, and what to name such a file,
/// if any: gzip (with deflate, and no reserved flag set), Zstandard, bzip2 (its stream header
/// and a block's, or an empty stream's end), xz. UTF-8 text cannot begin with the first three
/// (each holds a byte no UTF-8 text has there), nor, in practice, with bzip2's ten bytes;
/// random binary records (a `raw-lines` job's) would need 3 to 10 given bytes and bits.
fn compressed_by_content(data: &[u8]) -> Option<(&'static str, &'static str)> {
    const MAGIC: [(&[u8], &str, &str); 4] = [
        (
            &[0x1f, 0x8b, 0x08],
            "gzip",
            "with .gz at the end, to have it decoded",
        ),
        (
            &[0x28, 0xb5, 0x2f, 0xfd],
            "zstd",
            "with .zst at the end, to have it decoded",
        ),
        (
            &[0xfd, b'7', b'z', b'X', b'Z', 0],
            "xz",
            "and decompress it: xz is not decoded",
        ),
        (b"BZh", "bzip2", "with .bz2 at the end, to have it decoded"),
    ];
    let (_, format, hint) = MAGIC.iter().find(|(magic, format, _)| {
        data.starts_with(magic)
            && (*format != "gzip" || data.get(3).is_some_and(|flags| flags & 0xe0 == 0))
            && (*format != "bzip2"
                || (data.len() >= 10
                    && (b'1'..=b'9').contains(&data[3])
                    // A block's header, or the end of an empty stream.
                    && (data[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
                        || data[4..10] == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90])))
    })?;
    Some((format, hint))
}

/// Why a map task's input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] DfsError),
    /// A compressed file is corrupt or truncated, or decodes to more than the limit.
    #[error("cannot read {codec} input {path}: {reason}")]
    Corrupt {
        /// The file.
        path: String,
        /// Its codec's name.
        codec: &'static str,
        /// What is wrong, with the decoded offset where it was found.
        reason: DecodeError,
    },
    /// A file read as text begins as a compressed file does: its name does not say so, and its
    /// lines would all be malformed.
    #[error("input {path} is {format}-compressed (its first bytes say so), but its name does not end in a compressed extension, so it would be read as text; rename it ({hint})")]
    Unnamed {
        /// The file.
        path: String,
        /// The format its first bytes show.
        format: &'static str,
        /// What to do.
        hint: &'static str,
    },
    /// A text file (read as lines) that begins with a UTF-16 or UTF-32 byte-order mark.
    #[error("input {path} is {encoding} text (it begins with a byte-order mark), and text is read as UTF-8: convert it, e.g. iconv -f {encoding} -t UTF-8")]
    Wide {
        /// The file.
        path: String,
        /// Its encoding.
        encoding: &'static str,
    },
    /// A file of a group is shorter than when the job was planned.
    #[error("input {path} changed while the job ran: it was {planned} bytes when the job was planned, and is {now}")]
    Changed {
        /// The file.
        path: String,
        /// Its length at planning.
        planned: u64,
        /// What could be read of it.
        now: u64,
    },
    /// The scratch file for a large decoded file could not be written (a full disk, say):
    /// the task may succeed elsewhere.
    #[error("cannot write the decoded bytes of {path} to a scratch file in {dir}: {source}")]
    Scratch {
        /// The compressed file.
        path: String,
        /// The scratch directory.
        dir: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// The bytes a map task reads, with where they start.
#[derive(Clone, Debug, Default)]
pub struct InputData {
    /// Offset of `data`'s first byte in the (decoded) file.
    pub offset: u64,
    /// The records' bytes.
    pub data: Bytes,
    /// For a compressed file: its size on storage (`data` holds the decoded bytes).
    pub compressed_bytes: Option<u64>,
    /// For a group of files: each file, where its bytes start in `data` (one record each).
    pub group: Vec<GroupMember>,
}

/// Returns the input of one map task in `format`: the lines that start in `split` of a plain
/// file ([`read_split`]), exactly the split's bytes for whole files and tar shards (a piece of
/// a shard is cut at member boundaries), the whole decoded file for a compressed one (beyond
/// [`DECODED_IN_MEMORY`], through a scratch file in `scratch`), or each file of a group whole
/// ([`read_group`]).
///
/// # Errors
/// Storage errors; [`InputError::Corrupt`] for a compressed file that cannot be decoded whole;
/// [`InputError::Changed`] for a file of a group that shrank; [`InputError::Scratch`].
pub fn read_input(
    storage: &Storage,
    split: &Split,
    file_len: u64,
    format: crate::InputFormat,
    scratch: &Path,
) -> Result<InputData, InputError> {
    if !split.files.is_empty() {
        return read_group(storage, split, scratch);
    }
    let Some(codec) = Codec::of(&split.path) else {
        if format.whole_files() {
            let end = split.end.min(file_len);
            let len = end.saturating_sub(split.start);
            return Ok(InputData {
                offset: split.start,
                data: storage.read_range(&split.path, split.start, len)?,
                ..InputData::default()
            });
        }
        let (offset, data) = read_split(storage, split, file_len)?;
        if offset == 0 {
            if let Some((format, hint)) = compressed_by_content(&data) {
                return Err(InputError::Unnamed {
                    path: split.path.clone(),
                    format,
                    hint,
                });
            }
            check_utf8_text(&split.path, &data, format)?;
        }
        return Ok(InputData {
            offset,
            data,
            ..InputData::default()
        });
    };
    let raw = storage.read_all(&split.path)?;
    let data = decode_file(&split.path, codec, &raw, scratch)?;
    check_utf8_text(&split.path, &data, format)?;
    Ok(InputData {
        offset: 0,
        data,
        compressed_bytes: Some(raw.len() as u64),
        group: Vec::new(),
    })
}

/// Refuses the start of a file read as text lines whose byte-order mark says it is UTF-16 or
/// UTF-32 ([`InputError::Wide`]). Records read as raw lines may be binary, and are not
/// checked.
fn check_utf8_text(path: &str, start: &[u8], format: crate::InputFormat) -> Result<(), InputError> {
    match wide_text_by_bom(start) {
        Some(encoding) if format == crate::InputFormat::Lines => Err(InputError::Wide {
            path: path.to_string(),
            encoding,
        }),
        _ => Ok(()),
    }
}

fn decode_file(path: &str, codec: Codec, raw: &[u8], scratch: &Path) -> Result<Bytes, InputError> {
    decode_spilling(codec, raw, scratch, DECODED_IN_MEMORY).map_err(|e| match e {
        Decoded::Bad(reason) => InputError::Corrupt {
            path: path.to_string(),
            codec: codec.name(),
            reason,
        },
        Decoded::Scratch(source) => InputError::Scratch {
            path: path.to_string(),
            dir: scratch.to_path_buf(),
            source,
        },
    })
}

/// Reads a group of whole files ([`Split::files`]) into one buffer, end to end, in order,
/// several at a time ([`crate::par::map`]); a group of one file is its bytes as read, not a
/// copy. A compressed file (the planner gives each its own group) is decoded as
/// [`read_input`] decodes one. A file is read up to its planned length, so a file that grew
/// since is read as planned.
///
/// # Errors
/// As [`read_input`].
pub fn read_group(
    storage: &Storage,
    split: &Split,
    scratch: &Path,
) -> Result<InputData, InputError> {
    let read = |f: &crate::split::GroupFile| -> Result<(Bytes, Option<u64>), InputError> {
        if let Some(codec) = Codec::of(&f.path) {
            let raw = storage.read_all(&f.path)?;
            let data = decode_file(&f.path, codec, &raw, scratch)?;
            return Ok((data, Some(raw.len() as u64)));
        }
        let data = storage.read_range(&f.path, 0, f.len)?;
        if (data.len() as u64) < f.len {
            return Err(InputError::Changed {
                path: f.path.clone(),
                planned: f.len,
                now: data.len() as u64,
            });
        }
        Ok((data, None))
    };
    let files = &split.files;
    let read_files = crate::par::map(files, read)?;
    let mut out = InputData::default();
    let mut start = 0;
    for (f, (bytes, compressed)) in files.iter().zip(&read_files) {
        out.group.push(GroupMember {
            path: f.path.clone(),
            name: f.name.clone(),
            start,
        });
        start += bytes.len() as u64;
        if let Some(n) = compressed {
            *out.compressed_bytes.get_or_insert(0) += n;
        }
    }
    out.data = match &read_files[..] {
        [(only, _)] => only.clone(),
        all => {
            let mut data = Vec::with_capacity(start as usize);
            for (bytes, _) in all {
                data.extend_from_slice(bytes);
            }
            Bytes::from(data)
        }
    };
    Ok(out)
}

/// Why a compressed file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// It decodes to more than [`MAX_DECODED_BYTES`].
    #[error("decodes to more than {} GiB (the limit for one compressed file)", MAX_DECODED_BYTES >> 30)]
    TooLarge,
    /// It is corrupt or truncated.
    #[error("{cause} after {after} decoded bytes")]
    Corrupt {
        /// Bytes decoded before the fault.
        after: usize,
        /// What the decoder said (in the message, so not also a source).
        cause: std::io::Error,
    },
}

fn decoder(codec: Codec, raw: &[u8]) -> Result<Box<dyn Read + '_>, DecodeError> {
    Ok(match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Codec::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|cause| DecodeError::Corrupt { after: 0, cause })?,
        ),
        Codec::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(raw)),
    })
}

/// Why [`decode_spilling`] failed: the input, or the scratch file.
#[derive(Debug)]
enum Decoded {
    Bad(DecodeError),
    Scratch(std::io::Error),
}

/// Decodes all of `raw`: into memory up to `in_memory` bytes, through an unnamed file in
/// `scratch`, mapped, beyond.
fn decode_spilling(
    codec: Codec,
    raw: &[u8],
    scratch: &Path,
    in_memory: usize,
) -> Result<Bytes, Decoded> {
    let mut reader = decoder(codec, raw)
        .map_err(Decoded::Bad)?
        .take(MAX_DECODED_BYTES + 1);
    let mut head = Vec::with_capacity(raw.len().saturating_mul(4).min(in_memory));
    let corrupt = |after: u64, cause| {
        Decoded::Bad(DecodeError::Corrupt {
            after: after as usize,
            cause,
        })
    };
    (&mut reader)
        .take(in_memory as u64)
        .read_to_end(&mut head)
        .map_err(|cause| corrupt(head.len() as u64, cause))?;
    if head.len() < in_memory {
        return Ok(Bytes::from(head));
    }
    std::fs::create_dir_all(scratch).map_err(Decoded::Scratch)?;
    let file = tempfile::tempfile_in(scratch).map_err(Decoded::Scratch)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
    out.write_all(&head).map_err(Decoded::Scratch)?;
    let mut decoded = head.len() as u64;
    drop(head);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(cause) => return Err(corrupt(decoded, cause)),
        };
        out.write_all(&buf[..n]).map_err(Decoded::Scratch)?;
        decoded += n as u64;
    }
    if decoded > MAX_DECODED_BYTES {
        return Err(Decoded::Bad(DecodeError::TooLarge));
    }
    out.flush().map_err(Decoded::Scratch)?;
    drop(out);
    // SAFETY: the file is unnamed and this task's own: nothing else can change it.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(Decoded::Scratch)?;
    Ok(Bytes::from_owner(map))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// Decodes `raw` as a task does, with the default bytes in memory.
    fn decode(codec: Codec, raw: &[u8]) -> Result<Vec<u8>, Decoded> {
        let scratch = tempfile::tempdir().unwrap();
        decode_spilling(codec, raw, scratch.path(), DECODED_IN_MEMORY).map(|b| b.to_vec())
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codecs_come_from_the_last_extension() {
        assert_eq!(Codec::of("/logs/access.log.gz"), Some(Codec::Gzip));
        assert_eq!(Codec::of("s3://b/k/x.ZST"), Some(Codec::Zstd));
        assert_eq!(Codec::of("/logs/access.log.Bz2"), Some(Codec::Bzip2));
        assert_eq!(unreadable_compression("/logs/access.log.xz"), Some("xz"));
        assert_eq!(unreadable_compression("/logs/a.ZIP"), Some("zip"));
        assert_eq!(unreadable_compression("/logs/a.log.bz2"), None);
        assert_eq!(unreadable_compression("/logs.xz/a.log"), None);
        assert_eq!(Codec::of("/logs/access.log"), None);
        assert_eq!(Codec::of("/logs.gz/access.log"), None);
        assert_eq!(Codec::of("/logs/gz"), None);
    }

    #[test]
    fn compressed_bytes_in_a_file_not_named_so_are_recognised() {
        let text = b"GET /a 200\nBZh9 is a word\n";
        assert_eq!(compressed_by_content(text), None);
        assert_eq!(compressed_by_content(b"BZh91AY&SX"), None);
        assert_eq!(compressed_by_content(&gzip(text)).unwrap().0, "gzip");
        assert_eq!(compressed_by_content(&bzip2(text)).unwrap().0, "bzip2");
        assert_eq!(compressed_by_content(&bzip2(b"")).unwrap().0, "bzip2");
        let z = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(compressed_by_content(&z).unwrap().0, "zstd");
        assert_eq!(compressed_by_content(&[0x1f]), None);
        assert_eq!(compressed_by_content(&[0x1f, 0x8b, 0x08, 0xff]), None);
    }

    #[test]
    fn concatenated_members_and_frames_decode_whole() {
        let mut two = gzip(b"a\nb\n");
        two.extend(gzip(b"c\n"));
        assert_eq!(decode(Codec::Gzip, &two).unwrap(), b"a\nb\nc\n");
        let mut z = zstd::encode_all(&b"a\n"[..], 3).unwrap();
        z.extend(zstd::encode_all(&b"b\n"[..], 3).unwrap());
        assert_eq!(decode(Codec::Zstd, &z).unwrap(), b"a\nb\n");
        let mut bz = bzip2(b"a\n");
        bz.extend(bzip2(b"b\n"));
        assert_eq!(decode(Codec::Bzip2, &bz).unwrap(), b"a\nb\n");
    }

    #[test]
    fn truncated_and_corrupt_files_are_errors() {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let gz = gzip(&data);
        assert!(decode(Codec::Gzip, &gz[..gz.len() / 2]).is_err());
        let z = zstd::encode_all(&data[..], 3).unwrap();
        assert!(decode(Codec::Zstd, &z[..z.len() / 2]).is_err());
        let bz = bzip2(&data);
        assert!(decode(Codec::Bzip2, &bz[..bz.len() / 2]).is_err());
        assert!(decode(Codec::Bzip2, &bz[..bz.len() - 1]).is_err());
        assert!(decode(Codec::Gzip, b"not gzip at all").is_err());
        assert!(decode(Codec::Zstd, b"not zstd at all").is_err());
        assert!(decode(Codec::Bzip2, b"not bzip2 at all").is_err());
    }

    #[test]
    fn plain_files_read_by_range_and_compressed_ones_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::default();
        let plain = dir.path().join("a.log").display().to_string();
        std::fs::write(&plain, b"one\ntwo\n").unwrap();
        let split = Split::range(plain, 2, 8);
        let got = read_input(&storage, &split, 8, crate::InputFormat::Lines, dir.path()).unwrap();
        assert_eq!(
            (got.offset, &got.data[..], got.compressed_bytes),
            (4, &b"two\n"[..], None)
        );
        let gz = dir.path().join("a.log.gz").display().to_string();
        let bytes = gzip(b"one\ntwo\n");
        std::fs::write(&gz, &bytes).unwrap();
        let split = Split::range(gz, 0, bytes.len() as u64);
        let got = read_input(
            &storage,
            &split,
            bytes.len() as u64,
            crate::InputFormat::Lines,
            dir.path(),
        )
        .unwrap();
        assert_eq!(&got.data[..], b"one\ntwo\n");
        assert_eq!(got.compressed_bytes, Some(bytes.len() as u64));
        std::fs::write(&split.path, &bytes[..bytes.len() - 4]).unwrap();
        let err = read_input(
            &storage,
            &split,
            bytes.len() as u64 - 4,
            crate::InputFormat::Lines,
            dir.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("a.log.gz"), "{err}");
    }

    #[test]
    fn text_in_utf16_or_utf32_is_refused_naming_the_file_and_its_encoding() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::default();
        let read = |name: &str, bytes: &[u8], format| {
            let path = dir.path().join(name).display().to_string();
            std::fs::write(&path, bytes).unwrap();
            let split = Split::range(path, 0, bytes.len() as u64);
            read_input(&storage, &split, bytes.len() as u64, format, dir.path())
        };
        let utf16le: Vec<u8> = [0xfeff_u16]
            .into_iter()
            .chain("hello\n".encode_utf16())
            .flat_map(u16::to_le_bytes)
            .collect();
        let lines = crate::InputFormat::Lines;
        for (name, bytes, encoding) in [
            ("le.txt", utf16le.clone(), "UTF-16LE"),
            ("be.txt", vec![0xfe, 0xff, 0, b'h', 0, b'\n'], "UTF-16BE"),
            (
                "le32.txt",
                vec![0xff, 0xfe, 0, 0, b'h', 0, 0, 0],
                "UTF-32LE",
            ),
            ("le.txt.gz", gzip(&utf16le), "UTF-16LE"),
        ] {
            let err = read(name, &bytes, lines).unwrap_err();
            assert!(
                matches!(err, InputError::Wide { encoding: e, .. } if e == encoding),
                "{name}: {err}"
            );
            assert!(err.to_string().contains(name), "{err}");
        }
        // A UTF-8 byte-order mark is UTF-8; raw lines may be binary.
        assert!(read("bom8.txt", b"\xef\xbb\xbfhello\n", lines).is_ok());
        assert!(read("raw.bin", &utf16le, crate::InputFormat::RawLines).is_ok());
    }

    #[test]
    fn large_decoded_files_go_through_an_unnamed_scratch_file() {
        let dir = tempfile::tempdir().unwrap();
        let scratch = dir.path().join("scratch");
        let data: Vec<u8> = (0..100_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let (gz, zst) = (gzip(&data), zstd::encode_all(&data[..], 3).unwrap());
        for (codec, raw) in [(Codec::Gzip, &gz), (Codec::Zstd, &zst)] {
            // Held in memory, spilled after a few bytes, spilled at the last byte.
            for in_memory in [data.len() + 1, 1000, data.len()] {
                let got = decode_spilling(codec, raw, &scratch, in_memory).unwrap();
                assert!(got[..] == data[..], "{codec:?}, {in_memory} in memory");
                // Nothing is left behind, not even while the bytes are in use.
                let left = std::fs::read_dir(&scratch).map_or(0, |d| d.count());
                assert_eq!(left, 0);
            }
            // A truncated file is still an error when its decoded bytes go to a file.
            let cut = decode_spilling(codec, &raw[..raw.len() / 2], &scratch, 1000);
            assert!(
                matches!(cut, Err(Decoded::Bad(DecodeError::Corrupt { after, .. })) if after > 1000),
                "{cut:?}"
            );
        }
        // A scratch directory that cannot be made is its own error (the task may be retried).
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        let err = decode_spilling(Codec::Gzip, &gz, &blocker.join("scratch"), 1000).unwrap_err();
        assert!(matches!(err, Decoded::Scratch(_)), "{err:?}");
        let path = dir.path().join("n.log.gz");
        std::fs::write(&path, &gz).unwrap();
        let split = Split::range(path.display().to_string(), 0, gz.len() as u64);
        let got = read_input(
            &Storage::default(),
            &split,
            gz.len() as u64,
            crate::InputFormat::Lines,
            &scratch,
        )
        .unwrap();
        assert!(got.data[..] == data[..]);
    }

    #[test]
    fn a_group_is_its_files_end_to_end_and_a_shrunk_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::default();
        let mut files = Vec::new();
        for i in 0..20u8 {
            let path = dir.path().join(format!("f{i:02}")).display().to_string();
            std::fs::write(&path, vec![i; usize::from(i) + 1]).unwrap();
            files.push(crate::split::GroupFile {
                path,
                len: u64::from(i) + 1,
                name: format!("f{i:02}"),
            });
        }
        let gz = dir.path().join("z.gz").display().to_string();
        std::fs::write(&gz, gzip(b"unzipped")).unwrap();
        files.push(crate::split::GroupFile {
            path: gz.clone(),
            len: std::fs::metadata(&gz).unwrap().len(),
            name: "z.gz".into(),
        });
        let split = Split::group(files.clone());
        let got = read_input(
            &storage,
            &split,
            split.end,
            crate::InputFormat::WholeFiles,
            dir.path(),
        )
        .unwrap();
        let records: Vec<(&[u8], &[u8])> =
            crate::records::Records::group(&got.group, &got.data).collect();
        assert_eq!(records.len(), 21);
        for (i, (name, data)) in records.iter().take(20).enumerate() {
            assert_eq!(*name, format!("f{i:02}").as_bytes());
            assert_eq!(*data, vec![i as u8; i + 1].as_slice());
        }
        assert_eq!(records[20], (&b"z.gz"[..], &b"unzipped"[..]));
        assert_eq!(got.compressed_bytes, Some(files[20].len));
        // A file shorter than planned would shift every record after it: refused, named.
        std::fs::write(&files[7].path, b"x").unwrap();
        let err = read_input(
            &storage,
            &split,
            split.end,
            crate::InputFormat::WholeFiles,
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("f07") && err.contains("changed"), "{err}");
    }
}
