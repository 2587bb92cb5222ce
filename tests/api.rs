//! The coordinator's JSON API, metrics and web page, on a local cluster, against the CLI.

mod support;

use support::*;

fn get(base: &str, path: &str) -> (u16, String) {
    match ureq::get(&format!("http://{base}{path}")).call() {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap()),
        Err(ureq::Error::StatusCode(code)) => (code, String::new()),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[test]
fn the_api_metrics_and_page_show_what_the_cli_shows() {
    let inputs = inputs("1MiB");
    let cluster = Cluster::start(2);
    let http = std::fs::read_to_string(cluster.dir.path().join(".quern/http.addr")).unwrap();
    let out = cluster.dir.path().join("views");
    let ok_job = ok(cluster
        .job()
        .args(["submit", "views", "--reducers", "2", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&out)
        .args(["--name", "nightly views", "--label", "team=web"])
        .args(["--label", "tier=gold"]));
    let failed = run(cluster
        .job()
        .args([
            "submit",
            "fail",
            "--max-attempts",
            "2",
            "--label",
            "team=web",
        ])
        .arg("--input")
        .arg(&inputs.log)
        .arg("--output")
        .arg(cluster.dir.path().join("never")));
    assert!(!failed.status.success());

    let (code, body) = get(&http, "/api/v1/jobs");
    assert_eq!(code, 200);
    let jobs: serde_json::Value = serde_json::from_str(&body).unwrap();
    let job = |id: &str| {
        jobs.as_array()
            .unwrap()
            .iter()
            .find(|j| j["id"] == id)
            .unwrap()
            .clone()
    };
    let (j1, j2) = (job("job-1"), job("job-2"));
    assert_eq!(
        (j1["state"].as_str(), j2["state"].as_str()),
        (Some("succeeded"), Some("failed"))
    );
    // The same counters as the CLI's end-of-job summary.
    for (name, value) in counters(&ok_job) {
        assert_eq!(j1["counters"][&name].as_u64(), Some(value), "{name}");
    }
    assert!(
        j2["error"].as_str().unwrap().contains("injected failure"),
        "{j2}"
    );
    // One job is its line of the list and its spec, in the form POST /api/v1/jobs takes.
    let mut one: serde_json::Value =
        serde_json::from_str(&get(&http, "/api/v1/jobs/job-1").1).unwrap();
    let spec = one.as_object_mut().unwrap().remove("spec").unwrap();
    assert_eq!(one, j1);
    assert_eq!(spec["job"], "views", "{spec}");
    assert_eq!(spec["output"], j1["output"], "{spec}");
    assert_eq!(spec["reducers"], 2, "{spec}");
    assert_eq!(spec["labels"], j1["labels"], "{spec}");
    assert_eq!(spec["resubmittable"], true, "{spec}");
    // Names and labels, and the list's filters.
    assert_eq!(j1["name"], "nightly views");
    assert_eq!(
        j1["labels"],
        serde_json::json!({"team": "web", "tier": "gold"})
    );
    assert_eq!(j2["name"], "");
    let ids = |query: &str| -> Vec<String> {
        let (code, body) = get(&http, &format!("/api/v1/jobs?{query}"));
        assert_eq!(code, 200, "{query}: {body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("label=team=web"), ["job-2", "job-1"]);
    assert_eq!(ids("label=team=web&label=tier=gold"), ["job-1"]);
    assert_eq!(ids("name=nightly%20views"), ["job-1"]);
    assert_eq!(ids("state=failed"), ["job-2"]);
    assert_eq!(ids("label=team=web&limit=1"), ["job-2"]);
    assert!(ids("label=team=mobile").is_empty());
    assert_eq!(get(&http, "/api/v1/jobs?labels=x").0, 400);
    assert_eq!(get(&http, "/api/v1/jobs?label=x").0, 400);
    let list = ok(cluster.job().args(["list", "--label", "tier=gold"]));
    assert!(
        list.contains("nightly views") && list.contains("job-1") && !list.contains("job-2"),
        "{list}"
    );
    let list = ok(cluster
        .job()
        .args(["list", "--name", "nightly views", "--output", "json"]));
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["labels"]["tier"], "gold", "{list}");
    let status = ok(cluster.job().args(["status", "job-1"]));
    assert!(
        status.contains("name:     nightly views")
            && status.contains("labels:   team=web,tier=gold"),
        "{status}"
    );
    // A label the spec rules refuse is refused at submit, naming it.
    let bad = run(cluster
        .job()
        .args(["submit", "views", "--label", "te am=x", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(cluster.dir.path().join("bad-label")));
    assert!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("bad label name"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_eq!(get(&http, "/api/v1/jobs/job-9").0, 404);
    // The failed job's attempts, each with its error and its log, kept on its worker.
    // The succeeded job's winning attempts carry their bytes.
    let (_, body) = get(&http, "/api/v1/jobs/job-1/attempts");
    let won: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        won.as_array()
            .unwrap()
            .iter()
            .any(|a| a["task"] == "map-0" && a["bytes_read"].as_u64().unwrap() > 0),
        "{body}"
    );
    let (_, body) = get(&http, "/api/v1/jobs/job-2/attempts");
    let attempts: serde_json::Value = serde_json::from_str(&body).unwrap();
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{body}");
    for a in attempts {
        assert_eq!(a["outcome"], "failed");
        assert!(a["start_ms"].is_u64(), "timeline start: {a}");
        assert!(a["error"].as_str().unwrap().contains("injected failure"));
        let (code, log) = get(&http, a["log"].as_str().unwrap());
        assert_eq!(code, 200);
        assert!(log.contains("injected failure"), "{log}");
    }
    // Attempts a page at a time, with the total in a header; the page keeps start_ms from
    // the job's first attempt.
    let mut r = ureq::get(&format!(
        "http://{http}/api/v1/jobs/job-2/attempts?offset=1&limit=5"
    ))
    .call()
    .unwrap();
    assert_eq!(r.headers()["x-total-count"], "2");
    let page: serde_json::Value =
        serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(
        page.as_array().unwrap(),
        &attempts[1..],
        "offset 1 is the second attempt"
    );
    let (_, body) = get(&http, "/api/v1/jobs/job-2/attempts?limit=1");
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first.as_array().unwrap(), &attempts[..1]);
    // A worker serves an attempt's log only with the token the coordinator hands out.
    let (_, body) = get(&http, "/api/v1/cluster");
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    let attempt: u64 = attempts[0]["attempt"]
        .as_str()
        .unwrap()
        .trim_start_matches("attempt-")
        .parse()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The same page over gRPC.
    let listed = rt.block_on(async {
        let mut client =
            protocol::pb::coordinator_service_client::CoordinatorServiceClient::connect(format!(
                "http://{}",
                cluster.addr
            ))
            .await
            .unwrap();
        client
            .list_attempts(protocol::pb::ListAttemptsRequest {
                job_id: 2,
                offset: 1,
                limit: 1,
            })
            .await
            .unwrap()
            .into_inner()
    });
    assert_eq!(listed.total, 2);
    let ids: Vec<String> = listed
        .attempts
        .iter()
        .map(|a| protocol::AttemptId(a.attempt_id).to_string())
        .collect();
    assert_eq!(ids, [attempts[1]["attempt"].as_str().unwrap()]);
    let refused = rt.block_on(async {
        let mut codes = Vec::new();
        for w in c["workers"].as_array().unwrap() {
            let addr = format!("http://{}", w["shuffle_addr"].as_str().unwrap());
            let mut client =
                protocol::pb::worker_service_client::WorkerServiceClient::connect(addr)
                    .await
                    .unwrap();
            for token in [Vec::new(), vec![0u8; 32]] {
                let r = client
                    .fetch_log(protocol::pb::FetchLogRequest {
                        attempt_id: attempt,
                        job_id: 2,
                        token,
                    })
                    .await;
                codes.push(r.err().map(|s| s.code()));
            }
        }
        codes
    });
    assert!(
        refused
            .iter()
            .all(|c| *c == Some(tonic::Code::PermissionDenied)),
        "{refused:?}"
    );
    // Kill through the API: only with a JSON body's content type (no cross-site forms), and
    // only a running job.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |path: &str, json: bool| {
        let mut req = agent.post(format!("http://{http}{path}"));
        if json {
            req = req.header("content-type", "application/json");
        }
        let mut r = req.send("{}").unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    assert_eq!(post("/api/v1/jobs/job-1/kill", false).0, 415);
    let (code, body) = post("/api/v1/jobs/job-1/kill", true);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("\"state\":\"succeeded\""), "{body}");
    assert_eq!(post("/api/v1/jobs/job-99/kill", true).0, 404);
    let logs = ok(cluster.job().args(["logs", "job-2", "--task", "map-0"]));
    assert_eq!(logs.matches("== job-2/map-0/").count(), 2, "{logs}");
    assert!(logs.contains("panicked at"), "{logs}");
    // Attempt logs hold the task's own lines (what it read, what it did), never colour codes.
    assert!(
        logs.contains("map started") && logs.contains("input="),
        "{logs}"
    );
    assert!(!logs.contains('\x1b'), "{logs}");
    let one = attempts[0]["attempt"].as_str().unwrap();
    let logs = ok(cluster.job().args(["logs", "job-2", "--attempt", one]));
    assert_eq!(logs.matches("(attempt-").count(), 1, "{logs}");
    // Attempts have names people type: job-2/map-0/2 is the second attempt of map 0.
    assert_eq!(attempts[0]["name"], "job-2/map-0/1", "{attempts:?}");
    for (sel, task, want) in [
        ("job-2/map-0/2", None, "== job-2/map-0/2 ("),
        ("map-0/2", None, "== job-2/map-0/2 ("),
        ("2", Some("map-0"), "== job-2/map-0/2 ("),
        ("1", None, "== job-2/map-0/1 ("),
    ] {
        let mut cmd = cluster.job();
        cmd.args(["logs", "job-2", "--attempt", sel]);
        if let Some(t) = task {
            cmd.args(["--task", t]);
        }
        let logs = ok(&mut cmd);
        assert!(
            logs.matches("== job-2/").count() == 1 && logs.contains(want),
            "{sel}: {logs}"
        );
    }
    let wrong = run(cluster
        .job()
        .args(["logs", "job-2", "--attempt", "job-1/map-0/1"]));
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("is an attempt of job-1, not of job-2"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    assert_eq!(get(&http, "/api/v1/jobs/nonsense").0, 400);

    let (_, body) = get(&http, "/api/v1/cluster");
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["workers"].as_array().unwrap().len(), 2);
    assert!(c["workers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|w| w["slots"] == 2));
    // Each worker says where it runs; its attempt logs there are named after the attempts.
    let homes: Vec<&str> = c["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["home"].as_str().unwrap())
        .collect();
    let mut logs: Vec<String> = homes
        .iter()
        .flat_map(|h| {
            let dir = std::path::Path::new(h.split_once(':').unwrap().1).join("logs");
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
        })
        .filter(|n| n.starts_with("job-2-"))
        .collect();
    logs.sort();
    let first = attempts[0]["attempt"].as_str().unwrap();
    assert!(
        logs.contains(&format!("job-2-map-0-1-{first}.log")),
        "{logs:?}"
    );

    let (code, metrics) = get(&http, "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("quern_jobs{state=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("quern_jobs{state=\"succeeded\"} 1"));
    assert!(metrics.contains("quern_failed_attempts_total 2"));
    assert!(
        metrics.contains("quern_jobs_ended_total{state=\"failed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    // Every attempt's scheduling latency is observed (two jobs' maps and reduces, retries).
    let count = metrics
        .lines()
        .find_map(|l| l.strip_prefix("quern_scheduling_latency_seconds_count "))
        .expect("scheduling latency histogram");
    assert!(count.parse::<u64>().unwrap() >= 3, "{metrics}");
    // Well-formed exposition: comments or `name{labels} value`, each metric typed once.
    let mut types = std::collections::HashSet::new();
    for line in metrics.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            assert!(
                types.insert(t.split(' ').next().unwrap().to_string()),
                "{line}"
            );
        } else if !line.starts_with('#') {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(line.starts_with("quern_"), "{line}");
        }
    }

    // The storage browser lists the succeeded job's output files (data files only).
    let views_dir = cluster.dir.path().join("views").display().to_string();
    let (code, body) = get(
        &http,
        &format!("/api/v1/storage?path={}", views_dir.replace('/', "%2F")),
    );
    assert_eq!(code, 200, "{body}");
    let l: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(l["total_files"].as_u64().unwrap() >= 1, "{body}");
    assert!(
        l["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["path"].as_str().unwrap().contains("part-")),
        "{body}"
    );
    assert_eq!(
        get(&http, "/api/v1/storage?path=%2Fno%2Fsuch%2Fplace").0,
        404
    );

    let (code, page) = get(&http, "/");
    assert_eq!(code, 200);
    assert!(page.contains("/api/v1/jobs"));
    // Everything the page needs is in it: no external scripts, styles or fonts.
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http") && !page.contains("@import")
    );
}

/// POSTs `body` (JSON) to the API; returns the status and the body.
fn post(base: &str, path: &str, body: &str, content_type: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .post(format!("http://{base}{path}"))
        .header("content-type", content_type)
        .send(body)
        .unwrap();
    let code = r.status().as_u16();
    (code, r.body_mut().read_to_string().unwrap_or_default())
}

#[test]
fn the_api_submits_jobs_and_pauses_resumes_and_runs_schedules() {
    let inputs = inputs("1MiB");
    let cluster = Cluster::start(2);
    let http = std::fs::read_to_string(cluster.dir.path().join(".quern/http.addr")).unwrap();
    let out = cluster.dir.path().join("from-api");
    let body = serde_json::json!({
        "job": "views",
        "inputs": [inputs.log.display().to_string()],
        "output": out.display().to_string(),
        "reducers": 2,
        "name": "from the API",
        "labels": {"via": "http"},
    })
    .to_string();
    let (code, answer) = post(&http, "/api/v1/jobs", &body, "application/json");
    assert_eq!(code, 201, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = answer["id"].as_str().unwrap().to_string();
    // The job runs as one the CLI submitted, and writes what `run --local` writes.
    let waited = ok(cluster.job().args(["wait", &id]));
    assert!(waited.contains("state:    succeeded"), "{waited}");
    let oracle = inputs.dir.path().join("oracle-views");
    ok(quern()
        .args(["run", "--local", "views", "--reducers", "2", "--input"])
        .arg(&inputs.log)
        .arg("--output")
        .arg(&oracle));
    assert_eq!(read_output(&out), read_output(&oracle));
    let (_, job) = get(&http, &format!("/api/v1/jobs/{id}"));
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    assert_eq!(
        (job["name"].as_str(), job["labels"]["via"].as_str()),
        (Some("from the API"), Some("http"))
    );

    // Refusals name the problem: the output exists, a path is relative, a field is unknown,
    // the job is unknown, the body is not JSON.
    let (code, answer) = post(&http, "/api/v1/jobs", &body, "application/json");
    assert!(
        code == 409 && answer.contains("already holds"),
        "{code} {answer}"
    );
    let relative = body.replace(&out.display().to_string(), "relative/out");
    let (code, answer) = post(&http, "/api/v1/jobs", &relative, "application/json");
    assert!(
        code == 400 && answer.contains("relative/out"),
        "{code} {answer}"
    );
    let unknown = body.replace("\"reducers\"", "\"reducer\"");
    let (code, answer) = post(&http, "/api/v1/jobs", &unknown, "application/json");
    assert!(code == 400 && answer.contains("reducer"), "{code} {answer}");
    let other = body
        .replace("\"views\"", "\"veiws\"")
        .replace("from-api", "other");
    let (code, answer) = post(&http, "/api/v1/jobs", &other, "application/json");
    assert!(code == 400 && answer.contains("views"), "{code} {answer}");
    assert_eq!(post(&http, "/api/v1/jobs", &body, "text/plain").0, 415);

    // Schedules: pause, resume, and a run for one logical time.
    let output = format!("{}/daily/{{{{date}}}}", cluster.dir.path().display());
    ok(quern()
        .args([
            "schedule",
            "add",
            "daily",
            "--cron",
            "0 6 * * *",
            "--job",
            "views",
            "--reducers",
            "2",
        ])
        .args(["--start", "2026-01-01", "--catchup", "none", "--input"])
        .arg(&inputs.log)
        .args(["--output", &output])
        .env("QUERN_COORDINATOR", &cluster.addr));
    let state = || {
        let (_, s) = get(&http, "/api/v1/schedules");
        serde_json::from_str::<serde_json::Value>(&s).unwrap()[0]["paused"].clone()
    };
    let (code, answer) = post(
        &http,
        "/api/v1/schedules/daily/pause",
        "",
        "application/json",
    );
    assert_eq!(code, 200, "{answer}");
    assert_eq!(state(), true);
    assert_eq!(
        post(
            &http,
            "/api/v1/schedules/daily/resume",
            "",
            "application/json"
        )
        .0,
        200
    );
    assert_eq!(state(), false);
    let (code, answer) = post(
        &http,
        "/api/v1/schedules/daily/run",
        r#"{"at": "2026-11-30T06:00"}"#,
        "application/json",
    );
    assert_eq!(code, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["logical_time"], "2026-11-30T06:00:00", "{answer}");
    let (_, list) = get(&http, "/api/v1/backfills");
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list[0]["id"], answer["backfill"], "{list}");
    assert_eq!(list[0]["schedule"], "daily", "{list}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let run_out = cluster.dir.path().join("daily/2026-11-30");
    while !run_out.join("_SUCCESS").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the run never finished"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(read_output(&run_out), read_output(&oracle));
    let (code, answer) = post(
        &http,
        "/api/v1/schedules/daily/run",
        r#"{"at": "2026-11-30T07:00"}"#,
        "application/json",
    );
    assert!(
        code == 400 && answer.contains("not a logical time"),
        "{code} {answer}"
    );
    assert_eq!(
        post(
            &http,
            "/api/v1/schedules/nope/pause",
            "",
            "application/json"
        )
        .0,
        404
    );
    assert_eq!(
        post(
            &http,
            "/api/v1/schedules/daily/explode",
            "",
            "application/json"
        )
        .0,
        404
    );
}
