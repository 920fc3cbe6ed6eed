//! The blob store of `wit/edgeproxy.wit` (`blob`): objects in a directory,
//! `<data-dir>/blobs`, each one file named after the SHA-256 of its key (so
//! no key can name a path), holding its metadata and then its bytes. A put
//! streams into a temporary file beside it and renames it into place only
//! once the whole body arrived with the size and hash it was said to have,
//! so a reader sees a whole object or none.
//!
//! With a cap (`--blob-max-bytes`), objects least recently used go first
//! once a put takes the store over it: a read marks its object used (the
//! file's modification time, at most once a minute), and eviction removes
//! by that time, oldest first, down to 90% of the cap.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use futures_util::future::OptionFuture;

use crate::body::{BoxError, HostBody, KnownLength, ReadError, Stalled};
mod s3;

use s3::{S3, S3Filling};
use crate::metrics::BlobMetrics;
use crate::upstream::Upstream;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: u32 = 512;

/// The largest object: what a disk holds; a model file can be 50 GB.
pub const MAX_OBJECT_BYTES: u64 = 1 << 40;

/// Bytes read from a body at a time.
const CHUNK: usize = 256 << 10;

/// Bytes read from a stored object's file at a time: few enough reads that
/// each one's trip to the blocking pool costs little.
const FILE_CHUNK: usize = 1 << 20;

#[derive(Debug, PartialEq, Eq)]
pub enum BlobError {
    InvalidKey(String),
    Mismatch(String),
    TooLarge(u64),
    Unavailable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub size: u64,
    pub metadata: Vec<(String, String)>,
}

/// What precedes an object's bytes: its description, and what a listing
/// names it by.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    #[serde(flatten)]
    pub object: Object,
    pub key: String,
    pub stored_ms: u64,
}

/// One object of a listing (WIT `listed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub used_ms: u64,
}

/// A page of a listing, and where the next starts (WIT `listing`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<Listed>,
    pub cursor: Option<String>,
}

pub struct Store {
    dir: PathBuf,
    /// Objects on S3-compatible storage instead of in `dir` (blob_s3.rs).
    s3: Option<S3>,
    /// The most bytes its objects may hold (in a directory).
    cap: Option<u64>,
    metrics: BlobMetrics,
    /// One eviction at a time.
    evicting: std::sync::Mutex<()>,
}

impl Store {
    /// The store in `data_dir/blobs`, made if missing (what it holds is
    /// counted once, here), holding at most `cap` bytes.
    pub fn open(data_dir: &Path, cap: Option<u64>, metrics: BlobMetrics) -> std::io::Result<Store> {
        let dir = data_dir.join("blobs");
        std::fs::create_dir_all(dir.join("partial"))?;
        let held: u64 = objects(&dir).iter().map(|o| o.bytes).sum();
        metrics.bytes.set(i64::try_from(held).unwrap_or(i64::MAX));
        Ok(Store { dir, s3: None, cap, metrics, evicting: std::sync::Mutex::new(()) })
    }

    /// The store on S3-compatible storage (`s3://BUCKET[/PREFIX]`), shared
    /// by every host pointed at it; its size is the bucket's to bound.
    pub fn on_s3(url: &str, upstream: Upstream, metrics: BlobMetrics) -> Result<Store, String> {
        Ok(Store { dir: PathBuf::new(), s3: Some(S3::from_url(url, upstream)?), cap: None, metrics, evicting: std::sync::Mutex::new(()) })
    }

    pub async fn put(self: &Arc<Self>, key: &str, mut content: HostBody, size: u64, sha256: Option<&str>, metadata: Vec<(String, String)>) -> Result<(), BlobError> {
        let mut filling = self.start_filling(key, size, sha256, metadata).await?;
        loop {
            match content.read(CHUNK).await {
                Ok(Some(chunk)) => filling.write(chunk).await?,
                Ok(None) => return self.placed(filling.finish().await),
                Err(e) => return Err(filling.broken(&e)),
            }
        }
    }

