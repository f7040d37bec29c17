//! bottle-operator: runs AI coding agents in sandboxed Kubernetes Pods ("bottles").
//!
//! Three parts, one module each:
//!
//! - [`contract`]: what a Bottle means and what each sidecar reads. `contract::api` (the
//!   CRD), `contract::model` (the validated policy, no Kubernetes types; the one place a spec
//!   is checked) and [`contract::config`] (one config type per sidecar, written by the
//!   renderer and read by the sidecar, plus the host, path and glob grammar both sides share);
//! - `operator`: `operator::render` (pure: validated policy → Pod, ConfigMap, CA Secret,
//!   NetworkPolicies) and the reconciler around it (watch, apply, status, Events, leader
//!   election);
//! - [`pod`]: what runs in the bottle Pod. [`pod::core`] (one server setup for every
//!   listener, TLS leaves, the upstream client and its CONNECT to pipelock, refusals, live
//!   reload, admin, atomic writes), then one module per sidecar or helper: [`pod::egress`],
//!   [`pod::cred_proxy`], [`pod::git_gate`], [`pod::supervise`], [`pod::netinit`],
//!   [`pod::config_sync`], [`pod::ca_bundle`], [`pod::config_status`], [`pod::probe`].
//!
//! Plus `plugin` (`kubectl bottle`) and the binaries in `src/bin`. The pod part never reaches
//! the operator's: the `operator` cargo feature (on by default) gates `contract::api`,
//! `contract::model`, `operator` and `plugin` together with the Kubernetes client and the CRD
//! schema crates, and `bottle-sidecar` is built without it.

#![forbid(unsafe_code)]

pub mod contract;
#[cfg(feature = "operator")]
pub mod operator;
#[cfg(feature = "operator")]
pub mod plugin;
pub mod pod;
