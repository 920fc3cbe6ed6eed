//! A local origin server with one route per behaviour under test.
//!
//! | path | answers |
//! |---|---|
//! | `/echo/...` | JSON: method, raw path+query, headers, body (as text) |
//! | `/bytes/N` | N pattern bytes, with Content-Length |
//! | `/sink` | reads the request body; JSON `{bytes, pattern_ok}` |
//! | `/die/N` | promises 2N bytes, sends N, then drops the connection |
//! | `/die-chunked/N` | sends N bytes chunked, then drops the connection |
//! | `/reset` | resets the connection (RST) before any response |
//! | `/stall/N` | promises 2N bytes, sends N, then sends nothing and keeps the connection open |
//! | `/bad-chunk` | a chunked body whose second chunk size is not hex |
//! | `/status/C` | status C with a JSON body |
//! | `/cacheable/...?cc=V[&vary=H][&vary2=H][&cookie=1][&size=N]` | `Cache-Control: V`; counts hits in `x-upstream-hits` |
//! | `/redirect` | 302 to this server's absolute `/echo/redirected` |
//! | `/redirect-to?URL` | 302 to URL; also a `Link` to it and a JSON body `{"url": URL}` |
//! | `/slow` | headers after 3 s |
//! | `/small` | `hello` |
//! | `/own-cors` | `hello`, with the origin server's own `Access-Control-Allow-Origin: *` |

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;


type Body = BoxBody<Bytes, std::io::Error>;

pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, u64>>>,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the upstream");
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let state = hits.clone();
        let seen_state = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let hits = state.clone();
                let seen = seen_state.clone();
                tokio::spawn(async move {
                    // `/die/N` needs the raw socket, so peek at the request line first.
                    let mut peek = [0u8; 64];
                    let n = stream.peek(&mut peek).await.unwrap_or(0);
                    let line = String::from_utf8_lossy(&peek[..n]).to_string();
                    if let Some(fault) = raw_fault(&line) {
                        return fault.serve(stream).await;
                    }
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        seen.lock().unwrap().push(req.uri().to_string());
                        route(req, addr, hits.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Upstream { addr, hits, seen, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request target this upstream received, as sent.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// How often `/cacheable/...` path `path` was requested here.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// The routes that need the raw socket: broken responses hyper would not send.
enum RawFault {
    Die(u64),
    Reset,
    Stall(u64),
    BadChunk,
}

fn raw_fault(request_line: &str) -> Option<RawFault> {
    let path = request_line.split(' ').nth(1)?;
    if let Some(n) = path.strip_prefix("/die/") {
        return n.parse().ok().map(RawFault::Die);
    }
    if let Some(n) = path.strip_prefix("/stall/") {
        return n.parse().ok().map(RawFault::Stall);
    }
    match path {
        "/reset" => Some(RawFault::Reset),
        "/bad-chunk" => Some(RawFault::BadChunk),
        _ => None,
    }
}

impl RawFault {
    async fn serve(self, mut stream: tokio::net::TcpStream) {
        match self {
            RawFault::Die(n) => die_mid_body(stream, n).await,
            RawFault::Reset => {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                // Linger zero: close sends RST, not FIN.
                let _ = stream.set_zero_linger();
                drop(stream);
            }
            RawFault::Stall(n) => {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n", 2 * n);
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&crate::pattern_chunk(0, n as usize)).await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_secs(300)).await;
            }
            RawFault::BadChunk => {
                let mut buf = [0u8; 4096];
                let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n").await;
                let _ = stream.flush().await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Sends headers promising 2N bytes, N bytes, then closes: a short body that
/// only a careless proxy would pass on as complete.
async fn die_mid_body(mut stream: tokio::net::TcpStream, n: u64) {
    let mut buf = [0u8; 4096];
    let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: application/octet-stream\r\n\r\n", 2 * n);
    let _ = stream.write_all(head.as_bytes()).await;
    let mut sent = 0;
    while sent < n {
        let len = (n - sent).min(64 * 1024);
        let _ = stream.write_all(&crate::pattern_chunk(sent, len as usize)).await;
        sent += len;
    }
    let _ = stream.flush().await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(stream);
}

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()).map_err(|e: Infallible| match e {}).boxed())
        .unwrap()
}

/// `len` pattern bytes as a stream of 64 KiB frames, optionally breaking after them.
fn pattern_stream(len: u64, then_break: bool) -> Body {
    let frames = crate::pattern_stream(len).map(|chunk| chunk.map(Frame::data));
    let tail = futures_util::stream::iter(then_break.then(|| Err(std::io::Error::other("upstream died"))));
    BodyExt::boxed(StreamBody::new(frames.chain(tail)))
}

async fn route(req: Request<Incoming>, addr: SocketAddr, hits: Arc<Mutex<HashMap<String, u64>>>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let param = |name: &str| {
        query.split('&').find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('='))).map(|v| v.replace("%20", " ").replace("%2C", ","))
    };
    let response = if path.starts_with("/echo") {
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let headers: Vec<(String, String)> =
            req.headers().iter().map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let json = serde_json::json!({ "method": method, "uri": uri, "headers": headers, "body": String::from_utf8_lossy(&body) });
        full(200, "application/json", json.to_string())
    } else if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse().ok()) {
        let mut r = Response::new(pattern_stream(n, false));
        r.headers_mut().insert("content-length", n.into());
        r.headers_mut().insert("content-type", "application/octet-stream".parse().unwrap());
        r
    } else if path == "/sink" {
        let mut body = req.into_body();
        let (mut bytes, mut ok) = (0u64, true);
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return Ok(full(400, "text/plain", "request body broke")) };
            if let Ok(data) = frame.into_data() {
                ok &= crate::pattern_matches(bytes, &data);
                bytes += data.len() as u64;
            }
        }
        full(200, "application/json", serde_json::json!({ "bytes": bytes, "pattern_ok": ok }).to_string())
    } else if let Some(n) = path.strip_prefix("/die-chunked/").and_then(|n| n.parse().ok()) {
        Response::new(pattern_stream(n, true))
    } else if let Some(code) = path.strip_prefix("/status/").and_then(|c| c.parse().ok()) {
        full(code, "application/json", format!("{{\"upstream_status\":{code}}}"))
    } else if path.starts_with("/cacheable/") {
        let count = {
            let mut hits = hits.lock().unwrap();
            let n = hits.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        let lang = req.headers().get("accept-language").map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
        let mut r = full(200, "text/plain", format!("{path} #{count} lang={lang}"));
        let h = r.headers_mut();
        h.insert("x-upstream-hits", count.into());
        if let Some(cc) = param("cc") {
            h.insert("cache-control", cc.parse().unwrap());
        }
        if let Some(vary) = param("vary") {
            h.insert("vary", vary.parse().unwrap());
        }
        if let Some(vary) = param("vary2") {
            h.append("vary", vary.parse().unwrap());
        }
        if param("cookie").is_some() {
            h.insert("set-cookie", "session=1".parse().unwrap());
        }
        if let Some(size) = param("size").and_then(|s| s.parse::<u64>().ok()) {
            *r.body_mut() = pattern_stream(size, false);
            r.headers_mut().remove("content-length");
        }
        r
    } else if path == "/redirect" {
        let mut r = full(302, "text/plain", "moved");
        r.headers_mut().insert("location", format!("http://{addr}/echo/redirected").parse().unwrap());
        r
    } else if path == "/redirect-to" {
        let to = percent_decode(req.uri().query().unwrap_or_default());
        let mut r = full(302, "application/json", serde_json::json!({ "url": to }).to_string());
        if let Ok(value) = to.parse() {
            r.headers_mut().insert("location", value);
        }
        if let Ok(value) = format!("<{to}>; rel=\"next\"").parse() {
            r.headers_mut().insert("link", value);
        }
        r
    } else if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(3)).await;
        full(200, "text/plain", "late")
    } else if path == "/own-cors" {
        let mut r = full(200, "text/plain", "hello");
        r.headers_mut().insert("access-control-allow-origin", "*".parse().unwrap());
        r
    } else if path == "/gzip" {
        // "hello", gzipped: a guest must see these bytes, not "hello" (the
        // WIT's rule http.no-decoding).
        const HELLO_GZIP: [u8; 25] =
            [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0xff, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x86, 0xa6, 0x10, 0x36, 0x05, 0x00, 0x00, 0x00];
        let mut r = full(200, "text/plain", Bytes::from_static(&HELLO_GZIP));
        r.headers_mut().insert("content-encoding", "gzip".parse().unwrap());
        r
    } else if path == "/small" {
        full(200, "text/plain", "hello")
    } else {
        full(404, "text/plain", "no such fixture route")
    };
    Ok(response)
}

/// `%XX` escapes decoded (for `/redirect-to`'s query).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
