//! The HTTP front (HTTP/1.1, and HTTP/2 over TLS): accepts connections, turns each request into a guest
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::body::{BoxError, Counted, HostBody, IdleTimeout, Prefetched};
use crate::metrics::{Answered, Metrics, Routed};
use crate::framing::Watched;

pub struct ServerOptions {
    /// The scheme clients use to reach us: `https` when we terminate TLS,
    /// or behind a TLS terminator.
    pub scheme: String,
    /// HTTPS (HTTP/2 and HTTP/1.1 by ALPN) instead of plain HTTP/1.1.
    pub tls: Option<Arc<crate::tls::Tls>>,
    pub limits: ServerLimits,
    pub log_format: LogFormat,
    /// What the server counts (metrics.rs); `--admin-listen` exposes it.
    pub metrics: Arc<Metrics>,
}

/// The access log's shape: one line per request either way, on stdout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `CLIENT "METHOD URL" STATUS TIMEms`
    #[default]
    Line,
    /// A JSON object: time_ms, client, method, url, status, duration_ms, request_id.
    Json,
}

/// The header that names a request across the proxy, its upstreams and their logs.
pub const REQUEST_ID: &str = "x-request-id";

/// What a public server bounds per client. docs/wasmtime.md, "Limits of the
/// wasmtime host", lists each with its default and what a client sees.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Open client connections; one more is answered 503 and closed.
    pub max_connections: usize,
    /// From a connection's start, or the end of its last response, to the
    /// end of the next request's headers: the slowloris bound, and so also
    /// the idle keep-alive timeout.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long is broken off.
    pub body_idle_timeout: Duration,
    /// On SIGINT or SIGTERM: how long open requests may take to finish
    /// before the server exits anyway.
    pub drain_timeout: Duration,
}

/// A client's request body, as handlers get it.
pub type ClientBody = Prefetched<IdleTimeout<Counted<Incoming>>>;

/// What answers requests: the edgeproxy runtime, or the Spin-compatible one
/// (spin.rs). The server around it is the same.
pub trait Handler: Send + Sync + 'static {
    type Body: http_body::Body<Data = bytes::Bytes, Error: Into<BoxError>> + Send + Unpin + 'static;
    /// `url` is the absolute URL the client asked for.
    fn handle(&self, request: hyper::Request<ClientBody>, url: String, peer: SocketAddr) -> impl Future<Output = hyper::Response<Self::Body>> + Send;
}

/// Serves until `shutdown`, then drains. Connections are served by one
/// thread per core, each with its own single-threaded runtime, so that a
/// connection, its guests and their upstream connections stay on one
/// thread: no work stealing, no wake-ups across threads per request. This
/// thread accepts and hands each connection to the serving thread with the
/// fewest open (threads accepting for themselves take them in bursts, and
/// one thread ends up with most of them).
pub async fn serve<H: Handler>(listener: TcpListener, handler: Arc<H>, options: ServerOptions, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let drain_timeout = options.limits.drain_timeout;
    let options = Arc::new(options);
    let connections = Arc::new(tokio::sync::Semaphore::new(options.limits.max_connections));
    let mut serving = Vec::new();
    let mut drained = Vec::new();
    for index in 0..threads {
        let (hand_over, handed) = tokio::sync::mpsc::unbounded_channel();
        let (handler, options) = (handler.clone(), options.clone());
        let (done, on_done) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().on_thread_park(access_log::flush).build()?;
        std::thread::Builder::new().name(format!("edgeproxy-serve-{index}")).spawn(move || {
            let gave_up = runtime.block_on(serve_handed(handed, handler, options));
            // Dropping the runtime cuts off what is still open.
            drop(runtime);
            access_log::flush();
            let _ = done.send(gave_up);
        })?;
        serving.push((hand_over, Arc::new(std::sync::atomic::AtomicUsize::new(0))));
        drained.push(on_done);
    }
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
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_connection(stream));
            continue;
        };
        let (hand_over, open) = serving.iter().min_by_key(|(_, open)| open.load(std::sync::atomic::Ordering::Relaxed)).expect("at least one serving thread");
        let held = Held::new(permit, open.clone());
        match stream.into_std() {
            Ok(stream) => {
                let _ = hand_over.send(Handed { stream, peer, held });
            }
            Err(e) => eprintln!("edgeproxy: could not hand over a connection: {e}"),
        }
    }
    drop(listener);
    options.metrics.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("edgeproxy: shutting down; waiting up to {} s for open requests", drain_timeout.as_secs());
    // Each serving thread stops taking connections, then drains.
    drop(serving);
    let mut gave_up = false;
    for thread in drained {
        gave_up |= thread.await.unwrap_or(true);
    }
    if gave_up {
        eprintln!("edgeproxy: gave up waiting; open requests are cut off");
    }
    Ok(())
}

