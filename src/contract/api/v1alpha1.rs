//! `bottle-operator.dev/v1alpha1` `Bottle`.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Desired state of one bottle: an agent and the doors it may use to the outside.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bottle-operator.dev",
    version = "v1alpha1",
    kind = "Bottle",
    namespaced,
    status = "BottleStatus",
    shortname = "btl",
    category = "all",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".status.podName"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"CA","type":"string","priority":1,"jsonPath":".status.caFingerprint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.metadata.name.size() <= 50").message("Bottle names are at most 50 characters (they prefix the names of the objects the operator creates)")
)]
#[serde(rename_all = "camelCase")]
pub struct BottleSpec {
    /// The agent container.
    #[serde(default)]
    pub agent: AgentSpec,
    /// What the agent may reach over HTTP(S), through the egress and pipelock sidecars.
    #[serde(default)]
    pub egress: EgressSpec,
    /// Base-URL style upstream APIs with credentials injected by the cred-proxy sidecar.
    #[serde(default)]
    pub cred_proxy: CredProxySpec,
    /// Git remotes served through the git-gate sidecar.
    #[serde(default)]
    pub git: GitSpec,
    /// Data-loss-prevention settings shared by the inspecting sidecars.
    #[serde(default)]
    pub dlp: DlpSpec,
    /// Stops the bottle: its Pod is deleted, everything else (CA, sidecar config, workspace,
    /// NetworkPolicies) is kept. Set back to false to start it again with the same workspace.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// When the bottle stops on its own, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<LifetimeSpec>,
    /// The human in the loop: a `supervise` sidecar through which the agent asks for access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervise: Option<SuperviseSpec>,
}

/// The `supervise` sidecar: an MCP tool server (and plain JSON over HTTP) on loopback where
/// the agent reads what it may reach and files `AccessRequest`s for a person to decide.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SuperviseSpec {
    /// Runs the sidecar, with a ServiceAccount of its own that may file requests for this
    /// Bottle only.
    #[serde(default)]
    pub enabled: bool,
}

impl BottleSpec {
    /// Whether the Bottle runs the `supervise` sidecar.
    pub fn supervised(&self) -> bool {
        self.supervise.as_ref().is_some_and(|s| s.enabled)
    }
}

/// The agent container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentSpec {
    /// Container image of the agent. Defaults to the operator's configured agent image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.size() > 0").message("agent.image must not be empty"))]
    #[schemars(length(max = 1024))]
    pub image: Option<String>,
    /// Entrypoint override. Defaults to `sleep infinity`: people work in the agent with `kubectl exec`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments to the entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Plain environment variables. Credentials never go here: use egress/credProxy routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[schemars(length(max = 256))]
    pub env: Vec<EnvVar>,
    /// Compute resources of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// RuntimeClass for stronger isolation (for example gVisor or Kata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// A persistent workspace volume mounted at `/workspace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,
}

/// A plain (non-secret) environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct EnvVar {
    /// Variable name.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("env names must be C identifiers"))]
    pub name: String,
    /// Variable value.
    #[serde(default)]
    pub value: String,
}

/// A PersistentVolumeClaim for the agent's work.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// Requested size, for example `10Gi`.
    pub size: String,
    /// StorageClass; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

/// HTTP(S) egress policy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressSpec {
    /// Hostnames the bottle may reach (pipelock's allowlist). `*.example.com` covers subdomains.
    /// Route hosts are added automatically.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub allow: Vec<String>,
    /// Hosts tunnelled without TLS interception (LLM APIs whose bodies legitimately trip DLP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub passthrough: Vec<String>,
    /// Host + path routes, with optional credential injection, enforced by the egress sidecar.
    /// One route per host (a map keyed by host, so an approved AccessRequest's paths merge
    /// in under the operator's field manager beside the user's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["host"]))]
    #[schemars(length(max = 128))]
    pub routes: Vec<EgressRoute>,
    /// Hosts the agent opens WebSockets to. pipelock 2.3.0 drops the `Upgrade` header when
    /// it intercepts, so it splices these (egress still intercepts them and enforces routes);
    /// WebSocket frames are not DLP-scanned. Implies `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub websocket: Vec<String>,
    /// What pipelock does when a response the agent reads carries prompt-injection text:
    /// `block` (the default) refuses the response, `warn` delivers it and logs the finding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_injection: Option<InjectionAction>,
}

/// What pipelock does with a response that carries prompt-injection text: `block` (the
/// default) refuses it, `warn` delivers it and logs the finding.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "camelCase")]
pub enum InjectionAction {
    /// Refuse the response: the agent gets an error, never the text.
    #[default]
    Block,
    /// Deliver the response unchanged and log the finding.
    Warn,
}

/// One host + path allowlist entry of the egress sidecar.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EgressRoute {
    /// Exact hostname.
    #[x_kube(validation = Rule::new("self.size() > 0 && !self.contains('/') && !self.contains(':')").message("route host must be a bare hostname (no scheme, port or path)"))]
    #[schemars(length(max = 253))]
    pub host: String,
    /// Allowed path prefixes; empty allows every path on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(validation = Rule::new("self.all(p, p.startsWith('/'))").message("route paths must start with '/'"))]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub paths: Vec<String>,
    /// Credential injected into matching requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RouteAuth>,
}

/// A credential a sidecar injects into outgoing requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteAuth {
    /// Header to set. Defaults to `Authorization`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub header: Option<String>,
    /// Scheme written before the token, for example `Bearer`. Empty writes the bare token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub scheme: Option<String>,
    /// The Secret key holding the token. Only the injecting sidecar ever sees its value.
    pub secret_key_ref: SecretKeyRef,
}

