//! The hub's web UI: a built single-page app, from a frontend origin (an
//! object store bucket, a static host) or from key-value (filled with
//! `PUT /_ui/<path>`, which `cargo xtask ui-upload` does). Paths that are
//! not files get `index.html` (the app routes them itself); files get a
//! correct `Content-Type` whatever the store said, and content-hashed assets
//! are cached for a year.

use edgeproxy_static_site::{cache_control, content_type};
pub use edgeproxy_static_site::Page;
use serde::{Deserialize, Serialize};

use crate::platform::{Body, Headers, Platform, ReadOutcome, Request, Response, header, read_up_to};
use crate::proxy::{ErrorCode, Method, ProxyError, Session, blob_store, check_base_url, headers};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Base URL of the built web UI.
    pub frontend: Option<String>,
    /// Serve the web UI from key-value instead.
    #[serde(default)]
    pub kv: bool,
    /// The secret whose value is the bearer token for `PUT /_ui/<path>`;
    /// without it, uploads are off.
    pub upload_token: Option<String>,
    /// The largest file an upload may store.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
}

fn default_max_file_bytes() -> u64 {
    25 << 20
}

/// Uploads go here; never a path of the web UI or the hub.
const UPLOAD_PREFIX: &str = "/_ui";

pub fn is_upload(path: &str) -> bool {
    path == UPLOAD_PREFIX || path.starts_with("/_ui/")
}

/// What a static host is sent of the client's headers: those that shape
/// the answer, none of its credentials or cookies.
pub fn for_frontend(headers: &mut Headers) {
    const PASSED: &[&str] = &["accept", "accept-encoding", "if-none-match", "if-modified-since", "range", "user-agent"];
    headers.retain(|(n, _)| PASSED.contains(&n.as_str()));
}

#[derive(Debug, Serialize, Deserialize)]
struct FileMeta {
    content_type: String,
}

