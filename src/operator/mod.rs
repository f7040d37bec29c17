//! The reconciler: watches Bottles (and what they own or reference), applies the rendered
//! objects with server-side apply, and reports through status conditions and Events.

pub mod apply;
pub mod context;
pub mod error;
pub mod leader;
pub mod reconcile;
pub mod render;
pub mod status;
pub mod telemetry;

pub use context::Context;
pub use error::Error;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};

use crate::contract::api::Bottle;
use crate::contract::model::Policy;
use crate::operator::render::Settings;

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until SIGTERM/SIGINT. `namespace` limits it to one namespace.
pub async fn run(
    client: Client,
    settings: Settings,
    namespace: Option<String>,
    telemetry: Arc<telemetry::Telemetry>,
) -> anyhow::Result<()> {
    let ns = namespace.as_deref();
    let bottles: Api<Bottle> = api(&client, ns);
    // Fail fast with a clear message when the CRD is missing, instead of a silent retry loop.
    if let Err(e) = bottles
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        anyhow::bail!(
            "cannot list Bottles ({e}); is the CRD installed (kubectl apply -f crds/) and RBAC granted?"
        );
    }
    let ctx = Arc::new(Context::new(client.clone(), settings, telemetry.clone()));
    telemetry
        .ready
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let wc = watcher::Config::default();
    let controller = Controller::new(bottles, wc.clone());
    let store = controller.store();
    controller
        .owns(api::<Pod>(&client, ns), wc.clone())
        .owns(api::<ConfigMap>(&client, ns), wc.clone())
        .owns(api::<NetworkPolicy>(&client, ns), wc.clone())
        .owns(api::<PersistentVolumeClaim>(&client, ns), wc.clone())
        // A Secret that appears, changes or goes away wakes the Bottles that reference it (or
        // own it, for the CA), so a missing Secret is picked up without waiting for a retry.
        .watches(api::<Secret>(&client, ns), wc, move |secret: Secret| {
            let ns = secret.namespace();
            let name = secret.name_any();
            store
                .state()
                .into_iter()
                .filter(|b| b.namespace() == ns && references_secret(b, &name))
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .trigger_backoff(WatchBackoff::default())
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

/// The pause after a watch error: 100 ms doubling to 3 s, back to 100 ms once a watch
/// delivers again. All watches feed one trigger stream with one backoff, so after an API
/// server restart each watch's `410 Expired` (its resource version is older than the new
/// server's watch cache) adds a step: kube's default (0.8 s doubling to 30 s) left Bottles
/// unwatched for minutes. A down API server still gets one request every 3 s at most.
#[derive(Debug, Clone)]
struct WatchBackoff {
    next: std::time::Duration,
}

impl WatchBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX: std::time::Duration = std::time::Duration::from_secs(3);
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for WatchBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
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

#[cfg(test)]
mod tests {
    use super::WatchBackoff;
    use kube::runtime::utils::Backoff as _;
    use std::time::Duration;

    #[test]
    fn watch_backoff_doubles_to_its_cap_and_resets() {
        let mut b = WatchBackoff::default();
        let steps: Vec<Duration> = b.by_ref().take(7).collect();
        let ms = |m| Duration::from_millis(m);
        assert_eq!(
            steps,
            [
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3000),
                ms(3000)
            ]
        );
        b.reset();
        assert_eq!(b.next(), Some(ms(100)));
    }
}
