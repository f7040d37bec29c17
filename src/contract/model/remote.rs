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

#[cfg(test)]
mod tests {
    use crate::contract::api::{BottleSpec, GitRemote, SecretKeyRef};
    use crate::contract::model::Policy;

    fn spec(edit: impl FnOnce(&mut GitRemote)) -> BottleSpec {
        let mut r = GitRemote {
            name: "origin".into(),
            url: "git@github.com:o/r.git".into(),
            ssh_key_secret_ref: SecretKeyRef {
                name: "k".into(),
                key: "id".into(),
            },
            known_hosts: "github.com ssh-ed25519 AAAA".into(),
            ..Default::default()
        };
        edit(&mut r);
        let mut s = BottleSpec::default();
        s.git.remotes = vec![r];
        s
    }

    #[test]
    fn brokering_rules_are_checked_and_reach_git_gate() {
        let ok = spec(|r| {
            r.allowed_refs = vec!["refs/heads/bottle/b1/*".into()];
            r.forbidden_paths = vec![".github/workflows/**".into()];
            r.max_push_bytes = Some(1 << 20);
        });
        let p = Policy::from_spec(&ok).unwrap();
        let gate = crate::operator::render::config_map::git_gate_config(&p);
        let r = &gate.remotes[0];
        assert_eq!(r.allowed_refs, vec!["refs/heads/bottle/b1/*"]);
        assert_eq!(r.forbidden_paths, vec![".github/workflows/**"]);
        assert_eq!(r.max_push_bytes, Some(1 << 20));
        // Unset rules stay out of the rendered file.
        let plain = Policy::from_spec(&spec(|_| {})).unwrap();
        let yaml = serde_norway::to_string(&crate::operator::render::config_map::git_gate_config(
            &plain,
        ))
        .unwrap();
        assert!(
            !yaml.contains("allowedRefs") && !yaml.contains("maxPushBytes"),
            "{yaml}"
        );

        for (bad, field) in [
            (
                spec(|r| r.allowed_refs = vec!["main".into()]),
                "allowedRefs",
            ),
            (spec(|r| r.allowed_refs = vec!["".into()]), "allowedRefs"),
            (
                spec(|r| r.forbidden_paths = vec!["/etc/**".into()]),
                "forbiddenPaths",
            ),
            (
                spec(|r| r.forbidden_paths = vec!["a/***".into()]),
                "forbiddenPaths",
            ),
            (spec(|r| r.max_push_bytes = Some(0)), "maxPushBytes"),
        ] {
            let e = Policy::from_spec(&bad).unwrap_err();
            assert!(format!("{e:?}").contains(field), "{field}: {e:?}");
        }
    }
}
