//! A cluster across network namespaces (`scripts/netcluster.sh`): a coordinator host, three
//! worker hosts and a client host, each with an address of its own on a virtual bridge. Jobs
//! are submitted from the client's namespace; each output must equal `run --local`'s byte for
//! byte: without faults (when shuffle bytes must cross the hosts' virtual links), with a worker
//! host's link down mid-job, with a worker and the coordinator cut off from each other one
//! way, with the coordinator's host restarted, and over a link with 100 ms delay and 5% loss.
//! With a worker host lost for the rest of a job while reducers fetch from it. With SeaweedFS,
//! also with input in it, and with a worker host lost for the rest of a job, volume server and
//! all, while maps read the input's other replicas.
//! Needs root; everything it makes is removed at the end, also when it fails.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const HOSTS: usize = 4;
/// The job every run of the test submits (13 maps of 2 MiB over the 24 MiB log).
const VIEWS: [&str; 5] = ["views", "--reducers", "3", "--split-size", "2MiB"];

/// A network-namespace cluster, brought down on drop.
struct NetCluster {
    dir: tempfile::TempDir,
    env: std::collections::BTreeMap<String, String>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netcluster.sh")
}

impl NetCluster {
    /// Brings up `hosts` hosts; with `seaweedfs`, a SeaweedFS across them too; `worker_env`
    /// (lines of `VAR=value`) is added to every worker's environment.
    fn up(hosts: usize, seaweedfs: bool, worker_env: &str) -> NetCluster {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(script())
            .args(["up", &hosts.to_string()])
            .arg(dir.path())
            .env("QUERN", env!("CARGO_BIN_EXE_quern"))
            // Maps and fetches take a while, so that a link can go down while they run.
            .env(
                "FAILPOINTS",
                "map.start=sleep(300);reduce.fetch=sleep(1500)",
            )
            .env("QN_SEAWEEDFS", if seaweedfs { "1" } else { "0" })
            .env("QN_WORKER_ENV", worker_env)
            .output()
            .expect("scripts/netcluster.sh runs");
        // Down on drop from here on, also after an `up` that failed halfway.
        let mut c = NetCluster {
            dir,
            env: Default::default(),
        };
        assert!(
            out.status.success(),
            "netcluster up failed: {}{}",
            String::from_utf8_lossy(&out.stderr),
            c.logs()
        );
        c.env = quern_testkit::exports(&String::from_utf8_lossy(&out.stdout));
        c
    }

    fn var(&self, k: &str) -> &str {
        self.env.get(k).expect(k)
    }

    /// `quern ARGS` run in the client's namespace.
    fn client(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.var("QUERN_NETNS")])
            .arg(env!("CARGO_BIN_EXE_quern"))
            .env("QUERN_COORDINATOR", self.var("QUERN_COORDINATOR"))
            .env("QUERN_TOKEN", self.var("QUERN_TOKEN"));
        c
    }

    /// `netcluster.sh VERB DIR ARGS...`: a change to the virtual network.
    fn net(&self, verb: &str, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .arg(verb)
            .arg(self.dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Bytes received and sent on host `i`'s link, as its namespace counts them.
    fn link_bytes(&self, i: usize) -> (u64, u64) {
        let ns = self.var("QUERN_NETNS").trim_end_matches(char::is_numeric);
        let read = |what: &str| -> u64 {
            let out = Command::new("ip")
                .args(["netns", "exec", &format!("{ns}{i}")])
                .args(["cat", &format!("/sys/class/net/eth0/statistics/{what}")])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0)
        };
        (read("rx_bytes"), read("tx_bytes"))
    }

    /// Seconds a TCP connection from host `i` to the coordinator takes to open (one round
    /// trip), as curl measures it.
    fn connect_secs(&self, i: usize) -> f64 {
        let ns = self.var("QUERN_NETNS").trim_end_matches(char::is_numeric);
        let out = Command::new("ip")
            .args(["netns", "exec", &format!("{ns}{i}")])
            .args(["curl", "-s", "-o", "/dev/null", "--max-time", "5"])
            .args(["-w", "%{time_connect}", self.var("QUERN_COORDINATOR")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0.0)
    }

    /// The link relay's figures for host `i` (`scripts/linkem.py`): frames forwarded and
    /// dropped.
    fn relayed(&self, i: usize) -> (u64, u64) {
        let p = self.dir.path().join(format!("h{i}/linkem.stats"));
        let text = std::fs::read_to_string(&p).unwrap_or_default();
        let word = |k: &str| -> u64 {
            let mut it = text.split_whitespace();
            it.find(|w| *w == k);
            it.next().and_then(|v| v.parse().ok()).unwrap_or(0)
        };
        (word("forwarded"), word("dropped"))
    }

    /// The daemons' logs, for a failure message.
    fn logs(&self) -> String {
        let mut all = String::new();
        for i in 0..HOSTS {
            for name in ["coordinator.log", "coordinator-restarted.log", "worker.log"] {
                let p = self.dir.path().join(format!("h{i}")).join(name);
                if let Ok(text) = std::fs::read_to_string(&p) {
                    let tail: Vec<&str> = text.lines().rev().take(15).collect();
                    all += &format!("\n== {} ==\n", p.display());
                    all += &tail.into_iter().rev().collect::<Vec<_>>().join("\n");
                }
            }
        }
        all
    }
}

impl Drop for NetCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(self.dir.path())
            .output();
    }
}

