//! The `photos` job end to end on real photographs (extracted from the scikit-image and
//! scikit-learn wheels by `scripts/photos/setup.sh`) plus corrupt ones: top-1 labels and
//! scores against the independent NumPy reference, corrupt photos counted and listed, the
//! keyword index, the model loaded once per executor rather than once per task, and a local
//! cluster's output byte-identical to `quern run --local`.

#![cfg(feature = "photos")]

mod support;

use std::path::{Path, PathBuf};

use support::*;

fn photos_dir() -> PathBuf {
    let dir = std::env::var_os("QUERN_PHOTOS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/photos"));
    assert!(
        dir.join("mobilenet_v2.safetensors").exists() && dir.join("golden").is_dir(),
        "{} lacks the model or the golden photos: run scripts/photos/setup.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// A PNG whose header declares 60000 x 60000 pixels (a decompression bomb), CRC intact.
fn png_bomb() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&60_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32fast::hash(&ihdr).to_be_bytes());
    // A little of a deflate stream of zeros, which would inflate to gigabytes.
    png.extend_from_slice(&[
        0, 0, 0, 8, b'I', b'D', b'A', b'T', 0x78, 0x9c, 0xed, 0xc1, 1, 0, 0, 0, 0, 0, 0, 0,
    ]);
    png
}

