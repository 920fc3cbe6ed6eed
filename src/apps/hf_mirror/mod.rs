//! hf-mirror: a Hugging Face mirror that `huggingface_hub`, `hf_xet`, `git`
//! and `git-lfs` can use as their endpoint (`HF_ENDPOINT`). The hub and
//! every CDN and Xet host it redirects to are served through the mirror, in
//! the addressing scheme the client came in on ([`hosts`]); URLs in headers
//! and JSON are rewritten to lead back through it ([`rewrite`]).

pub(crate) mod hosts;
mod keeping;
pub(crate) mod policy;
pub(crate) mod rewrite;
pub(crate) mod store;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Deserialize;

use crate::platform::{Headers, Platform, Request, Response, header};
use store::{Kept, LinkedFile, StoreOptions};
use crate::proxy::cors::{CorsOptions, HUB_METADATA};
use crate::proxy::git::{self, GitRoute};
use crate::proxy::cache::{CacheResult, Lookup};
use crate::proxy::{ErrorCode, Method, Peer, ProxyApp, ProxyError, Session, cache, check_base_url, headers, rate_limit};
use hosts::{AllowList, HUB_HOSTS, Public, Upstream};
use rewrite::Document;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The hub's base URL: huggingface.co, or an internal mirror of it.
    #[serde(default = "default_hub")]
    pub hub: String,
    /// Base URLs for upstream hosts not reached at `https://<host>` (an
    /// internal CDN mirror; a local server in tests). Keys are host names
    /// from the allow-list.
    #[serde(default)]
    pub origins: BTreeMap<String, String>,
    /// Upstream hosts besides the hub: names and `*.suffix` patterns.
    #[serde(default = "default_cdn_hosts")]
    pub cdn_hosts: Vec<String>,
    /// More hosts, added to `cdn_hosts`.
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    /// Hosts besides the hub that get the client's `Authorization` and
    /// `Cookie`: the Xet CAS servers, which take the Xet token. Every other
    /// host is a presigned CDN and gets no credentials.
    #[serde(default = "default_credential_hosts")]
    pub credential_hosts: Vec<String>,
    /// `false`: hide Xet from clients (no `X-Xet-*` headers, no Xet links,
    /// no `xetHash` in listings), so they download over plain HTTP.
    #[serde(default = "yes")]
    pub xet: bool,
    /// Time to wait for upstream response headers (504 after).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// The largest JSON document (listing, reconstruction, LFS batch) that is
    /// rewritten; a larger one passes unchanged.
    #[serde(default = "default_max_rewrite_bytes")]
    pub max_rewrite_bytes: u64,
    pub cors: Option<CorsOptions>,
    pub rate_limit: Option<rate_limit::RateLimitOptions>,
    pub cache: Option<CacheOptions>,
    /// Keeps the hub's answers and files in the host's blob store ([`store`]).
    pub store: Option<StoreOptions>,
    /// The repos the mirror serves ([`policy`]); every repo if absent.
    pub repos: Option<policy::RepoRules>,
    /// Built by [`Options::checked`] at set-up, not per request.
    #[serde(skip)]
    derived: Derived,
}

/// What serving reads, derived once from the options as written.
#[derive(Debug, Default)]
struct Derived {
    /// `cdn_hosts` and `extra_hosts`.
    allowed_hosts: Vec<String>,
    /// The hub and each configured origin with its base URL (no trailing
    /// `/`), the longest base first: what [`Options::locate`] tries.
    bases: Vec<(Upstream, String)>,
}

/// Off unless the table is present; the defaults leave room for
/// `snapshot_download` of a repo with thousands of files (a HEAD and a GET
/// per file, eight at a time) while stopping floods.
const RATE_LIMIT: rate_limit::Defaults = rate_limit::Defaults { policy: "hf", requests: Some(20_000) };

/// Caches metadata that cannot change: repo info and listings at a commit
/// hash, for clients without credentials.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheOptions {
    #[serde(default = "default_cache_ttl")]
    pub ttl_seconds: u32,
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
}

