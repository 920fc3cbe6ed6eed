//! The check that `dist/edgeproxy-spin.wasm` imports only what Spin 4.0.x
//! links: every imported interface, and every function and type it uses,
//! must be in the `spin-host` world of spin/wit/adapter.wit.

use std::collections::BTreeSet;
use std::path::Path;

use wit_parser::{Resolve, WorldItem, WorldKey};

/// The imported interfaces of `component` (`wasi:http/types@0.2.0`, ...),
/// or what in them Spin does not provide.
pub fn check_spin_imports(component: &[u8], spin_wit: &Path) -> Result<Vec<String>, String> {
    let mut spin = Resolve::default();
    let (package, _) = spin.push_dir(spin_wit).map_err(|e| format!("cannot read {}: {e:#}", spin_wit.display()))?;
    let world = spin.select_world(&[package], Some("spin-host")).map_err(|e| e.to_string())?;
    let provided = interfaces(&spin, &spin.worlds[world].imports);

    let decoded = wit_component::decode(component).map_err(|e| format!("not a component: {e:#}"))?;
    let (resolve, world) = match &decoded {
        wit_component::DecodedWasm::Component(resolve, world) => (resolve, *world),
        wit_component::DecodedWasm::WitPackage(..) => return Err("a WIT package, not a component".into()),
    };
    let mut problems = Vec::new();
    let mut names = Vec::new();
    for (name, items) in interfaces(resolve, &resolve.worlds[world].imports) {
        match provided.iter().find(|(n, _)| *n == name) {
            None => problems.push(format!("{name} is not an interface Spin 4.0.x links")),
            Some((_, spin_items)) => problems.extend(items.difference(spin_items).map(|item| format!("{name}: Spin's {name} has no {item}"))),
        }
        names.push(name);
    }
    if problems.is_empty() { Ok(names) } else { Err(problems.join("; ")) }
}

/// Each imported interface's name with the names of its functions and types.
fn interfaces(resolve: &Resolve, items: &wit_parser::IndexMap<WorldKey, WorldItem>) -> Vec<(String, BTreeSet<String>)> {
    items
        .iter()
        .filter_map(|(key, item)| match (key, item) {
            (WorldKey::Interface(id), WorldItem::Interface { .. }) => {
                let iface = &resolve.interfaces[*id];
                let members = iface.functions.keys().map(|f| format!("function {f}")).chain(iface.types.keys().map(|t| format!("type {t}"))).collect();
                Some((resolve.id_of(*id)?, members))
            }
            _ => None,
        })
        .collect()
}

/// The config document `spin.toml` declares as its default (`[variables]
/// document`): what `spin up` of the manifest serves unless told otherwise.
pub fn manifest_document(manifest: &str) -> Option<String> {
    let manifest: toml::Table = toml::from_str(manifest).ok()?;
    manifest.get("variables")?.get("document")?.get("default")?.as_str().map(str::to_owned)
}
