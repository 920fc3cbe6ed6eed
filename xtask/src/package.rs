//! `cargo xtask package`: release artifacts that deploy without Rust, in
//! `dist/release/`, each a `.tar.gz` with the licences of what it bundles:
//!
//! - `edgeproxy-<version>-workers.tar.gz`: the transpiled Worker, its wasm
//!   modules and a `wrangler.toml` without a build step (`npx wrangler
//!   deploy` in the unpacked directory, with only Node);
//! - `edgeproxy-<version>-pages.tar.gz`: a Cloudflare Pages build output
//!   (`public/_worker.js/`, advanced mode, with its modules) and the
//!   `wrangler.toml` that names it, for the fork-and-connect flow (commit it,
//!   connect the repository to Pages, output directory `public`, no build
//!   command) or `npx wrangler pages dev`/`deploy`;
//! - `edgeproxy-<version>-spin.tar.gz`: `spin.toml` and the composed
//!   `edgeproxy-spin.wasm` (`spin up`, `spin registry push`), and
//!   `hub-gateway.spin.toml` with the web UI's static file component;
//! - `edgeproxy-<version>-<target>.tar.gz`: the host binary, the component
//!   embedded (`./edgeproxy serve`);
//! - `SHA256SUMS` over them.
//!
//! The licence check ([`check_licences`]) runs in `cargo xtask test` too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail, ensure};
use sha2::{Digest, Sha256};

/// Licences whose terms let their code ship inside an Apache-2.0 project
/// (permissive, or file-level copyleft that stays with its files). Any
/// other licence, GPL and AGPL among them, fails the check unless an `OR`
/// offers one of these.
const ALLOWED_LICENCES: &[&str] = &[
    "Apache-2.0",
    "MIT",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "0BSD",
    "Unlicense",
    "BSL-1.0",
    "Unicode-3.0",
    "CDLA-Permissive-2.0",
    "MPL-2.0",
    "IJG",
    "NCSA",
];

/// The workspace's packages whose code ships in an artifact (the rest are
/// tests, benchmarks and build tools).
const SHIPPED: &[&str] = &["edgeproxy", "edgeproxy-host", "edgeproxy-signing", "edgeproxy-spin-services", "edgeproxy-spin-front", "edgeproxy-spin-static-files", "edgeproxy-static-site"];

/// The npm package whose generated glue is bundled into the Worker.
const BUNDLED_NPM: &[&str] = &["@bytecodealliance/jco"];

/// A third party's package in an artifact.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ThirdParty {
    pub name: String,
    pub version: String,
    pub licence: String,
    pub source: String,
}

