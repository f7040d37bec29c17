//! Properties of what a Bottle turns into, checked without a cluster or any outside tool:
//!
//! - any Bottle the model accepts renders egress, cred-proxy and git-gate configs that load
//!   in the sidecars' own loaders, and mean there what the model meant (a round trip);
//! - path normalisation is idempotent, and a path egress or cred-proxy lets through never
//!   lands outside the declared prefix at an upstream that normalises differently, nor is a
//!   push there;
//! - host parsing never panics, and what egress lets through is what pipelock's allowlist
//!   and passthrough list (Go matchers ported below) and the NetworkPolicy's ports let through.
//!
//! Case counts are bounded so the whole file runs in seconds (it runs in CI); set
//! `BOTTLE_PROPTEST_SCALE=20` to search twenty times as far.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::str::FromStr;
use std::sync::OnceLock;

use bottle_operator::contract::api::{Bottle, BottleSpec, EgressRoute};
use bottle_operator::contract::config::cred_proxy::{CredProxyConfig, CredRoute, HttpsBase};
use bottle_operator::contract::config::egress::{self as egress_cfg, EgressConfig};
use bottle_operator::contract::config::git_gate::{GitGateConfig, GitleaksConfig};
use bottle_operator::contract::config::host::{Host, HostPattern};
use bottle_operator::contract::config::layout::{self, files};
use bottle_operator::contract::config::pipelock::PipelockConfig;
use bottle_operator::contract::config::{HeaderInjection, path};
use bottle_operator::contract::model::Policy;
use bottle_operator::operator::render::{Settings, config_map, network_policy};
use bottle_operator::pod::cred_proxy::routes::Routes;
use bottle_operator::pod::egress::policy::{self as egress, HostAction};
use bottle_operator::pod::{cred_proxy, git_gate};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};

#[path = "support/bottles.rs"]
mod bottles;

/// `cases` times `BOTTLE_PROPTEST_SCALE` (default 1), for a deeper search by hand.
fn runner(cases: u32) -> TestRunner {
    let scale = std::env::var("BOTTLE_PROPTEST_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    TestRunner::new(PropConfig {
        cases: cases * scale,
        failure_persistence: None,
        ..PropConfig::default()
    })
}

fn policy_of(spec: &BottleSpec) -> Result<Policy, TestCaseError> {
    Policy::from_spec(spec).map_err(|e| TestCaseError::fail(format!("valid bottle refused: {e}")))
}

// ---------------------------------------------------------------- pipelock's matchers

/// pipelock 2.3.0 `scanner.MatchDomain` (internal/scanner/scanner.go), which decides
/// `api_allowlist`: lower-case, one trailing dot dropped, `*.d` covers `d` and below.
fn pipelock_allowlist_matches(hostname: &str, pattern: &str) -> bool {
    let canon = |s: &str| s.strip_suffix('.').unwrap_or(s).to_lowercase();
    let (h, p) = (canon(hostname), canon(pattern));
    if h.parse::<std::net::IpAddr>().is_ok() {
        return h == p;
    }
    match p.strip_prefix("*.") {
        Some(base) => h == base || h.ends_with(&p[1..]),
        None => h == p,
    }
}

/// pipelock 2.3.0 `isPassthrough` (internal/proxy/intercept.go), which decides
/// `passthrough_domains`: lower-case only (no trailing-dot trim), `*.d` covers below `d` only.
fn pipelock_passthrough_matches(host: &str, pattern: &str) -> bool {
    let (h, p) = (host.to_lowercase(), pattern.to_lowercase());
    h == p
        || p.strip_prefix('*')
            .is_some_and(|s| p.starts_with("*.") && h.ends_with(s))
}

/// What pipelock makes of a CONNECT host before matching its allowlist.
fn pipelock_canon(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_lowercase()
}

// ---------------------------------------------------------------- what the renderers say