/// Whether this test can make namespaces here; under CI it must.
fn can_run() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs as root: the network-namespace cluster test must run there"
        );
        eprintln!("not root; skipping the network-namespace cluster test");
    }
    root
}

/// When a fault comes.
#[derive(Clone, Copy)]
enum When {
    /// This many milliseconds after the submission (while maps run).
    After(u64),
    /// Once every map is done (while reducers fetch).
    MapsDone,
}

/// `quern job status ID` from the client's namespace, asked until answered (a restarted
/// coordinator takes a moment to listen again).
fn status(c: &NetCluster, id: &str) -> String {
    for _ in 0..50 {
        let out = c.client().args(["job", "status", id]).output().unwrap();
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no answer about {id}{}", c.logs());
}

/// Whether a `job status` answer shows every map done (`maps:     N/N`).
fn all_maps_done(status: &str) -> bool {
    let (done, total) = maps_progress(status);
    total > 0 && done == total
}

/// How long a fault lasts.
#[derive(Clone, Copy)]
enum Lasting {
    /// This many milliseconds.
    Ms(u64),
    /// Until the job has ended.
    JobEnd,
}

/// Submits `views` (with `extra` arguments) over `input` (a file, or a SeaweedFS URL) into
/// `out` from the client's namespace and, while it runs, injects a fault (`fault`: when, the
/// `netcluster.sh` verb and arguments, and those that undo it) and undoes it after `lasting`;
/// checks that the job succeeds with the oracle's bytes (its records only, for input
/// elsewhere than the oracle's). Returns when the fault was undone.
fn run_views(
    c: &NetCluster,
    (input, extra, oracle, out): (&std::ffi::OsStr, &[&str], &Path, &Path),
    fault: Option<(When, &[&str], &[&str])>,
    lasting: Lasting,
) -> Option<std::time::Instant> {
    use std::io::{BufRead, Read};
    let mut job = c.client();
    job.args(["job", "submit"])
        .args(VIEWS)
        .args(extra)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut job = job.spawn().unwrap();
    // `submitted job-N (views)` comes first on stderr; the progress lines after it.
    let mut err = std::io::BufReader::new(job.stderr.take().unwrap());
    let mut first = String::new();
    err.read_line(&mut first).unwrap();
    let id = first
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(id.starts_with("job-"), "{first}{}", c.logs());
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        rest
    });
    if let Some((when, fault, undo)) = fault {
        match when {
            When::After(ms) => std::thread::sleep(std::time::Duration::from_millis(ms)),
            When::MapsDone => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                while !all_maps_done(&status(c, &id)) {
                    assert!(std::time::Instant::now() < deadline, "maps never finished");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
            }
        }
        // Asked before the fault, which may cut the client off.
        let now = status(c, &id);
        assert!(
            now.contains("running"),
            "the job ended before the fault came: {now}"
        );
        c.net(fault[0], &fault[1..]);
        match lasting {
            Lasting::Ms(ms) => {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                c.net(undo[0], &undo[1..]);
            }
            Lasting::JobEnd => {
                // A bound on the wait, not on speed: a read stuck on the lost host would
                // otherwise hold the job (and the suite) for as long as it is stuck.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                loop {
                    let now = status(c, &id);
                    let state = now
                        .lines()
                        .find_map(|l| l.strip_prefix("state:"))
                        .unwrap_or_default()
                        .trim();
                    if ["succeeded", "failed", "killed"].contains(&state) {
                        eprintln!("{now}");
                        break;
                    }
                    assert!(
                        std::time::Instant::now() < deadline,
                        "{id} still {state} 120 s on: {now}{}",
                        c.logs()
                    );
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                c.net(undo[0], &undo[1..]);
            }
        }
    }
    let undone = fault.map(|_| std::time::Instant::now());
    let done = job.wait_with_output().unwrap();
    let stderr = drain.join().unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(stdout.contains("succeeded"), "{stdout}{stderr}{}", c.logs());
    if Path::new(input).exists() {
        assert_eq!(read_output(out), read_output(oracle), "{}", c.logs());
    } else {
        assert_eq!(
            read_output_uncovered(out),
            read_output_uncovered(oracle),
            "{}",
            c.logs()
        );
    }
    undone
}

