//! Right, or loud (issue 15): the inputs real users have (compressed, nested, oddly named,
//! relative with `..`, truncated) read the same by `run --local` and a cluster, or refused
//! naming the input; output locations by one rule; one process per state directory; a
//! closed pipe ends a command quietly.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// The part files and manifest of an output (what must be byte-identical between runners).
/// The part and state files of an output, and its manifest without its coverage and what it
/// did not read (outputs of the same records read from differently laid out inputs cover,
/// and pass over, different files).
fn parts(dir: &Path) -> Vec<(String, Vec<u8>)> {
    read_output(dir)
        .into_iter()
        .filter(|(n, _)| n != "_SUCCESS")
        .map(|(n, bytes)| match n.as_str() {
            "_MANIFEST.json" => {
                let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let m_ = m.as_object_mut().unwrap();
                m_.remove("coverage");
                m_.remove("not_read");
                (n, serde_json::to_vec(&m).unwrap())
            }
            _ => (n, bytes),
        })
        .collect()
}

fn gzip_with_the_gzip_tool(src: &Path, dst: &Path) {
    let out = Command::new("gzip")
        .args(["-c", "-6"])
        .arg(src)
        .output()
        .expect("gzip runs");
    assert!(out.status.success());
    std::fs::write(dst, out.stdout).unwrap();
}

/// A web log cut into three pieces, laid out as users keep logs: a plain file at the top, a
/// gzip file in a folder with a space, a zstd file with dots and non-ASCII in a deeper folder,
/// beside an empty file, an earlier output's markers and hidden files that must not be read.
struct Tree {
    _dir: tempfile::TempDir,
    whole: PathBuf,
    root: PathBuf,
    lines: [usize; 3],
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let whole = dir.path().join("access.log");
    ok(quern()
        .args(["gen", "weblog", "--size", "3MiB", "--seed", "21", "--out"])
        .arg(&whole));
    let text = std::fs::read(&whole).unwrap();
    let cut = |at: usize| at + text[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let (a, b) = (cut(text.len() / 3), cut(text.len() * 2 / 3));
    let pieces = [&text[..a], &text[a..b], &text[b..]];
    let lines = pieces.map(|p| p.iter().filter(|&&c| c == b'\n').count());
    let root = dir.path().join("logs");
    let deep = root.join("sub dir").join("2019.archive");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(root.join("a.log"), pieces[0]).unwrap();
    let plain_b = dir.path().join("b.log");
    std::fs::write(&plain_b, pieces[1]).unwrap();
    gzip_with_the_gzip_tool(&plain_b, &root.join("sub dir").join("b.log.gz"));
    std::fs::write(
        deep.join("zürich.2019-01.log.zst"),
        zstd::encode_all(pieces[2], 3).unwrap(),
    )
    .unwrap();
    std::fs::write(root.join("empty.log"), b"").unwrap();
    // Lines that would change every count if they were read.
    let noise = b"GET /photos/1.jpg 200\n".repeat(1000);
    for hidden in [
        "_SUCCESS",
        ".hidden.log",
        "_temporary/part-00000",
        "sub dir/.cache/x.log",
    ] {
        let p = root.join(hidden);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, &noise).unwrap();
    }
    // A link back up the tree is followed once, not for ever, and reads nothing twice.
    std::os::unix::fs::symlink("..", root.join("sub dir").join("loop")).unwrap();
    Tree {
        _dir: dir,
        whole,
        root,
        lines,
    }
}

