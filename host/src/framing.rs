//! A watch on the bytes a client sends, for the one framing conflict hyper
//! resolves instead of refusing: `Content-Length` together with
//! `Transfer-Encoding`. hyper goes by Transfer-Encoding and drops
//! Content-Length before the request reaches us (RFC 9112, section 6.3
//! allows that), so the conflict is invisible in the parsed request; the
//! edge's rule is to refuse it (docs/security.md).
//!
//! The watch follows each request's framing as hyper does (a head, then no
//! body, a fixed-length one or a chunked one) and records, per request, in
//! order, whether its head had both fields. It only reports what it parsed:
//! when it loses the thread (a head it cannot parse, an upgrade, a chunk
//! size it cannot read) it stops watching the connection, and hyper, which
//! then fails or closes the connection itself, still applies.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Larger than hyper's read buffer limit (about 400 KiB), so a head hyper
/// accepts is never one the watch gave up on.
const MAX_HEAD: usize = 512 * 1024;
/// A chunk-size line with extensions, or one trailer line.
const MAX_LINE: usize = 64 * 1024;

/// One entry per request head the watch has read, in order: true when the
/// head had both Content-Length and Transfer-Encoding.
#[derive(Clone, Default)]
pub struct Conflicts(Arc<Mutex<VecDeque<bool>>>);

impl Conflicts {
    /// Whether the next request hyper hands over had both. hyper serves a
    /// connection's requests in order, and reads each head through the watch
    /// before it hands the request over, so the front entry is that request's.
    pub fn next_request_has_both(&self) -> bool {
        self.0.lock().expect("the conflicts lock is never poisoned").pop_front().unwrap_or(false)
    }

    fn record(&self, both: bool) {
        self.0.lock().expect("the conflicts lock is never poisoned").push_back(both);
    }
}

/// A client connection whose incoming bytes pass through [`FramingWatch`].
pub struct Watched<S> {
    inner: S,
    watch: FramingWatch,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Self, Conflicts) {
        let conflicts = Conflicts::default();
        (Watched { inner, watch: FramingWatch::new(conflicts.clone()) }, conflicts)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.watch.feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Where in a request the next incoming byte falls.
enum State {
    /// A head, read so far; `scanned` is how far the end of it was looked for.
    Head { buf: Vec<u8>, scanned: usize },
    /// That many body bytes left.
    Fixed(u64),
    /// A chunk-size line, read so far.
    ChunkSize(Vec<u8>),
    /// That many bytes of chunk data left.
    ChunkData(u64),
    /// The CRLF after chunk data, read so far.
    ChunkEnd(Vec<u8>),
    /// A trailer line, read so far; an empty one ends the request.
    Trailer(Vec<u8>),
    /// The thread is lost; nothing more is recorded on this connection.
    Lost,
}

pub struct FramingWatch {
    state: State,
    conflicts: Conflicts,
}

impl FramingWatch {
    fn new(conflicts: Conflicts) -> Self {
        FramingWatch { state: State::Head { buf: Vec::new(), scanned: 0 }, conflicts }
    }

    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            let (used, next) = match &mut self.state {
                State::Lost => return,
                State::Head { buf, scanned } => {
                    let before = buf.len();
                    buf.extend_from_slice(input);
                    // Parse only once the blank line that ends a head is in
                    // (a client sending a byte at a time must not cost a
                    // parse per byte).
                    let from = scanned.saturating_sub(3);
                    *scanned = buf.len();
                    if !has_head_end(&buf[from..]) {
                        if buf.len() > MAX_HEAD {
                            self.state = State::Lost;
                        }
                        return;
                    }
                    match parse_head(&self.conflicts, buf) {
                        Some((len, next)) => (len - before, next),
                        None => (input.len(), State::Lost),
                    }
                }
                State::Fixed(left) | State::ChunkData(left) => {
                    let used = input.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= used as u64;
                    let next = match self.state {
                        State::Fixed(0) => head(),
                        State::ChunkData(0) => State::ChunkEnd(Vec::new()),
                        _ => {
                            input = &input[used..];
                            continue;
                        }
                    };
                    (used, next)
                }
                State::ChunkSize(line) | State::ChunkEnd(line) | State::Trailer(line) => {
                    let Some(end) = input.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(input);
                        if line.len() > MAX_LINE {
                            self.state = State::Lost;
                        }
                        return;
                    };
                    line.extend_from_slice(&input[..end]);
                    let mut text = std::mem::take(line);
                    if text.last() == Some(&b'\r') {
                        text.pop();
                    }
                    let next = match self.state {
                        State::ChunkSize(_) => match chunk_size(&text) {
                            Some(0) => State::Trailer(Vec::new()),
                            Some(size) => State::ChunkData(size),
                            None => State::Lost,
                        },
                        State::ChunkEnd(_) if text.is_empty() => State::ChunkSize(Vec::new()),
                        State::Trailer(_) if text.is_empty() => head(),
                        State::Trailer(_) => State::Trailer(Vec::new()),
                        _ => State::Lost,
                    };
                    (end + 1, next)
                }
            };
            self.state = next;
            input = &input[used.min(input.len())..];
        }
    }
}

