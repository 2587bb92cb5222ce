//! A mergeable log-linear histogram for latencies.
//!
//! Values below 64 have a bucket each (exact); above, each power of two is cut into 32
//! buckets, so a reported quantile is within about 3% of the true value. Merging two
//! histograms adds their buckets, so map-side combining keeps memory fixed however many
//! requests there are (at most 1,920 buckets, stored sparsely on the wire).

use serde::{Deserialize, Serialize};

const EXACT: u64 = 64;
const SUB_BITS: u32 = 5;

/// Counts of values per bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    counts: Vec<u64>,
}

fn bucket(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (EXACT + u64::from(e - 6) * (1 << SUB_BITS) + sub) as usize
}

fn lower_bound(b: usize) -> u64 {
    let b = b as u64;
    if b < EXACT {
        return b;
    }
    let e = (b - EXACT) / (1 << SUB_BITS) + 6;
    let sub = (b - EXACT) % (1 << SUB_BITS);
    (1 << e) | (sub << (e - u64::from(SUB_BITS)))
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let b = bucket(v);
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Returns the number of values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Returns the `q` quantile (0 < q ≤ 1) as the lower bound of its bucket; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let n = self.count();
        if n == 0 {
            return 0;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return lower_bound(b);
            }
        }
        lower_bound(self.counts.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_exact_below_64_and_within_3_percent_above() {
        for v in (0..64).chain([64, 65, 100, 1000, 12_345, 1 << 40, u64::MAX]) {
            let lb = lower_bound(bucket(v));
            assert!(lb <= v, "{v}");
            if v < 64 {
                assert_eq!(lb, v);
            } else {
                assert!((v - lb) as f64 / v as f64 <= 1.0 / 32.0, "{v} -> {lb}");
            }
        }
    }

    #[test]
    fn quantiles_and_merge() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        for v in 1..=50 {
            a.record(v);
        }
        for v in 51..=100 {
            b.record(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), 100);
        assert_eq!(a.quantile(0.5), 50);
        let p99 = a.quantile(0.99);
        assert!((96..=99).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile(0.5), 0);
    }
}
