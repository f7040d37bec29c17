//! The reconciler: watches Bottles (and what they own or reference), applies the rendered
//! objects with server-side apply, and reports through status conditions and Events.

pub mod access;
pub mod api_endpoint;
pub mod apply;
pub mod context;
pub mod error;
pub mod identity;
pub mod leader;
pub mod observed;
pub mod reconcile;
pub mod render;
pub mod status;
pub mod telemetry;

pub use context::Context;
pub use error::Error;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates};
use kube::{Api, Client, Resource, ResourceExt};

use crate::contract::api::{AccessRequest, Bottle};
use crate::contract::model::Policy;
use crate::operator::render::Settings;
use observed::{Known, Observed};

/// The Api of `K` in `namespace`, or in every namespace for `None`.
pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until SIGTERM/SIGINT. `namespace` limits it to one namespace; a
/// converged Bottle is checked again every `resync`; at most `concurrency` Bottles are
/// reconciled at once; `access_limits` bound the access queue.
pub async fn run(
    client: Client,
    settings: Settings,
    namespace: Option<String>,
    telemetry: Arc<telemetry::Telemetry>,
    resync: Duration,
    concurrency: u16,
    access_limits: access::review::Limits,
) -> anyhow::Result<()> {
    let ns = namespace.as_deref();
    let bottles: Api<Bottle> = api(&client, ns);
    // Fail fast with a clear message when the CRD is missing, instead of a silent retry loop.
    listable(
        &bottles,
        "is the CRD installed (kubectl apply -f crds/) and RBAC granted?",
    )
    .await?;
    // Helm installs CRDs only on the first install: an upgrade from before AccessRequests
    // lacks their CRD, and a watch of a missing kind would hold every reconcile back.
    let access_requests: Api<AccessRequest> = api(&client, ns);
    listable(
        &access_requests,
        "after an upgrade apply the new CRDs (kubectl apply -f crds/), and grant RBAC",
    )
    .await?;
    let (bottle_store, bottle_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    let (config_maps, config_map_writer) = reflector::store();
    let (network_policies, network_policy_writer) = reflector::store();
    let (claims, claim_writer) = reflector::store();
    let (secrets, secret_writer) = reflector::store();
    let (requests, request_writer) = reflector::store();
    let (accounts, account_writer) = reflector::store();
    let (roles, role_writer) = reflector::store();
    let (bindings, binding_writer) = reflector::store();
    let (other_pods, other_pod_writer) = reflector::store();
    let (other_config_maps, other_config_map_writer) = reflector::store();
    let (other_network_policies, other_network_policy_writer) = reflector::store();
    let (other_claims, other_claim_writer) = reflector::store();
    let o = Arc::new(Observed {
        bottles: Arc::new(Known::new(bottle_store.clone())),
        pods: Arc::new(Known::new(pods)),
        config_maps: Arc::new(Known::new(config_maps)),
        network_policies: Arc::new(Known::new(network_policies)),
        claims: Arc::new(Known::new(claims)),
        secrets: Arc::new(Known::new(secrets)),
        access_requests: Arc::new(Known::new(requests)),
        service_accounts: Arc::new(Known::new(accounts)),
        roles: Arc::new(Known::new(roles)),
        role_bindings: Arc::new(Known::new(bindings)),
        other_pods,
        other_config_maps,
        other_network_policies,
        other_claims,
        synced: tokio::sync::watch::Sender::new(false),
    });
    tokio::spawn({
        let o = o.clone();
        async move { o.sync().await }
    });
    let ctx = Arc::new(Context::new(
        client.clone(),
        settings,
        telemetry.clone(),
        o.clone(),
        resync,
        access_limits,
    ));
    telemetry
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    // Spec changes only: a status write (ours) or a metadata edit renders nothing new.
    let bottle_changes =
        observed::watch(bottles, observed::all(), bottle_writer, o.bottles.clone())
            .predicate_filter(predicates::generation, Default::default());
    let referenced_by = o.bottles.clone();
    Controller::for_stream(bottle_changes, bottle_store)
        .owns_stream(observed::watch(
            api::<Pod>(&client, ns),
            observed::ours(),
            pod_writer,
            o.pods.clone(),
        ))
        .owns_stream(observed::watch(
            api::<ConfigMap>(&client, ns),
            observed::ours(),
            config_map_writer,
            o.config_maps.clone(),
        ))
        .owns_stream(observed::watch(
            api::<NetworkPolicy>(&client, ns),
            observed::ours(),
            network_policy_writer,
            o.network_policies.clone(),
        ))
        .owns_stream(observed::watch(
            api::<PersistentVolumeClaim>(&client, ns),
            observed::ours(),
            claim_writer,
            o.claims.clone(),
        ))
        .owns_stream(observed::watch(
            api::<ServiceAccount>(&client, ns),
            observed::ours(),
            account_writer,
            o.service_accounts.clone(),
        ))
        .owns_stream(observed::watch(
            api::<Role>(&client, ns),
            observed::ours(),
            role_writer,
            o.roles.clone(),
        ))
        .owns_stream(observed::watch(
            api::<RoleBinding>(&client, ns),
            observed::ours(),
            binding_writer,
            o.role_bindings.clone(),
        ))
        // A Secret that appears, changes or goes away wakes the Bottles that reference it (or
        // own it, for the CA), so a missing Secret is picked up without waiting for a retry.
        .watches_stream(
            observed::watch(
                api::<Secret>(&client, ns),
                observed::all(),
                secret_writer,
                o.secrets.clone(),
            ),
            move |secret: Secret| {
                let ns = secret.namespace();
                let name = secret.name_any();
                referenced_by
                    .state()
                    .into_iter()
                    .filter(|b| b.namespace() == ns && references_secret(b, &name))
                    .map(|b| ObjectRef::from_obj(&*b))
                    .collect::<Vec<_>>()
            },
        )
        // A request wakes the Bottle it names: the Bottle's pass reviews all of its requests.
        .watches_stream(
            observed::watch(
                access_requests,
                observed::all(),
                request_writer,
                o.access_requests.clone(),
            ),
            |r: AccessRequest| {
                let ns = r.namespace()?;
                Some(ObjectRef::<Bottle>::new(&r.spec.bottle).within(&ns))
            },
        )
        .watches_stream(
            observed::watch_others(api(&client, ns), other_pod_writer),
            nobody,
        )
        .watches_stream(
            observed::watch_others(api(&client, ns), other_config_map_writer),
            nobody,
        )
        .watches_stream(
            observed::watch_others(api(&client, ns), other_network_policy_writer),
            nobody,
        )
        .watches_stream(
            observed::watch_others(api(&client, ns), other_claim_writer),
            nobody,
        )
        // Bounds the memory of a burst: every reconcile in flight holds a Bottle's rendered
        // objects and their serialisations (apply_to_objects: 1,000 new Bottles left the
        // operator at 146 MiB unbounded, 84 MiB at 128; at 32, 200 Bottles came slower).
        .with_config(controller::Config::default().concurrency(concurrency))
        .trigger_backoff(observed::NoPause)
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, ctx.clone())
        .for_each(|res| {
            match res {
                Ok((obj, _)) => tracing::debug!(bottle = %obj, "reconciled"),
                // A retry scheduled for a Bottle that has since been deleted.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    tracing::debug!(bottle = %obj, "gone; forgetting its failures");
                    ctx.forget(obj.namespace.clone(), obj.name.clone());
                }
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
            std::future::ready(())
        })
        .await;
    Ok(())
}

/// Lists one object of `K`, or says why not with `hint`.
async fn listable<K>(api: &Api<K>, hint: &str) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    if let Err(e) = api.list(&kube::api::ListParams::default().limit(1)).await {
        anyhow::bail!("cannot list {}s ({e}); {hint}", K::kind(&()));
    }
    Ok(())
}

/// Names held by others only feed their stores: a `NameConflict` heals on its retry.
fn nobody<T>(_: T) -> Option<ObjectRef<Bottle>> {
    None
}

fn references_secret(b: &Bottle, secret: &str) -> bool {
    if crate::operator::render::meta::ca_secret_name(b) == secret {
        return true;
    }
    match Policy::from_spec(&b.spec) {
        Ok(p) => p.secret_keys().iter().any(|k| k.secret == secret),
        Err(_) => false,
    }
}
