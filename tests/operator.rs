//! The operator against a real kube-apiserver, etcd and kube-controller-manager.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use bottle_operator::contract::api::Bottle;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::{
    Operator, cluster, eventually, kubectl, kubectl_ok, namespace, namespace_on_node, new_bottle,
    repo, settled,
};

const WAIT: Duration = Duration::from_secs(60);

async fn client() -> Client {
    cluster().client().await.expect("client")
}

async fn pod(c: &Client, ns: &str, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(c.clone(), ns)
        .get_opt(name)
        .await
        .expect("get pod")
}

async fn bottle(c: &Client, ns: &str, name: &str) -> Bottle {
    Api::<Bottle>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .expect("get bottle")
}

fn condition(b: &Bottle, type_: &str) -> Option<(String, String)> {
    b.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

async fn wait_condition(
    c: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Bottle {
    let want = (status.to_string(), reason.to_string());
    eventually(
        &format!("{name} {type_}={status}/{reason}"),
        WAIT,
        || async {
            let b = bottle(c, ns, name).await;
            (condition(&b, type_).as_ref() == Some(&want)).then_some(b)
        },
    )
    .await
}

async fn events_with_reason(c: &Client, ns: &str, reason: &str) -> Vec<Event> {
    let all = Api::<Event>::namespaced(c.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("events");
    all.items
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect()
}

fn all_names(p: &Pod) -> BTreeSet<String> {
    bottle_operator::operator::render::pod::container_names(p)
        .into_iter()
        .collect()
}

#[tokio::test]
async fn full_example_applied_with_kubectl_creates_every_object() {
    let ns = namespace("full");
    let _op = Operator::start(&ns);
    let c = client().await;
    let example = repo().join("examples/bottle-full.yaml");
    kubectl_ok(&["-n", &ns, "apply", "-f", example.to_str().unwrap()]);

    let p = eventually("the full bottle's Pod", WAIT, || pod(&c, &ns, "full")).await;
    let want: BTreeSet<String> = [
        "netinit",
        "ca-bundle",
        "pipelock-config",
        "pipelock",
        "git-gate",
        "cred-proxy",
        "egress",
        "agent",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(all_names(&p), want);
    let b = wait_condition(&c, &ns, "full", "ConfigApplied", "True", "Applied").await;
    let uid = b.uid().unwrap();
    assert!(
        p.owner_references()
            .iter()
            .any(|r| r.uid == uid && r.controller == Some(true))
    );

    let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns)
        .get("full-config")
        .await
        .unwrap();
    let keys: BTreeSet<&str> = cm
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "agent.gitconfig",
            "cred-proxy.yaml",
            "egress.yaml",
            "git-gate.yaml",
            "pipelock.yaml"
        ])
    );
    assert!(cm.owner_references().iter().any(|r| r.uid == uid));

    let ca = Api::<Secret>::namespaced(c.clone(), &ns)
        .get("full-ca")
        .await
        .unwrap();
    let data = ca.data.as_ref().unwrap();
    assert!(
        String::from_utf8_lossy(&data["ca.key"].0).starts_with("-----BEGIN EC PRIVATE KEY-----")
    );
    let fp = bottle_operator::operator::render::ca::fingerprint(&String::from_utf8_lossy(
        &data["ca.crt"].0,
    ))
    .unwrap();
    assert_eq!(
        b.status.as_ref().unwrap().ca_fingerprint.as_deref(),
        Some(fp.as_str())
    );

    let nps = Api::<NetworkPolicy>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: BTreeSet<String> = nps.items.iter().map(|n| n.name_any()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["full-egress".to_string(), "full-internal".to_string()])
    );
    assert!(
        Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(c.clone(), &ns)
            .get_opt("full-workspace")
            .await
            .unwrap()
            .is_some()
    );

    // Token values appear nowhere but in their Secrets: not in the ConfigMap, the Bottle, or
    // anything the agent container is given.
    let secret_values = [
        "demo-anthropic-key-replace-me",
        "demo-github-token-replace-me",
        "demo-ssh-key-replace-me",
    ];
    let cm_text = serde_json::to_string(&cm).unwrap();
    let agent = p
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .find(|c| c.name == "agent")
        .unwrap();
    let agent_text = serde_json::to_string(agent).unwrap();
    for v in secret_values {
        assert!(!cm_text.contains(v) && !agent_text.contains(v));
    }
    assert!(
        agent.env.iter().flatten().all(|e| e.value_from.is_none()),
        "agent env references no Secret"
    );
    let agent_volumes: BTreeSet<&str> = agent
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.name.as_str())
        .collect();
    for v in p.spec.as_ref().unwrap().volumes.iter().flatten() {
        let secretish = v.secret.is_some() || v.projected.is_some();
        if secretish {
            assert!(
                !agent_volumes.contains(v.name.as_str()),
                "agent mounts Secret volume {}",
                v.name
            );
        }
    }

    // kubectl shows the phase through the printer columns.
    let table = kubectl_ok(&["-n", &ns, "get", "bottles"]);
    assert!(
        table.contains("PHASE") && table.contains("Pending"),
        "{table}"
    );
    let short = kubectl_ok(&["-n", &ns, "get", "btl", "full", "-o", "name"]);
    assert_eq!(short.trim(), "bottle.bottle-operator.dev/full");
    assert!(!events_with_reason(&c, &ns, "PodCreated").await.is_empty());

    // The kubectl plugin, found by kubectl itself on PATH.
    let plugin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_kubectl-bottle"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        plugin_dir.display(),
        std::env::var("PATH").unwrap()
    );
    let plugin = |args: &[&str]| {
        let out = cluster()
            .kubectl()
            .env("PATH", &path)
            .args(["bottle", "-n", &ns])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl bottle {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let status = plugin(&["status", "full"]);
    assert!(
        status.contains("Phase:        Pending") && status.contains(&fp),
        "{status}"
    );
    assert!(status.contains("ConfigApplied  True"), "{status}");
    let ca_out = plugin(&["ca", "full"]);
    assert_eq!(ca_out, String::from_utf8_lossy(&data["ca.crt"].0));
    assert!(!ca_out.contains("PRIVATE KEY"));
}

#[tokio::test]
async fn minimal_bottle_created_with_the_client_has_only_the_core_sidecars() {
    let ns = namespace("minimal");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let b = new_bottle("mini", json!({"egress": {"allow": ["api.anthropic.com"]}}));
    api.create(&PostParams::default(), &b).await.unwrap();
    let p = eventually("Pod", WAIT, || pod(&c, &ns, "mini")).await;
    let want: BTreeSet<String> = [
        "netinit",
        "ca-bundle",
        "pipelock-config",
        "pipelock",
        "egress",
        "agent",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(all_names(&p), want);
    let b = wait_condition(&c, &ns, "mini", "Ready", "False", "PodNotReady").await;
    let st = b.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    assert_eq!(st.pod_name.as_deref(), Some("mini"));
    assert_eq!(st.observed_generation, b.metadata.generation);

    // Converged means quiet: no object is rewritten again and again (a status or apply that
    // differs from what the server stores would wake the controller in a loop).
    let versions = || {
        kubectl_ok(&[
            "-n",
            &ns,
            "get",
            "bottles,pods,configmaps,secrets,networkpolicies",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
        ])
    };
    let before = versions();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions(), before);
}

#[tokio::test]
async fn sidecar_config_change_keeps_the_pod_and_a_pod_change_replaces_it() {
    let ns = namespace("update");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    api.create(
        &PostParams::default(),
        &new_bottle("upd", json!({"egress": {"allow": ["example.com"]}})),
    )
    .await
    .unwrap();
    let first = eventually("Pod", WAIT, || pod(&c, &ns, "upd")).await;
    wait_condition(&c, &ns, "upd", "ConfigApplied", "True", "Applied").await;

    // Allowlist change: ConfigMap only.
    let patch = json!({"spec": {"egress": {"allow": ["example.com", "pypi.org"]}}});
    api.patch("upd", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let cms = Api::<ConfigMap>::namespaced(c.clone(), &ns);
    eventually("pipelock.yaml lists pypi.org", WAIT, || async {
        let cm = cms.get("upd-config").await.ok()?;
        cm.data?
            .get("pipelock.yaml")?
            .contains("pypi.org")
            .then_some(())
    })
    .await;
    eventually("ConfigUpdated Event", WAIT, || async {
        (!events_with_reason(&c, &ns, "ConfigUpdated")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    let same = pod(&c, &ns, "upd").await.unwrap();
    assert_eq!(
        same.uid(),
        first.uid(),
        "a config-only change must not replace the Pod"
    );
    assert!(events_with_reason(&c, &ns, "PodReplacing").await.is_empty());

    // Image change: new Pod.
    let patch = json!({"spec": {"agent": {"image": "example.org/agent:2"}}});
    api.patch("upd", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let replaced = eventually("a new Pod with the new image", WAIT, || async {
        let p = pod(&c, &ns, "upd").await?;
        let image = p.spec.as_ref()?.containers[0].image.clone();
        (p.uid() != first.uid() && image.as_deref() == Some("example.org/agent:2")).then_some(p)
    })
    .await;
    assert_ne!(replaced.uid(), first.uid());
    assert!(!events_with_reason(&c, &ns, "PodReplacing").await.is_empty());
}

#[tokio::test]
async fn deleting_a_bottle_collects_everything_it_owns() {
    let ns = namespace("delete");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    api.create(
        &PostParams::default(),
        &new_bottle("gone", json!({"egress": {"allow": ["example.com"]}})),
    )
    .await
    .unwrap();
    eventually("Pod", WAIT, || pod(&c, &ns, "gone")).await;
    wait_condition(&c, &ns, "gone", "ConfigApplied", "True", "Applied").await;
    let owned = || {
        kubectl_ok(&[
            "-n",
            &ns,
            "get",
            "pods,configmaps,secrets,networkpolicies",
            "-l",
            "bottle-operator.dev/bottle=gone",
            "-o",
            "name",
        ])
    };
    // The query must see every owned kind first, or "empty after delete" would prove nothing.
    let before = owned();
    assert_eq!(
        before.lines().count(),
        5,
        "Pod, ConfigMap, CA Secret, two policies: {before}"
    );
    api.delete("gone", &DeleteParams::default()).await.unwrap();
    eventually("everything collected", WAIT, || async {
        owned().trim().is_empty().then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_api_server_rejects_what_the_schema_and_cel_rules_can_tell() {
    let ns = namespace("reject");
    let cases = [
        (
            "relative path",
            json!({"egress": {"routes": [{"host": "api.github.com", "paths": ["repos/"]}]}}),
            "route paths must start with '/'",
        ),
        (
            "host with scheme",
            json!({"egress": {"routes": [{"host": "https://api.github.com"}]}}),
            "bare hostname",
        ),
        (
            "plain http upstream",
            json!({"credProxy": {"routes": [{"name": "a", "upstream": "http://x.example", "auth": {"secretKeyRef": {"name": "s", "key": "k"}}}]}}),
            "https://",
        ),
        (
            "bad env name",
            json!({"agent": {"env": [{"name": "A-B", "value": "1"}]}}),
            "C identifiers",
        ),
        (
            "remote without host key",
            json!({"git": {"remotes": [{"name": "o", "url": "git@h.example:a.git", "sshKeySecretRef": {"name": "s", "key": "k"}, "knownHosts": ""}]}}),
            "knownHosts",
        ),
        (
            // A typo is refused, never ignored: supervise would silently stay off.
            "supervise mistyped",
            json!({"supervise": {"enable": true}}),
            "unknown field \"spec.supervise.enable\"",
        ),
    ];
    for (what, spec, message) in cases {
        let doc = json!({"apiVersion": "bottle-operator.dev/v1alpha1", "kind": "Bottle", "metadata": {"name": "bad"}, "spec": spec});
        let file = cluster()
            .dir
            .join(format!("bad-{}.json", what.replace(' ', "-")));
        std::fs::write(&file, doc.to_string()).unwrap();
        let out = kubectl(&["-n", &ns, "apply", "-f", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(message),
            "{what}: expected rejection with {message:?}, got {err}"
        );
    }
    let long = "b".repeat(51);
    let doc = json!({"apiVersion": "bottle-operator.dev/v1alpha1", "kind": "Bottle", "metadata": {"name": long}, "spec": {}});
    let file = cluster().dir.join("bad-long-name.json");
    std::fs::write(&file, doc.to_string()).unwrap();
    let out = kubectl(&["-n", &ns, "apply", "-f", file.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("at most 50"));
}

#[tokio::test]
async fn a_missing_secret_is_reported_nothing_is_applied_and_its_arrival_heals() {
    let ns = namespace("secret");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let spec = json!({"credProxy": {"routes": [{"name": "anthropic", "upstream": "https://api.anthropic.com",
        "auth": {"header": "x-api-key", "secretKeyRef": {"name": "later", "key": "token"}}}]}});
    api.create(&PostParams::default(), &new_bottle("waits", spec))
        .await
        .unwrap();
    let b = wait_condition(&c, &ns, "waits", "ConfigApplied", "False", "SecretNotFound").await;
    assert_eq!(b.status.as_ref().unwrap().phase.as_deref(), Some("Failed"));
    assert_eq!(
        condition(&b, "Ready").unwrap(),
        ("False".into(), "SecretNotFound".into())
    );
    eventually("SecretNotFound Event", WAIT, || async {
        let evs = events_with_reason(&c, &ns, "SecretNotFound").await;
        evs.iter()
            .any(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.message.as_deref().unwrap_or("").contains("later")
            })
            .then_some(())
    })
    .await;
    // Nothing half-applied: no CA, no ConfigMap, no Pod.
    let names = kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "pods,configmaps,secrets",
        "-l",
        "bottle-operator.dev/bottle=waits",
        "-o",
        "name",
    ]);
    assert!(names.trim().is_empty(), "{names}");

    // A Secret without the key is a different problem.
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "secret",
        "generic",
        "later",
        "--from-literal=other=x",
    ]);
    wait_condition(
        &c,
        &ns,
        "waits",
        "ConfigApplied",
        "False",
        "SecretKeyMissing",
    )
    .await;
    // Fixing the Secret heals the Bottle through the Secret watch.
    let patch = json!({"stringData": {"token": "t0ken"}});
    Api::<Secret>::namespaced(c.clone(), &ns)
        .patch("later", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_condition(&c, &ns, "waits", "ConfigApplied", "True", "Applied").await;
    eventually("Pod", WAIT, || pod(&c, &ns, "waits")).await;
    // The query that found nothing above finds the objects now, so its emptiness meant something.
    let names = kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "pods,configmaps,secrets",
        "-l",
        "bottle-operator.dev/bottle=waits",
        "-o",
        "name",
    ]);
    assert_eq!(names.lines().count(), 3, "{names}");
}

#[tokio::test]
async fn invalid_hosts_and_name_conflicts_are_reported_and_a_bad_edit_keeps_the_running_bottle() {
    let ns = namespace("invalid");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);

    // An IP address passes the schema but is not a hostname pipelock can allowlist.
    api.create(
        &PostParams::default(),
        &new_bottle("ip", json!({"egress": {"allow": ["169.254.169.254"]}})),
    )
    .await
    .unwrap();
    let b = wait_condition(&c, &ns, "ip", "ConfigApplied", "False", "InvalidHost").await;
    assert!(
        b.status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.message.contains("169.254.169.254"))
    );

    // Someone else's ConfigMap in the way.
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "configmap",
        "taken-config",
        "--from-literal=mine=yes",
    ]);
    api.create(&PostParams::default(), &new_bottle("taken", json!({})))
        .await
        .unwrap();
    wait_condition(&c, &ns, "taken", "ConfigApplied", "False", "NameConflict").await;
    let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns)
        .get("taken-config")
        .await
        .unwrap();
    assert_eq!(
        cm.data.unwrap().get("mine").map(String::as_str),
        Some("yes"),
        "the operator must not take it over"
    );
    assert!(pod(&c, &ns, "taken").await.is_none());

    // A good bottle, then a bad edit: reported, and the running objects stay as they were.
    api.create(
        &PostParams::default(),
        &new_bottle("edit", json!({"egress": {"allow": ["example.com"]}})),
    )
    .await
    .unwrap();
    let before = eventually("Pod", WAIT, || pod(&c, &ns, "edit")).await;
    wait_condition(&c, &ns, "edit", "ConfigApplied", "True", "Applied").await;
    let cms = Api::<ConfigMap>::namespaced(c.clone(), &ns);
    let cm_before = cms.get("edit-config").await.unwrap().data;
    let patch = json!({"spec": {"egress": {"allow": ["example.com", "*bad*"]}}});
    api.patch("edit", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let b = wait_condition(&c, &ns, "edit", "ConfigApplied", "False", "InvalidHost").await;
    assert_eq!(
        b.status.as_ref().unwrap().phase.as_deref(),
        Some("Degraded")
    );
    assert_eq!(cms.get("edit-config").await.unwrap().data, cm_before);
    assert_eq!(pod(&c, &ns, "edit").await.unwrap().uid(), before.uid());

    // A pause needs nothing of the spec: the Pod goes although the bad edit still stands,
    // and nothing else is written.
    let patch = json!({"spec": {"paused": true}});
    api.patch("edit", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let b = eventually("the invalid bottle paused", WAIT, || async {
        let b = bottle(&c, &ns, "edit").await;
        let gone = pod(&c, &ns, "edit").await.is_none();
        (gone && b.status.as_ref()?.phase.as_deref() == Some("Paused")).then_some(b)
    })
    .await;
    assert_eq!(
        condition(&b, "ConfigApplied"),
        Some(("False".into(), "InvalidHost".into())),
        "the spec error is still what ConfigApplied says"
    );
    assert_eq!(cms.get("edit-config").await.unwrap().data, cm_before);
}

#[tokio::test]
async fn restarting_the_operator_mid_way_leaves_no_duplicates_or_orphans() {
    let ns = namespace("restart");
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let op = Operator::start(&ns);
    for i in 0..5 {
        api.create(
            &PostParams::default(),
            &new_bottle(
                &format!("r{i}"),
                json!({"egress": {"allow": ["example.com"]}}),
            ),
        )
        .await
        .unwrap();
    }
    // Kill it as soon as the first Pod exists: some Bottles are done, some half-way, some untouched.
    eventually("first Pod", WAIT, || pod(&c, &ns, "r0")).await;
    op.kill();
    let fingerprints_before: Vec<Option<String>> = {
        let secrets = Api::<Secret>::namespaced(c.clone(), &ns);
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(
                secrets
                    .get_opt(&format!("r{i}-ca"))
                    .await
                    .unwrap()
                    .map(|s| format!("{:?}", s.data)),
            );
        }
        v
    };
    let _op = Operator::start(&ns);
    for i in 0..5 {
        wait_condition(
            &c,
            &ns,
            &format!("r{i}"),
            "ConfigApplied",
            "True",
            "Applied",
        )
        .await;
    }
    let count = |kind: &str| {
        let out = kubectl_ok(&[
            "-n",
            &ns,
            "get",
            kind,
            "-l",
            "bottle-operator.dev/bottle",
            "-o",
            "name",
        ]);
        out.lines().count()
    };
    assert_eq!(count("pods"), 5);
    assert_eq!(count("configmaps"), 5);
    assert_eq!(count("secrets"), 5);
    assert_eq!(count("networkpolicies"), 10);
    // A CA made before the restart is kept, not replaced.
    let secrets = Api::<Secret>::namespaced(c.clone(), &ns);
    for (i, before) in fingerprints_before.iter().enumerate() {
        if let Some(before) = before {
            let now = secrets.get(&format!("r{i}-ca")).await.unwrap();
            assert_eq!(&format!("{:?}", now.data), before);
        }
    }
}

#[tokio::test]
async fn two_replicas_elect_one_leader_and_the_other_takes_over() {
    let ns = namespace("leader");
    let c = client().await;
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        ns.as_str(),
        "--lease-duration-seconds",
        "3",
    ];
    let a = Operator::start_with(&ns, &args, &[("POD_NAME", "replica-a")]);
    eventually("replica-a leads", WAIT, || async {
        let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), &ns)
            .get_opt("bottle-operator")
            .await
            .ok()??;
        (lease.spec?.holder_identity.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Operator::start_with(&ns, &args, &[("POD_NAME", "replica-b")]);
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    api.create(&PostParams::default(), &new_bottle("first", json!({})))
        .await
        .unwrap();
    wait_condition(&c, &ns, "first", "ConfigApplied", "True", "Applied").await;
    assert!(b.logs().contains("waiting for leadership"), "{}", b.logs());
    assert!(
        !b.logs().contains("reconciled"),
        "the follower must not reconcile"
    );

    a.kill();
    api.create(&PostParams::default(), &new_bottle("second", json!({})))
        .await
        .unwrap();
    wait_condition(&c, &ns, "second", "ConfigApplied", "True", "Applied").await;
    assert!(b.logs().contains("became leader"));
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), &ns)
        .get("bottle-operator")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
}

