//! The cred-proxy listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::routes::{Refusal, Routes};
use crate::contract::config::cred_proxy::CredProxyConfig;
use crate::pod::core::admin::{Admin, Metrics};
use crate::pod::core::forward::{Forwarded, Outcome, Upstream, forward};
use crate::pod::core::refusal::NEXT_PROXY;
use crate::pod::core::reload::{self, Loaded};
use crate::pod::core::server::{self, Protocols};
use crate::pod::core::upstream::{self, Connector};
use crate::pod::core::{ProxyBody, deny, init_crypto};

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
    let mut registry = Registry::with_prefix("cred_proxy");
    let metrics = Metrics::new("cred_proxy", &mut registry);
    let admin = Admin::start(&cfg.admin_listen, registry, live.status.clone()).await?;
    let listener = server::bind(&cfg.listen).await?;
    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, upstream_proxy = ?cfg.upstream_proxy, "cred-proxy listening");
    let proxy = Arc::new(CredProxy {
        routes: live.current,
        upstream: Upstream {
            client,
            client_h1,
            via_next_proxy: cfg.upstream_proxy.is_some(),
        },
        metrics,
    });
    admin.set_ready();
    server::serve(listener, Protocols::Detect, move |req| {
        let p = proxy.clone();
        async move { p.handle(req).await }
    })
    .await;
    Ok(())
}