/// An accepted connection on its way to a serving thread.
struct Handed {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    held: Held,
}

/// What an open connection holds until it ends: its place under
/// `--max-connections`, and one in its serving thread's count.
struct Held {
    _permit: tokio::sync::OwnedSemaphorePermit,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Held {
    fn new(permit: tokio::sync::OwnedSemaphorePermit, open: Arc<std::sync::atomic::AtomicUsize>) -> Held {
        open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Held { _permit: permit, open }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One serving thread: the connections handed to it, until the accepting
/// side closes, then its drain; true if the drain timed out.
async fn serve_handed<H: Handler>(mut handed: tokio::sync::mpsc::UnboundedReceiver<Handed>, handler: Arc<H>, options: Arc<ServerOptions>) -> bool {
    let limits = options.limits;
    let graceful = GracefulShutdown::new();
    while let Some(Handed { stream, peer, held }) = handed.recv().await {
        let stream = match tokio::net::TcpStream::from_std(stream) {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("edgeproxy: could not take over a connection: {e}");
                continue;
            }
        };
        let connection = Connection { handler: handler.clone(), options: options.clone(), peer, watcher: graceful.watcher() };
        tokio::spawn(async move {
            match &connection.options.tls {
                None => connection.serve_http1(stream).await,
                Some(tls) => {
                    // The handshake counts against the header deadline.
                    match tokio::time::timeout(limits.header_timeout, tls.acceptor().accept(stream)).await {
                        Ok(Ok(stream)) if stream.get_ref().1.alpn_protocol() == Some(crate::tls::H2) => connection.serve_http2(stream).await,
                        Ok(Ok(stream)) => connection.serve_http1(stream).await,
                        // A failed handshake is the client's to report.
                        Ok(Err(_)) | Err(_) => {}
                    }
                }
            }
            drop(held);
        });
    }
    tokio::select! {
        () = graceful.shutdown() => false,
        () = tokio::time::sleep(limits.drain_timeout) => true,
    }
}

/// One accepted client connection, served as HTTP/1.1, or as HTTP/2 when
/// the client chose it by ALPN. Both end with the server's drain.
struct Connection<H> {
    handler: Arc<H>,
    options: Arc<ServerOptions>,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
}

impl<H: Handler> Connection<H> {
    async fn serve_http1<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S) {
        let Connection { handler, options, peer, watcher } = self;
        let (stream, conflicts) = Watched::new(stream);
        let header_timeout = options.limits.header_timeout;
        let service = service_fn(move |req| logged(handler.clone(), options.clone(), peer, conflicts.next_request_has_both(), req));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        // Clients that go away mid-response are routine for a proxy.
        let _ = watcher.watch(conn).await;
    }

    /// HTTP/2 has no Content-Length/Transfer-Encoding conflict to watch for:
    /// its frames carry the body's length.
    async fn serve_http2<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(self, stream: S) {
        let Connection { handler, options, peer, watcher } = self;
        let service = service_fn(move |req| logged(handler.clone(), options.clone(), peer, false, req));
        let conn = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        let _ = watcher.watch(conn).await;
    }
}

/// A connection over `max_connections`: a 503 and a close, after reading
/// what the client sent first (closing on unread bytes would reset the
/// connection and lose the answer).
async fn refuse_connection(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({ "error": "too_many_connections", "message": "the server has as many open connections as it allows; retry shortly" }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-error-code: too_many_connections\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut request = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), stream.read(&mut request)).await;
    if stream.write_all(response.as_bytes()).await.is_ok() {
        let _ = stream.shutdown().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request)).await;
    }
}

