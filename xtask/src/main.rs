//! Build tasks, in Rust (`cargo xtask <task>`), so there is one way to do
//! each and nothing to install but Rust.
//!
//! - `build`: the core component `dist/edgeproxy.wasm` and the wasmtime host
//! - `serve [ARGS]`: build, then `edgeproxy serve ARGS`
//! - `test`: build, then every test (unit and integration)
//! - `spin`: the Spin build, `dist/edgeproxy-spin.wasm` (what `spin build` runs)
//! - `workers`: the Cloudflare Workers build, `workers/build/` (jco transpile)
//! - `package`: release artifacts that deploy without Rust, `dist/release/`
//!   (package.rs), after the licence check
//! - `bench`: the benchmark harness (see BENCHMARKS.md)
//! - `fuzz [--seconds N] [TARGET...]`: libFuzzer over src/fuzz.rs's targets
//! - `ui-upload DIR URL`: publish a built web UI to a hub-gateway that serves
//!   it from key-value (token in `EDGEPROXY_UI_TOKEN`)

mod bench;
mod fuzz;
mod package;
mod probe;
pub mod python;
mod spin;
mod workers;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};

/// The only interfaces the core component may import.
const OWN_PACKAGE: &str = "edgeproxy:platform/";
const CORE_TARGET: &str = "wasm32-unknown-unknown";

fn main() {
    if let Err(e) = run_task() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run_task() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    let invoked_in = std::env::current_dir()?;
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("build") => build(&root).map(drop),
        // Only dist/edgeproxy.wasm: what host/build.rs embeds when it is missing.
        Some("core") => build_core(&root).map(drop),
        Some("serve") => {
            build(&root)?;
            run(Command::new(root.join("target/release/edgeproxy")).arg("serve").args(&args[1..]))
        }
        Some("test") => {
            ensure_debian_tools(&[("curl", "curl"), ("git", "git"), ("git-lfs", "git-lfs"), ("chromium", "chromium"), ("redis-server", "redis-server")])?;
            python::ensure_venv(&root)?;
            let core = build_core(&root)?;
            // The host first: the Spin artifact's core is set up by it.
            build_host(TEST_HOST_PROFILE)?;
            spin::build(&root, &core)?;
            spin_build(&root)?;
            workers::build(&root)?;
            workers::deploy_dry_run(&root)?;
            probe::build(&root)?;
            // The artifacts as `package` makes them, with the host the tests
            // run (tests/release.rs unpacks and runs each).
            let third_parties = package::check_licences(&root)?;
            package::write(&root, &target_dir(&root).join(format!("{TEST_HOST_PROFILE}/edgeproxy")), &third_parties)?;
            test(&args[1..])
        }
        // The conformance probe for every host (`cargo xtask test` builds it too).
        Some("probe") => probe::build(&root),
        Some("spin") => {
            let core = build_core(&root)?;
            spin::build(&root, &core).map(drop)
        }
        // Wrangler's build command: the Worker needs only the core.
        Some("workers") => {
            build_core(&root)?;
            workers::build(&root)
        }
        Some("package") => {
            let third_parties = package::check_licences(&root)?;
            build(&root)?;
            workers::build(&root)?;
            package::write(&root, &target_dir(&root).join("release/edgeproxy"), &third_parties).map(drop)
        }
        Some("bench") => {
            build(&root)?;
            workers::build(&root)?;
            match args.get(1).map(String::as_str) {
                Some("images") => bench::images_only(&root),
                None => bench::run(&root),
                Some(other) => bail!("cargo xtask bench [images]: no part named {other}"),
            }
        }
        Some("fuzz") => fuzz::run(&root, &args[1..]),
        Some("ui-upload") => {
            let [dir, url] = &args[1..] else { bail!("usage: cargo xtask ui-upload DIR GATEWAY_URL (token in EDGEPROXY_UI_TOKEN)") };
            let token = std::env::var("EDGEPROXY_UI_TOKEN").context("set EDGEPROXY_UI_TOKEN to the gateway's ui.upload_token secret")?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let uploaded = runtime.block_on(edgeproxy_testkit::hub::upload_ui(url, &invoked_in.join(dir), &token)).map_err(anyhow::Error::msg)?;
            println!("uploaded {} files to {url}/_ui/", uploaded.len());
            Ok(())
        }
        _ => bail!("usage: cargo xtask <build | core | serve [ARGS] | test [ARGS] | spin | workers | package | probe | bench [images] | fuzz [--seconds N] [TARGET...] | ui-upload DIR URL>"),
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask lives in the workspace").to_path_buf()
}

