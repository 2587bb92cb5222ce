//! Real clusters (a coordinator and worker processes talking gRPC on loopback) against the
//! `quern run --local` oracle, byte for byte.

mod support;

use std::path::Path;

use support::*;

/// (job, which input) for every built-in analytics job.
const JOBS: [(&str, bool); 4] = [
    ("views", true),
    ("top-photos", true),
    ("endpoint-stats", true),
    ("wordcount", false),
];
/// Small enough that lines are cut by split boundaries many times over.
const SPLIT: &str = "150KiB";

fn spec_args(job: &str, input: &Path, output: &Path, reducers: u32) -> Vec<String> {
    spec_args_split(job, input, output, reducers, SPLIT)
}

fn spec_args_split(
    job: &str,
    input: &Path,
    output: &Path,
    reducers: u32,
    split: &str,
) -> Vec<String> {
    vec![
        job.to_string(),
        "--input".into(),
        input.display().to_string(),
        "--output".into(),
        output.display().to_string(),
        "--reducers".into(),
        reducers.to_string(),
        "--split-size".into(),
        split.into(),
    ]
}

fn oracle(inputs: &Inputs, job: &str, log: bool, reducers: u32) -> std::path::PathBuf {
    let input = if log { &inputs.log } else { &inputs.words };
    let out = inputs.dir.path().join(format!("oracle-{job}-{reducers}"));
    if !out.exists() {
        ok(quern()
            .args(["run", "--local"])
            .args(spec_args(job, input, &out, reducers)));
    }
    out
}

fn cluster_matches_oracle(workers: u32) {
    let inputs = inputs("1MiB");
    let cluster = Cluster::start(workers);
    for (job, log) in JOBS {
        for reducers in [1, 3, 7] {
            let input = if log { &inputs.log } else { &inputs.words };
            let out = cluster.dir.path().join(format!("{job}-{reducers}"));
            let stdout = ok(cluster
                .job()
                .arg("submit")
                .args(spec_args(job, input, &out, reducers)));
            let expected = read_output(&oracle(&inputs, job, log, reducers));
            let got = read_output(&out);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                expected.keys().collect::<Vec<_>>(),
                "{job} r={reducers}"
            );
            for (name, bytes) in &expected {
                assert!(
                    got[name] == *bytes,
                    "{job} with {reducers} reducers on {workers} workers: {name} differs"
                );
            }
            assert_eq!(
                got.keys().filter(|k| k.starts_with("part-")).count(),
                reducers as usize
            );
            let c = counters(&stdout);
            assert!(c["map_input_records"] > 1000, "{c:?}");
            assert_eq!(
                c["data_local_maps"] + c["remote_maps"],
                c["data_local_maps"],
                "local files are local"
            );
            assert!(
                c["data_local_maps"] >= 6,
                "1 MiB in 150 KiB splits is at least 6 maps: {c:?}"
            );
        }
    }
}

#[test]
fn one_worker_matches_the_oracle() {
    cluster_matches_oracle(1);
}

#[test]
fn two_workers_match_the_oracle() {
    cluster_matches_oracle(2);
}

#[test]
fn three_workers_match_the_oracle() {
    cluster_matches_oracle(3);
}

#[test]
fn a_map_that_always_panics_fails_the_job_with_its_message_and_leaves_no_output() {
    let inputs = inputs("64KiB");
    let cluster = Cluster::start(2);
    let out = cluster.dir.path().join("failed");
    let res = run(cluster
        .job()
        .arg("submit")
        .args(spec_args("fail", &inputs.log, &out, 3))
        .args(["--param", "panic_on=/photos/", "--max-attempts", "3"]));
    assert_eq!(res.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("failed 3 attempts"), "{stderr}");
    assert!(stderr.contains("injected failure on record"), "{stderr}");
    let left: Vec<String> = match std::fs::read_dir(&out) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    assert!(
        left.iter()
            .all(|n| !n.starts_with("part-") && n != "_SUCCESS"),
        "{left:?}"
    );

    // The same failure in the oracle is a clear error too.
    let res = run(quern()
        .args(["run", "--local"])
        .args(spec_args("fail", &inputs.log, &out, 1))
        .args(["--param", "panic_on=/photos/"]));
    assert!(!res.status.success());
    assert!(String::from_utf8_lossy(&res.stderr).contains("injected failure"));
}

