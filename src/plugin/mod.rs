//! `kubectl bottle`: the people-facing side. Formatting is pure (tested without a cluster);
//! the binary in `src/bin/kubectl-bottle.rs` fetches and prints.

pub mod access;
pub mod dashboard;
pub mod exec;

use std::fmt::Write;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};

use crate::contract::api::Bottle;
use crate::contract::config::layout::Sidecar;
use crate::pod::config_status::{Report, Verdict, verdict};
use crate::pod::core::reload::hash_bytes;

/// One sidecar's config as `status` shows it.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Which sidecar.
    pub sidecar: Sidecar,
    /// Hash of its file in the ConfigMap (as the sidecar hashes what it loads).
    pub desired: Option<String>,
    /// What its container reported through `config-status`, or why it could not be asked.
    pub report: Result<Report, String>,
}

/// The hash of `sidecar`'s file in the bottle ConfigMap, if it has one.
pub fn desired_hash(cm: &ConfigMap, sidecar: Sidecar) -> Option<String> {
    cm.data
        .as_ref()?
        .get(sidecar.file())
        .map(|body| hash_bytes(&[body.as_bytes()]))
}

/// `kubectl bottle status` output for a Bottle, its Pod (if it exists) and what its
/// sidecars say about their config.
pub fn status_text(b: &Bottle, pod: Option<&Pod>, configs: &[SidecarConfig]) -> String {
    let mut out = String::new();
    let st = b.status.clone().unwrap_or_default();
    let name = b.metadata.name.as_deref().unwrap_or("?");
    let ns = b.metadata.namespace.as_deref().unwrap_or("?");
    let _ = writeln!(out, "Bottle:       {ns}/{name}");
    let _ = writeln!(
        out,
        "Phase:        {}",
        st.phase.as_deref().unwrap_or("Unknown")
    );
    let generation = b.metadata.generation.unwrap_or(0);
    let observed = st.observed_generation.unwrap_or(0);
    let lag = if observed < generation {
        "  (the operator has not seen the latest change yet)"
    } else {
        ""
    };
    let _ = writeln!(out, "Generation:   {generation} (observed {observed}){lag}");
    let _ = writeln!(
        out,
        "Pod:          {}",
        st.pod_name.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "Config hash:  {}",
        st.config_hash.as_deref().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "CA SHA-256:   {}",
        st.ca_fingerprint.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "Conditions:");
    if st.conditions.is_empty() {
        let _ = writeln!(out, "  (none yet)");
    }
    for c in &st.conditions {
        let _ = writeln!(
            out,
            "  {:<14} {:<6} {:<18} {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    if let Some(p) = pod {
        let _ = writeln!(out, "Containers:");
        let s = p.status.as_ref();
        let statuses = s.into_iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        let mut any = false;
        for cs in statuses {
            any = true;
            let state = cs.state.as_ref();
            let what = if state.and_then(|s| s.running.as_ref()).is_some() {
                "running".to_string()
            } else if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                format!("waiting: {}", w.reason.as_deref().unwrap_or("?"))
            } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                format!(
                    "terminated: {} (exit {})",
                    t.reason.as_deref().unwrap_or("?"),
                    t.exit_code
                )
            } else {
                "unknown".to_string()
            };
            let _ = writeln!(
                out,
                "  {:<15} ready={:<5} restarts={:<3} {what}",
                cs.name, cs.ready, cs.restart_count
            );
        }
        if !any {
            let _ = writeln!(
                out,
                "  (not started: {})",
                s.and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
            );
        }
    }
    if !configs.is_empty() {
        let _ = writeln!(
            out,
            "Sidecar config (ConfigMap version, and where it stands):"
        );
    }
    for c in configs {
        let desired = c.desired.as_deref().unwrap_or("-");
        let running = c
            .report
            .as_ref()
            .ok()
            .and_then(|r| r.running.as_ref())
            .map_or("?", |s| s.config_hash.as_str());
        let word = if c.sidecar == Sidecar::Pipelock {
            "delivered"
        } else {
            "running"
        };
        let state = match verdict(c.desired.as_deref(), &c.report) {
            Verdict::InForce if c.sidecar == Sidecar::Pipelock => "delivered to pipelock".into(),
            Verdict::InForce => "in force".into(),
            Verdict::NotMounted => format!(
                "not in the volume yet (the kubelet syncs ConfigMaps within about a minute); {word} {running}"
            ),
            Verdict::NotLoaded => format!("mounted, not loaded yet; {word} {running}"),
            Verdict::Refused(why) => format!("REFUSED, still {word} {running}: {why}"),
            Verdict::Unknown(why) => format!("unknown: {why}"),
        };
        let _ = writeln!(out, "  {:<12} {desired:<16} {state}", c.sidecar.label());
    }
    out
}

