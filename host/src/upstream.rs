//! Outbound HTTP for the guest: hyper's client (HTTP/1.1, rustls with the
//! webpki roots), redirects not followed, bodies neither decoded nor
//! buffered, no proxy from the environment.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio_rustls::rustls;

use prometheus_client::metrics::counter::Counter;

use crate::body::{Counted, HostBody, IdleTimeout, error_chain};

/// Why an upstream request got no response: the WIT's `http-error` kinds
/// (runtime.rs hands them to the guest), each with its details for the log.
#[derive(Debug)]
pub enum UpstreamError {
    InvalidUrl(String),
    DnsError(String),
    ConnectionFailed(String),
    Timeout,
    TlsError(String),
    ProtocolError(String),
}

impl UpstreamError {
    /// Its label in `edgeproxy_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            UpstreamError::InvalidUrl(_) => "invalid_url",
            UpstreamError::DnsError(_) => "dns_error",
            UpstreamError::ConnectionFailed(_) => "connection_failed",
            UpstreamError::Timeout => "timeout",
            UpstreamError::TlsError(_) => "tls_error",
            UpstreamError::ProtocolError(_) => "protocol_error",
        }
    }
}

/// Time to wait for response headers when the guest names none.
const DEFAULT_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Upstream {
    /// A response body that sends nothing for this long is broken off; the
    /// guest's read gets `timeout`, a client streaming it a broken transfer.
    body_idle_timeout: Duration,
    /// Response body bytes received (the metrics' `upstream_received_bytes`).
    received_bytes: Counter,
}

pub struct UpstreamResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<HostBody>,
}

/// hyper's client directly, not reqwest over it: reqwest re-parsed every URL
/// (with IDNA), cloned the header map and went through a retry layer, about
/// 6% of the host's CPU on a small proxied request (BENCHMARKS.md, issue 24).
type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector<SystemDns>>, HostBody>;

thread_local! {
    /// A client, and so a keep-alive pool, per thread: a serving thread's
    /// upstream connections are driven by its own runtime (server.rs), so a
    /// request never waits on another thread.
    static CLIENT: std::cell::OnceCell<HttpClient> = const { std::cell::OnceCell::new() };
}

fn build_client() -> Result<HttpClient, rustls::Error> {
    let mut http = HttpConnector::new_with_resolver(SystemDns);
    // The scheme is checked per request (`send`); TLS is the wrapper's.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    // ring, the provider `serve`'s TLS uses (tls.rs), not a second one.
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        // Enough for steady load; a burst's surplus connections close
        // instead of holding descriptors for the idle timeout.
        .pool_max_idle_per_host(64)
        .build(https))
}

impl Upstream {
    pub fn new(body_idle_timeout: Duration, received_bytes: Counter) -> anyhow::Result<Upstream> {
        // Built once here so that a client that cannot be built stops the
        // start, not a request.
        build_client()?;
        Ok(Upstream { body_idle_timeout, received_bytes })
    }

    fn client(&self) -> HttpClient {
        CLIENT.with(|client| client.get_or_init(|| build_client().expect("the client was built at start")).clone())
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<HostBody>,
        timeout_ms: Option<u32>,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let uri = http::Uri::try_from(url).map_err(|e| UpstreamError::InvalidUrl(format!("{url}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
            return Err(UpstreamError::InvalidUrl(format!("{url}: only absolute http and https URLs are supported")));
        }
        let method = http::Method::from_bytes(method.as_bytes()).map_err(|e| UpstreamError::ProtocolError(format!("method: {e}")))?;
        let mut request = http::Request::new(body.unwrap_or_else(|| HostBody::from_bytes(Bytes::new())));
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        let header_map = request.headers_mut();
        header_map.reserve(headers.len());
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| UpstreamError::ProtocolError(format!("header {name:?}: {e}")))?;
            let value = http::HeaderValue::from_str(&value).map_err(|e| UpstreamError::ProtocolError(format!("header {name}: {e}")))?;
            header_map.append(name, value);
        }
        let timeout = timeout_ms.map_or(DEFAULT_HEADERS_TIMEOUT, |ms| Duration::from_millis(ms.into()));
        let response = match tokio::time::timeout(timeout, self.client().request(request)).await {
            Err(_) => return Err(UpstreamError::Timeout),
            Ok(Err(e)) => {
                // The details stay in the operator's log; the client gets the kind only.
                eprintln!("edgeproxy: upstream request failed: {}", error_chain(&e));
                return Err(classify(&e));
            }
            Ok(Ok(r)) => r,
        };
        let (head, body) = response.into_parts();
        let headers = head.headers.iter().map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        Ok(UpstreamResponse { status: head.status.as_u16(), headers, body: Some(HostBody::from_stream(IdleTimeout::new(Counted::new(body, self.received_bytes.clone()), self.body_idle_timeout))) })
    }
}

