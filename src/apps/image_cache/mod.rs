//! image-cache, "Placeholder Zoo": `/{W}x{H}/{slug}` answers a W×H image of
//! the slug, generated once (Replicate, or the built-in generator when no
//! token is set), stored in key-value, and served in any variant the
//! Cloudflare Images options ask for, transformed here in the component.
//!
//! Unlike the other apps this one is an origin, not a proxy: it answers
//! every request itself, so it does not go through `proxy::phases`. It uses
//! the toolkit's errors and the host's key-value store, limiter and clock.
//!
//! - [`request`]: the URL grammar and its canonical form
//! - [`options`]: the transform options
//! - [`transform`], [`raster`], [`codec`]: pixels
//! - [`generate`], [`replicate`]: where originals come from
//! - [`store`]: blobs in key-value; signed URLs are the `edgeproxy-signing` crate

pub(crate) mod codec;
mod avif;
mod generate;
pub mod options;
pub(crate) mod raster;
mod replicate;
mod request;
mod store;
mod transform;

use serde::Deserialize;

use crate::platform::{Body, Headers, Platform, Response, header};
use crate::proxy::cache::CacheResult;
use crate::proxy::{ErrorCode, Method, ProxyError, Session};
use codec::{Decoded, Kind};
use options::{Fit, Format, Transform};
pub use replicate::ReplicateOptions;
use request::{Placeholder, Target};
use edgeproxy_signing as sign;
use store::{Blob, Manifest, Meta};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// The prompt; `{slug}`, `{width}` and `{height}` are filled in.
    #[serde(default = "default_prompt")]
    pub prompt: String,
    /// Bounds for W and H in `/{W}x{H}/{slug}`.
    #[serde(default = "default_min_size")]
    pub min_size: u32,
    #[serde(default = "default_max_size")]
    pub max_size: u32,
    #[serde(default = "default_max_slug_bytes")]
    pub max_slug_bytes: usize,
    /// Larger sources are refused before they are decoded.
    #[serde(default = "default_max_pixels")]
    pub max_input_pixels: u64,
    /// Larger outputs are refused (400) before anything is decoded. The
    /// default keeps a transform within Workers' 128 MB.
    #[serde(default = "default_max_output_pixels")]
    pub max_output_pixels: u64,
    /// The largest generated file accepted.
    #[serde(default = "default_max_original_bytes")]
    pub max_original_bytes: u64,
    /// Who may cause a generation: `open`, `signed` or `quota`.
    #[serde(default)]
    pub generation: Policy,
    /// The secret that signs URLs (`signed`, and `?redo` under any policy).
    pub signing_secret: Option<String>,
    #[serde(default)]
    pub quota: Quota,
    /// How long one generation may take, polling included.
    #[serde(default = "default_generation_timeout_ms")]
    pub generation_timeout_ms: u32,
    #[serde(default)]
    pub variants: Variants,
    /// More example paths for the gallery, besides the original four.
    #[serde(default)]
    pub examples: Vec<String>,
    /// Generate with Replicate once its token is set (defaults without a
    /// table); without a token, the built-in generator draws the placeholders.
    #[serde(default)]
    pub replicate: ReplicateOptions,
    /// Encode AVIF: for `format=avif`, and first in `format=auto` for
    /// clients that take it. Off by default: it costs about a second of CPU
    /// per 800×600 variant (docs/image-cache.md, "Formats").
    #[serde(default)]
    pub avif: bool,
}

/// The longest side an AVIF is encoded at; larger outputs are WebP, as
/// Cloudflare caps AVIF at 1,200 pixels for the same reason (time).
const AVIF_MAX_SIDE: u32 = 1200;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Anyone may cause a generation: for local use.
    Open,
    /// Only URLs signed with `signing_secret`.
    Signed,
    /// Anyone, within per-client and global quotas.
    #[default]
    Quota,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// Generations per client IP per period.
    pub per_client: u32,
    /// Generations for everyone together per period.
    pub global: u32,
    pub period_seconds: u32,
    /// The host limiter's name for the quota.
    pub policy: String,
}

