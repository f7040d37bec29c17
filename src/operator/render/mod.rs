//! Pure rendering: a `Bottle` (plus operator [`Settings`]) becomes the objects that should
//! exist. No I/O here; the reconciler diffs and applies what this returns.

pub mod ca;
pub mod config_map;
pub mod meta;
pub mod network_policy;
pub mod pod;
pub mod supervise;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use sha2::{Digest, Sha256};

use crate::contract::api::Bottle;
use crate::contract::model::{InvalidSpec, Policy, Reason};

/// Operator-wide inputs to rendering (from flags / Helm values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Image of the agent when the Bottle names none.
    pub agent_image: String,
    /// Image holding `bottle-sidecar` (egress, cred-proxy, git-gate, ca-bundle).
    pub sidecar_image: String,
    /// pipelock image (pin a digest in production).
    pub pipelock_image: String,
    /// `imagePullPolicy` of the agent container (`None`: the Kubernetes default).
    pub agent_pull_policy: Option<String>,
    /// `imagePullPolicy` of the containers running the sidecar image.
    pub sidecar_pull_policy: Option<String>,
    /// `imagePullPolicy` of the pipelock container.
    pub pipelock_pull_policy: Option<String>,
    /// Secrets (in each Bottle's namespace) the kubelet uses to pull the bottle images.
    pub image_pull_secrets: Vec<String>,
    /// Cluster CIDRs (pods, services, nodes) outside the private ranges, denied to bottles.
    pub cluster_cidrs: Vec<ipnet::IpNet>,
    /// Namespace of the cluster DNS pods.
    pub dns_namespace: String,
    /// Label selector (key, value) of the cluster DNS pods.
    pub dns_pod_label: (String, String),
    /// The API server as bottle Pods reach it: an endpoint of the `kubernetes` Service, so
    /// no service proxy is needed and the egress NetworkPolicy names a real address. Without
    /// it a supervised Bottle is refused.
    pub api_server: Option<std::net::SocketAddr>,
}

impl Default for Settings {
    fn default() -> Self {
        let v = env!("CARGO_PKG_VERSION");
        Self {
            agent_image: format!("bottle-operator/agent:{v}"),
            sidecar_image: format!("bottle-operator/sidecar:{v}"),
            pipelock_image: "ghcr.io/luckypipewrench/pipelock:2.3.0".into(),
            agent_pull_policy: None,
            sidecar_pull_policy: None,
            pipelock_pull_policy: None,
            image_pull_secrets: Vec::new(),
            cluster_cidrs: Vec::new(),
            dns_namespace: "kube-system".into(),
            dns_pod_label: ("k8s-app".into(), "kube-dns".into()),
            api_server: None,
        }
    }
}

/// Everything one Bottle should own, except the CA Secret (made once, never re-rendered).
#[derive(Debug, Clone)]
pub struct Desired {
    /// The validated policy it was rendered from.
    pub policy: Policy,
    /// Sidecar configs.
    pub config_map: ConfigMap,
    /// Hash of the ConfigMap data.
    pub config_hash: String,
    /// The bottle Pod, with its template hash annotation.
    pub pod: Pod,
    /// The pod template hash (also on the Pod as an annotation).
    pub template_hash: String,
    /// Internal (ingress deny) and egress policies.
    pub network_policies: Vec<NetworkPolicy>,
    /// Workspace claim, when the Bottle asks for one.
    pub workspace: Option<PersistentVolumeClaim>,
    /// ServiceAccount, Role and binding, when the Bottle is supervised.
    pub identity: Option<supervise::Identity>,
}

/// Checks everything about a Bottle that rendering depends on, before anything is written:
/// the policy, the agent's environment, the workspace size, and for a supervised Bottle
/// that its sidecar has an API server to reach. What it accepts renders.
pub fn validate(bottle: &Bottle, settings: &Settings) -> Result<Policy, InvalidSpec> {
    let policy = Policy::from_spec(&bottle.spec)?;
    pod::check_agent_env(&bottle.spec.agent)?;
    pod::check_workspace(&bottle.spec.agent)?;
    if bottle.spec.supervised() && settings.api_server.is_none() {
        return Err(InvalidSpec {
            reason: Reason::SuperviseUnavailable,
            message: "supervise.enabled, but the operator knows no address at which Pods reach \
                      the API server (the default/kubernetes Service has no endpoint it can \
                      read; give it --api-server-for-pods)"
                .into(),
        });
    }
    Ok(policy)
}

/// Renders every object of a validated Bottle (see [`validate`]); it cannot fail on user
/// input. The CA fingerprint is part of the Pod template: a new CA needs a new Pod.
pub fn desired(
    bottle: &Bottle,
    policy: Policy,
    settings: &Settings,
    ca_fingerprint: &str,
) -> Desired {
    let data = config_map::files(bottle, &policy, settings);
    let config_hash = hash_of(&data);
    let config_map = config_map::object(bottle, data, &config_hash);
    let (pod, template_hash) = pod::render(bottle, &policy, settings, ca_fingerprint);
    let network_policies = network_policy::render(bottle, &policy, settings);
    let workspace = pod::workspace_claim(bottle);
    let identity = supervise::identity(bottle);
    Desired {
        policy,
        config_map,
        config_hash,
        pod,
        template_hash,
        network_policies,
        workspace,
        identity,
    }
}

/// Short, stable SHA-256 hex of a serialisable value.
pub fn hash_of<T: serde::Serialize>(value: &T) -> String {
    let bytes = serde_json::to_vec(value).expect("rendered objects always serialise");
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// Sorted string map, the shape of labels and ConfigMap data.
pub type StringMap = BTreeMap<String, String>;

#[cfg(test)]
mod tests;
