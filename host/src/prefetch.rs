//! `edgeproxy hf prefetch`: fills a running mirror's store with a repo by
//! asking the mirror for it as huggingface_hub would (the repo's info, its
//! listing at that commit, each file's `resolve`), reading every body to its
//! end and keeping nothing here. Any host's mirror: it is plain HTTP.

use std::time::Duration;

use anyhow::{Context, bail};

use crate::body::HostBody;
use crate::upstream::{Upstream, UpstreamResponse};

#[derive(clap::Args)]
pub struct PrefetchArgs {
    /// The repo: `org/name`, `datasets/org/name` or `spaces/org/name`.
    repo: String,
    /// A branch, tag or commit.
    #[arg(long, default_value = "main")]
    revision: String,
    /// Only files whose path matches one of these globs (`*.safetensors`).
    #[arg(long)]
    include: Vec<String>,
    /// The mirror's base URL (its hf-mirror route, one-host scheme).
    #[arg(long, default_value = "http://127.0.0.1:8787")]
    mirror: String,
    /// A Hugging Face token, for a private or gated repo.
    #[arg(long, env = "HF_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub async fn run(args: PrefetchArgs) -> anyhow::Result<()> {
    let include = args.include.iter().map(|g| glob::Pattern::new(g).with_context(|| format!("--include {g:?}"))).collect::<Result<Vec<_>, _>>()?;
    let client = Client { upstream: Upstream::new(Duration::from_secs(120), Default::default())?, token: args.token.clone() };
    let mirror = args.mirror.trim_end_matches('/');
    let (kind, id) = match args.repo.split_once('/') {
        Some((kind @ ("datasets" | "spaces"), id)) => (kind, id),
        _ => ("models", args.repo.as_str()),
    };
    let info: serde_json::Value = serde_json::from_slice(&client.get(&format!("{mirror}/api/{kind}/{id}/revision/{}", args.revision)).await?.0)?;
    let commit = info["sha"].as_str().context("the repo's info names no commit (`sha`)")?.to_owned();
    let mut files = Vec::new();
    let mut page = Some(format!("{mirror}/api/{kind}/{id}/tree/{commit}?recursive=True"));
    while let Some(url) = page.take() {
        let (body, link) = client.get(&url).await?;
        let entries: Vec<serde_json::Value> = serde_json::from_slice(&body).with_context(|| format!("{url}: not a listing"))?;
        files.extend(entries.iter().filter(|e| e["type"] == "file").filter_map(|e| e["path"].as_str().map(str::to_owned)));
        page = link.as_deref().and_then(next_link);
    }
    let resolve_base = match kind {
        "models" => format!("{mirror}/{id}/resolve/{commit}"),
        kind => format!("{mirror}/{kind}/{id}/resolve/{commit}"),
    };
    let (mut count, mut bytes, mut kept_before) = (0, 0u64, 0);
    for path in files.iter().filter(|p| include.is_empty() || include.iter().any(|g| g.matches(p))) {
        let response = client.send(&format!("{resolve_base}/{path}")).await?;
        let cache = response.headers.iter().find(|(n, _)| n == "x-cache").map(|(_, v)| v.clone()).unwrap_or_else(|| "-".into());
        let read = drain(response.body).await.with_context(|| format!("{path}: the download broke off"))?;
        println!("{path}: {read} bytes, {cache}");
        count += 1;
        bytes += read;
        kept_before += usize::from(cache == "HIT");
    }
    println!("prefetched {count} files of {} at {commit}: {bytes} bytes, {kept_before} already kept", args.repo);
    Ok(())
}

struct Client {
    upstream: Upstream,
    token: Option<String>,
}

impl Client {
    /// A GET that must succeed, following the mirror's redirects within itself
    /// (a file the store does not keep is a redirect to the CDN through it).
    async fn send(&self, url: &str) -> anyhow::Result<UpstreamResponse> {
        let mut url = url.to_owned();
        for _ in 0..5 {
            let headers = self.token.iter().map(|t| ("authorization".to_owned(), format!("Bearer {t}"))).collect();
            let response = self.upstream.send("GET", &url, headers, None, Some(60_000)).await.map_err(|e| anyhow::anyhow!("{url}: {e:?}"))?;
            match response.status {
                200 => return Ok(response),
                301 | 302 | 303 | 307 | 308 => {
                    let location = response.headers.iter().find(|(n, _)| n == "location").map(|(_, v)| v.clone()).context("a redirect without a Location")?;
                    url = if location.starts_with('/') { format!("{}{location}", origin(&url)) } else { location };
                }
                status => bail!("{url}: the mirror answered {status}"),
            }
        }
        bail!("{url}: too many redirects")
    }

    /// The body and `Link` header of a small answer.
    async fn get(&self, url: &str) -> anyhow::Result<(Vec<u8>, Option<String>)> {
        let response = self.send(url).await?;
        let link = response.headers.iter().find(|(n, _)| n == "link").map(|(_, v)| v.clone());
        let body = match response.body {
            Some(body) => body.read_to_end().await.map_err(|e| anyhow::anyhow!("{url}: {e:?}"))?,
            None => Vec::new(),
        };
        Ok((body, link))
    }
}

/// Reads a body to its end: the bytes it had.
async fn drain(body: Option<HostBody>) -> anyhow::Result<u64> {
    let mut read = 0;
    if let Some(mut body) = body {
        while let Some(chunk) = body.read(1 << 20).await.map_err(|e| anyhow::anyhow!("{e:?}"))? {
            read += chunk.len() as u64;
        }
    }
    Ok(read)
}

/// `scheme://authority` of an absolute URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    url[after_scheme..].find('/').map_or(url, |i| &url[..after_scheme + i])
}

/// The `rel="next"` target of a `Link` header (the listing's pagination).
fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| Some(part.split_once('<')?.1.split_once('>')?.0.to_owned()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_page_is_read_off_the_link_header() {
        let link = r#"<http://m/api/models/a/b/tree/x?cursor=2>; rel="next", <http://m/x>; rel="prev""#;
        assert_eq!(super::next_link(link).as_deref(), Some("http://m/api/models/a/b/tree/x?cursor=2"));
        assert_eq!(super::next_link(r#"<http://m/x>; rel="prev""#), None);
        assert_eq!(super::origin("http://127.0.0.1:8787/org/a/resolve/x"), "http://127.0.0.1:8787");
    }
}
