//! A supervised Bottle's identity and the supervise sidecar's files: a ServiceAccount of its
//! own, a Role that lets it file AccessRequests for this Bottle alone (the `request-access`
//! verb on `bottles/<name>`, which the chart's admission policy checks) and report one
//! in force (`status.appliedAt`), the binding, the sidecar's config and the agent's MCP
//! server list.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;
use serde_json::json;

use super::{Settings, meta};
use crate::contract::api::Bottle;
use crate::contract::config::layout::{self, files};
use crate::contract::config::supervise::SuperviseConfig;

/// The name every certificate of an API server carries (its Service's), checked whatever
/// address the Pod reaches the server at.
pub const API_SERVER_NAME: &str = "kubernetes.default.svc";
/// The ConfigMap every namespace gets with the cluster's CA (kube-controller-manager).
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// Seconds a projected token lives before the kubelet replaces it.
pub const TOKEN_SECONDS: i64 = 3600;

/// The identity objects of a supervised Bottle.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The Bottle's ServiceAccount (its token reaches only the supervise container).
    pub service_account: ServiceAccount,
    /// What that account may do.
    pub role: Role,
    /// The account bound to the Role.
    pub binding: RoleBinding,
}

/// The API server user name of the Bottle's ServiceAccount.
pub fn user_name(b: &Bottle) -> String {
    format!(
        "system:serviceaccount:{}:{}",
        b.namespace().unwrap_or_default(),
        meta::supervise_name(b)
    )
}

/// The three objects; `None` unless the Bottle is supervised.
pub fn identity(b: &Bottle) -> Option<Identity> {
    if !b.spec.supervised() {
        return None;
    }
    let name = meta::supervise_name(b);
    let service_account = ServiceAccount {
        metadata: meta::owned(b, name.clone()),
        // Only the projected volume the supervise container mounts carries a token.
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let group = "bottle-operator.dev".to_string();
    let role = Role {
        metadata: meta::owned(b, name.clone()),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![group.clone()]),
                resources: Some(vec!["accessrequests".into()]),
                verbs: ["get", "list", "watch", "create"]
                    .map(String::from)
                    .to_vec(),
                ..Default::default()
            },
            // Its one status write, appliedAt (the admission policy holds it to that).
            PolicyRule {
                api_groups: Some(vec![group.clone()]),
                resources: Some(vec!["accessrequests/status".into()]),
                verbs: vec!["get".into(), "patch".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![group]),
                resources: Some(vec!["bottles".into()]),
                resource_names: Some(vec![b.name_any()]),
                verbs: vec!["request-access".into()],
                ..Default::default()
            },
        ]),
    };
    let binding = RoleBinding {
        metadata: meta::owned(b, name.clone()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name,
            namespace: b.namespace(),
            ..Default::default()
        }]),
    };
    Some(Identity {
        service_account,
        role,
        binding,
    })
}

/// `supervise.yaml`; `None` unless supervised and the API server's address is known (the
/// validation refuses a supervised Bottle without it).
pub fn config(b: &Bottle, s: &Settings) -> Option<SuperviseConfig> {
    let addr = s.api_server.filter(|_| b.spec.supervised())?;
    let id = |f: &str| format!("{}/{f}", layout::SUPERVISE_IDENTITY_DIR);
    Some(SuperviseConfig {
        listen: format!("{}:{}", layout::LOOPBACK, layout::SUPERVISE_PORT),
        namespace: b.namespace().unwrap_or_default(),
        bottle: b.name_any(),
        requested_by: user_name(b),
        api_server: format!("https://{addr}"),
        api_server_name: API_SERVER_NAME.into(),
        token_file: id("token"),
        ca_file: id("ca.crt"),
        egress_config: format!("{}/{}", layout::CONFIG_DIR, files::EGRESS),
        egress_admin: format!("{}:{}", layout::LOOPBACK, layout::EGRESS_ADMIN_PORT),
    })
}

/// The agent's MCP server list (`claude --mcp-config`): the supervise tool server.
pub fn agent_mcp_config() -> String {
    let url = format!("http://{}:{}/mcp", layout::LOOPBACK, layout::SUPERVISE_PORT);
    let v = json!({"mcpServers": {"supervise": {"type": "http", "url": url}}});
    serde_json::to_string_pretty(&v).expect("JSON values serialise") + "\n"
}

#[cfg(test)]
mod tests;