#[test]
fn a_tiny_memory_budget_forces_spills_and_still_matches_the_oracle() {
    let inputs = inputs("1MiB");
    let cluster = Cluster::start(2);
    for (job, log) in [("top-photos", true), ("wordcount", false)] {
        let input = if log { &inputs.log } else { &inputs.words };
        let out = cluster.dir.path().join(job);
        let stdout = ok(cluster
            .job()
            .arg("submit")
            .args(spec_args(job, input, &out, 3))
            .args(["--task-memory", "16KiB"]));
        let c = counters(&stdout);
        assert!(
            c["spilled_bytes"] > 0 && c["spilled_records"] > 0,
            "{job} did not spill: {c:?}"
        );
        // Word count's reducers fetch more than 16 KiB each (top-photos' do not): they kept
        // what did not fit on disk, and read it back a block at a time.
        if job == "wordcount" {
            assert!(c["reduce_spilled_bytes"] > 0, "{job}: {c:?}");
        }
        assert_eq!(
            read_output(&out),
            read_output(&oracle(&inputs, job, log, 3)),
            "{job}"
        );
        let local = inputs.dir.path().join(format!("{job}-spilled-local"));
        let stdout = ok(quern()
            .args(["run", "--local"])
            .args(spec_args(job, input, &local, 3))
            .args(["--task-memory", "16KiB"]));
        assert!(counters(&stdout)["spilled_bytes"] > 0);
        assert_eq!(read_output(&local), read_output(&out), "{job}");
    }
}

#[test]
fn job_commands_find_the_local_cluster_and_report_state() {
    let inputs = inputs("256KiB");
    let cluster = Cluster::start(1);
    let out = cluster.dir.path().join("views");
    // No --coordinator: the CLI finds the cluster through the state directory.
    let id = ok(quern()
        .current_dir(cluster.dir.path())
        .env_remove("QUERN_COORDINATOR")
        .args(["job", "submit", "--detach"])
        .args(spec_args("views", &inputs.log, &out, 2)))
    .trim()
    .to_string();
    assert!(id.starts_with("job-"), "{id}");
    let waited = ok(cluster.job().args(["wait", &id]));
    assert!(waited.contains("state:    succeeded"), "{waited}");
    let status = ok(cluster.job().args(["status", &id]));
    assert!(status.contains("maps:     2/2"), "{status}");
    assert_eq!(counters(&status), counters(&waited));
    let list = ok(cluster.job().arg("list"));
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("succeeded")),
        "{list}"
    );
    assert!(
        !run(cluster.job().args(["kill", &id])).status.success(),
        "a finished job cannot be killed"
    );
    // The same as JSON, for scripts: the HTTP API's schema.
    let json = |cmd: &mut std::process::Command| -> serde_json::Value {
        serde_json::from_str(&ok(cmd)).unwrap()
    };
    let v = json(cluster.job().args(["status", &id, "--output", "json"]));
    assert_eq!(
        (v["id"].as_str(), v["state"].as_str()),
        (Some(&*id), Some("succeeded"))
    );
    assert_eq!(v["maps"]["total"], 2);
    assert_eq!(
        v["counters"]["map_input_records"].as_u64(),
        counters(&status).get("map_input_records").copied()
    );
    let listed = json(cluster.job().args(["list", "-o", "json"]));
    assert!(
        listed.as_array().unwrap().iter().any(|j| j["id"] == *id),
        "{listed}"
    );
    let submitted = v["submitted_at"].as_str().unwrap();
    assert!(
        submitted.starts_with("20") && submitted.ends_with('Z'),
        "{v}"
    );
    assert!(v["finished_at"].as_str().unwrap() >= submitted, "{v}");
    // Filters: by state, by submit time, the newest N.
    let ids = |args: &[&str]| -> Vec<String> {
        json(cluster.job().arg("list").args(args).args(["-o", "json"]))
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        ids(&["--state", "succeeded", "--since", "1h"]),
        [id.clone()]
    );
    assert!(ids(&["--state", "failed"]).is_empty());
    assert!(ids(&["--since", "2099-01-01"]).is_empty());
    assert_eq!(ids(&["--limit", "1"]).len(), 1);
    let jobs = json(quern().args(["jobs", "-o", "json"]));
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .any(|j| j["name"] == "views"),
        "{jobs}"
    );
    // `job types` is the same list, beside the commands that act on runs.
    assert_eq!(json(quern().args(["job", "types", "-o", "json"])), jobs);
    let files = json(quern().args(["fs", "ls", "-o", "json"]).arg(&out));
    assert!(
        files
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["len"].as_u64() > Some(0)),
        "{files}"
    );

    // Following the logs of a job just submitted ends when the job does, with every
    // attempt's log read to its end.
    let second = ok(cluster.job().args(["submit", "--detach"]).args(spec_args(
        "views",
        &inputs.log,
        &out.with_extension("2"),
        2,
    )))
    .trim()
    .to_string();
    let followed = ok(cluster.job().args(["logs", &second, "--follow"]));
    assert_eq!(
        followed.matches("attempt succeeded").count(),
        4,
        "2 maps and 2 reduces: {followed}"
    );
    assert!(ok(cluster.job().args(["status", &second])).contains("succeeded"));

    // The same output directory again is refused with a clear reason.
    let again = run(cluster
        .job()
        .arg("submit")
        .args(spec_args("views", &inputs.log, &out, 2)));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds"),
        "{again:?}"
    );
    // So is an unknown job, naming the known ones.
    let unknown = run(cluster
        .job()
        .arg("submit")
        .args(spec_args("nope", &inputs.log, &out, 2)));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("known jobs: views"),
        "{unknown:?}"
    );
    // Without a cluster, the CLI says how to get one.
    let none = run(quern()
        .current_dir(inputs.dir.path())
        .env_remove("QUERN_COORDINATOR")
        .args(["job", "list"]));
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("quern local"),
        "{none:?}"
    );
}

