//! The bottle Pod: the agent plus its sidecars, each under its own UID.
//!
//! Sidecars are native sidecars (init containers with `restartPolicy: Always`) in the order
//! the reference system starts them: pipelock first, then git-gate and cred-proxy, which
//! send traffic through it, then egress; the agent starts last, once its doors are open.

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, ConfigMapVolumeSource, Container, EmptyDirVolumeSource,
    EnvVar, ExecAction, KeyToPath, LocalObjectReference, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    Probe, ProjectedVolumeSource, SeccompProfile, SecretProjection, SecretVolumeSource,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Settings, StringMap, config_map, hash_of, meta, supervise};
use crate::contract::api::{AgentSpec, Bottle};
use crate::contract::config::layout::{self, Sidecar, files};
use crate::contract::config::pipelock::PipelockConfig;
use crate::contract::model::{InvalidSpec, Policy, Reason, SecretKey};

/// Environment variables the operator sets on the agent; a Bottle may not override them.
pub const RESERVED_AGENT_ENV: &[&str] = &[
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "https_proxy",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "GIT_CONFIG_SYSTEM",
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_AUTH_TOKEN",
    "BOTTLE_SUPERVISE_URL",
];

/// What the agent's `ANTHROPIC_AUTH_TOKEN` holds when cred-proxy carries the real key: any
/// token makes Claude Code skip its login, and cred-proxy drops it for the route's credential.
pub const AGENT_TOKEN_PLACEHOLDER: &str = "injected-by-cred-proxy";