fn default_hub() -> String {
    "https://huggingface.co".into()
}
fn default_cdn_hosts() -> Vec<String> {
    // *.hf.co: the LFS, Xet and regional CDN hosts (they change; meta.json
    // lists them); the rest: the legacy LFS CDN.
    ["*.hf.co", "cdn-lfs.huggingface.co", "cdn-lfs-us-1.huggingface.co", "cdn-lfs-eu-1.huggingface.co"].map(String::from).to_vec()
}
fn default_credential_hosts() -> Vec<String> {
    ["cas-server.xethub.hf.co", "cas.xethub.hf.co"].map(String::from).to_vec()
}
fn yes() -> bool {
    true
}
fn default_timeout_ms() -> u32 {
    60_000
}
fn default_max_rewrite_bytes() -> u64 {
    16 * 1024 * 1024
}
fn default_cache_ttl() -> u32 {
    86_400
}
fn default_max_entry_bytes() -> u64 {
    4 * 1024 * 1024
}


impl Options {
    fn validate(&self) -> Result<(), String> {
        check_base_url("hub", &self.hub)?;
        for (host, origin) in &self.origins {
            if !HUB_HOSTS.contains(&host.as_str()) && !self.allows(host) {
                return Err(format!("origins: {host} is not an allowed upstream host; add it to extra_hosts"));
            }
            check_base_url(&format!("origins.{host}"), origin)?;
        }
        if let Some(bad) = self.cdn_hosts.iter().chain(&self.extra_hosts).find(|h| !valid_host_pattern(h)) {
            return Err(format!("{bad:?} is not a host name or *.suffix pattern"));
        }
        if let Some(rl) = &self.rate_limit {
            rl.validate(&RATE_LIMIT)?;
        }
        for rules in self.repos.iter().chain(self.store.iter().filter_map(|st| st.repos.as_ref())) {
            rules.validate()?;
        }
        self.cors.as_ref().map_or(Ok(()), CorsOptions::validate)
    }

    /// The options, checked, with what serving reads derived once.
    pub fn checked(mut self) -> Result<Options, String> {
        self.derived.allowed_hosts = self.cdn_hosts.iter().chain(&self.extra_hosts).cloned().collect();
        self.validate()?;
        let mut bases = vec![(Upstream::Hub, self.hub.trim_end_matches('/').to_owned())];
        bases.extend(self.origins.iter().map(|(host, origin)| (Upstream::Host(host.clone()), origin.trim_end_matches('/').to_owned())));
        bases.sort_by_key(|(_, base)| std::cmp::Reverse(base.len()));
        self.derived.bases = bases;
        Ok(self)
    }

    fn allow_list(&self) -> AllowList<'_> {
        AllowList(&self.derived.allowed_hosts)
    }

    fn allows(&self, host: &str) -> bool {
        self.allow_list().allows(host)
    }

    /// The base URL (no trailing `/`) requests for `upstream` go to.
    fn upstream_base(&self, upstream: &Upstream) -> Cow<'_, str> {
        match self.derived.bases.iter().find(|(configured, _)| configured == upstream) {
            Some((_, base)) => Cow::Borrowed(base),
            None => match upstream {
                Upstream::Hub => Cow::Borrowed(self.hub.trim_end_matches('/')),
                Upstream::Host(host) => Cow::Owned(format!("https://{host}")),
            },
        }
    }

    /// The upstream an absolute URL points at, and its path and query:
    /// first by configured base URL, then by host name.
    fn locate(&self, url: &str) -> Option<(Upstream, String)> {
        for (upstream, base) in &self.derived.bases {
            if let Some(rest) = url.strip_prefix(base.as_str())
                && (rest.is_empty() || rest.starts_with(['/', '?']))
            {
                return Some((upstream.clone(), rest.to_owned()));
            }
        }
        let parsed = crate::proxy::parse_url(url).ok()?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.port().is_some() {
            return None;
        }
        let host = parsed.host_str()?.to_ascii_lowercase();
        let upstream = if HUB_HOSTS.contains(&host.as_str()) {
            Upstream::Hub
        } else if self.allows(&host) {
            Upstream::Host(host)
        } else {
            return None;
        };
        let rest = &url[parsed[..url::Position::BeforePath].len()..];
        Some((upstream, rest.to_owned()))
    }

    fn sends_credentials(&self, upstream: &Upstream) -> bool {
        match upstream {
            Upstream::Hub => true,
            Upstream::Host(host) => self.credential_hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
        }
    }
}

