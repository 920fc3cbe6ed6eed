//! The toolkit every app shares: the phase runner ([`phases`]) and the pieces
//! a proxy needs around it. Apps compose these; they do not re-implement them.

pub mod blob_store;
pub mod cache;
pub mod cors;
pub mod error;
pub mod git;
pub mod headers;
pub mod incoming;
pub mod phases;
pub mod rate_limit;

pub use error::ProxyError;
pub use incoming::Incoming;
pub use phases::{ProxyApp, Session};
