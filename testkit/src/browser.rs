//! A real browser for the tests: Debian's headless Chromium, which
//! `cargo xtask test` installs.

use crate::hf::tempdir;

/// The DOM of `url` after its scripts ran and its images loaded (up to ten
/// seconds of the page's virtual time).
pub async fn chromium_dom(url: &str) -> String {
    let profile = tempdir::Dir::new("chromium");
    let out = tokio::process::Command::new("chromium")
        // The flags keep Chromium off the network it cannot reach here.
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--virtual-time-budget=10000", "--dump-dom", url])
        .output()
        .await
        .expect("run chromium (apt-get install chromium)");
    assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
