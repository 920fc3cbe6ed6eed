//! The Hugging Face fixtures: `tests/fixtures/hf/fake_hub.py`, a local
//! stand-in for huggingface.co and its CDN and Xet hosts, and `client.py`,
//! which drives the real `huggingface_hub` from PyPI. Both run in the
//! virtualenv `target/hf-venv` that `cargo xtask test` installs from
//! `tests/fixtures/hf/requirements.txt`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
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
    _child: Child,
    state: tempdir::Dir,
}

impl FakeHub {
    /// Starts the fake hub; `lfs_size` is the size of `org/small`'s `model.bin`.
    pub async fn start(lfs_size: u64) -> FakeHub {
        let state = tempdir::Dir::new("hf-state");
        let mut child = Command::new(venv_python())
            .arg(fixture("fake_hub.py"))
            .arg("--state")
            .arg(state.path())
            .args(["--lfs-size", &lfs_size.to_string()])
            // The fixture exits when its stdin closes, so it never outlives the test.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start fake_hub.py");
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = stdout.next_line().await.unwrap().expect("fake_hub.py exited before it was ready (see its stderr)");
        let ready: Value = serde_json::from_str(&line).expect("fake_hub.py's ready line is JSON");
        FakeHub { hub: ready["hub"].as_str().unwrap().to_owned(), cdn: ready["cdn"].as_str().unwrap().to_owned(), _child: child, state }
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

    pub async fn reset_log(&self) {
        reqwest::Client::builder().no_proxy().build().unwrap().post(format!("{}/_test/reset", self.hub)).send().await.unwrap();
    }

    pub fn state(&self) -> &Path {
        self.state.path()
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
