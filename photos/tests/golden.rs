//! The model and preprocessing against the independent NumPy reference
//! (`testdata/photos/expected.json`, made by `scripts/photos/reference.py`), on the real
//! photographs `scripts/photos/setup.sh` extracts from the scikit-image and scikit-learn
//! wheels.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use photos::job::{top5, IMAGENET_CLASSES};
use photos::model::{MobileNetV2, INPUT_SIZE};
use photos::preprocess::{Preprocessor, IMAGE_FLOATS};

/// Where the setup script put the model and photos.
fn data_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("QUERN_PHOTOS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/photos"));
    assert!(
        dir.join("mobilenet_v2.safetensors").exists(),
        "{} has no model: run scripts/photos/setup.sh (scripts/test.sh does)",
        dir.display()
    );
    dir
}

#[test]
fn labels_and_scores_match_the_numpy_reference() {
    let dir = data_dir();
    let expected: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/photos/expected.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let net = MobileNetV2::from_safetensors(
        std::fs::read(dir.join("mobilenet_v2.safetensors")).unwrap(),
        &Device::Cpu,
    )
    .unwrap();
    let classes: Vec<&str> = IMAGENET_CLASSES.lines().collect();
    let names: Vec<&String> = expected.keys().collect();
    let mut pixels = vec![0f32; IMAGE_FLOATS * names.len()];
    let mut pre = Preprocessor::default();
    for (i, name) in names.iter().enumerate() {
        let bytes = std::fs::read(dir.join("golden").join(name)).unwrap();
        pre.run(
            &bytes,
            &mut pixels[i * IMAGE_FLOATS..(i + 1) * IMAGE_FLOATS],
        )
        .unwrap();
    }
    let x = Tensor::from_vec(
        pixels,
        (names.len(), 3, INPUT_SIZE, INPUT_SIZE),
        &Device::Cpu,
    )
    .unwrap();
    let probs = net.forward(&x).unwrap().probs.to_vec2::<f32>().unwrap();
    let mut worst = 0f64;
    for (name, p) in names.iter().zip(&probs) {
        let want = expected[name.as_str()].as_array().unwrap();
        let got = top5(p);
        let want_top = want[0]["label"].as_str().unwrap();
        assert_eq!(classes[got[0].0], want_top, "{name}: top-1");
        for w in want {
            let label = w["label"].as_str().unwrap();
            let class = classes.iter().position(|c| *c == label).unwrap();
            let diff = (f64::from(p[class]) - w["score"].as_f64().unwrap()).abs();
            worst = worst.max(diff);
            assert!(
                diff < 0.03,
                "{name}: {label} scored {} against {}",
                p[class],
                w["score"]
            );
        }
        eprintln!("{name}: {} {:.4}", classes[got[0].0], got[0].1);
    }
    eprintln!("largest score difference from the reference: {worst:.4}");
    assert_eq!(probs.len(), 11);
}
