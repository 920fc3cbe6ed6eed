//! `serve --assets DIR`: hub-gateway's web UI as static files from a
//! directory, as Workers Static Assets (workers/hub-gateway.wrangler.toml)
//! and Spin's static file component (spin/hub-gateway.spin.toml) serve it.
//! The gateway's own routes go to the component; every other path is a
//! file of DIR, or index.html for the app's own routes, and runs no guest.
//! Which path is which, and each file's type and caching: static-site/.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use edgeproxy_static_site::{Page, cache_control, content_type, error_body, etag, is_hub_gateway_route, none_match};

use crate::body::HostBody;
use crate::server::{ClientBody, Handler};

/// `inner`, with the web UI's files from `dir` in front of it when there is one.
pub struct WithAssets<H> {
    pub dir: Option<PathBuf>,
    pub inner: Arc<H>,
}

impl<H: Handler<Body = HostBody>> Handler for WithAssets<H> {
    type Body = HostBody;

    async fn handle(&self, request: hyper::Request<ClientBody>, url: String, peer: SocketAddr) -> hyper::Response<HostBody> {
        match &self.dir {
            Some(dir) if !is_hub_gateway_route(request.uri().path()) => serve_file(dir, &request).await,
            _ => self.inner.handle(request, url, peer).await,
        }
    }
}

async fn serve_file(dir: &std::path::Path, request: &hyper::Request<ClientBody>) -> hyper::Response<HostBody> {
    let method = request.method();
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        let message = format!("{} serves the web UI, which takes GET and HEAD only", request.uri().path());
        let mut response = error(405, "method_not_allowed", &message);
        response.headers_mut().insert("allow", hyper::header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let page = Page::of(request.uri().path());
    let Some(relative) = page.relative_path() else {
        return error(404, "not_found", "the web UI has no such file");
    };
    let path = dir.join(relative);
    let opened = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok((file, meta))
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    let Ok((file, meta)) = opened else {
        return if page.fallback {
            error(502, "ui_missing", "the web UI has no index.html: build it into the --assets directory")
        } else {
            error(404, "not_found", &format!("the web UI has no file {}", page.file))
        };
    };
    let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let tag = etag(meta.len(), modified);
    let not_modified = request.headers().get("if-none-match").and_then(|v| v.to_str().ok()).is_some_and(|v| none_match(v, &tag));
    let builder = hyper::Response::builder()
        .header("content-type", content_type(&page.file))
        .header("cache-control", cache_control(&page.file))
        .header("etag", &tag);
    let response = if not_modified {
        builder.status(304).body(HostBody::from_bytes(Vec::new()))
    } else if method == hyper::Method::HEAD {
        builder.status(200).header("content-length", meta.len()).body(HostBody::from_bytes(Vec::new()))
    } else {
        builder.status(200).body(crate::blob::file_body(file, 0, meta.len()))
    };
    response.expect("valid headers")
}

fn error(status: u16, code: &str, message: &str) -> hyper::Response<HostBody> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-error-code", code)
        .body(HostBody::from_bytes(error_body(code, message)))
        .expect("valid headers")
}