#[test]
fn a_killed_job_stops_and_leaves_no_output() {
    let inputs = inputs("8MiB");
    let cluster = Cluster::start(1);
    let out = cluster.dir.path().join("killed");
    let id = ok(cluster
        .job()
        .args(["submit", "--detach"])
        .args(spec_args_split("top-photos", &inputs.log, &out, 2, "64KiB")))
    .trim()
    .to_string();
    let killed = run(cluster.job().args(["kill", &id]));
    assert!(killed.status.success(), "{killed:?}");
    let waited = run(cluster.job().args(["wait", &id]));
    assert_eq!(waited.status.code(), Some(1));
    let status = String::from_utf8_lossy(&waited.stdout).into_owned();
    assert!(status.contains("state:    killed"), "{status}");
    assert!(
        status.contains("running:  0 maps, 0 reduces"),
        "an ended job runs nothing: {status}"
    );
    // Its files are cleaned up (issue 15: part files and _temporary were left behind), so
    // the same output can be used again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let leftovers = || {
        std::fs::read_dir(&out)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_else(|_| Vec::new())
    };
    while !leftovers().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(leftovers(), Vec::<String>::new());
    ok(cluster.job().arg("submit").args(spec_args_split(
        "top-photos",
        &inputs.log,
        &out,
        2,
        "64KiB",
    )));
    assert!(out.join("_SUCCESS").exists());
}

