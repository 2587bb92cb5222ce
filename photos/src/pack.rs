//! `quern photos pack`: a directory of photos into WebDataset-style tar shards.
//!
//! Photos (`.jpg`, `.jpeg`, `.png`, any case) are found recursively and packed in the byte
//! order of their relative paths, each with its `<stem>.json` sidecar when there is one, as
//! members `<key>.<ext>` where the key is the relative path without its extension (cut at the
//! last dot, by [`crate::job::split_name`], the rule the job reads members by). Two photos
//! with one key (`dup.jpg` and `dup.png`) are refused. Shards
//! are `shard-000000.tar`, ... of about `shard_size` bytes each (a photo never spans two).
//! Headers carry no time, owner or mode from the file system, so the same photos give the
//! same shards, byte for byte.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What packing wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packed {
    /// Photos packed.
    pub photos: u64,
    /// Metadata sidecars packed.
    pub sidecars: u64,
    /// Shards written.
    pub shards: u64,
    /// Bytes of photos and sidecars.
    pub bytes: u64,
}

/// Packing failed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    /// Reading the input or writing a shard failed.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No photo was found.
    #[error("no .jpg, .jpeg or .png files under {0}")]
    Empty(PathBuf),
    /// A file name that is not UTF-8 or holds a tab or line break (keys go into text output).
    #[error("{0}: photo names must be UTF-8 without tabs or line breaks")]
    BadName(PathBuf),
    /// Two photos would have one key (`dup.jpg` and `dup.png` in one folder): their output
    /// lines could not be told apart.
    #[error("{} and {} would both be photo {key:?}: rename one of them", .first.display(), .second.display())]
    DuplicateKey {
        /// The key.
        key: String,
        /// The first photo with it.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PackError + '_ {
    move |source| PackError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_photo(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), PackError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() && is_photo(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Packs the photos under `src` into shards in `out`, calling `progress(done, total)` after
/// each photo.
///
/// # Errors
/// [`PackError`].
pub fn pack(
    src: &Path,
    out: &Path,
    shard_size: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Packed, PackError> {
    let mut photos = Vec::new();
    walk(src, &mut photos)?;
    if photos.is_empty() {
        return Err(PackError::Empty(src.to_path_buf()));
    }
    let keyed = keyed(src, photos)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let total = keyed.len() as u64;
    let mut done = Packed::default();
    let mut shard: Option<(tar::Builder<BufWriter<File>>, PathBuf, u64)> = None;
    for (name, path) in keyed {
        let data = std::fs::read(&path).map_err(io(&path))?;
        let sidecar_path = path.with_extension("json");
        let sidecar = match std::fs::read(&sidecar_path) {
            Ok(d) => Some(d),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(&sidecar_path)(e)),
        };
        let size = data.len() as u64 + sidecar.as_ref().map_or(0, |s| s.len() as u64);
        if shard
            .as_ref()
            .is_some_and(|(_, _, bytes)| *bytes > 0 && bytes + size > shard_size)
        {
            finish(shard.take())?;
        }
        let (builder, _, bytes) = match &mut shard {
            Some(s) => s,
            None => {
                let p = out.join(format!("shard-{:06}.tar", done.shards));
                let f = File::create(&p).map_err(io(&p))?;
                done.shards += 1;
                shard.insert((
                    tar::Builder::new(BufWriter::with_capacity(1 << 20, f)),
                    p,
                    0,
                ))
            }
        };
        let (key, ext) = crate::job::split_name(&name);
        append(
            builder,
            &format!("{key}.{}", ext.to_ascii_lowercase()),
            &data,
            &path,
        )?;
        if let Some(s) = &sidecar {
            append(builder, &format!("{key}.json"), s, &sidecar_path)?;
            done.sidecars += 1;
        }
        *bytes += size;
        done.bytes += size;
        done.photos += 1;
        progress(done.photos, total);
    }
    finish(shard)?;
    Ok(done)
}

/// The photos' names under `src`, sorted, each with its path; refuses a name with a tab or
/// line break and two photos with one key.
fn keyed(src: &Path, photos: Vec<PathBuf>) -> Result<Vec<(String, PathBuf)>, PackError> {
    let mut keyed = Vec::with_capacity(photos.len());
    for p in photos {
        let rel = p.strip_prefix(src).unwrap_or(&p).to_path_buf();
        let name = rel
            .to_str()
            .filter(|n| !n.contains(['\t', '\n', '\r']))
            .ok_or_else(|| PackError::BadName(p.clone()))?
            .to_string();
        keyed.push((name, p));
    }
    keyed.sort();
    let mut keys = std::collections::HashMap::with_capacity(keyed.len());
    for (name, path) in &keyed {
        let key = crate::job::split_name(name).0;
        if let Some(first) = keys.insert(key, path) {
            return Err(PackError::DuplicateKey {
                key: key.to_string(),
                first: first.clone(),
                second: path.clone(),
            });
        }
    }
    Ok(keyed)
}

fn append(
    b: &mut tar::Builder<BufWriter<File>>,
    name: &str,
    data: &[u8],
    path: &Path,
) -> Result<(), PackError> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).map_err(io(path))
}

