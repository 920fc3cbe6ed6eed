//! Runs edgeproxy on a host for a test: writes the config document, starts
//! the server on a free loopback port, and stops it when dropped.
//!
//! `EDGEPROXY_TEST_HOST` picks the host (`wasmtime`, the default). Each host
//! serves the same `dist/edgeproxy.wasm`, so one suite covers them all.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::workspace_root;

pub struct Host {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Host {
    /// Which host the suite runs against.
    pub fn kind() -> String {
        std::env::var("EDGEPROXY_TEST_HOST").unwrap_or_else(|_| "wasmtime".into())
    }

    pub async fn start(document: &str) -> Host {
        Self::start_with_env(document, &[]).await
    }

    /// Starts with extra environment variables (secrets).
    pub async fn start_with_env(document: &str, env: &[(&str, &str)]) -> Host {
        let kind = Self::kind();
        assert_eq!(kind, "wasmtime", "EDGEPROXY_TEST_HOST={kind} is not a host this suite knows");
        let root = workspace_root();
        let binary = root.join("target/release/edgeproxy");
        let component = root.join("dist/edgeproxy.wasm");
        assert!(binary.exists() && component.exists(), "build first: `cargo xtask test` builds {} and {}", binary.display(), component.display());
        let dir = std::env::temp_dir().join(format!("edgeproxy-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("edgeproxy.toml");
        std::fs::write(&config, document).unwrap();
        let mut child = Command::new(&binary)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--component")
            .arg(&component)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start edgeproxy");
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = stderr.next_line().await.unwrap().expect("edgeproxy exited before serving");
            eprintln!("[edgeproxy] {line}");
            if let Some(url) = line.split(" on ").nth(1).filter(|_| line.contains("serving")) {
                break url.trim().to_owned();
            }
        };
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("[edgeproxy] {line}");
            }
        });
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = log.clone();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Host { child, base, dir, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The access log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Peak resident memory of the host process so far (Linux `VmHWM`).
    pub fn peak_rss_kib(&self) -> u64 {
        let pid = self.child.id().expect("host is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }

    /// Stops the host with SIGINT (Ctrl-C) and returns its exit status.
    pub async fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("host is running");
        std::process::Command::new("kill").arg("-INT").arg(pid.to_string()).status().expect("kill -INT");
        tokio::time::timeout(std::time::Duration::from_secs(15), self.child.wait()).await.expect("host stops within 15 s").unwrap()
    }
}
