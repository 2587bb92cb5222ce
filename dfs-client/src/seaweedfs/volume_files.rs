//! Short-circuit reads: a chunk held by a volume server on this host is read from that
//! server's volume files instead of through its HTTP port, as HDFS's short-circuit local
//! reads do. A read over HTTP costs the volume server a read and a socket write, and this
//! process a receive: three copies of every byte, on a second process's CPU. From the file it
//! is one copy out of the page cache.
//!
//! The files, as a volume server keeps them (one directory per disk, named in its `/status`):
//! - `[<collection>_]<id>.vif`: JSON; `version` (the needle layout) and `bytesOffset` (4, or 5
//!   in builds for volumes over 32 GiB);
//! - `<...>.idx`: appended entries of needle id (u64), offset (in 8-byte units; 4 bytes, or 4
//!   low bytes and a high one) and size (i32); the last entry of an id wins, and a size below
//!   zero (or offset zero) marks a deletion;
//! - `<...>.dat`: an 8-byte superblock, then needles: cookie (u32), id (u64), size (u32, the
//!   body's length); the body (versions 2 and 3): data size (u32), data, flags (u8), optional
//!   fields; then the CRC32-C of the data (u32), in version 3 a timestamp, padding to 8 bytes.
//!
//! All integers are big-endian. Nothing read from the index is trusted that can be checked:
//! the needle at its offset must carry the chunk's id and cookie and the index's size, must be
//! neither compressed nor a chunk manifest, and a read of at least half its data is checked
//! against its CRC (the rest is read for that).
//! Anything else (a volume not found in the server's directories, a layout not known here, a
//! volume compacted between the index and the read, a remote tier) declines, and the caller
//! reads over HTTP as before: a decline costs a failed look, never a wrong byte. A checksum
//! that fails marks that server's copy corrupt: the caller reads another replica, and fails
//! the read naming the corruption where there is none (over HTTP, the volume server would
//! have served a part of the needle unchecked).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;

const FLAG_COMPRESSED: u8 = 0x01;
const FLAG_CHUNK_MANIFEST: u8 = 0x80;
/// Cookie, id, size.
const HEADER: u64 = 16;
/// The data-size field that opens a body.
const DATA_SIZE: u64 = 4;

/// Bytes this process read straight from volume files.
static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// What is known of each local volume server's files, by server address. A process-wide
/// cache: an executor serves many tasks, each with a storage client of its own. A std
/// `Mutex`, held to look a needle up (a few small reads of the index), never for the data.
static SERVERS: OnceLock<Mutex<HashMap<String, Server>>> = OnceLock::new();

/// Returns how many bytes this process has read straight from local volume files.
pub fn short_circuit_bytes() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Server {
    /// The server's data directories, from its `/status`.
    dirs: Vec<PathBuf>,
    /// Volume id -> collection, from the same.
    collections: HashMap<u32, String>,
    volumes: HashMap<u32, Volume>,
    /// Whether a volume's files were not found here once already (said once per server).
    missed: bool,
}

struct Volume {
    /// The files' path without extension.
    base: PathBuf,
    offset_width: usize,
    index: Index,
}

/// A volume's `.idx`, as far as it has been read.
#[derive(Default)]
struct Index {
    inode: u64,
    read: u64,
    /// Needle id -> (offset in bytes, size).
    needles: HashMap<u64, (u64, u32)>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(rename = "DiskStatuses", default)]
    disks: Vec<DiskStatus>,
    #[serde(rename = "Volumes", default)]
    volumes: Vec<VolumeStatus>,
}

#[derive(Deserialize)]
struct DiskStatus {
    dir: String,
}

#[derive(Deserialize)]
struct VolumeStatus {
    #[serde(rename = "Id")]
    id: u32,
    #[serde(rename = "Collection", default)]
    collection: String,
}

#[derive(Deserialize)]
struct VolumeInfo {
    version: u8,
    /// Absent from older volumes, whose builds all had 4-byte offsets.
    #[serde(rename = "bytesOffset", default = "four")]
    bytes_offset: usize,
    /// Files of a volume moved to a remote tier.
    #[serde(default)]
    files: Vec<serde_json::Value>,
}

fn four() -> usize {
    4
}

/// Where a needle lies, found in the index.
struct Needle {
    dat: PathBuf,
    offset: u64,
    size: u32,
}

