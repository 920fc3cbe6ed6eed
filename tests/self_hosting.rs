//! `edgeproxy` as an operator installs it (README, "Running the host"): one
//! binary that carries its component, names it in `--version`, and checks a
//! config document without serving. Properties of the wasmtime host's
//! binary, so they run in the wasmtime pass only.

use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};

use edgeproxy_testkit::{Host, Upstream, edgeproxy_binary, workspace_root};

fn wasmtime_pass() -> bool {
    Host::kind() == "wasmtime"
}

/// SHA-256 of dist/edgeproxy.wasm, the component the binary was built with.
fn dist_component_sha256() -> String {
    let out = std::process::Command::new("sha256sum").arg(workspace_root().join("dist/edgeproxy.wasm")).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned()
}

fn edgeproxy(args: &[&str], document: Option<&str>) -> (Output, std::path::PathBuf) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!("edgeproxy-cli-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("edgeproxy.toml");
    if let Some(document) = document {
        std::fs::write(&config, document).unwrap();
    }
    let mut command = std::process::Command::new(std::path::absolute(edgeproxy_binary()).unwrap());
    command.current_dir(&dir).args(args);
    if args.first() == Some(&"check") {
        command.arg("--config").arg(&config);
    }
    (command.output().unwrap(), config)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_its_built_in_component_from_an_empty_directory() {
    if !wasmtime_pass() {
        return;
    }
    let upstream = Upstream::start().await;
    let host = Host::start_built_in(&format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{}\"\n", upstream.url())).await;
    assert!(!host.dir().join("dist").exists());
    let response = reqwest::Client::builder().no_proxy().build().unwrap().get(host.url("/echo/built-in")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(upstream.seen(), ["/echo/built-in"]);
    assert!(host.dir().join(".edgeproxy").is_dir(), "the default data directory is where the server was started");
}

#[test]
fn version_names_the_built_in_component_by_its_sha256() {
    if !wasmtime_pass() {
        return;
    }
    let (out, _) = edgeproxy(&["--version"], None);
    assert!(out.status.success());
    let version = String::from_utf8(out.stdout).unwrap();
    assert_eq!(version.trim(), format!("edgeproxy {} (component sha256 {})", env!("CARGO_PKG_VERSION"), dist_component_sha256()));
}

#[test]
fn check_says_a_good_document_is_valid() {
    if !wasmtime_pass() {
        return;
    }
    let (out, config) = edgeproxy(&["check"], Some("[[route]]\nhost = \"api.test\"\n[route.api-gateway]\norigin = \"https://api.example\"\n\n[[route]]\nhost = \"zoo.test\"\n[route.image-cache]\n"));
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{}: valid", config.display()));
}

#[test]
fn check_names_each_problem_with_its_route_and_key_and_fails() {
    if !wasmtime_pass() {
        return;
    }
    let broken = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = \"ftp://a.example\"\n\n\
                  [[route]]\nhost = \"b.test\"\n[route.api-gateway]\norigin = \"https://b.example\"\n\n\
                  [[route]]\nhost = \"c.test\"\n[route.image-cache]\nmin_size = 900\nmax_size = 100\n";
    let (out, config) = edgeproxy(&["check"], Some(broken));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines[0].starts_with(&format!("{}: route 1 (a.test): origin must be an http:// or https:// URL", config.display())), "{stderr}");
    assert!(lines[1].starts_with(&format!("{}: route 3 (c.test): min_size and max_size", config.display())), "{stderr}");

    let typo = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norign = \"https://a.example\"\n";
    let (out, _) = edgeproxy(&["check"], Some(typo));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("route 1 (line 4, key route.api-gateway.orign): unknown field `orign`"), "{stderr}");
}

#[test]
fn check_of_a_missing_file_says_so() {
    if !wasmtime_pass() {
        return;
    }
    let (out, config) = edgeproxy(&["check"], None);
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("cannot read the config document {}", config.display())), "{stderr}");
}
