//! Upstream faults: each ends in the documented status or a broken transfer
//! for the client, never a hang and never a short success. api-gateway
//! passes bodies through, so what its client sees is what any app's client
//! sees when an upstream breaks mid-stream.

use std::time::{Duration, Instant};

use edgeproxy_testkit::{Host, Upstream, workspace_root};

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap()
}

fn gateway_document(origin: &str, extra: &str) -> String {
    format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{origin}\"\n{extra}")
}

/// The JSON error a client gets: status and `X-Error-Code`, the body's `error` agreeing.
async fn json_error(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let code = response.headers().get("x-error-code").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"], code.as_str());
    (status, code)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_connection_is_a_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let host = Host::start(&gateway_document(&format!("http://{closed}"), "")).await;
    let response = client().get(host.url("/anything")).send().await.unwrap();
    assert_eq!(json_error(response).await, (502, "bad_gateway".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_before_the_headers_is_a_502() {
    let upstream = Upstream::start().await;
    let host = Host::start(&gateway_document(&upstream.url(), "")).await;
    let response = client().get(host.url("/reset")).send().await.unwrap();
    assert_eq!(json_error(response).await, (502, "bad_gateway".to_owned()));
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_slower_than_the_timeout_are_a_504() {
    let upstream = Upstream::start().await;
    let host = Host::start(&gateway_document(&upstream.url(), "timeout_ms = 500\n")).await;
    let started = Instant::now();
    let response = client().get(host.url("/slow")).send().await.unwrap();
    assert_eq!(json_error(response).await, (504, "gateway_timeout".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(3), "answered after {:?}", started.elapsed());
}

/// Reads a whole body; `Err` if the transfer broke.
async fn read_body(response: reqwest::Response) -> Result<usize, reqwest::Error> {
    response.bytes().await.map(|b| b.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_response_with_broken_chunked_framing_is_a_broken_transfer() {
    let upstream = Upstream::start().await;
    let host = Host::start(&gateway_document(&upstream.url(), "")).await;
    let response = client().get(host.url("/bad-chunk")).send().await;
    // Either the headers came through and the body breaks, or the proxy saw
    // the break first and answers 502; never a whole "hello" as a success.
    match response {
        // KNOWN GAP on workerd: the Worker's read fails, but workerd ends a
        // response whose body stream errors with a clean last chunk, even
        // after `controller.error()` (cloudflare/workerd#6818, open).
        // docs/workers.md, "Platform notes".
        Ok(r) if r.status() == 200 && Host::kind() == "workerd" => eprintln!("workerd delivered {:?}", read_body(r).await),
        Ok(r) if r.status() == 200 => assert!(read_body(r).await.is_err(), "a broken body was delivered as whole"),
        Ok(r) => assert_eq!(r.status(), 502),
        Err(_) => {}
    }
}

/// Fault injection (`--kv-fault`, `--upstream-body-timeout-secs`) is the wasmtime host's.
fn fault_injection_pass() -> bool {
    edgeproxy_testkit::skip::only_on("wasmtime", "fault injection (--kv-fault, --upstream-body-timeout-secs) is the wasmtime host's")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_stalls_is_broken_off_at_the_upstream_body_timeout() {
    // workerd has no idle timeout on a fetched body; the wasmtime host (in
    // both modes) has `--upstream-body-timeout-secs`.
    if !fault_injection_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    for subcommand in ["serve", "spin"] {
        let (component, extra): (&str, &[&str]) = match subcommand {
            "serve" => ("dist/edgeproxy.wasm", &[]),
            _ => ("dist/edgeproxy-spin.wasm", &["--allowed-outbound-host", "http://127.0.0.1:*"]),
        };
        let args = [&["--upstream-body-timeout-secs", "1"], extra].concat();
        let host = Host::start_binary(subcommand, &workspace_root().join(component), &gateway_document(&upstream.url(), ""), &args).await;
        let started = Instant::now();
        let response = client().get(host.url("/stall/1000")).send().await.unwrap();
        assert_eq!(response.status(), 200, "{subcommand}: the headers came before the stall");
        assert!(read_body(response).await.is_err(), "{subcommand}: a stalled body ended as a success");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "{subcommand}: broken off after {took:?}");
    }
}

/// The wasmtime host with its key-value store switched to `fault`.
async fn with_kv_fault(document: &str, fault: &str) -> Host {
    Host::start_binary("serve", &workspace_root().join("dist/edgeproxy.wasm"), document, &["--kv-fault", fault]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn with_key_value_down_or_slow_the_cache_is_a_miss_and_every_request_is_served() {
    if !fault_injection_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let document = gateway_document(&upstream.url(), "[route.api-gateway.cache]\nmax_entry_bytes = 4096\n");
    for (fault, path) in [("unavailable", "/cacheable/down?cc=public,%20max-age=60"), ("slow", "/cacheable/slow?cc=public,%20max-age=60")] {
        let host = with_kv_fault(&document, fault).await;
        for _ in 0..2 {
            let response = client().get(host.url(path)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{fault}");
            let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
            let body = response.text().await.unwrap();
            assert!(body.starts_with(path.split('?').next().unwrap()), "{fault}: {body}");
            if fault == "unavailable" {
                assert_eq!(x_cache, "MISS", "nothing can be stored, so nothing is a hit");
            }
        }
        let origin_hits = upstream.hits(path.split('?').next().unwrap());
        match fault {
            "unavailable" => assert_eq!(origin_hits, 2, "each request went to the origin"),
            _ => assert_eq!(origin_hits, 1, "a slow store still caches"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_key_value_down_image_cache_answers_a_clear_error_or_the_image_and_stores_nothing() {
    if !fault_injection_pass() {
        return;
    }
    let host = with_kv_fault("[[route]]\nhost = \"*\"\n[route.image-cache]\n", "unavailable").await;
    for _ in 0..2 {
        let response = client().get(host.url("/64x48/kv-down-sloth")).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let body = response.bytes().await.unwrap();
        match status {
            200 => assert!(content_type.starts_with("image/") && !body.is_empty(), "{content_type}"),
            503 => assert_eq!(serde_json::from_slice::<serde_json::Value>(&body).unwrap()["error"], "store_unavailable"),
            other => panic!("{other} {content_type} {:?}", String::from_utf8_lossy(&body)),
        }
        eprintln!("image-cache with key-value down: {status} {content_type}");
    }
}
