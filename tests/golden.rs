//! Golden outputs: the built-in jobs over a fixed log must keep producing the same bytes
//! (job semantics, key order, the stable partitioner and the output format all show up here).
//! `UPDATE_GOLDEN=1` rewrites the files; review the diff before committing it.

mod support;

use std::path::Path;

use support::*;

#[test]
fn builtin_jobs_match_their_golden_outputs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/weblog");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let dir = tempfile::tempdir().unwrap();
    for job in ["views", "top-photos", "endpoint-stats", "wordcount"] {
        let out = dir.path().join(job);
        ok(quern()
            .args([
                "run",
                "--local",
                job,
                "--reducers",
                "3",
                "--split-size",
                "8KiB",
                "--input",
            ])
            .arg(root.join("small.log"))
            .arg("--output")
            .arg(&out));
        let got = read_output(&out);
        let golden = root.join("golden").join(job);
        if update {
            let _ = std::fs::remove_dir_all(&golden);
            std::fs::create_dir_all(&golden).unwrap();
            for (name, bytes) in &got {
                std::fs::write(golden.join(name), bytes).unwrap();
            }
            continue;
        }
        let expected = read_output(&golden);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{job}"
        );
        for (name, bytes) in &expected {
            assert!(
                got[name] == *bytes,
                "{job}/{name} differs from its golden file (UPDATE_GOLDEN=1 to accept)"
            );
        }
    }
}
