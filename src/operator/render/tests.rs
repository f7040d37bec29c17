use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::*;
use crate::contract::api::{Bottle, BottleSpec};
use crate::contract::config::{
    cred_proxy::CredProxyConfig, egress::EgressConfig, git_gate::GitGateConfig, layout,
    pipelock::PipelockConfig,
};
use crate::contract::model::Reason;

const FP: &str = "AA:BB";

/// The Bottle of `examples/bottle-full.yaml`, with the uid an API server would give it.
fn full() -> Bottle {
    let text = include_str!("../../../examples/bottle-full.yaml");
    let doc = text
        .split("\n---\n")
        .find(|d| d.contains("kind: Bottle"))
        .expect("a Bottle document");
    let mut b: Bottle = serde_norway::from_str(doc).expect("example parses");
    b.metadata.namespace = Some("team".into());
    b.metadata.uid = Some("uid-1".into());
    b
}

/// Egress only: the core sidecars and nothing else.
fn minimal() -> Bottle {
    // Shared with tests/pipelock_check.rs, which runs `pipelock check` on what it renders.
    let mut b: Bottle = serde_norway::from_str(include_str!(
        "../../../tests/fixtures/bottle-render-minimal.yaml"
    ))
    .unwrap();
    b.metadata.namespace = Some("team".into());
    b.metadata.uid = Some("uid-2".into());
    b
}

fn render(b: &Bottle) -> Desired {
    render_with(b, &Settings::default(), FP)
}

/// Validates, then renders: the reconciler's order.
fn render_with(b: &Bottle, settings: &Settings, fp: &str) -> Desired {
    desired(b, validate(b, settings).expect("valid"), settings, fp)
}

fn containers(p: &Pod) -> Vec<&Container> {
    let s = p.spec.as_ref().unwrap();
    s.init_containers
        .iter()
        .flatten()
        .chain(s.containers.iter())
        .collect()
}

fn container<'a>(p: &'a Pod, name: &str) -> &'a Container {
    containers(p)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_of(c: &Container) -> BTreeMap<String, String> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

/// Volume names a container mounts.
fn mounts(c: &Container) -> BTreeSet<String> {
    c.volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.clone())
        .collect()
}

/// Secret keys (secret/key) reachable through a volume.
fn secret_keys_of_volume(p: &Pod, volume: &str) -> BTreeSet<String> {
    let v = p
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == volume)
        .unwrap();
    let mut out = BTreeSet::new();
    if let Some(s) = &v.secret {
        for i in s.items.iter().flatten() {
            out.insert(format!("{}/{}", s.secret_name.as_deref().unwrap(), i.key));
        }
    }
    if let Some(pr) = &v.projected {
        for src in pr.sources.iter().flatten() {
            let s = src.secret.as_ref().unwrap();
            for i in s.items.iter().flatten() {
                out.insert(format!("{}/{}", s.name, i.key));
            }
        }
    }
    out
}

#[test]
fn full_bottle_starts_sidecars_in_the_reference_order_before_the_agent() {
    let d = render(&full());
    let spec = d.pod.spec.as_ref().unwrap();
    let init: Vec<(&str, Option<&str>)> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.restart_policy.as_deref()))
        .collect();
    assert_eq!(
        init,
        [
            ("netinit", None),
            ("ca-bundle", None),
            ("pipelock-config", Some("Always")),
            ("pipelock", Some("Always")),
            ("git-gate", Some("Always")),
            ("cred-proxy", Some("Always")),
            ("egress", Some("Always"))
        ]
    );
    assert_eq!(
        spec.containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["agent"]
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.share_process_namespace, Some(false));
}

/// The probe command of a container, as the kubelet would run it.
fn probe_cmd(p: &Option<k8s_openapi::api::core::v1::Probe>) -> Option<Vec<String>> {
    p.as_ref()?.exec.as_ref()?.command.clone()
}

