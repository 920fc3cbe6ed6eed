//! The conformance probe: a guest of `wit/edgeproxy.wit` that checks, on the
//! host it runs on, every rule the WIT's doc comments state (each marked
//! `[rule: name]` there). `tests/conformance.rs` serves it on every host in
//! place of the core and asks `GET /probe?upstream=URL&closed=URL&broken=URL&now=MS`:
//! `upstream` is the suite's fixture server, `closed` a port nothing listens
//! on, `broken` a response cut short, `now` the test's clock. The answer is JSON, one entry per rule:
//! `{"rule": name, "ok": bool, "why": text}`.
//!
//! Every other export is a stub: `stepwise` always asks to wait, so a
//! stepwise host serves the probe with `handle`.

wit_bindgen::generate!({
    path: "../wit",
    world: "edgeproxy",
});

use edgeproxy::platform::{blob, body::Body, body::BodyError, clock, config, http_client, kv, limiter, types};
use http_client::HttpError;
use exports::edgeproxy::platform::{checker, handler, stepwise};

struct Probe;

impl handler::Guest for Probe {
    fn handle(request: types::Request, _client_ip: Option<String>) -> types::Response {
        let query = request.url.split_once('?').map_or("", |(_, q)| q);
        let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).unwrap_or("").to_owned();
        let at = Fixture { upstream: param("upstream"), closed: param("closed"), broken: param("broken"), test_now: param("now").parse().unwrap_or(0) };
        let results: Vec<serde_json::Value> = RULES
            .iter()
            .map(|(rule, check)| match check(&at) {
                Ok(()) => serde_json::json!({ "rule": rule, "ok": true }),
                Err(why) => serde_json::json!({ "rule": rule, "ok": false, "why": why }),
            })
            .collect();
        respond(200, serde_json::Value::Array(results).to_string())
    }
}

impl stepwise::Guest for Probe {
    fn begin(_: types::Request, _: Option<String>) -> stepwise::Step {
        stepwise::Step::Wait
    }
    fn resume(_: Result<types::Response, http_client::HttpError>) -> Option<types::Response> {
        None
    }
    fn resume_waiting(_: Result<types::Response, http_client::HttpError>) -> types::Response {
        respond(500, "the probe never sends in steps".into())
    }
}

impl checker::Guest for Probe {
    fn check_config(_: String) -> Vec<String> {
        Vec::new()
    }
}

impl Guest for Probe {
    fn init() {}
}

export!(Probe);

fn respond(status: u16, json: String) -> types::Response {
    types::Response { status, headers: vec![("content-type".into(), "application/json".into())], body: Some(Body::new(json.as_bytes())) }
}

/// What the test gives the probe.
struct Fixture {
    upstream: String,
    closed: String,
    /// A response whose body stops short of its `content-length`.
    broken: String,
    test_now: u64,
}

type Check = fn(&Fixture) -> Result<(), String>;

