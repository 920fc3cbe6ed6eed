//! Test parts shared by `tests/` and `cargo xtask bench`: a local upstream
//! that behaves in the ways a proxy must cope with, and [`Host`], which runs
//! edgeproxy on one of its hosts against a config document.

pub mod host;
pub mod upstream;

pub use host::Host;
pub use upstream::Upstream;

/// Byte `i` of every generated body: a pattern a receiver can check
/// without holding the body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// The workspace root, for finding `dist/` and `target/`.
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit lives in the workspace").to_path_buf()
}
