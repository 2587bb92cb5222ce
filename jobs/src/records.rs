//! Records of a split in each input format: lines, whole files, or the members of tar shards.

use crate::split::{Lines, RawLines};

pub use protocol::spec::InputFormat;

/// The records of one split: (name, data) pairs, borrowed from the split's bytes.
pub enum Records<'a> {
    /// Lines.
    Lines(Lines<'a>),
    /// Lines with their terminators.
    RawLines(RawLines<'a>),
    /// The whole split (a whole file), once.
    Whole(Option<&'a [u8]>),
    /// Tar members.
    Tar(TarMembers<'a>),
    /// The files of a group split, each whole, named by their record names.
    Group(GroupFiles<'a>),
}

/// The files of a group split ([`crate::split::Split::files`]), each one record.
pub struct GroupFiles<'a> {
    data: &'a [u8],
    members: std::slice::Iter<'a, crate::split::GroupMember>,
}

impl<'a> Records<'a> {
    /// The records of `data` in `format`.
    pub fn new(format: InputFormat, data: &'a [u8]) -> Self {
        match format {
            InputFormat::Lines => Records::Lines(Lines::new(data)),
            InputFormat::RawLines => Records::RawLines(RawLines::new(data)),
            InputFormat::WholeFiles => Records::Whole(Some(data)),
            InputFormat::Tar => Records::Tar(TarMembers::new(data)),
        }
    }

    /// The records of a split in `format` that ends before its file does: for tar, a piece
    /// of a shard cut at a member boundary ([`tar_cuts`]), whose data ends without the
    /// end-of-archive blocks.
    pub fn piece(format: InputFormat, data: &'a [u8]) -> Self {
        match format {
            InputFormat::Tar => Records::Tar(TarMembers {
                piece: true,
                ..TarMembers::new(data)
            }),
            _ => Records::new(format, data),
        }
    }

    /// The files of a group split, whatever the job's format: `data` holds them end to end,
    /// as [`crate::input::read_group`] read them.
    pub fn group(members: &'a [crate::split::GroupMember], data: &'a [u8]) -> Self {
        Records::Group(GroupFiles {
            data,
            members: members.iter(),
        })
    }

    /// For tar input: why reading stopped early (a corrupt or truncated header), if it did,
    /// and the offset in the split's data from which nothing was read.
    pub fn error(&self) -> Option<(&str, usize)> {
        match self {
            Records::Tar(t) => t.error.as_deref().map(|e| (e, t.stopped_at)),
            _ => None,
        }
    }

    /// For tar input: the members passed over because they hold no file data to read (a
    /// symbolic link, a device, a hard link whose data is in another piece of the shard), each
    /// with the offset of its header in the split's data and why, for the job to list.
    pub fn passed_over(&self) -> &[(usize, String)] {
        match self {
            Records::Tar(t) => &t.passed_over,
            _ => &[],
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = (&'a [u8], &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Records::Lines(l) => l.next().map(|line| (&[][..], line)),
            Records::RawLines(l) => l.next().map(|line| (&[][..], line)),
            Records::Whole(w) => w.take().map(|d| (&[][..], d)),
            Records::Tar(t) => t.next(),
            Records::Group(g) => g.next(),
        }
    }
}

impl<'a> Iterator for GroupFiles<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let m = self.members.next()?;
        let end = (self.members.as_slice().first()).map_or(self.data.len(), |n| n.start as usize);
        Some((m.name.as_bytes(), &self.data[m.start as usize..end]))
    }
}

/// The file members of a tar archive, zero-copy: ustar headers, with GNU (`L`, `K`) and pax
/// (`path=`, `linkpath=`) long names. (A ustar name prefix is not applied: writers use one of
/// the long-name forms for paths over 100 bytes, as GNU tar and `quern` do.) Regular and
/// contiguous files are members; a hard link is one too, with the data of the earlier member
/// it links to (as extracting the archive gives it). Directories and archive metadata (global
/// pax headers, volume labels) are not files; every other member (a symbolic link, a device,
/// a FIFO, a sparse file, a hard link whose target is not in the data read) goes into
/// [`TarMembers::passed_over`], with why.
pub struct TarMembers<'a> {
    data: &'a [u8],
    pos: usize,
    long_name: Option<&'a [u8]>,
    long_link: Option<&'a [u8]>,
    /// Members passed over: the offset of each one's header, and why.
    pub passed_over: Vec<(usize, String)>,
    /// Set when a header is corrupt or the archive truncated; iteration stops there.
    pub error: Option<String>,
    /// Where reading stopped when `error` is set: the bytes from here on were not read.
    pub stopped_at: usize,
    /// A piece of an archive: its data may end at a member boundary.
    piece: bool,
}

const BLOCK: usize = 512;

fn field(h: &[u8]) -> &[u8] {
    let end = h.iter().position(|b| *b == 0).unwrap_or(h.len());
    &h[..end]
}

fn octal(h: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(field(h))
        .ok()?
        .trim_matches([' ', '\0']);
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// The `path` record of a pax extended header (`"<len> path=<value>\n"` records).
fn pax_path(body: &[u8]) -> Option<&[u8]> {
    pax_record(body, b"path=")
}

/// The record of a pax extended header that starts with `key` (`path=`, `linkpath=`).
fn pax_record<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut rest = body;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let rec = rest.get(sp + 1..len)?;
        if let Some(v) = rec.strip_prefix(key) {
            return Some(v.strip_suffix(b"\n").unwrap_or(v));
        }
        rest = &rest[len..];
    }
    None
}

