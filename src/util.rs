//! Small helpers shared by the subcommands: sizes, durations, coordinator discovery.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Parses a size such as `64MiB`, `1GiB`, `512k`, `1000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid size {s:?}"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => {
            return Err(format!(
                "unknown size unit {u:?} in {s:?} (use B, KiB, MiB, GiB, TiB)"
            ))
        }
    };
    Ok((n * mult as f64) as u64)
}

/// Formats bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `n` and a noun, in the plural unless `n` is 1: "1 worker", "2 workers".
pub fn plural(n: impl Into<u64> + Copy, noun: &str) -> String {
    let n: u64 = n.into();
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Name of the file in a state directory that holds a local cluster's coordinator address.
pub const ADDR_FILE: &str = "coordinator.addr";

/// Returns the coordinator to talk to: `--coordinator`/`QUERN_COORDINATOR` if given, else the
/// address a `quern local` in `state_dir` wrote.
pub fn find_coordinator(explicit: Option<&str>, state_dir: &Path) -> Result<String> {
    if let Some(a) = explicit {
        return Ok(a.to_string());
    }
    let file = state_dir.join(ADDR_FILE);
    match std::fs::read_to_string(&file) {
        Ok(a) => Ok(a.trim().to_string()),
        Err(_) => bail!(
            "no coordinator given and no local cluster found (no {}); start one with `quern local`, \
             or pass --coordinator ADDR or set QUERN_COORDINATOR",
            file.display()
        ),
    }
}

/// Writes a file atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// Where `quern local --auth` leaves the admin token for the CLI, inside its state directory.
pub const TOKEN_FILE: &str = "token";

/// Writes a file readable by its owner only (a token), atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    protocol::auth::write_private(path, data).with_context(|| format!("writing {}", path.display()))
}

/// The token the CLI sends: `QUERN_TOKEN`, else the admin token a `quern local --auth` in
/// `state_dir` left, else none.
pub fn find_token(state_dir: &Path) -> Option<String> {
    std::env::var(protocol::auth::TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            std::fs::read_to_string(state_dir.join(TOKEN_FILE))
                .ok()
                .map(|t| t.trim().to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn bytes_format_for_people() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}

/// Parses a span such as `90s`, `10m`, `2h` or `1d` (or plain seconds) into seconds.
pub fn parse_span_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?}: expected a span such as 30s, 10m, 2h or 1d");
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mul = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    Ok(n.saturating_mul(mul))
}
