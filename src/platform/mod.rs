//! What the core needs from a host, as Rust traits. On wasm these are the WIT
//! imports of `wit/edgeproxy.wit` (see `guest.rs`); in unit tests, a fake.
//! Apps are generic over [`Platform`], so they never see bindings.

use std::fmt;

#[cfg(test)]
pub mod fake;

/// Header list as it travels: lower-case names, repeated names repeated.
pub type Headers = Vec<(HeaderName, String)>;

/// A header name, lower-case by construction, so that comparing names is
/// comparing strings: `name == "content-type"` cannot miss a `Content-Type`
/// a host passed on as it came.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(from = "String", into = "String")]
pub struct HeaderName(String);

impl From<HeaderName> for String {
    fn from(name: HeaderName) -> String {
        name.0
    }
}

impl HeaderName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

}

impl From<String> for HeaderName {
    fn from(mut name: String) -> Self {
        // Hosts give lower-case names (the WIT's rule); this costs nothing then.
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.make_ascii_lowercase();
        }
        HeaderName(name)
    }
}

impl From<&str> for HeaderName {
    fn from(name: &str) -> Self {
        HeaderName::from(name.to_owned())
    }
}

impl std::ops::Deref for HeaderName {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for HeaderName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for HeaderName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `headers` with their names typed (a host's list, in place).
pub fn typed_headers(headers: Vec<(String, String)>) -> Headers {
    headers.into_iter().map(|(name, value)| (HeaderName::from(name), value)).collect()
}

#[cfg(test)]
#[test]
fn a_header_name_is_lower_case_whatever_the_host_sent() {
    let headers = typed_headers(vec![("Content-Type".into(), "text/plain".into()), ("x-kept".into(), "1".into())]);
    assert_eq!(header(&headers, "content-type"), Some("text/plain"));
    assert!(headers[0].0 == "content-type" && headers[1].0 == "x-kept");
    assert_eq!(untyped_headers(headers)[0].0, "content-type");
}

/// `headers` as a host takes them (in place).
pub fn untyped_headers(headers: Headers) -> Vec<(String, String)> {
    headers.into_iter().map(|(name, value)| (name.into(), value)).collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    Broken(String),
    Timeout,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Broken(why) => write!(f, "body stream broken: {why}"),
            BodyError::Timeout => f.write_str("body stream timed out"),
        }
    }
}

/// A streaming body owned by the host. Passing it on costs nothing; reading
/// it copies bytes into wasm memory, so read only what must be inspected.
pub trait Body: Sized {
    fn from_bytes(bytes: Vec<u8>) -> Self;
    fn read(&mut self, max: u32) -> Result<Option<Vec<u8>>, BodyError>;
    fn known_length(&self) -> Option<u64>;
    fn prepend(head: Vec<u8>, tail: Self) -> Self;
}

/// How much of a body [`read_up_to`] found.
pub enum ReadOutcome<B> {
    /// The whole body, no longer than the limit.
    Complete(Vec<u8>),
    /// Longer than the limit: the body, intact, for passing on unread.
    TooLong(B),
}

const READ_CHUNK: u32 = 256 * 1024;

/// Reads a whole body if it is at most `limit` bytes, holding at most about
/// twice `limit` in memory. A longer body comes back whole.
pub fn read_up_to<B: Body>(mut body: B, limit: u64) -> Result<ReadOutcome<B>, BodyError> {
    if body.known_length().is_some_and(|len| len > limit) {
        return Ok(ReadOutcome::TooLong(body));
    }
    // Chunks are joined once at the end: growing one buffer between reads
    // would copy it over and over (and the core's arena never reuses space).
    let mut chunks = Vec::new();
    let mut total = 0u64;
    while let Some(chunk) = body.read(READ_CHUNK)? {
        total += chunk.len() as u64;
        chunks.push(chunk);
        if total > limit {
            return Ok(ReadOutcome::TooLong(B::prepend(chunks.concat(), body)));
        }
    }
    Ok(ReadOutcome::Complete(chunks.concat()))
}

pub struct Request<B> {
    pub method: String,
    /// Absolute URL, exactly as the host received it (not normalised).
    pub url: String,
    pub headers: Headers,
    pub body: Option<B>,
}

pub struct Response<B> {
    pub status: u16,
    pub headers: Headers,
    pub body: Option<B>,
}

impl<B> Response<B> {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl<B> Request<B> {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

/// The first value of header `name` (lower-case).
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    InvalidUrl(String),
    Denied(String),
    DnsError(String),
    ConnectionFailed(String),
    Timeout,
    TlsError(String),
    ProtocolError(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
    InvalidKey(String),
    TooLarge(u64),
    Unavailable(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvLimits {
    pub max_key_bytes: u32,
    pub max_value_bytes: u64,
    pub min_ttl_seconds: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlobError {
    InvalidKey(String),
    Mismatch(String),
    TooLarge(u64),
    Unavailable(String),
}

/// A stored object: its size, and what was stored with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobObject {
    pub size: u64,
    pub metadata: Vec<(String, String)>,
}

/// One object of a listing (WIT `listed`): `used_ms` is when it was put,
/// or last read where the store notes reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobListed {
    pub key: String,
    pub size: u64,
    pub used_ms: u64,
}

/// A page of a listing; `cursor` is where the next starts (`None`: last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobListing {
    pub objects: Vec<BlobListed>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub retry_after_seconds: u32,
}

/// The host's capabilities, one method per WIT import.
pub trait Platform {
    type Body: Body;

    fn send(&self, request: Request<Self::Body>, timeout_ms: Option<u32>) -> Result<Response<Self::Body>, HttpError>;

    fn kv_limits(&self) -> KvLimits;
    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn kv_set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError>;
    fn kv_delete(&self, key: &str) -> Result<(), KvError>;
    /// `true` if this call set `key` (it held no live value): a lease.
    fn kv_set_if_absent(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<bool, KvError>;

    /// The blob store (WIT `blob`): whole objects, streamed in and out.
    fn blob_put(&self, key: &str, content: Self::Body, size: u64, sha256: Option<&str>, metadata: &[(String, String)]) -> Result<(), BlobError>;
    /// `range`: the first byte and the number of bytes.
    fn blob_get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<(BlobObject, Self::Body)>, BlobError>;
    fn blob_head(&self, key: &str) -> Result<Option<BlobObject>, BlobError>;
    /// `content` passed on, and stored once it was read to its end, whole
    /// and matching.
    fn blob_put_through(&self, key: &str, content: Self::Body, size: u64, sha256: Option<&str>, metadata: &[(String, String)]) -> Self::Body;
    fn blob_delete(&self, key: &str) -> Result<(), BlobError>;
    /// A page of the objects whose keys start with `prefix`, from `cursor`.
    fn blob_list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<BlobListing, BlobError>;

    /// `Err` carries the host's reason; `Ok(None)` means not set.
    fn config(&self, key: &str) -> Result<Option<String>, String>;

    fn now_ms(&self) -> u64;
    fn sleep_ms(&self, ms: u32);

    fn rate_limit(&self, policy: &str, key: &str, limit: u32, period_seconds: u32) -> Result<Decision, String>;

    /// Tells the host which route (numbered from 1) and app answer this
    /// request, for its metrics. Only the WIT host has a use for it.
    fn routed(&self, _route: u32, _app: &str) {}

    /// Tells the host how the request was answered: the core's own error
    /// code, and the app's cache result (`telemetry.answered`).
    fn answered(&self, _error_code: Option<&str>, _cache: Option<&str>) {}
}
