//! The Workers build: `dist/edgeproxy.wasm`, unchanged, transpiled by jco
//! into `workers/build/` for `workers/worker.js`.
//!
//! jco is pinned at 1.11.2 (package.json). Later releases route every
//! import call through the component-model async task machinery (an
//! `AsyncTask` per call, classes rebuilt by each `instantiate`), which
//! nearly doubled workerd's CPU per request: 1.9 against 1.1 ms measured
//! side by side (BENCHMARKS.md, "Workers"). Check that figure before
//! moving the pin.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, ensure};

/// Imports that return a Promise on Workers, so JSPI must suspend the guest
/// on them. jco ignores a name that matches nothing, so `build` checks that
/// each one the core imports really became a suspending import.
pub const ASYNC_IMPORTS: &[(&str, &str)] = &[
    ("edgeproxy:platform/body@0.1.0", "[method]body.read"),
    ("edgeproxy:platform/http-client@0.1.0", "send"),
    ("edgeproxy:platform/kv@0.1.0", "get"),
    ("edgeproxy:platform/kv@0.1.0", "set"),
    ("edgeproxy:platform/kv@0.1.0", "delete"),
    ("edgeproxy:platform/kv@0.1.0", "set-if-absent"),
    ("edgeproxy:platform/clock@0.1.0", "sleep-ms"),
    ("edgeproxy:platform/limiter@0.1.0", "check"),
    ("edgeproxy:platform/blob@0.1.0", "put"),
    ("edgeproxy:platform/blob@0.1.0", "get"),
    ("edgeproxy:platform/blob@0.1.0", "head"),
    ("edgeproxy:platform/blob@0.1.0", "delete"),
    ("edgeproxy:platform/blob@0.1.0", "list"),
];
/// Exports that may suspend; `stepwise`'s `begin` and `resume` never do, so
/// they are called without the stack JSPI allocates for each such call.
const ASYNC_EXPORTS: &[&str] = &["edgeproxy:platform/handler@0.1.0#handle", "edgeproxy:platform/stepwise@0.1.0#resume-waiting"];

pub fn build(root: &Path) -> anyhow::Result<()> {
    let module = crate::target_dir(root).join(format!("{}/release/edgeproxy.wasm", crate::CORE_TARGET));
    transpile(root, &root.join("dist/edgeproxy.wasm"), &module, &root.join("workers/build"))
}

/// `component` (built from the wasm32 `module`) transpiled by jco into
/// `out`, as `workers/worker.js` imports it from `build/`.
pub fn transpile(root: &Path, component: &Path, module: &Path, out: &Path) -> anyhow::Result<()> {
    npm_install(root)?;
    let _ = std::fs::remove_dir_all(out);
    let mut jco = Command::new(root.join("node_modules/.bin/jco"));
    jco.arg("transpile")
        .arg(component)
        .arg("-o")
        .arg(out)
        .args(["--name", "edgeproxy", "--instantiation", "async", "--async-mode", "jspi", "--no-wasi-shim", "--quiet"])
        .arg("--async-imports")
        .args(ASYNC_IMPORTS.iter().map(|(iface, func)| format!("{iface}#{func}")))
        .arg("--async-exports")
        .args(ASYNC_EXPORTS);
    crate::run(&mut jco)?;

    let js = std::fs::read_to_string(out.join("edgeproxy.js"))?;
    // Workers cannot compile wasm at run time: every module must be a file.
    ensure!(!js.contains("new WebAssembly.Module("), "jco inlined a wasm module into edgeproxy.js; Workers would refuse it");
    let used = core_imports(&std::fs::read(module).with_context(|| format!("read {}", module.display()))?)?;
    let expected = ASYNC_IMPORTS.iter().filter(|(iface, func)| used.iter().any(|(m, f)| m == iface && f == func)).count();
    let suspending = js.matches("new WebAssembly.Suspending(").count();
    ensure!(
        suspending == expected,
        "jco made {suspending} imports suspending, but the core uses {expected} of ASYNC_IMPORTS: a name is misspelt"
    );
    // What a deployment uploads: the JS and the core modules (not the .d.ts).
    let mut bundle = Vec::new();
    for entry in std::fs::read_dir(out)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "js" || e == "wasm") {
            bundle.extend(std::fs::read(&path)?);
        }
    }
    eprintln!(
        "xtask: {}: {suspending} suspending imports; bundle {} bytes raw, {} bytes gzip (Workers limits: 3 MB free, 10 MB paid, gzip)",
        out.display(),
        bundle.len(),
        crate::gzip_len(&bundle)
    );
    Ok(())
}

/// `wrangler deploy --dry-run`: proves wrangler.toml and the bundle are
/// deployable, without an account.
pub fn deploy_dry_run(root: &Path) -> anyhow::Result<()> {
    crate::run(
        Command::new(root.join("node_modules/.bin/wrangler"))
            .args(["deploy", "--dry-run", "--outdir"])
            .arg(root.join("target/wrangler-dry-run"))
            .env("WRANGLER_SEND_METRICS", "false")
            // wrangler 4 needs Node 22: the npm package `node` provides it.
            .env("PATH", format!("{}:{}", root.join("node_modules/.bin").display(), std::env::var("PATH").unwrap_or_default()))
            .current_dir(root),
    )
}

/// Installs the lockfile's packages when node_modules is missing or older
/// than the lockfile. Not `npm ci`: npm 11 refuses this lockfile there, for
/// lacking other platforms' optional binaries that `npm install` itself
/// leaves out; `install --no-save` follows the lockfile and leaves it alone.
fn npm_install(root: &Path) -> anyhow::Result<()> {
    let stamp = root.join("node_modules/.package-lock.json");
    let fresh = std::fs::metadata(&stamp)
        .and_then(|s| s.modified())
        .ok()
        .zip(std::fs::metadata(root.join("package-lock.json")).and_then(|l| l.modified()).ok())
        .is_some_and(|(installed, lock)| installed >= lock);
    if !fresh {
        crate::run(Command::new("npm").args(["install", "--no-save", "--no-audit", "--no-fund"]).current_dir(root))
            .context("npm install (is Node.js with npm installed?)")?;
    }
    Ok(())
}

/// `(module, field)` of every function the core module imports.
fn core_imports(module: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        if let wasmparser::Payload::ImportSection(section) = payload? {
            for imports in section {
                for import in imports? {
                    let (_, import) = import?;
                    out.push((import.module.to_owned(), import.name.to_owned()));
                }
            }
        }
    }
    Ok(out)
}