fn finish(shard: Option<(tar::Builder<BufWriter<File>>, PathBuf, u64)>) -> Result<(), PackError> {
    if let Some((b, p, _)) = shard {
        let mut w = b.into_inner().map_err(io(&p))?;
        w.flush().map_err(io(&p))?;
        w.into_inner()
            .map_err(|e| io(&p)(e.into_error()))?
            .sync_all()
            .map_err(io(&p))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_is_deterministic_and_keeps_sidecars() {
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir(src.path().join("sub")).unwrap();
        for (n, size) in [
            ("b.JPG", 3000),
            ("a.png", 5000),
            ("sub/c.jpeg", 100),
            ("notes.txt", 10),
        ] {
            std::fs::write(src.path().join(n), vec![7u8; size]).unwrap();
        }
        std::fs::write(src.path().join("a.json"), b"{\"id\":1}").unwrap();
        let (o1, o2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut calls = 0;
        let p = pack(src.path(), o1.path(), 4096, &mut |_, _| calls += 1).unwrap();
        assert_eq!((p.photos, p.sidecars, p.shards, calls), (3, 1, 2, 3));
        pack(src.path(), o2.path(), 4096, &mut |_, _| {}).unwrap();
        for s in ["shard-000000.tar", "shard-000001.tar"] {
            assert_eq!(
                std::fs::read(o1.path().join(s)).unwrap(),
                std::fs::read(o2.path().join(s)).unwrap()
            );
        }
        let first = std::fs::read(o1.path().join("shard-000000.tar")).unwrap();
        let names: Vec<String> = tar::Archive::new(&first[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a.png", "a.json"]);
        assert!(matches!(
            pack(o1.path(), o2.path(), 1, &mut |_, _| {}),
            Err(PackError::Empty(_))
        ));
    }

    fn members(dir: &Path) -> Vec<String> {
        let shard = std::fs::read(dir.join("shard-000000.tar")).unwrap();
        tar::Archive::new(&shard[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect()
    }

    #[test]
    fn dotted_and_hidden_names_keep_their_keys_and_one_key_twice_is_refused() {
        let src = tempfile::tempdir().unwrap();
        for n in ["holiday.2019.jpg", "IMG_0001.edited.JPG", ".hidden.jpg"] {
            std::fs::write(src.path().join(n), b"x").unwrap();
        }
        std::fs::write(src.path().join("holiday.2019.json"), b"{}").unwrap();
        let out = tempfile::tempdir().unwrap();
        pack(src.path(), out.path(), 1 << 20, &mut |_, _| {}).unwrap();
        let names = members(out.path());
        assert_eq!(
            names,
            [
                ".hidden.jpg",
                "IMG_0001.edited.jpg",
                "holiday.2019.jpg",
                "holiday.2019.json"
            ]
        );
        // The job reads each back under the key it was packed as (issue 15: it cut at the
        // first dot and ignored all three).
        let keys: Vec<(&str, &str)> = names.iter().map(|n| crate::job::split_name(n)).collect();
        assert_eq!(
            keys,
            [
                (".hidden", "jpg"),
                ("IMG_0001.edited", "jpg"),
                ("holiday.2019", "jpg"),
                ("holiday.2019", "json")
            ]
        );
        std::fs::write(src.path().join("holiday.2019.png"), b"y").unwrap();
        let err = pack(src.path(), out.path(), 1 << 20, &mut |_, _| {}).unwrap_err();
        assert!(
            matches!(&err, PackError::DuplicateKey { key, .. } if key == "holiday.2019"),
            "{err}"
        );
    }
}
