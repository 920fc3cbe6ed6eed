//! edgeproxy's core: four edge proxies behind one handler, written against
//! the small platform of `wit/edgeproxy.wit`. See ARCHITECTURE.md.
//!
//! [`handle`] is the whole entry point: load the config document, check the
//! URL, pick the route, run its app's phases.

pub mod apps;
pub mod config;
pub mod platform;
pub mod proxy;
pub mod setup;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;

#[cfg(target_family = "wasm")]
mod arena;
#[cfg(target_family = "wasm")]
mod guest;

use apps::api_gateway::ApiGateway;
use apps::hf_mirror::HfMirror;
use apps::hub_gateway::HubGateway;
use apps::image_cache::ImageCache;
use config::{App, DOCUMENT_KEY, DOCUMENT_VERSION_KEY, Document};
use platform::{Platform, Request, Response};
use proxy::cache::CacheResult;
use proxy::phases::{self, Begun};
use proxy::{ErrorCode, Incoming, ProxyError, Session};

/// Answers one client request. Never panics on bad input: every failure is
/// a JSON error response.
pub fn handle<P: Platform>(platform: &P, request: Request<P::Body>, client_ip: Option<&str>) -> Response<P::Body> {
    match begin(platform, request, client_ip) {
        Begun::Answered(resp) => resp,
        Begun::Sending { request, timeout_ms, rest } => rest.resume(platform.send(request, timeout_ms)),
        Begun::Whole(serve) => serve(),
    }
}

/// [`handle`] up to the upstream request, for a host that sends it itself
/// (`stepwise` in the WIT).
pub fn begin<'a, P: Platform>(platform: &'a P, request: Request<P::Body>, client_ip: Option<&str>) -> Begun<'a, P> {
    match serve(platform, request, client_ip) {
        Ok(begun) => begun,
        Err(e) => {
            platform.answered(Some(e.code.as_str()), None);
            Begun::Answered(e.into_response())
        }
    }
}

fn serve<'a, P: Platform>(platform: &'a P, request: Request<P::Body>, client_ip: Option<&str>) -> Result<Begun<'a, P>, ProxyError> {
    proxy::refuse_unservable_method(&request.method)?;
    let document = set_up(platform)?;
    let incoming = Incoming::parse(&request.url)?;
    let (route_index, route) = document
        .route(&incoming.authority, &incoming.path)
        .ok_or_else(|| ProxyError::not_found(format!("no route serves host {} and path {}", incoming.authority, incoming.path)))?;
    platform.routed(route_index as u32 + 1, route.app.name());
    let session = Session { platform, incoming, method: proxy::Method::parse(&request.method), headers: request.headers.clone(), client_ip: client_ip.map(str::to_owned) };
    Ok(match &route.app {
        App::ApiGateway(options) => phases::begin(ApiGateway { options, route_index }, session, request),
        App::HfMirror(options) => phases::begin(HfMirror { options, route_index }, session, request),
        App::HubGateway(options) => phases::begin(HubGateway { options }, session, request),
        // An origin, not a proxy: it answers every request itself.
        App::ImageCache(options) => Begun::Whole(Box::new(move || {
            let served = ImageCache { options, prefix: &route.path }.serve(&session);
            // The logging phase, as the runner's: its error code, and its variant store's part.
            let error = served.as_ref().err().map(|e| e.code.as_str());
            let cache = served.as_ref().ok().and_then(|r| r.header("x-cache")).and_then(CacheResult::from_header).map(CacheResult::label);
            platform.answered(error, cache);
            served.unwrap_or_else(ProxyError::into_response)
        })),
    })
}