#[test]
fn nested_compressed_and_oddly_named_inputs_match_the_plain_file_on_both_runners() {
    let t = tree();
    let out = tempfile::tempdir().unwrap();
    let args = ["views", "--reducers", "3", "--split-size", "256KiB"];
    let run_local = |input: &Path, output: &Path| {
        ok(quern()
            .args(["run", "--local"])
            .args(args)
            .arg("--input")
            .arg(input)
            .arg("--output")
            .arg(output))
    };
    let reference = out.path().join("reference");
    run_local(&t.whole, &reference);
    let local = out.path().join("local");
    let stdout = run_local(&t.root, &local);
    let c = counters(&stdout);
    assert_eq!(
        c["map_input_records"] as usize,
        t.lines.iter().sum::<usize>(),
        "every line of the three pieces, nothing of the hidden files: {stdout}"
    );
    assert!(c["map_input_compressed_bytes"] > 0, "{stdout}");
    assert_eq!(parts(&local), parts(&reference));
    // What was not read is listed, each hidden directory once.
    let not_read = |out: &Path| -> Vec<String> {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("_MANIFEST.json")).unwrap()).unwrap();
        m["not_read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let p = e["path"].as_str().unwrap();
                let root = format!("{}/", t.root.display());
                p.strip_prefix(&root).unwrap_or(p).to_string()
            })
            .collect()
    };
    let hidden = [".hidden.log", "_SUCCESS", "_temporary", "sub dir/.cache"];
    assert_eq!(not_read(&local), hidden);
    let said = run(quern()
        .args(["run", "--local"])
        .args(args)
        .arg("--input")
        .arg(&t.root)
        .arg("--output")
        .arg(out.path().join("said")));
    let err = String::from_utf8_lossy(&said.stderr);
    assert!(
        err.contains("warning: not read: 4 input entries") && err.contains("_temporary (its name"),
        "{err}"
    );
    // A file named twice (by a directory and by itself, or through a link) is read once,
    // and the second name is said.
    std::os::unix::fs::symlink("a.log", t.root.join("z-link.log")).unwrap();
    let twice = out.path().join("twice");
    let done = run(quern()
        .args(["run", "--local"])
        .args(args)
        .arg("--input")
        .arg(&t.root)
        .arg("--input")
        .arg(t.root.join("a.log"))
        .arg("--output")
        .arg(&twice));
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert_eq!(parts(&twice), parts(&reference), "{err}");
    let why: Vec<String> = {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(twice.join("_MANIFEST.json")).unwrap()).unwrap();
        m["not_read"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["why"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        why.iter().any(|w| w.starts_with("the same file as"))
            && why
                .iter()
                .any(|w| w.starts_with("named by more than one input")),
        "{why:?}"
    );
    std::fs::remove_file(t.root.join("z-link.log")).unwrap();

    let cluster = Cluster::start(2);
    let dist = out.path().join("cluster");
    let stdout = ok(cluster
        .job()
        .arg("submit")
        .args(args)
        .arg("--input")
        .arg(&t.root)
        .arg("--output")
        .arg(&dist));
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    assert_eq!(
        counters(&stdout)["map_input_records"],
        c["map_input_records"]
    );
    assert_eq!(parts(&dist), parts(&reference), "cluster and oracle");
    assert_eq!(not_read(&dist), hidden);

    // A glob matching a directory reads the directory.
    let glob = out.path().join("glob");
    let stdout = run_local(&t.root.join("sub*"), &glob);
    assert_eq!(
        counters(&stdout)["map_input_records"] as usize,
        t.lines[1] + t.lines[2]
    );

    // A broken link among the inputs is named, not passed over.
    std::os::unix::fs::symlink("gone.log", t.root.join("broken.log")).unwrap();
    let broken = run(quern()
        .args(["run", "--local", "views", "--input"])
        .arg(&t.root)
        .arg("--output")
        .arg(out.path().join("broken")));
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(
        !broken.status.success() && err.contains("broken.log"),
        "{err}"
    );
    std::fs::remove_file(t.root.join("broken.log")).unwrap();

    // `..` in a local path means what it means in the shell.
    let rel = out.path().join("relative");
    let stdout = ok(quern()
        .current_dir(t.root.join("sub dir"))
        .args(["run", "--local"])
        .args(args)
        .args(["--input", "../a.log", "--output"])
        .arg(&rel));
    assert_eq!(counters(&stdout)["map_input_records"] as usize, t.lines[0]);
}

/// Compresses `src` into `dst` with a command-line tool (`bzip2 -c`, `xz -c`).
fn compress_with(tool: &str, src: &Path, dst: &Path) {
    let out = Command::new(tool)
        .arg("-c")
        .arg(src)
        .output()
        .unwrap_or_else(|e| panic!("{tool} runs: {e}"));
    assert!(out.status.success(), "{tool}");
    std::fs::write(dst, out.stdout).unwrap();
}

