//! The bottle ConfigMap: every sidecar's config file, rendered from the policy.

use k8s_openapi::api::core::v1::ConfigMap;

use super::{Settings, StringMap, meta, supervise};
use crate::contract::api::Bottle;
use crate::contract::config::layout::{self, files};
use crate::contract::config::{HeaderInjection, cred_proxy, egress, git_gate, pipelock};
use crate::contract::model::{Credential, Policy, Remote, SecretKey};

/// Path of a projected Secret key inside the sidecar that uses it.
pub fn secret_path(key: &SecretKey) -> String {
    format!("{}/{}", layout::SECRETS_DIR, key.file_name())
}

fn injection(c: &Credential) -> HeaderInjection {
    HeaderInjection {
        header: c.header.clone(),
        scheme: c.scheme.clone(),
        token_file: secret_path(&c.secret),
    }
}

fn loopback(port: u16) -> String {
    format!("{}:{port}", layout::LOOPBACK)
}

fn pipelock_url() -> String {
    format!("http://{}", loopback(layout::PIPELOCK_PORT))
}

/// The egress sidecar's config.
pub fn egress_config(p: &Policy) -> egress::EgressConfig {
    egress::EgressConfig {
        listen: loopback(layout::EGRESS_PORT),
        admin_listen: loopback(layout::EGRESS_ADMIN_PORT),
        upstream_proxy: Some(pipelock_url()),
        ca_cert: format!("{}/{}", layout::CA_DIR, layout::CA_CERT_FILE),
        ca_key: format!("{}/{}", layout::CA_DIR, layout::CA_KEY_FILE),
        // Routes name hosts only, and HTTPS is the one port the egress policy opens for them.
        ports: vec![443],
        allow: p
            .allow
            .iter()
            .filter(|h| !p.passthrough.contains(h))
            .cloned()
            .collect(),
        passthrough: p.passthrough.iter().cloned().collect(),
        routes: p
            .egress_routes
            .iter()
            .map(|r| egress::EgressRoute {
                host: r.host.clone(),
                paths: r.paths.clone(),
                auth: r.auth.as_ref().map(injection),
            })
            .collect(),
    }
}

/// cred-proxy's config.
pub fn cred_proxy_config(p: &Policy) -> cred_proxy::CredProxyConfig {
    cred_proxy::CredProxyConfig {
        listen: loopback(layout::CRED_PROXY_PORT),
        admin_listen: loopback(layout::CRED_PROXY_ADMIN_PORT),
        upstream_proxy: Some(pipelock_url()),
        ca_cert: format!("{}/{}", layout::CA_DIR, layout::CA_CERT_FILE),
        routes: p
            .cred_routes
            .iter()
            .map(|r| cred_proxy::CredRoute {
                name: r.name.clone(),
                upstream: r.upstream.clone(),
                auth: injection(&r.auth),
            })
            .collect(),
    }
}

/// git-gate's config.
pub fn git_gate_config(p: &Policy) -> git_gate::GitGateConfig {
    git_gate::GitGateConfig {
        listen: loopback(layout::GIT_GATE_PORT),
        admin_listen: loopback(layout::GIT_GATE_ADMIN_PORT),
        state_dir: layout::GIT_GATE_STATE_DIR.into(),
        remotes: p
            .remotes
            .iter()
            .map(|r| git_gate::GitRemote {
                name: r.name.clone(),
                upstream: format!(
                    "ssh://{}@{}:{}/{}",
                    r.url.user, r.url.host, r.url.port, r.url.path
                ),
                ssh_key_file: secret_path(&r.ssh_key),
                known_hosts: r.known_hosts.clone(),
                allow_force_push: r.allow_force_push,
                allow_delete_default_branch: r.allow_delete_default_branch,
                allowed_refs: r.allowed_refs.clone(),
                forbidden_paths: r.forbidden_paths.clone(),
                max_push_bytes: r.max_push_bytes,
            })
            .collect(),
        allowlist: p.scan_allowlist.clone(),
        allow_paths: p.scan_allow_paths.clone(),
        rules: p
            .dlp_patterns
            .iter()
            .map(|d| git_gate::ScanRule {
                id: d.rule_id(),
                regex: d.regex.clone(),
            })
            .collect(),
    }
}

