//! Web-log analytics over a photo service's access log.
//!
//! Lines are Apache combined log format plus a trailing latency in milliseconds:
//!
//! ```text
//! IP - USER [dd/Mon/yyyy:HH:MM:SS +0000] "METHOD PATH HTTP/x.y" STATUS BYTES "REFERER" "USER-AGENT" LATENCY_MS
//! ```
//!
//! IP is the client's IPv4 or IPv6 address (`10.1.2.3`, `2001:db8::7`, `::ffff:10.1.2.3`).
//!
//! A line is well-formed exactly when it matches this anchored grammar (matched on bytes, so
//! non-UTF-8 bytes inside the path, referer or user agent are allowed; anywhere else they make
//! the line malformed):
//!
//! ```text
//! ^[0-9A-Fa-f:.]+ - (-|u[0-9]+) \[[0-9]+/[A-Za-z]+/[0-9]+:[0-9]+:[0-9]+:[0-9]+ [+-][0-9]+\] "([A-Z]+) ([^ "]+) HTTP/[0-9.]+" ([0-9]+) ([0-9]+|-) "[^"]*" "[^"]*" [0-9]+$
//! ```
//!
//! [`parse`] is a hand-written matcher for it (a test checks it against the regex); every job
//! counts lines that do not match in `malformed_records` and skips them.
//!
//! Endpoint classes for `endpoint-stats`, by path (the query string ignored), first rule wins:
//! `photo` (`/photos/…`), `thumbnail` (`/thumbs/…`), `upload` (`/upload…`), `api` (`/api/…`),
//! `static` (`/static/…`, or a last segment ending in `.css`, `.js`, `.png`, `.svg`, `.ico`,
//! `.woff2`), `page` (a last segment with no `.`), `other` (anything else).

use serde::{Deserialize, Serialize};

use super::histogram::Histogram;
use crate::registry::{check_params, int_param, DynJob, JobError, JobInfo, Params};
use crate::sdk::{self, push_u64, Combiner, Job, MapContext, ReduceContext, Values};

/// The fields of a well-formed line that the jobs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLine<'a> {
    /// `u<digits>`, or `None` for `-`.
    pub user: Option<&'a [u8]>,
    /// Request method.
    pub method: &'a [u8],
    /// Request path, query string included.
    pub path: &'a [u8],
    /// Status code (saturating).
    pub status: u32,
    /// Latency in milliseconds (saturating).
    pub latency_ms: u64,
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

// Inlined so each literal's length is a constant and the comparison needs no memcmp call.
impl<'a> Cursor<'a> {
    #[inline(always)]
    fn lit(&mut self, l: &[u8]) -> Option<()> {
        if self.s[self.i..].starts_with(l) {
            self.i += l.len();
            Some(())
        } else {
            None
        }
    }

    /// Takes a non-empty run of bytes satisfying `f`.
    #[inline(always)]
    fn run(&mut self, f: impl Fn(u8) -> bool) -> Option<&'a [u8]> {
        let start = self.i;
        while self.i < self.s.len() && f(self.s[self.i]) {
            self.i += 1;
        }
        (self.i > start).then(|| &self.s[start..self.i])
    }

    /// Takes a possibly empty run of bytes satisfying `f`.
    #[inline(always)]
    fn run0(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        self.run(f).unwrap_or(&[])
    }
}

fn digit(b: u8) -> bool {
    b.is_ascii_digit()
}

fn number(d: &[u8]) -> u64 {
    d.iter().fold(0u64, |n, &b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    })
}

/// Parses one line; `None` if it is malformed.
pub fn parse(line: &[u8]) -> Option<LogLine<'_>> {
    let mut c = Cursor { s: line, i: 0 };
    // An IPv4 or IPv6 address.
    c.run(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')?;
    c.lit(b" - ")?;
    let user = if c.lit(b"-").is_some() {
        None
    } else {
        let start = c.i;
        c.lit(b"u")?;
        c.run(digit)?;
        Some(&line[start..c.i])
    };
    c.lit(b" [")?;
    c.run(digit)?;
    c.lit(b"/")?;
    c.run(|b| b.is_ascii_alphabetic())?;
    c.lit(b"/")?;
    c.run(digit)?;
    for _ in 0..3 {
        c.lit(b":")?;
        c.run(digit)?;
    }
    c.lit(b" ")?;
    if c.lit(b"+").is_none() {
        c.lit(b"-")?;
    }
    c.run(digit)?;
    c.lit(b"] \"")?;
    let method = c.run(|b| b.is_ascii_uppercase())?;
    c.lit(b" ")?;
    let path = c.run(|b| b != b' ' && b != b'"')?;
    c.lit(b" HTTP/")?;
    c.run(|b| digit(b) || b == b'.')?;
    c.lit(b"\" ")?;
    let status = c.run(digit)?;
    c.lit(b" ")?;
    if c.lit(b"-").is_none() {
        c.run(digit)?;
    }
    c.lit(b" \"")?;
    c.run0(|b| b != b'"');
    c.lit(b"\" \"")?;
    c.run0(|b| b != b'"');
    c.lit(b"\" ")?;
    let latency = c.run(digit)?;
    if c.i != line.len() {
        return None;
    }
    Some(LogLine {
        user,
        method,
        path,
        status: number(status).min(u64::from(u32::MAX)) as u32,
        latency_ms: number(latency),
    })
}

