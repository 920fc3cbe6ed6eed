//! `cargo xtask spin`: composes `dist/edgeproxy-spin.wasm`, the unchanged
//! core between the two Spin adapter components (spin/wit/adapter.wit):
//! services -> core -> front. Composition is wac-graph, as `wac` and Spin's
//! own `dependencies` do it.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use wac_graph::types::Package;
use wac_graph::{CompositionGraph, EncodeOptions, NodeId};

use crate::{cargo, gzip_len, run};

/// The adapter components' target: spin-sdk's dependencies expect WASI (on
/// wasm32-unknown-unknown, chrono would link wasm-bindgen's JavaScript glue),
/// and rustc makes a component for this target itself.
const ADAPTER_TARGET: &str = "wasm32-wasip2";

/// What Spin calls: the one export of the composed component.
const HTTP_HANDLER: &str = "wasi:http/incoming-handler@0.2.0";

/// `dist/edgeproxy-spin.wasm`, with spin.toml's default document set up in
/// its core (see [`set_up`]).
pub fn build(root: &Path, core: &Path) -> anyhow::Result<PathBuf> {
    let manifest = std::fs::read_to_string(root.join("spin.toml")).context("read spin.toml")?;
    let document = edgeproxy_testkit::spin::manifest_document(&manifest).context("spin.toml declares no default `document` variable")?;
    let out = root.join("dist/edgeproxy-spin.wasm");
    build_with_document(root, core, &document, &out)?;
    Ok(out)
}

/// The Spin artifact at `out`, its core set up with `document`.
pub fn build_with_document(root: &Path, core: &Path, document: &str, out: &Path) -> anyhow::Result<()> {
    let core = set_up(root, core, document)?;
    compose_artifact(root, core, out)
}

/// `core` (the core, or a stand-in for it such as the conformance probe)
/// between the Spin adapters, written to `out`.
pub fn compose_artifact(root: &Path, core: Vec<u8>, out: &Path) -> anyhow::Result<()> {
    crate::ensure_target(ADAPTER_TARGET)?;
    run(cargo().args(["build", "--package", "edgeproxy-spin-services", "--package", "edgeproxy-spin-front", "--package", "edgeproxy-spin-static-files", "--release", "--target", ADAPTER_TARGET]))?;
    let adapter = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = root.join(format!("target/{ADAPTER_TARGET}/release/{name}.wasm"));
        std::fs::read(&path).with_context(|| format!("read {}", path.display()))
    };
    let (services, front) = (adapter("edgeproxy_spin_services")?, adapter("edgeproxy_spin_front")?);
    write_for_spin(root, &compose(services, core, front)?, out)?;
    // spin/hub-gateway.spin.toml's web UI component, beside it.
    write_for_spin(root, &adapter("edgeproxy_spin_static_files")?, &root.join(STATIC_FILES))
}

/// spin/hub-gateway.spin.toml's static file component for the web UI.
pub const STATIC_FILES: &str = "dist/edgeproxy-static-files.wasm";

/// `component` at `out`, once it is known to link on Spin 4.0.x; an
/// unchanged file is left alone (its mtime would rebuild what depends on it).
fn write_for_spin(root: &Path, component: &[u8], out: &Path) -> anyhow::Result<()> {
    let imports = edgeproxy_testkit::spin::check_spin_imports(component, &root.join("spin/wit"))
        .map_err(|problems| anyhow::anyhow!("{} would not link on Spin 4.0.x: {problems}", out.display()))?;
    crate::write_if_changed(out, component)?;
    eprintln!("xtask: {}: {} bytes raw, {} bytes gzip; imports {}", out.display(), component.len(), gzip_len(component), imports.join(", "));
    Ok(())
}

/// The core with `document` set up in it (`edgeproxy preinit`): Spin makes
/// an instance per request and gives the document as a variable, so a core
/// set up with the document it is given serves at once, and one given
/// another sets itself up per request (docs/spin.md). Needs the
/// host binary; without one, the core as built, with a warning.
fn set_up(root: &Path, core: &Path, document: &str) -> anyhow::Result<Vec<u8>> {
    let newest_host = ["target/host-test/edgeproxy", "target/release/edgeproxy"]
        .iter()
        .map(|p| root.join(p))
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p);
    let Some(host) = newest_host else {
        eprintln!("xtask: WARNING: no host binary built yet, so the Spin artifact's core is not set up ahead (it sets up per request)");
        return std::fs::read(core).with_context(|| format!("read {}", core.display()));
    };
    let dir = crate::target_dir(root).join("spin-preinit");
    std::fs::create_dir_all(&dir)?;
    let (config, output) = (dir.join("document.toml"), dir.join("core-set-up.wasm"));
    std::fs::write(&config, document)?;
    run(std::process::Command::new(&host).arg("preinit").arg("--config").arg(&config).arg("--component").arg(core).arg("--output").arg(&output))?;
    std::fs::read(&output).with_context(|| format!("read {}", output.display()))
}

fn compose(services: Vec<u8>, core: Vec<u8>, front: Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut graph = CompositionGraph::new();
    let mut register = |name: &str, bytes: Vec<u8>| -> anyhow::Result<_> {
        let package = Package::from_bytes(&format!("edgeproxy:{name}"), None, bytes, graph.types_mut())?;
        Ok(graph.register_package(package)?)
    };
    let services = register("spin-services", services)?;
    let core = register("core", core)?;
    let front = register("spin-front", front)?;

    let services = graph.instantiate(services);
    let core = graph.instantiate(core);
    let front = graph.instantiate(front);
    wire(&mut graph, &[services], core)?;
    wire(&mut graph, &[services, core], front)?;
    let handler = graph.alias_instance_export(front, HTTP_HANDLER)?;
    graph.export(handler, HTTP_HANDLER)?;
    // Imports nobody here provides (wasi:*) become imports of the result.
    Ok(graph.encode(EncodeOptions::default())?)
}

/// Satisfies each import of `instance` with the same-named export of the first of `providers` that has one.
fn wire(graph: &mut CompositionGraph, providers: &[NodeId], instance: NodeId) -> anyhow::Result<()> {
    let package = graph[instance].package().expect("an instantiation");
    let imports: Vec<String> = graph.types()[graph[package].ty()].imports.keys().cloned().collect();
    for name in imports {
        let provider = providers.iter().copied().find(|p| {
            let package = graph[*p].package().expect("an instantiation");
            graph.types()[graph[package].ty()].exports.contains_key(&name)
        });
        if let Some(provider) = provider {
            let export = graph.alias_instance_export(provider, &name)?;
            graph.set_instantiation_argument(instance, &name, export)?;
        } else if name.starts_with("edgeproxy:") {
            bail!("nothing in the Spin composition exports {name}");
        }
    }
    Ok(())
}
