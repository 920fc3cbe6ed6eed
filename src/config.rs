//! The config document: one TOML schema, the same on every host. Hosts hand
//! it over as the config key `document`; secrets it names are other keys.

use serde::Deserialize;

use crate::apps::{api_gateway, hf_mirror, hub_gateway, image_cache};

/// The config key under which every host provides the document.
pub const DOCUMENT_KEY: &str = "document";
/// The config key naming the document's version, where the host gives one
/// (`wit/edgeproxy.wit`, `config.get`).
pub const DOCUMENT_VERSION_KEY: &str = "document-version";

/// The document as written: what serde reads, before it is checked.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: String,
    #[serde(default = "root_path")]
    path: String,
    #[serde(rename = "api-gateway")]
    api_gateway: Option<api_gateway::Options>,
    #[serde(rename = "hf-mirror")]
    hf_mirror: Option<hf_mirror::Options>,
    #[serde(rename = "image-cache")]
    image_cache: Option<image_cache::Options>,
    #[serde(rename = "hub-gateway")]
    hub_gateway: Option<hub_gateway::Options>,
}

fn root_path() -> String {
    "/".to_owned()
}

/// A checked document: what serving reads. Built once per document (see
/// `setup.rs`); nothing in it is parsed again per request.
#[derive(Debug)]
pub struct Document {
    /// Tried in order; the first route whose host and path match serves the request.
    pub routes: Vec<Route>,
}

#[derive(Debug)]
pub struct Route {
    /// `api.example.com`, `*.example.com` (any subdomain), or `*`. A port in
    /// the pattern must match; without one, any port matches.
    pub host: HostPattern,
    /// Path prefix without its trailing `/`, matched on segment boundaries:
    /// `/v1` matches `/v1` and `/v1/users`, not `/v10`. Empty for `/`.
    pub path: String,
    pub app: App,
}

/// The app a route runs, with its options: the one table of apps.
#[derive(Debug)]
pub enum App {
    ApiGateway(api_gateway::Options),
    HfMirror(hf_mirror::Options),
    ImageCache(image_cache::Options),
    HubGateway(hub_gateway::Options),
}

impl App {
    /// Its name in the document (`[route.<name>]`).
    pub fn name(&self) -> &'static str {
        match self {
            App::ApiGateway(_) => "api-gateway",
            App::HfMirror(_) => "hf-mirror",
            App::ImageCache(_) => "image-cache",
            App::HubGateway(_) => "hub-gateway",
        }
    }

    /// The app with its options checked and what serving reads built.
    fn checked(self) -> Result<App, String> {
        Ok(match self {
            App::ApiGateway(options) => App::ApiGateway(options.validate().map(|()| options)?),
            App::HfMirror(options) => App::HfMirror(options.checked()?),
            App::ImageCache(options) => App::ImageCache(options.validate().map(|()| options)?),
            App::HubGateway(options) => App::HubGateway(options.validate().map(|()| options)?),
        })
    }
}

/// Every problem with a document: a TOML or schema error (TOML stops at the
/// first), or else one per route that is wrong, each naming its route and
/// key. Empty when the document is valid.
pub fn check(text: &str) -> Vec<String> {
    match toml::from_str::<RawDocument>(text) {
        Ok(doc) => doc.routes.into_iter().enumerate().filter_map(|(i, route)| route.checked(i + 1).err()).collect(),
        Err(e) => vec![schema_problem(text, &e)],
    }
}

/// A TOML error, placed: the route it is in (counting `[[route]]` headers
/// before it), its line, and the dotted key of the line, which the error
/// itself names only for unknown and missing fields.
fn schema_problem(text: &str, error: &toml::de::Error) -> String {
    let message = error.message();
    let Some(span) = error.span() else { return format!("the document: {message}") };
    let before = &text[..span.start.min(text.len())];
    let line_number = before.matches('\n').count() + 1;
    let line = text.lines().nth(line_number - 1).unwrap_or_default().trim();
    let headers: Vec<&str> = before.lines().map(str::trim).filter(|l| l.starts_with('[')).collect();
    let route = headers.iter().filter(|h| **h == "[[route]]").count();
    let table = headers.last().map(|h| h.trim_matches(|c| c == '[' || c == ']').trim()).filter(|t| !t.is_empty());
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('['));
    let dotted = match (table, key) {
        (Some(table), Some(key)) => format!(", key {table}.{key}"),
        (None, Some(key)) => format!(", key {key}"),
        (Some(table), None) => format!(", in [{table}]"),
        (None, None) => String::new(),
    };
    let place = if route == 0 { "the document".to_owned() } else { format!("route {route}") };
    format!("{place} (line {line_number}{dotted}): {message}")
}

impl RawRoute {
    /// The checked route, the `n`th, or what is wrong with it.
    fn checked(self, n: usize) -> Result<Route, String> {
        let host = self.host;
        let mut apps = [
            self.api_gateway.map(App::ApiGateway),
            self.hf_mirror.map(App::HfMirror),
            self.image_cache.map(App::ImageCache),
            self.hub_gateway.map(App::HubGateway),
        ]
        .into_iter()
        .flatten();
        let app = match (apps.next(), apps.next()) {
            (None, _) => return Err(format!("route {n} ({host}) names no app: add a [route.api-gateway], [route.hf-mirror], [route.image-cache] or [route.hub-gateway] table")),
            (Some(_), Some(_)) => return Err(format!("route {n} ({host}) names more than one app: give each its own [[route]]")),
            (Some(app), None) => app,
        };
        if !self.path.starts_with('/') {
            return Err(format!("route {n} ({host}): path {:?} must start with '/'", self.path));
        }
        let app = app.checked().map_err(|e| format!("route {n} ({host}): {e}"))?;
        Ok(Route { host: HostPattern::new(&host), path: self.path.trim_end_matches('/').to_owned(), app })
    }
}

