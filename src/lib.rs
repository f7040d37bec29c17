//! bottle-operator: runs AI coding agents in sandboxed Kubernetes Pods ("bottles").
//!
//! Layout follows the architecture: [`api`] (the CRD), [`model`] (what a bottle means, no
//! Kubernetes types), [`config`] (one config type per sidecar, shared by renderer and sidecar),
//! [`render`] (pure Bottle → objects), [`operator`] (reconcile, apply, report) and
//! [`sidecar`] (helpers that run inside the Pod). The proxy sidecars are [`egress`] and
//! [`cred_proxy`], built on the shared [`proxy`] core.
//!
//! The `operator` feature (on by default) gates `api`, `model`, `render`, `operator` and
//! `plugin` together with the Kubernetes client and the CRD schema crates: what runs in the
//! Pod (`bottle-sidecar`) is built without it and reaches only `config` and the in-Pod modules.

#[cfg(feature = "operator")]
pub mod api;
pub mod config;
pub mod cred_proxy;
pub mod egress;
pub mod git_gate;
#[cfg(feature = "operator")]
pub mod model;
pub mod netinit;
#[cfg(feature = "operator")]
pub mod operator;
#[cfg(feature = "operator")]
pub mod plugin;
pub mod proxy;
#[cfg(feature = "operator")]
pub mod render;
pub mod sidecar;
