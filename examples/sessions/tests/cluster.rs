//! Sessions on stock `quern` workers, against the oracle and against plain code.

use std::collections::BTreeMap;

use quern_testkit::{assert_same_output, generate, read_parts, run_job, Cluster, Options};

const BIN: &str = env!("CARGO_BIN_EXE_sessions");

#[test]
fn sessions_on_stock_workers_equal_the_oracle_and_plain_code() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    generate("weblog", "2MiB", 8, &log);
    let cluster = Cluster::start_with(Options {
        workers: 2,
        slots: 1,
        ..Options::default()
    });
    // A 5-minute gap, so the generated hour and a half of traffic holds many sessions.
    let args = [
        "job",
        "submit",
        "sessions",
        "--param",
        "gap_s=300",
        "--reducers",
        "3",
    ];
    let out = dir.path().join("sessions");
    let stdout = run_job(BIN, Some(&cluster.addr), &args, &[&log], &out);
    assert!(stdout.contains("state:    succeeded"), "{stdout}");
    let local = dir.path().join("local");
    let args = [
        "run",
        "--local",
        "sessions",
        "--param",
        "gap_s=300",
        "--reducers",
        "3",
    ];
    run_job(BIN, None, &args, &[&log], &local);
    assert_same_output(&out, &local);

    // Plain code: session counts per user from the well-formed lines' user and time.
    let got: BTreeMap<String, u64> = read_parts(&out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect();
    let mut times: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let text = std::fs::read(&log).unwrap();
    for line in text.split(|b| *b == b'\n') {
        // The generator mixes in malformed lines, some not even UTF-8.
        let line = String::from_utf8_lossy(line);
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 12 || f[2] == "-" || !f[2].starts_with('u') {
            continue;
        }
        let t = f[3].trim_start_matches('[');
        let (day, hms) = (&t[..2], &t[12..20]);
        let secs = day.parse::<u64>().unwrap_or(0) * 86_400
            + hms[..2].parse::<u64>().unwrap_or(0) * 3600
            + hms[3..5].parse::<u64>().unwrap_or(0) * 60
            + hms[6..8].parse::<u64>().unwrap_or(0);
        times.entry(f[2].to_string()).or_default().push(secs);
    }
    let mut agree = 0;
    for (user, mut ts) in times {
        ts.sort_unstable();
        let sessions = 1 + ts.windows(2).filter(|w| w[1] - w[0] > 300).count() as u64;
        if got.get(&user) == Some(&sessions) {
            agree += 1;
        }
    }
    // The plain reading is looser than the job's parser (it keeps malformed lines), so allow
    // the few users such lines touch.
    assert!(
        agree * 100 >= got.len() * 95,
        "{agree} of {} users agree",
        got.len()
    );
}