/// Refuses agent env that would unwire the agent from its sidecars.
pub fn check_agent_env(agent: &AgentSpec) -> Result<(), InvalidSpec> {
    match agent
        .env
        .iter()
        .find(|e| RESERVED_AGENT_ENV.contains(&e.name.as_str()))
    {
        Some(e) => Err(InvalidSpec {
            reason: Reason::ReservedEnv,
            message: format!(
                "agent.env {} is set by the operator to wire the agent to its sidecars; remove it",
                e.name
            ),
        }),
        None => Ok(()),
    }
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

fn rw_mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn security(uid: i64, read_only_root: bool) -> SecurityContext {
    SecurityContext {
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn sidecar(name: &str, image: &str, args: &[&str], uid: i64) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        args: Some(args.iter().map(|s| s.to_string()).collect()),
        // A native sidecar: starts before the agent, restarts on its own, stops after it.
        restart_policy: Some("Always".into()),
        security_context: Some(security(uid, true)),
        ..Default::default()
    }
}

/// A volume of the bottle ConfigMap holding only the listed files. The whole volume is
/// mounted (never `subPath`), so the kubelet updates the files when the ConfigMap changes.
fn config_volume(b: &Bottle, name: &str, keys: &[&str]) -> Volume {
    Volume {
        name: name.into(),
        config_map: Some(ConfigMapVolumeSource {
            name: meta::config_map_name(b),
            items: Some(
                keys.iter()
                    .map(|k| KeyToPath {
                        key: k.to_string(),
                        path: k.to_string(),
                        mode: None,
                    })
                    .collect(),
            ),
            default_mode: Some(0o444),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// The CA Secret, optionally with its key. 0440 is what pipelock accepts for a key file.
fn ca_volume(b: &Bottle, name: &str, with_key: bool) -> Volume {
    let mut items = vec![KeyToPath {
        key: layout::CA_CERT_FILE.into(),
        path: layout::CA_CERT_FILE.into(),
        mode: Some(0o444),
    }];
    if with_key {
        items.push(KeyToPath {
            key: layout::CA_KEY_FILE.into(),
            path: layout::CA_KEY_FILE.into(),
            mode: Some(0o440),
        });
    }
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(meta::ca_secret_name(b)),
            items: Some(items),
            default_mode: Some(0o440),
            optional: Some(false),
        }),
        ..Default::default()
    }
}

/// The Secret keys one sidecar uses, projected into one volume only it mounts.
fn secrets_volume<'a>(name: &str, keys: impl IntoIterator<Item = &'a SecretKey>) -> Option<Volume> {
    let mut keys: Vec<&SecretKey> = keys.into_iter().collect();
    keys.sort();
    keys.dedup();
    if keys.is_empty() {
        return None;
    }
    let sources = keys
        .iter()
        .map(|k| VolumeProjection {
            secret: Some(SecretProjection {
                name: k.secret.clone(),
                items: Some(vec![KeyToPath {
                    key: k.key.clone(),
                    path: k.file_name(),
                    mode: Some(0o440),
                }]),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    Some(Volume {
        name: name.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            default_mode: Some(0o440),
        }),
        ..Default::default()
    })
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn config_arg(file: &str) -> String {
    format!("{}/{file}", layout::CONFIG_DIR)
}

/// The cred-proxy route the agent's `ANTHROPIC_BASE_URL` should use, if any.
fn anthropic_route(p: &Policy) -> Option<&str> {
    p.cred_routes
        .iter()
        .find(|r| r.host.as_str() == "api.anthropic.com")
        .or_else(|| p.cred_routes.iter().find(|r| r.name == "anthropic"))
        .map(|r| r.name.as_str())
}

fn agent_container(b: &Bottle, p: &Policy, s: &Settings) -> Container {
    let a = &b.spec.agent;
    let proxy = format!("http://{}:{}", layout::LOOPBACK, layout::EGRESS_PORT);
    let trust = |f: &str| format!("{}/{f}", layout::TRUST_DIR);
    let mut envs: Vec<EnvVar> = a
        .env
        .iter()
        .map(|e| env(&e.name, e.value.clone()))
        .collect();
    for name in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
        envs.push(env(name, proxy.clone()));
    }
    for name in ["NO_PROXY", "no_proxy"] {
        envs.push(env(name, "localhost,127.0.0.1,::1"));
    }
    envs.push(env("NODE_EXTRA_CA_CERTS", trust(layout::TRUST_CA_FILE)));
    envs.push(env("SSL_CERT_FILE", trust(layout::TRUST_BUNDLE_FILE)));
    envs.push(env("REQUESTS_CA_BUNDLE", trust(layout::TRUST_BUNDLE_FILE)));
    if let Some(route) = anthropic_route(p) {
        envs.push(env(
            "ANTHROPIC_BASE_URL",
            format!(
                "http://{}:{}/{route}",
                layout::LOOPBACK,
                layout::CRED_PROXY_PORT
            ),
        ));
        envs.push(env("ANTHROPIC_AUTH_TOKEN", AGENT_TOKEN_PLACEHOLDER));
    }
    let mut mounts = vec![
        mount("trust", layout::TRUST_DIR),
        rw_mount("workspace", layout::WORKSPACE_DIR),
    ];
    if !p.remotes.is_empty() {
        envs.push(env("GIT_CONFIG_SYSTEM", config_arg(files::AGENT_GITCONFIG)));
        mounts.push(mount("config-agent", layout::CONFIG_DIR));
    }
    if b.spec.supervised() {
        envs.push(env(
            "BOTTLE_SUPERVISE_URL",
            format!("http://{}:{}", layout::LOOPBACK, layout::SUPERVISE_PORT),
        ));
        mounts.push(mount("config-agent-mcp", layout::AGENT_MCP_DIR));
    }
    let (command, args) = if a.command.is_empty() && a.args.is_empty() {
        // People work in the agent with `kubectl exec`; it idles until they do.
        (vec!["sleep".to_string()], vec!["infinity".to_string()])
    } else {
        (a.command.clone(), a.args.clone())
    };
    Container {
        name: "agent".into(),
        image: Some(a.image.clone().unwrap_or_else(|| s.agent_image.clone())),
        command: (!command.is_empty()).then_some(command),
        args: (!args.is_empty()).then_some(args),
        env: Some(envs),
        resources: a.resources.clone(),
        working_dir: Some(layout::WORKSPACE_DIR.into()),
        volume_mounts: Some(mounts),
        // Agents install tools as they work; the root filesystem stays writable for them.
        security_context: Some(security(layout::AGENT_UID, false)),
        stdin: Some(true),
        tty: Some(true),
        ..Default::default()
    }
}

/// The init container that installs the in-Pod traffic lock ([`crate::pod::netinit`]). It is the
/// only container with a capability (NET_ADMIN) and the only one running as root; it exits
/// before any sidecar or the agent starts.
fn netinit_container(b: &Bottle, p: &Policy, s: &Settings) -> Container {
    let mut sidecar_uids = vec![layout::EGRESS_UID, layout::PIPELOCK_UID];
    let mut agent_ports = vec![layout::EGRESS_PORT];
    if !p.cred_routes.is_empty() {
        sidecar_uids.push(layout::CRED_PROXY_UID);
        agent_ports.push(layout::CRED_PROXY_PORT);
    }
    if !p.remotes.is_empty() {
        sidecar_uids.push(layout::GIT_GATE_UID);
        agent_ports.push(layout::GIT_GATE_PORT);
    }
    if b.spec.supervised() {
        sidecar_uids.push(layout::SUPERVISE_UID);
        agent_ports.push(layout::SUPERVISE_PORT);
    }
    let mut args = vec![
        "netinit".to_string(),
        "--agent-uid".into(),
        layout::AGENT_UID.to_string(),
    ];
    for uid in sidecar_uids {
        args.extend(["--sidecar-uid".into(), uid.to_string()]);
    }
    for port in agent_ports {
        args.extend(["--agent-port".into(), port.to_string()]);
    }
    if let Some(api) = s.api_server.filter(|_| b.spec.supervised()) {
        args.extend([
            "--api-server".into(),
            api.to_string(),
            "--api-uid".into(),
            layout::SUPERVISE_UID.to_string(),
        ]);
    }
    let mut sc = security(0, true);
    sc.run_as_non_root = Some(false);
    sc.capabilities = Some(Capabilities {
        add: Some(vec!["NET_ADMIN".into()]),
        drop: Some(vec!["ALL".into()]),
    });
    Container {
        name: "netinit".into(),
        image: Some(s.sidecar_image.clone()),
        command: Some(vec!["bottle-sidecar".into()]),
        args: Some(args),
        // iptables takes its lock under /run; the root filesystem stays read-only.
        volume_mounts: Some(vec![rw_mount("netinit-run", "/run")]),
        security_context: Some(sc),
        ..Default::default()
    }
}

/// Fields of pipelock's config that its strict-mode hot reload applies, whatever the change
/// (observed with pipelock 2.3.0 in tests/pipelock_facts.rs): allowlist entries added or
/// removed, `request_body_scanning.action` and `response_scanning.action`. Any other change may
/// be refused, and a refused reload leaves pipelock on its old config for good
/// (internal/cli/runtime/server.go `Reload`: in strict mode any `ValidateReload` warning rejects
/// it, and any DLP pattern change warns).
const PIPELOCK_LIVE_FIELDS: &[&[&str]] = &[
    &["api_allowlist"],
    &["request_body_scanning", "action"],
    &["response_scanning", "action"],
];

/// A hash of everything in pipelock's config a live reload might refuse: when it changes the
/// Pod is rolled. Fields added to the config later are covered unless listed as live.
pub fn pipelock_restart_key(cfg: &PipelockConfig) -> String {
    let mut v = serde_json::to_value(cfg).expect("pipelock config serialises");
    for path in PIPELOCK_LIVE_FIELDS {
        let (last, parents) = path.split_last().expect("non-empty path");
        let parent = parents.iter().try_fold(&mut v, |v, k| v.get_mut(*k));
        if let Some(serde_json::Value::Object(m)) = parent {
            m.remove(*last);
        }
    }
    hash_of(&v)
}

/// An exec probe: the kubelet runs `command` in the container.
fn exec_probe(command: Vec<String>, period: i32, failures: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(5),
        ..Default::default()
    }
}

/// Startup and readiness probes running `command`. The kubelet starts the next container of
/// the Pod only once a native sidecar's startup probe passes, so this is what orders the
/// sidecars (and keeps the agent from starting before its doors are open); readiness then
/// keeps the Pod (and so the Bottle) not Ready while a sidecar cannot serve.
fn with_probes(c: &mut Container, command: Vec<String>) {
    c.startup_probe = Some(exec_probe(command.clone(), 1, 120));
    c.readiness_probe = Some(exec_probe(command, 10, 3));
}

/// `bottle-sidecar probe`: the sidecar's admin port on loopback says ready, and the loopback
/// ports it forwards to accept connections.
fn sidecar_probe(admin_port: u16, forwards_to: &[u16]) -> Vec<String> {
    let mut cmd = vec![
        layout::SIDECAR_BIN.to_string(),
        "probe".into(),
        "--ready".into(),
        format!("127.0.0.1:{admin_port}"),
    ];
    for port in forwards_to {
        cmd.extend(["--listening".into(), format!("127.0.0.1:{port}")]);
    }
    cmd
}

/// One sidecar as rendered: its container and the volumes only it brings.
struct Part {
    container: Container,
    volumes: Vec<Volume>,
}

/// A container running `bottle-sidecar <args>` from the sidecar image.
fn sidecar_program(name: &str, s: &Settings, args: &[&str], uid: i64) -> Container {
    let mut c = sidecar(name, &s.sidecar_image, args, uid);
    c.command = Some(vec![layout::SIDECAR_BIN.into()]);
    c
}

/// Volumes every bottle Pod has.
fn shared_volumes(b: &Bottle) -> Vec<Volume> {
    vec![
        empty_dir("trust"),
        ca_volume(b, "ca-cert", false),
        ca_volume(b, "ca-intercept", true),
        config_volume(b, "config-egress", &[files::EGRESS]),
        config_volume(b, "config-pipelock", &[files::PIPELOCK]),
        empty_dir("pipelock-home"),
        empty_dir("pipelock-config"),
        match &b.spec.agent.workspace {
            Some(_) => Volume {
                name: "workspace".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: meta::workspace_name(b),
                    read_only: Some(false),
                }),
                ..Default::default()
            },
            None => empty_dir("workspace"),
        },
        empty_dir("netinit-run"),
    ]
}