#[tokio::test]
async fn a_bottle_on_a_node_runs_and_stays_put() {
    // kube-scheduler binds the Pod to the kwok node and kwok reports it running and ready.
    let ns = namespace_on_node("onnode");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    api.create(
        &PostParams::default(),
        &new_bottle("run", json!({"egress": {"allow": ["pypi.org"]}})),
    )
    .await
    .unwrap();
    let b = wait_condition(&c, &ns, "run", "Ready", "True", "PodReady").await;
    assert_eq!(b.status.unwrap().phase.as_deref(), Some("Running"));
    let p = pod(&c, &ns, "run").await.unwrap();
    assert_eq!(
        p.spec.as_ref().unwrap().node_name.as_deref(),
        Some(support::control_plane::KWOK_NODE)
    );

    // Admission added a toleration the operator did not render, and kwok keeps writing Pod
    // status: neither makes the operator replace the running Pod.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = pod(&c, &ns, "run").await.unwrap();
    assert_eq!(again.metadata.uid, p.metadata.uid);
    assert!(events_with_reason(&c, &ns, "PodReplacing").await.is_empty());
    let table = kubectl_ok(&["-n", &ns, "get", "bottle", "run"]);
    assert!(
        table.contains("Running") && table.contains("PodReady"),
        "{table}"
    );
}

