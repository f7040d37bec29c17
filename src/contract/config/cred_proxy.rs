//! Config of the `cred-proxy` sidecar: named upstream APIs at `http://127.0.0.1:9099/<name>/`,
//! with the credential injected and the request sent on through pipelock.

use serde::{Deserialize, Serialize};

use super::HeaderInjection;

/// `cred-proxy.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredProxyConfig {
    /// Address the proxy listens on.
    pub listen: String,
    /// Admin listener.
    pub admin_listen: String,
    /// Outbound proxy (pipelock), so the allowlist and DLP apply to cred-proxy's traffic too;
    /// direct when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<String>,
    /// CA trusted upstream besides the system roots (the bottle CA, which pipelock uses).
    pub ca_cert: String,
    /// Routes by name.
    pub routes: Vec<CredRoute>,
}

/// One named upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CredRoute {
    /// First path segment the agent uses.
    pub name: String,
    /// Upstream base URL.
    pub upstream: HttpsBase,
    /// Injected credential.
    pub auth: HeaderInjection,
}

/// An upstream base URL cred-proxy forwards under: `https://host[:port][/path]`, no query,
/// no credentials in it. A string in the file, checked when the file is read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HttpsBase(http::Uri);

/// Why a string is not an [`HttpsBase`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upstream {0:?} must be https://host[:port][/path] without a query or credentials")]
pub struct NotHttpsBase(pub String);

impl HttpsBase {
    /// The parsed URL.
    pub fn uri(&self) -> &http::Uri {
        &self.0
    }
}

impl TryFrom<String> for HttpsBase {
    type Error = NotHttpsBase;
    fn try_from(s: String) -> Result<Self, NotHttpsBase> {
        let bad = || NotHttpsBase(s.clone());
        let uri: http::Uri = s.parse().map_err(|_| bad())?;
        let authority = uri.authority().ok_or_else(bad)?;
        if uri.scheme_str() != Some("https")
            || authority.host().is_empty()
            || authority.as_str().contains('@')
            || uri.query().is_some()
        {
            return Err(bad());
        }
        Ok(Self(uri))
    }
}

impl From<HttpsBase> for String {
    fn from(b: HttpsBase) -> String {
        b.0.to_string()
    }
}

impl std::fmt::Display for HttpsBase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_are_checked_when_the_file_is_read() {
        let ok = HttpsBase::try_from("https://api.example.com/v1".to_string()).unwrap();
        assert_eq!(ok.uri().host(), Some("api.example.com"));
        for bad in [
            "http://api.example.com",
            "https://user:pw@api.example.com/",
            "https://api.example.com/?x=1",
            "api.example.com",
            "https:///path",
        ] {
            assert!(HttpsBase::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
