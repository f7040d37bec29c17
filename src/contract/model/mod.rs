//! What a bottle means, free of Kubernetes types: hosts, routes, remotes and the credentials
//! they name. [`Policy::from_spec`] is the single place where a spec is checked; everything
//! downstream (rendering, sidecars) works on values that are already valid.

pub mod access;
pub mod dlp_regex;
mod reason;
mod remote;

pub use crate::contract::config::host::{Host, HostError, HostPattern};
pub use reason::Reason;
pub use remote::SshUrl;

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};
use url::Url;

use crate::contract::api::{BottleSpec, InjectionAction, RouteAuth};

/// A spec that cannot be turned into a bottle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidSpec {
    /// Condition reason, for example [`Reason::InvalidHost`].
    pub reason: Reason,
    /// What was wrong and what to do about it.
    pub message: String,
}

impl InvalidSpec {
    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// A key of a Secret in the bottle's namespace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SecretKey {
    /// Secret name.
    pub secret: String,
    /// Key within the Secret.
    pub key: String,
}

impl SecretKey {
    /// File name the key is projected to inside the sidecar that uses it: stable, and free of
    /// characters a Secret name or key may contain but a path should not.
    pub fn file_name(&self) -> String {
        let digest = Sha256::digest(format!("{}\0{}", self.secret, self.key).as_bytes());
        format!("{}-{}", sanitize(&self.secret), &hex::encode(digest)[..12])
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A credential a sidecar writes into a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// Header name.
    pub header: String,
    /// Prefix before the token (`Bearer`), if any.
    pub scheme: Option<String>,
    /// Where the token lives.
    pub secret: SecretKey,
}

/// A host + path allowlist entry of the egress sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressRoute {
    /// Exact host.
    pub host: Host,
    /// Allowed path prefixes; empty means all.
    pub paths: Vec<String>,
    /// Injected credential.
    pub auth: Option<Credential>,
}

/// A named upstream of cred-proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredRoute {
    /// Path segment.
    pub name: String,
    /// Upstream base URL (https), as cred-proxy's config holds it.
    pub upstream: crate::contract::config::cred_proxy::HttpsBase,
    /// Upstream host, already validated.
    pub host: Host,
    /// Upstream port.
    pub port: u16,
    /// Injected credential.
    pub auth: Credential,
}

/// A git remote served through git-gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Local name.
    pub name: String,
    /// Upstream as written by the user (used for `insteadOf`).
    pub url_as_written: String,
    /// Parsed upstream.
    pub url: SshUrl,
    /// SSH private key.
    pub ssh_key: SecretKey,
    /// Pinned known_hosts lines.
    pub known_hosts: String,
    /// Allow non-fast-forward pushes.
    pub allow_force_push: bool,
    /// Allow deleting the default branch.
    pub allow_delete_default_branch: bool,
    /// Globs of the only refs the agent may push (empty: any branch or tag).
    pub allowed_refs: Vec<String>,
    /// Globs of paths the agent's commits may not touch.
    pub forbidden_paths: Vec<String>,
    /// Most bytes of objects one push may add.
    pub max_push_bytes: Option<u64>,
}

/// A custom DLP pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlpPattern {
    /// Name.
    pub name: String,
    /// Regular expression.
    pub regex: String,
}

impl DlpPattern {
    /// The id scanners report for it: the name, lower-case, non-alphanumerics as `-`.
    pub fn rule_id(&self) -> String {
        let id: String = self
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        id.split('-')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("-")
    }
}

/// The validated policy of one bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// pipelock allowlist: declared hosts plus every host a route or remote needs.
    pub allow: BTreeSet<HostPattern>,
    /// Hosts tunnelled without interception.
    pub passthrough: BTreeSet<HostPattern>,
    /// WebSocket hosts: egress intercepts them, pipelock splices them.
    pub websocket: BTreeSet<HostPattern>,
    /// egress routes.
    pub egress_routes: Vec<EgressRoute>,
    /// cred-proxy routes.
    pub cred_routes: Vec<CredRoute>,
    /// git remotes.
    pub remotes: Vec<Remote>,
    /// Block (true) or only log DLP findings.
    pub dlp_block: bool,
    /// Extra DLP patterns.
    pub dlp_patterns: Vec<DlpPattern>,
    /// Findings the push scan accepts anyway.
    pub scan_allowlist: Vec<String>,
    /// Path globs the push scan leaves out.
    pub scan_allow_paths: Vec<String>,
    /// pipelock blocks (true) or only logs responses that carry prompt injection.
    pub block_response_injection: bool,
}