/// A key of a Secret in the Bottle's namespace.
#[derive(
    KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secretKeyRef.name must not be empty"))]
    pub name: String,
    /// Key within the Secret.
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("secretKeyRef.key must not be empty"))]
    pub key: String,
}

/// cred-proxy routes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredProxySpec {
    /// Named upstreams, served at `http://127.0.0.1:9099/<name>/`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[schemars(length(max = 64))]
    pub routes: Vec<CredRoute>,
}

/// One named upstream API of cred-proxy.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredRoute {
    /// Path segment the agent uses (`anthropic` → `http://127.0.0.1:9099/anthropic`).
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')").message("route names are DNS labels"))]
    pub name: String,
    /// Upstream base URL, `https://host[:port][/path]`.
    #[x_kube(validation = Rule::new("self.startsWith('https://')").message("upstream must be an https:// URL"))]
    #[schemars(length(max = 2048))]
    pub upstream: String,
    /// Credential injected into every request of this route.
    pub auth: RouteAuth,
}

/// Git remotes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitSpec {
    /// Remotes the agent may fetch from and push to through git-gate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[schemars(length(max = 32))]
    pub remotes: Vec<GitRemote>,
    /// Regexes of findings the push scan accepts anyway (test fixtures, public keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub scan_allowlist: Vec<String>,
    /// Paths the push scan leaves out (`*` within a directory, `**` across): files meant to
    /// look secret, such as test fixtures. A file is left out only when every path it is
    /// pushed at matches. Nothing else exempts a path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub scan_allow_paths: Vec<String>,
}

/// One upstream repository reached over SSH with a pinned host key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GitRemote {
    /// Local name of the remote.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$')").message("remote names are DNS labels"))]
    pub name: String,
    /// Upstream SSH URL: `ssh://git@host[:port]/path.git` or `git@host:path.git`.
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Secret key holding the SSH private key git-gate pushes with.
    pub ssh_key_secret_ref: SecretKeyRef,
    /// Pinned `known_hosts` lines for the upstream host.
    #[x_kube(validation = Rule::new("self.size() > 0").message("knownHosts must pin the upstream host key"))]
    #[schemars(length(max = 16384))]
    pub known_hosts: String,
    /// Allow non-fast-forward pushes.
    #[serde(default)]
    pub allow_force_push: bool,
    /// Allow deleting the upstream's default branch.
    #[serde(default)]
    pub allow_delete_default_branch: bool,
    /// Ref brokering (opt-in): only refs matching one of these globs may be pushed, e.g.
    /// `refs/heads/bottle/<bottle-name>/*`. `*` stays within a `/` segment, `**` crosses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub allowed_refs: Vec<String>,
    /// Ref brokering (opt-in): pushes whose commits add, change or delete a path matching one
    /// of these globs are refused, e.g. `.github/workflows/**`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub forbidden_paths: Vec<String>,
    /// Ref brokering (opt-in): the most bytes of objects one push may add.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_push_bytes: Option<u64>,
}

/// DLP settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DlpSpec {
    /// Block requests that match (true) or only log them (false).
    #[serde(default = "default_true")]
    pub block: bool,
    /// Extra patterns on top of pipelock's built-in ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub patterns: Vec<DlpPattern>,
}

impl Default for DlpSpec {
    fn default() -> Self {
        Self {
            block: true,
            patterns: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

/// A named DLP regular expression.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct DlpPattern {
    /// Pattern name, shown in block reasons.
    #[schemars(length(max = 128))]
    pub name: String,
    /// RE2 regular expression.
    #[schemars(length(max = 4096))]
    pub regex: String,
}

/// When a bottle stops on its own.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LifetimeSpec {
    /// The moment the bottle stops (RFC 3339, e.g. `2026-12-02T18:00:00Z`).
    pub shutdown_time: Time,
    /// What happens then: `Pause` (the Pod is deleted, everything else kept; the default)
    /// or `Delete` (the Bottle and everything it owns, workspace included, are deleted).
    #[serde(default)]
    pub shutdown_policy: ShutdownPolicy,
}

/// What [`LifetimeSpec::shutdown_time`] does.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum ShutdownPolicy {
    /// As `spec.paused: true`.
    #[default]
    Pause,
    /// Delete the Bottle.
    Delete,
}

impl BottleSpec {
    /// The shutdown policy, once `spec.lifetime.shutdownTime` has come by `now`.
    pub fn shutdown_due(&self, now: k8s_openapi::jiff::Timestamp) -> Option<ShutdownPolicy> {
        self.lifetime
            .as_ref()
            .filter(|l| l.shutdown_time.0 <= now)
            .map(|l| l.shutdown_policy)
    }

    /// Whether the Pod should be down: `spec.paused`, or a shutdown time passed with `Pause`.
    pub fn stopped(&self, now: k8s_openapi::jiff::Timestamp) -> bool {
        self.paused || self.stopped_by_lifetime(now).is_some()
    }

    /// The shutdown time that stopped the bottle, when that (and not `spec.paused`) is why.
    pub fn stopped_by_lifetime(
        &self,
        now: k8s_openapi::jiff::Timestamp,
    ) -> Option<k8s_openapi::jiff::Timestamp> {
        let lifetime = self.lifetime.as_ref()?;
        (!self.paused && self.shutdown_due(now) == Some(ShutdownPolicy::Pause))
            .then_some(lifetime.shutdown_time.0)
    }
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BottleStatus {
    /// Pending, Running, Paused, Degraded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `ConfigApplied`, Kubernetes style.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Name of the bottle's Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// SHA-256 fingerprint of the bottle CA certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_fingerprint: Option<String>,
    /// Hash of the rendered sidecar configuration currently in the ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_hash: Option<String>,
    /// When `spec.lifetime` will stop the bottle, while that is still ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stops_at: Option<Time>,
}
