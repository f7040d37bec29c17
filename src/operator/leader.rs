//! Leader election with a `coordination.k8s.io` Lease, so two operator replicas never
//! reconcile at once. The leader renews; a replica that loses the lease exits and is
//! restarted as a follower (simpler and safer than stopping controllers in place).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};

/// Lease settings.
#[derive(Debug, Clone)]
pub struct Election {
    /// Lease namespace.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (its Pod name).
    pub identity: String,
    /// How long a lease holds without renewal.
    pub lease: Duration,
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let (Some(renew), Some(secs)) = (spec.renew_time.as_ref(), spec.lease_duration_seconds) else {
        return true;
    };
    renew.0 + std::time::Duration::from_secs(secs.max(0) as u64) < now
}

/// One attempt to take or keep the lease; true when this replica holds it afterwards.
pub async fn try_acquire(api: &Api<Lease>, e: &Election) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let spec = |acquire: Option<MicroTime>, transitions: i32| LeaseSpec {
        holder_identity: Some(e.identity.clone()),
        lease_duration_seconds: Some(e.lease.as_secs() as i32),
        acquire_time: acquire,
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    match api.get_opt(&e.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(e.name.clone()),
                    ..Default::default()
                },
                spec: Some(spec(Some(MicroTime(now)), 0)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(err) => Err(err),
            }
        }
        Some(mut lease) => {
            let current = lease.spec.clone().unwrap_or_default();
            let mine = current.holder_identity.as_deref() == Some(e.identity.as_str());
            if !mine && !expired(&current, now) {
                return Ok(false);
            }
            let transitions = current.lease_transitions.unwrap_or(0) + i32::from(!mine);
            let acquire = if mine {
                current.acquire_time.clone()
            } else {
                Some(MicroTime(now))
            };
            lease.spec = Some(spec(acquire, transitions));
            // resourceVersion is kept: a concurrent writer makes this a 409, not a split brain.
            match api.replace(&e.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(err) => Err(err),
            }
        }
    }
}

/// Blocks until this replica leads, then renews in the background; exits the process if
/// the lease is lost.
pub async fn lead(client: Client, e: Election) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let retry = e.lease / 3;
    loop {
        match try_acquire(&api, &e).await {
            Ok(true) => break,
            Ok(false) => tracing::info!(lease = %e.name, "waiting for leadership"),
            Err(err) => tracing::warn!(error = %err, "lease request failed"),
        }
        tokio::time::sleep(retry).await;
    }
    tracing::info!(lease = %e.name, identity = %e.identity, "became leader");
    tokio::spawn(async move {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(retry).await;
            match try_acquire(&api, &e).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!("leadership lost to another replica; exiting");
                    std::process::exit(1);
                }
                Err(err) => {
                    tracing::warn!(error = %err, "lease renewal failed");
                    if last_ok.elapsed() > e.lease {
                        tracing::error!("could not renew the lease in time; exiting");
                        std::process::exit(1);
                    }
                }
            }
        }
    });
}