/// Runs `views` over the SeaweedFS file `url` into `out`, checks it ends with the oracle's
/// records (the coverage names the SeaweedFS file), and returns its counters.
fn views_over(c: &NetCluster, url: &str, oracle: &Path, out: &Path) -> BTreeMap<String, u64> {
    let done = c
        .client()
        .args(["job", "submit"])
        .args(VIEWS)
        .args(["--input", url, "--output"])
        .arg(out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
    assert!(stdout.contains("succeeded"), "{stdout}{}", c.logs());
    assert_eq!(
        read_output_uncovered(out),
        read_output_uncovered(oracle),
        "{}",
        c.logs()
    );
    counters(&stdout)
}

/// `quern fs ARGS` from the client's namespace, with the cluster's SeaweedFS master.
fn fs(c: &NetCluster) -> Command {
    let mut cmd = c.client();
    cmd.env("QUERN_SEAWEEDFS_MASTER", c.var("QUERN_SEAWEEDFS_MASTER"))
        .arg("fs");
    cmd
}

/// The volume servers holding each chunk of `url`, as `quern fs stat` reports them.
fn piece_hosts(c: &NetCluster, url: &str) -> Vec<Vec<String>> {
    let stat = ok(fs(c).args(["stat", "--output", "json", url]));
    let v: serde_json::Value = serde_json::from_str(&stat).unwrap();
    v["pieces"]
        .as_array()
        .expect("pieces")
        .iter()
        .map(|p| {
            p["hosts"]
                .as_array()
                .expect("hosts")
                .iter()
                .map(|h| h.as_str().expect("host").to_string())
                .collect()
        })
        .collect()
}

/// `quern fs put LOCAL URL` from the client's namespace, in chunks of 2 MiB with SeaweedFS
/// replication `replication`.
fn put(c: &NetCluster, local: &Path, url: &str, replication: &str) {
    ok(fs(c)
        .env("QUERN_SEAWEEDFS_CHUNK_MB", "2")
        .env("QUERN_SEAWEEDFS_REPLICATION", replication)
        .arg("put")
        .arg(local)
        .arg(url));
}

#[test]
fn jobs_across_namespace_hosts_match_the_oracle_through_network_faults() {
    if !can_run() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("access.log");
    ok(quern()
        .args(["gen", "weblog", "--size", "24MiB", "--seed", "5", "--out"])
        .arg(&log));
    let oracle = data.path().join("oracle");
    ok(quern()
        .args(["run", "--local"])
        .args(VIEWS)
        .arg("--input")
        .arg(&log)
        .arg("--output")
        .arg(&oracle));
    // SeaweedFS across the hosts where scripts/test.sh has installed it (under CI it has).
    let seaweedfs = seaweedfs_var("QUERN_SEAWEEDFS_FILER").is_some();
    let c = NetCluster::up(HOSTS, seaweedfs, "");
    let paths = |name: &str| data.path().join(name);

    // No fault: the shuffle crosses the virtual links, every worker host sends and receives.
    let before: Vec<(u64, u64)> = (1..HOSTS).map(|i| c.link_bytes(i)).collect();
    run_views(
        &c,
        (log.as_os_str(), &[], &oracle, &paths("plain")),
        None,
        Lasting::Ms(0),
    );
    for (i, (rx0, tx0)) in before.iter().enumerate() {
        let (rx, tx) = c.link_bytes(i + 1);
        eprintln!(
            "host h{}: received {} B, sent {} B",
            i + 1,
            rx - rx0,
            tx - tx0
        );
        assert!(
            rx - rx0 > 10_000 && tx - tx0 > 10_000,
            "host h{} idle",
            i + 1
        );
    }
    if seaweedfs {
        // The log in SeaweedFS, 2 MiB chunks on the worker hosts' volume servers: maps run
        // beside their chunks, and the output is still the oracle's.
        let url = format!(
            "seaweedfs://{}/in/access.log",
            c.var("QUERN_SEAWEEDFS_FILER")
        );
        put(&c, &log, &url, "000");
        let n = views_over(&c, &url, &oracle, &paths("seaweedfs"));
        let (local, moved, maps) = assert_mostly_data_local(&n);
        eprintln!(
            "SeaweedFS input: {local} of {maps} maps data-local, {moved} moved off a backlog"
        );
    }
    let at = When::After(700);
    // Each fault comes 0.7 s into a job (while maps run) and is undone after the time given,
    // longer than the worker timeout (3 s):
    // - a worker host's link goes down, then up;
    // - a worker is cut off from the coordinator (its peers still fetch from it);
    // - the coordinator is cut off from a worker (the worker's heartbeats get no answer);
    // - the coordinator's host loses power and its daemon starts again on the same state
    //   (the restart is the fault; bringing its link up again changes nothing).
    // - a worker host's link goes down once every map is done, while reducers fetch;
    // - a worker host's link delays what it sends by 100 ms and loses 5% of it.
    type Fault<'a> = (&'a str, When, &'a [&'a str], &'a [&'a str], u64);
    let slow: &[&str] = &["netem", "2", "delay", "100ms", "loss", "5%"];
    // The slow link is what it says: a connection from that host takes a round trip of at
    // least 100 ms to open (under 100 ms without it).
    c.net(slow[0], &slow[1..]);
    let (slow_rtt, rtt) = (c.connect_secs(2), c.connect_secs(1));
    c.net("netem", &["2", "off"]);
    eprintln!("connect from h2 over the slow link: {slow_rtt:.3} s; from h1: {rtt:.3} s");
    assert!(slow_rtt >= 0.1 && rtt < 0.1, "{slow_rtt} s / {rtt} s");
    let faults: [Fault<'_>; 6] = [
        (
            "link-cut",
            at,
            &["link", "2", "down"],
            &["link", "2", "up"],
            5000,
        ),
        (
            "shuffle-cut",
            When::MapsDone,
            &["link", "1", "down"],
            &["link", "1", "up"],
            5000,
        ),
        (
            "worker-to-coordinator",
            at,
            &["block", "3", "0"],
            &["unblock", "3", "0"],
            5000,
        ),
        (
            "coordinator-to-worker",
            at,
            &["block", "0", "1"],
            &["unblock", "0", "1"],
            5000,
        ),
        (
            "coordinator-restart",
            at,
            &["restart", "0"],
            &["link", "0", "up"],
            0,
        ),
        ("slow-link", at, slow, &["netem", "2", "off"], 5000),
    ];
    for (name, when, fault, undo, ms) in faults {
        eprintln!("fault: {name}");
        run_views(
            &c,
            (log.as_os_str(), &[], &oracle, &paths(name)),
            Some((when, fault, undo)),
            Lasting::Ms(ms),
        );
    }
    // The coordinator's host partitioned for 30 s from 0.7 s into the job (its cable off the
    // switch: what it and the others send each other is lost on the way, and TCP backs off as
    // it would in a real partition). The workers, declared dead meanwhile, and the client give
    // up on their silent connections (an answer is not waited for past its hold and 10 s; the
    // connections are pinged) and open new ones: the job ends with the oracle's bytes within
    // 15 s of the partition's end. Before, a worker's heartbeat sat in TCP's retransmission
    // backoff and the worker came back 26 s after a 30 s partition.
    eprintln!("fault: coordinator-partition");
    let mended = run_views(
        &c,
        (
            log.as_os_str(),
            &[],
            &oracle,
            &paths("coordinator-partition"),
        ),
        Some((at, &["cut", "0"], &["mend", "0"])),
        Lasting::Ms(30_000),
    )
    .expect("a fault");
    let late = mended.elapsed();
    eprintln!("the job ended {late:?} after the partition");
    assert!(
        late < std::time::Duration::from_secs(15),
        "the job ended {late:?} after the partition{}",
        c.logs()
    );
    // The slow link carried the job's traffic and lost some of it.
    let (forwarded, dropped) = c.relayed(2);
    eprintln!("slow link: {forwarded} frames forwarded, {dropped} dropped");
    assert!(forwarded > 100 && dropped > 0, "{forwarded} / {dropped}");
    // A worker host lost for good while reducers fetch from it: h1's link down once every map
    // is done, until the job has ended, with no backup attempts to stand in for a stuck
    // fetch. The reducers' fetches from h1 must fail (their connections are pinged, and
    // opening one gives up after 10 s), so that its maps run again elsewhere; before, a fetch
    // waited for TCP to give up, and the job ran 75 s, or past 120 s.
    eprintln!("fault: shuffle-host-lost");
    run_views(
        &c,
        (
            log.as_os_str(),
            &["--speculation", "off"],
            &oracle,
            &paths("shuffle-host-lost"),
        ),
        Some((When::MapsDone, &["link", "1", "down"], &["link", "1", "up"])),
        Lasting::JobEnd,
    );
    if seaweedfs {
        // A worker host lost for the rest of a job, volume server and all (Hadoop's classic:
        // a data node dies with its task tracker): the log in two replicas on two hosts
        // ("001"), h2's link down from 0.7 s into the job until it has ended. Its maps run
        // again elsewhere, reads of its chunks go to their other replica, and the job still
        // ends with the oracle's records.
        let url = format!(
            "seaweedfs://{}/in/access-twice.log",
            c.var("QUERN_SEAWEEDFS_FILER")
        );
        put(&c, &log, &url, "001");
        // h2's volume server (the filer's address, host 3 of the bridge's network) holds a
        // copy of some of the chunks, and every chunk has another copy elsewhere.
        let filer = c.var("QUERN_SEAWEEDFS_FILER");
        let h2 = format!(
            "{}.3:8080",
            filer.rsplit_once(".1:").expect("filer address").0
        );
        let pieces = piece_hosts(&c, &url);
        let on_h2 = pieces.iter().filter(|h| h.contains(&h2)).count();
        eprintln!(
            "{on_h2} of {} chunks have a copy on h2 ({h2})",
            pieces.len()
        );
        assert!(on_h2 > 0, "no chunk on {h2}: {pieces:?}");
        assert!(pieces.iter().all(|h| h.len() == 2), "{pieces:?}");
        eprintln!("fault: host-lost (SeaweedFS input, two replicas)");
        run_views(
            &c,
            (
                std::ffi::OsStr::new(&url),
                &[],
                &oracle,
                &paths("host-lost"),
            ),
            Some((at, &["link", "2", "down"], &["link", "2", "up"])),
            Lasting::JobEnd,
        );
        drop(c);
        reads_beside_the_map_over_http(&data, &log, &oracle);
    }
}

