//! Schedules and backfills on a real coordinator and worker, with the clock injected through
//! a file: catch-up, a coordinator killed mid-run, backfill dry runs and reprocess modes, and
//! definitions refused with a clear message.

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

struct Env {
    dir: tempfile::TempDir,
    addr: String,
    clock: PathBuf,
    procs: Procs,
    port: u16,
    /// Environment of the coordinator's next start.
    coordinator_env: Vec<(&'static str, PathBuf)>,
}

impl Env {
    fn start(worker_delay_ms: u64) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let clock = dir.path().join("clock");
        let port = free_port();
        let mut env = Env {
            addr: format!("127.0.0.1:{port}"),
            clock,
            procs: Procs(Vec::new()),
            port,
            coordinator_env: Vec::new(),
            dir,
        };
        env.set_clock("2026-11-27T05:00:00Z");
        env.start_coordinator();
        let delay = worker_delay_ms.to_string();
        env.procs.0.push(spawn_worker(
            &env.addr,
            &env.dir.path().join("worker"),
            &["--fault-delay-ms", &delay],
        ));
        env
    }

    fn start_coordinator(&mut self) {
        let clock = self.clock.display().to_string();
        let c = coordinator_command(
            self.port,
            self.dir.path(),
            &["--clock-file", &clock, "--schedule-tick-ms", "100"],
        )
        .envs(self.coordinator_env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .unwrap();
        self.procs.0.insert(0, c);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.quern(&["job", "list"]).status.success() {
            assert!(Instant::now() < deadline, "coordinator did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn set_clock(&self, t: &str) {
        std::fs::write(&self.clock, t).unwrap();
    }

    fn quern(&self, args: &[&str]) -> std::process::Output {
        run(quern().args(args).env("QUERN_COORDINATOR", &self.addr))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.quern(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// History lines (without the header) of schedule `name`.
    fn history(&self, name: &str) -> Vec<String> {
        self.ok(&["schedule", "history", name])
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect()
    }

    /// Waits until the history line of `logical` says `state`.
    fn wait_for(&self, name: &str, logical: &str, state: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let h = self.history(name);
            if h.iter()
                .any(|l| l.starts_with(logical) && l.contains(&format!(" {state} ")))
            {
                return h;
            }
            assert!(Instant::now() < deadline, "{logical} never {state}: {h:#?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn make_day(data: &Path, day: &str, seed: u64) {
    let file = data.join("logs").join(day).join("access.log");
    ok(quern()
        .args([
            "gen",
            "weblog",
            "--size",
            "256KiB",
            "--seed",
            &seed.to_string(),
            "--out",
        ])
        .arg(&file));
}

fn oracle(input: &Path, out: &Path) {
    ok(quern()
        .args(["run", "--local", "views", "--input"])
        .arg(input)
        .arg("--output")
        .arg(out));
}

#[test]
fn a_daily_schedule_catches_up_survives_a_coordinator_crash_and_backfills() {
    let mut env = Env::start(1500);
    let data = env.data();
    for (i, day) in ["2026-11-25", "2026-11-26", "2026-11-27", "2026-11-28"]
        .iter()
        .enumerate()
    {
        make_day(&data, day, 40 + i as u64);
    }
    let input = format!("{}/logs/{{{{date}}}}/", data.display());
    let output = format!("{}/views/{{{{date}}}}", data.display());
    // 06:00 in Berlin is 05:00 UTC: at the injected 05:00:00Z the 27th is due, and the 26th
    // (after --start) was missed; --catchup latest runs the 27th and records the 26th skipped.
    let add = env.ok(&[
        "schedule",
        "add",
        "daily",
        "--cron",
        "0 6 * * *",
        "--tz",
        "Europe/Berlin",
        "--job",
        "views",
        "--input",
        &input,
        "--output",
        &output,
        "--start",
        "2026-11-26",
    ]);
    assert!(add.contains("next:"), "{add}");
    let h = env.wait_for("daily", "2026-11-27T06:00:00", "succeeded");
    assert!(
        h[0].starts_with("2026-11-26T06:00:00") && h[0].contains("skipped"),
        "{h:#?}"
    );
    let expected = env.dir.path().join("oracle-27");
    oracle(&data.join("logs/2026-11-27/"), &expected);
    assert_eq!(
        read_output(&data.join("views/2026-11-27")),
        read_output(&expected)
    );

    // The 28th fires; the coordinator is killed mid-run and restarted: the same run goes on
    // and no second run starts for that logical time.
    env.set_clock("2026-11-28T05:00:01Z");
    env.wait_for("daily", "2026-11-28T06:00:00", "running");
    env.procs.0[0].kill().unwrap();
    env.procs.0[0].wait().unwrap();
    env.procs.0.remove(0);
    env.start_coordinator();
    let h = env.wait_for("daily", "2026-11-28T06:00:00", "succeeded");
    assert_eq!(
        h.iter()
            .filter(|l| l.starts_with("2026-11-28T06:00:00"))
            .count(),
        1,
        "{h:#?}"
    );
    // A clock that jumps back runs nothing again.
    env.set_clock("2026-11-26T05:00:01Z");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.history("daily").len(), h.len());
    // Back to the 28th: a backfill may not reach past now.
    env.set_clock("2026-11-28T05:00:01Z");

    // Dry run of a backfill over 24th-28th: what would run and why, with input sizes.
    let dry = env.ok(&[
        "backfill",
        "daily",
        "--from",
        "2026-11-24",
        "--to",
        "2026-11-28",
        "--dry-run",
    ]);
    let line = |day: &str| {
        dry.lines()
            .find(|l| l.starts_with(day))
            .unwrap_or_else(|| panic!("{day} missing from {dry}"))
            .to_string()
    };
    assert!(line("2026-11-24").contains("MISSING"), "{dry}");
    assert!(line("2026-11-25").contains("yes") && line("2026-11-25").contains("never ran"));
    assert!(line("2026-11-26").contains("yes"), "{dry}");
    assert!(line("2026-11-27").contains("output has _SUCCESS"), "{dry}");
    assert!(dry.contains("3 of 5 logical times would run"), "{dry}");
    assert!(
        env.history("daily").len() == h.len(),
        "a dry run starts nothing"
    );

    // The backfill itself: the 24th fails to start (no input), the 25th and 26th run.
    let out = env.quern(&[
        "backfill",
        "daily",
        "--from",
        "2026-11-24",
        "--to",
        "2026-11-28",
        "--max-active",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "one time failed: {stdout}");
    assert!(stdout.contains("3 of 3 done, 1 failed"), "{stdout}");
    for day in ["2026-11-25", "2026-11-26"] {
        let expected = env.dir.path().join(format!("oracle-{day}"));
        oracle(&data.join(format!("logs/{day}/")), &expected);
        assert_eq!(
            read_output(&data.join(format!("views/{day}"))),
            read_output(&expected)
        );
    }
    let h = env.history("daily");
    assert!(
        h.iter()
            .any(|l| l.starts_with("2026-11-24") && l.contains("failed to start")),
        "{h:#?}"
    );
    // Its jobs are named after it and labelled with it and their logical time.
    let day = env.ok(&[
        "job",
        "list",
        "--label",
        "schedule=daily",
        "--label",
        "logical_time=2026-11-25T06:00:00",
        "-o",
        "json",
    ]);
    let day: serde_json::Value = serde_json::from_str(&day).unwrap();
    assert_eq!(day.as_array().map(Vec::len), Some(1), "{day}");
    assert_eq!(day[0]["name"], "daily", "{day}");
    // Reprocess modes: `none` finds nothing left; `failed` retries the 24th once its input
    // exists; `all` reruns the 25th, replacing its output with the same bytes.
    let none = env.ok(&[
        "backfill",
        "daily",
        "--from",
        "2026-11-24",
        "--to",
        "2026-11-28",
        "--dry-run",
    ]);
    assert!(none.contains("0 of 5 logical times would run"), "{none}");
    make_day(&data, "2026-11-24", 44);
    env.ok(&[
        "backfill",
        "daily",
        "--from",
        "2026-11-24",
        "--to",
        "2026-11-24",
        "--reprocess",
        "failed",
    ]);
    assert!(data.join("views/2026-11-24/_SUCCESS").exists());
    let before = read_output(&data.join("views/2026-11-25"));
    env.ok(&[
        "backfill",
        "daily",
        "--from",
        "2026-11-25",
        "--to",
        "2026-11-25",
        "--reprocess",
        "all",
    ]);
    assert_eq!(read_output(&data.join("views/2026-11-25")), before);
    let list = env.ok(&["backfill", "--list"]);
    assert_eq!(list.lines().count(), 4, "{list}");

    // Changed in place: an hour later, two reducers. Nothing handled runs again, the change
    // survives a restart, and the next time runs under the new definition.
    let before = env.history("daily").len();
    let shown = env.ok(&[
        "schedule",
        "update",
        "daily",
        "--cron",
        "0 7 * * *",
        "--reducers",
        "2",
    ]);
    assert!(shown.contains("0 7 * * *"), "{shown}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(env.history("daily").len(), before);
    env.procs.0[0].kill().unwrap();
    env.procs.0[0].wait().unwrap();
    env.procs.0.remove(0);
    env.start_coordinator();
    assert!(env.ok(&["schedule", "show", "daily"]).contains("0 7 * * *"));
    make_day(&data, "2026-11-29", 49);
    env.set_clock("2026-11-29T06:00:01Z");
    env.wait_for("daily", "2026-11-29T07:00:00", "succeeded");
    assert!(data.join("views/2026-11-29/part-00001").exists());
    let out = env.quern(&["schedule", "update", "daily"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to change"));
    let out = env.quern(&["schedule", "update", "nope", "--reducers", "3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no schedule named"));
    let out = env.quern(&["schedule", "update", "daily", "--cron", "0 25 * * *"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad cron expression"));
}

#[test]
fn bad_definitions_are_refused_with_a_clear_message() {
    let env = Env::start(0);
    let add = |cron: &str, tz: &str, output: &str| {
        let out = env.quern(&[
            "schedule",
            "add",
            "x",
            "--cron",
            cron,
            "--tz",
            tz,
            "--job",
            "views",
            "--input",
            "/logs/{{date}}",
            "--output",
            output,
        ]);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(add("61 * * * *", "UTC", "/o/{{date}}").contains("bad cron expression"));
    assert!(add("0 6 * *", "UTC", "/o/{{date}}").contains("expected 5 fields"));
    assert!(add("0 6 * * *", "Moon/Base", "/o/{{date}}").contains("unknown time zone"));
    assert!(add("0 6 * * *", "UTC", "/o/{{week}}").contains("unknown template variable"));
    assert!(add("0 6 * * *", "UTC", "/o/{{date").contains("unclosed"));
    let out = env.quern(&[
        "schedule",
        "add",
        "x",
        "--cron",
        "0 6 * * *",
        "--job",
        "nosuchjob",
        "--input",
        "/i",
        "--output",
        "/o/{{date}}",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchjob"));
    let out = env.quern(&["schedule", "history", "nothere"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no schedule named"));
    assert!(env.ok(&["schedule", "list"]).lines().count() == 1);
}

/// `schedule add --incremental`: each hourly run of `endpoint-stats` over one growing log
/// continues from the last successful run; every run's output is that of a full run over the
/// log as it was, and a backfill of an earlier hour recomputes from the run before it.
#[test]
fn an_incremental_schedule_chains_its_runs() {
    use std::io::Write;
    let env = Env::start(0);
    let data = env.data();
    let log = data.join("log");
    let all = data.join("all.log");
    ok(quern()
        .args(["gen", "weblog", "--size", "600KiB", "--seed", "77", "--out"])
        .arg(&all));
    let text = std::fs::read(&all).unwrap();
    // Cut points at line ends: the log as it is at each hour.
    let cuts: Vec<usize> = [4, 7, 10]
        .iter()
        .map(|tenth| {
            let at = text.len() * tenth / 10;
            text[..at].iter().rposition(|&b| b == b'\n').unwrap() + 1
        })
        .collect();
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join("access.log"), &text[..cuts[0]]).unwrap();
    env.set_clock("2026-11-27T05:00:30Z");
    let output = format!("{}/stats/{{{{date}}}}-{{{{hour}}}}", data.display());
    let add = env.ok(&[
        "schedule",
        "add",
        "hourly",
        "--cron",
        "@hourly",
        "--job",
        "endpoint-stats",
        "--input",
        &log.display().to_string(),
        "--output",
        &output,
        "--start",
        "2026-11-27T05:00",
        "--incremental",
    ]);
    assert!(add.contains("incremental:"), "{add}");
    env.wait_for("hourly", "2026-11-27T05:00:00", "succeeded");
    for (hour, (from, to)) in [(6, (cuts[0], cuts[1])), (7, (cuts[1], cuts[2]))] {
        std::fs::OpenOptions::new()
            .append(true)
            .open(log.join("access.log"))
            .unwrap()
            .write_all(&text[from..to])
            .unwrap();
        env.set_clock(&format!("2026-11-27T{hour:02}:00:30Z"));
        env.wait_for(
            "hourly",
            &format!("2026-11-27T{hour:02}:00:00"),
            "succeeded",
        );
    }
    // Each hour's output is a full run's over the log as it was then; the last one is
    // checked against the log now.
    let expected = env.dir.path().join("full");
    ok(quern()
        .args(["run", "--local", "endpoint-stats", "--input"])
        .arg(&log)
        .arg("--output")
        .arg(&expected));
    let last = data.join("stats/2026-11-27-07");
    assert_eq!(read_output(&last), read_output(&expected));
    // The 07:00 run read only what came after 06:00's coverage.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(last.join("_MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(manifest["coverage"][0]["end"], cuts[2] as u64);
    let h = env.history("hourly");
    let job = h
        .iter()
        .find(|l| l.starts_with("2026-11-27T07:00:00"))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("job-")))
        .unwrap_or_else(|| panic!("{h:#?}"))
        .to_string();
    let status = env.ok(&["job", "status", &job]);
    assert!(status.contains("state_input_records"), "{status}");

    // Re-processing 06:00 recomputes it from 05:00's output: the log has grown since, so the
    // result covers the log as it is now, and still equals a full run.
    env.ok(&[
        "backfill",
        "hourly",
        "--from",
        "2026-11-27T06:00",
        "--to",
        "2026-11-27T06:00",
        "--reprocess",
        "all",
    ]);
    // The backfill command follows its runs until they end.
    env.wait_for("hourly", "2026-11-27T06:00:00", "succeeded");
    assert_eq!(
        read_output(&data.join("stats/2026-11-27-06")),
        read_output(&expected)
    );
}

/// Collects the bodies of HTTP requests sent to it, answering each with 204; over TLS with
/// `tls`.
struct Hook {
    url: String,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Hook {
    fn start(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Hook {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/hook", listener.local_addr().unwrap());
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = bodies.clone();
        // Ends with the test process (it only ever accepts).
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let body = match &tls {
                    None => Hook::answer(conn),
                    Some(config) => {
                        let Ok(server) = rustls::ServerConnection::new(config.clone()) else {
                            continue;
                        };
                        Hook::answer(rustls::StreamOwned::new(server, conn))
                    }
                };
                seen.lock().unwrap().extend(body);
            }
        });
        Hook { url, bodies }
    }

    /// Reads one request and answers it; its body, unless the connection failed.
    fn answer(conn: impl std::io::Read + std::io::Write) -> Option<String> {
        use std::io::{BufRead, BufReader, Read};
        let mut r = BufReader::new(conn);
        let mut len = 0;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 || line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).ok()?;
        let conn = r.get_mut();
        conn.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
            .ok()?;
        let _ = conn.flush();
        Some(String::from_utf8_lossy(&body).into_owned())
    }

    /// A TLS server configuration with the certificate and key `quern certs init` made for
    /// the coordinator (it names 127.0.0.1).
    fn tls(certs: &Path) -> std::sync::Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let chain = rustls::pki_types::CertificateDer::pem_file_iter(certs.join("coordinator.pem"))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_file(certs.join("coordinator.key")).unwrap();
        std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap(),
        )
    }
}

#[test]
fn failed_times_are_retried_and_a_final_failure_is_posted_to_the_webhook() {
    let mut env = Env::start(0);
    let data = env.data();
    let hook = Hook::start(None);
    make_day(&data, "2026-11-27", 7);
    let add = |name: &str, job: &[&str], extra: &[&str]| {
        let input = format!("{}/logs/{{{{date}}}}/", data.display());
        let output = format!("{}/{name}/{{{{date}}}}", data.display());
        let mut args = vec!["schedule", "add", name, "--cron", "0 6 * * *", "--job"];
        args.extend(job);
        args.extend([
            "--input",
            &input,
            "--output",
            &output,
            "--start",
            "2026-11-27",
            "--retry-delay",
            "0s",
            "--on-failure-webhook",
            &hook.url,
        ]);
        args.extend(extra);
        env.ok(&args);
    };
    // Always fails: the original run and its 2 retries, then one notice.
    add(
        "broken",
        &["fail", "--param", "panic_on=GET"],
        &["--retries", "2"],
    );
    // Its input comes late: failed to start at first, then a retry finds it and succeeds.
    let late = data.join("late-logs");
    let late_input = format!("{}/{{{{date}}}}/", late.display());
    let late_output = format!("{}/late/{{{{date}}}}", data.display());
    env.ok(&[
        "schedule",
        "add",
        "late",
        "--cron",
        "0 6 * * *",
        "--job",
        "views",
        "--input",
        &late_input,
        "--output",
        &late_output,
        "--start",
        "2026-11-27",
        "--retries",
        "50",
        "--retry-delay",
        "1s",
        "--on-failure-webhook",
        &hook.url,
    ]);
    env.set_clock("2026-11-27T06:00:01Z");
    let deadline = Instant::now() + Duration::from_secs(120);
    let failed = |env: &Env, name: &str| {
        env.history(name)
            .iter()
            .filter(|l| l.starts_with("2026-11-27T06:00:00") && l.contains("failed"))
            .count()
    };
    while hook.bodies.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no notice: {:#?}",
            env.history("broken")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(failed(&env, "broken"), 3, "{:#?}", env.history("broken"));
    let notice: serde_json::Value = serde_json::from_str(&hook.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(notice["schedule"], "broken", "{notice}");
    assert_eq!(notice["logical_time"], "2026-11-27T06:00:00", "{notice}");
    assert_eq!(notice["failures"], 3, "{notice}");
    assert!(
        notice["error"]
            .as_str()
            .unwrap()
            .contains("injected failure"),
        "{notice}"
    );
    assert!(
        notice["output"]
            .as_str()
            .unwrap()
            .ends_with("broken/2026-11-27"),
        "{notice}"
    );

    // The late input arrives: the next retry runs the day, and no notice is sent for it.
    assert!(failed(&env, "late") >= 1, "{:#?}", env.history("late"));
    let day = late.join("2026-11-27");
    std::fs::create_dir_all(&day).unwrap();
    std::fs::copy(
        data.join("logs/2026-11-27/access.log"),
        day.join("access.log"),
    )
    .unwrap();
    env.wait_for("late", "2026-11-27T06:00:00", "succeeded");
    let expected = env.dir.path().join("oracle-late");
    oracle(&day, &expected);
    assert_eq!(
        read_output(&data.join("late/2026-11-27")),
        read_output(&expected)
    );
    // Nothing more: no retry after the success or after the retries ran out, one notice,
    // also after a coordinator restart (the notice was journaled).
    env.procs.0[0].kill().unwrap();
    env.procs.0[0].wait().unwrap();
    env.procs.0.remove(0);
    env.start_coordinator();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(failed(&env, "broken"), 3);
    assert_eq!(hook.bodies.lock().unwrap().len(), 1);
    let shown = env.ok(&["schedule", "show", "broken"]);
    assert!(
        shown.contains("retries:     2") && shown.contains(&hook.url),
        "{shown}"
    );
    let out = env.quern(&[
        "schedule",
        "update",
        "late",
        "--on-failure-webhook",
        "ftp://example.invalid/x",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give an http:// or https:// URL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Over https, with a certificate from the cluster's CA, trusted through SSL_CERT_FILE.
    let certs = env.dir.path().join("certs");
    env.ok(&["certs", "init", "--dir", certs.to_str().unwrap()]);
    let secure = Hook::start(Some(Hook::tls(&certs)));
    env.procs.0[0].kill().unwrap();
    env.procs.0[0].wait().unwrap();
    env.procs.0.remove(0);
    env.coordinator_env
        .push(("SSL_CERT_FILE", certs.join("ca.pem")));
    env.start_coordinator();
    env.ok(&["schedule", "pause", "late"]);
    env.ok(&[
        "schedule",
        "update",
        "broken",
        "--on-failure-webhook",
        &secure.url,
    ]);
    make_day(&data, "2026-11-28", 7);
    env.set_clock("2026-11-28T06:00:01Z");
    let deadline = Instant::now() + Duration::from_secs(120);
    while secure.bodies.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no notice over https: {:#?}",
            env.history("broken")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let notice: serde_json::Value =
        serde_json::from_str(&secure.bodies.lock().unwrap()[0]).unwrap();
    assert_eq!(notice["logical_time"], "2026-11-28T06:00:00", "{notice}");
    assert_eq!(notice["failures"], 3, "{notice}");
    assert_eq!(hook.bodies.lock().unwrap().len(), 1);
}