#[test]
fn each_serving_sidecar_holds_back_the_next_container_until_it_and_pipelock_answer() {
    let d = render(&full());
    let expect = |name: &str, admin: u16, pipelock: bool| {
        let c = container(&d.pod, name);
        let mut cmd = vec![
            "bottle-sidecar".to_string(),
            "probe".into(),
            "--ready".into(),
            format!("127.0.0.1:{admin}"),
        ];
        if pipelock {
            cmd.extend(["--listening".into(), "127.0.0.1:8888".into()]);
        }
        // Startup gates the next container; readiness keeps reporting afterwards.
        assert_eq!(probe_cmd(&c.startup_probe), Some(cmd.clone()), "{name}");
        assert_eq!(probe_cmd(&c.readiness_probe), Some(cmd), "{name}");
        assert!(
            c.liveness_probe.is_none(),
            "{name}: a liveness kill would drop live streams"
        );
    };
    expect("egress", 9091, true);
    expect("cred-proxy", 9100, true);
    expect("git-gate", 9421, false);
    let pipelock = container(&d.pod, "pipelock");
    assert_eq!(
        probe_cmd(&pipelock.startup_probe).unwrap(),
        ["/pipelock", "healthcheck", "--addr", "127.0.0.1:8888"]
    );
    // The agent and the one-shot init containers carry none.
    for name in ["agent", "netinit", "ca-bundle"] {
        let c = container(&d.pod, name);
        assert!(
            c.startup_probe.is_none() && c.readiness_probe.is_none(),
            "{name}"
        );
    }
}

#[test]
fn first_bottle_example_keeps_the_api_key_in_cred_proxy() {
    let mut b: Bottle =
        serde_norway::from_str(include_str!("../../../examples/bottle-minimal.yaml")).unwrap();
    b.metadata.namespace = Some("team".into());
    let d = render(&b);
    let names = pod::container_names(&d.pod);
    assert!(
        names.iter().any(|n| n == "cred-proxy") && !names.iter().any(|n| n == "git-gate"),
        "{names:?}"
    );
    let env = env_of(container(&d.pod, "agent"));
    assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:9099/anthropic");
    assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], pod::AGENT_TOKEN_PLACEHOLDER);
    // The key's Secret is mounted into cred-proxy only.
    let spec = d.pod.spec.as_ref().unwrap();
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            serde_json::to_string(v)
                .unwrap()
                .contains(r#""name":"anthropic""#)
        })
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes.len(), 1, "{volumes:?}");
    let holders: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| {
            c.volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == volumes[0])
        })
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(holders, ["cred-proxy"]);
}

#[test]
fn pull_settings_follow_each_image() {
    let d = render(&full());
    let spec = d.pod.spec.as_ref().unwrap();
    let all = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
    };
    assert!(
        all().all(|c| c.image_pull_policy.is_none()),
        "default: unset"
    );

    let settings = Settings {
        agent_pull_policy: Some("Never".into()),
        sidecar_pull_policy: Some("Always".into()),
        pipelock_pull_policy: Some("IfNotPresent".into()),
        image_pull_secrets: vec!["registry".into()],
        ..Settings::default()
    };
    let d = render_with(&full(), &settings, FP);
    let spec = d.pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.image_pull_secrets.as_ref().unwrap()[0].name,
        "registry"
    );
    for c in spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
    {
        let want = match c.name.as_str() {
            "agent" => "Never",
            "pipelock" => "IfNotPresent",
            _ => "Always",
        };
        assert_eq!(c.image_pull_policy.as_deref(), Some(want), "{}", c.name);
    }
    // The policy is part of the Pod template: changing it replaces the Pod.
    assert_ne!(d.template_hash, render(&full()).template_hash);
}

#[test]
fn minimal_bottle_has_no_cred_proxy_or_git_gate() {
    let d = render(&minimal());
    assert_eq!(
        pod::container_names(&d.pod),
        [
            "netinit",
            "ca-bundle",
            "pipelock-config",
            "pipelock",
            "egress",
            "agent"
        ]
    );
    let keys: Vec<&String> = d.config_map.data.as_ref().unwrap().keys().collect();
    assert_eq!(keys, ["egress.yaml", "pipelock.yaml"]);
    let agent = container(&d.pod, "agent");
    assert!(!env_of(agent).contains_key("ANTHROPIC_BASE_URL"));
    assert!(!env_of(agent).contains_key("ANTHROPIC_AUTH_TOKEN"));
    assert!(!env_of(agent).contains_key("GIT_CONFIG_SYSTEM"));
    assert_eq!(agent.command.as_deref(), Some(&["sleep".to_string()][..]));
    assert_eq!(
        agent.image.as_deref(),
        Some(Settings::default().agent_image.as_str())
    );
}

