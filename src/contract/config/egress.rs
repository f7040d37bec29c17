//! Config of the `egress` sidecar: the agent's HTTP(S) proxy that intercepts TLS, enforces
//! host + path routes and injects credentials, then forwards to pipelock. Hosts are typed:
//! a file with a malformed one is refused as a whole when it is read.

use serde::{Deserialize, Serialize};

use super::HeaderInjection;
use super::host::{Host, HostPattern};

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
    pub allow: Vec<HostPattern>,
    /// Hosts (or `*.domain`) tunnelled without interception.
    #[serde(default)]
    pub passthrough: Vec<HostPattern>,
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
    pub host: Host,
    /// Allowed path prefixes; empty allows all.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Credential injected into matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HeaderInjection>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "listen: a\nadminListen: b\ncaCert: c\ncaKey: d\nports: [443]\n";

    #[test]
    fn hosts_are_parsed_once_when_the_file_is_read() {
        let c: EgressConfig = serde_norway::from_str(&format!(
            "{BASE}allow: ['*.Example.com']\nroutes: [{{host: API.example.com.}}]\n"
        ))
        .unwrap();
        assert_eq!(c.allow[0].to_string(), "*.example.com");
        assert_eq!(c.routes[0].host.as_str(), "api.example.com");
        // Written back as plain strings, so the file format is unchanged.
        assert!(
            serde_norway::to_string(&c)
                .unwrap()
                .contains("host: api.example.com")
        );
        for (bad, says) in [
            ("allow: ['10.0.0.1']", "IP addresses"),
            ("passthrough: ['a*b.example.com']", "wildcard"),
            ("routes: [{host: 'a b.example.com'}]", "DNS label"),
        ] {
            let e = serde_norway::from_str::<EgressConfig>(&format!("{BASE}{bad}\n")).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
        }
    }
}
