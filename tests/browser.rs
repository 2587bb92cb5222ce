//! The web UI in headless Chromium (Debian's `chromium`, installed by `scripts/test.sh`): a
//! local cluster runs a job that succeeds and one that fails; the page must show both with
//! their states, the succeeded job's counters and the failed job's error. Screenshots go to
//! `target/ui/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|n| Path::new("/usr/bin").join(n))
        .find(|p| p.exists())
}

/// Loads `url` in headless Chromium, lets its scripts run, and returns the resulting DOM;
/// also saves a screenshot.
fn render(browser: &Path, url: &str, screenshot: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = |c: &mut Command| {
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=4000",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()));
    };
    let mut shot = Command::new(browser);
    common(&mut shot);
    let status = shot
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        screenshot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let mut dom = Command::new(browser);
    common(&mut dom);
    let out = dom.arg("--dump-dom").arg(url).output().unwrap();
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    // What the page drew, without its script (whose templates hold the same markup).
    match dom.find("<script") {
        Some(at) => dom[..at].to_string(),
        None => dom,
    }
}

#[test]
fn the_web_ui_shows_jobs_states_counters_and_errors() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs chromium (scripts/test.sh) for this test"
        );
        eprintln!("no chromium; skipping the browser test");
        return;
    };
    let inputs = inputs("1MiB");
    let cluster = Cluster::start(2);
    let http = std::fs::read_to_string(cluster.dir.path().join(".quern/http.addr")).unwrap();
    ok(cluster
        .job()
        .args(["submit", "views", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(cluster.dir.path().join("views")));
    let failed = run(cluster
        .job()
        .args(["submit", "fail", "--max-attempts", "2", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(cluster.dir.path().join("never")));
    assert!(!failed.status.success());
    // A schedule that catches up at once: a skipped range and a run in its history.
    let output = format!("{}/hourly/{{{{ts}}}}", cluster.dir.path().display());
    ok(quern()
        .args([
            "schedule",
            "add",
            "every-minute",
            "--cron",
            "* * * * *",
            "--job",
            "views",
        ])
        .args(["--start", "2026-01-01", "--catchup", "latest", "--input"])
        .arg(&inputs.log)
        .args(["--output", &output])
        .env("QUERN_COORDINATOR", &cluster.addr));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !ok(quern()
        .args(["schedule", "history", "every-minute"])
        .env("QUERN_COORDINATOR", &cluster.addr))
    .contains("succeeded")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule never ran"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A manual run of the schedule: a one-time backfill, listed with its progress.
    ok(quern()
        .args(["schedule", "run", "every-minute", "--detach"])
        .env("QUERN_COORDINATOR", &cluster.addr));
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ui");
    std::fs::create_dir_all(&shots).unwrap();

    let dom = render(
        &browser,
        &format!("http://{http}/#job-1"),
        &shots.join("job-succeeded.png"),
    );
    assert!(dom.contains(">job-1<") && dom.contains(">views<"), "{dom}");
    assert!(dom.contains("state-succeeded\">succeeded<"), "{dom}");
    assert!(dom.contains("map_input_records"), "counters shown: {dom}");
    // Attempts by their readable names.
    assert!(dom.contains(">job-1/map-0/1<"), "{dom}");
    // The schedule's job, named after it, its labels on hover.
    assert!(
        dom.contains("schedule=every-minute\">every-minute<"),
        "{dom}"
    );
    assert!(dom.contains("workers alive"), "{dom}");
    // The timeline: lanes per worker slot, a bar per attempt, a time axis and a legend.
    assert!(dom.contains("id=\"timeline\""), "{dom}");
    assert!(dom.matches("class=\"lane\"").count() >= 1, "{dom}");
    assert!(dom.contains("data-slot=\"0\""), "{dom}");
    assert!(
        dom.contains("<i class=\"map\" style=") && dom.contains("<i class=\"reduce\" style="),
        "{dom}"
    );
    assert!(
        dom.contains("class=\"axis\"") && dom.contains("class=\"legend\""),
        "{dom}"
    );
    // The phases with their bytes, and the activity charts.
    assert!(
        dom.contains("id=\"phases\"") && dom.contains("fetched "),
        "{dom}"
    );
    assert!(
        dom.contains("running tasks: ") && dom.contains("<polyline"),
        "{dom}"
    );
    // A finished job has no kill button (the failed job below neither).
    assert!(!dom.contains("id=\"kill\""), "{dom}");

    let dom = render(
        &browser,
        &format!("http://{http}/#job-2"),
        &shots.join("job-failed.png"),
    );
    assert!(dom.contains("state-failed\">failed<"), "{dom}");
    assert!(
        dom.contains("id=\"job-error\"") && dom.contains("injected failure"),
        "{dom}"
    );
    // The failed attempts, with their errors and links to their logs.
    assert!(dom.contains("id=\"attempts\""), "{dom}");
    assert_eq!(dom.matches("/attempts/attempt-").count(), 2, "{dom}");

    let dom = render(
        &browser,
        &format!("http://{http}/#schedule-every-minute"),
        &shots.join("schedule.png"),
    );
    assert!(dom.contains("schedule every-minute: history"), "{dom}");
    // Each run links to its job.
    assert!(dom.contains("<a href=\"#job-"), "{dom}");
    // The backfill of the manual run, with its progress.
    assert!(
        dom.contains("data-schedule=\"every-minute\"><td>1</td><td>every-minute</td><td>all</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("skipped: missed") && dom.contains("state-succeeded"),
        "{dom}"
    );
}
