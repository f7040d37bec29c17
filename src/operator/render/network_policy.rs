//! NetworkPolicies that mirror the reference system's internal/egress split around the Pod:
//! nothing may connect in, and the Pod may connect out only to cluster DNS and to public
//! addresses on the ports its routes and remotes need (and, supervised, to the API server).

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Settings, StringMap, meta};
use crate::contract::api::Bottle;
use crate::contract::model::Policy;

/// IPv4 ranges a bottle never reaches directly: private, shared (CGN), loopback, link-local
/// (cloud metadata), multicast and reserved.
pub const DENIED_V4: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
];

/// IPv6 ranges a bottle never reaches directly: loopback, ULA, link-local, multicast.
/// (IPv4-mapped addresses are IPv4 to the API server and covered by the IPv4 list.)
pub const DENIED_V6: &[&str] = &["::1/128", "fc00::/7", "fe80::/10", "ff00::/8"];

/// Parses an operator-supplied CIDR (`10.96.0.0/12`, `fd00::/108`); host bits must be zero,
/// so what the flag says is exactly the range the policy denies.
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let net: ipnet::IpNet = s
        .parse()
        .map_err(|_| format!("{s:?} is not a CIDR such as 10.96.0.0/12 or fd00::/108"))?;
    if net.trunc() != net {
        return Err(format!("{s:?} has host bits set; write {}", net.trunc()));
    }
    Ok(net)
}

fn selector(b: &Bottle) -> LabelSelector {
    LabelSelector {
        match_labels: Some(StringMap::from([(
            meta::BOTTLE_LABEL.into(),
            meta::pod_name(b),
        )])),
        ..Default::default()
    }
}

fn port(protocol: &str, port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(port.into())),
        ..Default::default()
    }
}

fn ip_block(cidr: &str, except: Vec<String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.into(),
            except: Some(except),
        }),
        ..Default::default()
    }
}

/// The two policies: `<bottle>-internal` (deny all ingress) and `<bottle>-egress`.
pub fn render(b: &Bottle, p: &Policy, s: &Settings) -> Vec<NetworkPolicy> {
    let internal = NetworkPolicy {
        metadata: meta::owned(b, meta::internal_policy_name(b)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(b)),
            policy_types: Some(vec!["Ingress".into()]),
            ..Default::default()
        }),
    };

    let (v4_extra, v6_extra): (Vec<&ipnet::IpNet>, Vec<_>) = s
        .cluster_cidrs
        .iter()
        .partition(|c| matches!(c, ipnet::IpNet::V4(_)));
    let except_v4 = DENIED_V4
        .iter()
        .map(|c| c.to_string())
        .chain(v4_extra.iter().map(ToString::to_string))
        .collect();
    let except_v6 = DENIED_V6
        .iter()
        .map(|c| c.to_string())
        .chain(v6_extra.iter().map(ToString::to_string))
        .collect();
    let dns = NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_labels: Some(StringMap::from([(
                    "kubernetes.io/metadata.name".into(),
                    s.dns_namespace.clone(),
                )])),
                ..Default::default()
            }),
            pod_selector: Some(LabelSelector {
                match_labels: Some(StringMap::from([s.dns_pod_label.clone()])),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    };
    let public = NetworkPolicyEgressRule {
        to: Some(vec![
            ip_block("0.0.0.0/0", except_v4),
            ip_block("::/0", except_v6),
        ]),
        ports: Some(
            p.egress_ports()
                .into_iter()
                .map(|n| port("TCP", n))
                .collect(),
        ),
    };
    let mut rules = vec![dns, public];
    // supervise's one connection: the API server's own address (validation refuses a
    // supervised Bottle when it is unknown).
    if let Some(api) = s.api_server.filter(|_| b.spec.supervised()) {
        let host = match api.ip() {
            std::net::IpAddr::V4(ip) => format!("{ip}/32"),
            std::net::IpAddr::V6(ip) => format!("{ip}/128"),
        };
        rules.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: host,
                    except: None,
                }),
                ..Default::default()
            }]),
            ports: Some(vec![port("TCP", api.port())]),
        });
    }
    let egress = NetworkPolicy {
        metadata: meta::owned(b, meta::egress_policy_name(b)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector(b)),
            policy_types: Some(vec!["Egress".into()]),
            egress: Some(rules),
            ..Default::default()
        }),
    };
    vec![internal, egress]
}