/// The guest's error kind, from the types in the error's causes: a name
/// that did not resolve is ours ([`NameNotResolved`]), a TLS failure is
/// rustls's, a connect timeout an `io::Error` of its kind; hyper says
/// whether the connection failed.
fn classify(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let why = error_chain(e);
    if caused_by::<NameNotResolved>(e) {
        UpstreamError::DnsError(why)
    } else if caused_by::<rustls::Error>(e) {
        UpstreamError::TlsError(why)
    } else if timed_out(e) {
        UpstreamError::Timeout
    } else if e.is_connect() {
        UpstreamError::ConnectionFailed(why)
    } else {
        UpstreamError::ProtocolError(why)
    }
}

/// Whether an error of type `T` is among `e`'s causes, looking inside
/// `io::Error`s too (whose `source` skips the error they wrap).
fn caused_by<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| {
        e.is::<T>() || e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).is_some_and(|inner| caused_by::<T>(inner))
    })
}

/// Whether an `io::Error` of kind `TimedOut` is among `e`'s causes (the
/// connector's connect timeout).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    std::iter::successors(Some(e), |e| e.source()).any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut))
}

/// The system's resolver (getaddrinfo, as hyper's default), with its
/// failures typed, so that [`classify`] need not read error messages.
#[derive(Clone)]
struct SystemDns;

#[derive(Debug)]
struct NameNotResolved {
    name: String,
    cause: std::io::Error,
}

impl std::fmt::Display for NameNotResolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dns error: {} did not resolve", self.name)
    }
}

impl std::error::Error for NameNotResolved {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

impl tower_service::Service<Name> for SystemDns {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = NameNotResolved;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, NameNotResolved>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), NameNotResolved>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let name = name.as_str().to_owned();
        Box::pin(async move {
            // The port is the connector's to set.
            let found = tokio::net::lookup_host((name.as_str(), 0)).await.map(|addresses| addresses.collect::<Vec<_>>().into_iter());
            found.map_err(|cause| NameNotResolved { name, cause })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn failure(url: &str) -> UpstreamError {
        match Upstream::new(Duration::from_secs(5), Counter::default()).unwrap().send("GET", url, Vec::new(), None, Some(10_000)).await {
            Ok(r) => panic!("{url} answered {}", r.status),
            Err(e) => e,
        }
    }

    /// Each failure's kind comes from the types of its causes, not its text.
    #[tokio::test]
    async fn a_failure_is_classified_by_the_type_of_its_cause() {
        // RFC 2606: `.invalid` never resolves.
        assert!(matches!(failure("http://edgeproxy-test.invalid/").await, UpstreamError::DnsError(_)));

        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        assert!(matches!(failure(&format!("http://{closed}/")).await, UpstreamError::ConnectionFailed(_)));

        // TLS to a server that answers in plain HTTP.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = plain.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            while let Ok((mut socket, _)) = plain.accept().await {
                let _ = socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
            }
        });
        let tls = failure(&format!("https://{address}/")).await;
        assert!(matches!(tls, UpstreamError::TlsError(_)), "{tls:?}");
    }
}
