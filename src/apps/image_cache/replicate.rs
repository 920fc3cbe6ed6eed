//! A client for Replicate's HTTP API (https://replicate.com/docs/reference/http),
//! as documented rather than as the JavaScript client happens to behave:
//!
//! - `POST {api}/v1/models/{owner}/{name}/predictions` with `Authorization:
//!   Bearer`, `Prefer: wait=N` and `Cancel-After`;
//! - a prediction still `starting`/`processing` is polled at `urls.get` with
//!   backoff until the deadline; output present counts as done (file models
//!   publish it before `succeeded`);
//! - `failed`, `canceled` and `aborted` are errors carrying Replicate's `error`;
//! - 429 waits for `Retry-After` (or the `~Ns` in the message), a bounded
//!   number of times;
//! - the output is downloaded at once (Replicate deletes it after an hour),
//!   only from the configured output origins, without the token, and must be
//!   an image within the pixel cap.

use serde::Deserialize;
use serde_json::{Value, json};

use super::codec;
use crate::platform::{Body, Platform, ReadOutcome, Request, Response, header, read_up_to};
use crate::proxy::{ErrorCode, ProxyError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicateOptions {
    /// The secret that holds the API token; by default `replicate-token`,
    /// or else the placeholder Worker's own `REPLICATE_API_TOKEN`. Unset or
    /// empty: the built-in generator draws placeholders instead.
    #[serde(default = "default_token")]
    pub token: String,
    #[serde(default = "default_api")]
    pub api: String,
    /// An official model, `owner/name`.
    #[serde(default = "default_model")]
    pub model: String,
    /// Where output files may be downloaded from: `scheme://host[:port]`,
    /// the host may be `*.suffix`.
    #[serde(default = "default_output_origins")]
    pub output_origins: Vec<String>,
    /// `Prefer: wait=N`, 1 to 60.
    #[serde(default = "default_wait")]
    pub wait_seconds: u32,
    /// `Cancel-After`: Replicate stops a prediction that runs longer (at least 5).
    #[serde(default = "default_cancel_after")]
    pub cancel_after_seconds: u32,
    /// Model inputs sent with every prediction, besides `prompt`,
    /// `aspect_ratio` and `seed`.
    #[serde(default = "default_input")]
    pub input: serde_json::Map<String, Value>,
    /// The model's `aspect_ratio` choices; the nearest to W:H is sent. Empty:
    /// none is sent.
    #[serde(default = "default_aspect_ratios")]
    pub aspect_ratios: Vec<String>,
    /// Send a `seed` derived from the image's key, so a regeneration of the
    /// same URL asks for the same picture.
    #[serde(default = "yes")]
    pub seed: bool,
    /// How many 429s to wait out before giving up.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
}

fn default_token() -> String {
    "replicate-token".into()
}

/// The placeholder Worker's name for its token, read when the route names
/// no other: its users' setting carries over.
pub const ORIGINAL_TOKEN: &str = "REPLICATE_API_TOKEN";

impl Default for ReplicateOptions {
    /// Replicate's settings when the route has no `replicate` table: a
    /// token alone switches generation on.
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every Replicate setting has a default")
    }
}

impl ReplicateOptions {
    /// The secrets the token is read from, in order.
    pub fn token_names(&self) -> Vec<&str> {
        if self.token == default_token() { vec![&self.token, ORIGINAL_TOKEN] } else { vec![&self.token] }
    }
}
fn default_api() -> String {
    "https://api.replicate.com".into()
}
fn default_model() -> String {
    "black-forest-labs/flux-schnell".into()
}
fn default_output_origins() -> Vec<String> {
    vec!["https://replicate.delivery".into(), "https://*.replicate.delivery".into()]
}
fn default_wait() -> u32 {
    60
}
fn default_cancel_after() -> u32 {
    120
}
fn default_input() -> serde_json::Map<String, Value> {
    let mut input = serde_json::Map::new();
    input.insert("output_format".into(), "webp".into());
    input
}
fn default_aspect_ratios() -> Vec<String> {
    ["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"].map(String::from).to_vec()
}
fn yes() -> bool {
    true
}
fn default_retries() -> u32 {
    3
}

