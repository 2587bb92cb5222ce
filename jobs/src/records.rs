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

    /// For tar input: why reading stopped early (a corrupt or truncated header), if it did,
    /// and the offset in the split's data from which nothing was read.
    pub fn error(&self) -> Option<(&str, usize)> {
        match self {
            Records::Tar(t) => t.error.as_deref().map(|e| (e, t.stopped_at)),
            _ => None,
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
        }
    }
}

/// The regular members of a tar archive, zero-copy: ustar headers, with GNU (`L`) and pax
/// (`path=`) long names. (A ustar name prefix is not applied: writers use one of the long-name
/// forms for paths over 100 bytes, as GNU tar and `quern` do.)
pub struct TarMembers<'a> {
    data: &'a [u8],
    pos: usize,
    long_name: Option<&'a [u8]>,
    /// Set when a header is corrupt or the archive truncated; iteration stops there.
    pub error: Option<String>,
    /// Where reading stopped when `error` is set: the bytes from here on were not read.
    pub stopped_at: usize,
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
    let mut rest = body;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        let rec = rest.get(sp + 1..len)?;
        if let Some(v) = rec.strip_prefix(b"path=") {
            return Some(v.strip_suffix(b"\n").unwrap_or(v));
        }
        rest = &rest[len..];
    }
    None
}

impl<'a> TarMembers<'a> {
    /// The members of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        TarMembers {
            data,
            pos: 0,
            long_name: None,
            error: None,
            stopped_at: 0,
        }
    }

    fn fail(&mut self, why: String) -> Option<(&'a [u8], &'a [u8])> {
        self.error = Some(format!("{why} at byte {}", self.pos));
        self.stopped_at = self.pos.min(self.data.len());
        self.pos = self.data.len();
        None
    }
}

impl<'a> Iterator for TarMembers<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let data = self.data;
            let Some(h) = data.get(self.pos..self.pos + BLOCK) else {
                return self.fail("truncated tar archive (no end-of-archive block)".into());
            };
            if h.iter().all(|b| *b == 0) {
                return None;
            }
            let sum: u64 = h
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u64::from(*b)
                    }
                })
                .sum();
            if octal(&h[148..156]) != Some(sum) {
                return self.fail("bad tar header checksum".into());
            }
            let Some(size) = octal(&h[124..136]) else {
                return self.fail("bad tar member size".into());
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
            self.pos = start + (end - start).div_ceil(BLOCK) * BLOCK;
            let body = &data[start..end];
            match h[156] {
                b'L' => self.long_name = Some(field(body)),
                b'x' => self.long_name = pax_path(body).or(self.long_name),
                b'0' | 0 => {
                    let name = self.long_name.take().unwrap_or_else(|| field(&h[0..100]));
                    return Some((name, body));
                }
                _ => {
                    self.long_name = None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let sum: u32 = huge[..512]
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        u32::from(*b)
                    }
                })
                .sum();
            huge[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
            let mut m = TarMembers::new(&huge);
            assert_eq!(m.by_ref().count(), 0);
            assert!(m.error.unwrap().contains("runs past the end"));
        }
    }
}
