//! The conformance probe (`probe/`), built for each host the suite runs it
//! on, as that host runs the core: `target/probe/probe.wasm` (the wasmtime
//! host's `--component`), `target/probe/workers/` (worker.js with the probe
//! transpiled into `build/`) and `target/probe/probe-spin.wasm` (between the
//! Spin adapters). `tests/conformance.rs` finds them there
//! (`testkit::probe`).

use std::path::Path;

use anyhow::Context;

use crate::{CORE_TARGET, cargo, run};

pub fn build(root: &Path) -> anyhow::Result<()> {
    crate::ensure_target(CORE_TARGET)?;
    run(cargo().args(["build", "--package", "edgeproxy-probe", "--release", "--target", CORE_TARGET]))?;
    let component = crate::componentize(root, "edgeproxy_probe")?;
    let dir = edgeproxy_testkit::probe::dir();
    std::fs::create_dir_all(dir.join("workers"))?;
    let wasm = dir.join("probe.wasm");
    std::fs::write(&wasm, &component)?;
    let module = crate::target_dir(root).join(format!("{CORE_TARGET}/release/edgeproxy_probe.wasm"));
    crate::workers::transpile(root, &wasm, &module, &dir.join("workers/build"))?;
    std::fs::copy(root.join("workers/worker.js"), dir.join("workers/worker.js")).context("copy workers/worker.js")?;
    crate::spin::compose_artifact(root, component, &dir.join("probe-spin.wasm"))
}
