//! hub-gateway, as its users see it: real `git`, `git-lfs`, `huggingface_hub`,
//! curl-like HTTP and headless Chromium, through a real host, against
//! `tests/fixtures/hub/fake_kohaku.py` (KohakuHub's backend with its measured
//! credential behaviour, `git http-backend` behind it, a presigned object
//! store that refuses `Authorization`, and a static host with a built web UI).

use edgeproxy_testkit::browser::chromium_dom;
use edgeproxy_testkit::hf::{self, tempdir};
use edgeproxy_testkit::hub::{ALICE, BOB, FakeKohaku, Git, upload_ui};
use edgeproxy_testkit::{Host, pattern_matches};
use serde_json::Value;

const PUBLIC: &str = "alice/public-model";
const PRIVATE: &str = "alice/private-model";

/// The gateway in front of `hub`, with `extra` TOML in its table; the
/// backend is told the gateway's address (KohakuHub's `BASE_URL`).
async fn gateway(hub: &FakeKohaku, extra: &str) -> Host {
    let host = Host::start_with_secrets(&hub.document(extra), &[("ui-upload-token", "ui-secret")]).await;
    hub.set_base_url(&host.base).await;
    host
}

/// Coming from KohakuHub's Pages Functions: their `API_BASE_URL` is the
/// backend when the document names none.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_backend_kohakuhubs_api_base_url_is_the_backend() {
    let hub = FakeKohaku::start(&[]).await;
    let setting = edgeproxy_testkit::original_setting("API_BASE_URL", &hub.backend);
    let env: Vec<(&str, &str)> = setting.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let host = Host::start_with_env("[[route]]\nhost = \"*\"\n\n[route.hub-gateway]\n", &env).await;
    hub.set_base_url(&host.base).await;
    let r = http().get(host.url("/api/whoami-v2")).bearer_auth(ALICE.1).send().await.unwrap();
    assert_eq!(r.status(), 200, "the API, from the backend API_BASE_URL names");
    let work = tempdir::Dir::new("hub-git");
    Git::new().run(&["clone", &host.url(&format!("/{PUBLIC}.git")), "repo"], work.path()).unwrap();
    assert!(work.path().join("repo/.git").exists(), "git through it too");
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().build().unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

fn requests<'a>(log: &'a [Value], server: &str, path_part: &str) -> Vec<&'a Value> {
    log.iter().filter(|r| r["server"] == server && r["path"].as_str().unwrap_or_default().contains(path_part)).collect()
}

fn logged<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"].get(name).and_then(Value::as_str)
}

