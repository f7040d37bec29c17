//! What a supervised Bottle renders, and that only supervise ever sees a token.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::super::{Settings, desired, validate};
use super::*;
use crate::contract::api::SuperviseSpec;
use crate::contract::config::layout;
use crate::contract::model::Reason;

fn bottle(supervised: bool) -> Bottle {
    let mut b: Bottle = serde_norway::from_str(include_str!(
        "../../../../tests/fixtures/bottle-render-minimal.yaml"
    ))
    .unwrap();
    b.metadata.namespace = Some("team".into());
    b.metadata.uid = Some("uid-3".into());
    b.spec.supervise = Some(SuperviseSpec {
        enabled: supervised,
    });
    b
}

fn settings() -> Settings {
    Settings {
        api_server: Some("192.0.2.10:6443".parse().unwrap()),
        ..Settings::default()
    }
}

fn all_containers(p: &Pod) -> Vec<&Container> {
    let s = p.spec.as_ref().unwrap();
    s.init_containers
        .iter()
        .flatten()
        .chain(&s.containers)
        .collect()
}

fn mounts_volume(c: &Container, volume: &str) -> bool {
    c.volume_mounts.iter().flatten().any(|m| m.name == volume)
}

#[test]
fn a_supervised_bottle_is_refused_while_the_api_server_address_is_unknown() {
    let e = validate(&bottle(true), &Settings::default()).unwrap_err();
    assert_eq!(e.reason, Reason::SuperviseUnavailable);
    assert!(e.message.contains("--api-server-for-pods"), "{}", e.message);
    // Not supervised: nothing to reach, nothing refused.
    assert!(validate(&bottle(false), &Settings::default()).is_ok());
}

#[test]
fn only_the_supervise_container_mounts_the_account_token() {
    let b = bottle(true);
    let s = settings();
    let d = desired(&b, validate(&b, &s).unwrap(), &s, "AA");
    let spec = d.pod.spec.as_ref().unwrap();
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("minimal-supervise")
    );
    // No token is mounted by default anywhere; the one projected volume holds it.
    assert_eq!(spec.automount_service_account_token, Some(false));
    let with_token: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| {
            v.projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .any(|s| s.service_account_token.is_some())
        })
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(with_token, ["supervise-identity"]);
    let holders: Vec<&str> = all_containers(&d.pod)
        .into_iter()
        .filter(|c| mounts_volume(c, "supervise-identity"))
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(holders, ["supervise"]);
    let sup = all_containers(&d.pod)
        .into_iter()
        .find(|c| c.name == "supervise")
        .unwrap();
    let sc = sup.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user, Some(layout::SUPERVISE_UID));
    // A native sidecar: up before the agent, which may call it at once.
    assert_eq!(sup.restart_policy.as_deref(), Some("Always"));
    let agent = &spec.containers[0];
    assert!(mounts_volume(agent, "config-agent-mcp"));
    assert!(!mounts_volume(agent, "config-supervise"));
}

#[test]
fn the_agent_may_reach_supervise_and_supervise_only_the_api_server() {
    let b = bottle(true);
    let s = settings();
    let d = desired(&b, validate(&b, &s).unwrap(), &s, "AA");
    let netinit = all_containers(&d.pod)
        .into_iter()
        .find(|c| c.name == "netinit")
        .unwrap();
    let args = netinit.args.as_ref().unwrap().join(" ");
    assert!(
        args.contains(&format!("--agent-port {}", layout::SUPERVISE_PORT)),
        "{args}"
    );
    assert!(
        args.contains(&format!("--sidecar-uid {}", layout::SUPERVISE_UID)),
        "{args}"
    );
    // The Pod's policy opens the API server; netinit keeps it to supervise's UID.
    let api_arg = format!(
        "--api-server 192.0.2.10:6443 --api-uid {}",
        layout::SUPERVISE_UID
    );
    assert!(args.contains(&api_arg), "{args}");
    let egress = &d.network_policies[1];
    let rules = egress.spec.as_ref().unwrap().egress.as_ref().unwrap();
    let api = rules.last().unwrap();
    let peer = &api.to.as_ref().unwrap()[0];
    assert_eq!(peer.ip_block.as_ref().unwrap().cidr, "192.0.2.10/32");
    assert_eq!(
        api.ports.as_ref().unwrap()[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(6443))
    );
    // Without supervise the API server is not in the policy at all.
    let plain = bottle(false);
    let d = desired(&plain, validate(&plain, &s).unwrap(), &s, "AA");
    let rules = d.network_policies[1]
        .spec
        .as_ref()
        .unwrap()
        .egress
        .as_ref()
        .unwrap();
    assert_eq!(rules.len(), 2, "DNS and public only");
    assert!(d.identity.is_none());
    assert!(
        !d.config_map
            .data
            .as_ref()
            .unwrap()
            .contains_key(files::SUPERVISE)
    );
    assert!(all_containers(&d.pod).iter().all(|c| c.name != "supervise"));
    assert!(d.pod.spec.unwrap().service_account_name.is_none());
}

#[test]
fn the_role_grants_asking_for_this_bottle_alone_and_never_deciding() {
    let b = bottle(true);
    let id = identity(&b).unwrap();
    let rules = id.role.rules.unwrap();
    let ask = rules
        .iter()
        .find(|r| r.verbs.contains(&"request-access".to_string()))
        .unwrap();
    assert_eq!(
        ask.resource_names.as_deref(),
        Some(&["minimal".to_string()][..])
    );
    for r in &rules {
        for verb in ["approve", "update", "delete", "*"] {
            assert!(!r.verbs.iter().any(|v| v == verb), "{verb} in {r:?}");
        }
        // Patch only of request status (its appliedAt report), never of the requests.
        if r.verbs.contains(&"patch".to_string()) {
            assert_eq!(
                r.resources.as_deref(),
                Some(&["accessrequests/status".to_string()][..])
            );
        }
    }
    assert_eq!(id.binding.role_ref.name, "minimal-supervise");
    let subject = &id.binding.subjects.unwrap()[0];
    assert_eq!(
        (subject.kind.as_str(), subject.namespace.as_deref()),
        ("ServiceAccount", Some("team"))
    );
    assert_eq!(
        id.service_account.automount_service_account_token,
        Some(false)
    );
}

#[test]
fn the_sidecar_config_names_the_account_and_the_files_it_mounts() {
    let b = bottle(true);
    let s = settings();
    let d = desired(&b, validate(&b, &s).unwrap(), &s, "AA");
    let data = d.config_map.data.unwrap();
    let cfg: SuperviseConfig = serde_norway::from_str(&data[files::SUPERVISE]).unwrap();
    assert_eq!(
        cfg.requested_by,
        "system:serviceaccount:team:minimal-supervise"
    );
    assert_eq!(cfg.api_server, "https://192.0.2.10:6443");
    assert!(cfg.token_file.starts_with(layout::SUPERVISE_IDENTITY_DIR));
    assert!(cfg.egress_config.ends_with(files::EGRESS));
    let mcp: serde_json::Value = serde_json::from_str(&data[files::AGENT_MCP]).unwrap();
    assert_eq!(
        mcp["mcpServers"]["supervise"]["url"],
        format!("http://127.0.0.1:{}/mcp", layout::SUPERVISE_PORT)
    );
}
