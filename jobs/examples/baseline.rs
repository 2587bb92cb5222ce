//! The plain-code baseline for `scripts/bench.sh` and `scripts/bench-sort.sh`: the same
//! computations as the built-in `views`, `top-photos`, `wordcount` and `sort` jobs, written as
//! a straightforward Rust program with hash maps (or an in-memory sort) and no engine (no
//! shuffle, no files in between). It uses the engine's log-line parser and word tokeniser so
//! that the comparison measures the engine's overhead, not the parser.
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

/// Hashes a short word held in a `u128`: one folded multiply of its halves.
#[derive(Default, Clone, Copy)]
struct ShortHash;

struct ShortHasher(u64);

impl std::hash::BuildHasher for ShortHash {
    type Hasher = ShortHasher;
    fn build_hasher(&self) -> ShortHasher {
        ShortHasher(0)
    }
}

impl std::hash::Hasher for ShortHasher {
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u128 keys")
    }
    fn write_u64(&mut self, n: u64) {
        let m = u128::from(n ^ 0x243f_6a88_85a3_08d3) * 0x1319_8a2e_0370_7344;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
    fn write_u128(&mut self, n: u128) {
        let m = u128::from(n as u64 ^ 0x243f_6a88_85a3_08d3)
            * u128::from((n >> 64) as u64 ^ 0x1319_8a2e_0370_7344);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Word counts: words of up to 8 bytes as a zero-padded `u64`, of up to 16 as a `u128` (a
/// word holds no zero byte, so the padding is unambiguous; most words fit 8 bytes, and the
/// smaller entries keep more of the table in cache), longer ones on the heap.
#[derive(Default)]
struct Counts {
    tiny: hashbrown::HashMap<u64, u64, ShortHash>,
    short: hashbrown::HashMap<u128, u64, ShortHash>,
    long: HashMap<Box<[u8]>, u64, Fast>,
}

fn words(chunk: &[u8]) -> Counts {
    let mut c = Counts::default();
    // The engine's tokeniser: letters found eight bytes at a time, no per-byte pushes.
    jobs::builtin::wordcount::for_each_word(chunk, |w| {
        if let Some([lo, 0]) = w.padded {
            *c.tiny.entry(lo).or_default() += 1;
        } else if let Some([lo, hi]) = w.padded {
            *c.short
                .entry(u128::from(lo) | u128::from(hi) << 64)
                .or_default() += 1;
        } else if let Some(n) = c.long.get_mut(w.bytes) {
            *n += 1;
        } else {
            c.long.insert(w.bytes.into(), 1);
        }
    });
    c
}

impl Counts {
    fn into_words(self) -> impl Iterator<Item = (Vec<u8>, u64)> {
        let tiny = self.tiny.into_iter().map(|(k, n)| {
            let b = k.to_le_bytes();
            let len = b.iter().position(|&x| x == 0).unwrap_or(8);
            (b[..len].to_vec(), n)
        });
        let short = self.short.into_iter().map(|(k, n)| {
            let b = k.to_le_bytes();
            let len = b.iter().position(|&x| x == 0).unwrap_or(16);
            (b[..len].to_vec(), n)
        });
        tiny.chain(short)
            .chain(self.long.into_iter().map(|(k, n)| (k.into_vec(), n)))
    }
}

/// The sort key of a record: its first 10 bytes, big-endian, zero-padded.
fn sort_key(line: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = line.len().min(10);
    b[..n].copy_from_slice(&line[..n]);
    u128::from_be_bytes(b)
}

/// Sorts the records (lines, terminators kept) of `data` by their 10-byte key, equal keys in
/// input order, on `threads` threads (each sorts a part; the parts are merged while writing),
/// and writes them to `out`. Lines shorter than the key are left out, as the engine's `sort`
/// counts them malformed.
fn sort_records(data: &[u8], threads: usize, out: &mut impl Write) {
    let parts: Vec<Vec<(u128, &[u8])>> = parallel_sort(data, threads);
    // A k-way merge of the sorted parts (ties: the earlier part first, as in the input).
    let mut heads: Vec<usize> = vec![0; parts.len()];
    loop {
        let mut best: Option<usize> = None;
        for (p, part) in parts.iter().enumerate() {
            if let Some(r) = part.get(heads[p]) {
                if best.is_none_or(|b| r.0 < parts[b][heads[b]].0) {
                    best = Some(p);
                }
            }
        }
        let Some(p) = best else { break };
        out.write_all(parts[p][heads[p]].1).expect("write output");
        heads[p] += 1;
    }
}

fn parallel_sort(data: &[u8], threads: usize) -> Vec<Vec<(u128, &[u8])>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = chunks(data, threads)
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    let mut recs: Vec<(u128, &[u8])> = Vec::with_capacity(c.len() / 100 + 1);
                    let mut start = 0;
                    for end in memchr::memchr_iter(b'\n', c)
                        .map(|i| i + 1)
                        .chain(std::iter::once(c.len()))
                    {
                        let line = &c[start..end];
                        start = end;
                        let body = line.strip_suffix(b"\n").unwrap_or(line);
                        let body = body.strip_suffix(b"\r").unwrap_or(body);
                        if body.len() >= 10 {
                            recs.push((sort_key(line), line));
                        }
                    }
                    // Equal keys keep their input order: ties broken by position.
                    recs.sort_unstable_by(|a, b| {
                        a.0.cmp(&b.0).then(a.1.as_ptr().cmp(&b.1.as_ptr()))
                    });
                    recs
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sort thread"))
            .collect()
    })
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
        eprintln!("usage: baseline views|top-photos|wordcount|sort FILE THREADS OUT");
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
                for (k, v) in m.into_words() {
                    *total.entry(k).or_default() += v;
                }
            }
            let mut v: Vec<_> = total.into_iter().collect();
            v.sort_unstable();
            for (w, n) in v {
                writeln!(o, "{}\t{n}", String::from_utf8_lossy(&w)).unwrap();
            }
        }
        "sort" => sort_records(data, threads, &mut o),
        other => {
            eprintln!("unknown job {other}");
            std::process::exit(2);
        }
    }
    o.flush().unwrap();
    println!("{:.3}", start.elapsed().as_secs_f64());
}