/// One Bottle rendered: the policy, the ConfigMap's files and the NetworkPolicy's ports.
struct Rendered {
    policy: Policy,
    files: std::collections::BTreeMap<String, String>,
    pipelock: PipelockConfig,
    np_ports: BTreeSet<u16>,
}

fn render(spec: &BottleSpec) -> Result<Rendered, TestCaseError> {
    let policy = policy_of(spec)?;
    let mut b = Bottle::new("b", spec.clone());
    b.metadata.namespace = Some("team".into());
    b.metadata.uid = Some("uid".into());
    let nps = network_policy::render(&b, &policy, &Settings::default());
    let np_ports = nps
        .iter()
        .filter_map(|np| np.spec.as_ref()?.egress.as_ref())
        .flatten()
        .filter(|rule| rule.to.iter().flatten().any(|peer| peer.ip_block.is_some()))
        .flat_map(|rule| rule.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref() == Some("TCP"))
        .filter_map(|p| match p.port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                u16::try_from(n).ok()
            }
            _ => None,
        })
        .collect();
    Ok(Rendered {
        files: config_map::files(&b, &policy, &Settings::default())
            .into_iter()
            .collect(),
        pipelock: config_map::pipelock_config(&policy),
        policy,
        np_ports,
    })
}

/// A temp dir standing in for the Pod: the ConfigMap's files, with the projected Secret
/// paths pointed at token files here (the one change; every other byte is as rendered).
struct Pod {
    dir: tempfile::TempDir,
}

