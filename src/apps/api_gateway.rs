//! api-gateway: `api.example.com` -> one origin, with CORS, caching, JSON
//! errors, origin checks, rate limiting and request limits at the edge.

use serde::Deserialize;

use crate::platform::{Body, Platform, ReadOutcome, Request, Response, read_up_to};
use crate::proxy::cors::CorsOptions;
use crate::proxy::cache::{CacheResult, Lookup};
use crate::proxy::{ErrorCode, Method, Peer, ProxyApp, ProxyError, Session, cache, headers, rate_limit};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// `scheme://host[:port][/base-path]`; the request path is appended.
    /// Unset: the platform's `TARGET_DOMAIN` (the API proxy Worker's
    /// setting: a host, served over https, or a URL).
    pub origin: Option<String>,
    #[serde(default = "default_methods")]
    pub allowed_methods: Vec<String>,
    /// Larger request bodies get 413. No limit if unset.
    pub max_body_bytes: Option<u64>,
    /// Larger request header blocks get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Time to wait for the origin's response headers (504 after).
    pub timeout_ms: Option<u32>,
    pub cors: Option<CorsOptions>,
    pub cache: Option<CacheOptions>,
    pub rate_limit: Option<rate_limit::RateLimitOptions>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheOptions {
    /// Responses with larger bodies pass through uncached.
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
}

/// The rate limit's defaults: the policy (limiter) is `api`; `requests` must be given.
const RATE_LIMIT: rate_limit::Defaults = rate_limit::Defaults { policy: "api", requests: None };

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].map(String::from).to_vec()
}
fn default_max_header_bytes() -> usize {
    32 * 1024
}
fn default_max_entry_bytes() -> u64 {
    1024 * 1024
}

impl Options {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(origin) = &self.origin {
            crate::proxy::check_base_url("origin", origin)?;
        }
        if let Some(m) = self.allowed_methods.iter().find(|m| m.as_str() != m.to_ascii_uppercase()) {
            return Err(format!("allowed_methods: write {m:?} in upper case"));
        }
        if let Some(rl) = &self.rate_limit {
            rl.validate(&RATE_LIMIT)?;
        }
        self.cors.as_ref().map_or(Ok(()), CorsOptions::validate)
    }

    fn origin_base<P: Platform>(&self, p: &P) -> Result<String, ProxyError> {
        let to_url = |target: String| if target.contains("://") { target } else { format!("https://{target}") };
        crate::proxy::base_url_or_setting(p, self.origin.as_deref(), "origin", "TARGET_DOMAIN", to_url)
    }
}

pub struct ApiGateway<'a> {
    pub options: &'a Options,
    /// Distinguishes routes in the shared cache.
    pub route_index: usize,
}

#[derive(Default, Clone)]
pub struct Ctx {
    cache_key: Option<String>,
    cache_hit: bool,
}

impl<P: Platform> ProxyApp<P> for ApiGateway<'_> {
    type Ctx = Ctx;

    fn request_filter(&self, s: &Session<P>, ctx: &mut Ctx, req: &mut Request<P::Body>) -> Result<Option<Response<P::Body>>, ProxyError> {
        let o = self.options;
        if headers::block_size(&s.headers) > o.max_header_bytes {
            return Err(ProxyError::new(ErrorCode::HeadersTooLarge, format!("request headers exceed {} bytes", o.max_header_bytes)));
        }
        if let Some(cors) = &o.cors
            && let Some(answer) = cors.preflight(&s.method, &s.headers)
        {
            return answer.map(Some);
        }
        if !o.allowed_methods.iter().any(|m| m == s.method.as_str()) {
            return Err(ProxyError::new(ErrorCode::MethodNotAllowed, format!("method {} is not allowed here", s.method))
                .with_header("allow", o.allowed_methods.join(", ")));
        }
        if let Some(refusal) = o.cors.as_ref().and_then(|c| c.refuses(&s.method, &s.headers)) {
            return Err(refusal);
        }
        if let Some(rl) = &o.rate_limit {
            rl.policy(&RATE_LIMIT).check(s)?;
        }
        if let Some(max) = o.max_body_bytes {
            limit_body(req, max)?;
        }
        if o.cache.is_some() && cache::may_lookup(&s.method, &s.headers) {
            match cache::look_up(s, "api-gateway", self.route_index) {
                Lookup::Hit(hit) => {
                    ctx.cache_hit = true;
                    return Ok(Some(hit));
                }
                Lookup::Miss(key) => ctx.cache_key = Some(key),
                Lookup::Uncacheable => {}
            }
        }
        Ok(None)
    }

    fn upstream_peer(&self, s: &Session<P>, _ctx: &mut Ctx) -> Result<Peer<'_>, ProxyError> {
        let o = self.options;
        Ok(Peer { base: o.origin_base(s.platform)?.into(), path: s.incoming.path_and_query(), credentials: true, timeout_ms: o.timeout_ms })
    }

    fn upstream_response_filter(&self, s: &Session<P>, ctx: &mut Ctx, mut resp: Response<P::Body>) -> Result<Response<P::Body>, ProxyError> {
        if let Some(cors) = &self.options.cors {
            cors.strip_upstream(&mut resp.headers);
        }
        let public_base = format!("{}://{}", s.incoming.scheme, s.incoming.authority);
        headers::rewrite_location(&mut resp.headers, &self.options.origin_base(s.platform)?, &public_base);
        if let (Some(key), Some(cache)) = (&ctx.cache_key, &self.options.cache)
            && let Some(ttl) = cache::freshness(&s.method, &s.headers, &resp)
        {
            return cache::store(s.platform, key, &s.headers, resp, ttl, cache.max_entry_bytes);
        }
        Ok(resp)
    }

    fn response_filter(&self, s: &Session<P>, _ctx: &mut Ctx, resp: &mut Response<P::Body>) {
        if let Some(cors) = &self.options.cors {
            cors.decorate(crate::platform::header(&s.headers, "origin"), &[], &mut resp.headers);
        }
    }

    /// Every GET on a route with a cache is a hit or a miss.
    fn cache_result(&self, s: &Session<P>, ctx: &Ctx) -> Option<CacheResult> {
        (self.options.cache.is_some() && s.method == Method::Get).then(|| CacheResult::of(ctx.cache_hit))
    }
}

/// 413 for a declared or streamed body over `max`. A body without a length
/// is read (at most `max` bytes, so bounded) to find out.
fn limit_body<B: Body>(req: &mut Request<B>, max: u64) -> Result<(), ProxyError> {
    let too_large = || ProxyError::new(ErrorCode::BodyTooLarge, format!("request body exceeds {max} bytes"));
    if let Some(len) = req.header("content-length") {
        let len: u64 = len.trim().parse().map_err(|_| ProxyError::bad_request("invalid Content-Length"))?;
        return if len > max { Err(too_large()) } else { Ok(()) };
    }
    let Some(body) = req.body.take() else { return Ok(()) };
    match read_up_to(body, max) {
        Ok(ReadOutcome::Complete(bytes)) => {
            req.body = Some(B::from_bytes(bytes));
            Ok(())
        }
        Ok(ReadOutcome::TooLong(_)) => Err(too_large()),
        Err(e) => Err(ProxyError::bad_request(format!("request body could not be read: {e}"))),
    }
}
