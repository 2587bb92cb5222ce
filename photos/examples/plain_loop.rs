//! The plain-code baseline for `scripts/bench.sh photos`: decode, preprocess and classify a
//! directory of photos with the same model code and batch size as the `photos` job, but no
//! engine: a loop that decodes a batch on `threads` threads, then runs the model on it.
//!
//!     plain_loop DIR MODEL BATCH THREADS
//!
//! Prints the photos classified, the seconds taken (model load included, as in a job) and
//! a checksum of the top-1 classes.

use std::time::Instant;

use candle_core::{Device, Tensor};
use photos::job::top5;
use photos::model::{MobileNetV2, INPUT_SIZE};
use photos::preprocess::{Preprocessor, IMAGE_FLOATS};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: plain_loop DIR MODEL BATCH THREADS");
        std::process::exit(2);
    }
    let started = Instant::now();
    let batch: usize = args[3].parse().expect("BATCH is a number");
    let threads: usize = args[4].parse().expect("THREADS is a number");
    let mut files: Vec<_> = std::fs::read_dir(&args[1])
        .expect("DIR is readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "jpg" || e == "png" || e == "jpeg")
        })
        .collect();
    files.sort();
    let net = MobileNetV2::from_safetensors(
        std::fs::read(&args[2]).expect("MODEL is readable"),
        &Device::Cpu,
    )
    .expect("model loads");
    let (mut done, mut checksum) = (0usize, 0u64);
    for chunk in files.chunks(batch) {
        let mut pixels = vec![0f32; chunk.len() * IMAGE_FLOATS];
        let per = chunk.len().div_ceil(threads);
        std::thread::scope(|s| {
            for (files, out) in chunk.chunks(per).zip(pixels.chunks_mut(per * IMAGE_FLOATS)) {
                s.spawn(move || {
                    let mut pre = Preprocessor::default();
                    for (f, o) in files.iter().zip(out.chunks_mut(IMAGE_FLOATS)) {
                        let bytes = std::fs::read(f).expect("photo is readable");
                        pre.run(&bytes, o).expect("photo decodes");
                    }
                });
            }
        });
        let x = Tensor::from_vec(
            pixels,
            (chunk.len(), 3, INPUT_SIZE, INPUT_SIZE),
            &Device::Cpu,
        )
        .expect("batch tensor");
        let probs = net
            .forward(&x)
            .expect("forward")
            .probs
            .to_vec2::<f32>()
            .expect("probs");
        for p in probs {
            checksum = checksum
                .wrapping_mul(1_000_003)
                .wrapping_add(top5(&p)[0].0 as u64);
        }
        done += chunk.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{done} photos in {secs:.2} s ({:.1} photos/s), top-1 checksum {checksum}",
        done as f64 / secs
    );
}
