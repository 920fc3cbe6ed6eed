//! A 64 KiB stack instead of Rust's default 1 MiB: Spin makes an instance of
//! this adapter per request and resets its whole initial memory after each
//! one, so every unused stack page costs a memset per request (BENCHMARKS.md,
//! issue 24, Spin).
fn main() {
    println!("cargo::rustc-link-arg-cdylib=-zstack-size=65536");
}