impl Document {
    /// The checked document, or the first of its problems (see [`check`]).
    pub fn parse(text: &str) -> Result<Document, String> {
        let raw: RawDocument = toml::from_str(text).map_err(|e| format!("the config document is not valid: {e}"))?;
        let routes = raw.routes.into_iter().enumerate().map(|(i, route)| route.checked(i + 1)).collect::<Result<_, _>>()?;
        Ok(Document { routes })
    }

    /// The route for `host` (as in the Host header, maybe with a port,
    /// lower-case) and `path`: its index and the route.
    pub fn route(&self, host: &str, path: &str) -> Option<(usize, &Route)> {
        self.routes.iter().enumerate().find(|(_, r)| r.host.matches(host) && path_matches(&r.path, path))
    }
}

/// A route's host pattern, lower-cased and split once.
#[derive(Debug, PartialEq, Eq)]
pub enum HostPattern {
    Any,
    /// `name[:port]`.
    Exact { name: String, port: Option<String> },
    /// `*.suffix[:port]`: `suffix` keeps its leading `.`.
    Subdomains { suffix: String, port: Option<String> },
}

impl HostPattern {
    fn new(pattern: &str) -> HostPattern {
        let pattern = pattern.to_ascii_lowercase();
        if pattern == "*" {
            return HostPattern::Any;
        }
        let (name, port) = split_port(&pattern);
        let port = port.map(str::to_owned);
        match name.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => HostPattern::Subdomains { suffix: suffix.to_owned(), port },
            _ => HostPattern::Exact { name: name.to_owned(), port },
        }
    }

    /// Whether `host` (`name[:port]`) matches, ignoring ASCII case.
    pub fn matches(&self, host: &str) -> bool {
        let (name, port) = split_port(host);
        let port_matches = |want: &Option<String>| want.as_deref().is_none_or(|want| Some(want) == port);
        match self {
            HostPattern::Any => true,
            HostPattern::Exact { name: want, port: want_port } => port_matches(want_port) && want.eq_ignore_ascii_case(name),
            HostPattern::Subdomains { suffix, port: want_port } => {
                port_matches(want_port)
                    && name.len() > suffix.len()
                    && name.is_char_boundary(name.len() - suffix.len())
                    && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

/// `host:port` into its parts; IPv6 literals keep their brackets.
fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    }
}

/// `prefix` has no trailing `/` (empty for the root).
fn path_matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_matches(pattern: &str, host: &str) -> bool {
        HostPattern::new(pattern).matches(host)
    }

    #[test]
    fn exact_host_matches_with_any_port_unless_the_pattern_has_one() {
        assert!(host_matches("api.example.com", "API.example.com:8443"));
        assert!(host_matches("127.0.0.1:8787", "127.0.0.1:8787"));
        assert!(!host_matches("127.0.0.1:8787", "127.0.0.1:9999"));
        assert!(!host_matches("api.example.com", "api.example.com.evil.net"));
    }

    #[test]
    fn wildcard_host_matches_subdomains_only() {
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com:80"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(host_matches("*", "anything"));
        assert!(host_matches("[::1]:8787", "[::1]:8787"));
    }

    #[test]
    fn path_prefix_matches_on_segment_boundaries() {
        assert!(path_matches("", "/x"));
        assert!(path_matches("/v1", "/v1"));
        assert!(path_matches("/v1", "/v1/users"));
        assert!(!path_matches("/v1", "/v10"));
    }

    #[test]
    fn a_route_without_an_app_is_refused_with_a_hint() {
        let err = Document::parse("[[route]]\nhost = \"a\"\n").unwrap_err();
        assert!(err.contains("names no app"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Document::parse("[[route]]\nhost = \"a\"\nhots = 1\n").unwrap_err();
        assert!(err.contains("hots"), "{err}");
    }

    #[test]
    fn check_finds_every_wrong_route_with_its_number_and_key() {
        let document = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = \"ftp://x\"\n\n\
                        [[route]]\nhost = \"b.test\"\n[route.api-gateway]\norigin = \"https://b.example\"\n\n\
                        [[route]]\nhost = \"c.test\"\n\n\
                        [[route]]\nhost = \"d.test\"\npath = \"v1\"\n[route.image-cache]\n";
        let problems = check(document);
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].starts_with("route 1 (a.test): origin "), "{}", problems[0]);
        assert!(problems[1].starts_with("route 3 (c.test) names no app"), "{}", problems[1]);
        assert!(problems[2].starts_with("route 4 (d.test): path \"v1\""), "{}", problems[2]);
        assert_eq!(Document::parse(document).err().as_ref(), problems.first());
    }

    #[test]
    fn check_places_a_schema_error_at_its_route_line_and_key() {
        let typo = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = \"https://a.example\"\n\n[[route]]\nhost = \"b.test\"\n[route.api-gateway]\norign = \"https://b.example\"\n";
        let problems = check(typo);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("route 2 (line 9, key route.api-gateway.orign): unknown field `orign`"), "{}", problems[0]);
        let wrong_type = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = 7\n";
        let problem = &check(wrong_type)[0];
        assert!(problem.starts_with("route 1 (line 4, key route.api-gateway.origin): "), "{problem}");
        assert!(check("[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = \"https://a.example\"\n").is_empty());
        assert!(check("").is_empty(), "an empty document is valid (no routes)");
    }
}