    /// `content` passed on as it is read, and stored as by [`Store::put`]
    /// once it was read to its end; a body dropped before it stores nothing.
    /// A store that cannot take it passes the body on all the same.
    pub async fn put_through(self: &Arc<Self>, key: &str, content: HostBody, size: u64, sha256: Option<&str>, metadata: Vec<(String, String)>) -> HostBody {
        let filling = match self.start_filling(key, size, sha256, metadata).await {
            Ok(filling) => filling,
            Err(e) => {
                eprintln!("edgeproxy: an object passed on was not stored: {e:?}");
                return content;
            }
        };
        let length = content.known_length();
        let store = self.clone();
        let chunks = futures_util::stream::try_unfold((content, Some(filling)), move |(mut content, mut filling)| {
            let store = store.clone();
            async move {
            match content.read(CHUNK).await {
                Ok(Some(chunk)) => {
                    if let Some(f) = filling.as_mut()
                        && let Err(e) = f.write(chunk.clone()).await
                    {
                        eprintln!("edgeproxy: an object passed on was not stored: {e:?}");
                        filling = None;
                    }
                    // Placed with its last byte: a body of known length is
                    // not polled again once that byte went out.
                    if filling.as_ref().is_some_and(|f| f.received == f.size)
                        && let Some(placed) = OptionFuture::from(filling.take().map(Filling::finish)).await
                    {
                        store.placed(placed).ok();
                    }
                    Ok(Some((http_body::Frame::data(chunk), (content, filling))))
                }
                Ok(None) => {
                    if let Some(placed) = OptionFuture::from(filling.map(Filling::finish)).await {
                        store.placed(placed).ok();
                    }
                    Ok(None)
                }
                Err(ReadError::Timeout) => Err(BoxError::from(Stalled(std::time::Duration::ZERO))),
                Err(ReadError::Broken(why)) => Err(BoxError::from(why)),
            }
            }
        });
        let stream = http_body_util::StreamBody::new(Box::pin(chunks));
        match length {
            Some(length) => HostBody::from_stream(KnownLength::new(stream, length)),
            None => HostBody::from_stream(stream),
        }
    }

    /// An object being written: in a directory, under a name no other put
    /// uses in the store's own directory (so that the rename into place is
    /// atomic); on S3, as a multipart upload.
    async fn start_filling(&self, key: &str, size: u64, sha256: Option<&str>, metadata: Vec<(String, String)>) -> Result<Filling, BlobError> {
        let path = self.path(key)?;
        if size > MAX_OBJECT_BYTES {
            return Err(BlobError::TooLarge(MAX_OBJECT_BYTES));
        }
        let header = header(&Header { object: Object { size, metadata }, key: key.to_owned(), stored_ms: now_ms(std::time::SystemTime::now()) });
        let (sink, file) = match &self.s3 {
            Some(s3) => (Sink::S3(s3.start(s3.object_name(&file_name(key)), &header).await?), None),
            None => {
                let partial = self.dir.join("partial").join(format!("{}-{}", file_name(key), random_suffix()));
                let mut file = tokio::fs::File::create(&partial).await.map_err(unavailable)?;
                let f = PartialFile { partial, path, placed: false };
                file.write_all(&header).await.map_err(unavailable)?;
                (Sink::File(f), Some(file.into_std().await))
            }
        };
        Ok(Filling { sink, size, sha256: sha256.map(str::to_ascii_lowercase), writer: Writer::start(file), received: 0 })
    }

    /// Counts an object placed, and makes room under the cap; a failed
    /// one is logged (the guest that passed it on is gone).
    fn placed(self: &Arc<Self>, placed: Result<Placed, BlobError>) -> Result<(), BlobError> {
        let placed = placed.inspect_err(|e| eprintln!("edgeproxy: an object passed on was not stored: {e:?}"))?;
        self.metrics.stored_bytes.inc_by(placed.size);
        let held = self.metrics.bytes.inc_by(as_i64(placed.bytes)) + as_i64(placed.bytes);
        self.metrics.bytes.dec_by(as_i64(placed.replaced));
        if let Some(cap) = self.cap
            && held - as_i64(placed.replaced) > as_i64(cap)
        {
            let store = self.clone();
            tokio::task::spawn_blocking(move || store.evict(cap));
        }
        Ok(())
    }