/// No `Authorization` reached anything but the backend, and the gateway
/// sent no cookie elsewhere. (A client's own cookie jar may send the store a
/// cookie: cookies ignore ports, and every fixture is on 127.0.0.1.)
fn credentials_only_at_the_backend(log: &[Value]) {
    let through_gateway = |r: &Value| logged(r, "x-forwarded-host").is_some();
    let leaked: Vec<&Value> = log
        .iter()
        .filter(|r| r["server"] != "backend" && (logged(r, "authorization").is_some() || (through_gateway(r) && logged(r, "cookie").is_some())))
        .collect();
    assert!(leaked.is_empty(), "credentials left for a host other than the backend: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn git_clones_over_v2_and_v0_and_a_gzipped_fetch_pass_untouched() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, "").await;
    let git = Git::new();
    let work = tempdir::Dir::new("clone");
    git.run(&["clone", &host.url(&format!("/{PUBLIC}.git")), "v2"], work.path()).unwrap();
    git.run(&["-c", "protocol.version=0", "clone", &host.url(&format!("/{PUBLIC}.git")), "v0"], work.path()).unwrap();
    for dir in ["v2", "v0"] {
        let weights = std::fs::read(work.path().join(dir).join("weights.bin")).unwrap();
        assert_eq!(weights.len(), 1 << 20, "the LFS file is smudged in {dir}");
        assert!(pattern_matches(0, &weights));
    }
    // A fetch that wants 300 tags: git gzips a request body over 1 KiB.
    git.run(&["init", "-q", "refs"], work.path()).unwrap();
    git.run(&["fetch", "-q", &host.url("/alice/many-refs.git"), "+refs/tags/*:refs/tags/*"], &work.path().join("refs")).unwrap();
    let tags = git.run(&["tag"], &work.path().join("refs")).unwrap();
    assert_eq!(tags.lines().count(), 300);

    let log = hub.log().await;
    let packs = requests(&log, "backend", "/git-upload-pack");
    assert!(packs.iter().all(|r| logged(r, "content-type") == Some("application/x-git-upload-pack-request")), "{packs:?}");
    assert!(packs.iter().any(|r| logged(r, "git-protocol") == Some("version=2")), "Git-Protocol reached the backend");
    assert!(packs.iter().any(|r| logged(r, "content-encoding") == Some("gzip")), "a gzipped request body reached the backend as it was");
    let refs = requests(&log, "backend", "/info/refs");
    assert!(refs.iter().any(|r| logged(r, "git-protocol").is_none()), "the v0 clone asked without Git-Protocol");

    // Every git answer is no-store and carries no CORS, whatever the backend said.
    let r = http().get(host.url(&format!("/{PUBLIC}.git/info/refs?service=git-upload-pack"))).header("origin", "https://example.org").send().await.unwrap();
    assert_eq!(header(&r, "content-type"), Some("application/x-git-upload-pack-advertisement"));
    assert_eq!(header(&r, "cache-control"), Some("no-store"));
    assert!(r.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "{:?}", r.headers());
    assert!(r.bytes().await.unwrap().starts_with(b"001e# service=git-upload-pack"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_push_gets_the_challenge_the_backend_forgets_and_streams_over_1_mib_chunked() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, "auth_realm = \"KohakuHub\"").await;
    let r = http().get(host.url("/alice/push-target.git/info/refs?service=git-receive-pack")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "www-authenticate"), Some("Basic realm=\"KohakuHub\", charset=\"UTF-8\""), "added: the backend sent none");

    let git = Git::new().with_credentials(ALICE);
    let work = tempdir::Dir::new("push");
    git.run(&["clone", &host.url("/alice/push-target.git"), "repo"], work.path()).unwrap();
    let repo = work.path().join("repo");
    let blob = incompressible(1_500_000);
    std::fs::write(repo.join("big.dat"), &blob).unwrap();
    git.run(&["add", "big.dat"], &repo).unwrap();
    git.run(&["commit", "-qm", "a pack over http.postBuffer"], &repo).unwrap();
    hub.reset_log().await;
    git.run(&["push", "origin", "main"], &repo).unwrap();

    let log = hub.log().await;
    let pushes = requests(&log, "backend", "/git-receive-pack");
    let posts: Vec<&&Value> = pushes.iter().filter(|r| r["method"] == "POST").collect();
    assert!(posts.iter().any(|r| logged(r, "content-length") == Some("4")), "git's probe POST passed: {posts:?}");
    assert!(posts.iter().any(|r| r["status"] == 200 && logged(r, "content-length") != Some("4")), "the pack itself was accepted: {posts:?}");
    let fresh = tempdir::Dir::new("verify");
    Git::new().run(&["clone", &host.url("/alice/push-target.git"), "again"], fresh.path()).unwrap();
    assert_eq!(std::fs::read(fresh.path().join("again/big.dat")).unwrap(), blob, "the push landed intact");
    credentials_only_at_the_backend(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_private_repo_clones_and_pulls_lfs_with_an_ordinary_credential_helper() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, "").await;
    let refs = host.url(&format!("/{PRIVATE}.git/info/refs?service=git-upload-pack"));
    let anonymous = http().get(&refs).send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "an anonymous 404 becomes a challenge");
    assert!(header(&anonymous, "www-authenticate").is_some_and(|v| v.starts_with("Basic ")));
    let bob = http().get(&refs).basic_auth(BOB.0, Some(BOB.1)).send().await.unwrap();
    assert_eq!(bob.status(), 404, "a credentialed 404 stays a 404");

    let work = tempdir::Dir::new("private");
    let anonymous_clone = Git::new().run(&["clone", &host.url(&format!("/{PRIVATE}.git")), "nope"], work.path());
    assert!(anonymous_clone.is_err_and(|e| e.contains("Authentication failed") || e.contains("could not read Username")));
    hub.reset_log().await;
    Git::new().with_credentials(ALICE).run(&["clone", &host.url(&format!("/{PRIVATE}.git")), "repo"], work.path()).unwrap();
    let secret = std::fs::read(work.path().join("repo/secret.bin")).unwrap();
    assert_eq!(secret.len(), 256 << 10, "git-lfs smudged the private object");
    assert!(pattern_matches(0, &secret));

    let log = hub.log().await;
    let batches = requests(&log, "backend", "/info/lfs/objects/batch");
    assert!(batches.iter().any(|r| r["status"] == 200 && logged(r, "authorization") == Some("Bearer khub_alice_token")), "git-lfs' Basic reached the backend as Bearer: {batches:?}");
    assert!(batches.iter().all(|r| !logged(r, "authorization").is_some_and(|a| a.starts_with("Basic"))), "{batches:?}");
    assert!(!requests(&log, "store", "/").is_empty(), "objects came straight from the store (direct hrefs)");
    credentials_only_at_the_backend(&log);
}