/// The access log, written per serving thread: lines gather in the thread's
/// buffer and go to stdout in one write when the thread runs out of work
/// (its runtime parks) or the buffer fills. A write per line was a system
/// call per request; this way a busy thread writes once per batch, and an
/// idle one at once. One batch is written under stdout's lock, so lines from
/// two threads never interleave.
mod access_log {
    use std::cell::RefCell;
    use std::io::Write;

    /// Written out when it reaches this, even while the thread is busy.
    const FLUSH_AT: usize = 32 << 10;

    thread_local! {
        static PENDING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    pub fn line(line: std::fmt::Arguments) {
        PENDING.with_borrow_mut(|pending| {
            let _ = writeln!(pending, "{line}");
            if pending.len() >= FLUSH_AT {
                write_out(pending);
            }
        });
    }

    /// Writes out this thread's pending lines.
    pub fn flush() {
        PENDING.with_borrow_mut(write_out);
    }

    fn write_out(pending: &mut Vec<u8>) {
        if !pending.is_empty() {
            // A closed stdout loses the log, not the request.
            let _ = std::io::stdout().lock().write_all(pending);
            pending.clear();
        }
    }
}

/// One access-log line per request, whichever handler answered. Each
/// request carries an id (`X-Request-Id`: the client's when it sent a
/// usable one, else a new one) to the handler, to every upstream request
/// (runtime.rs), back to the client and into the log line.
///
/// `both_lengths`: the request's head had Content-Length and
/// Transfer-Encoding (framing.rs), a conflict refused before anything else.
async fn logged<H: Handler>(handler: Arc<H>, options: Arc<ServerOptions>, peer: SocketAddr, both_lengths: bool, mut req: hyper::Request<Incoming>) -> Result<hyper::Response<Counted<Either<H::Body, HostBody>>>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let request_id = request_id(req.headers());
    let id_header = hyper::header::HeaderValue::from_str(&request_id).expect("a request id is a valid header value");
    req.headers_mut().insert(REQUEST_ID, id_header.clone());
    let target = if both_lengths { Err(length_conflict()) } else { request_url(&req, &options.scheme) };
    let (url, mut response) = match target {
        Ok(url) => match first_frame_read(req, options.limits.body_idle_timeout, &options.metrics).await {
            Ok(req) => (url.clone(), handler.handle(req, url, peer).await.map(Either::Left)),
            Err(refusal) => (url, refusal.map(Either::Right)),
        },
        Err(refusal) => (req.uri().to_string(), refusal.map(Either::Right)),
    };
    // This request's id even when a cached response carries an older one.
    response.headers_mut().insert(REQUEST_ID, id_header);
    let status = response.status().as_u16();
    let took = started.elapsed();
    let answered = response.extensions().get::<Answered>();
    options.metrics.answered(response.extensions().get::<Routed>(), answered, status, took);
    let took_ms = took.as_secs_f64() * 1000.0;
    match options.log_format {
        LogFormat::Line => access_log::line(format_args!("{} \"{method} {url}\" {status} {took_ms:.1}ms", peer.ip())),
        LogFormat::Json => {
            let time_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let line = serde_json::json!({
                "time_ms": time_ms, "client": peer.ip().to_string(), "method": method.as_str(), "url": url,
                "status": status, "duration_ms": (took_ms * 10.0).round() / 10.0, "request_id": request_id,
                "error": answered.and_then(|a| a.error_code.as_deref()), "cache": answered.and_then(|a| a.cache.as_deref()),
            });
            access_log::line(format_args!("{line}"));
        }
    }
    Ok(response.map(|body| Counted::new(body, options.metrics.sent_bytes.clone())))
}

