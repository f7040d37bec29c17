//! What an [`AccessRequest`](crate::contract::api::AccessRequest) asks for, checked with the
//! grammar a Bottle's own spec is checked with, and how a granted ask adds to a spec.

use crate::contract::api::{AccessRequestSpec, BottleSpec, EgressRoute};

use super::{
    Host, HostPattern, InvalidSpec, Reason, check_route_path, public_host, public_pattern,
};

/// A checked ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// An egress route: these path prefixes on this host.
    Route {
        /// The host.
        host: Host,
        /// Path prefixes, at least one.
        paths: Vec<String>,
    },
    /// A host (or `*.` pattern) for pipelock's allowlist.
    Allow(HostPattern),
}

impl Ask {
    /// Checks what `spec` asks for; with `narrowed`, an approver's narrower paths replace
    /// the requested ones (the CRD's rules keep each within a requested prefix).
    pub fn of(spec: &AccessRequestSpec, narrowed: Option<&[String]>) -> Result<Self, InvalidSpec> {
        match (&spec.route, &spec.allow_host) {
            (Some(r), None) => {
                let host = public_host("route.host", &r.host)?;
                let paths = narrowed.unwrap_or(&r.paths).to_vec();
                if paths.is_empty() {
                    return Err(InvalidSpec::new(
                        Reason::InvalidPath,
                        format!(
                            "a route for {host} names no path prefix; a whole host is allowHost"
                        ),
                    ));
                }
                for p in &paths {
                    check_route_path(&host, p)?;
                }
                Ok(Ask::Route { host, paths })
            }
            (None, Some(h)) => Ok(Ask::Allow(public_pattern("allowHost", h)?)),
            _ => Err(InvalidSpec::new(
                Reason::InvalidHost,
                "an access request asks for exactly one of route or allowHost",
            )),
        }
    }

    /// The host asked for, as written into the Bottle.
    pub fn host(&self) -> String {
        match self {
            Ask::Route { host, .. } => host.to_string(),
            Ask::Allow(p) => p.to_string(),
        }
    }

    /// True for a route whose host has a route of every path (no prefixes) in `spec`: such a
    /// route can only have come from the user (a grant always names prefixes), and adding
    /// prefixes to it would narrow it, so the grant is left out. An allowed host is never
    /// left out: owning a set item beside the user is harmless, and leaving it out because
    /// the spec holds it would drop it the moment that is the grant's own copy.
    pub fn covered_by(&self, spec: &BottleSpec) -> bool {
        match self {
            Ask::Allow(_) => false,
            Ask::Route { host, .. } => spec
                .egress
                .routes
                .iter()
                .any(|r| r.host == host.as_str() && r.paths.is_empty()),
        }
    }

    /// True when `spec` allows all of it: covered, or carrying the grant.
    pub fn carried_by(&self, spec: &BottleSpec) -> bool {
        match self {
            Ask::Allow(p) => spec.egress.allow.iter().any(|a| a == &p.to_string()),
            Ask::Route { host, paths } => spec.egress.routes.iter().any(|r| {
                r.host == host.as_str()
                    && (r.paths.is_empty() || paths.iter().all(|p| r.paths.contains(p)))
            }),
        }
    }

    /// Adds the ask to `spec`, as the operator's grant would: a path set joins the host's
    /// route (made when missing), a host joins `egress.allow`.
    pub fn add_to(&self, spec: &mut BottleSpec) {
        match self {
            Ask::Allow(p) => {
                let p = p.to_string();
                if !spec.egress.allow.contains(&p) {
                    spec.egress.allow.push(p);
                }
            }
            Ask::Route { host, paths } => {
                let route = match spec
                    .egress
                    .routes
                    .iter_mut()
                    .position(|r| r.host == host.as_str())
                {
                    // A route of every path stays so: adding prefixes would narrow it.
                    Some(i) if spec.egress.routes[i].paths.is_empty() => return,
                    Some(i) => &mut spec.egress.routes[i],
                    None => {
                        spec.egress.routes.push(EgressRoute {
                            host: host.to_string(),
                            ..Default::default()
                        });
                        spec.egress.routes.last_mut().expect("just pushed")
                    }
                };
                for p in paths {
                    if !route.paths.contains(p) {
                        route.paths.push(p.clone());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::api::RequestedRoute;

    fn route(host: &str, paths: &[&str]) -> AccessRequestSpec {
        AccessRequestSpec {
            bottle: "b".into(),
            requested_by: "u".into(),
            route: Some(RequestedRoute {
                host: host.into(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
            reason: "r".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_ask_is_checked_with_the_bottle_grammar() {
        let ok = Ask::of(&route("API.GitHub.com", &["/repos/"]), None).unwrap();
        assert_eq!(ok.host(), "api.github.com");
        let e = Ask::of(&route("10.0.0.1", &["/"]), None).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidHost, "{e}");
        let e = Ask::of(&route("example.com", &["/a/../etc"]), None).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidPath, "{e}");
        let e = Ask::of(&route("example.com", &["/a"]), Some(&[])).unwrap_err();
        assert_eq!(e.reason, Reason::InvalidPath, "{e}");
        let allow = AccessRequestSpec {
            allow_host: Some("*.pypi.org".into()),
            ..Default::default()
        };
        assert_eq!(Ask::of(&allow, None).unwrap().host(), "*.pypi.org");
        let both = AccessRequestSpec {
            allow_host: Some("pypi.org".into()),
            ..route("example.com", &["/"])
        };
        assert!(Ask::of(&both, None).is_err());
    }

    #[test]
    fn narrowing_replaces_the_requested_paths() {
        let narrowed = ["/repos/a/issues".to_string()];
        let ask = Ask::of(&route("example.com", &["/repos/"]), Some(&narrowed)).unwrap();
        assert_eq!(
            ask,
            Ask::Route {
                host: "example.com".parse().unwrap(),
                paths: narrowed.to_vec()
            }
        );
    }

    #[test]
    fn a_grant_joins_an_existing_route_and_never_narrows_an_open_one() {
        let mut spec = BottleSpec::default();
        spec.egress.routes.push(EgressRoute {
            host: "example.com".into(),
            paths: vec!["/a".into()],
            auth: None,
        });
        let ask = Ask::of(&route("example.com", &["/b", "/a"]), None).unwrap();
        assert!(!ask.covered_by(&spec));
        assert!(!ask.carried_by(&spec));
        ask.add_to(&mut spec);
        assert!(ask.carried_by(&spec));
        assert!(
            !ask.covered_by(&spec),
            "carried by a grant is not covered by the user"
        );
        assert_eq!(spec.egress.routes.len(), 1);
        assert_eq!(spec.egress.routes[0].paths, ["/a", "/b"]);

        let other = Ask::of(&route("other.example", &["/x"]), None).unwrap();
        other.add_to(&mut spec);
        assert_eq!(spec.egress.routes[1].host, "other.example");
        assert_eq!(spec.egress.routes[1].paths, ["/x"]);

        let mut open = BottleSpec::default();
        open.egress.routes.push(EgressRoute {
            host: "example.com".into(),
            ..Default::default()
        });
        assert!(ask.covered_by(&open));
    }
}
