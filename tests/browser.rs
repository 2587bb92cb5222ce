//! The web UI in headless Chromium (Debian's `chromium`, installed by `scripts/test.sh`): a
//! local cluster runs a job that succeeds and one that fails; the page must show both with
//! their states, the succeeded job's counters and the failed job's error. Screenshots go to
//! `target/ui/`. A second test drives a page over the DevTools protocol, as a person would: it
//! answers the token prompt of a cluster with tokens, resubmits a job and kills one.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The browser; none outside CI skips the test (CI installs chromium with scripts/test.sh).
fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .map(|n| Path::new("/usr/bin").join(n))
        .find(|p| p.exists());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI installs chromium (scripts/test.sh) for this test"
        );
        eprintln!("no chromium; skipping the browser test");
    }
    found
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

/// A page driven over the Chrome DevTools Protocol: scripts evaluated in it, and its
/// `confirm`/`prompt` dialogs answered in turn from `answers`.
struct Page {
    browser: std::process::Child,
    ws: tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
    next_id: u64,
    /// Answers to the dialogs the page opens, in order: accept or not, and a prompt's text.
    answers: std::collections::VecDeque<(bool, String)>,
    /// The messages of the dialogs answered so far.
    dialogs: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Page {
    fn open(browser: &Path) -> Page {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Chromium writes its port into the profile once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.parse::<u16>().ok()))
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        let targets: serde_json::Value = ureq::get(&format!("http://127.0.0.1:{port}/json/list"))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap();
        let url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .expect("a page target")
            .to_string();
        let (ws, _) = tungstenite::connect(url).unwrap();
        let mut page = Page {
            browser: child,
            ws,
            next_id: 1,
            answers: Default::default(),
            dialogs: Vec::new(),
            _profile: profile,
        };
        page.call("Page.enable", serde_json::json!({}));
        page
    }

    fn send(&mut self, method: &str, params: serde_json::Value) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        id
    }

    /// Calls `method` and returns its result, answering dialogs that open meanwhile.
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        let id = self.send(method, params);
        loop {
            let msg = self.ws.read().unwrap();
            let Ok(text) = msg.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
                continue;
            };
            if v["method"] == "Page.javascriptDialogOpening" {
                self.dialogs
                    .push(v["params"]["message"].as_str().unwrap_or("").to_string());
                let (accept, text) = self
                    .answers
                    .pop_front()
                    .unwrap_or_else(|| panic!("unexpected dialog: {v}"));
                self.send(
                    "Page.handleJavaScriptDialog",
                    serde_json::json!({"accept": accept, "promptText": text}),
                );
            } else if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page (awaiting a promise) and returns its value.
    fn eval(&mut self, expr: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
        );
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    /// Waits (up to 30 s) until `expr` is true in the page (an exception, as while the page
    /// loads, counts as false).
    fn wait_for(&mut self, expr: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let test =
            format!("(() => {{ try {{ return !!({expr}); }} catch (e) {{ return false; }} }})()");
        while self.eval(&test) != serde_json::json!(true) {
            assert!(
                Instant::now() < deadline,
                "never true: {expr}; page: {}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn goto(&mut self, url: &str) {
        // Through a blank page, so that a change of only the fragment loads the page again.
        self.call("Page.navigate", serde_json::json!({"url": "about:blank"}));
        self.call("Page.navigate", serde_json::json!({"url": url}));
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = self.browser.kill();
        let _ = self.browser.wait();
    }
}

#[test]
fn the_web_ui_asks_for_a_token_then_kills_and_resubmits_jobs() {
    let Some(browser) = chromium() else {
        return;
    };
    let inputs = inputs("256KiB");
    let cluster = Cluster::start_with(Options {
        args: &["--auth"],
        ..Options::default()
    });
    let http = std::fs::read_to_string(cluster.state.join("http.addr")).unwrap();
    let token = std::fs::read_to_string(cluster.state.join("token")).unwrap();
    let token = token.trim();
    let out = cluster.dir.path().join("views");
    ok(cluster
        .job()
        .env("QUERN_TOKEN", token)
        .args(["submit", "views", "--name", "daily", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out));
    // A job that stays running until it is killed.
    ok(cluster
        .job()
        .env("QUERN_TOKEN", token)
        .args([
            "submit",
            "fail",
            "--detach",
            "--param",
            "panic_on=NOT-IN-THE-INPUT",
        ])
        .args(["--param", "delay_ms=600000", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(cluster.dir.path().join("slow")));

    // Without a token the page asks for one; with it, the page shows the job.
    let mut page = Page::open(&browser);
    page.goto(&format!("http://{http}/#job-1"));
    page.wait_for("document.getElementById('token-form').classList.contains('shown')");
    page.eval(&format!(
        "document.getElementById('token').value = {}; document.getElementById('token-form').requestSubmit(); true",
        serde_json::json!(token)
    ));
    page.wait_for("document.getElementById('detail-title').textContent.includes('job-1 (views, daily): succeeded')");
    assert_eq!(
        page.eval("document.getElementById('token-form').classList.contains('shown')"),
        serde_json::json!(false)
    );

    // Resubmit into a new output: the new job is shown, and its output is the first one's.
    let again = cluster.dir.path().join("again");
    page.answers.push_back((true, again.display().to_string()));
    page.eval("document.getElementById('resubmit').click(); true");
    page.wait_for("location.hash === '#job-3'");
    page.wait_for("document.getElementById('detail-title').textContent.includes('job-3 (views, daily): succeeded')");
    assert!(
        page.dialogs[0].contains("Output directory"),
        "{:?}",
        page.dialogs
    );
    assert_eq!(read_output(&again), read_output(&out));
    // Resubmitting into the same output asks again before replacing it; declined, nothing
    // is submitted. Into another job's output, the refusal is shown.
    page.answers.push_back((true, again.display().to_string()));
    page.answers.push_back((false, String::new()));
    page.eval("document.getElementById('resubmit').click(); true");
    assert!(
        page.dialogs[2].starts_with("Replace "),
        "{:?}",
        page.dialogs
    );
    page.answers.push_back((true, out.display().to_string()));
    page.eval("document.getElementById('resubmit').click(); true");
    page.wait_for(
        "document.getElementById('resubmit-result').textContent.startsWith('not submitted: 409')",
    );
    let list = ok(cluster.job().env("QUERN_TOKEN", token).args(["list"]));
    assert!(!list.contains("job-4"), "{list}");

    // The running job: killed with its button once confirmed.
    page.goto(&format!("http://{http}/#job-2"));
    page.wait_for("document.getElementById('kill')");
    page.answers.push_back((true, String::new()));
    page.eval("document.getElementById('kill').click(); true");
    page.wait_for(
        "document.getElementById('detail-title').textContent.includes('job-2 (fail): killed')",
    );
    assert!(page.dialogs[4].contains("Kill job-2"), "{:?}", page.dialogs);
    let status = ok(cluster
        .job()
        .env("QUERN_TOKEN", token)
        .args(["status", "job-2"]));
    assert!(status.contains("killed"), "{status}");
}