impl Policy {
    /// Checks a spec and turns it into a policy. The first problem found is returned.
    pub fn from_spec(spec: &BottleSpec) -> Result<Self, InvalidSpec> {
        let mut allow = BTreeSet::new();
        for h in &spec.egress.allow {
            allow.insert(public_pattern("egress.allow", h)?);
        }
        let mut passthrough = BTreeSet::new();
        for h in &spec.egress.passthrough {
            let p = public_pattern("egress.passthrough", h)?;
            // A passthrough host still has to be reachable.
            allow.insert(p.clone());
            passthrough.extend(p.passthrough_entries());
        }
        let mut websocket = BTreeSet::new();
        for h in &spec.egress.websocket {
            let p = public_pattern("egress.websocket", h)?;
            allow.insert(p.clone());
            websocket.insert(p);
        }

        let mut egress_routes = Vec::new();
        let mut seen = BTreeSet::new();
        for r in &spec.egress.routes {
            let host = public_host("egress.routes[].host", &r.host)?;
            if !seen.insert(host.clone()) {
                return Err(InvalidSpec::new(
                    Reason::DuplicateRoute,
                    format!(
                        "egress route host {host} is declared twice; merge its paths into one route"
                    ),
                ));
            }
            for p in &r.paths {
                check_route_path(&host, p)?;
            }
            allow.insert(HostPattern::Exact(host.clone()));
            egress_routes.push(EgressRoute {
                host,
                paths: r.paths.clone(),
                auth: r.auth.as_ref().map(credential).transpose()?,
            });
        }

        let mut cred_routes = Vec::new();
        let mut names = BTreeSet::new();
        for r in &spec.cred_proxy.routes {
            if !is_dns_label(&r.name) {
                return Err(InvalidSpec::new(
                    Reason::InvalidRouteName,
                    format!(
                        "credProxy route name {:?} must be a DNS label (a-z, 0-9, '-')",
                        r.name
                    ),
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(InvalidSpec::new(
                    Reason::DuplicateRoute,
                    format!("credProxy route {} is declared twice", r.name),
                ));
            }
            let mut url = parse_upstream(&r.name, &r.upstream)?;
            let host = Host::parse(url.host_str().unwrap_or_default())
                .map_err(|e| invalid_host("credProxy.routes[].upstream", &r.upstream, &e))
                .and_then(|h| {
                    check_public("credProxy.routes[].upstream", &r.upstream, &h)?;
                    Ok(h)
                })?;
            let port = url.port_or_known_default().unwrap_or(443);
            // cred-proxy asks pipelock for the URL's host as written, and pipelock's
            // passthrough list matches it without dropping a trailing dot: the spelling the
            // allowlists hold (`Host`) is the one it must ask for.
            url.set_host(Some(host.as_str()))
                .expect("a valid hostname is a valid URL host");
            // What cred-proxy will read: checked here too, so the sidecar never meets an
            // upstream its own parser refuses.
            let upstream = crate::contract::config::cred_proxy::HttpsBase::try_from(
                url.to_string(),
            )
            .map_err(|e| {
                InvalidSpec::new(
                    Reason::InvalidUrl,
                    format!("credProxy route {}: {e}", r.name),
                )
            })?;
            allow.insert(HostPattern::Exact(host.clone()));
            cred_routes.push(CredRoute {
                name: r.name.clone(),
                upstream,
                host,
                port,
                auth: credential(&r.auth)?,
            });
        }

        let mut remotes = Vec::new();
        let mut names = BTreeSet::new();
        for r in &spec.git.remotes {
            if !is_dns_label(&r.name) {
                return Err(InvalidSpec::new(
                    Reason::InvalidRemote,
                    format!(
                        "git remote name {:?} must be a DNS label (a-z, 0-9, '-')",
                        r.name
                    ),
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(InvalidSpec::new(
                    Reason::InvalidRemote,
                    format!("git remote {} is declared twice", r.name),
                ));
            }
            let url = SshUrl::parse(&r.url).map_err(|e| {
                InvalidSpec::new(
                    Reason::InvalidRemote,
                    format!("git remote {}: url {:?}: {e}", r.name, r.url),
                )
            })?;
            if r.known_hosts.trim().is_empty() {
                return Err(InvalidSpec::new(
                    Reason::InvalidRemote,
                    format!(
                        "git remote {} needs knownHosts pinning the host key of {}",
                        r.name, url.host
                    ),
                ));
            }
            check_brokering(r)?;
            remotes.push(Remote {
                name: r.name.clone(),
                url_as_written: r.url.clone(),
                url,
                ssh_key: secret_key(&r.ssh_key_secret_ref.name, &r.ssh_key_secret_ref.key)?,
                known_hosts: r.known_hosts.clone(),
                allow_force_push: r.allow_force_push,
                allow_delete_default_branch: r.allow_delete_default_branch,
                allowed_refs: r.allowed_refs.clone(),
                forbidden_paths: r.forbidden_paths.clone(),
                max_push_bytes: r.max_push_bytes,
            });
        }

        let mut dlp_patterns = Vec::new();
        for (i, p) in spec.dlp.patterns.iter().enumerate() {
            if p.name.trim().is_empty() || p.regex.is_empty() {
                return Err(InvalidSpec::new(
                    Reason::InvalidDlpPattern,
                    "dlp patterns need a name and a regex",
                ));
            }
            if p.regex.contains('\n') {
                return Err(InvalidSpec::new(
                    Reason::InvalidDlpPattern,
                    format!(
                        "spec.dlp.patterns[{i}].regex ({:?}) spans lines; write it on one line (\\n matches a newline)",
                        p.name
                    ),
                ));
            }
            // pipelock and gitleaks compile it with Go's RE2: refuse what they would not.
            dlp_regex::check(&p.regex).map_err(|why| {
                InvalidSpec::new(
                    Reason::InvalidDlpPattern,
                    format!("spec.dlp.patterns[{i}].regex ({:?}) {why}", p.name),
                )
            })?;
            dlp_patterns.push(DlpPattern {
                name: p.name.clone(),
                regex: p.regex.clone(),
            });
        }

        for a in &spec.git.scan_allowlist {
            if a.is_empty() || a.contains('\n') {
                return Err(InvalidSpec::new(
                    Reason::InvalidDlpPattern,
                    format!("git.scanAllowlist entry {a:?} must be one non-empty line"),
                ));
            }
        }
        for g in &spec.git.scan_allow_paths {
            let why = crate::contract::config::glob::check(g).err().or_else(|| {
                g.starts_with('/')
                    .then(|| "must be relative to the repository root (no leading /)".into())
            });
            if let Some(why) = why {
                return Err(InvalidSpec::new(
                    Reason::InvalidDlpPattern,
                    format!("git.scanAllowPaths entry {g:?} {why}"),
                ));
            }
        }

        Ok(Self {
            allow,
            passthrough,
            websocket,
            egress_routes,
            cred_routes,
            remotes,
            dlp_block: spec.dlp.block,
            dlp_patterns,
            scan_allowlist: spec.git.scan_allowlist.clone(),
            scan_allow_paths: spec.git.scan_allow_paths.clone(),
            block_response_injection: spec.egress.response_injection.unwrap_or_default()
                == InjectionAction::Block,
        })
    }

    /// Hosts pipelock splices without interception: the declared passthrough and WebSocket
    /// hosts, and every host a sidecar injects a credential for. pipelock 2.3.0's header DLP scans
    /// `Authorization`/`X-Api-Key` with no per-host exemption (`exempt_domains` covers URLs
    /// only; GitHub, GitLab, Slack and AWS keys are its immutable core floor), so intercepting
    /// them would block the declared credential on its own host. egress and cred-proxy still
    /// terminate TLS and enforce routes there; the same token to any other host is still
    /// intercepted and blocked.
    pub fn pipelock_passthrough(&self) -> BTreeSet<HostPattern> {
        let mut hosts = self.passthrough.clone();
        // pipelock's `*.d` splices subdomains only, and egress lets a WebSocket to `d` through.
        hosts.extend(
            self.websocket
                .iter()
                .flat_map(HostPattern::passthrough_entries),
        );
        let credentialed = self.egress_routes.iter().filter(|r| r.auth.is_some());
        hosts.extend(credentialed.map(|r| HostPattern::Exact(r.host.clone())));
        hosts.extend(
            self.cred_routes
                .iter()
                .map(|r| HostPattern::Exact(r.host.clone())),
        );
        hosts
    }

    /// Every Secret key the bottle references, deduplicated.
    pub fn secret_keys(&self) -> BTreeSet<SecretKey> {
        let egress = self
            .egress_routes
            .iter()
            .filter_map(|r| r.auth.as_ref())
            .map(|c| c.secret.clone());
        let cred = self.cred_routes.iter().map(|r| r.auth.secret.clone());
        let git = self.remotes.iter().map(|r| r.ssh_key.clone());
        egress.chain(cred).chain(git).collect()
    }

    /// TCP ports the bottle needs to reach on public addresses.
    pub fn egress_ports(&self) -> BTreeSet<u16> {
        let mut ports = BTreeSet::from([443]);
        ports.extend(self.cred_routes.iter().map(|r| r.port));
        ports.extend(self.remotes.iter().map(|r| r.url.port));
        ports
    }
}

/// A remote's brokering rules are globs a user can mean; allowed refs name full refs.
fn check_brokering(r: &crate::contract::api::GitRemote) -> Result<(), InvalidSpec> {
    let bad = |field: &str, v: &str, why: String| {
        InvalidSpec::new(
            Reason::InvalidRemote,
            format!("git remote {}: {field} entry {v:?} {why}", r.name),
        )
    };
    for p in &r.allowed_refs {
        crate::contract::config::glob::check(p).map_err(|e| bad("allowedRefs", p, e))?;
        if !(p.starts_with("refs/heads/") || p.starts_with("refs/tags/")) {
            return Err(bad(
                "allowedRefs",
                p,
                "must start with refs/heads/ or refs/tags/ (only branches and tags are pushed)"
                    .into(),
            ));
        }
    }
    for p in &r.forbidden_paths {
        crate::contract::config::glob::check(p).map_err(|e| bad("forbiddenPaths", p, e))?;
        if p.starts_with('/') {
            return Err(bad(
                "forbiddenPaths",
                p,
                "must be relative to the repository root (no leading /)".into(),
            ));
        }
    }
    if r.max_push_bytes == Some(0) {
        return Err(bad("maxPushBytes", "0", "must be at least 1".into()));
    }
    Ok(())
}

/// Names that never leave the machine or the cluster: the loopback name, mDNS, the cluster's
/// own services, and the reserved private-use TLD (cloud metadata lives there). pipelock's SSRF
/// guard would refuse them anyway, inside the Pod, where the user cannot see why.
const INTERNAL_SUFFIXES: &[(&str, &str)] = &[
    ("localhost", "the loopback name"),
    ("cluster.local", "a cluster-internal name"),
    ("svc", "a cluster Service"),
    ("local", "an mDNS name"),
    (
        "internal",
        "a private-use name (cloud metadata lives there)",
    ),
];

fn check_public(field: &str, value: &str, host: &Host) -> Result<(), InvalidSpec> {
    let h = host.as_str();
    // URL parsers (WHATWG: the `url` crate that reads cred-proxy upstreams, browsers, curl
    // with IDN) refuse invalid punycode (`xn--a`) and read a name ending in a number-like label
    // (`a.0x1`) as an IPv4 address; a host the model accepts is the same name to all of them.
    match url::Host::parse(h) {
        Ok(url::Host::Domain(d)) if d == h => {}
        Ok(_) => {
            return Err(invalid_host(field, value, &HostError::IpLiteral));
        }
        Err(e) => {
            return Err(InvalidSpec::new(
                Reason::InvalidHost,
                format!("{field}: {value:?} is not a valid hostname: {e}"),
            ));
        }
    }
    let internal = INTERNAL_SUFFIXES.iter().find(|(suffix, _)| {
        h == *suffix || h.strip_suffix(suffix).is_some_and(|r| r.ends_with('.'))
    });
    match internal {
        Some((_, what)) => Err(InvalidSpec::new(
            Reason::InvalidHost,
            format!(
                "{field}: {value:?} is {what}; a bottle reaches only public hosts through its \
                 proxies (pipelock refuses loopback and private addresses). Name a public host"
            ),
        )),
        None => Ok(()),
    }
}

fn public_host(field: &str, raw: &str) -> Result<Host, InvalidSpec> {
    let h = Host::parse(raw).map_err(|e| invalid_host(field, raw, &e))?;
    check_public(field, raw, &h)?;
    Ok(h)
}

fn public_pattern(field: &str, raw: &str) -> Result<HostPattern, InvalidSpec> {
    let p = HostPattern::parse(raw).map_err(|e| invalid_host(field, raw, &e))?;
    match &p {
        HostPattern::Exact(h) | HostPattern::Wildcard(h) => check_public(field, raw, h)?,
    }
    Ok(p)
}

/// A declared path prefix must be exactly what egress makes of a request path, or no request
/// could ever match it (egress normalises dot segments and encodings before it compares).
fn check_route_path(host: &Host, p: &str) -> Result<(), InvalidSpec> {
    let bad = |why: String| {
        Err(InvalidSpec::new(
            Reason::InvalidPath,
            format!("egress route {host} path {p:?} {why}"),
        ))
    };
    if !p.starts_with('/') || p.contains(char::is_whitespace) {
        return bad("must start with '/' and contain no spaces".into());
    }
    match crate::contract::config::path::normalize(p) {
        Ok(n) if n == p => Ok(()),
        Ok(n) => bad(format!(
            "is not in normal form (dot segments or needless encoding), so no request would \
             match it; write {n:?}"
        )),
        Err(_) => bad(
            "encodes '/', '\\' or '%', has a dot segment with ';' parameters, or climbs \
             above '/'; write the plain path"
                .into(),
        ),
    }
}

fn invalid_host(field: &str, value: &str, why: &HostError) -> InvalidSpec {
    InvalidSpec::new(
        Reason::InvalidHost,
        format!("{field}: {value:?} is not a valid hostname: {why}"),
    )
}

fn credential(auth: &RouteAuth) -> Result<Credential, InvalidSpec> {
    let header = auth
        .header
        .clone()
        .unwrap_or_else(|| "Authorization".to_string());
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        return Err(InvalidSpec::new(
            Reason::InvalidAuth,
            format!("auth header {header:?} is not a valid header name"),
        ));
    }
    let scheme = auth.scheme.clone().filter(|s| !s.is_empty());
    if let Some(s) = &scheme
        && !s.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(InvalidSpec::new(
            Reason::InvalidAuth,
            format!("auth scheme {s:?} must be one printable word"),
        ));
    }
    Ok(Credential {
        header,
        scheme,
        secret: secret_key(&auth.secret_key_ref.name, &auth.secret_key_ref.key)?,
    })
}

fn secret_key(name: &str, key: &str) -> Result<SecretKey, InvalidSpec> {
    let key_ok = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if name.is_empty() || !key_ok {
        return Err(InvalidSpec::new(
            Reason::InvalidSecretRef,
            format!("secretKeyRef {name:?}/{key:?} must name a Secret and one of its keys"),
        ));
    }
    Ok(SecretKey {
        secret: name.to_string(),
        key: key.to_string(),
    })
}

fn parse_upstream(name: &str, raw: &str) -> Result<Url, InvalidSpec> {
    let bad = |why: &str| {
        InvalidSpec::new(
            Reason::InvalidUrl,
            format!("credProxy route {name}: upstream {raw:?} {why}"),
        )
    };
    let url = Url::parse(raw).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    if url.scheme() != "https" {
        return Err(bad("must use https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials; use auth.secretKeyRef"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    Ok(url)
}

fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests;
