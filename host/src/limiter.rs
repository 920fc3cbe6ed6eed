//! Token buckets, one per (policy, client): in memory, or on Redis when
//! instances share their limits (`--kv redis://...`, redis.rs). Counting
//! lives in the host because only the host sees every request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

pub enum Limiter {
    Local(Buckets),
    Redis(crate::redis::Redis),
}

impl Limiter {
    pub async fn check(&self, policy: &str, key: &str, limit: u32, period_seconds: u32) -> Result<Decision, String> {
        match self {
            Limiter::Local(buckets) => Ok(buckets.check(policy, key, limit, period_seconds)),
            Limiter::Redis(redis) => {
                let (allowed, retry_after_seconds) = redis.take_token(policy, key, limit, period_seconds).await?;
                Ok(Decision { allowed, retry_after_seconds })
            }
        }
    }
}

/// This process's buckets.
pub struct Buckets {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

pub struct Decision {
    pub allowed: bool,
    pub retry_after_seconds: u32,
}

/// Past this many buckets, full (idle) ones are dropped; if that is not
/// enough (a flood of new client addresses), all are, which fails open for a
/// moment rather than letting memory and lookup time grow without bound.
const MAX_BUCKETS: usize = 100_000;

impl Buckets {
    pub fn new() -> Self {
        Buckets { buckets: Mutex::new(HashMap::new()) }
    }

    /// A bucket holds `limit` tokens and refills `limit` per `period_seconds`.
    pub fn check(&self, policy: &str, key: &str, limit: u32, period_seconds: u32) -> Decision {
        let capacity = f64::from(limit.max(1));
        let per_second = capacity / f64::from(period_seconds.max(1));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| b.tokens + now.duration_since(b.refilled).as_secs_f64() * per_second < capacity);
            if buckets.len() >= MAX_BUCKETS / 2 {
                buckets.clear();
            }
        }
        let bucket = buckets.entry((policy.to_owned(), key.to_owned())).or_insert(Bucket { tokens: capacity, refilled: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.refilled).as_secs_f64() * per_second).min(capacity);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Decision { allowed: true, retry_after_seconds: 0 }
        } else {
            Decision { allowed: false, retry_after_seconds: ((1.0 - bucket.tokens) / per_second).ceil() as u32 }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_limit_then_refuses_with_a_retry_time() {
        let limiter = Buckets::new();
        for _ in 0..3 {
            assert!(limiter.check("api", "1.2.3.4", 3, 60).allowed);
        }
        let refused = limiter.check("api", "1.2.3.4", 3, 60);
        assert!(!refused.allowed);
        assert!((1..=20).contains(&refused.retry_after_seconds), "{}", refused.retry_after_seconds);
        assert!(limiter.check("api", "5.6.7.8", 3, 60).allowed, "clients are counted apart");
    }
}
