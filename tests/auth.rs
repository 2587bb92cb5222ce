//! Authentication: every RPC method of the coordinator (enumerated from the proto
//! descriptors) and every HTTP route (from the router's own list) refuses a missing, wrong or
//! wrong-role token, with no side effect; the right role gets through; a coordinator bound
//! beyond loopback refuses to start without tokens; `quern local --auth` runs a job with
//! tokens end to end.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;
use tonic::Code;

/// The role each coordinator RPC needs. A method missing here fails the test: a new RPC
/// must be given its role, here and in the service.
fn needed_role(method: &str) -> &'static str {
    match method {
        "RegisterWorker" | "Heartbeat" | "ReportTask" | "ReportFetchFailure" | "FetchBinary" => {
            "worker"
        }
        "GetJob" | "ListJobs" | "ListSchedules" | "ScheduleHistory" | "ListBackfills"
        | "ListAttempts" => "read",
        "SubmitJob" | "KillJob" | "AddSchedule" | "SetSchedule" | "StartBackfill"
        | "CancelBackfill" | "HasBinary" | "UploadBinary" => "submit",
        other => panic!("no role known for RPC {other}: add it to the service's checks and here"),
    }
}

/// The coordinator's RPC paths, from the proto files.
fn coordinator_methods() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol/proto");
    let set = protox::compile(["quern/v1/coordinator.proto"], [root]).expect("protos compile");
    let mut out = Vec::new();
    for file in &set.file {
        for service in &file.service {
            if service.name() != "CoordinatorService" {
                continue;
            }
            for m in &service.method {
                out.push((
                    format!("/{}.{}/{}", file.package(), service.name(), m.name()),
                    m.name().to_string(),
                ));
            }
        }
    }
    out
}

