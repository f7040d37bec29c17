//! The operator's HTTP endpoint: `/healthz`, `/readyz` (the controller is running) and
//! `/metrics` (Prometheus text: reconciles by result, their duration, Bottles in backoff).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::pod::core::{ProxyBody, full};

/// Labels of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `ok` or the error reason.
    pub result: String,
}

/// Operator metrics and readiness.
pub struct Telemetry {
    /// Reconciles by result.
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconcile duration in seconds, by result.
    pub durations: Family<ReconcileLabels, Histogram>,
    /// Bottles whose last reconcile failed (each has a backoff entry).
    pub failing: Gauge,
    /// True once the controller runs (after leader election).
    pub ready: AtomicBool,
    registry: Registry,
}

impl Telemetry {
    /// New, unregistered-to-anything telemetry.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("bottle_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result (ok or the condition reason)",
            reconciles.clone(),
        );
        // 5 ms .. ~20 s: a reconcile is a handful of API calls, slow ones wait on a busy server.
        let durations = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.005, 2.0, 13,
            ))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by result",
            durations.clone(),
        );
        let failing = Gauge::default();
        registry.register(
            "failing_bottles",
            "Bottles whose last reconcile failed and that wait in backoff",
            failing.clone(),
        );
        Arc::new(Self {
            reconciles,
            durations,
            failing,
            ready: AtomicBool::new(false),
            registry,
        })
    }

    /// Counts a reconcile and records how long it took.
    pub fn count(&self, result: &str, took: std::time::Duration) {
        let labels = ReconcileLabels {
            result: result.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<ProxyBody> {
        let text = |code: StatusCode, body: String| {
            Response::builder()
                .status(code)
                .body(full(body))
                .expect("valid response")
        };
        match req.uri().path() {
            "/healthz" => text(StatusCode::OK, "ok\n".into()),
            "/readyz" if self.ready.load(Ordering::Relaxed) => {
                text(StatusCode::OK, "ready\n".into())
            }
            "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not leading yet\n".into()),
            "/metrics" => {
                let mut out = String::new();
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
                    .expect("metrics encode");
                text(StatusCode::OK, out)
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// Serves on `addr` in the background.
    pub async fn serve(self: Arc<Self>, addr: &str) -> anyhow::Result<()> {
        let listener = TcpListener::bind(addr).await?;
        tokio::spawn(crate::pod::core::serve_http1(listener, move |req| {
            let resp = self.respond(&req);
            async move { resp }
        }));
        Ok(())
    }
}
