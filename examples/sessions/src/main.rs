//! `sessions`: sessionization of the access log. A signed-in user's requests are split into
//! sessions wherever they pause for more than `gap_s` seconds (default 1800, 30 minutes); per
//! user: `user<TAB>sessions<TAB>mean session length in seconds<TAB>top landing pages`, the
//! landing page being a session's first path, top 3 by count then path.

use std::collections::BTreeMap;

use quern::builtin::weblog::parse;
use quern::registry::{check_params, int_param};
use quern::sdk::{Job, MapContext, ReduceContext, Values};
use quern::{JobInfo, Registry};

struct Sessions {
    gap_s: u64,
}

/// Seconds since 2000-01-01 of an access-log time `01/Nov/2026:00:19:13 +0000` (UTC only).
pub fn log_time(line: &[u8]) -> Option<u64> {
    let open = line.iter().position(|b| *b == b'[')?;
    let t = line.get(open + 1..open + 21)?;
    let num = |r: std::ops::Range<usize>| -> Option<u64> {
        std::str::from_utf8(t.get(r)?).ok()?.parse().ok()
    };
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let name = t.get(3..6)?;
    let month = MONTHS.iter().position(|m| *m == name)? as u64;
    let (day, year) = (num(0..2)?, num(7..11)?);
    let (h, m, s) = (num(12..14)?, num(15..17)?, num(18..20)?);
    if !(2000..3000).contains(&year) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from 2000-01-01 (civil calendar).
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days: u64 = (2000..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    const LEN: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    days += LEN[..month as usize].iter().sum::<u64>();
    if month > 1 && leap(year) {
        days += 1;
    }
    days += day - 1;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

impl Job for Sessions {
    type Key = String;
    type Value = (u64, String);

    fn map(&mut self, line: &[u8], ctx: &mut MapContext<'_, Self>) {
        let Some(l) = parse(line) else {
            ctx.count("malformed_records", 1);
            return;
        };
        let (Some(user), Some(t)) = (l.user, log_time(line)) else {
            return;
        };
        let user = String::from_utf8_lossy(user).into_owned();
        ctx.emit(&user, (t, String::from_utf8_lossy(l.path).into_owned()));
    }

    fn reduce(&self, user: String, hits: Values<'_, (u64, String)>, out: &mut ReduceContext<'_>) {
        let mut hits: Vec<(u64, String)> = hits.collect();
        hits.sort();
        let (mut sessions, mut total) = (0u64, 0u64);
        let mut landings: BTreeMap<&str, u64> = BTreeMap::new();
        let mut start = 0;
        for i in 0..hits.len() {
            let last = i + 1 == hits.len() || hits[i + 1].0 - hits[i].0 > self.gap_s;
            if last {
                sessions += 1;
                total += hits[i].0 - hits[start].0;
                *landings.entry(&hits[start].1).or_default() += 1;
                start = i + 1;
            }
        }
        let mut top: Vec<(&str, u64)> = landings.into_iter().collect();
        top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let top: Vec<&str> = top.iter().take(3).map(|(p, _)| *p).collect();
        out.write_line(
            format!(
                "{user}\t{sessions}\t{:.1}\t{}",
                total as f64 / sessions as f64,
                top.join(",")
            )
            .as_bytes(),
        );
    }
}

fn main() -> std::process::ExitCode {
    let mut jobs = Registry::builtin();
    jobs.register(JobInfo {
        name: "sessions",
        about: "per user: sessions (split by gap_s of inactivity), mean length, top landing pages",
        make: |params| {
            check_params("sessions", params, &["gap_s"])?;
            Ok(Box::new(Sessions {
                gap_s: int_param("sessions", params, "gap_s", 1800, 1, 86_400 * 365)?,
            }))
        },
    });
    quern::main_with(jobs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_times() {
        let t = |s: &str| super::log_time(format!("x - u1 [{s}] \"GET / HTTP/1.1\"").as_bytes());
        assert_eq!(t("01/Jan/2000:00:00:00 +0000"), Some(0));
        assert_eq!(
            t("01/Mar/2000:00:00:01 +0000"),
            Some((31 + 29) * 86_400 + 1)
        );
        assert_eq!(
            t("01/Nov/2026:00:19:13 +0000").unwrap() - t("31/Oct/2026:23:19:13 +0000").unwrap(),
            3600
        );
        assert_eq!(t("01/Foo/2026:00:19:13 +0000"), None);
    }
}
