//! `kv` over Spin's `default` store (`wasi:keyvalue/store@0.2.0-draft2`).
//! Spin's store has no expiry, so each value carries its own: a get past it
//! deletes the entry and answers none.

use std::cell::OnceCell;

use crate::Services;
use crate::bindings::exports::edgeproxy::platform::kv::{self, KvError, KvLimits};
use crate::bindings::wasi::keyvalue::atomics::{self, Cas, CasError};
use crate::bindings::wasi::keyvalue::store::{self, Bucket};

/// Spin's documented limits: keys up to 256 bytes, values up to 1 MB.
const MAX_KEY_BYTES: u32 = 256;
const MAX_STORED_BYTES: u64 = 1_000_000;
/// Version byte, the expiry in Unix milliseconds (0 = none), little-endian,
/// then a random nonce, which makes every write's bytes unique (see [`swap`]).
const HEADER_BYTES: usize = 17;
const FORMAT_V2: u8 = 2;

thread_local! {
    // One instance serves one request: opening once per instance is enough.
    static BUCKET: OnceCell<Result<Bucket, String>> = const { OnceCell::new() };
}

pub fn with_bucket<T>(f: impl FnOnce(&Bucket) -> Result<T, store::Error>) -> Result<T, String> {
    BUCKET.with(|cell| match cell.get_or_init(|| store::open("default").map_err(|e| describe(&e))) {
        Ok(bucket) => f(bucket).map_err(|e| describe(&e)),
        Err(why) => Err(why.clone()),
    })
}

pub fn describe(e: &store::Error) -> String {
    match e {
        store::Error::NoSuchStore => "no key-value store `default`".into(),
        store::Error::AccessDenied => "access to the key-value store `default` denied: add key_value_stores = [\"default\"] to the component in spin.toml".into(),
        store::Error::Other(why) => why.clone(),
    }
}

/// The value as stored: format byte, expiry, nonce, bytes.
fn stored(value: &[u8], ttl_seconds: Option<u32>) -> Vec<u8> {
    let expires_ms = ttl_seconds.map_or(0, |ttl| crate::now_ms() + u64::from(ttl) * 1000);
    let mut stored = Vec::with_capacity(HEADER_BYTES + value.len());
    stored.push(FORMAT_V2);
    stored.extend_from_slice(&expires_ms.to_le_bytes());
    stored.extend_from_slice(&nonce());
    stored.extend_from_slice(value);
    stored
}

/// Eight random bytes that make a write's bytes unique (see [`swap`]).
pub fn nonce() -> [u8; 8] {
    wasi::random::random::get_random_u64().to_le_bytes()
}

/// The expiry of a stored value in our format (0 = none); `None` for anything else.
fn expires_ms(stored: &[u8]) -> Option<u64> {
    if stored.len() < HEADER_BYTES || stored[0] != FORMAT_V2 {
        return None;
    }
    Some(u64::from_le_bytes(stored[1..9].try_into().expect("8 bytes")))
}

fn has_expired(expires_ms: u64) -> bool {
    expires_ms != 0 && crate::now_ms() >= expires_ms
}

/// A stored value in our format whose expiry has not passed.
fn is_live(stored: &[u8]) -> bool {
    expires_ms(stored).is_some_and(|e| !has_expired(e))
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES as usize {
        return Err(KvError::InvalidKey(format!("keys are 1 to {MAX_KEY_BYTES} bytes; this one is {}", key.len())));
    }
    Ok(())
}

impl kv::Guest for Services {
    fn limits() -> KvLimits {
        KvLimits { max_key_bytes: MAX_KEY_BYTES, max_value_bytes: MAX_STORED_BYTES - HEADER_BYTES as u64, min_ttl_seconds: 1 }
    }