/// Writes the system roots plus the bottle CA where the agent's TLS stacks look.
fn ca_bundle_container(s: &Settings) -> Container {
    let ca = format!("{}/{}", layout::CA_DIR, layout::CA_CERT_FILE);
    let mut c = sidecar_program(
        "ca-bundle",
        s,
        &["ca-bundle", "--ca", &ca, "--out-dir", layout::TRUST_DIR],
        layout::CA_BUNDLE_UID,
    );
    // An init container that runs to completion, not a native sidecar.
    c.restart_policy = None;
    c.volume_mounts = Some(vec![
        mount("ca-cert", layout::CA_DIR),
        rw_mount("trust", layout::TRUST_DIR),
    ]);
    c
}

/// The file config-sync delivers and pipelock reads.
fn pipelock_file() -> String {
    format!("{}/{}", layout::PIPELOCK_CONFIG_DIR, files::PIPELOCK)
}

/// config-sync: pipelock only reloads on events named after its file, which a ConfigMap swap
/// never produces, so each valid version is renamed into an emptyDir pipelock reads.
fn pipelock_config_sync_container(s: &Settings) -> Container {
    let (from, to) = (config_arg(files::PIPELOCK), pipelock_file());
    let mut c = sidecar_program(
        Sidecar::Pipelock.container(),
        s,
        &["config-sync", "--from", &from, "--to", &to],
        layout::PIPELOCK_UID,
    );
    c.env = Some(vec![
        env(layout::CONFIG_ENV, from.clone()),
        env(layout::DELIVERED_CONFIG_ENV, to.clone()),
    ]);
    c.volume_mounts = Some(vec![
        mount("config-pipelock", layout::CONFIG_DIR),
        rw_mount("pipelock-config", layout::PIPELOCK_CONFIG_DIR),
    ]);
    // pipelock starts only once its first config is in place.
    c.startup_probe = Some(Probe {
        exec: Some(ExecAction {
            command: Some(vec!["test".into(), "-s".into(), to]),
        }),
        period_seconds: Some(1),
        failure_threshold: Some(60),
        ..Default::default()
    });
    c
}