/// Cargo, with the environment a plain `cargo build` in a shell has. `cargo
/// xtask` runs us with xtask's own CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...
/// set, and build scripts that watch those (ring's: `rerun-if-env-changed`)
/// would see them change between the two and rebuild ring and all above it.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_run = name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || ["CARGO_CRATE_NAME", "CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "OUT_DIR"].contains(&name.as_ref());
        if set_by_cargo_run {
            command.env_remove(name.as_ref());
        }
    }
    command
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("cannot run {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

/// Every test of the workspace on the wasmtime host, then the behavioural
/// suite (`tests/`) again on workerd and on the Spin-compatible host, then
/// one totals line, so the last thing printed says how many tests ran.
/// The suite's binaries are built once and run again with another
/// `EDGEPROXY_TEST_HOST` (a second `cargo test` of one package would unify
/// features differently and rebuild half the dependencies).
/// There are no doc-tests. The Spin adapter crates are wasm-only.
fn test(extra: &[String]) -> anyhow::Result<()> {
    let host_binary = root().join(format!("target/{TEST_HOST_PROFILE}/edgeproxy"));
    let workspace_tests = |cmd: &mut Command| {
        cmd.args(["test", "--workspace", "--exclude", "xtask", "--exclude", "edgeproxy-spin-services", "--exclude", "edgeproxy-spin-front", "--exclude", "edgeproxy-spin-static-files", "--exclude", "edgeproxy-probe"])
            .args(["--exclude", "edgeproxy-bench-spin-proxy"])
            .args(["--exclude", "edgeproxy-host", "--exclude", "edgeproxy-fuzz", "--lib", "--bins", "--tests"])
            .env("EDGEPROXY_BIN", &host_binary);
    };
    let mut totals = Totals::default();
    let mut host_units = cargo();
    host_units.args(["test", "--package", "edgeproxy-host", "--profile", TEST_HOST_PROFILE, "--bins"]);
    let mut first = cargo();
    workspace_tests(&mut first);
    // Every test binary runs even after one fails, as in the later passes.
    first.arg("--no-fail-fast");
    // xtask's own units (the licence allow-list), in the profile `cargo xtask` itself is built in.
    let mut xtask_units = cargo();
    xtask_units.args(["test", "--package", "xtask", "--bins"]);
    let mut results = vec![run_tests(host_units.args(extra), &mut totals), run_tests(first.args(extra), &mut totals), run_tests(xtask_units.args(extra), &mut totals)];
    let suite = behavioural_suite(workspace_tests)?;
    for host in ["workerd", "spin"] {
        eprintln!("xtask: the behavioural suite again, on {host}");
        for binary in &suite {
            results.push(run_tests(Command::new(binary).args(extra).env("EDGEPROXY_TEST_HOST", host).env("EDGEPROXY_BIN", &host_binary), &mut totals));
        }
    }
    println!("{}", totals.line());
    results.into_iter().collect()
}

/// What the test runs counted: a skipped test (`testkit::skip`) is one libtest
/// counted as passed, so it is moved from passed to skipped, per host.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    skipped: std::collections::BTreeMap<String, u64>,
}

impl Totals {
    fn line(&self) -> String {
        let skipped: u64 = self.skipped.values().sum();
        let per_host: Vec<String> = self.skipped.iter().map(|(host, n)| format!("{n} on {host}")).collect();
        let per_host = if per_host.is_empty() { String::new() } else { format!(": {}", per_host.join(", ")) };
        format!("{} passed, {} failed, {skipped} skipped{per_host}", self.passed.saturating_sub(skipped), self.failed)
    }
}

