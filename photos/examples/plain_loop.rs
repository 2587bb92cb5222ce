//! The plain-code baseline for the photos benchmarks (`scripts/bench.sh photos`,
//! `scripts/photos/gpu-check.sh`): decode, preprocess and classify a directory of photos
//! with the same model code and batch size as the `photos` job, but no engine. One thread
//! decodes the next batch on `threads` threads while the model runs the current one.
//!
//!     plain_loop DIR MODEL BATCH THREADS [cpu|cuda [f32|f16|bf16]]
//!
//! Prints the photos classified, the seconds taken (model load included, as in a job), a
//! checksum of the top-1 classes and the share of time the model waited for photos.

use std::sync::mpsc::sync_channel;
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use photos::job::top5;
use photos::model::{MobileNetV2, INPUT_SIZE};
use photos::preprocess::{Preprocessor, IMAGE_FLOATS};
use rayon::prelude::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !(5..=7).contains(&args.len()) {
        eprintln!("usage: plain_loop DIR MODEL BATCH THREADS [cpu|cuda [f32|f16|bf16]]");
        std::process::exit(2);
    }
    let started = Instant::now();
    let batch: usize = args[3].parse().expect("BATCH is a number");
    let threads: usize = args[4].parse().expect("THREADS is a number");
    let device = match args.get(5).map(String::as_str) {
        None | Some("cpu") => Device::Cpu,
        Some("cuda") => Device::new_cuda(0).expect("a CUDA GPU"),
        Some(d) => panic!("unknown device {d}"),
    };
    let dtype = match args.get(6).map(String::as_str) {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some("bf16") => DType::BF16,
        Some(p) => panic!("unknown precision {p}"),
    };
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
        &device,
        dtype,
    )
    .expect("model loads");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("decode threads");
    let (tx, rx) = sync_channel::<(usize, Vec<f32>)>(2);
    let (mut done, mut checksum) = (0usize, 0u64);
    let (mut wait, mut busy) = (Duration::ZERO, Duration::ZERO);
    std::thread::scope(|s| {
        let files = &files;
        s.spawn(move || {
            for chunk in files.chunks(batch) {
                let mut pixels = vec![0f32; chunk.len() * IMAGE_FLOATS];
                pool.install(|| {
                    pixels
                        .par_chunks_mut(IMAGE_FLOATS)
                        .zip(chunk.par_iter())
                        .for_each_init(Preprocessor::default, |pre, (out, f)| {
                            let bytes = std::fs::read(f).expect("photo is readable");
                            pre.run(&bytes, out).expect("photo decodes");
                        });
                });
                if tx.send((chunk.len(), pixels)).is_err() {
                    return;
                }
            }
        });
        loop {
            let t = Instant::now();
            let Ok((n, pixels)) = rx.recv() else { break };
            wait += t.elapsed();
            let t = Instant::now();
            let x = Tensor::from_vec(pixels, (n, 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu)
                .and_then(|x| x.to_device(&device))
                .expect("batch tensor");
            let probs = net
                .forward(&x)
                .expect("forward")
                .probs
                .to_vec2::<f32>()
                .expect("probs");
            busy += t.elapsed();
            for p in probs {
                checksum = checksum
                    .wrapping_mul(1_000_003)
                    .wrapping_add(top5(&p)[0].0 as u64);
            }
            done += n;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{done} photos in {secs:.2} s ({:.1} photos/s), top-1 checksum {checksum}, model waited {:.1}%",
        done as f64 / secs,
        100.0 * wait.as_secs_f64() / (wait + busy).as_secs_f64().max(1e-9)
    );
}
