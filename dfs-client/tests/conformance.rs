//! One conformance suite, run against every backend: local files always; SeaweedFS and S3
//! when `scripts/test.sh` (or `scripts/seaweedfs.sh start`) has started SeaweedFS and
//! exported its addresses. Under CI (`CI` set) a missing SeaweedFS fails the suite.

use std::sync::atomic::{AtomicU32, Ordering};

use dfs_client::{DfsError, Storage, StorageConfig};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh directory URL on one backend, and a client for it.
struct Root {
    storage: Storage,
    url: String,
    kind: &'static str,
    _dir: Option<tempfile::TempDir>,
}

fn required(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ if std::env::var_os("CI").is_some() => {
            panic!("{var} is not set: CI must start SeaweedFS (scripts/test.sh does) before this suite")
        }
        _ => {
            eprintln!(
                "{var} not set; skipping this backend (run scripts/test.sh to start SeaweedFS)"
            );
            None
        }
    }
}

fn config() -> StorageConfig {
    let mut c = StorageConfig::from_env();
    // Small chunks, so that a few MiB make several chunks and reads cross their boundaries.
    c.seaweedfs_chunk_mb = 1;
    c
}

fn roots() -> Vec<Root> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![Root {
        storage: Storage::new(config()),
        url: dir.path().display().to_string(),
        kind: "local",
        _dir: Some(dir),
    }];
    if let Some(filer) = required("QUERN_SEAWEEDFS_FILER") {
        out.push(Root {
            storage: Storage::new(config()),
            url: format!("seaweedfs://{filer}/conformance/{}-{n}", std::process::id()),
            kind: "seaweedfs",
            _dir: None,
        });
        // The same, with every volume server taken as this host's: chunks read from their
        // volume files.
        if let Some(servers) = required("QUERN_VOLUME_SERVERS") {
            out.push(Root {
                storage: Storage::new(StorageConfig {
                    local_volume_servers: servers.split(',').map(String::from).collect(),
                    ..config()
                }),
                url: format!(
                    "seaweedfs://{filer}/conformance/{}-{n}-direct",
                    std::process::id()
                ),
                kind: "seaweedfs, volume files",
                _dir: None,
            });
        }
    }
    if required("QUERN_S3_ENDPOINT").is_some() {
        let bucket = std::env::var("QUERN_S3_TEST_BUCKET").unwrap_or_else(|_| "quern-test".into());
        out.push(Root {
            storage: Storage::new(config()),
            url: format!("s3://{bucket}/conformance/{}-{n}", std::process::id()),
            kind: "s3",
            _dir: None,
        });
    }
    out
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn writes_become_visible_only_on_commit() {
    for r in roots() {
        let s = &r.storage;
        let path = format!("{}/out/part-00000", r.url);
        let mut w = s.create(&path).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        assert!(
            !s.exists(&path).unwrap(),
            "{}: visible before commit",
            r.kind
        );
        w.commit().unwrap();
        assert_eq!(
            &s.read_all(&path).unwrap()[..],
            b"hello world",
            "{}",
            r.kind
        );
        let dropped = format!("{}/out/part-00001", r.url);
        let mut w = s.create(&dropped).unwrap();
        w.write(b"never").unwrap();
        drop(w);
        assert!(
            !s.exists(&dropped).unwrap(),
            "{}: a dropped writer left a file",
            r.kind
        );
        s.delete(&r.url).unwrap();
    }
}

