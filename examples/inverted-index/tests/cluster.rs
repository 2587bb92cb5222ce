//! The job on a cluster of stock `quern` workers (which fetch this binary), against the oracle
//! and against an index built by plain code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The stock `quern` binary, built beside this test by the workspace.
fn stock_quern() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("quern");
    assert!(
        path.exists(),
        "no stock quern binary at {}: run the workspace's tests (cargo test --release --workspace)",
        path.display()
    );
    path
}

fn ours() -> Command {
    Command::new(env!("CARGO_BIN_EXE_inverted-index"))
}

fn check(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_parts(dir: &Path) -> String {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

#[test]
fn the_index_on_stock_workers_equals_the_oracle_and_plain_code() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let words = [
        "photo", "view", "cat", "espresso", "palace", "lens", "night", "river",
    ];
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for d in 0..12 {
        let name = format!("doc-{d:02}.txt");
        let mut text = String::new();
        for i in 0..400 {
            let w = words[(d * 7 + i * i) % words.len()];
            let w = if i % 5 == 0 {
                w.to_uppercase()
            } else {
                w.to_string()
            };
            text.push_str(&w);
            text.push_str(if i % 9 == 0 { ".\n" } else { " " });
            expected
                .entry(w.to_ascii_lowercase())
                .or_default()
                .insert(name.clone());
        }
        std::fs::write(docs.join(&name), text).unwrap();
    }
    let state = dir.path().join(".quern");
    let mut cluster = Command::new(stock_quern())
        .args(["local", "--workers", "2", "--slots", "1", "--dir"])
        .arg(&state)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr_file = state.join("coordinator.addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !addr_file.exists() {
        assert!(Instant::now() < deadline, "cluster did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let addr = std::fs::read_to_string(&addr_file)
        .unwrap()
        .trim()
        .to_string();
    let args = ["inverted-index", "--reducers", "3", "--split-size", "4KiB"];
    let out = dir.path().join("index");
    let submitted = ours()
        .args(["job", "submit"])
        .args(args)
        .arg("--input")
        .arg(&docs)
        .arg("--output")
        .arg(&out)
        .env("QUERN_COORDINATOR", &addr)
        .output()
        .unwrap();
    let _ = cluster.kill();
    let stdout = check(submitted.clone());
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    assert!(String::from_utf8_lossy(&submitted.stderr).contains("uploaded job binary"));
    // The stock workers ran this binary's executors: each fetched and cached it.
    let cached = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("binaries").is_dir())
        .count();
    assert!(cached >= 1, "no worker fetched the job binary");
    let local = dir.path().join("local");
    check(
        ours()
            .args(["run", "--local"])
            .args(args)
            .arg("--input")
            .arg(&docs)
            .arg("--output")
            .arg(&local)
            .output()
            .unwrap(),
    );
    assert_eq!(read_parts(&out), read_parts(&local));
    assert_eq!(
        std::fs::read(out.join("_MANIFEST.json")).unwrap(),
        std::fs::read(local.join("_MANIFEST.json")).unwrap()
    );
    // And the index is right: every word with exactly the documents it appears in.
    let got: BTreeMap<String, BTreeSet<String>> = read_parts(&out)
        .lines()
        .map(|l| {
            let (w, d) = l.split_once('\t').unwrap();
            (w.to_string(), d.split(',').map(str::to_string).collect())
        })
        .collect();
    assert_eq!(got, expected);
}