/// What [`read`] did.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The bytes are in `out`.
    Read,
    /// Not read, for a reason that says nothing of the data (no such file here, another
    /// layout, a compressed needle...): read it over HTTP.
    Declined,
    /// The needle's data fails its checksum: this server's copy is corrupt.
    Corrupt(String),
}

/// Why a read from the files did not happen.
enum Refusal {
    Declined(String),
    Corrupt(String),
}

impl From<String> for Refusal {
    fn from(why: String) -> Self {
        Refusal::Declined(why)
    }
}

impl From<&str> for Refusal {
    fn from(why: &str) -> Self {
        Refusal::Declined(why.to_string())
    }
}

/// Appends `[start, end)` of chunk `file_id`'s data to `out`, read from the files of volume
/// server `server` (which runs on this host), where that can be done with every check
/// passed; otherwise `out` is left as it was.
pub(crate) fn read(
    agent: &ureq::Agent,
    server: &str,
    file_id: &str,
    start: u64,
    end: u64,
    out: &mut Vec<u8>,
) -> Outcome {
    let before = out.len();
    match read_checked(agent, server, file_id, start, end, out) {
        Ok(()) => {
            BYTES_READ.fetch_add(end - start, Ordering::Relaxed);
            Outcome::Read
        }
        Err(Refusal::Declined(why)) => {
            out.truncate(before);
            tracing::debug!(%server, file_id, %why, "chunk not read from the volume's files; reading over HTTP");
            Outcome::Declined
        }
        Err(Refusal::Corrupt(why)) => {
            out.truncate(before);
            tracing::warn!(%server, file_id, %why, "chunk's copy in the volume's file is corrupt; reading another replica");
            Outcome::Corrupt(why)
        }
    }
}

fn read_checked(
    agent: &ureq::Agent,
    server: &str,
    file_id: &str,
    start: u64,
    end: u64,
    out: &mut Vec<u8>,
) -> Result<(), Refusal> {
    let (vid, id, cookie) = parse_file_id(file_id).ok_or("not a plain file id")?;
    let n = locate(agent, server, vid, id)?;
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", n.dat.display());
    let mut dat = File::open(&n.dat).map_err(|e| io("open", e))?;
    let mut head = [0u8; (HEADER + DATA_SIZE) as usize];
    dat.read_exact_at(&mut head, n.offset)
        .map_err(|e| io("read a needle header of", e))?;
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().expect("4 bytes"));
    if be32(&head[0..4]) != cookie
        || u64::from_be_bytes(head[4..12].try_into().expect("8 bytes")) != id
        || be32(&head[12..16]) != n.size
    {
        return Err("the needle at the index's offset is another (compacted since?)".into());
    }
    let data_size = u64::from(be32(&head[16..20]));
    if DATA_SIZE + data_size + 1 > u64::from(n.size) {
        return Err("needle body shorter than its data".into());
    }
    let mut flags = [0u8];
    dat.read_exact_at(&mut flags, n.offset + HEADER + DATA_SIZE + data_size)
        .map_err(|e| io("read needle flags of", e))?;
    if flags[0] & (FLAG_COMPRESSED | FLAG_CHUNK_MANIFEST) != 0 {
        return Err(format!("needle flags {:#04x}: compressed or a manifest", flags[0]).into());
    }
    if end > data_size {
        return Err(format!("range end {end} past the needle's {data_size} bytes").into());
    }
    let before = out.len();
    dat.seek(SeekFrom::Start(n.offset + HEADER + DATA_SIZE + start))
        .map_err(|e| io("seek in", e))?;
    // `read_to_end` reads into the vector's spare capacity: no zeroing first.
    let got = (&mut dat)
        .take(end - start)
        .read_to_end(out)
        .map_err(|e| io("read", e))?;
    if got as u64 != end - start {
        return Err(format!("short read: {got} of {} bytes", end - start).into());
    }
    // The checksum covers the whole data. A read of most of it (a map's split: its chunk
    // from the first line start on, and the lines that run into the next chunk) reads the
    // rest too, to check it: at most as much again, and a CRC at memory speed. The volume
    // server checks only reads of the whole data; a short read is left unchecked here too.
    if 2 * (end - start) >= data_size {
        let data_at = n.offset + HEADER + DATA_SIZE;
        let rest = |from: u64, to: u64| -> Result<Vec<u8>, Refusal> {
            let mut b = vec![0u8; (to - from) as usize];
            dat.read_exact_at(&mut b, data_at + from)
                .map_err(|e| io("read", e))?;
            Ok(b)
        };
        let mut sum = [0u8; 4];
        dat.read_exact_at(&mut sum, n.offset + HEADER + u64::from(n.size))
            .map_err(|e| io("read a checksum in", e))?;
        let stored = u32::from_be_bytes(sum);
        let mut digest = crc_fast::Digest::new(crc_fast::CrcAlgorithm::Crc32Iscsi);
        digest.update(&rest(0, start)?);
        digest.update(&out[before..]);
        digest.update(&rest(end, data_size)?);
        let crc = digest.finalize() as u32;
        // Older volumes stored the CRC masked as Snappy does.
        if stored != crc && stored != crc.rotate_right(15).wrapping_add(0xa282_ead8) {
            return Err(Refusal::Corrupt(format!(
                "checksum mismatch: stored {stored:#010x}, data {crc:#010x}"
            )));
        }
    }
    Ok(())
}

