//! Spin's static file component (spin/hub-gateway.spin.toml): the web UI's
//! files, which the manifest mounts at `/`, for every path the gateway's
//! routes leave to it. What the platform's static files are on Workers; on
//! Spin, a component of its own, as Spin's fileserver is (which cannot be
//! fetched where this is built, and would not know the single-page app's
//! fallback or caching that the other hosts give).
//!
//! A UI's files are small, so each is read whole.

use edgeproxy_static_site::{Refusal, file_answer, file_for, missing};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> Response {
    let method = match request.method() {
        Method::Get => "GET",
        Method::Head => "HEAD",
        _ => "other",
    };
    let (page, relative) = match file_for(method, request.path()) {
        Ok(file) => file,
        Err(refusal) => return refused(&refusal),
    };
    let path = format!("/{relative}");
    let (Ok(meta), Ok(bytes)) = (std::fs::metadata(&path), std::fs::read(&path)) else {
        return refused(&missing(&page, "put the built UI in the directory the manifest mounts (`files`)"));
    };
    let if_none_match = request.header("if-none-match").and_then(|v| v.as_str());
    let (status, headers) = file_answer(&page, meta.len(), meta.modified().ok(), if_none_match);
    let mut response = Response::builder();
    response.status(status);
    for (name, value) in headers {
        response.header(name, value);
    }
    if status == 304 || method == "HEAD" {
        return response.build();
    }
    response.header("content-length", bytes.len().to_string()).body(bytes).build()
}

fn refused(refusal: &Refusal) -> Response {
    let mut response = Response::builder();
    response.status(refusal.status).header("content-type", "application/json").header("x-error-code", refusal.code);
    if let Some(allow) = refusal.allow {
        response.header("allow", allow);
    }
    response.body(refusal.body()).build()
}