#[test]
fn every_container_runs_as_its_own_non_root_uid_without_escalation() {
    let d = render(&full());
    let mut uids = BTreeSet::new();
    // netinit is root by necessity (tested below); pipelock-config acts for pipelock and
    // shares its UID on purpose.
    for c in containers(&d.pod)
        .into_iter()
        .filter(|c| c.name != "netinit" && c.name != "pipelock-config")
    {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let uid = sc.run_as_user.unwrap();
        assert!(
            uid > 0 && uids.insert(uid),
            "{} shares or lacks a UID",
            c.name
        );
        assert_eq!(
            sc.read_only_root_filesystem,
            Some(c.name != "agent"),
            "{}",
            c.name
        );
    }
}

#[test]
fn netinit_is_the_only_privileged_container_and_opens_only_agent_facing_ports() {
    let d = render(&full());
    let n = container(&d.pod, "netinit");
    let sc = n.security_context.as_ref().unwrap();
    assert_eq!(
        (
            sc.run_as_user,
            sc.run_as_non_root,
            sc.allow_privilege_escalation
        ),
        (Some(0), Some(false), Some(false))
    );
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_deref(), Some(&["NET_ADMIN".to_string()][..]));
    let args = n.args.clone().unwrap().join(" ");
    assert_eq!(
        args,
        "netinit --agent-uid 1000 --sidecar-uid 1001 --sidecar-uid 1002 --sidecar-uid 1003 --sidecar-uid 1004 --agent-port 9090 --agent-port 9099 --agent-port 9420"
    );
    for c in containers(&d.pod)
        .into_iter()
        .filter(|c| c.name != "netinit")
    {
        let caps = c
            .security_context
            .as_ref()
            .unwrap()
            .capabilities
            .as_ref()
            .unwrap();
        assert!(caps.add.is_none(), "{} adds capabilities", c.name);
    }
    let mini = render(&minimal());
    let args = container(&mini.pod, "netinit")
        .args
        .clone()
        .unwrap()
        .join(" ");
    assert_eq!(
        args,
        "netinit --agent-uid 1000 --sidecar-uid 1001 --sidecar-uid 1002 --agent-port 9090"
    );
}

#[test]
fn agent_env_wires_it_to_its_sidecars() {
    let d = render(&full());
    let env = env_of(container(&d.pod, "agent"));
    assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:9090");
    assert_eq!(env["http_proxy"], "http://127.0.0.1:9090");
    assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1,::1");
    assert_eq!(
        env["NODE_EXTRA_CA_CERTS"],
        "/etc/bottle/trust/bottle-ca.crt"
    );
    assert_eq!(env["SSL_CERT_FILE"], "/etc/bottle/trust/ca-bundle.crt");
    assert_eq!(env["REQUESTS_CA_BUNDLE"], "/etc/bottle/trust/ca-bundle.crt");
    assert_eq!(env["ANTHROPIC_BASE_URL"], "http://127.0.0.1:9099/anthropic");
    // Claude Code needs some token to skip its login; the real one stays in cred-proxy.
    assert_eq!(env["ANTHROPIC_AUTH_TOKEN"], pod::AGENT_TOKEN_PLACEHOLDER);
    assert_eq!(
        env["GIT_CONFIG_SYSTEM"],
        "/etc/bottle/config/agent.gitconfig"
    );
    assert_eq!(env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"], "1");
}

#[test]
fn token_values_and_keys_reach_only_the_sidecar_that_uses_them() {
    let d = render(&full());
    let p = &d.pod;
    let agent = container(p, "agent");
    assert!(agent.env.iter().flatten().all(|e| e.value_from.is_none()));
    assert!(agent.env_from.is_none());
    let by_container: BTreeMap<&str, BTreeSet<String>> = containers(p)
        .into_iter()
        .map(|c| {
            let keys = mounts(c)
                .iter()
                .filter(|v| {
                    let vol = p
                        .spec
                        .as_ref()
                        .unwrap()
                        .volumes
                        .iter()
                        .flatten()
                        .find(|x| &x.name == *v)
                        .unwrap();
                    vol.secret.is_some() || vol.projected.is_some()
                })
                .flat_map(|v| secret_keys_of_volume(p, v))
                .collect();
            (c.name.as_str(), keys)
        })
        .collect();
    let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(by_container["agent"], set(&[]));
    assert_eq!(by_container["ca-bundle"], set(&["full-ca/ca.crt"]));
    assert_eq!(
        by_container["pipelock"],
        set(&["full-ca/ca.crt", "full-ca/ca.key"])
    );
    assert_eq!(
        by_container["egress"],
        set(&[
            "full-ca/ca.crt",
            "full-ca/ca.key",
            "agent-credentials/github-token"
        ])
    );
    assert_eq!(
        by_container["cred-proxy"],
        set(&["full-ca/ca.crt", "agent-credentials/anthropic-api-key"])
    );
    assert_eq!(
        by_container["git-gate"],
        set(&["agent-deploy-key/id_ed25519"])
    );
    assert!(by_container["pipelock-config"].is_empty());
    // The CA key file mode passes pipelock's check (no group-write, world or exec bits).
    let ca = p
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "ca-intercept")
        .unwrap();
    let key_mode = ca
        .secret
        .as_ref()
        .unwrap()
        .items
        .iter()
        .flatten()
        .find(|i| i.key == "ca.key")
        .unwrap()
        .mode
        .unwrap();
    assert_eq!(key_mode & 0o137, 0);
}

