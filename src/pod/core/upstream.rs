//! The upstream side: HTTP clients (one offering HTTP/2, one HTTP/1.1 only) that reach
//! origins either directly or through the next proxy (pipelock) with CONNECT, and verify
//! TLS against the system roots plus the bottle CA.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::Context as _;
use bytes::BytesMut;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::upgrade::Upgraded;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use super::refusal::{BODY_LIMIT, NEXT_PROXY, Refused};
use super::{BoxError, ProxyBody};

/// Longest wait for a TCP connection (to the origin or to the next proxy).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest wait for the next proxy's answer to CONNECT. pipelock resolves and dials the
/// origin before it answers, so this covers its DNS (5 s ceiling) and dial too.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a tunnel through the next proxy did not open. The text leaves the cause to `source`
/// ([`super::error_chain`] prints both).
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// No TCP connection to the next proxy (it is down, or not listening yet).
    #[error("the next proxy ({NEXT_PROXY}) at {proxy} is unreachable")]
    Unreachable {
        /// The proxy's address.
        proxy: String,
        /// The connect error.
        #[source]
        source: BoxError,
    },
    /// The proxy accepted the connection but said nothing in time.
    #[error(
        "the next proxy ({NEXT_PROXY}) at {proxy} did not answer CONNECT {target} within {ANSWER_TIMEOUT:?}"
    )]
    Timeout {
        /// The proxy's address.
        proxy: String,
        /// The `host:port` asked for.
        target: String,
    },
    /// The CONNECT exchange broke (connection closed, malformed answer).
    #[error("CONNECT {target} through the next proxy ({NEXT_PROXY}) at {proxy} failed")]
    Handshake {
        /// The proxy's address.
        proxy: String,
        /// The `host:port` asked for.
        target: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// The proxy answered, and not with 2xx.
    #[error(transparent)]
    Refused(#[from] Refused),
}

/// A byte stream to the origin: a TCP connection, or a tunnel through the next proxy.
pub enum UpstreamStream {
    /// Straight to the origin.
    Direct(TcpStream),
    /// The upgraded connection of an accepted CONNECT.
    Tunnel(TokioIo<Upgraded>),
}

/// Opens TCP streams to a destination, directly or through an HTTP CONNECT proxy.
#[derive(Clone)]
pub enum Connector {
    /// Straight to the destination.
    Direct(HttpConnector),
    /// Through the next proxy at `proxy` (reached with the connector).
    Tunnel {
        /// `http://host:port` of the proxy.
        proxy: Uri,
        /// Connects to the proxy.
        http: HttpConnector,
    },
}

impl Connector {
    /// A connector for `proxy` (`http://host:port`), or direct when `None`.
    pub fn new(proxy: Option<&str>) -> anyhow::Result<Self> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Ok(match proxy {
            None => Self::Direct(http),
            Some(p) => {
                let uri: Uri = p
                    .parse()
                    .with_context(|| format!("upstream proxy {p:?} is not a URI"))?;
                anyhow::ensure!(
                    uri.scheme_str() == Some("http") && uri.authority().is_some(),
                    "upstream proxy {p:?} must be http://host:port"
                );
                Self::Tunnel { proxy: uri, http }
            }
        })
    }

    /// A raw stream to `host:port` (for passthrough tunnels). Through a proxy, a refusal
    /// comes back as [`TunnelError::Refused`] (see [`super::refusal::find`]).
    pub async fn connect(&self, host: &str, port: u16) -> Result<UpstreamStream, BoxError> {
        let uri: Uri = format!("http://{}/", authority(host, port)).parse()?;
        Ok(self.clone().call(uri).await?.into_inner())
    }
}