impl Pod {
    fn new(r: &Rendered) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let secrets = dir.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        for k in r.policy.secret_keys() {
            std::fs::write(secrets.join(k.file_name()), "token-value\n").unwrap();
        }
        for (name, text) in &r.files {
            let text = text.replace(layout::SECRETS_DIR, &secrets.display().to_string());
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Self { dir }
    }

    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

fn loaded<T>(what: &str, r: anyhow::Result<T>) -> Result<T, TestCaseError> {
    r.map_err(|e| TestCaseError::fail(format!("{what} refused its rendered config: {e:#}")))
}

/// Hosts a pattern stands for: the host, or a wildcard's apex and one name below it.
fn probes(p: &HostPattern) -> Vec<String> {
    use HostPattern::*;
    match p {
        Exact(h) => vec![h.to_string()],
        Wildcard(d) => vec![d.to_string(), format!("x-1.{d}")],
    }
}

#[test]
fn every_accepted_bottle_renders_configs_each_sidecar_loads_and_reads_alike() {
    let mut runner = runner(256);
    let (cred, git, all) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0u32));
    runner
        .run(&bottles::bottle(), |spec| {
            let r = render(&spec)?;
            let p = &r.policy;
            let pod = Pod::new(&r);

            // egress: its own loader, then what the loaded policy decides.
            let text = &r.files[files::EGRESS];
            let cfg: EgressConfig = serde_norway::from_str(text).unwrap();
            prop_assert_eq!(
                &cfg,
                &config_map::egress_config(p),
                "egress.yaml round trip"
            );
            let eg = loaded(
                "egress",
                bottle_operator::pod::egress::server::load(&pod.file(files::EGRESS)),
            )?
            .value;
            for pat in &p.allow {
                for h in probes(pat) {
                    prop_assert!(eg.host_action(&h, 443).is_ok(), "egress refuses {}", h);
                }
            }
            for pat in &p.passthrough {
                for h in probes(pat) {
                    if !p.egress_routes.iter().any(|e| e.host.as_str() == h) {
                        prop_assert_eq!(eg.host_action(&h, 443), Ok(HostAction::Passthrough));
                    }
                }
            }
            for route in &p.egress_routes {
                for prefix in &route.paths {
                    let got = eg.request(route.host.as_str(), prefix);
                    prop_assert!(got.is_ok(), "declared prefix {} refused: {:?}", prefix, got);
                }
            }

            // pipelock: its file reads back into its strict schema, and it splices every name
            // of a passthrough or WebSocket entry (egress intercepts WebSocket hosts itself).
            let back: PipelockConfig = serde_norway::from_str(&r.files[files::PIPELOCK]).unwrap();
            prop_assert_eq!(&back, &r.pipelock);
            for pat in p.passthrough.iter().chain(&p.websocket) {
                for h in probes(pat) {
                    prop_assert!(
                        r.pipelock
                            .tls_interception
                            .passthrough_domains
                            .iter()
                            .any(|e| pipelock_passthrough_matches(&h, e)),
                        "pipelock intercepts {} of {}: {:?}",
                        h,
                        pat,
                        r.pipelock.tls_interception.passthrough_domains
                    );
                }
            }

            // cred-proxy: its loader, and every route reaches its declared host and port,
            // which pipelock allows and splices, and the NetworkPolicy opens.
            if let Some(text) = r.files.get(files::CRED_PROXY) {
                let cfg: CredProxyConfig = serde_norway::from_str(text).unwrap();
                prop_assert_eq!(&cfg, &config_map::cred_proxy_config(p));
                let routes = loaded(
                    "cred-proxy",
                    cred_proxy::server::load(&pod.file(files::CRED_PROXY)),
                )?
                .value;
                for c in &p.cred_routes {
                    let (uri, _) = routes
                        .resolve(&format!("/{}/x", c.name), None)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let host = uri.host().unwrap_or_default();
                    let port = uri.port_u16().unwrap_or(443);
                    prop_assert_eq!(host, c.host.as_str(), "cred-proxy's upstream host");
                    prop_assert_eq!(port, c.port, "cred-proxy's upstream port");
                    prop_assert!(r.np_ports.contains(&port), "port {} not opened", port);
                    prop_assert!(
                        r.pipelock
                            .api_allowlist
                            .iter()
                            .any(|e| pipelock_allowlist_matches(host, e)),
                        "pipelock would refuse cred-proxy's {}",
                        host
                    );
                    prop_assert!(
                        r.pipelock
                            .tls_interception
                            .passthrough_domains
                            .iter()
                            .any(|e| pipelock_passthrough_matches(host, e)),
                        "pipelock would intercept (and header-scan) cred-proxy's {}",
                        host
                    );
                }
                cred.set(cred.get() + 1);
            }

            // git-gate: its loader; gitleaks' TOML reads back; SSH ports are open.
            if let Some(text) = r.files.get(files::GIT_GATE) {
                let cfg: GitGateConfig = serde_norway::from_str(text).unwrap();
                prop_assert_eq!(&cfg, &config_map::git_gate_config(p));
                let (gate, _) = loaded(
                    "git-gate",
                    git_gate::server::read_config(&pod.file(files::GIT_GATE)),
                )?;
                let toml_text = gate.scan_gitleaks_toml();
                let toml_back: GitleaksConfig = toml::from_str(&toml_text).unwrap();
                prop_assert_eq!(toml::to_string(&toml_back).unwrap(), toml_text);
                for remote in &gate.remotes {
                    let uri: http::Uri = remote.upstream.parse().unwrap();
                    let port = uri.port_u16().unwrap_or(22);
                    prop_assert!(r.np_ports.contains(&port), "SSH port {} not opened", port);
                }
                git.set(git.get() + 1);
            }
            prop_assert!(r.np_ports.contains(&443), "egress's port 443 not opened");
            all.set(all.get() + 1);
            Ok(())
        })
        .unwrap();
    let (cred, git, all) = (cred.get(), git.get(), all.get());
    println!("{all} generated bottles loaded ({cred} with cred-proxy, {git} with git-gate)");
    assert!(cred >= 50 && git >= 50, "both optional sidecars exercised");
}

// ---------------------------------------------------------------- hosts

