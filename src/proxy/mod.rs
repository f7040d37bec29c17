//! The proxy core shared by the `egress` and `cred-proxy` sidecars: minting leaf
//! certificates, the upstream client (direct or through the next proxy), header hygiene and
//! credential injection, live config reload, and the admin endpoint.

pub mod admin;
pub mod forward;
pub mod headers;
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

/// Installs the ring crypto provider for rustls once per process.
pub fn init_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
