//! What the operator knows of the cluster without asking: reflector stores filled by the
//! Controller's own watches, plus the operator's writes the stores have not shown yet. A
//! reconcile reads here instead of GETting, and writes only what differs.
//!
//! ```text
//! watch (our label) ─ strip ─▶ store ─▶ settle own writes ─▶ wake the owning Bottle
//!                                        └ the echo of our own write wakes nothing
//! reconcile ─▶ Known::get (our write until the watch shows it, else the store) ─▶ write
//!           ─▶ Known::wrote
//! ```
//!
//! Objects a Bottle owns carry [`BOTTLE_LABEL`] and are stored without managedFields (Pods
//! without their spec too, see [`strip`]).
//! Objects without it are stored as names and owners only ([`Others`]), so a name a Bottle
//! wants but someone else holds is still a `NameConflict` without a GET. Secrets are stored
//! with their keys but no values, except the public `ca.crt` of a CA: the operator only checks
//! that referenced keys exist, so token values never sit in its memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, PodSpec, Secret, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::Error;
use super::apply::{controlled_by, kind_of};
use crate::contract::api::{AccessRequest, Bottle};
use crate::contract::config::layout;
use crate::operator::render::meta::BOTTLE_LABEL;

/// How long a write of ours stands in for the store when its watch event never comes (a
/// watch that broke and relisted without it); normally the event settles it in milliseconds.
const SETTLE: Duration = Duration::from_secs(30);

/// Objects per page of a watch's (re)list. Every page is decoded whole before it is stripped,
/// so its size is the operator's memory peak at start-up: at the API's default of 500, a
/// restart over 1,400 Bottles peaked at 150 MiB against 93 MiB in steady state.
const PAGE: u32 = 100;

/// The watch of every object of a kind.
pub fn all() -> watcher::Config {
    watcher::Config::default().page_size(PAGE)
}

/// The watch selector of what the operator owns.
pub fn ours() -> watcher::Config {
    all().labels(BOTTLE_LABEL)
}

/// The watch selector of everything else of a kind (names and owners only).
pub fn theirs() -> watcher::Config {
    all().labels(&format!("!{BOTTLE_LABEL}"))
}

struct Written<K> {
    object: Arc<K>,
    at: Instant,
}

/// One kind of object as the operator knows it: its store and its writes in flight.
pub struct Known<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    written: Mutex<HashMap<(String, String), Written<K>>>,
}

fn key_of<K: Resource>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Known<K> {
    /// Reads through `store`.
    pub fn new(store: Store<K>) -> Self {
        Self {
            store,
            written: Mutex::default(),
        }
    }

    /// The newest state known: our own write until the watch has shown it, else the store.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let key = (namespace.to_string(), name.to_string());
        if let Some(w) = self.written.lock().expect("writes lock").get(&key)
            && w.at.elapsed() < SETTLE
        {
            return Some(w.object.clone());
        }
        self.store.get(&ObjectRef::new(name).within(namespace))
    }

    /// Everything in the store.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.store.state()
    }

    /// Remembers what a write returned, until the watch shows it; returns it.
    pub fn wrote(&self, obj: K) -> Arc<K> {
        let obj = Arc::new(obj);
        let key = key_of(&*obj);
        // The watch may have shown it (or something newer) before the response came back.
        // Versions are opaque to clients, but etcd's are increasing integers; when they are
        // not, only an equal one counts.
        let newer = |stored: Option<String>, ours: Option<String>| match (stored, ours) {
            (Some(s), Some(o)) if s == o => true,
            (Some(s), Some(o)) => {
                matches!((s.parse::<u64>(), o.parse::<u64>()), (Ok(s), Ok(o)) if s >= o)
            }
            _ => false,
        };
        let shown = self
            .store
            .get(&ObjectRef::from_obj(&*obj))
            .is_some_and(|s| newer(s.resource_version(), obj.resource_version()));
        let mut w = self.written.lock().expect("writes lock");
        if shown {
            w.remove(&key);
        } else {
            w.insert(
                key,
                Written {
                    object: obj.clone(),
                    at: Instant::now(),
                },
            );
        }
        obj
    }

    /// Settles writes against a watch event (already in the store); true when the event is
    /// only the echo of a write of ours, which needs no reconcile.
    fn saw(&self, event: &watcher::Event<K>) -> bool {
        let mut w = self.written.lock().expect("writes lock");
        match event {
            watcher::Event::Apply(o) => {
                let key = key_of(o);
                let echo = w
                    .get(&key)
                    .is_some_and(|x| x.object.resource_version() == o.resource_version());
                if echo {
                    w.remove(&key);
                }
                echo
            }
            // A delete of the object we wrote (not of an older one by the same name).
            watcher::Event::Delete(o) => {
                let key = key_of(o);
                if w.get(&key).is_some_and(|x| x.object.uid() == o.uid()) {
                    w.remove(&key);
                }
                false
            }
            watcher::Event::InitApply(o) => {
                w.remove(&key_of(o));
                false
            }
            // A relisted store is newer than anything written before it.
            watcher::Event::InitDone => {
                w.clear();
                false
            }
            watcher::Event::Init => false,
        }
    }

    /// Waits until the store holds its first full list. One waiter per store only: its
    /// readiness wakes a single waiting task (kube-runtime 5), see [`Observed::sync`].
    async fn synced(&self) {
        // Only fails when the writer is gone, i.e. the controller is shutting down.
        let _ = self.store.wait_until_ready().await;
    }
}

