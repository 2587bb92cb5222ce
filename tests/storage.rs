//! Jobs over real distributed storage: input in SeaweedFS, output in S3 (SeaweedFS's gateway),
//! map tasks placed beside their chunks, and reads that survive a killed volume server.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::*;

fn put(local: &Path, url: &str, chunk_mb: &str, replication: &str, env: &[(&str, &str)]) {
    ok(quern()
        .args(["fs", "put"])
        .arg(local)
        .arg(url)
        .env("QUERN_SEAWEEDFS_CHUNK_MB", chunk_mb)
        .env("QUERN_SEAWEEDFS_REPLICATION", replication)
        .envs(env.iter().copied()));
}

fn remote_output(url: &str, env: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for name in [
        "part-00000",
        "part-00001",
        "part-00002",
        "_MANIFEST.json",
        "_SUCCESS",
    ] {
        let res = run(quern()
            .args(["fs", "cat", &format!("{url}/{name}")])
            .envs(env.iter().copied()));
        if res.status.success() {
            out.insert(name.to_string(), res.stdout);
        }
    }
    out
}

/// The local run's output over `log` (its manifest without the coverage, which names the
/// local file).
fn oracle(log: &Path, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let out = dir.join("oracle");
    ok(quern()
        .args(["run", "--local", "views", "--input"])
        .arg(log)
        .arg("--output")
        .arg(&out)
        .args(["--reducers", "3"]));
    read_output_uncovered(&out)
}

#[test]
fn views_reads_seaweedfs_writes_s3_runs_data_local_and_matches_the_oracle() {
    let (Some(filer), Some(volumes), Some(_)) = (
        seaweedfs_var("QUERN_SEAWEEDFS_FILER"),
        seaweedfs_var("QUERN_VOLUME_SERVERS"),
        seaweedfs_var("QUERN_S3_ENDPOINT"),
    ) else {
        return;
    };
    let inputs = inputs("12MiB");
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        inputs.dir.path().file_name().unwrap().to_string_lossy()
    );
    let input = format!("seaweedfs://{filer}/it/{run_id}/access.log");
    // 1 MiB chunks, one replica each: every chunk lives on exactly one volume server.
    put(&inputs.log, &input, "1", "000", &[]);
    let hosts: Vec<String> = volumes.split(',').map(str::to_string).collect();
    let cluster = Cluster::start_with(Options {
        workers: 3,
        storage_hosts: &hosts,
        ..Options::default()
    });
    let output = format!("s3://quern-test/it/{run_id}/views");
    let stdout = ok(cluster.job().args([
        "submit",
        "views",
        "--input",
        &input,
        "--output",
        &output,
        "--reducers",
        "3",
    ]));
    let c = counters(&stdout);
    let (local, _, maps) = assert_mostly_data_local(&c);
    assert!(maps >= 12, "one map per chunk: {c:?}");
    // A map beside its chunk's volume server reads the chunk (1 MiB, but for the last) from
    // the server's files; the ends of lines that run into the next chunk may come over HTTP.
    let size = std::fs::metadata(&inputs.log).unwrap().len();
    let direct = c.get("map_input_short_circuit_bytes").copied().unwrap_or(0);
    assert!(
        direct > 0 && direct >= local.saturating_sub(1) << 20 && direct <= size + size / 4,
        "{c:?}"
    );
    let got = remote_output(&output, &[]);
    let want = oracle(&inputs.log, inputs.dir.path());
    let parts = |m: &BTreeMap<String, Vec<u8>>| -> Vec<(String, Vec<u8>)> {
        m.iter()
            .filter(|(n, _)| n.starts_with("part-"))
            .map(|(n, d)| (n.clone(), d.clone()))
            .collect()
    };
    assert!(parts(&got) == parts(&want), "not the oracle's part files");
    // The manifest covers the input by its URL, up to its size.
    let manifest: serde_json::Value = serde_json::from_slice(&got["_MANIFEST.json"]).unwrap();
    let covered = &manifest["coverage"][0];
    assert_eq!(covered["path"], input.as_str());
    assert_eq!(
        covered["end"],
        std::fs::metadata(&inputs.log).unwrap().len()
    );
    assert!(covered["mtime_unix_ms"].as_u64().is_some(), "{covered}");
}

