//! Runs edgeproxy on a host for a test: writes the config document, starts
//! the server on a free loopback port, and stops it when dropped.
//!
//! `EDGEPROXY_TEST_HOST` picks the host: `wasmtime` (the default),
//! `workerd` (the Workers adapter in real workerd, through Miniflare), or
//! `spin` (`dist/edgeproxy-spin.wasm` in `spin up` of a test manifest beside
//! the real `spin.toml`; without a Spin binary, loudly, in `edgeproxy spin`,
//! the host's Spin-compatible stand-in). Each runs the same core, so one
//! suite covers all.
//!
//! A host started with secrets is watched: a secret in any line it logs,
//! or in any byte it sends a client, fails the test (see
//! `Host::start_with_secrets`).

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
    /// What the host wrote to stderr after its serving line.
    messages: Arc<Mutex<Vec<String>>>,
    /// The secrets the host was configured with, which must never leave it.
    secrets: Arc<Mutex<Arc<Vec<String>>>>,
    /// Where a configured secret was seen: a log line, or bytes sent to a client.
    leaks: Arc<Mutex<Vec<String>>>,
    /// Resident memory of the serving process once it announced itself.
    rss_at_start_kib: u64,
}

impl Drop for Host {
    fn drop(&mut self) {
        // Miniflare's workerd is a grandchild: killing Node alone would orphan it.
        if Self::kind() == "workerd"
            && let Some(workerd) = self.child.id().and_then(|pid| descendant_named(pid, "workerd"))
        {
            let _ = std::process::Command::new("kill").arg("-KILL").arg(workerd.to_string()).status();
        }
        // `spin up` runs the app in a child (`spin trigger http`) that a
        // SIGKILL of `spin up` alone would orphan: kill its process group.
        if Self::is_real_spin()
            && let Some(pid) = self.child.id()
        {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        // Last, so that a failing watch still stops the host.
        let leaks = std::mem::take(&mut *self.leaks.lock().unwrap());
        if !leaks.is_empty() && !std::thread::panicking() {
            panic!("a configured secret left the host: {leaks:?}");
        }
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Host {
    /// Which host the suite runs against.
    pub fn kind() -> String {
        std::env::var("EDGEPROXY_TEST_HOST").unwrap_or_else(|_| "wasmtime".into())
    }

    /// Whether the Spin pass runs on real `spin up` (a Spin binary is present).
    pub fn is_real_spin() -> bool {
        Self::kind() == "spin" && spin_binary().is_some()
    }

    pub async fn start(document: &str) -> Host {
        Self::start_with_env(document, &[]).await
    }

    /// Starts with the secrets the document names (`replicate-token`), set
    /// the way each host reads them: `EDGEPROXY_SECRET_*` (wasmtime,
    /// Workers) or `SPIN_VARIABLE_*` (Spin).
    pub async fn start_with_secrets(document: &str, secrets: &[(&str, &str)]) -> Host {
        let env = secret_env(secrets);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut host = Self::start_configured(document, &env, None).await;
        host.watch_for(secrets.iter().map(|(_, value)| value.to_string()).collect()).await;
        host
    }

    /// From now on, every log line of the host and every byte it sends a
    /// client is searched for `secrets`: the host is reached through a relay
    /// that reads the responses (so raw-socket tests go through it too), and
    /// a secret found anywhere fails the test when the host is dropped.
    async fn watch_for(&mut self, secrets: Vec<String>) {
        let secrets: Arc<Vec<String>> = Arc::new(secrets.into_iter().filter(|s| !s.is_empty()).collect());
        *self.secrets.lock().unwrap() = secrets.clone();
        let target = self.base.trim_start_matches("http://").to_owned();
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.base = format!("http://{}", relay.local_addr().unwrap());
        let leaks = self.leaks.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = relay.accept().await {
                let (target, secrets, leaks) = (target.clone(), secrets.clone(), leaks.clone());
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(&target).await else { return };
                    relay_watching(client, server, &secrets, &leaks).await;
                });
            }
        });
    }

    /// Starts with extra environment variables (secrets).
    pub async fn start_with_env(document: &str, env: &[(&str, &str)]) -> Host {
        Self::start_configured(document, env, None).await
    }

    /// Starts real Spin with `runtime_config` as its `--runtime-config-file`
    /// (a key-value store on Redis, say). Only for the Spin pass with a Spin
    /// binary: see [`spin_binary`].
    pub async fn start_spin_with_runtime_config(document: &str, runtime_config: &str) -> Host {
        assert!(Self::is_real_spin(), "a Spin runtime config needs real Spin (EDGEPROXY_TEST_HOST=spin and a Spin binary)");
        Self::start_configured(document, &[], Some(runtime_config)).await
    }

    /// The wasmtime host's `edgeproxy <subcommand>` (`serve` or `spin`) on
    /// `component`, with extra arguments, whichever host the suite runs on:
    /// for tests of the server process itself.
    pub async fn start_binary(subcommand: &str, component: &std::path::Path, document: &str, args: &[&str]) -> Host {
        let (dir, config) = Self::test_dir(document);
        let mut command = edgeproxy_command(subcommand, component, &config, &dir);
        command.args(args);
        Self::launch(command, dir, false).await
    }

    /// `edgeproxy serve` as an operator runs the installed binary: from an
    /// empty directory (no `dist/`), with the component built into it and
    /// its default data directory.
    pub async fn start_built_in(document: &str, args: &[&str]) -> Host {
        Self::start_built_in_with_env(document, args, &[]).await
    }

    /// [`Host::start_built_in`] with environment variables (secrets).
    pub async fn start_built_in_with_env(document: &str, args: &[&str], env: &[(&str, &str)]) -> Host {
        let (dir, config) = Self::test_dir(document);
        let binary = std::path::absolute(crate::edgeproxy_binary()).unwrap();
        let mut command = Command::new(binary);
        command.current_dir(&dir).arg("serve").arg("--config").arg(&config).args(["--listen", "127.0.0.1:0"]).args(args).envs(env.iter().copied());
        Self::launch(command, dir, false).await
    }

    /// The directory the host was started in, with its config document.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn test_dir(document: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("edgeproxy-test-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("edgeproxy.toml");
        std::fs::write(&config, document).unwrap();
        (dir, config)
    }

    /// The conformance probe (`probe/`, built by `cargo xtask test` into
    /// `target/probe/`) in place of the core, on the suite's host, with the
    /// secrets the probe checks for.
    pub async fn start_probe(document: &str, secrets: &[(&str, &str)]) -> Host {
        Self::start_probe_with_env(document, secrets, &[]).await
    }

    /// [`Host::start_probe`] with more environment variables (the host's
    /// `EDGEPROXY_BLOB_STORE`, say).
    pub async fn start_probe_with_env(document: &str, secrets: &[(&str, &str)], more: &[(&str, &str)]) -> Host {
        let env = secret_env(secrets);
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.extend_from_slice(more);
        Self::start_artifacts(document, &env, None, &Artifacts::probe()).await
    }

    async fn start_configured(document: &str, env: &[(&str, &str)], spin_runtime_config: Option<&str>) -> Host {
        Self::start_artifacts(document, env, spin_runtime_config, &Artifacts::core()).await
    }

    async fn start_artifacts(document: &str, env: &[(&str, &str)], spin_runtime_config: Option<&str>, artifacts: &Artifacts) -> Host {
        let (dir, config) = Self::test_dir(document);
        let command = match Self::kind().as_str() {
            "wasmtime" => edgeproxy_command("serve", &artifacts.component, &config, &dir),
            "spin" => match spin_binary() {
                Some(spin) => Command::from(spin_up_artifact(&spin, &artifacts.spin, &config, &dir, env, spin_runtime_config, "127.0.0.1:0")),
                None => {
                    eprintln!("WARNING: no Spin binary (../shared/tools/spin or EDGEPROXY_SPIN): the Spin suite runs on the stand-in `edgeproxy spin`, not on Spin itself");
                    let mut c = edgeproxy_command("spin", &artifacts.spin, &config, &dir);
                    // The fixtures are loopback servers on any port (spin.toml's
                    // list is for real upstreams).
                    c.args(["--allowed-outbound-host", "http://127.0.0.1:*"]);
                    c
                }
            },
            "workerd" => {
                let build = artifacts.worker.join("build/edgeproxy.js");
                assert!(build.exists(), "build first: `cargo xtask test` builds {}", build.display());
                let mut c = Command::new(workspace_root().join("node_modules/.bin/node"));
                c.arg(workspace_root().join("workers/serve-local.mjs")).arg("--worker-dir").arg(&artifacts.worker).arg("--r2-dir").arg(dir.join("r2"));
                c.arg("--config").arg(&config).args(["--port", "0"]);
                for (name, limit, period) in rate_limit_policies(document) {
                    c.arg("--ratelimit").arg(format!("{name}={limit}/{period}"));
                }
                c
            }
            other => panic!("EDGEPROXY_TEST_HOST={other} is not a host this suite knows (wasmtime, workerd, spin)"),
        };
        let mut command = command;
        command.envs(env.iter().copied());
        Self::launch(command, dir, Self::is_real_spin()).await
    }

    async fn launch(mut command: Command, dir: PathBuf, real_spin: bool) -> Host {
        // Miniflare and `spin up` make temporary directories that a killed
        // host never removes (some 250 MB a suite run): in the test's own
        // directory, `drop` removes them.
        let tmp = dir.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        command.env("TMPDIR", &tmp);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start edgeproxy");
        // Spin announces its address on stdout ("Serving http://..."), edgeproxy and Miniflare on stderr.
        let mut announcing = BufReader::new(if real_spin { Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send> } else { Box::new(child.stderr.take().unwrap()) }).lines();
        let base = loop {
            let line = announcing.next_line().await.unwrap().expect("the host exited before serving");
            eprintln!("[edgeproxy] {line}");
            if let Some(url) = line.split(" on ").nth(1).filter(|_| line.contains("serving")) {
                break url.trim().to_owned();
            }
            if let Some(url) = line.strip_prefix("Serving ").filter(|_| real_spin) {
                break url.trim().to_owned();
            }
        };
        let secrets: Arc<Mutex<Arc<Vec<String>>>> = Arc::default();
        let leaks: Arc<Mutex<Vec<String>>> = Arc::default();
        // Every line the host logs is checked for the secrets it was given.
        let check = {
            let (secrets, leaks) = (secrets.clone(), leaks.clone());
            move |line: &str| {
                let secrets = secrets.lock().unwrap().clone();
                if let Some(secret) = secrets.iter().find(|s| line.contains(s.as_str())) {
                    leaks.lock().unwrap().push(format!("log line {line:?} holds {secret:?}"));
                }
            }
        };
        let mut stderr = announcing;
        let check_stderr = check.clone();
        let messages: Arc<Mutex<Vec<String>>> = Arc::default();
        let kept = messages.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                check_stderr(&line);
                eprintln!("[edgeproxy] {line}");
                kept.lock().unwrap().push(line);
            }
        });
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = log.clone();
        if let Some(stdout) = child.stdout.take() {
            let mut stdout = BufReader::new(stdout).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = stdout.next_line().await {
                    check(&line);
                    sink.lock().unwrap().push(line);
                }
            });
        } else if let Some(stderr) = child.stderr.take() {
            let mut stderr = BufReader::new(stderr).lines();
            tokio::spawn(async move {
                while let Ok(Some(line)) = stderr.next_line().await {
                    check(&line);
                    eprintln!("[spin] {line}");
                }
            });
        }
        let mut host = Host { child, base, dir, log, messages, leaks, secrets, rss_at_start_kib: 0 };
        // What a test bounds is the memory serving takes, so it is measured
        // from here: start-up alone (Spin compiling its components on a
        // machine without its cache) can leave 100 MiB resident.
        let pid = host.serving_pid();
        reset_peak_rss_of(pid);
        host.rss_at_start_kib = rss_kib_of(pid).unwrap_or(0);
        host
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The access log lines so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Peak resident memory of the process that serves requests since it
    /// started serving (Linux `VmHWM`, reset once the host announced itself): the edgeproxy server, the workerd process under
    /// Miniflare's Node, or the `spin trigger http` process that `spin up`
    /// starts.
    pub fn peak_rss_kib(&self) -> u64 {
        peak_rss_kib_of(self.serving_pid()).expect("VmHWM in /proc status")
    }

    /// Asserts that what the host did since it started serving (moving
    /// `what`) took memory bounded independently of the body's size: its
    /// peak grew less than 64 MiB over its resident memory at start (each
    /// host grows by 2-15 MiB moving 2 GiB).
    pub fn assert_bounded_memory(&self, what: &str) {
        self.assert_memory_grew_less_than(what, 64 << 10);
    }

    /// [`Host::assert_bounded_memory`] with another limit, in KiB.
    pub fn assert_memory_grew_less_than(&self, what: &str, limit_kib: u64) {
        let peak = self.peak_rss_kib();
        let grown = peak.saturating_sub(self.rss_at_start_kib);
        eprintln!("{what} through {}: host RSS {} MiB at start, peak {} MiB", Self::kind(), self.rss_at_start_kib / 1024, peak / 1024);
        assert!(grown < limit_kib, "{what}: the host's memory grew by {grown} KiB (limit {limit_kib} KiB) from {} KiB at start", self.rss_at_start_kib);
    }

    /// Resident memory of the process that serves requests, now (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        rss_kib_of(self.serving_pid()).expect("VmRSS in /proc status")
    }

    fn serving_pid(&self) -> u32 {
        let root = self.child.id().expect("host is running");
        match Self::kind().as_str() {
            "workerd" => descendant_named(root, "workerd").expect("a workerd process"),
            "spin" if Self::is_real_spin() => descendant_named(root, "spin").expect("spin up's trigger process"),
            _ => root,
        }
    }

    /// The lines the host has written to stderr since it started serving.
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Sends the host process a signal (`HUP`, `TERM`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("host is running");
        let status = std::process::Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill -{name} {pid}");
    }

    /// Stops the host with SIGINT (Ctrl-C) and returns its exit status.
    pub async fn interrupt(self) -> std::process::ExitStatus {
        self.stop_with("INT").await
    }

    /// Sends the host `signal` and returns its exit status once it exits (within 15 s).
    pub async fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        self.signal(signal);
        tokio::time::timeout(std::time::Duration::from_secs(15), self.child.wait()).await.expect("host stops within 15 s").unwrap()
    }
}

