//! The host side of the WIT `body` resource. A [`HostBody`] is also an
//! [`http_body::Body`], so a body the guest passes on goes straight from one
//! socket to the other without entering wasm memory.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct HostBody {
    /// Bytes before the stream: a body built from bytes, a prepended head,
    /// or the unread rest of a frame larger than a guest read.
    head: Bytes,
    stream: Option<BoxBody<Bytes, BoxError>>,
}

#[derive(Debug)]
pub enum ReadError {
    Broken(String),
    Timeout,
}

impl HostBody {
    pub fn from_bytes(bytes: impl Into<Bytes>) -> Self {
        HostBody { head: bytes.into(), stream: None }
    }

    pub fn from_stream<B>(body: B) -> Self
    where
        B: Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        HostBody { head: Bytes::new(), stream: Some(body.map_err(Into::into).boxed()) }
    }

    pub fn prepend(head: Vec<u8>, tail: HostBody) -> Self {
        let mut joined = BytesMut::with_capacity(head.len() + tail.head.len());
        joined.extend_from_slice(&head);
        joined.extend_from_slice(&tail.head);
        HostBody { head: joined.freeze(), stream: tail.stream }
    }

    pub fn known_length(&self) -> Option<u64> {
        let stream = match &self.stream {
            None => 0,
            Some(s) => s.size_hint().exact()?,
        };
        Some(self.head.len() as u64 + stream)
    }

    /// At most `max` bytes; `None` at the end. Waits for at least one byte.
    pub async fn read(&mut self, max: usize) -> Result<Option<Bytes>, ReadError> {
        let max = max.max(1);
        loop {
            if !self.head.is_empty() {
                let n = max.min(self.head.len());
                return Ok(Some(self.head.split_to(n)));
            }
            let Some(stream) = self.stream.as_mut() else { return Ok(None) };
            match stream.frame().await {
                None => {
                    self.stream = None;
                    return Ok(None);
                }
                Some(Err(e)) if e.is::<Stalled>() => return Err(ReadError::Timeout),
                Some(Err(e)) => return Err(ReadError::Broken(error_chain(&*e))),
                // Trailers are not part of the contract; skip them.
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.head = data;
                    }
                }
            }
        }
    }
}

impl HostBody {
    /// All of the body's bytes: for small answers the host reads itself
    /// (S3's replies, a mirror's listing).
    pub async fn read_to_end(mut self) -> Result<Vec<u8>, ReadError> {
        let mut bytes = Vec::new();
        while let Some(chunk) = self.read(1 << 20).await? {
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    }
}

impl Body for HostBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.head.is_empty() {
            let head = std::mem::take(&mut self.head);
            return Poll::Ready(Some(Ok(Frame::data(head))));
        }
        match self.stream.as_mut() {
            None => Poll::Ready(None),
            Some(s) => Pin::new(s).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.stream.as_ref().is_none_or(|s| s.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let hint = self.stream.as_ref().map(|s| s.size_hint()).unwrap_or_else(|| SizeHint::with_exact(0));
        with_bytes_before(hint, self.head.len() as u64)
    }
}

/// The length of the data frame a poll gave, if it gave one.
fn data_len<E>(polled: &Poll<Option<Result<Frame<Bytes>, E>>>) -> Option<u64> {
    match polled {
        Poll::Ready(Some(Ok(frame))) => frame.data_ref().map(|data| data.len() as u64),
        _ => None,
    }
}

/// A stream of `length` bytes, which says so (a stored blob): its exact
/// size is what `known-length` and a client's `Content-Length` come from.
pub struct KnownLength<B> {
    inner: B,
    left: u64,
}

impl<B> KnownLength<B> {
    pub fn new(inner: B, length: u64) -> Self {
        KnownLength { inner, left: length }
    }
}

impl<B> Body for KnownLength<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(n) = data_len(&polled) {
            self.left = self.left.saturating_sub(n);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// A body that fails with [`Stalled`] when no bytes come for `idle`, so that
/// a stalled client or upstream cannot hold a request open forever.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// The error of an [`IdleTimeout`] body that waited too long.
#[derive(Debug)]
pub struct Stalled(pub Duration);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the body sent nothing for {} s", self.0.as_secs())
    }
}

impl std::error::Error for Stalled {}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        IdleTimeout { inner, idle, timer: Box::pin(tokio::time::sleep(idle)) }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.as_mut().reset(tokio::time::Instant::now() + this.idle);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending if this.timer.as_mut().poll(cx).is_ready() => Poll::Ready(Some(Err(Box::new(Stalled(this.idle))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose data bytes are added to a counter as they pass (the
/// metrics' bytes received and sent).
pub struct Counted<B> {
    inner: B,
    counter: prometheus_client::metrics::counter::Counter,
}

impl<B> Counted<B> {
    pub fn new(inner: B, counter: prometheus_client::metrics::counter::Counter) -> Self {
        Counted { inner, counter }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Some(n) = data_len(&polled) {
            self.counter.inc_by(n);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body whose first frame has already been read (see
/// `server::first_frame_read`), put back in front of the rest.
pub struct Prefetched<B> {
    first: Option<Frame<Bytes>>,
    rest: B,
}

impl<B> Prefetched<B> {
    pub fn new(first: Option<Frame<Bytes>>, rest: B) -> Self {
        Prefetched { first, rest }
    }
}

impl<B: Body<Data = Bytes, Error = BoxError> + Unpin> Body for Prefetched<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().and_then(|f| f.data_ref()).map_or(0, |d| d.len() as u64);
        with_bytes_before(self.rest.size_hint(), first)
    }
}

/// A body's size hint with `n` more bytes in front of it.
fn with_bytes_before(mut hint: SizeHint, n: u64) -> SizeHint {
    // Raise the upper bound first: a lower bound above it panics.
    if let Some(upper) = hint.upper() {
        hint.set_upper(upper + n);
    }
    hint.set_lower(hint.lower() + n);
    hint
}

/// An error with its causes, which is where hyper puts the reason.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