/// Merges per-container log lines (each starting with an RFC 3339 timestamp, as
/// `--timestamps` gives them) into one stream ordered by time, prefixed by container.
pub fn merge_logs(per_container: &[(String, String)]) -> String {
    let mut lines: Vec<(&str, &str, &str)> = Vec::new();
    for (container, text) in per_container {
        for line in text.lines() {
            let (ts, rest) = line.split_once(' ').unwrap_or(("", line));
            lines.push((ts, container, rest));
        }
    }
    // RFC 3339 UTC timestamps with the same precision sort as strings; the sort is stable, so
    // lines of one container keep their order.
    lines.sort_by(|a, b| a.0.cmp(b.0));
    let width = per_container
        .iter()
        .map(|(c, _)| c.len())
        .max()
        .unwrap_or(0);
    lines
        .iter()
        .map(|(ts, c, rest)| format!("{ts} {c:<width$} | {rest}\n"))
        .collect()
}

/// What `kubectl bottle exec` runs in the agent: the given command, or Claude Code (with the
/// supervise tool server, from the list the operator mounts, when the Bottle has one).
pub fn agent_command(given: Vec<String>, supervised: bool) -> Vec<String> {
    if !given.is_empty() {
        return given;
    }
    let mut claude = vec!["claude".to_string()];
    if supervised {
        claude.push("--mcp-config".into());
        claude.push(format!(
            "{}/{}",
            crate::contract::config::layout::AGENT_MCP_DIR,
            crate::contract::config::layout::files::AGENT_MCP
        ));
    }
    claude
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_merge_by_time_and_keep_per_container_order() {
        let merged = merge_logs(&[
            (
                "agent".into(),
                "2026-01-01T00:00:02.000000000Z b\n2026-01-01T00:00:04.000000000Z d\n".into(),
            ),
            (
                "egress".into(),
                "2026-01-01T00:00:01.000000000Z a\n2026-01-01T00:00:03.000000000Z c\n".into(),
            ),
        ]);
        let order: Vec<&str> = merged
            .lines()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(order, ["a", "b", "c", "d"]);
        assert!(merged.lines().next().unwrap().contains("egress | a"));
    }

    #[test]
    fn status_says_when_the_operator_lags_and_lists_conditions() {
        let mut b = Bottle::new("b", Default::default());
        b.metadata.namespace = Some("ns".into());
        b.metadata.generation = Some(3);
        b.status = Some(crate::contract::api::BottleStatus {
            observed_generation: Some(2),
            phase: Some("Degraded".into()),
            ..Default::default()
        });
        let text = status_text(&b, None, &[]);
        assert!(text.contains("Phase:        Degraded"));
        assert!(text.contains("has not seen the latest change"));
        assert!(text.contains("(none yet)"));
        assert!(!text.contains("Sidecar config"));
    }

    #[test]
    fn status_says_where_each_sidecar_config_stands() {
        use crate::pod::core::reload::ReloadStatus;
        let cm = ConfigMap {
            data: Some(
                [(Sidecar::Egress.file().to_string(), "v2".to_string())]
                    .into_iter()
                    .collect(),
            ),
            ..Default::default()
        };
        let v2 = desired_hash(&cm, Sidecar::Egress).unwrap();
        assert_eq!(v2, hash_bytes(&[b"v2"]));
        assert_eq!(desired_hash(&cm, Sidecar::GitGate), None);
        let ran = |h: &str| ReloadStatus {
            config_hash: h.into(),
            ..Default::default()
        };
        let rows = [
            SidecarConfig {
                sidecar: Sidecar::Egress,
                desired: Some(v2.clone()),
                report: Ok(Report {
                    mounted: Some(v2.clone()),
                    running: Some(ran("0ld")),
                    refused: Some("host \"*\" is not allowed".into()),
                    problems: vec![],
                }),
            },
            SidecarConfig {
                sidecar: Sidecar::Pipelock,
                desired: Some("p1".into()),
                report: Ok(Report {
                    mounted: Some("p1".into()),
                    running: Some(ran("p1")),
                    ..Default::default()
                }),
            },
            SidecarConfig {
                sidecar: Sidecar::CredProxy,
                desired: Some("c2".into()),
                report: Err("the Pod is not running".into()),
            },
        ];
        let text = status_text(&Bottle::new("b", Default::default()), None, &rows);
        let line = |label: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(label))
                .unwrap_or_else(|| panic!("no {label} line in\n{text}"))
                .to_string()
        };
        assert!(
            line("egress").contains(&format!("{v2} REFUSED, still running 0ld: host")),
            "{text}"
        );
        assert!(
            line("pipelock").ends_with("p1               delivered to pipelock"),
            "{text}"
        );
        assert!(
            line("cred-proxy").contains("unknown: the Pod is not running"),
            "{text}"
        );
    }

    #[test]
    fn exec_starts_claude_with_the_supervise_tools_only_when_supervised() {
        assert_eq!(agent_command(vec![], false), ["claude"]);
        assert_eq!(
            agent_command(vec![], true),
            ["claude", "--mcp-config", "/etc/bottle/mcp/mcp.json"]
        );
        let given = vec!["bash".to_string()];
        assert_eq!(agent_command(given.clone(), true), given);
    }
}