/// With short-circuit reads off (volume files the workers cannot read, say), a chunk is read
/// over HTTP from the replica on the map's own host: a job over the log in two replicas moves
/// little more than its shuffle and its remote maps' splits across the worker hosts' links.
/// (Reading in the master's order instead, 27-35 MB crossed them for the 24 MiB log; 0.9-1.0
/// MB now with every map data-local, 0.6-1.0 MB with short-circuit reads on, 9.3-9.5 MB with
/// two maps moved off a backlog to a host without their chunk.)
fn reads_beside_the_map_over_http(data: &tempfile::TempDir, log: &Path, oracle: &Path) {
    let c = NetCluster::up(HOSTS, true, "QUERN_SHORT_CIRCUIT_READS=0");
    let url = format!(
        "seaweedfs://{}/in/access-http.log",
        c.var("QUERN_SEAWEEDFS_FILER")
    );
    put(&c, log, &url, "001");
    let moved = || -> u64 {
        (1..HOSTS)
            .map(|i| {
                let (rx, tx) = c.link_bytes(i);
                rx + tx
            })
            .sum()
    };
    let before = moved();
    let n = views_over(&c, &url, oracle, &data.path().join("http-reads"));
    let moved = moved() - before;
    let remote = n["remote_maps"];
    eprintln!("reads over HTTP: the worker hosts' links carried {moved} B; {remote} remote maps");
    // A remote map's 2 MiB split crosses the links (counted where it is sent and where it
    // arrives); the data-local maps' reads and the shuffle stay under a twelfth of the input.
    let input = std::fs::metadata(log).unwrap().len();
    let allowed = remote * 2 * (2 << 20) + input / 12;
    assert!(
        moved < allowed,
        "{moved} B moved for a {input} B input with {remote} remote maps: {n:?}"
    );
}
