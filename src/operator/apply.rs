//! Talking to the API server: ownership checks, server-side apply, create-once objects.

use std::fmt::Debug;

use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;
use crate::operator::render::meta::FIELD_MANAGER;

/// True when `obj` is controlled by the object with `owner_uid`.
pub fn controlled_by<K: Resource>(obj: &K, owner_uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|r| r.controller == Some(true) && r.uid == owner_uid)
}

/// Reads an object the Bottle should own: `None` when absent, a `NameConflict` when it exists
/// but belongs to something else (the operator never takes over objects it did not make).
pub async fn get_owned<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match api.get_opt(name).await? {
        Some(obj) if controlled_by(&obj, owner_uid) => Ok(Some(obj)),
        Some(_) => Err(Error::NameConflict {
            kind: kind_of::<K>(),
            name: name.to_string(),
        }),
        None => Ok(None),
    }
}

fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
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