/// Where pipelock's image has its binary (upstream's image is FROM scratch: `/pipelock`).
const PIPELOCK_BIN: &str = "/pipelock";

/// pipelock itself, from its own image.
fn pipelock_container(s: &Settings) -> Container {
    let mut c = sidecar("pipelock", &s.pipelock_image, &[], layout::PIPELOCK_UID);
    c.args = Some(vec!["run".into(), "--config".into(), pipelock_file()]);
    c.env = Some(vec![env("PIPELOCK_HOME", "/var/lib/pipelock")]);
    // The image is FROM scratch: its own binary is the only program there to probe with.
    with_probes(
        &mut c,
        vec![
            PIPELOCK_BIN.into(),
            "healthcheck".into(),
            "--addr".into(),
            format!("127.0.0.1:{}", layout::PIPELOCK_PORT),
        ],
    );
    c.volume_mounts = Some(vec![
        mount("pipelock-config", layout::PIPELOCK_CONFIG_DIR),
        mount("ca-intercept", layout::CA_DIR),
        rw_mount("pipelock-home", "/var/lib/pipelock"),
    ]);
    c
}

/// git-gate, when the Bottle declares remotes.
fn git_gate_part(b: &Bottle, p: &Policy, s: &Settings) -> Option<Part> {
    if p.remotes.is_empty() {
        return None;
    }
    let cfg = config_arg(files::GIT_GATE);
    let mut c = sidecar_program(
        Sidecar::GitGate.container(),
        s,
        &["git-gate", "--config", &cfg],
        layout::GIT_GATE_UID,
    );
    // git-gate speaks SSH to the remotes itself; nothing of it goes through pipelock.
    with_probes(&mut c, sidecar_probe(layout::GIT_GATE_ADMIN_PORT, &[]));
    // git and ssh want a writable HOME; the root filesystem is read-only.
    c.env = Some(vec![
        env("HOME", layout::GIT_GATE_STATE_DIR),
        env(layout::CONFIG_ENV, cfg.clone()),
    ]);
    let mut volumes = vec![
        config_volume(b, "config-git-gate", &[files::GIT_GATE]),
        empty_dir("git-mirrors"),
    ];
    volumes.extend(secrets_volume(
        "git-gate-secrets",
        p.remotes.iter().map(|r| &r.ssh_key),
    ));
    c.volume_mounts = Some(vec![
        mount("config-git-gate", layout::CONFIG_DIR),
        mount("git-gate-secrets", layout::SECRETS_DIR),
        rw_mount("git-mirrors", layout::GIT_GATE_STATE_DIR),
    ]);
    // The agent's gitconfig sends every spelling of a declared remote to the gate.
    volumes.push(config_volume(b, "config-agent", &[files::AGENT_GITCONFIG]));
    Some(Part {
        container: c,
        volumes,
    })
}