/// The set-up of the host's current document (`setup.rs`): kept from an
/// earlier request or a snapshot when the document is unchanged, which the
/// host's document version says at once where it gives one.
pub fn set_up<P: Platform>(platform: &P) -> Result<&'static Document, ProxyError> {
    let version = platform.config(DOCUMENT_VERSION_KEY).ok().flatten();
    let setup = match version.as_deref().and_then(setup::for_version) {
        Some(setup) => setup,
        None => {
            let text = platform
                .config(DOCUMENT_KEY)
                .map_err(|why| ProxyError::internal(format!("the host could not provide the config document: {why}")))?
                .ok_or_else(|| ProxyError::internal("no config document: the host must set the config key \"document\" (docs/configuration.md)"))?;
            setup::for_document(&text, version.as_deref())
        }
    };
    // The problems name routes, hosts and upstreams: the operator's business,
    // not a client's. The wasmtime host refuses such a document at start and
    // on SIGHUP; `edgeproxy check` shows the problems on every host's behalf.
    setup.document.as_ref().map_err(|_| ProxyError::new(ErrorCode::ConfigInvalid, CONFIG_INVALID))
}

/// What a client is told when the host's config document does not check.
const CONFIG_INVALID: &str = "this proxy's config document has problems; its operator can see them with `edgeproxy check`";

#[cfg(test)]
mod tests {
    use super::*;
    use platform::fake::{Bytes, Fake};

    const DOCUMENT: &str = "[[route]]\nhost = \"api.test\"\n[route.api-gateway]\norigin = \"http://origin.test\"\n\n\
                            [[route]]\nhost = \"zoo.test\"\n[route.image-cache]\n\n\
                            [[route]]\nhost = \"hub.test\"\n[route.hub-gateway]\nbackend = \"http://backend.test\"\n";

    fn get(url: &str) -> Request<Bytes> {
        Request { method: "GET".into(), url: url.into(), headers: Vec::new(), body: None }
    }

    #[test]
    fn begin_stops_a_proxied_request_at_send_and_answers_the_rest_itself() {
        let p = Fake::with_document(DOCUMENT);
        let Begun::Sending { request, .. } = begin(&p, get("http://api.test/v1/x?q=1"), None) else { panic!("a proxied request stops at send") };
        assert_eq!(request.url, "http://origin.test/v1/x?q=1");
        assert!(matches!(begin(&p, get("http://zoo.test/8x8/x"), None), Begun::Whole(_)), "image-cache is an origin: served whole");
        let Begun::Answered(refused) = begin(&p, get("http://elsewhere.test/"), None) else { panic!("no route: answered at once") };
        assert_eq!(refused.status, 404);
    }

