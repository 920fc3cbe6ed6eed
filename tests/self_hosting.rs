//! `edgeproxy` as an operator installs it (docs/wasmtime.md): one
//! binary that carries its component, names it in `--version`, and checks a
//! config document without serving. Properties of the wasmtime host's
//! binary, so they run in the wasmtime pass only.

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use edgeproxy_testkit::{Host, Upstream, edgeproxy_binary, workspace_root};

fn wasmtime_pass() -> bool {
    edgeproxy_testkit::skip::only_on("wasmtime", "a property of the wasmtime host's binary")
}

/// SHA-256 of dist/edgeproxy.wasm, the component the binary was built with.
fn dist_component_sha256() -> String {
    let out = std::process::Command::new("sha256sum").arg(workspace_root().join("dist/edgeproxy.wasm")).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

/// api-gateway for any host, in front of `origin`.
fn gateway(origin: &str) -> String {
    format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{origin}\"\n")
}

fn edgeproxy(args: &[&str], document: Option<&str>) -> (Output, std::path::PathBuf) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("edgeproxy-cli-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("edgeproxy.toml");
    if let Some(document) = document {
        std::fs::write(&config, document).unwrap();
    }
    let mut command = std::process::Command::new(std::path::absolute(edgeproxy_binary()).unwrap());
    command.current_dir(&dir).args(args);
    if matches!(args.first(), Some(&"check" | &"serve")) {
        command.arg("--config").arg(&config);
    }
    (output_within(command, std::time::Duration::from_secs(60)), config)
}

/// `command`'s output, or a failed test if it still runs after `limit` (a
/// `serve` that should have refused to start).
fn output_within(mut command: std::process::Command, limit: std::time::Duration) -> Output {
    let mut child = command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            panic!("{command:?} still ran after {limit:?}: {:?}", child.wait_with_output().unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_its_built_in_component_from_an_empty_directory() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let host = Host::start_built_in(&gateway(&upstream.url()), &[]).await;
    assert!(!host.dir().join("dist").exists());
    let response = reqwest::Client::builder().no_proxy().build().unwrap().get(host.url("/echo/built-in")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.seen(), ["/echo/built-in"]);
    assert!(host.dir().join(".edgeproxy").is_dir(), "the default data directory is where the server was started");
}

#[test]
fn version_names_the_built_in_component_by_its_sha256() {
    if !wasmtime_pass() {
        return;
    }
    let (out, _) = edgeproxy(&["--version"], None);
    assert!(out.status.success());
    let version = String::from_utf8(out.stdout).unwrap();
    assert_eq!(version.trim(), format!("edgeproxy {} (component sha256 {})", env!("CARGO_PKG_VERSION"), dist_component_sha256()));
}

#[test]
fn check_says_a_good_document_is_valid() {
    if !wasmtime_pass() {
        return;
    }
    let (out, config) = edgeproxy(&["check"], Some("[[route]]\nhost = \"api.test\"\n[route.api-gateway]\norigin = \"https://api.example\"\n\n[[route]]\nhost = \"zoo.test\"\n[route.image-cache]\n"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{}: valid", config.display()));
}

#[test]
fn check_names_each_problem_with_its_route_and_key_and_fails() {
    if !wasmtime_pass() {
        return;
    }
    let broken = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = \"ftp://a.example\"\n\n\
                  [[route]]\nhost = \"b.test\"\n[route.api-gateway]\norigin = \"https://b.example\"\n\n\
                  [[route]]\nhost = \"c.test\"\n[route.image-cache]\nmin_size = 900\nmax_size = 100\n";
    let (out, config) = edgeproxy(&["check"], Some(broken));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with(&format!("{}: route 1 (a.test): origin must be an http:// or https:// URL", config.display())), "{stderr}");
    assert!(lines[1].starts_with(&format!("{}: route 3 (c.test): min_size and max_size", config.display())), "{stderr}");

    let typo = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norign = \"https://a.example\"\n";
    let (out, _) = edgeproxy(&["check"], Some(typo));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("route 1 (line 4, key route.api-gateway.orign): unknown field `orign`"), "{stderr}");
}

/// As SIGHUP refuses a document with problems, so does start-up: the server
/// exits with `check`'s messages instead of answering every request with a 500.
#[test]
fn serve_refuses_to_start_with_a_document_that_has_problems() {
    if !wasmtime_pass() {
        return;
    }
    let broken = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = \"ftp://a.example\"\n";
    let (out, config) = edgeproxy(&["serve", "--listen", "127.0.0.1:0"], Some(broken));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("{}: route 1 (a.test): origin must be an http:// or https:// URL", config.display())), "{stderr}");
    assert!(stderr.contains("refused to start"), "{stderr}");
    assert!(!stderr.contains("serving"), "{stderr}");
}