impl Default for Quota {
    fn default() -> Self {
        Quota { per_client: 50, global: 1000, period_seconds: 86_400, policy: "image-generations".into() }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Variants {
    /// How long a transformed variant stays stored.
    pub ttl_seconds: u32,
    /// Larger variants are sent but not stored.
    pub max_bytes: u64,
}

impl Default for Variants {
    fn default() -> Self {
        Variants { ttl_seconds: 30 * 86_400, max_bytes: 4 << 20 }
    }
}

fn default_prompt() -> String {
    "A high-quality image of a {slug} holding up a sign with the words \"{width} by {height}\"".into()
}
fn default_min_size() -> u32 {
    16
}
fn default_max_size() -> u32 {
    2048
}
fn default_max_slug_bytes() -> usize {
    64
}
fn default_max_pixels() -> u64 {
    16 << 20
}
fn default_max_output_pixels() -> u64 {
    8 << 20
}
fn default_max_original_bytes() -> u64 {
    32 << 20
}
fn default_generation_timeout_ms() -> u32 {
    120_000
}

/// The original's four examples.
const EXAMPLES: &[&str] = &["/800x600/sunglasses-sloth", "/512x512/psychic-goat", "/1024x768/hippie-lion", "/600x800/punk-giraffe"];

/// Bumped when the pipeline's output for the same input changes, so that
/// stored variants and ETags of the old pipeline are not reused.
const PIPELINE_VERSION: u32 = 2;

impl Options {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=self.max_size).contains(&self.min_size) || self.max_size > options::MAX_SIDE {
            return Err(format!("min_size and max_size must satisfy 1 <= min_size <= max_size <= {}", options::MAX_SIDE));
        }
        if !self.prompt.contains("{slug}") {
            return Err("prompt must contain {slug}".into());
        }
        if self.max_slug_bytes == 0 || self.max_input_pixels == 0 || self.max_output_pixels == 0 {
            return Err("max_slug_bytes, max_input_pixels and max_output_pixels must be at least 1".into());
        }
        // The built-in generator draws max_size² pixels, and stored
        // originals are decoded under max_input_pixels.
        if u64::from(self.max_size).pow(2) > self.max_input_pixels {
            return Err(format!("max_size ({0}x{0} pixels) is over max_input_pixels ({1})", self.max_size, self.max_input_pixels));
        }
        if self.generation == Policy::Signed && self.signing_secret.is_none() {
            return Err("generation = \"signed\" needs signing_secret (the name of the secret that signs URLs)".into());
        }
        if self.quota.per_client == 0 || self.quota.global == 0 || self.quota.period_seconds == 0 {
            return Err("quota: per_client, global and period_seconds must be at least 1".into());
        }
        if self.generation_timeout_ms < 1000 {
            return Err("generation_timeout_ms must be at least 1000".into());
        }
        for example in &self.examples {
            self.placeholder_of(example).map_err(|e| format!("examples: {example:?}: {}", e.message))?;
        }
        self.replicate.validate()
    }

    fn placeholder_of(&self, path: &str) -> Result<Placeholder, ProxyError> {
        match request::parse(path, self)? {
            Target::Placeholder(p, _) => Ok(p),
            _ => Err(ProxyError::bad_request("not a placeholder path /{W}x{H}/{slug}")),
        }
    }
}

pub struct ImageCache<'a> {
    pub options: &'a Options,
    /// The route's path prefix (`/` or, say, `/_zoo`): the app's URLs live under it.
    pub prefix: &'a str,
}

/// The original: its bytes when this request generated it; otherwise only
/// its manifest, and the bytes are read when a variant must be rendered (a
/// variant that is stored, or a 304, needs no more than the manifest).
enum Original {
    Stored { key: String, manifest: Manifest },
    Generated(Blob),
}

impl Original {
    fn manifest(&self) -> &Manifest {
        match self {
            Original::Stored { manifest, .. } => manifest,
            Original::Generated(blob) => &blob.manifest,
        }
    }

