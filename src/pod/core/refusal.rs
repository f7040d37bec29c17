//! Refusals by the next proxy (pipelock in a bottle): recognising them in an error chain or
//! in a response, and telling the agent who refused and why.
//!
//! What pipelock 2.3.0 writes when it refuses (`internal/proxy/forward.go` `handleConnect`,
//! `internal/proxy/intercept.go`): Go's `http.Error`, so `Content-Type: text/plain;
//! charset=utf-8`, `X-Content-Type-Options: nosniff`, a one-line body (`CONNECT blocked:
//! <reason>` for a CONNECT, `blocked: <reason>` for an intercepted request), status 403, or
//! 429 for its rate limit and budget, and `X-Pipelock-Hint` when `explain_blocks` is on.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use super::ProxyBody;

/// Response header naming the component that refused a request, so a user can tell the
/// bottle's own refusals (which never carry it) from the next proxy's.
pub const DENIED_BY: &str = "x-bottle-denied-by";

/// The next proxy of both sidecars in a bottle.
pub const NEXT_PROXY: &str = "pipelock";

/// How much of a refusal body is kept: pipelock's are one line.
pub const BODY_LIMIT: usize = 4096;

/// Headers of a refusal worth passing on to the agent.
const RELAYED: &[&str] = &["x-pipelock-hint", "retry-after"];

/// Body prefixes of pipelock's own refusals (`http.Error` calls in `internal/proxy/`).
const PIPELOCK_PREFIXES: &[&str] = &[
    "CONNECT blocked: ",
    "blocked: ",
    "airlock: ",
    "authority mismatch: blocked",
    "kill switch active",
];

/// The next proxy answered a CONNECT with something other than 2xx.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{NEXT_PROXY} answered CONNECT {target} with {status}: {reason}")]
pub struct Refused {
    /// The `host:port` asked for.
    pub target: String,
    /// The proxy's status.
    pub status: StatusCode,
    /// The first line of its body (bounded, control characters replaced).
    pub reason: String,
    /// Headers worth relaying (`X-Pipelock-Hint`, `Retry-After`).
    pub relayed: Vec<(&'static str, HeaderValue)>,
}

impl Refused {
    /// Builds the refusal from the proxy's answer; `body` is at most [`BODY_LIMIT`] bytes.
    pub fn from_answer(target: &str, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Self {
        Self {
            target: target.to_string(),
            status,
            reason: first_line(body)
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("").to_string()),
            relayed: relayed(headers),
        }
    }

    /// A policy decision (403, 429, or a body pipelock writes when it blocks), as opposed
    /// to a failure (502 `tunnel dial failed`, 503 `too many active tunnels`).
    pub fn is_denial(&self) -> bool {
        matches!(
            self.status,
            StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
        ) || pipelock_reason(&self.reason).is_some()
    }

    /// What the agent gets: the proxy's status, a body saying who refused what and why,
    /// [`DENIED_BY`] on denials, and the relayed headers.
    pub fn response(&self, what: &str) -> Response<ProxyBody> {
        let verb = if self.is_denial() {
            "refused"
        } else {
            "could not open"
        };
        let text = format!(
            "{NEXT_PROXY} {verb} the tunnel for {what} ({} {}): {}",
            self.status.as_u16(),
            self.status.canonical_reason().unwrap_or(""),
            self.reason
        );
        let mut resp = super::deny(self.status, &text);
        let h = resp.headers_mut();
        if self.is_denial() {
            h.insert(DENIED_BY, HeaderValue::from_static(NEXT_PROXY));
        }
        for (name, value) in &self.relayed {
            h.insert(*name, value.clone());
        }
        resp
    }
}

/// The first [`Refused`] in `err`'s source chain (the upstream client wraps the connector's
/// error; walking `source` and downcasting recovers it).
pub fn find<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(r) = e.downcast_ref::<Refused>() {
            return Some(r);
        }
        if let Some(super::upstream::TunnelError::Refused(r)) =
            e.downcast_ref::<super::upstream::TunnelError>()
        {
            return Some(r);
        }
        next = e.source();
    }
    None
}