/// cred-proxy, when the Bottle declares credential routes.
fn cred_proxy_part(b: &Bottle, p: &Policy, s: &Settings) -> Option<Part> {
    if p.cred_routes.is_empty() {
        return None;
    }
    let cfg = config_arg(files::CRED_PROXY);
    let mut c = sidecar_program(
        Sidecar::CredProxy.container(),
        s,
        &["cred-proxy", "--config", &cfg],
        layout::CRED_PROXY_UID,
    );
    c.env = Some(vec![env(layout::CONFIG_ENV, cfg.clone())]);
    with_probes(
        &mut c,
        sidecar_probe(layout::CRED_PROXY_ADMIN_PORT, &[layout::PIPELOCK_PORT]),
    );
    let mut volumes = vec![config_volume(b, "config-cred-proxy", &[files::CRED_PROXY])];
    volumes.extend(secrets_volume(
        "cred-proxy-secrets",
        p.cred_routes.iter().map(|r| &r.auth.secret),
    ));
    c.volume_mounts = Some(vec![
        mount("config-cred-proxy", layout::CONFIG_DIR),
        mount("ca-cert", layout::CA_DIR),
        mount("cred-proxy-secrets", layout::SECRETS_DIR),
    ]);
    Some(Part {
        container: c,
        volumes,
    })
}