#[test]
fn each_reloading_sidecar_names_the_config_file_it_reads_for_config_status() {
    let d = render(&full());
    for kind in layout::Sidecar::ALL {
        let c = container(&d.pod, kind.container());
        let env = env_of(c);
        let file = format!("{}/{}", layout::CONFIG_DIR, kind.file());
        assert_eq!(env.get(layout::CONFIG_ENV), Some(&file), "{}", c.name);
        // The file config-status reads is the one the sidecar itself reads.
        let args = c.args.clone().unwrap_or_default();
        let flag = if kind == layout::Sidecar::Pipelock {
            "--from"
        } else {
            "--config"
        };
        let i = args.iter().position(|a| a == flag).expect(flag);
        assert_eq!(args[i + 1], file, "{}", c.name);
    }
    let sync = env_of(container(&d.pod, layout::Sidecar::Pipelock.container()));
    let pipelock = container(&d.pod, "pipelock").args.clone().unwrap();
    assert_eq!(
        pipelock.last(),
        sync.get(layout::DELIVERED_CONFIG_ENV),
        "pipelock reads what config-sync delivers"
    );
}

#[test]
fn config_is_mounted_as_whole_volumes_never_sub_paths() {
    let d = render(&full());
    for c in containers(&d.pod) {
        for m in c.volume_mounts.iter().flatten() {
            assert!(
                m.sub_path.is_none() && m.sub_path_expr.is_none(),
                "{} uses subPath",
                c.name
            );
        }
    }
    for v in d.pod.spec.as_ref().unwrap().volumes.iter().flatten() {
        if let Some(cm) = &v.config_map {
            assert_eq!(cm.name, "full-config");
            assert!(
                cm.items.as_ref().is_some_and(|i| !i.is_empty()),
                "{} lists its items",
                v.name
            );
        }
    }
}

