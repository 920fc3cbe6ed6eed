//! `blob` over Spin's `default` key-value store, the one store Spin 4.0.x
//! gives a component: an object is its parts (each under the store's 1 MB
//! per value) and a manifest written last, so a reader sees a whole object
//! or none. Parts carry the put's random generation in their keys, so a put
//! over an object never mixes with the parts of the one it replaces, and
//! are deleted once the new manifest is in place. Keys are hashed (Spin's
//! keys are at most 256 bytes; ours up to 512), so a manifest names its
//! key for listings, which read every manifest.

use sha2::{Digest, Sha256};

use crate::Services;
use crate::bindings::exports::edgeproxy::platform::blob::{self, BlobError, BlobLimits, Listed, Listing, Object};
use crate::bindings::exports::edgeproxy::platform::body::BodyError;
use crate::bodies::{HostBody, Parts, Source};
use crate::kv::with_bucket;

const MAX_KEY_BYTES: u32 = 512;
/// Bytes per part: under Spin's 1 MB per value.
pub const PART_BYTES: usize = 960_000;
/// The largest object: 10,000 parts.
const MAX_OBJECT_BYTES: u64 = 10_000 * PART_BYTES as u64;

/// What a manifest says of its object.
struct Manifest {
    key: String,
    size: u64,
    generation: u64,
    stored_ms: u64,
    metadata: Vec<(String, String)>,
}

impl Manifest {
    fn parts(&self) -> u64 {
        self.size.div_ceil(PART_BYTES as u64)
    }