/// Every rule, by the name the WIT gives it.
const RULES: &[(&str, Check)] = &[
    ("kv.absent-is-none", |_| expect(matches!(kv::get(&key("absent")), Ok(None)), "get of a key never set")),
    ("kv.set-then-get", |_| {
        let k = key("set");
        kv::set(&k, b"one", None).map_err(debug)?;
        kv::set(&k, b"two", None).map_err(debug)?;
        expect(kv::get(&k).ok().flatten().as_deref() == Some(b"two".as_slice()), "get after two sets gives the second")
    }),
    ("kv.delete", |_| {
        let k = key("delete");
        kv::delete(&k).map_err(|e| format!("deleting an absent key: {e:?}"))?;
        kv::set(&k, b"x", None).map_err(debug)?;
        kv::delete(&k).map_err(debug)?;
        expect(matches!(kv::get(&k), Ok(None)), "get after delete")
    }),
    ("kv.ttl-expires", |_| {
        let k = key("ttl");
        kv::set(&k, b"x", Some(1)).map_err(debug)?;
        expect(kv::get(&k).ok().flatten().as_deref() == Some(b"x".as_slice()), "get at once after a set with a TTL of 1 s")?;
        clock::sleep_ms(1500);
        expect(matches!(kv::get(&k), Ok(None)), "get 1.5 s after a set with a TTL of 1 s")
    }),
    ("kv.set-if-absent", |_| {
        let k = key("lease");
        expect(matches!(kv::set_if_absent(&k, b"a", None), Ok(true)), "first set-if-absent")?;
        expect(matches!(kv::set_if_absent(&k, b"b", None), Ok(false)), "second set-if-absent")?;
        expect(kv::get(&k).ok().flatten().as_deref() == Some(b"a".as_slice()), "the first value stays")?;
        kv::delete(&k).map_err(debug)?;
        expect(matches!(kv::set_if_absent(&k, b"c", None), Ok(true)), "set-if-absent after delete")
    }),
    ("kv.set-if-absent-after-expiry", |_| {
        let k = key("lease-ttl");
        expect(matches!(kv::set_if_absent(&k, b"a", Some(1)), Ok(true)), "first set-if-absent")?;
        clock::sleep_ms(1500);
        expect(matches!(kv::set_if_absent(&k, b"b", Some(1)), Ok(true)), "set-if-absent after the first expired")
    }),
    ("kv.key-limits", |_| {
        let max = kv::limits().max_key_bytes as usize;
        expect(max >= 256, &format!("max-key-bytes is {max}, under 256"))?;
        expect(matches!(kv::get(""), Err(kv::KvError::InvalidKey(_))), "an empty key")?;
        expect(matches!(kv::get(&"k".repeat(max + 1)), Err(kv::KvError::InvalidKey(_))), "a key one byte over max-key-bytes")?;
        let longest = "k".repeat(max);
        kv::set(&longest, b"x", Some(60)).map_err(|e| format!("a key of max-key-bytes: {e:?}"))?;
        kv::delete(&longest).map_err(debug)
    }),
    ("kv.too-large", |_| {
        let max = kv::limits().max_value_bytes;
        // A larger value would cost the probe more memory than it proves.
        if max > 32 << 20 {
            return expect(max < u64::MAX, "max-value-bytes is given");
        }
        let k = key("large");
        expect(matches!(kv::set(&k, &vec![0; max as usize + 1], None), Err(kv::KvError::TooLarge(n)) if n == max), "a value one byte over max-value-bytes")?;
        expect(matches!(kv::get(&k), Ok(None)), "nothing stored")
    }),
    ("blob.absent-is-none", |_| {
        let k = blob_key("absent");
        expect(matches!(blob::get(&k, None), Ok(None)), "get of a key never put")?;
        expect(matches!(blob::head(&k), Ok(None)), "head of a key never put")
    }),
    ("blob.put-then-get", |_| {
        let k = blob_key("put");
        blob::put(&k, Body::new(b"an older object"), 15, None, &[]).map_err(debug)?;
        let metadata = vec![("etag".to_owned(), "\"e1\"".to_owned()), ("x-linked-size".to_owned(), BLOB_LEN.to_string())];
        blob::put(&k, Body::new(&blob_bytes()), BLOB_LEN, Some(BLOB_SHA256), &metadata).map_err(|e| format!("a put with the right size and sha256: {e:?}"))?;
        let (object, body) = blob::get(&k, None).map_err(debug)?.ok_or("get after put: none")?;
        expect(object.size == BLOB_LEN && object.metadata == metadata, &format!("the object as put, not {object:?}"))?;
        expect(body.known_length() == Some(BLOB_LEN), "the body's known length is the object's size")?;
        expect(read_all(Some(body))? == blob_bytes(), "the bytes as put (the second put replaced the first)")?;
        blob::delete(&k).map_err(debug)
    }),
    ("blob.mismatch-stores-nothing", |f| {
        let k = blob_key("mismatch");
        expect(matches!(blob::put(&k, Body::new(b"short"), 6, None, &[]), Err(blob::BlobError::Mismatch(_))), "a body shorter than its size")?;
        expect(matches!(blob::put(&k, Body::new(b"longer"), 5, None, &[]), Err(blob::BlobError::Mismatch(_))), "a body longer than its size")?;
        let wrong = "0".repeat(64);
        expect(matches!(blob::put(&k, Body::new(&blob_bytes()), BLOB_LEN, Some(&wrong), &[]), Err(blob::BlobError::Mismatch(_))), "a body with another sha256")?;
        let broken = send("GET", &f.broken, Vec::new(), None, None).map_err(debug)?;
        let length = header(&broken.headers, "content-length").and_then(|l| l.parse().ok()).ok_or("the broken fixture declares its length")?;
        let body = broken.body.ok_or("the broken fixture has a body")?;
        expect(matches!(blob::put(&k, body, length, None, &[]), Err(blob::BlobError::Mismatch(_))), "a body that breaks off")?;
        expect(matches!(blob::head(&k), Ok(None)), "nothing stored")
    }),
    ("blob.put-through", |f| {
        let k = blob_key("through");
        let passed = blob::put_through(&k, Body::new(&blob_bytes()), BLOB_LEN, Some(BLOB_SHA256), &[]);
        expect(passed.known_length() == Some(BLOB_LEN), "the body passed on keeps its known length")?;
        expect(matches!(blob::head(&k), Ok(None)), "nothing visible before the body passed on is read")?;
        expect(read_all(Some(passed))? == blob_bytes(), "the body passed on is the content")?;
        let (object, body) = blob::get(&k, None).map_err(debug)?.ok_or("get once the body passed on was read to its end: none")?;
        expect(object.size == BLOB_LEN && read_all(Some(body))? == blob_bytes(), "the object as passed on")?;
        blob::delete(&k).map_err(debug)?;

        let wrong = "0".repeat(64);
        let passed = blob::put_through(&k, Body::new(&blob_bytes()), BLOB_LEN, Some(&wrong), &[]);
        expect(read_all(Some(passed))? == blob_bytes(), "a body that does not match still passes on whole")?;
        expect(matches!(blob::head(&k), Ok(None)), "a body with another sha256 stores nothing")?;
        let passed = blob::put_through(&k, Body::new(&blob_bytes()), BLOB_LEN, None, &[]);
        expect(matches!(passed.read(1000), Ok(Some(_))), "a first read")?;
        drop(passed);
        expect(matches!(blob::head(&k), Ok(None)), "a body not read to its end stores nothing")?;
        let broken = send("GET", &f.broken, Vec::new(), None, None).map_err(debug)?;
        let length = header(&broken.headers, "content-length").and_then(|l| l.parse().ok()).ok_or("the broken fixture declares its length")?;
        let passed = blob::put_through(&k, broken.body.ok_or("the broken fixture has a body")?, length, None, &[]);
        expect(read_all(Some(passed)).is_err(), "a body that breaks off breaks off where it is passed on")?;
        expect(matches!(blob::head(&k), Ok(None)), "a body that breaks off stores nothing")?;
        let passed = blob::put_through("an invalid key", Body::new(b"still passed on"), 15, None, &[]);
        expect(read_all(Some(passed))? == b"still passed on", "a body the store cannot take passes on all the same")
    }),
    ("blob.range", |_| {
        let k = blob_key("range");
        blob::put(&k, Body::new(&blob_bytes()), BLOB_LEN, None, &[]).map_err(debug)?;
        let range = |first: u64, count: u64| -> Result<(u64, Vec<u8>), String> {
            let (object, body) = blob::get(&k, Some((first, count))).map_err(debug)?.ok_or("get of a range: none")?;
            Ok((object.size, read_all(Some(body))?))
        };
        let bytes = blob_bytes();
        expect(range(1000, 20)? == (BLOB_LEN, bytes[1000..1020].to_vec()), "20 bytes from 1000, and the object's whole size")?;
        expect(range(999_990, 1_000_000)?.1 == bytes[999_990..1_999_990], "a megabyte from the middle")?;
        expect(range(BLOB_LEN - 5, 100)?.1 == bytes[bytes.len() - 5..], "a range past the end is clamped to it")?;
        blob::delete(&k).map_err(debug)
    }),
    ("blob.head", |_| {
        let k = blob_key("head");
        let metadata = vec![("x-repo-commit".to_owned(), "abc".to_owned())];
        blob::put(&k, Body::new(b"twelve bytes"), 12, None, &metadata).map_err(debug)?;
        let object = blob::head(&k).map_err(debug)?.ok_or("head after put: none")?;
        expect(object.size == 12 && object.metadata == metadata, &format!("the object as put, not {object:?}"))?;
        blob::delete(&k).map_err(debug)
    }),
    ("blob.delete", |_| {
        let k = blob_key("delete");
        blob::delete(&k).map_err(|e| format!("deleting an absent key: {e:?}"))?;
        blob::put(&k, Body::new(b"x"), 1, None, &[]).map_err(debug)?;
        blob::delete(&k).map_err(debug)?;
        expect(matches!(blob::get(&k, None), Ok(None)), "get after delete")
    }),
    ("blob.list", |_| {
        let dir = blob_key("list/");
        let keys: Vec<String> = ["a", "b", "c"].iter().map(|name| format!("{dir}{name}")).collect();
        for (n, key) in keys.iter().enumerate() {
            blob::put(key, Body::new(&vec![b'x'; n + 1]), n as u64 + 1, None, &[]).map_err(debug)?;
        }
        blob::put(&format!("{dir}gone"), Body::new(b"x"), 1, None, &[]).map_err(debug)?;
        blob::delete(&format!("{dir}gone")).map_err(debug)?;
        // Pages of one: a cursor is followed to the end.
        let (mut listed, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = blob::list(&dir, cursor.as_deref(), 1).map_err(debug)?;
            expect(page.objects.len() <= 1, "a page of at most `limit` objects")?;
            listed.extend(page.objects);
            cursor = page.cursor;
            pages += 1;
            if cursor.is_none() || pages > 1000 {
                break;
            }
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        let seen: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
        let put: Vec<(&str, u64)> = keys.iter().enumerate().map(|(n, k)| (k.as_str(), n as u64 + 1)).collect();
        expect(seen == put, &format!("each object put under the prefix once, with its size, and none deleted: {seen:?}"))?;
        let now = clock::now_ms();
        expect(listed.iter().all(|o| o.used_ms + 600_000 > now && o.used_ms < now + 600_000), "used in the last minutes, in ms since the epoch")?;
        let none = blob::list(&blob_key("list-nothing/"), None, 10).map_err(debug)?;
        expect(none.objects.is_empty() && none.cursor.is_none(), "a prefix with no object: an empty last page")?;
        keys.iter().try_for_each(|k| blob::delete(k).map_err(debug))
    }),
    ("http.response", |f| {
        let body = Body::new(b"sent");
        let resp = send("POST", &format!("{}/echo/probe", f.upstream), vec![("x-probe".into(), "1".into())], Some(body), None).map_err(debug)?;
        expect(resp.status == 200, &format!("status {}", resp.status))?;
        expect(resp.headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()), "header names are lower-case")?;
        let echo: serde_json::Value = serde_json::from_slice(&read_all(resp.body)?).map_err(|e| e.to_string())?;
        expect(echo["method"] == "POST" && echo["body"] == "sent", &format!("the upstream saw {echo}"))?;
        let sent_header = echo["headers"].as_array().is_some_and(|h| h.iter().any(|p| p[0] == "x-probe" && p[1] == "1"));
        expect(sent_header, "the request's header reached the upstream")
    }),
    ("http.no-redirects", |f| {
        let resp = send("GET", &format!("{}/redirect", f.upstream), Vec::new(), None, None).map_err(debug)?;
        expect(resp.status == 302 && header(&resp.headers, "location").is_some(), &format!("status {}", resp.status))
    }),
    ("http.no-decoding", |f| {
        let resp = send("GET", &format!("{}/gzip", f.upstream), vec![("accept-encoding".into(), "gzip".into())], None, None).map_err(debug)?;
        expect(header(&resp.headers, "content-encoding") == Some("gzip"), "content-encoding: gzip reaches the guest")?;
        let bytes = read_all(resp.body)?;
        expect(bytes.starts_with(&[0x1f, 0x8b]), &format!("the body as sent (gzip), not decoded: {:?}", String::from_utf8_lossy(&bytes)))
    }),
    ("http.known-length", |f| {
        let resp = send("GET", &format!("{}/bytes/1000", f.upstream), Vec::new(), None, None).map_err(debug)?;
        let body = resp.body.ok_or("no body")?;
        expect(body.known_length() == Some(1000), &format!("known-length {:?}", body.known_length()))
    }),
    ("http.timeout", |f| {
        fails_with(send("GET", &format!("{}/slow", f.upstream), Vec::new(), None, Some(300)), |e| matches!(e, HttpError::Timeout))
    }),
    ("http.connection-failed", |f| {
        fails_with(send("GET", &format!("{}/", f.closed), Vec::new(), None, None), |e| matches!(e, HttpError::ConnectionFailed(_)))
    }),
    ("http.dns-error", |_| {
        fails_with(send("GET", "http://edgeproxy-probe.invalid/", Vec::new(), None, None), |e| matches!(e, HttpError::DnsError(_)))
    }),
    ("http.invalid-url", |_| {
        fails_with(send("GET", "not a url", Vec::new(), None, None), |e| matches!(e, HttpError::InvalidUrl(_)))
    }),
    ("body.read", |f| {
        let resp = send("GET", &format!("{}/bytes/100", f.upstream), Vec::new(), None, None).map_err(debug)?;
        let body = resp.body.ok_or("no body")?;
        let mut total = 0;
        while let Some(chunk) = body.read(7).map_err(debug)? {
            expect(!chunk.is_empty() && chunk.len() <= 7, &format!("a chunk of {} bytes for read(7)", chunk.len()))?;
            total += chunk.len();
        }
        expect(total == 100, &format!("{total} bytes of 100"))?;
        expect(matches!(body.read(7), Ok(None)), "read after the end")
    }),
    ("body.broken", |f| {
        let resp = send("GET", &f.broken, Vec::new(), None, None).map_err(debug)?;
        let body = resp.body.ok_or("no body")?;
        loop {
            match body.read(64 * 1024) {
                Ok(Some(_)) => {}
                Ok(None) => return Err("a body cut short ended as if whole".into()),
                Err(BodyError::Broken(_)) => return Ok(()),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    }),
    ("body.bytes-and-prepend", |_| {
        let body = Body::new(b"cd");
        expect(body.known_length() == Some(2), "known-length of a body built from bytes")?;
        let whole = Body::prepend(b"ab", body);
        expect(whole.known_length() == Some(4), &format!("known-length after prepend: {:?}", whole.known_length()))?;
        expect(read_all(Some(whole))? == b"abcd", "prepend's bytes, then the tail's")
    }),
    ("config.document", |_| {
        let document = config::get("document").map_err(debug)?.unwrap_or_default();
        expect(document.contains("[[route]]"), "the config document")?;
        let (a, b) = (config::get("document-version").map_err(debug)?, config::get("document-version").map_err(debug)?);
        expect(a == b, "document-version is the same for one document")
    }),
    ("config.secrets", |_| {
        expect(config::get("probe-secret").ok().flatten().as_deref() == Some("probe-secret-value"), "the secret probe-secret, set as the host reads secrets")?;
        expect(matches!(config::get("no-such-secret"), Ok(None)), "a secret not set")
    }),
    ("clock.now", |f| {
        let now = clock::now_ms();
        expect(now.abs_diff(f.test_now) < 60_000, &format!("now-ms {now} against the test's {}", f.test_now))
    }),
    ("clock.sleep", |_| {
        let start = clock::now_ms();
        clock::sleep_ms(300);
        let slept = clock::now_ms() - start;
        expect((290..5000).contains(&slept), &format!("sleep-ms(300) took {slept} ms"))
    }),
    ("limiter.counts", |_| {
        let client = key("client");
        let decisions: Vec<_> = (0..3).map(|_| limiter::check("probe", &client, 2, 60)).collect();
        let allowed: Vec<bool> = decisions.iter().map(|d| d.as_ref().is_ok_and(|d| d.allowed)).collect();
        expect(allowed == [true, true, false], &format!("three requests under 2 per 60 s: {decisions:?}"))?;
        let retry = decisions[2].as_ref().map_or(0, |d| d.retry_after_seconds);
        expect((1..=60).contains(&retry), &format!("retry-after {retry}"))?;
        let other = limiter::check("probe", &key("other-client"), 2, 60);
        expect(other.as_ref().is_ok_and(|d| d.allowed), &format!("another key is counted apart: {other:?}"))
    }),
];

fn expect(holds: bool, what: &str) -> Result<(), String> {
    if holds { Ok(()) } else { Err(format!("not as the WIT says: {what}")) }
}

fn debug(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

/// A blob key of this run's own.
fn blob_key(name: &str) -> String {
    format!("probe/{}/{name}", clock::now_ms())
}

/// The probe's test object: 2,000,000 bytes, `i % 251`, and their sha256.
/// Larger than a value of Spin's key-value store (1 MB), so that a host
/// storing objects in parts is tested across them.
const BLOB_LEN: u64 = 2_000_000;
const BLOB_SHA256: &str = "82fa05417c03925cb7e8fd2bc2e9f2e2a1c8c421427ccdba1ab0091261e3a840";

fn blob_bytes() -> Vec<u8> {
    (0..BLOB_LEN).map(|i| (i % 251) as u8).collect()
}

/// A key of this run's own: the store may outlive the host process.
fn key(name: &str) -> String {
    format!("probe:{}:{name}", clock::now_ms())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn send(method: &str, url: &str, headers: Vec<(String, String)>, body: Option<Body>, timeout_ms: Option<u32>) -> Result<types::Response, HttpError> {
    let request = types::Request { method: method.into(), url: url.into(), headers, body };
    http_client::send(request, http_client::SendOptions { timeout_ms })
}

/// A send that must fail with `expected`.
fn fails_with(outcome: Result<types::Response, HttpError>, expected: fn(&HttpError) -> bool) -> Result<(), String> {
    match outcome {
        Err(e) if expected(&e) => Ok(()),
        Err(e) => Err(format!("not as the WIT says: {e:?}")),
        Ok(r) => Err(format!("not as the WIT says: a response, status {}", r.status)),
    }
}

fn read_all(body: Option<Body>) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    if let Some(body) = body {
        while let Some(chunk) = body.read(64 * 1024).map_err(debug)? {
            out.extend(chunk);
        }
    }
    Ok(out)
}
