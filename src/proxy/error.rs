//! Every refusal and failure becomes a status with a JSON body
//! `{"error": code, "message": text}`, and the same two as `X-Error-Code` and
//! `X-Error-Message` headers (where huggingface_hub and other clients that
//! never read an error body look for them, HEAD answers included); nothing traps.

use crate::platform::{Body, Headers, HttpError, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyError {
    pub status: u16,
    /// Stable, machine-readable: `not_found`, `bad_gateway`, ...
    pub code: &'static str,
    /// For people: what happened and, where it helps, what to do.
    pub message: String,
    /// Extra headers such as `retry-after` or `allow`.
    pub headers: Headers,
}

impl ProxyError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ProxyError { status, code, message: message.into(), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal_error", message)
    }

    /// 504 for a timeout, 502 for everything else that kept us from a
    /// response. The message names the kind of failure only: the details
    /// (which the host logs) can contain the upstream URL and its secrets.
    pub fn upstream(error: &HttpError) -> Self {
        let kind = match error {
            HttpError::Timeout => return Self::new(504, "gateway_timeout", "the upstream did not answer in time"),
            HttpError::InvalidUrl(_) => "the upstream URL is invalid",
            HttpError::Denied(_) => "the host refused to connect to the upstream",
            HttpError::DnsError(_) => "the upstream's name did not resolve",
            HttpError::ConnectionFailed(_) => "could not connect to the upstream",
            HttpError::TlsError(_) => "TLS with the upstream failed",
            HttpError::ProtocolError(_) => "the exchange with the upstream failed",
        };
        Self::new(502, "bad_gateway", kind)
    }

    pub fn into_response<B: Body>(self) -> Response<B> {
        let json = serde_json::json!({ "error": self.code, "message": self.message });
        let mut headers = self.headers;
        headers.push(("x-error-code".into(), self.code.to_owned()));
        headers.push(("x-error-message".into(), header_safe(&self.message)));
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("cache-control".into(), "no-store".into()));
        Response { status: self.status, headers, body: Some(B::from_bytes(json.to_string().into_bytes())) }
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
    fn error_headers_are_safe_header_values() {
        assert_eq!(header_safe("bad\r\nx-injected: 1 \u{e9}"), "bad??x-injected: 1 ?");
    }
}
