//! Test support: the real `quern` binary, real clusters of real processes on loopback. The
//! parts other test crates share (clusters, SeaweedFS, processes) are in `quern-testkit`.
#![allow(dead_code, unused_imports)]

pub use quern_testkit::{free_port, seaweedfs_var, Cluster, Options, OwnSeaweedFs, Procs};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `quern`, reading no settings file (a developer's ~/.config/quern/quern.toml included).
pub fn quern() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_quern"));
    c.env("QUERN_CONFIG", "none");
    c
}

/// Runs a command and returns its output, printing it when `QUERN_TEST_VERBOSE` is set.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("quern runs");
    if std::env::var_os("QUERN_TEST_VERBOSE").is_some() {
        eprintln!(
            "{cmd:?}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

pub fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Generated inputs shared by a test: a web log and a words file.
pub struct Inputs {
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    pub words: PathBuf,
}

pub fn inputs(size: &str) -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let words = dir.path().join("words.txt");
    ok(quern()
        .args(["gen", "weblog", "--size", size, "--seed", "11", "--out"])
        .arg(&log));
    ok(quern()
        .args(["gen", "words", "--size", size, "--seed", "12", "--out"])
        .arg(&words));
    Inputs { dir, log, words }
}

/// Every file of an output directory, by name (`_skipped/records.tsv` for a file in a
/// subdirectory).
pub fn read_output(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().unwrap().is_dir() {
            for (sub, data) in read_output(&e.path()) {
                out.insert(format!("{name}/{sub}"), data);
            }
        } else {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// As [`read_output`], with the manifest's coverage left out: for comparing outputs of the same
/// records read from different places (a file in SeaweedFS against its local copy), whose
/// coverage names different files.
pub fn read_output_uncovered(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = read_output(dir);
    if let Some(manifest) = out.get_mut("_MANIFEST.json") {
        let mut m: serde_json::Value = serde_json::from_slice(manifest).expect("manifest");
        m.as_object_mut().expect("an object").remove("coverage");
        *manifest = serde_json::to_vec(&m).expect("serialises");
    }
    out
}

/// The paths the output's manifest lists under `not_read` (what its job passed over).
pub fn not_read(output: &Path) -> Vec<String> {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("_MANIFEST.json")).unwrap()).unwrap();
    m["not_read"].as_array().map_or_else(Vec::new, |entries| {
        entries
            .iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect()
    })
}

/// Parses the `counters:` block the CLI prints.
pub fn counters(stdout: &str) -> BTreeMap<String, u64> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("counters:"))
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.parse().ok()?))
        })
        .collect()
}

/// Asserts that at least 90% of a job's maps ran beside their data, counting as such the
/// maps the scheduler moved off hosts with more pending maps than slots (SeaweedFS may
/// place most chunks on one volume server; an idle worker then takes some rather than
/// wait), and returns (data-local maps, moved maps, all maps).
pub fn assert_mostly_data_local(c: &BTreeMap<String, u64>) -> (u64, u64, u64) {
    let (local, moved) = (c["data_local_maps"], c["rebalanced_map_attempts"]);
    let maps = local + c["remote_maps"];
    assert!(
        (local + moved.min(maps - local)) * 10 >= maps * 9,
        "fewer than 90% of maps ran data-local or were moved off a backlog: {c:?}"
    );
    (local, moved, maps)
}

/// Starts `quern coordinator` on `port` with state in `dir/coordinator` and its log in
/// `dir/coordinator.log` (appended to, so a restart keeps the first life's lines).
pub fn spawn_coordinator(port: u16, dir: &Path, extra: &[&str]) -> Child {
    coordinator_command(port, dir, extra).spawn().unwrap()
}

/// The command [`spawn_coordinator`] runs, for a caller to add to.
pub fn coordinator_command(port: u16, dir: &Path, extra: &[&str]) -> Command {
    std::fs::create_dir_all(dir).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("coordinator.log"))
        .unwrap();
    let mut cmd = quern();
    cmd.args([
        "coordinator",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--heartbeat-ms",
        "100",
    ])
    .args(extra)
    .arg("--state-dir")
    .arg(dir.join("coordinator"))
    .stdout(Stdio::null())
    .stderr(Stdio::from(log));
    cmd
}

