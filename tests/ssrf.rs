//! No open proxy: a corpus of server-side request forgery attempts against
//! every app, on every host. A catch-all listener stands for everything
//! outside the allow-lists; the only request that may reach it is the
//! control, sent through a route whose configured origin it is.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeproxy_testkit::{Host, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Records the first line of every request it gets, on 127.0.0.1 and, when
/// the port is free there too, on [::1].
struct CatchAll {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl CatchAll {
    async fn start() -> CatchAll {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = v4.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut listeners = vec![v4];
        if let Ok(v6) = TcpListener::bind(("::1", port)).await {
            listeners.push(v6);
        }
        for listener in listeners {
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((mut stream, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let mut buf = vec![0u8; 2048];
                        let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await.ok().and_then(Result::ok).unwrap_or(0);
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        seen.lock().unwrap().push(text.lines().next().unwrap_or("(nothing)").to_owned());
                        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\nconnection: close\r\n\r\ncaught!").await;
                    });
                }
            });
        }
        CatchAll { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// Each app on its own host name, all in front of the one allowed upstream;
/// `control.test` is an api-gateway whose origin is the catch-all.
fn document(upstream: &Upstream, catch_all: &CatchAll) -> String {
    let allowed = upstream.url();
    format!(
        r#"
[[route]]
host = "api.test"
[route.api-gateway]
origin = "{allowed}"

[[route]]
host = "hf.test"
[route.hf-mirror]
hub = "{allowed}"

[[route]]
host = "*.hf.test"
[route.hf-mirror]
hub = "{allowed}"

[[route]]
host = "zoo.test"
[route.image-cache]

[[route]]
host = "hub.test"
[route.hub-gateway]
backend = "{allowed}"

[[route]]
host = "control.test"
[route.api-gateway]
origin = "http://127.0.0.1:{port}"
"#,
        port = catch_all.port
    )
}

/// Request targets that try to name the catch-all (port `p` on loopback)
/// in every way a URL parser, a decoder or an app's own addressing might
/// read as a host.
fn targets(p: u16) -> Vec<String> {
    let hosts = [
        format!("127.0.0.1:{p}"),
        format!("localhost:{p}"),
        format!("2130706433:{p}"),
        format!("0x7f000001:{p}"),
        format!("0x7f.0.0.1:{p}"),
        format!("0177.0.0.1:{p}"),
        format!("0177.0.0.01:{p}"),
        format!("127.1:{p}"),
        format!("127.0.1:{p}"),
        format!("[::1]:{p}"),
        format!("[::ffff:127.0.0.1]:{p}"),
        format!("[::ffff:7f00:1]:{p}"),
        format!("[0:0:0:0:0:ffff:127.0.0.1]:{p}"),
        format!("cdn-lfs.huggingface.co@127.0.0.1:{p}"),
        format!("user:pass@127.0.0.1:{p}"),
        format!("127.0.0.1:{p}@cdn-lfs.huggingface.co"),
        format!("127%2E0%2E0%2E1:{p}"),
        format!("127.0.0.1%3A{p}"),
        format!("%31%32%37.0.0.1:{p}"),
        format!("127.0.0.1%252E:{p}"),
        format!("127.0.0.1:{p}%2F"),
        format!("127.0.0.1:{p}%00.hf.co"),
        format!("127.0.0.1:{p}\\.hf.co"),
        format!("127.0.0.1:{p}%5C.hf.co"),
        format!("127.0.0.1.:{p}"),
        format!("LOCALHOST:{p}"),
    ];
    let mut targets: Vec<String> = hosts.iter().map(|h| format!("/_cdn/{h}/x")).collect();
    targets.extend([
        format!("//127.0.0.1:{p}/x"),
        format!("/\\127.0.0.1:{p}/x"),
        format!("/%2F%2F127.0.0.1:{p}/x"),
        format!("/%252F%252F127.0.0.1:{p}/x"),
        format!("/..%2F..%2F127.0.0.1:{p}/x"),
        format!("/%2e%2e/%2e%2e/127.0.0.1:{p}/x"),
        format!("/http://127.0.0.1:{p}/x"),
        format!("/http:%2F%2F127.0.0.1:{p}/x"),
        format!("/_cdn/http://127.0.0.1:{p}/x"),
        format!("/cdn-cgi/image/width=10/http://127.0.0.1:{p}/x.png"),
        format!("/cdn-cgi/image/width=10/http%3A%2F%2F127.0.0.1%3A{p}%2Fx.png"),
        format!("/10x10/x?url=http://127.0.0.1:{p}/"),
        format!("/api/models/x?url=http://127.0.0.1:{p}/"),
        format!("/redirect-to?http://127.0.0.1:{p}/redirected"),
        format!("/redirect-to?http://localhost:{p}/redirected"),
        format!("/redirect-to?http://[::1]:{p}/redirected"),
        format!("/x%0d%0aHost:%20127.0.0.1:{p}"),
        format!("/resolve-cache/x?X-Forwarded-Host=127.0.0.1:{p}"),
    ]);
    targets
}

/// Whole requests that no server may turn into a request to the catch-all.
fn raw_requests(app_host: &str, p: u16) -> Vec<String> {
    let mut requests: Vec<String> = targets(p)
        .into_iter()
        .map(|t| format!("GET {t} HTTP/1.1\r\nHost: {app_host}\r\nX-Forwarded-Host: 127.0.0.1:{p}\r\nForwarded: host=127.0.0.1:{p}\r\nConnection: close\r\n\r\n"))
        .collect();
    requests.extend([
        format!("GET /x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: localhost:{p}\r\nConnection: close\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: {app_host}@127.0.0.1:{p}\r\nConnection: close\r\n\r\n"),
        format!("GET http://127.0.0.1:{p}/x HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n"),
        format!("GET http://{app_host}@127.0.0.1:{p}/x HTTP/1.1\r\nHost: {app_host}\r\nConnection: close\r\n\r\n"),
        format!("GET http://127.0.0.1:{p}/x HTTP/1.1\r\nHost: {app_host}\r\nConnection: close\r\n\r\n"),
        format!("CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: {app_host}\r\nHost: 127.0.0.1:{p}\r\nConnection: close\r\n\r\n"),
        format!("GET /x HTTP/1.1\r\nHost: {app_host}\r\nX-Host: 127.0.0.1:{p}\r\nX-Original-URL: http://127.0.0.1:{p}/\r\nX-Rewrite-URL: http://127.0.0.1:{p}/\r\nConnection: close\r\n\r\n"),
    ]);
    requests
}

/// Subdomain-scheme labels of hf-mirror that decode to loopback names.
fn label_hosts() -> Vec<&'static str> {
    vec!["127---0---0---1.hf.test", "localhost.hf.test", "2130706433.hf.test", "0x7f000001.hf.test", "127---1.hf.test", "localhost---.hf.test", "---127---0---0---1.hf.test"]
}