/// The data of the last file member named `name` in `data` (whole members from its start):
/// the target of a hard link, which tar writers put before the link.
fn linked<'a>(data: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    fn bare(n: &[u8]) -> &[u8] {
        n.strip_prefix(b"./").unwrap_or(n)
    }
    let mut members = TarMembers {
        piece: true,
        ..TarMembers::new(data)
    };
    members
        .by_ref()
        .filter(|(n, _)| bare(n) == bare(name))
        .last()
        .map(|(_, body)| body)
}

impl<'a> TarMembers<'a> {
    /// The members of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        TarMembers {
            data,
            pos: 0,
            long_name: None,
            long_link: None,
            passed_over: Vec::new(),
            error: None,
            stopped_at: 0,
            piece: false,
        }
    }

    fn fail(&mut self, why: String) -> Option<(&'a [u8], &'a [u8])> {
        self.error = Some(format!("{why} at byte {}", self.pos));
        self.stopped_at = self.pos.min(self.data.len());
        self.pos = self.data.len();
        None
    }
}

/// The checksum of a tar header block: its bytes summed, the checksum field counted as spaces.
fn checksum(h: &[u8]) -> u64 {
    h[..BLOCK]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(*b)
            }
        })
        .sum()
}

/// A tar header block's member size and type; `None` for an end-of-archive (zero) block.
fn header(h: &[u8]) -> Result<Option<(u64, u8)>, &'static str> {
    if h.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    if octal(&h[148..156]) != Some(checksum(h)) {
        return Err("bad tar header checksum");
    }
    let size = octal(&h[124..136]).ok_or("bad tar member size")?;
    Ok(Some((size, h[156])))
}

/// Where a tar file of `len` bytes may be cut into pieces of about `piece_size` bytes: the
/// start of each piece (0 first), each at a member's first header block (a long-name or pax
/// header stays with its member), and never between members of one sample: members whose
/// names agree up to the first dot of the file name (`a/cat.jpg`, `a/cat.json`) stay in one
/// piece, as WebDataset groups them. Reads each member's header block through `read`
/// (offset, length), and the body of long-name and pax headers, never a member's data. The
/// walk stops cutting at the end-of-archive block or at a header it cannot read, leaving the
/// rest to the last piece, whose map reports the fault.
///
/// # Errors
/// `read`'s errors.
pub fn tar_cuts<E>(
    len: u64,
    piece_size: u64,
    mut read: impl FnMut(u64, u64) -> Result<Vec<u8>, E>,
) -> Result<Vec<u64>, E> {
    let block = BLOCK as u64;
    let mut cuts = vec![0];
    let mut pos = 0u64;
    // Where the member being read began (at its long-name or pax header, if any), and the
    // name those headers gave it.
    let mut member: Option<(u64, Option<Vec<u8>>)> = None;
    let mut last_sample: Option<Vec<u8>> = None;
    while pos + block <= len {
        let h = read(pos, block)?;
        let Ok(Some((size, kind))) = header(&h) else {
            break;
        };
        if pos + block + size > len {
            // A member cut off by the file's end: it stays in the piece before, which reads
            // what it can and reports the cut.
            break;
        }
        let (start, long) = member.take().unwrap_or((pos, None));
        match kind {
            b'K' => member = Some((start, long)),
            b'L' | b'x' if size <= 1 << 20 => {
                let body = read(pos + block, size)?;
                let name = if kind == b'L' {
                    Some(field(&body).to_vec())
                } else {
                    pax_path(&body).map(<[u8]>::to_vec).or(long)
                };
                member = Some((start, name));
            }
            _ => {
                let name = long.unwrap_or_else(|| field(&h[0..100]).to_vec());
                let sample = sample_of(&name).to_vec();
                if start >= cuts[cuts.len() - 1] + piece_size
                    && last_sample.as_ref() != Some(&sample)
                {
                    cuts.push(start);
                }
                last_sample = Some(sample);
            }
        }
        pos += block + size.div_ceil(block) * block;
    }
    Ok(cuts)
}

