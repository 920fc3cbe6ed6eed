//! Builds the core component into the binary, so that `edgeproxy serve` runs
//! from any directory (`--component` still serves another file).
//!
//! `cargo xtask build` writes `dist/edgeproxy.wasm` before it builds this
//! crate, and that file is what is embedded. When it is missing (`cargo
//! install --path host` on a fresh clone), it is made first with `cargo
//! xtask core`, in a target directory of its own: this build holds the
//! lock of the usual one.

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("..");
    let component = root.join("dist/edgeproxy.wasm");
    println!("cargo::rerun-if-changed={}", component.display());
    if !component.exists() {
        build_component(&root);
    }
    let bytes = std::fs::read(&component).unwrap_or_else(|e| panic!("cannot read {}: {e}", component.display()));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("edgeproxy.wasm");
    std::fs::write(&out, &bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo::rustc-env=EDGEPROXY_COMPONENT_SHA256={digest}");
}

fn build_component(root: &Path) {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(root)
        .args(["run", "--quiet", "--package", "xtask", "--", "core"])
        .env("CARGO_TARGET_DIR", root.join("target/embedded-core"))
        // This build's own flags are for the host, not for the wasm build.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("cannot run cargo to build the core component");
    assert!(status.success(), "`cargo xtask core` failed; run `cargo xtask build` from the repository for the whole build");
}
