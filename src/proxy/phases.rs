//! A proxy as named phases, after Pingora's `ProxyHttp`: each app fills in
//! the phases it needs and [`begin`] and [`Pending::resume`] drive them in
//! order, split at `send` (which [`run`] does in between; a stepwise host
//! does it itself, see `wit/edgeproxy.wit`, `stepwise`).
//!
//! ```text
//! request_filter ──early answer──────────────────────────────┐
//!      │                                                      │
//! upstream_request → send → upstream_response_filter ─────────┤
//!                     └─ error → JSON error ──────────────────┤
//!                                                 response_filter → client
//! ```

use super::{Incoming, ProxyError};
use crate::platform::{Headers, HttpError, Platform, Request, Response};

/// What every phase may consult about the request being served.
pub struct Session<'a, P: Platform> {
    pub platform: &'a P,
    pub incoming: Incoming,
    pub method: String,
    /// The client's request headers, as received.
    pub headers: Headers,
    pub client_ip: Option<String>,
}

pub trait ProxyApp<P: Platform> {
    /// State the phases of one request share. Cloned when the phases after
    /// `send` run, so that a stepwise host can run them again.
    type Ctx: Default + Clone;

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

/// A request that has run its phases up to `send`.
pub enum Begun<'a, P: Platform> {
    /// Answered without an upstream (or refused).
    Answered(Response<P::Body>),
    /// `request` is to be sent upstream, and `rest` run on what comes back.
    Sending { request: Request<P::Body>, timeout_ms: Option<u32>, rest: Box<dyn Resume<P> + 'a> },
    /// An app that is not a proxy of phases (image-cache, an origin) and may
    /// wait on any import: calling it answers.
    Whole(Box<dyn FnOnce() -> Response<P::Body> + 'a>),
}

/// The phases after `send`, on what it gave. `&self`: they may be run again
/// (a stepwise host's first try stops at an import that would wait), each
/// time from the state `send` left.
pub trait Resume<P: Platform> {
    fn resume(&self, sent: Result<Response<P::Body>, HttpError>) -> Response<P::Body>;
}

/// The phases up to `send`.
pub fn begin<'a, P: Platform, A: ProxyApp<P> + 'a>(app: A, s: Session<'a, P>, mut req: Request<P::Body>) -> Begun<'a, P> {
    let mut ctx = A::Ctx::default();
    let upstream = match app.request_filter(&s, &mut ctx, &mut req) {
        Ok(Some(early)) => Ok(early),
        Ok(None) => match app.upstream_request(&s, &mut ctx, req) {
            Ok(request) => {
                let timeout_ms = app.upstream_timeout_ms(&ctx);
                return Begun::Sending { request, timeout_ms, rest: Box::new(Pending { app, session: s, ctx }) };
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    Begun::Answered(respond(&app, &s, &mut ctx, upstream))
}

/// All the phases, with the platform's `send` between them.
pub fn run<P: Platform, A: ProxyApp<P>>(app: A, s: Session<P>, req: Request<P::Body>) -> Response<P::Body> {
    let platform = s.platform;
    match begin(app, s, req) {
        Begun::Answered(resp) => resp,
        Begun::Sending { request, timeout_ms, rest } => rest.resume(platform.send(request, timeout_ms)),
        Begun::Whole(serve) => serve(),
    }
}

struct Pending<'a, P: Platform, A: ProxyApp<P>> {
    app: A,
    session: Session<'a, P>,
    ctx: A::Ctx,
}

impl<P: Platform, A: ProxyApp<P>> Resume<P> for Pending<'_, P, A> {
    fn resume(&self, sent: Result<Response<P::Body>, HttpError>) -> Response<P::Body> {
        let mut ctx = self.ctx.clone();
        let upstream = sent.map_err(|e| ProxyError::upstream(&e)).and_then(|resp| self.app.upstream_response_filter(&self.session, &mut ctx, resp));
        respond(&self.app, &self.session, &mut ctx, upstream)
    }
}

fn respond<P: Platform, A: ProxyApp<P>>(app: &A, s: &Session<P>, ctx: &mut A::Ctx, outcome: Result<Response<P::Body>, ProxyError>) -> Response<P::Body> {
    let mut resp = outcome.unwrap_or_else(ProxyError::into_response);
    app.response_filter(s, ctx, &mut resp);
    resp
}
