//! CORS at the edge (Fetch standard §3.2): allow-listed origins are echoed
//! with `Vary: Origin`, preflights are answered here, and a disallowed origin
//! gets no CORS headers at all.

use serde::Deserialize;

use super::{ErrorCode, Method, ProxyError, headers};
use crate::platform::{Body, Headers, Response, header};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsOptions {
    /// Exact origins (`https://app.example.com`), or `"*"` for any origin.
    pub allowed_origins: Vec<String>,
    /// Send `Access-Control-Allow-Credentials: true` (never with `"*"`).
    #[serde(default)]
    pub allow_credentials: bool,
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    /// Request headers a preflight may ask for; `"*"` allows whatever it asks.
    #[serde(default = "any")]
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default = "default_max_age")]
    pub max_age_seconds: u32,
    /// Refuse (403) state-changing requests (not GET/HEAD/OPTIONS) that carry
    /// an `Origin` outside the allow-list, before they reach the origin server.
    #[serde(default = "yes")]
    pub refuse_disallowed_origins: bool,
}

/// What browser scripts (transformers.js, huggingface.js, a hub's web UI)
/// read off a Hugging Face style hub's answers.
pub const HUB_METADATA: &[&str] = &[
    "x-repo-commit", "x-linked-etag", "x-linked-size", "x-xet-hash", "etag", "content-length", "content-range", "accept-ranges",
    "location", "link", "x-error-code", "x-error-message", "x-request-id",
];

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"].map(String::from).to_vec()
}
fn any() -> Vec<String> {
    vec!["*".into()]
}
fn default_max_age() -> u32 {
    600
}
fn yes() -> bool {
    true
}