/// Splits `<volume>,<id hex><cookie: 8 hex digits>`.
fn parse_file_id(file_id: &str) -> Option<(u32, u64, u32)> {
    let (vid, key) = file_id.split_once(',')?;
    if key.len() <= 8 || key.len() > 24 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let (id, cookie) = key.split_at(key.len() - 8);
    Some((
        vid.parse().ok()?,
        u64::from_str_radix(id, 16).ok()?,
        u32::from_str_radix(cookie, 16).ok()?,
    ))
}

/// Finds needle `id` of volume `vid` on `server`: the server's directories and the volume's
/// files are looked up once, the index is read on as it grows, and read again from the
/// start when it is replaced (compaction writes a new one).
fn locate(agent: &ureq::Agent, server: &str, vid: u32, id: u64) -> Result<Needle, String> {
    let mut servers = SERVERS
        .get_or_init(Mutex::default)
        .lock()
        .expect("volume files lock");
    let s = servers.entry(server.to_string()).or_default();
    if !s.volumes.contains_key(&vid) {
        if !s.collections.contains_key(&vid) {
            refresh_status(agent, server, s)?;
        }
        let v = match find_volume(s, vid) {
            Ok(v) => v,
            Err(why) => {
                if !std::mem::replace(&mut s.missed, true) {
                    tracing::warn!(%server, %why, "this volume server's files are not readable here; its chunks are read over HTTP");
                }
                return Err(why);
            }
        };
        tracing::info!(%server, volume = vid, files = %v.base.display(), "reading this volume's chunks from its files");
        s.volumes.insert(vid, v);
    }
    let v = s.volumes.get_mut(&vid).expect("inserted above");
    let idx = v.base.with_extension("idx");
    if let Err(e) = read_index(&idx, v.offset_width, &mut v.index) {
        s.volumes.remove(&vid);
        return Err(e);
    }
    let &(offset, size) = v
        .index
        .needles
        .get(&id)
        .ok_or_else(|| format!("needle {id:x} not in {}", idx.display()))?;
    Ok(Needle {
        dat: v.base.with_extension("dat"),
        offset,
        size,
    })
}

fn refresh_status(agent: &ureq::Agent, server: &str, s: &mut Server) -> Result<(), String> {
    let url = format!("http://{server}/status");
    let body = agent
        .get(&url)
        .call()
        .and_then(|mut r| r.body_mut().read_to_vec())
        .map_err(|e| format!("{url}: {e}"))?;
    let status: Status = serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    s.dirs = status
        .disks
        .into_iter()
        .map(|d| PathBuf::from(d.dir))
        .collect();
    s.collections = status
        .volumes
        .into_iter()
        .map(|v| (v.id, v.collection))
        .collect();
    Ok(())
}

