//! The blob store of `wit/edgeproxy.wit` (`blob`): objects in a directory,
//! `<data-dir>/blobs`, each one file named after the SHA-256 of its key (so
//! no key can name a path), holding its metadata and then its bytes. A put
//! streams into a temporary file beside it and renames it into place only
//! once the whole body arrived with the size and hash it was said to have,
//! so a reader sees a whole object or none.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use futures_util::future::OptionFuture;

use crate::body::{BoxError, HostBody, KnownLength, ReadError, Stalled};

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: u32 = 512;

/// The largest object: what a disk holds; a model file can be 50 GB.
pub const MAX_OBJECT_BYTES: u64 = 1 << 40;

/// Bytes read from a body, or from a file, at a time.
const CHUNK: usize = 256 << 10;

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

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `data_dir/blobs`, made if missing.
    pub fn open(data_dir: &Path) -> std::io::Result<Store> {
        let dir = data_dir.join("blobs");
        std::fs::create_dir_all(dir.join("partial"))?;
        Ok(Store { dir })
    }

    pub async fn put(&self, key: &str, mut content: HostBody, size: u64, sha256: Option<&str>, metadata: Vec<(String, String)>) -> Result<(), BlobError> {
        let mut filling = self.start_filling(key, size, sha256, metadata).await?;
        loop {
            match content.read(CHUNK).await {
                Ok(Some(chunk)) => filling.write(&chunk).await?,
                Ok(None) => return filling.finish().await,
                Err(e) => return Err(filling.broken(&e)),
            }
        }
    }

    /// `content` passed on as it is read, and stored as by [`Store::put`]
    /// once it was read to its end; a body dropped before it stores nothing.
    /// A store that cannot take it passes the body on all the same.
    pub async fn put_through(&self, key: &str, content: HostBody, size: u64, sha256: Option<&str>, metadata: Vec<(String, String)>) -> HostBody {
        let filling = match self.start_filling(key, size, sha256, metadata).await {
            Ok(filling) => filling,
            Err(e) => {
                eprintln!("edgeproxy: an object passed on was not stored: {e:?}");
                return content;
            }
        };
        let length = content.known_length();
        let chunks = futures_util::stream::try_unfold((content, Some(filling)), |(mut content, mut filling)| async move {
            match content.read(CHUNK).await {
                Ok(Some(chunk)) => {
                    if let Some(f) = filling.as_mut()
                        && let Err(e) = f.write(&chunk).await
                    {
                        eprintln!("edgeproxy: an object passed on was not stored: {e:?}");
                        filling = None;
                    }
                    // Placed with its last byte: a body of known length is
                    // not polled again once that byte went out.
                    if filling.as_ref().is_some_and(|f| f.received == f.size)
                        && let Some(Err(e)) = OptionFuture::from(filling.take().map(Filling::finish)).await
                    {
                        eprintln!("edgeproxy: an object passed on was not stored: {e:?}");
                    }
                    Ok(Some((http_body::Frame::data(chunk), (content, filling))))
                }
                Ok(None) => {
                    if let Some(Err(e)) = OptionFuture::from(filling.map(Filling::finish)).await {
                        eprintln!("edgeproxy: an object passed on was not stored: {e:?}");
                    }
                    Ok(None)
                }
                Err(ReadError::Timeout) => Err(BoxError::from(Stalled(std::time::Duration::ZERO))),
                Err(ReadError::Broken(why)) => Err(BoxError::from(why)),
            }
        });
        let stream = http_body_util::StreamBody::new(Box::pin(chunks));
        match length {
            Some(length) => HostBody::from_stream(KnownLength::new(stream, length)),
            None => HostBody::from_stream(stream),
        }
    }

    /// An object being written, under a name no other put uses in the
    /// store's own directory (so that the rename into place is atomic).
    async fn start_filling(&self, key: &str, size: u64, sha256: Option<&str>, metadata: Vec<(String, String)>) -> Result<Filling, BlobError> {
        let path = self.path(key)?;
        if size > MAX_OBJECT_BYTES {
            return Err(BlobError::TooLarge(MAX_OBJECT_BYTES));
        }
        let partial = self.dir.join("partial").join(format!("{}-{}", file_name(key), random_suffix()));
        let file = tokio::fs::File::create(&partial).await.map_err(unavailable)?;
        let mut filling = Filling { file, partial, path, size, sha256: sha256.map(str::to_ascii_lowercase), hash: Sha256::new(), received: 0, placed: false };
        filling.file.write_all(&header(&Object { size, metadata })).await.map_err(unavailable)?;
        Ok(filling)
    }

    /// `range`: the first byte and the number of bytes, clamped to the end.
    pub async fn get(&self, key: &str, range: Option<(u64, u64)>) -> Result<Option<(Object, HostBody)>, BlobError> {
        let Some((object, mut file, data_start)) = self.open_object(key).await? else { return Ok(None) };
        let (first, count) = match range {
            Some((first, count)) => (first.min(object.size), count.min(object.size - first.min(object.size))),
            None => (0, object.size),
        };
        file.seek(SeekFrom::Start(data_start + first)).await.map_err(unavailable)?;
        Ok(Some((object, file_body(file, count))))
    }

    pub async fn head(&self, key: &str) -> Result<Option<Object>, BlobError> {
        Ok(self.open_object(key).await?.map(|(object, ..)| object))
    }

    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(unavailable(e)),
            _ => Ok(()),
        }
    }

    /// The object's description, and its file positioned at its first byte's offset.
    async fn open_object(&self, key: &str) -> Result<Option<(Object, tokio::fs::File, u64)>, BlobError> {
        let mut file = match tokio::fs::File::open(self.path(key)?).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        let length = file.read_u32().await.map_err(unavailable)?;
        let mut json = vec![0; length as usize];
        file.read_exact(&mut json).await.map_err(unavailable)?;
        let object = serde_json::from_slice(&json).map_err(|e| BlobError::Unavailable(format!("a stored object's header is damaged: {e}")))?;
        Ok(Some((object, file, 4 + u64::from(length))))
    }

    fn path(&self, key: &str) -> Result<PathBuf, BlobError> {
        check_key(key)?;
        let name = file_name(key);
        Ok(self.dir.join(&name[..2]).join(name))
    }
}