/// Whether a response could be a pipelock refusal of an inner request, judged from its
/// head alone: an error status with `http.Error`'s headers and a small declared length.
/// Only such responses are read ahead to look at the body.
pub fn may_be_pipelock(status: StatusCode, headers: &HeaderMap) -> bool {
    let is = |name: header::HeaderName, want: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case(want))
    };
    let small = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= BODY_LIMIT);
    (status.is_client_error() || status.is_server_error())
        && small
        && is(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        && is(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
}

/// The reason in a pipelock refusal body (its first line), or `None` when the body does
/// not start the way pipelock's refusals do.
pub fn pipelock_reason(body: &str) -> Option<String> {
    let line = body.lines().next()?.trim();
    PIPELOCK_PREFIXES
        .iter()
        .any(|p| line.starts_with(p))
        .then(|| line.to_string())
}

/// The first line of `body`, lossily decoded, control characters replaced, or `None` when
/// blank.
fn first_line(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(&body[..body.len().min(BODY_LIMIT)]);
    let line = text.lines().next()?.trim();
    (!line.is_empty()).then(|| line.replace(|c: char| c.is_control(), "?"))
}

fn relayed(headers: &HeaderMap) -> Vec<(&'static str, HeaderValue)> {
    RELAYED
        .iter()
        .filter_map(|n| headers.get(*n).map(|v| (*n, v.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipelock_head(status: u16, len: usize) -> (StatusCode, HeaderMap) {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::CONTENT_LENGTH, len.into());
        (StatusCode::from_u16(status).unwrap(), h)
    }

    #[test]
    fn a_connect_refusal_keeps_status_reason_and_hint() {
        let (status, mut h) = pipelock_head(403, 60);
        h.insert("x-pipelock-hint", HeaderValue::from_static("add it"));
        h.insert("x-other", HeaderValue::from_static("dropped"));
        let r = Refused::from_answer(
            "a.example:443",
            status,
            &h,
            b"CONNECT blocked: domain not in allowlist: a.example\n",
        );
        assert_eq!(
            r.reason,
            "CONNECT blocked: domain not in allowlist: a.example"
        );
        assert!(r.is_denial());
        let resp = r.response("CONNECT a.example:443");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[DENIED_BY], "pipelock");
        assert_eq!(resp.headers()["x-pipelock-hint"], "add it");
        assert!(resp.headers().get("x-other").is_none());
        assert!(
            resp.headers()["x-bottle-deny-reason"]
                .to_str()
                .unwrap()
                .contains("domain not in allowlist: a.example")
        );
    }

    #[test]
    fn rate_limits_are_denials_and_dial_failures_are_not() {
        let h = HeaderMap::new();
        let limited = Refused::from_answer("a:443", StatusCode::TOO_MANY_REQUESTS, &h, b"x");
        assert!(limited.is_denial());
        let dial = Refused::from_answer(
            "a:443",
            StatusCode::BAD_GATEWAY,
            &h,
            b"tunnel dial failed\n",
        );
        assert!(!dial.is_denial());
        let resp = dial.response("a");
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(resp.headers().get(DENIED_BY).is_none());
    }

    #[test]
    fn an_empty_or_hostile_body_still_gives_a_printable_reason() {
        let h = HeaderMap::new();
        let r = Refused::from_answer("a:443", StatusCode::FORBIDDEN, &h, b"");
        assert_eq!(r.reason, "Forbidden");
        let r = Refused::from_answer("a:443", StatusCode::FORBIDDEN, &h, b"bad\x07\x1b[0m\r\nx");
        assert_eq!(r.reason, "bad??[0m");
        let long = vec![b'a'; 3 * BODY_LIMIT];
        let r = Refused::from_answer("a:443", StatusCode::FORBIDDEN, &h, &long);
        assert_eq!(r.reason.len(), BODY_LIMIT);
    }

    #[test]
    fn found_through_an_error_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] super::super::BoxError);
        let r = Refused::from_answer("a:443", StatusCode::FORBIDDEN, &HeaderMap::new(), b"no");
        let tunnel = super::super::upstream::TunnelError::Refused(r.clone());
        let err = Outer(Box::new(tunnel));
        assert_eq!(find(&err), Some(&r));
        let plain = Outer("connection refused".into());
        assert_eq!(find(&plain), None);
    }

    #[test]
    fn pipelock_marks_on_inner_responses() {
        let (s, h) = pipelock_head(403, 40);
        assert!(may_be_pipelock(s, &h));
        assert_eq!(
            pipelock_reason("blocked: request header contains secret\n").as_deref(),
            Some("blocked: request header contains secret")
        );
        assert_eq!(pipelock_reason("Forbidden by the origin\n"), None);
        // An origin's JSON 403, a 200, a large body: never read ahead.
        let (s, mut json) = pipelock_head(403, 40);
        json.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        assert!(!may_be_pipelock(s, &json));
        let (ok, h) = pipelock_head(200, 40);
        assert!(!may_be_pipelock(ok, &h));
        let (s, big) = pipelock_head(403, BODY_LIMIT + 1);
        assert!(!may_be_pipelock(s, &big));
        let mut no_len = pipelock_head(403, 1).1;
        no_len.remove(header::CONTENT_LENGTH);
        assert!(!may_be_pipelock(s, &no_len));
    }
}