/// Writes Pod status the way a kubelet would, for states the kwok node's stages never
/// produce (an image that cannot be pulled), so the operator's reading of them is exercised
/// against the real API.
async fn mock_kubelet_set_status(c: &Client, ns: &str, name: &str, status: serde_json::Value) {
    let pods = Api::<Pod>::namespaced(c.clone(), ns);
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({ "status": status })),
    )
    .await
    .expect("pod status patch");
}

#[tokio::test]
async fn pod_state_reaches_the_bottle_status() {
    let ns = namespace("podstate");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    api.create(&PostParams::default(), &new_bottle("st", json!({})))
        .await
        .unwrap();
    eventually("Pod", WAIT, || pod(&c, &ns, "st")).await;

    mock_kubelet_set_status(
        &c,
        &ns,
        "st",
        json!({"phase": "Pending", "containerStatuses": [{"name": "agent", "image": "x", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}),
    )
    .await;
    wait_condition(&c, &ns, "st", "Ready", "False", "PodNotReady").await;
    eventually("the waiting reason in the Ready message", WAIT, || async {
        let b = bottle(&c, &ns, "st").await;
        let m = b
            .status?
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")?
            .message
            .clone();
        m.contains("agent: ImagePullBackOff").then_some(())
    })
    .await;

    mock_kubelet_set_status(
        &c,
        &ns,
        "st",
        json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "agent", "image": "x", "imageID": "", "ready": true, "restartCount": 0,
            "state": {"running": {}}}]}),
    )
    .await;
    let b = wait_condition(&c, &ns, "st", "Ready", "True", "PodReady").await;
    assert_eq!(b.status.unwrap().phase.as_deref(), Some("Running"));
    let table = kubectl_ok(&["-n", &ns, "get", "bottle", "st"]);
    assert!(
        table.contains("Running") && table.contains("PodReady"),
        "{table}"
    );
}

