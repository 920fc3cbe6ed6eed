//! The host contract: what runs is dist/edgeproxy.wasm, importing only our
//! own interfaces; the server logs each request and stops cleanly.

use edgeproxy_testkit::{Host, Upstream, component_imports, workspace_root};

/// Process-level behaviour of the wasmtime server; Workers has no process to test.
fn wasmtime_host() -> bool {
    edgeproxy_testkit::skip::only_on("wasmtime", "process-level behaviour of the wasmtime server")
}

#[test]
fn the_component_imports_only_the_projects_own_interfaces() {
    let component = std::fs::read(workspace_root().join("dist/edgeproxy.wasm")).expect("dist/edgeproxy.wasm is built");
    let imports = component_imports(&component).unwrap();
    assert!(!imports.is_empty());
    for import in &imports {
        assert!(import.starts_with("edgeproxy:platform/"), "unexpected import {import} in {imports:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_logs_one_line_per_request() {
    if !wasmtime_host() {
        return;
    }
    let upstream = Upstream::start().await;
    let host = Host::start(&format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{}\"\n", upstream.url())).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    client.get(host.url("/small")).send().await.unwrap();
    client.get(host.url("/status/404")).send().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // Each serving thread writes its lines in batches (server.rs, access_log),
    // so lines from requests served on two threads may come in either order.
    let log = host.log();
    assert_eq!(log.len(), 2, "{log:?}");
    let line_for = |path: &str| log.iter().filter(|line| line.contains(path)).collect::<Vec<_>>();
    let small = line_for("/small\"");
    assert!(small.len() == 1 && small[0].contains("\"GET ") && small[0].contains("/small\" 200"), "{log:?}");
    let missing = line_for("/status/404\"");
    assert!(missing.len() == 1 && missing[0].contains("/status/404\" 404"), "{log:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_server_cleanly() {
    if !wasmtime_host() {
        return;
    }
    let host = Host::start("").await;
    let status = host.interrupt().await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_document_serves_404_for_everything() {
    let host = Host::start("").await;
    let response = reqwest::Client::builder().no_proxy().build().unwrap().get(host.url("/")).send().await.unwrap();
    assert_eq!(response.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_arguments_it_serves_the_default_document_on_port_8787() {
    if !wasmtime_host() {
        return;
    }
    use tokio::io::AsyncBufReadExt;
    let root = workspace_root();
    let mut child = tokio::process::Command::new(edgeproxy_testkit::edgeproxy_binary())
        .current_dir(&root)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let line = stderr.next_line().await.unwrap().expect("a start-up line");
    assert!(line.ends_with("on http://127.0.0.1:8787"), "{line}");
    // The default is a Hugging Face mirror on every host: its home page,
    // and huggingface.co behind it (offline a 502 JSON error, online a 200;
    // never "no route", 404).
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let home = client.get("http://127.0.0.1:8787/").send().await.unwrap().text().await.unwrap();
    assert!(home.contains("export HF_ENDPOINT=http://127.0.0.1:8787"), "{home}");
    let response = client.get("http://127.0.0.1:8787/api/models/gpt2").send().await.unwrap();
    assert!(matches!(response.status().as_u16(), 200 | 502), "{}", response.status());
    // And the Placeholder Zoo under /_zoo/, drawing its images offline.
    let gallery = client.get("http://127.0.0.1:8787/_zoo/").send().await.unwrap().text().await.unwrap();
    assert!(gallery.contains("<h1>Placeholder Zoo</h1>"), "{gallery}");
    let image = client.get("http://127.0.0.1:8787/_zoo/64x48/default-dodo").send().await.unwrap();
    assert_eq!((image.status().as_u16(), image.headers()["content-type"].to_str().unwrap()), (200, "image/png"));
    let _ = child.start_kill();
}

/// The suite's secret watch (testkit's `Host::start_with_secrets`) can fail:
/// a secret that comes back in a response is caught when the host is dropped.
#[tokio::test(flavor = "multi_thread")]
async fn the_secret_watch_catches_a_secret_sent_back_to_a_client() {
    let upstream = Upstream::start().await;
    let document = format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{}\"\n", upstream.url());
    let host = Host::start_with_secrets(&document, &[("unused-token", "watch-me-7f3a")]).await;
    // The origin's /echo sends back the headers it got: this test's client leaks it on purpose.
    let body = reqwest::Client::builder().no_proxy().build().unwrap().get(host.url("/echo/leak")).header("x-leak", "watch-me-7f3a").send().await.unwrap().text().await.unwrap();
    assert!(body.contains("watch-me-7f3a"));
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(host)));
    assert!(dropped.is_err(), "the watch did not see the secret in the response");
}