/// supervise, when the Bottle asks for it: the one container with an API server token.
fn supervise_part(b: &Bottle, s: &Settings) -> Option<Part> {
    if !b.spec.supervised() {
        return None;
    }
    let cfg = config_arg(files::SUPERVISE);
    let mut c = sidecar_program(
        "supervise",
        s,
        &["supervise", "--config", &cfg],
        layout::SUPERVISE_UID,
    );
    // It serves its own /readyz on the agent-facing port.
    with_probes(&mut c, sidecar_probe(layout::SUPERVISE_PORT, &[]));
    c.volume_mounts = Some(vec![
        mount("config-supervise", layout::CONFIG_DIR),
        mount("supervise-identity", layout::SUPERVISE_IDENTITY_DIR),
    ]);
    let identity = Volume {
        name: "supervise-identity".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(supervise::TOKEN_SECONDS),
                        audience: None,
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: supervise::ROOT_CA_CONFIG_MAP.into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: Some(false),
                    }),
                    ..Default::default()
                },
            ]),
            default_mode: Some(0o440),
        }),
        ..Default::default()
    };
    Some(Part {
        container: c,
        volumes: vec![
            // egress's file too: current_policy reads what egress enforces.
            config_volume(b, "config-supervise", &[files::SUPERVISE, files::EGRESS]),
            identity,
            config_volume(b, "config-agent-mcp", &[files::AGENT_MCP]),
        ],
    })
}

/// egress, always: the agent's only way out.
fn egress_part(p: &Policy, s: &Settings) -> Part {
    let cfg = config_arg(files::EGRESS);
    let mut c = sidecar_program(
        Sidecar::Egress.container(),
        s,
        &["egress", "--config", &cfg],
        layout::EGRESS_UID,
    );
    c.env = Some(vec![env(layout::CONFIG_ENV, cfg.clone())]);
    with_probes(
        &mut c,
        sidecar_probe(layout::EGRESS_ADMIN_PORT, &[layout::PIPELOCK_PORT]),
    );
    let secrets = secrets_volume(
        "egress-secrets",
        p.egress_routes
            .iter()
            .filter_map(|r| r.auth.as_ref())
            .map(|c| &c.secret),
    );
    let mut mounts = vec![
        mount("config-egress", layout::CONFIG_DIR),
        mount("ca-intercept", layout::CA_DIR),
    ];
    if secrets.is_some() {
        mounts.push(mount("egress-secrets", layout::SECRETS_DIR));
    }
    c.volume_mounts = Some(mounts);
    Part {
        container: c,
        volumes: secrets.into_iter().collect(),
    }
}

