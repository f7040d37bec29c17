//! The cred-proxy listener.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::routes::{Refusal, Routes};
use crate::config::cred_proxy::CredProxyConfig;
use crate::proxy::admin::{self, Metrics};
use crate::proxy::forward::{Forwarded, Outcome, Upstream, forward};
use crate::proxy::refusal::NEXT_PROXY;
use crate::proxy::reload::{self, Loaded};
use crate::proxy::upstream::{self, Connector};
use crate::proxy::{ProxyBody, accept, deny, init_crypto};

/// Loads and validates a config (for the reloader).
pub fn load(path: &Path) -> anyhow::Result<Loaded<Routes>> {
    let (cfg, bytes): (CredProxyConfig, _) = reload::read_yaml(path)?;
    let routes = Routes::compile(&cfg)?;
    let tokens = routes.token_files().to_vec();
    Ok(reload::loaded_with_tokens(routes, &bytes, &tokens))
}

struct CredProxy {
    routes: watch::Receiver<Arc<Routes>>,
    upstream: Upstream,
    metrics: Arc<Metrics>,
}

impl CredProxy {
    async fn handle(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let routes = self.routes.borrow().clone();
        let (path, query) = (
            req.uri().path().to_string(),
            req.uri().query().map(str::to_string),
        );
        match routes.resolve(&path, query.as_deref()) {
            Ok((uri, inject)) => {
                let method = req.method().clone();
                let Forwarded {
                    response: resp,
                    outcome,
                } = forward(&self.upstream, req, uri.clone(), Some(inject)).await;
                match outcome {
                    Outcome::Allowed => self.metrics.count("allowed"),
                    Outcome::DeniedByNextProxy => self.metrics.denied_by(NEXT_PROXY),
                    Outcome::Error => self.metrics.count("error"),
                }
                tracing::info!(%method, upstream = %uri.authority().map(|a| a.as_str()).unwrap_or(""), path = uri.path(), status = resp.status().as_u16(), "forwarded");
                resp
            }
            Err(r) => {
                self.metrics.denied();
                tracing::warn!(path, reason = %r, "denied");
                let status = if matches!(r, Refusal::UnknownRoute(_)) {
                    StatusCode::NOT_FOUND
                } else {
                    StatusCode::FORBIDDEN
                };
                deny(status, &r.to_string())
            }
        }
    }
}

/// Runs cred-proxy with the config at `config_path` until the process is stopped.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    init_crypto();
    let (cfg, _): (CredProxyConfig, _) = reload::read_yaml(&config_path)?;
    let path = config_path.clone();
    let dirs = move |r: &Routes| reload::dirs_of(&config_path, r.token_files());
    let live = reload::start(move || load(&path), dirs, Duration::from_secs(2))?;
    let connector = Connector::new(cfg.upstream_proxy.as_deref())?;
    let (client, client_h1) = upstream::clients(connector, upstream::roots(&[&cfg.ca_cert])?);
    let metrics = Metrics::new("cred_proxy");
    let admin = TcpListener::bind(&cfg.admin_listen)
        .await
        .with_context(|| format!("binding {}", cfg.admin_listen))?;
    admin::serve(admin, metrics.clone(), live.status.clone());
    let listener = TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    tracing::info!(listen = %cfg.listen, upstream_proxy = ?cfg.upstream_proxy, "cred-proxy listening");
    let proxy = Arc::new(CredProxy {
        routes: live.current,
        upstream: Upstream {
            client,
            client_h1,
            via_next_proxy: cfg.upstream_proxy.is_some(),
        },
        metrics,
    });
    loop {
        let stream = accept(&listener).await;
        let p = proxy.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let p = p.clone();
                async move { Ok::<_, Infallible>(p.handle(req).await) }
            });
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1().max_buf_size(64 * 1024);
            let _ = b
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}