#[test]
fn each_sidecar_config_parses_with_its_own_type_and_points_at_files_it_mounts() {
    let d = render(&full());
    let data = d.config_map.data.as_ref().unwrap();
    let egress: EgressConfig = serde_norway::from_str(&data["egress.yaml"]).unwrap();
    let cred: CredProxyConfig = serde_norway::from_str(&data["cred-proxy.yaml"]).unwrap();
    let gate: GitGateConfig = serde_norway::from_str(&data["git-gate.yaml"]).unwrap();
    let pipelock: PipelockConfig = serde_norway::from_str(&data["pipelock.yaml"]).unwrap();

    let file_of = |c: &str, vol: &str| {
        let v = d
            .pod
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == vol)
            .unwrap();
        let items: Vec<String> = v
            .projected
            .as_ref()
            .unwrap()
            .sources
            .iter()
            .flatten()
            .flat_map(|s| {
                s.secret
                    .as_ref()
                    .unwrap()
                    .items
                    .iter()
                    .flatten()
                    .map(|i| i.path.clone())
            })
            .collect();
        assert!(mounts(container(&d.pod, c)).contains(vol));
        items
            .into_iter()
            .map(|p| format!("{}/{p}", layout::SECRETS_DIR))
            .collect::<BTreeSet<_>>()
    };
    let egress_auth = egress.routes[0].auth.as_ref().unwrap();
    assert_eq!(
        (egress_auth.header.as_str(), egress_auth.scheme.as_deref()),
        ("Authorization", Some("Bearer"))
    );
    assert!(file_of("egress", "egress-secrets").contains(&egress_auth.token_file));
    assert_eq!(cred.routes[0].auth.header, "x-api-key");
    assert!(file_of("cred-proxy", "cred-proxy-secrets").contains(&cred.routes[0].auth.token_file));
    assert!(file_of("git-gate", "git-gate-secrets").contains(&gate.remotes[0].ssh_key_file));
    assert_eq!(
        gate.remotes[0].upstream,
        "ssh://git@github.com:22/example-org/example-repo.git"
    );
    assert_eq!(
        egress.upstream_proxy.as_deref(),
        Some("http://127.0.0.1:8888")
    );
    assert_eq!(
        cred.upstream_proxy.as_deref(),
        Some("http://127.0.0.1:8888")
    );
    assert_eq!(egress.ports, [443]);
    assert!(
        egress
            .allow
            .contains(&"registry.npmjs.org".parse().unwrap())
            && !egress.allow.contains(&"api.anthropic.com".parse().unwrap())
    );

    assert_eq!(pipelock.mode, "strict");
    assert!(pipelock.request_body_scanning.scan_headers);
    for h in [
        "api.anthropic.com",
        "api.github.com",
        "registry.npmjs.org",
        "pypi.org",
    ] {
        assert!(
            pipelock.api_allowlist.iter().any(|a| a == h),
            "{h} missing from the allowlist"
        );
    }
    // Declared passthrough, plus the credential route api.github.com: pipelock splices the
    // hosts a sidecar injects a token for (its header DLP would block the token otherwise).
    assert_eq!(
        pipelock.tls_interception.passthrough_domains,
        ["api.anthropic.com", "api.github.com"]
    );
    assert_eq!(pipelock.dlp.patterns[0].name, "Example Corp token");
    // The same patterns scan git pushes.
    assert_eq!(gate.rules[0].id, "example-corp-token");
    let text = gate.gitleaks_toml().unwrap();
    let back: crate::contract::config::git_gate::GitleaksConfig = toml::from_str(&text).unwrap();
    assert_eq!(back.rules[0].regex, "excorp_[A-Za-z0-9]{32}", "{text}");
    assert!(back.extend.use_default);
}