    #[test]
    fn the_runner_makes_every_upstream_request_and_response_safe_to_pass_on() {
        let p = Fake::with_document(DOCUMENT);
        let mut request = get("http://api.test/x?q=1");
        request.headers = [("connection", "x-drop"), ("x-drop", "1"), ("keep-alive", "5"), ("authorization", "Bearer t"), ("x-kept", "2")]
            .map(|(n, v)| (n.into(), v.to_owned()))
            .to_vec();
        let Begun::Sending { request, rest, .. } = begin(&p, request, Some("192.0.2.7")) else { panic!("a proxied request stops at send") };
        assert_eq!(request.url, "http://origin.test/x?q=1", "the peer's base and the client's path");
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        for gone in ["connection", "x-drop", "keep-alive"] {
            assert!(!names.contains(&gone), "{gone} reached the upstream: {names:?}");
        }
        for kept in ["authorization", "x-kept", "x-forwarded-for"] {
            assert!(names.contains(&kept), "{kept} did not reach the upstream: {names:?}");
        }
        let upstream = Response { status: 200, headers: [("connection", "x-hop"), ("x-hop", "1"), ("transfer-encoding", "chunked"), ("x-app", "a")].map(|(n, v)| (n.into(), v.to_owned())).to_vec(), body: None };
        let answer = rest.resume(Ok(upstream));
        let names: Vec<&str> = answer.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"x-app") && !names.iter().any(|n| ["connection", "x-hop", "transfer-encoding"].contains(n)), "{names:?}");
    }

    #[test]
    fn the_phases_after_send_run_again_from_the_state_send_left() {
        // A stepwise host runs them a second time when the first try stopped
        // at an import that waits (wit/edgeproxy.wit, `stepwise`).
        let p = Fake::with_document(DOCUMENT);
        let Begun::Sending { rest, .. } = begin(&p, get("http://api.test/x"), Some("192.0.2.7")) else { panic!("a proxied request stops at send") };
        let upstream = || Ok(Response { status: 201, headers: vec![("x-from".into(), "origin".into())], body: Some(Bytes(b"made".to_vec())) });
        let (first, second) = (rest.resume(upstream()), rest.resume(upstream()));
        assert_eq!((first.status, &first.headers, &first.body), (second.status, &second.headers, &second.body));
        assert_eq!((first.status, first.header("x-from"), &first.body), (201, Some("origin"), &Some(Bytes(b"made".to_vec()))));
        assert_eq!(rest.resume(Err(platform::HttpError::Timeout)).status, 504, "a failed send is the app's error, as in handle");
    }

    #[test]
    fn a_failure_is_answered_in_the_form_its_client_reads() {
        // git shows only a text/plain error body (as `remote:` lines); git-lfs
        // and everything else read the JSON contract.
        let p = Fake::with_document(DOCUMENT);
        let cases = [
            ("GET", "http://hub.test/alice/m.git/info/refs?service=git-upload-pack", "text/plain; charset=utf-8"),
            ("POST", "http://hub.test/alice/m.git/git-upload-pack", "text/plain; charset=utf-8"),
            ("POST", "http://hub.test/alice/m.git/info/lfs/objects/batch", "application/json"),
            ("GET", "http://hub.test/api/models/alice/m", "application/json"),
            ("GET", "http://api.test/x", "application/json"),
        ];
        for (method, url, content_type) in cases {
            let request = Request { method: method.into(), url: url.into(), headers: Vec::new(), body: None };
            let Begun::Sending { rest, .. } = begin(&p, request, None) else { panic!("{url}: a proxied request stops at send") };
            let answer = rest.resume(Err(platform::HttpError::ConnectionFailed("refused".into())));
            assert_eq!((answer.status, answer.header("content-type"), answer.header("x-error-code")), (502, Some(content_type), Some("bad_gateway")), "{method} {url}");
            let body = String::from_utf8(answer.body.expect("an error has a body").0).unwrap();
            let readable = if content_type.starts_with("text/plain") { body.starts_with("bad_gateway: ") } else { body.contains("\"error\":\"bad_gateway\"") };
            assert!(readable, "{url}: {body}");
        }
    }

    #[test]
    fn the_logging_phase_tells_the_host_how_each_request_was_answered() {
        let p = Fake::with_document(DOCUMENT);
        let Begun::Sending { rest, .. } = begin(&p, get("http://api.test/x"), None) else { panic!("a proxied request stops at send") };
        rest.resume(Ok(Response { status: 503, headers: vec![("x-error-code".into(), "theirs".into())], body: None }));
        rest.resume(Err(platform::HttpError::Timeout));
        handle(&p, get("http://elsewhere.test/"), None);
        handle(&p, get("http://zoo.test/64x48/logged-sloth?format=png"), None);
        handle(&p, get("http://zoo.test/64x48/logged-sloth?format=png"), None);
        handle(&p, get("http://zoo.test/64x48/BAD_SLUG"), None);
        let answered = p.answered.borrow();
        let reported: Vec<(Option<&str>, Option<&str>)> = answered.iter().map(|(e, c)| (e.as_deref(), c.as_deref())).collect();
        assert_eq!(
            reported,
            [
                (None, None),                  // an upstream's error code is not the core's
                (Some("gateway_timeout"), None),
                (Some("not_found"), None),     // no route
                (None, Some("miss")),          // image-cache's variant, made
                (None, Some("hit")),           // and stored
                (Some("bad_slug"), None),
            ]
        );
    }
}
