//! The HTTP/1.1 front: accepts connections, turns each request into a guest
//! call, streams the guest's response back, logs one line per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::Either;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::body::{BoxError, HostBody};
use crate::runtime::{GuestRequest, Runtime};

pub struct ServerOptions {
    /// The scheme clients use to reach us (`https` behind a TLS terminator).
    pub scheme: String,
}

/// What answers requests: the edgeproxy runtime, or the Spin-compatible one
/// (spin.rs). The server around it is the same.
pub trait Handler: Send + Sync + 'static {
    type Body: http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + 'static;
    /// `url` is the absolute URL the client asked for.
    fn handle(&self, request: hyper::Request<Incoming>, url: String, peer: SocketAddr) -> impl Future<Output = hyper::Response<Self::Body>> + Send;
}

pub async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, options: ServerOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let options = Arc::new(options);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("edgeproxy: accept failed: {e}");
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let options = options.clone();
        let service = service_fn(move |req| logged(handler.clone(), options.clone(), peer, req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // Clients that go away mid-response are routine for a proxy.
            let _ = conn.await;
        });
    }
    eprintln!("edgeproxy: shutting down; waiting up to 10 s for open requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => eprintln!("edgeproxy: gave up waiting"),
    }
    Ok(())
}

/// One access-log line per request, whichever handler answered.
async fn logged<H: Handler>(handler: Arc<H>, options: Arc<ServerOptions>, peer: SocketAddr, req: hyper::Request<Incoming>) -> Result<hyper::Response<Either<H::Body, HostBody>>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let (url, response) = match request_url(&req, &options.scheme) {
        Ok(url) => (url.clone(), handler.handle(req, url, peer).await.map(Either::Left)),
        Err(refusal) => (req.uri().to_string(), refusal.map(Either::Right)),
    };
    println!("{} \"{method} {url}\" {} {:.1}ms", peer.ip(), response.status().as_u16(), started.elapsed().as_secs_f64() * 1000.0);
    Ok(response)
}

/// The absolute URL the client asked for. The authority is the request
/// target's when it is in absolute form (`GET http://host/path`; RFC 9112,
/// section 3.2.2), and the `Host` header's otherwise. A request with more
/// than one `Host` (RFC 9112, section 3.2: 400), or whose target names
/// another host than its `Host`, is refused, so that nothing can be routed by
/// one name and reach another.
fn request_url(req: &hyper::Request<Incoming>, scheme: &str) -> Result<String, hyper::Response<HostBody>> {
    let hosts = req.headers().get_all(hyper::header::HOST).iter().count();
    if hosts > 1 {
        return Err(json_error(400, "bad_request", &format!("the request has {hosts} Host headers; it may have one (RFC 9112, section 3.2)")));
    }
    let host = req.headers().get(hyper::header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}").to_owned());
    // Absolute form has a scheme; CONNECT's authority form has none, and the
    // core refuses CONNECT whatever it names.
    let absolute_form_authority = req.uri().scheme().and(req.uri().authority());
    let authority = match (absolute_form_authority, host) {
        (Some(target), Some(host)) if !target.as_str().eq_ignore_ascii_case(&host) => {
            return Err(json_error(400, "bad_request", &format!("the request target names {target} but its Host is {host}")));
        }
        (Some(target), _) => target.to_string(),
        (None, Some(host)) => host,
        (None, None) => req.uri().authority().map_or_else(|| "localhost".to_owned(), ToString::to_string),
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    Ok(format!("{scheme}://{authority}{path}"))
}

impl Handler for Runtime {
    type Body = HostBody;

    async fn handle(&self, req: hyper::Request<Incoming>, url: String, peer: SocketAddr) -> hyper::Response<HostBody> {
        let (parts, body) = req.into_parts();
        let headers = parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = if hyper::body::Body::is_end_stream(&body) { None } else { Some(HostBody::from_stream(body)) };
        let request = GuestRequest { method: parts.method.to_string(), url: url.clone(), headers, body, client_ip: Some(peer.ip().to_string()) };
        match Runtime::handle(self, request).await {
            Ok(r) => {
                let mut builder = hyper::Response::builder().status(r.status);
                for (name, value) in &r.headers {
                    builder = builder.header(name, value);
                }
                builder
                    .body(r.body.unwrap_or_else(|| HostBody::from_bytes(Vec::new())))
                    .unwrap_or_else(|e| internal_error(&format!("the app produced an invalid response: {e}")))
            }
            Err(trap) => {
                eprintln!("edgeproxy: the component trapped on {} {url}: {trap:?}", parts.method);
                internal_error("the proxy failed on this request")
            }
        }
    }
}

pub fn internal_error(message: &str) -> hyper::Response<HostBody> {
    json_error(500, "internal_error", message)
}

/// The core's error shape (`{"error", "message"}` and `X-Error-Code`), for
/// what the host answers itself.
fn json_error(status: u16, code: &str, message: &str) -> hyper::Response<HostBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-error-code", code)
        .body(HostBody::from_bytes(body))
        .expect("a static response is valid")
}
