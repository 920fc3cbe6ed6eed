//! hub-gateway: the edge front of a self-hosted Hugging Face compatible hub
//! (KohakuHub), what its Cloudflare Pages Functions should have been. The
//! backend's routes (`/api`, `/org`, `/admin/api`, git smart HTTP, Git LFS,
//! `resolve`) go to one configured backend; everything else is the web UI
//! ([`ui`]). Redirects are answered to the client, never followed; git and
//! LFS pass untouched apart from what git needs to authenticate; CORS is for
//! browsers only.

mod ui;

use serde::Deserialize;

use crate::platform::{Body, Headers, Platform, Request, Response, header};
use crate::proxy::cors::{CorsOptions, HUB_METADATA};
use crate::proxy::git::{self, GitRoute};
use crate::proxy::{ErrorCode, Method, Peer, ProxyApp, ProxyError, Session, check_base_url, headers, rate_limit};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The hub's API server; an internal address works. Unset: the
    /// platform's `API_BASE_URL`, as KohakuHub's Pages Functions read it.
    pub backend: Option<String>,
    /// Time to wait for the backend's response headers on API, `resolve`
    /// and LFS requests (504 after).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// The same for git smart HTTP: KohakuHub builds a whole pack before it
    /// answers.
    #[serde(default = "default_git_timeout_ms")]
    pub git_timeout_ms: u32,
    /// Request bodies declaring a larger `Content-Length` get 413.
    pub max_body_bytes: Option<u64>,
    /// `direct`: LFS object hrefs stay as the backend signed them (to the
    /// object store). `gateway`: hrefs on `object_store` come back through
    /// the gateway, under `/_objects/`.
    #[serde(default)]
    pub lfs_hrefs: LfsHrefs,
    /// The object store's public base URL (KohakuHub's S3 public endpoint);
    /// needed for `lfs_hrefs = "gateway"`.
    pub object_store: Option<String>,
    /// The realm of the `WWW-Authenticate: Basic` added to git 401s that lack
    /// one; empty: add none.
    #[serde(default = "default_realm")]
    pub auth_realm: String,
    /// On git and LFS routes, answer an anonymous 404 or 401 with a 401 and a
    /// Basic challenge (as GitHub does), so git offers credentials for a
    /// private repo.
    #[serde(default = "yes")]
    pub challenge_anonymous: bool,
    /// Pass git-lfs' `Basic user:token` to the backend's LFS routes as
    /// `Bearer token` (KohakuHub's LFS accepts only bearer tokens).
    #[serde(default = "yes")]
    pub lfs_basic_as_bearer: bool,
    /// The largest LFS batch response that is rewritten; larger ones pass unchanged.
    #[serde(default = "default_max_rewrite_bytes")]
    pub max_rewrite_bytes: u64,
    #[serde(default)]
    pub ui: ui::Options,
    pub cors: Option<CorsOptions>,
    pub rate_limit: Option<rate_limit::RateLimitOptions>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LfsHrefs {
    #[default]
    Direct,
    Gateway,
}

/// The rate limit's defaults: the policy (limiter) is `hub`; `requests` must be given.
const RATE_LIMIT: rate_limit::Defaults = rate_limit::Defaults { policy: "hub", requests: None };

fn default_timeout_ms() -> u32 {
    60_000
}
fn default_git_timeout_ms() -> u32 {
    600_000
}
fn default_realm() -> String {
    "Hub".into()
}
fn yes() -> bool {
    true
}
fn default_max_rewrite_bytes() -> u64 {
    4 * 1024 * 1024
}

/// `http(s)://host[:port][/path]`, no query: a base URL a request path is appended to.
impl Options {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(backend) = &self.backend {
            check_base_url("backend", backend)?;
        }
        if let Some(store) = &self.object_store {
            check_base_url("object_store", store)?;
        }
        if self.lfs_hrefs == LfsHrefs::Gateway && self.object_store.is_none() {
            return Err("lfs_hrefs = \"gateway\" needs object_store, the object store's public base URL".into());
        }
        if let Some(rl) = &self.rate_limit {
            rl.validate(&RATE_LIMIT)?;
        }
        self.ui.validate()?;
        self.cors.as_ref().map_or(Ok(()), CorsOptions::validate)
    }

    fn backend_base<P: Platform>(&self, p: &P) -> Result<String, ProxyError> {
        crate::proxy::base_url_or_setting(p, self.backend.as_deref(), "backend", "API_BASE_URL", |url| url)
    }

    fn object_store_base(&self) -> Option<&str> {
        self.object_store.as_deref().map(|s| s.trim_end_matches('/'))
    }
}


