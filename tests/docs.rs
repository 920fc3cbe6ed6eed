//! The documentation (issue 27): README.md, ARCHITECTURE.md and docs/*.md.
//! Every relative link and anchor in them leads somewhere, every config
//! document they show passes `edgeproxy check`, and README stays short.
//! The convention for TOML blocks is in docs/README.md, "Writing these pages".

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use edgeproxy_testkit::{edgeproxy_binary, workspace_root};

/// The documents are the same whichever host a pass tests.
fn once() -> bool {
    edgeproxy_testkit::skip::only_on("wasmtime", "the documentation is the same on every host; checked on the wasmtime pass")
}

/// README.md, ARCHITECTURE.md (when `with_architecture`) and docs/*.md.
fn pages(with_architecture: bool) -> Vec<PathBuf> {
    let root = workspace_root();
    let mut pages = vec![root.join("README.md")];
    if with_architecture {
        pages.push(root.join("ARCHITECTURE.md"));
    }
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root()).unwrap_or(path).display().to_string()
}

/// A fenced code block: its info string, the line of its opening fence
/// (from 1) and its text, less the fence's indentation.
struct Block {
    info: String,
    line: usize,
    text: String,
}

/// A markdown page split into its lines outside fenced code blocks (with
/// their numbers, from 1) and its fenced blocks.
struct Page {
    prose: Vec<(usize, String)>,
    blocks: Vec<Block>,
}

impl Page {
    fn read(path: &Path) -> Page {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut page = Page { prose: Vec::new(), blocks: Vec::new() };
        // (fence, indentation, block) of the block being read.
        let mut open: Option<(String, usize, Block)> = None;
        for (i, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            let ticks = trimmed.len() - trimmed.trim_start_matches('`').len();
            match &mut open {
                Some((fence, _, _)) if ticks >= fence.len() && trimmed.trim_end().len() == ticks => {
                    page.blocks.push(open.take().unwrap().2);
                }
                Some((_, fence_indent, block)) => {
                    let strip = line.len() - line.trim_start().len();
                    block.text += &line[strip.min(*fence_indent)..];
                    block.text.push('\n');
                }
                // CommonMark: a backtick fence's info string holds no backtick.
                None if ticks >= 3 && !trimmed[ticks..].contains('`') => {
                    let block = Block { info: trimmed[ticks..].trim().to_owned(), line: i + 1, text: String::new() };
                    open = Some(("`".repeat(ticks), indent, block));
                }
                None => page.prose.push((i + 1, line.to_owned())),
            }
        }
        assert!(open.is_none(), "{}: a fenced block is never closed", path.display());
        page
    }

    /// GitHub's anchors for the page's headings: lower case, spaces as `-`,
    /// no characters but letters, digits, `-` and `_`; a repeated one gets
    /// `-1`, `-2`, ...
    fn anchors(&self) -> Vec<String> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut anchors = Vec::new();
        for (_, line) in &self.prose {
            let Some(heading) = line.strip_prefix('#') else { continue };
            let heading = heading.trim_start_matches('#');
            if !heading.starts_with(' ') {
                continue;
            }
            let slug: String = heading
                .trim()
                .trim_end_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect();
            let count = seen.entry(slug.clone()).or_insert(0);
            anchors.push(if *count == 0 { slug.clone() } else { format!("{slug}-{count}") });
            *count += 1;
        }
        anchors
    }

    /// The targets of the page's inline links and images, `[text](target)`,
    /// with their lines; code spans are not links.
    fn links(&self) -> Vec<(usize, String)> {
        let mut links = Vec::new();
        for (number, line) in &self.prose {
            let mut rest = without_code_spans(line);
            while let Some(at) = rest.find("](") {
                rest = rest[at + 2..].to_owned();
                let end = rest.find([')', ' ']).unwrap_or(rest.len());
                links.push((*number, rest[..end].trim_matches(['<', '>']).to_owned()));
            }
        }
        links
    }
}

/// `line` with its `code spans` removed.
fn without_code_spans(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(start) = rest.find('`') {
        out += &rest[..start];
        let ticks = rest[start..].len() - rest[start..].trim_start_matches('`').len();
        let fence = "`".repeat(ticks);
        let after = &rest[start + ticks..];
        match after.find(&fence) {
            Some(end) => rest = &after[end + ticks..],
            None => return out + &rest[start..],
        }
    }
    out + rest
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    if !once() {
        return;
    }
    let mut read: HashMap<PathBuf, Page> = HashMap::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    for path in pages(true) {
        let page = Page::read(&path);
        for (line, target) in page.links() {
            if ["http://", "https://", "mailto:"].iter().any(|scheme| target.starts_with(scheme)) {
                continue;
            }
            checked += 1;
            let (file, anchor) = match target.split_once('#') {
                Some((file, anchor)) => (file, Some(anchor)),
                None => (target.as_str(), None),
            };
            let linked = if file.is_empty() { path.clone() } else { path.parent().unwrap().join(file) };
            let at = format!("{}:{line}: ({target})", relative(&path));
            if !linked.exists() {
                broken.push(format!("{at}: no file {}", relative(&linked)));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if linked.extension().is_none_or(|e| e != "md") {
                broken.push(format!("{at}: an anchor in a file that is not markdown"));
                continue;
            }
            let linked = linked.canonicalize().unwrap();
            let anchors = read.entry(linked.clone()).or_insert_with(|| Page::read(&linked)).anchors();
            if !anchors.iter().any(|a| a == anchor) {
                broken.push(format!("{at}: {} has no heading #{anchor}", relative(&linked)));
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found: is the scanner broken?");
    assert!(broken.is_empty(), "{} broken links:\n{}", broken.len(), broken.join("\n"));
}

#[test]
fn every_toml_document_in_the_docs_passes_edgeproxy_check() {
    if !once() {
        return;
    }
    let dir = edgeproxy_testkit::hf::tempdir::Dir::new("docs");
    let mut failures = Vec::new();
    let mut checked = 0;
    for path in pages(false) {
        for block in Page::read(&path).blocks.into_iter().filter(|b| b.info == "toml") {
            checked += 1;
            let at = format!("{}:{}", relative(&path), block.line);
            let file = dir.path().join(format!("block-{checked}.toml"));
            std::fs::write(&file, &block.text).unwrap();
            let out = std::process::Command::new(edgeproxy_binary())
                .args(["check", "--config"])
                .arg(&file)
                .output()
                .unwrap_or_else(|e| panic!("run {}: {e}", edgeproxy_binary().display()));
            if !out.status.success() {
                let said = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
                failures.push(format!("{at}: `edgeproxy check` says ({}):\n{}\nof the block:\n{}", out.status, said.trim(), block.text));
            }
        }
    }
    assert!(checked >= 10, "only {checked} TOML documents found: is the scanner broken?");
    assert!(failures.is_empty(), "{} TOML documents fail `edgeproxy check` (give a block that is not a whole document a longer info string, as docs/README.md says):\n\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn readme_stays_short() {
    if !once() {
        return;
    }
    let size = std::fs::metadata(workspace_root().join("README.md")).unwrap().len();
    assert!(size <= 15_500, "README.md is {size} bytes, over 15,500: move detail into a page of docs/ and link it");
}
