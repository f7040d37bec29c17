//! Names, labels and ownership of the objects a Bottle owns.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

use super::StringMap;
use crate::contract::api::Bottle;

/// Label carrying the owning Bottle's name; NetworkPolicies select the Pod by it.
pub const BOTTLE_LABEL: &str = "bottle-operator.dev/bottle";
/// Pod annotation: hash of the rendered Pod spec. A different hash means a new Pod.
pub const TEMPLATE_HASH_ANNOTATION: &str = "bottle-operator.dev/template-hash";
/// ConfigMap annotation: hash of the rendered sidecar configs.
pub const CONFIG_HASH_ANNOTATION: &str = "bottle-operator.dev/config-hash";
/// Annotation on every applied object: hash of what was applied, so an unchanged object is
/// not applied again and a field the operator stopped setting still counts as a change.
pub const APPLIED_HASH_ANNOTATION: &str = "bottle-operator.dev/applied-hash";
/// The field manager of every server-side apply.
pub const FIELD_MANAGER: &str = "bottle-operator";

/// Name of the Pod.
pub fn pod_name(b: &Bottle) -> String {
    b.name_any()
}
/// Name of the ConfigMap.
pub fn config_map_name(b: &Bottle) -> String {
    format!("{}-config", b.name_any())
}
/// Name of the CA Secret.
pub fn ca_secret_name(b: &Bottle) -> String {
    format!("{}-ca", b.name_any())
}
/// Name of the ingress-deny NetworkPolicy.
pub fn internal_policy_name(b: &Bottle) -> String {
    format!("{}-internal", b.name_any())
}
/// Name of the egress NetworkPolicy.
pub fn egress_policy_name(b: &Bottle) -> String {
    format!("{}-egress", b.name_any())
}
/// Name of a supervised Bottle's ServiceAccount, Role and RoleBinding.
pub fn supervise_name(b: &Bottle) -> String {
    format!("{}-supervise", b.name_any())
}
/// Name of the workspace claim.
pub fn workspace_name(b: &Bottle) -> String {
    format!("{}-workspace", b.name_any())
}

/// Labels on everything a Bottle owns.
pub fn labels(b: &Bottle) -> StringMap {
    StringMap::from([
        ("app.kubernetes.io/name".into(), "bottle".into()),
        ("app.kubernetes.io/instance".into(), b.name_any()),
        (
            "app.kubernetes.io/managed-by".into(),
            "bottle-operator".into(),
        ),
        (BOTTLE_LABEL.into(), b.name_any()),
    ])
}

/// Metadata of an owned object: name, namespace, labels, controller owner reference.
pub fn owned(b: &Bottle, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: b.namespace(),
        labels: Some(labels(b)),
        owner_references: b.controller_owner_ref(&()).map(|r| vec![r]),
        ..Default::default()
    }
}
