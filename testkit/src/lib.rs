//! Test parts shared by `tests/` and `cargo xtask bench`: a local upstream
//! that behaves in the ways a proxy must cope with, and [`Host`], which runs
//! edgeproxy on one of its hosts against a config document.

pub mod browser;
pub mod fixture;
pub mod hf;
pub mod hub;
pub mod host;
pub mod images;
pub mod metrics;
pub mod probe;
pub mod redis;
pub mod runaway;
pub mod s3;
pub mod skip;
pub mod spin;
pub mod upstream;

pub use host::{Host, original_setting};
pub use upstream::Upstream;

/// Byte `i` of every generated body: a pattern a receiver can check
/// without holding the body.
pub fn pattern_byte(i: u64) -> u8 {
    (i % 251) as u8
}

const PERIOD: usize = 251;
const MAX_CHUNK: usize = 256 * 1024;

fn pattern_table() -> &'static [u8] {
    static TABLE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| (0..(MAX_CHUNK + PERIOD) as u64).map(pattern_byte).collect())
}

/// Pattern bytes `start..start+len` (`len` at most 256 KiB), by slicing, so
/// gigabytes are cheap to make even in a debug build.
pub fn pattern_chunk(start: u64, len: usize) -> bytes::Bytes {
    assert!(len <= MAX_CHUNK);
    let offset = (start % PERIOD as u64) as usize;
    bytes::Bytes::copy_from_slice(&pattern_table()[offset..offset + len])
}

/// Whether `data` is the pattern from `start` on.
pub fn pattern_matches(start: u64, data: &[u8]) -> bool {
    data.chunks(MAX_CHUNK).enumerate().all(|(i, c)| {
        let offset = ((start + (i * MAX_CHUNK) as u64) % PERIOD as u64) as usize;
        c == &pattern_table()[offset..offset + c.len()]
    })
}

/// A streaming body of `len` pattern bytes, for uploads.
pub fn pattern_stream(len: u64) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Sync + 'static {
    const CHUNK: u64 = 64 * 1024;
    futures_util::stream::iter((0..len.div_ceil(CHUNK)).map(move |c| Ok(pattern_chunk(c * CHUNK, (CHUNK.min(len - c * CHUNK)) as usize))))
}

/// The top-level import names of a component.
pub fn component_imports(component: &[u8]) -> Result<Vec<String>, wasmparser::BinaryReaderError> {
    let mut names = Vec::new();
    let mut depth = 0;
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        match payload? {
            wasmparser::Payload::ModuleSection { .. } | wasmparser::Payload::ComponentSection { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            wasmparser::Payload::ComponentImportSection(section) if depth == 0 => {
                for import in section {
                    names.push(import?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

/// The code sections (the functions' bodies, as bytes) of every core module
/// in a component, nested ones included: what a set-up snapshot leaves as
/// it was, changing only data.
pub fn code_sections(component: &[u8]) -> Result<Vec<Vec<u8>>, wasmparser::BinaryReaderError> {
    let mut sections = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        if let wasmparser::Payload::CodeSectionStart { unchecked_range, .. } = payload? {
            let range = usize::try_from(unchecked_range.start).unwrap_or(usize::MAX)..usize::try_from(unchecked_range.end).unwrap_or(usize::MAX);
            if let Some(code) = component.get(range) {
                sections.push(code.to_vec());
            }
        }
    }
    Ok(sections)
}

/// The workspace root, for finding `dist/` and `target/`.
/// The wasmtime host binary the tests run: `EDGEPROXY_BIN` (what `cargo
/// xtask test` builds, target/host-test/edgeproxy), else the release build.
/// A document with each app on its own host name (`api.test`, `hf.test`,
/// `zoo.test`, `hub.test`), the proxies in front of `origin`.
pub fn every_app(origin: &str) -> String {
    format!(
        "[[route]]\nhost = \"api.test\"\n[route.api-gateway]\norigin = \"{origin}\"\n\n\
         [[route]]\nhost = \"hf.test\"\n[route.hf-mirror]\nhub = \"{origin}\"\n\n\
         [[route]]\nhost = \"zoo.test\"\n[route.image-cache]\n\n\
         [[route]]\nhost = \"hub.test\"\n[route.hub-gateway]\nbackend = \"{origin}\"\n"
    )
}

/// A document of `routes` api-gateway routes to `origin`, each with a CORS
/// list, of which only the last (`host = "*"`) matches a plain request: the
/// bench's measure of whether the document's size costs per request.
pub fn many_routes(origin: &str, routes: usize) -> String {
    let mut document = String::new();
    for i in 1..routes {
        let origins: Vec<String> = (0..5).map(|j| format!("\"https://app{j}.r{i}.test\"")).collect();
        document += &format!(
            "[[route]]\nhost = \"r{i}.test\"\npath = \"/v{i}\"\n[route.api-gateway]\norigin = \"{origin}\"\n[route.api-gateway.cors]\nallowed_origins = [{}]\n\n",
            origins.join(", ")
        );
    }
    document + &format!("[[route]]\nhost = \"*\"\n[route.api-gateway]\norigin = \"{origin}\"\n")
}

pub fn edgeproxy_binary() -> std::path::PathBuf {
    std::env::var_os("EDGEPROXY_BIN").map_or_else(|| workspace_root().join("target/release/edgeproxy"), std::path::PathBuf::from)
}

pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit lives in the workspace").to_path_buf()
}
