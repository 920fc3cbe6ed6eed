//! `limiter.check` as a GCRA token bucket kept in the key-value store, one
//! key per (policy, client) updated by compare-and-swap
//! (`wasi:keyvalue/atomics`), so every Spin instance shares the count.
//! A client's key holds one timestamp (and a nonce); it is rewritten, never
//! multiplied.

use crate::Services;
use crate::bindings::exports::edgeproxy::platform::limiter::{self, Decision, LimiterError};
use crate::bindings::wasi::keyvalue::atomics::Cas;
use crate::kv::{describe, nonce, swap, with_bucket};

/// Attempts before giving up on a contended key (and failing open).
const CAS_ATTEMPTS: u32 = 8;
const KEY_PREFIX: &str = "edgeproxy:ratelimit:";
/// Spin's key limit; longer client ids are hashed.
const MAX_KEY_BYTES: usize = 256;

impl limiter::Guest for Services {
    /// A bucket of `limit` tokens refilled at `limit` per `period-seconds`,
    /// stored as its theoretical arrival time (TAT): a request is allowed if,
    /// after adding one emission interval, the TAT is at most one period ahead.
    fn check(policy: String, key: String, limit: u32, period_seconds: u32) -> Result<Decision, LimiterError> {
        let period_ms = u64::from(period_seconds.max(1)) * 1000;
        let interval_ms = (period_ms / u64::from(limit.max(1))).max(1);
        let key = store_key(&policy, &key);
        for _ in 0..CAS_ATTEMPTS {
            let now = crate::now_ms();
            let cas = with_bucket(|b| Cas::new(b, &key)).map_err(LimiterError::Unavailable)?;
            let current = cas.current().map_err(|e| LimiterError::Unavailable(describe(&e)))?;
            let tat = current.and_then(|v| Some(u64::from_le_bytes(v.get(..8)?.try_into().ok()?))).unwrap_or(0).max(now);
            let next = tat + interval_ms;
            if next - now > period_ms {
                let wait_ms = next - now - period_ms;
                return Ok(Decision { allowed: false, retry_after_seconds: wait_ms.div_ceil(1000).max(1) as u32 });
            }
            // The TAT, then a nonce that makes this write's bytes unique (kv::swap).
            let mut value = next.to_le_bytes().to_vec();
            value.extend_from_slice(&nonce());
            match swap(&key, cas, &value) {
                Ok(true) => return Ok(Decision { allowed: true, retry_after_seconds: 0 }),
                Ok(false) => continue,
                Err(e) => return Err(LimiterError::Unavailable(describe(&e))),
            }
        }
        Err(LimiterError::Unavailable(format!("the counter {key} stayed contended for {CAS_ATTEMPTS} attempts")))
    }
}

fn store_key(policy: &str, client: &str) -> String {
    let key = format!("{KEY_PREFIX}{policy}:{client}");
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    // FNV-1a: stable across builds, and collisions only share a bucket.
    let hash = key.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    format!("{KEY_PREFIX}{hash:016x}")
}
