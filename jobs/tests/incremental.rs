//! Incremental runs (`--from`) in `run --local`: a chain of runs over a growing log gives
//! byte for byte the output of one full run over all of it, and inputs that changed in a way
//! a chain cannot continue are refused, naming the file.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use jobs::coverage::Change;
use jobs::gen::{Generator, WeblogGen, WordsGen};
use jobs::local::{run_local, LocalError, LocalReport};
use jobs::plan::PlanError;
use jobs::Registry;
use proptest::prelude::*;
use protocol::JobSpec;

/// `n` generated lines.
fn lines(g: &mut dyn Generator, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        g.line(&mut out);
    }
    out
}

fn gz(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn append(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(data).unwrap();
}

struct Run<'a> {
    job: &'a str,
    input: &'a Path,
    reducers: u32,
    split_size: u64,
}

impl Run<'_> {
    fn spec(&self, output: &Path, from: Option<&Path>) -> JobSpec {
        let mut spec = JobSpec::new(
            self.job,
            vec![self.input.display().to_string()],
            output.display().to_string(),
        );
        spec.reducers = self.reducers;
        spec.split_size = self.split_size;
        if let Some(f) = from {
            spec.from = f.display().to_string();
        }
        spec
    }

    fn go(&self, output: &Path, from: Option<&Path>) -> Result<LocalReport, LocalError> {
        self.go_spec(&self.spec(output, from))
    }

    fn go_spec(&self, spec: &JobSpec) -> Result<LocalReport, LocalError> {
        let work = tempfile::tempdir().unwrap();
        run_local(&Registry::builtin(), spec, work.path(), &mut |_| {})
    }
}

/// Every file under `dir` (parts, state, manifest, markers) with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

fn assert_same_output(chained: &Path, full: &Path) {
    let (a, b) = (files(chained), files(full));
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "the same files"
    );
    for (name, bytes) in &a {
        assert!(
            bytes == &b[name],
            "{} differs between the chain and the full run",
            name.display()
        );
    }
}

#[test]
fn chains_of_runs_match_one_full_run_for_every_aggregation_job() {
    for job in ["views", "top-photos", "endpoint-stats", "wordcount"] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut g: Box<dyn Generator> = if job == "wordcount" {
            Box::new(WordsGen::new(7))
        } else {
            Box::new(WeblogGen::new(7))
        };
        let run = Run {
            job,
            input: &log,
            reducers: 3,
            split_size: 16 * 1024,
        };
        // Hour 0: a plain file and a compressed one.
        append(&log.join("a.log"), &lines(&mut *g, 2000));
        std::fs::write(log.join("b.log.gz"), gz(&lines(&mut *g, 800))).unwrap();
        let out0 = dir.path().join("out-0");
        run.go(&out0, None).unwrap();
        // Hour 1: a.log grows; a new file arrives.
        append(&log.join("a.log"), &lines(&mut *g, 300));
        append(&log.join("c.log"), &lines(&mut *g, 500));
        let out1 = dir.path().join("out-1");
        let r1 = run.go(&out1, Some(&out0)).unwrap();
        assert!(r1.full_because.is_none());
        // Hour 2: both grow, a compressed file arrives in a new subdirectory.
        append(&log.join("a.log"), &lines(&mut *g, 200));
        append(&log.join("c.log"), &lines(&mut *g, 100));
        let nested = zstd::encode_all(&lines(&mut *g, 400)[..], 3).unwrap();
        std::fs::create_dir_all(log.join("2026/11")).unwrap();
        std::fs::write(log.join("2026/11/d.log.zst"), nested).unwrap();
        let out2 = dir.path().join("out-2");
        let r2 = run.go(&out2, Some(&out1)).unwrap();

        let full = dir.path().join("full");
        let rf = run.go(&full, None).unwrap();
        assert_same_output(&out2, &full);
        // The last link read only the new data (and the state), not the history.
        let new_bytes = r2.counters.get("map_input_bytes");
        assert!(
            new_bytes > 0 && new_bytes * 3 < rf.counters.get("map_input_bytes"),
            "{job}: the last run read {new_bytes} bytes of input, the full run {}",
            rf.counters.get("map_input_bytes")
        );
        assert!(r2.counters.get("state_input_records") > 0, "{job}");
        assert_eq!(
            std::fs::read_dir(full.join("_state")).unwrap().count(),
            3,
            "{job}: one state file per reducer"
        );
    }
}

#[test]
fn a_chain_may_change_its_reducer_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut g = WeblogGen::new(3);
    append(&log.join("a.log"), &lines(&mut g, 1500));
    let mut run = Run {
        job: "views",
        input: &log,
        reducers: 2,
        split_size: 1 << 20,
    };
    run.go(&dir.path().join("out-0"), None).unwrap();
    append(&log.join("a.log"), &lines(&mut g, 500));
    run.reducers = 5;
    run.go(&dir.path().join("out-1"), Some(&dir.path().join("out-0")))
        .unwrap();
    run.go(&dir.path().join("full"), None).unwrap();
    assert_same_output(&dir.path().join("out-1"), &dir.path().join("full"));
}

