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

pub fn build(root: &Path, core: &Path) -> anyhow::Result<PathBuf> {
    crate::ensure_target(ADAPTER_TARGET)?;
    run(cargo().args(["build", "--package", "edgeproxy-spin-services", "--package", "edgeproxy-spin-front", "--release", "--target", ADAPTER_TARGET]))?;
    let adapter = |name: &str| -> anyhow::Result<Vec<u8>> {
        let path = root.join(format!("target/{ADAPTER_TARGET}/release/{name}.wasm"));
        std::fs::read(&path).with_context(|| format!("read {}", path.display()))
    };
    let (services, front) = (adapter("edgeproxy_spin_services")?, adapter("edgeproxy_spin_front")?);
    let core = std::fs::read(core).with_context(|| format!("read {}", core.display()))?;
    let composed = compose(services, core, front)?;

    let imports = edgeproxy_testkit::spin::check_spin_imports(&composed, &root.join("spin/wit"))
        .map_err(|problems| anyhow::anyhow!("dist/edgeproxy-spin.wasm would not link on Spin 4.0.x: {problems}"))?;
    let out = root.join("dist/edgeproxy-spin.wasm");
    std::fs::write(&out, &composed)?;
    eprintln!("xtask: dist/edgeproxy-spin.wasm: {} bytes raw, {} bytes gzip; imports {}", composed.len(), gzip_len(&composed), imports.join(", "));
    Ok(out)
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