/// A request path without its query string (from the first `?`).
fn without_query(path: &[u8]) -> &[u8] {
    path.split(|&b| b == b'?').next().unwrap_or(path)
}

/// Returns the photo id of a view: GET, path exactly `/photos/<digits>.jpg` (a query string,
/// such as a size or a cache buster, aside), status 200.
pub fn photo_view(l: &LogLine<'_>) -> Option<u64> {
    if l.method != b"GET" || l.status != 200 {
        return None;
    }
    let digits = without_query(l.path)
        .strip_prefix(b"/photos/")?
        .strip_suffix(b".jpg")?;
    // Ids past u64 are not photo ids this service can have; treat such lines as non-views.
    (!digits.is_empty() && digits.len() <= 19 && digits.iter().all(|b| b.is_ascii_digit()))
        .then(|| number(digits))
}

fn parsed<'a, J: Job>(line: &'a [u8], ctx: &mut MapContext<'_, J>) -> Option<LogLine<'a>> {
    let l = parse(line);
    if l.is_none() {
        ctx.count("malformed_records", 1);
        tracing::debug!(line = %String::from_utf8_lossy(line), "malformed log line skipped");
    }
    l
}

/// `views`: views per photo; output `photo_id<TAB>views`.
pub struct Views;

/// Registration of [`Views`].
pub const VIEWS: JobInfo = JobInfo {
    name: "views",
    about: "views per photo (GET /photos/<id>.jpg with status 200)",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("views", p, &[])?;
        Ok(Box::new(Views))
    },
};

impl Job for Views {
    type Key = u64;
    type Value = u64;
    const COMBINE: Option<Combiner<u64>> = Some(sdk::sum);
    const STATE: bool = true;
    /// Version 1 counted lines from IPv6 clients malformed (and missed views with a query
    /// string): outputs it wrote are not continued.
    const VERSION: u32 = 2;

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        if let Some(photo) = parsed(record, ctx).as_ref().and_then(photo_view) {
            ctx.emit(&photo, 1);
        }
    }

    fn reduce(&self, photo: u64, counts: Values<'_, u64>, out: &mut ReduceContext<'_>) {
        let total: u64 = counts.sum();
        let buf = out.buffer();
        push_u64(buf, photo);
        buf.push(b'\t');
        push_u64(buf, total);
        out.end_line();
    }
}

/// `top-photos`: per signed-in user, the `n` (default 10) most viewed photos, by views
/// descending then photo id ascending; output `user<TAB>photo_id<TAB>views`.
pub struct TopPhotos {
    n: usize,
}

/// Registration of [`TopPhotos`].
pub const TOP_PHOTOS: JobInfo = JobInfo {
    name: "top-photos",
    about: "per user, the n (default 10) photos they viewed most",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("top-photos", p, &["n"])?;
        let n = int_param("top-photos", p, "n", 10, 1, 10_000)? as usize;
        Ok(Box::new(TopPhotos { n }))
    },
};

/// Photo view counts of one user, sorted by photo id.
pub type PhotoCounts = Vec<(u64, u64)>;

fn merge_counts(acc: &mut PhotoCounts, next: PhotoCounts) {
    if next.len() == 1 {
        let (photo, n) = next[0];
        match acc.binary_search_by_key(&photo, |e| e.0) {
            Ok(i) => acc[i].1 += n,
            Err(i) => acc.insert(i, (photo, n)),
        }
        return;
    }
    let mut merged = Vec::with_capacity(acc.len() + next.len());
    let (mut a, mut b) = (
        std::mem::take(acc).into_iter().peekable(),
        next.into_iter().peekable(),
    );
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                merged.push((x.0, x.1 + y.1));
                a.next();
                b.next();
            }
            (Some(x), Some(y)) => {
                merged.push(if x.0 < y.0 { a.next() } else { b.next() }.expect("peeked"))
            }
            (Some(_), None) => merged.push(a.next().expect("peeked")),
            (None, Some(_)) => merged.push(b.next().expect("peeked")),
            (None, None) => break,
        }
    }
    *acc = merged;
}