/// Ways to spell (or misspell) a host in an authority, Host header or SNI.
fn mutate(h: &str, ops: &[u8]) -> String {
    let mut s = h.to_string();
    for op in ops {
        s = match op % 24 {
            0 => s.to_ascii_uppercase(),
            1 => s
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c
                    }
                })
                .collect(),
            2 => format!("{s}."),
            3 => format!("{s}.."),
            4 => format!(".{s}"),
            5 => s.replacen('.', "..", 1),
            6 => format!("x.{s}"),
            7 => format!("evil{s}"),
            8 => format!("{s}.evil.com"),
            9 => format!("[{s}]"),
            10 => format!("{s}:443"),
            11 => format!("{s}:8443"),
            12 => format!("{s}:"),
            13 => format!("{s}:99999"),
            // IDN: a Cyrillic look-alike, the real name's punycode, a fullwidth dot.
            14 => s.replacen('a', "\u{430}", 1),
            15 => format!("xn--bcher-kva.{s}"),
            16 => s.replacen('.', "\u{ff0e}", 1),
            17 => s.replacen('.', "%2e", 1),
            18 => format!("u@{s}"),
            19 => "[::1]".into(),
            20 => "[::ffff:127.0.0.1]:443".into(),
            21 => "127.0.0.1".into(),
            22 => format!("{}-", s.trim_end_matches('.')),
            _ => String::new(),
        };
    }
    s
}

/// An authority for CONNECT: a declared host (by index) mutated, or any string at all.
fn authority() -> impl Strategy<Value = (usize, Vec<u8>, String)> {
    (
        any::<usize>(),
        prop::collection::vec(any::<u8>(), 0..4),
        prop_oneof![3 => Just(String::new()), 1 => any::<String>()],
    )
}

#[test]
fn host_parsing_never_panics_and_egress_allows_only_what_pipelock_and_the_network_policy_do() {
    let mut runner = runner(256);
    let tally = Cell::new((0u32, 0u32));
    let strategy = (bottles::bottle(), prop::collection::vec(authority(), 1..16));
    runner
        .run(&strategy, |(spec, authorities)| {
            let r = render(&spec)?;
            let pod = Pod::new(&r);
            let eg = loaded(
                "egress",
                bottle_operator::pod::egress::server::load(&pod.file(files::EGRESS)),
            )?
            .value;
            let mut declared: Vec<String> = r.policy.allow.iter().flat_map(probes).collect();
            declared.push("example.com".into());
            for (i, ops, any) in authorities {
                let raw = if any.is_empty() {
                    let mut s = mutate(&declared[i % declared.len()], &ops);
                    if !s.contains(':') || s.ends_with(']') {
                        s.push_str(":443");
                    }
                    s
                } else {
                    any
                };
                // egress's CONNECT: hyper's authority, then its own host check.
                let _ = (Host::parse(&raw), HostPattern::parse(&raw));
                let _ = egress::normalize_host(&raw);
                let Ok(a) = http::uri::Authority::from_str(&raw) else {
                    continue;
                };
                let Some(port) = a.port_u16() else { continue };
                let asked = a.host();
                // Every IP literal, bracketed or not, is refused as one.
                let bare = asked
                    .strip_prefix('[')
                    .and_then(|a| a.strip_suffix(']'))
                    .unwrap_or(asked);
                if bare.parse::<std::net::IpAddr>().is_ok() {
                    let got = egress::normalize_host(asked);
                    prop_assert!(matches!(got, Err(egress::Deny::IpLiteral(_))), "{:?}", got);
                }
                let Ok(h) = egress::normalize_host(asked) else {
                    continue;
                };
                // One spelling, one host: pipelock reads the same name from what egress sends,
                // and from any spelling egress would have accepted.
                prop_assert_eq!(pipelock_canon(&h), h.clone());
                prop_assert_eq!(Host::parse(&h).map(|x| x.to_string()), Ok(h.clone()));
                if !asked.starts_with('[') {
                    prop_assert_eq!(pipelock_canon(asked), h.clone(), "{} read two ways", asked);
                }
                let Ok(action) = eg.host_action(&h, port) else {
                    tally.set((tally.get().0 + 1, tally.get().1));
                    continue;
                };
                tally.set((tally.get().0, tally.get().1 + 1));
                prop_assert!(
                    r.pipelock
                        .api_allowlist
                        .iter()
                        .any(|e| pipelock_allowlist_matches(&h, e)),
                    "egress lets {} through ({}), pipelock's allowlist {:?} refuses it",
                    h,
                    raw,
                    r.pipelock.api_allowlist
                );
                prop_assert!(r.np_ports.contains(&port), "port {} is closed", port);
                if action == HostAction::Passthrough {
                    prop_assert!(
                        r.pipelock
                            .tls_interception
                            .passthrough_domains
                            .iter()
                            .any(|e| pipelock_passthrough_matches(&h, e)),
                        "egress splices {}, pipelock intercepts it",
                        h
                    );
                }
            }
            Ok(())
        })
        .unwrap();
    let (refused, allowed) = tally.get();
    println!("hosts: {allowed} spellings allowed, {refused} valid names refused");
    assert!(allowed >= 100 && refused >= 100, "{allowed} / {refused}");
}

