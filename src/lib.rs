//! bottle-operator: runs AI coding agents in sandboxed Kubernetes Pods ("bottles").
//!
//! Layout follows the architecture: [`api`] (the CRD), [`model`] (what a bottle means, no
//! Kubernetes types), [`config`] (one config type per sidecar, shared by renderer and sidecar),
//! [`render`] (pure Bottle → objects), [`operator`] (reconcile, apply, report) and
//! [`sidecar`] (helpers that run inside the Pod). The proxy sidecars are [`egress`] and
//! [`cred_proxy`], built on the shared [`proxy`] core.

pub mod api;
pub mod config;
pub mod cred_proxy;
pub mod egress;
pub mod git_gate;
pub mod model;
pub mod netinit;
pub mod operator;
pub mod plugin;
pub mod proxy;
pub mod render;
pub mod sidecar;