/// The executables of the core package's `tests/*.rs`, as the first run built them.
fn behavioural_suite(workspace_tests: impl Fn(&mut Command)) -> anyhow::Result<Vec<PathBuf>> {
    let mut cmd = cargo();
    workspace_tests(&mut cmd);
    let out = cmd.args(["--no-run", "--message-format=json"]).stderr(std::process::Stdio::null()).output().context("list the test binaries")?;
    ensure!(out.status.success(), "cargo test --no-run failed");
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_suite = message["reason"] == "compiler-artifact"
            && message["target"]["kind"] == serde_json::json!(["test"])
            && message["manifest_path"].as_str().is_some_and(|m| Path::new(m) == root().join("Cargo.toml"));
        if let (true, Some(executable)) = (is_suite, message["executable"].as_str()) {
            binaries.push(PathBuf::from(executable));
        }
    }
    ensure!(!binaries.is_empty(), "found no test binaries of the behavioural suite");
    Ok(binaries)
}

/// Runs a `cargo test`, echoing its output and adding its counts to `totals`.
fn run_tests(cmd: &mut Command, totals: &mut Totals) -> anyhow::Result<()> {
    use std::io::BufRead;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().context("run cargo test")?;
    for line in std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(result) = line.strip_prefix("test result: ") {
            let count = |word: &str| result.split(';').find_map(|part| part.trim().strip_suffix(word)?.split_whitespace().last()?.parse::<u64>().ok()).unwrap_or(0);
            totals.passed += count("passed");
            totals.failed += count("failed");
        }
        // Anywhere in the line: libtest may have begun one of its own on it.
        if let Some((_, skip)) = line.split_once(edgeproxy_testkit::skip::MARKER) {
            let host = skip.split_whitespace().next().unwrap_or("?").to_owned();
            *totals.skipped.entry(host).or_default() += 1;
        }
    }
    let status = child.wait()?;
    ensure!(status.success(), "tests failed ({status})");
    Ok(())
}

/// Builds `dist/edgeproxy.wasm`, `dist/edgeproxy-spin.wasm` and the host;
/// returns the core component's path.
pub fn build(root: &Path) -> anyhow::Result<PathBuf> {
    let core = build_core(root)?;
    // The host first: the Spin artifact's core is set up by it.
    build_host("release")?;
    spin::build(root, &core)?;
    Ok(core)
}

/// The profile of the host the tests run (Cargo.toml says why it is not release).
const TEST_HOST_PROFILE: &str = "host-test";

/// `target/<profile>/edgeproxy`.
fn build_host(profile: &str) -> anyhow::Result<()> {
    run(cargo().args(["build", "--package", "edgeproxy-host", "--profile", profile]))
}

/// `spin build` with the real Spin binary, when there is one: the manifest's
/// build command (`cargo xtask spin`) must make the artifact `spin up` serves.
/// The previous artifact is removed first, so a build that makes nothing fails.
fn spin_build(root: &Path) -> anyhow::Result<()> {
    let Some(spin) = edgeproxy_testkit::host::spin_binary() else {
        eprintln!("xtask: WARNING: no Spin binary (../shared/tools/spin, EDGEPROXY_SPIN or PATH): `spin build` not tried, and the Spin pass runs on the stand-in");
        return Ok(());
    };
    let artifact = root.join("dist/edgeproxy-spin.wasm");
    std::fs::remove_file(&artifact).with_context(|| format!("remove {}", artifact.display()))?;
    run(Command::new(spin).arg("build").arg("--from").arg(root.join("spin.toml")))?;
    ensure!(artifact.exists(), "`spin build` did not make {}", artifact.display());
    Ok(())
}

