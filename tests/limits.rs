//! Limits and input hygiene against real processes: a submission flood while a job runs, the
//! per-job output quota, and path-traversal and bad-name payloads (plain, percent-encoded and
//! with NUL bytes) on the gRPC and HTTP surfaces.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::*;
use tonic::Code;

fn views_args(input: &Path, output: &Path) -> Vec<String> {
    vec![
        "views".into(),
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
        "--reducers".into(),
        "2".into(),
        "--split-size".into(),
        "64KiB".into(),
    ]
}

/// 800 submissions at once (half with a valid submit token, half with a forged one) while a
/// job runs: the forged ones are refused as unauthenticated, the valid ones beyond the burst
/// as RESOURCE_EXHAUSTED before anything is planned; the running job finishes and matches the
/// oracle, and no worker missed heartbeats long enough to be declared dead.
#[test]
fn a_submission_flood_while_a_job_runs_is_held_back_and_the_job_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    let (admin, submit, worker) = (
        create_token(&tokens, "admin"),
        create_token(&tokens, "submit"),
        create_token(&tokens, "worker"),
    );
    let (mut procs, addr, http) = coordinator_with_http(
        dir.path(),
        &[
            "--auth",
            "on",
            "--tokens",
            tokens.to_str().unwrap(),
            "--submit-rate",
            "60",
            "--submit-burst",
            "10",
        ],
    );
    for i in 0..2 {
        procs.0.push(spawn_worker(
            &addr,
            &dir.path().join(format!("w{i}")),
            &["--token", &worker, "--fault-delay-ms", "150"],
        ));
    }
    let inputs = inputs("1MiB");
    let out = dir.path().join("out");
    let id = ok(quern()
        .args(["job", "submit", "--detach", "--coordinator", &addr])
        .args(views_args(&inputs.log, &out))
        .env("QUERN_TOKEN", &admin))
    .trim()
    .to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let codes = rt.block_on(async {
        let forged = format!("qrn_{}_{}", "2".repeat(16), "2".repeat(64));
        let mut calls = Vec::new();
        for i in 0..800 {
            let (addr, token) = (
                addr.clone(),
                if i % 2 == 0 {
                    submit.clone()
                } else {
                    forged.clone()
                },
            );
            let output = dir.path().join(format!("flood-{i}")).display().to_string();
            calls.push(tokio::spawn(async move {
                let mut c = coordinator::Client::connect_with(
                    &addr,
                    protocol::auth::ClientAuth::new(Some(&token)),
                    None,
                )
                .await
                .unwrap();
                let spec = protocol::JobSpec::new("views", vec!["no/such/input".into()], output);
                match c.submit(&spec).await {
                    Ok(_) => Code::Ok,
                    Err(coordinator::client::ClientError::Rpc(s)) => s.code(),
                    Err(e) => panic!("{e}"),
                }
            }));
        }
        let mut codes = std::collections::BTreeMap::<String, u32>::new();
        for c in calls {
            *codes.entry(format!("{:?}", c.await.unwrap())).or_default() += 1;
        }
        codes
    });
    eprintln!("flood answers: {codes:?}");
    assert_eq!(codes.get("Unauthenticated"), Some(&400), "{codes:?}");
    let held_back = codes.get("ResourceExhausted").copied().unwrap_or(0);
    let planned = codes.get("InvalidArgument").copied().unwrap_or(0);
    assert_eq!(held_back + planned, 400, "{codes:?}");
    // The burst of 10, and what the rate refilled while the flood lasted.
    assert!((10..=30).contains(&planned), "{codes:?}");

    let status = ok(quern()
        .args(["job", "wait", &id, "--coordinator", &addr])
        .env("QUERN_TOKEN", &admin));
    assert!(status.contains("succeeded"), "{status}");
    let oracle = dir.path().join("oracle");
    ok(quern()
        .args(["run", "--local"])
        .args(views_args(&inputs.log, &oracle)));
    assert_eq!(read_output(&out), read_output(&oracle));
    let (code, cluster) = http_get(&http, "/api/v1/cluster", Some(&admin));
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    for w in v["workers"].as_array().unwrap() {
        assert_eq!(w["alive"], true, "{w}");
        let gap = w["max_heartbeat_gap_ms"].as_u64().unwrap();
        eprintln!("worker {}: longest heartbeat gap {gap} ms", w["id"]);
        assert!(gap < 10_000, "a worker went {gap} ms without a heartbeat");
    }
    // Only the one real job exists: nothing in the flood was planned into a job.
    let list = ok(quern()
        .args(["job", "list", "--coordinator", &addr])
        .env("QUERN_TOKEN", &admin));
    assert_eq!(list.matches("job-").count(), 1, "{list}");
}

