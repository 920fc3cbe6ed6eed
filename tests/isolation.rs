//! Isolation with set-up ahead: the wasmtime host serves every request from
//! a fresh instance of a snapshot taken after set-up, and Workers reuse
//! instances (ARCHITECTURE.md, "Set-up and serving"). Neither may let one
//! request see another's headers, body, URL, client or answer: thousands of
//! mixed requests, all four apps and their errors, each answer checked
//! against the request that asked.

use edgeproxy_testkit::{Host, Upstream, every_app};
use futures_util::StreamExt as _;

const REQUESTS: usize = 1500;
const CONCURRENCY: usize = 8;

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Sends request `n` (its kind is `n % 6`) and checks that its answer is
/// its own; `Err` says how it was not.
async fn one(client: &reqwest::Client, host: &Host, n: usize) -> Result<(), String> {
    let probe = format!("probe-{n}-{}", "x".repeat(n % 97));
    let get = |path: &str, authority: &str| client.get(host.url(path)).header("host", authority.to_owned());
    match n % 6 {
        // api-gateway: the origin sees exactly this request's URL, header and body.
        0 | 1 => {
            let response = client
                .post(host.url(&format!("/echo/{n}?n={n}")))
                .header("host", "api.test")
                .header("x-probe", &probe)
                .body(format!("body of {probe}"))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            expect(response.status().as_u16(), 200, n)?;
            let echo: serde_json::Value = response.json().await.map_err(|e| e.to_string())?;
            let probes: Vec<&str> = echo["headers"].as_array().into_iter().flatten().filter(|h| h[0] == "x-probe").filter_map(|h| h[1].as_str()).collect();
            if probes != [probe.as_str()] || echo["body"] != format!("body of {probe}") || echo["uri"] != format!("/echo/{n}?n={n}") {
                return Err(format!("request {n} got another's echo: {echo}"));
            }
        }
        // api-gateway passing an upstream error through.
        2 => {
            let status = [404, 500, 503][n % 3];
            let response = get(&format!("/status/{status}"), "api.test").send().await.map_err(|e| e.to_string())?;
            expect(response.status().as_u16(), status, n)?;
            let body = response.text().await.map_err(|e| e.to_string())?;
            if body != format!("{{\"upstream_status\":{status}}}") {
                return Err(format!("request {n}: {body}"));
            }
        }
        // The core's own error: no route for this request's host, which it names back.
        3 => {
            let authority = format!("n{n}.nowhere.test");
            let response = get("/", &authority).send().await.map_err(|e| e.to_string())?;
            expect(response.status().as_u16(), 404, n)?;
            let body = response.text().await.map_err(|e| e.to_string())?;
            if !body.contains(&format!("no route serves host {authority} and path /")) {
                return Err(format!("request {n}: {body}"));
            }
        }
        // hub-gateway and hf-mirror to the same origin.
        4 => {
            let response = get(&format!("/health?n={n}"), "hub.test").send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            if !(200..600).contains(&status) || response.headers().get("content-type").is_none() {
                return Err(format!("request {n}: hub-gateway answered {status}"));
            }
            let response = get(&format!("/echo/hf/{n}"), "hf.test").send().await.map_err(|e| e.to_string())?;
            let status = response.status().as_u16();
            let body = response.text().await.map_err(|e| e.to_string())?;
            if status == 200 && !body.contains(&format!("/echo/hf/{n}")) {
                return Err(format!("request {n}: hf-mirror answered another's {body}"));
            }
        }
        // image-cache: a PNG of this request's size.
        _ => {
            let side = 32 + 8 * (n % 5) as u32;
            let response = get(&format!("/{side}x{side}/isolated-sloth?format=png"), "zoo.test").send().await.map_err(|e| e.to_string())?;
            expect(response.status().as_u16(), 200, n)?;
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            let image = image::load_from_memory(&bytes).map_err(|e| format!("request {n}: not an image: {e}"))?;
            if (image.width(), image.height()) != (side, side) {
                return Err(format!("request {n}: asked {side}x{side}, got {}x{}", image.width(), image.height()));
            }
        }
    }
    Ok(())
}

fn expect(got: u16, want: u16, n: usize) -> Result<(), String> {
    if got == want { Ok(()) } else { Err(format!("request {n}: status {got}, expected {want}")) }
}

#[tokio::test(flavor = "multi_thread")]
async fn thousands_of_mixed_requests_each_get_only_their_own_answer() {
    let upstream = Upstream::start().await;
    let host = Host::start(&every_app(&upstream.url())).await;
    let client = client();
    let failures: Vec<String> = futures_util::stream::iter(0..REQUESTS)
        .map(|n| {
            let (client, host) = (&client, &host);
            async move { one(client, host, n).await.err() }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    assert!(failures.is_empty(), "{} of {REQUESTS} requests failed; the first: {:#?}", failures.len(), &failures[..failures.len().min(5)]);
}