// ---------------------------------------------------------------- paths

/// Percent-decodes every `%XX` (either case of hex); other bytes as they are.
fn decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(Some(h)), Some(Some(l))) =
                (s.get(i + 1).map(|&b| hex(b)), s.get(i + 2).map(|&b| hex(b)))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// RFC 3986 `remove_dot_segments` over `/`-separated segments, keeping empty ones unless
/// `merge`; None where the path climbs above the root (an upstream answers 400).
fn resolve(segs: Vec<Vec<u8>>, merge: bool) -> Option<String> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let last = segs.len().saturating_sub(1);
    let mut dir = false;
    for (i, s) in segs.into_iter().enumerate() {
        dir = false;
        match s.as_slice() {
            b"." => dir = true,
            b".." => {
                out.pop()?;
                dir = true;
            }
            b"" if merge && i != last => {}
            b"" if merge => dir = true,
            _ => out.push(s),
        }
    }
    let mut p = b"/".to_vec();
    p.extend(out.join(&b'/'));
    if dir && p.len() > 1 {
        p.push(b'/');
    }
    Some(String::from_utf8_lossy(&p).into_owned())
}

fn split(p: &[u8]) -> Vec<Vec<u8>> {
    p.strip_prefix(b"/")
        .unwrap_or(p)
        .split(|&b| b == b'/')
        .map(<[u8]>::to_vec)
        .collect()
}

fn strip_params(segs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    segs.into_iter()
        .map(|s| match s.iter().position(|&b| b == b';') {
            Some(i) => s[..i].to_vec(),
            None => s,
        })
        .collect()
}

/// An upstream's reading of a path: which normaliser, as a name and a function.
type Upstream = (&'static str, fn(&str) -> Option<String>);

/// Upstreams that normalise otherwise than egress: each is a way a real server reads paths.
const UPSTREAMS: &[Upstream] = &[
    // Dot segments only, nothing decoded, `//` kept (RFC 3986 §5.2.4 as written).
    ("rfc3986", |p| resolve(split(p.as_bytes()), false)),
    // Decode once, merge slashes, then dot segments (nginx with merge_slashes).
    ("decode-merge", |p| {
        resolve(split(&decode(p.as_bytes())), true)
    }),
    // Decode once, `\` is `/` (IIS, Windows file servers, some Node routers).
    ("backslash", |p| {
        let d: Vec<u8> = decode(p.as_bytes())
            .into_iter()
            .map(|b| if b == b'\\' { b'/' } else { b })
            .collect();
        resolve(split(&d), true)
    }),
    // Decode twice (a proxy and then the application each decode).
    ("double-decode", |p| {
        let d = decode(&decode(p.as_bytes()));
        let d: Vec<u8> = d
            .into_iter()
            .map(|b| if b == b'\\' { b'/' } else { b })
            .collect();
        resolve(split(&d), true)
    }),
    // `;params` dropped from each raw segment, then decode, then dot segments (Tomcat, Jetty).
    ("path-params", |p| {
        let segs = strip_params(split(p.as_bytes()));
        resolve(segs.iter().map(|s| decode(s)).collect(), true)
    }),
    // Decode, then `;params` dropped (Spring's matrix variables, after decoding).
    ("decode-then-params", |p| {
        resolve(strip_params(split(&decode(p.as_bytes()))), true)
    }),
    // A front that resolves raw dot segments, and a back end that decodes and resolves again.
    ("two-stage", |p| {
        let front = resolve(split(p.as_bytes()), true)?;
        resolve(split(&decode(front.as_bytes())), true)
    }),
];

/// Inside `prefix` the way egress's routes mean it: `/a/` covers what starts with it, `/a`
/// covers `/a` and what is below `/a/`.
fn within(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        path.starts_with(prefix)
    } else {
        path == prefix || path.starts_with(&format!("{prefix}/"))
    }
}

