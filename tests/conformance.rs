//! The contract of `wit/edgeproxy.wit`, held on every host: the conformance
//! probe (`probe/`) runs in place of the core on the suite's host and checks
//! each rule the WIT states (`[rule: name]` in its doc comments). A rule
//! holds, or it is one of this host's declared exceptions below, each with
//! its reason; an exception that has started to hold must be removed.

use edgeproxy_testkit::{Host, Upstream, probe};

/// `(host, rule, why)`: where a host knowingly differs from the WIT's rule.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "workerd",
        "http.no-decoding",
        "Workers decode a gzip or brotli response body that the Worker reads, and pass one it does not read through as sent \
         (Cloudflare's fetch documentation, \"Passthrough behavior\"): a body the core passes on is the upstream's bytes, one it \
         reads is decoded, and its length is then unknown (worker.js gives none)",
    ),
    (
        "workerd",
        "http.dns-error",
        "workerd's fetch reports a name that does not resolve as \"internal error\", as it does other failures to connect: \
         nothing in it says DNS, so worker.js reports connection-failed",
    ),
    (
        "spin",
        "http.dns-error",
        "Spin refuses a host that `allowed_outbound_hosts` does not list before resolving it (denied); the manifest lists only \
         the document's upstreams (the test's: loopback), so a name outside it is denied, never looked up",
    ),
];


const DOCUMENT: &str = "# the probe reads this document, not the core\n[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"http://127.0.0.1:9\"\n";

#[tokio::test]
async fn every_rule_of_the_wit_holds_on_this_host_or_is_a_declared_exception() {
    let results = probe_results(&[]).await;

    let kind = Host::kind();
    let rules = probe::wit_rules();
    assert!(rules.len() >= 20, "the WIT states its rules as [rule: name]: found {rules:?}");
    let mut problems = Vec::new();
    for rule in &rules {
        let result = results.iter().find(|r| r["rule"] == rule.as_str());
        let exception = EXCEPTIONS.iter().find(|(host, r, _)| *host == kind && r == rule);
        match (result, exception) {
            (None, _) => problems.push(format!("{rule}: the probe does not check it")),
            (Some(r), None) if r["ok"] != true => problems.push(format!("{rule}: {}", r["why"])),
            (Some(r), Some((_, _, why))) if r["ok"] == true => problems.push(format!("{rule}: holds on {kind}, but is declared an exception ({why}): remove it")),
            _ => {}
        }
    }
    for r in &results {
        if !rules.iter().any(|rule| r["rule"] == rule.as_str()) {
            problems.push(format!("{}: the probe checks a rule the WIT does not state", r["rule"]));
        }
    }
    assert!(problems.is_empty(), "on {kind}:\n{}", problems.join("\n"));
}

/// The wasmtime host's blob store on S3 (`--blob-store`, here moto's) is
/// held to the same `blob.*` rules as its directory.
#[tokio::test]
async fn the_blob_rules_hold_on_the_s3_backend_too() {
    if !edgeproxy_testkit::skip::only_on("wasmtime", "--blob-store s3:// is the wasmtime host's") {
        return;
    }
    let s3 = edgeproxy_testkit::s3::S3::start("probe").await;
    let mut env: Vec<(&str, String)> = s3.env();
    env.push(("EDGEPROXY_BLOB_STORE", "s3://probe/blobs".into()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let results = probe_results(&env).await;
    let blob: Vec<&serde_json::Value> = results.iter().filter(|r| r["rule"].as_str().unwrap_or_default().starts_with("blob.")).collect();
    assert!(blob.len() >= 7, "{results:?}");
    let failed: Vec<_> = blob.iter().filter(|r| r["ok"] != true).collect();
    assert!(failed.is_empty(), "on S3: {failed:?}");
}

/// The probe's answer on the suite's host, started with `env` besides its secret.
async fn probe_results(env: &[(&str, &str)]) -> Vec<serde_json::Value> {
    let upstream = Upstream::start().await;
    // Its own server: the fixture breaks a response only on a connection's
    // first request, and the host may pool connections to `upstream`.
    let broken = Upstream::start().await;
    // A port nothing listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let host = Host::start_probe_with_env(DOCUMENT, &[("probe-secret", "probe-secret-value")], env).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let url = host.url(&format!("/probe?upstream={}&closed=http://{closed}&broken={}/die/100000&now={now}", upstream.url(), broken.url()));
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200, "the probe answers: {:?}", response.text().await);
    response.json().await.unwrap()
}
