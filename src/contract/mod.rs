//! The contract: what a Bottle means ([`api`], [`model`]) and the file each sidecar reads
//! ([`config`]). The operator writes it, the sidecars read it; neither side redefines it.

#[cfg(feature = "operator")]
pub mod api;
pub mod config;
#[cfg(feature = "operator")]
pub mod model;