/// Drops what the operator never reads, so the stores stay small and hold no tokens:
/// managedFields and kubectl's last-applied copy everywhere, Secret values (but the public CA
/// certificate), and a Pod's spec but its node (a Pod is judged by its template-hash
/// annotation and reported from its status).
pub fn strip<K: Resource + 'static>(obj: &mut K) {
    obj.managed_fields_mut().clear();
    if let Some(a) = obj.meta_mut().annotations.as_mut() {
        a.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    let any = obj as &mut dyn std::any::Any;
    if let Some(s) = any.downcast_mut::<Secret>() {
        for (k, v) in s.data.iter_mut().flatten() {
            if k != layout::CA_CERT_FILE {
                *v = ByteString(Vec::new());
            }
        }
    } else if let Some(p) = any.downcast_mut::<Pod>() {
        p.spec = p.spec.take().map(|s| PodSpec {
            node_name: s.node_name,
            ..Default::default()
        });
    }
}

/// The watch of one owned kind: stores it in `known` and yields what should wake a Bottle
/// (everything but the echoes of our own writes).
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    writer: Writer<K>,
    known: Arc<Known<K>>,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, config)
        .backoff(WatchBackoff::default())
        .modify(strip::<K>)
        .reflect(writer)
        .filter(move |ev| {
            let echo = matches!(ev, Ok(e) if known.saw(e));
            std::future::ready(!echo)
        })
        .touched_objects()
}

/// Names and owners of the objects of a kind the operator does not own.
pub type Others<K> = Store<PartialObjectMeta<K>>;

/// The watch feeding an [`Others`] store (metadata only on the wire); it wakes nothing.
pub fn watch_others<K>(
    api: Api<PartialObjectMeta<K>>,
    writer: Writer<PartialObjectMeta<K>>,
) -> impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, theirs())
        .backoff(WatchBackoff::default())
        .modify(|m: &mut PartialObjectMeta<K>| {
            m.metadata.managed_fields = None;
            m.metadata.annotations = None;
        })
        .reflect(writer)
        .touched_objects()
}