/// Builds the core component, `dist/edgeproxy.wasm`.
fn build_core(root: &Path) -> anyhow::Result<PathBuf> {
    ensure_target(CORE_TARGET)?;
    run(cargo().args(["build", "--package", "edgeproxy", "--lib", "--release", "--target", CORE_TARGET]))?;
    let component = componentize(root, "edgeproxy")?;
    let imports = edgeproxy_testkit::component_imports(&component)?;
    if let Some(foreign) = imports.iter().find(|i| !i.starts_with(OWN_PACKAGE)) {
        bail!("the core component imports {foreign}; it may import only {OWN_PACKAGE}* (all imports: {imports:?})");
    }
    std::fs::create_dir_all(root.join("dist"))?;
    let out = root.join("dist/edgeproxy.wasm");
    write_if_changed(&out, &component)?;
    eprintln!(
        "xtask: dist/edgeproxy.wasm: {} bytes raw, {} bytes gzip; imports {}",
        component.len(),
        gzip_len(&component),
        imports.join(", ")
    );
    Ok(out)
}

/// Writes `bytes` to `path` unless it already holds them: a build output's
/// mtime is what the next build checks (host/build.rs relinks the host
/// when dist/edgeproxy.wasm is touched), so the same bytes keep the old one.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).with_context(|| format!("write {}", path.display()))
}

/// The component of a wasm32 cdylib built by wit-bindgen: the world it
/// embedded becomes the component's imports and exports.
pub fn componentize(root: &Path, crate_name: &str) -> anyhow::Result<Vec<u8>> {
    let module_path = target_dir(root).join(format!("{CORE_TARGET}/release/{crate_name}.wasm"));
    let module = without_wasm_bindgen(&std::fs::read(&module_path).with_context(|| format!("read {}", module_path.display()))?)?;
    wit_component::ComponentEncoder::default().module(&module)?.validate(true).encode().with_context(|| format!("componentize {}", module_path.display()))
}

/// `module` without wasm-bindgen's runtime exports (`__wbindgen_*`,
/// `__externref_*`) and whatever only they reach, the JavaScript glue they
/// import among it. A dependency links wasm-bindgen on wasm32-unknown-unknown
/// without using it (rav1e's v_frame); the core never calls JavaScript, and
/// may import only its WIT.
fn without_wasm_bindgen(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    let is_glue = |name: &str| name.starts_with("__wbindgen") || name.starts_with("__externref");
    let bytes = module;
    let mut module = walrus::Module::from_buffer(bytes)?;
    let glue: Vec<walrus::ExportId> = module.exports.iter().filter(|e| is_glue(&e.name)).map(|e| e.id()).collect();
    if glue.is_empty() {
        return Ok(bytes.to_vec());
    }
    for export in glue {
        module.exports.delete(export);
    }
    walrus::passes::gc::run(&mut module);
    if let Some(import) = module.imports.iter().find(|i| i.module.starts_with("__wbindgen")) {
        bail!("the core still imports {}::{} after wasm-bindgen's exports were removed: something calls JavaScript", import.module, import.name);
    }
    Ok(module.emit_wasm())
}

/// Where cargo builds: `target/`, unless `CARGO_TARGET_DIR` says otherwise
/// (host/build.rs builds the core in a directory of its own).
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

pub fn gzip_len(bytes: &[u8]) -> usize {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(bytes).expect("gzip to memory");
    gz.finish().expect("gzip to memory").len()
}

pub fn ensure_target(target: &str) -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    match installed {
        Ok(out) if String::from_utf8_lossy(&out.stdout).lines().any(|l| l.trim() == target) => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", target])),
        Err(_) => {
            eprintln!("xtask: rustup not found; assuming the {target} standard library is installed");
            Ok(())
        }
    }
}

/// Installs each missing `(command, Debian package)` with apt-get.
pub fn ensure_debian_tools(tools: &[(&str, &str)]) -> anyhow::Result<()> {
    let on_path = |cmd: &str| Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success());
    let missing: Vec<&str> = tools.iter().filter(|(cmd, _)| !on_path(cmd)).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing {} from Debian", missing.join(", "));
    run(Command::new("apt-get").arg("update").arg("-qq"))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing))
}