/// Sends `request` as it is and waits for the response's head, or the
/// connection's end (the server answers only after any upstream call).
async fn send_raw(host: &Host, request: &str) {
    let address = host.base.trim_start_matches("http://");
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else { return };
    if stream.write_all(request.as_bytes()).await.is_err() {
        return;
    }
    let (mut buf, mut received) = ([0u8; 4096], Vec::new());
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while !received.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_forgery_reaches_a_host_outside_the_allow_lists() {
    let upstream = Upstream::start().await;
    let catch_all = CatchAll::start().await;
    let host = Host::start(&document(&upstream, &catch_all)).await;
    let p = catch_all.port;

    // The control: the listener does see what is sent to it through a route.
    send_raw(&host, "GET /control HTTP/1.1\r\nHost: control.test\r\nConnection: close\r\n\r\n").await;
    assert_eq!(catch_all.seen(), ["GET /control HTTP/1.1"], "the catch-all sees a request routed to it");

    let mut sent = 0;
    for app_host in ["api.test", "hf.test", "zoo.test", "hub.test"] {
        for request in raw_requests(app_host, p) {
            send_raw(&host, &request).await;
            sent += 1;
        }
    }
    for label_host in label_hosts() {
        for target in ["/x", &format!("/_cdn/127.0.0.1:{p}/x")] {
            send_raw(&host, &format!("GET {target} HTTP/1.1\r\nHost: {label_host}\r\nConnection: close\r\n\r\n")).await;
            sent += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    eprintln!("{sent} forgery attempts sent on {}", Host::kind());
    assert_eq!(catch_all.seen(), ["GET /control HTTP/1.1"], "requests outside the allow-lists, of {sent} attempts");
}
