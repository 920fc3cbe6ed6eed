//! The wasm side of `wit/edgeproxy.wit`: binds the WIT imports to
//! [`Platform`] and exports the handler and the config check. Nothing else
//! belongs here.

use crate::platform::{self, BlobError, BlobListed, BlobListing, BlobObject, BodyError, Decision, HttpError, KvError, KvLimits, Platform};

wit_bindgen::generate!({
    path: "wit",
    world: "edgeproxy",
});

use edgeproxy::platform::{blob, body, clock, config, http_client, kv, limiter, telemetry, types};
use exports::edgeproxy::platform::{checker, handler, stepwise};

use crate::proxy::phases::{Begun, Resume};
use std::cell::Cell;

struct Component;

/// Runs an export's body as one call of the arena's (`arena.rs`): what it
/// allocates is given back when the host begins the next call.
fn one_call<T>(body: impl FnOnce() -> T) -> T {
    crate::arena::call_started();
    let out = body();
    crate::arena::call_ended();
    out
}

/// One wasm thread: a static cell no one else sees.
struct Static<T>(Cell<T>);
unsafe impl<T> Sync for Static<T> {}

/// The rest of the request `stepwise.begin` stopped at `send`. What it holds
/// was allocated in `begin`, whose call (the arena's) lasts until the
/// request is answered.
static PENDING: Static<Option<Box<dyn Resume<WitHost>>>> = Static(Cell::new(None));
/// Set while a `stepwise` call runs: an import that may wait is not called.
static NO_WAITING: Static<bool> = Static(Cell::new(false));
/// Set when such an import was wanted: the call's outcome is thrown away.
static WAIT_WANTED: Static<bool> = Static(Cell::new(false));

/// `run` without waiting; `None` if it wanted an import that may wait (all
/// of which then failed without being called, so nothing was done that the
/// host can see, and what `run` made of the failures is not used).
fn without_waiting<T>(run: impl FnOnce() -> T) -> Option<T> {
    NO_WAITING.0.set(true);
    WAIT_WANTED.0.set(false);
    let out = run();
    NO_WAITING.0.set(false);
    (!WAIT_WANTED.0.get()).then_some(out)
}

/// Whether an import that may wait can be called now; if not, notes that
/// one was wanted.
fn may_wait() -> bool {
    if NO_WAITING.0.get() {
        WAIT_WANTED.0.set(true);
    }
    !NO_WAITING.0.get()
}

const WOULD_WAIT: &str = "an import that waits, in a stepwise call";

/// `call` an import that may wait, or fail with `refused` when it must not.
fn waiting<T, E>(refused: impl FnOnce(String) -> E, call: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    if may_wait() {
        call()
    } else {
        Err(refused(WOULD_WAIT.into()))
    }
}

impl handler::Guest for Component {
    fn handle(request: types::Request, client_ip: Option<String>) -> types::Response {
        one_call(|| crate::handle(&WitHost, request.into(), client_ip.as_deref()).into())
    }
}

impl stepwise::Guest for Component {
    fn begin(request: types::Request, client_ip: Option<String>) -> stepwise::Step {
        crate::arena::call_started();
        let step = match without_waiting(|| crate::begin(&WitHost, request.into(), client_ip.as_deref())) {
            Some(Begun::Answered(response)) => stepwise::Step::Respond(response.into()),
            Some(Begun::Sending { request, timeout_ms, rest }) => {
                // The call goes on until `resume` answers.
                PENDING.0.set(Some(rest));
                return stepwise::Step::Send((request.into(), http_client::SendOptions { timeout_ms }));
            }
            Some(Begun::Whole(_)) | None => stepwise::Step::Wait,
        };
        crate::arena::call_ended();
        step
    }

    fn resume(sent: Result<types::Response, http_client::HttpError>) -> Option<types::Response> {
        crate::arena::call_started();
        let Some(rest) = PENDING.0.take() else { return Some(one_call(not_begun)) };
        match without_waiting(|| rest.resume(sent.map(Into::into).map_err(Into::into))) {
            Some(response) => {
                crate::arena::call_ended();
                Some(response.into())
            }
            None => {
                PENDING.0.set(Some(rest));
                None
            }
        }
    }

