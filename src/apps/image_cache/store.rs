//! image-cache's blobs in key-value (the toolkit's [`blob_store`]): stored
//! originals and variants, each with what is known about the image.

use serde::{Deserialize, Serialize};

use crate::proxy::blob_store;
pub use crate::proxy::blob_store::{read, read_manifest, read_parts, sha256_hex, write};

/// What is known about a stored image besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// Whether the image has an alpha channel (from its header).
    #[serde(default)]
    pub alpha: bool,
    /// `builtin` or the Replicate model.
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_id: Option<String>,
    pub created_ms: u64,
}

pub type Manifest = blob_store::Manifest<Meta>;
pub type Blob = blob_store::Blob<Meta>;

/// `image-cache:<kind>:<sha-256 of name>`.
pub fn key(kind: &str, name: &str) -> String {
    blob_store::key("image-cache", kind, name)
}