#[test]
fn bzip2_inputs_read_as_the_plain_file_and_formats_not_decoded_are_refused_by_name() {
    let t = tree();
    let out = tempfile::tempdir().unwrap();
    let args = ["views", "--reducers", "2"];
    let reference = out.path().join("reference");
    ok(quern()
        .args(["run", "--local"])
        .args(args)
        .arg("--input")
        .arg(&t.whole)
        .arg("--output")
        .arg(&reference));
    // The whole log as two bzip2 streams, one after the other (as pbzip2 writes).
    let text = std::fs::read(&t.whole).unwrap();
    let half = text.len() / 2
        + text[text.len() / 2..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap()
        + 1;
    let dir = out.path().join("bz2");
    std::fs::create_dir_all(&dir).unwrap();
    let (first, second) = (out.path().join("first.log"), out.path().join("second.log"));
    std::fs::write(&first, &text[..half]).unwrap();
    std::fs::write(&second, &text[half..]).unwrap();
    let (a, b) = (out.path().join("a.bz2"), out.path().join("b.bz2"));
    compress_with("bzip2", &first, &a);
    compress_with("bzip2", &second, &b);
    let mut both = std::fs::read(&a).unwrap();
    both.extend(std::fs::read(&b).unwrap());
    std::fs::write(dir.join("access.log.bz2"), both).unwrap();
    let cluster = Cluster::start(1);
    // `views` over `dir` into `out/NAME-local` by `run --local` and `out/NAME-cluster` on the
    // cluster: for each, whether it succeeded, what it printed (stdout and stderr) and where.
    let on_both = |name: &str| -> [(bool, String, PathBuf); 2] {
        let mut local = quern();
        local.args(["run", "--local"]);
        let mut submit = cluster.job();
        submit.arg("submit");
        [(local, "local"), (submit, "cluster")].map(|(mut cmd, runner)| {
            let output = out.path().join(format!("{name}-{runner}"));
            let done = run(cmd
                .args(args)
                .arg("--input")
                .arg(&dir)
                .arg("--output")
                .arg(&output));
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&done.stdout),
                String::from_utf8_lossy(&done.stderr)
            );
            (done.status.success(), text, output)
        })
    };
    for (succeeded, text, output) in on_both("bz2") {
        assert!(succeeded, "{text}");
        assert_eq!(
            counters(&text)["map_input_records"] as usize,
            t.lines.iter().sum::<usize>(),
            "{text}"
        );
        assert_eq!(parts(&output), parts(&reference), "{text}");
    }
    // An xz file beside it would be read as text of malformed records: both runners refuse
    // the job, naming the file, and write nothing.
    compress_with("xz", &first, &dir.join("old.log.xz"));
    for (succeeded, text, output) in on_both("refused") {
        assert!(!succeeded, "{text}");
        assert!(
            text.contains("old.log.xz") && text.contains("xz-compressed"),
            "{text}"
        );
        assert!(!output.join("_SUCCESS").exists(), "{text}");
    }
    // Compressed bytes under a name that does not say so fail the job naming the file, rather
    // than count as malformed lines.
    std::fs::remove_file(dir.join("old.log.xz")).unwrap();
    gzip_with_the_gzip_tool(&first, &dir.join("rotated-1"));
    for (succeeded, text, output) in on_both("unnamed") {
        assert!(!succeeded, "{text}");
        assert!(text.contains("rotated-1 is gzip-compressed"), "{text}");
        assert!(!output.join("_SUCCESS").exists(), "{text}");
    }
}