/// An object on its way into the store: its partial file, removed unless
/// the object was placed.
struct Filling {
    file: tokio::fs::File,
    partial: PathBuf,
    path: PathBuf,
    size: u64,
    sha256: Option<String>,
    hash: Sha256,
    received: u64,
    placed: bool,
}

impl Filling {
    async fn write(&mut self, chunk: &[u8]) -> Result<(), BlobError> {
        self.received += chunk.len() as u64;
        if self.received > self.size {
            return Err(BlobError::Mismatch(format!("the body is longer than {} bytes", self.size)));
        }
        self.hash.update(chunk);
        self.file.write_all(chunk).await.map_err(unavailable)
    }

    fn broken(&self, e: &ReadError) -> BlobError {
        match e {
            ReadError::Broken(why) => BlobError::Mismatch(format!("the body broke off after {} bytes: {why}", self.received)),
            ReadError::Timeout => BlobError::Mismatch(format!("the body stalled after {} bytes", self.received)),
        }
    }

    /// Places the object if it is the one it was said to be.
    async fn finish(mut self) -> Result<(), BlobError> {
        if self.received != self.size {
            return Err(BlobError::Mismatch(format!("the body has {} bytes, not {}", self.received, self.size)));
        }
        let actual = hex(&std::mem::take(&mut self.hash).finalize());
        if let Some(expected) = self.sha256.as_deref().filter(|expected| *expected != actual) {
            return Err(BlobError::Mismatch(format!("the body's sha256 is {actual}, not {expected}")));
        }
        self.file.flush().await.map_err(unavailable)?;
        tokio::fs::create_dir_all(self.path.parent().expect("an object's path has a directory")).await.map_err(unavailable)?;
        tokio::fs::rename(&self.partial, &self.path).await.map_err(unavailable)?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Filling {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Keys of 1 to [`MAX_KEY_BYTES`] bytes of `[a-zA-Z0-9._/-]` (the WIT's rule).
fn check_key(key: &str) -> Result<(), BlobError> {
    let valid = !key.is_empty() && key.len() <= MAX_KEY_BYTES as usize && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if valid { Ok(()) } else { Err(BlobError::InvalidKey(format!("a blob key is 1 to {MAX_KEY_BYTES} bytes of a-z, A-Z, 0-9 and ._/-"))) }
}

fn file_name(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

/// The object's description, as it precedes its bytes: a big-endian length, then JSON.
fn header(object: &Object) -> Vec<u8> {
    let json = serde_json::to_vec(object).expect("an object's description serialises");
    let mut header = (json.len() as u32).to_be_bytes().to_vec();
    header.extend_from_slice(&json);
    header
}

/// `count` bytes of `file` from where it stands, as a streamed body.
fn file_body(file: tokio::fs::File, count: u64) -> HostBody {
    let chunks = futures_util::stream::try_unfold((file, count), |(mut file, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut chunk = vec![0; CHUNK.min(left as usize)];
        let n = file.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "a stored object is shorter than its header says"));
        }
        chunk.truncate(n);
        Ok(Some((http_body::Frame::data(Bytes::from(chunk)), (file, left - n as u64))))
    });
    HostBody::from_stream(KnownLength::new(http_body_util::StreamBody::new(Box::pin(chunks)), count))
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

    fn store() -> (Store, PathBuf) {
        let dir = std::env::temp_dir().join(format!("edgeproxy-blob-test-{}", random_suffix()));
        (Store::open(&dir).unwrap(), dir)
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