/// Everything the reconciler reads instead of asking the API server.
pub struct Observed {
    /// Bottles (the Controller's own store).
    pub bottles: Arc<Known<Bottle>>,
    /// Bottle Pods.
    pub pods: Arc<Known<Pod>>,
    /// Sidecar config ConfigMaps.
    pub config_maps: Arc<Known<ConfigMap>>,
    /// The internal and egress NetworkPolicies.
    pub network_policies: Arc<Known<NetworkPolicy>>,
    /// Workspace claims.
    pub claims: Arc<Known<PersistentVolumeClaim>>,
    /// Every Secret in scope, values stripped: the CAs and the Secrets Bottles reference.
    pub secrets: Arc<Known<Secret>>,
    /// Every AccessRequest in scope.
    pub access_requests: Arc<Known<AccessRequest>>,
    /// Supervised Bottles' ServiceAccounts.
    pub service_accounts: Arc<Known<ServiceAccount>>,
    /// Their Roles.
    pub roles: Arc<Known<Role>>,
    /// Their RoleBindings.
    pub role_bindings: Arc<Known<RoleBinding>>,
    /// Pods the operator does not own.
    pub other_pods: Others<Pod>,
    /// ConfigMaps the operator does not own.
    pub other_config_maps: Others<ConfigMap>,
    /// NetworkPolicies the operator does not own.
    pub other_network_policies: Others<NetworkPolicy>,
    /// Claims the operator does not own.
    pub other_claims: Others<PersistentVolumeClaim>,
    /// True once every store has its first full list.
    pub synced: tokio::sync::watch::Sender<bool>,
}

impl Observed {
    /// Waits until every store but the Bottles' (the Controller waits for that one itself)
    /// holds its first full list, then lets every [`Self::ready`] through. Run once, by one
    /// task: a store's readiness wakes only one of several tasks waiting on it.
    pub async fn sync(&self) {
        self.pods.synced().await;
        self.config_maps.synced().await;
        self.network_policies.synced().await;
        self.claims.synced().await;
        self.secrets.synced().await;
        self.access_requests.synced().await;
        self.service_accounts.synced().await;
        self.roles.synced().await;
        self.role_bindings.synced().await;
        for others in [
            self.other_pods.wait_until_ready().boxed(),
            self.other_config_maps.wait_until_ready().boxed(),
            self.other_network_policies.wait_until_ready().boxed(),
            self.other_claims.wait_until_ready().boxed(),
        ] {
            let _ = others.await;
        }
        self.synced.send_replace(true);
    }

    /// Waits until [`Self::sync`] is done, so a reconcile never mistakes an empty store for
    /// missing objects (and writes them again).
    pub async fn ready(&self) {
        let _ = self.synced.subscribe().wait_for(|s| *s).await;
    }
}

/// The object `name` in `namespace` that the Bottle with `owner_uid` should own, as known:
/// `None` when absent, a `NameConflict` when something else holds the name (the operator
/// never takes over objects it did not make). One that lost our label but is still ours
/// counts as absent, so the next apply puts the label back.
pub fn owned<K>(
    known: &Known<K>,
    others: Option<&Others<K>>,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<Option<Arc<K>>, Error>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let conflict = || Error::NameConflict {
        kind: kind_of::<K>(),
        name: name.to_string(),
    };
    if let Some(obj) = known.get(namespace, name) {
        return if controlled_by(&*obj, owner_uid) {
            Ok(Some(obj))
        } else {
            Err(conflict())
        };
    }
    let theirs = others.and_then(|o| o.get(&ObjectRef::new(name).within(namespace)));
    match theirs {
        Some(m) if !controlled_by(&*m, owner_uid) => Err(conflict()),
        _ => Ok(None),
    }
}

/// The controller's merged trigger stream pauses for nothing: each watch already backs off on
/// its own errors ([`WatchBackoff`]), and a pause here stops every watch for each error of
/// one (after an API server restart, ten watches' `410 Expired` queued up 3 s apart).
#[derive(Debug, Clone, Default)]
pub struct NoPause;

impl Iterator for NoPause {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<std::time::Duration> {
        Some(std::time::Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoPause {
    fn reset(&mut self) {}
}

/// The pause after a watch error, per watch and again on the controller's merged trigger
/// stream: 100 ms doubling to 3 s, back to 100 ms once the watch delivers again. After an
/// API server restart every watch fails to connect, then gets `410 Expired` (its resource
/// version is older than the new server's watch cache); with kube's default (0.8 s doubling
/// to 30 s) new Bottles went unseen for minutes (`tests/faults.rs`). A down API server
/// still gets one request every 3 s at most from each watch.
#[derive(Debug, Clone)]
pub struct WatchBackoff {
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