#[test]
fn words_beyond_ascii_are_counted_whole_and_text_not_utf8_is_warned_about_on_both_runners() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("utf8.txt"),
        "Café café CAFÉ in Zürich\n“Quoted” words, don’t\nCafe\u{301} décomposé\n",
    )
    .unwrap();
    // Latin-1: each é is one byte that is not UTF-8.
    std::fs::write(input.join("latin1.txt"), b"caf\xe9 ol\xe9\n").unwrap();
    let expected: std::collections::BTreeSet<&str> = [
        "café\t3",
        "in\t1",
        "zürich\t1",
        "quoted\t1",
        "words\t1",
        "don\t1",
        "t\t1",
        "cafe\u{301}\t1",
        "décomposé\t1",
        "caf\t1",
        "ol\t1",
    ]
    .into();
    let cluster = Cluster::start(1);
    let mut local = quern();
    local.args(["run", "--local"]);
    let mut submit = cluster.job();
    submit.arg("submit");
    for (mut cmd, runner) in [(local, "local"), (submit, "cluster")] {
        let output = dir.path().join(runner);
        let done = run(cmd
            .args(["wordcount", "--reducers", "2", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output));
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{runner}: {err}");
        assert!(
            err.contains(
                "warning: 2 input bytes were not UTF-8 and were read as breaks between words (counter non_utf8_bytes)"
            ),
            "{runner}: {err}"
        );
        let text: String = read_output(&output)
            .into_iter()
            .filter(|(n, _)| n.starts_with("part-"))
            .map(|(_, bytes)| String::from_utf8(bytes).expect("UTF-8 output"))
            .collect();
        let lines: std::collections::BTreeSet<&str> = text.lines().collect();
        assert_eq!(lines, expected, "{runner}");
        // The manifest records the version of wordcount that counted these words.
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(output.join("_MANIFEST.json")).unwrap()).unwrap();
        assert_eq!(manifest["job_version"], 2, "{runner}: {manifest}");
    }
    // Text saved as UTF-16 (as Windows tools write it) would be counted a letter at a time:
    // both runners fail the job, naming the file and its encoding.
    let utf16: Vec<u8> = [0xfeff_u16]
        .into_iter()
        .chain("Notes from Windows\n".encode_utf16())
        .flat_map(u16::to_le_bytes)
        .collect();
    std::fs::write(input.join("notes.txt"), utf16).unwrap();
    let mut local = quern();
    local.args(["run", "--local"]);
    let mut submit = cluster.job();
    submit.arg("submit");
    for (mut cmd, runner) in [(local, "local"), (submit, "cluster")] {
        let output = dir.path().join(format!("{runner}-utf16"));
        let done = run(cmd
            .args(["wordcount", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output));
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(!done.status.success(), "{runner}: {err}");
        assert!(
            err.contains("notes.txt is UTF-16LE text"),
            "{runner}: {err}"
        );
        assert!(!output.join("_SUCCESS").exists(), "{runner}");
    }
}

#[test]
fn an_output_written_inside_the_input_directory_is_not_read_by_the_next_run_on_both_runners() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    ok(quern()
        .args(["gen", "words", "--size", "256KiB", "--seed", "5", "--out"])
        .arg(logs.join("a.txt")));
    let words = |out: &Path| -> Vec<(String, Vec<u8>)> {
        read_output(out)
            .into_iter()
            .filter(|(n, _)| n.starts_with("part-") || n.starts_with("_state"))
            .collect()
    };
    // The first run writes its output inside the directory it read, as `logs/wc-1`.
    ok(quern()
        .args(["run", "--local", "wordcount", "--reducers", "2", "--input"])
        .arg(&logs)
        .arg("--output")
        .arg(logs.join("wc-1")));
    // Runs over the same directory read the same words, not the first run's counts again.
    let cluster = Cluster::start(2);
    let mut local = quern();
    local.args(["run", "--local"]);
    let mut submit = cluster.job();
    submit.arg("submit");
    for (mut cmd, runner) in [(local, "local"), (submit, "cluster")] {
        let output = logs.join(format!("wc-{runner}"));
        let done = run(cmd
            .args(["wordcount", "--reducers", "2", "--input"])
            .arg(&logs)
            .arg("--output")
            .arg(&output));
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{runner}: {err}");
        assert_eq!(words(&output), words(&logs.join("wc-1")), "{runner}: {err}");
        assert!(
            err.contains("wc-1 (an earlier job's output (it holds _SUCCESS)"),
            "{runner}: the output passed over is said: {err}"
        );
        let not_read = not_read(&output);
        assert!(
            not_read.iter().any(|p| p.ends_with("/logs/wc-1")),
            "{runner}: {not_read:?}"
        );
    }
    // An incremental run continues from the first output with what was appended, and folds
    // in none of the outputs now beside the input.
    std::fs::copy(logs.join("a.txt"), logs.join("b.txt")).unwrap();
    let full = dir.path().join("full");
    ok(quern()
        .args(["run", "--local", "wordcount", "--reducers", "2", "--input"])
        .arg(&logs)
        .arg("--output")
        .arg(&full));
    let next = logs.join("wc-2");
    ok(quern()
        .args(["run", "--local", "wordcount", "--reducers", "2", "--input"])
        .arg(&logs)
        .arg("--from")
        .arg(logs.join("wc-1"))
        .arg("--output")
        .arg(&next));
    assert_eq!(words(&next), words(&full));
    // Named, an output is input like any directory.
    let stdout = ok(quern()
        .args(["run", "--local", "wordcount", "--input"])
        .arg(logs.join("wc-1"))
        .arg("--output")
        .arg(dir.path().join("of-counts")));
    assert!(counters(&stdout)["map_input_records"] > 0, "{stdout}");
}

