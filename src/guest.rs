//! The wasm side of `wit/edgeproxy.wit`: binds the WIT imports to
//! [`Platform`] and exports the handler and the config check. Nothing else
//! belongs here.

use crate::platform::{self, BodyError, Decision, HttpError, KvError, KvLimits, Platform};

wit_bindgen::generate!({
    path: "wit",
    world: "edgeproxy",
});

use edgeproxy::platform::{body, clock, config, http_client, kv, limiter, telemetry, types};
use exports::edgeproxy::platform::{checker, handler};

struct Component;

/// Runs an export's body as one call of the arena's (`arena.rs`): what it
/// allocates is given back when the host begins the next call.
fn one_call<T>(body: impl FnOnce() -> T) -> T {
    crate::arena::call_started();
    let out = body();
    crate::arena::call_ended();
    out
}

impl handler::Guest for Component {
    fn handle(request: types::Request, client_ip: Option<String>) -> types::Response {
        one_call(|| {
            let request = platform::Request {
                method: request.method,
                url: request.url,
                headers: request.headers,
                body: request.body,
            };
            let response = crate::handle(&WitHost, request, client_ip.as_deref());
            types::Response { status: response.status, headers: response.headers, body: response.body }
        })
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
        body::Body::read(self, max).map_err(|e| match e {
            body::BodyError::Broken(why) => BodyError::Broken(why),
            body::BodyError::Timeout => BodyError::Timeout,
        })
    }

    fn known_length(&self) -> Option<u64> {
        body::Body::known_length(self)
    }

    fn prepend(head: Vec<u8>, tail: Self) -> Self {
        body::Body::prepend(&head, tail)
    }
}

struct WitHost;

impl Platform for WitHost {
    type Body = body::Body;

    fn send(&self, request: platform::Request<body::Body>, timeout_ms: Option<u32>) -> Result<platform::Response<body::Body>, HttpError> {
        let request = types::Request { method: request.method, url: request.url, headers: request.headers, body: request.body };
        match http_client::send(request, http_client::SendOptions { timeout_ms }) {
            Ok(r) => Ok(platform::Response { status: r.status, headers: r.headers, body: r.body }),
            Err(e) => Err(match e {
                http_client::HttpError::InvalidUrl(m) => HttpError::InvalidUrl(m),
                http_client::HttpError::Denied(m) => HttpError::Denied(m),
                http_client::HttpError::DnsError(m) => HttpError::DnsError(m),
                http_client::HttpError::ConnectionFailed(m) => HttpError::ConnectionFailed(m),
                http_client::HttpError::Timeout => HttpError::Timeout,
                http_client::HttpError::TlsError(m) => HttpError::TlsError(m),
                http_client::HttpError::ProtocolError(m) => HttpError::ProtocolError(m),
            }),
        }
    }

    fn kv_limits(&self) -> KvLimits {
        let l = kv::limits();
        KvLimits { max_key_bytes: l.max_key_bytes, max_value_bytes: l.max_value_bytes, min_ttl_seconds: l.min_ttl_seconds }
    }

    fn kv_get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        kv::get(key).map_err(kv_error)
    }

    fn kv_set(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<(), KvError> {
        kv::set(key, value, ttl_seconds).map_err(kv_error)
    }

    fn kv_delete(&self, key: &str) -> Result<(), KvError> {
        kv::delete(key).map_err(kv_error)
    }

    fn kv_set_if_absent(&self, key: &str, value: &[u8], ttl_seconds: Option<u32>) -> Result<bool, KvError> {
        kv::set_if_absent(key, value, ttl_seconds).map_err(kv_error)
    }

    fn config(&self, key: &str) -> Result<Option<String>, String> {
        config::get(key).map_err(|config::ConfigError::Unavailable(why)| why)
    }

    fn now_ms(&self) -> u64 {
        clock::now_ms()
    }

    fn sleep_ms(&self, ms: u32) {
        clock::sleep_ms(ms)
    }

    fn rate_limit(&self, policy: &str, key: &str, limit: u32, period_seconds: u32) -> Result<Decision, String> {
        match limiter::check(policy, key, limit, period_seconds) {
            Ok(d) => Ok(Decision { allowed: d.allowed, retry_after_seconds: d.retry_after_seconds }),
            Err(limiter::LimiterError::UnknownPolicy(p)) => Err(format!("the host has no rate limiter named {p:?}")),
            Err(limiter::LimiterError::Unavailable(why)) => Err(why),
        }
    }

    fn routed(&self, route: u32, app: &str) {
        telemetry::routed(route, app);
    }
}

fn kv_error(e: kv::KvError) -> KvError {
    match e {
        kv::KvError::InvalidKey(k) => KvError::InvalidKey(k),
        kv::KvError::TooLarge(n) => KvError::TooLarge(n),
        kv::KvError::Unavailable(why) => KvError::Unavailable(why),
    }
}
