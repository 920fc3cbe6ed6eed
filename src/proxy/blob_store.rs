//! Blobs in key-value (image-cache's images, hub-gateway's web UI): a blob
//! is its parts (each within the host's value limit) and a manifest written
//! last, so a reader never assembles a partial blob; parts are named after
//! the content's hash, so a newer blob never mixes with an older one's
//! parts. A blob that does not check out (a part missing, the wrong size or
//! hash) reads as a miss.
//!
//! Keys are `<app>:<kind>:<sha-256 hex>`, well inside every host's key
//! limit (Spin's 256 bytes is the smallest).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::platform::{KvError, Platform};

/// The manifest: the app's metadata `M`, and how to find and check the parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest<M> {
    #[serde(flatten)]
    pub meta: M,
    pub size: u64,
    pub sha256: String,
    pub parts: u32,
}

pub struct Blob<M> {
    pub manifest: Manifest<M>,
    pub bytes: Vec<u8>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `<app>:<kind>:<sha-256 of name>`.
pub fn key(app: &str, kind: &str, name: &str) -> String {
    format!("{app}:{kind}:{}", sha256_hex(name.as_bytes()))
}

fn part_key(key: &str, sha256: &str, index: u32) -> String {
    format!("{key}:{}:{index}", &sha256[..16])
}

/// Parts no larger than this, even where the host allows more: a read then
/// never holds more than one large value at a time beyond the result.
const MAX_PART_BYTES: u64 = 8 << 20;

pub fn read_manifest<P: Platform, M: DeserializeOwned>(p: &P, key: &str) -> Option<Manifest<M>> {
    let bytes = p.kv_get(key).ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// The blob under `key`, checked; `None` if absent or not intact.
pub fn read<P: Platform, M: DeserializeOwned>(p: &P, key: &str) -> Option<Blob<M>> {
    read_parts(p, key, read_manifest(p, key)?)
}

/// The bytes `manifest` describes, checked; `None` if not intact.
pub fn read_parts<P: Platform, M>(p: &P, key: &str, manifest: Manifest<M>) -> Option<Blob<M>> {
    let mut bytes = Vec::with_capacity(usize::try_from(manifest.size).ok()?);
    for i in 0..manifest.parts {
        bytes.extend_from_slice(&p.kv_get(&part_key(key, &manifest.sha256, i)).ok()??);
    }
    (bytes.len() as u64 == manifest.size && sha256_hex(&bytes) == manifest.sha256).then_some(Blob { manifest, bytes })
}

/// Writes the parts, then the manifest.
pub fn write<P: Platform, M: Serialize>(p: &P, key: &str, meta: M, bytes: &[u8], ttl_seconds: Option<u32>) -> Result<Manifest<M>, KvError> {
    let limits = p.kv_limits();
    let part_size = limits.max_value_bytes.min(MAX_PART_BYTES).max(1) as usize;
    let sha256 = sha256_hex(bytes);
    let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[]] } else { bytes.chunks(part_size).collect() };
    for (i, chunk) in chunks.iter().enumerate() {
        p.kv_set(&part_key(key, &sha256, i as u32), chunk, ttl_seconds)?;
    }
    let manifest = Manifest { meta, size: bytes.len() as u64, sha256, parts: chunks.len() as u32 };
    let json = serde_json::to_vec(&manifest).expect("a manifest serialises");
    p.kv_set(key, &json, ttl_seconds)?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use crate::platform::fake::Fake;
    use super::*;

    #[derive(Default, Serialize, Deserialize)]
    struct Meta {
        content_type: String,
    }

    #[test]
    fn a_blob_larger_than_a_value_is_split_and_read_back_whole() {
        let p = Fake::new(1000);
        let bytes: Vec<u8> = (0..2500u32).map(|i| i as u8).collect();
        let m = write(&p, "image-cache:o:x", Meta::default(), &bytes, None).unwrap();
        assert_eq!(m.parts, 3);
        assert_eq!(read::<_, Meta>(&p, "image-cache:o:x").unwrap().bytes, bytes);
    }

    #[test]
    fn a_blob_with_a_missing_or_altered_part_is_a_miss() {
        let p = Fake::new(1000);
        let m = write(&p, "k", Meta::default(), &[7; 2500], None).unwrap();
        p.kv.borrow_mut().insert(part_key("k", &m.sha256, 1), vec![0; 1000]);
        assert!(read::<_, Meta>(&p, "k").is_none());
        p.kv.borrow_mut().remove(&part_key("k", &m.sha256, 1));
        assert!(read::<_, Meta>(&p, "k").is_none());
        p.kv.borrow_mut().insert("k".into(), b"not json".to_vec());
        assert!(read::<_, Meta>(&p, "k").is_none());
    }

    #[test]
    fn keys_fit_the_smallest_host_limit() {
        let k = key("image-cache", "o", &"x".repeat(5000));
        assert!(part_key(&k, &"0".repeat(64), 999).len() < 256);
    }
}
