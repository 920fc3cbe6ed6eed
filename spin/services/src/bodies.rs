//! The `body` resource: bytes the guest made, a wasi:io input stream (a
//! client request or an upstream response), or bytes put back in front of
//! one of those. Piping a stream to an output stream is a host-side splice.

use std::cell::RefCell;

use wasi::http::types::{IncomingBody, IncomingResponse};
use wasi::io::streams::{InputStream, OutputStream, StreamError};

use crate::Services;
use crate::bindings::exports::edgeproxy::platform::body::{self, BodyError};
use crate::bindings::exports::edgeproxy::spin_adapter::wasi_bodies;

/// Bytes per splice: large enough that a multi-GiB body is few calls, small
/// enough that the host's buffer for one stays modest.
const SPLICE_BYTES: u64 = 1 << 20;
/// A `read(0)` still makes progress.
const DEFAULT_READ: u32 = 64 << 10;

pub struct HostBody(RefCell<Source>);

pub enum Source {
    Bytes { bytes: Vec<u8>, at: usize },
    Stream(WasiStream),
    Chain(Box<Source>, Box<Source>),
    /// A stored blob's bytes, read from its key-value parts as they are wanted (blob.rs).
    Parts(Parts),
    /// `put-through`: the source's bytes as read, stored as they pass
    /// (blob.rs); the store is given up on its first failure, the body not.
    Through(Box<Source>, Option<Box<crate::blob::Filling>>),
    /// A stream that could not be opened: every read fails, nothing is lost silently.
    Broken(String),
}

/// `remaining` bytes of a stored blob from byte `skip` of part `next`.
pub struct Parts {
    key: String,
    generation: u64,
    next: u64,
    skip: usize,
    remaining: u64,
    part: Vec<u8>,
    at: usize,
}

impl Parts {
    pub fn new(key: String, generation: u64, first: u64, count: u64) -> Parts {
        let part_bytes = crate::blob::PART_BYTES as u64;
        Parts { key, generation, next: first / part_bytes, skip: (first % part_bytes) as usize, remaining: count, part: Vec::new(), at: 0 }
    }

    fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>, BodyError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if self.at >= self.part.len() {
            let key = crate::blob::part_key(&self.key, self.generation, self.next);
            let part = crate::kv::with_bucket(|b| b.get(&key)).map_err(BodyError::Broken)?;
            self.part = part.ok_or_else(|| BodyError::Broken("a part of the stored object is gone (replaced or deleted while read)".into()))?;
            self.at = std::mem::take(&mut self.skip).min(self.part.len());
            self.next += 1;
        }
        let n = max.min(self.part.len() - self.at).min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let chunk = self.part[self.at..self.at + n].to_vec();
        self.at += n;
        self.remaining -= n as u64;
        Ok(Some(chunk))
    }
}

/// An input stream with the resources it is a child of. Field order is drop
/// order, which wasi:http requires to be child first.
pub struct WasiStream {
    stream: InputStream,
    _body: IncomingBody,
    _response: Option<IncomingResponse>,
    known_length: Option<u64>,
}

impl WasiStream {
    /// `None` if the body was already taken (it never is: each is consumed once here).
    pub fn new(body: IncomingBody, response: Option<IncomingResponse>, known_length: Option<u64>) -> Option<WasiStream> {
        let stream = body.stream().ok()?;
        Some(WasiStream { stream, _body: body, _response: response, known_length })
    }
}

impl HostBody {
    pub fn from_source(source: Source) -> body::Body {
        body::Body::new(HostBody(RefCell::new(source)))
    }

    pub fn into_source(body: body::Body) -> Source {
        body.into_inner::<HostBody>().0.into_inner()
    }
}

impl Source {
    pub fn read(&mut self, max: usize) -> Result<Option<Vec<u8>>, BodyError> {
        match self {
            Source::Bytes { bytes, at } => {
                if *at >= bytes.len() {
                    return Ok(None);
                }
                let end = bytes.len().min(*at + max);
                let chunk = bytes[*at..end].to_vec();
                *at = end;
                Ok(Some(chunk))
            }
            Source::Stream(s) => loop {
                match s.stream.blocking_read(max as u64) {
                    Ok(chunk) if chunk.is_empty() => continue,
                    Ok(chunk) => return Ok(Some(chunk)),
                    Err(StreamError::Closed) => return Ok(None),
                    Err(StreamError::LastOperationFailed(e)) => return Err(BodyError::Broken(e.to_debug_string())),
                }
            },
            Source::Chain(head, tail) => match head.read(max)? {
                Some(chunk) => Ok(Some(chunk)),
                None => tail.read(max),
            },
            Source::Parts(parts) => parts.read(max),
            Source::Through(source, filling) => {
                let read = source.read(max);
                match (&read, filling.as_mut()) {
                    (Ok(Some(chunk)), Some(f)) => {
                        if f.write(chunk).is_err() {
                            *filling = None;
                        } else if f.is_whole() {
                            // Placed with its last byte: the reader may stop there.
                            let _ = filling.take().map(|f| f.finish());
                        }
                    }
                    (Ok(None), Some(_)) => {
                        let _ = filling.take().map(|f| f.finish());
                    }
                    _ => *filling = None,
                }
                read
            }
            Source::Broken(why) => Err(BodyError::Broken(why.clone())),
        }
    }

