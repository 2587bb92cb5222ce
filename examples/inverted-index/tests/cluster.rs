//! The job on a cluster of stock `quern` workers (which fetch this binary), against the oracle
//! and against an index built by plain code.

use std::collections::{BTreeMap, BTreeSet};

use quern_testkit::{assert_same_output, read_parts, run_job, Cluster, Options};

const BIN: &str = env!("CARGO_BIN_EXE_inverted-index");

#[test]
fn the_index_on_stock_workers_equals_the_oracle_and_plain_code() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let words = [
        "photo", "view", "cat", "espresso", "palace", "lens", "night", "river", "café", "zürich",
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
                .entry(w.to_lowercase())
                .or_default()
                .insert(name.clone());
        }
        std::fs::write(docs.join(&name), text).unwrap();
    }
    let cluster = Cluster::start_with(Options {
        workers: 2,
        slots: 1,
        ..Options::default()
    });
    let out = dir.path().join("index");
    let args = [
        "job",
        "submit",
        "inverted-index",
        "--reducers",
        "3",
        "--split-size",
        "4KiB",
    ];
    let stdout = run_job(BIN, Some(&cluster.addr), &args, &[&docs], &out);
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    // The stock workers ran this binary's executors: they fetched and cached it.
    assert!(
        cluster.workers_with_binaries() >= 1,
        "no worker fetched the job binary"
    );
    let local = dir.path().join("local");
    let args = [
        "run",
        "--local",
        "inverted-index",
        "--reducers",
        "3",
        "--split-size",
        "4KiB",
    ];
    run_job(BIN, None, &args, &[&docs], &local);
    assert_same_output(&out, &local);
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

/// New documents arrive and an old one grows: a run `--from` the earlier index, on stock
/// workers running this binary, reads only what is new and gives the index a full run gives.
#[test]
fn an_incremental_index_equals_a_full_one() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let doc = |d: usize| -> String {
        (0..300)
            .map(|i| format!("w{} ", (d * 13 + i * i) % 97))
            .collect::<String>()
            .replace("w", "word")
            + "\n"
    };
    for d in 0..6 {
        std::fs::write(docs.join(format!("doc-{d}.txt")), doc(d)).unwrap();
    }
    let cluster = Cluster::start_with(Options {
        workers: 2,
        slots: 1,
        ..Options::default()
    });
    let submit = ["job", "submit", "inverted-index", "--reducers", "2"];
    let first = dir.path().join("index-1");
    run_job(BIN, Some(&cluster.addr), &submit, &[&docs], &first);
    for d in 6..9 {
        std::fs::write(docs.join(format!("doc-{d}.txt")), doc(d)).unwrap();
    }
    std::fs::write(docs.join("doc-0.txt"), doc(0) + "zebra quokka\n").unwrap();
    let second = dir.path().join("index-2");
    let from = first.display().to_string();
    let stdout = run_job(
        BIN,
        Some(&cluster.addr),
        &[&submit[..], &["--from", &from]].concat(),
        &[&docs],
        &second,
    );
    assert!(stdout.contains("state_input_records"), "{stdout}");
    let full = dir.path().join("full");
    let local = ["run", "--local", "inverted-index", "--reducers", "2"];
    run_job(BIN, None, &local, &[&docs], &full);
    assert_same_output(&second, &full);
    assert!(read_parts(&second).contains("zebra\tdoc-0.txt"));
}
