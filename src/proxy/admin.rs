//! The admin listener: `/healthz`, `/status` (running config hash, last reload error) and
//! `/metrics` (Prometheus text). It binds a port the agent's firewall rules do not open.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::reload::ReloadStatus;
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
    registry: Registry,
    config: Family<ConfigLabels, Gauge>,
    reloads_ok: Counter,
    reloads_failed: Counter,
}

impl Metrics {
    /// Registers the metrics under `prefix` (`egress`, `cred_proxy`).
    pub fn new(prefix: &'static str) -> Arc<Self> {
        let mut registry = Registry::with_prefix(prefix);
        let requests = Family::<Outcome, Counter>::default();
        let denials = Family::<DeniedBy, Counter>::default();
        let config = Family::<ConfigLabels, Gauge>::default();
        let reloads_ok = Counter::default();
        let reloads_failed = Counter::default();
        registry.register("requests", "Requests handled, by outcome", requests.clone());
        registry.register(
            "denials",
            "Denied requests, by who refused them",
            denials.clone(),
        );
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
            requests,
            denials,
            component: prefix,
            registry,
            config,
            reloads_ok,
            reloads_failed,
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
}

fn sync_counter(c: &Counter<u64, AtomicU64>, target: u64) {
    let now = c.get();
    if target > now {
        c.inc_by(target - now);
    }
}

async fn handle(
    req: Request<Incoming>,
    metrics: Arc<Metrics>,
    status: Arc<Mutex<ReloadStatus>>,
) -> Response<ProxyBody> {
    let snapshot = status.lock().expect("status lock").clone();
    match req.uri().path() {
        "/healthz" => Response::new(full("ok\n")),
        "/status" => Response::builder()
            .header("content-type", "application/json")
            .body(full(
                serde_json::to_vec(&snapshot).expect("status serialises"),
            ))
            .expect("valid response"),
        "/metrics" => {
            metrics.sync(&snapshot);
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &metrics.registry)
                .expect("metrics encode");
            Response::builder()
                .header(
                    "content-type",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
                .body(full(out))
                .expect("valid response")
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full("not found\n"))
            .expect("valid response"),
    }
}

/// Serves the admin endpoints on `listener` until the process ends.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>, status: Arc<Mutex<ReloadStatus>>) {
    tokio::spawn(super::serve_http1(listener, move |req| {
        handle(req, metrics.clone(), status.clone())
    }));
}
