//! Deterministic data generators for the built-in jobs (`quern gen`).
//!
//! The same seed gives the same bytes on every machine and build: the generators use their own
//! SplitMix64 and their own Zipf tables, never a library RNG whose stream may change.
//!
//! The web log models a photo service: photo popularity is Zipf(1.1) over 1M photos, 100k users
//! with Zipf(0.9) activity and 30% anonymous requests, a request mix of photo views (55%),
//! thumbnails (20%), pages (8%), API calls (8%), static assets (6%), uploads (2%) and other
//! paths (1%), realistic statuses and log-normal-ish latencies, clients on IPv4 and (a third)
//! IPv6, and about 0.1% malformed lines of four kinds: truncated, garbage bytes, invalid UTF-8
//! in a structural field, and a missing latency.

use std::io::{self, Write};

/// SplitMix64: tiny, fast, and fixed forever.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeds a generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// Returns the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Returns a number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Returns a float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Samples ranks 1..=n with probability proportional to 1/rank^s.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// Builds the table for `n` ranks and exponent `s`.
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for r in 1..=n {
            total += 1.0 / (r as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    /// Returns a rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64 + 1
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "PhotoApp/4.2 (Android 14; Pixel 8)",
    "curl/8.5.0",
];
const REFERERS: [&str; 4] = [
    "-",
    "https://photos.example.com/",
    "https://photos.example.com/explore",
    "https://www.search.example/",
];
const WORDS: [&str; 8] = [
    "sunset", "cat", "beach", "espresso", "mountain", "wedding", "dog", "city",
];

/// Returns (year, month 1-12, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            era * 400 + yoe + 1
        } else {
            era * 400 + yoe
        },
        m,
        d,
    )
}

/// Writes web-log lines.
pub struct WeblogGen {
    rng: Rng,
    photos: Zipf,
    users: Zipf,
    secs: i64,
}

/// One request of the log, drawn before it is written.
struct Request {
    method: &'static str,
    path: String,
    status: u32,
    bytes: u64,
    /// The median latency of such requests, in milliseconds.
    base: f64,
}

impl WeblogGen {
    /// Starts a generator for `seed`.
    pub fn new(seed: u64) -> Self {
        WeblogGen {
            rng: Rng::new(seed),
            photos: Zipf::new(1_000_000, 1.1),
            users: Zipf::new(100_000, 0.9),
            // 2026-11-01T00:00:00Z
            secs: 1_793_491_200,
        }
    }

    fn latency(&mut self, base: f64) -> u64 {
        // Sum of uniforms approximates a normal; exp of it gives a log-normal-ish tail.
        let n: f64 = (0..4).map(|_| self.rng.unit()).sum::<f64>() - 2.0;
        (base * (n * 0.8).exp()).round().max(1.0) as u64
    }