/// One segment of a hostile path: the spellings upstreams read differently, or plain names.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "a",
        "b",
        "api",
        "v1",
        "x.y",
        ".",
        "..",
        "...",
        "%2e",
        "%2E",
        ".%2e",
        "%2e%2E",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "\\",
        "",
        ";",
        ";x",
        "..;",
        ".;",
        "..;x=1",
        "%2e%2e;",
        "%3b",
        "%3B",
        "..%3b",
        "%252e",
        "%252E%252e",
        "%252f",
        "%25",
        "%00",
        "%20",
        "~",
        "%7e",
        "%7E",
        "%C3%A9",
        "\u{e9}",
        "%ff",
        "%u002e",
        "%",
        "%2",
        "?",
        "#",
        "%3F",
    ])
}

fn raw_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::collection::vec(piece(), 1..3), 0..8).prop_map(|segs| {
        let segs: Vec<String> = segs.into_iter().map(|s| s.concat()).collect();
        format!("/{}", segs.join("/"))
    })
}

/// A declared prefix and a request path: often the prefix with a hostile tail.
fn prefix_and_path() -> impl Strategy<Value = (String, String)> {
    (bottles::route_prefix(), raw_path(), any::<bool>()).prop_map(|(prefix, tail, under)| {
        let path = if under {
            format!("{}{}", prefix.trim_end_matches('/'), tail)
        } else {
            tail
        };
        (prefix, path)
    })
}

#[test]
fn path_normalisation_is_idempotent_and_its_results_are_prefixes_the_model_accepts() {
    let mut runner = runner(2000);
    let ok = Cell::new(0u32);
    runner
        .run(&raw_path(), |raw| {
            let Ok(n) = path::normalize(&raw) else {
                return Ok(());
            };
            ok.set(ok.get() + 1);
            prop_assert_eq!(path::normalize(&n), Ok(n.clone()), "from {:?}", raw);
            // The normal form: no empty segment but a trailing slash, no dot segment.
            let segs: Vec<&str> = n[1..].split('/').collect();
            let inner = &segs[..segs.len() - 1];
            prop_assert!(
                n.starts_with('/')
                    && !inner.iter().any(|s| matches!(*s, "" | "." | ".."))
                    && !matches!(segs[segs.len() - 1], "." | ".."),
                "{:?} (from {:?}) is not in normal form",
                n,
                raw
            );
            // A result is always a prefix a Bottle may declare, and matches itself.
            let mut spec = BottleSpec::default();
            spec.egress.routes = vec![EgressRoute {
                host: "api.example.com".into(),
                paths: vec![n.clone()],
                auth: None,
            }];
            let p = Policy::from_spec(&spec)
                .map_err(|e| TestCaseError::fail(format!("{n:?} (from {raw:?}): {e}")))?;
            let eg = egress::Policy::compile(&config_map::egress_config(&p)).unwrap();
            prop_assert_eq!(
                eg.request("api.example.com", &n).map(|x| x.0),
                Ok(n.clone())
            );
            Ok(())
        })
        .unwrap();
    println!("normalisation: {} hostile paths normalised", ok.get());
    assert!(ok.get() >= 200, "{}", ok.get());
}

