//! Golden outputs: the built-in jobs over a fixed log must keep producing the same bytes
//! (job semantics, key order, the stable partitioner and the output format all show up here).
//! `UPDATE_GOLDEN=1` rewrites the files; review the diff before committing it. The manifest is
//! kept without its coverage, which names the input by its absolute path and modification
//! time.

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
        let mut got = read_output(&out);
        let manifest = got.get_mut("_MANIFEST.json").expect("a manifest");
        let mut m: serde_json::Value = serde_json::from_slice(manifest).unwrap();
        let coverage = m.as_object_mut().unwrap().remove("coverage").unwrap();
        let size = std::fs::metadata(root.join("small.log")).unwrap().len();
        assert_eq!(coverage[0]["end"], size, "{job}: {coverage}");
        *manifest = serde_json::to_vec_pretty(&m).unwrap();
        manifest.push(b'\n');
        let golden = root.join("golden").join(job);
        if update {
            let _ = std::fs::remove_dir_all(&golden);
            for (name, bytes) in &got {
                let path = golden.join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
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
