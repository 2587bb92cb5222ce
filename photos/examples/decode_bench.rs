//! Decode-and-preprocess cost per photo, on one thread: the CPU work the photos job overlaps
//! with the model. Used for the decoder choice in docs/PHOTOS.md.
//!
//!     decode_bench DIR [ROUNDS]

use std::time::Instant;

use photos::preprocess::{Preprocessor, IMAGE_FLOATS};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("usage: decode_bench DIR [ROUNDS]");
    let rounds: usize = args
        .get(2)
        .map_or(5, |r| r.parse().expect("ROUNDS is a number"));
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("DIR is readable")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "png"))
        .collect();
    files.sort();
    let mut pre = Preprocessor::default();
    let mut out = vec![0f32; IMAGE_FLOATS];
    for f in &files {
        let bytes = std::fs::read(f).expect("photo is readable");
        pre.run(&bytes, &mut out).expect("photo decodes");
        let t = Instant::now();
        for _ in 0..rounds {
            pre.run(&bytes, &mut out).expect("photo decodes");
        }
        let ms = t.elapsed().as_secs_f64() * 1000.0 / rounds as f64;
        println!("{}\t{ms:.2}", f.file_name().unwrap().to_string_lossy());
    }
}