/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Destination {
    /// `/api`, `/org`, `/admin/api`: the hub's API.
    #[default]
    Api,
    /// A file download; the backend answers with a redirect to the object store.
    Resolve,
    Git(GitRoute),
    /// `/_objects/...`: an LFS object href brought back through the gateway.
    Objects,
    /// The web UI: this file from the frontend.
    Ui(ui::Page),
}

/// `/{models,datasets,spaces}/{ns}/{name}/resolve/...` or the legacy `/{ns}/{name}/resolve/...`.
fn is_resolve(path: &str) -> bool {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let typed = matches!(segments.first(), Some(&("models" | "datasets" | "spaces")));
    segments.len() > 3 && (segments[2] == "resolve" || (typed && segments.len() > 4 && segments[3] == "resolve"))
}

fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

fn destination(o: &Options, path: &str) -> Destination {
    if let Some(route) = GitRoute::of(path) {
        Destination::Git(route)
    } else if ["/api", "/org", "/admin/api"].iter().any(|p| under(path, p)) {
        Destination::Api
    } else if is_resolve(path) {
        Destination::Resolve
    } else if o.lfs_hrefs == LfsHrefs::Gateway && under(path, OBJECTS) {
        Destination::Objects
    } else {
        Destination::Ui(ui::Page::of(path))
    }
}

/// Where LFS object hrefs come back through the gateway.
const OBJECTS: &str = "/_objects";

pub struct HubGateway<'a> {
    pub options: &'a Options,
}

#[derive(Default, Clone)]
pub struct Ctx {
    destination: Destination,
    /// The client sent credentials (an anonymous 404 may become a challenge).
    credentialed: bool,
}

impl<P: Platform> ProxyApp<P> for HubGateway<'_> {
    type Ctx = Ctx;

    fn request_filter(&self, s: &Session<P>, ctx: &mut Ctx, req: &mut Request<P::Body>) -> Result<Option<Response<P::Body>>, ProxyError> {
        let o = self.options;
        if s.incoming.path == "/health" {
            return Ok(Some(self.health(s)));
        }
        if ui::is_upload(&s.incoming.path) {
            return o.ui.upload(s, req).map(Some);
        }
        ctx.destination = destination(o, &s.incoming.path);
        ctx.credentialed = header(&s.headers, "authorization").is_some();
        let browser_route = !matches!(ctx.destination, Destination::Git(_) | Destination::Objects);
        if let Some(cors) = o.cors.as_ref().filter(|_| browser_route) {
            if let Some(answer) = cors.preflight(&s.method, &s.headers) {
                return answer.map(Some);
            }
            if let Some(refusal) = cors.refuses(&s.method, &s.headers) {
                return Err(refusal);
            }
        }
        if let Some(rl) = &o.rate_limit {
            rl.policy(&RATE_LIMIT).check(s)?;
        }
        if let Some(max) = o.max_body_bytes
            && let Some(len) = req.header("content-length").and_then(|l| l.trim().parse::<u64>().ok())
            && len > max
        {
            return Err(ProxyError::new(ErrorCode::BodyTooLarge, format!("request body exceeds this gateway's limit of {max} bytes")));
        }
        if let Destination::Ui(page) = &ctx.destination {
            return o.ui.serve_local(s, page);
        }
        Ok(None)
    }

    fn upstream_peer(&self, s: &Session<P>, ctx: &mut Ctx) -> Result<Peer<'_>, ProxyError> {
        let o = self.options;
        let timeout_ms = Some(match ctx.destination {
            Destination::Git(route) if route != GitRoute::Lfs => o.git_timeout_ms,
            _ => o.timeout_ms,
        });
        Ok(match &ctx.destination {
            Destination::Ui(page) => {
                let frontend = o.ui.frontend_base().ok_or_else(|| ProxyError::internal("the web UI has no frontend to send to"))?;
                Peer { base: frontend.into(), path: page.file.clone(), credentials: false, timeout_ms }
            }
            Destination::Objects => {
                let store = o.object_store_base().ok_or_else(|| ProxyError::internal("gateway hrefs without an object_store"))?;
                Peer { base: store.into(), path: s.incoming.path_and_query()[OBJECTS.len()..].to_owned(), credentials: false, timeout_ms }
            }
            Destination::Git(_) | Destination::Api | Destination::Resolve => {
                Peer { base: o.backend_base(s.platform)?.into(), path: s.incoming.path_and_query(), credentials: true, timeout_ms }
            }
        })
    }

    fn upstream_request_filter(&self, _s: &Session<P>, ctx: &mut Ctx, out: &mut Headers) {
        match ctx.destination {
            Destination::Ui(_) => ui::for_frontend(out),
            Destination::Git(GitRoute::Lfs) if self.options.lfs_basic_as_bearer => git::basic_as_bearer(out),
            _ => {}
        }
    }

    fn upstream_response_filter(&self, s: &Session<P>, ctx: &mut Ctx, mut resp: Response<P::Body>) -> Result<Response<P::Body>, ProxyError> {
        let o = self.options;
        // The edge's CORS policy is the only one a browser sees.
        resp.headers.retain(|(n, _)| !n.starts_with("access-control-"));
        let public_base = format!("{}://{}", s.incoming.scheme, s.incoming.authority);
        match &ctx.destination {
            Destination::Git(route) => {
                if o.challenge_anonymous && !ctx.credentialed && matches!(resp.status, 401 | 404) {
                    return Err(self.challenge(*route));
                }
                if !o.auth_realm.is_empty() {
                    git::add_challenge(&mut resp, *route, &o.auth_realm);
                }
                git::finish_response(&mut resp);
                git::ensure_retry_after(&mut resp);
                if *route == GitRoute::Lfs && (200..300).contains(&resp.status) && is_lfs_json(&resp) {
                    resp = self.rewrite_lfs_batch(resp, &public_base, &o.backend_base(s.platform)?)?;
                }
            }
            Destination::Objects => {
                git::finish_response(&mut resp);
                git::ensure_retry_after(&mut resp);
            }
            Destination::Api | Destination::Resolve => headers::rewrite_location(&mut resp.headers, &o.backend_base(s.platform)?, &public_base),
            Destination::Ui(page) => return o.ui.finish_frontend_response(page, resp),
        }
        Ok(resp)
    }

    fn fail_to_proxy(&self, _s: &Session<P>, ctx: &mut Ctx, e: ProxyError) -> Response<P::Body> {
        match ctx.destination {
            Destination::Git(route) => git::error_response(route, e),
            _ => e.into_response(),
        }
    }

    fn response_filter(&self, s: &Session<P>, ctx: &mut Ctx, resp: &mut Response<P::Body>) {
        if matches!(ctx.destination, Destination::Git(_) | Destination::Objects) {
            git::finish_response(resp);
            return;
        }
        if let Some(cors) = &self.options.cors {
            cors.decorate(header(&s.headers, "origin"), HUB_METADATA, &mut resp.headers);
        }
    }
}

