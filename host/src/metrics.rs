//! Operations: Prometheus metrics and health checks, served on their own
//! address (`--admin-listen`), so they are never public by accident.
//!
//! - `/metrics`: the text exposition (OpenMetrics), listed in
//!   docs/wasmtime.md, "Running the host".
//! - `/healthz`: 200 while the process serves at all.
//! - `/readyz`: 200 when it should get traffic: not draining, and its
//!   key-value store answers (Redis, with `--kv`); 503 naming why otherwise,
//!   so a load balancer takes the instance out before it stops.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;


/// Which route and app answered: route numbers are the document's, from 1;
/// `none` for a request no route took (or that the server refused first).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub route: String,
    pub app: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabels {
    pub route: String,
    pub app: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub app: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: &'static str,
}

type Histograms = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    duration: Histograms,
    guest_time: Histograms,
    upstream_errors: Family<KindLabels, Counter>,
    kv_errors: Family<OperationLabels, Counter>,
    limiter_errors: Family<PolicyLabels, Counter>,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    pub upstream_received_bytes: Counter,
    /// The blob store's (`<data-dir>/blobs`): what it holds and did.
    pub blobs: BlobMetrics,
    /// Set when SIGTERM/SIGINT starts the drain: `/readyz` turns 503.
    pub draining: AtomicBool,
}

/// What the blob store counts (blob.rs): clones share the values.
#[derive(Clone, Default)]
pub struct BlobMetrics {
    /// Bytes of the objects it holds now.
    pub bytes: Gauge,
    /// Bytes of objects placed, and of objects read back out.
    pub stored_bytes: Counter,
    pub read_bytes: Counter,
    /// Objects removed to stay under `--blob-max-bytes`, and their bytes.
    pub evictions: Counter,
    pub evicted_bytes: Counter,
}

/// The route the core named for a request (the `telemetry.routed` import),
/// carried from the runtime to the server in the response's extensions.
#[derive(Clone, Debug)]
pub struct Routed {
    pub route: u32,
    pub app: String,
}

/// How the core answered a request (the `telemetry.answered` import, its
/// logging phase), carried like [`Routed`].
#[derive(Clone, Debug, Default)]
pub struct Answered {
    /// The code of an error the core answered itself (docs/configuration.md, "Errors").
    pub error_code: Option<String>,
    /// What the app's cache did: `hit` or `miss`.
    pub cache: Option<String>,
}

impl Routed {
    pub fn labels(routed: Option<&Routed>) -> RouteLabels {
        match routed {
            Some(r) => RouteLabels { route: r.route.to_string(), app: r.app.clone() },
            None => RouteLabels { route: "none".into(), app: "none".into() },
        }
    }
}

