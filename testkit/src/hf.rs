//! The Hugging Face fixtures: `tests/fixtures/hf/fake_hub.py`, a local
//! stand-in for huggingface.co and its CDN and Xet hosts, and `client.py`,
//! which drives the real `huggingface_hub` from PyPI. Both run in the
//! virtualenv `target/hf-venv` that `cargo xtask test` installs from
//! `tests/fixtures/hf/requirements.txt`.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::workspace_root;

/// The CDN and Xet hosts the fake hub names in its redirects and JSON.
pub const CDN_HOSTS: &[&str] = &["cdn-lfs.hf.co", "cdn-lfs.huggingface.co", "cas-bridge.xethub.hf.co", "cas-server.xethub.hf.co", "transfer.xethub.hf.co"];

/// The access token the fake hub accepts for `org/private`.
pub const TOKEN: &str = "hf_test_token";

pub fn venv_python() -> PathBuf {
    let python = workspace_root().join("target/hf-venv/bin/python");
    assert!(python.exists(), "no {}: `cargo xtask test` creates it (pip install -r tests/fixtures/hf/requirements.txt)", python.display());
    python
}

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/hf").join(name)
}

pub struct FakeHub {
    /// The hub's base URL.
    pub hub: String,
    /// The CDN server's base URL; host H lives under `{cdn}/H`.
    pub cdn: String,
    child: Child,
    _state: tempdir::Dir,
}

impl FakeHub {
    /// Starts the fake hub; `lfs_size` is the size of `org/small`'s `model.bin`.
    pub async fn start(lfs_size: u64) -> FakeHub {
        let state = tempdir::Dir::new("hf-state");
        let state_dir = state.path().to_string_lossy().into_owned();
        let (child, ready) = crate::fixture::spawn("hf/fake_hub.py", &["--state", &state_dir, "--lfs-size", &lfs_size.to_string()]).await;
        FakeHub { hub: crate::fixture::url(&ready, "hub"), cdn: crate::fixture::url(&ready, "cdn"), child, _state: state }
    }

    /// A config document with one hf-mirror route for every host name,
    /// pointed at this fake hub, with `extra` TOML added to its table.
    pub fn document(&self, extra: &str) -> String {
        let origins: String = CDN_HOSTS.iter().map(|h| format!("\"{h}\" = \"{}/{h}\"\n", self.cdn)).collect();
        format!("[[route]]\nhost = \"*\"\n\n[route.hf-mirror]\nhub = \"{}\"\n{extra}\n\n[route.hf-mirror.origins]\n{origins}", self.hub)
    }

    /// Every request the hub and CDN servers received, in order.
    pub async fn log(&self) -> Vec<Value> {
        let log: Value = reqwest::Client::builder().no_proxy().build().unwrap().get(format!("{}/_test/log", self.hub)).send().await.unwrap().json().await.unwrap();
        log.as_array().cloned().unwrap_or_default()
    }

    /// The CDN's file bodies from now on: `Some("flip")` (a byte changed),
    /// `Some("cut")` (half, then the connection closed), `None` (intact).
    pub async fn cdn_fault(&self, fault: Option<&str>) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        client.post(format!("{}/_test/cdn-fault", self.hub)).json(&serde_json::json!({ "fault": fault })).send().await.unwrap();
    }

    /// How long the Xet tokens the hub issues from now on live.
    pub async fn xet_token_ttl(&self, seconds: u64) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        client.post(format!("{}/_test/xet-token-ttl", self.hub)).json(&serde_json::json!({ "seconds": seconds })).send().await.unwrap();
    }

    /// Stops the hub and every CDN and Xet host with it: huggingface.co down.
    pub async fn stop(&mut self) {
        self.child.kill().await.expect("stop the fake hub");
    }

    pub async fn reset_log(&self) {
        reqwest::Client::builder().no_proxy().build().unwrap().post(format!("{}/_test/reset", self.hub)).send().await.unwrap();
    }
}

/// Runs `client.py ARGS` (the real huggingface_hub) against `endpoint` with
/// its own empty cache in `home`; returns its JSON result or its stderr.
pub async fn client(endpoint: &str, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Value, String> {
    let out = Command::new(venv_python())
        .arg(fixture("client.py"))
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", home)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("NO_PROXY", "*")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run client.py");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).map_err(|e| format!("client.py printed no JSON ({e}): {stdout}"))
}

/// Temporary directories removed on drop.
pub mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    static COUNTER: AtomicU32 = AtomicU32::new(0);

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(label: &str) -> Dir {
            let path = std::env::temp_dir().join(format!("edgeproxy-{label}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A forward HTTP proxy that resolves every `*.localhost` name to loopback:
/// DNS for clients that don't resolve those names themselves (git-lfs,
/// which is Go). Requests go on unchanged (same URL, same Host), so the
/// mirror sees what it would behind wildcard DNS.
pub struct LoopbackProxy {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LoopbackProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Loopback;

impl reqwest::dns::Resolve for Loopback {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(std::net::SocketAddr::from(([127, 0, 0, 1], 0))));
        Box::pin(std::future::ready(Ok(addrs)))
    }
}

impl LoopbackProxy {
    pub async fn start() -> LoopbackProxy {
        use http_body_util::{BodyExt, Full};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).no_proxy().dns_resolver(std::sync::Arc::new(Loopback)).build().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let client = client.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let client = client.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let mut headers = parts.headers.clone();
                            headers.remove("proxy-connection");
                            let sent = client.request(parts.method, parts.uri.to_string()).headers(headers).body(body).send().await;
                            let response = match sent {
                                Ok(r) => {
                                    let mut out = hyper::Response::builder().status(r.status().as_u16());
                                    for (name, value) in r.headers() {
                                        out = out.header(name.as_str(), value.as_bytes());
                                    }
                                    out.body(Full::new(r.bytes().await.unwrap_or_default())).unwrap()
                                }
                                Err(e) => hyper::Response::builder().status(502).body(Full::new(bytes::Bytes::from(e.to_string()))).unwrap(),
                            };
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        LoopbackProxy { url, task }
    }
}
