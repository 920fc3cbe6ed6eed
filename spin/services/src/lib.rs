//! The core's imports on Spin: bodies over wasi:io streams, outbound HTTP over
//! `wasi:http/outgoing-handler`, the key-value store over
//! `wasi:keyvalue@0.2.0-draft2` (label `default`), config over Spin
//! variables (spin-sdk's `variables::get`), rate limits as compare-and-swap counters in the store.
//! See spin/wit/adapter.wit for how this component is wired to the others.

mod blob;
mod bodies;
mod http_client;
mod kv;
mod limiter;

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "edgeproxy:spin-adapter/services",
        with: {
            "wasi:http/types@0.2.0": ::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.0": ::wasi::http::outgoing_handler,
            "wasi:io/streams@0.2.0": ::wasi::io::streams,
            "wasi:io/error@0.2.0": ::wasi::io::error,
            "wasi:io/poll@0.2.0": ::wasi::io::poll,
            "wasi:clocks/wall-clock@0.2.0": ::wasi::clocks::wall_clock,
            "wasi:clocks/monotonic-clock@0.2.0": ::wasi::clocks::monotonic_clock,
            "wasi:keyvalue/store@0.2.0-draft2": generate,
            "wasi:keyvalue/atomics@0.2.0-draft2": generate,
        },
    });
}

use bindings::exports::edgeproxy::platform::{clock, config, telemetry};
use spin_sdk::variables;

struct Services;

impl clock::Guest for Services {
    fn now_ms() -> u64 {
        now_ms()
    }

    fn sleep_ms(ms: u32) {
        wasi::clocks::monotonic_clock::subscribe_duration(u64::from(ms) * 1_000_000).block();
    }
}

pub(crate) fn now_ms() -> u64 {
    let now = wasi::clocks::wall_clock::now();
    now.seconds * 1000 + u64::from(now.nanoseconds / 1_000_000)
}

impl config::Guest for Services {
    /// `document` is the Spin variable `document` (and `document-version`
    /// none: Spin cannot say when a variable changed); a secret `hf-token` is the
    /// variable `hf_token` (Spin variable names are `[a-z0-9_]`). An empty
    /// secret counts as unset, because Spin needs a default for an optional
    /// variable and `""` is the natural one; an empty document is just empty.
    fn get(key: String) -> Result<Option<String>, config::ConfigError> {
        // Spin has no version of its variables to give; answered here, not
        // by a variable lookup that fails on every request.
        if key == "document-version" {
            return Ok(None);
        }
        match variables::get(&spin_variable_name(&key)) {
            Ok(value) if !value.is_empty() || key == "document" => Ok(Some(value)),
            Ok(_) | Err(variables::Error::Undefined(_)) => Ok(None),
            Err(variables::Error::InvalidName(why) | variables::Error::Provider(why) | variables::Error::Other(why)) => Err(config::ConfigError::Unavailable(why)),
        }
    }
}

/// The route name is for the wasmtime host's metrics; Spin has none to label.
impl telemetry::Guest for Services {
    fn routed(_route: u32, _app: String) {}
    fn answered(_error_code: Option<String>, _cache: Option<String>) {}
}

pub fn spin_variable_name(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect()
}

bindings::export!(Services with_types_in bindings);
