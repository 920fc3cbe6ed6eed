//! A proxy as named phases, after Pingora's `ProxyHttp`: each app fills in
//! the phases it needs and [`begin`] and [`Pending::resume`] drive them in
//! order, split at `send` (which [`run`] does in between; a stepwise host
//! does it itself, see `wit/edgeproxy.wit`, `stepwise`).
//!
//! ```text
//! request_filter ──early answer──────────────────────────────────────────────────┐
//!      │                                                                          │
//! upstream_peer → (hygiene) upstream_request_filter → send                       │
//!                                                      │                          │
//!                  (hygiene) upstream_response_filter ◀┘ error → fail_to_proxy ───┤
//!                                                                    response_filter → client
//! ```
//!
//! The runner owns the hygiene every proxy needs, so no app can forget it:
//! the upstream request's headers are the client's made safe to forward
//! ([`headers::for_upstream`]), without its credentials where the peer must
//! not see them, and its URL is the peer's base and path; the upstream
//! response's hop-by-hop headers are gone before an app sees it.

use std::borrow::Cow;

use super::cache::CacheResult;
use super::{ErrorCode, Incoming, Method, ProxyError, headers};
use crate::platform::{Headers, HttpError, Platform, Request, Response};

/// What every phase may consult about the request being served.
pub struct Session<'a, P: Platform> {
    pub platform: &'a P,
    pub incoming: Incoming,
    pub method: Method,
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

    /// Where the request goes upstream.
    fn upstream_peer(&self, s: &Session<P>, ctx: &mut Self::Ctx) -> Result<Peer<'_>, ProxyError>;

    /// The upstream request's headers, after the runner's hygiene: what only
    /// this app changes (an `Accept-Encoding`, a credential's form).
    fn upstream_request_filter(&self, _s: &Session<P>, _ctx: &mut Self::Ctx, _headers: &mut Headers) {}

    /// The upstream's response, before it is returned (rewrite, cache).
    fn upstream_response_filter(&self, _s: &Session<P>, _ctx: &mut Self::Ctx, resp: Response<P::Body>) -> Result<Response<P::Body>, ProxyError> {
        Ok(resp)
    }

    /// The answer to an error from any phase or from `send`: JSON (the
    /// client contract, `ProxyError::into_response`) unless the client
    /// reads errors in another form.
    fn fail_to_proxy(&self, _s: &Session<P>, _ctx: &mut Self::Ctx, e: ProxyError) -> Response<P::Body> {
        e.into_response()
    }

    /// Every response, whatever produced it: early answer, upstream or error.
    fn response_filter(&self, _s: &Session<P>, _ctx: &mut Self::Ctx, _resp: &mut Response<P::Body>) {}

    /// What the app's cache did for this request, if it took part: the
    /// runner sets `X-Cache` from it and reports it in `logging`.
    fn cache_result(&self, _s: &Session<P>, _ctx: &Self::Ctx) -> Option<CacheResult> {
        None
    }

    /// Last: how the request was answered, for the host's metrics and log
    /// (`telemetry.answered`): the code of an error the core answered, and
    /// what the app's cache did.
    fn logging(&self, s: &Session<P>, ctx: &Self::Ctx, error: Option<ErrorCode>) {
        s.platform.answered(error.map(ErrorCode::as_str), self.cache_result(s, ctx).map(CacheResult::label));
    }
}

/// Where the routing phase sends a request (see the module's comment).
pub struct Peer<'a> {
    /// The upstream's base URL, with no trailing `/`.
    pub base: Cow<'a, str>,
    /// Path and query on the upstream, from its `/`.
    pub path: String,
    /// Whether the client's `Authorization` and cookies go too. Not to
    /// presigned storage or a static host: they carry or need none, and S3
    /// refuses a request with two kinds of authorisation.
    pub credentials: bool,
    /// How long to wait for the response headers; the host's default (30 s) if none.
    pub timeout_ms: Option<u32>,
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
        Ok(None) => match app.upstream_peer(&s, &mut ctx) {
            Ok(peer) => {
                let (url, timeout_ms) = (format!("{}{}", peer.base, peer.path), peer.timeout_ms);
                let mut headers = headers::for_upstream(req.headers, s.client_ip.as_deref(), &s.incoming.scheme, &s.incoming.authority);
                if !peer.credentials {
                    headers.retain(|(n, _)| n != "authorization" && n != "cookie");
                }
                app.upstream_request_filter(&s, &mut ctx, &mut headers);
                let request = Request { method: req.method, url, headers, body: req.body };
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
        let upstream = sent.map_err(|e| ProxyError::upstream(&e)).and_then(|mut resp| {
            headers::remove_hop_by_hop(&mut resp.headers);
            self.app.upstream_response_filter(&self.session, &mut ctx, resp)
        });
        respond(&self.app, &self.session, &mut ctx, upstream)
    }
}

fn respond<P: Platform, A: ProxyApp<P>>(app: &A, s: &Session<P>, ctx: &mut A::Ctx, outcome: Result<Response<P::Body>, ProxyError>) -> Response<P::Body> {
    let error = outcome.as_ref().err().map(|e| e.code);
    let mut resp = outcome.unwrap_or_else(|e| app.fail_to_proxy(s, ctx, e));
    app.response_filter(s, ctx, &mut resp);
    if let Some(result) = app.cache_result(s, ctx) {
        headers::set(&mut resp.headers, "x-cache", result.header());
    }
    app.logging(s, ctx, error);
    resp
}
