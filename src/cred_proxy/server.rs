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
use crate::proxy::forward::forward;
use crate::proxy::reload::{self, Loaded, hash_bytes};
use crate::proxy::upstream::{self, Connector, UpstreamClient};
use crate::proxy::{ProxyBody, deny, init_crypto};

fn read_config(path: &Path) -> anyhow::Result<(CredProxyConfig, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg =
        serde_norway::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok((cfg, bytes))
}

/// Loads and validates a config (for the reloader).
pub fn load(path: &Path) -> anyhow::Result<Loaded<Routes>> {
    let (cfg, bytes) = read_config(path)?;
    let routes = Routes::compile(&cfg)?;
    let mut parts = vec![bytes.clone()];
    parts.extend(
        routes
            .token_files()
            .iter()
            .map(|f| std::fs::read(f).unwrap_or_default()),
    );
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(Loaded {
        value: routes,
        config_hash: hash_bytes(&[&bytes]),
        change_key: hash_bytes(&refs),
    })
}

struct CredProxy {
    routes: watch::Receiver<Arc<Routes>>,
    client: UpstreamClient,
    client_h1: UpstreamClient,
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
                let resp = forward(
                    &self.client,
                    &self.client_h1,
                    req,
                    uri.clone(),
                    Some(inject),
                )
                .await;
                self.metrics
                    .count(if resp.status() == StatusCode::BAD_GATEWAY {
                        "error"
                    } else {
                        "allowed"
                    });
                tracing::info!(%method, upstream = %uri.authority().map(|a| a.as_str()).unwrap_or(""), path = uri.path(), status = resp.status().as_u16(), "forwarded");
                resp
            }
            Err(r) => {
                self.metrics.count("denied");
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
    let (cfg, _) = read_config(&config_path)?;
    let path = config_path.clone();
    let dirs = move |r: &Routes| {
        let mut d: Vec<PathBuf> = std::iter::once(config_path.as_path())
            .chain(r.token_files().iter().map(PathBuf::as_path))
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        d.sort();
        d.dedup();
        d
    };
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
        client,
        client_h1,
        metrics,
    });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
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
