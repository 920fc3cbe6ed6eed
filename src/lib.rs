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
use proxy::{Incoming, ProxyError, Session, phases};

/// Answers one client request. Never panics on bad input: every failure is
/// a JSON error response.
pub fn handle<P: Platform>(platform: &P, request: Request<P::Body>, client_ip: Option<&str>) -> Response<P::Body> {
    serve(platform, request, client_ip).unwrap_or_else(ProxyError::into_response)
}

fn serve<P: Platform>(platform: &P, request: Request<P::Body>, client_ip: Option<&str>) -> Result<Response<P::Body>, ProxyError> {
    proxy::refuse_unservable_method(&request.method)?;
    let document = set_up(platform)?;
    let incoming = Incoming::parse(&request.url)?;
    let (route_index, route) = document
        .route(&incoming.authority, &incoming.path)
        .ok_or_else(|| ProxyError::not_found(format!("no route serves host {} and path {}", incoming.authority, incoming.path)))?;
    platform.routed(route_index as u32 + 1, route.app.name());
    let session = Session { platform, incoming, method: request.method.clone(), headers: request.headers.clone(), client_ip };
    Ok(match &route.app {
        App::ApiGateway(options) => phases::run(&ApiGateway { options, route_index }, &session, request),
        App::HfMirror(options) => phases::run(&HfMirror { options, route_index }, &session, request),
        App::HubGateway(options) => phases::run(&HubGateway { options }, &session, request),
        // An origin, not a proxy: it answers every request itself.
        App::ImageCache(options) => ImageCache { options, prefix: &route.path }.serve(&session).unwrap_or_else(ProxyError::into_response),
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
                .ok_or_else(|| ProxyError::internal("no config document: the host must set the config key \"document\" (see README, Configuration)"))?;
            setup::for_document(&text, version.as_deref())
        }
    };
    // The problems name routes, hosts and upstreams: the operator's business,
    // not a client's. The wasmtime host refuses such a document at start and
    // on SIGHUP; `edgeproxy check` shows the problems on every host's behalf.
    setup.document.as_ref().map_err(|_| ProxyError::new(500, "config_invalid", CONFIG_INVALID))
}

/// What a client is told when the host's config document does not check.
const CONFIG_INVALID: &str = "this proxy's config document has problems; its operator can see them with `edgeproxy check`";