    fn known_length(&self) -> Option<u64> {
        match self {
            Source::Bytes { bytes, at } => Some((bytes.len() - at) as u64),
            Source::Stream(s) => s.known_length,
            Source::Chain(head, tail) => Some(head.known_length()? + tail.known_length()?),
            Source::Parts(parts) => Some(parts.remaining),
            Source::Through(source, _) => source.known_length(),
            Source::Broken(_) => None,
        }
    }

    /// Writes everything to `out`: bytes through the guest's write permits,
    /// streams by host-side splice.
    pub fn pipe(self, out: &OutputStream) -> Result<(), BodyError> {
        match self {
            Source::Bytes { bytes, at } => write_all(out, &bytes[at..])?,
            Source::Chain(head, tail) => {
                head.pipe(out)?;
                tail.pipe(out)?;
            }
            Source::Stream(s) => loop {
                match out.blocking_splice(&s.stream, SPLICE_BYTES) {
                    Ok(_) => {}
                    // Closed is either end: the input's (done) or the
                    // output's (the reader went away). A zero-byte read
                    // fails with Closed only on an input that has ended;
                    // the output may close at the same moment (a body
                    // with a Content-Length is complete), so asking it
                    // would race.
                    Err(StreamError::Closed) => match s.stream.read(0) {
                        Err(StreamError::Closed) => break,
                        _ => return Err(BodyError::Broken("the receiving side closed the stream".into())),
                    },
                    Err(StreamError::LastOperationFailed(e)) => return Err(BodyError::Broken(e.to_debug_string())),
                }
            },
            mut read_by_chunks @ (Source::Parts(_) | Source::Through(..)) => {
                while let Some(chunk) = read_by_chunks.read(SPLICE_BYTES as usize)? {
                    write_all(out, &chunk)?;
                }
            }
            Source::Broken(why) => return Err(BodyError::Broken(why)),
        }
        match out.blocking_flush() {
            // The reader already has all it wanted: a body with a
            // Content-Length closes as its last byte goes out.
            Ok(()) | Err(StreamError::Closed) => Ok(()),
            Err(e) => Err(broken(e)),
        }
    }
}

fn write_all(out: &OutputStream, mut bytes: &[u8]) -> Result<(), BodyError> {
    while !bytes.is_empty() {
        let permit = out.check_write().map_err(broken)?;
        if permit == 0 {
            out.subscribe().block();
            continue;
        }
        let n = bytes.len().min(permit as usize);
        out.write(&bytes[..n]).map_err(broken)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

fn broken(e: StreamError) -> BodyError {
    match e {
        StreamError::Closed => BodyError::Broken("the receiving side closed the stream".into()),
        StreamError::LastOperationFailed(e) => BodyError::Broken(e.to_debug_string()),
    }
}

impl body::GuestBody for HostBody {
    fn new(bytes: Vec<u8>) -> HostBody {
        HostBody(RefCell::new(Source::Bytes { bytes, at: 0 }))
    }

    fn read(&self, max: u32) -> Result<Option<Vec<u8>>, BodyError> {
        let max = if max == 0 { DEFAULT_READ } else { max };
        self.0.borrow_mut().read(max as usize)
    }

    fn known_length(&self) -> Option<u64> {
        self.0.borrow().known_length()
    }

    fn prepend(head: Vec<u8>, tail: body::Body) -> body::Body {
        let tail = HostBody::into_source(tail);
        HostBody::from_source(Source::Chain(Box::new(Source::Bytes { bytes: head, at: 0 }), Box::new(tail)))
    }
}

impl body::Guest for Services {
    type Body = HostBody;
}

impl wasi_bodies::Guest for Services {
    fn from_incoming(incoming: IncomingBody, known_length: Option<u64>) -> Option<body::Body> {
        if known_length == Some(0) {
            return None;
        }
        let Some(stream) = WasiStream::new(incoming, None, known_length) else {
            return Some(HostBody::from_source(Source::Broken("the request body stream was already taken".into())));
        };
        let mut source = Source::Stream(stream);
        if known_length.is_none() {
            match source.read(DEFAULT_READ as usize) {
                Ok(None) => return None,
                Ok(Some(first)) => source = Source::Chain(Box::new(Source::Bytes { bytes: first, at: 0 }), Box::new(source)),
                Err(BodyError::Broken(why)) => source = Source::Broken(why),
                Err(BodyError::Timeout) => source = Source::Broken("timed out waiting for the request body".into()),
            }
        }
        Some(HostBody::from_source(source))
    }

    fn pipe(body: body::Body, out: &OutputStream) -> Result<(), BodyError> {
        HostBody::into_source(body).pipe(out)
    }
}
