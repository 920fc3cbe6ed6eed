//! hf-mirror, as its users see it: the real `huggingface_hub` client, `git`
//! and `git-lfs`, and plain HTTP, through a real host, against
//! `tests/fixtures/hf/fake_hub.py` (huggingface.co and its CDN and Xet hosts,
//! as documented and as the client's source expects). Both addressing
//! schemes: one host with `/_cdn/<host>/` paths (`http://127.0.0.1:PORT`),
//! and subdomains (`http://hf.localhost:PORT`, CDN hosts at
//! `<label>.localhost:PORT`; `*.localhost` is loopback for curl and git, and
//! client.py resolves it likewise).

use std::path::Path;

use edgeproxy_testkit::hf::{self, FakeHub, LoopbackProxy, TOKEN, tempdir};
use edgeproxy_testkit::browser::chromium_dom;
use edgeproxy_testkit::{Host, Upstream, pattern_matches};
use serde_json::Value;

const SMALL_LFS: u64 = 4 * 1024 * 1024;

async fn mirror(hub: &FakeHub, extra: &str) -> Host {
    Host::start(&hub.document(extra)).await
}

/// The two public faces of one mirror: single host, and subdomains.
fn endpoints(host: &Host) -> [String; 2] {
    let port = host.base.rsplit(':').next().unwrap();
    [host.base.clone(), format!("http://hf.localhost:{port}")]
}

fn http() -> reqwest::Client {
    http_for(&["hf.localhost"])
}

/// A reqwest client that resolves every `*.localhost` name it is given.
fn http_for(names: &[&str]) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy();
    for name in names {
        builder = builder.resolve_to_addrs(name, &["127.0.0.1:0".parse().unwrap()]);
    }
    builder.build().unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Whether `url` leads to the mirror at `endpoint`: under its `/_cdn/`
/// prefix, or on a `*.localhost` subdomain of its port.
fn through_mirror(url: &str, endpoint: &str) -> bool {
    let port = endpoint.rsplit(':').next().unwrap();
    let authority = url.strip_prefix("http://").and_then(|rest| rest.split('/').next()).unwrap_or_default();
    url.starts_with(&format!("{endpoint}/_cdn/")) || (endpoint.contains("hf.localhost") && authority.ends_with(&format!(".localhost:{port}")))
}

fn hub_requests<'a>(log: &'a [Value], path_part: &str) -> Vec<&'a Value> {
    log.iter().filter(|r| r["server"] == "hub" && r["path"].as_str().unwrap_or_default().contains(path_part)).collect()
}

fn cdn_requests(log: &[Value]) -> Vec<&Value> {
    log.iter().filter(|r| r["server"] != "hub").collect()
}

/// The client's cache for `repo` looks as it would against huggingface.co:
/// `refs/main` holds the commit, and `snapshots/<commit>/<file>` is a
/// relative link to the repo's `blobs/<etag>` (which, for a Xet file, links
/// on into the cache-wide `blobs/` store of huggingface_hub 1.3x).
fn assert_cache_layout(home: &Path, repo: &str, files: &[&str]) -> String {
    let repo_dir = home.join("hub").join(format!("models--{}", repo.replace('/', "--")));
    let commit = std::fs::read_to_string(repo_dir.join("refs/main")).expect("refs/main");
    assert_eq!(commit.len(), 40, "refs/main holds a commit hash: {commit:?}");
    for file in files {
        let link = repo_dir.join("snapshots").join(&commit).join(file);
        let target = std::fs::read_link(&link).unwrap_or_else(|e| panic!("{} is a symlink into blobs: {e}", link.display()));
        let up = file.matches('/').count() + 2;
        let etag = target.file_name().unwrap().to_str().unwrap();
        assert_eq!(target, Path::new(&"../".repeat(up)).join("blobs").join(etag), "{file}");
        assert!(repo_dir.join("blobs").join(etag).exists(), "{file}: blobs/{etag}");
    }
    commit
}

