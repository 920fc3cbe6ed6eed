//! A built single-page web app (KohakuHub's UI) served as static files, the
//! same wherever it is served from: the core (hub-gateway's `ui`, from a
//! frontend or key-value), the wasmtime host's `serve --assets DIR`, and
//! Spin's static file component (spin/static-files). Workers Static Assets
//! serves it on Workers, with the same routes left to the Worker.
//!
//! One crate so that the four agree: which paths are the gateway's and
//! which the app's, which file a path names, and each file's type and
//! caching.

/// The paths hub-gateway answers itself (Workers route patterns: `*` is any
/// run of characters, `/` included). Every other path is the web UI's.
/// workers/hub-gateway.wrangler.toml's `run_worker_first` and
/// spin/hub-gateway.spin.toml's routes say the same (tests below).
pub const HUB_GATEWAY_ROUTES: &[&str] =
    &["/api", "/api/*", "/org", "/org/*", "/admin/api", "/admin/api/*", "/health", "/_ui", "/_ui/*", "/_objects/*", "/*.git/*", "/*/*/resolve/*"];

/// Whether hub-gateway answers `path` (no query) rather than the web UI.
pub fn is_hub_gateway_route(path: &str) -> bool {
    HUB_GATEWAY_ROUTES.iter().any(|pattern| route_matches(pattern, path))
}

/// A Workers route pattern: `*` is any run of characters, `/` included.
fn route_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((head, tail)) => path
            .strip_prefix(head)
            .is_some_and(|rest| (0..=rest.len()).filter(|&i| rest.is_char_boundary(i)).any(|i| route_matches(tail, &rest[i..]))),
    }
}

/// The file a web UI request is answered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// `/index.html`, `/assets/index-3f9a2c1b.js`, ...
    pub file: String,
    /// The request named no file: the single-page app's fallback.
    pub fallback: bool,
}

impl Page {
    /// A path whose last segment has no `.` is a route of the app, not a
    /// file: it gets `index.html`, and the app routes it in the browser.
    pub fn of(path: &str) -> Page {
        let last = path.rsplit('/').next().unwrap_or_default();
        if last.contains('.') {
            Page { file: path.to_owned(), fallback: false }
        } else {
            Page { file: "/index.html".into(), fallback: true }
        }
    }

    /// The file's path relative to the site's directory, or `None` for a
    /// path that could leave it (`..`, `\`, NUL) or names a hidden file.
    pub fn relative_path(&self) -> Option<&str> {
        let relative = self.file.strip_prefix('/')?;
        let safe = relative.split('/').all(|segment| !segment.is_empty() && !segment.starts_with('.') && !segment.contains(['\\', '\0']));
        safe.then_some(relative)
    }
}

/// `index.html` is revalidated every time (it names the current assets);
/// a file with a content hash in its name never changes.
pub fn cache_control(file: &str) -> &'static str {
    if file == "/index.html" {
        "no-cache"
    } else if is_content_hashed(file) {
        "public, max-age=31536000, immutable"
    } else {
        "public, max-age=300"
    }
}

/// `index-3f9a2c1b.js`, `index.BXk2j3Ld.css`: the last `-`/`.` part of the
/// name before its extension is 8+ letters and digits with a digit in it.
fn is_content_hashed(file: &str) -> bool {
    let name = file.rsplit('/').next().unwrap_or_default();
    let Some((stem, _ext)) = name.rsplit_once('.') else { return false };
    let Some((_, hash)) = stem.rsplit_once(['-', '.']) else { return false };
    hash.len() >= 8 && hash.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && hash.bytes().any(|b| b.is_ascii_digit())
}

/// What a built web app ships, by extension.
pub fn content_type(file: &str) -> &'static str {
    let ext = file.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

/// Why a file server answers a request without a file: a JSON error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// The `Allow` header, for a method the web UI does not take.
    pub allow: Option<&'static str>,
}

impl Refusal {
    fn new(status: u16, code: &'static str, message: String) -> Refusal {
        Refusal { status, code, message, allow: None }
    }

    /// The JSON error body the core sends too: `{"error": code, "message": text}`.
    pub fn body(&self) -> String {
        serde_json::json!({ "error": self.code, "message": self.message }).to_string()
    }
}

