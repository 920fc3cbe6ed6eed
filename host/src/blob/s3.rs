//! The blob store on S3-compatible object storage (`--blob-store s3://...`),
//! so that several hosts share one store. An object is one S3 object,
//! `<prefix>blobs/<SHA-256 of its key>`, laid out as a file of the
//! directory store is (its description, then its bytes). It is written by a
//! multipart upload that is completed only once the whole body arrived with
//! the size and hash it was said to have, and aborted otherwise: S3 shows a
//! multipart object only once it is completed, so a reader sees a whole
//! object or none. Requests are signed by rusty-s3 (SigV4 presigned URLs)
//! and sent by the host's own client (upstream.rs).

use std::time::Duration;

use bytes::Bytes;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use url::Url;

use super::{BlobError, Header, Listed, Listing, Object, parse_header};
use crate::body::HostBody;
use crate::upstream::{Upstream, UpstreamResponse};

/// Bytes per uploaded part: over S3's 5 MiB least (all parts but the last).
const PART_BYTES: usize = 8 << 20;
/// How long a signed URL is good for: one request, sent at once.
const SIGNED_FOR: Duration = Duration::from_secs(300);
/// Bytes read first from an object: its description, usually whole.
const HEAD_BYTES: u64 = 4096;

#[derive(Clone)]
pub struct S3 {
    bucket: Bucket,
    credentials: Option<Credentials>,
    prefix: String,
    upstream: Upstream,
}