#[tokio::test(flavor = "multi_thread")]
async fn snapshot_download_of_many_pages_and_an_lfs_file_works_in_both_schemes() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    for endpoint in endpoints(&host) {
        hub.reset_log().await;
        let home = tempdir::Dir::new("hf-home");
        let result = hf::client(&endpoint, home.path(), &["snapshot", "org/small"], &[("HF_HUB_DISABLE_XET", "1")]).await.unwrap_or_else(|e| panic!("snapshot via {endpoint}: {e}"));
        let files: Vec<&str> = result["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        assert_eq!(files.len(), 123, "every file of every page: {files:?}");
        assert!(files.contains(&"files/f119.txt") && files.contains(&"model.bin"));
        let log = hub.log().await;
        let pages = hub_requests(&log, "/tree/");
        assert!(pages.len() >= 3, "123 files at 50 a page is 3 pages, all through the mirror: {pages:?}");
        assert!(pages.iter().skip(1).all(|p| p["query"].as_str().unwrap_or_default().contains("cursor")), "{pages:?}");
        let model = hf::client(&endpoint, home.path(), &["metadata", "org/small", "model.bin"], &[]).await.unwrap();
        assert_eq!(result["sha256"]["model.bin"], model["etag"], "the LFS file's checksum is its X-Linked-Etag");
        assert_cache_layout(home.path(), "org/small", &["README.md", "files/f000.txt", "model.bin"]);
        let blob = home.path().join("hub/models--org--small/blobs").join(model["etag"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&blob).unwrap().len(), SMALL_LFS, "LFS blobs are named by their sha256");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_1_gib_lfs_file_streams_through_in_bounded_memory() {
    const GIB: u64 = 1024 * 1024 * 1024;
    let hub = FakeHub::start(GIB).await;
    let host = mirror(&hub, "").await;
    let home = tempdir::Dir::new("hf-home");
    let started = std::time::Instant::now();
    let result = hf::client(&host.base, home.path(), &["download", "org/small", "model.bin"], &[("HF_HUB_DISABLE_XET", "1")]).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(result["size"], GIB);
    let metadata = hf::client(&host.base, home.path(), &["metadata", "org/small", "model.bin"], &[]).await.unwrap();
    assert_eq!(result["sha256"], metadata["etag"], "the downloaded file has the sha256 the hub announced");
    eprintln!("1 GiB through {}: {:.1} s", Host::kind(), elapsed.as_secs_f64());
    host.assert_bounded_memory("1 GiB LFS download");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_reaches_the_hub_and_never_a_cdn_host() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    for endpoint in endpoints(&host) {
        hub.reset_log().await;
        let home = tempdir::Dir::new("hf-home");
        let result = hf::client(&endpoint, home.path(), &["download", "org/private", "secret.bin", "--token", TOKEN], &[("HF_HUB_DISABLE_XET", "1")]).await;
        let result = result.unwrap_or_else(|e| panic!("download via {endpoint}: {e}"));
        assert_eq!(result["size"], 128 * 1024);
        let log = hub.log().await;
        let hub_calls = hub_requests(&log, "org/private");
        assert!(!hub_calls.is_empty() && hub_calls.iter().all(|r| r["headers"]["authorization"] == format!("Bearer {TOKEN}")), "{hub_calls:?}");
        let cdn = cdn_requests(&log);
        assert!(!cdn.is_empty(), "the file came from the CDN");
        assert!(cdn.iter().all(|r| r["headers"].get("authorization").is_none_or(Value::is_null) && r["headers"].get("cookie").is_none_or(Value::is_null)), "no credentials at the CDN: {cdn:?}");
        let denied = hf::client(&endpoint, tempdir::Dir::new("hf-home").path(), &["download", "org/private", "secret.bin"], &[("HF_HUB_DISABLE_XET", "1")]).await;
        assert!(denied.is_err(), "without the token the hub refuses");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn head_keeps_the_metadata_and_ranges_resume() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    let [single, sub] = endpoints(&host);
    let client = http_for(&["hf.localhost", "cdn-lfs---hf---co.localhost"]);
    for (endpoint, cdn_base) in [(single.clone(), format!("{single}/_cdn/cdn-lfs.hf.co/")), (sub.clone(), sub.replace("hf.localhost", "cdn-lfs---hf---co.localhost") + "/")] {
        let url = format!("{endpoint}/org/small/resolve/main/model.bin");
        let head = client.head(&url).header("accept-encoding", "identity").send().await.unwrap();
        // On one host name the HEAD answers with the redirect's metadata
        // itself (the client would follow a same-host redirect and lose it).
        assert_eq!(head.status(), if endpoint == single { 200 } else { 302 });
        assert_eq!(header(&head, "x-linked-size"), Some(SMALL_LFS.to_string().as_str()));
        assert!(header(&head, "x-linked-etag").is_some() && header(&head, "x-repo-commit").is_some_and(|c| c.len() == 40) && header(&head, "etag").is_some());
        if endpoint == single {
            assert_eq!(header(&head, "content-length"), Some(SMALL_LFS.to_string().as_str()));
        }
        let get = client.get(&url).send().await.unwrap();
        assert_eq!(get.status(), 302);
        let location = header(&get, "location").unwrap().to_owned();
        assert!(location.starts_with(&cdn_base), "the CDN redirect comes back through the mirror in the client's scheme: {location}");
        let part = client.get(&location).header("range", "bytes=1000-1999").send().await.unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(header(&part, "content-range"), Some(format!("bytes 1000-1999/{SMALL_LFS}").as_str()));
        assert_eq!(header(&part, "content-length"), Some("1000"));
        assert!(pattern_matches(1000, &part.bytes().await.unwrap()));

        let small = client.head(format!("{endpoint}/org/small/resolve/main/config.json")).send().await.unwrap();
        assert_eq!(small.status(), 307);
        let relative = header(&small, "location").unwrap().to_owned();
        assert!(relative.starts_with("/api/resolve-cache/"), "relative redirects stay relative: {relative}");
        let cached = client.head(format!("{endpoint}{}", relative.split('?').next().unwrap())).send().await.unwrap();
        assert_eq!(cached.status(), 200);
        assert!(header(&cached, "content-length").is_some_and(|l| l != "0"), "HEAD keeps Content-Length: {:?}", cached.headers());
        assert!(header(&cached, "x-repo-commit").is_some() && header(&cached, "etag").is_some());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_xet_protocol_goes_through_the_mirror_in_both_schemes() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    let names = ["hf.localhost", "cas-server---xethub.localhost", "transfer---xethub.localhost", "cas-bridge---xethub.localhost"];
    let client = http_for(&names);
    for endpoint in endpoints(&host) {
        hub.reset_log().await;
        // What huggingface_hub and hf_xet do (file_download.py, utils/_xet.py,
        // xet-core's cas_client): HEAD, then the refresh route, then the CAS.
        let head = client.head(format!("{endpoint}/org/xet/resolve/main/weights.bin")).send().await.unwrap();
        let xet_hash = header(&head, "x-xet-hash").expect("X-Xet-Hash").to_owned();
        let links = header(&head, "link").expect("Link").to_owned();
        let refresh = links.split(',').find(|l| l.contains("xet-auth")).and_then(|l| l.split_once('<')?.1.split_once('>').map(|(u, _)| u.to_owned())).unwrap();
        assert!(refresh.starts_with(&endpoint), "xet-auth route through the mirror: {links}");
        let token_response = client.get(&refresh).header("authorization", format!("Bearer {TOKEN}")).send().await.unwrap();
        let cas_header = header(&token_response, "x-xet-cas-url").unwrap().to_owned();
        let token: Value = token_response.json().await.unwrap();
        let cas = token["casUrl"].as_str().unwrap();
        assert_eq!(cas, cas_header, "JSON casUrl and X-Xet-Cas-Url agree");
        assert!(through_mirror(cas, &endpoint), "casUrl leads back through the mirror: {cas}");
        let access = format!("Bearer {}", token["accessToken"].as_str().unwrap());
        for version in ["v2", "v1"] {
            let plan: Value = client.get(format!("{cas}/{version}/reconstructions/{xet_hash}")).header("authorization", &access).send().await.unwrap().json().await.unwrap();
            let terms = if version == "v2" { &plan["xorbs"] } else { &plan["fetch_info"] };
            let fetches: Vec<&Value> = terms.as_object().expect("a reconstruction").values().flat_map(|v| v.as_array().unwrap()).collect();
            assert!(!fetches.is_empty());
            for fetch in fetches {
                let url = fetch["url"].as_str().unwrap();
                assert!(through_mirror(url, &endpoint), "{url}");
                let range = if version == "v2" {
                    let query = url.split_once('?').unwrap().1;
                    let signed = query.split('&').find_map(|kv| kv.strip_prefix("X-Xet-Signed-Range=")).unwrap();
                    signed.replace("%3D", "=").replace("%3d", "=")
                } else {
                    format!("bytes={}-{}", fetch["url_range"]["start"], fetch["url_range"]["end"])
                };
                let part = client.get(url).header("range", &range).send().await.unwrap();
                assert_eq!(part.status(), 206, "{version} {url} with {range}");
            }
        }
        let log = hub.log().await;
        let at = |server: &str| log.iter().filter(|r| r["server"] == server).collect::<Vec<_>>();
        assert!(!at("cas-server.xethub.hf.co").is_empty() && at("cas-server.xethub.hf.co").iter().all(|r| r["headers"]["authorization"] == access), "the Xet token reached the CAS");
        assert!(at("transfer.xethub.hf.co").iter().all(|r| r["headers"].get("authorization").is_none_or(Value::is_null)), "and nothing else");
        assert!(at("transfer.xethub.hf.co").len() >= 2);
    }
}

/// The real hf_xet (the client's Xet path: tree, xet-read-token, CAS
/// reconstruction, transfer ranges) on the single-host scheme. hf_xet
/// resolves host names itself and does not know `*.localhost`, so the
/// subdomain scheme is covered by the protocol test above instead.
#[tokio::test(flavor = "multi_thread")]
async fn the_real_hf_xet_client_downloads_through_the_mirror() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    let home = tempdir::Dir::new("hf-home");
    let xet_cache = home.path().join("xet");
    let result = hf::client(&host.base, home.path(), &["snapshot", "org/xet"], &[("HF_XET_CACHE", xet_cache.to_str().unwrap())]).await.unwrap();
    let weights = std::fs::read(Path::new(result["path"].as_str().unwrap()).join("weights.bin")).unwrap();
    assert_eq!(weights.len(), 256 * 1024);
    assert!(pattern_matches(0, &weights), "hf_xet reassembled the file from its chunks");
    let log = hub.log().await;
    let at = |server: &str| log.iter().filter(|r| r["server"] == server).collect::<Vec<_>>();
    assert!(!at("cas-server.xethub.hf.co").is_empty() && !at("transfer.xethub.hf.co").is_empty(), "{log:?}");
    assert!(at("cas-bridge.xethub.hf.co").is_empty(), "the Xet path, not the HTTP bridge");
    assert!(!hub_requests(&log, "/xet-read-token/").is_empty(), "the refresh route went through the mirror");
    assert_cache_layout(home.path(), "org/xet", &["weights.bin"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_xet_off_clients_see_no_xet_and_download_over_http() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "xet = false").await;
    let client = http();
    let head = client.head(host.url("/org/xet/resolve/main/weights.bin")).send().await.unwrap();
    assert!(head.headers().keys().all(|k| !k.as_str().starts_with("x-xet-")), "{:?}", head.headers());
    assert!(header(&head, "link").is_none_or(|l| !l.contains("xet")));
    let tree: Value = client.get(host.url("/api/models/org/xet/tree/main?recursive=True&expand=True")).send().await.unwrap().json().await.unwrap();
    assert!(tree.as_array().unwrap().iter().all(|e| e.get("xetHash").is_none()), "{tree}");
    // The client has hf_xet installed and Xet enabled: it must fall back to HTTP.
    let home = tempdir::Dir::new("hf-home");
    let result = hf::client(&host.base, home.path(), &["snapshot", "org/xet"], &[]).await.unwrap();
    assert_eq!(result["files"].as_array().unwrap().len(), 1);
    let log = hub.log().await;
    assert!(log.iter().any(|r| r["server"] == "cas-bridge.xethub.hf.co"), "downloaded from the HTTP bridge");
    assert!(!log.iter().any(|r| r["server"] == "cas-server.xethub.hf.co"), "never via the CAS");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_clone_fetches_the_repo_and_its_lfs_files_in_both_schemes() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    let dns = LoopbackProxy::start().await;
    for endpoint in endpoints(&host) {
        // git (curl) resolves `*.localhost` itself, git-lfs (Go) does not:
        // for the subdomain scheme both go through a proxy that does.
        let proxy = if endpoint == host.base { "" } else { dns.url.as_str() };
        git_clone_weights(&endpoint, proxy);
    }
    let log = hub.log().await;
    assert!(log.iter().any(|r| r["server"] == "cdn-lfs.hf.co"), "LFS objects came through the mirror's CDN route");
}

/// `git clone` of `org/gitrepo` with git-lfs, through `proxy` if not empty;
/// its LFS file's bytes, checked.
fn git_clone_weights(endpoint: &str, proxy: &str) -> Vec<u8> {
    let work = tempdir::Dir::new("git-clone");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let git = |args: &[&str], dir: &Path| {
        let mut command = std::process::Command::new("git");
        command.args(args).current_dir(dir).env("HOME", &home).env("GIT_TERMINAL_PROMPT", "0").env_remove("NO_PROXY").env_remove("no_proxy");
        for name in ["http_proxy", "HTTP_PROXY"] {
            command.env(name, proxy);
        }
        let out = command.output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["lfs", "install", "--skip-repo"], work.path());
    git(&["clone", &format!("{endpoint}/org/gitrepo"), "repo"], work.path());
    let weights = std::fs::read(work.path().join("repo/weights.bin")).unwrap();
    assert_eq!(weights.len(), 1024 * 1024, "the LFS file is smudged, not a pointer");
    assert!(pattern_matches(0, &weights));
    assert!(work.path().join("repo/README.md").exists());
    weights
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_outside_the_allow_list_are_refused_with_json() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    let port = host.base.rsplit(':').next().unwrap().to_owned();
    let client = http_for(&["datasets-server---huggingface---co.localhost"]);
    for url in [host.url("/_cdn/evil.example/x"), host.url("/redirect_to_evil.example/x"), host.url("/_cdn/169.254.169.254/latest"), format!("http://datasets-server---huggingface---co.localhost:{port}/x")] {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 403, "{url}");
        assert_eq!(header(&response, "x-error-code"), Some("upstream_not_allowed"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "upstream_not_allowed");
    }
    assert!(cdn_requests(&hub.log().await).is_empty());
}

/// Coming from HuggingfaceProxy: its URLs (`/redirect_to_<host>/...`) and
/// its own downloader, `hf_downloader.py`, work against the mirror.
#[tokio::test(flavor = "multi_thread")]
async fn huggingface_proxys_urls_and_its_downloader_work_against_the_mirror() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    let redirect = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let resolved = redirect.get(host.url("/org/small/resolve/main/model.bin")).send().await.unwrap();
    let location = header(&resolved, "location").unwrap().to_owned();
    assert!(location.contains("/_cdn/cdn-lfs.hf.co/"), "{location}");
    let theirs = http().get(location.replace("/_cdn/", "/redirect_to_")).send().await.unwrap();
    assert_eq!(theirs.status(), 200, "the CDN through HuggingfaceProxy's prefix");
    let body = theirs.bytes().await.unwrap();
    assert!(body.len() as u64 == SMALL_LFS && pattern_matches(0, &body));

    // The script as its Worker serves it (the proxy's domain filled in), over
    // HTTP as the baselines' README has local runs do; `-4` skips its network check.
    let script = edgeproxy_testkit::workspace_root().join("../shared/baselines/hfproxy/src/scripts/hf_downloader.py");
    let Ok(text) = std::fs::read_to_string(&script) else {
        return edgeproxy_testkit::skip::skip(&format!("{} is not here", script.display()));
    };
    let work = tempdir::Dir::new("hf-downloader");
    let authority = host.base.trim_start_matches("http://");
    std::fs::write(work.path().join("hf_downloader.py"), text.replace("{{PROXY_DOMAIN}}", authority).replace("https://{proxy_domain}", "http://{proxy_domain}")).unwrap();
    let out = std::process::Command::new(edgeproxy_testkit::workspace_root().join("target/hf-venv/bin/python"))
        .args(["hf_downloader.py", "org/legacy", "-4", "--workers", "2", "--output", "legacy"])
        .current_dir(work.path())
        .env("NO_PROXY", "*")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // One page of the listing is all it reads: a repo of one file.
    let old = std::fs::read(work.path().join("legacy/old.bin")).unwrap();
    assert!(old.len() == 64 * 1024 && pattern_matches(0, &old), "the LFS file, whole, from the legacy CDN host");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_home_page_shows_how_to_use_the_mirror() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "").await;
    let client = http();
    for endpoint in endpoints(&host) {
        let page = client.get(format!("{endpoint}/")).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(header(&page, "content-type").unwrap().starts_with("text/html"));
        let text = page.text().await.unwrap();
        assert!(text.contains(&format!("export HF_ENDPOINT={endpoint}")), "{text}");
        assert!(text.contains(&format!("git clone {endpoint}/gpt2")));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_get_cors_with_the_metadata_headers_exposed() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "[route.hf-mirror.cors]\nallowed_origins = [\"https://app.example\"]\n").await;
    let client = http();
    let head = client.head(host.url("/org/small/resolve/main/model.bin")).header("origin", "https://app.example").send().await.unwrap();
    assert_eq!(header(&head, "access-control-allow-origin"), Some("https://app.example"));
    let exposed = header(&head, "access-control-expose-headers").unwrap();
    for name in ["x-repo-commit", "x-linked-etag", "x-linked-size", "etag", "content-range", "location"] {
        assert!(exposed.contains(name), "{name} exposed: {exposed}");
    }
    let preflight = client
        .request(reqwest::Method::OPTIONS, host.url("/api/models/org/small"))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization, range")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    let other = client.get(host.url("/api/models/org/small")).header("origin", "https://evil.example").send().await.unwrap();
    assert_eq!(header(&other, "access-control-allow-origin"), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_hub_is_a_502_and_a_slow_one_a_504_with_error_headers() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let host = Host::start(&format!("[[route]]\nhost = \"*\"\n[route.hf-mirror]\nhub = \"http://{closed}\"\n")).await;
    let response = http().head(host.url("/org/small/resolve/main/model.bin")).send().await.unwrap();
    assert_eq!(response.status(), 502);
    assert_eq!(header(&response, "x-error-code"), Some("bad_gateway"));
    assert!(header(&response, "x-error-message").is_some());

    let slow = Upstream::start().await;
    let host = Host::start(&format!("[[route]]\nhost = \"*\"\n[route.hf-mirror]\nhub = \"{}\"\ntimeout_ms = 500\n", slow.url())).await;
    let response = http().get(host.url("/slow")).send().await.unwrap();
    assert_eq!(response.status(), 504);
    assert_eq!(header(&response, "x-error-code"), Some("gateway_timeout"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "gateway_timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_rate_limit_is_a_429_with_retry_after() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "[route.hf-mirror.rate_limit]\nrequests = 3\nperiod_seconds = 60\n").await;
    let client = http();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let response = client.get(host.url("/api/models/org/small")).send().await.unwrap();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(header(&response, "retry-after").is_some_and(|s| s.parse::<u32>().is_ok_and(|s| s >= 1)));
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200]);
    assert_eq!(statuses[4], 429, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metadata_at_a_commit_hash_is_served_from_cache_without_credentials_only() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "[route.hf-mirror.cache]\n").await;
    let client = http();
    let info: Value = client.get(host.url("/api/models/org/small/revision/main")).send().await.unwrap().json().await.unwrap();
    let sha = info["sha"].as_str().unwrap();
    let path = format!("/api/models/org/small/revision/{sha}");
    hub.reset_log().await;
    let first = client.get(host.url(&path)).send().await.unwrap();
    assert_eq!(header(&first, "x-cache"), Some("MISS"));
    let first: Value = first.json().await.unwrap();
    let second = client.get(host.url(&path)).send().await.unwrap();
    assert_eq!(header(&second, "x-cache"), Some("HIT"));
    assert_eq!(second.json::<Value>().await.unwrap(), first);
    let with_token = client.get(host.url(&path)).header("authorization", format!("Bearer {TOKEN}")).send().await.unwrap();
    assert_eq!(with_token.status(), 200);
    assert_eq!(hub_requests(&hub.log().await, "/revision/").len(), 2, "once to fill the cache, once for the client with a token");
}

/// A web page on another origin uses the mirror the way transformers.js
/// does, in a real browser (headless Chromium): `fetch` a file through the
/// relative resolve-cache redirect and read its metadata headers.
#[tokio::test(flavor = "multi_thread")]
async fn a_web_page_on_another_origin_reads_files_and_metadata_in_a_real_browser() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "[route.hf-mirror.cors]\nallowed_origins = [\"*\"]\n").await;
    let script = format!(
        r#"<!doctype html><html><body><pre id="out">pending</pre><script>
        fetch("{mirror}/org/small/resolve/main/config.json").then(async (r) => {{
          const text = await r.text();
          document.getElementById("out").textContent = JSON.stringify({{
            status: r.status, commit: r.headers.get("x-repo-commit"), etag: r.headers.get("etag"), length: text.length }});
        }}).catch((e) => {{ document.getElementById("out").textContent = "failed: " + e; }});
        </script></body></html>"#,
        mirror = host.base
    );
    let page = StaticPage::serve(script).await;
    let dom = chromium_dom(&page.url).await;
    let out = dom.split("<pre id=\"out\">").nth(1).and_then(|rest| rest.split("</pre>").next()).unwrap_or_default().replace("&quot;", "\"");
    let result: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("the page's fetch: {out}"));
    assert_eq!(result["status"], 200);
    assert_eq!(result["commit"].as_str().map(str::len), Some(40), "X-Repo-Commit is readable from script: {result}");
    assert!(result["etag"].is_string() && result["length"].as_u64().unwrap() > 0, "{result}");

    let home = chromium_dom(&format!("{}/", host.base)).await;
    assert!(home.contains("<h1>Hugging Face mirror</h1>") && home.contains(&format!("HF_ENDPOINT={}", host.base)), "{home}");
}