#[tokio::test(flavor = "multi_thread")]
async fn lfs_push_and_pull_of_100_mib_through_the_gateway_in_bounded_memory() {
    // KohakuHub answers uploads over its multipart threshold (100 MB) in a
    // multipart shape only huggingface_hub understands; git-lfs needs it raised.
    let hub = FakeKohaku::start(&["--lfs-multipart-threshold", "1000000000"]).await;
    let host = gateway(&hub, &format!("lfs_hrefs = \"gateway\"\nobject_store = \"{}\"", hub.store)).await;
    let git = Git::new().with_credentials(ALICE);
    let work = tempdir::Dir::new("lfs100");
    git.run(&["clone", &host.url("/alice/push-target.git"), "repo"], work.path()).unwrap();
    let repo = work.path().join("repo");
    const SIZE: usize = 100 << 20;
    let big: Vec<u8> = (0..SIZE as u64).map(edgeproxy_testkit::pattern_byte).collect();
    std::fs::write(repo.join(".gitattributes"), "*.bin filter=lfs diff=lfs merge=lfs -text\n").unwrap();
    std::fs::write(repo.join("model.bin"), &big).unwrap();
    git.run(&["add", "."], &repo).unwrap();
    git.run(&["commit", "-qm", "100 MiB of weights"], &repo).unwrap();
    git.run(&["push", "origin", "main"], &repo).unwrap();
    drop(big);
    git.run(&["clone", &host.url("/alice/push-target.git"), "again"], work.path()).unwrap();
    let pulled = std::fs::read(work.path().join("again/model.bin")).unwrap();
    assert_eq!(pulled.len(), SIZE);
    assert!(pattern_matches(0, &pulled), "the object came back intact");

    let log = hub.log().await;
    let store: Vec<&Value> = requests(&log, "store", "/");
    assert!(store.iter().any(|r| r["method"] == "PUT") && store.iter().any(|r| r["method"] == "GET"), "{store:?}");
    assert!(store.iter().all(|r| logged(r, "x-forwarded-host").is_some()), "every object went through the gateway");
    credentials_only_at_the_backend(&log);
    host.assert_bounded_memory("100 MiB LFS push and pull");
}

