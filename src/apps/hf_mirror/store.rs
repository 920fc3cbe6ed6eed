//! What hf-mirror keeps in the host's blob store (`[route.hf-mirror.store]`,
//! olah's idea at the edge): the hub's answers to what `huggingface_hub`
//! asks before it downloads (repo info, listings, each file's `resolve`
//! metadata), served again while they stand and whenever the hub fails;
//! and files by their sha256, so a team downloads each one once.
//!
//! An answer is kept as the hub gave it (status, headers, body) and goes
//! through the same rewriting as a live one when it is served, so it fits
//! whichever address the client came in on.

use serde::Deserialize;

use crate::platform::{BlobObject, Body, Headers, Platform, Response, header};
use crate::proxy::Method;
use crate::proxy::blob_store::sha256_hex;
use crate::proxy::headers;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreOptions {
    /// How long an answer for a branch or tag (`main`) is served before
    /// the hub is asked again; answers at a commit hash never change.
    #[serde(default = "default_revalidate_seconds")]
    pub revalidate_seconds: u32,
    /// Never contact the hub or its CDN: serve what is stored, and
    /// `not_stored_offline` for anything else.
    #[serde(default)]
    pub offline: bool,
    /// The largest file kept; a larger one passes through unkept.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// The most bytes kept in all, on every host: before a file (or a Xet
    /// range) is kept, what was used least recently goes until the store
    /// with it is under 90% of this ([`make_room`]). None: the host's own
    /// bound (`--blob-max-bytes`, R2's lifecycle rules) is the only one.
    pub max_bytes: Option<u64>,
    /// How long a request for a file another request is fetching waits for
    /// it to be kept, before it fetches (and keeps) the file itself. Under
    /// huggingface_hub's 10 s read timeout (`HF_HUB_DOWNLOAD_TIMEOUT`).
    #[serde(default = "default_fill_wait_ms")]
    pub fill_wait_ms: u32,
    /// Keep the files of private and gated repos too. Each is still served
    /// only to a request the hub has just answered with its redirect (so
    /// the requester's token may read it), never from a kept answer.
    #[serde(default)]
    pub private_files: bool,
    /// The repos whose files and answers are kept; every repo if absent.
    pub repos: Option<super::policy::RepoRules>,
}

fn default_fill_wait_ms() -> u32 {
    8_000
}

fn default_revalidate_seconds() -> u32 {
    300
}
fn default_max_file_bytes() -> u64 {
    // What huggingface_hub downloads over plain HTTP at most (MAX_HTTP_DOWNLOAD_SIZE).
    50_000_000_000
}

/// How long a kept answer stands without asking the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// At a commit hash (or the resolve cache, which names one): for ever.
    Immutable,
    /// At a branch or tag: `revalidate_seconds`.
    Revalidated,
    /// Only when the upstream fails (or offline): an answer that names
    /// signed URLs or a token, which expire (Xet's token and reconstructions).
    StaleOnly,
}

/// Whether the hub's answer to `path` (with its query) is kept, and how
/// long it stands: repo info and listings by revision, a file's `resolve`
/// metadata, and the resolve cache that serves small files.
pub fn lifetime(path: &str) -> Option<Lifetime> {
    let path = path.split('?').next().unwrap_or_default();
    if path.starts_with("/api/resolve-cache/") {
        return Some(Lifetime::Immutable);
    }
    if path.starts_with("/api/") && path.contains("/xet-read-token/") {
        return Some(Lifetime::StaleOnly);
    }
    let segments: Vec<&str> = path.split('/').collect();
    let api = segments.get(1) == Some(&"api");
    let names = if api { ["revision", "tree"].as_slice() } else { ["resolve"].as_slice() };
    let typed = !api || matches!(segments.get(2), Some(&("models" | "datasets" | "spaces")));
    let revision = segments.windows(2).skip(if api { 3 } else { 2 }).find(|w| names.contains(&w[0])).map(|w| w[1]);
    let revision = revision.filter(|r| !r.is_empty() && typed)?;
    if !api && !path.split("/resolve/").nth(1).is_some_and(|rest| rest.contains('/')) {
        return None; // a resolve URL names a file after its revision
    }
    Some(if is_commit(revision) { Lifetime::Immutable } else { Lifetime::Revalidated })
}

