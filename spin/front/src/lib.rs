//! Spin's HTTP entry point: turns a `wasi:http` incoming request into the
//! core's request, calls the core's handler, and streams its response back.
//! Bodies stay `body` resources of the services component throughout.
//!
//! spin-sdk's `#[http_component]` exports the handler and runs it; the
//! request and the response slot it hands over are the `wasi` crate's types
//! for the same wasi:http 0.2.0 resources, which `wasi-bodies` speaks.

mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "edgeproxy:spin-adapter/front",
        with: {
            "wasi:http/types@0.2.0": ::wasi::http::types,
            "wasi:io/streams@0.2.0": ::wasi::io::streams,
            "wasi:io/error@0.2.0": ::wasi::io::error,
            "wasi:io/poll@0.2.0": ::wasi::io::poll,
            "wasi:clocks/monotonic-clock@0.2.0": ::wasi::clocks::monotonic_clock,
            "edgeproxy:platform/body@0.1.0": generate,
            "edgeproxy:platform/types@0.1.0": generate,
            "edgeproxy:platform/handler@0.1.0": generate,
            "edgeproxy:spin-adapter/wasi-bodies@0.1.0": generate,
        },
    });
}

use bindings::edgeproxy::platform::handler;
use bindings::edgeproxy::platform::types::Request;
use bindings::edgeproxy::spin_adapter::wasi_bodies;
use wasi::http::types::{Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam, Scheme};

/// Headers Spin adds to every request it routes (its trigger's
/// `prepare_request_headers`); the client IP comes from `spin-client-addr`.
const CLIENT_ADDR: &str = "spin-client-addr";

#[spin_sdk::http_component]
fn handle(request: spin_sdk::http::IncomingRequest, response_out: spin_sdk::http::ResponseOutparam) {
    // The same resources, as the `wasi` crate's types (as spin-sdk's own
    // macro converts between its bindings).
    // SAFETY: each handle is taken from its owner and owned once.
    let (request, response_out) =
        unsafe { (IncomingRequest::from_handle(request.take_handle()), ResponseOutparam::from_handle(response_out.into_inner().take_handle())) };
    serve(request, response_out);
}

fn serve(request: IncomingRequest, response_out: ResponseOutparam) {
    let scheme = match request.scheme() {
        Some(Scheme::Https) => "https",
        _ => "http",
    };
    let headers: Vec<(String, String)> = {
        let fields = request.headers();
        fields.entries().into_iter().map(|(name, value)| (name.to_ascii_lowercase(), String::from_utf8_lossy(&value).into_owned())).collect()
    };
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let authority = request.authority().or_else(|| header("host").map(str::to_owned)).unwrap_or_else(|| "localhost".into());
    let path = request.path_with_query().unwrap_or_else(|| "/".into());
    let client_ip = header(CLIENT_ADDR).map(ip_of);
    let known_length: Option<u64> = header("content-length").and_then(|v| v.trim().parse().ok());
    let method = method_name(&request.method());
    let body = request.consume().ok().and_then(|incoming| wasi_bodies::from_incoming(incoming, known_length));
    let url = format!("{scheme}://{authority}{path}");

    let response = handler::handle(Request { method, url, headers, body }, client_ip.as_deref());

    let fields = Fields::new();
    for (name, value) in &response.headers {
        // Hop-by-hop headers are the host's to write; the core does not send them.
        let _ = fields.append(name, &value.as_bytes().to_vec());
    }
    let outgoing = OutgoingResponse::new(fields);
    let _ = outgoing.set_status_code(response.status);
    let Ok(outgoing_body) = outgoing.body() else { return };
    ResponseOutparam::set(response_out, Ok(outgoing));
    let piped = match (response.body, outgoing_body.write()) {
        (Some(body), Ok(stream)) => {
            let piped = wasi_bodies::pipe(body, &stream);
            drop(stream);
            piped.is_ok()
        }
        (None, Ok(_)) => true,
        (_, Err(())) => false,
    };
    if piped {
        let _ = OutgoingBody::finish(outgoing_body, None);
    }
    // Otherwise the body is dropped unfinished, which the host reports to
    // the client as a broken response, not a complete short one.
}

/// `203.0.113.7:5123` or `[2001:db8::1]:5123` -> the address alone.
fn ip_of(addr: &str) -> String {
    let addr = addr.trim();
    if let Some(rest) = addr.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest).to_owned();
    }
    match addr.rsplit_once(':') {
        Some((ip, port)) if !ip.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => ip.to_owned(),
        _ => addr.to_owned(),
    }
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}