/// Every crate the workspace resolves (what ships and what builds or tests
/// it) has a licence on the allow-list; returns those that ship, and the
/// bundled npm packages.
pub fn check_licences(root: &Path) -> anyhow::Result<Vec<ThirdParty>> {
    let out = crate::cargo().args(["metadata", "--format-version", "1", "--locked"]).current_dir(root).output().context("cargo metadata")?;
    ensure!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let packages: BTreeMap<&str, &serde_json::Value> = metadata["packages"].as_array().into_iter().flatten().filter_map(|p| Some((p["id"].as_str()?, p))).collect();
    let members: BTreeSet<&str> = metadata["workspace_members"].as_array().into_iter().flatten().filter_map(|m| m.as_str()).collect();
    let nodes = metadata["resolve"]["nodes"].as_array().context("cargo metadata has no resolve graph")?;

    let mut refused = Vec::new();
    for node in nodes {
        let id = node["id"].as_str().unwrap_or_default();
        let package = packages.get(id).context("a resolved package cargo metadata does not describe")?;
        let licence = package["license"].as_str().unwrap_or_default();
        if !licence_allowed(licence) {
            refused.push(format!("{} {}: {}", package["name"].as_str().unwrap_or("?"), package["version"].as_str().unwrap_or("?"), if licence.is_empty() { "no licence stated" } else { licence }));
        }
    }

    // What ships: the normal dependencies of the shipped members, transitively.
    let deps: BTreeMap<&str, Vec<&str>> = nodes
        .iter()
        .map(|n| {
            let normal = n["deps"].as_array().into_iter().flatten().filter(|d| d["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null()));
            (n["id"].as_str().unwrap_or_default(), normal.filter_map(|d| d["pkg"].as_str()).collect())
        })
        .collect();
    let mut shipped: BTreeSet<&str> = members.iter().copied().filter(|id| packages.get(id).is_some_and(|p| SHIPPED.contains(&p["name"].as_str().unwrap_or_default()))).collect();
    let mut todo: Vec<&str> = shipped.iter().copied().collect();
    while let Some(id) = todo.pop() {
        for dep in deps.get(id).into_iter().flatten() {
            if shipped.insert(dep) {
                todo.push(dep);
            }
        }
    }
    // Crates vendored with our patches (vendor/) are workspace members but
    // someone else's code, under their own licences.
    let vendored = |id: &str| packages.get(id).and_then(|p| p["manifest_path"].as_str()).is_some_and(|path| Path::new(path).starts_with(root.join("vendor")));
    let mut third_parties: Vec<ThirdParty> = shipped
        .iter()
        .filter(|id| !members.contains(*id) || vendored(id))
        .filter_map(|id| packages.get(id))
        .map(|p| ThirdParty {
            name: p["name"].as_str().unwrap_or_default().into(),
            version: p["version"].as_str().unwrap_or_default().into(),
            licence: p["license"].as_str().unwrap_or_default().into(),
            source: p["repository"].as_str().unwrap_or("crates.io").into(),
        })
        .collect();

    let lock: serde_json::Value = serde_json::from_slice(&std::fs::read(root.join("package-lock.json")).context("read package-lock.json")?)?;
    for name in BUNDLED_NPM {
        let package = &lock["packages"][format!("node_modules/{name}")];
        let licence = package["license"].as_str().unwrap_or_default();
        if !licence_allowed(licence) {
            refused.push(format!("npm {name}: {licence}"));
        }
        third_parties.push(ThirdParty { name: (*name).into(), version: package["version"].as_str().unwrap_or_default().into(), licence: licence.into(), source: "npm".into() });
    }
    if !refused.is_empty() {
        bail!(
            "licences not on the allow-list (xtask/src/package.rs, ALLOWED_LICENCES: compatible with Apache-2.0):\n  {}\nReplace the dependency, or add the licence to the list only if it is compatible.",
            refused.join("\n  ")
        );
    }
    third_parties.sort();
    eprintln!("xtask: licences: {} resolved packages on the allow-list, {} third parties ship", nodes.len(), third_parties.len());
    Ok(third_parties)
}

/// An SPDX expression (`MIT OR Apache-2.0`, `(MIT OR Apache-2.0) AND
/// Unicode-3.0`, the old `MIT/Apache-2.0`) that the allow-list satisfies.
fn licence_allowed(expression: &str) -> bool {
    let Ok(expression) = spdx::Expression::parse_mode(expression, spdx::ParseMode::LAX) else { return false };
    expression.evaluate(|requirement| match &requirement.license {
        spdx::LicenseItem::Spdx { id, .. } => ALLOWED_LICENCES.contains(&id.name),
        spdx::LicenseItem::Other { .. } => false,
    })
}

/// The notices file of an artifact: our licence, then each third party.
fn notices(third_parties: &[ThirdParty]) -> String {
    let mut text = String::from(
        "# Third-party notices\n\nedgeproxy is licensed under Apache-2.0 (LICENSE). It bundles the following, each under its own licence\n(generated by `cargo xtask package` from `cargo metadata` and package-lock.json):\n\n| package | version | licence | source |\n|---|---|---|---|\n",
    );
    for t in third_parties {
        text.push_str(&format!("| {} | {} | {} | {} |\n", t.name, t.version, t.licence, t.source));
    }
    text
}

/// Writes `dist/release/` from what the build made: the host binary at
/// `host_binary`, `dist/edgeproxy-spin.wasm` (and the static file
/// component beside it) and `workers/build/`.
pub fn write(root: &Path, host_binary: &Path, third_parties: &[ThirdParty]) -> anyhow::Result<PathBuf> {
    let version = env!("CARGO_PKG_VERSION");
    let out = root.join("dist/release");
    if out.exists() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let common = |files: &mut Vec<(String, Vec<u8>, u32)>| -> anyhow::Result<()> {
        files.push(("LICENSE".into(), std::fs::read(root.join("LICENSE")).context("read LICENSE")?, 0o644));
        files.push(("THIRD-PARTY-NOTICES.md".into(), notices(third_parties).into_bytes(), 0o644));
        Ok(())
    };

    let worker_toml = release_wrangler_toml(&std::fs::read_to_string(root.join("wrangler.toml"))?)?;
    let mut built = Vec::new();
    for entry in std::fs::read_dir(root.join("workers/build"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "js" || e == "wasm") {
            built.push((format!("build/{}", path.file_name().unwrap().to_string_lossy()), std::fs::read(&path)?, 0o644));
        }
    }
    let worker_js = std::fs::read(root.join("workers/worker.js"))?;
    let hub_toml = without_build_step(&std::fs::read_to_string(root.join("workers/hub-gateway.wrangler.toml"))?)?;
    let mut workers = vec![
        ("worker.js".to_owned(), worker_js.clone(), 0o644),
        ("wrangler.toml".to_owned(), worker_toml.clone().into_bytes(), 0o644),
        ("hub-gateway.wrangler.toml".to_owned(), hub_toml.into_bytes(), 0o644),
        ("README.md".to_owned(), include_bytes!("package/workers-README.md").to_vec(), 0o644),
    ];
    workers.extend(built.iter().cloned());
    common(&mut workers)?;

    // Pages runs the same Worker as `_worker.js` (a directory: its modules beside it).
    let pages_toml = worker_toml.replace("main = \"worker.js\"\n", "pages_build_output_dir = \"public\"\n");
    let mut pages = vec![
        ("public/_worker.js/index.js".to_owned(), worker_js, 0o644),
        ("wrangler.toml".to_owned(), pages_toml.into_bytes(), 0o644),
        ("README.md".to_owned(), include_bytes!("package/pages-README.md").to_vec(), 0o644),
    ];
    pages.extend(built.into_iter().map(|(path, bytes, mode)| (format!("public/_worker.js/{path}"), bytes, mode)));
    common(&mut pages)?;

    let spin_manifest = |path: &str| -> anyhow::Result<Vec<u8>> { Ok(release_spin_manifest(&std::fs::read_to_string(root.join(path))?)?.into_bytes()) };
    let mut spin = vec![
        ("spin.toml".to_owned(), spin_manifest("spin.toml")?, 0o644),
        ("hub-gateway.spin.toml".to_owned(), spin_manifest("spin/hub-gateway.spin.toml")?, 0o644),
        ("edgeproxy-spin.wasm".to_owned(), std::fs::read(root.join("dist/edgeproxy-spin.wasm")).context("build dist/edgeproxy-spin.wasm first")?, 0o644),
        ("edgeproxy-static-files.wasm".to_owned(), std::fs::read(root.join(crate::spin::STATIC_FILES)).context("build it first: cargo xtask spin")?, 0o644),
        ("README.md".to_owned(), include_bytes!("package/spin-README.md").to_vec(), 0o644),
    ];
    common(&mut spin)?;

    let mut host = vec![
        ("edgeproxy".to_owned(), std::fs::read(host_binary).with_context(|| format!("read {}", host_binary.display()))?, 0o755),
        ("README.md".to_owned(), include_bytes!("package/host-README.md").to_vec(), 0o644),
    ];
    common(&mut host)?;

    let target = host_target()?;
    let mut sums = String::new();
    for (name, files) in [("workers", workers), ("pages", pages), ("spin", spin), (target.as_str(), host)] {
        let dir = format!("edgeproxy-{version}-{name}");
        let tarball = format!("{dir}.tar.gz");
        let bytes = tar_gz(&dir, &files)?;
        std::fs::write(out.join(&tarball), &bytes)?;
        let sum = format!("{:x}", Sha256::digest(&bytes));
        std::fs::write(out.join(format!("{tarball}.sha256")), format!("{sum}  {tarball}\n"))?;
        sums.push_str(&format!("{sum}  {tarball}\n"));
        eprintln!("xtask: dist/release/{tarball}: {} bytes, sha256 {sum}", bytes.len());
    }
    std::fs::write(out.join("SHA256SUMS"), sums)?;
    Ok(out)
}

/// `wrangler.toml` for the unpacked bundle: the Worker at `worker.js`
/// beside it, and no build step (the bundle is built).
fn release_wrangler_toml(text: &str) -> anyhow::Result<String> {
    ensure!(text.contains("main = \"workers/worker.js\"\n"), "wrangler.toml's main changed: update release_wrangler_toml");
    without_build_step(&text.replace("main = \"workers/worker.js\"\n", "main = \"worker.js\"\n"))
}

/// A wrangler configuration without its `[build]` table (up to the next blank line).
fn without_build_step(text: &str) -> anyhow::Result<String> {
    let start = text.find("\n[build]\n").context("a wrangler configuration without [build]: update without_build_step")? + 1;
    let end = text[start..].find("\n\n").map_or(text.len(), |n| start + n + 2);
    Ok(format!("{}{}", &text[..start], &text[end..]))
}

/// A Spin manifest for the unpacked application: its components' `.wasm`
/// beside it (`dist/X` or `../dist/X` becomes `X`), and no build step.
fn release_spin_manifest(text: &str) -> anyhow::Result<String> {
    let (before, build) = text.split_once("\n[component.edgeproxy.build]\n").context("a Spin manifest without [component.edgeproxy.build]: update release_spin_manifest")?;
    let after = build.split_once("\n[").map(|(_, rest)| format!("\n[{rest}")).unwrap_or_default();
    ensure!(before.contains("source = \"dist/") || before.contains("source = \"../dist/"), "a Spin manifest's sources moved out of dist/: update release_spin_manifest");
    Ok(format!("{}\n{after}", before.replace("source = \"../dist/", "source = \"").replace("source = \"dist/", "source = \"")))
}

/// The host's target triple (`rustc -vV`), which names the binary's tarball.
fn host_target() -> anyhow::Result<String> {
    let out = Command::new("rustc").arg("-vV").output().context("rustc -vV")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines().find_map(|l| l.strip_prefix("host: ")).map(str::to_owned).context("rustc -vV names no host")
}

/// A `.tar.gz` of `files` (path, bytes, mode) under the directory `dir`,
/// with fixed times and owners, so the same inputs make the same bytes.
fn tar_gz(dir: &str, files: &[(String, Vec<u8>, u32)]) -> anyhow::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let mut tar = tar::Builder::new(gz);
    let mut sorted: Vec<&(String, Vec<u8>, u32)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, bytes, mode) in sorted {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("{dir}/{path}"), bytes.as_slice())?;
    }
    Ok(tar.into_inner()?.finish()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_takes_permissive_licences_and_refuses_gpl_unless_an_or_offers_another() {
        for ok in ["MIT OR Apache-2.0", "MIT/Apache-2.0", "Apache-2.0 WITH LLVM-exception", "(MIT OR Apache-2.0) AND Unicode-3.0", "MIT OR Apache-2.0 OR LGPL-2.1-or-later", "MPL-2.0+"] {
            assert!(licence_allowed(ok), "{ok}");
        }
        for refused in ["GPL-3.0", "AGPL-3.0-only", "MIT AND GPL-2.0", "AGPL-3.0-or-later OR LicenseRef-Commercial", "", "not a licence"] {
            assert!(!licence_allowed(refused), "{refused}");
        }
    }
}