    /// Removes objects, least recently used first, down to 90% of `cap`.
    /// One eviction at a time; one that finds another under way waits for
    /// it and then looks again, since the object that called it may have
    /// been placed after the running one listed the directory.
    fn evict(&self, cap: u64) {
        let Ok(_one_at_a_time) = self.evicting.lock() else { return };
        let mut files = objects(&self.dir);
        let mut held: u64 = files.iter().map(|f| f.bytes).sum();
        files.sort_by_key(|f| f.used);
        let (mut evicted, mut evicted_bytes) = (0, 0);
        for file in files {
            if held <= cap / 10 * 9 {
                break;
            }
            if std::fs::remove_file(&file.path).is_ok() {
                held -= file.bytes;
                evicted += 1;
                evicted_bytes += file.bytes;
            }
        }
        // Less what was removed, not `set(held)`: an object placed while this
        // listed the directory is in `held` and is also added by its own
        // `placed`, which would count it twice.
        self.metrics.bytes.dec_by(as_i64(evicted_bytes));
        self.metrics.evictions.inc_by(evicted);
        self.metrics.evicted_bytes.inc_by(evicted_bytes);
    }

    /// `range`: the first byte and the number of bytes, clamped to the end.
    pub async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<(Object, HostBody)>, BlobError> {
        if let Some(s3) = &self.s3 {
            let got = s3.get(&s3.object_name(&self.file_name(key)?), range).await?;
            if let Some((_, body)) = &got {
                self.metrics.read_bytes.inc_by(body.known_length().unwrap_or(0));
            }
            return Ok(got);
        }
        let Some((object, file, data_start)) = self.open_object(key).await? else { return Ok(None) };
        let (first, count) = match range {
            Some((first, count)) => (first.min(object.size), count.min(object.size - first.min(object.size))),
            None => (0, object.size),
        };
        self.metrics.read_bytes.inc_by(count);
        Ok(Some((object, file_body(file.into_std().await, data_start + first, count))))
    }

    pub async fn head(&self, key: &str) -> Result<Option<Object>, BlobError> {
        if let Some(s3) = &self.s3 {
            return Ok(s3.head(&s3.object_name(&self.file_name(key)?)).await?.map(|(object, _)| object));
        }
        Ok(self.open_object(key).await?.map(|(object, ..)| object))
    }

    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        if let Some(s3) = &self.s3 {
            return s3.delete(&s3.object_name(&self.file_name(key)?)).await;
        }
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(unavailable(e)),
            _ => Ok(()),
        }
    }

    /// A page of the objects whose keys start with `prefix`. In a
    /// directory, by file name: the cursor is the last name on the page.
    pub async fn list(&self, prefix: &str, cursor: Option<&str>, limit: u32) -> Result<Listing, BlobError> {
        let limit = limit.clamp(1, 1000) as usize;
        if let Some(s3) = &self.s3 {
            return s3.list(prefix, cursor, limit).await;
        }
        let (dir, prefix, cursor) = (self.dir.clone(), prefix.to_owned(), cursor.map(str::to_owned));
        tokio::task::spawn_blocking(move || {
            let mut files = objects(&dir);
            files.retain(|f| cursor.as_deref().is_none_or(|after| f.name() > after));
            files.sort_by(|a, b| a.name().cmp(b.name()));
            let cursor = (files.len() > limit).then(|| files[limit - 1].name().to_owned());
            files.truncate(limit);
            // A file gone since the scan was deleted: not listed.
            let objects = files
                .iter()
                .filter_map(|f| {
                    let header = read_header(&f.path).ok()?;
                    header.key.starts_with(&prefix).then(|| Listed { key: header.key, size: header.object.size, used_ms: now_ms(f.used) })
                })
                .collect();
            Ok(Listing { objects, cursor })
        })
        .await
        .map_err(|e| BlobError::Unavailable(e.to_string()))?
    }

    /// The object's description, and its file positioned at its first byte's offset.
    async fn open_object(&self, key: &str) -> Result<Option<(Object, tokio::fs::File, u64)>, BlobError> {
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let length = file.read_u32().await.map_err(unavailable)?;
        let mut json = vec![0; length as usize];
        file.read_exact(&mut json).await.map_err(unavailable)?;
        let object = parse_header(&json)?.object;
        mark_used(&file, path).await;
        Ok(Some((object, file, 4 + u64::from(length))))
    }

    /// The name of `key`'s object: the SHA-256 of the key, checked.
    fn file_name(&self, key: &str) -> Result<String, BlobError> {
        check_key(key)?;
        Ok(file_name(key))
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        let name = file_name(key);
        Ok(self.dir.join(&name[..2]).join(name))
    }
}

