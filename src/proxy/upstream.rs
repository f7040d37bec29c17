//! The upstream side: an HTTP client (HTTP/2 where the upstream offers it) that reaches
//! origins either directly or through the next proxy (pipelock) with CONNECT, and verifies
//! TLS against the system roots plus the bottle CA.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::Context as _;
use http::Uri;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tower_service::Service;

use super::{BoxError, ProxyBody};

/// Opens TCP streams to a destination, directly or through an HTTP CONNECT proxy.
#[derive(Clone)]
pub enum Connector {
    /// Straight to the destination.
    Direct(HttpConnector),
    /// Through the next proxy.
    Tunnel(Tunnel<HttpConnector>),
}

impl Connector {
    /// A connector for `proxy` (`http://host:port`), or direct when `None`.
    pub fn new(proxy: Option<&str>) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        Ok(match proxy {
            None => Self::Direct(http),
            Some(p) => {
                let uri: Uri = p
                    .parse()
                    .with_context(|| format!("upstream proxy {p:?} is not a URI"))?;
                anyhow::ensure!(
                    uri.scheme_str() == Some("http"),
                    "upstream proxy {p:?} must be http://host:port"
                );
                Self::Tunnel(Tunnel::new(uri, http))
            }
        })
    }

    /// A raw TCP stream to `host:port` (for passthrough tunnels).
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream, BoxError> {
        let uri: Uri = format!("http://{host}:{port}").parse()?;
        let io = self.clone().call(uri).await?;
        Ok(io.into_inner())
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Self::Direct(c) => {
                let mut c = c.clone();
                Box::pin(async move { c.call(dst).await.map_err(Into::into) })
            }
            Self::Tunnel(t) => {
                let mut t = t.clone();
                Box::pin(async move { t.call(dst).await.map_err(Into::into) })
            }
        }
    }
}

/// The client type both sidecars forward with.
pub type UpstreamClient = Client<HttpsConnector<Connector>, ProxyBody>;

/// TLS trust for upstreams: the system roots plus extra PEM CA files.
pub fn roots(extra_ca_files: &[&str]) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    for f in extra_ca_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading CA file {f}"))?;
        for p in pem::parse_many(&text)? {
            roots
                .add(p.into_contents().into())
                .with_context(|| format!("adding a CA from {f}"))?;
        }
    }
    Ok(roots)
}

/// Clients for forwarding: one offering h2 and HTTP/1.1, and one HTTP/1.1 only (for upgrades
/// such as WebSocket, which need an HTTP/1.1 connection end to end).
pub fn clients(connector: Connector, roots: RootCertStore) -> (UpstreamClient, UpstreamClient) {
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(Arc::new(roots))
        .with_no_client_auth();
    let any = HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(connector.clone());
    let h1 = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let build = |c| Client::builder(TokioExecutor::new()).build(c);
    (build(any), build(h1))
}