    fn resume_waiting(sent: Result<types::Response, http_client::HttpError>) -> types::Response {
        one_call(|| match PENDING.0.take() {
            Some(rest) => rest.resume(sent.map(Into::into).map_err(Into::into)).into(),
            None => not_begun(),
        })
    }
}

/// A host's mistake, answered rather than trapped on.
fn not_begun() -> types::Response {
    crate::proxy::ProxyError::internal("stepwise: resume without a request begun and sending").into_response::<body::Body>().into()
}

impl From<types::Request> for platform::Request<body::Body> {
    fn from(r: types::Request) -> Self {
        platform::Request { method: r.method, url: r.url, headers: platform::typed_headers(r.headers), body: r.body }
    }
}

impl From<platform::Request<body::Body>> for types::Request {
    fn from(r: platform::Request<body::Body>) -> Self {
        types::Request { method: r.method, url: r.url, headers: platform::untyped_headers(r.headers), body: r.body }
    }
}

impl From<types::Response> for platform::Response<body::Body> {
    fn from(r: types::Response) -> Self {
        platform::Response { status: r.status, headers: platform::typed_headers(r.headers), body: r.body }
    }
}

impl From<platform::Response<body::Body>> for types::Response {
    fn from(r: platform::Response<body::Body>) -> Self {
        types::Response { status: r.status, headers: platform::untyped_headers(r.headers), body: r.body }
    }
}

impl From<http_client::HttpError> for HttpError {
    fn from(e: http_client::HttpError) -> Self {
        match e {
            http_client::HttpError::InvalidUrl(m) => HttpError::InvalidUrl(m),
            http_client::HttpError::Denied(m) => HttpError::Denied(m),
            http_client::HttpError::DnsError(m) => HttpError::DnsError(m),
            http_client::HttpError::ConnectionFailed(m) => HttpError::ConnectionFailed(m),
            http_client::HttpError::Timeout => HttpError::Timeout,
            http_client::HttpError::TlsError(m) => HttpError::TlsError(m),
            http_client::HttpError::ProtocolError(m) => HttpError::ProtocolError(m),
        }
    }
}

impl checker::Guest for Component {
    fn check_config(document: String) -> Vec<String> {
        one_call(|| crate::config::check(&document))
    }
}

impl Guest for Component {
    fn init() {
        // A document the host cannot give, or a broken one, is each
        // request's error to report, as it would be without set-up ahead.
        one_call(|| drop(crate::set_up(&WitHost)));
    }
}

export!(Component);

impl platform::Body for body::Body {
    fn from_bytes(bytes: Vec<u8>) -> Self {
        body::Body::new(&bytes)
    }

    fn read(&mut self, max: u32) -> Result<Option<Vec<u8>>, BodyError> {
        waiting(BodyError::Broken, || {
            body::Body::read(self, max).map_err(|e| match e {
                body::BodyError::Broken(why) => BodyError::Broken(why),
                body::BodyError::Timeout => BodyError::Timeout,
            })
        })
    }

    fn known_length(&self) -> Option<u64> {
        body::Body::known_length(self)
    }

    fn prepend(head: Vec<u8>, tail: Self) -> Self {
        body::Body::prepend(&head, tail)
    }
}

fn blob_error(e: blob::BlobError) -> BlobError {
    match e {
        blob::BlobError::InvalidKey(m) => BlobError::InvalidKey(m),
        blob::BlobError::Mismatch(m) => BlobError::Mismatch(m),
        blob::BlobError::TooLarge(n) => BlobError::TooLarge(n),
        blob::BlobError::Unavailable(m) => BlobError::Unavailable(m),
    }
}

fn blob_object(o: blob::Object) -> BlobObject {
    BlobObject { size: o.size, metadata: o.metadata }
}

struct WitHost;

impl Platform for WitHost {
    type Body = body::Body;

    fn send(&self, request: platform::Request<body::Body>, timeout_ms: Option<u32>) -> Result<platform::Response<body::Body>, HttpError> {
        waiting(HttpError::ConnectionFailed, || {
            http_client::send(request.into(), http_client::SendOptions { timeout_ms }).map(Into::into).map_err(Into::into)
        })
    }

