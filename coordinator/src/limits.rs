//! Per-caller limits: how fast one caller may submit work.
//!
//! A token bucket per caller (its token's id, its client certificate, or without
//! authentication its IP address): `burst` submissions at once, refilled at `per_minute`. A
//! flood of submissions from one caller is refused with `RESOURCE_EXHAUSTED` before anything
//! is planned, so it cannot starve the heartbeats and reports of running jobs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Submissions one caller may make: `per_minute` on average, `burst` at once (zero
/// `per_minute`: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubmitRate {
    /// Average submissions per minute.
    pub per_minute: u32,
    /// Submissions at once.
    pub burst: u32,
}

impl Default for SubmitRate {
    fn default() -> Self {
        SubmitRate {
            per_minute: 120,
            burst: 30,
        }
    }
}

/// Callers tracked before the full (idle) buckets are dropped.
const MAX_CALLERS: usize = 10_000;

/// Token buckets, one per caller.
#[derive(Debug)]
pub struct RateLimiter {
    rate: SubmitRate,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// Limits callers to `rate`.
    pub fn new(rate: SubmitRate) -> Self {
        RateLimiter {
            rate,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one submission from `caller`'s bucket, or says how long until one is there.
    ///
    /// # Errors
    /// The wait before the caller may submit again.
    pub fn take(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        if self.rate.per_minute == 0 {
            return Ok(());
        }
        let per_sec = f64::from(self.rate.per_minute) / 60.0;
        let burst = f64::from(self.rate.burst.max(1));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CALLERS && !buckets.contains_key(caller) {
            // Buckets that have refilled are the same as no bucket.
            buckets.retain(|_, (level, at)| {
                *level + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (level, at) = buckets.entry(caller.to_string()).or_insert((burst, now));
        *level = (*level + now.saturating_duration_since(*at).as_secs_f64() * per_sec).min(burst);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *level) / per_sec))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_and_callers_are_apart() {
        let limiter = RateLimiter::new(SubmitRate {
            per_minute: 60,
            burst: 3,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take("a", t0).is_ok());
        }
        let wait = limiter.take("a", t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        // Another caller has its own bucket.
        assert!(limiter.take("b", t0).is_ok());
        // One per second comes back.
        assert!(limiter.take("a", t0 + Duration::from_millis(1001)).is_ok());
        assert!(limiter.take("a", t0 + Duration::from_millis(1002)).is_err());
        // Unlimited.
        let open = RateLimiter::new(SubmitRate {
            per_minute: 0,
            burst: 0,
        });
        assert!((0..1000).all(|_| open.take("a", t0).is_ok()));
    }
}
