//! State shared by every reconcile: the client, the Event recorder, settings, what the
//! watches have observed, and per-Bottle failure counts for backoff.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;

use super::observed::Observed;
use super::telemetry::Telemetry;
use crate::contract::api::Bottle;
use crate::operator::render::Settings;

/// Shared reconcile context.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Publishes Events on Bottles.
    pub recorder: Recorder,
    /// Rendering inputs.
    pub settings: Settings,
    /// Metrics.
    pub telemetry: Arc<Telemetry>,
    /// The watch stores a reconcile reads instead of the API server.
    pub observed: Arc<Observed>,
    /// How long a converged Bottle waits before it is checked again without a trigger.
    pub resync: Duration,
    /// How long access requests wait, and how many may.
    pub access_limits: super::access::review::Limits,
    failures: Mutex<HashMap<BottleKey, u32>>,
}

/// Namespace and name: what identifies a Bottle across its watch events, including the
/// "not found" the controller reports once it is gone.
type BottleKey = (Option<String>, String);

fn key(obj: &ObjectRef<Bottle>) -> BottleKey {
    (obj.namespace.clone(), obj.name.clone())
}

impl Context {
    /// A context for the given client and settings.
    pub fn new(
        client: Client,
        settings: Settings,
        telemetry: Arc<Telemetry>,
        observed: Arc<Observed>,
        resync: Duration,
        access_limits: super::access::review::Limits,
    ) -> Self {
        let reporter = Reporter {
            controller: "bottle-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            telemetry,
            observed,
            resync,
            access_limits,
            failures: Mutex::default(),
        }
    }

    /// Records one more failure and returns how long to wait: 1 s doubling to 5 min.
    pub fn backoff(&self, obj: &ObjectRef<Bottle>) -> Duration {
        let mut f = self.failures.lock().expect("failure map lock");
        let n = f.entry(key(obj)).or_insert(0);
        *n = n.saturating_add(1);
        let delay = backoff_for(*n);
        self.telemetry.failing.set(f.len() as i64);
        delay
    }

    /// Forgets failures after a successful reconcile.
    pub fn succeeded(&self, obj: &ObjectRef<Bottle>) {
        self.forget(obj.namespace.clone(), obj.name.clone());
    }

    /// Forgets a Bottle, for example one deleted while it was failing (its retry then finds
    /// nothing to reconcile), so the map does not grow with every Bottle ever deleted.
    pub fn forget(&self, namespace: Option<String>, name: String) {
        let mut f = self.failures.lock().expect("failure map lock");
        f.remove(&(namespace, name));
        self.telemetry.failing.set(f.len() as i64);
    }
}

/// Delay after the `n`th consecutive failure.
pub fn backoff_for(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<u64> = (1..=11).map(|n| backoff_for(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
    }
}