#[test]
fn loose_files_in_seaweedfs_are_read_many_to_a_task_beside_their_volume_servers() {
    let (Some(filer), Some(volumes)) = (
        seaweedfs_var("QUERN_SEAWEEDFS_FILER"),
        seaweedfs_var("QUERN_VOLUME_SERVERS"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("photos");
    for i in 0..120u32 {
        let sub = src.join(format!("day-{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        let body: Vec<u8> = (0..2_000 + i * 37).map(|b| (b ^ i) as u8).collect();
        std::fs::write(sub.join(format!("p{i:03}.jpg")), body).unwrap();
    }
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        dir.path().file_name().unwrap().to_string_lossy()
    );
    let input = format!("seaweedfs://{filer}/it/{run_id}/photos");
    // The whole directory in one put; one replica each, so each file lives on one server.
    put(&src, &input, "1", "000", &[]);
    let hosts: Vec<String> = volumes.split(',').map(str::to_string).collect();
    let cluster = Cluster::start_with(Options {
        workers: 3,
        storage_hosts: &hosts,
        ..Options::default()
    });
    let args = ["tar-index", "--split-size", "32KiB", "--input", &input];
    let out = dir.path().join("index");
    let stdout = ok(cluster
        .job()
        .arg("submit")
        .args(args)
        .arg("--output")
        .arg(&out));
    let c = counters(&stdout);
    let (_, _, maps) = assert_mostly_data_local(&c);
    assert!((4..60).contains(&maps), "120 files in {maps} maps: {c:?}");
    let local = dir.path().join("local");
    ok(quern()
        .args(["run", "--local"])
        .args(args)
        .arg("--output")
        .arg(&local));
    let parts = |d: &Path| {
        let mut m = read_output(d);
        m.retain(|k, _| k.starts_with("part-"));
        m
    };
    assert!(
        parts(&out) == parts(&local),
        "cluster output differs from run --local"
    );
    // One line per file, named by its path under the input.
    let index = String::from_utf8(parts(&out).into_values().flatten().collect()).unwrap();
    assert_eq!(index.lines().count(), 120, "{index}");
    assert!(
        index.contains(&format!("{input}/day-1/p004.jpg\tday-1/p004.jpg\t2148\t")),
        "{index}"
    );
}

/// `views` over an 8 MiB log in `sw` with two replicas of every chunk ("001": another server
/// in the same rack), submitted detached in 128 KiB splits to a 2-worker cluster (with `sw`'s
/// environment and `extra`), its workers beside volume servers 1 and 2 where `beside`.
struct ReplicatedViews {
    inputs: Inputs,
    cluster: Cluster,
    id: String,
    out: std::path::PathBuf,
}

impl ReplicatedViews {
    fn submit(
        sw: &OwnSeaweedFs,
        dir: &str,
        beside: bool,
        extra: &[(&str, &str)],
    ) -> ReplicatedViews {
        let mut env: Vec<(&str, &str)> = sw
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let filer = &sw.env["QUERN_SEAWEEDFS_FILER"];
        let inputs = inputs("8MiB");
        let input = format!("seaweedfs://{filer}/{dir}/access.log");
        put(&inputs.log, &input, "1", "001", &env);
        let hosts: Vec<String> = sw.env["QUERN_VOLUME_SERVERS"]
            .split(',')
            .map(str::to_string)
            .collect();
        env.extend_from_slice(extra);
        let cluster = Cluster::start_with(Options {
            workers: 2,
            storage_hosts: if beside { &hosts[1..] } else { &[] },
            env: &env,
            ..Options::default()
        });
        let out = cluster.dir.path().join("views");
        let id = ok(cluster
            .job()
            .args([
                "submit",
                "--detach",
                "views",
                "--input",
                &input,
                "--reducers",
                "3",
                "--split-size",
                "128KiB",
                "--output",
            ])
            .arg(&out))
        .trim()
        .to_string();
        ReplicatedViews {
            inputs,
            cluster,
            id,
            out,
        }
    }

    /// Checks that the job, ended with `status`, succeeded with the oracle's records.
    fn check(&self, status: &str) {
        assert!(status.contains("state:    succeeded"), "{status}");
        assert_eq!(
            read_output_uncovered(&self.out),
            oracle(&self.inputs.log, self.inputs.dir.path())
        );
    }
}

#[test]
fn a_volume_server_killed_mid_job_fails_over_to_a_replica() {
    if seaweedfs_var("QUERN_SEAWEEDFS_FILER").is_none() {
        return;
    }
    let sw = OwnSeaweedFs::start(19600);
    let job = ReplicatedViews::submit(&sw, "failover", true, &[]);
    sw.kill_volume(0);
    job.check(&ok(job.cluster.job().args(["wait", &job.id])));
}

/// A volume server that stops answering mid-job (alive, its connections open, no bytes sent:
/// SIGSTOP) holds a read no longer than the storage client's I/O timeout (here 2 s): reads of
/// its chunks go on to their other replica, and the job ends with the oracle's records.
#[test]
fn a_volume_server_that_stops_answering_mid_job_is_read_around() {
    if seaweedfs_var("QUERN_SEAWEEDFS_FILER").is_none() {
        return;
    }
    let sw = OwnSeaweedFs::start(19640);
    // The cluster's reads time out after 2 s and go over HTTP, to the replicas in the
    // master's order: no worker is beside a volume server (a copy beside the map would be
    // read from its volume file, or else first over HTTP).
    let job = ReplicatedViews::submit(
        &sw,
        "stalled",
        false,
        &[
            ("QUERN_SEAWEEDFS_IO_TIMEOUT_S", "2"),
            ("QUERN_SHORT_CIRCUIT_READS", "0"),
        ],
    );
    let _stopped = sw.stop_volume(0);
    // A bound on the wait, not on speed: without the timeout a stuck read holds its map for
    // the client's whole-request limit (5 minutes).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let status = loop {
        let status = ok(job.cluster.job().args(["status", &job.id]));
        if !status.contains("state:    running") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after 90 s with volume server 0 stopped: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    job.check(&status);
}

/// Issue 15 on the remote backends: a directory of nested, compressed and hidden files in
/// SeaweedFS and in S3 reads as the plain log does.
#[test]
fn nested_and_compressed_inputs_read_alike_on_seaweedfs_and_s3() {
    let (Some(filer), Some(_)) = (
        seaweedfs_var("QUERN_SEAWEEDFS_FILER"),
        seaweedfs_var("QUERN_S3_ENDPOINT"),
    ) else {
        return;
    };
    let inputs = inputs("2MiB");
    let dir = inputs.dir.path();
    let text = std::fs::read(&inputs.log).unwrap();
    let half = text.len() / 2;
    let cut = half + text[half..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let gz = dir.join("a.log.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &text[..cut]).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    let zst = dir.join("b.2019.log.zst");
    std::fs::write(&zst, zstd::encode_all(&text[cut..], 3).unwrap()).unwrap();
    let noise = dir.join("noise");
    std::fs::write(&noise, b"GET /photos/1.jpg 200\n".repeat(100)).unwrap();
    let run_id = format!(
        "{}-{}",
        std::process::id(),
        dir.file_name().unwrap().to_string_lossy()
    );
    let want: Vec<_> = oracle(&inputs.log, dir)
        .into_iter()
        .filter(|(n, _)| n.starts_with("part-"))
        .collect();
    for root in [
        format!("seaweedfs://{filer}/it/{run_id}/logs"),
        format!("s3://quern-test/it/{run_id}/logs"),
    ] {
        put(&gz, &format!("{root}/day one/a.log.gz"), "1", "000", &[]);
        put(
            &zst,
            &format!("{root}/day.two/deep/b.2019.log.zst"),
            "1",
            "000",
            &[],
        );
        put(
            &noise,
            &format!("{root}/_temporary/part-00000"),
            "1",
            "000",
            &[],
        );
        put(&noise, &format!("{root}/day one/.hidden"), "1", "000", &[]);
        let out = dir.join(format!("out-{}", root.split(':').next().unwrap()));
        let stdout = ok(quern()
            .args([
                "run",
                "--local",
                "views",
                "--reducers",
                "3",
                "--input",
                &root,
            ])
            .arg("--output")
            .arg(&out));
        assert!(
            counters(&stdout)["map_input_compressed_bytes"] > 0,
            "{stdout}"
        );
        let got: Vec<_> = read_output(&out)
            .into_iter()
            .filter(|(n, _)| n.starts_with("part-"))
            .collect();
        assert!(got == want, "{root}: not the plain log's output");
        let not_read = not_read(&out);
        assert_eq!(
            not_read,
            [
                format!("{root}/_temporary"),
                format!("{root}/day one/.hidden")
            ],
            "{root}"
        );

        // A new file arrives: a run --from that output reads only it (the compressed files it
        // covered are checked by their fingerprints, not read), and writes what a full run does.
        put(&noise, &format!("{root}/day.three/c.log"), "1", "000", &[]);
        let scheme = root.split(':').next().unwrap();
        let next = dir.join(format!("next-{scheme}"));
        let stdout = ok(quern()
            .args([
                "run",
                "--local",
                "views",
                "--reducers",
                "3",
                "--input",
                &root,
            ])
            .arg("--output")
            .arg(&next)
            .arg("--from")
            .arg(&out));
        let c = counters(&stdout);
        assert_eq!(c.get("map_input_compressed_bytes"), None, "{stdout}");
        assert_eq!(c["map_input_bytes"], 2200, "{stdout}");
        let full = dir.join(format!("full-{scheme}"));
        ok(quern()
            .args([
                "run",
                "--local",
                "views",
                "--reducers",
                "3",
                "--input",
                &root,
            ])
            .arg("--output")
            .arg(&full));
        assert_eq!(read_output(&next), read_output(&full), "{root}");
    }
}
