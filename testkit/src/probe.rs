//! Where `cargo xtask test` puts the conformance probe (`probe/`) for each
//! host, and the rules `wit/edgeproxy.wit` states (`[rule: name]` in its doc
//! comments), which the probe checks.

use crate::workspace_root;

pub fn dir() -> std::path::PathBuf {
    workspace_root().join("target/probe")
}

/// Every rule the WIT states, in the order it states them. A rule's name is
/// its interface and what it is about: `kv.delete`.
pub fn wit_rules() -> Vec<String> {
    let wit = std::fs::read_to_string(workspace_root().join("wit/edgeproxy.wit")).expect("read wit/edgeproxy.wit");
    wit.split("[rule: ").skip(1).filter_map(|rest| rest.split_once(']')).map(|(name, _)| name.to_owned()).filter(|name| name.contains('.')).collect()
}