    fn bytes<P: Platform>(self, p: &P) -> Result<Vec<u8>, ProxyError> {
        match self {
            Original::Generated(blob) => Ok(blob.bytes),
            Original::Stored { key, manifest } => match store::read_parts(p, &key, manifest) {
                Some(blob) => Ok(blob.bytes),
                None => {
                    // Damaged: forget it, so that the next request generates it again.
                    let _ = p.kv_delete(&key);
                    Err(ProxyError::new(ErrorCode::OriginalDamaged, "the stored image was damaged and has been discarded; retry to generate it again").with_header("retry-after", "1"))
                }
            },
        }
    }
}

impl ImageCache<'_> {
    pub fn serve<P: Platform>(&self, s: &Session<P>) -> Result<Response<P::Body>, ProxyError> {
        if !s.method.reads() {
            return Err(ProxyError::new(ErrorCode::MethodNotAllowed, format!("{} is not allowed here; use GET or HEAD", s.method)).with_header("allow", "GET, HEAD"));
        }
        let prefix = self.prefix.trim_end_matches('/');
        let path = s.incoming.path.strip_prefix(prefix).filter(|p| p.is_empty() || p.starts_with('/')).unwrap_or(&s.incoming.path);
        let query = request::Query::parse(s.incoming.query.as_deref());
        let (placeholder, extra) = match request::parse(path, self.options)? {
            Target::Gallery => return Ok(self.gallery(s)),
            Target::Placeholder(p, t) => (p, t),
        };
        let transform = extra.overlay(&query.transform()?);
        let original = self.original(s, &placeholder, &query)?;
        self.respond(s, &placeholder, &transform, original)
    }

    /// The stored original, generated first if need be.
    fn original<P: Platform>(&self, s: &Session<P>, placeholder: &Placeholder, query: &request::Query) -> Result<Original, ProxyError> {
        let o = self.options;
        let key = store::key("original", &format!("{}|{}", self.generator_id(s)?, placeholder.canonical()));
        if query.redo {
            self.check_signature(s, placeholder, query, "?redo regenerates only with a valid signature")?;
        } else if let Some(manifest) = store::read_manifest(s.platform, &key) {
            return Ok(Original::Stored { key, manifest });
        }
        if o.generation == Policy::Signed && !query.redo {
            self.check_signature(s, placeholder, query, "this image has not been generated yet, and generating one needs a signed URL")?;
        }
        let lease = format!("{key}:lease");
        let lease_ttl = o.generation_timeout_ms / 1000 + 30;
        let deadline = s.platform.now_ms() + u64::from(o.generation_timeout_ms) + 10_000;
        let holder = format!("{}:{}", s.platform.now_ms(), s.client_ip.as_deref().unwrap_or("-"));
        let mut pause = 100;
        loop {
            // A store that cannot take the lease still lets us generate:
            // one extra generation beats none.
            let won = s.platform.kv_set_if_absent(&lease, holder.as_bytes(), Some(lease_ttl)).unwrap_or(true);
            if won {
                // Another request may have stored it and let go of its lease
                // between our first look and this lease.
                if let Some(manifest) = (!query.redo).then(|| store::read_manifest(s.platform, &key)).flatten() {
                    let _ = s.platform.kv_delete(&lease);
                    return Ok(Original::Stored { key, manifest });
                }
                let generated = self.generate(s, placeholder, &key);
                let _ = s.platform.kv_delete(&lease);
                return generated.map(Original::Generated);
            }
            // Someone else is generating this image: wait for it to be
            // stored, or take over if their lease runs out first.
            loop {
                s.platform.sleep_ms(pause);
                pause = (pause * 2).min(1000);
                if let Some(manifest) = store::read_manifest(s.platform, &key) {
                    return Ok(Original::Stored { key, manifest });
                }
                if s.platform.now_ms() > deadline {
                    return Err(ProxyError::new(ErrorCode::GenerationPending, "this image is still being generated; try again shortly").with_header("retry-after", "5"));
                }
                if s.platform.kv_get(&lease).ok().flatten().is_none() {
                    break;
                }
            }
        }
    }

    /// Which generator makes the originals: part of their key, so a new
    /// model or prompt makes new images.
    fn generator_id<P: Platform>(&self, s: &Session<P>) -> Result<String, ProxyError> {
        Ok(match self.replicate_token(s)? {
            Some(_) => {
                let r = &self.options.replicate;
                format!("replicate|{}|{}|{}", r.model, self.options.prompt, serde_json::Value::Object(r.input.clone()))
            }
            None => "builtin|1".into(),
        })
    }

    fn replicate_token<P: Platform>(&self, s: &Session<P>) -> Result<Option<String>, ProxyError> {
        for name in self.options.replicate.token_names() {
            let token = s.platform.config(name).map_err(|why| ProxyError::internal(format!("the host could not provide the secret {name:?}: {why}")))?;
            if let Some(token) = token.filter(|t| !t.is_empty()) {
                return Ok(Some(token));
            }
        }
        Ok(None)
    }

    fn check_signature<P: Platform>(&self, s: &Session<P>, placeholder: &Placeholder, query: &request::Query, why: &str) -> Result<(), ProxyError> {
        let secret = match &self.options.signing_secret {
            Some(name) => s.platform.config(name).ok().flatten().filter(|v| !v.is_empty()),
            None => None,
        };
        let Some(secret) = secret else {
            return Err(ProxyError::new(ErrorCode::SignatureRequired, format!("{why}; this route has no signing secret, so none can be made")));
        };
        let now_s = s.platform.now_ms() / 1000;
        sign::verify(secret.as_bytes(), &placeholder.canonical(), query.expires.as_deref(), query.sig.as_deref(), now_s).map_err(|e| match e {
            sign::SignatureError::Missing => ProxyError::new(ErrorCode::SignatureRequired, format!("{why} (expires and sig in the query)")),
            sign::SignatureError::Expired => ProxyError::new(ErrorCode::SignatureExpired, "the signature has expired; sign the URL again"),
            sign::SignatureError::Malformed | sign::SignatureError::Wrong => ProxyError::new(ErrorCode::BadSignature, "the signature does not match this path and expiry"),
        })
    }

    /// The lease holder's part: policy, generation, storage.
    fn generate<P: Platform>(&self, s: &Session<P>, placeholder: &Placeholder, key: &str) -> Result<Blob, ProxyError> {
        let o = self.options;
        let token = self.replicate_token(s)?;
        if o.generation == Policy::Quota {
            self.spend_quota(s, token.is_some())?;
        }
        let (width, height) = (placeholder.width, placeholder.height);
        let prompt = o.prompt.replace("{slug}", &placeholder.slug).replace("{width}", &width.to_string()).replace("{height}", &height.to_string());
        let created_ms = s.platform.now_ms();
        let (bytes, meta) = match token {
            Some(token) => {
                let r = &o.replicate;
                let digest = store::sha256_hex(placeholder.canonical().as_bytes());
                let seed = u32::from_str_radix(&digest[..8], 16).expect("hex") & 0x7fff_ffff;
                let job = replicate::Job {
                    prompt: &prompt,
                    width,
                    height,
                    seed,
                    deadline_ms: created_ms + u64::from(o.generation_timeout_ms),
                    max_bytes: o.max_original_bytes,
                    max_pixels: o.max_input_pixels,
                };
                let generated = replicate::generate(s.platform, r, &token, &job)?;
                let (w, h, alpha) = generated.header;
                let kind = codec::sniff(&generated.bytes).expect("checked by the download");
                let meta = Meta { content_type: kind.mime().into(), width: w, height: h, alpha, model: r.model.clone(), prompt: Some(prompt), prediction_id: Some(generated.prediction_id), created_ms };
                (generated.bytes, meta)
            }
            None => {
                let image = generate::placeholder(width, height, &placeholder.slug);
                let bytes = codec::encode(image, Kind::Png, 100, [255; 4]).map_err(ProxyError::internal)?;
                (bytes, Meta { content_type: Kind::Png.mime().into(), width, height, alpha: false, model: "builtin".into(), prompt: Some(prompt), prediction_id: None, created_ms })
            }
        };
        let manifest = store::write(s.platform, key, meta.clone(), &bytes, None).unwrap_or_else(|_| {
            // Not stored (the store is down or full): still serve it.
            store::Manifest { meta, size: bytes.len() as u64, sha256: store::sha256_hex(&bytes), parts: 0 }
        });
        Ok(Blob { manifest, bytes })
    }

    /// One generation off the client's and everyone's quota. A limiter that
    /// cannot answer refuses a generation that costs Replicate credit
    /// (`costs_credit`), and lets the built-in generator's through: it spends
    /// only this request's CPU, and image-cache serves when key-value fails.
    fn spend_quota<P: Platform>(&self, s: &Session<P>, costs_credit: bool) -> Result<(), ProxyError> {
        let q = &self.options.quota;
        for (key, limit, whose) in [(s.client_ip.as_deref().unwrap_or("unknown"), q.per_client, "your"), ("*", q.global, "this site's")] {
            match s.platform.rate_limit(&q.policy, key, limit, q.period_seconds) {
                Ok(d) if d.allowed => {}
                Ok(d) => {
                    let retry = d.retry_after_seconds.max(1);
                    return Err(ProxyError::new(ErrorCode::GenerationQuota, format!("{whose} quota of new images is used up; stored images are still served; retry in {retry} s"))
                        .with_header("retry-after", retry.to_string()));
                }
                Err(_) if !costs_credit => return Ok(()),
                Err(why) => return Err(ProxyError::new(ErrorCode::QuotaUnavailable, format!("the generation quota cannot be checked ({why}); try again later")).with_header("retry-after", "60")),
            }
        }
        Ok(())
    }

    /// The image the URL asks for: the original cover-fitted to W×H, then
    /// `transform`; from the variant store when it was made before.
    fn respond<P: Platform>(&self, s: &Session<P>, placeholder: &Placeholder, transform: &Transform, original: Original) -> Result<Response<P::Body>, ProxyError> {
        let o = self.options;
        let accept = header(&s.headers, "accept").unwrap_or("");
        let format = transform.format.unwrap_or_default();
        let meta = &original.manifest().meta;
        let (ow, oh, alpha) = (meta.width, meta.height, meta.alpha);
        let base = Transform { width: Some(placeholder.width), height: Some(placeholder.height), fit: Some(Fit::Cover), ..Transform::default() };
        let (out_width, out_height) = transform::output_size(transform, (placeholder.width, placeholder.height), o.max_output_pixels).map_err(bad_option)?;
        let padded_transparent = transform.fit == Some(Fit::Pad) && transform.background.is_some_and(|b| b[3] < 255);
        let transparent = alpha || padded_transparent;
        let avif = o.avif && !transparent && out_width.max(out_height) <= AVIF_MAX_SIDE;
        let Some(kind) = transform::output_kind(format, transparent, accept, avif) else {
            return Ok(self.metadata(s, (out_width, out_height), &original));
        };
        let untouched = *transform == Transform::default() && (ow, oh) == (placeholder.width, placeholder.height);
        let as_stored = untouched && transform::takes_as_is(accept, &meta.content_type);
        let negotiated = format == Format::Auto;
        let sha256 = original.manifest().sha256.clone();
        let quality = transform.quality.unwrap_or(options::DEFAULT_QUALITY);
        let encoding = codec::encoding_name(kind, quality);
        let name = format!("{sha256}|{}|{}|{encoding}|{PIPELINE_VERSION}", base.canonical(), transform.canonical());
        let etag = if as_stored { format!("\"{}\"", &sha256[..32]) } else { format!("\"{}\"", &store::sha256_hex(name.as_bytes())[..32]) };
        let source = if matches!(original, Original::Generated(_)) { "generated" } else { "stored" };
        let mut headers: Headers = vec![
            ("etag".into(), etag.clone()),
            ("cache-control".into(), "public, max-age=31536000, immutable".into()),
            ("x-image-source".into(), source.into()),
        ];
        if negotiated {
            headers.push(("vary".into(), "Accept".into()));
        }
        if crate::proxy::headers::not_modified(&s.headers, &etag) {
            return Ok(Response { status: 304, headers, body: None });
        }
        let model = meta.model.clone();
        let (bytes, cache) = if as_stored {
            (original.bytes(s.platform)?, None)
        } else {
            let key = store::key("variant", &name);
            match store::read::<_, Meta>(s.platform, &key) {
                Some(hit) => (hit.bytes, Some(CacheResult::Hit)),
                None => {
                    let (bytes, timing) = self.render(s.platform, &original.bytes(s.platform)?, &base, transform, kind, quality)?;
                    headers.push(("server-timing".into(), timing));
                    if bytes.len() as u64 <= o.variants.max_bytes {
                        let meta = Meta { content_type: kind.mime().into(), model, created_ms: s.platform.now_ms(), ..Meta::default() };
                        let _ = store::write(s.platform, &key, meta, &bytes, Some(o.variants.ttl_seconds));
                    }
                    (bytes, Some(CacheResult::Miss))
                }
            }
        };
        if let Some(cache) = cache {
            headers.push(("x-cache".into(), cache.header().into()));
        }
        let mime = codec::sniff(&bytes).map_or("application/octet-stream", Kind::mime);
        headers.push(("content-type".into(), mime.into()));
        headers.push(("content-length".into(), bytes.len().to_string()));
        let body = (s.method == Method::Get).then(|| P::Body::from_bytes(bytes));
        Ok(Response { status: 200, headers, body })
    }

    /// `format=json`: Cloudflare's answer about the image instead of the
    /// image, from the stored original's record (nothing is decoded): the
    /// output's size, and the original's size, type and file size.
    fn metadata<P: Platform>(&self, s: &Session<P>, (width, height): (u32, u32), original: &Original) -> Response<P::Body> {
        let manifest = original.manifest();
        let json = serde_json::json!({
            "width": width,
            "height": height,
            "original": { "file_size": manifest.size, "width": manifest.meta.width, "height": manifest.meta.height, "format": manifest.meta.content_type },
        });
        let body = json.to_string().into_bytes();
        let headers = vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "public, max-age=31536000, immutable".into()),
            ("content-length".into(), body.len().to_string()),
        ];
        Response { status: 200, headers, body: (s.method == Method::Get).then(|| P::Body::from_bytes(body)) }
    }

    /// The variant's bytes, and a `Server-Timing` value with what each step
    /// took (ms): decoding, the transform (resizing and filters), encoding.
    /// Where the host's clock stands still while the guest computes (Workers),
    /// the steps read 0.
    fn render<P: Platform>(&self, platform: &P, original: &[u8], base: &Transform, transform: &Transform, kind: Kind, quality: u8) -> Result<(Vec<u8>, String), ProxyError> {
        let started = platform.now_ms();
        // A lossy WebP original that is only resized, for an encoder that
        // keeps chroma at half resolution anyway, never goes through RGB.
        let planes_will_do = transform::only_resizes(base) && transform::only_resizes(transform) && codec::takes_planes(kind, quality);
        let image = codec::decode_for(original, self.options.max_input_pixels, planes_will_do).map_err(|e| ProxyError::internal(format!("the stored original cannot be decoded: {e:?}")))?;
        let decoded = platform.now_ms();
        let image = match image {
            Decoded::Planes(planes) => Decoded::Planes(transform::apply_to_planes(transform::apply_to_planes(planes, base), transform)),
            Decoded::Pixels(image) => Decoded::Pixels(transform::apply(transform::apply(image, base), transform)),
        };
        let transformed = platform.now_ms();
        let bytes = codec::encode_decoded(image, kind, quality, transform.background.unwrap_or([255; 4])).map_err(|e| ProxyError::internal(format!("encoding failed: {e}")))?;
        let encoded = platform.now_ms();
        let timing = format!("decode;dur={}, transform;dur={}, encode;dur={}", decoded.saturating_sub(started), transformed.saturating_sub(decoded), encoded.saturating_sub(transformed));
        Ok((bytes, timing))
    }

    fn gallery<P: Platform>(&self, s: &Session<P>) -> Response<P::Body> {
        let prefix = self.prefix.trim_end_matches('/');
        let examples: Vec<String> = EXAMPLES.iter().map(|e| (*e).to_owned()).chain(self.options.examples.iter().cloned()).collect();
        let figures: String = examples
            .iter()
            .filter_map(|e| self.options.placeholder_of(e).ok())
            .map(|p| {
                let path = format!("{prefix}{}", p.canonical());
                format!("<figure><a href=\"{path}\"><img src=\"{path}\" alt=\"{slug}\" data-width=\"{w}\" data-height=\"{h}\" loading=\"eager\"></a><figcaption><code>{path}</code></figcaption></figure>\n", slug = p.slug, w = p.width, h = p.height)
            })
            .collect();
        let page = include_str!("gallery.html").replace("{examples}", &figures).replace("{prefix}", prefix);
        crate::proxy::page(&s.method, page)
    }
}

