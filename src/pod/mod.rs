//! What runs in the bottle Pod, behind the `bottle-sidecar` multi-call binary: the shared
//! [`core`] (server setup, TLS, upstream, reload, admin, atomic writes), then one module per
//! sidecar or helper. Nothing here reaches the operator's modules.
//!
//! ```text
//! agent ──► egress ──┐                      (HTTPS_PROXY; routes, token injection)
//! agent ──► cred-proxy ─┴─► pipelock ──► internet   (allowlist, DLP, SSRF guard)
//! agent ──► git-gate ──────────────────► git host (SSH)   (every pushed object scanned)
//! agent ──► supervise ──► API server   (access requests, as the Bottle's ServiceAccount)
//! netinit: the agent UID reaches only those doors; config-sync feeds pipelock its config
//! ```

pub mod ca_bundle;
pub mod config_status;
pub mod config_sync;
pub mod core;
pub mod cred_proxy;
pub mod egress;
pub mod git_gate;
pub mod netinit;
pub mod probe;
pub mod supervise;
