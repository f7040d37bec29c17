//! Pure decisions of the egress proxy: which hosts and paths pass, with which credential.
//! Everything here is unit-tested; the server only asks.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::contract::config::egress::EgressConfig;
use crate::contract::config::host::{Host, HostPattern};
use crate::pod::core::headers::Injection;

/// Why a request is refused. The text is what the agent reads in the 403 body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deny {
    /// No route, allow or passthrough entry names the host.
    NoRoute(String),
    /// The host has routes, but none allows this path.
    PathNotAllowed(String, String),
    /// IP literals are never routed.
    IpLiteral(String),
    /// The port is not one the bottle may use.
    Port(u16),
    /// The path is encoded ambiguously (double encoding, encoded separators, `..;`, `..`
    /// above root).
    AmbiguousPath(String),
    /// The request names another host than the tunnel it came through.
    HostMismatch { tunnel: String, request: String },
    /// Not a valid host name.
    BadHost(String),
}

impl fmt::Display for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Deny::NoRoute(h) => write!(f, "no route for host {h}"),
            Deny::PathNotAllowed(h, p) => write!(f, "path {p} is not allowed for host {h}"),
            Deny::IpLiteral(h) => write!(
                f,
                "IP address {h} is not routed; use a hostname the bottle declares"
            ),
            Deny::Port(p) => write!(f, "port {p} is not allowed"),
            Deny::AmbiguousPath(p) => write!(f, "path {p:?} is ambiguously encoded"),
            Deny::HostMismatch { tunnel, request } => {
                write!(f, "request for host {request} inside a tunnel to {tunnel}")
            }
            Deny::BadHost(h) => write!(f, "{h:?} is not a valid host name"),
        }
    }
}

impl Deny {
    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Deny::NoRoute(_) => "no_route",
            Deny::PathNotAllowed(..) => "path_not_allowed",
            Deny::IpLiteral(_) => "ip_literal",
            Deny::Port(_) => "port",
            Deny::AmbiguousPath(_) => "ambiguous_path",
            Deny::HostMismatch { .. } => "host_mismatch",
            Deny::BadHost(_) => "bad_host",
        }
    }
}

/// What to do with a CONNECT (or the host of a plain request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAction {
    /// Terminate TLS and check each request.
    Intercept,
    /// Splice bytes to the upstream without looking.
    Passthrough,
}

#[derive(Debug, Clone)]
struct Route {
    paths: Vec<String>,
    inject: Option<Injection>,
}

/// The compiled egress policy.
#[derive(Debug, Clone)]
pub struct Policy {
    routes: HashMap<String, Route>,
    allow: BTreeSet<HostPattern>,
    passthrough: BTreeSet<HostPattern>,
    ports: BTreeSet<u16>,
    token_files: Vec<PathBuf>,
}

/// Lower-cases, drops a trailing dot and refuses IP literals and non-hostnames.
pub fn normalize_host(raw: &str) -> Result<String, Deny> {
    let trimmed = raw
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(raw);
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Err(Deny::IpLiteral(raw.to_string()));
    }
    Host::parse(trimmed).map(|h| h.to_string()).map_err(|e| {
        if e.is_ip() {
            Deny::IpLiteral(raw.to_string())
        } else {
            Deny::BadHost(raw.to_string())
        }
    })
}

fn pattern_matches(p: &HostPattern, host: &str) -> bool {
    match p {
        HostPattern::Exact(h) => h.as_str() == host,
        HostPattern::Wildcard(d) => {
            host == d.as_str()
                || host
                    .strip_suffix(d.as_str())
                    .is_some_and(|r| r.ends_with('.'))
        }
    }
}

/// [`crate::contract::config::path::normalize`], as egress's refusal.
pub fn normalize_path(raw: &str) -> Result<String, Deny> {
    crate::contract::config::path::normalize(raw).map_err(|e| Deny::AmbiguousPath(e.0))
}

