//! Faults, with real processes and a real API server (issue 16): the operator SIGKILLed at
//! random points while Bottles are created, edited and deleted; etcd and kube-apiserver
//! restarted under it; objects edited or deleted by hand; a referenced Secret rotated and
//! deleted under a running bottle. Every loop is bounded in count and time; the random
//! points come from a printed seed (`BOTTLE_FAULT_SEED` replays one).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottle_operator::contract::api::Bottle;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::{Operator, cluster, eventually, namespace_on_node, new_bottle, settled};

const LABEL: &str = "bottle-operator.dev/bottle";

/// xorshift64: reproducible random points from a printed seed.
struct Rng(u64);

impl Rng {
    fn from_env(test: &str) -> Self {
        let seed = std::env::var("BOTTLE_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        eprintln!("{test}: BOTTLE_FAULT_SEED={seed}");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }
}

/// What the churn meant each Bottle to end as: `Some(host)` kept with that host declared
/// last, `None` deleted.
type Intent = BTreeMap<String, Option<String>>;

/// Every object the operator owns in `ns`, as `kind/name` by the Bottle it belongs to.
async fn owned_objects(c: &Client, ns: &str) -> BTreeMap<String, Vec<String>> {
    let lp = ListParams::default().labels(LABEL);
    let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    macro_rules! collect {
        ($k:ty, $kind:literal) => {
            for o in Api::<$k>::namespaced(c.clone(), ns)
                .list(&lp)
                .await
                .expect("list")
                .items
            {
                let b = o.labels().get(LABEL).cloned().unwrap_or_default();
                by.entry(b)
                    .or_default()
                    .push(format!("{}/{}", $kind, o.name_any()));
            }
        };
    }
    collect!(Pod, "pod");
    collect!(ConfigMap, "configmap");
    collect!(Secret, "secret");
    collect!(
        k8s_openapi::api::networking::v1::NetworkPolicy,
        "networkpolicy"
    );
    for v in by.values_mut() {
        v.sort();
    }
    by
}

/// Why `b` is not converged to `host`, or `None` when it is: the current generation observed,
/// ConfigApplied and Ready true, its ConfigMap declaring `host`.
async fn unconverged(c: &Client, ns: &str, b: &Bottle, host: &str) -> Option<String> {
    let name = b.name_any();
    let Some(st) = b.status.as_ref() else {
        return Some(format!("{name}: no status"));
    };
    if st.observed_generation != b.metadata.generation {
        return Some(format!(
            "{name}: observed {:?} of {:?}",
            st.observed_generation, b.metadata.generation
        ));
    }
    for t in ["ConfigApplied", "Ready"] {
        if !st
            .conditions
            .iter()
            .any(|c| c.type_ == t && c.status == "True")
        {
            return Some(format!("{name}: {t} not true: {:?}", st.conditions));
        }
    }
    let cm = Api::<ConfigMap>::namespaced(c.clone(), ns)
        .get_opt(&format!("{name}-config"))
        .await
        .ok()
        .flatten();
    let declares = cm
        .and_then(|cm| cm.data)
        .and_then(|d| d.get("pipelock.yaml").cloned())
        .is_some_and(|p| p.contains(host));
    (!declares).then(|| format!("{name}: ConfigMap does not declare {host}"))
}

/// Every Pod UID seen, by Pod name.
type SeenUids = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// Records every Pod UID seen in `ns`, by Pod name, for as long as the task runs.
fn pod_uids(c: Client, ns: &str) -> (SeenUids, tokio::task::JoinHandle<()>) {
    let seen: SeenUids = Arc::default();
    let s = seen.clone();
    let pods = Api::<Pod>::namespaced(c, ns);
    let task = tokio::spawn(async move {
        let mut w = watcher(pods, watcher::Config::default().labels(LABEL)).boxed();
        while let Some(e) = w.next().await {
            let pods = match e {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => vec![p],
                _ => continue,
            };
            let mut s = s.lock().unwrap();
            for p in pods {
                s.entry(p.name_any())
                    .or_default()
                    .insert(p.uid().unwrap_or_default());
            }
        }
    });
    (seen, task)
}

/// The operator is SIGKILLed 20 times at random points while 50 Bottles are created, edited
/// (an allowlist change: ConfigMap only) and deleted. Afterwards: every kept Bottle is
/// converged with its last edit, each has exactly its objects, a deleted one has none left,
/// and no Bottle ever had a second Pod (a config-only edit must never replace one).
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_points_during_churn_loses_nothing_and_duplicates_nothing() {
    let ns = namespace_on_node("churn");
    let c = cluster().client().await.unwrap();
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let mut rng = Rng::from_env("churn");
    let (uids, watch) = pod_uids(c.clone(), &ns);

    // The churn script, fixed up front from the seed: 50 creates, 30 edits, 10 deletes, in
    // an order where each edit or delete follows its create.
    let mut steps: Vec<(u64, &str, usize)> = Vec::new();
    for i in 0..50 {
        let at = rng.range(0, 8_000);
        steps.push((at, "create", i));
        if i % 5 < 3 {
            steps.push((at + rng.range(500, 6_000), "edit", i));
        }
        if i % 5 == 4 {
            steps.push((at + rng.range(500, 6_000), "delete", i));
        }
    }
    steps.sort();
    let intent: Arc<Mutex<Intent>> = Arc::default();
    let churn = {
        let (api, intent) = (api.clone(), intent.clone());
        tokio::spawn(async move {
            let t0 = Instant::now();
            for (at, what, i) in steps {
                let due = Duration::from_millis(at);
                if let Some(wait) = due.checked_sub(t0.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
                let name = format!("c{i}");
                match what {
                    "create" => {
                        let host = format!("h{i}-a.example.com");
                        api.create(
                            &PostParams::default(),
                            &new_bottle(&name, json!({"egress": {"allow": [host]}})),
                        )
                        .await
                        .unwrap();
                        intent.lock().unwrap().insert(name, Some(host));
                    }
                    "edit" => {
                        let host = format!("h{i}-b.example.com");
                        let patch = json!({"spec": {"egress": {"allow": [host]}}});
                        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                            .await
                            .unwrap();
                        intent.lock().unwrap().insert(name, Some(host));
                    }
                    _ => {
                        api.delete(&name, &DeleteParams::default()).await.unwrap();
                        intent.lock().unwrap().insert(name, None);
                    }
                }
            }
        })
    };

    let mut op = Operator::start(&ns);
    let mut kills = Vec::new();
    for _ in 0..20 {
        let after = rng.range(100, 900);
        tokio::time::sleep(Duration::from_millis(after)).await;
        op.kill();
        kills.push(after);
        op = Operator::start(&ns);
    }
    churn.await.unwrap();
    eprintln!("churn: killed 20 times, after {kills:?} ms of life each");

    let intent = intent.lock().unwrap().clone();
    let t = Instant::now();
    eventually(
        "every kept Bottle converged, every deleted one gone",
        Duration::from_secs(240),
        || async {
            let mut why = Vec::new();
            for (name, host) in &intent {
                let b = api.get_opt(name).await.unwrap();
                match (host, b) {
                    (Some(h), Some(b)) => why.extend(unconverged(&c, &ns, &b, h).await),
                    (Some(_), None) => why.push(format!("{name}: kept but gone")),
                    (None, Some(_)) => why.push(format!("{name}: deleted but still there")),
                    (None, None) => {}
                }
            }
            let owned = owned_objects(&c, &ns).await;
            for (name, host) in &intent {
                let want: Vec<String> = match host {
                    None => vec![],
                    Some(_) => {
                        let mut v = vec![
                            format!("configmap/{name}-config"),
                            format!("networkpolicy/{name}-egress"),
                            format!("networkpolicy/{name}-internal"),
                            format!("pod/{name}"),
                            format!("secret/{name}-ca"),
                        ];
                        v.sort();
                        v
                    }
                };
                let have = owned.get(name).cloned().unwrap_or_default();
                if have != want {
                    why.push(format!("{name}: owns {have:?}, wants {want:?}"));
                }
            }
            if let Some(w) = why.first() {
                eprintln!("not yet ({} left): {w}", why.len());
                tokio::time::sleep(Duration::from_secs(1)).await;
                return None;
            }
            Some(())
        },
    )
    .await;
    eprintln!("churn: converged {:?} after the last kill", t.elapsed());
    watch.abort();
    let uids = uids.lock().unwrap();
    for (pod, seen) in uids.iter() {
        assert_eq!(
            seen.len(),
            1,
            "Pod {pod} was created {} times: {seen:?}",
            seen.len()
        );
    }
    assert!(uids.len() >= 40, "only {} Pods were ever seen", uids.len());
    drop(op);
}

/// Hand edits and deletions are repaired; a referenced Secret rotated under a running bottle
/// keeps it running, and one deleted is reported (condition and Event) without tearing the
/// bottle down, until it comes back.
#[tokio::test(flavor = "multi_thread")]
async fn hand_edits_deleted_pods_and_secret_changes_are_handled() {
    let ns = namespace_on_node("repair");
    let c = cluster().client().await.unwrap();
    let _op = Operator::start(&ns);
    let secrets = Api::<Secret>::namespaced(c.clone(), &ns);
    let token = |v: &str| {
        let mut s = Secret::default();
        s.metadata.name = Some("gh".into());
        s.string_data = Some([("token".to_string(), v.to_string())].into());
        s
    };
    secrets
        .create(&PostParams::default(), &token("ghp_one"))
        .await
        .unwrap();
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    api.create(
        &PostParams::default(),
        &new_bottle(
            "fix",
            json!({"egress": {"routes": [{"host": "api.github.com", "paths": ["/repos/"],
                "auth": {"secretKeyRef": {"name": "gh", "key": "token"}}}]}}),
        ),
    )
    .await
    .unwrap();
    let ready = |what: &'static str| {
        let (c, ns, api) = (c.clone(), ns.clone(), api.clone());
        async move {
            eventually(what, Duration::from_secs(60), || async {
                let b = api.get("fix").await.ok()?;
                unconverged(&c, &ns, &b, "api.github.com")
                    .await
                    .is_none()
                    .then_some(b)
            })
            .await
        }
    };
    ready("fix converged").await;
    let pods = Api::<Pod>::namespaced(c.clone(), &ns);
    let cms = Api::<ConfigMap>::namespaced(c.clone(), &ns);
    let first = pods.get("fix").await.unwrap();

    // A ConfigMap key the operator owns, edited by hand: restored.
    let original = cms.get("fix-config").await.unwrap().data.unwrap()["pipelock.yaml"].clone();
    let patch = json!({"data": {"pipelock.yaml": "tampered: true\n"}});
    cms.patch("fix-config", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(
        "the ConfigMap restored",
        Duration::from_secs(60),
        || async {
            let d = cms.get("fix-config").await.ok()?.data?;
            (d["pipelock.yaml"] == original).then_some(())
        },
    )
    .await;
    assert_eq!(pods.get("fix").await.unwrap().uid(), first.uid());

    // The ConfigMap deleted by hand: recreated.
    cms.delete("fix-config", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the ConfigMap recreated",
        Duration::from_secs(60),
        || async {
            let d = cms.get_opt("fix-config").await.ok()??.data?;
            (d["pipelock.yaml"] == original).then_some(())
        },
    )
    .await;

    // The Pod deleted by hand: a new one.
    pods.delete("fix", &DeleteParams::default()).await.unwrap();
    eventually("a new Pod", Duration::from_secs(60), || async {
        let p = pods.get_opt("fix").await.ok()??;
        (p.uid() != first.uid()).then_some(())
    })
    .await;
    ready("fix converged after its Pod was deleted").await;
    let second_pod = pods.get("fix").await.unwrap();

    // The token rotated: nothing to redo (the kubelet refreshes the projected file), so
    // nothing is written: not the Bottle (status included), not its ConfigMap or Pod. First
    // the Bottle settles (its status follows the new Pod for a moment).
    let versions = || async {
        (
            api.get("fix").await.unwrap().resource_version(),
            cms.get("fix-config").await.unwrap().resource_version(),
            pods.get("fix").await.unwrap().uid(),
        )
    };
    let settled = settled("fix settled", Duration::from_secs(60), versions).await;
    secrets
        .replace("gh", &PostParams::default(), &token("ghp_two"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(versions().await, settled, "a rotation writes nothing");
    let b = api.get("fix").await.unwrap();
    assert!(unconverged(&c, &ns, &b, "api.github.com").await.is_none());

    // The Secret deleted: reported, the running bottle left as it is; back: healed.
    secrets
        .delete("gh", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the missing Secret reported",
        Duration::from_secs(60),
        || async {
            let b = api.get("fix").await.ok()?;
            let st = b.status?;
            st.conditions
                .iter()
                .any(|c| {
                    c.type_ == "ConfigApplied" && c.status == "False" && c.message.contains("gh")
                })
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        pods.get("fix").await.unwrap().uid(),
        second_pod.uid(),
        "a missing Secret must not tear the running bottle down"
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.type_.as_deref() == Some("Warning")
                && e.message.as_deref().unwrap_or("").contains("gh")),
        "a Warning Event names the Secret"
    );
    secrets
        .create(&PostParams::default(), &token("ghp_three"))
        .await
        .unwrap();
    ready("fix healed once the Secret is back").await;
}

/// The operator rides out etcd and kube-apiserver restarts with no action: Bottles made
/// before, during (while the API is down, the client retries) and after converge. A control
/// plane of its own, so no other test sees the outage.
#[test]
fn etcd_and_apiserver_restarts_are_ridden_out() {
    // Children die with the thread that spawned them: this thread owns them all.
    let mut cp = support::ControlPlane::start().expect("control plane");
    cp.install_crds(&support::repo().join("crds"), support::CRDS)
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ns = "restarts";
    let kubectl = |cp: &support::ControlPlane, args: &[&str]| {
        let out = cp.kubectl().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    kubectl(&cp, &["create", "namespace", ns]);
    cp.wait_service_account(ns).unwrap();
    let op = support::Operator::start_on(&cp, ns);
    let converged = |cp: &support::ControlPlane, names: &[&str]| {
        rt.block_on(async {
            let c = cp.client().await.unwrap();
            let api = Api::<Bottle>::namespaced(c.clone(), ns);
            for n in names {
                eventually(
                    &format!("{n} applied"),
                    // Seen 6-50 s on a loaded machine; the bound says "recovers", not how fast.
                    Duration::from_secs(180),
                    || async {
                        let b = api.get(n).await.ok()?;
                        let st = b.status?;
                        (st.observed_generation == b.metadata.generation
                            && st
                                .conditions
                                .iter()
                                .any(|c| c.type_ == "ConfigApplied" && c.status == "True"))
                        .then_some(())
                    },
                )
                .await;
            }
        })
    };
    let create = |cp: &support::ControlPlane, name: &str| {
        let b = serde_json::to_string(&new_bottle(
            name,
            json!({"egress": {"allow": ["example.com"]}}),
        ))
        .unwrap();
        let f = cp.dir.join(format!("{name}.json"));
        std::fs::write(&f, b).unwrap();
        let out = cp
            .kubectl()
            .args(["-n", ns, "create", "-f"])
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let stage = |what: &str, t: Instant| {
        eprintln!(
            "restarts: {what} converged {:?} after the fault",
            t.elapsed()
        )
    };
    create(&cp, "before");
    converged(&cp, &["before"]);

    let t = Instant::now();
    cp.restart("kube-apiserver").unwrap();
    eprintln!("restarts: kube-apiserver back after {:?}", t.elapsed());
    create(&cp, "after-api");
    converged(&cp, &["before", "after-api"]);
    stage("kube-apiserver restart:", t);

    // etcd down under a running API server: writes fail until it is back.
    let t = Instant::now();
    cp.stop("etcd").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    cp.start_again("etcd").unwrap();
    create(&cp, "after-etcd");
    converged(&cp, &["before", "after-api", "after-etcd"]);
    stage("etcd down 3 s:", t);

    // Both at once, with an edit waiting.
    let t = Instant::now();
    cp.stop("kube-apiserver").unwrap();
    cp.restart("etcd").unwrap();
    cp.start_again("kube-apiserver").unwrap();
    kubectl(
        &cp,
        &[
            "-n",
            ns,
            "patch",
            "bottle",
            "before",
            "--type=merge",
            "-p",
            r#"{"spec":{"egress":{"allow":["pypi.org"]}}}"#,
        ],
    );
    converged(&cp, &["before", "after-api", "after-etcd"]);
    stage("both restarted, an edit waiting:", t);
    let logs = op.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    drop(op);
}

/// A leader paused (SIGSTOP) past its lease while the other replica takes over and changes
/// things: when it wakes it writes nothing (the fence; its caches are stale, so a write would
/// undo the other's work), says why, and exits to follow.
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_wakes() {
    let ns = support::namespace("pause");
    let c = cluster().client().await.unwrap();
    let args = [
        "--leader-elect",
        "--leader-election-namespace",
        ns.as_str(),
        // Long enough that a loaded machine never delays a renewal past the fence.
        "--lease-duration-seconds",
        "6",
    ];
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), &ns);
    let holder = || async {
        leases
            .get_opt("bottle-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.holder_identity)
    };
    let mut a = Operator::start_with(&ns, &args, &[("POD_NAME", "replica-a")]);
    eventually("replica-a leads", Duration::from_secs(60), || async {
        (holder().await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let b = Operator::start_with(&ns, &args, &[("POD_NAME", "replica-b")]);
    let api = Api::<Bottle>::namespaced(c.clone(), &ns);
    let applied = |name: &'static str, host: &'static str| {
        let (api, c, ns) = (api.clone(), c.clone(), ns.clone());
        async move {
            eventually(
                &format!("{name} applied with {host}"),
                Duration::from_secs(60),
                || async {
                    let b = api.get(name).await.ok()?;
                    let st = b.status.clone()?;
                    let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns)
                        .get_opt(&format!("{name}-config"))
                        .await
                        .ok()??;
                    (st.observed_generation == b.metadata.generation
                        && cm.data?.get("pipelock.yaml")?.contains(host))
                    .then_some(())
                },
            )
            .await
        }
    };
    api.create(
        &PostParams::default(),
        &new_bottle("p0", json!({"egress": {"allow": ["one.example.com"]}})),
    )
    .await
    .unwrap();
    applied("p0", "one.example.com").await;

    // Paused: replica-b takes over and changes p0 while replica-a cannot see it.
    let signal = |sig: &str| {
        let out = std::process::Command::new("kill")
            .args([sig, &a.pid().to_string()])
            .output()
            .unwrap();
        assert!(out.status.success());
    };
    signal("-STOP");
    eventually("replica-b leads", Duration::from_secs(60), || async {
        (holder().await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    let patch = json!({"spec": {"egress": {"allow": ["two.example.com"]}}});
    api.patch("p0", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    applied("p0", "two.example.com").await;
    let cms = Api::<ConfigMap>::namespaced(c.clone(), &ns);
    let versions = || async {
        (
            api.get("p0").await.unwrap().resource_version(),
            cms.get("p0-config").await.unwrap().resource_version(),
        )
    };
    let settled = settled("p0 settled", Duration::from_secs(60), versions).await;
    let mark = a.logs().len();
    signal("-CONT");
    let status = eventually("replica-a exits", Duration::from_secs(30), || {
        let s = a.exited();
        async move { s }
    })
    .await;
    let woke = a.logs()[mark..].to_string();
    assert!(!status.success(), "{woke}");
    assert!(woke.contains("lease lapsed"), "says why it stops: {woke}");
    // replica-b's state stands, untouched.
    assert_eq!(versions().await, settled, "the woken replica wrote: {woke}");
    applied("p0", "two.example.com").await;
    assert_eq!(holder().await.as_deref(), Some("replica-b"));
    drop(b);
}