/// An object on its way into the store, checked as it comes.
struct Filling {
    sink: Sink,
    size: u64,
    sha256: Option<String>,
    writer: Writer,
    received: u64,
}

/// Hashing, and writing to a file, off the serving thread: chunks are
/// gathered into batches of [`WRITER_BATCH`] bytes, and each batch is
/// hashed and written on the blocking pool while the next one gathers. A
/// body passed on waits only when a batch is full before the one before it
/// is done (then the disk paces it, and memory stays bounded), and no
/// thread is held between batches.
struct Writer {
    batch: Vec<Bytes>,
    batched: usize,
    /// The hash so far and the file, or the job that has them while it
    /// takes in the batch before.
    written: Option<Written>,
    writing: Option<tokio::task::JoinHandle<std::io::Result<Written>>>,
}

struct Written {
    hash: Sha256,
    file: Option<std::fs::File>,
}

const WRITER_BATCH: usize = 1 << 20;

impl Writer {
    fn start(file: Option<std::fs::File>) -> Writer {
        Writer { batch: Vec::new(), batched: 0, written: Some(Written { hash: Sha256::new(), file }), writing: None }
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.batched += chunk.len();
        self.batch.push(chunk);
        if self.batched >= WRITER_BATCH {
            self.write_batch().await?;
        }
        Ok(())
    }

    /// Hands the batch to a job, once the one before it is done.
    async fn write_batch(&mut self) -> Result<(), BlobError> {
        let mut written = self.written().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batched = 0;
        self.writing = Some(tokio::task::spawn_blocking(move || {
            for chunk in batch {
                written.hash.update(&chunk);
                if let Some(file) = written.file.as_mut() {
                    std::io::Write::write_all(file, &chunk)?;
                }
            }
            Ok(written)
        }));
        Ok(())
    }

    async fn written(&mut self) -> Result<Written, BlobError> {
        match self.writing.take() {
            Some(job) => job.await.map_err(|e| BlobError::Unavailable(e.to_string()))?.map_err(unavailable),
            None => self.written.take().ok_or_else(|| BlobError::Unavailable("a stored object's writer failed before".into())),
        }
    }

    /// The SHA-256 of every chunk, and the file they were written to.
    async fn finish(mut self) -> Result<(String, Option<std::fs::File>), BlobError> {
        if !self.batch.is_empty() {
            self.write_batch().await?;
        }
        let written = self.written().await?;
        Ok((hex(&written.hash.finalize()), written.file))
    }
}

/// Where a filling object's bytes go until it is placed.
enum Sink {
    File(PartialFile),
    S3(S3Filling),
}

/// A partial file, removed unless it was renamed into place.
struct PartialFile {
    partial: PathBuf,
    path: PathBuf,
    placed: bool,
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

impl Filling {
    async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        self.received += chunk.len() as u64;
        if self.received > self.size {
            return Err(BlobError::Mismatch(format!("the body is longer than {} bytes", self.size)));
        }
        if let Sink::S3(upload) = &mut self.sink {
            upload.write(&chunk).await?;
        }
        self.writer.write(chunk).await
    }