    fn get(key: String) -> Result<Option<Vec<u8>>, KvError> {
        check_key(&key)?;
        let Some(stored) = with_bucket(|b| b.get(&key)).map_err(KvError::Unavailable)? else { return Ok(None) };
        let Some(expires_ms) = expires_ms(&stored) else { return Ok(None) };
        if has_expired(expires_ms) {
            let _ = with_bucket(|b| b.delete(&key));
            return Ok(None);
        }
        Ok(Some(stored[HEADER_BYTES..].to_vec()))
    }

    fn set(key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> Result<(), KvError> {
        check_key(&key)?;
        let max = Self::limits().max_value_bytes;
        if value.len() as u64 > max {
            return Err(KvError::TooLarge(max));
        }
        let stored = stored(&value, ttl_seconds);
        with_bucket(|b| b.set(&key, &stored)).map_err(KvError::Unavailable)
    }

    /// Compare-and-swap against what was read: absent or expired, then ours.
    fn set_if_absent(key: String, value: Vec<u8>, ttl_seconds: Option<u32>) -> Result<bool, KvError> {
        check_key(&key)?;
        let max = Self::limits().max_value_bytes;
        if value.len() as u64 > max {
            return Err(KvError::TooLarge(max));
        }
        let cas = with_bucket(|b| Cas::new(b, &key)).map_err(KvError::Unavailable)?;
        let current = cas.current().map_err(|e| KvError::Unavailable(describe(&e)))?;
        let was_absent = match current {
            Some(v) if is_live(&v) => return Ok(false),
            current => current.is_none(),
        };
        let stored = stored(&value, ttl_seconds);
        let unavailable = |e: store::Error| KvError::Unavailable(describe(&e));
        if !swap(&key, cas, &stored).map_err(unavailable)? {
            return Ok(false);
        }
        if was_absent { still_ours_after_racing_creations(&key, &stored).map_err(unavailable) } else { Ok(true) }
    }

    fn delete(key: String) -> Result<(), KvError> {
        check_key(&key)?;
        with_bucket(|b| b.delete(&key)).map_err(KvError::Unavailable)
    }
}

/// How long racing creations of one key take to land: far longer than the
/// two back-to-back host calls between reading "absent" and writing.
const CREATION_RACE_MS: u64 = 50;

/// Whether a swap from an absent key really was the only one.
///
/// Spin's SQLite store (the default) swaps from "absent" with an upsert, not a
/// conditional insert, so every request that read "absent" succeeds and the
/// last write stays. Each such write follows its read within moments, so the
/// winner waits out that window and checks the key still holds its own bytes
/// (unique, by the nonce): Fischer's timing-based mutual exclusion. A swap
/// from an existing value is a conditional update and needs none of this.
fn still_ours_after_racing_creations(key: &str, value: &[u8]) -> Result<bool, store::Error> {
    wasi::clocks::monotonic_clock::subscribe_duration(CREATION_RACE_MS * 1_000_000).block();
    holds(key, value)
}

/// Whether `key` now holds exactly `value` (whose bytes are unique to one write).
fn holds(key: &str, value: &[u8]) -> Result<bool, store::Error> {
    BUCKET.with(|cell| match cell.get() {
        Some(Ok(bucket)) => Ok(bucket.get(key)?.as_deref() == Some(value)),
        _ => Ok(false),
    })
}

/// `atomics::swap`: whether `value` replaced what `cas` read.
///
/// Spin 4.0.2's Redis store ends every swap with `UNWATCH <key>`, which Redis
/// refuses (UNWATCH takes no arguments), so its swap reports `cas-failed`
/// whether or not the transaction wrote. On `cas-failed` the key is read back:
/// finding `value`, whose bytes are unique to this write, means the swap
/// happened. On a store whose swap is right this costs one read per real
/// conflict.
pub fn swap(key: &str, cas: Cas, value: &[u8]) -> Result<bool, store::Error> {
    match atomics::swap(cas, value) {
        Ok(()) => Ok(true),
        Err(CasError::CasFailed(_)) => holds(key, value),
        Err(CasError::StoreError(e)) => Err(e),
    }
}
