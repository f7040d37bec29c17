//! Header hygiene on the way through: hop-by-hop headers never cross the proxy, and an
//! injected credential replaces whatever the agent sent.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers meaningful only for one hop (RFC 9110 §7.6.1), plus proxy credentials, which
/// must never reach an upstream.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those the `Connection` header names. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (a WebSocket handshake).
pub fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        if !(keep_upgrade && n == header::UPGRADE) {
            h.remove(&n);
        }
    }
    for n in HOP_BY_HOP {
        if !(keep_upgrade && (n == header::UPGRADE || n == header::CONNECTION)) {
            h.remove(n);
        }
    }
    h.remove("proxy-connection");
    h.remove("keep-alive");
    if keep_upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// True for an HTTP/1.1 WebSocket (or other) upgrade request.
pub fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// A credential to write into requests: header and full value (marked sensitive, so it is
/// never printed by `Debug` or HPACK-indexed).
#[derive(Clone)]
pub struct Injection {
    /// Header name.
    pub header: HeaderName,
    /// `<scheme> <token>` or the bare token.
    pub value: HeaderValue,
}

impl std::fmt::Debug for Injection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Injection({}: <redacted>)", self.header)
    }
}

impl Injection {
    /// Reads the token file and builds the header value.
    pub fn load(cfg: &crate::contract::config::HeaderInjection) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let header = HeaderName::from_bytes(cfg.header.as_bytes())
            .with_context(|| format!("header name {:?}", cfg.header))?;
        let token = std::fs::read_to_string(&cfg.token_file)
            .with_context(|| format!("reading token file {}", cfg.token_file))?;
        let token = token.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!token.is_empty(), "token file {} is empty", cfg.token_file);
        let raw = match &cfg.scheme {
            Some(s) => format!("{s} {token}"),
            None => token.to_string(),
        };
        let mut value = HeaderValue::from_str(&raw).map_err(|_| {
            anyhow::anyhow!("token in {} is not a valid header value", cfg.token_file)
        })?;
        value.set_sensitive(true);
        Ok(Self { header, value })
    }

    /// Replaces any credential the agent sent with this one.
    pub fn apply(&self, h: &mut HeaderMap) {
        h.remove(header::AUTHORIZATION);
        h.remove(&self.header);
        h.insert(self.header.clone(), self.value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::PROXY_AUTHORIZATION,
            HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        );
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["accept"]);
    }

    #[test]
    fn injection_replaces_agent_credentials_and_is_redacted_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "s3cret\n").unwrap();
        let cfg = crate::contract::config::HeaderInjection {
            header: "authorization".into(),
            scheme: Some("Bearer".into()),
            token_file: f.display().to_string(),
        };
        let inj = Injection::load(&cfg).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer agent-made-this-up"),
        );
        inj.apply(&mut h);
        assert_eq!(
            h.get_all(header::AUTHORIZATION).iter().collect::<Vec<_>>(),
            ["Bearer s3cret"]
        );
        assert!(!format!("{inj:?}").contains("s3cret"));
    }
}
