//! Set-up, apart from serving. Everything that depends only on the config
//! document (the checked routes, their options, matchers and tables) is
//! built once per document and kept for the life of the instance; a request
//! only reads it.
//!
//! Each host gets there its own way (ARCHITECTURE.md, "Set-up and
//! serving"): the wasmtime host snapshots an instance after the `init`
//! export ran, so every request's fresh instance starts set up; Workers
//! reuse instances; Spin's artifact is snapshotted with its manifest's
//! document. Whatever the host does, a request compares the document it is
//! given with the one set up, so a changed document (a reload, a new
//! deployment) is set up again and never served stale.
//!
//! Secrets are never part of the set-up: they stay behind `config.get`,
//! read when a request needs them.

use std::cell::Cell;

use crate::config::Document;

/// The set-up of one document.
pub struct Setup {
    /// The document's text, to notice a changed one.
    text: Box<str>,
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

/// The set-up for the document `text`: the kept one when it is the same
/// document, or else built now and kept from then on.
pub fn for_document(text: &str) -> &'static Setup {
    if let Some(setup) = CURRENT.get()
        && *setup.text == *text
    {
        return setup;
    }
    let setup: &'static Setup = Box::leak(Box::new(Setup { text: text.into(), document: Document::parse(text) }));
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
        let first = for_document(ONE);
        assert!(std::ptr::eq(first, for_document(ONE)));
        assert!(std::ptr::eq(first, for_document(&ONE.to_owned())), "compared by content, not by address");
    }

    #[test]
    fn a_changed_document_is_set_up_again() {
        let one = for_document(ONE);
        let two = for_document(TWO);
        assert!(!std::ptr::eq(one, two));
        assert!(two.document.as_ref().unwrap().route("b.test", "/").is_some());
        assert!(two.document.as_ref().unwrap().route("a.test", "/").is_none(), "the old routes are gone");
        let broken = for_document("[[route]]\nhost = 1\n");
        assert!(broken.document.is_err());
        assert!(for_document(ONE).document.as_ref().unwrap().route("a.test", "/").is_some(), "and back");
    }
}