#[test]
fn skip_mode_skips_poison_records_lists_them_and_matches_the_oracle() {
    let inputs = inputs("1MiB");
    let data = std::fs::read(&inputs.log).unwrap();
    // Three well-spread lines become poison: the map panics whenever it is given one.
    let mut poison = Vec::new();
    for at in [data.len() / 5, data.len() / 2, data.len() * 4 / 5] {
        let start = data[..at]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let end = start + data[start..].iter().position(|&b| b == b'\n').unwrap();
        let line = String::from_utf8_lossy(&data[start..end]).into_owned();
        assert!(!line.contains('|') && line.len() > 40);
        poison.push((start as u64, line));
    }
    let param = format!(
        "panic_on={}",
        poison
            .iter()
            .map(|p| p.1.as_str())
            .collect::<Vec<_>>()
            .join("|")
    );
    let cluster = Cluster::start(2);
    let out = cluster.dir.path().join("skipped");
    let stdout = ok(cluster
        .job()
        .arg("submit")
        .args(spec_args("fail", &inputs.log, &out, 2))
        .args(["--param", &param, "--max-bad-records", "5"]));
    assert_eq!(counters(&stdout)["skipped_records"], 3, "{stdout}");
    let listed = std::fs::read_to_string(out.join("_skipped/records.tsv")).unwrap();
    let offsets: Vec<u64> = listed
        .lines()
        .map(|l| l.split('\t').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(offsets, poison.iter().map(|p| p.0).collect::<Vec<_>>());
    assert!(listed.contains("injected failure"), "{listed}");

    let local = inputs.dir.path().join("skipped-local");
    ok(quern()
        .args(["run", "--local"])
        .args(spec_args("fail", &inputs.log, &local, 2))
        .args(["--param", &param, "--max-bad-records", "5"]));
    for name in [
        "part-00000",
        "part-00001",
        "_MANIFEST.json",
        "_skipped/records.tsv",
    ] {
        let (a, b) = (
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(local.join(name)).unwrap(),
        );
        assert!(
            a == b,
            "{name} differs:\n{}\n{}",
            String::from_utf8_lossy(&a),
            String::from_utf8_lossy(&b)
        );
    }

    // Without skip mode the job fails, naming the offset of a poison record.
    let failed = run(cluster
        .job()
        .arg("submit")
        .args(spec_args(
            "fail",
            &inputs.log,
            &cluster.dir.path().join("noskip"),
            2,
        ))
        .args(["--param", &param]));
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        poison
            .iter()
            .any(|p| stderr.contains(&format!("at input offset {}", p.0))),
        "{stderr}"
    );
}