/// Makes an output over `a.log` and `b.log.gz`, changes the input with `change`, and returns
/// what an incremental run from it says, and the paths.
fn after(change: impl Fn(&Path)) -> (Result<LocalReport, LocalError>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut g = WeblogGen::new(11);
    append(&log.join("a.log"), &lines(&mut g, 1000));
    std::fs::write(log.join("b.log.gz"), gz(&lines(&mut g, 100))).unwrap();
    let run = Run {
        job: "views",
        input: &log,
        reducers: 2,
        split_size: 1 << 20,
    };
    run.go(&dir.path().join("out-0"), None).unwrap();
    change(&log);
    let res = run.go(&dir.path().join("out-1"), Some(&dir.path().join("out-0")));
    (res, dir)
}

fn refused(res: Result<LocalReport, LocalError>) -> (Change, String) {
    match res {
        Err(e @ LocalError::Plan(PlanError::Changed { .. })) => {
            let msg = e.to_string();
            let LocalError::Plan(PlanError::Changed { change, .. }) = e else {
                unreachable!()
            };
            (change, msg)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn inputs_that_shrank_were_rewritten_or_are_gone_are_refused_naming_the_file() {
    let (res, dir) = after(|log| {
        let a = std::fs::read(log.join("a.log")).unwrap();
        std::fs::write(log.join("a.log"), &a[..a.len() / 2]).unwrap();
    });
    let (change, msg) = refused(res);
    assert!(matches!(change, Change::Shrank { .. }), "{change:?}");
    assert!(
        msg.contains("a.log") && msg.contains("--full-if-changed"),
        "{msg}"
    );
    assert!(
        !dir.path().join("out-1").exists(),
        "a refused run leaves no output"
    );

    // Rewritten: same length, other bytes at the end.
    let (res, _dir) = after(|log| {
        let mut a = std::fs::read(log.join("a.log")).unwrap();
        let n = a.len();
        a[n - 3] = b'9';
        std::fs::write(log.join("a.log"), &a).unwrap();
        append(&log.join("a.log"), b"more\n");
    });
    assert!(matches!(refused(res).0, Change::Rewritten { .. }));

    let (res, _dir) = after(|log| std::fs::remove_file(log.join("a.log")).unwrap());
    let (change, msg) = refused(res);
    assert!(
        matches!(change, Change::Gone { .. }) && msg.contains("a.log"),
        "{msg}"
    );

    // A compressed file cannot be continued where the last run stopped.
    let (res, _dir) = after(|log| append(&log.join("b.log.gz"), &gz(b"x\n")));
    let (change, msg) = refused(res);
    assert!(matches!(change, Change::ChangedWhole { .. }), "{msg}");
    assert!(msg.contains("b.log.gz"), "{msg}");
}

#[test]
fn full_if_changed_runs_in_full_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut g = WeblogGen::new(5);
    append(&log.join("a.log"), &lines(&mut g, 1000));
    let run = Run {
        job: "top-photos",
        input: &log,
        reducers: 2,
        split_size: 1 << 20,
    };
    run.go(&dir.path().join("out-0"), None).unwrap();
    std::fs::write(log.join("a.log"), lines(&mut g, 700)).unwrap();
    let mut spec = run.spec(&dir.path().join("out-1"), Some(&dir.path().join("out-0")));
    spec.full_if_changed = true;
    let report = run.go_spec(&spec).unwrap();
    assert!(
        matches!(report.full_because, Some(Change::Shrank { .. })),
        "{:?}",
        report.full_because
    );
    assert_eq!(report.counters.get("state_input_records"), 0);
    run.go(&dir.path().join("full"), None).unwrap();
    assert_same_output(&dir.path().join("out-1"), &dir.path().join("full"));
}

#[test]
fn bases_that_cannot_be_continued_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    append(&log.join("a.log"), &lines(&mut WeblogGen::new(1), 100));
    let views = Run {
        job: "views",
        input: &log,
        reducers: 1,
        split_size: 1 << 20,
    };
    let out0 = dir.path().join("out-0");
    views.go(&out0, None).unwrap();
    let msg = |r: Result<LocalReport, LocalError>| r.unwrap_err().to_string();

    let other = Run {
        job: "wordcount",
        ..views
    };
    let m = msg(other.go(&dir.path().join("x"), Some(&out0)));
    assert!(m.contains("written by job views, not wordcount"), "{m}");

    let m = msg(views.go(&out0, Some(&out0)));
    assert!(m.contains("is the output it continues"), "{m}");

    let m = msg(views.go(&dir.path().join("x"), Some(&dir.path().join("nothing"))));
    assert!(m.contains("no _SUCCESS"), "{m}");

    // A job that keeps no state (sort has no combiner) cannot be continued.
    let sort = Run {
        job: "sort",
        ..views
    };
    let sorted = dir.path().join("sorted");
    sort.go(&sorted, None).unwrap();
    let m = msg(sort.go(&dir.path().join("y"), Some(&sorted)));
    assert!(m.contains("keeps no state"), "{m}");

    // A manifest that lists state for some partitions only.
    let partial = dir.path().join("partial");
    views.go(&partial, None).unwrap();
    let manifest = partial.join("_MANIFEST.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let first = m["parts"][0].clone();
    m["parts"].as_array_mut().unwrap().push(first);
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let m = msg(views.go(&dir.path().join("w"), Some(&partial)));
    assert!(m.contains("state is incomplete"), "{m}");

    // A state file that is gone.
    std::fs::remove_file(out0.join("_state/part-00000")).unwrap();
    let m = msg(views.go(&dir.path().join("z"), Some(&out0)));
    assert!(m.contains("state file") && m.contains("missing"), "{m}");
}

#[test]
fn outputs_of_another_version_of_the_job_or_other_parameters_are_not_continued() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text");
    append(&text.join("a.txt"), "Café in Zürich\n".as_bytes());
    let words = Run {
        job: "wordcount",
        input: &text,
        reducers: 1,
        split_size: 1 << 20,
    };
    // An output as the wordcount before version 2 wrote it (its manifest says no version):
    // its state counts "caf" and "z", which the words of this version never are.
    let old = dir.path().join("old");
    words.go(&old, None).unwrap();
    let manifest = old.join("_MANIFEST.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["job_version"], 2);
    m.as_object_mut().unwrap().remove("job_version");
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    append(&text.join("a.txt"), "more text\n".as_bytes());
    let (change, msg) = refused(words.go(&dir.path().join("x"), Some(&old)));
    assert!(
        matches!(change, Change::OtherVersion { was: 1, now: 2, .. }),
        "{change:?}"
    );
    assert!(
        msg.contains("written by version 1 of job wordcount, and this run is version 2"),
        "{msg}"
    );
    // With --full-if-changed it runs in full, and says why.
    let mut spec = words.spec(&dir.path().join("y"), Some(&old));
    spec.full_if_changed = true;
    let report = words.go_spec(&spec).unwrap();
    assert!(
        matches!(report.full_because, Some(Change::OtherVersion { .. })),
        "{:?}",
        report.full_because
    );
    words.go(&dir.path().join("full"), None).unwrap();
    assert_same_output(&dir.path().join("y"), &dir.path().join("full"));

    // Parameters: top-photos with n=3, continued with n=5.
    let log = dir.path().join("log");
    append(&log.join("a.log"), &lines(&mut WeblogGen::new(3), 200));
    let top = Run {
        job: "top-photos",
        input: &log,
        reducers: 1,
        split_size: 1 << 20,
    };
    let mut spec = top.spec(&dir.path().join("n3"), None);
    spec.params.insert("n".into(), "3".into());
    top.go_spec(&spec).unwrap();
    let mut spec = top.spec(&dir.path().join("n5"), Some(&dir.path().join("n3")));
    spec.params.insert("n".into(), "5".into());
    let (change, msg) = refused(top.go_spec(&spec));
    assert!(matches!(change, Change::OtherParams { .. }), "{change:?}");
    assert!(
        msg.contains("written with parameters n=3, and this run has n=5"),
        "{msg}"
    );
    // The same parameters continue.
    spec.params.insert("n".into(), "3".into());
    let report = top.go_spec(&spec).unwrap();
    assert!(report.full_because.is_none());
}

/// One hour of growth in the property test.
#[derive(Clone, Debug)]
enum Grow {
    /// Append this many lines to file `i` (a new plain file if there is none yet).
    Append(usize, usize),
    /// A new compressed file of this many lines.
    NewGz(usize),
    /// Nothing arrived.
    Nothing,
}

fn grow() -> impl Strategy<Value = Grow> {
    prop_oneof![
        3 => (0usize..3, 1usize..400).prop_map(|(i, n)| Grow::Append(i, n)),
        1 => (1usize..200).prop_map(Grow::NewGz),
        1 => Just(Grow::Nothing),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// Random growth patterns: any chain ends where one full run over all the data does.
    #[test]
    fn any_growth_pattern_chains_to_the_full_result(
        hours in prop::collection::vec(prop::collection::vec(grow(), 1..4), 1..4),
        reducers in 1u32..4,
        split_size in 1024u64..20_000,
        seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut g = WeblogGen::new(seed);
        append(&log.join("f0.log"), &lines(&mut g, 50));
        let run = Run { job: "top-photos", input: &log, reducers, split_size };
        let mut prev = dir.path().join("out-0");
        run.go(&prev, None).unwrap();
        let mut gzs = 0;
        for (h, changes) in hours.iter().enumerate() {
            for c in changes {
                match c {
                    Grow::Append(i, n) => append(&log.join(format!("f{i}.log")), &lines(&mut g, *n)),
                    Grow::NewGz(n) => {
                        gzs += 1;
                        std::fs::write(log.join(format!("z{gzs}.log.gz")), gz(&lines(&mut g, *n))).unwrap();
                    }
                    Grow::Nothing => {}
                }
            }
            let next = dir.path().join(format!("out-{}", h + 1));
            run.go(&next, Some(&prev)).unwrap();
            prev = next;
        }
        let full = dir.path().join("full");
        run.go(&full, None).unwrap();
        assert_same_output(&prev, &full);
    }
}
