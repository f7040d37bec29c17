//! `kubectl bottle requests|request|approve|deny`: the access queue, as pure functions over
//! AccessRequests (the binary fetches and writes).

use std::fmt::Write;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use serde_json::{Value, json};

use crate::contract::api::{
    AccessPhase, AccessRequest, AccessRequestSpec, Decision, RequestedRoute, Verdict,
};

/// Who the API server says the caller is: what `requestedBy` and `decidedBy` must hold.
pub async fn whoami(client: &kube::Client) -> anyhow::Result<String> {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    let api: kube::Api<SelfSubjectReview> = kube::Api::all(client.clone());
    let review = api
        .create(
            &kube::api::PostParams::default(),
            &SelfSubjectReview::default(),
        )
        .await?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .ok_or_else(|| anyhow::anyhow!("the API server did not say who you are"))
}

/// Parses `--for`: a whole number of seconds, minutes, hours or days (`90s`, `30m`, `2h`,
/// `1d`), within what the CRD accepts (10 seconds to 30 days).
pub fn parse_for(raw: &str) -> Result<u32, String> {
    let raw = raw.trim();
    let (n, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("--for {raw:?}: say a number and a unit, like 30m or 2h"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("--for {raw:?}: the unit is one of s, m, h, d")),
    };
    let secs = n.saturating_mul(scale);
    if !(10..=2_592_000).contains(&secs) {
        return Err(format!("--for {raw:?}: a grant lasts from 10s to 30d"));
    }
    Ok(secs as u32)
}

/// A new request of `user` for `bottle`: a route when `paths` are given, else a whole host.
pub fn new_request(
    bottle: &str,
    user: &str,
    host: &str,
    paths: &[String],
    reason: &str,
) -> AccessRequest {
    let (route, allow_host) = if paths.is_empty() {
        (None, Some(host.to_string()))
    } else {
        (
            Some(RequestedRoute {
                host: host.to_string(),
                paths: paths.to_vec(),
            }),
            None,
        )
    };
    let mut r = AccessRequest::new(
        "",
        AccessRequestSpec {
            bottle: bottle.into(),
            requested_by: user.into(),
            route,
            allow_host,
            reason: reason.into(),
            decision: None,
        },
    );
    r.metadata.name = None;
    r.metadata.generate_name = Some(format!("{bottle}-"));
    r
}

/// The merge patch that records `user`'s decision.
pub fn decision_patch(
    verdict: Verdict,
    user: &str,
    paths: Option<Vec<String>>,
    for_seconds: Option<u32>,
    reason: Option<String>,
) -> Value {
    let d = Decision {
        verdict,
        decided_by: user.into(),
        paths,
        for_seconds,
        reason,
    };
    json!({"spec": {"decision": d}})
}

