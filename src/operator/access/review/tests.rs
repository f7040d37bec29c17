use super::*;
use crate::contract::api::{AccessRequestSpec, BottleSpec, Decision, EgressRoute, RequestedRoute};

fn t(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn bottle(spec: BottleSpec) -> Bottle {
    let mut b = Bottle::new("b", spec);
    b.metadata.namespace = Some("ns".into());
    b
}

fn request(name: &str, filed: &str, host: &str, paths: &[&str]) -> AccessRequest {
    let mut r = AccessRequest::new(
        name,
        AccessRequestSpec {
            bottle: "b".into(),
            requested_by: "system:serviceaccount:ns:b-supervise".into(),
            route: Some(RequestedRoute {
                host: host.into(),
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }),
            reason: "reading issues".into(),
            ..Default::default()
        },
    );
    r.metadata.creation_timestamp = Some(Time(t(filed)));
    r
}

fn decided(
    mut r: AccessRequest,
    verdict: Verdict,
    paths: Option<&[&str]>,
    for_s: Option<u32>,
) -> AccessRequest {
    r.spec.decision = Some(Decision {
        verdict,
        decided_by: "alice".into(),
        paths: paths.map(|p| p.iter().map(|s| s.to_string()).collect()),
        for_seconds: for_s,
        reason: None,
    });
    r
}

/// Feeds a review's statuses back, as the store would after the write.
fn settle(mut requests: Vec<AccessRequest>, review: &Review) -> Vec<AccessRequest> {
    for r in &mut requests {
        let got = review
            .requests
            .iter()
            .find(|x| x.name == r.name_any())
            .unwrap();
        r.status = Some(got.status.clone());
    }
    requests
}

fn phases(review: &Review) -> Vec<(String, Option<AccessPhase>, Option<String>)> {
    review
        .requests
        .iter()
        .map(|r| (r.name.clone(), r.status.phase, r.status.decided_by.clone()))
        .collect()
}

#[test]
fn a_new_request_waits_with_an_expiry_and_a_second_pass_changes_nothing() {
    let b = bottle(BottleSpec::default());
    let now = t("2026-12-01T10:00:00Z");
    let rs = vec![request(
        "r1",
        "2026-12-01T09:30:00Z",
        "api.example.com",
        &["/repos/"],
    )];
    let first = review(&b, &rs.iter().collect::<Vec<_>>(), Limits::default(), now);
    let s = &first.requests[0].status;
    assert_eq!(s.phase, Some(AccessPhase::Pending));
    assert_eq!(s.host.as_deref(), Some("api.example.com"));
    assert_eq!(s.expires_at, Some(Time(t("2026-12-01T10:30:00Z"))));
    assert_eq!(first.wake_at, Some(t("2026-12-01T10:30:00Z")));
    assert!(first.grants().next().is_none());

    let rs = settle(rs, &first);
    let later = review(
        &b,
        &rs.iter().collect::<Vec<_>>(),
        Limits::default(),
        t("2026-12-01T10:10:00Z"),
    );
    assert_eq!(later.requests, first.requests);
    let expired = review(
        &b,
        &rs.iter().collect::<Vec<_>>(),
        Limits::default(),
        t("2026-12-01T10:30:00Z"),
    );
    assert_eq!(expired.requests[0].status.phase, Some(AccessPhase::Expired));
    assert_eq!(
        expired.requests[0].status.decided_by.as_deref(),
        Some(OPERATOR)
    );
}

#[test]
fn an_approval_grants_narrowed_and_time_boxed_then_runs_out() {
    let b = bottle(BottleSpec::default());
    let r = decided(
        request(
            "r1",
            "2026-12-01T09:59:00Z",
            "api.example.com",
            &["/repos/"],
        ),
        Verdict::Approve,
        Some(&["/repos/a/"]),
        Some(600),
    );
    let now = t("2026-12-01T10:00:00Z");
    let first = review(&b, &[&r], Limits::default(), now);
    let s = &first.requests[0].status;
    assert_eq!(s.phase, Some(AccessPhase::Approved));
    assert_eq!(s.decided_by.as_deref(), Some("alice"));
    assert_eq!(s.decided_at, Some(Time(now)));
    assert_eq!(s.expires_at, Some(Time(t("2026-12-01T10:10:00Z"))));
    assert_eq!(first.wake_at, Some(t("2026-12-01T10:10:00Z")));
    let grants: Vec<&Ask> = first.grants().collect();
    assert_eq!(
        grants,
        [&Ask::Route {
            host: "api.example.com".parse().unwrap(),
            paths: vec!["/repos/a/".into()]
        }]
    );

    // The clock started at the first sight of the approval, not at each pass.
    let rs = settle(vec![r], &first);
    let mid = review(
        &b,
        &rs.iter().collect::<Vec<_>>(),
        Limits::default(),
        t("2026-12-01T10:05:00Z"),
    );
    assert_eq!(mid.requests, first.requests);
    let out = review(
        &b,
        &rs.iter().collect::<Vec<_>>(),
        Limits::default(),
        t("2026-12-01T10:10:00Z"),
    );
    assert_eq!(out.requests[0].status.phase, Some(AccessPhase::Expired));
    assert!(out.grants().next().is_none());
    assert_eq!(out.wake_at, None);
}

#[test]
fn supervise_reporting_the_grant_in_force_makes_it_applied_and_it_still_runs_out() {
    let b = bottle(BottleSpec::default());
    let r = decided(
        request(
            "r1",
            "2026-12-01T09:59:00Z",
            "api.example.com",
            &["/repos/"],
        ),
        Verdict::Approve,
        None,
        Some(600),
    );
    let now = t("2026-12-01T10:00:00Z");
    let first = review(&b, &[&r], Limits::default(), now);
    let mut rs = settle(vec![r], &first);
    // supervise's one write.
    rs[0].status.as_mut().unwrap().applied_at = Some(Time(t("2026-12-01T10:00:05Z")));
    let applied = review(&b, &[&rs[0]], Limits::default(), t("2026-12-01T10:00:06Z"));
    let s = &applied.requests[0].status;
    assert_eq!(s.phase, Some(AccessPhase::Applied));
    assert_eq!(s.applied_at, Some(Time(t("2026-12-01T10:00:05Z"))));
    // Same decision time and expiry; still a grant.
    assert_eq!(s.decided_at, first.requests[0].status.decided_at);
    assert_eq!(s.expires_at, Some(Time(t("2026-12-01T10:10:00Z"))));
    assert_eq!(applied.grants().count(), 1);
    let rs = settle(rs, &applied);
    let out = review(&b, &[&rs[0]], Limits::default(), t("2026-12-01T10:10:00Z"));
    assert_eq!(out.requests[0].status.phase, Some(AccessPhase::Expired));
    assert!(out.grants().next().is_none());
}

#[test]
fn denials_come_from_the_approver_or_from_the_operator_with_a_reason() {
    let b = bottle(BottleSpec::default());
    let now = t("2026-12-01T10:00:00Z");
    let denied = decided(
        request(
            "a-denied",
            "2026-12-01T09:00:01Z",
            "api.example.com",
            &["/"],
        ),
        Verdict::Deny,
        None,
        None,
    );
    let private = request("b-private", "2026-12-01T09:00:02Z", "10.1.2.3", &["/"]);
    let got = review(&b, &[&denied, &private], Limits::default(), now);
    assert_eq!(
        phases(&got),
        [
            (
                "a-denied".into(),
                Some(AccessPhase::Denied),
                Some("alice".into())
            ),
            (
                "b-private".into(),
                Some(AccessPhase::Denied),
                Some(OPERATOR.into())
            ),
        ]
    );
    let why = got.requests[1].status.message.clone().unwrap();
    assert!(why.contains("10.1.2.3"), "{why}");
}

#[test]
fn past_the_pending_cap_requests_are_refused_in_filing_order() {
    let b = bottle(BottleSpec::default());
    let now = t("2026-12-01T10:00:00Z");
    let rs: Vec<AccessRequest> = (0..Limits::default().max_pending + 2)
        .map(|i| {
            request(
                &format!("r{i}"),
                &format!("2026-12-01T09:59:{i:02}Z"),
                &format!("h{i}.example.com"),
                &["/"],
            )
        })
        .collect();
    // Handed over in any order: filing time decides who is over the cap.
    let mut refs: Vec<&AccessRequest> = rs.iter().collect();
    refs.reverse();
    let got = review(&b, &refs, Limits::default(), now);
    let denied: Vec<&str> = got
        .requests
        .iter()
        .filter(|r| r.status.phase == Some(AccessPhase::Denied))
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(
        denied,
        [
            format!("r{}", Limits::default().max_pending),
            format!("r{}", Limits::default().max_pending + 1)
        ]
    );
    // A refusal is final: once one waiting request is decided, the refused stay refused.
    let mut rs = settle(rs, &got);
    rs[0] = decided(rs[0].clone(), Verdict::Deny, None, None);
    let again = review(&b, &rs.iter().collect::<Vec<_>>(), Limits::default(), now);
    assert_eq!(
        again.requests[Limits::default().max_pending].status.phase,
        Some(AccessPhase::Denied)
    );
}

#[test]
fn an_approval_the_bottle_could_not_run_with_is_refused_not_written() {
    let mut spec = BottleSpec::default();
    spec.egress.routes.push(EgressRoute {
        host: "API.example.com".into(),
        paths: vec!["/a".into()],
        auth: None,
    });
    let b = bottle(spec);
    let r = decided(
        request("r1", "2026-12-01T09:59:00Z", "api.example.com", &["/b"]),
        Verdict::Approve,
        None,
        None,
    );
    let got = review(&b, &[&r], Limits::default(), t("2026-12-01T10:00:00Z"));
    let s = &got.requests[0].status;
    assert_eq!(s.phase, Some(AccessPhase::Denied), "{s:?}");
    assert!(
        s.message.as_deref().unwrap().contains("could not run"),
        "{s:?}"
    );
    assert!(got.grants().next().is_none());
}

#[test]
fn the_patch_merges_paths_per_host_and_leaves_an_open_route_alone() {
    let mut spec = BottleSpec::default();
    spec.egress.routes.push(EgressRoute {
        host: "open.example.com".into(),
        ..Default::default()
    });
    let b = bottle(spec);
    let approve = |name: &str, host: &str, paths: &[&str]| {
        decided(
            request(name, "2026-12-01T09:59:00Z", host, paths),
            Verdict::Approve,
            None,
            None,
        )
    };
    let mut allow = approve("r3", "unused.example", &["/"]);
    allow.spec.route = None;
    allow.spec.allow_host = Some("pypi.org".into());
    let rs = [
        approve("r1", "api.example.com", &["/b"]),
        approve("r2", "api.example.com", &["/a"]),
        allow,
        approve("r4", "open.example.com", &["/x"]),
    ];
    let got = review(
        &b,
        &rs.iter().collect::<Vec<_>>(),
        Limits::default(),
        t("2026-12-01T10:00:00Z"),
    );
    assert_eq!(got.grants().count(), 4);
    let (body, hash) = grants_patch(&b, got.grants());
    assert_eq!(
        body["spec"],
        json!({"egress": {
            "allow": ["pypi.org"],
            "routes": [{"host": "api.example.com", "paths": ["/a", "/b"]}],
        }})
    );
    assert_eq!(
        body["metadata"]["annotations"][GRANTS_ANNOTATION],
        json!(hash)
    );
    assert!(grants_due(&b, &got, &hash), "never applied yet");

    // Once applied the set is carried; a client-side apply that drops it is seen.
    let mut carried = b.clone();
    for g in got.grants() {
        g.add_to(&mut carried.spec);
    }
    carried
        .annotations_mut()
        .insert(GRANTS_ANNOTATION.into(), hash.clone());
    assert!(!grants_due(&carried, &got, &hash));
    let mut dropped = carried.clone();
    dropped
        .spec
        .egress
        .routes
        .retain(|r| r.host != "api.example.com");
    assert!(grants_due(&dropped, &got, &hash));

    // No grants: nothing to do for a Bottle that never had any, a take-back for one that had.
    let none = Review::default();
    let (empty, empty_hash) = grants_patch(&b, none.grants());
    assert_eq!(empty["spec"], json!({}));
    assert!(!grants_due(&b, &none, &empty_hash));
    assert!(grants_due(&carried, &none, &empty_hash));
}

#[test]
fn a_waiting_request_keeps_its_place_when_a_newer_one_sorts_before_it() {
    let b = bottle(BottleSpec::default());
    let now = t("2026-12-01T10:00:00Z");
    let limits = Limits {
        max_pending: 1,
        ..Limits::default()
    };
    let older = request("z-older", "2026-12-01T09:59:59Z", "one.example.com", &["/"]);
    let first = review(&b, &[&older], limits, now);
    let older = settle(vec![older], &first).remove(0);
    // Filed in the same second, with a name that sorts first.
    let newer = request("a-newer", "2026-12-01T09:59:59Z", "two.example.com", &["/"]);
    let got = review(&b, &[&newer, &older], limits, now);
    let phase = |name: &str| {
        got.requests
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.status.phase)
    };
    assert_eq!(phase("z-older"), Some(AccessPhase::Pending));
    assert_eq!(phase("a-newer"), Some(AccessPhase::Denied));
}
