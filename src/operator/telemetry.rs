//! The operator's HTTP endpoint: `/healthz`, `/readyz` (the controller is running) and
//! `/metrics` (Prometheus text: reconciles by result).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::proxy::{ProxyBody, full};

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
        Arc::new(Self {
            reconciles,
            ready: AtomicBool::new(false),
            registry,
        })
    }

    /// Counts a reconcile.
    pub fn count(&self, result: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                result: result.to_string(),
            })
            .inc();
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
        tokio::spawn(crate::proxy::serve_http1(listener, move |req| {
            let resp = self.respond(&req);
            async move { resp }
        }));
        Ok(())
    }
}