fn lines(dir: &Path) -> Vec<String> {
    read_output(dir)
        .into_iter()
        .filter(|(name, _)| name.starts_with("part-"))
        .flat_map(|(_, data)| {
            String::from_utf8(data)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn photos_job_labels_real_photos_skips_corrupt_ones_and_matches_the_oracle() {
    let data = photos_dir();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("photos");
    std::fs::create_dir_all(src.join("more")).unwrap();
    let golden: Vec<String> = std::fs::read_dir(data.join("golden"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    for name in &golden {
        std::fs::copy(data.join("golden").join(name), src.join(name)).unwrap();
    }
    std::fs::write(src.join("coffee.json"), br#"{"album":"breakfast"}"#).unwrap();
    let china = std::fs::read(data.join("golden/china.jpg")).unwrap();
    std::fs::write(src.join("more/truncated.jpg"), &china[..china.len() / 3]).unwrap();
    std::fs::write(
        src.join("more/not-a-photo.jpg"),
        b"<html>this is not a photo</html>",
    )
    .unwrap();
    std::fs::write(src.join("more/empty.png"), b"").unwrap();
    std::fs::write(src.join("more/bomb.png"), png_bomb()).unwrap();
    let shards = tmp.path().join("shards");
    let packed = ok(quern()
        .args(["photos", "pack"])
        .arg(&src)
        .arg("--out")
        .arg(&shards)
        .args(["--shard-size", "512KiB"]));
    assert!(
        packed.contains(&format!(
            "packed {} photos (1 with metadata",
            golden.len() + 4
        )),
        "{packed}"
    );

    let model = data.join("mobilenet_v2.safetensors");
    let args = |out: &Path| {
        vec![
            "photos".to_string(),
            "--param".into(),
            format!("model={}", model.display()),
            "--param".into(),
            "batch=4".into(),
            "--reducers".into(),
            "2".into(),
            "--input".into(),
            shards.display().to_string(),
            "--output".into(),
            out.display().to_string(),
        ]
    };
    let cluster = Cluster::start(2);
    let out = tmp.path().join("cluster");
    // The cluster cuts the shards into pieces at member boundaries; run --local below reads
    // each whole: the outputs must still be the same.
    let summary = ok(cluster
        .job()
        .arg("submit")
        .args(args(&out))
        .args(["--split-size", "128KiB"]));
    assert!(summary.contains("state:    succeeded"), "{summary}");
    let local = tmp.path().join("local");
    let local_summary = ok(quern().args(["run", "--local"]).args(args(&local)));
    assert_eq!(
        read_output(&out),
        read_output(&local),
        "cluster output differs from run --local"
    );

    // On the CPU the scores do not depend on the batch size (the result store's keys rely on
    // it): one photo per model call gives the same bytes.
    let single = tmp.path().join("batch-1");
    let single_args: Vec<String> = args(&single)
        .into_iter()
        .map(|a| if a == "batch=4" { "batch=1".into() } else { a })
        .collect();
    ok(quern().args(["run", "--local"]).args(&single_args));
    assert_eq!(read_output(&single), read_output(&local));

    // Shards cut into pieces at member boundaries, several map tasks each: the same output.
    let pieces = tmp.path().join("pieces");
    let mut piece_args = args(&pieces);
    piece_args.extend(["--split-size".to_string(), "128KiB".into()]);
    let piece_summary = ok(quern().args(["run", "--local"]).args(&piece_args));
    assert_eq!(read_output(&pieces), read_output(&local));
    // `job:      photos (local, N maps, 2 reducers)`: more maps than shards.
    let maps = |s: &str| -> usize {
        let line = s.lines().find(|l| l.starts_with("job:")).unwrap();
        line.split("local, ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let shard_count = std::fs::read_dir(&shards).unwrap().count();
    assert_eq!(maps(&local_summary), shard_count, "{local_summary}");
    assert!(maps(&piece_summary) > shard_count, "{piece_summary}");

    let c = counters(&summary);
    assert_eq!(c["photos"], golden.len() as u64, "{summary}");
    assert_eq!(c["invalid_images"], 4, "{summary}");
    assert_eq!(counters(&local_summary)["invalid_images"], 4);

    // Labels and scores against the NumPy reference.
    let expected: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string("testdata/photos/expected.json").unwrap())
            .unwrap();
    let all = lines(&out);
    let photos: Vec<serde_json::Value> = all
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(photos.len(), golden.len() + 4);
    for name in &golden {
        let key = name.rsplit_once('.').unwrap().0;
        let got = photos
            .iter()
            .find(|p| p["key"] == key)
            .unwrap_or_else(|| panic!("no line for {key}"));
        let want = expected[name.as_str()].as_array().unwrap();
        let top = got["top5"].as_array().unwrap();
        assert_eq!(top[0]["label"], want[0]["label"], "{name}: top-1");
        let score = |label: &serde_json::Value| {
            top.iter()
                .find(|t| &t["label"] == label)
                .map(|t| t["score"].as_f64().unwrap())
        };
        for w in want.iter().take(3) {
            if let Some(s) = score(&w["label"]) {
                let d = (s - w["score"].as_f64().unwrap()).abs();
                assert!(
                    d < 0.03,
                    "{name}: {} scored {s}, reference {}",
                    w["label"],
                    w["score"]
                );
            }
        }
    }
    let coffee = photos.iter().find(|p| p["key"] == "coffee").unwrap();
    assert_eq!(coffee["meta"]["album"], "breakfast");
    for bad in [
        "more/truncated",
        "more/not-a-photo",
        "more/empty",
        "more/bomb",
    ] {
        let p = photos
            .iter()
            .find(|p| p["key"] == bad)
            .unwrap_or_else(|| panic!("{bad} not listed"));
        assert!(p["error"].is_string() && p.get("top5").is_none(), "{p}");
    }
    // The skip file lists them: shard, member offset, key and reason.
    let skip_file = String::from_utf8(read_output(&out)["_skipped/records.tsv"].clone()).unwrap();
    assert_eq!(skip_file.lines().count(), 4, "{skip_file}");
    for bad in [
        "more/truncated: ",
        "more/not-a-photo: ",
        "more/empty: ",
        "more/bomb: ",
    ] {
        assert!(
            skip_file
                .lines()
                .any(|l| l.contains("shard-") && l.contains(bad)),
            "{bad} in {skip_file}"
        );
    }
    let bomb = photos.iter().find(|p| p["key"] == "more/bomb").unwrap();
    assert!(
        bomb["error"]
            .as_str()
            .unwrap()
            .contains("beyond the limits"),
        "{bomb}"
    );

    // With embeddings: the same labels, plus 1280 pooled features per photo.
    let emb_out = tmp.path().join("embeddings");
    let mut emb_args = args(&emb_out);
    emb_args.extend(["--param".to_string(), "embeddings=true".into()]);
    ok(quern().args(["run", "--local"]).args(&emb_args));
    let with: Vec<serde_json::Value> = lines(&emb_out)
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(with.len(), photos.len());
    for (a, b) in photos.iter().zip(&with) {
        assert_eq!(a["top5"], b["top5"]);
        if a.get("top5").is_some() {
            let e = b["embedding"].as_array().unwrap();
            assert_eq!(e.len(), 1280);
            assert!(e
                .iter()
                .all(|v| v.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0)));
        }
    }

    // The keyword index finds the espresso.
    assert!(all.iter().any(|l| l == "espresso\tcoffee"), "{all:?}");
    assert!(all
        .iter()
        .any(|l| l.starts_with("Egyptian cat\t") && l.contains("chelsea")));

    // One model load per executor, not per task: the reused executors loaded it at most
    // once per slot (2 workers x 2 slots), for more map tasks than that.
    let logs = cluster.dir.path().join(".quern");
    let mut loads = 0;
    for w in std::fs::read_dir(&logs).unwrap() {
        let dir = w.unwrap().path().join("logs");
        for f in std::fs::read_dir(&dir).into_iter().flatten() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap_or_default();
            loads += text.matches("model loaded").count();
        }
    }
    let maps = std::fs::read_dir(&shards).unwrap().count();
    assert!(maps > 4, "{maps} shards");
    assert!(
        (1..=4).contains(&loads),
        "model loaded {loads} times for {maps} map tasks"
    );
}

/// `photo` with a JPEG comment after its start marker: other bytes, the same pixels.
fn with_comment(photo: &[u8], text: &str) -> Vec<u8> {
    assert_eq!(&photo[..2], b"\xff\xd8", "a JPEG");
    let mut out = photo[..2].to_vec();
    out.extend_from_slice(b"\xff\xfe");
    out.extend_from_slice(&(text.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
    out.extend_from_slice(&photo[2..]);
    out
}

#[test]
fn a_rerun_with_a_result_store_computes_only_what_changed_and_matches_a_full_run() {
    let data = photos_dir();
    let tmp = tempfile::tempdir().unwrap();
    let golden = data.join("golden");
    let (src, fresh) = (tmp.path().join("photos"), tmp.path().join("new-photos"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(&fresh).unwrap();
    let late = ["rocket.jpg", "retina.jpg"];
    for e in std::fs::read_dir(&golden).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let to = if late.contains(&name.as_str()) {
            &fresh
        } else {
            &src
        };
        std::fs::copy(golden.join(&name), to.join(&name)).unwrap();
    }
    let (shards, new_shards) = (tmp.path().join("shards"), tmp.path().join("new-shards"));
    let pack = |from: &Path, to: &Path| {
        let _ = std::fs::remove_dir_all(to);
        ok(quern()
            .args(["photos", "pack"])
            .arg(from)
            .arg("--out")
            .arg(to));
    };
    pack(&src, &shards);
    let store = tmp.path().join("store");
    let model = data.join("mobilenet_v2.safetensors");
    // The arguments of `run photos` or `job submit photos`.
    let args = |model: &Path, inputs: &[&Path], out: &Path, store: Option<&Path>| {
        let mut a = vec![
            "photos".to_string(),
            "--param".into(),
            "batch=4".into(),
            "--param".into(),
            format!("model={}", model.display()),
            "--reducers".into(),
            "2".into(),
            "--output".into(),
            out.display().to_string(),
        ];
        if let Some(s) = store {
            a.extend(["--param".into(), format!("results={}", s.display())]);
        }
        for i in inputs {
            a.extend(["--input".into(), i.display().to_string()]);
        }
        a
    };
    // `run photos` into `out`: its output, and its reused and computed photos.
    let run = |model: &Path, inputs: &[&Path], out: &str, store: Option<&Path>| {
        let out = tmp.path().join(out);
        let summary = ok(quern().arg("run").args(args(model, inputs, &out, store)));
        let c = counters(&summary);
        (read_output(&out), c["reused_photos"], c["computed_photos"])
    };

    // The first run computes every photo and keeps the results.
    let (_, reused, computed) = run(&model, &[&shards], "first", Some(&store));
    assert_eq!((reused, computed), (0, 9));
    assert_eq!(
        std::fs::read_dir(&store).unwrap().count(),
        1,
        "one file per shard"
    );

    // One photo changed (other bytes), two new ones arrived in shards of their own: only
    // those three go through the model, and the output is a full run's, byte for byte.
    let flower = std::fs::read(src.join("flower.jpg")).unwrap();
    std::fs::write(src.join("flower.jpg"), with_comment(&flower, "edited")).unwrap();
    pack(&src, &shards);
    pack(&fresh, &new_shards);
    let (again, reused, computed) = run(&model, &[&shards, &new_shards], "again", Some(&store));
    assert_eq!((reused, computed), (8, 3));
    let (full, reused, computed) = run(&model, &[&shards, &new_shards], "full", None);
    assert_eq!((reused, computed), (0, 11));
    assert_eq!(
        again, full,
        "a re-run with the store differs from a full run"
    );

    // A new model: nothing is reused, and the output is the new model's full run.
    let mut weights = std::fs::read(&model).unwrap();
    let at = weights.len() - 4;
    weights[at] ^= 1;
    let model2 = tmp.path().join("model-v2.safetensors");
    std::fs::write(&model2, &weights).unwrap();
    let inputs: &[&Path] = &[&shards, &new_shards];
    let (retrained, reused, computed) = run(&model2, inputs, "retrained", Some(&store));
    assert_eq!((reused, computed), (0, 11));
    let (full2, _, _) = run(&model2, inputs, "full-v2", None);
    assert_eq!(retrained, full2);

    // The same on a cluster: every result is reused, and the output is run --local's.
    let cluster = Cluster::start(2);
    let out = tmp.path().join("cluster");
    let summary = ok(cluster
        .job()
        .arg("submit")
        .args(args(&model2, inputs, &out, Some(&store))));
    let c = counters(&summary);
    assert_eq!(
        (c["reused_photos"], c["computed_photos"]),
        (11, 0),
        "{summary}"
    );
    assert_eq!(read_output(&out), full2);

    // A store file that is not one is said so and costs only time.
    for e in std::fs::read_dir(&store).unwrap() {
        std::fs::write(e.unwrap().path(), b"not results\n").unwrap();
    }
    let unusable = tmp.path().join("unusable");
    let summary = ok(quern()
        .arg("run")
        .args(args(&model2, inputs, &unusable, Some(&store))));
    let counted = counters(&summary);
    assert_eq!(counted["results_unusable"], 2, "{summary}");
    assert_eq!(counted["computed_photos"], 11, "{summary}");
    assert_eq!(read_output(&unusable), full2);
}

#[test]
fn loose_photos_are_read_where_they_lie_many_to_a_task_as_packed_shards_would_be() {
    let data = photos_dir();
    let tmp = tempfile::tempdir().unwrap();
    let golden = data.join("golden");
    let src = tmp.path().join("photos");
    std::fs::create_dir_all(src.join("2024/trip")).unwrap();
    for e in std::fs::read_dir(&golden).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        std::fs::copy(golden.join(&name), src.join(&name)).unwrap();
    }
    // Nested, oddly named, with a sidecar, and a truncated photo.
    let china = std::fs::read(golden.join("china.jpg")).unwrap();
    std::fs::write(src.join("2024/trip/holiday.2019.JPG"), &china).unwrap();
    std::fs::write(
        src.join("2024/trip/holiday.2019.json"),
        br#"{"album":"trip"}"#,
    )
    .unwrap();
    std::fs::write(src.join("2024/trip/cut off.jpg"), &china[..china.len() / 2]).unwrap();
    let shards = tmp.path().join("shards");
    ok(quern()
        .args(["photos", "pack"])
        .arg(&src)
        .arg("--out")
        .arg(&shards));
    // What loose files beside photos come to: listed, never silently dropped.
    std::fs::write(src.join("README.txt"), b"holiday photos\n").unwrap();
    std::fs::copy(
        std::fs::read_dir(&shards)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
        src.join("old-shard"),
    )
    .unwrap();

    let model = data.join("mobilenet_v2.safetensors");
    let store_dir = tmp.path().join("store");
    let args = |input: &Path, out: &Path, store: bool| {
        let mut a = vec![
            "photos".to_string(),
            "--param".into(),
            format!("model={}", model.display()),
            "--reducers".into(),
            "2".into(),
            "--split-size".into(),
            "512KiB".into(),
            "--input".into(),
            input.display().to_string(),
            "--output".into(),
            out.display().to_string(),
        ];
        if store {
            a.extend(["--param".into(), format!("results={}", store_dir.display())]);
        }
        a
    };
    let cluster = Cluster::start(2);
    let out = tmp.path().join("cluster");
    let summary = ok(cluster.job().arg("submit").args(args(&src, &out, true)));
    let local = tmp.path().join("local");
    ok(quern()
        .args(["run", "--local"])
        .args(args(&src, &local, false)));
    let packed = tmp.path().join("packed");
    ok(quern()
        .args(["run", "--local"])
        .args(args(&shards, &packed, false)));
    assert_eq!(
        read_output(&out),
        read_output(&local),
        "cluster output differs from run --local"
    );
    // The part files are those of the same photos packed into shards, byte for byte.
    let parts = |d: &Path| {
        let mut m = read_output(d);
        m.retain(|k, _| k.starts_with("part-"));
        m
    };
    assert_eq!(
        parts(&out),
        parts(&packed),
        "loose photos read otherwise than packed ones"
    );
    let c = counters(&summary);
    assert_eq!(
        (c["photos"], c["invalid_images"], c["ignored_files"]),
        (12, 1, 2),
        "{summary}"
    );
    let maps = maps_done(&summary);
    assert!(
        (2..15).contains(&maps),
        "16 files in {maps} map tasks: {summary}"
    );
    let all = lines(&out);
    assert!(
        all.iter().any(
            |l| l.starts_with(r#"{"key":"2024/trip/holiday.2019","top5""#)
                && l.contains(r#""meta":{"album":"trip"}"#)
        ),
        "{all:?}"
    );
    // Each file not read as a photo is listed under its own path.
    let skipped = String::from_utf8(read_output(&out)["_skipped/records.tsv"].clone()).unwrap();
    assert_eq!(skipped.lines().count(), 3, "{skipped}");
    for (file, why) in [
        ("README.txt", "README.txt: not a photo"),
        ("old-shard", "it looks like a tar shard: name shards *.tar"),
        ("2024/trip/cut off.jpg", "2024/trip/cut off: "),
    ] {
        let path = src.join(file).display().to_string();
        assert!(
            skipped
                .lines()
                .any(|l| l.starts_with(&format!("{path}\t0\t")) && l.contains(why)),
            "{file} in {skipped}"
        );
    }

    // Parquet output, embeddings included: the cluster's part files are run --local's, byte
    // for byte (their content against the lines: photos/src/parquet.rs).
    let parquet = |out: &Path| {
        let mut a = args(&src, out, false);
        a.extend([
            "--param".into(),
            "output=parquet".into(),
            "--param".into(),
            "embeddings=true".into(),
        ]);
        a
    };
    let (pq, pq_local) = (tmp.path().join("parquet"), tmp.path().join("parquet-local"));
    let summary = ok(cluster.job().arg("submit").args(parquet(&pq)));
    ok(quern().args(["run", "--local"]).args(parquet(&pq_local)));
    assert_eq!(
        read_output(&pq),
        read_output(&pq_local),
        "Parquet outputs differ"
    );
    assert_eq!(counters(&summary)["photos"], 12, "{summary}");
    for (name, data) in parts(&pq) {
        assert!(
            data.starts_with(b"PAR1") && data.ends_with(b"PAR1"),
            "{name} is not Parquet"
        );
    }

    // Two photos under one key: both lines are kept, and counted.
    let dup = tmp.path().join("dup");
    std::fs::create_dir_all(&dup).unwrap();
    std::fs::copy(golden.join("coffee.png"), dup.join("cup.png")).unwrap();
    std::fs::copy(golden.join("china.jpg"), dup.join("cup.jpg")).unwrap();
    let dup_out = tmp.path().join("dup-out");
    let summary = ok(quern()
        .args(["run", "--local"])
        .args(args(&dup, &dup_out, false)));
    assert_eq!(counters(&summary)["duplicate_keys"], 1, "{summary}");
    let cups = lines(&dup_out)
        .iter()
        .filter(|l| l.starts_with(r#"{"key":"cup","#))
        .count();
    assert_eq!(cups, 2);

    // New photos arrive: with the result store only they go through the model, and the
    // output is a full run's. (Other bytes than any photo's: a copy would be reused.)
    for (from, to) in [
        ("rocket.jpg", "zz-new-1.jpg"),
        ("flower.jpg", "zz-new-2.jpg"),
    ] {
        let photo = std::fs::read(golden.join(from)).unwrap();
        std::fs::write(src.join(to), with_comment(&photo, "new")).unwrap();
    }
    let again = tmp.path().join("again");
    let summary = ok(quern().arg("run").args(args(&src, &again, true)));
    let c = counters(&summary);
    assert_eq!(
        (c["reused_photos"], c["computed_photos"]),
        (12, 2),
        "{summary}"
    );
    let full = tmp.path().join("full");
    ok(quern().arg("run").args(args(&src, &full, false)));
    assert_eq!(read_output(&again), read_output(&full));
}
