//! The model and preprocessing against the independent NumPy reference
//! (`testdata/photos/expected.json`, made by `scripts/photos/reference.py`), on the real
//! photographs `scripts/photos/setup.sh` extracts from the scikit-image and scikit-learn
//! wheels.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
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

/// The reference's top-5 for each golden photo, by file name.
fn expected() -> serde_json::Map<String, serde_json::Value> {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/photos/expected.json"
        ))
        .unwrap(),
    )
    .unwrap()
}

/// Class probabilities of the golden photos `names`, computed on the CPU in `dtype`.
fn golden_probs(names: &[&String], dtype: DType) -> Vec<Vec<f32>> {
    let dir = data_dir();
    let net = MobileNetV2::from_safetensors(
        std::fs::read(dir.join("mobilenet_v2.safetensors")).unwrap(),
        &Device::Cpu,
        dtype,
    )
    .unwrap();
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
    net.forward(&x).unwrap().probs.to_vec2::<f32>().unwrap()
}

#[test]
fn labels_and_scores_match_the_numpy_reference() {
    let expected = expected();
    let classes: Vec<&str> = IMAGENET_CLASSES.lines().collect();
    let names: Vec<&String> = expected.keys().collect();
    let probs = golden_probs(&names, DType::F32);
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

/// f16 (what a GPU would run; here the CPU runs the same device-independent layers) keeps
/// every golden photo's top-1 label, with scores near f32's. (candle's CPU backend has no
/// bf16 matrix product; scripts/photos/gpu-check.sh checks bf16 on a GPU.)
#[test]
fn f16_keeps_the_top_1_labels() {
    let expected = expected();
    let names: Vec<&String> = expected.keys().collect();
    let full = golden_probs(&names, DType::F32);
    let half = golden_probs(&names, DType::F16);
    for ((name, f), h) in names.iter().zip(&full).zip(&half) {
        assert_eq!(top5(f)[0].0, top5(h)[0].0, "{name}: top-1 in f16");
        let diff = f
            .iter()
            .zip(h)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{name}: f16's largest score difference from f32 {diff:.4}");
        assert!(diff < 0.05, "{name}: f16 differs from f32 by {diff}");
    }
}
