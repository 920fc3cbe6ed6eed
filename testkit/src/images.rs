//! The image-cache fixtures: `tests/fixtures/images/fake_replicate.py`, a
//! local stand-in for Replicate's HTTP API and its output host, and
//! `reference.py`, Pillow doing each transform independently. Both run in
//! the virtualenv `target/hf-venv` (Pillow is pinned there).

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::{Child, Command};

use crate::hf::venv_python;
use crate::{fixture, workspace_root};

/// The API token the stand-in accepts.
pub const TOKEN: &str = "r8_test_token_not_secret";

fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures/images").join(name)
}

pub struct FakeReplicate {
    /// The API's base URL.
    pub api: String,
    /// The output host's base URL (replicate.delivery's stand-in).
    pub delivery: String,
    _child: Child,
}

impl FakeReplicate {
    /// Starts the stand-in; output files stop being served `output_ttl`
    /// seconds after their prediction completes.
    pub async fn start(output_ttl: u32) -> FakeReplicate {
        let (child, ready) = fixture::spawn("images/fake_replicate.py", &["--token", TOKEN, "--output-ttl", &output_ttl.to_string()]).await;
        FakeReplicate { api: fixture::url(&ready, "api"), delivery: fixture::url(&ready, "delivery"), _child: child }
    }

    /// An image-cache route on every host at `/`, generating through this
    /// stand-in, with `extra` TOML added to the route's table.
    pub fn document(&self, extra: &str) -> String {
        format!(
            "[[route]]\nhost = \"*\"\n\n[route.image-cache]\n{extra}\n\n[route.image-cache.replicate]\napi = \"{}\"\noutput_origins = [\"{}\"]\nwait_seconds = 1\n",
            self.api, self.delivery
        )
    }

    /// Every call the API and the output host received, in order.
    pub async fn calls(&self) -> Vec<Value> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let calls: Value = client.get(format!("{}/_test/calls", self.api)).send().await.unwrap().json().await.unwrap();
        calls.as_array().cloned().unwrap_or_default()
    }

    /// The predictions created for prompts containing `slug`.
    pub async fn creations(&self, slug: &str) -> Vec<Value> {
        self.calls()
            .await
            .into_iter()
            .filter(|c| c["method"] == "POST" && c["path"].as_str().is_some_and(|p| p.ends_with("/predictions")) && c["status"] == 201)
            .filter(|c| c["input"]["prompt"].as_str().is_some_and(|p| p.contains(slug)))
            .collect()
    }
}

/// The size of `image` saved by Pillow as lossy WebP (libwebp) at `quality`.
pub async fn libwebp_bytes(image: &Path, quality: u8) -> u64 {
    let out = Command::new(venv_python()).arg(fixture("reference.py")).arg("--webp").arg(image).arg(quality.to_string()).output().await.expect("run reference.py");
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("reference.py --webp: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    answer["bytes"].as_u64().expect("bytes")
}

/// Pillow's rendering of `options` applied to `source`, compared with
/// `actual`: `expected_width`, `actual_width`, ..., `mean_abs_diff`.
pub async fn reference(source: &Path, options: &str, actual: &Path) -> Value {
    let out = Command::new(venv_python()).arg(fixture("reference.py")).arg(source).arg(options).arg(actual).output().await.expect("run reference.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("reference.py printed no JSON ({e}): {stdout} {}", String::from_utf8_lossy(&out.stderr)))
}