#[tokio::test]
async fn an_invalid_bottle_gets_nothing_written_and_forgets_its_backoff_when_deleted() {
    let ns = namespace("nowrite");
    let op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let owned = |name: &str| {
        kubectl_ok(&[
            "-n",
            &ns,
            "get",
            "pods,configmaps,secrets,networkpolicies,persistentvolumeclaims",
            "-l",
            &format!("bottle-operator.dev/bottle={name}"),
            "-o",
            "name",
        ])
    };
    // A valid twin first: the label query finds what the operator writes, so an empty answer
    // below means nothing was written, not a query that matches nothing.
    api.create(&PostParams::default(), &new_bottle("good", json!({})))
        .await
        .unwrap();
    wait_condition(&c, &ns, "good", "ConfigApplied", "True", "Applied").await;
    let good = owned("good");
    for kind in [
        "pod/",
        "configmap/",
        "secret/good-ca",
        "networkpolicy.networking.k8s.io/",
    ] {
        assert!(good.contains(kind), "valid twin lacks {kind}: {good}");
    }

    // Specs the API server admits but the operator must refuse, one per kind of mistake, with
    // what the message must name.
    let dlp = |regex: &str| json!({"dlp": {"patterns": [{"name": "token", "regex": regex}]}});
    let cases = [
        (
            "env",
            json!({"agent": {"env": [{"name": "HTTPS_PROXY", "value": "http://elsewhere:3128"}]}}),
            "ReservedEnv",
            "HTTPS_PROXY",
        ),
        (
            "workspace",
            json!({"agent": {"workspace": {"size": "lots"}}}),
            "InvalidWorkspace",
            "agent.workspace.size",
        ),
        (
            "host",
            json!({"egress": {"allow": ["10.0.0.1"]}}),
            "InvalidHost",
            "egress.allow",
        ),
        (
            "cluster",
            json!({"egress": {"allow": ["api.team.svc.cluster.local"]}}),
            "InvalidHost",
            "Name a public host",
        ),
        (
            "path",
            json!({"egress": {"routes": [{"host": "api.github.com", "paths": ["/repos/./acme/"]}]}}),
            "InvalidPath",
            "write \"/repos/acme/\"",
        ),
        (
            "dupe",
            json!({"egress": {"routes": [{"host": "api.github.com"}, {"host": "API.github.com"}]}}),
            "DuplicateRoute",
            "declared twice",
        ),
        // Look-ahead parses in neither RE2 nor Rust; `&&` parses in both but means different
        // things (pipelock and gitleaks are Go).
        (
            "ahead",
            dlp("tok_(?=[0-9])"),
            "InvalidDlpPattern",
            "spec.dlp.patterns[0].regex",
        ),
        ("and", dlp("[a-z&&[^x]]"), "InvalidDlpPattern", "&&"),
    ];
    for (name, spec, reason, says) in &cases {
        api.create(&PostParams::default(), &new_bottle(name, spec.clone()))
            .await
            .unwrap();
        let b = wait_condition(&c, &ns, name, "Ready", "False", reason).await;
        let msg = &b.status.as_ref().unwrap().conditions[0].message;
        assert!(
            b.status
                .as_ref()
                .unwrap()
                .conditions
                .iter()
                .any(|c| c.message.contains(says)),
            "{name}: the message must name {says:?}: {msg}"
        );
        eventually(&format!("{reason} Event for {name}"), WAIT, || async {
            events_with_reason(&c, &ns, reason)
                .await
                .iter()
                .any(|e| e.involved_object.name.as_deref() == Some(name))
                .then_some(())
        })
        .await;
    }
    for (name, _, reason, _) in &cases {
        let o = owned(name);
        assert!(o.trim().is_empty(), "{reason}: objects written: {o}");
    }
    eventually("every invalid Bottle in backoff", WAIT, || async {
        (op.metric("bottle_operator_failing_bottles")? >= cases.len() as f64).then_some(())
    })
    .await;

    for (name, _, _, _) in &cases {
        api.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually("the deleted Bottles' backoff forgotten", WAIT, || async {
        (op.metric("bottle_operator_failing_bottles")? == 0.0).then_some(())
    })
    .await;
    assert!(
        op.metric("bottle_operator_reconcile_duration_seconds_count{result=\"ok\"}")
            .is_some_and(|n| n >= 1.0),
        "reconcile durations are recorded"
    );
}

#[tokio::test]
async fn a_dlp_pattern_edit_replaces_the_pod_because_pipelock_would_refuse_it_live() {
    let ns = namespace("dlp-roll");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let spec = json!({"egress": {"allow": ["example.com"]},
                      "dlp": {"patterns": [{"name": "a", "regex": "tok_[0-9]{6}"}]}});
    api.create(&PostParams::default(), &new_bottle("roll", spec))
        .await
        .unwrap();
    let first = eventually("Pod", WAIT, || pod(&c, &ns, "roll")).await;
    wait_condition(&c, &ns, "roll", "ConfigApplied", "True", "Applied").await;

    let patch = json!({"spec": {"dlp": {"patterns": [
        {"name": "a", "regex": "tok_[0-9]{6}"}, {"name": "b", "regex": "key_[a-f0-9]{8}"}]}}});
    api.patch("roll", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let replaced = eventually("a new Pod for the new DLP pattern", WAIT, || async {
        let p = pod(&c, &ns, "roll").await?;
        (p.uid() != first.uid()).then_some(p)
    })
    .await;
    assert_ne!(replaced.uid(), first.uid());
    assert!(!events_with_reason(&c, &ns, "PodReplacing").await.is_empty());
}

/// Bottles of every shape the operator writes for: on the kwok node (so Pods run and their
/// status keeps changing), one with a workspace claim and one reading a Secret.
async fn converged_bottles(c: &Client, ns: &str) -> Vec<&'static str> {
    kubectl_ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "creds",
        "--from-literal=token=t0ken",
    ]);
    let api = Api::<Bottle>::namespaced(c.clone(), ns);
    let specs = [
        ("plain", json!({})),
        ("allow", json!({"egress": {"allow": ["pypi.org"]}})),
        ("claim", json!({"agent": {"workspace": {"size": "1Gi"}}})),
        (
            "creds",
            json!({"credProxy": {"routes": [{"name": "anthropic", "upstream": "https://api.anthropic.com",
                "auth": {"header": "x-api-key", "secretKeyRef": {"name": "creds", "key": "token"}}}]}}),
        ),
    ];
    for (name, spec) in &specs {
        api.create(&PostParams::default(), &new_bottle(name, spec.clone()))
            .await
            .unwrap();
    }
    for name in ["plain", "allow", "creds"] {
        wait_condition(c, ns, name, "Ready", "True", "PodReady").await;
    }
    // Its claim is never bound here (no provisioner), so its Pod is never scheduled.
    wait_condition(c, ns, "claim", "ConfigApplied", "True", "Applied").await;
    specs.iter().map(|(n, _)| *n).collect()
}

