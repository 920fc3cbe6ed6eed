//! An in-memory platform for unit tests: key-value in a map, a clock that
//! sleeping advances, a config document, and no network.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::*;

pub struct Fake {
    pub kv: RefCell<BTreeMap<String, Vec<u8>>>,
    pub max_value: u64,
    pub now: Cell<u64>,
    /// The config key `document`.
    pub document: Option<String>,
    /// What the limiter answers; `None`: every request allowed.
    pub limiter: Option<Result<Decision, String>>,
    /// Another request holds every key ending in `:lease` until this time
    /// (ms on `now`): `set_if_absent` loses and `get` sees it.
    pub leases_held_until: Option<u64>,
    /// `set_if_absent` fails as a store outage does.
    pub set_if_absent_fails: bool,
    /// Entries another request stores, each once `now` reaches its time.
    pub arrivals: RefCell<Vec<(u64, String, Vec<u8>)>>,
    /// What the logging phase reported (`answered`): error code, cache.
    pub answered: RefCell<Vec<(Option<String>, Option<String>)>>,
    /// The blob store: each object with its bytes, and when it was put.
    pub blobs: RefCell<BTreeMap<String, (BlobObject, Vec<u8>, u64)>>,
}

impl Fake {
    pub fn new(max_value: u64) -> Fake {
        Fake {
            kv: RefCell::default(),
            max_value,
            now: Cell::new(1_000_000),
            document: None,
            limiter: None,
            leases_held_until: None,
            set_if_absent_fails: false,
            arrivals: RefCell::default(),
            answered: RefCell::default(),
            blobs: RefCell::default(),
        }
    }

    pub fn with_document(document: &str) -> Fake {
        Fake { document: Some(document.to_owned()), ..Fake::new(1 << 20) }
    }
}

/// A body the test already has, whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Body for Bytes {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        Bytes(bytes)
    }
    fn read(&mut self, max: u32) -> Result<Option<Vec<u8>>, BodyError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let rest = self.0.split_off(self.0.len().min(max as usize));
        Ok(Some(std::mem::replace(&mut self.0, rest)))
    }
    fn known_length(&self) -> Option<u64> {
        Some(self.0.len() as u64)
    }
    fn prepend(mut head: Vec<u8>, tail: Self) -> Self {
        head.extend(tail.0);
        Bytes(head)
    }
}

impl Fake {
    fn lease_held(&self, key: &str) -> bool {
        key.ends_with(":lease") && self.leases_held_until.is_some_and(|until| self.now.get() < until)
    }
}

impl Platform for Fake {
    type Body = Bytes;
    fn send(&self, _: Request<Bytes>, _: Option<u32>) -> Result<Response<Bytes>, HttpError> {
        Err(HttpError::Denied("no network in unit tests".into()))
    }
    fn kv_limits(&self) -> KvLimits {
        KvLimits { max_key_bytes: 256, max_value_bytes: self.max_value, min_ttl_seconds: 1 }
    }
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        if self.lease_held(key) {
            return Ok(Some(b"another request".to_vec()));
        }
        Ok(self.kv.borrow().get(key).cloned())
    }
    fn kv_set(&self, key: &str, value: &[u8], _: Option<u32>) -> Result<(), KvError> {
        if value.len() as u64 > self.max_value {
            return Err(KvError::TooLarge(self.max_value));
        }
        self.kv.borrow_mut().insert(key.into(), value.into());
        Ok(())
    }
    fn kv_delete(&self, key: &str) -> Result<(), KvError> {
        self.kv.borrow_mut().remove(key);
        Ok(())
    }
    fn kv_set_if_absent(&self, key: &str, value: &[u8], ttl: Option<u32>) -> Result<bool, KvError> {
        if self.set_if_absent_fails {
            return Err(KvError::Unavailable("the fake store is down".into()));
        }
        if self.lease_held(key) || self.kv.borrow().contains_key(key) {
            return Ok(false);
        }
        self.kv_set(key, value, ttl).map(|()| true)
    }
    fn blob_put(&self, key: &str, mut content: Bytes, size: u64, sha256: Option<&str>, metadata: &[(String, String)]) -> Result<(), BlobError> {
        let bytes = std::mem::take(&mut content.0);
        let matches = bytes.len() as u64 == size && sha256.is_none_or(|h| crate::proxy::blob_store::sha256_hex(&bytes) == h);
        if !matches {
            return Err(BlobError::Mismatch("not the object it was said to be".into()));
        }
        self.blobs.borrow_mut().insert(key.into(), (BlobObject { size, metadata: metadata.to_vec() }, bytes, self.now.get()));
        Ok(())
    }
    fn blob_get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<(BlobObject, Bytes)>, BlobError> {
        Ok(self.blobs.borrow().get(key).map(|(object, bytes, _)| {
            let (first, count) = range.unwrap_or((0, object.size));
            let first = first.min(object.size) as usize;
            let end = first + (count as usize).min(bytes.len() - first);
            (object.clone(), Bytes(bytes[first..end].to_vec()))
        }))
    }
    fn blob_head(&self, key: &str) -> Result<Option<BlobObject>, BlobError> {
        Ok(self.blobs.borrow().get(key).map(|(object, ..)| object.clone()))
    }
    fn blob_put_through(&self, key: &str, content: Bytes, size: u64, sha256: Option<&str>, metadata: &[(String, String)]) -> Bytes {
        // A test's body is read whole at once: stored as soon as passed on.
        let _ = self.blob_put(key, content.clone(), size, sha256, metadata);
        content
    }
    fn blob_delete(&self, key: &str) -> Result<(), BlobError> {
        self.blobs.borrow_mut().remove(key);
        Ok(())
    }
    /// In key order; the cursor is the page's last key.
    fn blob_list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<BlobListing, BlobError> {
        let blobs = self.blobs.borrow();
        let mut after = blobs.iter().filter(|(key, _)| key.starts_with(prefix) && cursor.is_none_or(|c| key.as_str() > c));
        let objects: Vec<BlobListed> = after.by_ref().take(limit.max(1) as usize).map(|(key, (object, _, put))| BlobListed { key: key.clone(), size: object.size, used_ms: *put }).collect();
        let cursor = after.next().and(objects.last().map(|o| o.key.clone()));
        Ok(BlobListing { objects, cursor })
    }
    fn config(&self, key: &str) -> Result<Option<String>, String> {
        Ok(if key == crate::config::DOCUMENT_KEY { self.document.clone() } else { None })
    }
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn sleep_ms(&self, ms: u32) {
        self.now.set(self.now.get() + u64::from(ms));
        let now = self.now.get();
        let (arrived, waiting) = self.arrivals.take().into_iter().partition(|(at, ..)| *at <= now);
        *self.arrivals.borrow_mut() = waiting;
        self.kv.borrow_mut().extend(arrived.into_iter().map(|(_, key, value): (u64, String, Vec<u8>)| (key, value)));
    }
    fn rate_limit(&self, _: &str, _: &str, _: u32, _: u32) -> Result<Decision, String> {
        self.limiter.clone().unwrap_or(Ok(Decision { allowed: true, retry_after_seconds: 0 }))
    }
    fn answered(&self, error_code: Option<&str>, cache: Option<&str>) {
        self.answered.borrow_mut().push((error_code.map(str::to_owned), cache.map(str::to_owned)));
    }
}