fn bad_option(e: options::OptionError) -> ProxyError {
    ProxyError::new(ErrorCode::BadOption, format!("option {}: {}", e.option, e.message)).with_header("x-bad-option", e.option)
}


#[cfg(test)]
mod tests {
    use crate::platform::fake::{Bytes, Fake};
    use crate::platform::{Request, Response, header};

    const ZOO: &str = "[[route]]\nhost = \"zoo.test\"\n[route.image-cache]\n";

    fn get(p: &Fake) -> Response<Bytes> {
        let request = Request { method: "GET".into(), url: "http://zoo.test/64x48/lease-sloth".into(), headers: Vec::new(), body: None };
        crate::handle(p, request, Some("192.0.2.1"))
    }

    /// What a request that generates the image stores: what another request
    /// would have written while this one waited.
    fn stored_by_another_request() -> Vec<(String, Vec<u8>)> {
        let p = Fake::with_document(ZOO);
        assert_eq!(get(&p).status, 200);
        p.kv.take().into_iter().collect()
    }

    #[test]
    fn concurrent_first_requests_wait_for_the_lease_holder_take_over_from_a_lost_one_and_give_up_in_time() {
        const FOREVER: u64 = u64::MAX;
        // (lease held by another request for ms, the other request stores the image after ms,
        //  the store fails set-if-absent, status, X-Image-Source)
        let cases: [(Option<u64>, Option<u64>, bool, u16, Option<&str>); 5] = [
            (None, None, false, 200, Some("generated")),
            (Some(FOREVER), Some(2_500), false, 200, Some("stored")),
            (Some(3_000), None, false, 200, Some("generated")),
            (None, None, true, 200, Some("generated")),
            (Some(FOREVER), None, false, 503, None),
        ];
        for (held_for, stored_after, store_fails, status, source) in cases {
            let p = Fake::with_document(ZOO);
            let start = p.now.get();
            let p = Fake { leases_held_until: held_for.map(|ms| start.saturating_add(ms)), set_if_absent_fails: store_fails, ..p };
            if let Some(after) = stored_after {
                *p.arrivals.borrow_mut() = stored_by_another_request().into_iter().map(|(k, v)| (start + after, k, v)).collect();
            }
            let answer = get(&p);
            let case = format!("held {held_for:?}, stored after {stored_after:?}, store fails {store_fails}");
            assert_eq!(answer.status, status, "{case}: {:?}", answer.headers);
            assert_eq!(answer.header("x-image-source"), source, "{case}");
            if status == 503 {
                assert_eq!(answer.header("x-error-code"), Some("generation_pending"), "{case}");
                assert_eq!(header(&answer.headers, "retry-after"), Some("5"), "{case}");
            }
            assert!(!p.kv.borrow().keys().any(|k| k.ends_with(":lease")), "{case}: a lease this request took is let go");
        }
    }
}