async fn connect(port: u16) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn call(channel: tonic::transport::Channel, path: &str, bearer: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(());
    if let Some(t) = bearer {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.unary(req, path.parse().unwrap(), codec).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[test]
fn every_rpc_and_route_refuses_missing_wrong_and_wrong_role_tokens_without_side_effects() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    let tokens: BTreeMap<&str, String> = ["admin", "submit", "read", "worker"]
        .into_iter()
        .map(|r| (r, create_token(&file, r)))
        .collect();
    let listed = ok(quern().args(["token", "list", "--tokens"]).arg(&file));
    assert_eq!(listed.lines().count(), 5, "{listed}");
    assert!(tokens.values().all(|t| !listed.contains(&t[21..])
        && !std::fs::read_to_string(&file).unwrap().contains(&t[21..])));
    let listed = ok(quern()
        .args(["token", "list", "-o", "json", "--tokens"])
        .arg(&file));
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let roles: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["admin", "submit", "read", "worker"]);
    assert!(tokens
        .values()
        .all(|t| !listed.to_string().contains(&t[21..])));

    let (port, http) = (free_port(), free_port());
    let _coordinator = Procs(vec![spawn_coordinator(
        port,
        dir.path(),
        &[
            "--auth",
            "on",
            "--tokens",
            file.to_str().unwrap(),
            "--http",
            &format!("127.0.0.1:{http}"),
        ],
    )]);
    let http = format!("127.0.0.1:{http}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(&http, "/", None).0 != 200 {
        assert!(Instant::now() < deadline, "coordinator did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let wrong = format!("qrn_{}_{}", "0".repeat(16), "0".repeat(64));
    let methods = coordinator_methods();
    assert!(methods.len() >= 19, "{methods:?}");
    let (mut refused, mut checks) = (0, 0);
    let mut wrong_answers = Vec::new();
    rt.block_on(async {
        let channel = connect(port).await;
        for (path, name) in &methods {
            let need = needed_role(name);
            // A role that may not: workers may only do worker calls, the others no worker calls.
            let wrong_roles: &[&str] = match need {
                "worker" => &["read", "submit", "admin"][..2],
                "submit" => &["read", "worker"],
                _ => &["worker"],
            };
            let mut cases = vec![
                (None, Code::Unauthenticated),
                (Some(wrong.as_str()), Code::Unauthenticated),
            ];
            for r in wrong_roles {
                cases.push((Some(tokens[r].as_str()), Code::PermissionDenied));
            }
            for (bearer, want) in cases {
                let got = call(channel.clone(), path, bearer).await;
                checks += 1;
                if got == want {
                    refused += 1;
                } else {
                    wrong_answers.push(format!("{name} with {bearer:?}: {got:?}, not {want:?}"));
                }
            }
        }
    });
    eprintln!(
        "{refused} of {checks} refusals as expected over {} RPC methods",
        methods.len()
    );
    assert!(wrong_answers.is_empty(), "{wrong_answers:#?}");
    assert_eq!(refused, checks);

    // HTTP: everything but the page itself and the health checks needs a token that may read.
    let routes = coordinator::http::route_paths();
    for route in &routes {
        let path = route
            .replace("{id}", "job-1")
            .replace("{attempt}", "attempt-1")
            .replace("{name}", "nightly")
            .replace("{action}", "pause")
            + if *route == "/api/v1/storage" {
                "?path=%2F"
            } else {
                ""
            };
        if coordinator::http::OPEN_PATHS.contains(route) {
            assert_eq!(http_get(&http, &path, None).0, 200, "{path}");
            continue;
        }
        assert_eq!(http_get(&http, &path, None).0, 401, "{path}");
        assert_eq!(http_get(&http, &path, Some(&wrong)).0, 401, "{path}");
        assert_eq!(
            http_get(&http, &path, Some(&tokens["worker"])).0,
            403,
            "{path}"
        );
        let ok_code = http_get(&http, &path, Some(&tokens["read"])).0;
        assert!(
            ok_code != 401 && ok_code != 403,
            "{path} with a read token: {ok_code}"
        );
    }

    // No side effects: no job, schedule or worker came of the refused calls.
    let admin_view = |args: &[&str]| {
        ok(quern()
            .args(args)
            .env("QUERN_COORDINATOR", format!("127.0.0.1:{port}"))
            .env("QUERN_TOKEN", &tokens["admin"]))
    };
    assert!(
        !admin_view(&["job", "list"]).contains("job-"),
        "a refused call made a job"
    );
    assert!(!admin_view(&["schedule", "list"]).contains("nightly"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    // Acting through the API needs a token that may submit.
    let kill = |token: &str| {
        agent
            .post(format!("http://{http}/api/v1/jobs/job-1/kill"))
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send("{}")
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(kill(&tokens["read"]), 403);
    assert_eq!(kill(&tokens["submit"]), 404, "no job-1 here");
    let post = |path: &str, token: &str| {
        agent
            .post(format!("http://{http}{path}"))
            .header("authorization", &format!("Bearer {token}"))
            .header("content-type", "application/json")
            .send(r#"{"job": "views", "inputs": ["/nowhere"], "output": "/nowhere-out"}"#)
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(post("/api/v1/jobs", &tokens["read"]), 403);
    assert_eq!(
        post("/api/v1/schedules/nightly/pause", &tokens["read"]),
        403
    );
    assert_eq!(
        post("/api/v1/schedules/nightly/pause", &tokens["submit"]),
        404,
        "no schedule here"
    );
    let cluster = agent
        .get(format!("http://{http}/api/v1/cluster"))
        .header("authorization", &format!("Bearer {}", tokens["read"]))
        .call()
        .unwrap()
        .into_body()
        .read_to_string()
        .unwrap();
    assert!(
        cluster.contains("\"workers\":[]"),
        "a refused call registered a worker: {cluster}"
    );

    // The right role gets past authentication (the empty request may then be invalid), once
    // the refusals are known to have changed nothing.
    rt.block_on(async {
        let channel = connect(port).await;
        for (path, name) in &methods {
            let need = needed_role(name);
            let got = call(channel.clone(), path, Some(&tokens[need])).await;
            assert!(
                !matches!(got, Code::Unauthenticated | Code::PermissionDenied),
                "{name} with a {need} token: {got:?}"
            );
        }
    });

    // No secret in the coordinator's log or API answers: neither a token nor its hash.
    let log = std::fs::read_to_string(dir.path().join("coordinator.log")).unwrap();
    let file_text = std::fs::read_to_string(&file).unwrap();
    for t in tokens.values() {
        let secret = &t[21..];
        assert!(
            !log.contains(secret) && !cluster.contains(secret),
            "a token leaked"
        );
    }
    for hash in file_text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("\"sha256\": \""))
    {
        let hash = hash.trim_end_matches(['"', ',']);
        assert!(
            !log.contains(hash) && !cluster.contains(hash),
            "a token hash leaked"
        );
    }

    // Revoking takes effect without a restart.
    ok(quern()
        .args(["token", "revoke", "test-read", "--tokens"])
        .arg(&file));
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        http_get(&http, "/api/v1/jobs", Some(&tokens["read"])).0,
        401
    );
}

#[test]
fn a_coordinator_beyond_loopback_needs_tokens_and_a_local_cluster_runs_with_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(quern()
        .args(["coordinator", "--listen", "0.0.0.0:0", "--state-dir"])
        .arg(dir.path().join("c")));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("holds no tokens") && err.contains("quern token create"),
        "{err}"
    );

    // `quern local --auth`: workers present their token, the CLI finds the admin token.
    let state = dir.path().join(".quern");
    std::fs::create_dir_all(&state).unwrap();
    let log = std::fs::File::create(state.join("local.log")).unwrap();
    let mut local = std::process::Command::new(env!("CARGO_BIN_EXE_quern"))
        .args(["local", "--auth", "--workers", "1", "--dir"])
        .arg(&state)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("coordinator.addr").exists() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let inputs = inputs("256KiB");
    let submit = |token: Option<&str>| {
        let mut c = quern();
        c.args(["job", "submit", "views", "--dir"])
            .arg(&state)
            .arg("--input")
            .arg(&inputs.log)
            .arg("--output")
            .arg(dir.path().join(format!("out-{}", token.is_some())));
        match token {
            Some(t) => c.env("QUERN_TOKEN", t),
            None => c.env_remove("QUERN_TOKEN"),
        };
        run(&mut c)
    };
    let done = submit(None);
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let refused = submit(Some(&format!("qrn_{}_{}", "1".repeat(16), "1".repeat(64))));
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("invalid or revoked token"));
    let _ = local.kill();
    let _ = local.wait();
    // No log of the cluster (its own at debug level, the worker's, every attempt's) holds a
    // token (the refused one included), a token hash, the shuffle key or a job secret.
    let (secrets, keeper) = local_secrets(&state);
    assert_no_secrets(&state, &secrets, &keeper);
}

/// A gRPC frame declaring a 2 GiB message is refused by its declared size, before anything is
/// allocated for it; a compression bomb (1 GiB of zeros in about 1 MiB of gzip) is refused
/// without being inflated; each connection is held to 128 concurrent streams; and the
/// coordinator goes on serving.
#[test]
fn huge_declared_messages_and_compression_bombs_are_refused_and_streams_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.json");
    let admin = create_token(&file, "admin");
    let port = free_port();
    let _coordinator = Procs(vec![spawn_coordinator(
        port,
        dir.path(),
        &["--auth", "on", "--tokens", file.to_str().unwrap()],
    )]);
    let addr = format!("127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Uncompressed, length 2^31, then a few bytes: nothing like 2 GiB follows.
        let mut frame = vec![0u8];
        frame.extend_from_slice(&(1u32 << 31).to_be_bytes());
        frame.extend_from_slice(&[0u8; 64]);
        let bearer = format!("Bearer {admin}");
        let reply = raw_grpc(
            &addr,
            "/quern.v1.CoordinatorService/SubmitJob",
            &[("authorization", &bearer)],
            frame,
        )
        .await;
        // OUT_OF_RANGE (11) or RESOURCE_EXHAUSTED (8): refused by its declared length.
        assert!(
            matches!(reply.status.as_deref(), Some("11") | Some("8")),
            "{:?} {:?}",
            reply.status,
            reply.message
        );
        assert_eq!(reply.max_streams, 128, "per-connection stream limit");

        // A gzip bomb: the services accept no compressed messages, so it is never inflated.
        let bomb = {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..1024 {
                gz.write_all(&zeros).unwrap();
            }
            gz.finish().unwrap()
        };
        assert!(bomb.len() < 2 << 20, "{}", bomb.len());
        let mut frame = vec![1u8];
        frame.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
        frame.extend_from_slice(&bomb);
        let reply = raw_grpc(
            &addr,
            "/quern.v1.CoordinatorService/SubmitJob",
            &[("authorization", &bearer), ("grpc-encoding", "gzip")],
            frame,
        )
        .await;
        // UNIMPLEMENTED (12): compressed messages are not accepted at all.
        assert_eq!(
            reply.status.as_deref(),
            Some("12"),
            "{:?} {:?}",
            reply.status,
            reply.message
        );

        // Still serving.
        let mut c = coordinator::Client::connect_with(
            &addr,
            protocol::auth::ClientAuth::new(Some(&admin)),
            None,
        )
        .await
        .unwrap();
        assert!(c.list().await.unwrap().is_empty());
    });
}