fn valid_host_pattern(pattern: &str) -> bool {
    crate::proxy::is_host_pattern(pattern) && pattern.contains('.')
}

pub struct HfMirror<'a> {
    pub options: &'a Options,
    /// Distinguishes routes in the shared cache.
    pub route_index: usize,
}

#[derive(Default, Clone)]
pub struct Ctx {
    /// Set once the request is routed.
    target: Option<Target>,
    cache_key: Option<String>,
    cache_hit: bool,
    /// A request whose answer the store keeps.
    keeping: Option<Keeping>,
    /// What the store did for it.
    kept_result: Option<CacheResult>,
    /// A git or LFS request: no CORS, never cached.
    git: Option<GitRoute>,
}

impl Ctx {
    /// Where request_filter routed the request; the phases after it run only
    /// on a routed request, so an error here is the runner's bug, answered.
    fn routed(&self) -> Result<&Target, ProxyError> {
        self.target.as_ref().ok_or_else(|| ProxyError::internal("hf-mirror: a phase ran before the request was routed"))
    }
}

/// A request to the hub whose answer is kept ([`store`]), and what is kept for it now.
#[derive(Clone)]
struct Keeping {
    key: String,
    kept: Option<Kept>,
    /// Whether the hub's answer is kept: for requests without credentials,
    /// of repos the store's rules admit (any request may be given a kept
    /// answer, which was the hub's to anyone).
    keep: bool,
    /// The kept answer's ETag, sent as `If-None-Match` when a kept answer
    /// at a branch is asked about again: a `304` makes it stand again.
    revalidating: Option<String>,
}

#[derive(Clone)]
struct Target {
    public: Public,
    upstream: Upstream,
    /// Path and query on the upstream.
    path: String,
    document: Document,
}

/// Headers whose value is an absolute URL to be rewritten.
const URL_HEADERS: &[&str] = &["location", "content-location", "x-xet-cas-url", "x-xet-refresh-route"];

