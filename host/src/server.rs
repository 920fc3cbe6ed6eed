//! The HTTP/1.1 front: accepts connections, turns each request into a guest
//! call, streams the guest's response back, logs one line per request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
async fn logged<H: Handler>(handler: Arc<H>, options: Arc<ServerOptions>, peer: SocketAddr, req: hyper::Request<Incoming>) -> Result<hyper::Response<H::Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let authority = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| "localhost".to_owned());
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}://{authority}{path}", options.scheme);
    let response = handler.handle(req, url.clone(), peer).await;
    println!("{} \"{method} {url}\" {} {:.1}ms", peer.ip(), response.status().as_u16(), started.elapsed().as_secs_f64() * 1000.0);
    Ok(response)
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
    let body = format!("{{\"error\":\"internal_error\",\"message\":{message:?}}}");
    hyper::Response::builder()
        .status(500)
        .header("content-type", "application/json")
        .body(HostBody::from_bytes(body))
        .expect("a static response is valid")
}
