//! Config of the `supervise` sidecar: who it is to the API server, where that server is,
//! and which Bottle it files access requests for. What the bottle may reach now it reads
//! from egress's own config file, mounted beside this one, so the two never disagree.

use serde::{Deserialize, Serialize};

/// `supervise.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SuperviseConfig {
    /// Address the tool server listens on (loopback: the agent's firewall opens it).
    pub listen: String,
    /// Namespace of the Bottle (and of its AccessRequests).
    pub namespace: String,
    /// The Bottle this sidecar asks for.
    pub bottle: String,
    /// The ServiceAccount's user name, written into `requestedBy` (the admission policy
    /// refuses any other).
    pub requested_by: String,
    /// The API server as the Pod reaches it, `https://IP:PORT`.
    pub api_server: String,
    /// Name the API server's certificate is checked against (the address is an IP the
    /// certificate may not carry; every API server certificate names its Service).
    pub api_server_name: String,
    /// The projected ServiceAccount token (re-read on every call: the kubelet rotates it).
    pub token_file: String,
    /// The CA that signs the API server's certificate.
    pub ca_file: String,
    /// egress's config: what the bottle may reach now.
    pub egress_config: String,
    /// egress's admin address (loopback), whose `/refused` lists the hosts refused lately.
    pub egress_admin: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_field_is_refused_not_ignored() {
        let base = "listen: a\nnamespace: n\nbottle: b\nrequestedBy: u\napiServer: s\n\
                    apiServerName: k\ntokenFile: t\ncaFile: c\negressConfig: e\negressAdmin: a\n";
        let ok: SuperviseConfig = serde_norway::from_str(base).unwrap();
        assert_eq!(ok.bottle, "b");
        let typo = format!("{base}tokenFle: x\n");
        assert!(serde_norway::from_str::<SuperviseConfig>(&typo).is_err());
    }
}
