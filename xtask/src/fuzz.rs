//! `cargo xtask fuzz [--seconds N] [TARGET...]`: libFuzzer, coverage-guided,
//! over every target of src/fuzz.rs (or those named) for N seconds each
//! (default 60). Stable Rust: sanitizer coverage without a sanitizer, as
//! `cargo fuzz --sanitizer none` builds it. Corpora grow in
//! target/fuzz-corpus/<target>; a crash is kept in fuzz/regressions/<target>/,
//! which the unit tests replay, and fails the run.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};

const HOST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// What `cargo fuzz build --sanitizer none` passes, minus nightly flags.
/// Overflow checks are on (an overflow the shipped build would wrap is a
/// finding); debug assertions are not, as in the shipped build: a
/// dependency's `debug_assert!` is its own contract, not ours.
const COVERAGE_FLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Coverflow-checks";

/// Every target's name, as src/fuzz.rs lists them.
fn all_targets(root: &Path) -> anyhow::Result<Vec<String>> {
    let source = std::fs::read_to_string(root.join("src/fuzz.rs"))?;
    let names: Vec<String> = source.lines().filter_map(|l| l.trim().strip_prefix("Target { name: \"")?.split('"').next().map(str::to_owned)).collect();
    ensure!(!names.is_empty(), "found no targets in src/fuzz.rs");
    Ok(names)
}

pub fn run(root: &Path, args: &[String]) -> anyhow::Result<()> {
    let mut seconds = 60u64;
    let mut chosen = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => seconds = args.next().context("--seconds needs a number")?.parse().context("--seconds needs a number")?,
            name => chosen.push(name.to_owned()),
        }
    }
    let targets = all_targets(root)?;
    if let Some(unknown) = chosen.iter().find(|c| !targets.contains(c)) {
        bail!("no fuzz target {unknown:?}; the targets are {}", targets.join(", "));
    }
    let chosen = if chosen.is_empty() { targets } else { chosen };

    // An explicit --target keeps the coverage flags off build scripts and proc macros.
    crate::run(
        crate::cargo()
            .args(["build", "--release", "--package", "edgeproxy-fuzz", "--target", HOST_TARGET, "--target-dir"])
            .arg(root.join("target/fuzz"))
            .env("RUSTFLAGS", COVERAGE_FLAGS)
            // Fat LTO would optimise the instrumentation away before it is added.
            .env("CARGO_PROFILE_RELEASE_LTO", "false")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16")
            .env("CARGO_PROFILE_RELEASE_PANIC", "abort"),
    )?;
    let binary = root.join(format!("target/fuzz/{HOST_TARGET}/release/edgeproxy-fuzz"));

    println!("| target | seconds | executions | exec/s | coverage (edges) | corpus | findings |");
    println!("|---|---|---|---|---|---|---|");
    let mut failed = Vec::new();
    for name in &chosen {
        let corpus = root.join("target/fuzz-corpus").join(name);
        let regressions = root.join("fuzz/regressions").join(name);
        std::fs::create_dir_all(&regressions)?;
        let out = Command::new(&binary)
            .arg(&corpus)
            .arg(format!("-max_total_time={seconds}"))
            .arg(format!("-artifact_prefix={}/", regressions.display()))
            .args(["-max_len=65536", "-rss_limit_mb=2048", "-print_final_stats=1"])
            .env("EDGEPROXY_FUZZ_TARGET", name)
            .env("EDGEPROXY_FUZZ_CORPUS", &corpus)
            .output()
            .with_context(|| format!("run {}", binary.display()))?;
        let log = String::from_utf8_lossy(&out.stderr);
        let stat = |key: &str| log.lines().rev().find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok());
        let runs = stat("stat::number_of_executed_units:").unwrap_or(0);
        let coverage = log.lines().rev().find_map(|l| l.split("cov: ").nth(1)?.split_whitespace().next()?.parse::<u64>().ok()).unwrap_or(0);
        let corpus_files = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        let found = !out.status.success();
        println!("| {name} | {seconds} | {runs} | {} | {coverage} | {corpus_files} | {} |", runs / seconds.max(1), if found { "CRASH" } else { "0" });
        if found {
            eprintln!("{}", log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n"));
            failed.push(name.clone());
        }
    }
    ensure!(failed.is_empty(), "fuzzing found crashes in {}; each input is kept in fuzz/regressions/<target>/ and replayed by `cargo test --lib fuzz`", failed.join(", "));
    Ok(())
}