fn path_allowed(allowed: &[String], path: &str) -> bool {
    allowed.is_empty()
        || allowed.iter().any(|a| {
            if a.ends_with('/') {
                path.starts_with(a.as_str())
            } else {
                path == a || path.starts_with(&format!("{a}/"))
            }
        })
}

impl Policy {
    /// Compiles a config (its hosts were checked when it was read) and reads every token file.
    pub fn compile(cfg: &EgressConfig) -> anyhow::Result<Self> {
        let mut routes = HashMap::new();
        let mut token_files = Vec::new();
        for r in &cfg.routes {
            let host = r.host.to_string();
            let inject = match &r.auth {
                Some(a) => {
                    token_files.push(PathBuf::from(&a.token_file));
                    Some(Injection::load(a).with_context(|| format!("route {host}"))?)
                }
                None => None,
            };
            for p in &r.paths {
                anyhow::ensure!(
                    p.starts_with('/'),
                    "route {host}: path {p:?} must start with '/'"
                );
            }
            anyhow::ensure!(
                routes
                    .insert(
                        host.clone(),
                        Route {
                            paths: r.paths.clone(),
                            inject
                        }
                    )
                    .is_none(),
                "route {host} is declared twice"
            );
        }
        anyhow::ensure!(!cfg.ports.is_empty(), "ports must list at least one port");
        Ok(Self {
            routes,
            allow: cfg.allow.iter().cloned().collect(),
            passthrough: cfg.passthrough.iter().cloned().collect(),
            ports: cfg.ports.iter().copied().collect(),
            token_files,
        })
    }

    /// Token files the policy read (watched for rotation).
    pub fn token_files(&self) -> &[PathBuf] {
        &self.token_files
    }

    /// Decides what to do with a connection to `host:port` (host already normalised).
    pub fn host_action(&self, host: &str, port: u16) -> Result<HostAction, Deny> {
        let action = if self.routes.contains_key(host) {
            HostAction::Intercept
        } else if self.passthrough.iter().any(|p| pattern_matches(p, host)) {
            HostAction::Passthrough
        } else if self.allow.iter().any(|p| pattern_matches(p, host)) {
            HostAction::Intercept
        } else {
            return Err(Deny::NoRoute(host.to_string()));
        };
        if !self.ports.contains(&port) {
            return Err(Deny::Port(port));
        }
        Ok(action)
    }

