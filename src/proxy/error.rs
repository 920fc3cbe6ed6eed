//! Every refusal and failure becomes a status with a JSON body
//! `{"error": code, "message": text}` (plain text for git, which shows no
//! other kind: `into_plain_response`), and the same two as `X-Error-Code` and
//! `X-Error-Message` headers (where huggingface_hub and other clients that
//! never read an error body look for them, HEAD answers included); nothing traps.

use crate::platform::{Body, Headers, HttpError, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    /// The code's status.
    pub status: u16,
    pub code: ErrorCode,
    /// For people: what happened and, where it helps, what to do.
    pub message: String,
    /// Extra headers such as `retry-after` or `allow`.
    pub headers: Headers,
}

impl ProxyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProxyError { status: code.status(), code, message: message.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InternalError, message)
    }

    /// 504 for a timeout, 502 for everything else that kept us from a
    /// response. The message names the kind of failure only: the details
    /// (which the host logs) can contain the upstream URL and its secrets.
    pub fn upstream(error: &HttpError) -> Self {
        let kind = match error {
            HttpError::Timeout => return Self::new(ErrorCode::GatewayTimeout, "the upstream did not answer in time"),
            HttpError::InvalidUrl(_) => "the upstream URL is invalid",
            HttpError::Denied(_) => "the host refused to connect to the upstream",
            HttpError::DnsError(_) => "the upstream's name did not resolve",
            HttpError::ConnectionFailed(_) => "could not connect to the upstream",
            HttpError::TlsError(_) => "TLS with the upstream failed",
            HttpError::ProtocolError(_) => "the exchange with the upstream failed",
        };
        Self::new(ErrorCode::BadGateway, kind)
    }

    pub fn into_response<B: Body>(self) -> Response<B> {
        let json = serde_json::json!({ "error": self.code.as_str(), "message": self.message });
        self.answer("application/json", json.to_string())
    }

    /// The same answer with a `text/plain` body, `code: message`, for a
    /// client that shows only such a body: git prints it as `remote:` lines
    /// (remote-curl, since git 1.8.3) and nothing of any other type.
    pub fn into_plain_response<B: Body>(self) -> Response<B> {
        let text = format!("{}: {}\n", self.code.as_str(), self.message);
        self.answer("text/plain; charset=utf-8", text)
    }

    fn answer<B: Body>(self, content_type: &str, body: String) -> Response<B> {
        let mut headers = self.headers;
        headers.push(("x-error-code".into(), self.code.as_str().to_owned()));
        headers.push(("x-error-message".into(), header_safe(&self.message)));
        headers.push(("content-type".into(), content_type.to_owned()));
        headers.push(("cache-control".into(), "no-store".into()));
        Response { status: self.status, headers, body: Some(B::from_bytes(body.into_bytes())) }
    }
}