#[tokio::test(flavor = "multi_thread")]
async fn huggingface_hub_uploads_and_downloads_with_the_token_seen_only_by_the_backend() {
    // Small multipart thresholds, so a 6 MB upload takes KohakuHub's multipart path.
    let hub = FakeKohaku::start(&["--lfs-multipart-threshold", "4000000", "--lfs-chunk-size", "2000000"]).await;
    let host = gateway(&hub, "").await;
    let home = tempdir::Dir::new("hf-home");
    let files = tempdir::Dir::new("upload");
    let big: Vec<u8> = (0..6_000_000u64).map(edgeproxy_testkit::pattern_byte).collect();
    std::fs::write(files.path().join("weights.bin"), &big).unwrap();
    let folder = files.path().join("folder");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("notes.md"), "# notes\n").unwrap();
    std::fs::write(folder.join("sub/config.json"), "{\"layers\": 2}\n").unwrap();
    let token = ALICE.1;
    let client = |args: Vec<String>| {
        let home = home.path().to_owned();
        let endpoint = host.base.clone();
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            hf::client(&endpoint, &home, &args, &[("HF_HUB_DISABLE_XET", "1")]).await
        }
    };
    let weights = files.path().join("weights.bin").to_string_lossy().into_owned();
    client(vec!["upload-file".into(), "alice/uploads".into(), weights, "weights.bin".into(), "--token".into(), token.into()]).await.unwrap();
    client(vec!["upload-folder".into(), "alice/uploads".into(), folder.to_string_lossy().into_owned(), "--token".into(), token.into()]).await.unwrap();

    let download = client(vec!["download".into(), "alice/uploads".into(), "weights.bin".into(), "--token".into(), token.into()]).await.unwrap();
    assert_eq!(download["size"], 6_000_000);
    assert_eq!(download["sha256"], sha256_hex(&big));
    let snapshot = client(vec!["snapshot".into(), "alice/uploads".into(), "--token".into(), token.into()]).await.unwrap();
    let names: Vec<&str> = snapshot["files"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for name in ["README.md", "weights.bin", "notes.md", "sub/config.json"] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }

    let log = hub.log().await;
    assert!(!requests(&log, "backend", "/preupload/").is_empty() && !requests(&log, "backend", "/commit/").is_empty());
    assert!(requests(&log, "backend", "/info/lfs/complete/").iter().any(|r| r["status"] == 200), "the multipart completion went through the gateway");
    assert!(requests(&log, "store", "/").iter().any(|r| r["method"] == "PUT" && r["query"].as_str().unwrap_or_default().contains("partNumber")), "parts went straight to the store");
    credentials_only_at_the_backend(&log);
}