/// `edgeproxy <subcommand>` on `component` with the test's document and data directory.
fn edgeproxy_command(subcommand: &str, component: &std::path::Path, config: &std::path::Path, dir: &std::path::Path) -> Command {
    let binary = crate::edgeproxy_binary();
    assert!(binary.exists() && component.exists(), "build first: `cargo xtask test` builds {} and {}", binary.display(), component.display());
    let mut c = Command::new(&binary);
    c.arg(subcommand).arg("--config").arg(config).args(["--listen", "127.0.0.1:0", "--component"]).arg(&component).arg("--data-dir").arg(dir.join("data"));
    c
}

/// An original Worker's setting (`API_BASE_URL`, `TARGET_DOMAIN`,
/// `REPLICATE_API_TOKEN`) as its users set it on this pass's host: a
/// variable of that very name on Workers, the secret `EDGEPROXY_SECRET_<NAME>`
/// on wasmtime, the Spin variable `<name>` (declared in spin.toml).
pub fn original_setting(name: &str, value: &str) -> Vec<(String, String)> {
    match Host::kind().as_str() {
        "workerd" => vec![(name.to_owned(), value.to_owned())],
        _ => secret_env(&[(name, value)]),
    }
}

/// `secrets` (config names) as environment variables, the way each host
/// reads them: `EDGEPROXY_SECRET_*` (wasmtime, Workers) or `SPIN_VARIABLE_*` (Spin).
fn secret_env(secrets: &[(&str, &str)]) -> Vec<(String, String)> {
    let upper = |name: &str| -> String { name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect() };
    secrets
        .iter()
        .flat_map(|(name, value)| [(format!("EDGEPROXY_SECRET_{}", upper(name)), value.to_string()), (format!("SPIN_VARIABLE_{}", upper(name)), value.to_string())])
        .collect()
}

