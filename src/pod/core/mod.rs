//! The core shared by the sidecars that serve the agent (egress, cred-proxy, git-gate): one
//! server core (listener, limits, TLS, h1/h2), the admin endpoint, live config reload, and for
//! the two proxies minting leaf certificates, the upstream client (direct or through the next
//! proxy), header hygiene and credential injection.

pub mod admin;
pub mod atomic_file;
pub mod forward;
pub mod headers;
pub mod refusal;
pub mod refused_hosts;
pub mod reload;
pub mod server;
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

/// Accepts connections on `listener` forever and serves each over HTTP/1.1 with `handle`,
/// with the limits of [`server`] (the operator's metrics listener uses it).
pub async fn serve_http1<H, F>(listener: tokio::net::TcpListener, handle: H)
where
    H: Fn(http::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = http::Response<ProxyBody>> + Send + 'static,
{
    server::serve(listener, server::Protocols::Http1, handle).await
}
