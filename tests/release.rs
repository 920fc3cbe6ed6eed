//! The release artifacts (`cargo xtask package`; `cargo xtask test` makes
//! them first, with the host the suite runs), as a user without Rust runs
//! them: each checked against its `.sha256`, unpacked into an empty
//! directory, and started with a `PATH` that has no `cargo` or `rustc`. Each
//! serves the default document: the mirror's home page and a zoo image.
//! They do not depend on the suite's host, so they run on the wasmtime pass.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeproxy_testkit::hf::tempdir;
use edgeproxy_testkit::hub::FakeKohaku;
use edgeproxy_testkit::workspace_root;

/// Only the system's tools: no `~/.cargo/bin`.
const BARE_PATH: &str = "/usr/bin:/bin";

/// The artifact `edgeproxy-<version>-<kind>.tar.gz`, checked against its
/// checksum and unpacked into a new directory; returns that directory and
/// the unpacked one.
fn unpack(kind: &str) -> (tempdir::Dir, PathBuf) {
    let release = workspace_root().join("dist/release");
    let tarball = std::fs::read_dir(&release)
        .unwrap_or_else(|e| panic!("{}: {e} (`cargo xtask test` or `cargo xtask package` makes it)", release.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|name| name.starts_with("edgeproxy-") && name.ends_with(&format!("-{kind}.tar.gz")))
        .unwrap_or_else(|| panic!("no edgeproxy-*-{kind}.tar.gz in {}", release.display()));
    let checked = Command::new("sha256sum").args(["-c", &format!("{tarball}.sha256")]).current_dir(&release).output().unwrap();
    assert!(checked.status.success(), "{tarball} does not match its .sha256: {}", String::from_utf8_lossy(&checked.stdout));
    let dir = tempdir::Dir::new(&format!("release-{kind}"));
    let unpacked = Command::new("tar").arg("xzf").arg(release.join(&tarball)).current_dir(dir.path()).status().unwrap();
    assert!(unpacked.success(), "tar xzf {tarball}");
    let top = dir.path().join(tarball.trim_end_matches(".tar.gz"));
    for file in ["LICENSE", "THIRD-PARTY-NOTICES.md", "README.md"] {
        assert!(top.join(file).is_file(), "{tarball} carries {file}");
    }
    (dir, top)
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server started in its own process group, stopped with all its
/// children (wrangler's workerd, Spin's trigger) when dropped.
struct Server(Child);

impl Server {
    fn start(command: &mut Command) -> Server {
        use std::os::unix::process::CommandExt;
        Server(command.process_group(0).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start the server"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

/// A command run in `dir` as a user without Rust would: only `PATH` (the
/// system's, and `extra` before it), `HOME` in the test's directory.
fn as_a_user(program: &Path, dir: &Path, home: &Path, extra_path: Option<&Path>) -> Command {
    let mut command = Command::new(program);
    let path = extra_path.map_or(BARE_PATH.to_owned(), |p| format!("{}:{BARE_PATH}", p.display()));
    // TMPDIR: what wrangler and Spin leave there goes with the test's home.
    command.current_dir(dir).env_clear().env("PATH", path).env("HOME", home).env("TMPDIR", home);
    command
}

/// `base`'s answer to `/`, once the server has started (up to a minute).
async fn first_answer(client: &reqwest::Client, base: &str) -> reqwest::Response {
    let started = Instant::now();
    loop {
        match client.get(format!("{base}/")).send().await {
            Ok(response) => return response,
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(60), "{base} did not start: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// The default document's answers at `base`: the mirror's home page and a
/// zoo image.
async fn serves_the_defaults(base: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let home = first_answer(&client, base).await;
    assert_eq!(home.status(), 200);
    assert!(home.text().await.unwrap().contains("HF_ENDPOINT"), "the mirror's home page");
    let image = client.get(format!("{base}/_zoo/200x150/sunglasses-sloth")).send().await.unwrap();
    assert_eq!(image.status(), 200);
    assert!(image.headers()["content-type"].to_str().unwrap().starts_with("image/"));
    assert!(!image.bytes().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_tarballs_binary_serves_the_defaults() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    let (dir, top) = unpack(&host_target());
    let port = free_port();
    let _server = Server::start(as_a_user(&top.join("edgeproxy"), &top, dir.path(), None).args(["serve", "--listen", &format!("127.0.0.1:{port}")]));
    serves_the_defaults(&format!("http://127.0.0.1:{port}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_spin_application_runs_on_spin_up_without_a_build() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    let Some(spin) = edgeproxy_testkit::host::spin_binary() else {
        return edgeproxy_testkit::skip::skip("no Spin binary (../shared/tools/spin, EDGEPROXY_SPIN or PATH)");
    };
    let (dir, top) = unpack("spin");
    let manifest = std::fs::read_to_string(top.join("spin.toml")).unwrap();
    assert!(!manifest.contains("[component.edgeproxy.build]") && manifest.contains("source = \"edgeproxy-spin.wasm\""), "{manifest}");
    let port = free_port();
    let _server = Server::start(as_a_user(&spin, &top, dir.path(), None).args(["up", "--listen", &format!("127.0.0.1:{port}")]));
    serves_the_defaults(&format!("http://127.0.0.1:{port}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_workers_bundle_deploys_dry_and_serves_in_wrangler_dev() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    let (dir, top) = unpack("workers");
    let user = || wrangler_as_a_user(&top, dir.path());
    let dry = user().args(["deploy", "--dry-run", "--outdir"]).arg(dir.path().join("dry-run")).output().unwrap();
    assert!(dry.status.success(), "wrangler deploy --dry-run: {}{}", String::from_utf8_lossy(&dry.stdout), String::from_utf8_lossy(&dry.stderr));
    let port = free_port();
    let _server = Server::start(user().args(["dev", "--ip", "127.0.0.1", "--port", &port.to_string()]));
    serves_the_defaults(&format!("http://127.0.0.1:{port}")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pages_build_output_serves_in_wrangler_pages_dev() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    let (dir, top) = unpack("pages");
    assert!(top.join("public/_worker.js/index.js").is_file(), "advanced mode: _worker.js is a directory with index.js");
    let mut command = wrangler_as_a_user(&top, dir.path());
    let port = free_port();
    let _server = Server::start(command.args(["pages", "dev", "--ip", "127.0.0.1", "--port", &port.to_string()]));
    serves_the_defaults(&format!("http://127.0.0.1:{port}")).await;
}

/// hub-gateway with KohakuHub's web UI as Workers Static Assets
/// (hub-gateway.wrangler.toml in the bundle): the platform serves the UI's
/// files, and index.html for its routes, without the Worker (which, with no
/// `ui` in the document, has no UI to give); the gateway's routes run it.
#[tokio::test(flavor = "multi_thread")]
async fn the_hub_gateways_web_ui_is_served_as_workers_static_assets() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    let hub = FakeKohaku::start(&[]).await;
    let (dir, top) = unpack("workers");
    write_web_ui(&top.join("public"));
    let config = std::fs::read_to_string(top.join("hub-gateway.wrangler.toml")).unwrap();
    std::fs::write(top.join("hub-gateway.wrangler.toml"), config.replace("https://hub-api.example.com", &hub.backend)).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    hub.set_base_url(&base).await;
    let _server = Server::start(wrangler_as_a_user(&top, dir.path()).args(["dev", "-c", "hub-gateway.wrangler.toml", "--ip", "127.0.0.1", "--port", &port.to_string()]));
    serves_the_web_ui_as_static_files(&base).await;
}

/// The same on Spin: hub-gateway.spin.toml in the application routes the
/// UI's paths to its static file component, which serves the files it
/// mounts from `public/`, and the gateway's routes to the core.
#[tokio::test(flavor = "multi_thread")]
async fn the_hub_gateways_web_ui_is_served_by_spins_static_file_component() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    let Some(spin) = edgeproxy_testkit::host::spin_binary() else {
        return edgeproxy_testkit::skip::skip("no Spin binary (../shared/tools/spin, EDGEPROXY_SPIN or PATH)");
    };
    let hub = FakeKohaku::start(&[]).await;
    let (dir, top) = unpack("spin");
    write_web_ui(&top.join("public"));
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    hub.set_base_url(&base).await;
    let listen = format!("127.0.0.1:{port}");
    let backend = format!("api_base_url={}", hub.backend);
    let _server = Server::start(as_a_user(&spin, &top, dir.path(), None).args(["up", "-f", "hub-gateway.spin.toml", "--listen", &listen, "--variable", &backend]));
    serves_the_web_ui_as_static_files(&base).await;
    answers_files_as_a_file_server(&base).await;
}

/// The same on the host: `serve --assets DIR`.
#[tokio::test(flavor = "multi_thread")]
async fn the_hub_gateways_web_ui_is_served_from_the_hosts_assets_directory() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    let hub = FakeKohaku::start(&[]).await;
    let (dir, top) = unpack(&host_target());
    write_web_ui(&top.join("public"));
    std::fs::write(top.join("hub.toml"), format!("[[route]]\nhost = \"*\"\n\n[route.hub-gateway]\nbackend = \"{}\"\n", hub.backend)).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    hub.set_base_url(&base).await;
    let listen = format!("127.0.0.1:{port}");
    let _server = Server::start(as_a_user(&top.join("edgeproxy"), &top, dir.path(), None).args(["serve", "--config", "hub.toml", "--assets", "public", "--listen", &listen]));
    serves_the_web_ui_as_static_files(&base).await;
    answers_files_as_a_file_server(&base).await;
}

/// A built web UI, as KohakuHub's `dist/` is laid out.
fn write_web_ui(public: &Path) {
    std::fs::create_dir_all(public.join("assets")).unwrap();
    std::fs::write(public.join("index.html"), "<!doctype html><title>KohakuHub</title><div id=app>KOHAKU-UI</div>").unwrap();
    std::fs::write(public.join("assets/index-3f9a2c1b.js"), "console.log('ui')").unwrap();
}

/// What every host's static files give: the UI's pages (index.html) and
/// files from the files, the API and `git clone` through the gateway.
async fn serves_the_web_ui_as_static_files(base: &str) {
    use edgeproxy_testkit::hub::{ALICE, Git};
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    first_answer(&client, base).await;
    for page in ["/", "/alice/public-model", "/models/alice/public-model", "/settings"] {
        let r = client.get(format!("{base}{page}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{page}");
        assert!(r.text().await.unwrap().contains("KOHAKU-UI"), "{page}: the UI's index.html, from the files");
    }
    let script = client.get(format!("{base}/assets/index-3f9a2c1b.js")).send().await.unwrap();
    assert!(script.headers()["content-type"].to_str().unwrap().contains("javascript"));
    assert_eq!(script.text().await.unwrap(), "console.log('ui')");
    let api = client.get(format!("{base}/api/whoami-v2")).bearer_auth(ALICE.1).send().await.unwrap();
    assert_eq!(api.status(), 200, "the API, through the gateway, from the backend it was given");
    let work = tempdir::Dir::new("hub-static-git");
    Git::new().run(&["clone", &format!("{base}/alice/public-model.git"), "repo"], work.path()).unwrap();
    assert!(work.path().join("repo/.git").exists(), "git through the gateway");
}

/// What our own file servers (the host's `--assets`, Spin's component)
/// answer as the core's web UI does (tests/hub_gateway.rs): caching by
/// name, revalidation, a JSON 404 for a missing file, GET and HEAD only.
async fn answers_files_as_a_file_server(base: &str) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let page = client.get(format!("{base}/models/alice/public-model")).send().await.unwrap();
    assert_eq!((page.headers()["content-type"].to_str().unwrap(), page.headers()["cache-control"].to_str().unwrap()), ("text/html; charset=utf-8", "no-cache"));
    let script = client.get(format!("{base}/assets/index-3f9a2c1b.js")).send().await.unwrap();
    assert_eq!(script.headers()["cache-control"], "public, max-age=31536000, immutable");
    let etag = script.headers()["etag"].to_str().unwrap().to_owned();
    let again = client.get(format!("{base}/assets/index-3f9a2c1b.js")).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(again.status(), 304);
    let head = client.head(format!("{base}/assets/index-3f9a2c1b.js")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let missing = client.get(format!("{base}/assets/gone-00000000.js")).send().await.unwrap();
    assert_eq!((missing.status().as_u16(), missing.headers()["x-error-code"].to_str().unwrap()), (404, "not_found"), "a missing file is a 404, never the index");
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    let post = client.post(format!("{base}/settings")).send().await.unwrap();
    assert_eq!((post.status().as_u16(), post.headers().get("allow").and_then(|v| v.to_str().ok())), (405, Some("GET, HEAD")));
    let escape = client.get(format!("{base}/assets/..%2f..%2fhub.toml")).send().await.unwrap();
    assert_eq!(escape.status(), 404, "no path leaves the directory");
}

/// wrangler, from the repository's node_modules, with only Node (the npm
/// package the repository pins) on the user's PATH.
fn wrangler_as_a_user(dir: &Path, home: &Path) -> Command {
    let node_bin = workspace_root().join("node_modules/node/bin");
    let mut command = as_a_user(&workspace_root().join("node_modules/.bin/wrangler"), dir, home, Some(&node_bin));
    command.env("WRANGLER_SEND_METRICS", "false").env("CI", "true");
    command
}

#[test]
fn every_artifact_names_the_licences_of_what_it_bundles() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "the release artifacts do not depend on the suite's host") {
        return;
    }
    for (kind, bundled) in [("workers", "@bytecodealliance/jco"), ("pages", "@bytecodealliance/jco"), ("spin", "wit-bindgen"), (host_target().as_str(), "wasmtime")] {
        let (_dir, top) = unpack(kind);
        let notices = std::fs::read_to_string(top.join("THIRD-PARTY-NOTICES.md")).unwrap();
        // And the codecs vendored with our patches (vendor/), in every artifact's core.
        for bundled in [bundled, "vaam-image-webp", "jpeg-encoder"] {
            assert!(notices.lines().any(|l| l.starts_with(&format!("| {bundled} |"))), "{kind}'s notices name {bundled}");
        }
        assert!(std::fs::read_to_string(top.join("LICENSE")).unwrap().contains("Apache License"), "{kind}: our licence");
    }
}

/// The host's target triple, which names the binary's tarball.
fn host_target() -> String {
    let out = Command::new("rustc").arg("-vV").output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.strip_prefix("host: ")).unwrap().to_owned()
}
