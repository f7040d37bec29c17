//! `kubectl bottle`: the people-facing side. Formatting is pure (tested without a cluster);
//! the binary in `src/bin/kubectl-bottle.rs` fetches and prints.

use std::fmt::Write;

use k8s_openapi::api::core::v1::Pod;

use crate::api::Bottle;

/// `kubectl bottle status` output for a Bottle and (if it exists) its Pod.
pub fn status_text(b: &Bottle, pod: Option<&Pod>) -> String {
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
                "  {:<12} ready={:<5} restarts={:<3} {what}",
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
        b.status = Some(crate::api::BottleStatus {
            observed_generation: Some(2),
            phase: Some("Degraded".into()),
            ..Default::default()
        });
        let text = status_text(&b, None);
        assert!(text.contains("Phase:        Degraded"));
        assert!(text.contains("has not seen the latest change"));
        assert!(text.contains("(none yet)"));
    }
}