/// `host:port`, with brackets around an IPv6 literal.
fn authority(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Asks the proxy at `proxy` for a tunnel to `target` (`host:port`) with hyper's HTTP/1.1
/// client: on 2xx the upgraded connection, otherwise the proxy's answer as [`Refused`].
async fn open_tunnel(
    http: &mut HttpConnector,
    proxy: &Uri,
    target: &str,
) -> Result<Upgraded, TunnelError> {
    let proxy_addr = proxy.authority().map(|a| a.to_string()).unwrap_or_default();
    let tcp = http
        .call(proxy.clone())
        .await
        .map_err(|e| TunnelError::Unreachable {
            proxy: proxy_addr.clone(),
            source: e.into(),
        })?;
    let handshake = |source| TunnelError::Handshake {
        proxy: proxy_addr.clone(),
        target: target.to_string(),
        source,
    };
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(tcp)
            .await
            .map_err(handshake)?;
        // The connection task ends when the upgrade takes the IO, or when the sender drops.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "CONNECT connection ended with an error");
            }
        });
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(target)
            .header(header::HOST, target)
            .body(Empty::<bytes::Bytes>::new())
            .expect("CONNECT request parts are valid");
        let resp = sender.send_request(req).await.map_err(handshake)?;
        if resp.status().is_success() {
            return hyper::upgrade::on(resp).await.map_err(handshake);
        }
        let (parts, mut body) = resp.into_parts();
        // Bounded: a refusal is a line or two; stop reading past the limit.
        let mut kept = BytesMut::new();
        while kept.len() < BODY_LIMIT {
            match body.frame().await {
                Some(Ok(f)) => {
                    if let Ok(d) = f.into_data() {
                        let room = BODY_LIMIT - kept.len();
                        kept.extend_from_slice(&d[..d.len().min(room)]);
                    }
                }
                Some(Err(_)) | None => break,
            }
        }
        Err(TunnelError::Refused(Refused::from_answer(
            target,
            parts.status,
            &parts.headers,
            &kept,
        )))
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(TunnelError::Timeout {
            proxy: proxy_addr,
            target: target.to_string(),
        }),
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        match self {
            Self::Direct(c) => {
                let mut c = c.clone();
                Box::pin(async move {
                    let tcp = c.call(dst).await?;
                    Ok(TokioIo::new(UpstreamStream::Direct(tcp.into_inner())))
                })
            }
            Self::Tunnel { proxy, http } => {
                let (proxy, mut http) = (proxy.clone(), http.clone());
                Box::pin(async move {
                    let host = dst.host().ok_or("destination without a host")?;
                    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
                        Some("https") => 443,
                        _ => 80,
                    });
                    let target = authority(host, port);
                    let up = open_tunnel(&mut http, &proxy, &target).await?;
                    Ok(TokioIo::new(UpstreamStream::Tunnel(TokioIo::new(up))))
                })
            }
        }
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Direct(t) => t.connected(),
            // Not `proxy(true)`: through a tunnel, requests are origin-form as if direct.
            Self::Tunnel(_) => Connected::new(),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tunnel(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tunnel(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tunnel(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Direct(s) => s.is_write_vectored(),
            Self::Tunnel(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_flush(cx),
            Self::Tunnel(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Direct(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tunnel(s) => Pin::new(s).poll_shutdown(cx),
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
    add_ca_files(&mut roots, extra_ca_files)?;
    Ok(roots)
}

/// Adds every certificate of the PEM files `ca_files` to `roots`.
pub fn add_ca_files(roots: &mut RootCertStore, ca_files: &[&str]) -> anyhow::Result<()> {
    for f in ca_files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading CA file {f}"))?;
        for p in pem::parse_many(&text)? {
            roots
                .add(p.into_contents().into())
                .with_context(|| format!("adding a CA from {f}"))?;
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::StreamExt;
    use http::{Response, StatusCode};
    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;
    use hyper::service::service_fn;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::pod::core::refusal;

    /// A stand-in next proxy on loopback (pipelock never sends what these tests need: an
    /// endless refusal body): refuses `big.example`, tunnels anything else to an echo.
    async fn stand_in_proxy() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = service_fn(|mut req: Request<hyper::body::Incoming>| async move {
                        if req.uri().host() == Some("big.example") {
                            // 8 KiB, then a body that never ends: reading past the bound
                            // would wait for it until the answer timeout.
                            let mut first = b"CONNECT blocked: too big\n".to_vec();
                            first.resize(8 * 1024, b'x');
                            let frames = futures::stream::iter([Ok::<_, Infallible>(Frame::data(
                                bytes::Bytes::from(first),
                            ))])
                            .chain(futures::stream::pending());
                            return Ok::<_, Infallible>(
                                Response::builder()
                                    .status(StatusCode::FORBIDDEN)
                                    .header("x-pipelock-hint", "a hint")
                                    .body(BodyExt::boxed(StreamBody::new(frames)))
                                    .unwrap(),
                            );
                        }
                        let on = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            let mut io = TokioIo::new(on.await.unwrap());
                            let mut buf = [0u8; 5];
                            io.read_exact(&mut buf).await.unwrap();
                            io.write_all(&buf).await.unwrap();
                        });
                        Ok(Response::new(BodyExt::boxed(
                            Full::new(bytes::Bytes::new()),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_refusal_keeps_status_first_line_and_hint_and_reads_at_most_the_bound() {
        let proxy = stand_in_proxy().await;
        let c = Connector::new(Some(&format!("http://{proxy}"))).unwrap();
        let err = c.connect("big.example", 443).await.err().unwrap();
        let r = refusal::find(err.as_ref()).expect("a Refused in the chain");
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.target, "big.example:443");
        assert_eq!(r.reason, "CONNECT blocked: too big");
        assert_eq!(
            r.relayed,
            vec![("x-pipelock-hint", "a hint".parse().unwrap())]
        );
    }

    #[tokio::test]
    async fn an_accepted_connect_is_a_byte_stream() {
        let proxy = stand_in_proxy().await;
        let c = Connector::new(Some(&format!("http://{proxy}"))).unwrap();
        let mut s = c.connect("echo.example", 443).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
    }

    #[tokio::test]
    async fn a_dead_proxy_is_unreachable_not_refused() {
        // A port just released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = Connector::new(Some(&format!("http://127.0.0.1:{port}"))).unwrap();
        let err = c.connect("a.example", 443).await.err().unwrap();
        assert!(refusal::find(err.as_ref()).is_none());
        let text = crate::pod::core::error_chain(err.as_ref());
        assert!(
            text.starts_with(&format!(
                "the next proxy (pipelock) at 127.0.0.1:{port} is unreachable: "
            )),
            "{text}"
        );
    }
}
