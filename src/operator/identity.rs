//! A supervised Bottle's ServiceAccount, Role and RoleBinding: made before the Pod that runs
//! as the account, kept as rendered, and deleted once the Bottle is no longer supervised.
//! A name somebody else holds is a conflict, never taken over: a Role or binding of theirs
//! rewritten by us would grant what they did not mean to.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::DeleteParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::apply::{apply_if_changed, controlled_by, create_once, kind_of, stamp};
use super::observed::{Known, owned, strip};
use super::{Context, Error};
use crate::contract::api::Bottle;
use crate::operator::render::meta;
use crate::operator::render::supervise::Identity;

/// Brings the identity objects to `desired` (`None`: there should be none).
pub async fn converge(
    bottle: &Bottle,
    ctx: &Context,
    desired: Option<&Identity>,
) -> Result<(), Error> {
    let client = &ctx.client;
    let o = &ctx.observed;
    let ns = bottle.namespace().unwrap_or_default();
    let uid = bottle.uid().unwrap_or_default();
    let name = meta::supervise_name(bottle);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), &ns);
    let account = owned(&o.service_accounts, None, &ns, &name, &uid)?;
    let role = owned(&o.roles, None, &ns, &name, &uid)?;
    let binding = owned(&o.role_bindings, None, &ns, &name, &uid)?;
    match desired {
        Some(id) => {
            futures::try_join!(
                ensure(
                    &accounts,
                    &o.service_accounts,
                    account,
                    &id.service_account,
                    &uid
                ),
                ensure(&roles, &o.roles, role, &id.role, &uid),
            )?;
            // After the Role: binding to a Role not yet there needs more rights than ours.
            ensure(&bindings, &o.role_bindings, binding, &id.binding, &uid).await
        }
        None => {
            // The binding first, so no moment has an account bound to a half-gone Role.
            remove(&bindings, binding).await?;
            futures::try_join!(remove(&roles, role), remove(&accounts, account))?;
            Ok(())
        }
    }
}

async fn ensure<K>(
    api: &Api<K>,
    known: &Known<K>,
    stored: Option<Arc<K>>,
    desired: &K,
    owner_uid: &str,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + Debug + 'static,
{
    if stored.is_some() {
        return apply_if_changed(api, known, stored.as_ref(), desired.clone())
            .await
            .map(drop);
    }
    let mut fresh = desired.clone();
    stamp(&mut fresh);
    let (mut made, created) = create_once(api, &fresh).await?;
    if !controlled_by(&made, owner_uid) {
        return Err(Error::NameConflict {
            kind: kind_of::<K>(),
            name: made.name_any(),
        });
    }
    if !created {
        // Ours, made by an earlier pass the watch has not shown yet: bring it up to date.
        return apply_if_changed(api, known, Some(&Arc::new(made)), desired.clone())
            .await
            .map(drop);
    }
    strip(&mut made);
    known.wrote(made);
    Ok(())
}

async fn remove<K>(api: &Api<K>, stored: Option<Arc<K>>) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let Some(obj) = stored else { return Ok(()) };
    match api.delete(&obj.name_any(), &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
