//! Git smart HTTP and Git LFS through a proxy (gitprotocol-http, the LFS
//! batch API): which requests they are, and what their responses need on
//! the way back. Bodies are never touched: `Content-Type`,
//! `Content-Encoding: gzip` requests and `Git-Protocol` pass as they are,
//! and packs stream both ways.

use base64::Engine;
use serde_json::Value;

use super::{ProxyError, headers};
use crate::platform::{Body, Headers, Response, header};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitRoute {
    /// `…/info/refs?service=…`: the ref advertisement.
    InfoRefs,
    /// `POST …/git-upload-pack`: a clone or fetch.
    UploadPack,
    /// `POST …/git-receive-pack`: a push.
    ReceivePack,
    /// `…/HEAD` (the dumb protocol's one file KohakuHub serves).
    Head,
    /// `…/info/lfs/…`: the LFS batch, verify and locks APIs.
    Lfs,
}

impl GitRoute {
    /// The route of a request path (no query), if it is git or LFS.
    pub fn of(path: &str) -> Option<GitRoute> {
        let (_, rest) = path.split_once(".git/")?;
        Some(match rest {
            "info/refs" => GitRoute::InfoRefs,
            "git-upload-pack" => GitRoute::UploadPack,
            "git-receive-pack" => GitRoute::ReceivePack,
            "HEAD" => GitRoute::Head,
            lfs if lfs.starts_with("info/lfs/") => GitRoute::Lfs,
            _ => return None,
        })
    }

    /// Whether a push is asked for: git asks for auth on these.
    pub fn is_push(self, query: Option<&str>) -> bool {
        self == GitRoute::ReceivePack || (self == GitRoute::InfoRefs && query.is_some_and(|q| q.split('&').any(|p| p == "service=git-receive-pack")))
    }
}

/// An error as this route's client reads it: git shows a `text/plain` body
/// (as `remote:` lines) and nothing else, so its smart-HTTP routes answer
/// errors in plain text; git-lfs reads the JSON `message`.
pub fn error_response<B: Body>(route: GitRoute, e: ProxyError) -> Response<B> {
    match route {
        GitRoute::Lfs => e.into_response(),
        _ => e.into_plain_response(),
    }
}

/// What every git and LFS response gets on its way to the client: never
/// cached by anyone (gitprotocol-http: "Clients MUST NOT reuse or revalidate
/// a cached response"; LFS hrefs are signed per user), and no CORS headers
/// (git ignores them; they only tell browsers what they may not do).
pub fn finish_response<B>(resp: &mut Response<B>) {
    resp.headers.retain(|(n, _)| !n.starts_with("access-control-") && n != "expires" && n != "pragma");
    headers::set(&mut resp.headers, "cache-control", "no-store");
}

/// A git 401 that names no scheme leaves git unable to answer it: it only
/// sends credentials after a `WWW-Authenticate` (git-and-lfs notes §2.6).
/// LFS assumes `Basic` when `LFS-Authenticate` is missing, so only git
/// needs the header added.
pub fn add_challenge<B>(resp: &mut Response<B>, route: GitRoute, realm: &str) {
    if resp.status == 401 && route != GitRoute::Lfs && resp.header("www-authenticate").is_none() {
        resp.headers.push(("www-authenticate".into(), basic_challenge(realm)));
    }
}

pub fn basic_challenge(realm: &str) -> String {
    format!("Basic realm=\"{}\", charset=\"UTF-8\"", realm.replace(['"', '\\'], ""))
}

/// A git-lfs 429 must carry `Retry-After`: git-lfs 3.3 indexes the header
/// without checking and panics (git-and-lfs notes §3.2).
pub fn ensure_retry_after<B>(resp: &mut Response<B>) {
    if resp.status == 429 && resp.header("retry-after").is_none() {
        resp.headers.push(("retry-after".into(), "1".into()));
    }
}

/// `Authorization: Basic user:token` as `Bearer token`, for LFS servers that
/// take only bearer tokens while git-lfs (through a credential helper) sends
/// Basic. Anything else is left alone.
pub fn basic_as_bearer(request: &mut Headers) {
    let Some(value) = header(request, "authorization") else { return };
    let Some((scheme, encoded)) = value.split_once(' ') else { return };
    if !scheme.eq_ignore_ascii_case("basic") {
        return;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return };
    let Some(token) = String::from_utf8(decoded).ok().and_then(|d| d.split_once(':').map(|(_, t)| t.to_owned())) else { return };
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()) {
        headers::set(request, "authorization", format!("Bearer {token}"));
    }
}