fn find_volume(s: &Server, vid: u32) -> Result<Volume, String> {
    let collection = s
        .collections
        .get(&vid)
        .ok_or_else(|| format!("volume {vid} not in the server's status"))?;
    let name = match collection.as_str() {
        "" => vid.to_string(),
        c => format!("{c}_{vid}"),
    };
    let base = s
        .dirs
        .iter()
        .map(|d| d.join(&name))
        .find(|b| b.with_extension("dat").is_file() && b.with_extension("idx").is_file())
        .ok_or_else(|| format!("no {name}.dat and .idx in {:?} on this host", s.dirs))?;
    let vif = base.with_extension("vif");
    let info: VolumeInfo = std::fs::read(&vif)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| format!("{}: {e}", vif.display()))?;
    if !matches!(info.version, 2 | 3) || !matches!(info.bytes_offset, 4 | 5) {
        return Err(format!(
            "{}: needle version {} with {}-byte offsets is not a layout read here",
            vif.display(),
            info.version,
            info.bytes_offset
        ));
    }
    if !info.files.is_empty() {
        return Err(format!("{}: the volume is on a remote tier", vif.display()));
    }
    Ok(Volume {
        base,
        offset_width: info.bytes_offset,
        index: Index::default(),
    })
}

/// Reads the entries appended to `idx` since `index` last read it (all of them if the file
/// was replaced or shrank).
fn read_index(idx: &Path, offset_width: usize, index: &mut Index) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", idx.display());
    let f = File::open(idx).map_err(io)?;
    let meta = f.metadata().map_err(io)?;
    if meta.ino() != index.inode || meta.len() < index.read {
        *index = Index {
            inode: meta.ino(),
            ..Index::default()
        };
    }
    let entry = (8 + offset_width + 4) as u64;
    let whole = (meta.len() - index.read) / entry * entry;
    if whole == 0 {
        return Ok(());
    }
    let mut buf = vec![0u8; whole as usize];
    f.read_exact_at(&mut buf, index.read).map_err(io)?;
    index.read += whole;
    apply_entries(&buf, offset_width, &mut index.needles);
    Ok(())
}

/// Applies index entries in order: a live entry places its needle, a deletion forgets it.
fn apply_entries(buf: &[u8], offset_width: usize, needles: &mut HashMap<u64, (u64, u32)>) {
    for e in buf.chunks_exact(8 + offset_width + 4) {
        let id = u64::from_be_bytes(e[0..8].try_into().expect("8 bytes"));
        let low = u64::from(u32::from_be_bytes(e[8..12].try_into().expect("4 bytes")));
        let high = if offset_width == 5 {
            u64::from(e[12])
        } else {
            0
        };
        let units = low | high << 32;
        let s = &e[8 + offset_width..];
        let size = i32::from_be_bytes(s.try_into().expect("4 bytes"));
        if units == 0 || size <= 0 {
            needles.remove(&id);
        } else {
            needles.insert(id, (units * 8, size as u32));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_split_into_volume_id_and_cookie() {
        assert_eq!(parse_file_id("3,01637037d6"), Some((3, 0x01, 0x637037d6)));
        assert_eq!(parse_file_id("12,1b4e7b8603"), Some((12, 0x1b, 0x4e7b8603)));
        for bad in [
            "3,637037d6",
            "3",
            "x,01637037d6",
            "3,01637037d6_1",
            "3,zz637037d6",
        ] {
            assert_eq!(parse_file_id(bad), None, "{bad}");
        }
    }

    fn entry(id: u64, units: u64, size: i32, width: usize) -> Vec<u8> {
        let mut e = id.to_be_bytes().to_vec();
        e.extend_from_slice(&(units as u32).to_be_bytes());
        if width == 5 {
            e.push((units >> 32) as u8);
        }
        e.extend_from_slice(&size.to_be_bytes());
        e
    }

    #[test]
    fn the_last_index_entry_of_a_needle_wins_and_a_deletion_forgets_it() {
        for width in [4, 5] {
            let mut buf = Vec::new();
            buf.extend(entry(0x0d, 1, 100, width));
            buf.extend(entry(0x10, (1 << 32) + 2, 200, width));
            buf.extend(entry(0x0d, 40, 300, width));
            buf.extend(entry(0x11, 50, 10, width));
            buf.extend(entry(0x11, 60, -1, width));
            let mut needles = HashMap::new();
            apply_entries(&buf, width, &mut needles);
            assert_eq!(needles.get(&0x0d), Some(&(320, 300)), "width {width}");
            let high = if width == 5 { 1u64 << 32 } else { 0 };
            assert_eq!(needles.get(&0x10), Some(&((high + 2) * 8, 200)));
            assert_eq!(needles.get(&0x11), None);
        }
    }
}
