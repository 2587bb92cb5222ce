//! The plain-code baseline for `scripts/bench.sh`: the same computations as the built-in
//! `views`, `top-photos` and `wordcount` jobs, written as a straightforward Rust program with
//! hash maps and no engine (no shuffle, no sort, no files in between). It uses the engine's
//! log-line parser so that the comparison measures the engine's overhead, not the parser.
//!
//! Usage: `baseline JOB FILE THREADS OUT`; prints the seconds it took.

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use jobs::builtin::weblog::{parse, photo_view};

// The engine's own fast hasher, so the baseline is not slowed by SipHash.
type Fast = jobs::partition::FastHash;

fn chunks(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        let mut end = if i == n {
            data.len()
        } else {
            (data.len() * i / n).max(start)
        };
        while end < data.len() && data[end - 1] != b'\n' {
            end += 1;
        }
        out.push(&data[start..end]);
        start = end;
    }
    out
}

fn lines(chunk: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    memchr::memchr_iter(b'\n', chunk)
        .chain(std::iter::once(chunk.len()))
        .map(move |end| {
            let l = &chunk[start.min(end)..end];
            start = end + 1;
            l.strip_suffix(b"\r").unwrap_or(l)
        })
        .filter(|l| !l.is_empty())
}

fn views(chunk: &[u8]) -> HashMap<u64, u64, Fast> {
    let mut m = HashMap::default();
    for l in lines(chunk) {
        if let Some(p) = parse(l).as_ref().and_then(photo_view) {
            *m.entry(p).or_default() += 1;
        }
    }
    m
}

fn top(chunk: &[u8]) -> HashMap<Vec<u8>, HashMap<u64, u64, Fast>, Fast> {
    let mut m: HashMap<Vec<u8>, HashMap<u64, u64, Fast>, Fast> = HashMap::default();
    for l in lines(chunk) {
        if let Some(l) = parse(l) {
            if let (Some(u), Some(p)) = (l.user, photo_view(&l)) {
                if let Some(per) = m.get_mut(u) {
                    *per.entry(p).or_default() += 1;
                } else {
                    m.entry(u.to_vec()).or_default().insert(p, 1);
                }
            }
        }
    }
    m
}

fn words(chunk: &[u8]) -> HashMap<Vec<u8>, u64, Fast> {
    let mut m: HashMap<Vec<u8>, u64, Fast> = HashMap::default();
    let mut w = Vec::new();
    for &b in chunk {
        if b.is_ascii_alphabetic() {
            w.push(b.to_ascii_lowercase());
        } else if !w.is_empty() {
            match m.get_mut(&w) {
                Some(n) => *n += 1,
                None => {
                    m.insert(w.clone(), 1);
                }
            }
            w.clear();
        }
    }
    if !w.is_empty() {
        *m.entry(w).or_default() += 1;
    }
    m
}

fn parallel<T: Send>(data: &[u8], threads: usize, f: fn(&[u8]) -> T) -> Vec<T> {
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks(data, threads)
            .into_iter()
            .map(|c| s.spawn(move || f(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("worker thread"))
            .collect()
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: baseline views|top-photos|wordcount FILE THREADS OUT");
        std::process::exit(2);
    }
    let (job, file, threads, out) = (
        &args[1],
        &args[2],
        args[3].parse::<usize>().expect("threads"),
        &args[4],
    );
    let start = Instant::now();
    // A memory map, not a read into a buffer: on these VMs copying a large file into fresh
    // pages costs more than parsing it, and the engine reads through a map too.
    let f = std::fs::File::open(file).expect("open input");
    // SAFETY: read-only map of an input nobody modifies during the run.
    let map = unsafe { memmap2::Mmap::map(&f) }.expect("map input");
    let data = &map[..];
    let mut o = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(out).expect("create output"),
    );
    match job.as_str() {
        "views" => {
            let mut total: HashMap<u64, u64, Fast> = HashMap::default();
            for m in parallel(data, threads, views) {
                for (k, v) in m {
                    *total.entry(k).or_default() += v;
                }
            }
            let mut v: Vec<_> = total.into_iter().collect();
            v.sort_unstable();
            for (p, n) in v {
                writeln!(o, "{p}\t{n}").unwrap();
            }
        }
        "top-photos" => {
            let mut total: HashMap<Vec<u8>, HashMap<u64, u64, Fast>, Fast> = HashMap::default();
            for m in parallel(data, threads, top) {
                for (u, per) in m {
                    let t = total.entry(u).or_default();
                    for (p, n) in per {
                        *t.entry(p).or_default() += n;
                    }
                }
            }
            let mut users: Vec<_> = total.into_iter().collect();
            users.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (u, per) in users {
                let mut v: Vec<_> = per.into_iter().collect();
                v.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                for (p, n) in v.into_iter().take(10) {
                    writeln!(o, "{}\t{p}\t{n}", String::from_utf8_lossy(&u)).unwrap();
                }
            }
        }
        "wordcount" => {
            let mut total: HashMap<Vec<u8>, u64, Fast> = HashMap::default();
            for m in parallel(data, threads, words) {
                for (k, v) in m {
                    *total.entry(k).or_default() += v;
                }
            }
            let mut v: Vec<_> = total.into_iter().collect();
            v.sort_unstable();
            for (w, n) in v {
                writeln!(o, "{}\t{n}", String::from_utf8_lossy(&w)).unwrap();
            }
        }
        other => {
            eprintln!("unknown job {other}");
            std::process::exit(2);
        }
    }
    o.flush().unwrap();
    println!("{:.3}", start.elapsed().as_secs_f64());
}
