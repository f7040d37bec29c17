//! `bottle-operator.dev/v1alpha1` `AccessRequest`: a bottle asks for more egress, a person
//! decides, the operator carries an approval into the Bottle.
//!
//! Who may do what is the API server's business, not a field's: the admission policy shipped
//! in the chart (`charts/bottle-operator/templates/access-requests.yaml`) makes
//! `requestedBy`/`decidedBy` equal the caller's user name, lets only callers allowed
//! `request-access` on the named Bottle file a request, and only callers allowed `approve`
//! on accessrequests decide one. The rules below hold for everybody: what is asked never
//! changes, and a decision is final (delete the request to revoke it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// What a bottle asks for, and the decision on it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "bottle-operator.dev",
    version = "v1alpha1",
    kind = "AccessRequest",
    namespaced,
    status = "AccessRequestStatus",
    shortname = "areq",
    category = "all",
    printcolumn = r#"{"name":"Bottle","type":"string","jsonPath":".spec.bottle"}"#,
    printcolumn = r#"{"name":"Host","type":"string","jsonPath":".status.host"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Decided-By","type":"string","jsonPath":".status.decidedBy"}"#,
    printcolumn = r#"{"name":"Expires","type":"date","jsonPath":".status.expiresAt"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("has(self.spec.route) != has(self.spec.allowHost)").message("an access request asks for exactly one of route or allowHost"),
    validation = Rule::new("!has(self.spec.decision) || !has(self.spec.decision.paths) || (has(self.spec.route) && self.spec.decision.paths.all(p, self.spec.route.paths.exists(q, p.startsWith(q))))").message("an approval may only narrow the requested paths: each of decision.paths must start with a requested path"),
    validation = Rule::new("!has(self.spec.decision) || self.spec.decision.verdict == 'Approve' || (!has(self.spec.decision.paths) && !has(self.spec.decision.forSeconds))").message("a denial carries no paths or forSeconds"),
    validation = Rule::new("self.spec.bottle == oldSelf.spec.bottle && self.spec.reason == oldSelf.spec.reason && self.spec.requestedBy == oldSelf.spec.requestedBy && has(self.spec.route) == has(oldSelf.spec.route) && (!has(self.spec.route) || self.spec.route == oldSelf.spec.route) && has(self.spec.allowHost) == has(oldSelf.spec.allowHost) && (!has(self.spec.allowHost) || self.spec.allowHost == oldSelf.spec.allowHost)").message("what is asked cannot change: file a new request"),
    validation = Rule::new("!has(oldSelf.spec.decision) || (has(self.spec.decision) && self.spec.decision == oldSelf.spec.decision)").message("a decision is final: delete the request to revoke it")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestSpec {
    /// The Bottle (in this namespace) that asks.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.size() > 0").message("bottle must name a Bottle"))]
    pub bottle: String,
    /// Who filed it: must be the caller's user name (the admission policy checks).
    #[schemars(length(max = 512))]
    pub requested_by: String,
    /// An egress route: a host and the path prefixes asked for on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<RequestedRoute>,
    /// A host for pipelock's allowlist (`egress.allow`), every path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub allow_host: Option<String>,
    /// Why the agent needs it, in its words.
    #[schemars(length(max = 2048))]
    pub reason: String,
    /// Set once, by an approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
}

/// A host and path prefixes, as `egress.routes` holds them (never a credential).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct RequestedRoute {
    /// Exact hostname.
    #[schemars(length(max = 253))]
    pub host: String,
    /// Path prefixes; at least one (a whole host is `allowHost`).
    #[x_kube(validation = Rule::new("self.size() > 0 && self.all(p, p.startsWith('/'))").message("a requested route names at least one path prefix, each starting with '/'"))]
    #[schemars(length(max = 16), inner(length(max = 1024)))]
    pub paths: Vec<String>,
}

/// An approver's decision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    /// `Approve` or `Deny`.
    pub verdict: Verdict,
    /// Who decided: must be the caller's user name (the admission policy checks).
    #[schemars(length(max = 512))]
    pub decided_by: String,
    /// Narrows an approved route to these prefixes (each within a requested one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(length(max = 1024)))]
    pub paths: Option<Vec<String>>,
    /// Time-boxes an approval: the grant is removed this long after it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 2_592_000))]
    pub for_seconds: Option<u32>,
    /// The approver's words, shown to the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub reason: Option<String>,
}

/// What an approver decided.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum Verdict {
    /// Grant it (perhaps narrowed, perhaps for a while).
    Approve,
    /// Refuse it.
    #[default]
    Deny,
}

/// Where a request stands.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum AccessPhase {
    /// Waiting for a decision.
    #[default]
    Pending,
    /// Approved: the grant is in the Bottle's spec and sidecar config.
    Approved,
    /// Refused, by an approver or by the operator (an invalid ask, a cap reached).
    Denied,
    /// Nobody decided in time, or a time-boxed grant ran out (and was removed).
    Expired,
    /// Approved, and the bottle's supervise sidecar saw egress enforce the grant.
    Applied,
}

/// What the operator made of a request.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestStatus {
    /// Pending, Approved, Applied, Denied or Expired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AccessPhase>,
    /// The host asked for (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Who decided: an approver's user name, or `bottle-operator` for a refusal of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// When the decision was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    /// When a pending request expires, or a time-boxed grant ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The sidecar config version (the Bottle's `status.configHash`) that carries the grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// Why it stands where it does, for the agent and the approver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the bottle's supervise sidecar saw egress run a config carrying the grant (the
    /// one field it writes; the admission policy holds it to that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<Time>,
}
