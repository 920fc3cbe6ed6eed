//! The phases' part of the store ([`store`](super::store)): answering from
//! what is kept, noting what to keep, and a file the hub redirects to,
//! answered by the mirror.

use super::policy;
use super::store::{self, Kept, LinkedFile, StoreOptions};
use super::{Ctx, HfMirror, Keeping, has_credentials};
use crate::platform::{Platform, Request, Response, header};
use crate::proxy::cache::CacheResult;
use crate::proxy::{ErrorCode, Method, ProxyError, Session};
use super::hosts::Upstream;

/// A file's answer and what the store did for it; `None`: the hub's
/// redirect goes to the client as it is.
pub(super) type FileAnswer<B> = Option<(Response<B>, CacheResult)>;

impl HfMirror<'_> {
    /// With a store: a request whose answer is kept is answered from it
    /// while the kept answer stands (or always, offline), and otherwise
    /// noted so that the hub's answer is kept. Offline, nothing else is
    /// answered. A request with credentials may be given a kept answer
    /// (one the hub gave without them), but its own is never kept.
    pub(super) fn answer_from_store<P: Platform>(&self, s: &Session<P>, ctx: &mut Ctx, store: &StoreOptions) -> Result<Option<Response<P::Body>>, ProxyError> {
        let target = ctx.routed()?;
        let offline = || ProxyError::new(ErrorCode::NotStoredOffline, "this mirror is offline and has not stored what was asked for");
        let kept_as = match &target.upstream {
            Upstream::Hub => store::lifetime(&target.path).map(|lifetime| (lifetime, store::answer_key(&self.options.hub, &target.path))),
            Upstream::Host(host) => store::xet_answer(host, &target.path, header(&s.headers, "range")),
        };
        let Some((lifetime, key)) = kept_as.filter(|_| s.method.reads()) else {
            // Not one of the answers kept by URL: an LFS object, kept by its oid?
            if let Some(answer) = self.lfs_download(s, ctx, store)? {
                return Ok(Some(answer));
            }
            return if store.offline { Err(offline()) } else { Ok(None) };
        };
        let kept = store::look_up(s.platform, &key).filter(|k| k.answers(&s.method));
        let stands = kept.as_ref().is_some_and(|k| store.offline || (k.stands(lifetime, s.platform.now_ms(), store.revalidate_seconds) && self.file_kept_for(s, k)));
        // The Xet token a CAS server is sent is the one its reconstruction is
        // for (the hub's answer without credentials gave it), not the user's.
        let anonymous = !has_credentials(&s.headers) || self.options.sends_credentials(&target.upstream) && target.upstream != Upstream::Hub;
        // A partial answer is kept only under a key that names its range (Xet's).
        let whole = target.upstream != Upstream::Hub || header(&s.headers, "range").is_none();
        let keep = anonymous && whole && self.keeps_repo_of(&target.path) && !self.is_private_xet(s, &target.upstream, &target.path);
        // A kept answer at a branch that no longer stands is asked about
        // with its ETag (huggingface.co answers `resolve` so with a 304),
        // unless the client asks its own conditional question.
        let conditional = ["if-none-match", "if-modified-since"].iter().any(|h| header(&s.headers, h).is_some());
        let revalidating = kept
            .as_ref()
            .filter(|k| lifetime == store::Lifetime::Revalidated && !stands && !conditional && self.file_kept_for(s, k))
            .and_then(|k| header(&k.headers, "etag").map(str::to_owned));
        ctx.keeping = Some(Keeping { key, kept, keep, revalidating });
        if stands && let Some(answer) = self.answer_kept(s, ctx, CacheResult::Hit) {
            return answer.map(Some);
        }
        if store.offline { Err(offline()) } else { Ok(None) }
    }

    /// Notes the downloads an LFS batch answer lists as anyone's to read
    /// when the request had no credentials (for [`Self::lfs_download`]:
    /// a download's URL names its oid, but not whether a client without
    /// the hub's word may have it), for as long as a kept `main` stands.
    pub(super) fn note_lfs_downloads<P: Platform>(&self, s: &Session<P>, store: &StoreOptions, path: &str, batch: &[u8]) {
        if has_credentials(&s.headers) || !self.keeps_repo_of(path) {
            return;
        }
        let Ok(batch) = serde_json::from_slice::<serde_json::Value>(batch) else { return };
        let downloads = batch["objects"].as_array().into_iter().flatten().filter(|o| o["actions"]["download"].is_object());
        for object in downloads {
            if let (Some(oid), Some(size)) = (object["oid"].as_str().filter(|o| store::is_sha256(o)), object["size"].as_u64()) {
                let ttl = store.revalidate_seconds.max(60);
                let _ = s.platform.kv_set(&store::lfs_download_key(&oid.to_ascii_lowercase()), size.to_string().as_bytes(), Some(ttl));
            }
        }
    }

    /// Notes the Xet token the hub gave a request with credentials as a
    /// private repo's when the hub gives none for it without them (unless
    /// the route keeps private files): what the CAS answers to it, and the
    /// xorbs that lists, are then not kept ([`Self::is_private_xet`]).
    pub(super) fn note_private_xet_token<P: Platform>(&self, s: &Session<P>, store: &StoreOptions, path: &str, answer: &[u8]) {
        if store.private_files || !has_credentials(&s.headers) {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(answer) else { return };
        let Some(token) = answer["accessToken"].as_str() else { return };
        if self.readable_by_anyone(s, "GET", path).unwrap_or(false) {
            return;
        }
        // For as long as the token lives (huggingface.co's: an hour or so).
        let now = s.platform.now_ms() / 1000;
        let ttl = answer["exp"].as_u64().map_or(3600, |exp| exp.saturating_sub(now)).clamp(60, 86_400);
        let _ = s.platform.kv_set(&store::private_xet_token_key(token), b"1", Some(ttl as u32));
    }

    /// Notes the xorbs a CAS reconstruction for a private repo's file lists.
    pub(super) fn note_private_xorbs<P: Platform>(&self, s: &Session<P>, answer: &[u8]) {
        let Some(token) = bearer(s) else { return };
        if !matches!(s.platform.kv_get(&store::private_xet_token_key(token)), Ok(Some(_))) {
            return;
        }
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(answer) else { return };
        // v1 lists them under `fetch_info`, v2 under `xorbs`, by hash.
        let xorbs = ["fetch_info", "xorbs"].into_iter().filter_map(|map| answer[map].as_object()).flat_map(|m| m.keys());
        for xorb in xorbs.filter(|x| store::is_sha256(x)) {
            let _ = s.platform.kv_set(&store::private_xorb_key(&xorb.to_ascii_lowercase()), b"1", Some(86_400));
        }
    }

    /// Whether a Xet request is for a private repo's file: a CAS request
    /// with a token noted private, or a xorb a reconstruction for one listed.
    fn is_private_xet<P: Platform>(&self, s: &Session<P>, upstream: &Upstream, path: &str) -> bool {
        if *upstream == Upstream::Hub {
            return false;
        }
        let noted = match store::xorb_of(path) {
            Some(xorb) => store::private_xorb_key(&xorb.to_ascii_lowercase()),
            None => match bearer(s) {
                Some(token) => store::private_xet_token_key(token),
                None => return false,
            },
        };
        // A store that cannot say keeps nothing: it may be private.
        !matches!(s.platform.kv_get(&noted), Ok(None))
    }

    /// A GET of an LFS object on a CDN host (its URL ends with its oid)
    /// that an anonymous batch answer listed: answered as a `resolve`
    /// redirect to it is ([`Self::file_answer`]), from the store or
    /// fetched and kept. `None`: proxied as any CDN request.
    fn lfs_download<P: Platform>(&self, s: &Session<P>, ctx: &mut Ctx, store: &StoreOptions) -> Result<Option<Response<P::Body>>, ProxyError> {
        let target = ctx.routed()?;
        let Upstream::Host(host) = &target.upstream else { return Ok(None) };
        let bare = target.path.split('?').next().unwrap_or_default();
        let oid = bare.rsplit('/').next().filter(|oid| store::is_sha256(oid)).map(str::to_ascii_lowercase);
        let Some(oid) = oid.filter(|_| s.method == Method::Get && !has_credentials(&s.headers)) else { return Ok(None) };
        let noted = s.platform.kv_get(&store::lfs_download_key(&oid)).ok().flatten();
        let Some(size) = noted.and_then(|size| String::from_utf8(size).ok()?.parse().ok()) else { return Ok(None) };
        let redirect = Response { status: 302, headers: vec![("location".into(), format!("https://{host}{}", target.path))], body: None };
        let path = target.path.clone();
        let Some((answer, result)) = self.file_answer(s, store, &LinkedFile { sha256: oid, size }, &redirect, &path)? else { return Ok(None) };
        ctx.kept_result = Some(result);
        Ok(Some(answer))
    }

    /// The repo a hub request names, if any.
    pub(super) fn repo(&self, ctx: &Ctx) -> Option<String> {
        ctx.target.as_ref().filter(|t| t.upstream == Upstream::Hub).and_then(|t| policy::repo_of(&t.path))
    }

    /// Whether the store's rules let it keep what the hub's `path` is for.
    fn keeps_repo_of(&self, path: &str) -> bool {
        let rules = self.options.store.as_ref().and_then(|st| st.repos.as_ref());
        rules.is_none_or(|rules| policy::repo_of(path).is_none_or(|repo| rules.admits(&repo)))
    }

    /// Whether the hub answers `method` of `path` without credentials too
    /// (a public repo's).
    fn readable_by_anyone<P: Platform>(&self, s: &Session<P>, method: &str, path: &str) -> Result<bool, ProxyError> {
        let url = format!("{}{path}", self.options.upstream_base(&Upstream::Hub));
        let request = Request { method: method.into(), url, headers: vec![("accept-encoding".into(), "identity".into())], body: None };
        let answer = s.platform.send(request, Some(self.options.timeout_ms)).map_err(|e| ProxyError::upstream(&e))?;
        Ok((200..400).contains(&answer.status))
    }

    /// Whether a kept answer can be given without the hub: a GET's
    /// redirect to a file only once the file is kept (its signed URL has
    /// expired by now; the hub signs a new one).
    fn file_kept_for<P: Platform>(&self, s: &Session<P>, kept: &Kept) -> bool {
        let redirect = Response::<P::Body> { status: kept.status, headers: kept.headers.clone(), body: None };
        match LinkedFile::of(&redirect).filter(|_| s.method == Method::Get) {
            Some(file) => matches!(s.platform.blob_head(&store::file_key(&file.sha256)), Ok(Some(_))),
            None => true,
        }
    }

    /// The kept answer, made the client's as a live one is; `None` if
    /// nothing is kept or the store fails.
    pub(super) fn answer_kept<P: Platform>(&self, s: &Session<P>, ctx: &mut Ctx, result: CacheResult) -> Option<Result<Response<P::Body>, ProxyError>> {
        let keeping = ctx.keeping.as_ref()?;
        let kept = keeping.kept.as_ref()?;
        let resp = store::open(s.platform, &keeping.key, kept, &s.method)?;
        ctx.kept_result = Some(result);
        Some(self.finish(s, ctx, resp))
    }

    /// A GET the hub redirects to a file it names by sha256, answered by
    /// the mirror: from the store (a range as a 206), or fetched from the
    /// CDN and kept as it passes to the client. `None`: the redirect goes
    /// to the client as it is (a range of a file not kept, one too large).
    pub(super) fn file_answer<P: Platform>(&self, s: &Session<P>, store: &StoreOptions, file: &LinkedFile, redirect: &Response<P::Body>, path: &str) -> Result<FileAnswer<P::Body>, ProxyError> {
        let key = store::file_key(&file.sha256);
        let range = match store::byte_range(header(&s.headers, "range"), file.size) {
            Some(Err(())) => return Ok(Some((unsatisfiable(file.size), CacheResult::Hit))),
            Some(Ok(range)) => Some(range),
            None => None,
        };
        if let Ok(Some((object, body))) = s.platform.blob_get(&key, range) {
            return Ok(Some((store::file_response(&redirect.headers, &object.metadata, object.size, range, Some(body)), CacheResult::Hit)));
        }
        if store.offline {
            return Err(ProxyError::new(ErrorCode::NotStoredOffline, "this mirror is offline and has not stored this file"));
        }
        if range.is_some() || file.size > store.max_file_bytes || !store::fits(store.max_bytes, file.size) || !self.keeps_repo_of(path) {
            return Ok(None);
        }
        // A private or gated repo's file is kept only if the route says so;
        // a request with credentials is for one unless the hub answers the
        // same question without them.
        if has_credentials(&s.headers) && !store.private_files && !self.readable_by_anyone(s, "HEAD", path)? {
            return Ok(None);
        }
        // One fetch per file: a request that finds another one fetching it
        // waits for it to be kept. A store that cannot take the lease still
        // lets this request fetch: one extra download beats none.
        let (lease, lease_seconds) = store::fill_lease(&file.sha256, file.size);
        if !s.platform.kv_set_if_absent(&lease, b"fetching", Some(lease_seconds)).unwrap_or(true) {
            let deadline = s.platform.now_ms() + u64::from(store.fill_wait_ms);
            let mut pause = 100;
            while s.platform.now_ms() < deadline {
                s.platform.sleep_ms(pause);
                pause = (pause * 2).min(1000);
                if let Ok(Some((object, body))) = s.platform.blob_get(&key, None) {
                    return Ok(Some((store::file_response(&redirect.headers, &object.metadata, object.size, None, Some(body)), CacheResult::Hit)));
                }
            }
            // Still not kept (the other fetch is slow, or failed and cannot
            // let go of its lease): fetch it here, and keep it too; a second
            // copy of the same bytes replaces the first harmlessly.
        }
        let Some((upstream, rest)) = redirect.header("location").and_then(|l| self.options.locate(l)) else { return Ok(None) };
        let url = format!("{}{rest}", self.options.upstream_base(&upstream));
        let request = Request { method: "GET".into(), url, headers: vec![("accept-encoding".into(), "identity".into())], body: None };
        let cdn = s.platform.send(request, Some(self.options.timeout_ms)).map_err(|e| ProxyError::upstream(&e))?;
        let whole = cdn.status == 200 && cdn.header("content-length").and_then(|l| l.parse().ok()) == Some(file.size);
        let Some(body) = cdn.body.filter(|_| whole) else {
            // The CDN's refusal (an expired signature, say) is for the client to see, from the redirect.
            return Ok(None);
        };
        store::make_room(s.platform, store.max_bytes, file.size);
        let metadata = store::file_metadata(&cdn.headers);
        let body = s.platform.blob_put_through(&key, body, file.size, Some(&file.sha256), &metadata);
        Ok(Some((store::file_response(&redirect.headers, &metadata, file.size, None, Some(body)), CacheResult::Miss)))
    }
}

/// The bearer token a request carries (on a CAS host, a Xet token).
fn bearer<'s, P: Platform>(s: &'s Session<P>) -> Option<&'s str> {
    let value = header(&s.headers, "authorization")?;
    value.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case("bearer ")).map(|_| value[7..].trim())
}

/// `416` for a range past a file's end.
fn unsatisfiable<B>(size: u64) -> Response<B> {
    Response { status: 416, headers: vec![("content-range".into(), format!("bytes */{size}"))], body: None }
}