/// What each host runs: the component, the Spin artifact, the Worker's directory.
struct Artifacts {
    component: PathBuf,
    spin: PathBuf,
    worker: PathBuf,
}

impl Artifacts {
    fn core() -> Artifacts {
        let root = workspace_root();
        Artifacts { component: root.join("dist/edgeproxy.wasm"), spin: root.join("dist/edgeproxy-spin.wasm"), worker: root.join("workers") }
    }

    fn probe() -> Artifacts {
        let dir = crate::probe::dir();
        Artifacts { component: dir.join("probe.wasm"), spin: dir.join("probe-spin.wasm"), worker: dir.join("workers") }
    }
}

/// The real Spin CLI, if this machine has one: `EDGEPROXY_SPIN`, the
/// project's shared tools (`../shared/tools/spin` beside the workspace), or
/// `spin` on `PATH`.
pub fn spin_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EDGEPROXY_SPIN") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let shared = workspace_root().join("../shared/tools/spin");
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>()).map(|dir| dir.join("spin"));
    std::iter::once(shared).chain(on_path).find(|p| p.is_file())
}

/// `spin up` as a user runs it: the real `spin.toml`, widened in a test
/// manifest beside it for the tests' loopback upstreams and the secrets the
/// test sets (Spin refuses variables a manifest does not declare); the
/// document as `--variable document=@FILE`; a runtime config file (by
/// default, Spin's SQLite store in the test's directory); state there too.
/// `listen` is `--listen`'s address (`127.0.0.1:0`: Spin picks a port and
/// prints it). Also used by `cargo xtask bench`.
pub fn spin_up_command(spin: &std::path::Path, config: &std::path::Path, dir: &std::path::Path, env: &[(&str, &str)], runtime_config: Option<&str>, listen: &str) -> std::process::Command {
    spin_up_artifact(spin, &workspace_root().join("dist/edgeproxy-spin.wasm"), config, dir, env, runtime_config, listen)
}

