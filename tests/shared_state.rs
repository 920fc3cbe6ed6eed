//! Several `edgeproxy serve` processes behind one load balancer, sharing one
//! Redis (`--kv redis://...`): the cache, image-cache's originals and
//! generation leases, and the rate limits, with TTLs as Redis expiry. Each
//! host has its own data directory, so nothing is shared through a file.
//! A property of the wasmtime host's binary: the wasmtime pass only.

use edgeproxy_testkit::images::{FakeReplicate, TOKEN};
use edgeproxy_testkit::redis::Redis;
use edgeproxy_testkit::{Host, Upstream};

fn wasmtime_pass() -> bool {
    edgeproxy_testkit::skip::only_on("wasmtime", "`edgeproxy serve --kv redis://`, a property of the wasmtime host")
}

/// A GET of `path` from `host` as a load balancer passes it on: with the
/// public name clients use (the cache keys on it), not the instance's address.
async fn get(host: &Host, path: &str) -> reqwest::Response {
    reqwest::Client::builder().no_proxy().build().unwrap().get(host.url(path)).header("host", "edge.test").send().await.unwrap()
}

/// Two hosts on `document`, both with their store and limiter on `redis`.
async fn two_hosts(document: &str, redis: &Redis, env: &[(&str, &str)]) -> (Host, Host) {
    let url = redis.url();
    let args = ["--kv", url.as_str(), "--admin-listen", "127.0.0.1:0"];
    (Host::start_built_in_with_env(document, &args, env).await, Host::start_built_in_with_env(document, &args, env).await)
}

fn gateway(origin: &str, extra: &str) -> String {
    format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{origin}\"\n{extra}")
}

const CACHE: &str = "[route.api-gateway.cache]\nmax_entry_bytes = 4096\n";

async fn x_cache(host: &Host, path: &str) -> (String, String) {
    let response = get(host, path).await;
    assert_eq!(response.status(), 200);
    let x_cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
    (x_cache, response.text().await.unwrap())
}

/// What one host stored, the other serves: the origin is asked once, and
/// the entry's TTL is Redis's expiry on its key.
#[tokio::test(flavor = "multi_thread")]
async fn a_response_cached_by_one_host_is_a_hit_on_the_other() {
    if !wasmtime_pass() {
        return;
    }
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let (a, b) = two_hosts(&gateway(&upstream.url(), CACHE), &redis, &[]).await;
    let path = "/cacheable/shared?cc=max-age=300";
    assert_eq!(x_cache(&a, path).await, ("MISS".to_owned(), "/cacheable/shared #1 lang=".to_owned()));
    assert_eq!(x_cache(&b, path).await, ("HIT".to_owned(), "/cacheable/shared #1 lang=".to_owned()));
    assert_eq!(upstream.hits("/cacheable/shared"), 1);

    let keys = redis.cli(&["--scan", "--pattern", "edgeproxy:kv:*"]);
    assert!(!keys.is_empty(), "the entry is in Redis");
    for key in keys.lines() {
        let ttl: i64 = redis.cli(&["TTL", key]).parse().unwrap();
        assert!((1..=100_000).contains(&ttl), "{key} has TTL {ttl}: cache entries expire in Redis");
    }
}

/// One image, asked of both hosts at once: one prediction, one original,
/// the same bytes from both (the generation lease is `SET NX` in Redis).
#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_generate_an_image_once() {
    if !wasmtime_pass() {
        return;
    }
    let redis = Redis::start().await;
    let replicate = FakeReplicate::start(3600).await;
    let (a, b) = two_hosts(&replicate.document("generation = \"open\""), &redis, &[("EDGEPROXY_SECRET_REPLICATE_TOKEN", TOKEN)]).await;
    let requests = (0..6).map(|i| {
        let host = if i % 2 == 0 { &a } else { &b };
        get(host, "/640x480/shared-herd")
    });
    let responses = futures_util::future::join_all(requests).await;
    let etags: Vec<String> = responses.iter().map(|r| format!("{} {:?}", r.status(), r.headers().get("etag"))).collect();
    assert!(etags.iter().all(|e| e == &etags[0] && e.starts_with("200")), "{etags:?}");
    assert_eq!(replicate.creations("shared-herd").await.len(), 1, "one prediction for two hosts");
}

