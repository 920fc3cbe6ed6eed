//! The client's request URL, taken apart once and checked before any app
//! sees it. The raw path is checked as received: URL parsers resolve `..`
//! (also `%2e%2e`) silently, which is exactly what an attacker relies on.

use percent_encoding::percent_decode_str;

use super::{ErrorCode, ProxyError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    /// `http` or `https`.
    pub scheme: String,
    /// As the client addressed us: `host[:port]`, lower-case.
    pub authority: String,
    /// Normalised path (runs of `/` collapsed), still percent-encoded.
    pub path: String,
    /// Without the `?`, if there was one.
    pub query: Option<String>,
}

/// Methods no app serves, with what the 405 tells the client.
const REFUSED_METHODS: [(&str, &str); 2] = [
    ("CONNECT", "CONNECT opens a tunnel, and edgeproxy is not a forward proxy"),
    ("TRACE", "TRACE would reflect the request back, credentials included"),
];
/// What an app may serve, for the `Allow` of a refused method.
const SERVABLE_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Refuses, before any routing, the methods no app serves and no proxy should
/// pass on: `CONNECT` and `TRACE` (405). Checked in the core, so the same on
/// every host whose server lets them through. (The `Host` header is the
/// hosts' to check: wasi:http hides it from components.)
pub fn refuse_unservable_method(method: &str) -> Result<(), ProxyError> {
    match REFUSED_METHODS.iter().find(|(name, _)| method.eq_ignore_ascii_case(name)) {
        Some((name, why)) => Err(ProxyError::new(ErrorCode::MethodNotAllowed, format!("{name} is not served: {why}")).with_header("allow", SERVABLE_METHODS)),
        None => Ok(()),
    }
}

impl Incoming {
    pub fn parse(url: &str) -> Result<Incoming, ProxyError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| ProxyError::bad_request("request URL is not absolute"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(ProxyError::bad_request(format!("unsupported scheme {scheme:?}")));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path_and_query) = rest.split_at(split);
        if !valid_authority(authority) {
            return Err(ProxyError::bad_request("the Host is not a valid host[:port]"));
        }
        let path_and_query = path_and_query.split('#').next().unwrap_or_default();
        let (raw_path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q.to_owned())),
            None => (path_and_query, None),
        };
        let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
        Ok(Incoming { scheme, authority: authority.to_ascii_lowercase(), path: normalise_path(raw_path)?, query })
    }

    /// Path and query as they go on the wire.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// `name[:port]` or `[v6]:port`: what a Host header may be, and nothing an
/// app could echo into a header or cache key to someone else's harm.
fn valid_authority(authority: &str) -> bool {
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        !v6.is_empty() && v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    } else {
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    };
    host_ok && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Collapses `//` runs and decodes escaped unreserved characters (`%61` is
/// `a`: RFC 3986 §6.2.2.2), so `/%61dmin` cannot slip past a `/admin` route;
/// refuses dot segments (also percent-encoded), encoded slashes and
/// backslashes, NUL and control characters, and broken escapes.
pub fn normalise_path(raw: &str) -> Result<String, ProxyError> {
    let refuse = |why: &str| Err(ProxyError::bad_request(format!("refused path: {why}")));
    if !raw.starts_with('/') {
        return refuse("it must start with '/'");
    }
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') {
        return refuse("it contains a control character or a backslash");
    }
    let mut out = String::with_capacity(raw.len());
    for segment in raw.split('/').filter(|s| !s.is_empty()) {
        let decoded: Vec<u8> = percent_decode_str(segment).collect();
        if segment.match_indices('%').any(|(i, _)| {
            let hex = segment.as_bytes().get(i + 1..i + 3);
            !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
        }) {
            return refuse("it contains a malformed percent-escape");
        }
        if decoded == b"." || decoded == b".." {
            return refuse("it contains a '.' or '..' segment");
        }
        if decoded.iter().any(|&b| b == b'/' || b == b'\\' || b == 0 || b < 0x20) {
            return refuse("it contains an encoded slash, backslash or control character");
        }
        out.push('/');
        push_with_unreserved_decoded(&mut out, segment);
    }
    if out.is_empty() || raw.ends_with('/') {
        out.push('/');
    }
    Ok(out)
}

fn push_with_unreserved_decoded(out: &mut String, segment: &str) {
    let mut rest = segment;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let escape = &rest[i..i + 3]; // checked well-formed by the caller
        let byte = u8::from_str_radix(&escape[1..], 16).expect("checked hex escape");
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(escape);
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_trace_are_refused_with_405_and_allow_in_any_case() {
        for method in ["CONNECT", "TRACE", "connect", "Trace"] {
            let refused = refuse_unservable_method(method).unwrap_err();
            assert_eq!((refused.status, refused.code), (405, ErrorCode::MethodNotAllowed), "{method}");
            assert!(refused.headers.iter().any(|(n, v)| n == "allow" && !v.contains("CONNECT") && !v.contains("TRACE")));
        }
        assert!(refuse_unservable_method("GET").is_ok());
    }

    #[test]
    fn url_is_split_into_scheme_authority_path_query() {
        let i = Incoming::parse("https://API.example.com:8443//v1//users/?q=1#frag").unwrap();
        assert_eq!(i.scheme, "https");
        assert_eq!(i.authority, "api.example.com:8443");
        assert_eq!(i.path, "/v1/users/");
        assert_eq!(i.query.as_deref(), Some("q=1"));
    }

    #[test]
    fn traversal_tricks_are_refused() {
        for path in ["/a/../b", "/a/%2e%2e/b", "/a/%2E./b", "/./a", "/a%2fb", "/a%5cb", "/a\\b", "/a%00", "/a%zz", "/a%2"] {
            let err = normalise_path(path).unwrap_err();
            assert_eq!(err.status, 400, "{path}");
        }
    }

    #[test]
    fn escaped_unreserved_characters_are_decoded_and_others_kept() {
        assert_eq!(normalise_path("/%61dmin/%7Euser/a%20b/%E2%9C%93").unwrap(), "/admin/~user/a%20b/%E2%9C%93");
    }

    #[test]
    fn hosts_that_are_not_host_port_are_refused() {
        for url in ["http://a\"b/", "http://a<b/", "http://user@a/", "http://a:80x/", "http:///x", "http://a:/"] {
            assert_eq!(Incoming::parse(url).unwrap_err().status, 400, "{url}");
        }
        assert!(Incoming::parse("http://[::1]:8787/").is_ok());
        assert!(Incoming::parse("http://my_host.local:80/").is_ok());
    }

    #[test]
    fn ordinary_paths_pass_unchanged() {
        for path in ["/", "/a/b.c", "/a/..b", "/%E2%9C%93", "/a/"] {
            assert_eq!(normalise_path(path).unwrap(), path);
        }
    }
}