/// The client's `X-Request-Id` when it is one header of 1 to 128 visible
/// ASCII characters; otherwise 32 random hex digits.
fn request_id(headers: &hyper::HeaderMap) -> String {
    let mut sent = headers.get_all(REQUEST_ID).iter();
    if let (Some(value), None) = (sent.next(), sent.next()) {
        let bytes = value.as_bytes();
        if (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| b.is_ascii_graphic()) {
            return String::from_utf8_lossy(bytes).into_owned();
        }
    }
    new_request_id()
}

/// 32 hex digits, unique per process and unpredictable across processes: a
/// random seed (once) and a counter, mixed by SplitMix64. A request id is a
/// label, not a secret; a getrandom call per request cost about 2% of a
/// small request's CPU.
fn new_request_id() -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let mut random = [0u8; 8];
        getrandom::getrandom(&mut random).expect("the OS has randomness");
        u64::from_le_bytes(random)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}{:016x}", splitmix64(seed ^ n), splitmix64(seed.wrapping_add(n).rotate_left(32)))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The request with its body's first frame already read when the body is
/// chunked, so that a body whose framing is broken from the start (an
/// oversized or malformed chunk size) is refused with a 400 before any app,
/// and so any upstream, sees the request. A later framing error can only
/// break the transfer.
async fn first_frame_read(req: hyper::Request<Incoming>, idle: Duration, metrics: &Metrics) -> Result<hyper::Request<ClientBody>, hyper::Response<HostBody>> {
    use http_body_util::BodyExt;
    let (parts, body) = req.into_parts();
    let mut body = IdleTimeout::new(Counted::new(body, metrics.received_bytes.clone()), idle);
    let chunked = !hyper::body::Body::is_end_stream(&body) && !parts.headers.contains_key(hyper::header::CONTENT_LENGTH);
    let first = if chunked {
        match body.frame().await {
            Some(Ok(frame)) => Some(frame),
            Some(Err(e)) if e.is::<crate::body::Stalled>() => return Err(json_error(408, "request_timeout", &e.to_string())),
            Some(Err(e)) => return Err(json_error(400, "bad_request", &format!("the request body is malformed: {}", crate::body::error_chain(&*e)))),
            None => None,
        }
    } else {
        None
    };
    Ok(hyper::Request::from_parts(parts, Prefetched::new(first, body)))
}

/// Content-Length with Transfer-Encoding (RFC 9112, section 6.1: a server
/// may refuse it, and must close the connection after answering, which
/// hyper does): the two ways of reading the body are how requests are
/// smuggled past one server to the next.
fn length_conflict() -> hyper::Response<HostBody> {
    json_error(400, "bad_request", "the request has both Content-Length and Transfer-Encoding; send one (RFC 9112, section 6.1)")
}

/// The absolute URL the client asked for. The authority is the request
/// target's when it is in absolute form (`GET http://host/path`; RFC 9112,
/// section 3.2.2), and the `Host` header's otherwise. A request with more
/// than one `Host` (RFC 9112, section 3.2: 400), or whose target names
/// another host than its `Host`, is refused, so that nothing can be routed by
/// one name and reach another.
fn request_url<B>(req: &hyper::Request<B>, scheme: &str) -> Result<String, hyper::Response<HostBody>> {
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

pub fn internal_error(message: &str) -> hyper::Response<HostBody> {
    json_error(500, "internal_error", message)
}

/// The core's error shape (`{"error", "message"}` and `X-Error-Code`), for
/// what the host answers itself.
pub fn json_error(status: u16, code: &str, message: &str) -> hyper::Response<HostBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-error-code", code)
        .body(HostBody::from_bytes(body))
        .expect("a static response is valid")
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_request_ids_are_32_hex_digits_and_never_repeat() {
        let ids: std::collections::HashSet<String> = (0..100_000).map(|_| super::new_request_id()).collect();
        assert_eq!(ids.len(), 100_000);
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