#[test]
fn byte_ranges_read_exactly_across_chunk_boundaries() {
    for r in roots() {
        let s = &r.storage;
        let path = format!("{}/big.bin", r.url);
        let content = data(3 * 1024 * 1024 + 123);
        s.write_all(&path, &content).unwrap();
        assert_eq!(
            s.stat(&path).unwrap().len,
            content.len() as u64,
            "{}",
            r.kind
        );
        let direct_before = dfs_client::seaweedfs::short_circuit_bytes();
        for (start, len) in [
            (0, 10),
            (1024 * 1024 - 5, 10),
            (2 * 1024 * 1024 - 1, 1024 * 1024 + 2),
            (3 * 1024 * 1024, 1000),
            (100, 0),
        ] {
            let got = s.read_range(&path, start, len).unwrap();
            let end = (start + len).min(content.len() as u64) as usize;
            assert_eq!(
                &got[..],
                &content[start as usize..end],
                "{} range {start}+{len}",
                r.kind
            );
        }
        assert_eq!(s.read_all(&path).unwrap().len(), content.len());
        if r.kind == "seaweedfs, volume files" {
            // Other tests' reads may add to the count, never take from it.
            assert!(
                dfs_client::seaweedfs::short_circuit_bytes() - direct_before
                    >= content.len() as u64,
                "chunks read from their volume files"
            );
        }
        assert!(
            matches!(
                s.read_range(&path, content.len() as u64 + 1, 1),
                Err(DfsError::OutOfRange { .. })
            ),
            "{}",
            r.kind
        );
        let pieces = s.locations(&path).unwrap();
        assert_eq!(pieces.first().unwrap().offset, 0);
        assert!(
            pieces
                .windows(2)
                .all(|w| w[0].offset + w[0].len == w[1].offset),
            "{}: pieces not contiguous",
            r.kind
        );
        let last = pieces.last().unwrap();
        assert_eq!(last.offset + last.len, content.len() as u64);
        match r.kind {
            "seaweedfs" | "seaweedfs, volume files" => {
                assert_eq!(pieces.len(), 4, "1 MiB chunks");
                assert!(
                    pieces.iter().all(|p| !p.hosts.is_empty()),
                    "every chunk has a volume server"
                );
            }
            "local" => assert_eq!(pieces[0].hosts, vec![dfs_client::local_host()]),
            _ => assert!(
                pieces.iter().all(|p| p.hosts.is_empty()),
                "object stores have no locality"
            ),
        }
        s.delete(&r.url).unwrap();
    }
}