/// A git commit hash: 40 hex digits.
pub fn is_commit(revision: &str) -> bool {
    is_hex(revision, 40)
}

/// A SHA-256 in hex: 64 hex digits.
pub fn is_sha256(text: &str) -> bool {
    is_hex(text, 64)
}

fn is_hex(text: &str, digits: usize) -> bool {
    text.len() == digits && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where the hub's answer to `path` is kept: one key per hub and URL.
pub fn answer_key(hub: &str, path: &str) -> String {
    format!("hf-mirror/answer/{}", sha256_hex(format!("{hub}{path}").as_bytes()))
}

/// Xet's answers that are kept, by the host that gives them (a CAS server
/// or a transfer host), its `path` and the request's `Range`: a file's
/// reconstruction (by file hash; it names signed URLs, so only stale), and
/// a xorb's bytes (by xorb hash, content-addressed: for ever; the signed
/// query is not part of the key).
pub fn xet_answer(host: &str, path: &str, range: Option<&str>) -> Option<(Lifetime, String)> {
    let bare = path.split('?').next().unwrap_or_default();
    let range = range.unwrap_or_default();
    if let Some(xorb) = xorb_of(bare) {
        return Some((Lifetime::Immutable, format!("hf-mirror/xorb/{xorb}/{}", sha256_hex(range.as_bytes()))));
    }
    match bare.split('/').collect::<Vec<_>>().as_slice() {
        ["", "v1" | "v2", "reconstructions", file] if is_sha256(file) => Some((Lifetime::StaleOnly, answer_key(&format!("{host}|{range}"), bare))),
        _ => None,
    }
}

/// Where a file is kept: by its sha256, whichever repo or revision names it.
pub fn file_key(sha256: &str) -> String {
    format!("hf-mirror/sha256/{sha256}")
}

/// Where an LFS object is noted as anyone's to read: an LFS batch answer
/// to a request without credentials listed it for download. Its value is
/// the object's size.
pub fn lfs_download_key(oid: &str) -> String {
    format!("hf-mirror:lfs-download:{oid}")
}

/// Where a Xet token is noted as a private repo's (by the token's sha256:
/// the token itself is a secret): what the CAS answers to it is not kept.
pub fn private_xet_token_key(token: &str) -> String {
    format!("hf-mirror:xet-private-token:{}", sha256_hex(token.as_bytes()))
}

/// Where a xorb is noted as listed for a private repo's file: not kept.
pub fn private_xorb_key(xorb: &str) -> String {
    format!("hf-mirror:xet-private-xorb:{xorb}")
}

/// The xorb a transfer host's `path` fetches from (`/xorbs/default/<hash>`).
pub fn xorb_of(path: &str) -> Option<&str> {
    match path.split('?').next()?.split('/').collect::<Vec<_>>().as_slice() {
        ["", "xorbs", _, xorb] if is_sha256(xorb) => Some(xorb),
        _ => None,
    }
}

/// The key-value lease of the request fetching a file (one fetch per
/// file), and how long it is held: the time to fetch `size` bytes at a
/// slow 10 MB/s, and a margin. The fetching request cannot let go of it
/// (the body goes on after the guest is done), so it runs out.
pub fn fill_lease(sha256: &str, size: u64) -> (String, u32) {
    let seconds = size / 10_000_000 + 30;
    (format!("hf-mirror:fill:{sha256}"), u32::try_from(seconds).unwrap_or(u32::MAX))
}

/// Where every object the mirror keeps lives: what a listing for
/// eviction looks under.
const KEPT_PREFIX: &str = "hf-mirror/";

/// The smallest answer kept under a cap that first makes room for itself.
const ROOM_CHECK_BYTES: u64 = 1 << 20;

/// Whether an object of `size` bytes may be kept under the route's cap.
pub fn fits(cap: Option<u64>, size: u64) -> bool {
    cap.is_none_or(|cap| size <= cap)
}

/// Makes room under the route's cap (`max_bytes`) for an object of
/// `incoming` bytes about to be kept: objects go oldest first (by when
/// they were put or, where the host notes reads, last read) until the
/// store with the new one is under 90% of the cap. Answers kept without a
/// body take no room and stay. A store that cannot list or delete keeps
/// what it has: the cap is then exceeded; a download never fails for it.
pub fn make_room<P: Platform>(p: &P, cap: Option<u64>, incoming: u64) {
    let Some(cap) = cap else { return };
    let mut objects = Vec::new();
    let mut cursor = None;
    loop {
        let Ok(page) = p.blob_list(KEPT_PREFIX, cursor.as_deref(), 1000) else { return };
        objects.extend(page.objects.into_iter().filter(|o| o.size > 0));
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    let mut held: u64 = objects.iter().map(|o| o.size).sum();
    if held + incoming <= cap {
        return;
    }
    objects.sort_by_key(|o| o.used_ms);
    for object in objects {
        if held + incoming <= cap / 10 * 9 {
            break;
        }
        if p.blob_delete(&object.key).is_ok() {
            held -= object.size;
        }
    }
}

/// A kept answer, as its metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub status: u16,
    pub headers: Headers,
    pub stored_ms: u64,
    /// Kept with its body (a GET's), or headers only (a HEAD's, a redirect's).
    pub has_body: bool,
}

const STATUS: &str = ":status";
const STORED_MS: &str = ":stored-ms";
const HAS_BODY: &str = ":has-body";

impl Kept {
    fn from_object(object: BlobObject) -> Option<Kept> {
        let field = |name: &str| object.metadata.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let status = field(STATUS)?.parse().ok()?;
        let stored_ms = field(STORED_MS)?.parse().ok()?;
        let has_body = field(HAS_BODY)? == "1";
        let headers = object.metadata.iter().filter(|(n, _)| !n.starts_with(':')).map(|(n, v)| (n.as_str().into(), v.clone())).collect();
        Some(Kept { status, headers, stored_ms, has_body })
    }

    fn metadata(&self) -> Vec<(String, String)> {
        let mut metadata = vec![(STATUS.into(), self.status.to_string()), (STORED_MS.into(), self.stored_ms.to_string()), (HAS_BODY.into(), if self.has_body { "1" } else { "0" }.into())];
        metadata.extend(self.headers.iter().map(|(n, v)| (n.to_string(), v.clone())));
        metadata
    }

    /// Whether it answers `method`: a HEAD from any kept answer, a GET
    /// from one kept with its body or from a redirect (which has none).
    pub fn answers(&self, method: &Method) -> bool {
        *method == Method::Head || self.has_body || (300..400).contains(&self.status)
    }

    pub fn stands(&self, lifetime: Lifetime, now_ms: u64, revalidate_seconds: u32) -> bool {
        match lifetime {
            Lifetime::Immutable => true,
            Lifetime::Revalidated => now_ms.saturating_sub(self.stored_ms) < u64::from(revalidate_seconds) * 1000,
            Lifetime::StaleOnly => false,
        }
    }
}

/// The kept answer the hub confirmed with a `304` to the `If-None-Match`
/// of its ETag: standing again from now, with the `304`'s headers in place
/// of its own (RFC 9111 4.3.4: `main` may have moved, so `X-Repo-Commit`
/// is the hub's new one). Kept again when it has no body to rewrite; one
/// with a body is revalidated again next time.
pub fn freshen<P: Platform>(p: &P, key: &str, kept: &Kept, not_modified: &Headers) -> Kept {
    const BODY_HEADERS: &[&str] = &["content-length", "content-type", "content-encoding", "transfer-encoding"];
    let mut fresh = kept.clone();
    let updated = not_modified.iter().filter(|(n, _)| !BODY_HEADERS.contains(&n.as_str()));
    for (name, value) in updated {
        fresh.headers.retain(|(n, _)| n != name);
        fresh.headers.push((name.clone(), value.clone()));
    }
    fresh.stored_ms = p.now_ms();
    if !fresh.has_body {
        let _ = p.blob_put(key, P::Body::from_bytes(Vec::new()), 0, None, &fresh.metadata());
    }
    fresh
}

/// The answer kept under `key`, if any. A store that fails is a miss.
pub fn look_up<P: Platform>(p: &P, key: &str) -> Option<Kept> {
    p.blob_head(key).ok().flatten().and_then(Kept::from_object)
}

/// The kept answer as a response, its body read from the store as sent.
pub fn open<P: Platform>(p: &P, key: &str, kept: &Kept, method: &Method) -> Option<Response<P::Body>> {
    let body = match (*method == Method::Get && kept.has_body).then(|| p.blob_get(key, None)) {
        Some(Ok(Some((_, body)))) => Some(body),
        Some(_) => return None,
        None => None,
    };
    Some(Response { status: kept.status, headers: kept.headers.clone(), body })
}

/// Keeps the hub's answer to `method` under `key` (unless the hub marks it
/// private, or it sets a cookie) and gives it back to be sent: a redirect's
/// or a HEAD's headers now, a GET's body as it passes on. `replaces` is
/// what was kept before: a HEAD never replaces an answer kept with its body.
pub fn keep<P: Platform>(p: &P, key: &str, method: &Method, mut resp: Response<P::Body>, replaces: Option<&Kept>, cap: Option<u64>) -> Response<P::Body> {
    let cc = crate::proxy::cache::CacheControl::parse(&resp.headers);
    let private = ["no-store", "private"].iter().any(|d| cc.has(d)) || resp.header("set-cookie").is_some();
    // A 304 answers a conditional request; it is no answer to keep.
    let redirect = (300..400).contains(&resp.status) && resp.status != 304;
    // A 206 only where the key names the range (Xet's xorbs).
    if private || !(matches!(resp.status, 200 | 206) || redirect) {
        return resp;
    }
    let mut kept = Kept { status: resp.status, headers: resp.headers.clone(), stored_ms: p.now_ms(), has_body: false };
    if *method == Method::Head || redirect {
        if replaces.is_some_and(|old| old.has_body) && !redirect {
            return resp;
        }
        let _ = p.blob_put(key, P::Body::from_bytes(Vec::new()), 0, None, &kept.metadata());
        return resp;
    }
    let length = resp.header("content-length").and_then(|l| l.parse::<u64>().ok());
    if let Some(length) = length.filter(|&length| fits(cap, length))
        && let Some(body) = resp.body.take()
    {
        // A listing per small answer (a snapshot's JSON, its small files)
        // would cost more than the room it makes: they count at the next
        // large one.
        if length >= ROOM_CHECK_BYTES {
            make_room(p, cap, length);
        }
        kept.has_body = true;
        resp.body = Some(p.blob_put_through(key, body, length, None, &kept.metadata()));
    }
    resp
}

/// A file the hub redirects to, as its metadata names it: LFS and Xet files
/// carry their sha256 as `X-Linked-Etag` and their size as `X-Linked-Size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedFile {
    pub sha256: String,
    pub size: u64,
}

