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