/// A job that writes more than --max-job-output fails, names the quota, and leaves no output.
#[test]
fn a_job_past_the_output_quota_fails_and_its_output_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut procs = Procs(vec![spawn_coordinator(
        port,
        dir.path(),
        &["--max-job-output", "4KiB"],
    )]);
    procs
        .0
        .push(spawn_worker(&addr, &dir.path().join("w"), &[]));
    let inputs = inputs("1MiB");
    let out = dir.path().join("out");
    let res = run(quern()
        .args(["job", "submit", "--coordinator", &addr])
        .args(views_args(&inputs.log, &out)));
    assert!(!res.status.success());
    let err =
        String::from_utf8_lossy(&res.stdout).to_string() + &String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("output quota exceeded"), "{err}");
    let left: Vec<String> = std::fs::read_dir(&out)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        left.iter()
            .all(|n| !n.starts_with("part-") && n != "_SUCCESS"),
        "{left:?}"
    );
}

/// Traversal payloads (`..`, percent-encoded, NUL) and bad names are refused with a clear
/// error by every surface that takes a path or a name, and nothing outside is read.
#[test]
fn traversal_payloads_and_bad_names_are_refused_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let (_procs, addr, http) = coordinator_with_http(dir.path(), &[]);
    let inputs = inputs("64KiB");
    let log = inputs.log.display().to_string();
    let out = dir.path().join("out").display().to_string();

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut c = loop {
            match coordinator::Client::connect_with(&addr, Default::default(), None).await {
                Ok(c) => break c,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        let spec = |job: &str, input: &str, output: &str| {
            protocol::JobSpec::new(job, vec![input.to_string()], output)
        };
        let cases: Vec<(protocol::JobSpec, &str)> = vec![
            (spec("views", "../../etc/passwd", &out), "`..`"),
            (
                spec("views", &format!("{log}/../../../etc/passwd"), &out),
                "`..`",
            ),
            (spec("views", "file:///etc/../etc/passwd", &out), "`..`"),
            (
                spec("views", "seaweedfs://h:1/a/../../etc/passwd", &out),
                "`..`",
            ),
            (spec("views", "/etc/passwd\0.log", &out), "NUL"),
            (spec("views", &log, "../../tmp/evil"), "`..`"),
            (spec("views", &log, &format!("{out}\0/../x")), "NUL"),
            (spec("../../bin/sh", &log, &out), "bad job name"),
            (spec("views\0", &log, &out), "bad job name"),
            (
                {
                    let mut s = spec("views", &log, &out);
                    s.params.insert("../../k".into(), "v".into());
                    s
                },
                "bad parameter name",
            ),
            (
                {
                    let mut s = spec("views", &log, &out);
                    s.binary = "../../../../etc/passwd".into();
                    s
                },
                "SHA-256",
            ),
        ];
        for (spec, rule) in cases {
            match c.submit(&spec).await {
                Err(coordinator::client::ClientError::Rpc(s)) => {
                    assert_eq!(s.code(), Code::InvalidArgument, "{spec:?}: {s:?}");
                    assert!(s.message().contains(rule), "{spec:?}: {}", s.message());
                }
                other => panic!("{spec:?} was accepted: {other:?}"),
            }
        }
        // Percent-encoded forms are not decoded by the storage layer: no such file, no `..`.
        match c
            .submit(&spec("views", "%2e%2e/%2e%2e/etc/passwd", &out))
            .await
        {
            Err(coordinator::client::ClientError::Rpc(s)) => {
                assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
                assert!(!s.message().contains("root:"), "{}", s.message());
            }
            other => panic!("accepted: {other:?}"),
        }
        assert!(c.list().await.unwrap().is_empty());
    });

    // Schedule names are checked the same way.
    for name in ["../../etc/cron.d/x", "..", ".hidden", "a/b", "%2e%2e"] {
        let res = run(quern()
            .args([
                "schedule",
                "add",
                "--coordinator",
                &addr,
                "--cron",
                "0 6 * * *",
            ])
            .args(["--job", "views", "--input", &log, "--output", &out])
            .arg(name));
        assert!(!res.status.success(), "schedule {name:?} accepted");
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(err.contains("bad schedule name"), "{name}: {err}");
    }

    // The HTTP API: the storage browser refuses traversal in every form; ids and names in
    // paths are parsed, never joined to a file path.
    let refused = [
        "/api/v1/storage?path=../../etc/passwd",
        "/api/v1/storage?path=%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/v1/storage?path=/tmp/%2e%2e/etc/passwd",
        "/api/v1/storage?path=/etc/passwd%00",
        "/api/v1/storage?path=file:///etc/%2E%2E/etc/passwd",
        "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/api/v1/jobs/1/attempts/..%2F..%2Fetc%2Fpasswd/log",
        "/api/v1/schedules/..%2F..%2Fetc%2Fpasswd",
    ];
    for path in refused {
        let (code, body) = http_get(&http, path, None);
        assert!(
            (400..500).contains(&code) && !body.contains("root:"),
            "{path}: {code} {body}"
        );
    }
}
