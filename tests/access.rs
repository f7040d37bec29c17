//! AccessRequests against a real kube-apiserver, etcd and garbage collector: the admission
//! policy and roles the chart ships (`charts/bottle-operator/templates/access-requests.yaml`),
//! people with their own client certificates working through `kubectl bottle`, the operator's
//! review, and the grant's merge into the Bottle beside the user's own fields.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bottle_operator::contract::api::{AccessPhase, AccessRequest, Bottle};
use bottle_operator::contract::config::egress::EgressConfig;
use bottle_operator::contract::config::layout::Sidecar;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::people::{Person, empty_bottle, ok, refused};
use support::{Operator, cluster, eventually, kubectl_ok, namespace, route_paths};

const WAIT: Duration = Duration::from_secs(60);

async fn client() -> Client {
    cluster().client().await.expect("client")
}

/// The agent of Bottle `bottle`: may file requests for that Bottle only (as the per-bottle
/// identity of the supervise sidecar will).
fn agent_of(ns: &str, bottle: &str) -> Person {
    Person::new(
        ns,
        &format!("agent-{bottle}"),
        &[],
        Some(json!([
            {"apiGroups": ["bottle-operator.dev"], "resources": ["accessrequests"], "verbs": ["create", "get", "list"]},
            {"apiGroups": ["bottle-operator.dev"], "resources": ["bottles"], "resourceNames": [bottle], "verbs": ["get", "request-access"]},
        ])),
    )
}

fn write_bottle_file(dir: &Path, name: &str, spec: serde_json::Value) -> PathBuf {
    let path = dir.join(format!("{name}.json"));
    let obj = json!({
        "apiVersion": "bottle-operator.dev/v1alpha1",
        "kind": "Bottle",
        "metadata": {"name": name},
        "spec": spec,
    });
    std::fs::write(&path, obj.to_string()).unwrap();
    path
}

async fn request_phase(c: &Client, ns: &str, name: &str, phase: AccessPhase) -> AccessRequest {
    let api = Api::<AccessRequest>::namespaced(c.clone(), ns);
    eventually(&format!("{name} {phase:?}"), WAIT, || async {
        let r = api.get(name).await.ok()?;
        (r.status.as_ref()?.phase == Some(phase)).then_some(r)
    })
    .await
}

/// The path prefixes egress's config (in the ConfigMap) allows on `host`.
async fn egress_paths(c: &Client, ns: &str, bottle: &str, host: &str) -> Option<Vec<String>> {
    let cm = Api::<ConfigMap>::namespaced(c.clone(), ns)
        .get(&format!("{bottle}-config"))
        .await
        .ok()?;
    let text = cm.data?.get(Sidecar::Egress.file())?.clone();
    let cfg: EgressConfig = serde_norway::from_str(&text).expect("egress config parses");
    let mut paths = cfg
        .routes
        .into_iter()
        .find(|r| r.host.as_str() == host)?
        .paths;
    paths.sort();
    Some(paths)
}

/// Waits until Bottle `a`'s route for `host` and egress's config both allow `want`.
async fn routes_become(c: &Client, ns: &str, host: &str, want: &[String], what: &str) {
    eventually(
        &format!("{what}: {want:?} in the Bottle and in egress's config"),
        WAIT,
        || async {
            (route_paths(c, ns, "a", host).await.as_deref() == Some(want)
                && egress_paths(c, ns, "a", host).await.as_deref() == Some(want))
            .then_some(())
        },
    )
    .await;
}