impl Job for TopPhotos {
    type Key = Vec<u8>;
    type Value = PhotoCounts;
    const COMBINE: Option<Combiner<PhotoCounts>> = Some(merge_counts);
    const STATE: bool = true;
    /// Version 1 counted lines from IPv6 clients malformed (and missed views with a query
    /// string): outputs it wrote are not continued.
    const VERSION: u32 = 2;

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        if let Some(l) = parsed(record, ctx) {
            if let (Some(user), Some(photo)) = (l.user, photo_view(&l)) {
                ctx.emit_encoded(user, vec![(photo, 1)]);
            }
        }
    }

    fn reduce(&self, user: Vec<u8>, values: Values<'_, PhotoCounts>, out: &mut ReduceContext<'_>) {
        let mut all = PhotoCounts::new();
        for v in values {
            merge_counts(&mut all, v);
        }
        all.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (photo, views) in all.into_iter().take(self.n) {
            let buf = out.buffer();
            buf.extend_from_slice(&user);
            buf.push(b'\t');
            push_u64(buf, photo);
            buf.push(b'\t');
            push_u64(buf, views);
            out.end_line();
        }
    }
}

/// The endpoint classes of `endpoint-stats`.
pub const ENDPOINT_CLASSES: [&str; 7] = [
    "photo",
    "thumbnail",
    "upload",
    "api",
    "static",
    "page",
    "other",
];

/// Returns the endpoint class of a request path (see the module docs for the rules).
pub fn endpoint_class(path: &[u8]) -> &'static str {
    let path = without_query(path);
    let last = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    const STATIC_EXT: [&[u8]; 6] = [b".css", b".js", b".png", b".svg", b".ico", b".woff2"];
    if path.starts_with(b"/photos/") {
        "photo"
    } else if path.starts_with(b"/thumbs/") {
        "thumbnail"
    } else if path.starts_with(b"/upload") {
        "upload"
    } else if path.starts_with(b"/api/") {
        "api"
    } else if path.starts_with(b"/static/") || STATIC_EXT.iter().any(|e| last.ends_with(e)) {
        "static"
    } else if !last.contains(&b'.') {
        "page"
    } else {
        "other"
    }
}

/// Request counts and latencies of one endpoint class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// Requests.
    pub requests: u64,
    /// Requests by status class: 2xx, 3xx, 4xx, 5xx.
    pub status: [u64; 4],
    /// Latency histogram (milliseconds).
    pub latency: Histogram,
}

impl EndpointStats {
    /// Folds `next` into `acc` (the job's combiner).
    pub fn merge(acc: &mut EndpointStats, next: EndpointStats) {
        acc.requests += next.requests;
        for (a, b) in acc.status.iter_mut().zip(next.status) {
            *a += b;
        }
        acc.latency.merge(&next.latency);
    }
}

/// `endpoint-stats`: per endpoint class, requests, per status class, latency p50/p95/p99.
/// Output `class<TAB>requests<TAB>2xx<TAB>3xx<TAB>4xx<TAB>5xx<TAB>p50_ms<TAB>p95_ms<TAB>p99_ms`.
pub struct EndpointStatsJob;

/// Registration of [`EndpointStatsJob`].
pub const ENDPOINT_STATS: JobInfo = JobInfo {
    name: "endpoint-stats",
    about: "per endpoint class: requests, status classes, latency p50/p95/p99",
    make: |p: &Params| -> Result<Box<dyn DynJob>, JobError> {
        check_params("endpoint-stats", p, &[])?;
        Ok(Box::new(EndpointStatsJob))
    },
};

impl Job for EndpointStatsJob {
    type Key = Vec<u8>;
    type Value = EndpointStats;
    const COMBINE: Option<Combiner<EndpointStats>> = Some(EndpointStats::merge);
    const STATE: bool = true;
    /// Version 1 counted lines from IPv6 clients malformed: outputs it wrote are not
    /// continued.
    const VERSION: u32 = 2;

    fn map(&mut self, record: &[u8], ctx: &mut MapContext<'_, Self>) {
        if let Some(l) = parsed(record, ctx) {
            let mut s = EndpointStats {
                requests: 1,
                ..Default::default()
            };
            if (200..600).contains(&l.status) {
                s.status[(l.status / 100 - 2) as usize] = 1;
            }
            s.latency.record(l.latency_ms);
            ctx.emit_encoded(endpoint_class(l.path).as_bytes(), s);
        }
    }

    fn reduce(
        &self,
        class: Vec<u8>,
        values: Values<'_, EndpointStats>,
        out: &mut ReduceContext<'_>,
    ) {
        let mut total = EndpointStats::default();
        for v in values {
            EndpointStats::merge(&mut total, v);
        }
        let buf = out.buffer();
        buf.extend_from_slice(&class);
        for n in [
            total.requests,
            total.status[0],
            total.status[1],
            total.status[2],
            total.status[3],
        ] {
            buf.push(b'\t');
            push_u64(buf, n);
        }
        for q in [0.50, 0.95, 0.99] {
            buf.push(b'\t');
            push_u64(buf, total.latency.quantile(q));
        }
        out.end_line();
    }
}

#[cfg(test)]
mod tests;