/// `kind/name=resourceVersion` of everything in `ns` the operator writes.
fn versions(ns: &str) -> String {
    kubectl_ok(&[
        "-n",
        ns,
        "get",
        "bottles,pods,configmaps,secrets,networkpolicies,persistentvolumeclaims",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion}{\"\\n\"}{end}",
    ])
}

/// Waits until nothing in `ns` has changed for two seconds.
async fn quiet(ns: &str) {
    settled(&format!("{ns} to stop changing"), WAIT, || async {
        versions(ns)
    })
    .await;
}

/// An operator whose writes the API server's audit log records under user `user`.
fn audited_operator(ns: &str, user: &str, args: &[&str]) -> Operator {
    let kc = cluster()
        .user_kubeconfig(user, user, &[support::control_plane::AUDITED_GROUP])
        .expect("kubeconfig");
    Operator::start_with(ns, args, &[("KUBECONFIG", kc.to_str().unwrap())])
}

fn reconciled_ok(op: &Operator) -> f64 {
    op.metric("bottle_operator_reconcile_duration_seconds_count{result=\"ok\"}")
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_restarted_operator_re_converges_without_writing_anything() {
    let ns = namespace_on_node("restart-quiet");
    let c = client().await;
    let first = Operator::start(&ns);
    let names = converged_bottles(&c, &ns).await;
    quiet(&ns).await;
    first.kill();

    let user = format!("restarted-{ns}");
    let op = audited_operator(&ns, &user, &[]);
    eventually(
        "every Bottle reconciled by the new operator",
        WAIT,
        || async { (reconciled_ok(&op) >= names.len() as f64).then_some(()) },
    )
    .await;
    // Anything the new operator wrote would be in the log by now; a pass that wrote would
    // also wake a second pass that must write nothing either.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = cluster().writes_by(&user);
    assert!(
        writes.is_empty(),
        "a restart over converged Bottles must write nothing: {writes:#?}"
    );
    // The audit log records this user's writes at all: a change it must make shows up.
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let patch = json!({"spec": {"egress": {"allow": ["pypi.org", "example.com"]}}});
    api.patch("allow", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(
        "the edit's ConfigMap write in the audit log",
        WAIT,
        || async {
            cluster()
                .writes_by(&user)
                .iter()
                .any(|w| w.contains("configmaps") && w.contains("allow-config"))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_idle_resync_of_converged_bottles_writes_nothing() {
    let ns = namespace_on_node("resync");
    let c = client().await;
    let user = format!("resync-{ns}");
    let op = audited_operator(&ns, &user, &["--resync-seconds", "1"]);
    converged_bottles(&c, &ns).await;
    quiet(&ns).await;
    let (writes, passes) = (cluster().writes_by(&user), reconciled_ok(&op));
    assert!(
        !writes.is_empty(),
        "converging wrote, so the log records this user"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        reconciled_ok(&op) >= passes + 8.0,
        "the Bottles were resynced (every second each): {passes} -> {}",
        reconciled_ok(&op)
    );
    let after = cluster().writes_by(&user);
    assert_eq!(
        after[writes.len()..],
        [] as [String; 0],
        "an idle resync must write nothing"
    );
}

#[tokio::test]
async fn hand_edits_and_deletions_of_owned_objects_are_repaired() {
    let ns = namespace("drift");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    api.create(
        &PostParams::default(),
        &new_bottle("drift", json!({"egress": {"allow": ["example.com"]}})),
    )
    .await
    .unwrap();
    let first = eventually("Pod", WAIT, || pod(&c, &ns, "drift")).await;
    wait_condition(&c, &ns, "drift", "ConfigApplied", "True", "Applied").await;
    let cms = Api::<ConfigMap>::namespaced(c.clone(), &ns);
    let want = cms.get("drift-config").await.unwrap().data;

    // A sidecar config edited by hand (a wider allowlist, say) is put back.
    let patch = json!({"data": {"pipelock.yaml": "api_allowlist: ['*']\n"}});
    cms.patch(
        "drift-config",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
    eventually("the ConfigMap restored", WAIT, || async {
        (cms.get("drift-config").await.ok()?.data == want).then_some(())
    })
    .await;

    // A fence deleted by hand is put back.
    let nps = Api::<NetworkPolicy>::namespaced(c.clone(), &ns);
    nps.delete("drift-egress", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the egress NetworkPolicy recreated", WAIT, || async {
        nps.get_opt("drift-egress").await.ok()?.map(|_| ())
    })
    .await;

    // A Pod deleted by hand is recreated.
    Api::<Pod>::namespaced(c.clone(), &ns)
        .delete("drift", &DeleteParams::default())
        .await
        .unwrap();
    eventually("a new Pod", WAIT, || async {
        let p = pod(&c, &ns, "drift").await?;
        (p.uid() != first.uid()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_lifetime_pauses_or_deletes_the_bottle_when_its_time_comes_and_not_before() {
    use k8s_openapi::jiff::Timestamp;
    let ns = namespace("lifetime");
    let _op = Operator::start(&ns);
    let c = client().await;
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    // Whole seconds: a metav1.Time holds no more.
    let at = |secs: i64| Timestamp::from_second(Timestamp::now().as_second() + secs).unwrap();
    let shutdown = at(8);
    for (name, policy) in [("pause-me", "Pause"), ("delete-me", "Delete")] {
        let spec = json!({
            "egress": {"allow": ["pypi.org"]},
            "lifetime": {"shutdownTime": shutdown.to_string(), "shutdownPolicy": policy},
        });
        api.create(&PostParams::default(), &new_bottle(name, spec))
            .await
            .unwrap();
    }
    // Before the time: Pods, and the time ahead in status.
    for name in ["pause-me", "delete-me"] {
        let b = eventually("status.stopsAt", WAIT, || async {
            let b = api.get(name).await.ok()?;
            b.status.as_ref()?.stops_at.is_some().then_some(b)
        })
        .await;
        assert_eq!(b.status.unwrap().stops_at.unwrap().0, shutdown);
        eventually("its Pod", WAIT, || pod(&c, &ns, name)).await;
    }

    let paused = eventually("pause-me paused by its lifetime", WAIT, || async {
        let b = api.get("pause-me").await.ok()?;
        let gone = pod(&c, &ns, "pause-me").await.is_none();
        let st = b.status.clone()?;
        (gone && st.phase.as_deref() == Some("Paused")).then_some(st)
    })
    .await;
    assert!(Timestamp::now() >= shutdown, "stopped before its time");
    let ready = paused
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "LifetimeEnded", "{}", ready.message);
    assert_eq!(paused.stops_at, None);
    let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns);
    assert!(
        cm.get_opt("pause-me-config").await.unwrap().is_some(),
        "a pause keeps the config"
    );

    eventually("delete-me deleted with what it owns", WAIT, || async {
        let gone = api.get_opt("delete-me").await.ok()?.is_none();
        let cm_gone = cm.get_opt("delete-me-config").await.ok()?.is_none();
        (gone && cm_gone).then_some(())
    })
    .await;
    let ended = events_with_reason(&c, &ns, "LifetimeEnded").await;
    let about = |name: &str| {
        ended
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .count()
    };
    assert_eq!((about("pause-me"), about("delete-me")), (1, 1), "{ended:?}");

    // Moving the time on starts the paused bottle again.
    let later = at(3600);
    let patch = json!({"spec": {"lifetime": {"shutdownTime": later.to_string()}}});
    api.patch("pause-me", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("pause-me back with a Pod", WAIT, || async {
        let st = api.get("pause-me").await.ok()?.status?;
        let back = pod(&c, &ns, "pause-me").await.is_some();
        (back && st.phase.as_deref() != Some("Paused") && st.stops_at.map(|t| t.0) == Some(later))
            .then_some(())
    })
    .await;
}