impl S3 {
    /// `s3://BUCKET[/PREFIX]`, with the endpoint, region and credentials
    /// from AWS's own environment variables: `AWS_ENDPOINT_URL` (R2, MinIO,
    /// a local server; path-style URLs), else AWS in `AWS_REGION`
    /// (default `us-east-1`); `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub fn from_url(url: &str, upstream: Upstream) -> Result<S3, String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url}: a blob store URL is s3://BUCKET[/PREFIX]"))?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into());
        let (endpoint, style) = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(endpoint) => (endpoint, UrlStyle::Path),
            Err(_) => (format!("https://s3.{region}.amazonaws.com"), UrlStyle::VirtualHost),
        };
        let endpoint = endpoint.parse().map_err(|e| format!("AWS_ENDPOINT_URL {endpoint:?}: {e}"))?;
        let bucket = Bucket::new(endpoint, style, name.to_owned(), region).map_err(|e| format!("{url}: {e:?}"))?;
        let credentials = match (std::env::var("AWS_ACCESS_KEY_ID"), std::env::var("AWS_SECRET_ACCESS_KEY")) {
            (Ok(key), Ok(secret)) => Some(Credentials::new(key, secret)),
            _ => None,
        };
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        Ok(S3 { bucket, credentials, prefix, upstream })
    }

    /// Where the object named `file_name` lives in the bucket.
    pub fn object_name(&self, file_name: &str) -> String {
        format!("{}blobs/{file_name}", self.prefix)
    }

    async fn send(&self, method: &str, url: Url, headers: Vec<(String, String)>, body: Option<Bytes>) -> Result<UpstreamResponse, BlobError> {
        let body = body.map(HostBody::from_bytes);
        self.upstream.send(method, url.as_str(), headers, body, Some(30_000)).await.map_err(|e| BlobError::Unavailable(format!("S3: {e:?}")))
    }

    /// The object's description and where its bytes start; `None` if absent.
    pub async fn head(&self, name: &str) -> Result<Option<(Object, u64)>, BlobError> {
        Ok(self.header(name).await?.map(|(header, data_start)| (header.object, data_start)))
    }

    async fn header(&self, name: &str) -> Result<Option<(Header, u64)>, BlobError> {
        let Some(first) = self.read(name, 0, HEAD_BYTES).await? else { return Ok(None) };
        let length = u64::from(u32::from_be_bytes(first.get(..4).and_then(|b| b.try_into().ok()).ok_or_else(damaged)?));
        let json = if 4 + length <= first.len() as u64 {
            first[4..4 + length as usize].to_vec()
        } else {
            self.read(name, 4, length).await?.ok_or_else(damaged)?
        };
        Ok(Some((parse_header(&json)?, 4 + length)))
    }

    /// `count` bytes from `first`, whole, or `None` if the object is absent.
    async fn read(&self, name: &str, first: u64, count: u64) -> Result<Option<Vec<u8>>, BlobError> {
        let response = self.range(name, first, count).await?;
        if response.status == 404 {
            return Ok(None);
        }
        let body = response.body.ok_or_else(damaged)?;
        Ok(Some(body.read_to_end().await.map_err(|e| BlobError::Unavailable(format!("S3: {e:?}")))?))
    }

    async fn range(&self, name: &str, first: u64, count: u64) -> Result<UpstreamResponse, BlobError> {
        let url = self.bucket.get_object(self.credentials.as_ref(), name).sign(SIGNED_FOR);
        let response = self.send("GET", url, vec![("range".into(), format!("bytes={first}-{}", first + count - 1))], None).await?;
        match response.status {
            200 | 206 | 404 => Ok(response),
            // Past the end of an object shorter than what was asked for.
            416 => Err(damaged()),
            status => Err(BlobError::Unavailable(format!("S3 answered {status} to a read"))),
        }
    }

    /// The object's bytes `first..first + count` (clamped), streamed.
    pub async fn get(&self, name: &str, range: Option<(u64, u64)>) -> Result<Option<(Object, HostBody)>, BlobError> {
        let Some((object, data_start)) = self.head(name).await? else { return Ok(None) };
        let (first, count) = match range {
            Some((first, count)) => (first.min(object.size), count.min(object.size - first.min(object.size))),
            None => (0, object.size),
        };
        if count == 0 {
            return Ok(Some((object, HostBody::from_bytes(Bytes::new()))));
        }
        let response = self.range(name, data_start + first, count).await?;
        let body = response.body.filter(|_| response.status != 404).ok_or_else(|| BlobError::Unavailable("the object was deleted while read".into()))?;
        Ok(Some((object, body)))
    }

    pub async fn delete(&self, name: &str) -> Result<(), BlobError> {
        let url = self.bucket.delete_object(self.credentials.as_ref(), name).sign(SIGNED_FOR);
        let response = self.send("DELETE", url, Vec::new(), None).await?;
        if (200..300).contains(&response.status) || response.status == 404 { Ok(()) } else { Err(BlobError::Unavailable(format!("S3 answered {} to a delete", response.status))) }
    }

    /// A page of the objects whose keys start with `prefix`: a page of the
    /// bucket's listing (the cursor is S3's continuation token), and each
    /// object's header read for its key and when it was stored.
    pub async fn list(&self, prefix: &str, cursor: Option<&str>, limit: usize) -> Result<Listing, BlobError> {
        let mut action = self.bucket.list_objects_v2(self.credentials.as_ref());
        let blobs = self.object_name("");
        action.with_prefix(blobs.as_str());
        action.with_max_keys(limit);
        if let Some(cursor) = cursor {
            action.with_continuation_token(cursor);
        }
        let response = self.send("GET", action.sign(SIGNED_FOR), Vec::new(), None).await?;
        if response.status != 200 {
            return Err(BlobError::Unavailable(format!("S3 answered {} to a listing", response.status)));
        }
        let text = text_of(response).await?;
        let page = rusty_s3::actions::ListObjectsV2::parse_response(&text).map_err(|e| BlobError::Unavailable(format!("S3's listing did not parse: {e}")))?;
        let mut objects = Vec::new();
        for content in &page.contents {
            // One deleted since the page was made is not listed.
            if let Some((header, _)) = self.header(&content.key).await?
                && header.key.starts_with(prefix)
            {
                objects.push(Listed { key: header.key, size: header.object.size, used_ms: header.stored_ms });
            }
        }
        Ok(Listing { objects, cursor: page.next_continuation_token })
    }

    /// A multipart upload of the object, begun with its header.
    pub async fn start(&self, name: String, header: &[u8]) -> Result<S3Filling, BlobError> {
        let url = self.bucket.create_multipart_upload(self.credentials.as_ref(), &name).sign(SIGNED_FOR);
        let response = self.send("POST", url, Vec::new(), Some(Bytes::new())).await?;
        let text = text_of(response).await?;
        let upload_id = rusty_s3::actions::CreateMultipartUpload::parse_response(&text)
            .map_err(|e| BlobError::Unavailable(format!("S3 did not begin the upload: {e}: {text}")))?
            .upload_id()
            .to_owned();
        let mut part = Vec::with_capacity(PART_BYTES);
        part.extend_from_slice(header);
        Ok(S3Filling { s3: self.clone(), name, upload_id, part, etags: Vec::new(), done: false })
    }
}