#[test]
fn gitleaks_config_quotes_any_regex_text() {
    // Quotes of every kind and backslashes: TOML built with format! could not carry these.
    let tricky = [r#"a'''b"#, r#"say "hi"\s+"#, r"\d{4}'", r"tab\tand\\"];
    let gate = crate::contract::config::git_gate::GitGateConfig {
        listen: "127.0.0.1:1".into(),
        admin_listen: "127.0.0.1:2".into(),
        state_dir: "/tmp".into(),
        remotes: vec![],
        rules: tricky
            .iter()
            .enumerate()
            .map(|(i, r)| crate::contract::config::git_gate::ScanRule {
                id: format!("r{i}"),
                regex: (*r).into(),
            })
            .collect(),
        allowlist: vec!["'''".into()],
        allow_paths: vec![],
    };
    let text = gate.gitleaks_toml().unwrap();
    let back: crate::contract::config::git_gate::GitleaksConfig = toml::from_str(&text).unwrap();
    assert_eq!(back, gate.gitleaks_config().unwrap(), "{text}");
    assert!(text.contains("useDefault = true"), "{text}");
}

fn pipelock_of(b: &Bottle) -> PipelockConfig {
    serde_norway::from_str(&render(b).config_map.data.as_ref().unwrap()["pipelock.yaml"]).unwrap()
}

#[test]
fn pipelock_blocks_injection_scans_a2a_and_every_header_with_a_burst_sized_rate_limit() {
    let p = pipelock_of(&minimal());
    assert_eq!(
        (
            p.response_scanning.enabled,
            p.response_scanning.action.as_str()
        ),
        (true, "block")
    );
    assert_eq!(
        (
            p.response_scanning.sse_streaming.enabled,
            p.response_scanning.sse_streaming.action.as_str()
        ),
        (true, "block")
    );
    assert_eq!(
        (p.a2a_scanning.enabled, p.a2a_scanning.action.as_str()),
        (true, "block")
    );
    assert_eq!(p.request_body_scanning.header_mode, "all");
    // The agent writes User-Agent as freely as any header: it is scanned too.
    let ignored = &p.request_body_scanning.ignore_headers;
    assert!(!ignored.iter().any(|h| h == "User-Agent") && ignored.iter().any(|h| h == "Host"));
    assert!(p.forward_proxy.sni_verification);
    assert_eq!(
        p.fetch_proxy.monitoring.max_requests_per_minute,
        config_map::PIPELOCK_REQUESTS_PER_MINUTE
    );
    // pipelock's own default is 60: far below one package install.
    assert!(p.fetch_proxy.monitoring.max_requests_per_minute >= 1000);

    // A Bottle may choose to only warn about injected responses.
    let mut b = minimal();
    b.spec.egress.response_injection = Some(crate::contract::api::InjectionAction::Warn);
    let p = pipelock_of(&b);
    assert_eq!(p.response_scanning.action, "warn");
    assert_eq!(p.response_scanning.sse_streaming.action, "warn");
}

#[test]
fn pipelock_splices_websocket_and_credential_hosts_and_the_pod_rolls_when_they_change() {
    let mut b = minimal();
    let before = render(&b).pod;
    b.spec.egress.websocket = vec!["ws.example.com".into()];
    let d = render(&b);
    let p = pipelock_of(&b);
    assert!(
        p.tls_interception
            .passthrough_domains
            .contains(&"ws.example.com".to_string())
    );
    assert!(p.api_allowlist.contains(&"ws.example.com".to_string()));
    // egress still intercepts it (routes and paths hold); only pipelock splices.
    let egress: EgressConfig =
        serde_norway::from_str(&d.config_map.data.as_ref().unwrap()["egress.yaml"]).unwrap();
    assert!(egress.allow.contains(&"ws.example.com".parse().unwrap()));
    assert!(
        !egress
            .passthrough
            .contains(&"ws.example.com".parse().unwrap())
    );
    // Widening pipelock's passthrough is refused by its strict reload: the Pod rolls.
    let hash =
        |p: &Pod| p.metadata.annotations.as_ref().unwrap()[meta::TEMPLATE_HASH_ANNOTATION].clone();
    assert_ne!(hash(&before), hash(&d.pod));
}

#[test]
fn real_git_sends_every_spelling_of_a_declared_remote_to_the_gate() {
    let d = render(&full());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gitconfig");
    std::fs::write(
        &cfg,
        &d.config_map.data.as_ref().unwrap()["agent.gitconfig"],
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_CONFIG_SYSTEM", &cfg)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    git(&["init", "-q"]);
    let gate = "http://127.0.0.1:9420/origin.git";
    for spelling in [
        "git@github.com:example-org/example-repo.git",
        "git@github.com:example-org/example-repo",
        "ssh://git@github.com/example-org/example-repo.git",
        "https://github.com/example-org/example-repo",
    ] {
        git(&["remote", "add", "r", spelling]);
        assert_eq!(
            git(&["remote", "get-url", "r"]),
            gate,
            "fetch URL of {spelling}"
        );
        assert_eq!(
            git(&["remote", "get-url", "--push", "r"]),
            gate,
            "push URL of {spelling}"
        );
        git(&["remote", "remove", "r"]);
    }
    // Other repositories on the same host are not rewritten: they stay unreachable.
    git(&["remote", "add", "other", "git@github.com:someone/else.git"]);
    assert_eq!(
        git(&["remote", "get-url", "other"]),
        "git@github.com:someone/else.git"
    );
}

#[test]
fn template_hash_follows_the_pod_not_the_sidecar_config() {
    let b = full();
    let base = render(&b).template_hash;
    assert_eq!(render(&b).template_hash, base, "rendering is deterministic");

    let mut allow = b.clone();
    allow.spec.egress.allow.push("crates.io".into());
    let d = render(&allow);
    assert_eq!(
        d.template_hash, base,
        "an allowlist change is a ConfigMap change"
    );
    assert_ne!(d.config_hash, render(&b).config_hash);

    let mut image = b.clone();
    image.spec.agent.image = Some("example.org/agent:2".into());
    assert_ne!(render(&image).template_hash, base);

    let mut passthrough = b.clone();
    passthrough
        .spec
        .egress
        .passthrough
        .push("api.openai.com".into());
    assert_ne!(
        render(&passthrough).template_hash,
        base,
        "widening passthrough rolls the Pod"
    );

    // pipelock's strict reload refuses any change of its DLP pattern list.
    let mut dlp = b.clone();
    dlp.spec.dlp.patterns.clear();
    assert_ne!(
        render(&dlp).template_hash,
        base,
        "a DLP pattern change rolls the Pod"
    );

    assert_ne!(
        render_with(&b, &Settings::default(), "CC:DD").template_hash,
        base,
        "a new CA rolls the Pod"
    );
    assert_eq!(
        d.pod.metadata.annotations.as_ref().unwrap()[meta::TEMPLATE_HASH_ANNOTATION],
        d.template_hash
    );
}

#[test]
fn network_policies_deny_ingress_and_private_egress() {
    let settings = Settings {
        cluster_cidrs: vec![
            "198.18.0.0/15".parse().unwrap(),
            "2001:db8::/64".parse().unwrap(),
        ],
        ..Default::default()
    };
    let b = full();
    let d = render_with(&b, &settings, FP);
    let [internal, egress] = &d.network_policies[..] else {
        panic!("two policies")
    };
    let is = internal.spec.as_ref().unwrap();
    assert_eq!(
        is.policy_types.as_deref(),
        Some(&["Ingress".to_string()][..])
    );
    assert!(is.ingress.as_ref().is_none_or(|r| r.is_empty()));
    assert_eq!(
        is.pod_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap()[meta::BOTTLE_LABEL],
        "full"
    );

    let es = egress.spec.as_ref().unwrap();
    let rules = es.egress.as_ref().unwrap();
    let dns_ports: Vec<String> = rules[0]
        .ports
        .iter()
        .flatten()
        .map(|p| format!("{}/{:?}", p.protocol.as_deref().unwrap(), p.port))
        .collect();
    assert_eq!(dns_ports.len(), 2);
    let public = &rules[1];
    let ports: BTreeSet<String> = public
        .ports
        .iter()
        .flatten()
        .map(|p| format!("{:?}", p.port.as_ref().unwrap()))
        .collect();
    assert_eq!(
        ports,
        BTreeSet::from(["Int(22)".to_string(), "Int(443)".to_string()])
    );
    let blocks: Vec<_> = public
        .to
        .iter()
        .flatten()
        .map(|p| p.ip_block.as_ref().unwrap())
        .collect();
    let v4 = blocks
        .iter()
        .find(|b| b.cidr == "0.0.0.0/0")
        .unwrap()
        .except
        .clone()
        .unwrap();
    for c in [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "198.18.0.0/15",
    ] {
        assert!(v4.iter().any(|x| x == c), "{c} not excluded");
    }
    let v6 = blocks
        .iter()
        .find(|b| b.cidr == "::/0")
        .unwrap()
        .except
        .clone()
        .unwrap();
    for c in ["fc00::/7", "fe80::/10", "2001:db8::/64"] {
        assert!(v6.iter().any(|x| x == c), "{c} not excluded");
    }
}

#[test]
fn owned_objects_carry_a_controller_reference_to_the_bottle() {
    let d = render(&full());
    let refs = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.owner_references.clone().unwrap()
    };
    let mut all = vec![
        refs(&d.pod.metadata),
        refs(&d.config_map.metadata),
        refs(&d.workspace.as_ref().unwrap().metadata),
    ];
    all.extend(d.network_policies.iter().map(|n| refs(&n.metadata)));
    for r in all {
        assert_eq!(
            (r[0].uid.as_str(), r[0].kind.as_str(), r[0].controller),
            ("uid-1", "Bottle", Some(true))
        );
    }
}

#[test]
fn reserved_agent_env_and_bad_workspace_sizes_are_refused() {
    let mut b = minimal();
    b.spec.agent.env.push(crate::contract::api::EnvVar {
        name: "HTTPS_PROXY".into(),
        value: "http://evil".into(),
    });
    assert_eq!(
        validate(&b, &Settings::default()).unwrap_err().reason,
        Reason::ReservedEnv
    );
    let mut b = minimal();
    b.spec.agent.workspace = Some(crate::contract::api::WorkspaceSpec {
        size: "lots".into(),
        storage_class_name: None,
    });
    assert_eq!(
        validate(&b, &Settings::default()).unwrap_err().reason,
        Reason::InvalidWorkspace
    );
    b.spec.agent.workspace = Some(crate::contract::api::WorkspaceSpec {
        size: "1.5Gi".into(),
        storage_class_name: Some("fast".into()),
    });
    let claim = render_with(&b, &Settings::default(), FP).workspace.unwrap();
    assert_eq!(
        claim.spec.unwrap().storage_class_name.as_deref(),
        Some("fast")
    );
}

#[test]
fn ca_is_p256_with_a_sec1_key_and_an_openssl_compatible_fingerprint() {
    let ca = ca::generate("team", "full").unwrap();
    assert!(
        ca.key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "pipelock needs SEC1"
    );
    let der = ::pem::parse(&ca.cert_pem).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(der.contents()).unwrap();
    assert!(cert.is_ca());
    assert!(cert.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.crt");
    std::fs::write(&path, &ca.cert_pem).unwrap();
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&path)
        .output()
        .unwrap();
    let openssl = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        openssl.trim().rsplit('=').next().unwrap(),
        ca::fingerprint(&ca.cert_pem).unwrap()
    );
    // The key matches the certificate.
    let key_path = dir.path().join("ca.key");
    std::fs::write(&key_path, &ca.key_pem).unwrap();
    let pubkey = |args: &[&str]| Command::new("openssl").args(args).output().unwrap().stdout;
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in", path.to_str().unwrap()]),
        pubkey(&["ec", "-pubout", "-in", key_path.to_str().unwrap()])
    );
    assert_ne!(
        ca::generate("team", "full").unwrap().cert_pem,
        ca.cert_pem,
        "each CA is new"
    );
}