/// How long ago `since` was, as kubectl says it (`45s`, `12m`, `3h`, `2d`).
pub fn age(since: Option<Timestamp>, now: Timestamp) -> String {
    let Some(since) = since else {
        return "-".into();
    };
    let s = now.duration_since(since).as_secs().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// Where `r` stands (`Pending` until the operator has said).
pub fn phase(r: &AccessRequest) -> AccessPhase {
    r.status.as_ref().and_then(|s| s.phase).unwrap_or_default()
}

/// What `r` asks for, in one line: `host/path,/path`, or `host (any path)`.
pub fn asks(r: &AccessRequest) -> String {
    match (&r.spec.route, &r.spec.allow_host) {
        (Some(route), _) => format!("{}{}", route.host, route.paths.join(",")),
        (None, Some(h)) => format!("{h} (any path)"),
        (None, None) => "-".into(),
    }
}

/// The queue as `kubectl bottle requests` prints it: pending first (oldest first), then the
/// rest newest first.
pub fn requests_table(items: &[AccessRequest], now: Timestamp, namespaces: bool) -> String {
    let mut rows: Vec<&AccessRequest> = items.iter().collect();
    let created = |r: &AccessRequest| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
    rows.sort_by(|a, b| {
        let (pa, pb) = (
            phase(a) == AccessPhase::Pending,
            phase(b) == AccessPhase::Pending,
        );
        pb.cmp(&pa).then_with(|| {
            if pa {
                created(a).cmp(&created(b))
            } else {
                created(b).cmp(&created(a))
            }
        })
    });
    let mut table: Vec<Vec<String>> = vec![
        [
            "NAMESPACE",
            "NAME",
            "BOTTLE",
            "ASKS",
            "PHASE",
            "DECIDED-BY",
            "AGE",
            "REASON",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for r in rows {
        let st = r.status.clone().unwrap_or_default();
        table.push(vec![
            r.namespace().unwrap_or_default(),
            r.name_any(),
            r.spec.bottle.clone(),
            asks(r),
            format!("{:?}", phase(r)),
            st.decided_by.unwrap_or_else(|| "-".into()),
            age(created(r), now),
            r.spec.reason.replace('\n', " "),
        ]);
    }
    let skip = usize::from(!namespaces);
    let widths: Vec<usize> = (0..8)
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &table {
        let cells: Vec<String> = (skip..8)
            .map(|i| {
                if i == 7 {
                    row[i].clone()
                } else {
                    format!("{:w$}", row[i], w = widths[i])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", cells.join("   ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::api::AccessRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn for_takes_a_number_and_a_unit_within_the_crd_bounds() {
        assert_eq!(parse_for("2h"), Ok(7200));
        assert_eq!(parse_for("90s"), Ok(90));
        assert_eq!(parse_for("1d"), Ok(86_400));
        for bad in [
            "",
            "h",
            "2",
            "2w",
            "9s",
            "31d",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(parse_for(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_request_without_paths_asks_for_the_whole_host() {
        let r = new_request("b", "alice", "pypi.org", &[], "install deps");
        assert_eq!(r.spec.allow_host.as_deref(), Some("pypi.org"));
        assert!(r.spec.route.is_none());
        assert_eq!(r.metadata.generate_name.as_deref(), Some("b-"));
        let r = new_request(
            "b",
            "alice",
            "api.github.com",
            &["/repos/x/".into()],
            "read",
        );
        assert_eq!(r.spec.route.unwrap().paths, ["/repos/x/"]);
    }

    #[test]
    fn the_queue_lists_pending_oldest_first_then_the_rest() {
        let t = |s: &str| s.parse::<Timestamp>().unwrap();
        let mk = |name: &str, at: &str, phase: AccessPhase| {
            let mut r = new_request(
                "b",
                "u",
                &format!("{name}.example"),
                &["/x".into()],
                "why\nnot",
            );
            r.metadata.name = Some(name.into());
            r.metadata.namespace = Some("ns".into());
            r.metadata.creation_timestamp = Some(Time(t(at)));
            r.status = Some(AccessRequestStatus {
                phase: Some(phase),
                ..Default::default()
            });
            r
        };
        let items = [
            mk("done", "2026-12-01T09:00:00Z", AccessPhase::Approved),
            mk("young", "2026-12-01T09:59:00Z", AccessPhase::Pending),
            mk("old", "2026-12-01T09:00:00Z", AccessPhase::Pending),
        ];
        let text = requests_table(&items, t("2026-12-01T10:00:00Z"), false);
        let names: Vec<&str> = text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().next().unwrap())
            .collect();
        assert_eq!(names, ["old", "young", "done"], "{text}");
        assert!(text.lines().next().unwrap().starts_with("NAME "), "{text}");
        assert!(text.contains("old.example/x"), "{text}");
        assert!(text.contains("why not"), "{text}");
        assert!(text.contains("60m"), "{text}");
        assert!(requests_table(&items, t("2026-12-01T10:00:00Z"), true).starts_with("NAMESPACE"));
    }
}
