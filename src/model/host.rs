//! Hostnames as the allowlists understand them: literal DNS names, never IP addresses (an IP
//! literal would sidestep pipelock's SSRF guard and the hostname allowlist alike).

use std::fmt;

/// A literal, lowercase DNS hostname.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host(String);

impl Host {
    /// Parses and normalises (lowercase, no trailing dot) a hostname.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let h = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if h.is_empty() {
            return Err("empty".into());
        }
        if h.len() > 253 {
            return Err("longer than 253 characters".into());
        }
        if h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('[') {
            return Err("IP addresses are not allowed; name the host".into());
        }
        let labels: Vec<&str> = h.split('.').collect();
        for l in &labels {
            let ok = !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-');
            if !ok {
                return Err(format!("label {l:?} is not a DNS label"));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err("numeric top-level label (looks like an IP address)".into());
        }
        Ok(Self(h))
    }

    /// The hostname.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An allowlist entry: an exact host or `*.domain` (which pipelock's allowlist also matches at
/// the apex; its passthrough list does not, see [`HostPattern::passthrough_entries`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostPattern {
    /// Exactly this host.
    Exact(Host),
    /// This domain and every subdomain.
    Wildcard(Host),
}

impl HostPattern {
    /// Parses `host` or `*.domain`; other globs are refused because pipelock has none.
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.strip_prefix("*.") {
            Some(domain) => {
                let d = Host::parse(domain)?;
                if !d.as_str().contains('.') {
                    return Err("wildcards must cover a domain with at least two labels".into());
                }
                Ok(Self::Wildcard(d))
            }
            None if raw.contains('*') => Err("only a leading '*.' wildcard is supported".into()),
            None => Host::parse(raw).map(Self::Exact),
        }
    }
}

impl HostPattern {
    /// The entries a passthrough pattern needs: pipelock 2.3.0 splices `*.d` for subdomains
    /// only (proxy/intercept.go `isPassthrough`, observed in tests/pipelock_facts.rs) while
    /// egress and pipelock's allowlist also match `d`, so a wildcard brings its apex along.
    pub fn passthrough_entries(&self) -> Vec<HostPattern> {
        match self {
            Self::Exact(_) => vec![self.clone()],
            Self::Wildcard(d) => vec![self.clone(), Self::Exact(d.clone())],
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(h) => write!(f, "{h}"),
            Self::Wildcard(h) => write!(f, "*.{h}"),
        }
    }
}