impl<P: Platform> ProxyApp<P> for HfMirror<'_> {
    type Ctx = Ctx;

    fn request_filter(&self, s: &Session<P>, ctx: &mut Ctx, _req: &mut Request<P::Body>) -> Result<Option<Response<P::Body>>, ProxyError> {
        let o = self.options;
        let (public, upstream, path) = hosts::route(&s.incoming.scheme, &s.incoming.authority, &s.incoming.path, &o.allow_list())
            .map_err(|host| ProxyError::new(ErrorCode::UpstreamNotAllowed, format!("this mirror does not reach {host}; it serves the hub and its CDN hosts only")))?;
        let path = match &s.incoming.query {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let document = document_for(&s.method, &upstream, &path, o.xet);
        let is_home = upstream == Upstream::Hub && path == "/" && s.method.reads();
        let home = is_home.then(|| home_page(&public));
        ctx.git = GitRoute::of(&s.incoming.path).filter(|_| upstream == Upstream::Hub);
        let immutable_metadata = upstream == Upstream::Hub && is_immutable_metadata(&path);
        ctx.target = Some(Target { public, upstream, path, document });
        if let Some(cors) = &o.cors
            && let Some(answer) = cors.preflight(&s.method, &s.headers)
        {
            return answer.map(Some);
        }
        if let Some(page) = home {
            return Ok(Some(crate::proxy::page(&s.method, page)));
        }
        if let Some(rl) = &o.rate_limit {
            rl.policy(&RATE_LIMIT).check(s)?;
        }
        if let Some(rules) = &o.repos
            && let Some(repo) = self.repo(ctx)
            && !rules.admits(&repo)
        {
            return Err(ProxyError::new(ErrorCode::RepoNotAllowed, format!("this mirror does not serve {repo}")));
        }
        if let Some(store) = &o.store
            && let Some(answer) = self.answer_from_store(s, ctx, store)?
        {
            return Ok(Some(answer));
        }
        if o.cache.is_some() && immutable_metadata && cache::may_lookup(&s.method, &s.headers) && !has_credentials(&s.headers) {
            match cache::look_up(s, "hf-mirror", self.route_index) {
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

    fn upstream_peer(&self, _s: &Session<P>, ctx: &mut Ctx) -> Result<Peer<'_>, ProxyError> {
        let o = self.options;
        let target = ctx.routed()?;
        Ok(Peer {
            base: o.upstream_base(&target.upstream),
            path: target.path.clone(),
            // The user's HF token never leaves for a third party (a CDN's
            // presigned URL carries its own authorisation).
            credentials: o.sends_credentials(&target.upstream),
            timeout_ms: Some(o.timeout_ms),
        })
    }

    fn upstream_request_filter(&self, s: &Session<P>, ctx: &mut Ctx, out: &mut Headers) {
        let Some(target) = &ctx.target else { return };
        if s.method == Method::Head || target.document != Document::None || is_resolve(&target.path) || ctx.keeping.is_some() {
            // Lengths and hashes must be the file's own, JSON must be
            // readable to be rewritten, and what is kept must suit any client.
            headers::set(out, "accept-encoding", "identity");
        }
        if let Some(etag) = ctx.keeping.as_ref().and_then(|k| k.revalidating.as_ref()) {
            headers::set(out, "if-none-match", etag);
        }
    }

    fn upstream_response_filter(&self, s: &Session<P>, ctx: &mut Ctx, resp: Response<P::Body>) -> Result<Response<P::Body>, ProxyError> {
        if let Some(keeping) = ctx.keeping.clone() {
            if resp.status >= 500
                && let Some(stale) = self.answer_kept(s, ctx, CacheResult::Stale)
            {
                return stale;
            }
            if resp.status == 304
                && keeping.revalidating.is_some()
                && let (Some(kept), Some(keeping)) = (&keeping.kept, ctx.keeping.as_mut())
            {
                keeping.kept = Some(store::freshen(s.platform, &keeping.key, kept, &resp.headers));
                if let Some(answer) = self.answer_kept(s, ctx, CacheResult::Hit) {
                    return answer;
                }
            }
            if !keeping.keep {
                return self.finish(s, ctx, resp);
            }
            let cap = self.options.store.as_ref().and_then(|store| store.max_bytes);
            let resp = store::keep(s.platform, &keeping.key, &s.method, resp, keeping.kept.as_ref(), cap);
            ctx.kept_result = Some(CacheResult::Miss);
            return self.finish(s, ctx, resp);
        }
        self.finish(s, ctx, resp)
    }

    fn fail_to_proxy(&self, s: &Session<P>, ctx: &mut Ctx, e: ProxyError) -> Response<P::Body> {
        // The hub unreachable or too slow: what is kept stands in for it.
        if matches!(e.code, ErrorCode::BadGateway | ErrorCode::GatewayTimeout)
            && let Some(Ok(stale)) = self.answer_kept(s, ctx, CacheResult::Stale)
        {
            return stale;
        }
        match ctx.git {
            Some(route) => git::error_response(route, e),
            None => e.into_response(),
        }
    }

    fn response_filter(&self, s: &Session<P>, ctx: &mut Ctx, resp: &mut Response<P::Body>) {
        if let Some(cors) = self.options.cors.as_ref().filter(|_| ctx.git.is_none()) {
            cors.decorate(header(&s.headers, "origin"), HUB_METADATA, &mut resp.headers);
        }
    }

    /// A request the cache looked up is a hit or a miss; one the store
    /// answered or kept, what the store did.
    fn cache_result(&self, _s: &Session<P>, ctx: &Ctx) -> Option<CacheResult> {
        ctx.kept_result.or_else(|| (ctx.cache_key.is_some() || ctx.cache_hit).then(|| CacheResult::of(ctx.cache_hit)))
    }
}

impl HfMirror<'_> {
    /// An upstream's answer (or one the store kept) made the client's: a
    /// file the hub redirects to fetched and kept, URLs rewritten to lead
    /// back through the mirror, JSON documents rewritten, metadata cached.
    fn finish<P: Platform>(&self, s: &Session<P>, ctx: &mut Ctx, mut resp: Response<P::Body>) -> Result<Response<P::Body>, ProxyError> {
        let o = self.options;
        let target = ctx.routed()?;
        if let Some(store) = &o.store
            && s.method == Method::Get
            && let Some(file) = LinkedFile::of(&resp)
            && let Some((answer, result)) = self.file_answer(s, store, &file, &resp, &target.path)?
        {
            // The file's part is what the client sees, unless the hub's answer was stale.
            if ctx.kept_result != Some(CacheResult::Stale) {
                ctx.kept_result = Some(result);
            }
            return Ok(answer);
        }
        if let Some(cors) = &o.cors {
            cors.strip_upstream(&mut resp.headers);
        }
        if ctx.git.is_some() {
            git::finish_response(&mut resp);
            git::ensure_retry_after(&mut resp);
        }
        if s.method == Method::Head && self.answers_head_with_metadata(target, &resp) {
            metadata_answer(&mut resp);
        }
        let public = |url: &str| self.public_url(&target.public, url);
        self.rewrite_headers(target, &mut resp.headers, &public);
        let identity = header(&resp.headers, "content-encoding").is_none_or(|e| e.eq_ignore_ascii_case("identity"));
        // What the store notes from an answer, only from a live one.
        let live = !matches!(ctx.kept_result, Some(CacheResult::Hit | CacheResult::Stale));
        if target.document != Document::None && (200..300).contains(&resp.status) && identity {
            resp = crate::proxy::rewrite_body(resp, o.max_rewrite_bytes, |bytes| {
                match (target.document, &o.store) {
                    (Document::LfsBatch, Some(store)) if live => self.note_lfs_downloads(s, store, &target.path, bytes),
                    (Document::XetToken, Some(store)) if live => self.note_private_xet_token(s, store, &target.path, bytes),
                    (Document::Reconstruction, Some(_)) if live => self.note_private_xorbs(s, bytes),
                    _ => {}
                }
                target.document.rewrite(bytes, &public)
            })?;
        }
        if let (Some(key), Some(cache)) = (&ctx.cache_key, &o.cache)
            && resp.status == 200
            && cache::freshness(&s.method, &s.headers, &with_max_age(&resp, cache.ttl_seconds)).is_some()
        {
            return cache::store(s.platform, key, &s.headers, resp, u64::from(cache.ttl_seconds), cache.max_entry_bytes);
        }
        Ok(resp)
    }

    /// The public form of an upstream URL, if the mirror serves it.
    fn public_url(&self, public: &Public, url: &str) -> Option<String> {
        let (upstream, rest) = self.options.locate(url)?;
        Some(format!("{}{rest}", public.base(&upstream)))
    }

    /// Whether a HEAD's redirect to a CDN host is answered with the `200`
    /// it describes ([`metadata_answer`]): for a client of the single-host
    /// scheme, because huggingface_hub (1.3x) follows a HEAD's redirects
    /// that stay on the endpoint's host name, whatever the port or path
    /// (`utils/_http.py` `_httpx_follow_hub_redirects_with_backoff`), and
    /// then reads the file's metadata off the CDN's answer, which has none;
    /// and with a store, so that the client's GET comes to `resolve`, where
    /// the file is kept, and not to the CDN.
    fn answers_head_with_metadata<B>(&self, target: &Target, resp: &Response<B>) -> bool {
        let to_cdn = resp.header("location").and_then(|l| self.options.locate(l)).is_some_and(|(up, _)| up != Upstream::Hub);
        (target.public.scheme == hosts::Scheme::PathPrefix || self.options.store.is_some())
            && target.upstream == Upstream::Hub
            && (300..400).contains(&resp.status)
            && to_cdn
            && resp.header("x-linked-size").is_some()
    }


    fn rewrite_headers(&self, target: &Target, out: &mut crate::platform::Headers, public: &dyn Fn(&str) -> Option<String>) {
        let xet = self.options.xet;
        for (name, value) in out.iter_mut() {
            if URL_HEADERS.contains(&name.as_str()) {
                if let Some(new) = public(value) {
                    *value = new;
                } else if name == "location" && value.starts_with('/') && !value.starts_with("//") {
                    // Relative to a CDN host reached by path prefix: keep it under the prefix.
                    *value = format!("{}{value}", target.public.path_prefix(&target.upstream));
                }
            }
        }
        let mut links = Vec::new();
        out.retain(|(name, value)| {
            if name == "link" {
                links.extend(rewrite::link(value, public, !xet));
                return false;
            }
            xet || !name.starts_with("x-xet-")
        });
        out.extend(links.into_iter().map(|l| ("link".into(), l)));
    }
}

/// The JSON document a request's response carries, if it has URLs to rewrite.
fn document_for(method: &Method, upstream: &Upstream, path: &str, xet: bool) -> Document {
    let path = path.split('?').next().unwrap_or_default();
    match upstream {
        Upstream::Hub if path.starts_with("/api/") && (path.contains("/xet-read-token/") || path.contains("/xet-write-token/")) => Document::XetToken,
        Upstream::Hub if *method == Method::Post && path.ends_with("/info/lfs/objects/batch") => Document::LfsBatch,
        Upstream::Hub if !xet && path.starts_with("/api/") && (path.contains("/tree/") || path.contains("/paths-info/")) => Document::ListingWithoutXet,
        Upstream::Host(_) if path.starts_with("/v1/reconstructions/") || path.starts_with("/v2/reconstructions/") => Document::Reconstruction,
        _ => Document::None,
    }
}

fn is_resolve(path: &str) -> bool {
    path.contains("/resolve/") || path.starts_with("/api/resolve-cache/")
}

fn has_credentials(request: &crate::platform::Headers) -> bool {
    header(request, "authorization").is_some() || header(request, "cookie").is_some()
}

/// `/api/{models,datasets,spaces}/.../{revision,tree,paths-info}/<40-hex>...`:
/// what a commit hash names never changes.
fn is_immutable_metadata(path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').collect();
    let typed = segments.get(1) == Some(&"api") && matches!(segments.get(2), Some(&("models" | "datasets" | "spaces")));
    typed
        && segments
            .windows(2)
            .skip(3)
            .any(|w| matches!(w[0], "revision" | "tree") && store::is_commit(w[1]))
}

/// The response as the shared cache should judge it: our TTL, the upstream's
/// own refusals (`no-store`, `private`, `Set-Cookie`) still apply.
fn with_max_age<B>(resp: &Response<B>, ttl: u32) -> Response<B> {
    let mut headers: crate::platform::Headers = resp.headers.iter().filter(|(n, _)| n != "cache-control").cloned().collect();
    let cc = cache::CacheControl::parse(&resp.headers);
    let refused = ["no-store", "private", "no-cache"].iter().any(|d| cc.has(d));
    headers.push(("cache-control".into(), if refused { "no-store".into() } else { format!("max-age={ttl}") }));
    Response { status: resp.status, headers, body: None }
}

/// Turns a HEAD's redirect into the `200` the redirect describes: the same
/// `X-Repo-Commit`, `X-Linked-*` and `ETag`, the file's size as
/// `Content-Length`, no `Location`. The client then GETs the `/resolve` URL
/// itself, and that GET is redirected to the CDN as usual.
fn metadata_answer<B>(resp: &mut Response<B>) {
    let size = resp.header("x-linked-size").unwrap_or_default().to_owned();
    resp.status = 200;
    resp.headers.retain(|(n, _)| n != "location");
    headers::set(&mut resp.headers, "content-length", size);
    resp.body = None;
}

/// The home page: how to use this mirror, with its own addresses filled in.
fn home_page(public: &Public) -> String {
    let hub = public.base(&Upstream::Hub);
    let cdn = public.base(&Upstream::Host("cas-bridge.xethub.hf.co".into()));
    include_str!("home.html").replace("{hub}", &hub).replace("{cdn}", &cdn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(extra: &str) -> Options {
        toml::from_str::<Options>(extra).unwrap().checked().unwrap()
    }

    #[test]
    fn upstream_urls_are_located_by_configured_base_first_then_by_host() {
        let o = options("hub = \"http://127.0.0.1:9000\"\n[origins]\n\"cdn-lfs.hf.co\" = \"http://127.0.0.1:9001/cdn-lfs.hf.co\"\n");
        assert_eq!(o.locate("http://127.0.0.1:9000/api/x?y=1"), Some((Upstream::Hub, "/api/x?y=1".into())));
        assert_eq!(o.locate("http://127.0.0.1:9001/cdn-lfs.hf.co/repos/a?sig=1"), Some((Upstream::Host("cdn-lfs.hf.co".into()), "/repos/a?sig=1".into())));
        assert_eq!(o.locate("https://huggingface.co/api/models/a/tree/main?cursor=x"), Some((Upstream::Hub, "/api/models/a/tree/main?cursor=x".into())));
        assert_eq!(o.locate("https://cas-bridge.xethub.hf.co/xet-bridge-us/a"), Some((Upstream::Host("cas-bridge.xethub.hf.co".into()), "/xet-bridge-us/a".into())));
        assert_eq!(o.locate("http://cdn-lfs.huggingface.co"), Some((Upstream::Host("cdn-lfs.huggingface.co".into()), String::new())));
        assert_eq!(o.locate("https://evil.example/x"), None);
        assert_eq!(o.locate("https://cdn-lfs.hf.co:8443/x"), None, "a port is not the real host");
        assert_eq!(o.locate("/api/resolve-cache/x"), None);
    }

    #[test]
    fn origins_must_name_allowed_hosts() {
        let o: Options = toml::from_str("[origins]\n\"evil.example\" = \"http://127.0.0.1:1\"\n").unwrap();
        assert!(o.checked().unwrap_err().contains("extra_hosts"));
        let o: Options = toml::from_str("extra_hosts = [\"evil.example\"]\n[origins]\n\"evil.example\" = \"http://127.0.0.1:1\"\n").unwrap();
        assert!(o.checked().is_ok());
    }

    #[test]
    fn only_the_hub_and_cas_servers_get_credentials() {
        let o = options("");
        assert!(o.sends_credentials(&Upstream::Hub));
        assert!(o.sends_credentials(&Upstream::Host("cas-server.xethub.hf.co".into())));
        assert!(!o.sends_credentials(&Upstream::Host("cdn-lfs.hf.co".into())));
        assert!(!o.sends_credentials(&Upstream::Host("cas-bridge.xethub.hf.co".into())));
    }

    #[test]
    fn metadata_at_a_commit_hash_is_immutable() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert!(is_immutable_metadata(&format!("/api/models/org/repo/revision/{sha}")));
        assert!(is_immutable_metadata(&format!("/api/datasets/org/d/tree/{sha}/sub?recursive=True")));
        assert!(is_immutable_metadata(&format!("/api/models/gpt2/tree/{sha}")));
        assert!(!is_immutable_metadata("/api/models/org/repo/revision/main"));
        assert!(!is_immutable_metadata(&format!("/org/repo/resolve/{sha}/x")));
    }

    #[test]
    fn json_documents_are_recognised_by_path() {
        let hub = Upstream::Hub;
        assert_eq!(document_for(&Method::parse("GET"), &hub, "/api/models/a/b/xet-read-token/main", true), Document::XetToken);
        assert_eq!(document_for(&Method::parse("POST"), &hub, "/a/b.git/info/lfs/objects/batch", true), Document::LfsBatch);
        assert_eq!(document_for(&Method::parse("GET"), &hub, "/api/models/a/b/tree/main?recursive=1", false), Document::ListingWithoutXet);
        assert_eq!(document_for(&Method::parse("GET"), &hub, "/api/models/a/b/tree/main", true), Document::None);
        assert_eq!(document_for(&Method::parse("GET"), &Upstream::Host("cas-server.xethub.hf.co".into()), "/v2/reconstructions/h", true), Document::Reconstruction);
    }
}
