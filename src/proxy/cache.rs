//! A shared HTTP cache in key-value (RFC 9111, the subset an edge needs):
//! only what the origin marks fresh, keyed by URL and the `Vary` headers,
//! never `Set-Cookie`, never over the size limit.

use serde::{Deserialize, Serialize};

use super::headers::list_tokens;
use super::{ErrorCode, Method, ProxyError, Session};
use crate::platform::{Body, Headers, Platform, ReadOutcome, Response, header, read_up_to};

/// What a cache did for a request: the `X-Cache` header, and the `cache`
/// the logging phase reports (`telemetry.answered`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    /// A stored answer past its time, served because the upstream failed.
    Stale,
}

impl CacheResult {
    pub fn of(hit: bool) -> Self {
        if hit { CacheResult::Hit } else { CacheResult::Miss }
    }

    /// The result an `X-Cache` value the core set names.
    pub fn from_header(value: &str) -> Option<Self> {
        [CacheResult::Hit, CacheResult::Miss, CacheResult::Stale].into_iter().find(|r| r.header() == value)
    }

    pub fn header(self) -> &'static str {
        match self {
            CacheResult::Hit => "HIT",
            CacheResult::Miss => "MISS",
            CacheResult::Stale => "STALE",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Stale => "stale",
        }
    }
}

/// Parsed `Cache-Control` directives, names lower-cased.
pub struct CacheControl(Vec<(String, Option<String>)>);

impl CacheControl {
    pub fn parse(headers: &Headers) -> Self {
        let mut directives = Vec::new();
        for (_, value) in headers.iter().filter(|(n, _)| n == "cache-control") {
            for part in value.split(',') {
                let (name, arg) = match part.split_once('=') {
                    Some((n, a)) => (n, Some(a.trim().trim_matches('"').to_owned())),
                    None => (part, None),
                };
                let name = name.trim().to_ascii_lowercase();
                if !name.is_empty() {
                    directives.push((name, arg));
                }
            }
        }
        CacheControl(directives)
    }

    pub fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    pub fn seconds(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(n, _)| n == name).and_then(|(_, a)| a.as_deref()?.parse().ok())
    }
}

#[derive(Serialize, Deserialize)]
struct EntryMeta {
    status: u16,
    headers: Headers,
    stored_at_ms: u64,
    /// Age the response already had when stored (its `Age` header).
    initial_age: u64,
    /// The request's values of each header the response varies on.
    vary: Vec<(String, Option<String>)>,
}

/// Whether the request may be answered from cache at all.
pub fn may_lookup(method: &Method, request: &Headers) -> bool {
    let cc = CacheControl::parse(request);
    *method == Method::Get && !cc.has("no-cache") && !cc.has("no-store")
}

/// What the shared cache has for a request.
pub enum Lookup<B> {
    Hit(Response<B>),
    /// Not cached: store the upstream's answer under this key.
    Miss(String),
    /// Its key is longer than the store takes: neither looked up nor stored.
    Uncacheable,
}

/// Looks the request up under the route's key for its URL as the client
/// addressed it: the public scheme and authority are part of the key, as
/// they shape the response (`X-Forwarded-Host`, a rewritten `Location`).
pub fn look_up<P: Platform>(s: &Session<P>, app: &str, route_index: usize) -> Lookup<P::Body> {
    let key = format!("{app}:{route_index}:{}://{}{}", s.incoming.scheme, s.incoming.authority, s.incoming.path_and_query());
    if key.len() > s.platform.kv_limits().max_key_bytes as usize {
        return Lookup::Uncacheable;
    }
    match lookup(s.platform, &key, &s.headers) {
        Some(hit) => Lookup::Hit(hit),
        None => Lookup::Miss(key),
    }
}

/// The cached response for `key`, if fresh and if it matches the request's
/// `Vary` headers. A store failure is a miss, never an error.
fn lookup<P: Platform>(platform: &P, key: &str, request: &Headers) -> Option<Response<P::Body>> {
    let raw = platform.kv_get(key).ok()??;
    let (meta, body) = decode(&raw)?;
    if meta.vary.iter().any(|(name, value)| header(request, name) != value.as_deref()) {
        return None;
    }
    let age = meta.initial_age + platform.now_ms().saturating_sub(meta.stored_at_ms) / 1000;
    let mut headers = meta.headers;
    headers.push(("age".into(), age.to_string()));
    Some(Response { status: meta.status, headers, body: Some(P::Body::from_bytes(body.to_vec())) })
}