/// A complete head: its length and the state its body starts in, after
/// recording whether it had both length fields. None when it does not parse
/// (hyper refuses it too).
fn parse_head(conflicts: &Conflicts, buf: &[u8]) -> Option<(usize, State)> {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut fields);
    let httparse::Status::Complete(len) = request.parse(buf).ok()? else { return None };
    let headers = &*request.headers;
    let named = |name: &'static str| headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value);
    let lengths: Vec<&[u8]> = named("content-length").collect();
    let encodings: Vec<&[u8]> = named("transfer-encoding").collect();
    conflicts.record(!lengths.is_empty() && !encodings.is_empty());
    let upgrade = request.method == Some("CONNECT") || named("upgrade").next().is_some();
    let next = if upgrade {
        State::Lost
    } else if let Some(last) = encodings.last() {
        let last = last.rsplit(|&b| b == b',').next().unwrap_or_default();
        if last.trim_ascii().eq_ignore_ascii_case(b"chunked") { State::ChunkSize(Vec::new()) } else { State::Lost }
    } else if let Some(first) = lengths.first() {
        let length = std::str::from_utf8(first).ok().and_then(|v| v.trim().parse::<u64>().ok());
        match length {
            Some(n) if lengths.iter().all(|l| l == first) => if n == 0 { head() } else { State::Fixed(n) },
            _ => State::Lost,
        }
    } else {
        head()
    };
    Some((len, next))
}

fn head() -> State {
    State::Head { buf: Vec::new(), scanned: 0 }
}

fn has_head_end(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// A chunk-size line's size: hex digits, then any `;extension`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|&b| b == b';').next()?.trim_ascii();
    u64::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded verdicts for `stream` fed in pieces of `step` bytes.
    fn verdicts(stream: &str, step: usize) -> Vec<bool> {
        let conflicts = Conflicts::default();
        let mut watch = FramingWatch::new(conflicts.clone());
        for piece in stream.as_bytes().chunks(step) {
            watch.feed(piece);
        }
        let recorded = conflicts.0.lock().unwrap().iter().copied().collect();
        recorded
    }

    fn every_step(stream: &str, expected: &[bool]) {
        for step in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(verdicts(stream, step), expected, "in pieces of {step}: {stream:?}");
        }
    }

    const CL_TE: &str = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const TE_CL: &str = "POST /a HTTP/1.1\r\nHost: h\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

    #[test]
    fn both_length_fields_are_a_conflict_in_either_order() {
        every_step(CL_TE, &[true]);
        every_step(TE_CL, &[true]);
    }

    #[test]
    fn pipelined_requests_are_followed_through_their_bodies() {
        // Bodies that hold what would be a head's end and length fields.
        let fixed_body = "Transfer-Encoding: chunked\r\n\r\n\r\n\r\n\r\n\r\n";
        let fixed = format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{fixed_body}", fixed_body.len());
        let chunk = "Content-Length: 5\r\n\r\nhello";
        let chunked = format!("POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{:x};ext=1\r\n{chunk}\r\n0\r\nX-Trailer: yes\r\n\r\n", chunk.len());
        let bare = "GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
        let stream = format!("{fixed}{chunked}{bare}{CL_TE}{bare}");
        every_step(&stream, &[false, false, false, true, false]);
    }

    #[test]
    fn body_bytes_that_look_like_a_conflicting_head_are_not_one() {
        let inner = "GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{inner}GET /b HTTP/1.1\r\n\r\n", inner.len());
        every_step(&stream, &[false, false]);
    }

    #[test]
    fn a_head_it_cannot_parse_stops_the_watch() {
        every_step(&format!("GET / HTTP/1.1\r\nBad Header\r\n\r\n{CL_TE}"), &[]);
        every_step(&format!("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{CL_TE}"), &[false]);
    }

    #[test]
    fn a_head_that_never_ends_is_given_up_without_a_parse_per_byte() {
        let conflicts = Conflicts::default();
        let mut watch = FramingWatch::new(conflicts.clone());
        watch.feed(b"GET / HTTP/1.1\r\n");
        for _ in 0..MAX_HEAD / 16 + 1 {
            watch.feed(b"X-Filler: 12345\n");
        }
        assert!(matches!(watch.state, State::Lost));
    }
}