/// xorshift64 bytes: zlib cannot shrink them, so the pack is as large as the file.
fn incompressible(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    let out = std::process::Command::new("sha256sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(bytes)?;
        c.wait_with_output()
    });
    String::from_utf8_lossy(&out.unwrap().stdout).split_whitespace().next().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn resolve_redirects_reach_the_client_with_their_metadata_and_every_cookie() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, "").await;
    for path in [format!("/models/{PUBLIC}/resolve/main/weights.bin"), format!("/{PUBLIC}/resolve/main/weights.bin")] {
        hub.reset_log().await;
        let r = http().get(host.url(&path)).send().await.unwrap();
        assert_eq!(r.status(), 302, "{path}: answered, not followed");
        let location = header(&r, "location").unwrap();
        assert!(location.starts_with(&hub.store), "a Location on the store is left alone: {location}");
        assert_eq!(header(&r, "x-linked-size"), Some("1048576"));
        for name in ["x-repo-commit", "x-linked-etag", "etag"] {
            assert!(header(&r, name).is_some(), "{name} reached the client");
        }
        let cookies: Vec<&str> = r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()).collect();
        assert_eq!(cookies.len(), 2, "every Set-Cookie of an anonymous download: {cookies:?}");
        let signed_in = http().get(host.url(&path)).bearer_auth(ALICE.1).send().await.unwrap();
        assert_eq!(signed_in.status(), 302);
        let log = hub.log().await;
        assert!(requests(&log, "store", "/").is_empty(), "the gateway never fetched the file");
        let backend = requests(&log, "backend", "/resolve/");
        assert_eq!(logged(backend[1], "authorization"), Some("Bearer khub_alice_token"));
        assert_eq!(logged(backend[1], "x-forwarded-host"), host.base.strip_prefix("http://"));
        assert_eq!(logged(backend[1], "x-forwarded-proto"), Some("http"));
        // The client follows on its own, without the token (another origin).
        let file = http().get(location).send().await.unwrap();
        assert_eq!(file.status(), 200);
        assert!(pattern_matches(0, &file.bytes().await.unwrap()));
    }
    let head = http().head(host.url(&format!("/models/{PUBLIC}/resolve/main/weights.bin"))).send().await.unwrap();
    assert_eq!((head.status().as_u16(), header(&head, "content-length")), (200, Some("1048576")));
    let own = http().get(host.url("/api/_test/redirect-self")).send().await.unwrap();
    assert_eq!(header(&own, "location"), Some(host.url("/api/version").as_str()), "a Location on the backend itself comes back to the gateway");
    let missing = http().get(host.url(&format!("/models/{PRIVATE}/resolve/main/secret.bin"))).send().await.unwrap();
    assert_eq!((missing.status().as_u16(), header(&missing, "x-error-code")), (404, Some("RepoNotFound")), "the backend's own errors pass");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_comes_from_the_frontend_with_the_app_fallback_types_and_caching() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, &format!("[route.hub-gateway.ui]\nfrontend = \"{}\"", hub.frontend)).await;
    check_web_ui(&host).await;
    let log = hub.log().await;
    assert!(requests(&log, "frontend", "/").iter().all(|r| logged(r, "authorization").is_none() && logged(r, "cookie").is_none()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_web_ui_uploaded_to_key_value_is_served_the_same_way() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, "[route.hub-gateway.ui]\nkv = true\nupload_token = \"ui-upload-token\"").await;
    let before = http().get(host.url("/")).send().await.unwrap();
    assert_eq!(before.status(), 502, "not uploaded yet: a clear error");
    let site = tempdir::Dir::new("site");
    let client = http();
    for file in ["index.html", "assets/index-3f9a2c1b.js", "assets/index-7d41e0aa.css", "favicon.svg", "robots.txt"] {
        let bytes = client.get(format!("{}/{file}", hub.frontend)).send().await.unwrap().bytes().await.unwrap();
        let path = site.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let refused = upload_ui(&host.base, site.path(), "wrong").await.unwrap_err();
    assert!(refused.contains("401"), "{refused}");
    let uploaded = upload_ui(&host.base, site.path(), "ui-secret").await.unwrap();
    assert_eq!(uploaded.last().map(String::as_str), Some("index.html"), "the index goes last");
    check_web_ui(&host).await;
    let r = client.get(host.url("/assets/index-3f9a2c1b.js")).send().await.unwrap();
    let etag = header(&r, "etag").unwrap().to_owned();
    let again = client.get(host.url("/assets/index-3f9a2c1b.js")).header("if-none-match", etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
}

/// What a browser needs from the web UI, wherever it is stored.
async fn check_web_ui(host: &Host) {
    let client = http();
    for path in ["/", "/models/alice/public-model", "/settings/tokens"] {
        let r = client.get(host.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "content-type").is_some_and(|t| t.starts_with("text/html")), "{path}");
        assert_eq!(header(&r, "cache-control"), Some("no-cache"), "{path}");
        assert!(r.text().await.unwrap().contains("<title>KohakuHub</title>"), "{path}: the app's index");
    }
    let js = client.get(host.url("/assets/index-3f9a2c1b.js")).send().await.unwrap();
    assert_eq!(header(&js, "content-type"), Some("text/javascript; charset=utf-8"), "corrected from the store's binary/octet-stream");
    assert_eq!(header(&js, "cache-control"), Some("public, max-age=31536000, immutable"));
    let css = client.get(host.url("/assets/index-7d41e0aa.css")).send().await.unwrap();
    assert!(header(&css, "content-type").is_some_and(|t| t.starts_with("text/css")), "a right type is kept");
    let missing = client.get(host.url("/assets/gone-00000000.js")).send().await.unwrap();
    assert_eq!((missing.status().as_u16(), header(&missing, "content-type")), (404, Some("application/json")), "a missing file is a 404, never the index");
    let post = client.post(host.url("/settings")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    let dom = chromium_dom(&host.url("/models/alice/public-model")).await;
    assert!(dom.contains("KohakuHub UI /models/alice/public-model"), "the app ran in a browser: {dom}");
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_on_allowed_origins_call_the_api_with_credentials_and_others_get_no_cors() {
    let hub = FakeKohaku::start(&[]).await;
    let allowed = hub.frontend.clone();
    let host = gateway(&hub, &format!("[route.hub-gateway.cors]\nallowed_origins = [\"{allowed}\"]\nallow_credentials = true")).await;
    let page = |origin: &str| format!("{origin}/cors-test.html?api={}&token={}", host.base, ALICE.1);
    let dom = chromium_dom(&page(&allowed)).await;
    assert!(dom.contains("OK 200 alice"), "an allowed origin reads the API with credentials: {dom}");
    let refused_origin = allowed.replace("127.0.0.1", "localhost");
    let dom = chromium_dom(&page(&refused_origin)).await;
    assert!(dom.contains("BLOCKED"), "a refused origin is blocked by the browser: {dom}");

    let client = http();
    let r = client.get(host.url("/api/whoami-v2")).bearer_auth(ALICE.1).header("origin", &refused_origin).send().await.unwrap();
    assert!(r.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "no CORS for a refused origin, whatever the backend sent: {:?}", r.headers());
    let r = client.get(host.url("/api/whoami-v2")).bearer_auth(ALICE.1).header("origin", &allowed).send().await.unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), Some(allowed.as_str()));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert!(header(&r, "access-control-expose-headers").is_some_and(|v| v.contains("x-repo-commit")));
    assert!(r.headers().get_all("vary").iter().any(|v| v.to_str().unwrap_or_default().to_ascii_lowercase().contains("origin")));
    hub.reset_log().await;
    let preflight = client
        .request(reqwest::Method::OPTIONS, host.url("/api/repos/create"))
        .header("origin", &allowed)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), 204);
    assert_eq!(header(&preflight, "access-control-allow-origin"), Some(allowed.as_str()), "never * with credentials");
    assert!(requests(&hub.log().await, "backend", "/").is_empty(), "the preflight was answered at the edge");
    let git = client.get(host.url(&format!("/{PUBLIC}.git/info/refs?service=git-upload-pack"))).header("origin", &allowed).send().await.unwrap();
    assert!(git.headers().keys().all(|k| !k.as_str().starts_with("access-control-")), "no CORS on git");
}

