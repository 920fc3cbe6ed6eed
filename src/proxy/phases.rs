//! A proxy as named phases, after Pingora's `ProxyHttp`: each app fills in
//! the phases it needs and [`run`] drives them in order.
//!
//! ```text
//! request_filter ──early answer──────────────────────────────┐
//!      │                                                      │
//! upstream_request → send → upstream_response_filter ─────────┤
//!                     └─ error → JSON error ──────────────────┤
//!                                                 response_filter → client
//! ```

use super::{Incoming, ProxyError};
use crate::platform::{Headers, Platform, Request, Response};

/// What every phase may consult about the request being served.
pub struct Session<'a, P: Platform> {
    pub platform: &'a P,
    pub incoming: Incoming,
    pub method: String,
    /// The client's request headers, as received.
    pub headers: Headers,
    pub client_ip: Option<&'a str>,
}

pub trait ProxyApp<P: Platform> {
    /// State the phases of one request share.
    type Ctx: Default;

    /// Refusals, preflights, cache hits: `Ok(Some(_))` answers without an upstream.
    fn request_filter(&self, _s: &Session<P>, _ctx: &mut Self::Ctx, _req: &mut Request<P::Body>) -> Result<Option<Response<P::Body>>, ProxyError> {
        Ok(None)
    }

    /// The request to send upstream (absolute URL, filtered headers).
    fn upstream_request(&self, s: &Session<P>, ctx: &mut Self::Ctx, req: Request<P::Body>) -> Result<Request<P::Body>, ProxyError>;

    /// How long to wait for upstream response headers (for this request).
    fn upstream_timeout_ms(&self, _ctx: &Self::Ctx) -> Option<u32> {
        None
    }

    /// The upstream's response, before it is returned (rewrite, cache).
    fn upstream_response_filter(&self, _s: &Session<P>, _ctx: &mut Self::Ctx, resp: Response<P::Body>) -> Result<Response<P::Body>, ProxyError> {
        Ok(resp)
    }

    /// Every response, whatever produced it: early answer, upstream or error.
    fn response_filter(&self, _s: &Session<P>, _ctx: &mut Self::Ctx, _resp: &mut Response<P::Body>) {}
}

pub fn run<P: Platform, A: ProxyApp<P>>(app: &A, s: &Session<P>, req: Request<P::Body>) -> Response<P::Body> {
    let mut ctx = A::Ctx::default();
    let mut resp = proxy(app, s, &mut ctx, req).unwrap_or_else(ProxyError::into_response);
    app.response_filter(s, &mut ctx, &mut resp);
    resp
}

fn proxy<P: Platform, A: ProxyApp<P>>(app: &A, s: &Session<P>, ctx: &mut A::Ctx, mut req: Request<P::Body>) -> Result<Response<P::Body>, ProxyError> {
    if let Some(early) = app.request_filter(s, ctx, &mut req)? {
        return Ok(early);
    }
    let upstream = app.upstream_request(s, ctx, req)?;
    let resp = s.platform.send(upstream, app.upstream_timeout_ms(ctx)).map_err(|e| ProxyError::upstream(&e))?;
    app.upstream_response_filter(s, ctx, resp)
}