#[test]
fn listing_recurses_skips_metadata_and_matches_globs() {
    for r in roots() {
        let s = &r.storage;
        for name in [
            "b.log",
            "a.log",
            "_SUCCESS",
            ".hidden",
            "c.txt",
            "sub/deep.log",
            "sub/deeper/x y.log",
            "sub/_temporary/part-0",
            "sub/.cache/c.log",
            "_logs/old.log",
            "day.2019.01/holiday.2019.log",
        ] {
            s.write_all(&format!("{}/{name}", r.url), name.as_bytes())
                .unwrap();
        }
        let names = |v: Vec<dfs_client::FileStatus>| {
            let root = format!("{}/", r.url);
            v.into_iter()
                .map(|f| {
                    let rel = f.path.split_once(&root).map(|(_, rel)| rel.to_string());
                    rel.unwrap_or(f.path)
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(s.list(&r.url).unwrap()),
            [
                "a.log",
                "b.log",
                "c.txt",
                "day.2019.01/holiday.2019.log",
                "sub/deep.log",
                "sub/deeper/x y.log"
            ],
            "{}: a directory is read recursively, `_` and `.` names skipped at every level",
            r.kind
        );
        assert_eq!(
            names(s.list(&format!("{}/*.log", r.url)).unwrap()),
            ["a.log", "b.log"],
            "{}",
            r.kind
        );
        assert_eq!(
            names(s.list(&format!("{}/s*", r.url)).unwrap()),
            ["sub/deep.log", "sub/deeper/x y.log"],
            "{}: a glob matching a directory takes its data files",
            r.kind
        );
        assert_eq!(
            names(s.list(&format!("{}/sub", r.url)).unwrap()),
            ["sub/deep.log", "sub/deeper/x y.log"],
            "{}",
            r.kind
        );
        assert_eq!(
            names(s.list(&format!("{}/_*", r.url)).unwrap()),
            ["_SUCCESS", "_logs/old.log"],
            "{}: a glob that names metadata takes it",
            r.kind
        );
        assert_eq!(
            names(s.list(&format!("{}/a.log", r.url)).unwrap()),
            ["a.log"],
            "{}",
            r.kind
        );
        let listed = s.list(&r.url).unwrap();
        assert_eq!(listed[0].len, 5);
        assert_eq!(
            &s.read_all(&listed[0].path).unwrap()[..],
            b"a.log",
            "{}: listed paths are readable URLs",
            r.kind
        );
        assert!(
            matches!(
                s.list(&format!("{}/*.csv", r.url)),
                Err(DfsError::NotFound { .. })
            ),
            "{}",
            r.kind
        );
        assert!(
            matches!(
                s.stat(&format!("{}/nope", r.url)),
                Err(DfsError::NotFound { .. })
            ),
            "{}",
            r.kind
        );
        s.delete(&r.url).unwrap();
    }
}

#[test]
fn an_earlier_output_inside_a_listed_directory_is_passed_over_unless_named() {
    for r in roots() {
        let s = &r.storage;
        for name in [
            "logs/a.log",
            "logs/day/b.log",
            // A job's output written inside the directory its input was.
            "logs/report/_SUCCESS",
            "logs/report/part-00000",
            "logs/report/_state/part-00000",
            "logs/report/nested/_SUCCESS",
            "logs/report/nested/part-00000",
            // A directory of that name that is no output.
            "logs/report-draft/notes.log",
            "only/out/_SUCCESS",
            "only/out/part-00000",
        ] {
            s.write_all(&format!("{}/{name}", r.url), name.as_bytes())
                .unwrap();
        }
        let rel = |path: &str| {
            path.split_once(&format!("{}/", r.url))
                .map_or(path.to_string(), |(_, rel)| rel.to_string())
        };
        let names = |v: Vec<dfs_client::FileStatus>| {
            v.into_iter().map(|f| rel(&f.path)).collect::<Vec<_>>()
        };
        let (files, skipped) = s.list_skipping(&format!("{}/logs", r.url)).unwrap();
        assert_eq!(
            names(files),
            [
                "logs/a.log",
                "logs/day/b.log",
                "logs/report-draft/notes.log"
            ],
            "{}: an output below the directory named is not its input",
            r.kind
        );
        let skipped: Vec<_> = skipped
            .iter()
            .map(|k| (rel(&k.path), k.why.as_str()))
            .collect();
        assert_eq!(
            skipped,
            [("logs/report".to_string(), dfs_client::SKIPPED_OUTPUT)],
            "{}: listed once, with why, its markers with it",
            r.kind
        );
        assert_eq!(
            names(s.list(&format!("{}/logs/report", r.url)).unwrap()),
            ["logs/report/part-00000"],
            "{}: an output named is read (and an output inside it is not)",
            r.kind
        );
        assert_eq!(
            names(s.list(&format!("{}/logs/rep*", r.url)).unwrap()),
            ["logs/report-draft/notes.log", "logs/report/part-00000"],
            "{}: so is one a glob matches",
            r.kind
        );
        let err = s.list(&format!("{}/only", r.url)).unwrap_err();
        assert!(
            matches!(&err, DfsError::NothingToRead { why, .. } if why.contains("only/out")),
            "{}: {err}",
            r.kind
        );
        s.delete(&r.url).unwrap();
    }
}

#[test]
fn rename_moves_and_replaces_and_delete_removes_trees() {
    for r in roots() {
        let s = &r.storage;
        let (a, b) = (format!("{}/x/a", r.url), format!("{}/y/b", r.url));
        s.write_all(&a, b"first").unwrap();
        s.write_all(&b, b"old").unwrap();
        s.rename(&a, &b).unwrap();
        assert!(!s.exists(&a).unwrap(), "{}", r.kind);
        assert_eq!(&s.read_all(&b).unwrap()[..], b"first", "{}", r.kind);
        s.delete(&format!("{}/y", r.url)).unwrap();
        assert!(
            !s.exists(&b).unwrap(),
            "{}: delete of a directory removes its files",
            r.kind
        );
        s.delete(&format!("{}/never-was", r.url)).unwrap();
        s.delete(&r.url).unwrap();
    }
}

#[test]
fn entries_name_what_a_directory_holds_metadata_too() {
    for r in roots() {
        let s = &r.storage;
        let dir = format!("{}/out", r.url);
        assert!(
            s.entries(&dir).unwrap().is_empty(),
            "{}: nothing there",
            r.kind
        );
        for name in [
            "part-00000",
            "_SUCCESS",
            ".hidden",
            "_temporary/committed/part-00001",
        ] {
            s.write_all(&format!("{dir}/{name}"), b"x").unwrap();
        }
        let mut got = s.entries(&dir).unwrap();
        got.sort();
        assert_eq!(
            got,
            [".hidden", "_SUCCESS", "_temporary", "part-00000"],
            "{}",
            r.kind
        );
        s.delete(&r.url).unwrap();
    }
}

#[test]
fn bad_paths_are_refused_before_any_io() {
    // Unroutable hosts: a request would fail differently (or hang), so the error proves
    // validation came first.
    let s = Storage::new(StorageConfig::default());
    for base in ["", "seaweedfs://192.0.2.1:1/", "s3://bucket/"] {
        for bad in ["../../etc/passwd", "a/../../b", "a//b", "./a/./b", "a\0b"] {
            let url = format!("{base}{bad}");
            for res in [
                s.stat(&url).map(|_| ()),
                s.delete(&url),
                s.read_range(&url, 0, 1).map(|_| ()),
            ] {
                assert!(
                    matches!(res, Err(DfsError::InvalidPath { .. })),
                    "{url:?} -> {res:?}"
                );
            }
        }
    }
}