impl ReplicateOptions {
    pub fn validate(&self) -> Result<(), String> {
        let api = crate::proxy::parse_url(&self.api).map_err(|e| format!("replicate.api is not a URL ({e})"))?;
        if !matches!(api.scheme(), "http" | "https") || api.host().is_none() || api.query().is_some() {
            return Err("replicate.api must be an http:// or https:// URL with a host and no query".into());
        }
        let mut parts = self.model.split('/');
        if !(parts.next().is_some_and(name_ok) && parts.next().is_some_and(name_ok) && parts.next().is_none()) {
            return Err(format!("replicate.model {:?} must be owner/name", self.model));
        }
        if !(1..=60).contains(&self.wait_seconds) {
            return Err("replicate.wait_seconds must be 1 to 60 (Replicate's limit for Prefer: wait)".into());
        }
        if self.cancel_after_seconds < 5 {
            return Err("replicate.cancel_after_seconds must be at least 5 (Replicate's minimum)".into());
        }
        for origin in &self.output_origins {
            OriginPattern::parse(origin).ok_or_else(|| format!("replicate.output_origins: {origin:?} is not scheme://host[:port] (host may be *.suffix)"))?;
        }
        for ratio in &self.aspect_ratios {
            parse_ratio(ratio).ok_or_else(|| format!("replicate.aspect_ratios: {ratio:?} is not W:H"))?;
        }
        Ok(())
    }

    fn allows_output(&self, url: &str) -> bool {
        let Ok(url) = crate::proxy::parse_url(url) else { return false };
        self.output_origins.iter().filter_map(|o| OriginPattern::parse(o)).any(|p| p.matches(&url))
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

struct OriginPattern {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl OriginPattern {
    fn parse(pattern: &str) -> Option<OriginPattern> {
        let (scheme, rest) = pattern.split_once("://")?;
        if !matches!(scheme, "http" | "https") || rest.contains('/') {
            return None;
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, Some(p.parse().ok()?)),
            None => (rest, None),
        };
        crate::proxy::is_host_pattern(host)
            .then(|| OriginPattern { scheme: scheme.into(), host: host.to_ascii_lowercase(), port })
    }

    fn matches(&self, url: &url::Url) -> bool {
        let Some(host) = url.host_str() else { return false };
        let host_ok = crate::proxy::host_matches(&self.host, host);
        let default_port = if self.scheme == "https" { 443 } else { 80 };
        url.scheme() == self.scheme && host_ok && url.port_or_known_default() == Some(self.port.unwrap_or(default_port)) && url.username().is_empty() && url.password().is_none()
    }
}

fn parse_ratio(ratio: &str) -> Option<f64> {
    let (w, h) = ratio.split_once(':')?;
    let (w, h): (f64, f64) = (w.parse().ok()?, h.parse().ok()?);
    (w > 0.0 && h > 0.0).then(|| w / h)
}

/// The choice in `ratios` nearest to `width`:`height`, by log ratio.
pub fn nearest_aspect_ratio(ratios: &[String], width: u32, height: u32) -> Option<&str> {
    let target = (f64::from(width) / f64::from(height)).ln();
    ratios
        .iter()
        .filter_map(|r| Some((r.as_str(), (parse_ratio(r)?.ln() - target).abs())))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(r, _)| r)
}

/// What to generate.
pub struct Job<'a> {
    pub prompt: &'a str,
    pub width: u32,
    pub height: u32,
    pub seed: u32,
    /// Milliseconds since the epoch by which an image must be in hand.
    pub deadline_ms: u64,
    pub max_bytes: u64,
    pub max_pixels: u64,
}

pub struct Generated {
    pub bytes: Vec<u8>,
    pub prediction_id: String,
    /// Width, height and alpha, from the header `download` checked.
    pub header: (u32, u32, bool),
}

