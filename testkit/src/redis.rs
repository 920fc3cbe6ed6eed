//! A throwaway `redis-server` (Debian's; `cargo xtask test` installs it) on a
//! free loopback port, with no persistence, stopped when dropped: the shared
//! store of several host instances.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Redis { child: Some(Self::spawn(port).await), port }
    }

    /// Stops the server (an outage); [`Redis::restart`] brings it back, empty, on the same port.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.child = Some(Self::spawn(self.port).await);
    }

    /// `redis-cli` against this server: its output, trimmed.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("run redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    async fn spawn(port: u16) -> Child {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server (Debian's redis-server package; `cargo xtask test` installs it)");
        let started = Instant::now();
        while !pong(port).await {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not answer PING on port {port} within 10 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        child
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

async fn pong(port: u16) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else { return false };
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").await.is_ok() && stream.read_exact(&mut reply).await.is_ok() && &reply == b"+PONG\r\n"
}