impl LinkedFile {
    pub fn of<B>(resp: &Response<B>) -> Option<LinkedFile> {
        if !(300..400).contains(&resp.status) {
            return None;
        }
        let etag = resp.header("x-linked-etag")?;
        let sha256 = etag.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
        let size = resp.header("x-linked-size")?.parse().ok()?;
        is_sha256(&sha256).then_some(LinkedFile { sha256, size })
    }
}

/// The headers of the hub's redirect that describe the file (what
/// `huggingface_hub` reads off a `resolve` answer), for the file's own answer.
const FILE_METADATA: &[&str] = &["x-repo-commit", "x-linked-etag", "x-linked-size", "etag", "x-xet-hash", "link"];

/// What is kept with a file: the CDN's description of its bytes.
const FILE_HEADERS: &[&str] = &["content-type", "content-disposition"];

pub fn file_metadata(cdn: &Headers) -> Vec<(String, String)> {
    cdn.iter().filter(|(n, _)| FILE_HEADERS.contains(&n.as_str())).map(|(n, v)| (n.to_string(), v.clone())).collect()
}

/// The file's answer: the hub's metadata for it, the stored description,
/// and its bytes (`range`: first byte and count, a 206).
pub fn file_response<B>(redirect: &Headers, stored: &[(String, String)], size: u64, range: Option<(u64, u64)>, body: Option<B>) -> Response<B> {
    let mut out: Headers = redirect.iter().filter(|(n, _)| FILE_METADATA.contains(&n.as_str())).cloned().collect();
    out.extend(stored.iter().map(|(n, v)| (n.as_str().into(), v.clone())));
    if header(&out, "content-type").is_none() {
        headers::set(&mut out, "content-type", "application/octet-stream");
    }
    headers::set(&mut out, "accept-ranges", "bytes");
    let status = match range {
        Some((first, count)) => {
            headers::set(&mut out, "content-range", format!("bytes {first}-{}/{size}", first + count - 1));
            headers::set(&mut out, "content-length", count.to_string());
            206
        }
        None => {
            headers::set(&mut out, "content-length", size.to_string());
            200
        }
    };
    Response { status, headers: out, body }
}