/// 0.5 ms to about 16 s, doubling.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// 20 µs to about 0.65 s, doubling.
fn guest_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.00002, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("edgeproxy");
        let requests = Family::default();
        registry.register("requests", "Requests answered, by route, app and status", requests.clone());
        let errors = Family::default();
        registry.register("errors", "Errors the core answered itself, by route, app and code (docs/configuration.md, Errors)", errors.clone());
        let cache = Family::default();
        registry.register("cache", "Answers an app's cache took part in, by route, app and result (hit, miss)", cache.clone());
        let duration: Histograms = Family::new_with_constructor(latency_buckets);
        registry.register("request_duration_seconds", "Time from a request's arrival to its response head, by route and app", duration.clone());
        let guest_time: Histograms = Family::new_with_constructor(guest_buckets);
        registry.register(
            "guest_seconds",
            "The component's own time per request, by route and app: the handler's time less its waits on upstreams, the store, the limiter and bodies",
            guest_time.clone(),
        );
        let upstream_errors = Family::default();
        registry.register("upstream_errors", "Upstream requests that failed before a response, by kind", upstream_errors.clone());
        let kv_errors = Family::default();
        registry.register("kv_errors", "Key-value operations that failed, by operation", kv_errors.clone());
        let limiter_errors = Family::default();
        registry.register(
            "limiter_errors",
            "Rate-limit checks the host limiter could not answer, by policy (each app then applies its documented default: api-gateway lets the request through)",
            limiter_errors.clone(),
        );
        let received_bytes = Counter::default();
        registry.register("received_bytes", "Request body bytes received from clients", received_bytes.clone());
        let sent_bytes = Counter::default();
        registry.register("sent_bytes", "Response body bytes sent to clients", sent_bytes.clone());
        let upstream_received_bytes = Counter::default();
        registry.register("upstream_received_bytes", "Response body bytes received from upstreams (an S3 blob store's included)", upstream_received_bytes.clone());
        let blobs = BlobMetrics::default();
        registry.register("blob_bytes", "Bytes of the objects the blob store holds", blobs.bytes.clone());
        registry.register("blob_stored_bytes", "Bytes of objects placed in the blob store (kept as they passed, or put)", blobs.stored_bytes.clone());
        registry.register("blob_read_bytes", "Bytes read out of the blob store (answers from it)", blobs.read_bytes.clone());
        registry.register("blob_evictions", "Objects the blob store removed, least recently used first, to stay under --blob-max-bytes", blobs.evictions.clone());
        registry.register("blob_evicted_bytes", "Bytes of the objects evicted", blobs.evicted_bytes.clone());
        Metrics { registry, requests, errors, cache, duration, guest_time, upstream_errors, kv_errors, limiter_errors, received_bytes, sent_bytes, upstream_received_bytes, blobs, draining: AtomicBool::new(false) }
    }

    /// One answered request.
    pub fn answered(&self, routed: Option<&Routed>, answered: Option<&Answered>, status: u16, took: Duration) {
        let route = Routed::labels(routed);
        self.duration.get_or_create(&route).observe(took.as_secs_f64());
        if let Some(code) = answered.and_then(|a| a.error_code.clone()) {
            self.errors.get_or_create(&ErrorLabels { route: route.route.clone(), app: route.app.clone(), code }).inc();
        }
        if let Some(result) = answered.and_then(|a| a.cache.clone()) {
            self.cache.get_or_create(&CacheLabels { route: route.route.clone(), app: route.app.clone(), result }).inc();
        }
        self.requests.get_or_create(&RequestLabels { route: route.route, app: route.app, status }).inc();
    }

    pub fn guest_ran(&self, routed: Option<&Routed>, time: Duration) {
        self.guest_time.get_or_create(&Routed::labels(routed)).observe(time.as_secs_f64());
    }

    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// A store operation that failed (the guest carries on without it: a
    /// cache miss, no lease). Counted every time and logged the first time
    /// per operation, as limiter errors are.
    pub fn kv_error(&self, operation: &'static str, why: &str) {
        if self.kv_errors.get_or_create(&OperationLabels { operation }).inc() == 0 {
            eprintln!("edgeproxy: warning: the key-value store failed a {operation} ({why}); counted in edgeproxy_kv_errors_total, logged once per operation");
        }
    }

    /// A check the limiter could not answer. Counted every time and logged
    /// the first time per policy, so a limiter that is off (rate limiting
    /// silently not happening) is seen without a line per request.
    pub fn limiter_error(&self, policy: &str, why: &str) {
        let counter = self.limiter_errors.get_or_create(&PolicyLabels { policy: policy.to_owned() });
        if counter.inc() == 0 {
            eprintln!("edgeproxy: warning: the rate limiter could not answer for policy {policy:?} ({why}); counted in edgeproxy_limiter_errors_total, logged once per policy");
        }
    }

    fn exposition(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Whether the key-value store answers now (for `/readyz`).
pub type StoreCheck = Arc<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the process ends.
pub async fn serve_admin(listener: tokio::net::TcpListener, metrics: Arc<Metrics>, store: StoreCheck) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let (metrics, store) = (metrics.clone(), store.clone());
        let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let (metrics, store) = (metrics.clone(), store.clone());
            async move { Ok::<_, Infallible>(admin_response(&metrics, &store, req.uri().path()).await) }
        });
        tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    }
}

async fn admin_response(metrics: &Metrics, store: &StoreCheck, path: &str) -> hyper::Response<Full<bytes::Bytes>> {
    let (status, content_type, body) = match path {
        "/metrics" => (200, "application/openmetrics-text; version=1.0.0; charset=utf-8", metrics.exposition()),
        "/healthz" => (200, "text/plain", "ok\n".to_owned()),
        "/readyz" => match readiness(metrics, store).await {
            Ok(()) => (200, "text/plain", "ready\n".to_owned()),
            Err(why) => (503, "text/plain", format!("not ready: {why}\n")),
        },
        _ => (404, "text/plain", "the admin address serves /metrics, /healthz and /readyz\n".to_owned()),
    };
    hyper::Response::builder().status(status).header("content-type", content_type).body(Full::from(body)).expect("a static response is valid")
}

async fn readiness(metrics: &Metrics, store: &StoreCheck) -> Result<(), String> {
    if metrics.draining.load(Ordering::Relaxed) {
        return Err("draining (shutting down)".into());
    }
    store().await.map_err(|e| format!("the key-value store does not answer: {e}"))
}
