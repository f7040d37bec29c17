//! The egress listener: CONNECT and absolute-form HTTP from the agent, TLS interception, and
//! per-request checks against the live [`Policy`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::policy::{Deny, HostAction, Policy, normalize_host};
use crate::contract::config::egress::EgressConfig;
use crate::pod::core::admin::{Admin, Metrics};
use crate::pod::core::forward::{Forwarded, Outcome, Upstream, forward};
use crate::pod::core::refusal::{self, NEXT_PROXY};
use crate::pod::core::refused_hosts::RefusedHosts;
use crate::pod::core::reload::{self, Loaded};
use crate::pod::core::server::{self, Protocols};
use crate::pod::core::tls::Authority;
use crate::pod::core::upstream::{self, Connector};
use crate::pod::core::{ProxyBody, deny, init_crypto};

/// Reads and parses the config file.
pub fn read_config(path: &Path) -> anyhow::Result<(EgressConfig, Vec<u8>)> {
    reload::read_yaml(path)
}

/// Loads and validates a config into a policy (for the reloader).
pub fn load(path: &Path) -> anyhow::Result<Loaded<Policy>> {
    let (cfg, bytes) = read_config(path)?;
    let policy = Policy::compile(&cfg)?;
    let tokens = policy.token_files().to_vec();
    Ok(reload::loaded_with_tokens(policy, &bytes, &tokens))
}

/// The running proxy.
pub struct Egress {
    policy: watch::Receiver<Arc<Policy>>,
    authority: Authority,
    connector: Connector,
    upstream: Upstream,
    metrics: Arc<Metrics>,
    refused: Arc<RefusedHosts>,
}

/// Runs the egress sidecar with the config at `config_path` until the process is stopped.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    init_crypto();
    // Listeners, CA and next hop are fixed for the process; routes reload live.
    let (cfg, _) = read_config(&config_path)?;
    let path = config_path.clone();
    let live = reload::start(
        move || load(&path),
        move |p: &Policy| reload::dirs_of(&config_path, p.token_files()),
        Duration::from_secs(2),
    )?;
    let authority = Authority::load(&cfg.ca_cert, &cfg.ca_key)?;
    let connector = Connector::new(cfg.upstream_proxy.as_deref())?;
    let (client, client_h1) =
        upstream::clients(connector.clone(), upstream::roots(&[&cfg.ca_cert])?);
    let mut registry = Registry::with_prefix("egress");
    let metrics = Metrics::new("egress", &mut registry);
    let admin = Admin::start(&cfg.admin_listen, registry, live.status.clone()).await?;
    let listener = server::bind(&cfg.listen).await?;
    tracing::info!(listen = %cfg.listen, admin = %cfg.admin_listen, upstream_proxy = ?cfg.upstream_proxy, "egress listening");
    let egress = Arc::new(Egress {
        policy: live.current,
        authority,
        upstream: Upstream {
            client,
            client_h1,
            via_next_proxy: cfg.upstream_proxy.is_some(),
        },
        connector,
        metrics,
        refused: admin.refused(),
    });
    admin.set_ready();
    // The agent's side is HTTP/1.1 only: CONNECT and absolute-form requests.
    server::serve(listener, Protocols::Http1, move |req| {
        egress.clone().outer(req)
    })
    .await;
    Ok(())
}

/// Splits `host[:port]`, allowing `[v6]` forms.
fn split_authority(a: &str, default_port: u16) -> Option<(String, u16)> {
    let uri: Uri = format!("http://{a}/").parse().ok()?;
    let auth = uri.authority()?;
    Some((
        auth.host().to_string(),
        auth.port_u16().unwrap_or(default_port),
    ))
}

impl Egress {
    fn refuse(&self, d: &Deny, method: &Method, target: &str) -> Response<ProxyBody> {
        self.metrics.denied();
        // What a route could open: the agent may ask for it (supervise shows these).
        match d {
            Deny::NoRoute(h) => self.refused.record(h, None),
            Deny::PathNotAllowed(h, p) => self.refused.record(h, Some(p)),
            _ => {}
        }
        tracing::warn!(kind = d.kind(), %method, target, reason = %d, "denied");
        deny(StatusCode::FORBIDDEN, &d.to_string())
    }

