//! Pure: the dashboard's HTML. Everything from the cluster is escaped (an agent writes its
//! request's reason); the only script carries the per-start nonce the CSP names.

use std::fmt::Write;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Event;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::contract::api::{AccessPhase, AccessRequest, Bottle};
use crate::plugin::access::{age, asks, phase};
use crate::pod::core::refused_hosts::RefusedHost;

/// Hosts egress refused lately, per bottle (namespace, name), or why they are unknown.
pub type Refused = std::collections::HashMap<(String, String), Result<Vec<RefusedHost>, String>>;

/// At most this many refused hosts are shown per bottle (newest first).
const REFUSED_SHOWN: usize = 5;

/// What a page shows, read from the dashboard's watch stores.
pub struct View<'a> {
    /// The user the API server says this is.
    pub user: &'a str,
    /// The namespace shown, or `None` for every namespace.
    pub namespace: Option<&'a str>,
    /// Bottles in scope.
    pub bottles: &'a [Arc<Bottle>],
    /// AccessRequests in scope.
    pub requests: &'a [Arc<AccessRequest>],
    /// Events about Bottles and AccessRequests in scope.
    pub events: &'a [Arc<Event>],
    /// Hosts each bottle's egress refused lately, by (namespace, name); read from the Pods.
    pub refused: &'a Refused,
    /// The clock the ages are measured with.
    pub now: Timestamp,
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The whole page: the live part, and the script that refreshes it every two seconds
/// (but not while a decision form has focus, so typing is never lost).
pub fn page(view: &View, token: &str, nonce: &str) -> String {
    let scope = view.namespace.map_or("every namespace".to_string(), |n| {
        format!("namespace {}", escape(n))
    });
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bottles: access queue</title>
<style nonce="{nonce}">
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #111; }}
table {{ border-collapse: collapse; margin-bottom: 1.5rem; }}
th, td {{ border-bottom: 1px solid #ccc; padding: .3rem .6rem; text-align: left; vertical-align: top; }}
form {{ display: flex; flex-wrap: wrap; gap: .4rem; align-items: end; }}
label {{ display: flex; flex-direction: column; font-size: .85rem; }}
button {{ padding: .3rem .8rem; }}
button:focus-visible, input:focus-visible, select:focus-visible {{ outline: 3px solid #1a5fb4; }}
.none {{ color: #555; }}
</style>
</head>
<body>
<header><h1>Bottles</h1><p>Signed in as <strong>{user}</strong>, {scope}. The page follows the cluster live.</p></header>
<main id="live" aria-live="polite">
{live}
</main>
<script nonce="{nonce}">
const live = document.getElementById("live");
setInterval(async () => {{
  if (document.activeElement && document.activeElement.closest("form")) return;
  const r = await fetch("/fragment?token={token}", {{ cache: "no-store" }});
  if (r.ok) live.innerHTML = await r.text();
}}, 2000);
</script>
</body>
</html>
"#,
        user = escape(view.user),
        live = fragment(view, token),
    )
}

/// The live part: the queue with its decision forms, the bottles, recent decisions and
/// Events.
pub fn fragment(view: &View, token: &str) -> String {
    let mut out = String::new();
    let mut waiting: Vec<&AccessRequest> = view
        .requests
        .iter()
        .map(|r| &**r)
        .filter(|r| phase(r) == AccessPhase::Pending)
        .collect();
    waiting.sort_by_key(|r| r.metadata.creation_timestamp.clone().map(|t| t.0));
    let _ = writeln!(
        out,
        "<section aria-labelledby=\"queue\"><h2 id=\"queue\">Waiting for a decision ({})</h2>",
        waiting.len()
    );
    if waiting.is_empty() {
        let _ = writeln!(out, "<p class=\"none\">Nothing waits.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><thead><tr><th scope=\"col\">Request</th><th scope=\"col\">Bottle</th><th scope=\"col\">Asks</th><th scope=\"col\">Reason</th><th scope=\"col\">Age</th><th scope=\"col\">Decision</th></tr></thead><tbody>"
        );
        for r in waiting {
            let ns = r.namespace().unwrap_or_default();
            let name = r.name_any();
            let id = escape(&format!("{ns}-{name}"));
            let paths = r
                .spec
                .route
                .as_ref()
                .map(|x| x.paths.join(" "))
                .unwrap_or_default();
            let narrow = if r.spec.route.is_some() {
                format!(
                    "<label for=\"paths-{id}\">Paths (narrow, space-separated)<input id=\"paths-{id}\" name=\"paths\" value=\"{}\"></label>",
                    escape(&paths)
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                out,
                "<tr><td>{ns_name}</td><td>{bottle}</td><td>{asks}</td><td>{reason}</td><td>{age}</td><td>\
<form method=\"post\" action=\"/decide\" aria-label=\"decide {name_attr}\">\
<input type=\"hidden\" name=\"token\" value=\"{token}\">\
<input type=\"hidden\" name=\"namespace\" value=\"{ns_attr}\">\
<input type=\"hidden\" name=\"name\" value=\"{name_attr}\">\
{narrow}\
<label for=\"for-{id}\">For<select id=\"for-{id}\" name=\"for\"><option value=\"\">until revoked</option><option>30m</option><option>2h</option><option>1d</option></select></label>\
<label for=\"why-{id}\">Note for the agent<input id=\"why-{id}\" name=\"reason\"></label>\
<button type=\"submit\" name=\"verdict\" value=\"Approve\">Approve</button>\
<button type=\"submit\" name=\"verdict\" value=\"Deny\">Deny</button>\
</form></td></tr>",
                ns_name = escape(&format!("{ns}/{name}")),
                bottle = escape(&r.spec.bottle),
                asks = escape(&asks(r)),
                reason = escape(&r.spec.reason),
                age = age(
                    r.metadata.creation_timestamp.as_ref().map(|t| t.0),
                    view.now
                ),
                name_attr = escape(&name),
                ns_attr = escape(&ns),
                token = escape(token),
            );
        }
        let _ = writeln!(out, "</tbody></table>");
    }
    let _ = writeln!(out, "</section>");

    let _ = writeln!(
        out,
        "<section aria-labelledby=\"bottles\"><h2 id=\"bottles\">Bottles ({})</h2>",
        view.bottles.len()
    );
    if view.bottles.is_empty() {
        let _ = writeln!(out, "<p class=\"none\">No bottles.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><thead><tr><th scope=\"col\">Bottle</th><th scope=\"col\">Phase</th><th scope=\"col\">Ready</th><th scope=\"col\">Waiting requests</th><th scope=\"col\">Refused lately</th></tr></thead><tbody>"
        );
        let mut bottles: Vec<&Bottle> = view.bottles.iter().map(|b| &**b).collect();
        bottles.sort_by_key(|b| (b.namespace(), b.name_any()));
        for b in bottles {
            let st = b.status.clone().unwrap_or_default();
            let ready = st
                .conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_else(|| "-".into());
            let waiting = view
                .requests
                .iter()
                .filter(|r| {
                    r.namespace() == b.namespace()
                        && r.spec.bottle == b.name_any()
                        && phase(r) == AccessPhase::Pending
                })
                .count();
            let key = (b.namespace().unwrap_or_default(), b.name_any());
            let refused = match view.refused.get(&key) {
                Some(Ok(hosts)) if !hosts.is_empty() => hosts
                    .iter()
                    .take(REFUSED_SHOWN)
                    .map(|h| match h.paths.first() {
                        Some(p) => format!("{}{p} ×{}", h.host, h.count),
                        None => format!("{} ×{}", h.host, h.count),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                // The dashboard acts as its user: reading a Pod's egress needs pods/exec.
                Some(Err(e)) if e.to_ascii_lowercase().contains("forbidden") => {
                    "unknown (needs pods/exec)".into()
                }
                Some(Err(_)) => "unknown".into(),
                _ => "-".into(),
            };
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{waiting}</td><td>{}</td></tr>",
                escape(&format!("{}/{}", key.0, key.1)),
                escape(st.phase.as_deref().unwrap_or("Unknown")),
                escape(&ready),
                escape(&refused),
            );
        }
        let _ = writeln!(out, "</tbody></table>");
    }
    let _ = writeln!(out, "</section>");

    let mut decided: Vec<&AccessRequest> = view
        .requests
        .iter()
        .map(|r| &**r)
        .filter(|r| phase(r) != AccessPhase::Pending)
        .collect();
    decided.sort_by_key(|r| {
        std::cmp::Reverse(
            r.status
                .as_ref()
                .and_then(|s| s.decided_at.clone())
                .map(|t| t.0),
        )
    });
    let _ = writeln!(
        out,
        "<section aria-labelledby=\"decided\"><h2 id=\"decided\">Decided</h2>"
    );
    if decided.is_empty() {
        let _ = writeln!(out, "<p class=\"none\">No decisions yet.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><thead><tr><th scope=\"col\">Request</th><th scope=\"col\">Asks</th><th scope=\"col\">Phase</th><th scope=\"col\">Decided by</th><th scope=\"col\">Message</th></tr></thead><tbody>"
        );
        for r in decided.into_iter().take(20) {
            let st = r.status.clone().unwrap_or_default();
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
                escape(&format!(
                    "{}/{}",
                    r.namespace().unwrap_or_default(),
                    r.name_any()
                )),
                escape(&asks(r)),
                phase(r),
                escape(st.decided_by.as_deref().unwrap_or("-")),
                escape(st.message.as_deref().unwrap_or("")),
            );
        }
        let _ = writeln!(out, "</tbody></table>");
    }
    let _ = writeln!(out, "</section>");

    let mut events: Vec<&Event> = view.events.iter().map(|e| &**e).collect();
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
    };
    events.sort_by_key(|e| std::cmp::Reverse(when(e)));
    let _ = writeln!(
        out,
        "<section aria-labelledby=\"events\"><h2 id=\"events\">Recent Events</h2>"
    );
    if events.is_empty() {
        let _ = writeln!(out, "<p class=\"none\">No Events.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table><thead><tr><th scope=\"col\">Age</th><th scope=\"col\">Object</th><th scope=\"col\">Reason</th><th scope=\"col\">Message</th></tr></thead><tbody>"
        );
        for e in events.into_iter().take(20) {
            let o = &e.involved_object;
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                age(when(e), view.now),
                escape(&format!(
                    "{} {}",
                    o.kind.as_deref().unwrap_or("?"),
                    o.name.as_deref().unwrap_or("?")
                )),
                escape(e.reason.as_deref().unwrap_or("")),
                escape(e.message.as_deref().unwrap_or("")),
            );
        }
        let _ = writeln!(out, "</tbody></table>");
    }
    let _ = writeln!(out, "</section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::api::AccessRequestStatus;

    fn view_of<'a>(bottles: &'a [Arc<Bottle>], requests: &'a [Arc<AccessRequest>]) -> View<'a> {
        View {
            user: "alice",
            namespace: Some("team"),
            bottles,
            requests,
            events: &[],
            refused: empty_refused(),
            now: "2026-12-01T10:00:00Z".parse().unwrap(),
        }
    }

    fn empty_refused() -> &'static Refused {
        static EMPTY: std::sync::OnceLock<Refused> = std::sync::OnceLock::new();
        EMPTY.get_or_init(Refused::new)
    }

    fn request(name: &str, reason: &str, phase: AccessPhase) -> AccessRequest {
        let mut r = crate::plugin::access::new_request(
            "b",
            "agent",
            "api.example.com",
            &["/repos/".into()],
            reason,
        );
        r.metadata.name = Some(name.into());
        r.metadata.namespace = Some("team".into());
        r.status = Some(AccessRequestStatus {
            phase: Some(phase),
            ..Default::default()
        });
        r
    }

    #[test]
    fn what_an_agent_writes_is_escaped_everywhere() {
        let evil = r#"<script>alert(1)</script>" onmouseover="x"#;
        let rs = [Arc::new(request("r1", evil, AccessPhase::Pending))];
        let html = page(&view_of(&[], &rs), "tok", "nonce1");
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot; onmouseover=&quot;x"));
        // The page's one script carries the nonce.
        assert_eq!(html.matches("<script").count(), 1);
        assert!(html.contains("<script nonce=\"nonce1\">"));
        assert_eq!(escape("a&b<'\""), "a&amp;b&lt;&#39;&quot;");
    }

    #[test]
    fn each_bottle_shows_the_hosts_its_egress_refused_newest_first_and_escaped() {
        let mut b = Bottle::new("b", Default::default());
        b.metadata.namespace = Some("team".into());
        let bottles = [Arc::new(b)];
        let host = |h: &str, paths: &[&str], count| RefusedHost {
            host: h.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            count,
            last: 0,
        };
        let mut refused = Refused::new();
        let mut hosts = vec![
            host("api.example.com", &["/orgs/<x>"], 2),
            host("pypi.org", &[], 1),
        ];
        hosts.extend((0..10).map(|i| host(&format!("h{i}.example"), &[], 1)));
        refused.insert(("team".into(), "b".into()), Ok(hosts));
        let mut view = view_of(&bottles, &[]);
        view.refused = &refused;
        let html = fragment(&view, "tok");
        assert!(
            html.contains("api.example.com/orgs/&lt;x&gt; ×2, pypi.org ×1"),
            "{html}"
        );
        assert!(html.contains("h2.example ×1"));
        assert!(
            !html.contains("h3.example"),
            "at most {REFUSED_SHOWN} are shown"
        );
        // A bottle not asked yet shows a dash; one the user may not exec into says so.
        let html = fragment(&view_of(&bottles, &[]), "tok");
        assert!(html.contains("<td>0</td><td>-</td>"), "{html}");
        let mut refused = Refused::new();
        let why =
            "exec into egress: pods \"b\" is forbidden: User \"ann\" cannot create".to_string();
        refused.insert(("team".into(), "b".into()), Err(why));
        view.refused = &refused;
        assert!(fragment(&view, "tok").contains("unknown (needs pods/exec)"));
    }

    #[test]
    fn a_waiting_request_gets_a_labelled_form_with_the_token_and_the_rest_a_row() {
        let rs = [
            Arc::new(request("r1", "read issues", AccessPhase::Pending)),
            Arc::new(request("r2", "old", AccessPhase::Denied)),
        ];
        let html = fragment(&view_of(&[], &rs), "tok");
        assert_eq!(
            html.matches("<form method=\"post\" action=\"/decide\"")
                .count(),
            1
        );
        assert!(html.contains("<input type=\"hidden\" name=\"token\" value=\"tok\">"));
        assert!(html.contains("name=\"name\" value=\"r1\""));
        // Every input has a label that names it.
        for id in ["paths-team-r1", "for-team-r1", "why-team-r1"] {
            assert!(html.contains(&format!("<label for=\"{id}\">")), "{id}");
            assert!(html.contains(&format!("id=\"{id}\"")), "{id}");
        }
        assert!(html.contains("value=\"/repos/\""));
        assert!(html.contains("Waiting for a decision (1)"));
        assert!(html.contains("<td>Denied</td>"));
    }
}