    /// Size, generation and when it was stored little-endian, then the
    /// key and each metadata name and value, length-prefixed.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.size.to_le_bytes());
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&self.stored_ms.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        out.extend_from_slice(self.key.as_bytes());
        for (name, value) in &self.metadata {
            for text in [name, value] {
                out.extend_from_slice(&(text.len() as u32).to_le_bytes());
                out.extend_from_slice(text.as_bytes());
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Manifest> {
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        let (size, generation, stored_ms) = (u64_at(0)?, u64_at(8)?, u64_at(16)?);
        let (key, mut rest) = take_text(bytes.get(24..)?)?;
        let mut metadata = Vec::new();
        while !rest.is_empty() {
            let (name, after) = take_text(rest)?;
            let (value, after) = take_text(after)?;
            metadata.push((name, value));
            rest = after;
        }
        Some(Manifest { key, size, generation, stored_ms, metadata })
    }
}

/// A length-prefixed string, and what follows it.
fn take_text(bytes: &[u8]) -> Option<(String, &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let text = String::from_utf8(bytes.get(4..4 + len)?.to_vec()).ok()?;
    Some((text, &bytes[4 + len..]))
}

const MANIFEST_PREFIX: &str = "blob:";

/// The store key of `key`'s manifest; its parts are `{this}:{generation}:{n}`.
fn manifest_key(key: &str) -> Result<String, BlobError> {
    let valid = !key.is_empty() && key.len() <= MAX_KEY_BYTES as usize && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if !valid {
        return Err(BlobError::InvalidKey(format!("a blob key is 1 to {MAX_KEY_BYTES} bytes of a-z, A-Z, 0-9 and ._/-")));
    }
    let hash: String = Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{MANIFEST_PREFIX}{hash}"))
}

pub fn part_key(manifest_key: &str, generation: u64, n: u64) -> String {
    format!("{manifest_key}:{generation:x}:{n}")
}

fn read_manifest(key: &str) -> Result<Option<Manifest>, BlobError> {
    let stored = with_bucket(|b| b.get(key)).map_err(BlobError::Unavailable)?;
    Ok(stored.and_then(|bytes| Manifest::decode(&bytes)))
}

fn delete_parts(key: &str, manifest: &Manifest) {
    for n in 0..manifest.parts() {
        let _ = with_bucket(|b| b.delete(&part_key(key, manifest.generation, n)));
    }
}

/// An object on its way into the store: the parts written so far are
/// deleted unless its manifest was placed.
pub struct Filling {
    key: String,
    new: Manifest,
    sha256: Option<String>,
    hash: Sha256,
    received: u64,
    written: u64,
    part: Vec<u8>,
    placed: bool,
}

impl Filling {
    pub fn start(name: &str, size: u64, sha256: Option<String>, metadata: Vec<(String, String)>) -> Result<Filling, BlobError> {
        let key = manifest_key(name)?;
        if size > MAX_OBJECT_BYTES {
            return Err(BlobError::TooLarge(MAX_OBJECT_BYTES));
        }
        let new = Manifest { key: name.to_owned(), size, generation: wasi::random::random::get_random_u64(), stored_ms: crate::now_ms(), metadata };
        Ok(Filling { key, new, sha256, hash: Sha256::new(), received: 0, written: 0, part: Vec::with_capacity(PART_BYTES), placed: false })
    }

    pub fn write(&mut self, mut chunk: &[u8]) -> Result<(), BlobError> {
        self.received += chunk.len() as u64;
        if self.received > self.new.size {
            return Err(BlobError::Mismatch(format!("the body is longer than {} bytes", self.new.size)));
        }
        self.hash.update(chunk);
        while !chunk.is_empty() {
            let n = chunk.len().min(PART_BYTES - self.part.len());
            self.part.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.part.len() == PART_BYTES {
                self.write_part()?;
            }
        }
        Ok(())
    }

    /// All of the object's bytes have arrived.
    pub fn is_whole(&self) -> bool {
        self.received == self.new.size
    }

    fn write_part(&mut self) -> Result<(), BlobError> {
        with_bucket(|b| b.set(&part_key(&self.key, self.new.generation, self.written), &self.part)).map_err(BlobError::Unavailable)?;
        self.written += 1;
        self.part.clear();
        Ok(())
    }

    pub fn broken(&self, e: &BodyError) -> BlobError {
        match e {
            BodyError::Broken(why) => BlobError::Mismatch(format!("the body broke off after {} bytes: {why}", self.received)),
            BodyError::Timeout => BlobError::Mismatch(format!("the body stalled after {} bytes", self.received)),
        }
    }

    /// Places the object if it is the one it was said to be, then deletes
    /// the parts of the one it replaced.
    pub fn finish(mut self) -> Result<(), BlobError> {
        if !self.part.is_empty() {
            self.write_part()?;
        }
        if self.received != self.new.size {
            return Err(BlobError::Mismatch(format!("the body has {} bytes, not {}", self.received, self.new.size)));
        }
        let actual: String = std::mem::take(&mut self.hash).finalize().iter().map(|b| format!("{b:02x}")).collect();
        if let Some(expected) = self.sha256.as_deref().filter(|expected| !expected.eq_ignore_ascii_case(&actual)) {
            return Err(BlobError::Mismatch(format!("the body's sha256 is {actual}, not {expected}")));
        }
        let old = read_manifest(&self.key).ok().flatten();
        with_bucket(|b| b.set(&self.key, &self.new.encode())).map_err(BlobError::Unavailable)?;
        self.placed = true;
        if let Some(old) = old {
            delete_parts(&self.key, &old);
        }
        Ok(())
    }
}

impl Drop for Filling {
    fn drop(&mut self) {
        if !self.placed {
            let written = Manifest { key: String::new(), size: self.written * PART_BYTES as u64, generation: self.new.generation, stored_ms: 0, metadata: Vec::new() };
            delete_parts(&self.key, &written);
        }
    }
}

impl blob::Guest for Services {
    fn limits() -> BlobLimits {
        BlobLimits { max_object_bytes: MAX_OBJECT_BYTES, max_key_bytes: MAX_KEY_BYTES }
    }

    fn put(key: String, content: blob::Body, size: u64, sha256: Option<String>, metadata: Vec<(String, String)>) -> Result<(), BlobError> {
        let mut filling = Filling::start(&key, size, sha256, metadata)?;
        let mut source = HostBody::into_source(content);
        loop {
            match source.read(PART_BYTES) {
                Ok(Some(chunk)) => filling.write(&chunk)?,
                Ok(None) => return filling.finish(),
                Err(e) => return Err(filling.broken(&e)),
            }
        }
    }

    fn put_through(key: String, content: blob::Body, size: u64, sha256: Option<String>, metadata: Vec<(String, String)>) -> blob::Body {
        let filling = Filling::start(&key, size, sha256, metadata).ok();
        HostBody::from_source(Source::Through(Box::new(HostBody::into_source(content)), filling.map(Box::new)))
    }

    fn get(key: String, range: Option<(u64, u64)>) -> Result<Option<(Object, blob::Body)>, BlobError> {
        let key = manifest_key(&key)?;
        let Some(manifest) = read_manifest(&key)? else { return Ok(None) };
        let (first, count) = match range {
            Some((first, count)) => (first.min(manifest.size), count.min(manifest.size - first.min(manifest.size))),
            None => (0, manifest.size),
        };
        let parts = Parts::new(key, manifest.generation, first, count);
        Ok(Some((Object { size: manifest.size, metadata: manifest.metadata }, HostBody::from_source(Source::Parts(parts)))))
    }

    fn head(key: String) -> Result<Option<Object>, BlobError> {
        Ok(read_manifest(&manifest_key(&key)?)?.map(|m| Object { size: m.size, metadata: m.metadata }))
    }

    fn delete(key: String) -> Result<(), BlobError> {
        let key = manifest_key(&key)?;
        if let Some(manifest) = read_manifest(&key)? {
            with_bucket(|b| b.delete(&key)).map_err(BlobError::Unavailable)?;
            delete_parts(&key, &manifest);
        }
        Ok(())
    }

    /// Spin's store lists every key at once: the manifests among them are
    /// paged by their store key (the cursor is the page's last), and each
    /// page's are read for their keys.
    fn list(prefix: String, cursor: Option<String>, limit: u32) -> Result<Listing, BlobError> {
        let mut keys = Vec::new();
        let mut next = None;
        loop {
            let page = with_bucket(|b| b.list_keys(next.as_deref())).map_err(BlobError::Unavailable)?;
            keys.extend(page.keys.into_iter().filter(|k| k.strip_prefix(MANIFEST_PREFIX).is_some_and(|hash| !hash.contains(':'))));
            next = page.cursor;
            if next.is_none() {
                break;
            }
        }
        keys.retain(|k| cursor.as_ref().is_none_or(|after| k > after));
        keys.sort();
        let limit = limit.clamp(1, 1000) as usize;
        let cursor = (keys.len() > limit).then(|| keys[limit - 1].clone());
        keys.truncate(limit);
        let mut objects = Vec::new();
        for key in keys {
            // One deleted since the keys were listed is not listed.
            if let Some(manifest) = read_manifest(&key)?.filter(|m| m.key.starts_with(&prefix)) {
                objects.push(Listed { key: manifest.key, size: manifest.size, used_ms: manifest.stored_ms });
            }
        }
        Ok(Listing { objects, cursor })
    }
}
