//! A throwaway S3 (moto's server mode, from the fixtures' virtualenv) on a
//! free loopback port, with one bucket, stopped when dropped: the blob
//! store several host instances share (`--blob-store s3://...`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use crate::workspace_root;

pub struct S3 {
    _child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

impl S3 {
    /// The server, with `bucket` made.
    pub async fn start(bucket: &str) -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = workspace_root().join("target/hf-venv/bin/moto_server");
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {} (`cargo xtask test` installs it): {e}", server.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = Instant::now();
        // moto takes an unsigned request; the host's are signed.
        while !client.put(format!("{endpoint}/{bucket}")).send().await.is_ok_and(|r| r.status().is_success()) {
            assert!(started.elapsed() < Duration::from_secs(20), "moto_server did not make bucket {bucket} on port {port} within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        S3 { _child: child, endpoint }
    }

    /// What a host needs to reach it: AWS's own variables.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![("AWS_ENDPOINT_URL", self.endpoint.clone()), ("AWS_REGION", "us-east-1".into()), ("AWS_ACCESS_KEY_ID", "testing".into()), ("AWS_SECRET_ACCESS_KEY", "testing".into())]
    }
}