/// URL checks per minute per base domain. pipelock's default (60, and a CONNECT plus each
/// intercepted request both count) answers 429 to one `npm install`; 3000 (50 a second for a
/// minute) carries a cold install of a large lockfile or a burst of API calls, and still
/// brakes a runaway loop. It cannot be turned off (0 means the default).
pub const PIPELOCK_REQUESTS_PER_MINUTE: u32 = 3000;

/// pipelock's config: strict allowlist, interception with the bottle CA, body and header DLP,
/// responses scanned for prompt injection. Each setting is chosen on purpose; pipelock's
/// defaults where it is not written (`docs/configuration.md` of 2.3.0).
pub fn pipelock_config(p: &Policy) -> pipelock::PipelockConfig {
    let block = |on: bool| if on { "block" } else { "warn" }.to_string();
    let injection = block(p.block_response_injection);
    pipelock::PipelockConfig {
        version: 1,
        // The allowlist is enforced only in strict mode.
        mode: "strict".into(),
        enforce: true,
        // Strict mode refuses to start with an empty allowlist (pipelock check: "strict mode
        // requires at least one domain"); a name that never resolves (RFC 6761) keeps a bottle
        // with no hosts at "nothing is reachable".
        api_allowlist: if p.allow.is_empty() {
            vec!["nothing.invalid".into()]
        } else {
            p.allow.iter().map(ToString::to_string).collect()
        },
        fetch_proxy: pipelock::FetchProxy {
            listen: loopback(layout::PIPELOCK_PORT),
            monitoring: pipelock::Monitoring {
                max_requests_per_minute: PIPELOCK_REQUESTS_PER_MINUTE,
            },
        },
        forward_proxy: pipelock::ForwardProxy {
            enabled: true,
            max_tunnel_seconds: 3600,
            idle_timeout_seconds: 300,
            // Written although it is the default: a tunnel whose TLS names another host
            // (domain fronting) is refused.
            sni_verification: true,
        },
        tls_interception: pipelock::TlsInterception {
            enabled: true,
            ca_cert: format!("{}/{}", layout::CA_DIR, layout::CA_CERT_FILE),
            ca_key: format!("{}/{}", layout::CA_DIR, layout::CA_KEY_FILE),
            passthrough_domains: p
                .pipelock_passthrough()
                .iter()
                .map(ToString::to_string)
                .collect(),
        },
        request_body_scanning: pipelock::RequestBodyScanning {
            enabled: true,
            action: block(p.dlp_block),
            scan_headers: true,
            // Every header, not only the six auth headers pipelock lists by default: the
            // agent chooses its header names, so `X-Anything: <secret>` is a channel too.
            header_mode: "all".into(),
            // pipelock's default list also skips User-Agent, Accept and Content-Type, which
            // the agent writes as freely as any other header (a key in User-Agent reached
            // the origin); only framing headers, which the proxies themselves set, are left.
            ignore_headers: [
                "Connection",
                "Keep-Alive",
                "Proxy-Authenticate",
                "Te",
                "Trailer",
                "Transfer-Encoding",
                "Upgrade",
                "Host",
                "Content-Length",
            ]
            .map(String::from)
            .to_vec(),
        },
        // pipelock's default only warns: the agent would read injected instructions. Blocked
        // unless the Bottle chooses `warn`; SSE streams are scanned per event alike.
        response_scanning: pipelock::ResponseScanning {
            enabled: true,
            action: injection.clone(),
            sse_streaming: pipelock::SseStreaming {
                enabled: true,
                action: injection,
            },
        },
        // Off by default in pipelock; it inspects only A2A-shaped traffic (JSON-RPC methods
        // and Agent Cards), so ordinary requests pay nothing.
        a2a_scanning: pipelock::A2aScanning {
            enabled: true,
            action: "block".into(),
        },
        dlp: pipelock::Dlp {
            include_defaults: true,
            patterns: p
                .dlp_patterns
                .iter()
                .map(|d| pipelock::DlpPattern {
                    name: d.name.clone(),
                    regex: d.regex.clone(),
                    severity: "critical".into(),
                })
                .collect(),
        },
        logging: pipelock::Logging {
            format: "json".into(),
            output: "stdout".into(),
            include_allowed: true,
            include_blocked: true,
        },
    }
}