/// [`spin_up_command`] of another build of the Spin artifact (the bench's,
/// set up with its own document).
pub fn spin_up_artifact(spin: &std::path::Path, wasm: &std::path::Path, config: &std::path::Path, dir: &std::path::Path, env: &[(&str, &str)], runtime_config: Option<&str>, listen: &str) -> std::process::Command {
    let root = workspace_root();
    let manifest = std::fs::read_to_string(root.join("spin.toml")).expect("read spin.toml");
    assert!(wasm.exists(), "build first: `cargo xtask test` builds {}", wasm.display());
    let secrets: Vec<String> = env.iter().filter_map(|(k, _)| k.strip_prefix("SPIN_VARIABLE_")).map(str::to_ascii_lowercase).filter(|n| !manifest.contains(&format!("\n{n} = "))).collect();
    let declared: String = secrets.iter().map(|n| format!("{n} = {{ default = \"\", secret = true }}\n")).collect();
    let mapped: String = secrets.iter().map(|n| format!("{n} = \"{{{{ {n} }}}}\"\n")).collect();
    let test_manifest = manifest
        .replace("source = \"dist/edgeproxy-spin.wasm\"", &format!("source = {:?}", wasm.display().to_string()))
        .replace("allowed_outbound_hosts = [\n", "allowed_outbound_hosts = [\n  \"http://127.0.0.1:*\",\n")
        .replace("[variables]\n", &format!("[variables]\n{declared}"))
        .replace("[component.edgeproxy.variables]\n", &format!("[component.edgeproxy.variables]\n{mapped}"));
    let path = dir.join("spin.toml");
    std::fs::write(&path, test_manifest).unwrap();
    let default_store = format!("[key_value_store.default]\ntype = \"spin\"\npath = {:?}\n", dir.join("kv.db").display().to_string());
    let runtime_config_path = dir.join("runtime-config.toml");
    std::fs::write(&runtime_config_path, runtime_config.unwrap_or(&default_store)).unwrap();
    let mut c = spin_up(spin, &path, listen, &dir.join("spin-state"));
    c.arg("--runtime-config-file").arg(&runtime_config_path);
    c.arg("--variable").arg(format!("document=@{}", config.display()));
    c
}