impl Options {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(frontend) = &self.frontend {
            check_base_url("ui.frontend", frontend)?;
        }
        if self.frontend.is_some() && self.kv {
            return Err("ui: choose frontend or kv, not both".into());
        }
        if self.upload_token.is_some() && !self.kv {
            return Err("ui.upload_token fills key-value: set ui.kv = true".into());
        }
        Ok(())
    }

    /// Answers from key-value, refuses what the UI never serves, or leaves
    /// the request to the frontend (`None`).
    pub fn serve_local<P: Platform>(&self, s: &Session<P>, page: &Page) -> Result<Option<Response<P::Body>>, ProxyError> {
        if !s.method.reads() {
            return Err(ProxyError::new(ErrorCode::MethodNotAllowed, format!("{} serves the web UI, which takes GET and HEAD only", s.incoming.path)).with_header("allow", "GET, HEAD"));
        }
        if self.kv {
            return self.serve_from_kv(s, page).map(Some);
        }
        if self.frontend.is_none() {
            return Err(ProxyError::not_found(format!("no route of the hub serves {}, and this gateway has no web UI (set ui.frontend or ui.kv)", s.incoming.path)));
        }
        Ok(None)
    }

    /// The frontend's base URL, with no trailing `/`.
    pub fn frontend_base(&self) -> Option<&str> {
        self.frontend.as_deref().map(|f| f.trim_end_matches('/'))
    }

    pub fn finish_frontend_response<B: Body>(&self, page: &Page, mut resp: Response<B>) -> Result<Response<B>, ProxyError> {
        match resp.status {
            200..=299 | 304 => {}
            // Object stores answer 403 for a missing key when listing is off.
            403 | 404 if page.fallback => return Err(ProxyError::new(ErrorCode::UiMissing, "the frontend has no index.html: publish the web UI there")),
            403 | 404 => return Err(ProxyError::not_found(format!("the web UI has no file {}", page.file))),
            status => return Err(ProxyError::new(ErrorCode::BadGateway, format!("the frontend answered {status}"))),
        }
        resp.headers.retain(|(n, _)| n != "set-cookie" && !n.starts_with("x-amz-"));
        let stored = resp.header("content-type").map(str::to_ascii_lowercase);
        if stored.is_none_or(|t| t.starts_with("binary/octet-stream") || t.starts_with("application/octet-stream")) && resp.status != 304 {
            headers::set(&mut resp.headers, "content-type", content_type(&page.file));
        }
        headers::set(&mut resp.headers, "cache-control", cache_control(&page.file));
        Ok(resp)
    }

    fn serve_from_kv<P: Platform>(&self, s: &Session<P>, page: &Page) -> Result<Response<P::Body>, ProxyError> {
        let key = kv_key(&page.file);
        let Some(manifest) = blob_store::read_manifest::<P, FileMeta>(s.platform, &key) else {
            return Err(if page.fallback {
                ProxyError::new(ErrorCode::UiMissing, "the web UI is not uploaded: run `cargo xtask ui-upload` (docs/hub-gateway.md)")
            } else {
                ProxyError::not_found(format!("the web UI has no file {}", page.file))
            });
        };
        let etag = format!("\"{}\"", &manifest.sha256[..32]);
        let mut out: Headers = vec![
            ("content-type".into(), manifest.meta.content_type.clone()),
            ("etag".into(), etag.clone()),
            ("cache-control".into(), cache_control(&page.file).into()),
        ];
        if headers::not_modified(&s.headers, &etag) {
            return Ok(Response { status: 304, headers: out, body: None });
        }
        out.push(("content-length".into(), manifest.size.to_string()));
        if s.method == Method::Head {
            return Ok(Response { status: 200, headers: out, body: None });
        }
        let blob = blob_store::read_parts(s.platform, &key, manifest).ok_or_else(|| ProxyError::new(ErrorCode::UiUnavailable, "a web UI file in key-value is incomplete; upload it again"))?;
        Ok(Response { status: 200, headers: out, body: Some(P::Body::from_bytes(blob.bytes)) })
    }

    /// `PUT /_ui/<path>` with `Authorization: Bearer <upload token>`: stores one file.
    pub fn upload<P: Platform>(&self, s: &Session<P>, req: &mut Request<P::Body>) -> Result<Response<P::Body>, ProxyError> {
        let Some(secret_name) = self.upload_token.as_deref().filter(|_| self.kv) else {
            return Err(ProxyError::not_found("web UI uploads are off here (set ui.kv and ui.upload_token)"));
        };
        if s.method != Method::Put {
            return Err(ProxyError::new(ErrorCode::MethodNotAllowed, "upload a web UI file with PUT").with_header("allow", "PUT"));
        }
        let secret = s.platform.config(secret_name).ok().flatten().filter(|t| !t.is_empty());
        let Some(secret) = secret else {
            return Err(ProxyError::internal(format!("the secret {secret_name} (ui.upload_token) is not set on this host")));
        };
        let given = header(&s.headers, "authorization").and_then(|a| a.strip_prefix("Bearer ")).unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), secret.as_bytes()) {
            return Err(ProxyError::new(ErrorCode::Unauthorized, "uploading the web UI needs Authorization: Bearer <upload token>").with_header("www-authenticate", "Bearer"));
        }
        let file = &s.incoming.path[UPLOAD_PREFIX.len()..];
        if file.len() < 2 {
            return Err(ProxyError::bad_request("PUT /_ui/<path of the file>"));
        }
        let too_large = || ProxyError::new(ErrorCode::BodyTooLarge, format!("a web UI file may be at most {} bytes (ui.max_file_bytes)", self.max_file_bytes));
        let bytes = match req.body.take().map(|b| read_up_to(b, self.max_file_bytes)) {
            None => Vec::new(),
            Some(Ok(ReadOutcome::Complete(bytes))) => bytes,
            Some(Ok(ReadOutcome::TooLong(_))) => return Err(too_large()),
            Some(Err(e)) => return Err(ProxyError::bad_request(format!("the upload broke off: {e}"))),
        };
        let given_type = header(&s.headers, "content-type").filter(|t| !t.starts_with("application/octet-stream"));
        let meta = FileMeta { content_type: given_type.map_or_else(|| content_type(file).to_owned(), str::to_owned) };
        let manifest = blob_store::write(s.platform, &kv_key(file), meta, &bytes, None)
            .map_err(|e| ProxyError::new(ErrorCode::KvUnavailable, format!("the file could not be stored: {e:?}")))?;
        let json = serde_json::json!({ "path": file, "size": manifest.size, "sha256": manifest.sha256, "content_type": manifest.meta.content_type });
        let body = json.to_string().into_bytes();
        let headers = vec![("content-type".into(), "application/json".into()), ("content-length".into(), body.len().to_string())];
        Ok(Response { status: 201, headers, body: Some(P::Body::from_bytes(body)) })
    }
}

fn kv_key(file: &str) -> String {
    blob_store::key("hub-gateway", "ui", file)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
