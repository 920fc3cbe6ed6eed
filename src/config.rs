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

impl Route {
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
    pub fn parse(text: &str) -> Result<Document, String> {
        let doc: Document = toml::from_str(text).map_err(|e| format!("the config document is not valid: {e}"))?;
        for (i, route) in doc.routes.iter().enumerate() {
            let n = i + 1;
            match route.app() {
                Ok(_) => {}
                Err(0) => return Err(format!("route {n} ({}) names no app: add a [route.api-gateway], [route.hf-mirror], [route.image-cache] or [route.hub-gateway] table", route.host)),
                Err(_) => return Err(format!("route {n} ({}) names more than one app: give each its own [[route]]", route.host)),
            }
            if !route.path.starts_with('/') {
                return Err(format!("route {n} ({}): path {:?} must start with '/'", route.host, route.path));
            }
            let valid = match route.app() {
                Ok(App::ApiGateway(options)) => options.validate(),
                Ok(App::HfMirror(options)) => options.validate(),
                Ok(App::ImageCache(options)) => options.validate(),
                Ok(App::HubGateway(options)) => options.validate(),
                Err(_) => unreachable!("checked above"),
            };
            valid.map_err(|e| format!("route {n} ({}): {e}", route.host))?;
        }
        Ok(doc)
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
}