/// The mistakes people make in their first hour each get a message that names the problem
/// and the fix, and the health checks answer without a token.
#[test]
fn errors_name_the_problem_and_the_fix() {
    let cluster = Cluster::start(1);
    let http = std::fs::read_to_string(cluster.state.join("http.addr"))
        .unwrap()
        .trim()
        .to_string();
    let stderr = |cmd: &mut std::process::Command| {
        let out = run(cmd);
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = stderr(cluster.job().args(["status", "foo"]));
    assert!(e.contains("expected an id such as job-4"), "{e}");
    // The web UI's port given as the coordinator's.
    let e = stderr(quern().args(["job", "list", "--coordinator", &http]));
    assert!(e.contains("web UI's port"), "{e}");
    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = stderr(quern().args(["job", "list", "--coordinator", &format!("127.0.0.1:{port}")]));
    assert!(
        e.contains("connection refused") && e.contains("Is the cluster running"),
        "{e}"
    );
    assert_eq!(e.matches("Connection refused").count(), 0, "{e}");
    // A directory where a file is wanted.
    let e = stderr(quern().args(["fs", "cat"]).arg(cluster.dir.path()));
    assert!(
        e.contains("is a directory") && e.contains("quern fs ls"),
        "{e}"
    );
    // A setup failure is said once.
    let not_a_model = cluster.dir.path().join("model.safetensors");
    std::fs::write(&not_a_model, b"not a model").unwrap();
    let e = stderr(
        quern()
            .args(["run", "--local", "photos", "--param"])
            .arg(format!("model={}", not_a_model.display()))
            .arg("--input")
            .arg(cluster.dir.path())
            .arg("--output")
            .arg(cluster.dir.path().join("out")),
    );
    assert_eq!(e.matches("setup failed").count(), 1, "{e}");
    // Schedules: cron macros, one folder for every run, a backfill into the future.
    let schedule = |name: &str, cron: &str, output: &str| {
        run(quern()
            .args(["schedule", "add", name, "--cron", cron, "--job", "views"])
            .arg("--input")
            .arg(cluster.dir.path())
            .args(["--output", output])
            .env("QUERN_COORDINATOR", &cluster.addr))
    };
    let daily = schedule("daily", "@daily", "/o/{{date}}");
    assert!(daily.status.success(), "{daily:?}");
    let listed: serde_json::Value = serde_json::from_str(&ok(quern()
        .args(["schedule", "list", "-o", "json"])
        .env("QUERN_COORDINATOR", &cluster.addr)))
    .unwrap();
    assert_eq!(listed[0]["cron"], "@daily", "{listed}");
    assert_eq!(listed[0]["template"]["output"], "/o/{{date}}", "{listed}");
    let e =
        String::from_utf8_lossy(&schedule("hourly", "@hourly", "/o/{{date}}").stderr).into_owned();
    assert!(e.contains("the same folder"), "{e}");
    let e = stderr(
        quern()
            .args([
                "backfill",
                "daily",
                "--from",
                "2026-01-01",
                "--to",
                "2099-12-31",
            ])
            .env("QUERN_COORDINATOR", &cluster.addr),
    );
    assert!(e.contains("into the future"), "{e}");
    // A schedule run by hand for one of its logical times, even one that is not due.
    let log = cluster.dir.path().join("access.log");
    ok(quern()
        .args(["gen", "weblog", "--size", "16KiB", "--out"])
        .arg(&log));
    let manual = format!("{}/manual/{{{{date}}}}", cluster.dir.path().display());
    ok(quern()
        .args([
            "schedule", "add", "manual", "--cron", "@daily", "--job", "views", "--input",
        ])
        .arg(&log)
        .args(["--output", &manual])
        .env("QUERN_COORDINATOR", &cluster.addr));
    ok(quern()
        .args(["schedule", "run", "manual", "--at", "2026-11-30"])
        .env("QUERN_COORDINATOR", &cluster.addr));
    assert!(cluster
        .dir
        .path()
        .join("manual/2026-11-30/_SUCCESS")
        .exists());
    let e = stderr(
        quern()
            .args(["schedule", "run", "manual", "--at", "2026-11-30T05:00"])
            .env("QUERN_COORDINATOR", &cluster.addr),
    );
    assert!(e.contains("not a logical time"), "{e}");
    // A quern.toml in the working directory: under the environment, over the defaults.
    let cfg_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        cfg_dir.path().join("quern.toml"),
        format!(
            "coordinator = \"{}\"\n[submit]\nreducers = 3\n",
            cluster.addr
        ),
    )
    .unwrap();
    let in_cfg = || {
        let mut c = quern();
        c.current_dir(cfg_dir.path())
            .env_remove("QUERN_CONFIG")
            .env_remove("QUERN_COORDINATOR")
            .env_remove("QUERN_REDUCERS");
        c
    };
    assert!(ok(in_cfg().args(["job", "list"])).starts_with("ID"));
    let shown: serde_json::Value =
        serde_json::from_str(&ok(in_cfg().args(["config", "show", "-o", "json"]))).unwrap();
    let setting = |key: &str| {
        shown["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == key)
            .unwrap()
            .clone()
    };
    assert_eq!(setting("submit.reducers")["value"], "3", "{shown}");
    assert!(setting("coordinator")["source"]
        .as_str()
        .unwrap()
        .starts_with("file"));
    let overridden: serde_json::Value = serde_json::from_str(&ok(in_cfg()
        .env("QUERN_REDUCERS", "5")
        .args(["config", "show", "-o", "json"])))
    .unwrap();
    let reducers = overridden["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "submit.reducers")
        .unwrap()
        .clone();
    assert_eq!(
        (reducers["value"].as_str(), reducers["source"].as_str()),
        (Some("5"), Some("environment"))
    );
    std::fs::write(cfg_dir.path().join("quern.toml"), "colour = 1\n").unwrap();
    let e = stderr(in_cfg().args(["job", "list"]));
    assert!(e.contains("unknown setting \"colour\""), "{e}");
    // The coordinator of a local cluster logs to its state directory, not the terminal.
    let log = std::fs::read_to_string(cluster.state.join("logs/coordinator.log")).unwrap();
    assert!(
        log.contains("coordinator listening") && !log.contains('\x1b'),
        "{log}"
    );
    // Health checks, no token needed.
    assert_eq!(http_get(&http, "/healthz", None).0, 200);
    let (code, body) = http_get(&http, "/readyz", None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"workers_alive\":1"), "{body}");
}

/// Shell completions and man pages come from the same definitions as the parser, so they
/// cover every command.
#[test]
fn completions_and_man_pages_cover_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(quern().args(["completions", shell]));
        for word in ["submit", "backfill", "schedule", "reducers"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    ok(quern().args(["man", "--out"]).arg(dir.path()));
    let submit = std::fs::read_to_string(dir.path().join("quern-job-submit.1")).unwrap();
    assert!(
        submit.contains("reducers") && submit.contains("quern job submit"),
        "{submit}"
    );
    for page in [
        "quern.1",
        "quern-schedule-add.1",
        "quern-fs-ls.1",
        "quern-completions.1",
    ] {
        assert!(dir.path().join(page).exists(), "{page}");
    }
}

/// Incremental runs (`job submit --from`) on a cluster: over a log that grew (an appended
/// tail, a new compressed file), the output is byte for byte that of one full `run --local`
/// over all of it, manifest and state included; a covered file that shrank is refused naming
/// it, and `--full-if-changed` runs in full with a warning.
#[test]
fn incremental_runs_on_a_cluster_match_one_full_run() {
    use std::io::Write;
    let cluster = Cluster::start(2);
    let dir = cluster.dir.path();
    let all = dir.join("all.log");
    ok(quern()
        .args(["gen", "weblog", "--size", "768KiB", "--seed", "5", "--out"])
        .arg(&all));
    let text = std::fs::read(&all).unwrap();
    let cut = text[..text.len() * 6 / 10]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    let log = dir.join("log");
    std::fs::create_dir_all(&log).unwrap();
    std::fs::write(log.join("a.log"), &text[..cut]).unwrap();
    let jobs = ["views", "top-photos", "endpoint-stats", "wordcount"];
    for job in jobs {
        ok(cluster.job().arg("submit").args(spec_args(
            job,
            &log,
            &dir.join(format!("{job}-0")),
            3,
        )));
    }
    // The log grows: its tail is appended, and a compressed file arrives.
    std::fs::OpenOptions::new()
        .append(true)
        .open(log.join("a.log"))
        .unwrap()
        .write_all(&text[cut..])
        .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&text[..text.len() / 5]).unwrap();
    std::fs::write(log.join("b.log.gz"), gz.finish().unwrap()).unwrap();
    for job in jobs {
        let next = dir.join(format!("{job}-1"));
        let stdout = ok(cluster
            .job()
            .arg("submit")
            .args(spec_args(job, &log, &next, 3))
            .arg("--from")
            .arg(dir.join(format!("{job}-0"))));
        let c = counters(&stdout);
        assert!(c["state_input_records"] > 0, "{job}: {stdout}");
        assert!(
            c["map_input_bytes"] < text.len() as u64,
            "{job} read only what is new: {stdout}"
        );
        let full = dir.join(format!("{job}-full"));
        ok(quern()
            .args(["run", "--local"])
            .args(spec_args(job, &log, &full, 3)));
        let (got, want) = (read_output(&next), read_output(&full));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            want.keys().collect::<Vec<_>>()
        );
        assert!(got.keys().any(|k| k.starts_with("_state/part-")), "{job}");
        for (name, bytes) in &want {
            assert!(
                got[name] == *bytes,
                "{job}: {name} differs from the full run"
            );
        }
    }

    // a.log is cut short: refused, naming the file; with --full-if-changed, run in full.
    std::fs::write(log.join("a.log"), &text[..cut]).unwrap();
    let out = run(cluster
        .job()
        .arg("submit")
        .args(spec_args("top-photos", &log, &dir.join("refused"), 3))
        .arg("--from")
        .arg(dir.join("top-photos-1")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("a.log shrank") && err.contains("--full-if-changed"),
        "{err}"
    );
    assert!(!dir.join("refused").exists());
    let out = run(cluster
        .job()
        .arg("submit")
        .args(spec_args("top-photos", &log, &dir.join("in-full"), 3))
        .args(["--full-if-changed", "--from"])
        .arg(dir.join("top-photos-1")));
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: runs in full") && err.contains("shrank"),
        "{err}"
    );
    ok(quern().args(["run", "--local"]).args(spec_args(
        "top-photos",
        &log,
        &dir.join("in-full-oracle"),
        3,
    )));
    assert_eq!(
        read_output(&dir.join("in-full")),
        read_output(&dir.join("in-full-oracle"))
    );
}
