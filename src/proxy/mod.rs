//! The proxy core shared by the `egress` and `cred-proxy` sidecars: minting leaf
//! certificates, the upstream client (direct or through the next proxy), header hygiene and
//! credential injection, live config reload, and the admin endpoint.

pub mod admin;
pub mod forward;
pub mod headers;
pub mod refusal;
pub mod reload;
pub mod tls;
pub mod upstream;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// Errors crossing the proxy's async boundaries.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type every proxy response and upstream request uses.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A plain-text response the agent can read: status, a reason header, and the reason.
pub fn deny(status: http::StatusCode, reason: &str) -> http::Response<ProxyBody> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header(
            "x-bottle-deny-reason",
            reason.replace(|c: char| !c.is_ascii_graphic() && c != ' ', "?"),
        )
        .body(full(format!("bottle: {reason}\n")))
        .expect("static response parts are valid")
}

/// An error and its sources on one line (hyper's own text alone is "client error (Connect)"),
/// a source that repeats its parent's text said once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e.to_string();
    let mut out = last.clone();
    let mut next = e.source();
    while let Some(s) = next {
        let text = s.to_string();
        if text != last {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
        next = s.source();
    }
    out
}

/// Installs the ring crypto provider for rustls once per process.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The next connection on `listener`. Accept errors (out of file descriptors, a connection
/// reset before it was taken) are logged and retried after a pause instead of spinning.
pub async fn accept(listener: &tokio::net::TcpListener) -> tokio::net::TcpStream {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                return stream;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts connections on `listener` forever and serves each over HTTP/1.1 with `handle`:
/// the loop the admin, metrics and git-gate listeners share.
pub async fn serve_http1<H, F>(listener: tokio::net::TcpListener, handle: H)
where
    H: Fn(http::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = http::Response<ProxyBody>> + Send + 'static,
{
    loop {
        let stream = accept(&listener).await;
        let handle = handle.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let fut = handle(req);
                async move { Ok::<_, std::convert::Infallible>(fut.await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}