/// An upload in progress: aborted unless completed.
pub struct S3Filling {
    s3: S3,
    name: String,
    upload_id: String,
    part: Vec<u8>,
    etags: Vec<String>,
    done: bool,
}

impl S3Filling {
    pub async fn write(&mut self, mut chunk: &[u8]) -> Result<(), BlobError> {
        while !chunk.is_empty() {
            let n = chunk.len().min(PART_BYTES - self.part.len());
            self.part.extend_from_slice(&chunk[..n]);
            chunk = &chunk[n..];
            if self.part.len() == PART_BYTES {
                self.upload_part().await?;
            }
        }
        Ok(())
    }

    async fn upload_part(&mut self) -> Result<(), BlobError> {
        let number = u16::try_from(self.etags.len() + 1).map_err(|_| BlobError::TooLarge(PART_BYTES as u64 * 10_000))?;
        let url = self.s3.bucket.upload_part(self.s3.credentials.as_ref(), &self.name, number, &self.upload_id).sign(SIGNED_FOR);
        let part = Bytes::from(std::mem::replace(&mut self.part, Vec::with_capacity(PART_BYTES)));
        let response = self.s3.send("PUT", url, Vec::new(), Some(part)).await?;
        let etag = response.headers.iter().find(|(n, _)| n == "etag").map(|(_, v)| v.clone());
        match etag.filter(|_| response.status == 200) {
            Some(etag) => {
                self.etags.push(etag);
                Ok(())
            }
            None => Err(BlobError::Unavailable(format!("S3 answered {} to a part", response.status))),
        }
    }

    /// Completes the upload: the object appears, whole.
    pub async fn complete(mut self) -> Result<(), BlobError> {
        if !self.part.is_empty() || self.etags.is_empty() {
            self.upload_part().await?;
        }
        let action = self.s3.bucket.complete_multipart_upload(self.s3.credentials.as_ref(), &self.name, &self.upload_id, self.etags.iter().map(String::as_str));
        let url = action.sign(SIGNED_FOR);
        let body = Bytes::from(action.body());
        let response = self.s3.send("POST", url, Vec::new(), Some(body)).await?;
        let status = response.status;
        // S3 may answer 200 with an error in the body.
        let text = text_of(response).await?;
        if status != 200 || text.contains("<Error>") {
            return Err(BlobError::Unavailable(format!("S3 did not complete the upload ({status}): {text}")));
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for S3Filling {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let url = self.s3.bucket.abort_multipart_upload(self.s3.credentials.as_ref(), &self.name, &self.upload_id).sign(SIGNED_FOR);
        let s3 = self.s3.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { s3.send("DELETE", url, Vec::new(), None).await });
        }
    }
}

async fn text_of(response: UpstreamResponse) -> Result<String, BlobError> {
    let bytes = match response.body {
        Some(body) => body.read_to_end().await.map_err(|e| BlobError::Unavailable(format!("S3: {e:?}")))?,
        None => Vec::new(),
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn damaged() -> BlobError {
    BlobError::Unavailable("a stored object's header is damaged".into())
}
