//! `quern bench scheduler` end to end, small: a real coordinator process, simulated workers
//! over gRPC, one job run to success, and the tables it prints.

mod support;

use support::*;

#[test]
fn the_scheduler_benchmark_runs_a_job_to_the_end_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = quern()
        .args(["bench", "scheduler", "--workers", "3,30", "--maps", "400"])
        .args(["--reduces", "3", "--idle-s", "1", "--heartbeat-ms", "200"])
        .arg("--dir")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One row per cluster size in each table; every task ran, nothing failed.
    for workers in ["3", "30"] {
        let rows: Vec<Vec<&str>> = text
            .lines()
            .filter(|l| l.starts_with(&format!("| {workers} |")))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        assert_eq!(rows.len(), 2, "{text}");
        let job = &rows[1];
        let attempts: u64 = job[3].parse().unwrap();
        assert!(attempts >= 403, "{text}");
        // The row ends `| errors |`: the last cell before the empty tail.
        assert_eq!(job[job.len() - 2], "0", "RPC errors: {text}");
    }
    // The coordinator committed the reduces' parts and published the output.
    assert!(dir.path().join("w30/out/_SUCCESS").exists());
    assert!(dir.path().join("w30/out/part-00002").exists());
}