#[test]
fn check_of_a_missing_file_says_so() {
    if !wasmtime_pass() {
        return;
    }
    let (out, config) = edgeproxy(&["check"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("cannot read the config document {}", config.display())), "{stderr}");
}

/// The first line the host writes to stderr that holds `needle`, waiting up to 10 s for it.
async fn message(host: &Host, needle: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        if let Some(line) = host.messages().into_iter().find(|l| l.contains(needle)) {
            return line;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "no {needle:?} in {:#?}", host.messages());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// SIGHUP reads the document again: a good one applies to the requests that
/// follow, a broken one is refused with its problem logged and the previous
/// one stays in use.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_good_document_and_refuses_a_broken_one() {
    if !wasmtime_pass() {
        return;
    }
    let (first, second) = (Upstream::start().await, Upstream::start().await);
    let host = Host::start_built_in(&gateway(&first.url()), &[]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| client.get(host.url(path)).send();
    assert_eq!(get("/echo/one").await.unwrap().status(), 200);

    std::fs::write(host.dir().join("edgeproxy.toml"), gateway(&second.url())).unwrap();
    host.signal("HUP");
    message(&host, "reloaded the config document").await;
    assert_eq!(get("/echo/two").await.unwrap().status(), 200);
    assert_eq!((first.seen(), second.seen()), (vec!["/echo/one".to_owned()], vec!["/echo/two".to_owned()]));

    std::fs::write(host.dir().join("edgeproxy.toml"), gateway("ftp://elsewhere.example")).unwrap();
    host.signal("HUP");
    let refusal = message(&host, "refused the new config document").await;
    assert!(refusal.contains("route 1 (*): origin must be an http:// or https:// URL"), "{refusal}");
    assert_eq!(get("/echo/three").await.unwrap().status(), 200);
    assert_eq!(second.seen(), ["/echo/two", "/echo/three"]);
}

/// SIGTERM: the listener closes at once, a request in flight is finished,
/// and the process exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_open_requests_and_takes_no_new_ones() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let host = Host::start_built_in(&gateway(&upstream.url()), &[]).await;
    let url = host.url("/slow");
    let in_flight = tokio::spawn(async move { reqwest::Client::builder().no_proxy().build().unwrap().get(url).send().await?.text().await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let address = host.base.trim_start_matches("http://").to_owned();
    let exit = tokio::spawn(host.stop_with("TERM"));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(tokio::net::TcpStream::connect(&address).await.is_err(), "a new connection was accepted while draining");
    assert_eq!(in_flight.await.unwrap().unwrap(), "late", "the request in flight (3 s at the origin) was finished");
    assert!(exit.await.unwrap().success());
}

/// `--drain-timeout-secs`: a request that takes longer is cut off, and the
/// process exits at the bound.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_cuts_off_what_outlasts_the_drain_timeout() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let host = Host::start_built_in(&gateway(&upstream.url()), &["--drain-timeout-secs", "1"]).await;
    let url = host.url("/slow");
    let in_flight = tokio::spawn(async move { reqwest::Client::builder().no_proxy().build().unwrap().get(url).send().await?.text().await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = host.stop_with("TERM").await;
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_millis(2500), "exited after {took:?}, the bound is 1 s and the request needed 3 s");
    assert!(status.success(), "{status}");
    assert!(in_flight.await.unwrap().is_err(), "the cut-off request did not end as a success");
}

/// `--log-format json`: one JSON object per request. Every request has an
/// id: the client's `X-Request-Id` when it sent one, else a new one; the
/// origin gets it, the client gets it back, and the log line names it.
#[tokio::test(flavor = "multi_thread")]
async fn json_access_logs_name_the_request_id_the_origin_and_client_saw() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let host = Host::start_built_in(&gateway(&upstream.url()), &["--log-format", "json"]).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut ids = Vec::new();
    for sent in [None, Some("client-chosen-42")] {
        let mut request = client.get(host.url("/echo/logged"));
        if let Some(id) = sent {
            request = request.header("x-request-id", id);
        }
        let response = request.send().await.unwrap();
        let returned = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let echoed: serde_json::Value = response.json().await.unwrap();
        let at_origin: Vec<&str> = echoed["headers"].as_array().unwrap().iter().filter(|h| h[0] == "x-request-id").map(|h| h[1].as_str().unwrap()).collect();
        assert_eq!(at_origin, [returned.as_str()], "the origin got the id, once");
        match sent {
            Some(id) => assert_eq!(returned, id),
            None => assert!(returned.len() == 32 && returned.bytes().all(|b| b.is_ascii_hexdigit()), "{returned}"),
        }
        ids.push(returned);
    }
    // One the core refuses: its error code is logged (the logging phase).
    let refused = client.request(reqwest::Method::TRACE, host.url("/echo/logged")).send().await.unwrap();
    assert_eq!(refused.status(), 405);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let lines: Vec<serde_json::Value> = host.log().iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not JSON: {e}"))).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!((lines[2]["method"].as_str(), lines[2]["status"].as_u64(), lines[2]["error"].as_str()), (Some("TRACE"), Some(405), Some("method_not_allowed")));
    for (line, id) in lines.iter().zip(&ids) {
        assert_eq!(line["request_id"], id.as_str());
        assert!(line["error"].is_null(), "{line}");
        assert_eq!((line["method"].as_str(), line["status"].as_u64(), line["client"].as_str()), (Some("GET"), Some(200), Some("127.0.0.1")));
        assert!(line["url"].as_str().unwrap().ends_with("/echo/logged"), "{line}");
        assert!(line["duration_ms"].as_f64().is_some() && line["time_ms"].as_u64().unwrap() > 1_700_000_000_000, "{line}");
    }
}

/// deploy/edgeproxy.service passes `systemd-analyze verify`, and the flags
/// it starts the server with are ones the server takes.
#[tokio::test(flavor = "multi_thread")]
async fn the_systemd_unit_verifies_and_its_serve_flags_work() {
    if !wasmtime_pass() {
        return;
    }
    let unit = std::fs::read_to_string(workspace_root().join("deploy/edgeproxy.service")).unwrap();
    let binary = std::path::absolute(edgeproxy_binary()).unwrap();
    let dir = std::env::temp_dir().join(format!("edgeproxy-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("edgeproxy.service"), unit.replace("/usr/local/bin/edgeproxy", binary.to_str().unwrap())).unwrap();
    match std::process::Command::new("systemd-analyze").arg("verify").arg(dir.join("edgeproxy.service")).output() {
        Ok(out) => assert!(out.status.success() && out.stderr.is_empty(), "systemd-analyze verify: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => eprintln!("WARNING: systemd-analyze not run ({e}); only the flags are checked"),
    }
    let exec_start = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let words: Vec<&str> = exec_start.split_whitespace().skip_while(|w| *w != "serve").skip(1).collect();
    let data = dir.join("state");
    let mut args = Vec::new();
    let mut pairs = words.chunks(2);
    while let Some(&[flag, value]) = pairs.next() {
        // The test host sets its own document and port, and any free admin port.
        if flag != "--config" && flag != "--listen" {
            args.push(flag.to_owned());
            args.push(if flag == "--admin-listen" { "127.0.0.1:0".to_owned() } else { value.replace("${STATE_DIRECTORY}", data.to_str().unwrap()) });
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let host = Host::start_built_in("", &args).await;
    let response = reqwest::Client::builder().no_proxy().build().unwrap().get(host.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 404, "an empty document serves 404");
    assert!(data.join("kv.redb").exists(), "the data directory is the unit's state directory");
    let admin = edgeproxy_testkit::metrics::admin_url(&host).await;
    let ready = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{admin}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "the unit's admin address serves health checks");
}

/// A self-signed certificate for the test names, and its key, in `dir`
/// (openssl, which Debian's curl already depends on). Returns the two paths.
fn self_signed(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={name}"))
        .args(["-addext", "subjectAltName=DNS:api.test,DNS:hf.test,DNS:zoo.test,DNS:hub.test,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("edgeproxy-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The built-in binary serving HTTPS with this pair, and its port.
async fn https_host(document: &str, cert: &std::path::Path, key: &std::path::Path) -> (Host, String) {
    let host = Host::start_built_in(document, &["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]).await;
    let port = host.url("").rsplit(':').next().unwrap().trim_end_matches('/').to_owned();
    (host, port)
}

/// What curl saw: its exit code, the HTTP version and status (`-w`), the
/// response headers, and the body.
struct Curled {
    exit: i32,
    version: String,
    status: u16,
    headers: String,
    body: Vec<u8>,
}

/// `curl` to `https://{name}:{port}{path}`, with `name` resolved to
/// loopback and `ca` as the only trusted certificate.
fn curl_https(name: &str, port: &str, path: &str, ca: &std::path::Path, protocol: &str) -> Curled {
    let headers = std::env::temp_dir().join(format!("edgeproxy-curl-{}-{name}-{}", std::process::id(), CURL_RUNS.fetch_add(1, Ordering::Relaxed)));
    let out = std::process::Command::new("curl")
        .args(["-sS", protocol, "--noproxy", "*", "--cacert"])
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{port}:127.0.0.1"))
        .arg("-D")
        .arg(&headers)
        .args(["-w", "\n%{http_version} %{http_code}"])
        .arg(format!("https://{name}:{port}{path}"))
        .output()
        .expect("run curl");
    let mut body = out.stdout;
    let split = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
    let trailer = String::from_utf8_lossy(&body[split..]).trim().to_owned();
    body.truncate(split);
    let (version, status) = trailer.split_once(' ').unwrap_or(("", "0"));
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let _ = std::fs::remove_file(headers);
    Curled { exit: out.status.code().unwrap_or(-1), version: version.to_owned(), status: status.parse().unwrap_or(0), headers: head.to_lowercase(), body }
}

static CURL_RUNS: AtomicUsize = AtomicUsize::new(0);

/// `--tls-cert`/`--tls-key`: HTTPS, with HTTP/2 for a client that asks for
/// it by ALPN (and HTTP/1.1 for one that does not), in front of every app;
/// the apps see `https`, so what they write back names it.
#[tokio::test(flavor = "multi_thread")]
async fn https_serves_every_app_over_http2_with_a_self_signed_certificate() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let document = edgeproxy_testkit::every_app(&upstream.url());
    let dir = scratch("tls");
    let (cert, key) = self_signed(&dir, "edgeproxy-test");
    let (host, port) = https_host(&document, &cert, &key).await;
    assert!(host.url("/").starts_with("https://"), "{}", host.url("/"));

    // api-gateway: the origin's redirect comes back naming the client's scheme.
    let api = curl_https("api.test", &port, "/redirect", &cert, "--http2");
    assert_eq!((api.exit, api.version.as_str(), api.status), (0, "2", 302), "{}", api.headers);
    assert!(api.headers.contains(&format!("location: https://api.test:{port}/echo/redirected")), "{}", api.headers);
    let echoed = curl_https("api.test", &port, "/echo/h2", &cert, "--http2");
    assert_eq!((echoed.version.as_str(), echoed.status), ("2", 200));
    let echoed: serde_json::Value = serde_json::from_slice(&echoed.body).unwrap();
    let proto = echoed["headers"].as_array().unwrap().iter().find(|h| h[0] == "x-forwarded-proto").map(|h| h[1].clone());
    assert_eq!(proto, Some("https".into()), "{echoed}");

    // hf-mirror and hub-gateway: proxied to their upstream.
    let hf = curl_https("hf.test", &port, "/echo/hf", &cert, "--http2");
    assert_eq!((hf.exit, hf.version.as_str(), hf.status), (0, "2", 200), "{}", hf.headers);
    let hub = curl_https("hub.test", &port, "/api/models/org/name", &cert, "--http2");
    assert_eq!((hub.exit, hub.version.as_str()), (0, "2"), "{}", hub.headers);
    assert!(upstream.seen().contains(&"/api/models/org/name".to_owned()), "{:?}", upstream.seen());
    // image-cache: a generated PNG.
    let zoo = curl_https("zoo.test", &port, "/64x48/tls-sloth", &cert, "--http2");
    assert_eq!((zoo.exit, zoo.version.as_str(), zoo.status), (0, "2", 200), "{}", zoo.headers);
    assert!(zoo.body.starts_with(b"\x89PNG"), "{} bytes", zoo.body.len());

    // A client without HTTP/2 gets HTTP/1.1 over the same TLS.
    let h1 = curl_https("api.test", &port, "/echo/h1", &cert, "--http1.1");
    assert_eq!((h1.exit, h1.version.as_str(), h1.status), (0, "1.1", 200));
    let _ = std::fs::remove_dir_all(dir);
}

/// SIGHUP reads the certificate and key again: new connections get the
/// renewed certificate, and a pair that does not load is refused with the
/// previous one kept.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_certificate_and_refuses_a_broken_one() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let dir = scratch("tls-reload");
    let (old_cert, old_key) = self_signed(&dir, "old");
    let (new_cert, new_key) = self_signed(&dir, "new");
    let (cert, key) = (dir.join("served.pem"), dir.join("served.key"));
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    let (host, port) = https_host(&gateway(&upstream.url()), &cert, &key).await;
    let get = |ca: &std::path::Path| curl_https("localhost", &port, "/echo/tls", ca, "--http2");
    assert_eq!(get(&old_cert).status, 200);
    assert_eq!(get(&new_cert).exit, 60, "curl cannot verify the old certificate against the new one");

    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    host.signal("HUP");
    message(&host, "reloaded the TLS certificate").await;
    assert_eq!(get(&new_cert).status, 200, "new connections get the renewed certificate");

    // The old key does not fit the new certificate.
    std::fs::copy(&old_key, &key).unwrap();
    host.signal("HUP");
    let refusal = message(&host, "refused the new TLS certificate").await;
    assert!(refusal.contains("does not fit"), "{refusal}");
    assert_eq!(get(&new_cert).status, 200, "the pair in use stays");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--admin-listen`: after known traffic, `/metrics` counts it by route, app
/// and status, times it, counts upstream and store errors by kind, and the
/// bytes each way; `/healthz` and `/readyz` answer, and `/readyz` turns 503
/// when the drain starts, while a request is still in flight.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_known_traffic_and_readiness_follows_the_drain() {
    use edgeproxy_testkit::metrics::{Samples, admin_url};
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let origin = upstream.url();
    let document = format!(
        "[[route]]\nhost = \"api.test\"\n[route.api-gateway]\norigin = \"{origin}\"\n\n\
         [[route]]\nhost = \"zoo.test\"\n[route.image-cache]\n\n\
         [[route]]\nhost = \"dead.test\"\n[route.api-gateway]\norigin = \"http://127.0.0.1:1\"\n"
    );
    // The store fails every operation: image-cache still serves, and each failure is counted.
    let host = Host::start_built_in(&document, &["--admin-listen", "127.0.0.1:0", "--kv-fault", "unavailable"]).await;
    let admin = admin_url(&host).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |name: &str, path: &str, body: Option<Vec<u8>>| {
        let request = match body {
            Some(body) => client.post(host.url(path)).body(body),
            None => client.get(host.url(path)),
        };
        let name = name.to_owned();
        async move { request.header("host", name).send().await.unwrap().bytes().await.unwrap().len() as f64 }
    };
    let mut sent = 0.0;
    for _ in 0..3 {
        sent += send("api.test", "/echo/metrics", None).await;
    }
    sent += send("api.test", "/echo/metrics", Some(vec![b'x'; 1000])).await;
    for _ in 0..2 {
        sent += send("api.test", "/status/503", None).await;
    }
    sent += send("zoo.test", "/64x48/metrics-sloth", None).await;
    sent += send("dead.test", "/anything", None).await;
    sent += send("nowhere.test", "/", None).await;

    let samples = Samples::scrape(&admin).await;
    let requests = |route: &str, app: &str, status: &str| samples.get("edgeproxy_requests_total", &[("route", route), ("app", app), ("status", status)]);
    assert_eq!(requests("1", "api-gateway", "200"), Some(4.0));
    assert_eq!(requests("1", "api-gateway", "503"), Some(2.0));
    assert_eq!(requests("2", "image-cache", "200"), Some(1.0));
    assert_eq!(requests("3", "api-gateway", "502"), Some(1.0));
    assert_eq!(requests("none", "none", "404"), Some(1.0));
    // The core's own errors by code (its logging phase); the upstream's 503s are not among them.
    let errors = |route: &str, app: &str, code: &str| samples.get("edgeproxy_errors_total", &[("route", route), ("app", app), ("code", code)]);
    assert_eq!((errors("3", "api-gateway", "bad_gateway"), errors("none", "none", "not_found")), (Some(1.0), Some(1.0)));
    assert_eq!(samples.get("edgeproxy_errors_total", &[("route", "1"), ("app", "api-gateway"), ("code", "bad_gateway")]), None);
    assert_eq!(samples.get("edgeproxy_upstream_errors_total", &[("kind", "connection_failed")]), Some(1.0));
    assert!(samples.get("edgeproxy_kv_errors_total", &[("operation", "get")]).unwrap_or(0.0) >= 1.0, "image-cache's failed store reads are counted");
    let api = [("route", "1"), ("app", "api-gateway")];
    assert_eq!(samples.get("edgeproxy_request_duration_seconds_count", &api), Some(6.0));
    assert_eq!(samples.get("edgeproxy_guest_seconds_count", &api), Some(6.0));
    let (guest, total) = (samples.get("edgeproxy_guest_seconds_sum", &api).unwrap(), samples.get("edgeproxy_request_duration_seconds_sum", &api).unwrap());
    assert!(guest > 0.0 && guest < total, "guest time {guest} s is part of the requests' {total} s");
    assert_eq!(samples.get("edgeproxy_received_bytes_total", &[]), Some(1000.0));
    assert_eq!(samples.get("edgeproxy_sent_bytes_total", &[]), Some(sent), "every body byte the clients read");

    let status = |path: &'static str| {
        let url = format!("{admin}{path}");
        async move { reqwest::Client::builder().no_proxy().build().unwrap().get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!((status("/healthz").await, status("/readyz").await), (200, 200));
    let slow = client.get(host.url("/slow")).header("host", "api.test").send();
    let in_flight = tokio::spawn(slow);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    host.signal("TERM");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!((status("/healthz").await, status("/readyz").await), (200, 503), "draining: alive, but not ready");
    assert_eq!(in_flight.await.unwrap().unwrap().status(), 200);
}
