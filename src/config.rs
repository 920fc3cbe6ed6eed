//! The config document: one TOML schema, the same on every host. Hosts hand
//! it over as the config key `document`; secrets it names are other keys.

use serde::Deserialize;

use crate::apps::{api_gateway, hf_mirror, hub_gateway, image_cache};

/// The config key under which every host provides the document.
pub const DOCUMENT_KEY: &str = "document";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Tried in order; the first route whose host and path match serves the request.
    #[serde(default, rename = "route")]
    pub routes: Vec<Route>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// `api.example.com`, `*.example.com` (any subdomain), or `*`. A port in
    /// the pattern must match; without one, any port matches.
    pub host: String,
    /// Path prefix, matched on segment boundaries: `/v1` matches `/v1` and
    /// `/v1/users`, not `/v10`.
    #[serde(default = "root_path")]
    pub path: String,
    #[serde(rename = "api-gateway")]
    pub api_gateway: Option<api_gateway::Options>,
    #[serde(rename = "hf-mirror")]
    pub hf_mirror: Option<hf_mirror::Options>,
    #[serde(rename = "image-cache")]
    pub image_cache: Option<image_cache::Options>,
    #[serde(rename = "hub-gateway")]
    pub hub_gateway: Option<hub_gateway::Options>,
}

fn root_path() -> String {
    "/".to_owned()
}

/// The app a route runs, with its options.
pub enum App<'a> {
    ApiGateway(&'a api_gateway::Options),
    HfMirror(&'a hf_mirror::Options),
    ImageCache(&'a image_cache::Options),
    HubGateway(&'a hub_gateway::Options),
}

impl App<'_> {
    /// Its name in the document (`[route.<name>]`).
    pub fn name(&self) -> &'static str {
        match self {
            App::ApiGateway(_) => "api-gateway",
            App::HfMirror(_) => "hf-mirror",
            App::ImageCache(_) => "image-cache",
            App::HubGateway(_) => "hub-gateway",
        }
    }
}

/// Every problem with a document: a TOML or schema error (TOML stops at the
/// first), or else one per route that is wrong, each naming its route and
/// key. Empty when the document is valid.
pub fn check(text: &str) -> Vec<String> {
    match toml::from_str::<Document>(text) {
        Ok(doc) => doc.routes.iter().enumerate().filter_map(|(i, route)| route.problem(i + 1)).collect(),
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

impl Route {
    /// What is wrong with this route, the `n`th, if anything.
    fn problem(&self, n: usize) -> Option<String> {
        let valid = match self.app() {
            Err(0) => return Some(format!("route {n} ({}) names no app: add a [route.api-gateway], [route.hf-mirror], [route.image-cache] or [route.hub-gateway] table", self.host)),
            Err(_) => return Some(format!("route {n} ({}) names more than one app: give each its own [[route]]", self.host)),
            Ok(_) if !self.path.starts_with('/') => return Some(format!("route {n} ({}): path {:?} must start with '/'", self.host, self.path)),
            Ok(App::ApiGateway(options)) => options.validate(),
            Ok(App::HfMirror(options)) => options.validate(),
            Ok(App::ImageCache(options)) => options.validate(),
            Ok(App::HubGateway(options)) => options.validate(),
        };
        valid.err().map(|e| format!("route {n} ({}): {e}", self.host))
    }

    /// The route's app; `Err` if it names none or more than one.
    fn app(&self) -> Result<App<'_>, usize> {
        let apps: Vec<App> = [
            self.api_gateway.as_ref().map(App::ApiGateway),
            self.hf_mirror.as_ref().map(App::HfMirror),
            self.image_cache.as_ref().map(App::ImageCache),
            self.hub_gateway.as_ref().map(App::HubGateway),
        ].into_iter().flatten().collect();
        let count = apps.len();
        apps.into_iter().next().filter(|_| count == 1).ok_or(count)
    }
}

impl Document {
    /// The document, or the first of its problems (see [`check`]).
    pub fn parse(text: &str) -> Result<Document, String> {
        let doc: Document = toml::from_str(text).map_err(|e| format!("the config document is not valid: {e}"))?;
        match doc.routes.iter().enumerate().find_map(|(i, route)| route.problem(i + 1)) {
            Some(problem) => Err(problem),
            None => Ok(doc),
        }
    }

    /// The route for `host` (as in the Host header, maybe with a port) and
    /// `path`: its index, its path prefix and its app.
    pub fn route(&self, host: &str, path: &str) -> Option<(usize, &str, App<'_>)> {
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| host_matches(&r.host, host) && path_matches(&r.path, path))
            .and_then(|(i, r)| r.app().ok().map(|app| (i, r.path.as_str(), app)))
    }
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    if pattern == "*" {
        return true;
    }
    let (pattern_name, pattern_port) = split_port(&pattern);
    let (name, port) = split_port(&host);
    if pattern_port.is_some() && pattern_port != port {
        return false;
    }
    match pattern_name.strip_prefix("*.") {
        Some(suffix) => name.len() > suffix.len() + 1 && name.ends_with(suffix) && name[..name.len() - suffix.len()].ends_with('.'),
        None => pattern_name == name,
    }
}

/// `host:port` into its parts; IPv6 literals keep their brackets.
fn split_port(host: &str) -> (&str, Option<&str>) {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => (&host[..i], Some(&host[i + 1..])),
        _ => (host, None),
    }
}

fn path_matches(prefix: &str, path: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/') || rest.starts_with('?'))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(path_matches("/", "/x"));
        assert!(path_matches("/v1", "/v1"));
        assert!(path_matches("/v1/", "/v1/users"));
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
