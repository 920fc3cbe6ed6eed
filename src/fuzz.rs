//! Fuzz targets: everything that parses what a client or an upstream sends.
//! Each takes arbitrary bytes and asserts an invariant beyond "no panic"; a
//! panic is a finding. Two engines run them (FUZZING in BENCHMARKS.md):
//! libFuzzer, coverage-guided, in `cargo xtask fuzz` (fuzz/), and a brief
//! seeded mutation run in the unit tests, which also replays every finding
//! kept in fuzz/regressions/<target>/.

use serde_json::Value;

use crate::apps::hf_mirror::{hosts, rewrite};
use crate::apps::image_cache::{codec, options::Transform};
use crate::proxy::{cache, cors::CorsOptions, git, headers, incoming};

pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    /// Inputs to start from: realistic ones, so mutations reach deep.
    pub seeds: fn() -> Vec<Vec<u8>>,
}

pub const TARGETS: &[Target] = &[
    Target { name: "incoming_url", run: incoming_url, seeds: || lines(&["http://api.test/a/b?c=d", "https://h:8080/%61dmin/./x", "http://x//a/%2e%2E/b", "http://x/a\\b", "http://user@x/"]) },
    Target { name: "upstream_headers", run: upstream_headers, seeds: || lines(&["connection: x-secret, keep-alive\nx-secret: 1\nhost: a\ncf-ray: 1\nte: trailers", "x-forwarded-for: 1.2.3.4\nforwarded: for=x\nspin-full-url: y"]) },
    Target { name: "config_document", run: config_document, seeds: || lines(&[CONFIG_SEED]) },
    Target { name: "cors_origin", run: cors_origin, seeds: || lines(&["https://app.test", "https://APP.test", "null", "https://app.test.evil"]) },
    Target { name: "cache_entry", run: cache_entry, seeds: || vec![cache::encode_for_fuzzing(200, &[("content-type", "text/plain")], b"hello"), vec![0, 0, 0, 2, b'{', b'}']] },
    Target { name: "hf_hosts", run: hf_hosts, seeds: || lines(&["hf.mirror.test\n/api/models/x", "cas-bridge---xethub.mirror.test\n/xorb", "mirror.test\n/_cdn/cdn-lfs.huggingface.co/x", "evil---com.mirror.test\n/", "mirror.test\n/_cdn/169.254.169.254/latest"]) },
    Target { name: "hf_link", run: hf_link, seeds: || lines(&["<https://huggingface.co/api/x?p=1>; rel=\"xet-auth\", <https://cas-bridge.xethub.hf.co/r>; rel=\"next\"", "<https://evil.example/>; rel=next"]) },
    Target { name: "hf_json", run: hf_json, seeds: || lines(&[r#"{"casUrl":"https://cas-server.xethub.hf.co","accessToken":"t"}"#, r#"{"fetch_info":{"h":[{"url":"https://transfer.xethub.hf.co/x","range":{}}]},"xorbs":{"k":[{"url":"http://evil/"}]}}"#, r#"[{"path":"a","xetHash":"h"}]"#]) },
    Target { name: "lfs_batch", run: lfs_batch, seeds: || lines(&[r#"{"objects":[{"oid":"a","actions":{"download":{"href":"https://cdn-lfs.huggingface.co/x","header":{"Authorization":"t","x":"https://huggingface.co/p"}}}}]}"#]) },
    Target { name: "image_options", run: image_options, seeds: || lines(&["width=800,height=600,fit=cover,gravity=left", "blur=3,quality=50,format=webp,background=%23ff0000,trim=1;2;3;4", "rotate=90,flip=hv,dpr=2,metadata=none"]) },
    Target { name: "image_decode", run: image_decode, seeds: image_seeds },
];

/// Runs the named target on one input.
pub fn run(name: &str, data: &[u8]) {
    (target(name).unwrap_or_else(|| panic!("no fuzz target {name:?}")).run)(data);
}

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn lines(seeds: &[&str]) -> Vec<Vec<u8>> {
    seeds.iter().map(|s| s.as_bytes().to_vec()).collect()
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

/// A parsed path never holds a dot segment, a backslash or a control
/// character, and normalising it again changes nothing.
fn incoming_url(data: &[u8]) {
    let url = text(data);
    let Ok(parsed) = incoming::Incoming::parse(&url) else { return };
    let path = &parsed.path;
    assert!(path.starts_with('/'), "{path:?}");
    assert!(!path.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\'), "{path:?}");
    for segment in path.split('/') {
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(segment).collect();
        assert!(decoded != b"." && decoded != b"..", "dot segment in {path:?} from {url:?}");
        assert!(!decoded.contains(&b'/'), "encoded slash in {path:?}");
    }
    assert_eq!(incoming::normalise_path(path).as_ref().ok(), Some(path), "normalising {path:?} again changed it");
    assert!(!parsed.authority.contains(['@', '/', '\\', ' ']), "authority {:?} from {url:?}", parsed.authority);
}

/// Headers for an upstream hold no hop-by-hop header, none that
/// `Connection` named, no `host` and no platform header.
fn upstream_headers(data: &[u8]) {
    let input = text(data);
    let request: crate::platform::Headers = input.lines().filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().into(), v.trim().to_owned())).collect();
    let named = headers::list_tokens(&request, "connection");
    let out = headers::for_upstream(request, Some("192.0.2.1"), "https", "mirror.test");
    for (name, _) in &out {
        let forbidden = ["connection", "keep-alive", "te", "transfer-encoding", "upgrade", "proxy-connection", "host", "forwarded", "x-real-ip"];
        assert!(!forbidden.contains(&name.as_str()) && !name.starts_with("cf-") && !name.starts_with("spin-"), "{name} forwarded");
        assert!(!named.iter().any(|token| name == token.as_str()) || name.starts_with("x-forwarded-"), "{name} was named by Connection and forwarded");
    }
}

const CONFIG_SEED: &str = "[[route]]\nhost = \"*.mirror.test\"\npath = \"/\"\n[route.hf-mirror]\nupstream = \"https://huggingface.co\"\n\n[[route]]\nhost = \"api.test\"\n[route.api-gateway]\norigin = \"http://127.0.0.1:9\"\n[route.api-gateway.cors]\nallowed_origins = [\"https://app.test\"]\n";

/// A document is accepted or refused with a message; an accepted one routes
/// any host and path without panicking.
fn config_document(data: &[u8]) {
    match crate::config::Document::parse(&text(data)) {
        Err(message) => assert!(!message.is_empty()),
        Ok(document) => {
            for (host, path) in [("api.test", "/"), ("hf.mirror.test", "/api/models/x"), ("", ""), ("x", "/\u{fffd}")] {
                let _ = document.route(host, path);
            }
        }
    }
}

/// Only a listed origin (compared without case) is ever echoed.
fn cors_origin(data: &[u8]) {
    let origin = text(data);
    let options = CorsOptions {
        allowed_origins: vec!["https://app.test".into()],
        allow_credentials: true,
        allowed_methods: vec!["GET".into()],
        allowed_headers: vec!["*".into()],
        expose_headers: vec![],
        max_age_seconds: 600,
        refuse_disallowed_origins: true,
    };
    let mut out = Vec::new();
    options.decorate(Some(&origin), &[], &mut out);
    let echoed = out.iter().find(|(n, _)| n == "access-control-allow-origin").map(|(_, v)| v.as_str());
    match echoed {
        Some(value) => assert!(origin.eq_ignore_ascii_case("https://app.test") && value == origin, "{origin:?} echoed as {value:?}"),
        None => assert!(!origin.eq_ignore_ascii_case("https://app.test")),
    }
}

/// Bytes read back from key-value either decode to a plausible entry whose
/// body is the tail of the bytes, or are a miss.
fn cache_entry(data: &[u8]) {
    if let Some((status, body)) = cache::decode_for_fuzzing(data) {
        assert!(data.ends_with(body));
        let _ = status;
    }
}

fn allow_list() -> Vec<String> {
    ["*.hf.co", "cdn-lfs.huggingface.co"].map(String::from).to_vec()
}

/// Whatever the authority and path, the mirror reaches only the hub or an
/// allow-listed host.
fn hf_hosts(data: &[u8]) {
    let input = text(data);
    let (authority, path) = input.split_once('\n').unwrap_or((&input, "/"));
    let list = allow_list();
    let allowed = hosts::AllowList(&list);
    if let Ok((_, upstream, _)) = hosts::route("https", authority, path, &allowed) {
        match upstream {
            hosts::Upstream::Hub => {}
            hosts::Upstream::Host(host) => assert!(allowed.allows(&host), "{authority:?} {path:?} reached {host:?}"),
        }
    }
}

/// The mirror's public form of an upstream URL: only hub and allow-listed URLs.
fn public(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let list = allow_list();
    (hosts::HUB_HOSTS.contains(&host) || hosts::AllowList(&list).allows(host)).then(|| format!("https://mirror.test/_cdn/{host}/{path}"))
}

/// Every URL in a rewritten document is the mirror's or was in the input.
fn assert_urls_lead_back(input: &str, output: &str) {
    for url in output.split(['"', '<', '>', ' ', ',']).filter(|s| s.starts_with("http://") || s.starts_with("https://")) {
        assert!(url.starts_with("https://mirror.test/") || input.contains(url), "{url:?} appeared from nowhere in {output:?}");
    }
}

fn hf_link(data: &[u8]) {
    let value = text(data);
    for drop_xet in [false, true] {
        if let Some(out) = rewrite::link(&value, &public, drop_xet) {
            assert_urls_lead_back(&value, &out);
            if drop_xet {
                // Nothing left to drop: no kept link has a Xet relation.
                assert_eq!(rewrite::link(&out, &|_| None, true).as_deref(), Some(out.as_str()));
            }
        }
    }
}

fn hf_json(data: &[u8]) {
    let input = text(data);
    for document in [rewrite::Document::XetToken, rewrite::Document::Reconstruction, rewrite::Document::LfsBatch, rewrite::Document::ListingWithoutXet] {
        if let Some(out) = document.rewrite(data, &public) {
            let out = String::from_utf8(out).expect("serde_json writes UTF-8");
            assert_urls_lead_back(&unescaped(&input), &unescaped(&out));
        }
    }
}

/// JSON string escapes undone, so URLs compare as text.
fn unescaped(json: &str) -> String {
    serde_json::from_str::<Value>(json).map(|v| collect_strings(&v)).unwrap_or_else(|_| json.to_owned())
}

fn collect_strings(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        Value::Array(items) => items.iter().map(collect_strings).collect(),
        Value::Object(map) => map.iter().map(|(k, v)| format!("\"{k}\"{}", collect_strings(v))).collect(),
        _ => String::new(),
    }
}

fn lfs_batch(data: &[u8]) {
    let Ok(mut json) = serde_json::from_slice::<Value>(data) else { return };
    let before = collect_strings(&json);
    git::rewrite_lfs_batch(&mut json, &public);
    assert_urls_lead_back(&before, &collect_strings(&json));
}

/// Options either name the bad one, or are within bounds and have a key
/// that cannot break out of the variant key it is part of (`|`-separated).
fn image_options(data: &[u8]) {
    use crate::apps::image_cache::options::MAX_SIDE;
    match Transform::parse_list(&text(data)) {
        Err(e) => assert!(!e.option.is_empty() || !e.message.is_empty(), "{e:?}"),
        Ok(t) => {
            assert!(t.width.is_none_or(|w| (1..=MAX_SIDE).contains(&w)) && t.height.is_none_or(|h| (1..=MAX_SIDE).contains(&h)), "{t:?}");
            assert!(t.quality.is_none_or(|q| (1..=100).contains(&q)), "{t:?}");
            let key = t.canonical();
            assert!(!key.contains(['|', '\n', '\r']), "{key:?}");
        }
    }
}

/// A decoded image is within the pixel cap and its buffer matches its size.
fn image_decode(data: &[u8]) {
    const MAX_PIXELS: u64 = 1 << 20;
    if let Ok(raster) = codec::decode(data, MAX_PIXELS) {
        assert!(u64::from(raster.width) * u64::from(raster.height) <= MAX_PIXELS);
        assert_eq!(raster.data.len(), raster.width as usize * raster.height as usize * raster.channels);
    }
}

fn image_seeds() -> Vec<Vec<u8>> {
    let raster = crate::apps::image_cache::raster::Raster { width: 3, height: 2, channels: 4, data: (0..24).collect() };
    [codec::Kind::Png, codec::Kind::Jpeg, codec::Kind::Webp]
        .into_iter()
        .filter_map(|kind| codec::encode(crate::apps::image_cache::raster::Raster { data: raster.data.clone(), ..raster }, kind, 80, [0, 0, 0, 0]).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A brief, deterministic mutation run of each target from its seeds,
    /// and every kept finding replayed. `cargo xtask fuzz` runs the real
    /// thing.
    #[test]
    fn every_fuzz_target_holds_on_its_seeds_mutations_and_past_findings() {
        let regressions = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        for target in TARGETS {
            if let Ok(dir) = std::fs::read_dir(regressions.join(target.name)) {
                for file in dir.flatten() {
                    (target.run)(&std::fs::read(file.path()).unwrap());
                }
            }
            let seeds = (target.seeds)();
            assert!(!seeds.is_empty(), "{} has seeds", target.name);
            let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ target.name.len() as u64;
            for i in 0..10_000 {
                let input = mutate(&seeds[i % seeds.len()], &mut rng);
                (target.run)(&input);
            }
        }
    }

    const TOKENS: &[&[u8]] = &[b"%2e", b"%2E%2e", b"..", b"/", b"\\", b"%00", b"\r\n", b"@", b"%25", b":", b",", b"\"", b"<", b">", b"=", b";", b"http://", b"{", b"}", b"[", b"\xff", b"---", b"0x7f000001", b"[::1]"];

    fn next(rng: &mut u64) -> u64 {
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        *rng
    }

    fn mutate(seed: &[u8], rng: &mut u64) -> Vec<u8> {
        let mut out = seed.to_vec();
        for _ in 0..1 + next(rng) % 4 {
            let at = if out.is_empty() { 0 } else { (next(rng) % out.len() as u64) as usize };
            match next(rng) % 4 {
                0 if !out.is_empty() => out[at] ^= 1 << (next(rng) % 8),
                1 => out.splice(at..at, TOKENS[(next(rng) % TOKENS.len() as u64) as usize].iter().copied()).for_each(drop),
                2 if !out.is_empty() => drop(out.drain(at..(at + 1 + (next(rng) % 8) as usize).min(out.len()))),
                _ => out.insert(at, next(rng) as u8),
            }
        }
        out
    }
}