/// `spin up` of `manifest` on `listen`, quiet, with its state in
/// `state_dir`, in its own process group, so that stopping it stops the
/// trigger process too.
pub fn spin_up(spin: &std::path::Path, manifest: &std::path::Path, listen: &str, state_dir: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(spin);
    std::os::unix::process::CommandExt::process_group(&mut c, 0);
    c.arg("up").arg("--from").arg(manifest).args(["--listen", listen, "--quiet"]).arg("--state-dir").arg(state_dir);
    c
}

/// The `(policy, requests, period_seconds)` of every rate limit in a
/// document, with each app's defaults: the bindings a Workers deployment
/// declares in wrangler.toml.
fn rate_limit_policies(document: &str) -> Vec<(String, i64, i64)> {
    let Ok(doc) = toml::from_str::<toml::Table>(document) else { return Vec::new() };
    let routes = doc.get("route").and_then(|r| r.as_array()).cloned().unwrap_or_default();
    let apps = [("api-gateway", "api", 0), ("hf-mirror", "hf", 20_000), ("hub-gateway", "hub", 0)];
    routes
        .iter()
        .flat_map(|route| apps.iter().filter_map(move |(app, policy, requests)| Some((route.get(app)?.get("rate_limit")?.as_table()?.clone(), *policy, *requests))))
        .map(|(rl, default_policy, default_requests)| {
            let policy = rl.get("policy").and_then(|p| p.as_str()).unwrap_or(default_policy).to_owned();
            let requests = rl.get("requests").and_then(|v| v.as_integer()).unwrap_or(default_requests);
            let period = rl.get("period_seconds").and_then(|v| v.as_integer()).unwrap_or(60);
            (policy, requests, period)
        })
        .collect()
}