const MAX_JSON_BYTES: u64 = 1 << 20;
/// The longest wait for one 429 to pass.
const MAX_RETRY_WAIT_SECONDS: u64 = 30;

fn failed(message: impl Into<String>) -> ProxyError {
    ProxyError::new(ErrorCode::GenerationFailed, message)
}

fn timed_out() -> ProxyError {
    ProxyError::new(ErrorCode::GenerationTimeout, "the image was not generated in time; try again later")
}

/// Runs one prediction to completion and downloads its output.
pub fn generate<P: Platform>(p: &P, o: &ReplicateOptions, token: &str, job: &Job) -> Result<Generated, ProxyError> {
    let api = o.api.trim_end_matches('/');
    let mut input = o.input.clone();
    input.insert("prompt".into(), job.prompt.into());
    if let Some(ratio) = nearest_aspect_ratio(&o.aspect_ratios, job.width, job.height) {
        input.insert("aspect_ratio".into(), ratio.into());
    }
    if o.seed {
        input.insert("seed".into(), job.seed.into());
    }
    let body = json!({ "input": input }).to_string();
    let create_url = format!("{api}/v1/models/{}/predictions", o.model);
    let mut throttled = 0;
    let mut prediction = loop {
        let remaining_s = remaining_ms(p, job)?.div_ceil(1000);
        let wait = u64::from(o.wait_seconds).min(remaining_s).max(1);
        let headers = vec![
            ("authorization".into(), format!("Bearer {token}")),
            ("content-type".into(), "application/json".to_owned()),
            // wasi:http sends a body without it chunked.
            ("content-length".into(), body.len().to_string()),
            ("prefer".into(), format!("wait={wait}")),
            ("cancel-after".into(), format!("{}s", o.cancel_after_seconds)),
            ("user-agent".into(), "edgeproxy-image-cache".to_owned()),
        ];
        let request = Request { method: "POST".into(), url: create_url.clone(), headers, body: Some(P::Body::from_bytes(body.clone().into_bytes())) };
        let timeout = ((wait + 15) * 1000).min(remaining_ms(p, job)? + 1000) as u32;
        let response = p.send(request, Some(timeout)).map_err(|e| ProxyError::upstream(&e))?;
        match response.status {
            429 => wait_out_throttle(p, job, response, &mut throttled, o.max_retries)?,
            200..=299 => break read_json(response)?,
            status => return Err(api_error(status, response)),
        }
    };
    let id = prediction["id"].as_str().unwrap_or_default().to_owned();
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(failed("Replicate answered without a usable prediction id"));
    }
    // `urls.get`, as documented, but only on the API we were configured
    // with: the token goes nowhere else.
    let poll_url = prediction["urls"]["get"]
        .as_str()
        .filter(|u| u.starts_with(&format!("{api}/")))
        .map_or_else(|| format!("{api}/v1/predictions/{id}"), str::to_owned);
    let mut backoff_ms = 250u64;
    let output = loop {
        if let Some(url) = output_url(&prediction) {
            break url;
        }
        match prediction["status"].as_str().unwrap_or_default() {
            "succeeded" => return Err(failed(format!("Replicate prediction {id} succeeded without output"))),
            status @ ("failed" | "canceled" | "aborted") => {
                let why = prediction["error"].as_str().filter(|e| !e.is_empty()).unwrap_or("no error given");
                return Err(failed(format!("Replicate prediction {id} {status}: {}", truncate(why, 300))));
            }
            _ => {}
        }
        let Ok(remaining) = remaining_ms(p, job) else {
            cancel(p, api, &id, token);
            return Err(timed_out());
        };
        p.sleep_ms(backoff_ms.min(remaining) as u32);
        backoff_ms = (backoff_ms * 2).min(2000);
        let headers = vec![("authorization".into(), format!("Bearer {token}"))];
        let request = Request { method: "GET".into(), url: poll_url.clone(), headers, body: None };
        let response = match p.send(request, Some(30_000)) {
            Ok(r) => r,
            // A poll that fails is retried at the next interval.
            Err(_) => continue,
        };
        match response.status {
            429 => wait_out_throttle(p, job, response, &mut throttled, o.max_retries)?,
            200..=299 => prediction = read_json(response)?,
            500..=599 => {}
            status => return Err(api_error(status, response)),
        }
    };
    if !o.allows_output(&output) {
        return Err(failed("the prediction's output is not on an allowed output origin (replicate.output_origins)"));
    }
    let (bytes, header) = download(p, &output, job)?;
    Ok(Generated { bytes, prediction_id: id, header })
}