/// cred-proxy with one route `gh` to `base`, reading a token from a temp file.
fn cred_routes(base: &str) -> Routes {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("t"), "k").unwrap();
        d
    });
    Routes::compile(&CredProxyConfig {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        upstream_proxy: None,
        ca_cert: String::new(),
        routes: vec![CredRoute {
            name: "gh".into(),
            upstream: HttpsBase::try_from(base.to_string()).unwrap(),
            auth: HeaderInjection {
                header: "authorization".into(),
                scheme: None,
                token_file: dir.path().join("t").display().to_string(),
            },
        }],
    })
    .unwrap()
}

fn egress_with_prefix(prefix: &str) -> egress::Policy {
    egress::Policy::compile(&EgressConfig {
        listen: "127.0.0.1:0".into(),
        admin_listen: "127.0.0.1:0".into(),
        upstream_proxy: None,
        ca_cert: String::new(),
        ca_key: String::new(),
        ports: vec![443],
        allow: vec![],
        passthrough: vec![],
        routes: vec![egress_cfg::EgressRoute {
            host: "api.example.com".parse().unwrap(),
            paths: vec![prefix.to_string()],
            auth: None,
        }],
    })
    .unwrap()
}

#[test]
fn no_upstream_reads_an_admitted_path_outside_its_prefix() {
    let mut runner = runner(3000);
    let admitted = Cell::new((0u32, 0u32));
    let bases = [
        "https://api.example.com/v3/",
        "https://api.example.com/a;b/c",
    ];
    runner
        .run(
            &(prefix_and_path(), prop::sample::select(bases.to_vec())),
            |((prefix, raw), base)| {
                // egress: the path it forwards, against the declared prefix.
                if let Ok((sent, _)) = egress_with_prefix(&prefix).request("api.example.com", &raw)
                {
                    admitted.set((admitted.get().0 + 1, admitted.get().1));
                    for (name, upstream) in UPSTREAMS {
                        if let (Some(p), Some(at)) = (upstream(&prefix), upstream(&sent)) {
                            prop_assert!(
                                within(&at, &p),
                                "{} reads {:?} (egress sent {:?} for {:?}) outside {:?}",
                                name,
                                at,
                                sent,
                                raw,
                                p
                            );
                        }
                    }
                }
                // cred-proxy: the upstream path, against the route's base.
                if let Ok((uri, _)) = cred_routes(base).resolve(&format!("/gh{raw}"), None) {
                    admitted.set((admitted.get().0, admitted.get().1 + 1));
                    let base_dir = format!(
                        "{}/",
                        http::Uri::from_str(base)
                            .unwrap()
                            .path()
                            .trim_end_matches('/')
                    );
                    for (name, upstream) in UPSTREAMS {
                        if let (Some(p), Some(at)) = (upstream(&base_dir), upstream(uri.path())) {
                            prop_assert!(
                                within(&at, &p),
                                "{} reads {:?} (cred-proxy sent {} for {:?}) outside {:?}",
                                name,
                                at,
                                uri,
                                raw,
                                p
                            );
                        }
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    let (eg, cp) = admitted.get();
    println!("paths: egress admitted {eg} hostile paths, cred-proxy {cp}");
    assert!(eg >= 300 && cp >= 300, "{eg} / {cp}");
}

/// Does an upstream that read the path as `path` (and the query as `query`) run a push? Its
/// router may ignore a trailing slash and compare without case (IIS-hosted servers), and
/// decodes the query.
fn upstream_runs_a_push(path: &str, query: Option<&str>) -> bool {
    let segs: Vec<&str> = path.trim_end_matches('/').rsplit('/').collect();
    let is = |i: usize, name: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(name));
    let wants_push = query.is_some_and(|q| {
        q.split('&').any(|kv| {
            String::from_utf8_lossy(&decode(kv.as_bytes()))
                .eq_ignore_ascii_case("service=git-receive-pack")
        })
    });
    is(0, "git-receive-pack") || (is(0, "refs") && is(1, "info") && wants_push)
}

/// A path under a repository that may name the push service, spelt as upstreams read it.
fn push_path() -> impl Strategy<Value = String> {
    let last = prop::sample::select(vec![
        "git-receive-pack",
        "git-receive-pack;x",
        "git-receive-pack/",
        "git-receive-pack//",
        "GIT-Receive-Pack",
        "git-receive-pac%6b",
        "git-receive-pack%3bx",
        "git-receive-pack%2f",
        "info/refs",
        "info/refs;x",
        "info/refs/",
        "INFO/REFS",
        "info%2frefs",
        "git-upload-pack",
        "info/refs;/..;/git-receive-pack",
    ]);
    let dir = prop_oneof![
        2 => "/[a-z]{1,3}/[a-z]{1,3}(\\.git)?".boxed(),
        1 => raw_path().boxed(),
    ];
    (dir, last).prop_map(|(dir, last)| format!("{}/{last}", dir.trim_end_matches('/')))
}

#[test]
fn cred_proxy_refuses_every_spelling_of_a_push_an_upstream_would_run() {
    let mut runner = runner(2000);
    let (refused, passed) = (Cell::new(0u32), Cell::new(0u32));
    let queries = vec![
        None,
        Some("service=git-receive-pack"),
        Some("service=git%2Dreceive-pack"),
        Some("service=GIT-RECEIVE-PACK"),
        Some("x=1&service=git-receive-pac%6B"),
        Some("service=git-upload-pack"),
    ];
    let routes = cred_routes("https://git.example.com/");
    runner
        .run(
            &(push_path(), prop::sample::select(queries)),
            |(raw, query)| {
                let Ok((uri, _)) = routes.resolve(&format!("/gh{raw}"), query) else {
                    refused.set(refused.get() + 1);
                    return Ok(());
                };
                passed.set(passed.get() + 1);
                for (name, upstream) in UPSTREAMS {
                    if let Some(at) = upstream(uri.path()) {
                        prop_assert!(
                            !upstream_runs_a_push(&at, uri.query()),
                            "{} reads {} (from {:?}) as a push",
                            name,
                            uri,
                            raw
                        );
                    }
                }
                Ok(())
            },
        )
        .unwrap();
    println!(
        "pushes: cred-proxy refused {} spellings, passed {}",
        refused.get(),
        passed.get()
    );
    assert!(
        refused.get() >= 200 && passed.get() >= 100,
        "both sides exercised"
    );
}

#[test]
fn the_oracles_see_the_differences_they_stand_for() {
    // Each upstream model differs from plain RFC 3986 where it says it does, so a pass above
    // is not a pass by an oracle that reads everything alike.
    let read = |name: &str, p: &str| UPSTREAMS.iter().find(|u| u.0 == name).unwrap().1(p);
    assert_eq!(
        read("rfc3986", "/a/%2e%2e/b").as_deref(),
        Some("/a/%2e%2e/b")
    );
    assert_eq!(read("decode-merge", "/a/%2E%2e//b").as_deref(), Some("/b"));
    assert_eq!(read("backslash", "/a/..%5cb").as_deref(), Some("/b"));
    assert_eq!(
        read("double-decode", "/a/%252e%252e/b").as_deref(),
        Some("/b")
    );
    assert_eq!(read("path-params", "/a/..;/b").as_deref(), Some("/b"));
    assert_eq!(
        read("decode-then-params", "/a/..%3b/b").as_deref(),
        Some("/b")
    );
    assert_eq!(
        read("two-stage", "/a/b/%2e%2e/%2e%2e/c").as_deref(),
        Some("/c")
    );
    assert_eq!(read("rfc3986", "/../x"), None);
    assert!(within("/a/b", "/a") && !within("/ab", "/a") && within("/a/", "/a/"));
}