/// The file a `method` request for `path` (no query) reads: its page and its
/// path relative to the site's directory. The web UI takes GET and HEAD,
/// and no path leaves the directory.
pub fn file_for(method: &str, path: &str) -> Result<(Page, String), Refusal> {
    if method != "GET" && method != "HEAD" {
        let message = format!("{path} serves the web UI, which takes GET and HEAD only");
        return Err(Refusal { allow: Some("GET, HEAD"), ..Refusal::new(405, "method_not_allowed", message) });
    }
    let page = Page::of(path);
    let relative = page.relative_path().ok_or_else(|| Refusal::new(404, "not_found", "the web UI has no such file".into()))?.to_owned();
    Ok((page, relative))
}

/// The answer when `page`'s file is not there. `put_it` says where this
/// host serves the built UI from.
pub fn missing(page: &Page, put_it: &str) -> Refusal {
    if page.fallback {
        Refusal::new(502, "ui_missing", format!("the web UI has no index.html: {put_it}"))
    } else {
        Refusal::new(404, "not_found", format!("the web UI has no file {}", page.file))
    }
}

/// The status (200, or 304 when `If-None-Match` names the file's entity
/// tag) and headers for `page`'s file of `len` bytes, last modified at
/// `modified` (the tag comes from the two: what a file server has without
/// reading the file).
pub fn file_answer(page: &Page, len: u64, modified: Option<std::time::SystemTime>, if_none_match: Option<&str>) -> (u16, [(&'static str, String); 3]) {
    let nanos = modified.and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
    let etag = format!("\"{len:x}-{nanos:x}\"");
    let status = if if_none_match.is_some_and(|v| none_match(v, &etag)) { 304 } else { 200 };
    (status, [("content-type", content_type(&page.file).to_owned()), ("cache-control", cache_control(&page.file).to_owned()), ("etag", etag)])
}

/// Whether `If-None-Match` (its value) names `etag`, weakly compared (RFC 9110 13.1.2).
fn none_match(if_none_match: &str, etag: &str) -> bool {
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    if_none_match.trim() == "*" || if_none_match.split(',').any(|tag| bare(tag) == bare(etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GATEWAY: &[&str] = &[
        "/api/whoami-v2",
        "/api",
        "/org/acme/members",
        "/admin/api/stats",
        "/health",
        "/_ui/index.html",
        "/alice/m.git/info/refs",
        "/alice/m.git/git-upload-pack",
        "/alice/m.git/info/lfs/objects/batch",
        "/datasets/alice/d.git/info/refs",
        "/alice/m/resolve/main/w.bin",
        "/models/alice/m/resolve/main/w.bin",
        "/datasets/alice/d/resolve/main/x.csv",
        "/_objects/hub/lfs/ab",
    ];
    const WEB_UI: &[&str] =
        &["/", "/alice/m", "/models/alice/m", "/assets/index-3f9a2c1b.js", "/settings", "/alice/m/blob/main/README.md", "/alice/m/tree/main/dir", "/apis"];

    #[test]
    fn the_gateways_routes_are_its_own_and_every_other_path_is_the_web_uis() {
        for path in GATEWAY {
            assert!(is_hub_gateway_route(path), "{path}: the gateway's");
        }
        for path in WEB_UI {
            assert!(!is_hub_gateway_route(path), "{path}: the web UI's");
        }
    }

    #[test]
    fn workers_run_the_worker_first_for_the_same_routes() {
        let wrangler: toml::Value = toml::from_str(include_str!("../../workers/hub-gateway.wrangler.toml")).unwrap();
        let listed: Vec<&str> = wrangler["assets"]["run_worker_first"].as_array().unwrap().iter().filter_map(|p| p.as_str()).collect();
        assert_eq!(listed, HUB_GATEWAY_ROUTES, "workers/hub-gateway.wrangler.toml lists these routes");
    }

    /// Spin's routes (`/x`, `/x/...`, `:name` for one segment) cannot say
    /// `*.git`; the manifest names git's endpoints after any repo segment.
    /// Each sample path must go to the same component either way.
    #[test]
    fn spin_routes_the_same_paths_to_the_gateway() {
        let manifest: toml::Value = toml::from_str(include_str!("../../spin/hub-gateway.spin.toml")).unwrap();
        let routes = |component: &str| -> Vec<String> {
            manifest["trigger"]["http"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["component"].as_str() == Some(component))
                .map(|t| t["route"].as_str().unwrap().to_owned())
                .collect()
        };
        let (gateway, web_ui) = (routes("edgeproxy"), routes("web-ui"));
        assert_eq!(web_ui, ["/..."], "the web UI takes every path the gateway does not");
        for path in GATEWAY {
            assert!(gateway.iter().any(|r| spin_route_matches(r, path)), "{path}: spin/hub-gateway.spin.toml routes it to the gateway");
        }
        for path in WEB_UI {
            assert!(!gateway.iter().any(|r| spin_route_matches(r, path)), "{path}: spin/hub-gateway.spin.toml leaves it to the web UI");
        }
    }

    /// Spin's route syntax: exact, `:name` one segment, a trailing `/...` any rest (or none).
    fn spin_route_matches(route: &str, path: &str) -> bool {
        let (fixed, open) = match route.strip_suffix("/...") {
            Some(fixed) => (fixed, true),
            None => (route, false),
        };
        let want: Vec<&str> = fixed.split('/').skip(1).collect();
        let got: Vec<&str> = path.split('/').skip(1).collect();
        let enough = if open { got.len() >= want.len() } else { got.len() == want.len() };
        enough && want.iter().zip(&got).all(|(w, g)| w.starts_with(':') || w == g)
    }

    #[test]
    fn paths_without_a_file_name_fall_back_to_the_app() {
        assert_eq!(Page::of("/"), Page { file: "/index.html".into(), fallback: true });
        assert_eq!(Page::of("/models/alice/m/blob/main"), Page { file: "/index.html".into(), fallback: true });
        assert_eq!(Page::of("/assets/index-3f9a2c1b.js"), Page { file: "/assets/index-3f9a2c1b.js".into(), fallback: false });
    }

    #[test]
    fn no_path_leaves_the_sites_directory() {
        assert_eq!(Page::of("/assets/a.js").relative_path(), Some("assets/a.js"));
        assert_eq!(Page::of("/").relative_path(), Some("index.html"));
        for path in ["/../etc/passwd.txt", "/assets/../../x.js", "/.env.txt", "/a\\..\\b.js", "//etc/x.js"] {
            assert_eq!(Page::of(path).relative_path(), None, "{path}");
        }
    }

    #[test]
    fn hashed_assets_are_immutable_and_the_index_is_revalidated() {
        assert_eq!(cache_control("/assets/index-3f9a2c1b.js"), "public, max-age=31536000, immutable");
        assert_eq!(cache_control("/assets/index.BXk2j3Ld.css"), "public, max-age=31536000, immutable");
        assert_eq!(cache_control("/index.html"), "no-cache");
        assert_eq!(cache_control("/favicon.svg"), "public, max-age=300");
        assert_eq!(cache_control("/assets/my-favorites.js"), "public, max-age=300");
    }

    #[test]
    fn content_types_come_from_the_extension() {
        assert_eq!(content_type("/assets/a.JS"), "text/javascript; charset=utf-8");
        assert_eq!(content_type("/favicon.svg"), "image/svg+xml");
        assert_eq!(content_type("/x.unknown"), "application/octet-stream");
    }

    #[test]
    fn a_known_etag_is_not_modified() {
        let page = Page::of("/assets/a.js");
        let (status, headers) = file_answer(&page, 10, None, None);
        let tag = headers[2].1.clone();
        assert_eq!((status, headers[0].1.as_str()), (200, "text/javascript; charset=utf-8"));
        assert_eq!(file_answer(&page, 10, None, Some(&tag)).0, 304);
        assert_eq!(file_answer(&page, 10, None, Some(&format!("W/{tag}, \"x\""))).0, 304);
        assert_eq!(file_answer(&page, 10, None, Some("*")).0, 304);
        assert_eq!(file_answer(&page, 10, None, Some("\"a-1\"")).0, 200);
        assert_eq!(file_answer(&page, 11, None, Some(&tag)).0, 200, "another length, another tag");
    }

    #[test]
    fn the_web_ui_takes_get_and_head_and_a_missing_index_is_a_502() {
        assert_eq!(file_for("GET", "/settings").unwrap(), (Page::of("/settings"), "index.html".to_owned()));
        let refused = file_for("POST", "/settings").unwrap_err();
        assert_eq!((refused.status, refused.allow), (405, Some("GET, HEAD")));
        assert_eq!(file_for("GET", "/../x.js").unwrap_err().status, 404);
        assert_eq!(missing(&Page::of("/"), "build it").status, 502);
        assert_eq!(missing(&Page::of("/gone.js"), "build it").status, 404);
        assert_eq!(missing(&Page::of("/gone.js"), "x").body(), r#"{"error":"not_found","message":"the web UI has no file /gone.js"}"#);
    }
}