fn remaining_ms<P: Platform>(p: &P, job: &Job) -> Result<u64, ProxyError> {
    job.deadline_ms.checked_sub(p.now_ms()).filter(|r| *r > 0).ok_or_else(timed_out)
}

/// The first output URL: flux-schnell's output is a list of URLs, other
/// models give one.
fn output_url(prediction: &Value) -> Option<String> {
    let output = &prediction["output"];
    output.as_str().or_else(|| output.as_array()?.first()?.as_str()).filter(|u| !u.is_empty()).map(str::to_owned)
}

/// Sleeps out a 429 (`Retry-After`, else the `~Ns` in Replicate's message,
/// else a second), or gives up with a 503 that passes the wait on.
fn wait_out_throttle<P: Platform, B: Body>(p: &P, job: &Job, response: Response<B>, throttled: &mut u32, max_retries: u32) -> Result<(), ProxyError> {
    let header_wait = response.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok());
    let wait = header_wait.or_else(|| hint_seconds(&read_json(response).unwrap_or_default())).unwrap_or(1).clamp(1, MAX_RETRY_WAIT_SECONDS);
    *throttled += 1;
    let remaining = remaining_ms(p, job)?;
    if *throttled > max_retries || wait * 1000 >= remaining {
        return Err(ProxyError::new(ErrorCode::GenerationThrottled, "Replicate is throttling this account; try again later").with_header("retry-after", wait.to_string()));
    }
    p.sleep_ms((wait * 1000) as u32);
    Ok(())
}

/// `~30s` in "Your rate limit resets in ~30s."
fn hint_seconds(body: &Value) -> Option<u64> {
    let detail = body["detail"].as_str()?;
    let after = &detail[detail.find('~')? + 1..];
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    after[digits.len()..].starts_with('s').then(|| digits.parse().ok()).flatten()
}

fn read_json<B: Body>(response: Response<B>) -> Result<Value, ProxyError> {
    let Some(body) = response.body else { return Ok(Value::Null) };
    match read_up_to(body, MAX_JSON_BYTES) {
        Ok(ReadOutcome::Complete(bytes)) => serde_json::from_slice(&bytes).map_err(|_| failed("Replicate answered with something other than JSON")),
        Ok(ReadOutcome::TooLong(_)) => Err(failed("Replicate's answer was too large")),
        Err(e) => Err(failed(format!("Replicate's answer broke off: {e}"))),
    }
}