/// How long the response may be served from a shared cache, or `None` if
/// it must not be stored.
pub fn freshness(method: &Method, request: &Headers, response: &Response<impl Body>) -> Option<u64> {
    if *method != Method::Get || !matches!(response.status, 200 | 203 | 204) {
        return None;
    }
    let req_cc = CacheControl::parse(request);
    let cc = CacheControl::parse(&response.headers);
    if req_cc.has("no-store") || cc.has("no-store") || cc.has("private") || cc.has("no-cache") {
        return None;
    }
    if response.header("set-cookie").is_some() || list_tokens(&response.headers, "vary").iter().any(|n| n == "*") {
        return None;
    }
    // A request with credentials is only shared when the origin says so (RFC 9111 §3.5).
    if header(request, "authorization").is_some() && !(cc.has("public") || cc.has("s-maxage")) {
        return None;
    }
    let lifetime = cc.seconds("s-maxage").or_else(|| cc.seconds("max-age"))?;
    lifetime.checked_sub(age_seconds(&response.headers)).filter(|ttl| *ttl > 0)
}

/// Stores the response if it fits, and returns it with its body intact
/// either way (read into memory when stored, untouched when too large). If
/// the upstream breaks while the body is read, nothing has reached the client
/// yet, so that becomes a 502 rather than a short body.
pub fn store<P: Platform>(
    platform: &P,
    key: &str,
    request: &Headers,
    mut response: Response<P::Body>,
    ttl: u64,
    max_entry_bytes: u64,
) -> Result<Response<P::Body>, ProxyError> {
    let Some(body) = response.body.take() else { return Ok(response) };
    let limit = max_entry_bytes.min(platform.kv_limits().max_value_bytes.saturating_sub(64 * 1024));
    match read_up_to(body, limit) {
        Ok(ReadOutcome::Complete(bytes)) => {
            let vary = list_tokens(&response.headers, "vary")
                .into_iter()
                .map(|name| {
                    let value = header(request, &name).map(str::to_owned);
                    (name, value)
                })
                .collect();
            let meta = EntryMeta {
                status: response.status,
                headers: response.headers.iter().filter(|(n, _)| n != "age").cloned().collect(),
                stored_at_ms: platform.now_ms(),
                initial_age: age_seconds(&response.headers),
                vary,
            };
            let ttl = u32::try_from(ttl).unwrap_or(u32::MAX);
            // A full or failing store only costs a future miss.
            let _ = platform.kv_set(key, &encode(&meta, &bytes), Some(ttl));
            response.body = Some(P::Body::from_bytes(bytes));
        }
        Ok(ReadOutcome::TooLong(body)) => response.body = Some(body),
        Err(e) => return Err(ProxyError::new(ErrorCode::BadGateway, format!("upstream response failed: {e}"))),
    }
    Ok(response)
}

/// The response's `Age`, 0 if absent or malformed.
fn age_seconds(headers: &Headers) -> u64 {
    header(headers, "age").and_then(|a| a.trim().parse().ok()).unwrap_or(0)
}

/// `len(meta) as u32 BE | meta JSON | body bytes`.
fn encode(meta: &EntryMeta, body: &[u8]) -> Vec<u8> {
    let meta = serde_json::to_vec(meta).expect("cache metadata serialises");
    let mut out = Vec::with_capacity(4 + meta.len() + body.len());
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(body);
    out
}

/// The status and body of a stored entry, for the fuzz target.
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_for_fuzzing(raw: &[u8]) -> Option<(u16, &[u8])> {
    decode(raw).map(|(meta, body)| (meta.status, body))
}

/// An entry as `store` writes it, for the fuzz target's seed.
#[cfg(any(test, feature = "fuzzing"))]
pub fn encode_for_fuzzing(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let headers = headers.iter().map(|(n, v)| ((*n).into(), v.to_string())).collect();
    encode(&EntryMeta { status, headers, stored_at_ms: 0, initial_age: 0, vary: Vec::new() }, body)
}

fn decode(raw: &[u8]) -> Option<(EntryMeta, &[u8])> {
    let len = u32::from_be_bytes(raw.get(..4)?.try_into().ok()?) as usize;
    let meta = serde_json::from_slice(raw.get(4..4 + len)?).ok()?;
    Some((meta, &raw[4 + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_directives_are_parsed_case_insensitively() {
        let cc = CacheControl::parse(&vec![("cache-control".into(), "Public, MAX-AGE=60, s-maxage=\"30\"".into())]);
        assert!(cc.has("public"));
        assert_eq!(cc.seconds("max-age"), Some(60));
        assert_eq!(cc.seconds("s-maxage"), Some(30));
    }
}
