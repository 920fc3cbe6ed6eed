//! The apps. Each is a [`crate::proxy::ProxyApp`] with its options type; the
//! config document (`crate::config`) names one per route.

pub mod api_gateway;
pub mod hf_mirror;
pub mod hub_gateway;
pub mod image_cache;