impl CorsOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.allow_credentials && self.allowed_origins.iter().any(|o| o == "*") {
            return Err("cors: allowed_origins = [\"*\"] with allow_credentials = true would let any site act as your \
                        signed-in users; list the origins instead"
                .into());
        }
        Ok(())
    }

    fn any_origin(&self) -> bool {
        self.allowed_origins.iter().any(|o| o == "*")
    }

    pub fn allows(&self, origin: &str) -> bool {
        self.any_origin() || self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
    /// is answered here and never reaches the origin server.
    pub fn preflight<B: Body>(&self, method: &Method, request: &Headers) -> Option<Result<Response<B>, ProxyError>> {
        let origin = header(request, "origin")?;
        let wanted_method = header(request, "access-control-request-method")?;
        if *method != Method::Options {
            return None;
        }
        if !self.allows(origin) {
            return Some(Err(ProxyError::new(ErrorCode::CorsOriginRefused, format!("origin {origin} is not allowed"))));
        }
        if !self.allowed_methods.iter().any(|m| m.eq_ignore_ascii_case(wanted_method)) {
            return Some(Err(ProxyError::new(ErrorCode::CorsMethodRefused, format!("method {wanted_method} is not allowed"))));
        }
        // The origin, credentials and `Vary: Origin` come from `decorate`,
        // which runs on every response.
        let mut out = Headers::new();
        out.push(("access-control-allow-methods".into(), self.allowed_methods.join(", ")));
        let wanted_headers = header(request, "access-control-request-headers").unwrap_or("");
        let allowed_headers = if self.allowed_headers.iter().any(|h| h == "*") {
            wanted_headers.to_owned()
        } else {
            self.allowed_headers.join(", ")
        };
        if !allowed_headers.is_empty() {
            out.push(("access-control-allow-headers".into(), allowed_headers));
        }
        out.push(("access-control-max-age".into(), self.max_age_seconds.to_string()));
        headers::append_token(&mut out, "vary", "Access-Control-Request-Method");
        headers::append_token(&mut out, "vary", "Access-Control-Request-Headers");
        out.push(("content-length".into(), "0".into()));
        Some(Ok(Response { status: 204, headers: out, body: None }))
    }

    /// Is this a state-changing request from an origin we do not allow?
    pub fn refuses(&self, method: &Method, request: &Headers) -> Option<ProxyError> {
        let origin = header(request, "origin")?;
        let safe = method.reads() || *method == Method::Options;
        (self.refuse_disallowed_origins && !safe && !self.allows(origin))
            .then(|| ProxyError::new(ErrorCode::OriginRefused, format!("requests from origin {origin} are not allowed")))
    }

    /// Drops the origin server's own CORS headers, so the edge's policy is
    /// the only one a browser sees.
    pub fn strip_upstream(&self, upstream: &mut Headers) {
        upstream.retain(|(n, _)| !n.starts_with("access-control-"));
    }

    /// Adds the CORS response headers for the request's `origin`. A browser
    /// may read the headers `exposed` (what the app always shows, such as
    /// [`HUB_METADATA`]) and the configured `expose_headers`.
    pub fn decorate(&self, origin: Option<&str>, exposed: &[&str], out: &mut Headers) {
        headers::append_token(out, "vary", "Origin");
        let Some(origin) = origin.filter(|o| self.allows(o)) else { return };
        let allow_origin = if self.any_origin() && !self.allow_credentials { "*" } else { origin };
        out.push(("access-control-allow-origin".into(), allow_origin.to_owned()));
        if self.allow_credentials {
            out.push(("access-control-allow-credentials".into(), "true".into()));
        }
        let mut names: Vec<&str> = exposed.to_vec();
        names.extend(self.expose_headers.iter().map(String::as_str).filter(|h| !exposed.contains(h)));
        if !names.is_empty() {
            out.push(("access-control-expose-headers".into(), names.join(", ")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::fake::Bytes;

    fn options(toml: &str) -> CorsOptions {
        toml::from_str(toml).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(n, v)| ((*n).into(), v.to_string())).collect()
    }

    const LISTED: &str = "allowed_origins = [\"https://app.test\"]";
    const ANY: &str = "allowed_origins = [\"*\"]";
    const CREDENTIALED: &str = "allowed_origins = [\"https://app.test\"]\nallow_credentials = true\nexpose_headers = [\"x-mine\"]";

    #[test]
    fn a_response_gets_cors_headers_only_for_an_allowed_origin() {
        // (options, the request's Origin, headers the app exposes, the CORS headers expected besides Vary)
        let cases: &[(&str, Option<&str>, &[&str], &[(&str, &str)])] = &[
            (LISTED, Some("https://app.test"), &[], &[("access-control-allow-origin", "https://app.test")]),
            (LISTED, Some("HTTPS://APP.TEST"), &[], &[("access-control-allow-origin", "HTTPS://APP.TEST")]),
            (LISTED, Some("https://evil.test"), &["etag"], &[]),
            (LISTED, None, &["etag"], &[]),
            (ANY, Some("https://any.test"), &[], &[("access-control-allow-origin", "*")]),
            (ANY, Some("https://any.test"), &["etag", "link"], &[("access-control-allow-origin", "*"), ("access-control-expose-headers", "etag, link")]),
            (
                CREDENTIALED,
                Some("https://app.test"),
                &["etag"],
                &[
                    ("access-control-allow-origin", "https://app.test"),
                    ("access-control-allow-credentials", "true"),
                    ("access-control-expose-headers", "etag, x-mine"),
                ],
            ),
        ];
        for (toml, origin, exposed, expected) in cases {
            let mut out = Headers::new();
            options(toml).decorate(*origin, exposed, &mut out);
            assert!(out.contains(&("vary".into(), "Origin".into())), "{toml} {origin:?}: every answer varies by Origin: {out:?}");
            out.retain(|(n, _)| n != "vary");
            assert_eq!(out, headers(expected), "{toml} {origin:?} {exposed:?}");
        }
    }

    #[test]
    fn a_preflight_is_answered_at_the_edge_or_refused_with_the_reason() {
        // (options, method, request headers, Ok(allowed headers) or Err(code); None: not a preflight)
        let cases: &[(&str, &str, &[(&str, &str)], Option<Result<&str, ErrorCode>>)] = &[
            (LISTED, "OPTIONS", &[("origin", "https://app.test"), ("access-control-request-method", "PUT"), ("access-control-request-headers", "x-a")], Some(Ok("x-a"))),
            (LISTED, "OPTIONS", &[("origin", "https://evil.test"), ("access-control-request-method", "PUT")], Some(Err(ErrorCode::CorsOriginRefused))),
            (
                "allowed_origins = [\"https://app.test\"]\nallowed_methods = [\"GET\"]",
                "OPTIONS",
                &[("origin", "https://app.test"), ("access-control-request-method", "DELETE")],
                Some(Err(ErrorCode::CorsMethodRefused)),
            ),
            (
                "allowed_origins = [\"https://app.test\"]\nallowed_headers = [\"x-b\"]",
                "OPTIONS",
                &[("origin", "https://app.test"), ("access-control-request-method", "GET"), ("access-control-request-headers", "x-a")],
                Some(Ok("x-b")),
            ),
            (LISTED, "OPTIONS", &[("origin", "https://app.test")], None),
            (LISTED, "GET", &[("origin", "https://app.test"), ("access-control-request-method", "GET")], None),
        ];
        for (toml, method, request, expected) in cases {
            let answer = options(toml).preflight::<Bytes>(&Method::parse(method), &headers(request));
            match (answer, expected) {
                (None, None) => {}
                (Some(Ok(r)), Some(Ok(allowed))) => {
                    assert_eq!(r.status, 204);
                    assert_eq!(header(&r.headers, "access-control-allow-headers"), Some(*allowed), "{toml} {request:?}");
                }
                (Some(Err(e)), Some(Err(code))) => assert_eq!(e.code, *code, "{toml} {request:?}"),
                (answer, _) => panic!("{toml} {method} {request:?}: {:?}", answer.map(|a| a.map(|r| r.status))),
            }
        }
    }

    #[test]
    fn only_state_changing_requests_from_a_disallowed_origin_are_refused() {
        // (options, method, Origin, refused)
        let cases = [
            (LISTED, "POST", Some("https://evil.test"), true),
            (LISTED, "DELETE", Some("https://evil.test"), true),
            (LISTED, "GET", Some("https://evil.test"), false),
            (LISTED, "POST", Some("https://app.test"), false),
            (LISTED, "POST", None, false),
            ("allowed_origins = [\"https://app.test\"]\nrefuse_disallowed_origins = false", "POST", Some("https://evil.test"), false),
        ];
        for (toml, method, origin, refused) in cases {
            let request = headers(&origin.map(|o| ("origin", o)).into_iter().collect::<Vec<_>>());
            let refusal = options(toml).refuses(&Method::parse(method), &request);
            assert_eq!(refusal.is_some(), refused, "{toml} {method} {origin:?}");
            if let Some(e) = refusal {
                assert_eq!((e.status, e.code), (403, ErrorCode::OriginRefused));
            }
        }
    }
}