/// One HTML page on its own loopback origin.
struct StaticPage {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StaticPage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StaticPage {
    async fn serve(html: String) -> StaticPage {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", html.len());
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(html.as_bytes()).await;
            }
        });
        StaticPage { url, task }
    }
}

/// A mirror that keeps what it fetches, asking the hub again about `main`
/// on every request (so that the hub's part in each run shows).
async fn keeping_mirror(hub: &FakeHub) -> Host {
    mirror(hub, "\n[route.hf-mirror.store]\nrevalidate_seconds = 0\n").await
}

fn cdn_file_downloads(log: &[Value]) -> Vec<&Value> {
    cdn_requests(log).into_iter().filter(|r| r["method"] == "GET" && r["status"] == 200).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_is_fetched_once_and_still_downloads_with_the_hub_down() {
    let mut hub = FakeHub::start(SMALL_LFS).await;
    let host = keeping_mirror(&hub).await;
    let [one_host, subdomains] = endpoints(&host);
    let no_xet = [("HF_HUB_DISABLE_XET", "1")];
    let snapshot = |endpoint: String| async move {
        let home = tempdir::Dir::new("hf-home");
        let result = hf::client(&endpoint, home.path(), &["snapshot", "org/small"], &no_xet).await.unwrap_or_else(|e| panic!("snapshot via {endpoint}: {e}"));
        assert_cache_layout(home.path(), "org/small", &["README.md", "files/f000.txt", "model.bin"]);
        result
    };

    let first = snapshot(one_host.clone()).await;
    assert_eq!(cdn_file_downloads(&hub.log().await).len(), 1, "the LFS file came from the CDN once");

    hub.reset_log().await;
    let second = snapshot(subdomains.clone()).await;
    assert_eq!(second["sha256"], first["sha256"], "every file byte-identical");
    let log = hub.log().await;
    assert!(cdn_requests(&log).is_empty(), "the CDN received nothing: {:?}", cdn_requests(&log));
    let asked: Vec<&str> = log.iter().map(|r| r["path"].as_str().unwrap_or_default()).collect();
    assert_eq!(asked, ["/api/models/org/small/revision/main"], "only `main` was asked again; answers at the commit are kept");

    let response = http().get(format!("{subdomains}/org/small/resolve/main/model.bin")).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!((response.status().as_u16(), header(&response, "x-cache")), (206, Some("HIT")));
    assert_eq!(header(&response, "content-range"), Some(format!("bytes 10-19/{SMALL_LFS}").as_str()));
    assert!(pattern_matches(10, &response.bytes().await.unwrap()), "a range of the kept file");

    hub.stop().await;
    let offline = snapshot(one_host.clone()).await;
    assert_eq!(offline["sha256"], first["sha256"], "the hub down, the same files from the mirror");
    let info = http().get(format!("{one_host}/api/models/org/small/revision/main")).send().await.unwrap();
    assert_eq!((info.status().as_u16(), header(&info, "x-cache")), (200, Some("STALE")));
    let never_kept = http().get(format!("{one_host}/api/models/org/legacy/revision/main")).send().await.unwrap();
    assert_eq!(never_kept.status(), 502, "what was never kept fails as the hub does");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_lfs_objects_are_fetched_once_and_a_second_clone_gets_them_from_the_store() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = keeping_mirror(&hub).await;
    let first = git_clone_weights(&host.base, "");
    assert_eq!(cdn_file_downloads(&hub.log().await).len(), 1, "the LFS object came from the CDN once");

    hub.reset_log().await;
    let second = git_clone_weights(&host.base, "");
    assert_eq!(second, first, "byte-identical");
    let log = hub.log().await;
    assert!(log.iter().any(|r| r["path"].as_str().is_some_and(|p| p.ends_with("/info/lfs/objects/batch"))), "git-lfs asked the hub for its objects");
    assert!(cdn_requests(&log).is_empty(), "the CDN received nothing: {:?}", cdn_requests(&log));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_answer_at_main_is_asked_about_again_with_its_etag() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = keeping_mirror(&hub).await;
    let download = || async {
        let home = tempdir::Dir::new("hf-home");
        hf::client(&host.base, home.path(), &["download", "org/small", "model.bin"], &[("HF_HUB_DISABLE_XET", "1")]).await.unwrap()
    };
    let first = download().await;
    let head = |url: String| async move { http().head(url).send().await.unwrap() };
    let url = format!("{}/org/small/resolve/main/model.bin", host.base);
    let etag = header(&head(url.clone()).await, "etag").map(str::to_owned).expect("the hub's ETag, kept");

    hub.reset_log().await;
    let second = download().await;
    assert_eq!(second["sha256"], first["sha256"]);
    let log = hub.log().await;
    let asked: Vec<(&str, &str, u64)> = log.iter().map(|r| (r["method"].as_str().unwrap(), r["headers"]["if-none-match"].as_str().unwrap_or("-"), r["status"].as_u64().unwrap())).collect();
    // huggingface_hub asks HEAD, then GET; each kept answer is confirmed, not fetched again.
    assert_eq!(asked, [("HEAD", etag.as_str(), 304), ("GET", etag.as_str(), 304)], "{log:?}");
    let again = head(url).await;
    assert_eq!((again.status().as_u16(), header(&again, "x-cache")), (200, Some("HIT")));
    assert!(header(&again, "x-repo-commit").is_some_and(|c| c.len() == 40), "the hub's metadata, as kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_or_cut_file_is_never_kept_and_the_next_request_fetches_again() {
    let hub = FakeHub::start(SMALL_LFS).await;
    // Each faulty fetch holds its lease until it runs out: the next request
    // waits this long for the file, then fetches it.
    let host = mirror(&hub, "\n[route.hf-mirror.store]\nfill_wait_ms = 300\n").await;
    let url = host.url("/org/small/resolve/main/model.bin");
    for fault in ["flip", "cut"] {
        hub.cdn_fault(Some(fault)).await;
        let response = http().get(&url).send().await.unwrap();
        assert_eq!((response.status().as_u16(), header(&response, "x-cache")), (200, Some("MISS")), "{fault}");
        let body = response.bytes().await;
        match fault {
            "flip" => assert!(!pattern_matches(0, &body.unwrap()), "the client gets what the CDN sent, as without a mirror"),
            _ => assert!(body.is_err(), "a cut body is a broken transfer for the client: {:?}", body.map(|b| b.len())),
        }
    }
    hub.cdn_fault(None).await;
    hub.reset_log().await;
    let response = http().get(&url).send().await.unwrap();
    assert_eq!(header(&response, "x-cache"), Some("MISS"), "nothing was kept from the faulty bodies");
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len() as u64, SMALL_LFS);
    assert!(pattern_matches(0, &body));
    assert_eq!(cdn_file_downloads(&hub.log().await).len(), 1);
    let again = http().get(&url).send().await.unwrap();
    assert_eq!(header(&again, "x-cache"), Some("HIT"), "the intact body was kept");
    assert!(pattern_matches(0, &again.bytes().await.unwrap()));
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_the_mirror_answers_what_it_kept_and_never_contacts_the_hub() {
    let hub = FakeHub::start(SMALL_LFS).await;
    // Two routes on one store (answers are kept by hub and URL): an offline
    // one for `offline.localhost`, an online one for every other host.
    let offline_route = format!("[[route]]\nhost = \"offline.localhost\"\n\n[route.hf-mirror]\nhub = \"{}\"\n\n[route.hf-mirror.store]\noffline = true\n\n", hub.hub);
    let host = Host::start(&(offline_route + &hub.document("\n[route.hf-mirror.store]\n"))).await;
    let offline = format!("http://offline.localhost:{}", host.base.rsplit(':').next().unwrap());
    let no_xet = [("HF_HUB_DISABLE_XET", "1")];
    let online = hf::client(&host.base, tempdir::Dir::new("hf-home").path(), &["download", "org/small", "model.bin"], &no_xet).await.unwrap();
    hub.reset_log().await;

    let kept = hf::client(&offline, tempdir::Dir::new("hf-home").path(), &["download", "org/small", "model.bin"], &no_xet).await.unwrap();
    assert_eq!(kept["sha256"], online["sha256"], "a file kept online is downloaded offline");
    let missing = http_for(&["offline.localhost"]).get(format!("{offline}/org/small/resolve/main/config.json")).send().await.unwrap();
    assert_eq!(missing.status(), 504);
    assert_eq!(header(&missing, "x-error-code"), Some("not_stored_offline"));
    let elsewhere = http_for(&["offline.localhost"]).get(format!("{offline}/_cdn/cdn-lfs.hf.co/repos/x")).send().await.unwrap();
    assert_eq!(header(&elsewhere, "x-error-code"), Some("not_stored_offline"), "nor is a CDN host reached");
    assert!(hub.log().await.is_empty(), "nothing reached the hub or its CDN: {:?}", hub.log().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_first_downloads_of_one_file_fetch_it_once() {
    const SIZE: u64 = 256 << 20;
    let hub = FakeHub::start(SIZE).await;
    let host = keeping_mirror(&hub).await;
    let url = host.url("/org/small/resolve/main/model.bin");
    let downloads = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let response = http().get(&url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let cache = header(&response, "x-cache").unwrap_or_default().to_owned();
            let mut stream = response.bytes_stream();
            let (mut received, mut intact) = (0u64, true);
            while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
                let chunk = chunk.expect("the download completes");
                intact &= pattern_matches(received, &chunk);
                received += chunk.len() as u64;
            }
            (received, intact, cache)
        })
    });
    let mut caches = Vec::new();
    for download in futures_util::future::join_all(downloads).await {
        let (received, intact, cache) = download.unwrap();
        assert!(received == SIZE && intact, "every download whole and identical: {received} bytes");
        caches.push(cache);
    }
    caches.sort();
    assert_eq!(caches, ["HIT", "HIT", "HIT", "HIT", "HIT", "HIT", "HIT", "MISS"], "one fetched it, seven waited for it to be kept");
    assert_eq!(cdn_file_downloads(&hub.log().await).len(), 1, "one download from the CDN");
    // Each request in flight holds its own buffers (Spin: a 960 kB part
    // per reader), so the bound is per download; none holds the file. In
    // workerd, Miniflare's R2 simulator runs in the same process and grows
    // by about 270 MiB over its first large puts, then no more (measured
    // with a plain Worker: a put of 256 MiB +136 MiB, a second +134, one
    // of 512 MiB after them +26).
    let limit_mib = if Host::kind() == "workerd" { 320 } else { 8 * 20 };
    host.assert_memory_grew_less_than("eight concurrent 256 MiB downloads (2 GiB)", limit_mib << 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn repos_the_route_refuses_are_neither_served_nor_kept() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "repos = { deny = [\"org/legacy\"] }\n\n[route.hf-mirror.store]\nrepos = { allow = [\"org/*\"], deny = [\"org/small\"] }\n").await;
    let refused = http().get(host.url("/api/models/org/legacy/revision/main")).send().await.unwrap();
    assert_eq!((refused.status().as_u16(), header(&refused, "x-error-code")), (403, Some("repo_not_allowed")));
    let clone = std::process::Command::new("git").args(["ls-remote", &host.url("/org/legacy.git")]).output().unwrap();
    assert!(!clone.status.success() && String::from_utf8_lossy(&clone.stderr).contains("does not serve org/legacy"), "git shows why: {}", String::from_utf8_lossy(&clone.stderr));
    assert!(hub_requests(&hub.log().await, "org/legacy").is_empty(), "nothing of a refused repo reached the hub");

    for _ in 0..2 {
        let unkept = http().get(host.url("/org/small/resolve/main/model.bin")).send().await.unwrap();
        assert_eq!((unkept.status().as_u16(), header(&unkept, "x-cache")), (302, None), "served as without a store");
    }
    let first = http().get(host.url("/api/models/org/xet/revision/main")).send().await.unwrap();
    assert_eq!(header(&first, "x-cache"), Some("MISS"));
    first.bytes().await.unwrap(); // kept once it has passed whole
    let again = http().get(host.url("/api/models/org/xet/revision/main")).send().await.unwrap();
    assert_eq!(header(&again, "x-cache"), Some("HIT"), "an admitted repo is kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_file_is_kept_only_where_the_route_says_and_served_only_after_the_hub_says_yes() {
    let hub = FakeHub::start(SMALL_LFS).await;
    // `private.localhost` keeps private files; every other host does not.
    let private_route = format!("[[route]]\nhost = \"private.localhost\"\n\n{}", hub.document("\n[route.hf-mirror.store]\nprivate_files = true\n").trim_start_matches("[[route]]\nhost = \"*\"\n"));
    let host = Host::start(&format!("{private_route}\n{}", hub.document("\n[route.hf-mirror.store]\n"))).await;
    let port = host.base.rsplit(':').next().unwrap();
    let client = http_for(&["private.localhost"]);
    let secret = |base: &str, token: Option<&str>| {
        let request = client.get(format!("{base}/org/private/resolve/main/secret.bin"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };

    let default_route = secret(&host.base, Some(TOKEN)).await.unwrap();
    assert_eq!((default_route.status().as_u16(), header(&default_route, "x-cache")), (302, None), "not kept by default: the redirect, as without a store");
    let public = client.get(host.url("/org/small/resolve/main/model.bin")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!((public.status().as_u16(), header(&public, "x-cache")), (200, Some("MISS")), "a public file asked for with a token is kept");

    let private = format!("http://private.localhost:{port}");
    let first = secret(&private, Some(TOKEN)).await.unwrap();
    assert_eq!((first.status().as_u16(), header(&first, "x-cache")), (200, Some("MISS")));
    assert_eq!(first.bytes().await.unwrap().len(), 128 * 1024);
    let second = secret(&private, Some(TOKEN)).await.unwrap();
    assert_eq!((second.status().as_u16(), header(&second, "x-cache")), (200, Some("HIT")), "kept, and served after the hub's redirect");
    let anonymous = secret(&private, None).await.unwrap();
    assert_eq!(anonymous.status(), 401, "without a token the hub says no, and so does the mirror");
    let wrong = secret(&private, Some("hf_wrong")).await.unwrap();
    assert!(wrong.status().is_client_error(), "a token the hub refuses gets nothing: {}", wrong.status());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_hf_xet_a_snapshot_is_fetched_once_and_still_downloads_with_the_hub_down() {
    let mut hub = FakeHub::start(SMALL_LFS).await;
    let host = keeping_mirror(&hub).await;
    // One host: hf_xet resolves names itself, and `*.localhost` is not loopback to it here.
    let endpoint = host.base.clone();
    let snapshot = |endpoint: String| async move {
        // A new home each time, hf_xet's own chunk cache in it.
        let home = tempdir::Dir::new("hf-home");
        let xet_cache = home.path().join("xet");
        let env = [("HF_XET_CACHE", xet_cache.to_str().unwrap())];
        let result = hf::client(&endpoint, home.path(), &["snapshot", "org/xet"], &env).await.unwrap_or_else(|e| panic!("snapshot via {endpoint}: {e}"));
        let weights = std::fs::read(Path::new(result["path"].as_str().unwrap()).join("weights.bin")).unwrap();
        assert!(weights.len() == 256 * 1024 && pattern_matches(0, &weights), "hf_xet reassembled the file");
    };
    let at = |log: &[Value], server: &str| log.iter().filter(|r| r["server"] == server).count();

    snapshot(endpoint.clone()).await;
    let log = hub.log().await;
    assert!(at(&log, "transfer.xethub.hf.co") > 0 && at(&log, "cas-bridge.xethub.hf.co") == 0, "the Xet path: {log:?}");

    hub.reset_log().await;
    // The token kept last will have expired by the time the hub is down.
    hub.xet_token_ttl(2).await;
    snapshot(endpoint.clone()).await;
    let log = hub.log().await;
    assert_eq!(at(&log, "transfer.xethub.hf.co"), 0, "every xorb range came from the store");
    assert!(at(&log, "cas-server.xethub.hf.co") > 0, "reconstructions name signed URLs, so they are asked for while the CAS answers");
    assert!(log.iter().any(|r| r["path"].as_str().is_some_and(|p| p.contains("/xet-read-token/"))), "a token of 2 s was issued, and kept");

    hub.stop().await;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    snapshot(endpoint).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_repos_xet_data_is_not_kept_and_a_public_ones_is_even_with_a_token() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = keeping_mirror(&hub).await;
    let snapshot = |repo: &'static str, size: usize| {
        let endpoint = host.base.clone();
        async move {
            let home = tempdir::Dir::new("hf-home");
            let xet_cache = home.path().join("xet");
            let env = [("HF_XET_CACHE", xet_cache.to_str().unwrap())];
            let result = hf::client(&endpoint, home.path(), &["snapshot", repo, "--token", TOKEN], &env).await.unwrap_or_else(|e| panic!("snapshot of {repo}: {e}"));
            let weights = std::fs::read(Path::new(result["path"].as_str().unwrap()).join("weights.bin")).unwrap();
            assert!(weights.len() == size && pattern_matches(0, &weights), "hf_xet reassembled {repo}'s file");
        }
    };
    let transfers = |log: &[Value]| log.iter().filter(|r| r["server"] == "transfer.xethub.hf.co").count();
    for (repo, size, kept) in [("org/xet", 256 * 1024, true), ("org/private-xet", 192 * 1024, false)] {
        snapshot(repo, size).await;
        assert!(transfers(&hub.log().await) > 0, "{repo}: the xorbs came from the transfer host");
        hub.reset_log().await;
        snapshot(repo, size).await;
        assert_eq!(transfers(&hub.log().await) == 0, kept, "{repo}: its xorbs kept: {kept}");
        hub.reset_log().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_routes_cap_the_file_used_least_recently_goes_on_every_host() {
    let hub = FakeHub::start(SMALL_LFS).await;
    // Room for the 4 MiB model.bin or the 64 KiB old.bin, not both. The
    // first fetch's lease outlives its file here: a second waits briefly.
    let host = mirror(&hub, "\n[route.hf-mirror.store]\nmax_bytes = 4200000\nfill_wait_ms = 100\n").await;
    let get = |path: &str| {
        let url = host.url(path);
        async move {
            let response = http().get(&url).send().await.unwrap();
            let cache = header(&response, "x-cache").unwrap_or_default().to_owned();
            let body = response.bytes().await.unwrap();
            (cache, body.len() as u64)
        }
    };
    let (old, model) = ("/org/legacy/resolve/main/old.bin", "/org/small/resolve/main/model.bin");
    assert_eq!(get(old).await, ("MISS".into(), 65536));
    assert_eq!(get(old).await, ("HIT".into(), 65536), "kept under the cap");
    assert_eq!(get(model).await, ("MISS".into(), SMALL_LFS));
    assert_eq!(get(model).await, ("HIT".into(), SMALL_LFS), "kept, old.bin gone to make room");
    assert_eq!(get(old).await, ("MISS".into(), 65536), "old.bin was evicted: fetched again");
    assert_eq!(get(model).await.0, "MISS", "and model.bin made room for it");
    assert_eq!(cdn_file_downloads(&hub.log().await).len(), 4, "each file twice from the CDN, and nothing else");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_its_cap_the_hosts_store_evicts_and_counts_what_it_did() {
    use edgeproxy_testkit::metrics::{Samples, admin_url};
    if !edgeproxy_testkit::skip::only_on("wasmtime", "a cap with eviction is the wasmtime host's --blob-max-bytes (R2 has lifecycle rules; Spin's store, none)") {
        return;
    }
    let hub = FakeHub::start(SMALL_LFS).await;
    // The first fetch's lease outlives its file here: the second waits only briefly.
    let host = Host::start_built_in(&hub.document("\n[route.hf-mirror.store]\nfill_wait_ms = 100\n"), &["--admin-listen", "127.0.0.1:0", "--blob-max-bytes", "1M"]).await;
    let admin = admin_url(&host).await;
    let metric = |samples: &Samples, name: &str| samples.get(name, &[]).unwrap_or(0.0);
    let url = host.url("/org/small/resolve/main/model.bin");
    for round in 1..=2 {
        let response = http().get(&url).send().await.unwrap();
        assert_eq!(header(&response, "x-cache"), Some("MISS"), "round {round}: a 4 MiB file is evicted from a 1 MiB store once kept");
        assert_eq!(response.bytes().await.unwrap().len() as u64, SMALL_LFS);
        let started = std::time::Instant::now();
        while metric(&Samples::scrape(&admin).await, "edgeproxy_blob_evictions_total") < f64::from(round) {
            assert!(started.elapsed().as_secs() < 10, "no eviction");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let samples = Samples::scrape(&admin).await;
    assert!(metric(&samples, "edgeproxy_blob_stored_bytes_total") >= 2.0 * SMALL_LFS as f64, "both copies were kept, then evicted");
    assert!(metric(&samples, "edgeproxy_blob_evicted_bytes_total") >= SMALL_LFS as f64);
    assert!(metric(&samples, "edgeproxy_blob_bytes") <= 0.9 * 1048576.0, "the store is under 90% of its cap");
    assert!(metric(&samples, "edgeproxy_upstream_received_bytes_total") >= 2.0 * SMALL_LFS as f64, "both copies came from upstream");
    assert_eq!(metric(&samples, "edgeproxy_blob_read_bytes_total"), 0.0, "none from the store");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_on_one_s3_bucket_share_what_they_keep() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "--blob-store s3:// is the wasmtime host's (Workers keep an R2 bucket, Spin its key-value store)") {
        return;
    }
    let s3 = edgeproxy_testkit::s3::S3::start("edgeproxy").await;
    let hub = FakeHub::start(SMALL_LFS).await;
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let document = hub.document("\n[route.hf-mirror.store]\n");
    let args = ["--blob-store", "s3://edgeproxy/mirror"];
    let (one, two) = (Host::start_built_in_with_env(&document, &args, &env).await, Host::start_built_in_with_env(&document, &args, &env).await);

    let fetched = http().get(one.url("/org/small/resolve/main/model.bin")).send().await.unwrap();
    assert_eq!(header(&fetched, "x-cache"), Some("MISS"));
    let body = fetched.bytes().await.unwrap();
    assert!(body.len() as u64 == SMALL_LFS && pattern_matches(0, &body));
    hub.reset_log().await;

    let shared = http().get(two.url("/org/small/resolve/main/model.bin")).send().await.unwrap();
    assert_eq!(header(&shared, "x-cache"), Some("HIT"), "kept by one host, a hit on the other");
    let body = shared.bytes().await.unwrap();
    assert!(body.len() as u64 == SMALL_LFS && pattern_matches(0, &body), "whole and intact from S3");
    let part = http().get(two.url("/org/small/resolve/main/model.bin")).header("range", "bytes=1000000-1000099").send().await.unwrap();
    assert_eq!((part.status().as_u16(), header(&part, "content-range")), (206, Some(format!("bytes 1000000-1000099/{SMALL_LFS}").as_str())));
    assert!(pattern_matches(1_000_000, &part.bytes().await.unwrap()));
    assert!(cdn_file_downloads(&hub.log().await).is_empty(), "the second host fetched nothing from the CDN");
}

#[tokio::test(flavor = "multi_thread")]
async fn prefetch_fills_the_store_so_the_first_download_is_a_hit() {
    let hub = FakeHub::start(SMALL_LFS).await;
    let host = mirror(&hub, "\n[route.hf-mirror.store]\n").await;
    // The host binary's command, a client of whichever host serves the mirror.
    let prefetch = |include: &str| {
        let out = std::process::Command::new(edgeproxy_testkit::edgeproxy_binary()).args(["hf", "prefetch", "org/small", "--mirror", &host.base, "--include", include]).env_remove("HF_TOKEN").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = prefetch("*.bin");
    assert!(first.contains(&format!("model.bin: {SMALL_LFS} bytes, MISS")) && first.contains("prefetched 1 files"), "{first}");
    assert!(prefetch("*.bin").contains("model.bin: 4194304 bytes, HIT"), "the second run finds it kept");
    let everything = prefetch("*");
    assert!(everything.contains("prefetched 123 files"), "every page of the listing: {everything}");

    hub.reset_log().await;
    let home = tempdir::Dir::new("hf-home");
    hf::client(&host.base, home.path(), &["snapshot", "org/small"], &[("HF_HUB_DISABLE_XET", "1")]).await.unwrap();
    assert!(cdn_requests(&hub.log().await).is_empty(), "the team's first snapshot comes from the store");
}
