//! Talking to the API server: ownership checks, server-side apply (skipped when the stored
//! object already carries what would be applied), create-once objects.

use std::fmt::Debug;
use std::sync::Arc;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Error;
use super::observed::{Known, strip};
use crate::operator::render::hash_of;
use crate::operator::render::meta::{APPLIED_HASH_ANNOTATION, FIELD_MANAGER};

/// True when `obj` is controlled by the object with `owner_uid`.
pub fn controlled_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

/// The kind of `K`, for messages.
pub fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    // Resource::kind is a Cow over a static str for k8s-openapi types.
    match K::kind(&()) {
        std::borrow::Cow::Borrowed(s) => s,
        std::borrow::Cow::Owned(_) => "object",
    }
}

/// Server-side applies `obj` under the operator's field manager.
pub async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let params = PatchParams::apply(FIELD_MANAGER).force();
    Ok(api
        .patch(&obj.name_any(), &params, &Patch::Apply(obj))
        .await?)
}

/// Marks `desired` with the hash of what it is, so a stored copy tells what was last applied
/// (a field we stopped setting changes the hash, though the stored object still has it).
pub fn stamp<K: Resource + Serialize>(desired: &mut K) {
    let hash = hash_of(&*desired);
    desired
        .annotations_mut()
        .insert(APPLIED_HASH_ANNOTATION.into(), hash);
}

/// True when `stored` carries `desired` (stamped): the same applied hash, and every field
/// `desired` sets still set so in `stored` (a hand edit of one of them is drift to repair).
/// Fields the server or others added are not ours to judge.
pub fn up_to_date<K: Resource + Serialize>(stored: &K, desired: &K) -> bool {
    let hash = |k: &K| k.annotations().get(APPLIED_HASH_ANNOTATION).cloned();
    hash(stored).is_some()
        && hash(stored) == hash(desired)
        && contains(
            &serde_json::to_value(stored).expect("objects serialise"),
            &serde_json::to_value(desired).expect("objects serialise"),
        )
}

fn empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Every field set in `want` is set to the same in `have`; lists match element by element
/// (same length: an added or removed rule counts), and an empty value matches an absent one
/// (the API server drops empty lists and maps).
pub fn contains(have: &Value, want: &Value) -> bool {
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().all(|(k, wv)| match h.get(k) {
            Some(hv) => contains(hv, wv),
            None => empty(wv),
        }),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(a, b)| contains(a, b))
        }
        (h, w) if empty(w) => empty(h) || h == w,
        (h, w) => h == w,
    }
}

/// Applies `desired` unless `stored` is [`up_to_date`] with it; returns the object as it now
/// stands (remembered in `known` until the watch shows it).
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    known: &Known<K>,
    stored: Option<&Arc<K>>,
    mut desired: K,
) -> Result<Arc<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + 'static,
{
    stamp(&mut desired);
    if let Some(s) = stored
        && up_to_date(&**s, &desired)
    {
        return Ok(s.clone());
    }
    let mut out = apply(api, &desired).await?;
    strip(&mut out);
    Ok(known.wrote(out))
}

/// Creates `obj` unless it exists; returns the object as stored. A concurrent creator (an
/// operator replica, a restart) wins without error: the stored object is returned.
pub async fn create_once<K>(api: &Api<K>, obj: &K) -> Result<(K, bool), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug,
{
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    match api.create(&pp, obj).await {
        Ok(created) => Ok((created, true)),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok((api.get(&obj.name_any()).await?, false)),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_added_by_the_server_are_no_drift_but_edits_and_removals_are() {
        let want = json!({"spec": {"egress": [{"ports": [{"port": 443}]}], "podSelector": {}}});
        let defaulted = json!({"spec": {"egress": [{"ports": [{"port": 443, "protocol": "TCP"}]}],
            "policyTypes": ["Egress"]}});
        assert!(contains(&defaulted, &want));
        let edited = json!({"spec": {"egress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}});
        assert!(!contains(&edited, &want));
        let widened = json!({"spec": {"egress": [{"ports": [{"port": 443}]}, {}]}});
        assert!(!contains(&widened, &want), "an added rule is drift");
        assert!(
            !contains(&json!({"spec": {}}), &want),
            "a removed rule is drift"
        );
    }

    #[test]
    fn a_stored_object_is_up_to_date_only_with_the_same_applied_hash() {
        let mut desired = ConfigMap {
            data: Some([("a".to_string(), "1".to_string())].into()),
            ..Default::default()
        };
        stamp(&mut desired);
        let mut stored = desired.clone();
        stored.metadata.resource_version = Some("7".into());
        assert!(up_to_date(&stored, &desired));
        // A key we stopped rendering is still stored, but the hash tells.
        let mut smaller = ConfigMap {
            data: Some(Default::default()),
            ..Default::default()
        };
        stamp(&mut smaller);
        assert!(!up_to_date(&stored, &smaller));
        // A value edited by hand, with our hash left in place.
        stored.data = Some([("a".to_string(), "2".to_string())].into());
        assert!(!up_to_date(&stored, &desired));
        // Made by an operator that did not stamp.
        let mut old = desired.clone();
        old.annotations_mut().remove(APPLIED_HASH_ANNOTATION);
        assert!(!up_to_date(&old, &desired));
    }
}
