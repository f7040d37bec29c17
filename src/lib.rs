//! bottle-operator: runs AI coding agents in sandboxed Kubernetes Pods ("bottles").
//!
//! Three parts:
//!
//! - **contract**, what a Bottle means and what each sidecar reads: [`api`] (the CRD),
//!   [`model`] (the validated policy, no Kubernetes types; the one place a spec is checked)
//!   and [`config`] (one config type per sidecar, written by the renderer and read by the
//!   sidecar, plus the host, path and glob grammar both sides share);
//! - **operator**: [`render`] (pure: validated policy → Pod, ConfigMap, CA Secret,
//!   NetworkPolicies) and [`operator`] (watch, apply, status, Events, leader election);
//! - **in the Pod**: [`proxy`] (the shared core: one server setup for every listener, TLS
//!   leaves, the upstream client and its CONNECT to pipelock, refusals, live reload, admin),
//!   then one module per sidecar: [`egress`], [`cred_proxy`], [`git_gate`], [`netinit`], and
//!   [`sidecar`] (config-sync, ca-bundle, config-status and the one atomic-write helper).
//!
//! Plus [`plugin`] (`kubectl bottle`) and the binaries in `src/bin`. In-Pod modules never
//! reach the operator's: the `operator` feature (on by default) gates `api`, `model`,
//! `render`, `operator` and `plugin` together with the Kubernetes client and the CRD schema
//! crates, and `bottle-sidecar` is built without it.

#![forbid(unsafe_code)]

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
