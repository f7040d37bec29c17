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
    /// Next hop for everything allowed (pipelock); direct when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<String>,
    /// Bottle CA certificate: mints leaf certificates, and is trusted upstream (pipelock
    /// intercepts with the same CA) besides the system roots.
    pub ca_cert: String,
    /// Bottle CA key.
    pub ca_key: String,
    /// TCP ports the agent may reach (CONNECT and plain HTTP); the same ports the egress
    /// NetworkPolicy opens.
    pub ports: Vec<u16>,
    /// Hosts (or `*.domain`) allowed on any path without credentials.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Hosts (or `*.domain`) tunnelled without interception.
    #[serde(default)]
    pub passthrough: Vec<String>,
    /// Host + path routes, optionally with a credential. A host that is in no route, `allow`
    /// or `passthrough` entry is refused.
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