/// The error codes a client can get (`{"error": code}` and `X-Error-Code`):
/// the client contract, listed in docs/configuration.md ("Errors"), which a test keeps in
/// step with [`ErrorCode::ALL`]. Each code has one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: an image option that is unknown or out of range; `X-Bad-Option` names it.
    BadOption,
    /// 400: the request is malformed (its URL, path, headers or body).
    BadRequest,
    /// 400: an image size that is not a number in the route's range.
    BadSize,
    /// 400: an image slug that is not 1 to N characters of a-z, 0-9 and -.
    BadSlug,
    /// 400: an image URL whose source part is malformed.
    BadSource,
    /// 401: git or git-lfs must authenticate; the answer carries the Basic challenge they need.
    AuthenticationRequired,
    /// 401: credentials are missing or wrong (image-cache's upload and redo tokens).
    Unauthorized,
    /// 403: a signed image URL's signature does not match.
    BadSignature,
    /// 403: a CORS preflight for a method the route does not allow.
    CorsMethodRefused,
    /// 403: a CORS preflight from an origin the route does not allow.
    CorsOriginRefused,
    /// 403: a state-changing request from a browser origin the route does not allow.
    OriginRefused,
    /// 403: a signed image URL is past its expiry.
    SignatureExpired,
    /// 403: this image route takes signed URLs only.
    SignatureRequired,
    /// 403: the mirror may not reach the host this URL names.
    UpstreamNotAllowed,
    /// 403: the mirror does not serve this repo (`repos` in its route).
    RepoNotAllowed,
    /// 404: no route serves the host and path, or the app has no such thing.
    NotFound,
    /// 405: the route does not take this method; `Allow` says which it does.
    MethodNotAllowed,
    /// 413: the request body is over the route's limit.
    BodyTooLarge,
    /// 429: this client or the site spent its image generations for the day.
    GenerationQuota,
    /// 429: the client is over the route's rate limit; `Retry-After` says when to retry.
    RateLimited,
    /// 431: the request headers are over the route's limit.
    HeadersTooLarge,
    /// 500: the proxy's config document has problems (`edgeproxy check` shows them).
    ConfigInvalid,
    /// 500: the proxy failed on this request (details in the host's log only).
    InternalError,
    /// 502: the upstream could not be reached or answered something unusable.
    BadGateway,
    /// 502: the image generator produced something that is not a usable image.
    BadGeneratedImage,
    /// 502: the image generator failed or refused.
    GenerationFailed,
    /// 502: the hub's web UI is not published where the route looks for it.
    UiMissing,
    /// 503: the hub's backend does not answer its health check.
    BackendUnhealthy,
    /// 503: another request is generating this image; retry shortly.
    GenerationPending,
    /// 503: the image generator is throttling us; retry later.
    GenerationThrottled,
    /// 503: the key-value store failed when the request needed it.
    KvUnavailable,
    /// 503: a stored original image is incomplete or damaged.
    OriginalDamaged,
    /// 503: the generation quota could not be checked, so no credit is spent.
    QuotaUnavailable,
    /// 503: a web UI file in key-value is incomplete; upload it again.
    UiUnavailable,
    /// 504: the upstream did not answer in time.
    GatewayTimeout,
    /// 504: the image generator did not finish in time.
    GenerationTimeout,
    /// 504: the mirror is offline (`offline = true`) and has not stored what was asked for.
    NotStoredOffline,
}

