//! The zoo's URL grammar, and the one canonical form of each image:
//!
//! - `/` — the gallery;
//! - `/{W}x{H}/{slug}` — the image (case and a trailing `/` do not matter:
//!   `/800X600/Sloth/` is `/800x600/sloth`);
//! - `/cdn-cgi/image/<options>/{W}x{H}/{slug}` — a variant of it;
//! - query parameters: transform options, and `redo`, `expires`, `sig`.

use super::Options;
use super::options::{OptionError, Transform};
use crate::proxy::{ErrorCode, ProxyError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    pub width: u32,
    pub height: u32,
    /// Lower case, `[a-z0-9-]`.
    pub slug: String,
}

impl Placeholder {
    /// `/800x600/sloth`: the key of the original, and what a signature covers.
    pub fn canonical(&self) -> String {
        format!("/{}x{}/{}", self.width, self.height, self.slug)
    }
}

#[derive(Debug, PartialEq)]
pub enum Target {
    Gallery,
    /// The image, with the options of a `/cdn-cgi/image/` path.
    Placeholder(Placeholder, Transform),
}

/// `path` relative to the route's prefix, still percent-encoded.
pub fn parse(path: &str, o: &Options) -> Result<Target, ProxyError> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Ok(Target::Gallery),
        ["cdn-cgi", "image", list, source @ ..] => {
            let transform = Transform::parse_list(list).map_err(bad_option)?;
            if transform == Transform::default() {
                return Err(ProxyError::bad_request("/cdn-cgi/image/ needs at least one option (width=400,fit=cover)"));
            }
            match source {
                [size, slug] => Ok(Target::Placeholder(placeholder(size, slug, o)?, transform)),
                _ => Err(ProxyError::new(ErrorCode::BadSource, "the source of /cdn-cgi/image/<options>/<source> must be a placeholder path on this site, /{W}x{H}/{slug}; remote images are not fetched")),
            }
        }
        [size, slug] => Ok(Target::Placeholder(placeholder(size, slug, o)?, Transform::default())),
        _ => Err(ProxyError::not_found("no such page: images are /{W}x{H}/{slug} (/800x600/sunglasses-sloth), variants /cdn-cgi/image/<options>/{W}x{H}/{slug}")),
    }
}

fn placeholder(size: &str, slug: &str, o: &Options) -> Result<Placeholder, ProxyError> {
    let bad_size = || {
        ProxyError::new(ErrorCode::BadSize, format!("size {size:?}: must be {{W}}x{{H}} in pixels, each from {} to {} (800x600)", o.min_size, o.max_size))
    };
    let (w, h) = size.to_ascii_lowercase().split_once('x').map(|(w, h)| (w.to_owned(), h.to_owned())).ok_or_else(bad_size)?;
    let number = |s: &str| s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u32>().ok()).flatten().filter(|v| (o.min_size..=o.max_size).contains(v));
    let (Some(width), Some(height)) = (number(&w), number(&h)) else { return Err(bad_size()) };
    let slug = slug.to_ascii_lowercase();
    if slug.is_empty() || slug.len() > o.max_slug_bytes || !slug.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err(ProxyError::new(ErrorCode::BadSlug, format!("slug: must be 1 to {} characters of a-z, 0-9 and - (sunglasses-sloth)", o.max_slug_bytes),
        ));
    }
    Ok(Placeholder { width, height, slug })
}

fn bad_option(e: OptionError) -> ProxyError {
    ProxyError::new(ErrorCode::BadOption, format!("option {}: {}", e.option, e.message)).with_header("x-bad-option", e.option)
}

/// The query string, split into the zoo's own parameters and options.
#[derive(Debug, Default)]
pub struct Query {
    pub redo: bool,
    pub expires: Option<String>,
    pub sig: Option<String>,
    options: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            match key {
                "redo" => q.redo = true,
                "expires" => q.expires = Some(decode(value)),
                "sig" => q.sig = Some(decode(value)),
                _ => q.options.push((decode(key), decode(value))),
            }
        }
        q
    }

    /// The options among the parameters.
    pub fn transform(&self) -> Result<Transform, ProxyError> {
        let mut t = Transform::default();
        for (key, value) in &self.options {
            t.set(key, value).map_err(bad_option)?;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> Options {
        toml::from_str("").unwrap()
    }

    fn target(path: &str) -> Result<Target, ProxyError> {
        parse(path, &options())
    }

    #[test]
    fn case_and_trailing_slashes_make_one_canonical_image() {
        let Ok(Target::Placeholder(p, _)) = target("/800X600/Sloth/") else { panic!() };
        assert_eq!(p.canonical(), "/800x600/sloth");
        assert_eq!(target("/800x600/sloth").unwrap(), Target::Placeholder(p, Transform::default()));
        assert_eq!(target("/").unwrap(), Target::Gallery);
    }

    #[test]
    fn each_bad_part_is_named() {
        for (path, code) in [
            ("/800/sloth", "bad_size"),
            ("/800x/sloth", "bad_size"),
            ("/0x600/sloth", "bad_size"),
            ("/15x600/sloth", "bad_size"),
            ("/800x2049/sloth", "bad_size"),
            ("/+800x600/sloth", "bad_size"),
            ("/800x600x5/sloth", "bad_size"),
            ("/NaNxNaN/sloth", "bad_size"),
            ("/800x600/sloth_bear", "bad_slug"),
            ("/800x600/sl%20oth", "bad_slug"),
            (&format!("/800x600/{}", "a".repeat(65)), "bad_slug"),
            ("/cdn-cgi/image/width=0/800x600/sloth", "bad_option"),
            ("/cdn-cgi/image/width=10/https:/evil.example/x.png", "bad_source"),
            ("/cdn-cgi/image//800x600/sloth", "bad_option"),
            ("/800x600/sloth/extra", "not_found"),
        ] {
            assert_eq!(target(path).unwrap_err().code.as_str(), code, "{path}");
        }
    }

    #[test]
    fn the_query_separates_options_from_the_zoo_parameters() {
        let q = Query::parse(Some("width=200&redo&expires=5&sig=ab&blur=3"));
        assert!(q.redo);
        assert_eq!((q.expires.as_deref(), q.sig.as_deref()), (Some("5"), Some("ab")));
        let t = q.transform().unwrap();
        assert_eq!((t.width, t.blur), (Some(200), Some(3.0)));
        assert_eq!(Query::parse(Some("zoom=2")).transform().unwrap_err().code, ErrorCode::BadOption);
    }
}
