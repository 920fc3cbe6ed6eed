//! Test-only guests that misbehave on purpose, for the hosts' guest limits:
//! a request whose path ends in `/loop` spins forever, one ending in
//! `/alloc` grows its memory forever. Written in WAT and made into
//! components here, so no wasm toolchain is needed to build them.

use wit_component::{ComponentEncoder, StringEncoding, embed_component_metadata};
use wit_parser::Resolve;

use crate::workspace_root;

/// A bump allocator (the canonical ABI lowers strings into the guest with
/// it) and the two runaway behaviours, on the byte the path ends with.
const COMMON: &str = r#"
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 65536))
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $at i32)
    (local.set $at (i32.and (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
                            (i32.sub (i32.const 0) (local.get 2))))
    (global.set $bump (i32.add (local.get $at) (local.get 3)))
    (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.shr_u (local.get 3) (i32.const 16)) (i32.const 1))))))
    (local.get $at))
  ;; Runs away if the string at ptr/len ends in "loop" (p) or "alloc" (c).
  ;; The allocation writes to every new 4 KiB page, so that it is resident.
  (func $run_away (param $ptr i32) (param $len i32)
    (local $last i32) (local $at i32) (local $page i32)
    (if (i32.eqz (local.get $len)) (then (return)))
    (local.set $last (i32.load8_u (i32.sub (i32.add (local.get $ptr) (local.get $len)) (i32.const 1))))
    (if (i32.eq (local.get $last) (i32.const 112))
      (then (loop $spin (br $spin))))
    (if (i32.eq (local.get $last) (i32.const 99))
      (then (loop $grow
        (local.set $at (i32.mul (memory.grow (i32.const 16)) (i32.const 65536)))
        (local.set $page (i32.const 0))
        (loop $touch
          (i32.store8 (i32.add (local.get $at) (i32.mul (local.get $page) (i32.const 4096))) (i32.const 1))
          (local.set $page (i32.add (local.get $page) (i32.const 1)))
          (br_if $touch (i32.lt_u (local.get $page) (i32.const 256))))
        (br $grow)))))
"#;

/// For `edgeproxy serve`: exports edgeproxy's `handler` (any other path
/// answers 204 at once), a `checker` that finds nothing and an `init` that
/// does nothing, and `stepwise` stubs.
pub fn edgeproxy_component() -> Vec<u8> {
    // handle(request, client-ip) flattens to 11 i32s: method, url, headers,
    // body option, client-ip option. The response record is returned by
    // pointer: status (u16) at 0, headers (ptr, len) at 4, body option at 12.
    let wat = format!(
        r#"(module {COMMON}
          (func (export "edgeproxy:platform/handler@0.1.0#handle")
                (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
            (call $run_away (local.get 2) (local.get 3))
            (i32.store16 (i32.const 1024) (i32.const 204))
            (i32.const 1024))
          ;; check-config(document) -> list<string>: always empty, returned
          ;; by pointer as (ptr, len).
          (func (export "edgeproxy:platform/checker@0.1.0#check-config") (param i32 i32) (result i32)
            (i32.const 2048))
          (func (export "init"))
          ;; stepwise: begin answers `wait` (case 2), resume `none`, and
          ;; resume-waiting a 500; the wasmtime host never calls them.
          (func (export "edgeproxy:platform/stepwise@0.1.0#begin")
                (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
            (i32.store8 (i32.const 3072) (i32.const 2))
            (i32.const 3072))
          (func (export "edgeproxy:platform/stepwise@0.1.0#resume") (param i32 i32 i32 i32 i32 i32) (result i32)
            (i32.const 3584))
          (func (export "edgeproxy:platform/stepwise@0.1.0#resume-waiting") (param i32 i32 i32 i32 i32 i32) (result i32)
            (i32.store16 (i32.const 1024) (i32.const 500))
            (i32.const 1024)))"#
    );
    let mut resolve = Resolve::default();
    let (package, _) = resolve.push_dir(workspace_root().join("wit")).expect("wit/ parses");
    let world = resolve.select_world(&[package], Some("edgeproxy")).expect("the edgeproxy world");
    encode(&wat, &resolve, world)
}

/// For Spin: exports `wasi:http/incoming-handler@0.2.0`; any other path
/// returns without a response (the host answers it at once).
pub fn spin_component() -> Vec<u8> {
    // path-with-query(request) -> option<string>, returned by pointer:
    // discriminant at 0, string (ptr, len) at 4.
    let wat = format!(
        r#"(module
          (import "wasi:http/types@0.2.0" "[method]incoming-request.path-with-query" (func $path (param i32 i32)))
          {COMMON}
          (func (export "wasi:http/incoming-handler@0.2.0#handle") (param i32 i32)
            (call $path (local.get 0) (i32.const 1024))
            (if (i32.load8_u (i32.const 1024))
              (then (call $run_away (i32.load (i32.const 1028)) (i32.load (i32.const 1032)))))))"#
    );
    let mut resolve = Resolve::default();
    resolve.push_dir(workspace_root().join("spin/wit")).expect("spin/wit parses");
    let package = resolve
        .push_str(
            "runaway.wit",
            "package edgeproxy:runaway; world runaway { import wasi:http/types@0.2.0; export wasi:http/incoming-handler@0.2.0; }",
        )
        .expect("the runaway world parses");
    let world = resolve.select_world(&[package], Some("runaway")).expect("the runaway world");
    encode(&wat, &resolve, world)
}

fn encode(wat: &str, resolve: &Resolve, world: wit_parser::WorldId) -> Vec<u8> {
    let mut module = wat::parse_str(wat).expect("the WAT parses");
    embed_component_metadata(&mut module, resolve, world, StringEncoding::UTF8, false).expect("metadata embeds");
    ComponentEncoder::default().module(&module).expect("a module").validate(true).encode().expect("a valid component")
}
