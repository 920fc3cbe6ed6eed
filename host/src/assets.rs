//! `serve --assets DIR`: hub-gateway's web UI as static files from a
//! directory, as Workers Static Assets (workers/hub-gateway.wrangler.toml)
//! and Spin's static file component (spin/hub-gateway.spin.toml) serve it.
//! The gateway's own routes go to the component; every other path is a
//! file of DIR, or index.html for the app's own routes, and runs no guest.
//! Which path is which, and each file's type and caching: static-site/.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use edgeproxy_static_site::{Refusal, file_answer, file_for, is_hub_gateway_route, missing};

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
    let (page, relative) = match file_for(request.method().as_str(), request.uri().path()) {
        Ok(file) => file,
        Err(refusal) => return refused(&refusal),
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
        return refused(&missing(&page, "build it into the --assets directory"));
    };
    let if_none_match = request.headers().get("if-none-match").and_then(|v| v.to_str().ok());
    let (status, headers) = file_answer(&page, meta.len(), meta.modified().ok(), if_none_match);
    let mut builder = hyper::Response::builder().status(status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    let response = if status == 304 {
        builder.body(HostBody::from_bytes(Vec::new()))
    } else if request.method() == hyper::Method::HEAD {
        builder.header("content-length", meta.len()).body(HostBody::from_bytes(Vec::new()))
    } else {
        builder.body(crate::blob::file_body(file, 0, meta.len()))
    };
    response.expect("valid headers")
}

fn refused(refusal: &Refusal) -> hyper::Response<HostBody> {
    let mut builder = hyper::Response::builder().status(refusal.status).header("content-type", "application/json").header("x-error-code", refusal.code);
    if let Some(allow) = refusal.allow {
        builder = builder.header("allow", allow);
    }
    builder.body(HostBody::from_bytes(refusal.body())).expect("valid headers")
}
