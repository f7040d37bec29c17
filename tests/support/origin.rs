//! A real HTTPS origin on loopback for the proxy tests: its own CA, a certificate for
//! `localhost`, HTTP/1.1 and HTTP/2, and endpoints that echo, stream and upgrade.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::net::TcpListener;
use tokio::sync::Notify;

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(b.into()).boxed()
}

/// The running origin.
pub struct Origin {
    /// Its port on 127.0.0.1 (named `localhost` in its certificate).
    pub port: u16,
    /// PEM file of the CA that signed its certificate.
    pub ca_file: PathBuf,
    /// `METHOD path?query` of every request it received, in order.
    #[allow(dead_code)] // the throughput benchmark shares this origin and never reads it
    pub seen: Arc<Mutex<Vec<String>>>,
}

#[allow(dead_code)] // as above
impl Origin {
    /// Whether a request whose `METHOD path?query` contains `needle` arrived.
    pub fn saw(&self, needle: &str) -> bool {
        self.seen.lock().unwrap().iter().any(|r| r.contains(needle))
    }
}

/// Starts the origin; its CA file is written into `dir`.
pub async fn start(dir: &Path) -> Origin {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "test origin CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let ca_file = dir.join("origin-ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();

    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let rel = Arc::new(Notify::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            // As real origins do (Go's net/http, nginx): without it a fresh TLS connection
            // waits out a delayed ACK (40 ms) between handshake writes.
            let _ = stream.set_nodelay(true);
            let (acceptor, rel, log) = (acceptor.clone(), rel.clone(), log.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = service_fn(move |req: Request<Incoming>| {
                    log.lock().unwrap().push(format!(
                        "{} {}",
                        req.method(),
                        req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("")
                    ));
                    handle(req, rel.clone())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    Origin {
        port,
        ca_file,
        seen,
    }
}

async fn handle(
    mut req: Request<Incoming>,
    release: Arc<Notify>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/release" {
        release.notify_one();
        return Ok(Response::new(full("released\n")));
    }
    // `…/bytes/N`: N bytes streamed in 64 KiB chunks, never held whole (throughput benches).
    if let Some(n) = path
        .rsplit_once("/bytes/")
        .and_then(|(_, n)| n.parse::<u64>().ok())
    {
        const CHUNK: u64 = 64 * 1024;
        let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
        let frames = futures::stream::unfold(0u64, move |sent| {
            let chunk = chunk.clone();
            async move {
                (sent < n).then(|| {
                    let len = CHUNK.min(n - sent);
                    (
                        Ok::<_, Infallible>(Frame::data(chunk.slice(..len as usize))),
                        sent + len,
                    )
                })
            }
        });
        return Ok(Response::builder()
            .header("content-length", n)
            .body(StreamBody::new(frames).boxed())
            .unwrap());
    }
    if path.ends_with("/sse") {
        // Event 1 now; event 2 only after /release, so a buffering proxy never shows event 1.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let _ = tx.send(Ok(Frame::data(Bytes::from("data: one\n\n")))).await;
            tokio::time::timeout(Duration::from_secs(30), release.notified())
                .await
                .ok();
            let _ = tx.send(Ok(Frame::data(Bytes::from("data: two\n\n")))).await;
        });
        let body = StreamBody::new(tokio_stream_from(rx)).boxed();
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap());
    }
    if path.ends_with("/ws") && req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Ok(Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "test")
            .body(full(""))
            .unwrap());
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let version = format!("{:?}", req.version());
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| headers.get("host").cloned());
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let echo = serde_json::json!({
        "method": method, "uri": uri, "authority": authority, "path": path, "version": version,
        "headers": headers, "body_len": body.len(),
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(full(echo.to_string()))
        .unwrap())
}

fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