/// A limit of 4 per minute holds across both hosts: the fifth request is
/// refused whichever host it reaches.
#[tokio::test(flavor = "multi_thread")]
async fn one_rate_limit_holds_across_both_hosts() {
    if !wasmtime_pass() {
        return;
    }
    let redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let (a, b) = two_hosts(&gateway(&upstream.url(), "[route.api-gateway.rate_limit]\nrequests = 4\nperiod_seconds = 60\n"), &redis, &[]).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let host = if i % 2 == 0 { &a } else { &b };
        let response = get(host, "/echo/limited").await;
        if response.status() == 429 {
            let retry: u32 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=15).contains(&retry), "a token is back in 15 s at 4 per minute, not {retry}");
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(upstream.seen().len(), 4);
}

/// `/readyz` on a host's admin address.
async fn readiness(host: &Host) -> u16 {
    let admin = edgeproxy_testkit::metrics::admin_url(host).await;
    reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{admin}/readyz")).send().await.unwrap().status().as_u16()
}

/// Redis goes away: requests are still served (the cache misses, the limit
/// fails open, each counted and logged once), promptly, and `/readyz` says the store does not answer; when
/// it is back, the hosts use it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_degrades_to_misses_and_recovers() {
    if !wasmtime_pass() {
        return;
    }
    let mut redis = Redis::start().await;
    let upstream = Upstream::start().await;
    let document = gateway(&upstream.url(), &format!("{CACHE}[route.api-gateway.rate_limit]\nrequests = 100\nperiod_seconds = 60\n"));
    let (a, b) = two_hosts(&document, &redis, &[]).await;
    let path = "/cacheable/outage?cc=max-age=300";
    assert_eq!(x_cache(&a, path).await.0, "MISS");
    assert_eq!(readiness(&a).await, 200);

    redis.stop().await;
    assert_eq!(readiness(&a).await, 503);
    for host in [&a, &b] {
        let started = std::time::Instant::now();
        let (x_cache, body) = x_cache(host, path).await;
        assert_eq!(x_cache, "MISS", "no store, no hit");
        assert!(body.starts_with("/cacheable/outage #"), "{body}");
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
    }
    // The limit failed open, and that is seen: counted, and logged once.
    x_cache(&a, path).await;
    let samples = edgeproxy_testkit::metrics::Samples::scrape(&edgeproxy_testkit::metrics::admin_url(&a).await).await;
    assert!(samples.get("edgeproxy_limiter_errors_total", &[("policy", "api")]).is_some_and(|n| n >= 2.0), "no limiter errors counted");
    let warnings = a.messages().into_iter().filter(|m| m.contains("the rate limiter could not answer for policy \"api\"")).count();
    assert_eq!(warnings, 1, "{:#?}", a.messages());
    // So did the cache: counted per operation, and logged once per operation.
    assert!(samples.get("edgeproxy_kv_errors_total", &[("operation", "get")]).is_some_and(|n| n >= 2.0), "no store errors counted");
    let store_warnings = a.messages().into_iter().filter(|m| m.contains("the key-value store failed a get")).count();
    assert_eq!(store_warnings, 1, "{:#?}", a.messages());

    redis.restart().await;
    let started = std::time::Instant::now();
    // The connection comes back within a few requests.
    loop {
        x_cache(&a, path).await;
        if x_cache(&b, path).await.0 == "HIT" {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "the hosts did not use Redis again within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(readiness(&b).await, 200);
}

/// With Redis gone, the quota cannot be counted. The built-in generator spends
/// no Replicate credit, so its images are still served (one made a moment
/// earlier, and a new one); a generation that would spend credit is refused
/// with 503 and Replicate is never asked (docs/image-cache.md).
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_outage_still_serves_built_in_zoo_images_and_spends_no_credit() {
    if !wasmtime_pass() {
        return;
    }
    let mut redis = Redis::start().await;
    let (built_in, _) = two_hosts("[[route]]\nhost = \"*\"\n[route.image-cache]\n", &redis, &[]).await;
    let replicate = FakeReplicate::start(3600).await;
    let (paid, _) = two_hosts(&replicate.document(""), &redis, &[("EDGEPROXY_SECRET_REPLICATE_TOKEN", TOKEN)]).await;
    assert_eq!(get(&built_in, "/64x48/outage-sloth").await.status(), 200);

    redis.stop().await;
    for path in ["/64x48/outage-sloth", "/64x48/new-in-the-outage"] {
        let response = get(&built_in, path).await;
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["content-type"], "image/png", "{path}: the built-in generator's image");
    }
    let response = get(&paid, "/64x48/paid-sloth").await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.json::<serde_json::Value>().await.unwrap()["error"], "quota_unavailable");
    assert!(replicate.creations("paid-sloth").await.is_empty(), "no prediction without a quota");
}