/// The sample a member belongs to: its name up to the first dot of its file name.
fn sample_of(name: &[u8]) -> &[u8] {
    let base = name.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
    match name[base..].iter().position(|b| *b == b'.') {
        Some(dot) if dot > 0 => &name[..base + dot],
        _ => name,
    }
}

impl<'a> Iterator for TarMembers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let data = self.data;
            if self.piece && self.pos == data.len() && self.long_name.is_none() {
                return None;
            }
            let Some(h) = data.get(self.pos..self.pos + BLOCK) else {
                return self.fail("truncated tar archive (no end-of-archive block)".into());
            };
            let size = match header(h) {
                Ok(Some((size, _))) => size,
                Ok(None) => return None,
                Err(why) => return self.fail(why.into()),
            };
            let start = self.pos + BLOCK;
            let Some(end) = usize::try_from(size)
                .ok()
                .and_then(|s| start.checked_add(s))
            else {
                return self.fail(format!("tar member of absurd size {size}"));
            };
            if end > data.len() {
                return self.fail(format!("tar member of {size} bytes runs past the end"));
            }
            let at = self.pos;
            self.pos = start + (end - start).div_ceil(BLOCK) * BLOCK;
            let body = &data[start..end];
            let kind = h[156];
            match kind {
                b'L' => self.long_name = Some(field(body)),
                b'K' => self.long_link = Some(field(body)),
                b'x' => {
                    self.long_name = pax_path(body).or(self.long_name);
                    self.long_link = pax_record(body, b"linkpath=").or(self.long_link);
                }
                // Directories and archive metadata: no file of their own.
                b'5' | b'g' | b'V' | b'D' => {
                    self.long_name = None;
                    self.long_link = None;
                }
                _ => {
                    let name = self.long_name.take().unwrap_or_else(|| field(&h[0..100]));
                    let link = self.long_link.take().unwrap_or_else(|| field(&h[157..257]));
                    match kind {
                        // A regular or contiguous file.
                        b'0' | 0 | b'7' => return Some((name, body)),
                        b'1' => {
                            if let Some(body) = linked(&data[..at], link) {
                                return Some((name, body));
                            }
                        }
                        _ => {}
                    }
                    let (name, link) =
                        (String::from_utf8_lossy(name), String::from_utf8_lossy(link));
                    let what = match kind {
                        b'1' => format!("a hard link to {link}, whose data is not in the part of the shard read with it"),
                        b'2' => format!("a symbolic link to {link} (not followed)"),
                        b'3' => "a character device".to_string(),
                        b'4' => "a block device".to_string(),
                        b'6' => "a FIFO".to_string(),
                        b'S' => "a GNU sparse file (not decoded)".to_string(),
                        other => format!("of type {:?}, which is not a file", char::from(other)),
                    };
                    self.passed_over
                        .push((at, format!("tar member {name} is {what}: not read")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the checksum of the header block at the start of `data` after an edit.
    fn reseal(data: &mut [u8]) {
        let sum = checksum(data);
        data[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    #[test]
    fn tar_members_as_written_by_the_tar_tool() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.json"), b"{\"k\": 1}").unwrap();
        std::fs::write(src.join("sub/b.jpg"), vec![7u8; 1300]).unwrap();
        let long = "x".repeat(150) + ".png";
        std::fs::write(src.join(&long), b"").unwrap();
        let tar = dir.path().join("shard.tar");
        for format in ["gnu", "pax"] {
            let ok = std::process::Command::new("tar")
                .args([&format!("--format={format}"), "-cf"])
                .arg(&tar)
                .args(["-C"])
                .arg(&src)
                .args(["a.json", "sub", &long])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let data = std::fs::read(&tar).unwrap();
            let got: Vec<(String, usize)> = TarMembers::new(&data)
                .map(|(n, d)| (String::from_utf8_lossy(n).into_owned(), d.len()))
                .collect();
            assert_eq!(
                got,
                vec![
                    ("a.json".into(), 8),
                    ("sub/b.jpg".into(), 1300),
                    (long.clone(), 0)
                ],
                "{format}"
            );
            // A corrupt header stops the shard with a reason; nothing panics.
            let mut bad = data.clone();
            bad[100] ^= 0xFF;
            let mut m = TarMembers::new(&bad);
            assert_eq!(m.by_ref().count(), 0);
            assert!(m.error.unwrap().contains("checksum"));
            let mut cut = TarMembers::new(&data[..700]);
            assert!(cut.by_ref().count() <= 1);
            assert!(cut.error.is_some());
            // An absurd declared size is refused before anything is read.
            let mut huge = data.clone();
            huge[124..136].copy_from_slice(b"77777777777\0");
            reseal(&mut huge);
            let mut m = TarMembers::new(&huge);
            assert_eq!(m.by_ref().count(), 0);
            assert!(m.error.unwrap().contains("runs past the end"));

            // Cut into pieces at member boundaries (a long name stays with its member), the
            // pieces give the same members as the whole, each once.
            let read = |at: u64, len: u64| -> Result<Vec<u8>, ()> {
                Ok(data[at as usize..(at + len) as usize].to_vec())
            };
            let len = data.len() as u64;
            for piece_size in [1, 600, 2048, len] {
                let cuts = tar_cuts(len, piece_size, read).unwrap();
                assert_eq!(cuts[0], 0);
                let mut pieces = Vec::new();
                for (i, &start) in cuts.iter().enumerate() {
                    let end = cuts.get(i + 1).map_or(data.len(), |&e| e as usize);
                    let slice = &data[start as usize..end];
                    let mut m = if end < data.len() {
                        Records::piece(InputFormat::Tar, slice)
                    } else {
                        Records::new(InputFormat::Tar, slice)
                    };
                    pieces.extend(
                        m.by_ref()
                            .map(|(n, d)| (String::from_utf8_lossy(n).into_owned(), d.len())),
                    );
                    assert!(m.error().is_none(), "{format} {piece_size} {cuts:?}");
                }
                assert_eq!(pieces, got, "{format}, pieces of {piece_size}: {cuts:?}");
                if piece_size == 1 {
                    // One piece per member (the directory entry `sub/` is one too).
                    assert_eq!(cuts.len(), 4, "{format}: {cuts:?}");
                }
            }
            // A piece that ends inside a member is still a truncated archive.
            let cuts = tar_cuts(len, 1, read).unwrap();
            // A file cut inside a member: no piece starts at that member, so the piece before
            // reads its whole members and reports the cut.
            let cut_at = cuts[2] as usize + 600;
            let short = tar_cuts(cut_at as u64, 1, read).unwrap();
            assert_eq!(short, cuts[..2], "{format}");
            let mut m = Records::piece(InputFormat::Tar, &data[..cuts[1] as usize + 700]);
            assert!(m.by_ref().count() <= 2);
            assert!(m.error().is_some());
        }
    }

    #[test]
    fn links_devices_and_contiguous_files_in_a_tar_are_read_or_listed_never_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("d")).unwrap();
        std::fs::write(src.join("d/a.jpg"), vec![7u8; 900]).unwrap();
        // A photo kept twice as one file, as deduplicating copies leave them.
        std::fs::hard_link(src.join("d/a.jpg"), src.join("d/b.jpg")).unwrap();
        let long = format!("d/{}.jpg", "h".repeat(120));
        std::fs::hard_link(src.join("d/a.jpg"), src.join(&long)).unwrap();
        std::os::unix::fs::symlink("a.jpg", src.join("d/latest.jpg")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(src.join("d/pipe"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let tar = dir.path().join("shard.tar");
        for format in ["gnu", "pax"] {
            let ok = std::process::Command::new("tar")
                .args([&format!("--format={format}"), "-cf"])
                .arg(&tar)
                .arg("-C")
                .arg(&src)
                .args(["d/a.jpg", "d/b.jpg", &long, "d/latest.jpg", "d/pipe", "d"])
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let data = std::fs::read(&tar).unwrap();
            let mut m = Records::new(InputFormat::Tar, &data);
            let got: Vec<(String, usize)> = m
                .by_ref()
                .map(|(n, d)| (String::from_utf8_lossy(n).into_owned(), d.len()))
                .collect();
            // Each file once (tar adds `d`'s entries again after the directory: the links
            // and the FIFO are members again, and a.jpg's copy now links to it).
            let files: std::collections::BTreeSet<_> = got.iter().cloned().collect();
            assert_eq!(
                files,
                [
                    ("d/a.jpg".to_string(), 900),
                    ("d/b.jpg".to_string(), 900),
                    (long.clone(), 900)
                ]
                .into(),
                "{format}"
            );
            assert!(m.error().is_none(), "{format}");
            let why: Vec<&str> = m.passed_over().iter().map(|(_, w)| w.as_str()).collect();
            assert!(
                why.contains(
                    &"tar member d/latest.jpg is a symbolic link to a.jpg (not followed): not read"
                ) && why.contains(&"tar member d/pipe is a FIFO: not read"),
                "{format}: {why:?}"
            );
            // Each listed at its header.
            for (at, _) in m.passed_over() {
                assert!(header(&data[*at..*at + BLOCK]).unwrap().is_some());
            }
            // A hard link in a piece without its target is listed, not dropped.
            let cuts = tar_cuts(data.len() as u64, 1, |at, len| {
                Ok::<_, ()>(data[at as usize..(at + len) as usize].to_vec())
            })
            .unwrap();
            let second = &data[cuts[1] as usize..];
            let mut m = Records::new(InputFormat::Tar, second);
            assert_eq!(m.by_ref().count(), 0, "{format}: {cuts:?}");
            assert!(
                m.passed_over()[0].1.starts_with(
                    "tar member d/b.jpg is a hard link to d/a.jpg, whose data is not in the part"
                ),
                "{format}: {:?}",
                m.passed_over()
            );
        }
        // A contiguous file (type 7) is a regular file.
        let ok = std::process::Command::new("tar")
            .args(["--format=gnu", "-cf"])
            .arg(&tar)
            .arg("-C")
            .arg(&src)
            .arg("d/a.jpg")
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let mut data = std::fs::read(&tar).unwrap();
        data[156] = b'7';
        reseal(&mut data);
        let first = TarMembers::new(&data).next().unwrap();
        assert_eq!((first.0, first.1.len()), (&b"d/a.jpg"[..], 900));
    }

    #[test]
    fn a_photo_and_its_sidecar_stay_in_one_piece() {
        assert_eq!(sample_of(b"d.v2/x.y.jpg"), b"d.v2/x");
        assert_eq!(sample_of(b"d/.hidden"), b"d/.hidden");
        let dir = tempfile::tempdir().unwrap();
        let long = "y".repeat(120);
        for name in ["cat.jpg", "cat.json", "dog.jpg", "dog.json"] {
            std::fs::write(dir.path().join(name), vec![1u8; 700]).unwrap();
        }
        std::fs::write(dir.path().join(format!("{long}.jpg")), b"x").unwrap();
        std::fs::write(dir.path().join(format!("{long}.json")), b"{}").unwrap();
        let tar = dir.path().join("s.tar");
        let files = [
            "cat.jpg".to_string(),
            "cat.json".into(),
            "dog.jpg".into(),
            "dog.json".into(),
            format!("{long}.jpg"),
            format!("{long}.json"),
        ];
        for format in ["gnu", "pax"] {
            assert!(std::process::Command::new("tar")
                .args([&format!("--format={format}"), "-cf"])
                .arg(&tar)
                .arg("-C")
                .arg(dir.path())
                .args(&files)
                .status()
                .unwrap()
                .success());
            let data = std::fs::read(&tar).unwrap();
            let read = |at: u64, len: u64| -> Result<Vec<u8>, ()> {
                Ok(data[at as usize..(at + len) as usize].to_vec())
            };
            let cuts = tar_cuts(data.len() as u64, 1, read).unwrap();
            assert_eq!(cuts.len(), 3, "{format}: one piece per sample: {cuts:?}");
            let names = |slice: &[u8]| -> Vec<String> {
                Records::piece(InputFormat::Tar, slice)
                    .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                    .collect()
            };
            let second = names(&data[cuts[1] as usize..cuts[2] as usize]);
            assert_eq!(second, ["dog.jpg", "dog.json"], "{format}");
            let third = names(&data[cuts[2] as usize..]);
            assert_eq!(third, files[4..], "{format}");
        }
    }
}