/// The URL the agent uses for a remote: git-gate on loopback.
pub fn gate_url(r: &Remote) -> String {
    format!("http://{}/{}.git", loopback(layout::GIT_GATE_PORT), r.name)
}

/// The agent's system gitconfig: every spelling of a declared remote goes to git-gate, for
/// fetch (`insteadOf`) and push (`pushInsteadOf`).
pub fn agent_gitconfig(p: &Policy) -> String {
    let mut out =
        String::from("# Rendered by bottle-operator: declared remotes go through git-gate.\n");
    for r in &p.remotes {
        let u = &r.url;
        let mut spellings = vec![
            r.url_as_written.clone(),
            format!("ssh://{}@{}/{}", u.user, u.host, u.path),
            format!("ssh://{}@{}:{}/{}", u.user, u.host, u.port, u.path),
            format!("https://{}/{}", u.host, u.path),
        ];
        if u.port == 22 {
            spellings.push(format!("{}@{}:{}", u.user, u.host, u.path));
        }
        // With and without `.git`, the way hosting sites hand out URLs.
        for s in spellings.clone() {
            match s.strip_suffix(".git") {
                Some(bare) => spellings.push(bare.to_string()),
                None => spellings.push(format!("{s}.git")),
            }
        }
        spellings.sort();
        spellings.dedup();
        out.push_str(&format!("[url \"{}\"]\n", gate_url(r)));
        for s in &spellings {
            out.push_str(&format!("\tinsteadOf = {s}\n"));
        }
        for s in &spellings {
            out.push_str(&format!("\tpushInsteadOf = {s}\n"));
        }
    }
    out
}

fn yaml<T: serde::Serialize>(v: &T) -> String {
    serde_norway::to_string(v).expect("sidecar configs always serialise")
}

/// The ConfigMap's files. cred-proxy, git-gate and supervise files exist only when those
/// sidecars do.
pub fn files(b: &Bottle, p: &Policy, s: &Settings) -> StringMap {
    let mut data = StringMap::new();
    data.insert(files::EGRESS.into(), yaml(&egress_config(p)));
    data.insert(files::PIPELOCK.into(), yaml(&pipelock_config(p)));
    if !p.cred_routes.is_empty() {
        data.insert(files::CRED_PROXY.into(), yaml(&cred_proxy_config(p)));
    }
    if !p.remotes.is_empty() {
        data.insert(files::GIT_GATE.into(), yaml(&git_gate_config(p)));
        data.insert(files::AGENT_GITCONFIG.into(), agent_gitconfig(p));
    }
    if let Some(cfg) = supervise::config(b, s) {
        data.insert(files::SUPERVISE.into(), yaml(&cfg));
        data.insert(files::AGENT_MCP.into(), supervise::agent_mcp_config());
    }
    data
}

/// The ConfigMap object.
pub fn object(b: &Bottle, data: StringMap, config_hash: &str) -> ConfigMap {
    let mut m = meta::owned(b, meta::config_map_name(b));
    m.annotations = Some(StringMap::from([(
        meta::CONFIG_HASH_ANNOTATION.into(),
        config_hash.into(),
    )]));
    ConfigMap {
        metadata: m,
        data: Some(data),
        ..Default::default()
    }
}