#[test]
fn a_truncated_compressed_input_fails_the_job_naming_the_file_on_both_runners() {
    let t = tree();
    let gz = t.root.join("sub dir").join("b.log.gz");
    let data = std::fs::read(&gz).unwrap();
    std::fs::write(&gz, &data[..data.len() * 2 / 3]).unwrap();
    let out = tempfile::tempdir().unwrap();
    let local = run(quern()
        .args(["run", "--local", "views", "--input"])
        .arg(&t.root)
        .arg("--output")
        .arg(out.path().join("local")));
    let err = String::from_utf8_lossy(&local.stderr);
    assert!(!local.status.success(), "{err}");
    assert!(err.contains("b.log.gz"), "{err}");

    let cluster = Cluster::start(1);
    let started = Instant::now();
    let submitted = run(cluster
        .job()
        .args(["submit", "views", "--max-attempts", "4", "--input"])
        .arg(&t.root)
        .arg("--output")
        .arg(out.path().join("cluster")));
    let text = String::from_utf8_lossy(&submitted.stdout);
    assert!(!submitted.status.success(), "{text}");
    assert!(
        text.contains("state:    failed") && text.contains("b.log.gz"),
        "{text}"
    );
    assert!(
        !out.path().join("cluster").join("_SUCCESS").exists()
            && !out.path().join("cluster").join("part-00000").exists()
    );
    // Fatal: the job does not spend its attempts on what no retry can mend.
    let status = ok(cluster.job().args(["status", "1"]));
    assert!(
        counters(&status)
            .get("failed_attempts")
            .copied()
            .unwrap_or(0)
            <= 1,
        "{status}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn output_locations_follow_one_rule() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "the cat\nthe dog\n").unwrap();
    let wc = |output: &Path, extra: &[&str]| {
        run(quern()
            .args(["run", "--local", "wordcount", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(output)
            .args(extra))
    };
    // `fail` (every map panics) over `output` with --overwrite, on the runner `cmd` starts.
    let fail_over = |cmd: &mut Command, output: &Path| {
        run(cmd
            .args(["fail", "--max-attempts", "1", "--overwrite", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(output))
    };
    let refused = |o: std::process::Output, says: &str| {
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(
            !o.status.success() && err.contains(says),
            "wanted {says:?}: {err}"
        );
    };
    // A file, and a path under a file.
    refused(wc(&input, &[]), "is a file");
    refused(wc(&input.join("out"), &[]), "in.txt");
    // A folder holding an unrelated file: refused, then replaced with --overwrite.
    let busy = dir.path().join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), "mine").unwrap();
    refused(wc(&busy, &[]), "is not empty");
    assert!(busy.join("notes.txt").exists());
    assert!(wc(&busy, &["--overwrite"]).status.success());
    assert!(busy.join("_SUCCESS").exists() && !busy.join("notes.txt").exists());
    // A finished output: refused, replaced with --overwrite.
    refused(wc(&busy, &[]), "already holds a job's output");
    assert!(wc(&busy, &["--overwrite"]).status.success());
    // A job that fails leaves the output it was to replace as it was.
    let before = parts(&busy);
    let failed = fail_over(quern().args(["run", "--local"]), &busy);
    refused(failed, "injected failure");
    assert!(busy.join("_SUCCESS").exists() && !busy.join("_temporary").exists());
    assert_eq!(parts(&busy), before);
    // An empty directory is taken.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(wc(&empty, &[]).status.success());
    // --overwrite never deletes the job's own input.
    refused(
        run(quern()
            .args(["run", "--local", "wordcount", "--overwrite", "--input"])
            .arg(empty.join("part-00000"))
            .arg("--output")
            .arg(&empty)),
        "inside output",
    );

    // The cluster applies the same rule at submit.
    let cluster = Cluster::start(1);
    let submit = |output: &Path, extra: &[&str]| {
        run(cluster
            .job()
            .args(["submit", "wordcount", "--input"])
            .arg(&input)
            .arg("--output")
            .arg(output)
            .args(extra))
    };
    refused(submit(&input, &[]), "is a file");
    refused(submit(&busy, &[]), "already holds a job's output");
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    refused(submit(&other, &[]), "is not empty");
    assert!(submit(&other, &["--overwrite"]).status.success());
    assert!(other.join("_SUCCESS").exists() && !other.join("notes.txt").exists());
    let before = parts(&other);
    let failed = fail_over(cluster.job().arg("submit"), &other);
    refused(failed, "injected failure");
    // The failed job's cleanup runs after its end is reported.
    let waited = Instant::now();
    while other.join("_temporary").exists() && waited.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(other.join("_SUCCESS").exists() && !other.join("_temporary").exists());
    assert_eq!(parts(&other), before);
}

#[test]
fn links_in_a_tar_shard_are_read_or_listed_on_both_runners() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("cat.jpg"), vec![3u8; 2000]).unwrap();
    std::fs::write(src.join("dog.jpg"), vec![4u8; 1500]).unwrap();
    // The same photo under a second name (a hard link), and a link to the latest.
    std::fs::hard_link(src.join("cat.jpg"), src.join("cat-copy.jpg")).unwrap();
    std::os::unix::fs::symlink("dog.jpg", src.join("latest.jpg")).unwrap();
    let shards = dir.path().join("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let tarred = Command::new("tar")
        .arg("-cf")
        .arg(shards.join("s.tar"))
        .arg("-C")
        .arg(&src)
        .args(["cat.jpg", "dog.jpg", "cat-copy.jpg", "latest.jpg"])
        .status()
        .unwrap();
    assert!(tarred.success());
    let cluster = Cluster::start(1);
    let mut local = quern();
    local.args(["run", "--local"]);
    let mut submit = cluster.job();
    submit.arg("submit");
    let mut outputs = Vec::new();
    for (mut cmd, runner) in [(local, "local"), (submit, "cluster")] {
        let output = dir.path().join(runner);
        let done = run(cmd
            .args(["tar-index", "--input"])
            .arg(&shards)
            .arg("--output")
            .arg(&output));
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(done.status.success(), "{runner}: {err}");
        let files = read_output(&output);
        let index = String::from_utf8(files["part-00000"].clone()).unwrap();
        let members: Vec<(&str, &str)> = index
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (f[1], f[2])
            })
            .collect();
        assert_eq!(
            members,
            [
                ("cat-copy.jpg", "2000"),
                ("cat.jpg", "2000"),
                ("dog.jpg", "1500")
            ],
            "{runner}: the hard link is read with its photo's data"
        );
        let listed = String::from_utf8(files["_skipped/records.tsv"].clone()).unwrap();
        assert!(
            listed.contains(
                "tar member latest.jpg is a symbolic link to dog.jpg (not followed): not read"
            ),
            "{runner}: {listed}"
        );
        assert!(
            err.contains("1 records were skipped (counter skipped_records"),
            "{runner}: {err}"
        );
        outputs.push(files);
    }
    assert!(outputs[0] == outputs[1], "the cluster matches run --local");
}