async fn reasons_on(c: &Client, ns: &str, kind: &str, name: &str) -> Vec<String> {
    Api::<Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| {
            e.involved_object.kind.as_deref() == Some(kind)
                && e.involved_object.name.as_deref() == Some(name)
        })
        .filter_map(|e| e.reason)
        .collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn a_request_is_approved_narrowed_merged_beside_the_users_fields_and_taken_back() {
    let ns = namespace("access-life");
    let _op = Operator::start(&ns);
    let c = client().await;
    let dir = tempfile::tempdir().unwrap();
    let host = "api.example.com";
    let mut spec = json!({"egress": {
        "allow": ["pypi.org"],
        "routes": [{"host": host, "paths": ["/user/"]}],
    }});
    let file = write_bottle_file(dir.path(), "a", spec.clone());
    // The user's own client-side apply, as most people run it.
    kubectl_ok(&["-n", &ns, "apply", "-f", file.to_str().unwrap()]);
    let agent = agent_of(&ns, "a");
    let approver = Person::new(&ns, "alice", &["bottle-approver"], None);

    let name = agent.request(&ns, "a", host, &["/repos/"]);
    let r = request_phase(&c, &ns, &name, AccessPhase::Pending).await;
    let st = r.status.clone().unwrap();
    assert_eq!(st.host.as_deref(), Some(host));
    assert!(st.expires_at.is_some());
    assert_eq!(r.spec.requested_by, agent.name);
    let bottle = Api::<Bottle>::namespaced(c.clone(), &ns)
        .get("a")
        .await
        .unwrap();
    assert!(
        r.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == bottle.metadata.uid.as_ref()),
        "the request is owned by its Bottle: {:?}",
        r.owner_references()
    );
    let queue = ok(approver.bottle(&ns, &["requests"]));
    assert!(
        queue.contains(&name)
            && queue.contains("Pending")
            && queue.contains("api.example.com/repos/"),
        "{queue}"
    );
    // Pending grants nothing.
    assert_eq!(
        route_paths(&c, &ns, "a", host).await,
        Some(strings(&["/user/"]))
    );

    ok(approver.bottle(
        &ns,
        &[
            "approve",
            &name,
            "--path",
            "/repos/x/",
            "--reason",
            "x only",
        ],
    ));
    let r = request_phase(&c, &ns, &name, AccessPhase::Approved).await;
    assert_eq!(
        r.status.as_ref().unwrap().decided_by.as_deref(),
        Some(approver.name.as_str())
    );
    let want = strings(&["/repos/x/", "/user/"]);
    routes_become(&c, &ns, host, &want, "the narrowed grant").await;
    let r = eventually(
        "the request names the config that carries it",
        WAIT,
        || async {
            let r = Api::<AccessRequest>::namespaced(c.clone(), &ns)
                .get(&name)
                .await
                .ok()?;
            r.status.as_ref()?.config_version.is_some().then_some(r)
        },
    )
    .await;
    let b = Api::<Bottle>::namespaced(c.clone(), &ns)
        .get("a")
        .await
        .unwrap();
    assert_eq!(
        r.status.clone().unwrap().config_version,
        b.status.clone().unwrap().config_hash,
        "carried by the config the Bottle reports: {:?} {:?} {:?} {}",
        r.status,
        b.status,
        b.spec.egress,
        kubectl_ok(&[
            "-n",
            &ns,
            "get",
            "events",
            "-o",
            "custom-columns=R:.reason,M:.message,T:.lastTimestamp"
        ])
    );
    let on_bottle = reasons_on(&c, &ns, "Bottle", "a").await;
    let on_request = reasons_on(&c, &ns, "AccessRequest", &name).await;
    for reason in ["AccessRequested", "AccessApproved", "AccessCarried"] {
        assert!(
            on_bottle.iter().any(|r| r == reason),
            "{reason} on the Bottle: {on_bottle:?}"
        );
        assert!(
            on_request.iter().any(|r| r == reason),
            "{reason} on the request: {on_request:?}"
        );
    }

    // Re-applying the user's file leaves the grant; so does a server-side apply of it.
    kubectl_ok(&["-n", &ns, "apply", "-f", file.to_str().unwrap()]);
    kubectl_ok(&[
        "-n",
        &ns,
        "apply",
        "--server-side",
        "--field-manager=alice-editor",
        "-f",
        file.to_str().unwrap(),
    ]);
    support::settled(
        "the Bottle after re-applying the user's file",
        WAIT,
        || async { route_paths(&c, &ns, "a", host).await },
    )
    .await;
    assert_eq!(route_paths(&c, &ns, "a", host).await, Some(want.clone()));
    // A changed route list replaces the list whole in a client-side apply: the grant heals.
    spec["egress"]["routes"][0]["paths"] = json!(["/user/", "/user2/"]);
    let file = write_bottle_file(dir.path(), "a", spec.clone());
    kubectl_ok(&["-n", &ns, "apply", "-f", file.to_str().unwrap()]);
    let healed = strings(&["/repos/x/", "/user/", "/user2/"]);
    routes_become(
        &c,
        &ns,
        host,
        &healed,
        "the user's edit and the grant side by side",
    )
    .await;

    // Deleting the request takes back exactly the grant.
    Api::<AccessRequest>::namespaced(c.clone(), &ns)
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let users = strings(&["/user/", "/user2/"]);
    routes_become(&c, &ns, host, &users, "only the user's paths left").await;

    // A whole host, approved, joins egress.allow; deleting the Bottle takes its requests.
    let whole = agent.request(&ns, "a", "crates.io", &[]);
    request_phase(&c, &ns, &whole, AccessPhase::Pending).await;
    ok(approver.bottle(&ns, &["approve", &whole]));
    eventually("crates.io allowed beside pypi.org", WAIT, || async {
        let b = Api::<Bottle>::namespaced(c.clone(), &ns)
            .get("a")
            .await
            .ok()?;
        let mut allow = b.spec.egress.allow.clone();
        allow.sort();
        (allow == strings(&["crates.io", "pypi.org"])).then_some(())
    })
    .await;
    let pending = agent.request(&ns, "a", "static.example.com", &["/x"]);
    request_phase(&c, &ns, &pending, AccessPhase::Pending).await;
    Api::<Bottle>::namespaced(c.clone(), &ns)
        .delete("a", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the Bottle's requests are collected with it",
        WAIT,
        || async {
            let left = Api::<AccessRequest>::namespaced(c.clone(), &ns)
                .list(&ListParams::default())
                .await
                .ok()?;
            left.items.is_empty().then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_admission_policy_refuses_forged_requests_and_decisions() {
    let ns = namespace("access-forged");
    let _op = Operator::start(&ns);
    let c = client().await;
    for name in ["a", "b"] {
        empty_bottle(&ns, name);
    }
    let agent = agent_of(&ns, "a");
    let approver = Person::new(&ns, "alice", &["bottle-approver", "bottle-requester"], None);
    let patcher = Person::new(
        &ns,
        "mallory",
        &[],
        Some(
            json!([{"apiGroups": ["bottle-operator.dev"], "resources": ["accessrequests"], "verbs": ["get", "patch"]}]),
        ),
    );

    // The agent of a asks for b.
    refused(
        agent.bottle(
            &ns,
            &["request", "b", "--host", "pypi.org", "--reason", "x"],
        ),
        "may not ask for access for Bottle b",
    );
    // ... or claims to be somebody else.
    let forged = json!({
        "apiVersion": "bottle-operator.dev/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": "forged", "namespace": ns},
        "spec": {"bottle": "a", "requestedBy": approver.name, "allowHost": "pypi.org", "reason": "x"},
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forged.json");
    std::fs::write(&path, forged.to_string()).unwrap();
    refused(
        agent.kubectl(&ns, &["create", "-f", path.to_str().unwrap()]),
        "spec.requestedBy must be your own user name",
    );

    let name = agent.request(&ns, "a", "api.example.com", &["/repos/"]);
    request_phase(&c, &ns, &name, AccessPhase::Pending).await;
    let decision = |by: &str, verdict: &str| {
        json!({"spec": {"decision": {"verdict": verdict, "decidedBy": by}}}).to_string()
    };
    // A decision without the approve verb, even with patch rights.
    refused(
        patcher.patch_request(&ns, &name, &decision(&patcher.name, "Approve")),
        "needs the approve verb",
    );
    // In somebody else's name.
    refused(
        approver.patch_request(&ns, &name, &decision("root", "Approve")),
        "spec.decision.decidedBy must be your own user name",
    );
    // Wider than asked.
    refused(
        approver.bottle(&ns, &["approve", &name, "--path", "/admin/"]),
        "may only narrow the requested paths",
    );
    // Changing what was asked.
    refused(
        approver.patch_request(
            &ns,
            &name,
            r#"{"spec":{"route":{"host":"api.example.com","paths":["/"]}}}"#,
        ),
        "what is asked cannot change",
    );
    // One's own request.
    let own = approver.request(&ns, "a", "pypi.org", &[]);
    request_phase(&c, &ns, &own, AccessPhase::Pending).await;
    refused(
        approver.bottle(&ns, &["approve", &own]),
        "nobody decides their own access request",
    );

    // A proper decision is final.
    ok(approver.bottle(&ns, &["deny", &name, "--reason", "not today"]));
    let r = request_phase(&c, &ns, &name, AccessPhase::Denied).await;
    let st = r.status.unwrap();
    assert_eq!(st.decided_by.as_deref(), Some(approver.name.as_str()));
    assert_eq!(st.message.as_deref(), Some("not today"));
    refused(
        approver.patch_request(&ns, &name, &decision(&approver.name, "Approve")),
        "a decision is final",
    );
    assert!(
        reasons_on(&c, &ns, "AccessRequest", &name)
            .await
            .iter()
            .any(|r| r == "AccessDenied")
    );

    // An ask the bottle could never use is refused by the operator, and then cannot be approved.
    let private = agent.request(&ns, "a", "10.0.0.1", &["/"]);
    let r = request_phase(&c, &ns, &private, AccessPhase::Denied).await;
    let st = r.status.unwrap();
    assert_eq!(st.decided_by.as_deref(), Some("bottle-operator"));
    assert!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .contains("10.0.0.1"),
        "{st:?}"
    );
    refused(
        approver.bottle(&ns, &["approve", &private]),
        "no longer pending",
    );
    // Nothing of it reached the Bottle.
    let b = Api::<Bottle>::namespaced(c.clone(), &ns)
        .get("a")
        .await
        .unwrap();
    assert!(
        b.spec.egress.routes.is_empty() && b.spec.egress.allow.is_empty(),
        "{:?}",
        b.spec.egress
    );
}

#[tokio::test]
async fn waiting_requests_are_capped_and_expire_and_a_time_boxed_grant_is_taken_back() {
    let ns = namespace("access-time");
    let _op = Operator::start_with(
        &ns,
        &[
            "--access-pending-seconds",
            "20",
            "--access-max-pending",
            "2",
        ],
        &[],
    );
    let c = client().await;
    empty_bottle(&ns, "a");
    let agent = agent_of(&ns, "a");
    let approver = Person::new(&ns, "alice", &["bottle-approver"], None);

    let first = agent.request(&ns, "a", "one.example.com", &["/"]);
    let second = agent.request(&ns, "a", "two.example.com", &["/"]);
    request_phase(&c, &ns, &first, AccessPhase::Pending).await;
    request_phase(&c, &ns, &second, AccessPhase::Pending).await;
    let third = agent.request(&ns, "a", "three.example.com", &["/"]);
    let r = request_phase(&c, &ns, &third, AccessPhase::Denied).await;
    let why = r.status.unwrap().message.unwrap_or_default();
    assert!(why.contains("2 requests of Bottle a already wait"), "{why}");

    // The second is approved for 10 s while the first waits out its 20 s.
    ok(approver.bottle(&ns, &["approve", &second, "--for", "10s"]));
    let r = request_phase(&c, &ns, &second, AccessPhase::Approved).await;
    assert!(r.status.unwrap().expires_at.is_some());
    eventually("the time-boxed grant in egress's config", WAIT, || async {
        (egress_paths(&c, &ns, "a", "two.example.com").await == Some(strings(&["/"]))).then_some(())
    })
    .await;
    let r = request_phase(&c, &ns, &first, AccessPhase::Expired).await;
    assert_eq!(
        r.status.unwrap().decided_by.as_deref(),
        Some("bottle-operator")
    );
    request_phase(&c, &ns, &second, AccessPhase::Expired).await;
    eventually(
        "the grant taken back from the Bottle and egress's config",
        WAIT,
        || async {
            (route_paths(&c, &ns, "a", "two.example.com").await.is_none()
                && egress_paths(&c, &ns, "a", "two.example.com")
                    .await
                    .is_none())
            .then_some(())
        },
    )
    .await;
    let reasons = reasons_on(&c, &ns, "Bottle", "a").await;
    assert!(
        reasons.iter().filter(|r| *r == "AccessExpired").count() >= 2,
        "{reasons:?}"
    );
    // An expired request cannot be approved after the fact.
    refused(
        approver.bottle(&ns, &["approve", &first]),
        "no longer pending",
    );
}