    /// Draws what a request asks for and how it is answered.
    fn request(&mut self) -> Request {
        let r = &mut self.rng;
        let pick = r.below(1000);
        let photo = self.photos.sample(r);
        let (method, path, mut status, bytes, base): (&'static str, String, u32, u64, f64) =
            match pick {
                0..=549 => (
                    "GET",
                    format!("/photos/{photo}.jpg"),
                    200,
                    150_000 + r.below(2_000_000),
                    35.0,
                ),
                550..=749 => (
                    "GET",
                    format!("/thumbs/{photo}_256.jpg"),
                    200,
                    8_000 + r.below(30_000),
                    12.0,
                ),
                750..=829 => {
                    let p = match r.below(4) {
                        0 => "/".to_string(),
                        1 => "/explore".to_string(),
                        2 => format!("/u/{}", self.users.sample(r)),
                        _ => format!("/search?q={}", WORDS[r.below(8) as usize]),
                    };
                    ("GET", p, 200, 20_000 + r.below(60_000), 80.0)
                }
                830..=909 => {
                    if r.below(3) == 0 {
                        ("POST", "/api/v1/likes".to_string(), 201, 90, 25.0)
                    } else {
                        (
                            "GET",
                            format!("/api/v1/photos/{photo}/comments"),
                            200,
                            500 + r.below(5000),
                            30.0,
                        )
                    }
                }
                910..=969 => {
                    let p = if r.below(2) == 0 {
                        "/static/app.3f9c2a.js"
                    } else {
                        "/static/site.css"
                    };
                    ("GET", p.to_string(), 200, 40_000 + r.below(200_000), 5.0)
                }
                970..=989 => ("POST", "/upload".to_string(), 201, 120, 600.0),
                _ => {
                    let p = ["/favicon.ico", "/robots.txt", "/wp-login.php", "/.env"]
                        [r.below(4) as usize];
                    ("GET", p.to_string(), 404, 0, 3.0)
                }
            };
        let roll = r.below(1000);
        if method == "GET" && status == 200 {
            status = match roll {
                0..=29 => 304,
                30..=39 => 404,
                40..=41 => 500,
                42 => 503,
                _ => 200,
            };
        }
        Request {
            method,
            path,
            status,
            bytes,
            base,
        }
    }

    /// Writes `req` as a combined-log line, without its newline.
    fn write_line(
        &mut self,
        out: &mut Vec<u8>,
        ip: u64,
        user: Option<u64>,
        req: &Request,
        latency: u64,
    ) {
        let Request {
            method,
            path,
            status,
            bytes,
            ..
        } = req;
        let r = &mut self.rng;
        let (y, m, d) = civil_from_days(self.secs.div_euclid(86_400));
        let t = self.secs.rem_euclid(86_400);
        let bytes_field = if *status == 304 {
            "-".to_string()
        } else {
            bytes.to_string()
        };
        let user_field = user.map_or("-".to_string(), |u| format!("u{u}"));
        // A third of the clients on IPv6 (in the documentation prefix), drawn from the same
        // bits as the IPv4 addresses: the random stream, and so every other field, is the same.
        if (ip >> 40) % 3 == 0 {
            let _ = write!(
                out,
                "2001:db8:{:x}:{:x}::{:x}",
                (ip >> 8) & 0xffff,
                (ip >> 24) & 0xffff,
                1 + (ip & 0xff)
            );
        } else {
            let _ = write!(
                out,
                "{}.{}.{}.{}",
                10 + (ip & 0x7f),
                (ip >> 8) & 0xff,
                (ip >> 16) & 0xff,
                (ip >> 24) & 0xff
            );
        }
        let _ = write!(
            out,
            " - {} [{:02}/{}/{}:{:02}:{:02}:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\" {}",
            user_field,
            d,
            MONTHS[(m - 1) as usize],
            y,
            t / 3600,
            (t / 60) % 60,
            t % 60,
            method,
            path,
            status,
            bytes_field,
            REFERERS[r.below(4) as usize],
            AGENTS[r.below(5) as usize],
            latency
        );
    }

    /// Turns the line at `out[start..]` into one of the malformed kinds.
    fn corrupt(&mut self, start: usize, out: &mut Vec<u8>) {
        let r = &mut self.rng;
        let len = out.len() - start;
        match r.below(4) {
            0 => {
                // Truncated before the latency field.
                let last_space = out[start..].iter().rposition(|&b| b == b' ').unwrap_or(0);
                let cut = 1 + r.below(last_space.max(1) as u64) as usize;
                out.truncate(start + cut.min(len));
            }
            1 => {
                out.truncate(start);
                for _ in 0..(20 + r.below(100)) {
                    let b = r.below(256) as u8;
                    out.push(if b == b'\n' { b'#' } else { b });
                }
            }
            2 => {
                // Invalid UTF-8 where the month name belongs.
                if let Some(i) = out[start..].iter().position(|&b| b == b'/') {
                    out[start + i + 1] = 0xff;
                    out[start + i + 2] = 0xfe;
                }
            }
            _ => {
                let last_space = out[start..].iter().rposition(|&b| b == b' ').unwrap_or(len);
                out.truncate(start + last_space);
                out.extend_from_slice(b" -");
            }
        }
    }
}

impl Generator for WeblogGen {
    fn line(&mut self, out: &mut Vec<u8>) {
        let start = out.len();
        self.secs += (self.rng.below(3)) as i64;
        let r = &mut self.rng;
        let ip = r.next_u64();
        let user = if r.below(10) < 3 {
            None
        } else {
            Some(self.users.sample(r))
        };
        let req = self.request();
        let latency = self.latency(req.base);
        self.write_line(out, ip, user, &req, latency);
        if self.rng.below(1000) == 0 {
            self.corrupt(start, out);
        }
        out.push(b'\n');
    }
}

/// A generator of lines: each kind of generated input.
pub trait Generator {
    /// Appends one line (with its newline) to `out`.
    fn line(&mut self, out: &mut Vec<u8>);