/// Starts `quern worker` (one slot) for the coordinator at `addr`, in `dir`.
pub fn spawn_worker(addr: &str, dir: &Path, extra: &[&str]) -> Child {
    quern()
        .args([
            "worker",
            "--coordinator",
            &format!("http://{addr}"),
            "--slots",
            "1",
        ])
        .args(extra)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Returns the maps done in `quern job status` output (`maps:     N/M`).
pub fn maps_done(status: &str) -> u32 {
    maps_progress(status).0
}

/// Returns (done, total) of the maps in `quern job status` output (`maps:     N/M`); (0, 0)
/// when it has no such line.
pub fn maps_progress(status: &str) -> (u32, u32) {
    status
        .lines()
        .find_map(|l| {
            let (done, total) = l
                .strip_prefix("maps:")?
                .split_whitespace()
                .next()?
                .split_once('/')?;
            Some((done.parse().ok()?, total.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

/// What a raw HTTP/2 gRPC call got back: `grpc-status`, `grpc-message`, and the server's
/// advertised limit of concurrent streams on the connection.
pub struct RawReply {
    pub status: Option<String>,
    pub message: Option<String>,
    pub max_streams: usize,
}

/// Sends one gRPC call by hand on a fresh plaintext HTTP/2 connection: `frame` is the whole
/// request body (flag byte, length, payload as the test wants them, true or not).
pub async fn raw_grpc(
    addr: &str,
    method: &str,
    headers: &[(&str, &str)],
    frame: Vec<u8>,
) -> RawReply {
    let deadline = Instant::now() + Duration::from_secs(20);
    let tcp = loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(t) => break t,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("{addr} did not start: {e}"),
        }
    };
    let (h2, conn) = h2::client::handshake(tcp).await.unwrap();
    let (streams_tx, streams_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        // Drive the connection until the answer is in, then report the peer's stream limit.
        let mut conn = conn;
        let mut tx = Some(streams_tx);
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tokio::select! {
                _ = &mut conn => return,
                _ = tick.tick() => {
                    if let Some(t) = tx.take() {
                        if conn.max_concurrent_send_streams() != usize::MAX {
                            let _ = t.send(conn.max_concurrent_send_streams());
                        } else {
                            tx = Some(t);
                        }
                    }
                }
            }
        }
    });
    let mut h2 = h2.ready().await.unwrap();
    let mut req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (response, mut body) = h2.send_request(req.body(()).unwrap(), false).unwrap();
    body.send_data(frame.into(), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .unwrap()
        .unwrap();
    let (parts, mut stream) = response.into_parts();
    let get = |h: &http::HeaderMap, k: &str| h.get(k).map(|v| v.to_str().unwrap().to_string());
    let (mut status, mut message) = (
        get(&parts.headers, "grpc-status"),
        get(&parts.headers, "grpc-message"),
    );
    if status.is_none() {
        while stream.data().await.is_some() {}
        let trailers = stream.trailers().await.unwrap().unwrap_or_default();
        status = get(&trailers, "grpc-status");
        message = get(&trailers, "grpc-message");
    }
    let max_streams = tokio::time::timeout(Duration::from_secs(5), streams_rx)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(usize::MAX);
    RawReply {
        status,
        message,
        max_streams,
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Asserts that no file under `dir` but the `keepers` (the files whose job is to hold
/// secrets) holds any of `secrets` (raw or hex), a token-shaped string, or a private key.
/// Returns how many files were searched.
pub fn assert_no_secrets(
    dir: &Path,
    secrets: &[Vec<u8>],
    keepers: &dyn Fn(&Path) -> bool,
) -> usize {
    let token_shape = regex::bytes::Regex::new(r"qrn_[0-9a-f]{16}_[0-9a-f]{64}").unwrap();
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for s in secrets.iter().filter(|s| s.len() >= 16) {
        needles.push(s.clone());
        let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
        needles.push(hex.into_bytes());
    }
    let mut searched = 0;
    for file in files_under(dir) {
        if keepers(&file) {
            continue;
        }
        let Ok(data) = std::fs::read(&file) else {
            continue;
        };
        searched += 1;
        assert!(
            !token_shape.is_match(&data),
            "a token in {}",
            file.display()
        );
        assert!(
            !data.windows(16).any(|w| w == b"PRIVATE KEY-----"),
            "a private key in {}",
            file.display()
        );
        for n in &needles {
            assert!(
                !data.windows(n.len()).any(|w| w == n.as_slice()),
                "a secret in {}",
                file.display()
            );
        }
    }
    searched
}

/// The secrets a `quern local` state directory holds, for [`assert_no_secrets`]: the admin
/// token the CLI reads, every token hash, the shuffle master key, and each job secret the
/// workers keep; and a test of whether a path is one of the files meant to hold them.
pub fn local_secrets(state: &Path) -> (Vec<Vec<u8>>, impl Fn(&Path) -> bool) {
    let mut secrets = Vec::new();
    if let Ok(t) = std::fs::read_to_string(state.join("token")) {
        secrets.push(t.trim().as_bytes().to_vec());
    }
    if let Ok(f) = std::fs::read_to_string(state.join("coordinator").join("tokens.json")) {
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        for t in v["tokens"].as_array().into_iter().flatten() {
            secrets.push(t["sha256"].as_str().unwrap().as_bytes().to_vec());
        }
    }
    if let Ok(k) = std::fs::read(state.join("coordinator").join("shuffle.key")) {
        secrets.push(k);
    }
    for f in files_under(state) {
        if f.parent().and_then(|p| p.file_name()) == Some(std::ffi::OsStr::new("secrets")) {
            secrets.push(std::fs::read(&f).unwrap());
        }
    }
    let root = state.to_path_buf();
    let keeper = move |p: &Path| {
        p == root.join("token")
            || p.file_name()
                .is_some_and(|n| n == "tokens.json" || n == "shuffle.key")
            || p.parent().and_then(|d| d.file_name()) == Some(std::ffi::OsStr::new("secrets"))
            || p.extension().is_some_and(|e| e == "key")
    };
    (secrets, keeper)
}

/// Makes a token of `role` (named `test-<role>`) in the token file `file`.
pub fn create_token(file: &Path, role: &str) -> String {
    ok(quern()
        .args(["token", "create", "--role", role, "--name"])
        .arg(format!("test-{role}"))
        .arg("--tokens")
        .arg(file))
    .trim()
    .to_string()
}

/// A plain HTTP GET: the status (0 when nothing answered) and the body.
pub fn http_get(base: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("http://{base}{path}"));
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// Starts `quern coordinator` (as [`spawn_coordinator`]) with its web UI on a free port too;
/// returns it with its gRPC and HTTP addresses.
pub fn coordinator_with_http(dir: &Path, extra: &[&str]) -> (Procs, String, String) {
    let (port, http_port) = (free_port(), free_port());
    let http = format!("127.0.0.1:{http_port}");
    let mut args = vec!["--http", &http];
    args.extend_from_slice(extra);
    let procs = Procs(vec![spawn_coordinator(port, dir, &args)]);
    (procs, format!("127.0.0.1:{port}"), http)
}
