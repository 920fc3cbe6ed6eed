//! Set-up, apart from serving. Everything that depends only on the config
//! document (the checked routes, their options, matchers and tables) is
//! built once per document and kept for the life of the instance; a request
//! only reads it.
//!
//! Each host gets there its own way (ARCHITECTURE.md, "Set-up and
//! serving"): the wasmtime host snapshots an instance after the `init`
//! export ran, so every request's fresh instance starts set up; Workers
//! reuse instances; Spin's artifact is snapshotted with its manifest's
//! document. Whatever the host does, a request checks that the set-up is
//! of the document it is given (by the host's document version, or else by
//! the document's text), so a changed document (a reload, a new deployment)
//! is set up again and never served stale.
//!
//! Secrets are never part of the set-up: they stay behind `config.get`,
//! read when a request needs them.

use std::cell::Cell;

use crate::config::Document;

/// The set-up of one document.
pub struct Setup {
    /// The document's text, to notice a changed one.
    text: Box<str>,
    /// The host's name for this document, when it gives one.
    version: Option<Box<str>>,
    /// The checked document, or its first problem (each request gets it as
    /// a 500; `edgeproxy check` reports every problem).
    pub document: Result<Document, String>,
}

thread_local! {
    /// The set-up being served. Leaked when replaced, which happens only
    /// when the document changes: on wasm the arena keeps everything
    /// allocated before its mark anyway (`arena.rs`).
    static CURRENT: Cell<Option<&'static Setup>> = const { Cell::new(None) };
}

/// The kept set-up, if the host's document `version` is the one it was
/// built for: the fast path, with no document to fetch or compare.
pub fn for_version(version: &str) -> Option<&'static Setup> {
    CURRENT.get().filter(|setup| setup.version.as_deref() == Some(version))
}

/// The set-up for the document `text` (named `version` by the host, if it
/// names it): the kept one when it is the same document, or else built now
/// and kept from then on.
pub fn for_document(text: &str, version: Option<&str>) -> &'static Setup {
    if let Some(setup) = CURRENT.get()
        && *setup.text == *text
        && setup.version.as_deref() == version
    {
        return setup;
    }
    let setup: &'static Setup = Box::leak(Box::new(Setup { text: text.into(), version: version.map(Box::from), document: Document::parse(text) }));
    CURRENT.set(Some(setup));
    // What was just built outlives this request: keep it below the mark a
    // reused instance's arena returns to (arena.rs).
    #[cfg(target_family = "wasm")]
    crate::arena::keep_allocations();
    setup
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "[[route]]\nhost = \"a.test\"\n[route.api-gateway]\norigin = \"https://a.example\"\n";
    const TWO: &str = "[[route]]\nhost = \"b.test\"\n[route.api-gateway]\norigin = \"https://b.example\"\n";

    #[test]
    fn the_same_document_is_set_up_once() {
        let first = for_document(ONE, None);
        assert!(std::ptr::eq(first, for_document(ONE, None)));
        assert!(std::ptr::eq(first, for_document(&ONE.to_owned(), None)), "compared by content, not by address");
    }

    #[test]
    fn a_version_finds_its_set_up_without_the_document() {
        assert!(for_version("v1").is_none(), "nothing set up under v1 yet");
        let one = for_document(ONE, Some("v1"));
        assert!(std::ptr::eq(one, for_version("v1").unwrap()));
        assert!(for_version("v2").is_none(), "another version is another document");
        let two = for_document(TWO, Some("v2"));
        assert!(for_version("v1").is_none(), "the old version's set-up is gone");
        assert!(std::ptr::eq(two, for_version("v2").unwrap()));
    }

    #[test]
    fn a_changed_document_is_set_up_again() {
        let one = for_document(ONE, None);
        let two = for_document(TWO, None);
        assert!(!std::ptr::eq(one, two));
        assert!(two.document.as_ref().unwrap().route("b.test", "/").is_some());
        assert!(two.document.as_ref().unwrap().route("a.test", "/").is_none(), "the old routes are gone");
        let broken = for_document("[[route]]\nhost = 1\n", None);
        assert!(broken.document.is_err());
        assert!(for_document(ONE, None).document.as_ref().unwrap().route("a.test", "/").is_some(), "and back");
    }
}
