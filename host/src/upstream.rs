//! Outbound HTTP for the guest: reqwest with redirects off, no decoding, no
//! proxy from the environment, bodies streamed both ways.

use std::time::Duration;

use crate::body::{HostBody, IdleTimeout, error_chain};
use crate::runtime::edgeproxy::platform::http_client::HttpError;

/// Time to wait for response headers when the guest names none.
const DEFAULT_HEADERS_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Upstream {
    /// A response body that sends nothing for this long is broken off; the
    /// guest's read gets `timeout`, a client streaming it a broken transfer.
    body_idle_timeout: Duration,
}

pub struct UpstreamResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<HostBody>,
}

thread_local! {
    /// A client, and so a keep-alive pool, per thread: a serving thread's
    /// upstream connections are driven by its own runtime (server.rs), so a
    /// request never waits on another thread.
    static CLIENT: std::cell::OnceCell<reqwest::Client> = const { std::cell::OnceCell::new() };
}

fn build_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        // Enough for steady load; a burst's surplus connections close
        // instead of holding descriptors for the idle timeout.
        .pool_max_idle_per_host(64)
        .build()
}

impl Upstream {
    pub fn new(body_idle_timeout: Duration) -> anyhow::Result<Upstream> {
        // Built once here so that a client that cannot be built stops the
        // start, not a request.
        build_client()?;
        Ok(Upstream { body_idle_timeout })
    }

    fn client(&self) -> reqwest::Client {
        CLIENT.with(|client| client.get_or_init(|| build_client().expect("the client was built at start")).clone())
    }

    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: Vec<(String, String)>,
        body: Option<HostBody>,
        timeout_ms: Option<u32>,
    ) -> Result<UpstreamResponse, HttpError> {
        let url = reqwest::Url::parse(url).map_err(|e| HttpError::InvalidUrl(format!("{url}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(HttpError::InvalidUrl(format!("{url}: only http and https are supported")));
        }
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| HttpError::ProtocolError(format!("method: {e}")))?;
        let mut header_map = reqwest::header::HeaderMap::with_capacity(headers.len());
        for (name, value) in headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|e| HttpError::ProtocolError(format!("header {name:?}: {e}")))?;
            let value = reqwest::header::HeaderValue::from_str(&value).map_err(|e| HttpError::ProtocolError(format!("header {name}: {e}")))?;
            header_map.append(name, value);
        }
        let mut request = self.client().request(method, url).headers(header_map);
        if let Some(body) = body {
            request = request.body(reqwest::Body::wrap(body));
        }
        let timeout = timeout_ms.map_or(DEFAULT_HEADERS_TIMEOUT, |ms| Duration::from_millis(ms.into()));
        let response = match tokio::time::timeout(timeout, request.send()).await {
            Err(_) => return Err(HttpError::Timeout),
            Ok(Err(e)) => {
                // The details stay in the operator's log; the client gets the kind only.
                eprintln!("edgeproxy: upstream request failed: {}", error_chain(&e));
                return Err(classify(&e));
            }
            Ok(Ok(r)) => r,
        };
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = http::Response::from(response).into_body();
        Ok(UpstreamResponse { status, headers, body: Some(HostBody::from_stream(IdleTimeout::new(body, self.body_idle_timeout))) })
    }
}

fn classify(e: &reqwest::Error) -> HttpError {
    let why = error_chain(e);
    if e.is_timeout() {
        HttpError::Timeout
    } else if e.is_builder() {
        HttpError::InvalidUrl(why)
    } else if e.is_connect() {
        if why.contains("dns error") || why.contains("failed to lookup address") {
            HttpError::DnsError(why)
        } else if why.contains("certificate") || why.contains("tls") || why.contains("TLS") {
            HttpError::TlsError(why)
        } else {
            HttpError::ConnectionFailed(why)
        }
    } else {
        HttpError::ProtocolError(why)
    }
}
