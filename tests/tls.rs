//! TLS: a cluster of real processes on certificates from `quern certs init`, with mutual TLS
//! towards the coordinator. Jobs run and match the oracle; plaintext clients, clients without
//! a certificate, and certificates of another CA are refused on every port; a client
//! certificate's role decides what it may do.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success() && text.contains("\n200"), text)
}

/// `quern job <what>` against `addr`, trusting `ca`, presenting the client certificate `cert`
/// (`<cert>.pem`, `<cert>.key`) if any.
fn job(what: &str, addr: &str, ca: Option<&Path>, cert: Option<&Path>) -> Command {
    let mut c = quern();
    c.args(["job", what])
        .env_remove("QUERN_TOKEN")
        .env_remove("QUERN_TLS_CA")
        .env_remove("QUERN_TLS_CERT")
        .env_remove("QUERN_TLS_KEY")
        .args(["--coordinator", addr]);
    if let Some(ca) = ca {
        c.arg("--tls-ca").arg(ca);
    }
    if let Some(cert) = cert {
        c.arg("--tls-cert")
            .arg(cert.with_extension("pem"))
            .arg("--tls-key")
            .arg(cert.with_extension("key"));
    }
    c
}

fn stderr_of(mut c: Command) -> String {
    let out = run(&mut c);
    assert!(!out.status.success(), "{c:?} was let in");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn a_mutual_tls_cluster_runs_jobs_and_refuses_plaintext_strangers_and_wrong_roles() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let other = dir.path().join("other");
    ok(quern()
        .args(["certs", "init", "--client", "reader=read", "--dir"])
        .arg(&certs));
    ok(quern().args(["certs", "init", "--dir"]).arg(&other));
    // A second init would replace the CA: refused without --force.
    let again = run(quern().args(["certs", "init", "--dir"]).arg(&certs));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let ca = certs.join("ca.pem");
    let c = |f: &str| certs.join(f).display().to_string();

    let tokens = dir.path().join("tokens.json");
    let admin_token = create_token(&tokens, "admin");
    let (mut procs, addr, http) = coordinator_with_http(
        dir.path(),
        &[
            "--tls-cert",
            &c("coordinator.pem"),
            "--tls-key",
            &c("coordinator.key"),
            "--tls-ca",
            &c("ca.pem"),
            "--mtls",
            "--auth",
            "on",
            "--tokens",
            tokens.to_str().unwrap(),
        ],
    );
    // Workers carry no token: their certificate (organizational unit `worker`) is who they are.
    for i in 0..2 {
        procs.0.push(spawn_worker(
            &addr,
            &dir.path().join(format!("w{i}")),
            &[
                "--tls-cert",
                &c("worker.pem"),
                "--tls-key",
                &c("worker.key"),
                "--tls-ca",
                &c("ca.pem"),
            ],
        ));
    }
    let base = format!("https://{http}");
    let bearer = format!("authorization: Bearer {admin_token}");
    let cacert = ca.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let cluster = loop {
        let (ok, text) = curl(&[
            "--cacert",
            &cacert,
            "-H",
            &bearer,
            &format!("{base}/api/v1/cluster"),
        ]);
        if ok && text.matches("shuffle_addr").count() == 2 {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "workers did not register: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    // A job over TLS on every hop (submit, heartbeats, shuffle fetches) matches the oracle.
    let inputs = inputs("512KiB");
    let out = dir.path().join("out");
    let spec = |o: &Path| {
        vec![
            "views".to_string(),
            "--input".into(),
            inputs.log.display().to_string(),
            "--output".into(),
            o.display().to_string(),
            "--reducers".into(),
            "3".into(),
            "--split-size".into(),
            "64KiB".into(),
        ]
    };
    let admin = certs.join("admin.pem");
    ok(job("submit", &addr, Some(&ca), Some(&admin)).args(spec(&out)));
    let oracle = dir.path().join("oracle");
    ok(quern().args(["run", "--local"]).args(spec(&oracle)));
    assert_eq!(read_output(&out), read_output(&oracle));
    // Attempt logs come from the workers' TLS ports, to the CLI and through the web API.
    let logs = ok(job("logs", &addr, Some(&ca), Some(&admin)).args(["1", "--task", "map-0"]));
    assert!(logs.contains("== job-1/map-0/1 (attempt-"), "{logs}");
    let (ok_attempts, attempts) = curl(&[
        "--cacert",
        &cacert,
        "-H",
        &bearer,
        &format!("{base}/api/v1/jobs/1/attempts"),
    ]);
    assert!(ok_attempts, "{attempts}");
    let log_path = attempts
        .split("\"log\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("an attempt with a log");
    let (ok_log, log) = curl(&[
        "--cacert",
        &cacert,
        "-H",
        &bearer,
        &format!("{base}{log_path}"),
    ]);
    assert!(ok_log, "{log}");

    // A certificate of role `read` may read but not submit.
    let reader = certs.join("reader.pem");
    assert!(ok(&mut job("list", &addr, Some(&ca), Some(&reader))).contains("job-1"));
    let refused =
        run(job("submit", &addr, Some(&ca), Some(&reader))
            .args(spec(&dir.path().join("out-reader"))));
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("read") && err.contains("may not"), "{err}");

    // Refused: plaintext, no client certificate, a client certificate of another CA, and a
    // client that trusts another CA (the coordinator's certificate fails its check).
    let plain = stderr_of(job("list", &addr, None, None));
    assert!(
        plain.contains("connection to the coordinator failed"),
        "{plain}"
    );
    let no_cert = stderr_of(job("list", &addr, Some(&ca), None));
    // The alert may reach the client as such or as the connection it closed.
    assert!(
        no_cert.contains("CertificateRequired")
            || no_cert.contains("connection to the coordinator failed"),
        "{no_cert}"
    );
    let stranger = stderr_of(job(
        "list",
        &addr,
        Some(&ca),
        Some(&other.join("admin.pem")),
    ));
    assert!(
        stranger.contains("connection to the coordinator failed"),
        "{stranger}"
    );
    let wrong_ca = stderr_of(job(
        "list",
        &addr,
        Some(&other.join("ca.pem")),
        Some(&admin),
    ));
    assert!(
        wrong_ca.contains("UnknownIssuer") || wrong_ca.contains("certificate"),
        "{wrong_ca}"
    );
    // Nothing any of them tried ran: still one job.
    let list = ok(&mut job("list", &addr, Some(&ca), Some(&admin)));
    assert_eq!(list.matches("job-").count(), 1, "{list}");

    // The web UI's port: plaintext and a client trusting another CA fail.
    let (plain_ok, plain_http) = curl(&["-H", &bearer, &format!("http://{http}/api/v1/jobs")]);
    assert!(!plain_ok, "{plain_http}");
    let (other_ok, other_http) = curl(&[
        "--cacert",
        &other.join("ca.pem").display().to_string(),
        "-H",
        &bearer,
        &format!("{base}/api/v1/jobs"),
    ]);
    assert!(!other_ok, "{other_http}");

    // A worker's shuffle port: a plaintext HTTP/2 client gets no gRPC answer.
    let shuffle = cluster
        .split("\"shuffle_addr\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a worker's shuffle address")
        .to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answered = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(&shuffle).await.unwrap();
        let attempt = async {
            let (mut h2, conn) = h2::client::handshake(tcp).await.ok()?;
            tokio::spawn(conn);
            let req = http::Request::builder()
                .method("POST")
                .uri(format!("http://{shuffle}/quern.v1.WorkerService/FetchLog"))
                .header("content-type", "application/grpc")
                .body(())
                .unwrap();
            let (response, _) = h2.send_request(req, true).ok()?;
            response.await.ok()
        };
        tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .ok()
            .flatten()
            .is_some()
    });
    assert!(!answered, "the shuffle port answered a plaintext client");
    drop(procs);
}