fn is_lfs_json<B>(resp: &Response<B>) -> bool {
    resp.header("content-type").is_some_and(|t| t.starts_with("application/vnd.git-lfs+json") || t.starts_with("application/json"))
}

impl HubGateway<'_> {
    /// A 401 that makes git (or git-lfs) ask its credential helper.
    fn challenge(&self, route: GitRoute) -> ProxyError {
        let realm = if self.options.auth_realm.is_empty() { "Hub" } else { &self.options.auth_realm };
        let name = if route == GitRoute::Lfs { "lfs-authenticate" } else { "www-authenticate" };
        ProxyError::new(ErrorCode::AuthenticationRequired, "authentication required: this repository may be private, or the action needs a token")
            .with_header(name, git::basic_challenge(realm))
    }

    /// Batch hrefs on the backend come back to the public address; on the
    /// object store, through `/_objects/` when so configured.
    fn rewrite_lfs_batch<B: Body>(&self, resp: Response<B>, public_base: &str, backend: &str) -> Result<Response<B>, ProxyError> {
        let o = self.options;
        let store = o.object_store_base().filter(|_| o.lfs_hrefs == LfsHrefs::Gateway);
        let public = |url: &str| -> Option<String> {
            let on = |base: &str| url.strip_prefix(base).filter(|rest| rest.is_empty() || rest.starts_with(['/', '?']));
            if let Some(rest) = store.and_then(on) {
                return Some(format!("{public_base}{OBJECTS}{rest}"));
            }
            on(backend).map(|rest| format!("{public_base}{rest}"))
        };
        crate::proxy::rewrite_body(resp, o.max_rewrite_bytes, |bytes| {
            let mut json = serde_json::from_slice::<serde_json::Value>(bytes).ok()?;
            git::rewrite_lfs_batch(&mut json, &public);
            serde_json::to_vec(&json).ok()
        })
    }

    /// `/health`: this gateway is up, and so is the backend (its own `/health`).
    fn health<P: Platform>(&self, s: &Session<P>) -> Response<P::Body> {
        let base = match self.options.backend_base(s.platform) {
            Ok(base) => base,
            Err(e) => return e.into_response(),
        };
        let probe = Request { method: "GET".into(), url: format!("{base}/health"), headers: Vec::new(), body: None };
        let backend = match s.platform.send(probe, Some(self.options.timeout_ms.min(10_000))) {
            Ok(r) if (200..300).contains(&r.status) => Ok(()),
            Ok(r) => Err(format!("the backend's /health answered {}", r.status)),
            Err(e) => Err(ProxyError::upstream(&e).message),
        };
        match backend {
            Ok(()) => {
                let body = br#"{"status":"ok","backend":"ok"}"#.to_vec();
                let headers = vec![("content-type".into(), "application/json".into()), ("cache-control".into(), "no-store".into()), ("content-length".into(), body.len().to_string())];
                Response { status: 200, headers, body: (s.method != Method::Head).then(|| P::Body::from_bytes(body)) }
            }
            Err(why) => ProxyError::new(ErrorCode::BackendUnhealthy, why).into_response(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the platform's static files (static-site's routes) and the
    /// gateway's own routing agree: a path is the web UI's in both or in neither.
    #[test]
    fn the_gateways_own_routes_are_those_the_platforms_static_files_leave_to_it() {
        let o = options("lfs_hrefs = \"gateway\"\nobject_store = \"http://s3.internal:9000/hub\"");
        let gateway = ["/api/whoami-v2", "/api", "/org/acme/members", "/admin/api/stats", "/alice/m.git/info/refs", "/alice/m.git/info/lfs/objects/batch", "/alice/m/resolve/main/w.bin", "/models/alice/m/resolve/main/w.bin", "/_objects/hub/lfs/ab"];
        let web_ui = ["/", "/alice/m", "/models/alice/m", "/assets/index-3f9a2c1b.js", "/settings", "/alice/m/blob/main/README.md", "/alice/m/tree/main/dir"];
        for path in gateway {
            assert!(!matches!(destination(&o, path), Destination::Ui(_)) && edgeproxy_static_site::is_hub_gateway_route(path), "{path}: the gateway's");
        }
        for path in web_ui {
            assert!(matches!(destination(&o, path), Destination::Ui(_)) && !edgeproxy_static_site::is_hub_gateway_route(path), "{path}: the web UI's");
        }
    }

    fn options(extra: &str) -> Options {
        let o: Options = toml::from_str(&format!("backend = \"http://10.0.0.5:48888\"\n{extra}")).unwrap();
        o.validate().unwrap();
        o
    }

    #[test]
    fn routes_follow_kohakuhubs_pages_functions_plus_admin_api() {
        let o = options("lfs_hrefs = \"gateway\"\nobject_store = \"http://s3:9000\"");
        assert_eq!(destination(&o, "/api/models/alice/m"), Destination::Api);
        assert_eq!(destination(&o, "/org/acme/members"), Destination::Api);
        assert_eq!(destination(&o, "/admin/api/users"), Destination::Api);
        assert_eq!(destination(&o, "/models/alice/m/resolve/main/w.bin"), Destination::Resolve);
        assert_eq!(destination(&o, "/datasets/alice/d/resolve/main/x.csv"), Destination::Resolve);
        assert_eq!(destination(&o, "/alice/m/resolve/main/w.bin"), Destination::Resolve);
        assert_eq!(destination(&o, "/alice/m.git/info/refs"), Destination::Git(GitRoute::InfoRefs));
        assert_eq!(destination(&o, "/alice/m.git/info/lfs/objects/batch"), Destination::Git(GitRoute::Lfs));
        assert_eq!(destination(&o, "/_objects/hub/lfs/ab"), Destination::Objects);
        assert!(matches!(destination(&o, "/models/alice/m"), Destination::Ui(_)));
        assert!(matches!(destination(&o, "/apis"), Destination::Ui(_)));
        assert!(matches!(destination(&options(""), "/_objects/x"), Destination::Ui(_)), "only with gateway hrefs");
    }

    #[test]
    fn gateway_hrefs_need_the_object_store() {
        let o: Options = toml::from_str("backend = \"http://b\"\nlfs_hrefs = \"gateway\"").unwrap();
        assert!(o.validate().unwrap_err().contains("object_store"));
        let o: Options = toml::from_str("backend = \"ftp://b\"").unwrap();
        assert!(o.validate().is_err());
    }
}
