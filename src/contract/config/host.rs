//! Hostnames as the allowlists understand them: literal DNS names, never IP addresses (an IP
//! literal would sidestep pipelock's SSRF guard and the hostname allowlist alike). Part of the
//! contract: the model parses a Bottle's hosts with it, egress parses what the agent asks for.

use std::fmt;

/// Why a string is not a [`Host`] or [`HostPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing left after trimming the trailing dot.
    #[error("empty")]
    Empty,
    /// Over the DNS limit.
    #[error("longer than 253 characters")]
    TooLong,
    /// An IPv4 or IPv6 literal.
    #[error("IP addresses are not allowed; name the host")]
    IpLiteral,
    /// A label with characters DNS does not allow, or an empty one.
    #[error("label {0:?} is not a DNS label")]
    BadLabel(String),
    /// All digits at the end, which resolvers may read as an IP address.
    #[error("numeric top-level label (looks like an IP address)")]
    NumericTld,
    /// `*.com`: a wildcard over a single label.
    #[error("wildcards must cover a domain with at least two labels")]
    WildcardTooWide,
    /// A `*` anywhere but a leading `*.`.
    #[error("only a leading '*.' wildcard is supported")]
    UnsupportedGlob,
}

impl HostError {
    /// True when the string is (or looks like) an IP address rather than a name.
    pub fn is_ip(&self) -> bool {
        matches!(self, Self::IpLiteral | Self::NumericTld)
    }
}

/// A literal, lowercase DNS hostname. In a config file it is a string, checked when the file
/// is read, so a sidecar holds only valid hosts.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Host(String);

impl Host {
    /// Parses and normalises (lowercase, no trailing dot) a hostname.
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        let h = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if h.is_empty() {
            return Err(HostError::Empty);
        }
        if h.len() > 253 {
            return Err(HostError::TooLong);
        }
        if h.parse::<std::net::IpAddr>().is_ok() || h.starts_with('[') {
            return Err(HostError::IpLiteral);
        }
        let labels: Vec<&str> = h.split('.').collect();
        for l in &labels {
            let ok = !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-');
            if !ok {
                return Err(HostError::BadLabel(l.to_string()));
            }
        }
        if labels
            .last()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(HostError::NumericTld);
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
/// the apex; its passthrough list does not, see [`HostPattern::passthrough_entries`]). A
/// string in config files, like [`Host`].
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum HostPattern {
    /// Exactly this host.
    Exact(Host),
    /// This domain and every subdomain.
    Wildcard(Host),
}

impl HostPattern {
    /// Parses `host` or `*.domain`; other globs are refused because pipelock has none.
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        match raw.strip_prefix("*.") {
            Some(domain) => {
                let d = Host::parse(domain)?;
                if !d.as_str().contains('.') {
                    return Err(HostError::WildcardTooWide);
                }
                Ok(Self::Wildcard(d))
            }
            None if raw.contains('*') => Err(HostError::UnsupportedGlob),
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

impl std::str::FromStr for Host {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, HostError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Host {
    type Error = HostError;
    fn try_from(s: String) -> Result<Self, HostError> {
        Self::parse(&s)
    }
}

impl From<Host> for String {
    fn from(h: Host) -> String {
        h.0
    }
}

impl std::str::FromStr for HostPattern {
    type Err = HostError;
    fn from_str(s: &str) -> Result<Self, HostError> {
        Self::parse(s)
    }
}

impl TryFrom<String> for HostPattern {
    type Error = HostError;
    fn try_from(s: String) -> Result<Self, HostError> {
        Self::parse(&s)
    }
}

impl From<HostPattern> for String {
    fn from(p: HostPattern) -> String {
        p.to_string()
    }
}
