//! Requests per second per API key: a token bucket each, `burst` deep, refilled at
//! `per_second`. A team's own limit (its quota) replaces the server's; a bucket whose limit
//! changed starts full at the new one. Written here rather than taken from a crate because the
//! limit differs per key and changes while the server runs.

use crate::RateLimit;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Buckets {
    by_key: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    limit: RateLimit,
    tokens: f64,
    at: Instant,
}

impl Buckets {
    /// Takes one request from the key's bucket, or says how long until one is free.
    pub fn take(&self, key_id: &str, limit: Option<RateLimit>) -> Result<(), Duration> {
        let Some(limit) = limit.filter(|l| l.per_second > 0.0) else {
            return Ok(());
        };
        self.take_at(key_id, limit, Instant::now())
    }

    fn take_at(&self, key_id: &str, limit: RateLimit, now: Instant) -> Result<(), Duration> {
        let burst = f64::from(limit.burst.max(1));
        let mut all = self.by_key.lock().unwrap_or_else(|p| p.into_inner());
        let b = all.entry(key_id.to_string()).or_insert(Bucket {
            limit,
            tokens: burst,
            at: now,
        });
        if b.limit != limit {
            *b = Bucket {
                limit,
                tokens: burst,
                at: now,
            };
        }
        let refill = now.saturating_duration_since(b.at).as_secs_f64() * limit.per_second;
        b.tokens = (b.tokens + refill).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / limit.per_second))
        }
    }

    /// Forgets a key's bucket (a revoked key).
    pub fn forget(&self, key_id: &str) {
        self.by_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let b = Buckets::default();
        let l = RateLimit {
            per_second: 10.0,
            burst: 5,
        };
        let t0 = Instant::now();
        for _ in 0..5 {
            b.take_at("k", l, t0).unwrap();
        }
        let wait = b.take_at("k", l, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // Another key has its own bucket.
        b.take_at("other", l, t0).unwrap();
        // 0.25 s later: two and a half tokens back, two requests pass.
        let t1 = t0 + Duration::from_millis(250);
        b.take_at("k", l, t1).unwrap();
        b.take_at("k", l, t1).unwrap();
        assert!(b.take_at("k", l, t1).is_err());
        // Refill never exceeds the burst.
        let t2 = t1 + Duration::from_secs(60);
        for _ in 0..5 {
            b.take_at("k", l, t2).unwrap();
        }
        assert!(b.take_at("k", l, t2).is_err());
    }

    #[test]
    fn a_changed_limit_applies_at_once_and_none_is_unlimited() {
        let b = Buckets::default();
        let tight = RateLimit {
            per_second: 1.0,
            burst: 1,
        };
        let t0 = Instant::now();
        b.take_at("k", tight, t0).unwrap();
        assert!(b.take_at("k", tight, t0).is_err());
        let loose = RateLimit {
            per_second: 100.0,
            burst: 50,
        };
        for _ in 0..50 {
            b.take_at("k", loose, t0).unwrap();
        }
        for _ in 0..1000 {
            b.take("k", None).unwrap();
        }
    }
}
