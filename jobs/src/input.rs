//! A map task's input bytes: a byte range of a plain file, or a whole compressed file decoded
//! by its extension.
//!
//! Log archives are compressed in real life. A file whose name ends in `.gz` (gzip, several
//! members allowed, as `cat a.gz b.gz` makes) or `.zst` (Zstandard, several frames allowed)
//! is decoded transparently, on every backend, in `run --local` and on a cluster alike. Neither
//! format can be entered at an arbitrary byte, so the planner gives each compressed file one
//! split ([`Codec::of`]); record offsets (for skip mode and error messages) are offsets in the
//! decoded bytes. A corrupt or truncated compressed file fails the task with a
//! [`InputError::Corrupt`] that names the file: no retry can mend it, and a partial read
//! would silently lose records. Decoding stops at [`MAX_DECODED_BYTES`].

use std::io::Read;

use bytes::Bytes;
use dfs_client::{DfsError, Storage};

use crate::split::{read_split, Split};

/// The most bytes one compressed input file may decode to (the decoded file is held in
/// memory while its one map task runs): 16 GiB.
pub const MAX_DECODED_BYTES: u64 = 16 << 30;

/// A compression format read transparently by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Codec {
    /// gzip (`.gz`), one member or several.
    Gzip,
    /// Zstandard (`.zst`), one frame or several.
    Zstd,
}

impl Codec {
    /// Returns the codec a file's name asks for (`.gz`, `.zst`, in any case), if any.
    pub fn of(path: &str) -> Option<Codec> {
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name.rsplit_once('.')?.1;
        if ext.eq_ignore_ascii_case("gz") {
            Some(Codec::Gzip)
        } else if ext.eq_ignore_ascii_case("zst") {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// The codec's name as users know it.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
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
}

/// The bytes a map task reads, with where they start.
#[derive(Clone, Debug)]
pub struct InputData {
    /// Offset of `data`'s first byte in the (decoded) file.
    pub offset: u64,
    /// The records' bytes.
    pub data: Bytes,
    /// For a compressed file: its size on storage (`data` holds the decoded bytes).
    pub compressed_bytes: Option<u64>,
}

/// Returns the input of one map task in `format`: the lines that start in `split` of a plain
/// file ([`read_split`]), exactly the split's bytes for whole files and tar shards (a piece of
/// a shard is cut at member boundaries), or the whole decoded file for a compressed one.
///
/// # Errors
/// Storage errors; [`InputError::Corrupt`] for a compressed file that cannot be decoded whole.
pub fn read_input(
    storage: &Storage,
    split: &Split,
    file_len: u64,
    format: crate::InputFormat,
) -> Result<InputData, InputError> {
    let Some(codec) = Codec::of(&split.path) else {
        if format.whole_files() {
            let end = split.end.min(file_len);
            let len = end.saturating_sub(split.start);
            return Ok(InputData {
                offset: split.start,
                data: storage.read_range(&split.path, split.start, len)?,
                compressed_bytes: None,
            });
        }
        let (offset, data) = read_split(storage, split, file_len)?;
        return Ok(InputData {
            offset,
            data,
            compressed_bytes: None,
        });
    };
    let raw = storage.read_all(&split.path)?;
    let data = decode(codec, &raw).map_err(|reason| InputError::Corrupt {
        path: split.path.clone(),
        codec: codec.name(),
        reason,
    })?;
    Ok(InputData {
        offset: 0,
        data: Bytes::from(data),
        compressed_bytes: Some(raw.len() as u64),
    })
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

/// Decodes all of `raw`; the error names the decoded offset where decoding failed.
///
/// # Errors
/// [`DecodeError`]: a corrupt or truncated file, or one too large.
pub fn decode(codec: Codec, raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let reader: Box<dyn Read + '_> = match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(raw)),
        Codec::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(raw)
                .map_err(|cause| DecodeError::Corrupt { after: 0, cause })?,
        ),
    };
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(1 << 30));
    let mut limited = reader.take(MAX_DECODED_BYTES + 1);
    match limited.read_to_end(&mut out) {
        Ok(_) if out.len() as u64 > MAX_DECODED_BYTES => Err(DecodeError::TooLarge),
        Ok(_) => Ok(out),
        Err(cause) => Err(DecodeError::Corrupt {
            after: out.len(),
            cause,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn codecs_come_from_the_last_extension() {
        assert_eq!(Codec::of("/logs/access.log.gz"), Some(Codec::Gzip));
        assert_eq!(Codec::of("s3://b/k/x.ZST"), Some(Codec::Zstd));
        assert_eq!(Codec::of("/logs/access.log"), None);
        assert_eq!(Codec::of("/logs.gz/access.log"), None);
        assert_eq!(Codec::of("/logs/gz"), None);
    }

    #[test]
    fn concatenated_members_and_frames_decode_whole() {
        let mut two = gzip(b"a\nb\n");
        two.extend(gzip(b"c\n"));
        assert_eq!(decode(Codec::Gzip, &two).unwrap(), b"a\nb\nc\n");
        let mut z = zstd::encode_all(&b"a\n"[..], 3).unwrap();
        z.extend(zstd::encode_all(&b"b\n"[..], 3).unwrap());
        assert_eq!(decode(Codec::Zstd, &z).unwrap(), b"a\nb\n");
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
        assert!(decode(Codec::Gzip, b"not gzip at all").is_err());
        assert!(decode(Codec::Zstd, b"not zstd at all").is_err());
    }

    #[test]
    fn plain_files_read_by_range_and_compressed_ones_whole() {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::default();
        let plain = dir.path().join("a.log").display().to_string();
        std::fs::write(&plain, b"one\ntwo\n").unwrap();
        let split = Split {
            path: plain,
            start: 2,
            end: 8,
        };
        let got = read_input(&storage, &split, 8, crate::InputFormat::Lines).unwrap();
        assert_eq!(
            (got.offset, &got.data[..], got.compressed_bytes),
            (4, &b"two\n"[..], None)
        );
        let gz = dir.path().join("a.log.gz").display().to_string();
        let bytes = gzip(b"one\ntwo\n");
        std::fs::write(&gz, &bytes).unwrap();
        let split = Split {
            path: gz,
            start: 0,
            end: bytes.len() as u64,
        };
        let got = read_input(
            &storage,
            &split,
            bytes.len() as u64,
            crate::InputFormat::Lines,
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
        )
        .unwrap_err();
        assert!(err.to_string().contains("a.log.gz"), "{err}");
    }
}
