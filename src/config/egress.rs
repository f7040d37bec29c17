//! Config of the `egress` sidecar: the agent's HTTP(S) proxy that intercepts TLS, enforces
//! host + path routes and injects credentials, then forwards to pipelock.

use serde::{Deserialize, Serialize};

use super::HeaderInjection;

/// `egress.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressConfig {
    /// Address the proxy listens on.
    pub listen: String,
    /// Admin listener (health, config version).
    pub admin_listen: String,
    /// Next hop for everything allowed: pipelock.
    pub upstream_proxy: String,
    /// Bottle CA certificate, for minting leaf certificates.
    pub ca_cert: String,
    /// Bottle CA key.
    pub ca_key: String,
    /// Hosts tunnelled without interception.
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// Host + path routes. A host with no route is passed on to pipelock's allowlist.
    #[serde(default)]
    pub routes: Vec<EgressRoute>,
}

/// One host + path allowlist entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRoute {
    /// Exact host.
    pub host: String,
    /// Allowed path prefixes; empty allows all.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Credential injected into matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HeaderInjection>,
}
