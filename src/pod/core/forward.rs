//! Forwarding one checked request upstream and relaying the response, upgrades included.
//! A refusal by the next proxy (pipelock) reaches the agent with pipelock's status and
//! reason, marked with [`DENIED_BY`].

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::headers::{Injection, is_upgrade, strip_hop_by_hop};
use super::refusal::{self, BODY_LIMIT, DENIED_BY, NEXT_PROXY};
use super::upstream::UpstreamClient;
use super::{BoxError, ProxyBody, deny, error_chain, full};

/// Where requests go: the clients, and whether they reach origins through the next proxy.
pub struct Upstream {
    /// Offers h2 and HTTP/1.1: for the agent's HTTP/2 requests, and all through pipelock.
    pub client: UpstreamClient,
    /// HTTP/1.1 only: for the agent's HTTP/1.1 requests straight to origins, and upgrades.
    pub client_h1: UpstreamClient,
    /// True when a next proxy (pipelock) sits between this sidecar and the origins, so a
    /// response with pipelock's marks is pipelock's refusal.
    pub via_next_proxy: bool,
}

/// How a forwarded request ended, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The origin answered (whatever its status).
    Allowed,
    /// The next proxy refused it (the tunnel, or the request itself).
    DeniedByNextProxy,
    /// No answer: the next proxy or the origin is unreachable, or failed.
    Error,
}

/// The agent's response and how the request ended.
pub struct Forwarded {
    /// What the agent gets.
    pub response: Response<ProxyBody>,
    /// For the metrics.
    pub outcome: Outcome,
}

/// Sends `req` to `uri` with hop-by-hop headers removed and `inject` applied, and returns
/// the upstream response (or a 502 that says why, or the next proxy's refusal). Bodies
/// stream both ways. An HTTP/1.1 upgrade (WebSocket) is completed end to end and then spliced.
///
/// Framing is never passed through: hyper parses the agent's request (for Content-Length
/// with Transfer-Encoding it drops the length and decodes chunks, as RFC 9112 §6.3 requires of
/// an intermediary) and the client frames the forwarded one anew, so the agent and the
/// upstream cannot disagree about where a request ends.
pub async fn forward(
    up: &Upstream,
    mut req: Request<Incoming>,
    uri: Uri,
    inject: Option<&Injection>,
) -> Forwarded {
    let upgrade = is_upgrade(req.headers());
    // Straight to an origin, the upstream protocol follows the agent's: an HTTP/1.1 agent
    // has one request per connection in flight, and funnelling all its connections into one
    // h2 connection cost a third of egress's throughput (one connection task and one stream
    // lock for every request; benches/proxy_throughput.rs). Through pipelock it is h2
    // whatever the agent spoke: pipelock's HTTP/1.1 interception closes connections the
    // client may reuse, and a third of the requests on them failed in the same bench.
    let h2 = up.via_next_proxy || req.version() == Version::HTTP_2;
    let agent_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // The client writes Host (HTTP/1.1) or :authority (HTTP/2) from the URI.
    parts.headers.remove(header::HOST);
    if let Some(i) = inject {
        i.apply(&mut parts.headers);
    }
    let host = uri.host().unwrap_or_default().to_string();
    let what = format!("{} {}{}", parts.method, host, uri.path());
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    let out = Request::from_parts(parts, body.map_err(|e| Box::new(e) as BoxError).boxed());
    let sent = if h2 && !upgrade {
        up.client.request(out).await
    } else {
        up.client_h1.request(out).await
    };
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => return failed(&e, &host, &what),
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
        return allowed(Response::from_parts(
            parts,
            body.map_err(|e| Box::new(e) as BoxError).boxed(),
        ));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.headers.remove("alt-svc"); // the agent must not try QUIC past the proxy
    if !(up.via_next_proxy && refusal::may_be_pipelock(parts.status, &parts.headers)) {
        return allowed(Response::from_parts(
            parts,
            body.map_err(|e| Box::new(e) as BoxError).boxed(),
        ));
    }
    // Small, and shaped like pipelock's `http.Error`: read it to see whether it is one
    // (its own interception refused the request: body DLP, header DLP, response scanning).
    let bytes = match Limited::new(body, BODY_LIMIT).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            tracing::warn!(host, error = %e, "reading a short error response failed");
            return Forwarded {
                response: deny(
                    StatusCode::BAD_GATEWAY,
                    &format!("upstream response broke off: {e}"),
                ),
                outcome: Outcome::Error,
            };
        }
    };
    let reason = refusal::pipelock_reason(&String::from_utf8_lossy(&bytes));
    let outcome = match &reason {
        Some(reason) => {
            tracing::warn!(host, request = %what, status = parts.status.as_u16(), reason, by = NEXT_PROXY, "denied");
            parts
                .headers
                .insert(DENIED_BY, HeaderValue::from_static(NEXT_PROXY));
            Outcome::DeniedByNextProxy
        }
        None => Outcome::Allowed,
    };
    Forwarded {
        response: Response::from_parts(parts, full(bytes)),
        outcome,
    }
}

fn allowed(response: Response<ProxyBody>) -> Forwarded {
    Forwarded {
        response,
        outcome: Outcome::Allowed,
    }
}

/// The client's error as the agent's response: the next proxy's refusal relayed, or 502.
fn failed(e: &hyper_util::client::legacy::Error, host: &str, what: &str) -> Forwarded {
    if let Some(r) = refusal::find(e) {
        let outcome = if r.is_denial() {
            tracing::warn!(host, request = what, status = r.status.as_u16(), reason = %r.reason, by = NEXT_PROXY, "denied");
            Outcome::DeniedByNextProxy
        } else {
            tracing::warn!(host, request = what, status = r.status.as_u16(), reason = %r.reason, "next proxy could not open the tunnel");
            Outcome::Error
        };
        return Forwarded {
            response: r.response(what),
            outcome,
        };
    }
    tracing::warn!(host, error = %error_chain(e), "upstream request failed");
    Forwarded {
        response: deny(
            StatusCode::BAD_GATEWAY,
            // The client's own text ("client error (Connect)") says less than its source.
            &format!(
                "upstream unreachable: {}",
                std::error::Error::source(e).map_or_else(|| e.to_string(), error_chain)
            ),
        ),
        outcome: Outcome::Error,
    }
}
