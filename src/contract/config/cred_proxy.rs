//! Config of the `cred-proxy` sidecar: named upstream APIs at `http://127.0.0.1:9099/<name>/`,
//! with the credential injected and the request sent on through pipelock.

use serde::{Deserialize, Serialize};

use super::HeaderInjection;

/// `cred-proxy.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredProxyConfig {
    /// Address the proxy listens on.
    pub listen: String,
    /// Admin listener.
    pub admin_listen: String,
    /// Outbound proxy (pipelock), so the allowlist and DLP apply to cred-proxy's traffic too;
    /// direct when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<String>,
    /// CA trusted upstream besides the system roots (the bottle CA, which pipelock uses).
    pub ca_cert: String,
    /// Routes by name.
    pub routes: Vec<CredRoute>,
}

/// One named upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredRoute {
    /// First path segment the agent uses.
    pub name: String,
    /// Upstream base URL.
    pub upstream: String,
    /// Injected credential.
    pub auth: HeaderInjection,
}