impl ErrorCode {
    /// Every code: (code, name, status, meaning).
    pub const ALL: &[(ErrorCode, &str, u16, &str)] = &[
        (ErrorCode::BadOption, "bad_option", 400, "an image option that is unknown or out of range; `X-Bad-Option` names it"),
        (ErrorCode::BadRequest, "bad_request", 400, "the request is malformed (its URL, path, headers or body)"),
        (ErrorCode::BadSize, "bad_size", 400, "an image size that is not a number in the route's range"),
        (ErrorCode::BadSlug, "bad_slug", 400, "an image slug that is not 1 to N characters of a-z, 0-9 and -"),
        (ErrorCode::BadSource, "bad_source", 400, "an image URL whose source part is malformed"),
        (ErrorCode::AuthenticationRequired, "authentication_required", 401, "git or git-lfs must authenticate; the answer carries the Basic challenge they need"),
        (ErrorCode::Unauthorized, "unauthorized", 401, "credentials are missing or wrong (image-cache's upload and redo tokens)"),
        (ErrorCode::BadSignature, "bad_signature", 403, "a signed image URL's signature does not match"),
        (ErrorCode::CorsMethodRefused, "cors_method_refused", 403, "a CORS preflight for a method the route does not allow"),
        (ErrorCode::CorsOriginRefused, "cors_origin_refused", 403, "a CORS preflight from an origin the route does not allow"),
        (ErrorCode::OriginRefused, "origin_refused", 403, "a state-changing request from a browser origin the route does not allow"),
        (ErrorCode::SignatureExpired, "signature_expired", 403, "a signed image URL is past its expiry"),
        (ErrorCode::SignatureRequired, "signature_required", 403, "this image route takes signed URLs only"),
        (ErrorCode::UpstreamNotAllowed, "upstream_not_allowed", 403, "the mirror may not reach the host this URL names"),
        (ErrorCode::RepoNotAllowed, "repo_not_allowed", 403, "the mirror does not serve this repo (`repos` in its route)"),
        (ErrorCode::NotFound, "not_found", 404, "no route serves the host and path, or the app has no such thing"),
        (ErrorCode::MethodNotAllowed, "method_not_allowed", 405, "the route does not take this method; `Allow` says which it does"),
        (ErrorCode::BodyTooLarge, "body_too_large", 413, "the request body is over the route's limit"),
        (ErrorCode::GenerationQuota, "generation_quota", 429, "this client or the site spent its image generations for the day"),
        (ErrorCode::RateLimited, "rate_limited", 429, "the client is over the route's rate limit; `Retry-After` says when to retry"),
        (ErrorCode::HeadersTooLarge, "headers_too_large", 431, "the request headers are over the route's limit"),
        (ErrorCode::ConfigInvalid, "config_invalid", 500, "the proxy's config document has problems (`edgeproxy check` shows them)"),
        (ErrorCode::InternalError, "internal_error", 500, "the proxy failed on this request (details in the host's log only)"),
        (ErrorCode::BadGateway, "bad_gateway", 502, "the upstream could not be reached or answered something unusable"),
        (ErrorCode::BadGeneratedImage, "bad_generated_image", 502, "the image generator produced something that is not a usable image"),
        (ErrorCode::GenerationFailed, "generation_failed", 502, "the image generator failed or refused"),
        (ErrorCode::UiMissing, "ui_missing", 502, "the hub's web UI is not published where the route looks for it"),
        (ErrorCode::BackendUnhealthy, "backend_unhealthy", 503, "the hub's backend does not answer its health check"),
        (ErrorCode::GenerationPending, "generation_pending", 503, "another request is generating this image; retry shortly"),
        (ErrorCode::GenerationThrottled, "generation_throttled", 503, "the image generator is throttling us; retry later"),
        (ErrorCode::KvUnavailable, "kv_unavailable", 503, "the key-value store failed when the request needed it"),
        (ErrorCode::OriginalDamaged, "original_damaged", 503, "a stored original image is incomplete or damaged"),
        (ErrorCode::QuotaUnavailable, "quota_unavailable", 503, "the generation quota could not be checked, so no credit is spent"),
        (ErrorCode::UiUnavailable, "ui_unavailable", 503, "a web UI file in key-value is incomplete; upload it again"),
        (ErrorCode::GatewayTimeout, "gateway_timeout", 504, "the upstream did not answer in time"),
        (ErrorCode::GenerationTimeout, "generation_timeout", 504, "the image generator did not finish in time"),
        (ErrorCode::NotStoredOffline, "not_stored_offline", 504, "the mirror is offline (`offline = true`) and has not stored what was asked for"),
    ];

    fn entry(self) -> &'static (ErrorCode, &'static str, u16, &'static str) {
        Self::ALL.iter().find(|(code, ..)| *code == self).expect("ALL lists every code")
    }

    pub fn as_str(self) -> &'static str {
        self.entry().1
    }

    pub fn status(self) -> u16 {
        self.entry().2
    }
}

/// `text` as a header value: visible ASCII and spaces only, at most 256 bytes.
fn header_safe(text: &str) -> String {
    text.chars().take(256).map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docs_list_every_error_code_with_its_status_and_meaning() {
        let readme = include_str!("../../docs/configuration.md");
        for (_, name, status, meaning) in ErrorCode::ALL {
            let row = format!("| `{name}` | {status} | {meaning} |");
            assert!(readme.contains(&row), "docs/configuration.md's Errors table lacks: {row}");
        }
        let section = readme.split("\n## Errors\n").nth(1).expect("docs/configuration.md has an Errors section").split("\n## ").next().unwrap_or("");
        for listed in section.lines().filter_map(|l| l.strip_prefix("| `")?.split('`').next()) {
            assert!(ErrorCode::ALL.iter().any(|(_, name, ..)| *name == listed), "docs/configuration.md lists {listed}, which no longer exists");
        }
    }

    #[test]
    fn error_headers_are_safe_header_values() {
        assert_eq!(header_safe("bad\r\nx-injected: 1 \u{e9}"), "bad??x-injected: 1 ?");
    }
}
