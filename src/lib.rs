//! bottle-operator: runs AI coding agents in sandboxed Kubernetes Pods ("bottles").
//!
//! Layout follows the architecture: [`api`] (the CRD), [`model`] (what a bottle means, no
//! Kubernetes types), [`config`] (one config type per sidecar, shared by renderer and sidecar),
//! [`render`] (pure Bottle → objects), [`operator`] (reconcile, apply, report) and
//! [`sidecar`] (the programs that run inside the Pod).

pub mod api;
pub mod config;
pub mod model;
pub mod operator;
pub mod render;
pub mod sidecar;