#[test]
fn sizes_out_of_range_are_refused_before_any_task_runs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "a few words\n").unwrap();
    // A split size of 0 ran one map per byte of input: two million maps for 2 MiB.
    for (flag, value, said) in [
        ("--split-size", "0", "--split-size must be at least 1024"),
        ("--split-size", "100", "--split-size must be at least 1024"),
        ("--task-memory", "0", "--task-memory must be more than 0"),
    ] {
        let output = dir.path().join("out");
        let done = run(quern()
            .args(["run", "--local", "wordcount", flag, value, "--input"])
            .arg(&input)
            .arg("--output")
            .arg(&output));
        let err = String::from_utf8_lossy(&done.stderr);
        assert!(
            !done.status.success() && err.contains(said),
            "{flag} {value}: {err}"
        );
        assert!(!output.exists(), "{flag} {value}");
    }
}

#[test]
fn a_second_process_on_a_state_or_worker_directory_refuses_naming_the_first() {
    let cluster = Cluster::start(1);
    let state = cluster.dir.path().join(".quern");
    let second = run(quern()
        .args(["local", "--workers", "1", "--dir"])
        .arg(&state)
        .stdout(Stdio::piped()));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(err.contains("in use by process"), "{err}");
    assert!(
        state.join("coordinator.addr").exists(),
        "the first cluster is still found"
    );
    let worker = run(quern()
        .args(["worker", "--coordinator", &cluster.addr, "--dir"])
        .arg(state.join("worker-0")));
    let err = String::from_utf8_lossy(&worker.stderr);
    assert!(
        !worker.status.success() && err.contains("in use by process"),
        "{err}"
    );
    let coordinator = run(quern()
        .args(["coordinator", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(state.join("coordinator")));
    let err = String::from_utf8_lossy(&coordinator.stderr);
    assert!(
        !coordinator.status.success() && err.contains("in use by process"),
        "{err}"
    );
    // The first cluster still works.
    ok(cluster.job().arg("list"));
}

#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let mut child = quern()
        .arg("jobs")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && out.status.code() != Some(101),
        "{err}"
    );
}