/// Peak resident memory of process `pid` (Linux `VmHWM`), if it is running.
pub fn peak_rss_kib_of(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// Starts `pid`'s peak resident memory again from its resident memory now
/// (`5` to `/proc/PID/clear_refs`; Linux 4.0 and later).
fn reset_peak_rss_of(pid: u32) {
    if let Err(e) = std::fs::write(format!("/proc/{pid}/clear_refs"), "5") {
        eprintln!("WARNING: the host's peak RSS includes its start-up: {e}");
    }
}

/// Resident memory of `pid` now (Linux `VmRSS`).
pub fn rss_kib_of(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmRSS:")
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The first process below `pid` whose name is `name`.
pub fn descendant_named(pid: u32, name: &str) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
            let comm = std::fs::read_to_string(format!("/proc/{child}/comm")).unwrap_or_default();
            if comm.trim() == name {
                return Some(child);
            }
            if let Some(found) = descendant_named(child, name) {
                return Some(found);
            }
        }
    }
    None
}

/// Copies bytes both ways between a client and the host, searching what the
/// host sends for `secrets` (across read boundaries).
async fn relay_watching(mut client: tokio::net::TcpStream, mut server: tokio::net::TcpStream, secrets: &[String], leaks: &Mutex<Vec<String>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
        let _ = server_write.shutdown().await;
    };
    let downstream = async {
        let keep = secrets.iter().map(String::len).max().unwrap_or(1).saturating_sub(1);
        let (mut buf, mut window) = (vec![0u8; 64 * 1024], Vec::new());
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            window.extend_from_slice(&buf[..n]);
            if let Some(secret) = secrets.iter().find(|s| window.windows(s.len()).any(|w| w == s.as_bytes())) {
                let excerpt: String = String::from_utf8_lossy(&window).chars().take(300).collect();
                leaks.lock().unwrap().push(format!("a response holds {secret:?}: {excerpt:?}"));
            }
            window.drain(..window.len().saturating_sub(keep));
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}