    fn broken(&self, e: &ReadError) -> BlobError {
        match e {
            ReadError::Broken(why) => BlobError::Mismatch(format!("the body broke off after {} bytes: {why}", self.received)),
            ReadError::Timeout => BlobError::Mismatch(format!("the body stalled after {} bytes", self.received)),
        }
    }

    /// Places the object if it is the one it was said to be.
    async fn finish(self) -> Result<Placed, BlobError> {
        if self.received != self.size {
            return Err(BlobError::Mismatch(format!("the body has {} bytes, not {}", self.received, self.size)));
        }
        let (actual, file) = self.writer.finish().await?;
        if let Some(expected) = self.sha256.as_deref().filter(|expected| *expected != actual) {
            return Err(BlobError::Mismatch(format!("the body's sha256 is {actual}, not {expected}")));
        }
        match self.sink {
            Sink::S3(upload) => {
                upload.complete().await?;
                // What it replaced, if anything, is S3's to know.
                Ok(Placed { size: self.size, bytes: 0, replaced: 0 })
            }
            Sink::File(mut f) => {
                let bytes = file.expect("a file sink's writer has its file").metadata().map_err(unavailable)?.len();
                let replaced = tokio::fs::metadata(&f.path).await.map(|m| m.len()).unwrap_or(0);
                tokio::fs::create_dir_all(f.path.parent().expect("an object's path has a directory")).await.map_err(unavailable)?;
                tokio::fs::rename(&f.partial, &f.path).await.map_err(unavailable)?;
                f.placed = true;
                Ok(Placed { size: self.size, bytes, replaced })
            }
        }
    }
}

/// An object just placed: its size, its file's bytes, and those of the
/// file it replaced (0 if none).
struct Placed {
    size: u64,
    bytes: u64,
    replaced: u64,
}

/// An object's file as eviction and listings see it.
struct ObjectFile {
    path: PathBuf,
    bytes: u64,
    used: std::time::SystemTime,
}

impl ObjectFile {
    /// The SHA-256 of its key, in hex.
    fn name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    }
}

/// Every object's file in the store's directory (not partial ones).
fn objects(dir: &Path) -> Vec<ObjectFile> {
    let subdirs = std::fs::read_dir(dir).into_iter().flatten().flatten().filter(|e| e.file_name() != "partial");
    let files = subdirs.flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten());
    files
        .filter_map(|f| {
            let meta = f.metadata().ok().filter(std::fs::Metadata::is_file)?;
            Some(ObjectFile { path: f.path(), bytes: meta.len(), used: meta.modified().ok()? })
        })
        .collect()
}

/// The object's header, from its JSON.
pub(crate) fn parse_header(json: &[u8]) -> Result<Header, BlobError> {
    serde_json::from_slice(json).map_err(|e| BlobError::Unavailable(format!("a stored object's header is damaged: {e}")))
}

/// The header of the object in the file at `path`.
fn read_header(path: &Path) -> Result<Header, BlobError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(unavailable)?;
    let mut length = [0; 4];
    file.read_exact(&mut length).map_err(unavailable)?;
    let mut json = vec![0; u32::from_be_bytes(length) as usize];
    file.read_exact(&mut json).map_err(unavailable)?;
    parse_header(&json)
}

