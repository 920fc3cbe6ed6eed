//! The toolkit every app shares: the phase runner ([`phases`]) and the pieces
//! a proxy needs around it. Apps compose these; they do not re-implement them.

pub mod blob_store;
pub mod cache;
pub mod cors;
pub mod error;
pub mod git;
pub mod headers;
pub mod incoming;
pub mod phases;
pub mod rate_limit;

pub use error::ProxyError;
pub use incoming::{Incoming, refuse_unservable_method};
pub use phases::{ProxyApp, Session};

use crate::platform::{Body, ReadOutcome, Response, read_up_to};

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
        Err(e) => return Err(ProxyError::new(502, "bad_gateway", format!("upstream response failed: {e}"))),
    }
    Ok(resp)
}


#[cfg(test)]
mod tests {
    #[test]
    fn a_url_with_a_non_ascii_host_is_refused_however_its_slashes_are_written() {
        for url in ["http://exämple.com/", "http:/exämple.com", "https:\\\\exämple.com\\x", "http://RÕ.0/"] {
            let e = super::parse_url(url).unwrap_err();
            assert!(e.contains("punycode"), "{url}: {e}");
        }
        assert_eq!(super::parse_url("https://xn--exmple-cua.com/ü").unwrap().host_str(), Some("xn--exmple-cua.com"));
    }
}
