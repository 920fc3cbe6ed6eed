//! One libFuzzer binary for every target of src/fuzz.rs: the target is
//! `EDGEPROXY_FUZZ_TARGET`, and its seeds are written into the corpus
//! directory `EDGEPROXY_FUZZ_CORPUS` when that is empty. Built and run by
//! `cargo xtask fuzz` with coverage instrumentation (stable Rust, no sanitizer).

#![no_main]

use std::sync::OnceLock;

use edgeproxy::fuzz;
use libfuzzer_sys::fuzz_target;

static TARGET: OnceLock<&'static fuzz::Target> = OnceLock::new();

fuzz_target!(
    init: {
        let name = std::env::var("EDGEPROXY_FUZZ_TARGET").expect("set EDGEPROXY_FUZZ_TARGET to a target of src/fuzz.rs");
        let target = fuzz::target(&name).unwrap_or_else(|| panic!("no fuzz target {name:?}"));
        if let Some(corpus) = std::env::var_os("EDGEPROXY_FUZZ_CORPUS").map(std::path::PathBuf::from) {
            std::fs::create_dir_all(&corpus).expect("create the corpus directory");
            if std::fs::read_dir(&corpus).map(|mut d| d.next().is_none()).unwrap_or(true) {
                for (i, seed) in (target.seeds)().into_iter().enumerate() {
                    std::fs::write(corpus.join(format!("seed-{i}")), seed).expect("write a seed");
                }
            }
        }
        TARGET.set(target).ok();
    },
    |data: &[u8]| (TARGET.get().expect("initialised").run)(data)
);
