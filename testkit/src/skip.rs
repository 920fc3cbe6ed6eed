//! Honest skips. A test that does not apply to the host of this pass says so
//! with [`skip`] and returns: libtest still counts it as passed, so the marker
//! line goes to the real stdout (past libtest's capture), and `cargo xtask
//! test` counts those lines per host and reports them as skipped, not passed.

use std::io::Write as _;

use crate::Host;

/// What `cargo xtask test` looks for in a line (libtest may have begun one of
/// its own on it).
pub const MARKER: &str = "edgeproxy-test-skipped:";

/// Records that the running test does not apply to this pass's host, and why.
pub fn skip(why: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_owned();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{MARKER} {} {test}: {why}", Host::kind());
}

/// True on `host`'s pass; elsewhere records a skip with `why` and is false:
/// `if !only_on("wasmtime", "a property of the host binary") { return; }`.
pub fn only_on(host: &str, why: &str) -> bool {
    let here = Host::kind() == host;
    if !here {
        skip(why);
    }
    here
}
