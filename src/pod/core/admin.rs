//! The admin listener every sidecar serves the same way: `/healthz` (the process answers),
//! `/readyz` (its agent-facing listener is serving), `/status` (running config hash, last
//! reload error), `/metrics` (Prometheus text: the sidecar's own counters and the config
//! ones) and `/refused` (hosts refused lately for want of a route, JSON). It binds a port
//! the agent's firewall rules do not open.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::refused_hosts::RefusedHosts;
use super::reload::ReloadStatus;
use super::server::{self, Protocols};
use super::{ProxyBody, full};

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `allowed`, `denied` or `error`.
    pub outcome: &'static str,
}

/// Labels of the denial counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeniedBy {
    /// Who refused: this sidecar (`egress`, `cred_proxy`) or the next proxy (`pipelock`).
    pub by: &'static str,
}

/// Labels of the config info gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    /// Hash of the running config.
    pub hash: String,
}

/// Counters both proxies keep.
pub struct Metrics {
    /// Requests by outcome.
    pub requests: Family<Outcome, Counter>,
    /// Denied requests by who refused them (each also counts as `outcome="denied"`).
    pub denials: Family<DeniedBy, Counter>,
    component: &'static str,
}

impl Metrics {
    /// Registers the counters of `component` (`egress`, `cred_proxy`) in `registry`.
    pub fn new(component: &'static str, registry: &mut Registry) -> Arc<Self> {
        let requests = Family::<Outcome, Counter>::default();
        let denials = Family::<DeniedBy, Counter>::default();
        registry.register("requests", "Requests handled, by outcome", requests.clone());
        registry.register(
            "denials",
            "Denied requests, by who refused them",
            denials.clone(),
        );
        Arc::new(Self {
            requests,
            denials,
            component,
        })
    }

    /// Counts one request.
    pub fn count(&self, outcome: &'static str) {
        self.requests.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts one request this sidecar refused.
    pub fn denied(&self) {
        self.denied_by(self.component);
    }

    /// Counts one request `by` refused (`pipelock` for the next proxy).
    pub fn denied_by(&self, by: &'static str) {
        self.count("denied");
        self.denials.get_or_create(&DeniedBy { by }).inc();
    }
}

/// One sidecar's admin endpoint: its metrics registry, reload status and readiness.
pub struct Admin {
    registry: Registry,
    status: Arc<Mutex<ReloadStatus>>,
    ready: AtomicBool,
    config: Family<ConfigLabels, Gauge>,
    reloads_ok: Counter,
    reloads_failed: Counter,
    refused: Arc<RefusedHosts>,
}

impl Admin {
    /// Adds the config metrics to `registry` (which holds the sidecar's own counters).
    pub fn new(mut registry: Registry, status: Arc<Mutex<ReloadStatus>>) -> Arc<Self> {
        let config = Family::<ConfigLabels, Gauge>::default();
        let reloads_ok = Counter::default();
        let reloads_failed = Counter::default();
        registry.register(
            "config_info",
            "The running config (value 1, hash label)",
            config.clone(),
        );
        registry.register(
            "config_reloads",
            "Successful config reloads",
            reloads_ok.clone(),
        );
        registry.register(
            "config_reload_failures",
            "Rejected config reloads",
            reloads_failed.clone(),
        );
        Arc::new(Self {
            registry,
            status,
            ready: AtomicBool::new(false),
            config,
            reloads_ok,
            reloads_failed,
            refused: Arc::default(),
        })
    }

    /// Where the sidecar records the hosts it refused for want of a route.
    pub fn refused(&self) -> Arc<RefusedHosts> {
        self.refused.clone()
    }

    /// Binds `addr` and serves the admin endpoints there until the process ends.
    pub async fn start(
        addr: &str,
        registry: Registry,
        status: Arc<Mutex<ReloadStatus>>,
    ) -> anyhow::Result<Arc<Self>> {
        let listener = server::bind(addr).await?;
        let admin = Self::new(registry, status);
        admin.serve(listener);
        Ok(admin)
    }

    /// Serves the admin endpoints on `listener` until the process ends.
    pub fn serve(self: &Arc<Self>, listener: TcpListener) {
        let me = self.clone();
        tokio::spawn(server::serve(listener, Protocols::Detect, move |req| {
            std::future::ready(me.answer(&req))
        }));
    }

    /// Marks the sidecar ready: its agent-facing listener is bound and about to serve.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn sync(&self, s: &ReloadStatus) {
        self.config.clear();
        self.config
            .get_or_create(&ConfigLabels {
                hash: s.config_hash.clone(),
            })
            .set(1);
        sync_counter(&self.reloads_ok, s.reloads_ok);
        sync_counter(&self.reloads_failed, s.reloads_failed);
    }

    fn answer<B>(&self, req: &Request<B>) -> Response<ProxyBody> {
        let snapshot = self.status.lock().expect("status lock").clone();
        match req.uri().path() {
            "/healthz" => Response::new(full("ok\n")),
            "/readyz" if self.ready.load(Ordering::Acquire) => Response::new(full("ready\n")),
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            "/status" => Response::builder()
                .header("content-type", "application/json")
                .body(full(
                    serde_json::to_vec(&snapshot).expect("status serialises"),
                ))
                .expect("valid response"),
            "/refused" => Response::builder()
                .header("content-type", "application/json")
                .body(full(
                    serde_json::to_vec(&self.refused.snapshot()).expect("hosts serialise"),
                ))
                .expect("valid response"),
            "/metrics" => {
                self.sync(&snapshot);
                let mut out = String::new();
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
                    .expect("metrics encode");
                Response::builder()
                    .header(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )
                    .body(full(out))
                    .expect("valid response")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: the admin port serves /healthz /readyz /status /metrics /refused\n",
            ),
        }
    }
}

/// GET of another sidecar's admin URL on the Pod's loopback, with a short timeout.
pub async fn get(url: &str) -> anyhow::Result<bytes::Bytes> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = url.parse()?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(3), client.get(uri))
        .await
        .map_err(|_| anyhow::anyhow!("no answer from {url} within 3s"))??;
    anyhow::ensure!(
        resp.status().is_success(),
        "{url} answered {}",
        resp.status()
    );
    let body = http_body_util::Limited::new(resp.into_body(), 1 << 20)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading {url}: {e}"))?;
    Ok(body.to_bytes())
}

fn text(status: StatusCode, body: &'static str) -> Response<ProxyBody> {
    Response::builder()
        .status(status)
        .body(full(body))
        .expect("valid response")
}

fn sync_counter(c: &Counter<u64, AtomicU64>, target: u64) {
    let now = c.get();
    if target > now {
        c.inc_by(target - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(admin: &Admin, path: &str) -> StatusCode {
        admin.answer(&Request::get(path).body(()).unwrap()).status()
    }

    #[test]
    fn ready_only_once_the_sidecar_says_so_while_healthy_and_reporting_throughout() {
        let admin = Admin::new(Registry::with_prefix("t"), Arc::default());
        assert_eq!(get(&admin, "/readyz"), StatusCode::SERVICE_UNAVAILABLE);
        for p in ["/healthz", "/status", "/metrics"] {
            assert_eq!(get(&admin, p), StatusCode::OK, "{p}");
        }
        admin.set_ready();
        assert_eq!(get(&admin, "/readyz"), StatusCode::OK);
        assert_eq!(get(&admin, "/other"), StatusCode::NOT_FOUND);
    }
}