/// A request's single `Range: bytes=` range of an object of `size` bytes,
/// as its first byte and count; `Some(Err(()))` if none of it exists.
/// Several ranges, or a form this does not read, are answered whole (as
/// RFC 9110 allows a server to).
pub fn byte_range(value: Option<&str>, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value?.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (first, last) = (first.trim(), last.trim());
    let (first, end) = if first.is_empty() {
        let suffix: u64 = last.parse().ok()?;
        (size.saturating_sub(suffix), size)
    } else {
        let first: u64 = first.parse().ok()?;
        let end = if last.is_empty() { size } else { last.parse::<u64>().ok()?.saturating_add(1).min(size) };
        if end < first {
            return None;
        }
        (first, end)
    };
    if first >= size || end == first {
        return Some(Err(()));
    }
    Some(Ok((first, end - first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_304_freshens_the_kept_answer_with_its_headers_and_is_never_kept_itself() {
        use crate::platform::fake::{Bytes, Fake};
        let p = Fake::new(1 << 20);
        let headers = |pairs: &[(&str, &str)]| -> Headers { pairs.iter().map(|(n, v)| ((*n).into(), (*v).to_owned())).collect() };
        let redirect = Response { status: 302, headers: headers(&[("x-repo-commit", "a"), ("etag", "\"e\""), ("location", "https://cdn/old")]), body: None::<Bytes> };
        keep(&p, "k", &Method::Get, redirect, None, None);
        let kept = look_up(&p, "k").expect("a redirect is kept");
        p.now.set(p.now.get() + 600_000);
        // `main` moved; the file did not: the hub's 304 names the new commit.
        let not_modified = headers(&[("x-repo-commit", "b"), ("etag", "\"e\""), ("location", "https://cdn/new"), ("content-length", "0")]);
        let fresh = freshen(&p, "k", &kept, &not_modified);
        assert_eq!(look_up(&p, "k"), Some(fresh.clone()), "kept again");
        assert_eq!(fresh.stored_ms, p.now.get(), "standing from now");
        assert_eq!(header(&fresh.headers, "x-repo-commit"), Some("b"));
        assert_eq!(header(&fresh.headers, "location"), Some("https://cdn/new"));
        assert_eq!(header(&fresh.headers, "content-length"), None, "the 304's body headers are not the answer's");

        let conditional = Response { status: 304, headers: headers(&[("etag", "\"e\"")]), body: None::<Bytes> };
        keep(&p, "other", &Method::Get, conditional, None, None);
        assert_eq!(look_up(&p, "other"), None, "a 304 is no answer to keep");
    }

    #[test]
    fn over_the_cap_what_was_used_least_recently_goes_first_down_to_90_percent() {
        use crate::platform::fake::{Bytes, Fake};
        let p = Fake::new(1 << 20);
        let put = |key: &str, size: usize| {
            p.now.set(p.now.get() + 1000);
            p.blob_put(&format!("{KEPT_PREFIX}{key}"), Bytes(vec![0; size]), size as u64, None, &[]).unwrap();
        };
        put("sha256/old", 300);
        put("answer/a-redirect", 0);
        put("sha256/middle", 300);
        put("sha256/new", 300);
        p.blob_put("image-cache/not-the-mirrors", Bytes(vec![0; 500]), 500, None, &[]).unwrap();
        let kept = || p.blobs.borrow().keys().cloned().collect::<Vec<_>>();

        make_room(&p, Some(1200), 300);
        assert_eq!(kept().len(), 5, "900 held and 300 coming fit 1200");
        make_room(&p, Some(1000), 300);
        assert_eq!(kept(), ["hf-mirror/answer/a-redirect", "hf-mirror/sha256/middle", "hf-mirror/sha256/new", "image-cache/not-the-mirrors"], "the oldest file went: 600 + 300 is 90% of 1000");
        make_room(&p, Some(400), 300);
        assert_eq!(kept(), ["hf-mirror/answer/a-redirect", "image-cache/not-the-mirrors"], "answers without a body take no room and stay");
        assert!(fits(Some(300), 300) && !fits(Some(299), 300) && fits(None, u64::MAX), "a file over the cap is never kept");
    }

    #[test]
    fn answers_before_a_download_are_kept_and_those_at_a_commit_stand_for_ever() {
        assert_eq!(lifetime("/api/models/org/repo/revision/main"), Some(Lifetime::Revalidated));
        assert_eq!(lifetime(&format!("/api/models/org/repo/revision/{SHA}")), Some(Lifetime::Immutable));
        assert_eq!(lifetime(&format!("/api/datasets/org/d/tree/{SHA}/sub?recursive=True")), Some(Lifetime::Immutable));
        assert_eq!(lifetime("/api/models/gpt2/tree/main"), Some(Lifetime::Revalidated));
        assert_eq!(lifetime("/org/repo/resolve/main/config.json"), Some(Lifetime::Revalidated));
        assert_eq!(lifetime(&format!("/datasets/org/d/resolve/{SHA}/data/train.parquet")), Some(Lifetime::Immutable));
        assert_eq!(lifetime(&format!("/api/resolve-cache/models/org/repo/{SHA}/README.md?x=&etag=%22e%22")), Some(Lifetime::Immutable));
        assert_eq!(lifetime("/api/models/org/repo"), None);
        assert_eq!(lifetime("/api/models/org/repo/xet-read-token/main"), Some(Lifetime::StaleOnly), "a token stands in only when the hub fails");
        assert_eq!(lifetime("/org/repo/resolve/main"), None);
        assert_eq!(lifetime("/org/repo.git/info/refs"), None);
    }

    #[test]
    fn xet_reconstructions_are_kept_stale_only_and_xorbs_by_hash_and_range() {
        let h = "a".repeat(64);
        let (lifetime, key) = xet_answer("cas", &format!("/v1/reconstructions/{h}"), Some("bytes=0-99")).unwrap();
        assert_eq!(lifetime, Lifetime::StaleOnly);
        assert_ne!(key, xet_answer("cas", &format!("/v1/reconstructions/{h}"), None).unwrap().1, "each range its own");
        let (lifetime, key) = xet_answer("transfer", &format!("/xorbs/default/{h}?X-Xet-Signed-Range=bytes%3D0-9&Signature=s"), Some("bytes=0-9")).unwrap();
        assert_eq!(lifetime, Lifetime::Immutable);
        assert_eq!(key, xet_answer("other-transfer", &format!("/xorbs/default/{h}?Signature=t"), Some("bytes=0-9")).unwrap().1, "by content, not by signed URL");
        assert_eq!(xet_answer("cas", "/v1/chunks/x", None), None);
    }

    #[test]
    fn a_single_byte_range_is_read_and_anything_else_is_answered_whole() {
        assert_eq!(byte_range(Some("bytes=0-99"), 1000), Some(Ok((0, 100))));
        assert_eq!(byte_range(Some("bytes=900-"), 1000), Some(Ok((900, 100))));
        assert_eq!(byte_range(Some("bytes=-10"), 1000), Some(Ok((990, 10))));
        assert_eq!(byte_range(Some("bytes=990-2000"), 1000), Some(Ok((990, 10))));
        assert_eq!(byte_range(Some("bytes=1000-"), 1000), Some(Err(())));
        assert_eq!(byte_range(Some("bytes=0-1,5-9"), 1000), None);
        assert_eq!(byte_range(Some("items=0-1"), 1000), None);
        assert_eq!(byte_range(None, 1000), None);
    }

    #[test]
    fn a_kept_answer_reads_back_as_it_was_kept() {
        let kept = Kept { status: 302, headers: vec![("x-repo-commit".into(), SHA.into())], stored_ms: 42, has_body: false };
        let object = BlobObject { size: 0, metadata: kept.metadata() };
        assert_eq!(Kept::from_object(object), Some(kept.clone()));
        assert!(kept.answers(&Method::Get), "a redirect answers a GET without a body");
        assert!(kept.stands(Lifetime::Revalidated, 42 + 299_999, 300) && !kept.stands(Lifetime::Revalidated, 42 + 300_000, 300));
        assert!(kept.stands(Lifetime::Immutable, u64::MAX, 300));
    }
}