#[test]
fn a_job_whose_input_is_mostly_malformed_warns_naming_the_counter() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("not-a-log.txt");
    let mut f = std::fs::File::create(&input).unwrap();
    for i in 0..100 {
        writeln!(f, "this is line {i} of a novel, not an access log").unwrap();
    }
    let out = run(quern()
        .args(["run", "--local", "views", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success());
    assert!(
        err.contains(
            "warning: 100 of 100 input records (100%) were malformed (counter malformed_records)"
        ),
        "{err}"
    );
    assert!(err.contains("produced no output records"), "{err}");
}

#[test]
fn a_path_parameter_that_names_nothing_fails_the_submission_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let shard = dir.path().join("in.tar");
    std::fs::write(&shard, [0u8; 1024]).unwrap();
    let out = run(quern()
        .current_dir(dir.path())
        .args([
            "run",
            "--local",
            "photos",
            "--param",
            "model=weights/none.safetensors",
        ])
        .arg("--input")
        .arg(&shard)
        .arg("--output")
        .arg(dir.path().join("out")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("parameter model=weights/none.safetensors: no such file")
            && err.contains(
                &dir.path()
                    .join("weights/none.safetensors")
                    .display()
                    .to_string()
            ),
        "{err}"
    );
}

#[test]
fn a_worker_whose_directory_is_removed_stops() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let procs = Procs(vec![spawn_coordinator(
        port,
        &dir.path().join("coordinator"),
        &[],
    )]);
    let worker_dir = dir.path().join("worker");
    let mut worker = spawn_worker(&format!("127.0.0.1:{port}"), &worker_dir, &[]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !worker_dir.join("worker.lock").exists() {
        assert!(Instant::now() < deadline, "worker did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&worker_dir).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = worker.try_wait().unwrap() {
            let _ = status;
            break;
        }
        if Instant::now() > deadline {
            let _ = worker.kill();
            let _ = worker.wait();
            panic!("the worker went on without its directory");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(procs);
}