#[test]
fn a_local_cluster_with_tls_runs_a_job_and_the_cli_finds_its_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".quern");
    std::fs::create_dir_all(&state).unwrap();
    let log = std::fs::File::create(state.join("local.log")).unwrap();
    let local = Procs(vec![quern()
        .args(["local", "--tls", "--auth", "--workers", "2", "--dir"])
        .arg(&state)
        .env_remove("QUERN_TLS_CA")
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state.join("coordinator.addr").exists() {
        assert!(Instant::now() < deadline, "quern local did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let inputs = inputs("256KiB");
    let stdout = ok(quern()
        .args(["job", "submit", "views", "--reducers", "2", "--dir"])
        .arg(&state)
        .arg("--input")
        .arg(&inputs.log)
        .arg("--output")
        .arg(dir.path().join("out"))
        .env_remove("QUERN_TOKEN")
        .env_remove("QUERN_TLS_CA"));
    assert!(counters(&stdout)["reduce_output_records"] > 0, "{stdout}");
    // Logs are written as the job goes: the cluster's own (debug level), the workers', and
    // every attempt's. None holds a token, a hash, a key or a job secret.
    ok(quern()
        .args(["job", "logs", "1", "--dir"])
        .arg(&state)
        .env_remove("QUERN_TOKEN"));
    // Stopped (and reaped) before its files are searched, so every log is complete.
    drop(local);
    let (secrets, keeper) = local_secrets(&state);
    assert!(secrets.len() >= 4, "{}", secrets.len());
    let searched = assert_no_secrets(&state, &secrets, &keeper);
    assert!(searched > 10, "{searched}");
    // The certificates' keys are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    for key in ["ca.key", "admin.key", "worker.key", "coordinator.key"] {
        let mode = std::fs::metadata(state.join("tls").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{key} is readable by others: {mode:o}");
    }
}
