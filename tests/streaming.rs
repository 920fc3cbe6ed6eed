//! Bodies stream: gigabytes pass through in constant memory, and a broken
//! upstream is a broken transfer for the client, never a short success.

use edgeproxy_testkit::{Host, Upstream, pattern_matches, pattern_stream};
use futures_util::StreamExt;

const TWO_GIB: u64 = 2 << 30;
async fn proxy(upstream: &Upstream) -> Host {
    Host::start(&format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{}\"\n", upstream.url())).await
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2_gib_download_streams_through_in_bounded_memory() {
    let upstream = Upstream::start().await;
    let host = proxy(&upstream).await;
    let response = client().get(host.url(&format!("/bytes/{TWO_GIB}"))).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-length"], TWO_GIB.to_string().as_str());
    let mut stream = response.bytes_stream();
    let (mut received, mut intact) = (0u64, true);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("the download completes");
        intact &= pattern_matches(received, &chunk);
        received += chunk.len() as u64;
    }
    assert_eq!(received, TWO_GIB);
    assert!(intact, "every byte arrives as sent");
    host.assert_bounded_memory("a 2 GiB download");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_2_gib_upload_streams_through_in_bounded_memory() {
    let upstream = Upstream::start().await;
    let host = proxy(&upstream).await;
    let response = client()
        .post(host.url("/sink"))
        .header("content-length", TWO_GIB)
        .body(reqwest::Body::wrap_stream(pattern_stream(TWO_GIB)))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen: serde_json::Value = response.json().await.unwrap();
    assert_eq!(seen["bytes"], TWO_GIB);
    assert_eq!(seen["pattern_ok"], true);
    host.assert_bounded_memory("a 2 GiB upload");
}

/// curl's verdict on a download: (exit code, bytes received).
fn curl_download(url: &str) -> (i32, u64) {
    let out = std::process::Command::new("curl").args(["-s", "-o", "/dev/null", "-w", "%{size_download}", url]).output().expect("curl is installed");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_that_dies_mid_body_is_a_broken_transfer_for_the_client() {
    let upstream = Upstream::start().await;
    let host = proxy(&upstream).await;
    // Content-Length promised 2 MiB, 1 MiB sent: curl 18 = "partial file".
    let (code, received) = curl_download(&host.url("/die/1048576"));
    assert_eq!(code, 18, "curl must see a partial transfer, got exit {code} after {received} bytes");
    assert!(received < 2 * 1048576);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_chunked_upstream_that_dies_mid_body_is_a_broken_transfer_for_the_client() {
    if Host::kind() == "workerd" {
        // Known gap (issue #3): workerd's HTTP server writes the final chunk
        // even when the response stream errors, natively pumped or not, so
        // the client sees a clean, short body: cloudflare/workerd#6818 (open).
        edgeproxy_testkit::skip::skip("workerd ends an errored chunked response cleanly (cloudflare/workerd#6818)");
        return;
    }
    let upstream = Upstream::start().await;
    let host = proxy(&upstream).await;
    // No terminating chunk reaches curl: 18 (partial) or 56 (receive failure).
    let (code, received) = curl_download(&host.url("/die-chunked/1048576"));
    assert!(matches!(code, 18 | 56), "curl must see a broken transfer, got exit {code} after {received} bytes");
}