/// Rewrites an LFS batch response's URLs: every action's `href`, and every
/// action `header` value that is a URL (KohakuHub's multipart uploads put
/// one presigned part URL per header). `expires_*` and other headers stay.
pub fn rewrite_lfs_batch(json: &mut Value, public: &dyn Fn(&str) -> Option<String>) {
    let mut url = |v: &mut Value| {
        if let Some(new) = v.as_str().and_then(public) {
            *v = Value::String(new);
        }
    };
    let objects = json.get_mut("objects").and_then(Value::as_array_mut).into_iter().flatten();
    for action in objects.filter_map(|o| o.get_mut("actions")?.as_object_mut()).flat_map(|a| a.values_mut()) {
        action.get_mut("href").into_iter().for_each(&mut url);
        let header_values = action.get_mut("header").and_then(Value::as_object_mut).into_iter().flat_map(|h| h.values_mut());
        header_values.filter(|v| v.as_str().is_some_and(|s| s.starts_with("http://") || s.starts_with("https://"))).for_each(&mut url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_and_lfs_routes_are_recognised_by_path() {
        assert_eq!(GitRoute::of("/alice/m.git/info/refs"), Some(GitRoute::InfoRefs));
        assert_eq!(GitRoute::of("/alice/m.git/git-upload-pack"), Some(GitRoute::UploadPack));
        assert_eq!(GitRoute::of("/alice/m.git/git-receive-pack"), Some(GitRoute::ReceivePack));
        assert_eq!(GitRoute::of("/alice/m.git/HEAD"), Some(GitRoute::Head));
        assert_eq!(GitRoute::of("/datasets/alice/d.git/info/lfs/objects/batch"), Some(GitRoute::Lfs));
        assert_eq!(GitRoute::of("/alice/m.git/objects/info/packs"), None);
        assert_eq!(GitRoute::of("/api/models/alice/m"), None);
        assert!(GitRoute::InfoRefs.is_push(Some("service=git-receive-pack")));
        assert!(!GitRoute::InfoRefs.is_push(Some("service=git-upload-pack")));
    }

    #[test]
    fn basic_credentials_become_a_bearer_token() {
        let mut h: Headers = vec![("authorization".into(), "Basic YWxpY2U6a2h1Yl90b2tlbg==".into())];
        basic_as_bearer(&mut h);
        assert_eq!(h, vec![("authorization".into(), "Bearer khub_token".to_owned())]);
        let mut bearer: Headers = vec![("authorization".into(), "Bearer x".into())];
        basic_as_bearer(&mut bearer);
        assert_eq!(bearer[0].1, "Bearer x");
        let mut broken: Headers = vec![("authorization".into(), "Basic !!!".into())];
        basic_as_bearer(&mut broken);
        assert_eq!(broken[0].1, "Basic !!!");
    }

    #[test]
    fn a_git_401_without_a_challenge_gets_one_and_lfs_is_left_alone() {
        let mut r: Response<()> = Response { status: 401, headers: vec![], body: None };
        add_challenge(&mut r, GitRoute::ReceivePack, "Hub \"x\"");
        assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"Hub x\", charset=\"UTF-8\""));
        let mut lfs: Response<()> = Response { status: 401, headers: vec![], body: None };
        add_challenge(&mut lfs, GitRoute::Lfs, "Hub");
        assert!(lfs.header("www-authenticate").is_none());
    }

    #[test]
    fn lfs_hrefs_and_multipart_part_urls_are_rewritten_and_the_rest_kept() {
        let mut json: Value = serde_json::from_str(
            r#"{"objects":[{"oid":"a","size":1,"actions":{"upload":{"href":"http://s3/x?sig=1","header":{"chunk_size":"5","1":"http://s3/x?part=1","upload_id":"u"},"expires_in":60}}}]}"#,
        )
        .unwrap();
        rewrite_lfs_batch(&mut json, &|u| u.strip_prefix("http://s3").map(|r| format!("https://edge/_objects{r}")));
        let upload = &json["objects"][0]["actions"]["upload"];
        assert_eq!(upload["href"], "https://edge/_objects/x?sig=1");
        assert_eq!(upload["header"]["1"], "https://edge/_objects/x?part=1");
        assert_eq!(upload["header"]["upload_id"], "u");
        assert_eq!(upload["expires_in"], 60);
    }
}
