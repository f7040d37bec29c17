//! Forwarding one checked request upstream and relaying the response, upgrades included.

use http::header;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::headers::{Injection, is_upgrade, strip_hop_by_hop};
use super::upstream::UpstreamClient;
use super::{BoxError, ProxyBody, deny};

/// Sends `req` to `uri` with hop-by-hop headers removed and `inject` applied, and returns
/// the upstream response (or a 502 that says why). Bodies stream both ways. An HTTP/1.1
/// upgrade (WebSocket) is completed end to end and then spliced.
///
/// Framing is never passed through: hyper parses the agent's request (for Content-Length
/// with Transfer-Encoding it drops the length and decodes chunks, as RFC 9112 §6.3 requires of
/// an intermediary) and the client frames the forwarded one anew, so the agent and the
/// upstream cannot disagree about where a request ends.
pub async fn forward(
    client: &UpstreamClient,
    client_h1: &UpstreamClient,
    mut req: Request<Incoming>,
    uri: Uri,
    inject: Option<&Injection>,
) -> Response<ProxyBody> {
    let upgrade = is_upgrade(req.headers());
    let agent_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // The client writes Host (HTTP/1.1) or :authority (HTTP/2) from the URI.
    parts.headers.remove(header::HOST);
    if let Some(i) = inject {
        i.apply(&mut parts.headers);
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed());
    let sent = if upgrade {
        client_h1.request(out).await
    } else {
        client.request(out).await
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "upstream request failed");
            return deny(
                StatusCode::BAD_GATEWAY,
                &format!("upstream unreachable: {e}"),
            );
        }
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(agent_side) = agent_upgrade {
            let upstream_side = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(a), Ok(u)) = (agent_side.await, upstream_side.await) {
                    let _ =
                        tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(u))
                            .await;
                }
            });
        }
        let (parts, body) = resp.into_parts();
        return Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed());
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.headers.remove("alt-svc"); // the agent must not try QUIC past the proxy
    Response::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed())
}