#[tokio::test(flavor = "multi_thread")]
async fn backend_failures_are_json_errors_git_shows_why_and_a_reset_mid_pack_breaks_the_clone() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, "git_timeout_ms = 1500\nmax_body_bytes = 1000").await;
    let client = http();
    let health = client.get(host.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    let slow = client.get(host.url("/alice/slow.git/info/refs?service=git-upload-pack")).send().await.unwrap();
    assert_eq!((slow.status().as_u16(), header(&slow, "x-error-code")), (504, Some("gateway_timeout")));
    let work = tempdir::Dir::new("broken");
    let broken = Git::new().run(&["clone", &host.url("/alice/broken.git"), "repo"], work.path());
    assert!(broken.is_err(), "the client sees the broken transfer");
    let big = client.post(host.url("/api/models/alice/uploads/commit/main")).body(vec![b'x'; 2000]).send().await.unwrap();
    assert_eq!((big.status().as_u16(), header(&big, "x-error-code")), (413, Some("body_too_large")));

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    let down = Host::start(&format!("[[route]]\nhost = \"*\"\n[route.hub-gateway]\nbackend = \"{closed}\"\n")).await;
    let r = client.get(down.url("/api/version")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), header(&r, "x-error-code")), (502, Some("bad_gateway")));
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "bad_gateway");
    // git shows a text/plain error body, and only that, as `remote:` lines.
    let work = tempdir::Dir::new("down");
    let refused = Git::new().run(&["clone", &down.url("/alice/m.git"), "repo"], work.path()).unwrap_err();
    assert!(refused.contains("remote: bad_gateway: could not connect to the upstream"), "git does not say why: {refused}");
    let health = client.get(down.url("/health")).send().await.unwrap();
    assert_eq!((health.status().as_u16(), header(&health, "x-error-code")), (503, Some("backend_unhealthy")));
}

#[tokio::test(flavor = "multi_thread")]
async fn over_the_rate_limit_git_lfs_gets_a_429_with_retry_after() {
    let hub = FakeKohaku::start(&[]).await;
    let host = gateway(&hub, "[route.hub-gateway.rate_limit]\nrequests = 2\nperiod_seconds = 60").await;
    let batch = serde_json::json!({ "operation": "download", "transfers": ["basic"], "objects": [] });
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = http()
            .post(host.url(&format!("/{PUBLIC}.git/info/lfs/objects/batch")))
            .header("accept", "application/vnd.git-lfs+json")
            .header("content-type", "application/vnd.git-lfs+json")
            .body(batch.to_string())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert!(header(&r, "retry-after").is_some_and(|v| v.parse::<u32>().is_ok_and(|s| s >= 1)), "git-lfs panics on a 429 without Retry-After");
            assert_eq!(header(&r, "cache-control"), Some("no-store"));
        } else {
            assert_eq!(header(&r, "content-type"), Some("application/vnd.git-lfs+json"), "the batch type passes");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses.first(), Some(&200));
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
}

