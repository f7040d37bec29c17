//! `netinit`: the in-Pod half of the internal/egress split. All containers of a Pod share one
//! network namespace, so the split is drawn by socket owner: sidecar UIDs may connect out,
//! the agent UID may reach only the sidecars' agent-facing ports on loopback, and every other
//! packet from the agent is rejected (TCP reset or ICMP unreachable, so it fails fast).
//! The rules are rendered here as pure text and loaded with `iptables-restore` /
//! `ip6tables-restore` by an init container holding `NET_ADMIN`, which exits afterwards.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// Name of the chain holding the agent's rules.
pub const AGENT_CHAIN: &str = "BOTTLE-AGENT";

/// Who may do what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The agent's UID.
    pub agent_uid: u32,
    /// UIDs allowed to connect anywhere the NetworkPolicies allow.
    pub sidecar_uids: Vec<u32>,
    /// Loopback TCP ports the agent may connect to.
    pub agent_ports: Vec<u16>,
    /// The API server, and the one UID (supervise's) that may connect to it: the egress
    /// NetworkPolicy opens it to the whole Pod, and no other sidecar has business there.
    pub api_server: Option<(std::net::SocketAddr, u32)>,
}

/// IP family of a rule set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

/// The `iptables-restore` input for one family. The filter table is replaced as a whole:
/// the Pod's network namespace is new, and a complete table leaves nothing half-applied.
pub fn render(plan: &Plan, family: Family) -> String {
    let (loopback, unreachable) = match family {
        Family::V4 => ("127.0.0.1/32", "icmp-port-unreachable"),
        Family::V6 => ("::1/128", "icmp6-port-unreachable"),
    };
    let mut out =
        String::from("# Rendered by bottle-operator netinit; see src/pod/netinit.\n*filter\n");
    out.push_str(":INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    out.push_str(&format!(":{AGENT_CHAIN} - [0:0]\n"));
    if family == Family::V6 {
        // Neighbour discovery is IPv6's ARP. The kernel sends it on a socket the owner match
        // sees, so without these the catch-all below would cut every IPv6 connection. Sending
        // it by hand needs a raw socket, which no container here can open.
        for t in [
            "router-solicitation",
            "neighbour-solicitation",
            "neighbour-advertisement",
        ] {
            out.push_str(&format!(
                "-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type {t} -j ACCEPT\n"
            ));
        }
    }
    if let Some((addr, uid)) = plan.api_server {
        let host = match (addr.ip(), family) {
            (std::net::IpAddr::V4(ip), Family::V4) => Some(format!("{ip}/32")),
            (std::net::IpAddr::V6(ip), Family::V6) => Some(format!("{ip}/128")),
            _ => None,
        };
        if let Some(host) = host {
            out.push_str(&format!(
                "-A OUTPUT -d {host} -p tcp -m tcp --dport {} -m owner ! --uid-owner {uid} -j REJECT --reject-with tcp-reset\n",
                addr.port()
            ));
        }
    }
    out.push_str(&format!(
        "-A OUTPUT -m owner --uid-owner {} -j {AGENT_CHAIN}\n",
        plan.agent_uid
    ));
    for uid in &plan.sidecar_uids {
        out.push_str(&format!("-A OUTPUT -m owner --uid-owner {uid} -j ACCEPT\n"));
    }
    // Any other process with a socket (root in the agent image, a UID nobody planned for) is
    // treated like the agent. Packets without a socket (kernel resets, ICMP errors) pass.
    out.push_str(&format!(
        "-A OUTPUT -m owner --socket-exists -j {AGENT_CHAIN}\n"
    ));
    for port in &plan.agent_ports {
        out.push_str(&format!(
            "-A {AGENT_CHAIN} -o lo -d {loopback} -p tcp -m tcp --dport {port} -j ACCEPT\n"
        ));
    }
    out.push_str(&format!(
        "-A {AGENT_CHAIN} -p tcp -j REJECT --reject-with tcp-reset\n"
    ));
    out.push_str(&format!(
        "-A {AGENT_CHAIN} -j REJECT --reject-with {unreachable}\n"
    ));
    out.push_str("COMMIT\n");
    out
}

fn restore(tool: &str, rules: &str) -> anyhow::Result<()> {
    let mut child = Command::new(tool)
        .arg("-w")
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {tool} (the image must ship iptables)"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(rules.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// True when the namespace has IPv6 (an IPv4-only node has no `if_inet6`).
fn has_ipv6() -> bool {
    std::fs::read_to_string("/proc/net/if_inet6").is_ok_and(|s| !s.trim().is_empty())
}

/// Installs the rules for both families and checks they are in place.
pub fn apply(plan: &Plan) -> anyhow::Result<()> {
    restore("iptables-restore", &render(plan, Family::V4))?;
    if has_ipv6() {
        restore("ip6tables-restore", &render(plan, Family::V6))?;
    } else {
        tracing::warn!("no IPv6 in this network namespace; only IPv4 rules installed");
    }
    let saved = Command::new("iptables-save")
        .args(["-t", "filter"])
        .output()
        .context("running iptables-save")?;
    if !String::from_utf8_lossy(&saved.stdout).contains(AGENT_CHAIN) {
        bail!("the {AGENT_CHAIN} chain is missing after iptables-restore");
    }
    tracing::info!(agent_uid = plan.agent_uid, sidecars = ?plan.sidecar_uids, ports = ?plan.agent_ports, "traffic lock installed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            agent_uid: 1000,
            sidecar_uids: vec![1001, 1002],
            agent_ports: vec![9090, 9099],
            api_server: None,
        }
    }

    #[test]
    fn only_the_named_uid_may_connect_to_the_api_server() {
        let p = Plan {
            api_server: Some(("192.0.2.7:6443".parse().unwrap(), 1006)),
            ..plan()
        };
        let v4 = render(&p, Family::V4);
        let output: Vec<&str> = v4.lines().filter(|l| l.starts_with("-A OUTPUT")).collect();
        // First, before any sidecar UID is accepted.
        assert_eq!(
            output[0],
            "-A OUTPUT -d 192.0.2.7/32 -p tcp -m tcp --dport 6443 -m owner ! --uid-owner 1006 -j REJECT --reject-with tcp-reset"
        );
        // An IPv4 server adds nothing to the IPv6 table.
        assert!(!render(&p, Family::V6).contains("6443"));
    }

    #[test]
    fn agent_reaches_only_the_listed_loopback_ports() {
        let v4 = render(&plan(), Family::V4);
        let agent_rules: Vec<&str> = v4
            .lines()
            .filter(|l| l.starts_with(&format!("-A {AGENT_CHAIN}")))
            .collect();
        assert_eq!(
            agent_rules,
            [
                "-A BOTTLE-AGENT -o lo -d 127.0.0.1/32 -p tcp -m tcp --dport 9090 -j ACCEPT",
                "-A BOTTLE-AGENT -o lo -d 127.0.0.1/32 -p tcp -m tcp --dport 9099 -j ACCEPT",
                "-A BOTTLE-AGENT -p tcp -j REJECT --reject-with tcp-reset",
                "-A BOTTLE-AGENT -j REJECT --reject-with icmp-port-unreachable",
            ]
        );
        // The agent jump comes before the sidecar accepts; unknown sockets go to the agent chain.
        let output: Vec<&str> = v4.lines().filter(|l| l.starts_with("-A OUTPUT")).collect();
        assert_eq!(output.len(), 4);
        assert_eq!(
            output.first(),
            Some(&"-A OUTPUT -m owner --uid-owner 1000 -j BOTTLE-AGENT")
        );
        assert_eq!(
            output.last(),
            Some(&"-A OUTPUT -m owner --socket-exists -j BOTTLE-AGENT")
        );
        assert!(v4.ends_with("COMMIT\n"));
    }

    #[test]
    fn ipv6_uses_its_own_loopback_and_reject_type_and_keeps_neighbour_discovery() {
        let v6 = render(&plan(), Family::V6);
        assert!(v6.contains(
            "-A OUTPUT -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT"
        ));
        assert!(!render(&plan(), Family::V4).contains("icmpv6"));
        assert!(v6.contains("-d ::1/128 -p tcp -m tcp --dport 9090 -j ACCEPT"));
        assert!(v6.contains("--reject-with icmp6-port-unreachable"));
        assert!(!v6.contains("127.0.0.1"));
    }
}
