//! The hub-gateway fixtures: `tests/fixtures/hub/fake_kohaku.py`, a local
//! stand-in for KohakuHub's backend, its object store and a static host with
//! its built web UI; [`upload_ui`], which `cargo xtask ui-upload` is; and
//! [`Git`], real `git`/`git-lfs` in a throwaway home.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::Child;

use crate::fixture;
use crate::hf::tempdir;

/// alice owns every repo; bob is a valid user with no access to private ones.
pub const ALICE: (&str, &str) = ("alice", "khub_alice_token");
pub const BOB: (&str, &str) = ("bob", "khub_bob_token");

pub struct FakeKohaku {
    /// KohakuHub's API server (the gateway's backend).
    pub backend: String,
    /// The S3 stand-in that presigned URLs point at.
    pub store: String,
    /// A static host serving the built web UI.
    pub frontend: String,
    _child: Child,
    _state: tempdir::Dir,
}

impl FakeKohaku {
    pub async fn start(args: &[&str]) -> FakeKohaku {
        let state = tempdir::Dir::new("kohaku");
        let state_dir = state.path().to_string_lossy().into_owned();
        let mut all = vec!["--state", &state_dir];
        all.extend_from_slice(args);
        let (child, ready) = fixture::spawn("hub/fake_kohaku.py", &all).await;
        let url = |name| fixture::url(&ready, name);
        FakeKohaku { backend: url("backend"), store: url("store"), frontend: url("frontend"), _child: child, _state: state }
    }

    /// A hub-gateway route on every host, fronting this backend, with
    /// `extra` TOML added to its table.
    pub fn document(&self, extra: &str) -> String {
        format!("[[route]]\nhost = \"*\"\n\n[route.hub-gateway]\nbackend = \"{}\"\n{extra}\n", self.backend)
    }

    /// Tells the backend its public URL (KohakuHub's `BASE_URL`): the gateway's.
    pub async fn set_base_url(&self, base_url: &str) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client.post(format!("{}/_test/config", self.backend)).json(&serde_json::json!({ "base_url": base_url })).send().await.unwrap();
        assert!(r.status().is_success(), "set base_url: {}", r.status());
    }

    /// Every request the backend, the store and the frontend received, in order.
    pub async fn log(&self) -> Vec<Value> {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let log: Value = client.get(format!("{}/_test/log", self.backend)).send().await.unwrap().json().await.unwrap();
        log.as_array().cloned().unwrap_or_default()
    }

    pub async fn reset_log(&self) {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        client.post(format!("{}/_test/reset", self.backend)).send().await.unwrap();
    }
}

/// Uploads every file under `dir` to a hub-gateway's key-value web UI
/// (`PUT {gateway}/_ui/<path>` with the upload token), `index.html` last so
/// that it never names assets that are not there yet. Returns the paths.
pub async fn upload_ui(gateway: &str, dir: &Path, token: &str) -> Result<Vec<String>, String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() { walk(&path, out)? } else { out.push(path) }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let relative = |p: &PathBuf| p.strip_prefix(dir).unwrap().to_string_lossy().replace('\\', "/");
    files.sort_by_key(|p| (relative(p) == "index.html", relative(p)));
    let client = reqwest::Client::builder().no_proxy().build().map_err(|e| e.to_string())?;
    let mut uploaded = Vec::new();
    for file in &files {
        let path = relative(file);
        let bytes = std::fs::read(file).map_err(|e| format!("read {}: {e}", file.display()))?;
        let url = format!("{}/_ui/{path}", gateway.trim_end_matches('/'));
        let r = client.put(&url).bearer_auth(token).body(bytes).send().await.map_err(|e| format!("PUT {url}: {e}"))?;
        if !r.status().is_success() {
            let status = r.status();
            return Err(format!("PUT {url}: {status} {}", r.text().await.unwrap_or_default()));
        }
        uploaded.push(path);
    }
    Ok(uploaded)
}

/// `git` with its own empty home (global config, credential helper) and
/// `git lfs install` done, so nothing of the machine's config leaks in.
pub struct Git {
    pub home: tempdir::Dir,
}

impl Default for Git {
    fn default() -> Self {
        Self::new()
    }
}

impl Git {
    pub fn new() -> Git {
        let git = Git { home: tempdir::Dir::new("git-home") };
        git.run(&["lfs", "install", "--skip-repo"], git.home.path()).unwrap();
        git.run(&["config", "--global", "user.name", "Test"], git.home.path()).unwrap();
        git.run(&["config", "--global", "user.email", "test@example.invalid"], git.home.path()).unwrap();
        git.run(&["config", "--global", "init.defaultBranch", "main"], git.home.path()).unwrap();
        git
    }

    /// An ordinary credential helper that answers with `user` and `token`.
    pub fn with_credentials(self, (user, token): (&str, &str)) -> Git {
        let helper = format!("!f() {{ test \"$1\" = get && echo username={user} && echo password={token}; }}; f");
        self.run(&["config", "--global", "credential.helper", &helper], self.home.path()).unwrap();
        self
    }

    /// Runs git in `dir`; its stderr on failure.
    pub fn run(&self, args: &[&str], dir: &Path) -> Result<String, String> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", self.home.path())
            .env("XDG_CONFIG_HOME", self.home.path().join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("NO_PROXY", "*")
            .output()
            .map_err(|e| format!("run git: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!("git {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    }
}
