//! The wasmtime host's bounds (docs/wasmtime.md, "Limits of the wasmtime host"): a guest that
//! loops or allocates without end is stopped with a 503 while everyone else
//! is served, in `edgeproxy serve` and in its Spin mode; and the server cuts
//! off clients that are slow or too many. These are properties of the
//! `edgeproxy` process, so they run in the wasmtime pass only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgeproxy_testkit::{Host, Upstream, runaway, workspace_root};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn wasmtime_pass() -> bool {
    edgeproxy_testkit::skip::only_on("wasmtime", "the wasmtime host's own limits")
}

/// A runaway component written to a scratch file.
fn component(name: &str, bytes: Vec<u8>) -> PathBuf {
    let path = std::env::temp_dir().join(format!("edgeproxy-runaway-{}-{name}.wasm", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap()
}

/// Loops get 503 `guest_time_exceeded` after about the configured guest
/// time, while a well-behaved request made meanwhile is answered at once.
async fn loops_are_stopped_and_others_served(subcommand: &str, component: &std::path::Path, others_status: u16) {
    let host = Host::start_binary(subcommand, component, "", &["--guest-time-ms", "1500"]).await;
    let started = Instant::now();
    // Three loops on a two-core machine: more than there are worker threads.
    let loops: Vec<_> = (0..3).map(|_| tokio::spawn(client().get(host.url("/loop")).send())).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let other = client().get(host.url("/hello")).send().await.unwrap();
    let other_took = started.elapsed();
    assert_eq!(other.status(), others_status);
    for looping in loops {
        let response = looping.await.unwrap().unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-error-code"], "guest_time_exceeded");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "guest_time_exceeded");
    }
    let loops_took = started.elapsed();
    assert!(other_took < Duration::from_millis(1400), "the other request waited {other_took:?} behind the loops");
    assert!(loops_took >= Duration::from_millis(1400) && loops_took < Duration::from_secs(10), "the loops were stopped after {loops_took:?}");
}

/// An allocation without end gets 503 `guest_memory_exceeded`; the memory
/// goes back (the server's RSS ends near where it started) and the server
/// goes on serving.
async fn allocation_is_stopped_and_memory_returned(subcommand: &str, component: &std::path::Path, others_status: u16) {
    let host = Host::start_binary(subcommand, component, "", &["--guest-memory-mib", "96"]).await;
    assert_eq!(client().get(host.url("/first")).send().await.unwrap().status(), others_status);
    let before = host.rss_kib();
    for _ in 0..3 {
        let response = client().get(host.url("/alloc")).send().await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["x-error-code"], "guest_memory_exceeded");
    }
    let after = host.rss_kib();
    assert!(host.peak_rss_kib() >= before + 64 * 1024, "the guest did grow (peak {} KiB, before {before} KiB)", host.peak_rss_kib());
    assert!(after < before + 16 * 1024, "RSS {before} KiB before, {after} KiB after three 96 MiB guests");
    assert_eq!(client().get(host.url("/then")).send().await.unwrap().status(), others_status);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_guest_is_stopped_and_the_server_serves_others() {
    if wasmtime_pass() {
        loops_are_stopped_and_others_served("serve", &component("serve", runaway::edgeproxy_component()), 204).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_looping_guest_is_stopped_in_spin_mode() {
    // The Spin runaway answers nothing on other paths; the host's 500 for
    // that comes at once.
    if wasmtime_pass() {
        loops_are_stopped_and_others_served("spin", &component("spin", runaway::spin_component()), 500).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allocating_guest_is_stopped_and_its_memory_returned() {
    if wasmtime_pass() {
        allocation_is_stopped_and_memory_returned("serve", &component("serve-alloc", runaway::edgeproxy_component()), 204).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_allocating_guest_is_stopped_in_spin_mode() {
    if wasmtime_pass() {
        allocation_is_stopped_and_memory_returned("spin", &component("spin-alloc", runaway::spin_component()), 500).await;
    }
}

/// The real core with an empty document: every request is a 404.
async fn core_host(args: &[&str]) -> Host {
    Host::start_binary("serve", &workspace_root().join("dist/edgeproxy.wasm"), "", args).await
}

async fn connect(host: &Host) -> TcpStream {
    TcpStream::connect(host.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection; what it sent, and when.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (String, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the server kept the connection open for {within:?}"));
    (String::from_utf8_lossy(&received).into_owned(), Instant::now())
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_sent_slowly_are_cut_off_at_the_header_deadline() {
    if !wasmtime_pass() {
        return;
    }
    let host = core_host(&["--header-timeout-secs", "2"]).await;
    let mut stream = connect(&host).await;
    let started = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: slow.test\r\n").await.unwrap();
    // A header line every 500 ms: each byte arrives in time, the headers never end.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if stream.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), trickle).await;
    let (sent, closed) = read_until_closed(&mut stream, Duration::from_secs(1)).await;
    let took = closed - started;
    assert!(took >= Duration::from_secs(2) && took < Duration::from_secs(8), "closed after {took:?}");
    assert!(sent.is_empty() || sent.starts_with("HTTP/1.1 408"), "{sent:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_is_closed() {
    if !wasmtime_pass() {
        return;
    }
    let host = core_host(&["--header-timeout-secs", "2"]).await;
    let mut stream = connect(&host).await;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: idle.test\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 404"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    let answered = Instant::now();
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(8)).await;
    let idle = closed - answered;
    assert!(idle >= Duration::from_millis(1500), "closed after only {idle:?} idle");
    assert!(!rest.contains("HTTP/1.1 2"), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_get_a_503_and_room_comes_back() {
    if !wasmtime_pass() {
        return;
    }
    let host = core_host(&["--max-connections", "2"]).await;
    let first = connect(&host).await;
    let _second = connect(&host).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = connect(&host).await;
    third.write_all(b"GET / HTTP/1.1\r\nHost: many.test\r\n\r\n").await.unwrap();
    let (sent, _) = read_until_closed(&mut third, Duration::from_secs(5)).await;
    assert!(sent.starts_with("HTTP/1.1 503"), "{sent:?}");
    assert!(sent.contains("too_many_connections") && sent.to_ascii_lowercase().contains("retry-after: 1"), "{sent:?}");
    drop(first);
    // The first connection's slot is free once the server has seen it close.
    let mut served = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let response = client().get(host.url("/")).header("host", "many.test").send().await.unwrap();
        if response.status() != 503 {
            served = Some(response.status());
            break;
        }
    }
    assert_eq!(served, Some(reqwest::StatusCode::NOT_FOUND));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_body_that_stalls_is_broken_off_and_never_forwarded_whole() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let document = format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{}\"\n", upstream.url());
    let host = core_host_with(&document, &["--body-timeout-secs", "1"]).await;
    let mut stream = connect(&host).await;
    stream.write_all(b"POST /sink HTTP/1.1\r\nHost: body.test\r\nContent-Length: 1000\r\n\r\n0123456789").await.unwrap();
    let started = Instant::now();
    let (sent, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    let took = closed - started;
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(8), "answered after {took:?}");
    let status: Option<u16> = sent.lines().next().and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    assert!(status.is_none_or(|s| s >= 400), "{sent:?}");
    assert!(!sent.contains("\"bytes\""), "the origin read a whole body: {sent:?}");
}

async fn core_host_with(document: &str, args: &[&str]) -> Host {
    Host::start_binary("serve", &workspace_root().join("dist/edgeproxy.wasm"), document, args).await
}

/// A burst of concurrent requests leaves pool slots resident (about 0.5 MiB
/// each, kept for speed); once the server is idle the pool is replaced and
/// the memory returned (runtime.rs, `start_pool_recycler`).
#[tokio::test(flavor = "multi_thread")]
async fn memory_taken_by_a_burst_is_returned_when_the_server_is_idle() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let host = core_host_with(&format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{}\"\n", upstream.url()), &[]).await;
    let client = client();
    client.get(host.url("/echo/warm")).send().await.unwrap();
    let before = host.rss_kib();
    // Requests on separate connections, all in flight at once: each holds an
    // instance while the origin answers.
    let burst: Vec<_> = (0..192)
        .map(|i| {
            let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().unwrap();
            let url = host.url(&format!("/echo/burst-{i}"));
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    for request in burst {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    let peak = host.peak_rss_kib();
    assert!(peak >= before + 24 * 1024, "the burst did take memory (peak {peak} KiB, before {before} KiB)");
    // Idle for the pool's 2 s, checked every second, then a margin.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let after = host.rss_kib();
    eprintln!("RSS before {before} KiB, peak {peak} KiB, after {after} KiB");
    assert!(after <= before + 12 * 1024, "RSS {after} KiB after the burst, {before} KiB before it");
}
