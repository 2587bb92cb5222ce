//! The join on stock `quern` workers, against the oracle and against plain code.

use std::collections::BTreeMap;

use quern_testkit::{assert_same_output, generate, read_parts, run_job, Cluster, Options};

const BIN: &str = env!("CARGO_BIN_EXE_photo-join");

#[test]
fn the_join_on_stock_workers_equals_the_oracle_and_plain_code() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    generate("weblog", "2MiB", 3, &log);
    // Metadata for photo ids 0..3000 (some viewed photos have none), and one bad line.
    let meta = dir.path().join("photos.jsonl");
    let mut lines: Vec<String> = (0..3000)
        .map(|id| {
            format!(
                r#"{{"id": {id}, "title": "photo {id}", "owner": "u{}"}}"#,
                id % 97
            )
        })
        .collect();
    lines.insert(10, "{not json".into());
    std::fs::write(&meta, lines.join("\n") + "\n").unwrap();

    let cluster = Cluster::start_with(Options {
        workers: 2,
        slots: 1,
        ..Options::default()
    });
    let args = [
        "job",
        "submit",
        "photo-join",
        "--reducers",
        "3",
        "--split-size",
        "512KiB",
    ];
    let out = dir.path().join("joined");
    let stdout = run_job(BIN, Some(&cluster.addr), &args, &[&log, &meta], &out);
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    assert!(stdout.contains("malformed_metadata"), "{stdout}");
    assert!(cluster.workers_with_binaries() >= 1);
    let local = dir.path().join("local");
    let args = [
        "run",
        "--local",
        "photo-join",
        "--reducers",
        "3",
        "--split-size",
        "512KiB",
    ];
    run_job(BIN, None, &args, &[&log, &meta], &local);
    assert_same_output(&out, &local);

    // Plain code: views per photo id from the lines `"GET /photos/<id>.jpg HTTP/1.1" 200 ...`.
    let mut views: BTreeMap<u64, u64> = BTreeMap::new();
    for line in std::fs::read(&log).unwrap().split(|b| *b == b'\n') {
        let line = String::from_utf8_lossy(line);
        // Well-formed lines end with the latency in milliseconds.
        if line
            .rsplit(' ')
            .next()
            .is_none_or(|l| l.parse::<u64>().is_err())
        {
            continue;
        }
        let Some(rest) = line.split("\"GET /photos/").nth(1) else {
            continue;
        };
        let Some((id, tail)) = rest.split_once(".jpg HTTP/1.1\" ") else {
            continue;
        };
        if let (Ok(id), true) = (id.parse::<u64>(), tail.starts_with("200 ")) {
            *views.entry(id).or_default() += 1;
        }
    }
    let joined = read_parts(&out);
    assert_eq!(joined.lines().count(), 3000);
    // The plain reading is looser than the job's grammar (a few malformed lines pass it), so
    // the job may count less, never more, and must agree on nearly every photo.
    let mut agree = 0;
    for l in joined.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        let id: u64 = f[0].parse().unwrap();
        assert_eq!(f[1], format!("photo {id}"));
        let (got, plain) = (
            f[3].parse::<u64>().unwrap(),
            views.get(&id).copied().unwrap_or(0),
        );
        assert!(got <= plain, "{l}: plain code counts {plain}");
        agree += usize::from(got == plain);
    }
    assert!(agree * 100 >= 3000 * 97, "{agree} of 3000 photos agree");
}