    fn kv_limits(&self) -> KvLimits {
        let l = kv::limits();
        KvLimits { max_key_bytes: l.max_key_bytes, max_value_bytes: l.max_value_bytes, min_ttl_seconds: l.min_ttl_seconds }
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        waiting(KvError::Unavailable, || kv::get(key).map_err(kv_error))
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        waiting(KvError::Unavailable, || kv::set(key, value, ttl_seconds).map_err(kv_error))
    }

    fn kv_delete(&self, key: &str) -> Result<(), KvError> {
        waiting(KvError::Unavailable, || kv::delete(key).map_err(kv_error))
    }

    fn kv_set_if_absent(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<bool, KvError> {
        waiting(KvError::Unavailable, || kv::set_if_absent(key, value, ttl_seconds).map_err(kv_error))
    }

    fn blob_put(&self, key: &str, content: body::Body, size: u64, sha256: Option<&str>, metadata: &[(String, String)]) -> Result<(), BlobError> {
        waiting(BlobError::Unavailable, || blob::put(key, content, size, sha256, metadata).map_err(blob_error))
    }

    fn blob_get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<(BlobObject, body::Body)>, BlobError> {
        waiting(BlobError::Unavailable, || Ok(blob::get(key, range).map_err(blob_error)?.map(|(object, body)| (blob_object(object), body))))
    }

    fn blob_head(&self, key: &str) -> Result<Option<BlobObject>, BlobError> {
        waiting(BlobError::Unavailable, || Ok(blob::head(key).map_err(blob_error)?.map(blob_object)))
    }

    fn blob_put_through(&self, key: &str, content: body::Body, size: u64, sha256: Option<&str>, metadata: &[(String, String)]) -> body::Body {
        // Never waits: the store fills as the body is read, after the guest.
        blob::put_through(key, content, size, sha256, metadata)
    }

    fn blob_delete(&self, key: &str) -> Result<(), BlobError> {
        waiting(BlobError::Unavailable, || blob::delete(key).map_err(blob_error))
    }

    fn blob_list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<BlobListing, BlobError> {
        waiting(BlobError::Unavailable, || {
            let page = blob::list(prefix, cursor, limit).map_err(blob_error)?;
            let objects = page.objects.into_iter().map(|o| BlobListed { key: o.key, size: o.size, used_ms: o.used_ms }).collect();
            Ok(BlobListing { objects, cursor: page.cursor })
        })
    }

    fn config(&self, key: &str) -> Result<Option<String>, String> {
        config::get(key).map_err(|config::ConfigError::Unavailable(why)| why)
    }

    fn now_ms(&self) -> u64 {
        clock::now_ms()
    }

    fn sleep_ms(&self, ms: u32) {
        if may_wait() {
            clock::sleep_ms(ms)
        }
    }

    fn rate_limit(&self, policy: &str, key: &str, limit: u32, period_seconds: u32) -> Result<Decision, String> {
        waiting(String::from, || match limiter::check(policy, key, limit, period_seconds) {
            Ok(d) => Ok(Decision { allowed: d.allowed, retry_after_seconds: d.retry_after_seconds }),
            Err(limiter::LimiterError::UnknownPolicy(p)) => Err(format!("the host has no rate limiter named {p:?}")),
            Err(limiter::LimiterError::Unavailable(why)) => Err(why),
        })
    }

    fn routed(&self, route: u32, app: &str) {
        telemetry::routed(route, app);
    }

    fn answered(&self, error_code: Option<&str>, cache: Option<&str>) {
        // Nothing to count, no call: on Workers each import call is work
        // jco does per request (the hosts count only what is reported).
        if error_code.is_some() || cache.is_some() {
            telemetry::answered(error_code, cache);
        }
    }
}

fn kv_error(e: kv::KvError) -> KvError {
    match e {
        kv::KvError::InvalidKey(k) => KvError::InvalidKey(k),
        kv::KvError::TooLarge(n) => KvError::TooLarge(n),
        kv::KvError::Unavailable(why) => KvError::Unavailable(why),
    }
}
