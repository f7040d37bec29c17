//! SSH remote URLs, in both spellings git accepts: `ssh://user@host[:port]/path` and the
//! scp-like `user@host:path`.

use super::Host;

/// A parsed SSH git URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUrl {
    /// SSH user.
    pub user: String,
    /// Host.
    pub host: Host,
    /// Port (22 unless given).
    pub port: u16,
    /// Repository path on the host, without a leading '/'.
    pub path: String,
}

impl SshUrl {
    /// Parses an SSH remote URL.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (authority, path) = if let Some(rest) = raw.strip_prefix("ssh://") {
            rest.split_once('/').ok_or("has no repository path")?
        } else if raw.contains("://") {
            return Err("must be an SSH URL (ssh://… or user@host:path)".into());
        } else {
            raw.split_once(':')
                .ok_or("must be ssh://user@host/path or user@host:path")?
        };
        let (user, hostport) = authority
            .split_once('@')
            .ok_or("must name the SSH user (user@host)")?;
        if user.is_empty()
            || !user
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(format!("SSH user {user:?} is not valid"));
        }
        let (host, port) = match (raw.starts_with("ssh://"), hostport.rsplit_once(':')) {
            (true, Some((h, p))) => (
                h,
                p.parse::<u16>()
                    .map_err(|_| format!("port {p:?} is not a number"))?,
            ),
            _ => (hostport, 22),
        };
        if port == 0 {
            return Err("port 0 is not valid".into());
        }
        let host = Host::parse(host).map_err(|e| format!("host {host:?}: {e}"))?;
        let path = path.trim_start_matches('/');
        if path.is_empty() || path.contains("..") || path.contains(char::is_whitespace) {
            return Err(format!("repository path {path:?} is not valid"));
        }
        Ok(Self {
            user: user.to_string(),
            host,
            port,
            path: path.to_string(),
        })
    }
}
