//! Spin's static file component (spin/hub-gateway.spin.toml): the web UI's
//! files, which the manifest mounts at `/`, for every path the gateway's
//! routes leave to it. What the platform's static files are on Workers; on
//! Spin, a component of its own, as Spin's fileserver is (which cannot be
//! fetched where this is built, and would not know the single-page app's
//! fallback or caching that the other hosts give).
//!
//! A UI's files are small, so each is read whole.

use edgeproxy_static_site::{Page, cache_control, content_type, error_body, etag, none_match};
use spin_sdk::http::{Method, Request, Response};
use spin_sdk::http_component;

#[http_component]
fn handle(request: Request) -> Response {
    let head = match request.method() {
        Method::Get => false,
        Method::Head => true,
        _ => return error(405, "method_not_allowed", &format!("{} serves the web UI, which takes GET and HEAD only", request.path()), &[("allow", "GET, HEAD")]),
    };
    let page = Page::of(request.path());
    let Some(relative) = page.relative_path() else {
        return error(404, "not_found", "the web UI has no such file", &[]);
    };
    let path = format!("/{relative}");
    let (Ok(meta), Ok(bytes)) = (std::fs::metadata(&path), std::fs::read(&path)) else {
        return if page.fallback {
            error(502, "ui_missing", "the web UI has no index.html: put the built UI in the directory the manifest mounts (`files`)", &[])
        } else {
            error(404, "not_found", &format!("the web UI has no file {}", page.file), &[])
        };
    };
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let tag = etag(meta.len(), modified);
    let not_modified = request.header("if-none-match").and_then(|v| v.as_str()).is_some_and(|v| none_match(v, &tag));
    let status = if not_modified { 304 } else { 200 };
    let mut response = Response::builder();
    response
        .status(status)
        .header("content-type", content_type(&page.file))
        .header("cache-control", cache_control(&page.file))
        .header("etag", tag);
    if not_modified || head {
        return response.build();
    }
    response.header("content-length", bytes.len().to_string()).body(bytes).build()
}

fn error(status: u16, code: &str, message: &str, extra: &[(&str, &str)]) -> Response {
    let mut response = Response::builder();
    response.status(status).header("content-type", "application/json").header("x-error-code", code);
    for (name, value) in extra {
        response.header(*name, *value);
    }
    response.body(error_body(code, message)).build()
}