    /// Decides one request on an allowed host. Returns the path to forward and the
    /// credential to inject. Where a route limits paths, the path is normalised and must be
    /// unambiguous, since the decision rests on it; where nothing depends on the path it goes
    /// out as sent (npm asks for `/@scope%2fname`, which normalisation would refuse).
    pub fn request(
        &self,
        host: &str,
        raw_path: &str,
    ) -> Result<(String, Option<&Injection>), Deny> {
        match self.routes.get(host) {
            Some(r) if r.paths.is_empty() => Ok((raw_path.to_string(), r.inject.as_ref())),
            Some(r) => {
                let path = normalize_path(raw_path)?;
                if path_allowed(&r.paths, &path) {
                    Ok((path, r.inject.as_ref()))
                } else {
                    Err(Deny::PathNotAllowed(host.to_string(), path))
                }
            }
            None if self.allow.iter().any(|p| pattern_matches(p, host)) => {
                Ok((raw_path.to_string(), None))
            }
            None => Err(Deny::NoRoute(host.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::config::egress::EgressRoute;

    fn policy() -> Policy {
        let cfg = EgressConfig {
            listen: "127.0.0.1:0".into(),
            admin_listen: "127.0.0.1:0".into(),
            upstream_proxy: None,
            ca_cert: String::new(),
            ca_key: String::new(),
            ports: vec![443],
            allow: vec![
                "*.githubusercontent.com".parse().unwrap(),
                "pypi.org".parse().unwrap(),
            ],
            passthrough: vec!["api.anthropic.com".parse().unwrap()],
            routes: vec![EgressRoute {
                host: "api.github.com".parse().unwrap(),
                paths: vec!["/repos/acme/".into(), "/user".into()],
                auth: None,
            }],
        };
        Policy::compile(&cfg).unwrap()
    }

    #[test]
    fn hosts_are_normalised_and_ip_literals_refused() {
        assert_eq!(normalize_host("API.GitHub.com.").unwrap(), "api.github.com");
        assert!(matches!(
            normalize_host("127.0.0.1"),
            Err(Deny::IpLiteral(_))
        ));
        assert!(matches!(normalize_host("[::1]"), Err(Deny::IpLiteral(_))));
        assert!(matches!(normalize_host("a b"), Err(Deny::BadHost(_))));
    }

    #[test]
    fn host_actions() {
        let p = policy();
        assert_eq!(
            p.host_action("api.github.com", 443),
            Ok(HostAction::Intercept)
        );
        assert_eq!(
            p.host_action("raw.githubusercontent.com", 443),
            Ok(HostAction::Intercept)
        );
        assert_eq!(
            p.host_action("api.anthropic.com", 443),
            Ok(HostAction::Passthrough)
        );
        assert_eq!(
            p.host_action("evil.example", 443),
            Err(Deny::NoRoute("evil.example".into()))
        );
        assert_eq!(p.host_action("api.github.com", 8443), Err(Deny::Port(8443)));
        assert_eq!(
            p.host_action("notgithubusercontent.com", 443),
            Err(Deny::NoRoute("notgithubusercontent.com".into()))
        );
    }

    #[test]
    fn paths_are_decoded_once_and_dot_segments_resolved_before_matching() {
        let p = policy();
        let ok = |path: &str| p.request("api.github.com", path).map(|(p, _)| p);
        assert_eq!(
            ok("/repos/acme/app/issues"),
            Ok("/repos/acme/app/issues".into())
        );
        assert_eq!(ok("/user"), Ok("/user".into()));
        assert_eq!(ok("/user/repos"), Ok("/user/repos".into()));
        assert!(matches!(ok("/users"), Err(Deny::PathNotAllowed(..))));
        assert!(
            matches!(ok("/repos/acme/../evil/x"), Err(Deny::PathNotAllowed(_, p)) if p == "/repos/evil/x")
        );
        assert!(
            matches!(ok("/repos/acme/%2e%2e/evil"), Err(Deny::PathNotAllowed(_, p)) if p == "/repos/evil")
        );
        assert!(matches!(
            ok("/repos/acme/%252e%252e/evil"),
            Err(Deny::AmbiguousPath(_))
        ));
        assert!(matches!(
            ok("/repos/acme%2f..%2fevil"),
            Err(Deny::AmbiguousPath(_))
        ));
        assert!(matches!(
            ok("/repos/acme/..%5c..%5cevil"),
            Err(Deny::AmbiguousPath(_))
        ));
        assert!(matches!(
            ok("/../../etc/passwd"),
            Err(Deny::AmbiguousPath(_))
        ));
        // Tomcat and Jetty drop `;params` before resolving dot segments.
        assert!(matches!(
            ok("/repos/acme/..;/evil"),
            Err(Deny::AmbiguousPath(_))
        ));
        assert_eq!(ok("/repos/acme/./a//b/"), Ok("/repos/acme/a/b/".into()));
        assert_eq!(ok("/repos/acme/a%20b"), Ok("/repos/acme/a%20b".into()));
        assert_eq!(
            p.request("pypi.org", "/simple/x/").map(|(p, _)| p),
            Ok("/simple/x/".into())
        );
        // Nothing depends on the path of an allow-only host: it goes out as the client sent
        // it, encoded slash included (npm's scoped packages), while a route that limits paths
        // still refuses the same spelling.
        assert_eq!(
            p.request("pypi.org", "/@types%2fnode").map(|(p, _)| p),
            Ok("/@types%2fnode".into())
        );
        assert!(matches!(
            ok("/repos/acme%2fother"),
            Err(Deny::AmbiguousPath(_))
        ));
    }
}