#[test]
fn specs_round_trip_through_the_crd_types() {
    let b = full();
    let json = serde_json::to_value(&b.spec).unwrap();
    let back: BottleSpec = serde_json::from_value(json).unwrap();
    assert_eq!(back, b.spec);
}

#[test]
fn operator_cidrs_are_parsed_whole_and_canonical() {
    use super::network_policy::parse_cidr;
    assert_eq!(
        parse_cidr("10.96.0.0/12").unwrap().to_string(),
        "10.96.0.0/12"
    );
    assert_eq!(parse_cidr("fd00::/108").unwrap().to_string(), "fd00::/108");
    for bad in ["10.96.0.0", "10.96.0.0/33", "x/8", "fd00::/129", ""] {
        assert!(parse_cidr(bad).is_err(), "{bad}");
    }
    let e = parse_cidr("10.96.0.1/12").unwrap_err();
    assert!(e.contains("write 10.96.0.0/12"), "{e}");
}

/// Before/after pairs from pipelock 2.3.0's strict reload (tests/pipelock_facts.rs): what it
/// refuses rolls the Pod, what it applies live does not.
#[test]
fn pipelock_restart_key_changes_exactly_for_what_a_strict_reload_refuses() {
    let base = config_map::pipelock_config(&Policy::from_spec(&full().spec).unwrap());
    let key = pod::pipelock_restart_key(&base);
    let edited = |f: &dyn Fn(&mut PipelockConfig)| {
        let mut c = base.clone();
        f(&mut c);
        pod::pipelock_restart_key(&c)
    };
    // Applied live.
    assert_eq!(edited(&|c| c.api_allowlist.push("crates.io".into())), key);
    assert_eq!(edited(&|c| c.api_allowlist.clear()), key);
    assert_eq!(
        edited(&|c| c.request_body_scanning.action = "warn".into()),
        key
    );
    // Refused: passthrough added, DLP pattern added, removed or changed.
    assert_ne!(
        edited(&|c| c
            .tls_interception
            .passthrough_domains
            .push("x.example.com".into())),
        key
    );
    assert_ne!(edited(&|c| c.dlp.patterns.clear()), key);
    assert_ne!(
        edited(&|c| {
            let extra = c.dlp.patterns[0].clone();
            c.dlp
                .patterns
                .push(crate::contract::config::pipelock::DlpPattern {
                    name: "another".into(),
                    ..extra
                })
        }),
        key
    );
    assert_ne!(edited(&|c| c.dlp.patterns[0].regex.push('x')), key);
    assert_ne!(edited(&|c| c.request_body_scanning.enabled = false), key);
    assert_ne!(edited(&|c| c.enforce = false), key);
}
