//! Leader election with a `coordination.k8s.io` Lease, so two operator replicas never
//! reconcile at once. The leader renews; a replica that loses the lease exits and is
//! restarted as a follower (simpler and safer than stopping controllers in place). Writes are
//! fenced ([`Fence`]): a leader that was paused (SIGSTOP, a frozen node, a long GC) past its
//! renew deadline sends no write when it wakes, even before its renewal notices the loss.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

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

/// Until when this replica may write: the moment its last successful lease request was sent
/// plus two thirds of the lease. Another replica takes over only a whole lease after the
/// renew time written, which is later, so the two never write at once. The clock is
/// monotonic and runs while the process is stopped.
#[derive(Debug, Default)]
pub struct Fence {
    valid_until: Mutex<Option<Instant>>,
}

impl Fence {
    /// Whether writes are allowed now.
    pub fn held(&self) -> bool {
        self.valid_until
            .lock()
            .expect("fence lock")
            .is_some_and(|t| Instant::now() < t)
    }

    /// Records a successful lease request sent at `sent`.
    fn renewed(&self, sent: Instant, lease: Duration) {
        *self.valid_until.lock().expect("fence lock") = Some(sent + lease * 2 / 3);
    }
}

/// A kube client whose writes (anything but GET, HEAD and OPTIONS) fail unless `fence` is
/// held; the Lease requests themselves always go through.
pub fn fenced_client(config: kube::Config, fence: Arc<Fence>) -> Result<Client, kube::Error> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&FenceLayer(fence))
        .build())
}

struct FenceLayer(Arc<Fence>);

impl<S> tower_layer::Layer<S> for FenceLayer {
    type Service = Fenced<S>;
    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

/// The client stack with the fence in front.
#[derive(Clone)]
pub struct Fenced<S> {
    inner: S,
    fence: Arc<Fence>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower_service::Service<http::Request<B>> for Fenced<S>
where
    S: tower_service::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let read = matches!(
            *req.method(),
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
        );
        let lease = req.uri().path().starts_with("/apis/coordination.k8s.io/");
        if !read && !lease && !self.fence.held() {
            let what = format!("{} {}", req.method(), req.uri().path());
            return Box::pin(async move {
                Err(
                    format!("not sent: {what}: the leadership lease lapsed before it was renewed")
                        .into(),
                )
            });
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Blocks until this replica leads, then renews in the background and keeps `fence` held;
/// exits the process when the lease is lost or lapses.
pub async fn lead(client: Client, e: Election, fence: Arc<Fence>) {
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    // Several renewals fit in the fence (two thirds of the lease): one slow request is not
    // a lapse.
    let retry = e.lease / 6;
    loop {
        let sent = Instant::now();
        match try_acquire(&api, &e).await {
            Ok(true) => {
                fence.renewed(sent, e.lease);
                break;
            }
            Ok(false) => tracing::info!(lease = %e.name, "waiting for leadership"),
            Err(err) => tracing::warn!(error = %err, "lease request failed"),
        }
        tokio::time::sleep(retry).await;
    }
    tracing::info!(lease = %e.name, identity = %e.identity, "became leader");
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(retry).await;
            if !fence.held() {
                tracing::error!(
                    "the lease lapsed before it was renewed (paused, or the API server unreachable); exiting"
                );
                std::process::exit(1);
            }
            let sent = Instant::now();
            match try_acquire(&api, &e).await {
                Ok(true) => fence.renewed(sent, e.lease),
                Ok(false) => {
                    tracing::error!("leadership lost to another replica; exiting");
                    std::process::exit(1);
                }
                Err(err) => tracing::warn!(error = %err, "lease renewal failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_holds_for_two_thirds_of_the_lease_from_the_request() {
        let f = Fence::default();
        assert!(!f.held(), "not held before the first lease");
        f.renewed(Instant::now(), Duration::from_secs(3));
        assert!(f.held());
        f.renewed(
            Instant::now() - Duration::from_secs(2),
            Duration::from_secs(3),
        );
        assert!(
            !f.held(),
            "a request sent 2 s ago holds a 3 s lease for 2 s only"
        );
    }
}