fn now_ms(time: std::time::SystemTime) -> u64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Marks an object used now, for eviction: its file's modification time,
/// set at most once a minute so that reads rarely write.
async fn mark_used(file: &tokio::fs::File, path: PathBuf) {
    let now = std::time::SystemTime::now();
    let stale = file.metadata().await.ok().and_then(|m| m.modified().ok()).is_none_or(|t| now.duration_since(t).unwrap_or_default().as_secs() >= 60);
    if stale {
        tokio::task::spawn_blocking(move || std::fs::File::open(path).and_then(|f| f.set_modified(now)));
    }
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Keys of 1 to [`MAX_KEY_BYTES`] bytes of `[a-zA-Z0-9._/-]` (the WIT's rule).
fn check_key(key: &str) -> Result<(), BlobError> {
    let valid = !key.is_empty() && key.len() <= MAX_KEY_BYTES as usize && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if valid { Ok(()) } else { Err(BlobError::InvalidKey(format!("a blob key is 1 to {MAX_KEY_BYTES} bytes of a-z, A-Z, 0-9 and ._/-"))) }
}

fn file_name(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// The object's header, as it precedes its bytes: a big-endian length, then JSON.
pub(crate) fn header(header: &Header) -> Vec<u8> {
    let json = serde_json::to_vec(header).expect("an object's header serialises");
    let mut header = (json.len() as u32).to_be_bytes().to_vec();
    header.extend_from_slice(&json);
    header
}

/// `count` bytes of `file` from `offset`, as a streamed body (kept objects,
/// and `--assets`' files): read
/// [`FILE_CHUNK`] at a time on the blocking pool, the next read under way
/// while a chunk is sent.
pub fn file_body(file: std::fs::File, offset: u64, count: u64) -> HostBody {
    let file = Arc::new(file);
    let first = (count > 0).then(|| read_chunk(&file, offset, count));
    let chunks = futures_util::stream::try_unfold((file, first, offset, count), |(file, pending, offset, left)| async move {
        let Some(pending) = pending else { return Ok(None) };
        let chunk = pending.await.map_err(std::io::Error::other)?.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => std::io::Error::new(e.kind(), "a stored object is shorter than its header says"),
            _ => e,
        })?;
        let (offset, left) = (offset + chunk.len() as u64, left - chunk.len() as u64);
        let next = (left > 0).then(|| read_chunk(&file, offset, left));
        Ok::<_, std::io::Error>(Some((http_body::Frame::data(chunk), (file, next, offset, left))))
    });
    HostBody::from_stream(KnownLength::new(http_body_util::StreamBody::new(Box::pin(chunks)), count))
}

/// The next chunk of a stored object's file, read on the blocking pool.
fn read_chunk(file: &Arc<std::fs::File>, offset: u64, left: u64) -> tokio::task::JoinHandle<std::io::Result<Bytes>> {
    let file = file.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        let want = FILE_CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX));
        // read_to_end fills spare capacity without zeroing it first.
        let mut chunk = Vec::with_capacity(want);
        let mut file = &*file;
        file.seek(std::io::SeekFrom::Start(offset))?;
        file.take(want as u64).read_to_end(&mut chunk)?;
        if chunk.len() < want {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        Ok(Bytes::from(chunk))
    })
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("the system has randomness");
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unavailable(e: std::io::Error) -> BlobError {
    BlobError::Unavailable(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(mut body: HostBody) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = body.read(1 << 20).await.unwrap() {
            out.extend_from_slice(&chunk);
        }
        out
    }

    fn store_capped(cap: Option<u64>) -> (Arc<Store>, PathBuf, BlobMetrics) {
        let dir = std::env::temp_dir().join(format!("edgeproxy-blob-test-{}", random_suffix()));
        let metrics = BlobMetrics::default();
        (Arc::new(Store::open(&dir, cap, metrics.clone()).unwrap()), dir, metrics)
    }

    fn store() -> (Arc<Store>, PathBuf) {
        let (store, dir, _) = store_capped(None);
        (store, dir)
    }

    /// Makes `key`'s object look last used `seconds` ago.
    fn last_used(store: &Store, key: &str, seconds: u64) {
        let file = std::fs::File::options().append(true).open(store.path(key).unwrap()).unwrap();
        file.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(seconds)).unwrap();
    }

    #[tokio::test]
    async fn over_its_cap_the_store_removes_what_was_used_least_recently() {
        // Files of 1000 bytes and a header of about 70: three fit, four do not.
        let (store, dir, metrics) = store_capped(Some(3500));
        let object = || HostBody::from_bytes(vec![7u8; 1000]);
        for (key, age) in [("a", 300), ("b", 200), ("c", 100)] {
            store.put(key, object(), 1000, None, Vec::new()).await.unwrap();
            last_used(&store, key, age);
        }
        assert!(store.get("a", None).await.unwrap().is_some(), "a read marks `a` used now");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        store.put("d", object(), 1000, None, Vec::new()).await.unwrap();
        for _ in 0..50 {
            if metrics.evictions.get() > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let held: Vec<bool> = futures_util::future::join_all(["a", "b", "c", "d"].map(|k| store.head(k))).await.into_iter().map(|h| h.unwrap().is_some()).collect();
        assert_eq!(held, [true, false, false, true], "b then c went (under 90% of the cap), a was read, d is new");
        assert_eq!((metrics.evictions.get(), metrics.bytes.get() <= 3150), (2, true));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn a_listing_pages_through_the_objects_under_a_prefix_once_each() {
        let (store, dir) = store();
        for (key, size) in [("a/1", 1), ("a/2", 2), ("a/3", 3), ("b/1", 4)] {
            store.put(key, HostBody::from_bytes(vec![0; size]), size as u64, None, Vec::new()).await.unwrap();
        }
        last_used(&store, "a/2", 3600);
        let (mut listed, mut cursor, mut pages) = (Vec::new(), None, 0);
        loop {
            let page = store.list("a/", cursor.as_deref(), 1).await.unwrap();
            listed.extend(page.objects);
            pages += 1;
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        listed.sort_by(|a, b| a.key.cmp(&b.key));
        let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
        assert_eq!((keys, pages), (vec![("a/1", 1), ("a/2", 2), ("a/3", 3)], 4), "one file a page: four pages, b/1 not listed");
        assert!(listed[1].used_ms + 3_000_000 < listed[0].used_ms, "a/2 was last used an hour ago");
        store.delete("a/1").await.unwrap();
        let all = store.list("", None, 100).await.unwrap();
        assert_eq!((all.objects.len(), all.cursor), (3, None));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_object_is_stored_whole_or_not_at_all() {
        let (store, dir) = store();
        let bytes: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let sha = hex(&Sha256::digest(&bytes));
        let meta = vec![("etag".to_owned(), "\"abc\"".to_owned())];
        store.put("lfs/one", HostBody::from_bytes(bytes.clone()), bytes.len() as u64, Some(&sha), meta.clone()).await.unwrap();
        let (object, body) = store.get("lfs/one", None).await.unwrap().unwrap();
        assert_eq!((object.size, &object.metadata), (bytes.len() as u64, &meta));
        assert_eq!(read_all(body).await, bytes);
        let (_, part) = store.get("lfs/one", Some((699_990, 100))).await.unwrap().unwrap();
        assert_eq!(read_all(part).await, bytes[699_990..], "a range is clamped to the end");
        assert_eq!(store.head("lfs/one").await.unwrap().unwrap().size, 700_000);

        let short = store.put("lfs/two", HostBody::from_bytes(bytes[..10].to_vec()), 11, None, Vec::new()).await;
        let corrupt = store.put("lfs/two", HostBody::from_bytes(bytes.clone()), bytes.len() as u64, Some(&"0".repeat(64)), Vec::new()).await;
        assert!(matches!((short, corrupt), (Err(BlobError::Mismatch(_)), Err(BlobError::Mismatch(_)))));
        assert_eq!(store.head("lfs/two").await.unwrap(), None, "nothing stored");
        assert_eq!(std::fs::read_dir(dir.join("blobs/partial")).unwrap().count(), 0, "no partial file left");

        store.delete("lfs/one").await.unwrap();
        store.delete("lfs/one").await.unwrap();
        assert!(store.get("lfs/one", None).await.unwrap().is_none());
        assert!(matches!((store.head("").await, store.head("a key").await), (Err(BlobError::InvalidKey(_)), Err(BlobError::InvalidKey(_)))));
        assert_eq!(store.head("../../etc/passwd").await, Ok(None), "a key names no path: its file is named by its hash");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