    /// A request on the agent's plain connection: CONNECT, or absolute-form `http://`.
    async fn outer(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        if req.method() == Method::CONNECT {
            return self.connect(req).await;
        }
        let uri = req.uri().clone();
        let (Some("http"), Some(auth)) = (uri.scheme_str(), uri.authority()) else {
            self.metrics.denied();
            return deny(
                StatusCode::BAD_REQUEST,
                "egress is a proxy: send absolute http:// URLs or CONNECT (set HTTPS_PROXY)",
            );
        };
        let (raw_host, port) = (auth.host().to_string(), auth.port_u16().unwrap_or(80));
        let policy = self.policy.borrow().clone();
        let host =
            match normalize_host(&raw_host).and_then(|h| policy.host_action(&h, port).map(|_| h)) {
                Ok(h) => h,
                Err(d) => return self.refuse(&d, req.method(), &uri.to_string()),
            };
        // An absolute-form request must not name another host in its Host header.
        if let Some(d) = host_header_mismatch(&req, &host, port) {
            return self.refuse(&d, req.method(), &uri.to_string());
        }
        self.checked(req, &policy, &host, port, "http").await
    }

    async fn connect(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let target = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let Some((raw_host, port)) = req
            .uri()
            .authority()
            .and_then(|a| a.port_u16().map(|p| (a.host().to_string(), p)))
        else {
            self.metrics.denied();
            return deny(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
        };
        let policy = self.policy.borrow().clone();
        let (host, action) = match normalize_host(&raw_host)
            .and_then(|h| policy.host_action(&h, port).map(|a| (h, a)))
        {
            Ok(x) => x,
            Err(d) => return self.refuse(&d, &Method::CONNECT, &target),
        };
        // A passthrough tunnel is opened upstream before the agent hears 200, so a refusal
        // by the next proxy reaches the agent as the answer to its CONNECT.
        let mut spliced = None;
        if action == HostAction::Passthrough {
            match self.connector.connect(&host, port).await {
                Ok(up) => {
                    self.metrics.count("allowed");
                    tracing::info!(host, port, "passthrough tunnel");
                    spliced = Some(up);
                }
                Err(e) => return self.tunnel_failed(e.as_ref(), &host, port),
            }
        }
        let me = self.clone();
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return tracing::debug!(error = %e, "CONNECT upgrade failed"),
            };
            match spliced {
                Some(mut up) => {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut up).await;
                }
                None => me.intercept(upgraded, host, port).await,
            }
        });
        Response::new(crate::pod::core::full(""))
    }

    /// The agent's answer when the passthrough tunnel did not open: the next proxy's
    /// refusal relayed, or 502 with the reason.
    fn tunnel_failed(
        &self,
        e: &(dyn std::error::Error + 'static),
        host: &str,
        port: u16,
    ) -> Response<ProxyBody> {
        let what = format!("CONNECT {host}:{port}");
        if let Some(r) = refusal::find(e) {
            if r.is_denial() {
                self.metrics.denied_by(NEXT_PROXY);
                tracing::warn!(host, port, status = r.status.as_u16(), reason = %r.reason, by = NEXT_PROXY, "denied");
            } else {
                self.metrics.count("error");
                tracing::warn!(host, port, status = r.status.as_u16(), reason = %r.reason, "next proxy could not open the tunnel");
            }
            return r.response(&what);
        }
        self.metrics.count("error");
        let text = crate::pod::core::error_chain(e);
        tracing::warn!(host, port, error = %text, "passthrough upstream unreachable");
        deny(
            StatusCode::BAD_GATEWAY,
            &format!("upstream unreachable for {what}: {text}"),
        )
    }

    async fn intercept(
        self: Arc<Self>,
        upgraded: hyper::upgrade::Upgraded,
        host: String,
        port: u16,
    ) {
        let config = match self.authority.server_config(&host) {
            Ok(c) => c,
            Err(e) => return tracing::error!(host, error = %e, "cannot mint a certificate"),
        };
        let tls = match server::accept_tls(TokioIo::new(upgraded), config).await {
            Ok(t) => t,
            Err(e) => return tracing::debug!(host, error = %e, "agent TLS handshake failed"),
        };
        // The name the client asked TLS for must be the host it CONNECTed to.
        if let Some(sni) = tls.get_ref().1.server_name()
            && normalize_host(sni).as_deref() != Ok(host.as_str())
        {
            self.metrics.denied();
            return tracing::warn!(kind = "sni_mismatch", tunnel = %host, sni, "denied");
        }
        let me = self.clone();
        let handle = move |req: Request<Incoming>| {
            let me = me.clone();
            let host = host.clone();
            async move {
                let policy = me.policy.borrow().clone();
                if let Some(d) = host_header_mismatch(&req, &host, port) {
                    return me.refuse(&d, req.method(), req.uri().path());
                }
                me.checked(req, &policy, &host, port, "https").await
            }
        };
        // ALPN chose the protocol (egress offers h2 and HTTP/1.1).
        let protocols = server::negotiated(&tls);
        server::serve_connection(tls, protocols, handle).await;
    }

    /// Path check, credential injection and forwarding of one request to `host`.
    async fn checked(
        &self,
        req: Request<Incoming>,
        policy: &Policy,
        host: &str,
        port: u16,
        scheme: &str,
    ) -> Response<ProxyBody> {
        let method = req.method().clone();
        let (path, inject) = match policy.request(host, req.uri().path()) {
            Ok(x) => x,
            Err(d) => return self.refuse(&d, &method, &format!("{host}{}", req.uri().path())),
        };
        let default_port = if scheme == "https" { 443 } else { 80 };
        let authority = if port == default_port {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let query = req
            .uri()
            .query()
            .map(|q| format!("?{q}"))
            .unwrap_or_default();
        let uri: Uri = match format!("{scheme}://{authority}{path}{query}").parse() {
            Ok(u) => u,
            Err(_) => return self.refuse(&Deny::AmbiguousPath(path), &method, host),
        };
        let Forwarded {
            response: resp,
            outcome,
        } = forward(&self.upstream, req, uri, inject).await;
        match outcome {
            Outcome::Allowed => self.metrics.count("allowed"),
            Outcome::DeniedByNextProxy => self.metrics.denied_by(NEXT_PROXY),
            Outcome::Error => self.metrics.count("error"),
        }
        tracing::info!(%method, host, path, status = resp.status().as_u16(), injected = inject.is_some(), "forwarded");
        resp
    }
}

/// A request whose Host header or :authority names another host or port than the
/// connection's (or the absolute-form target's). Both are checked: the upstream might honour
/// either.
fn host_header_mismatch<B>(req: &Request<B>, host: &str, port: u16) -> Option<Deny> {
    let default_port = if req.uri().scheme_str() == Some("http") {
        80
    } else {
        443
    };
    let from_uri = req.uri().authority().map(|a| a.to_string());
    let from_header = req
        .headers()
        .get_all(http::header::HOST)
        .iter()
        .map(|h| h.to_str().map(str::to_string).unwrap_or_default());
    for named in from_uri.into_iter().chain(from_header) {
        let mismatch = Some(Deny::HostMismatch {
            tunnel: format!("{host}:{port}"),
            request: named.clone(),
        });
        let Some((h, p)) = split_authority(&named, default_port) else {
            return mismatch;
        };
        // No explicit port means the connection's own port.
        let explicit = named
            .rsplit_once(':')
            .is_some_and(|(_, tail)| !tail.contains(']'));
        let p = if explicit { p } else { port };
        match normalize_host(&h) {
            Ok(n) if n == host && p == port => {}
            _ => return mismatch,
        }
    }
    None
}