/// Replicate's own words (`detail`), never the request that caused them.
fn api_error<B: Body>(status: u16, response: Response<B>) -> ProxyError {
    let body = read_json(response).unwrap_or_default();
    let detail = body["detail"].as_str().or(body["title"].as_str()).unwrap_or("no detail");
    failed(format!("Replicate answered {status}: {}", truncate(detail, 300)))
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// Best effort: a prediction we stopped waiting for should stop costing.
fn cancel<P: Platform>(p: &P, api: &str, id: &str, token: &str) {
    let headers = vec![("authorization".into(), format!("Bearer {token}"))];
    let _ = p.send(Request { method: "POST".into(), url: format!("{api}/v1/predictions/{id}/cancel"), headers, body: None }, Some(5_000));
}

/// The output file, checked to be an image within the caps. The token is
/// not sent: output hosts serve without it, and it must not leave for them.
fn download<P: Platform>(p: &P, url: &str, job: &Job) -> Result<(Vec<u8>, (u32, u32, bool)), ProxyError> {
    let bad = |message: String| ProxyError::new(ErrorCode::BadGeneratedImage, message);
    let remaining = remaining_ms(p, job)?;
    let response = p
        .send(Request { method: "GET".into(), url: url.to_owned(), headers: vec![("accept".into(), "image/*".into())], body: None }, Some(remaining.min(60_000) as u32))
        .map_err(|e| ProxyError::upstream(&e))?;
    if response.status != 200 {
        return Err(bad(format!("the generated image could not be downloaded: the output host answered {}", response.status)));
    }
    if header(&response.headers, "content-length").and_then(|l| l.parse::<u64>().ok()).is_some_and(|l| l > job.max_bytes) {
        return Err(bad(format!("the generated image is larger than this route's max_original_bytes ({})", job.max_bytes)));
    }
    let body = response.body.ok_or_else(|| bad("the output host sent no body".into()))?;
    let bytes = match read_up_to(body, job.max_bytes) {
        Ok(ReadOutcome::Complete(bytes)) => bytes,
        Ok(ReadOutcome::TooLong(_)) => return Err(bad(format!("the generated image is larger than this route's max_original_bytes ({})", job.max_bytes))),
        Err(e) => return Err(bad(format!("the generated image's download broke off: {e}"))),
    };
    let header = check_image(&bytes, job.max_pixels).map_err(bad)?;
    Ok((bytes, header))
}

/// An image we can decode, within `max_pixels`, judged from its header:
/// its width, height and alpha.
fn check_image(bytes: &[u8], max_pixels: u64) -> Result<(u32, u32, bool), String> {
    match codec::header(bytes) {
        Ok((w, h, alpha)) if u64::from(w) * u64::from(h) <= max_pixels && w > 0 && h > 0 => Ok((w, h, alpha)),
        Ok((w, h, _)) => Err(format!("the generated image declares {w}x{h} pixels, over this route's max_input_pixels ({max_pixels})")),
        Err(codec::DecodeError::NotAnImage) => Err("the generated file is not a PNG, JPEG or WebP image".into()),
        Err(e) => Err(format!("the generated image is broken: {e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nearest_aspect_ratio_is_chosen_by_log_distance() {
        let ratios = default_aspect_ratios();
        assert_eq!(nearest_aspect_ratio(&ratios, 800, 600), Some("4:3"));
        assert_eq!(nearest_aspect_ratio(&ratios, 1920, 1080), Some("16:9"));
        assert_eq!(nearest_aspect_ratio(&ratios, 512, 512), Some("1:1"));
        assert_eq!(nearest_aspect_ratio(&ratios, 600, 800), Some("3:4"));
        assert_eq!(nearest_aspect_ratio(&ratios, 100, 2000), Some("9:21"));
        assert_eq!(nearest_aspect_ratio(&[], 1, 1), None);
    }

    #[test]
    fn outputs_are_downloaded_only_from_allowed_origins() {
        let o: ReplicateOptions = toml::from_str("").unwrap();
        assert!(o.allows_output("https://replicate.delivery/yhqm/x/out-0.webp"));
        assert!(o.allows_output("https://pbxt.replicate.delivery/x/out-0.webp"));
        assert!(!o.allows_output("http://replicate.delivery/x"));
        assert!(!o.allows_output("https://replicate.delivery:8443/x"));
        assert!(!o.allows_output("https://evilreplicate.delivery/x"));
        assert!(!o.allows_output("https://user@replicate.delivery/x"));
        assert!(!o.allows_output("https://169.254.169.254/latest"));
        let o: ReplicateOptions = toml::from_str("output_origins = [\"http://127.0.0.1:9000\"]").unwrap();
        assert!(o.allows_output("http://127.0.0.1:9000/files/x"));
        assert!(!o.allows_output("http://127.0.0.1:9001/files/x"));
    }

    #[test]
    fn the_throttle_hint_is_read_from_the_message() {
        assert_eq!(hint_seconds(&json!({"detail": "Request was throttled. Your rate limit resets in ~30s."})), Some(30));
        assert_eq!(hint_seconds(&json!({"detail": "no hint"})), None);
    }
}