/// Renders the Pod and returns it with its template hash.
pub fn render(b: &Bottle, p: &Policy, s: &Settings, ca_fingerprint: &str) -> (Pod, String) {
    let mut volumes = shared_volumes(b);
    let mut init = vec![
        netinit_container(b, p, s),
        ca_bundle_container(s),
        pipelock_config_sync_container(s),
        pipelock_container(s),
    ];
    // The reference order: pipelock, then what sends through it, then egress.
    let parts = [git_gate_part(b, p, s), cred_proxy_part(b, p, s)]
        .into_iter()
        .flatten()
        .chain(
            [Some(egress_part(p, s)), supervise_part(b, s)]
                .into_iter()
                .flatten(),
        );
    for part in parts {
        init.push(part.container);
        volumes.extend(part.volumes);
    }

    let mut agent = agent_container(b, p, s);
    agent.image_pull_policy = s.agent_pull_policy.clone();
    for c in &mut init {
        c.image_pull_policy = if c.image.as_deref() == Some(s.pipelock_image.as_str()) {
            s.pipelock_pull_policy.clone()
        } else {
            s.sidecar_pull_policy.clone()
        };
    }
    let spec = PodSpec {
        init_containers: Some(init),
        containers: vec![agent],
        volumes: Some(volumes),
        runtime_class_name: b.spec.agent.runtime_class_name.clone(),
        image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| {
            s.image_pull_secrets
                .iter()
                .map(|name| LocalObjectReference { name: name.clone() })
                .collect()
        }),
        // The agent must not reach the API server with a token, nor see its sidecars'
        // processes. A supervised Bottle's account token is projected into supervise alone.
        service_account_name: b.spec.supervised().then(|| meta::supervise_name(b)),
        automount_service_account_token: Some(false),
        share_process_namespace: Some(false),
        enable_service_links: Some(false),
        restart_policy: Some("Always".into()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            fs_group: Some(layout::SIDECAR_GID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut metadata = meta::owned(b, meta::pod_name(b));
    let mut annotations = StringMap::from([(
        "kubectl.kubernetes.io/default-container".to_string(),
        "agent".to_string(),
    )]);
    // pipelock's strict mode refuses some reloads (and then every later one): those changes
    // roll the Pod instead, through the template hash.
    annotations.insert(
        "bottle-operator.dev/pipelock-restart-key".into(),
        pipelock_restart_key(&config_map::pipelock_config(p)),
    );
    annotations.insert(
        "bottle-operator.dev/ca-fingerprint".into(),
        ca_fingerprint.into(),
    );
    let hash = hash_of(&(&spec, &metadata.labels, &annotations));
    annotations.insert(meta::TEMPLATE_HASH_ANNOTATION.into(), hash.clone());
    metadata.annotations = Some(annotations);
    (
        Pod {
            metadata,
            spec: Some(spec),
            status: None,
        },
        hash,
    )
}

/// Refuses a workspace size the API server would refuse in the claim.
pub fn check_workspace(agent: &AgentSpec) -> Result<(), InvalidSpec> {
    match &agent.workspace {
        Some(w) if !is_quantity(&w.size) => Err(InvalidSpec {
            reason: Reason::InvalidWorkspace,
            message: format!(
                "agent.workspace.size {:?} is not a quantity like 10Gi",
                w.size
            ),
        }),
        _ => Ok(()),
    }
}

/// The workspace claim, if the Bottle asks for one (its size checked by [`check_workspace`]).
pub fn workspace_claim(b: &Bottle) -> Option<PersistentVolumeClaim> {
    let w = b.spec.agent.workspace.as_ref()?;
    Some(PersistentVolumeClaim {
        metadata: meta::owned(b, meta::workspace_name(b)),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: w.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some([("storage".to_string(), Quantity(w.size.clone()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: None,
    })
}

fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.parse::<f64>().is_ok_and(|n| n > 0.0)
        && ["", "k", "M", "G", "T", "P", "Ki", "Mi", "Gi", "Ti", "Pi"].contains(&suffix)
}

/// Names of all containers (init, sidecar and main) in a rendered Pod.
pub fn container_names(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten();
    let main = spec.map(|s| s.containers.iter()).into_iter().flatten();
    init.chain(main).map(|c| c.name.clone()).collect()
}