    /// Writes about `size` bytes of whole lines to `out`, calling `progress` with the bytes
    /// written so far after each MiB.
    ///
    /// # Errors
    /// I/O errors from `out`.
    fn write(
        &mut self,
        size: u64,
        out: &mut dyn Write,
        progress: &mut dyn FnMut(u64),
    ) -> io::Result<u64> {
        let mut buf = Vec::with_capacity(1 << 21);
        let mut written = 0u64;
        while written < size {
            buf.clear();
            while buf.len() < (1 << 20) && written + (buf.len() as u64) < size {
                self.line(&mut buf);
            }
            out.write_all(&buf)?;
            written += buf.len() as u64;
            progress(written);
        }
        Ok(written)
    }
}

/// Writes lines of words: a vocabulary of 50k pseudo-words with Zipf(1.0) frequencies, some
/// capitalised, with punctuation and digits between them. As in real text, a few are not
/// ASCII: one word in 50 of the vocabulary ends in an accented letter, and one separator in
/// 100 is a curly quotation mark.
pub struct WordsGen {
    rng: Rng,
    vocab: Vec<String>,
    zipf: Zipf,
}

impl WordsGen {
    /// Starts a generator for `seed`.
    pub fn new(seed: u64) -> Self {
        const SYL: [&str; 16] = [
            "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "pe", "qua", "dre", "th", "ou",
            "ie", "x",
        ];
        let mut rng = Rng::new(seed ^ 0xA11CE);
        const ACCENTED: [&str; 4] = ["é", "ü", "ñ", "ø"];
        let vocab = (0..50_000)
            .map(|_| {
                let mut w: String = (0..1 + rng.below(4))
                    .map(|_| SYL[rng.below(16) as usize])
                    .collect();
                if rng.below(50) == 0 {
                    w.push_str(ACCENTED[rng.below(4) as usize]);
                }
                w
            })
            .collect();
        WordsGen {
            rng: Rng::new(seed),
            vocab,
            zipf: Zipf::new(50_000, 1.0),
        }
    }
}

impl Generator for WordsGen {
    fn line(&mut self, out: &mut Vec<u8>) {
        let n = 4 + self.rng.below(12);
        for i in 0..n {
            if i > 0 {
                out.extend_from_slice(match self.rng.below(200) {
                    0..10 => b", ".as_slice(),
                    10..20 => b". ",
                    20..30 => b" 42 ",
                    30..40 => b" - ",
                    40 => " “".as_bytes(),
                    41 => "” ".as_bytes(),
                    _ => b" ",
                });
            }
            let w = &self.vocab[(self.zipf.sample(&mut self.rng) - 1) as usize];
            if self.rng.below(10) == 0 {
                out.extend(w.bytes().enumerate().map(|(j, b)| {
                    if j == 0 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                }));
            } else {
                out.extend_from_slice(w.as_bytes());
            }
        }
        out.push(b'\n');
    }
}

/// Generates `ID<TAB>PAYLOAD` records with unique, increasing ids (`r000000000001`, ...)
/// and random lowercase payloads: the input of the `identity` job.
pub struct RecordsGen {
    rng: Rng,
    next: u64,
}

impl RecordsGen {
    /// Starts a generator for `seed`.
    pub fn new(seed: u64) -> Self {
        RecordsGen {
            rng: Rng::new(seed ^ 0x1D),
            next: 1,
        }
    }
}

impl Generator for RecordsGen {
    fn line(&mut self, out: &mut Vec<u8>) {
        out.push(b'r');
        let id = format!("{:012}", self.next);
        out.extend_from_slice(id.as_bytes());
        self.next += 1;
        out.push(b'\t');
        for _ in 0..16 + self.rng.below(48) {
            out.push(b'a' + self.rng.below(26) as u8);
        }
        out.push(b'\n');
    }
}

/// Generates 100-byte records in the layout `gensort -a` writes (TeraSort's ASCII form): a
/// 10-byte key of printable ASCII, two spaces, the row number in 32 hex digits, two spaces,
/// 52 bytes of filler (13 runs of 4 hex digits), and `\r\n`: the input of the `sort` job.
pub struct SortRecordsGen {
    rng: Rng,
    row: u64,
}

impl SortRecordsGen {
    /// Starts a generator for `seed`.
    pub fn new(seed: u64) -> Self {
        SortRecordsGen {
            rng: Rng::new(seed ^ 0x7E2A),
            row: 0,
        }
    }
}

impl Generator for SortRecordsGen {
    fn line(&mut self, out: &mut Vec<u8>) {
        for _ in 0..10 {
            out.push(b' ' + self.rng.below(95) as u8);
        }
        out.extend_from_slice(b"  ");
        out.extend_from_slice(format!("{:032X}", self.row).as_bytes());
        out.extend_from_slice(b"  ");
        for i in 0..13 {
            let c = b"0123456789ABCDEF"[((self.row + i) % 16) as usize];
            out.extend_from_slice(&[c; 4]);
        }
        out.extend_from_slice(b"\r\n");
        self.row += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let gen = |seed| {
            let mut out = Vec::new();
            WeblogGen::new(seed)
                .write(50_000, &mut out, &mut |_| {})
                .unwrap();
            out
        };
        assert_eq!(gen(1), gen(1));
        assert_ne!(gen(1), gen(2));
        assert!(gen(1).len() >= 50_000);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(1_793_491_200 / 86_400), (2026, 11, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
