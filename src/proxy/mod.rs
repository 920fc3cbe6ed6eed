//! The toolkit every app shares: the phase runner ([`phases`]) and the pieces
//! a proxy needs around it. Apps compose these; they do not re-implement them.

pub mod blob_store;
pub mod cache;
pub mod cors;
pub mod error;
pub mod git;
pub mod headers;
pub mod incoming;
pub mod method;
pub mod phases;
pub mod rate_limit;

pub use error::{ErrorCode, ProxyError};
pub use incoming::{Incoming, refuse_unservable_method};
pub use method::Method;
pub use phases::{Peer, ProxyApp, Session};

use crate::platform::{Body, Platform, ReadOutcome, Response, read_up_to};

/// An absolute URL, from the config or from an upstream. A host name must be
/// ASCII (internationalised names as punycode, `xn--`): the core's IDNA is
/// ASCII-only (Cargo.toml, `idna_adapter`), and refusing here gives the same
/// clear error in every build instead of the IDNA layer's undefined handling.
pub fn parse_url(url: &str) -> Result<url::Url, String> {
    // As the URL standard reads a special scheme's authority: after any run
    // of slashes or backslashes (`http:/host`, `http:\\host`).
    let after_scheme = url.split_once(':').map_or(url, |(_, rest)| rest).trim_start_matches(['/', '\\']);
    let authority = after_scheme.split(['/', '\\', '?', '#']).next().unwrap_or("");
    if !authority.is_ascii() {
        return Err("its host is not ASCII (write an internationalised name as punycode, xn--...)".into());
    }
    url::Url::parse(url).map_err(|e| e.to_string())
}

/// Whether `pattern` matches the host name `host`: a name equal to it
/// (without regard to case), or `*.suffix`, which matches every name under
/// `suffix` (one label or more) but not `suffix` itself. The one wildcard
/// rule of every allow-list in the config (hf-mirror's hosts, image-cache's
/// output origins).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.as_bytes();
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let Some(stem_len) = host.len().checked_sub(suffix.len() + 1) else { return false };
            stem_len > 0 && host[stem_len] == b'.' && host[stem_len + 1..].eq_ignore_ascii_case(suffix.as_bytes())
        }
        None => host.eq_ignore_ascii_case(pattern.as_bytes()),
    }
}

/// A host name or a `*.suffix` pattern as [`host_matches`] takes them:
/// letters, digits, `-` and `.`.
pub fn is_host_pattern(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A page the edge serves itself (a home page, a gallery): HTML,
/// revalidated on every visit (it changes with the config), with a body
/// only for `GET` (a `HEAD` gets the same headers).
pub fn page<B: Body>(method: &Method, html: String) -> Response<B> {
    let headers = vec![
        ("content-type".into(), "text/html; charset=utf-8".to_owned()),
        ("content-length".into(), html.len().to_string()),
        ("cache-control".into(), "no-cache".to_owned()),
    ];
    Response { status: 200, headers, body: (*method == Method::Get).then(|| B::from_bytes(html.into_bytes())) }
}

/// An upstream base URL from the config: http or https, with a host, no
/// query and no fragment. `what` names the option; the value is left out of
/// the message (it may carry a token).
pub fn check_base_url(what: &str, value: &str) -> Result<(), String> {
    let url = parse_url(value).map_err(|e| format!("{what} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{what} must be an http:// or https:// URL with a host and no query or fragment"));
    }
    Ok(())
}

/// The base URL a route's `field` names or, when it names none, the one a
/// platform setting gives under an original Worker's own name (KohakuHub's
/// `API_BASE_URL`, the API proxy's `TARGET_DOMAIN`), so that its users'
/// settings carry over; `to_url` makes the setting's value a URL. Without
/// either: 500 `config_invalid`, naming both (never the value).
pub fn base_url_or_setting<P: Platform>(p: &P, named: Option<&str>, field: &str, setting: &str, to_url: fn(String) -> String) -> Result<String, ProxyError> {
    let url = match named {
        Some(url) => url.to_owned(),
        None => {
            let missing = || ProxyError::new(ErrorCode::ConfigInvalid, format!("this route names no {field}: set `{field}` in the document, or {setting} on the platform"));
            let url = to_url(p.config(setting).ok().flatten().filter(|v| !v.is_empty()).ok_or_else(missing)?);
            check_base_url(setting, &url).map_err(|why| ProxyError::new(ErrorCode::ConfigInvalid, why))?;
            url
        }
    };
    Ok(url.trim_end_matches('/').to_owned())
}

/// Replaces a response body of at most `limit` bytes with `edit`'s result
/// (`None`: keep it), fixing `Content-Length`. A longer body passes unread.
pub fn rewrite_body<B: Body>(mut resp: Response<B>, limit: u64, edit: impl FnOnce(&[u8]) -> Option<Vec<u8>>) -> Result<Response<B>, ProxyError> {
    let Some(body) = resp.body.take() else { return Ok(resp) };
    match read_up_to(body, limit) {
        Ok(ReadOutcome::Complete(bytes)) => {
            let bytes = edit(&bytes).unwrap_or(bytes);
            headers::set(&mut resp.headers, "content-length", bytes.len().to_string());
            resp.body = Some(B::from_bytes(bytes));
        }
        Ok(ReadOutcome::TooLong(body)) => resp.body = Some(body),
        Err(e) => return Err(ProxyError::new(ErrorCode::BadGateway, format!("upstream response failed: {e}"))),
    }
    Ok(resp)
}


#[cfg(test)]
mod tests {
    #[test]
    fn a_wildcard_matches_names_under_its_suffix_and_nothing_else() {
        // (pattern, host, matches)
        let cases = [
            ("cdn.example", "cdn.example", true),
            ("cdn.example", "CDN.Example", true),
            ("cdn.example", "x.cdn.example", false),
            ("*.example", "cdn.example", true),
            ("*.example", "a.b.Example", true),
            ("*.example", "example", false),
            ("*.example", ".example", false),
            ("*.example", "evilexample", false),
            ("*.example", "example.evil", false),
            ("*.example", "é.example", true),
            ("*.example", "xé", false),
        ];
        for (pattern, host, expected) in cases {
            assert_eq!(super::host_matches(pattern, host), expected, "{pattern} against {host}");
        }
        assert!(super::is_host_pattern("*.hf.co") && super::is_host_pattern("cas-bridge.xethub.hf.co"));
        assert!(!super::is_host_pattern("*.") && !super::is_host_pattern("a/b") && !super::is_host_pattern("*x.hf.co"));
    }

    #[test]
    fn a_url_with_a_non_ascii_host_is_refused_however_its_slashes_are_written() {
        for url in ["http://exämple.com/", "http:/exämple.com", "https:\\\\exämple.com\\x", "http://RÕ.0/"] {
            let e = super::parse_url(url).unwrap_err();
            assert!(e.contains("punycode"), "{url}: {e}");
        }
        assert_eq!(super::parse_url("https://xn--exmple-cua.com/ü").unwrap().host_str(), Some("xn--exmple-cua.com"));
    }
}
