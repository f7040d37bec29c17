//! `kubectl bottle` as people run it: found by kubectl on PATH, against the real API server,
//! with exec and logs going through the API server to the kwok node's kubelet API. No
//! container runs there: an exec runs the command on this machine (programs a test puts in
//! the node's PATH, real sidecar processes behind them) and logs are files a test writes.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bottle_operator::contract::api::Bottle;
use bottle_operator::contract::config::egress::EgressConfig;
use bottle_operator::contract::config::layout::{self, Sidecar, files};
use bottle_operator::operator::render::meta;
use bottle_operator::pod::core::reload::hash_bytes;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use support::control_plane::{free_port, kubelet_write, spawn_tied};
use support::{Operator, cluster, eventually, namespace_on_node};

/// A running bottle on the kwok node: its namespace, the operator, and its Pod's name.
struct Running {
    ns: String,
    _op: Operator,
    bottle: Bottle,
    pod: String,
}

async fn running_bottle(test: &str) -> Running {
    let ns = namespace_on_node(test);
    let op = Operator::start(&ns);
    let c = cluster().client().await.unwrap();
    let api = Api::<Bottle>::namespaced(c, &ns);
    let mut b = Bottle::new(
        "work",
        serde_json::from_value(json!({"egress": {"allow": ["pypi.org"]}})).unwrap(),
    );
    b.metadata.namespace = Some(ns.clone());
    api.create(&PostParams::default(), &b).await.unwrap();
    let bottle = eventually("the bottle runs", Duration::from_secs(60), || async {
        let b = api.get("work").await.ok()?;
        let st = b.status.as_ref()?;
        (st.phase.as_deref() == Some("Running")).then_some(b.clone())
    })
    .await;
    let pod = bottle.status.as_ref().unwrap().pod_name.clone().unwrap();
    Running {
        ns,
        _op: op,
        bottle,
        pod,
    }
}

/// Puts `target` on the kwok node's PATH as `name` (the node is shared by this binary's tests).
fn install_on_node(name: &str, target: &Path) {
    let link = cluster().node_bin().join(name);
    let tmp = cluster()
        .node_bin()
        .join(format!(".{name}.{}", free_port()));
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
}

/// `kubectl bottle ARGS`, the plugin found by kubectl on PATH.
fn plugin(ns: &str, args: &[&str]) -> Output {
    let dir = Path::new(env!("CARGO_BIN_EXE_kubectl-bottle"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", dir.display(), std::env::var("PATH").unwrap());
    cluster()
        .kubectl()
        .env("PATH", path)
        .args(["bottle", "-n", ns])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `kubectl bottle ARGS` until `done` accepts its output; panics with the last output
/// after 30 s.
async fn plugin_until(
    ns: &str,
    args: &[&str],
    what: &str,
    done: impl Fn(&Output) -> bool,
) -> Output {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = plugin(ns, args);
        if done(&o) {
            return o;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}; last output:\n{}\n{}",
            text(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn exec_runs_claude_in_the_agent_and_logs_merge_every_container_by_time() {
    let r = running_bottle("plugin-exec").await;
    let dir = tempfile::tempdir().unwrap();
    let claude = dir.path().join("claude");
    std::fs::write(
        &claude,
        "#!/bin/sh\necho \"claude in $KWOK_CONTAINER, $# arguments\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    install_on_node("claude", &claude);
    // egress answers exec too, so landing in the wrong container shows in the output.
    let containers: Vec<(&str, Vec<(&str, &str)>)> = ["agent", "egress"]
        .into_iter()
        .map(|c| (c, vec![("KWOK_CONTAINER", c)]))
        .collect();
    let execs: Vec<(&str, &[(&str, &str)])> =
        containers.iter().map(|(c, e)| (*c, e.as_slice())).collect();
    cluster().kwok_exec(&r.ns, &r.pod, &execs).unwrap();

    // No command: claude, in the agent container.
    let out = plugin_until(&r.ns, &["exec", "work"], "exec", |o| o.status.success()).await;
    assert_eq!(text(&out).trim(), "claude in agent, 0 arguments");
    // Without a terminal it asks for none (kubectl would warn that it cannot use one).
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("TTY"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A command after `--` replaces it, arguments intact.
    let out = plugin(
        &r.ns,
        &[
            "exec",
            "work",
            "--",
            "sh",
            "-c",
            "echo \"$KWOK_CONTAINER:$1\"",
            "sh",
            "two words",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text(&out).trim(), "agent:two words");

    // Logs of three containers, interleaved in time, one of them on stderr.
    let line = |s: u32, stream: &str, msg: &str| {
        format!("2026-11-23T10:00:0{s}.000000000Z {stream} F {msg}\n")
    };
    let logs = [
        (
            "agent",
            line(2, "stdout", "agent starts") + &line(4, "stdout", "agent pushes"),
        ),
        (
            "egress",
            line(1, "stderr", "egress listening") + &line(5, "stderr", "egress denied x"),
        ),
        ("pipelock", line(3, "stdout", "pipelock allowed pypi.org")),
    ];
    let mut files = Vec::new();
    for (c, body) in &logs {
        let f = dir.path().join(format!("{c}.log"));
        std::fs::write(&f, body).unwrap();
        files.push((*c, f));
    }
    let refs: Vec<(&str, &Path)> = files.iter().map(|(c, f)| (*c, f.as_path())).collect();
    cluster().kwok_logs(&r.ns, &r.pod, &refs).unwrap();
    let merged = text(
        &plugin_until(&r.ns, &["logs", "work"], "five log lines", |o| {
            o.status.success() && text(o).lines().count() == 5
        })
        .await,
    );
    let got: Vec<(String, String)> = merged
        .lines()
        .map(|l| {
            let (head, msg) = l.split_once(" | ").expect("container | message");
            let container = head.split_whitespace().nth(1).unwrap().to_string();
            (container, msg.to_string())
        })
        .collect();
    let want = [
        ("egress", "egress listening"),
        ("agent", "agent starts"),
        ("pipelock", "pipelock allowed pypi.org"),
        ("agent", "agent pushes"),
        ("egress", "egress denied x"),
    ];
    assert_eq!(
        got,
        want.map(|(c, m)| (c.to_string(), m.to_string())),
        "{merged}"
    );
}

/// A real sidecar process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sidecar(args: &[&str], extra: &[&Path], log: PathBuf) -> Proc {
    Proc(
        spawn_tied(
            Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
                .args(args)
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(log).unwrap()),
        )
        .unwrap(),
    )
}

/// The line of one sidecar in the config section of `status`.
fn status_line(status: &str, label: &str) -> String {
    status
        .lines()
        .skip_while(|l| !l.starts_with("Sidecar config"))
        .find(|l| l.trim_start().starts_with(&format!("{label} ")))
        .unwrap_or_else(|| panic!("no {label} line in\n{status}"))
        .to_string()
}

#[tokio::test]
async fn status_shows_what_each_sidecar_has_mounted_and_runs() {
    let r = running_bottle("plugin-status").await;
    let c = cluster().client().await.unwrap();
    let cm = Api::<ConfigMap>::namespaced(c.clone(), &r.ns)
        .get(&meta::config_map_name(&r.bottle))
        .await
        .unwrap();
    let data = cm.data.unwrap();
    let ca = Api::<Secret>::namespaced(c, &r.ns)
        .get(&meta::ca_secret_name(&r.bottle))
        .await
        .unwrap()
        .data
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for f in [layout::CA_CERT_FILE, layout::CA_KEY_FILE] {
        std::fs::write(d.join(f), &ca[f].0).unwrap();
    }

    // egress runs the Pod's config, moved to free ports: an older version than the ConfigMap's.
    let mut cfg: EgressConfig = serde_norway::from_str(&data[files::EGRESS]).unwrap();
    cfg.listen = format!("127.0.0.1:{}", free_port());
    cfg.admin_listen = format!("127.0.0.1:{}", free_port());
    cfg.ca_cert = d.join(layout::CA_CERT_FILE).display().to_string();
    cfg.ca_key = d.join(layout::CA_KEY_FILE).display().to_string();
    let v1 = serde_norway::to_string(&cfg).unwrap();
    let egress_dir = d.join("egress");
    kubelet_write(&egress_dir, &[(files::EGRESS, &v1)]);
    let egress_file = egress_dir.join(files::EGRESS);
    let _egress = sidecar(
        &["egress", "--config"],
        &[&egress_file],
        d.join("egress.log"),
    );

    // config-sync delivers the ConfigMap's pipelock config, unchanged.
    let sync_dir = d.join("pipelock-config");
    kubelet_write(&sync_dir, &[(files::PIPELOCK, &data[files::PIPELOCK])]);
    let mounted = sync_dir.join(files::PIPELOCK);
    let delivered = d.join("pipelock").join(files::PIPELOCK);
    let _sync = sidecar(
        &["config-sync", "--from"],
        &[&mounted, Path::new("--to"), &delivered],
        d.join("config-sync.log"),
    );

    install_on_node(
        layout::SIDECAR_BIN,
        Path::new(env!("CARGO_BIN_EXE_bottle-sidecar")),
    );
    let egress_env = [(layout::CONFIG_ENV, egress_file.to_str().unwrap())];
    let sync_env = [
        (layout::CONFIG_ENV, mounted.to_str().unwrap()),
        (layout::DELIVERED_CONFIG_ENV, delivered.to_str().unwrap()),
    ];
    cluster()
        .kwok_exec(
            &r.ns,
            &r.pod,
            &[
                (Sidecar::Egress.container(), &egress_env),
                (Sidecar::Pipelock.container(), &sync_env),
            ],
        )
        .unwrap();

    let want_egress = hash_bytes(&[data[files::EGRESS].as_bytes()]);
    let want_pipelock = hash_bytes(&[data[files::PIPELOCK].as_bytes()]);
    let h1 = hash_bytes(&[v1.as_bytes()]);
    let status = text(
        &plugin_until(&r.ns, &["status", "work"], "both sidecars", |o| {
            let t = text(o);
            t.contains(&format!("running {h1}")) && t.contains("delivered to pipelock")
        })
        .await,
    );
    let egress = status_line(&status, "egress");
    assert!(egress.contains(&want_egress), "{status}");
    assert!(egress.contains("not in the volume yet"), "{status}");
    assert!(
        status_line(&status, "pipelock")
            .contains(&format!("{want_pipelock} delivered to pipelock")),
        "{status}"
    );

    // A version egress refuses: it keeps running v1, and status says why.
    let v2 = format!("{v1}surprise: true\n");
    kubelet_write(&egress_dir, &[(files::EGRESS, &v2)]);
    let status = text(
        &plugin_until(&r.ns, &["status", "work"], "the refusal", |o| {
            text(o).contains("REFUSED")
        })
        .await,
    );
    let egress = status_line(&status, "egress");
    assert!(
        egress.contains(&format!("REFUSED, still running {h1}")),
        "{status}"
    );
    assert!(egress.contains("unknown field `surprise`"), "{status}");
}

#[tokio::test]
async fn pause_deletes_only_the_pod_and_resume_brings_it_back_with_the_same_ca_and_workspace() {
    use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let ns = namespace_on_node("plugin-pause");
    let _op = Operator::start(&ns);
    let c = cluster().client().await.unwrap();
    let bottles = Api::<Bottle>::namespaced(c.clone(), &ns);
    let pods = Api::<Pod>::namespaced(c.clone(), &ns);
    let spec = json!({"egress": {"allow": ["pypi.org"]}, "agent": {"workspace": {"size": "1Gi"}}});
    let mut b = Bottle::new("work", serde_json::from_value(spec).unwrap());
    b.metadata.namespace = Some(ns.clone());
    bottles.create(&PostParams::default(), &b).await.unwrap();
    // No volume binds on the kwok node, so the Pod exists but never runs: enough here.
    let first = eventually("the Pod", Duration::from_secs(60), || async {
        pods.get_opt("work").await.ok().flatten()
    })
    .await;
    let b = bottles.get("work").await.unwrap();
    // What a pause must keep, by uid: the same objects, not look-alikes made again.
    let uids = || async {
        let secret = Api::<Secret>::namespaced(c.clone(), &ns)
            .get(&meta::ca_secret_name(&b))
            .await
            .unwrap();
        let cm = Api::<ConfigMap>::namespaced(c.clone(), &ns)
            .get(&meta::config_map_name(&b))
            .await
            .unwrap();
        let claim = Api::<PersistentVolumeClaim>::namespaced(c.clone(), &ns)
            .get(&meta::workspace_name(&b))
            .await
            .unwrap();
        let mut nps: Vec<String> = Api::<NetworkPolicy>::namespaced(c.clone(), &ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|np| np.metadata.uid.clone().unwrap())
            .collect();
        nps.sort();
        let uid =
            |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| m.uid.clone().unwrap();
        (
            uid(&secret.metadata),
            uid(&cm.metadata),
            uid(&claim.metadata),
            nps,
        )
    };
    let kept = uids().await;
    assert_eq!(kept.3.len(), 2, "two NetworkPolicies: {kept:?}");

    let o = plugin(&ns, &["pause", "work"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(text(&o).contains("pausing"), "{}", text(&o));
    let paused = eventually(
        "the Bottle paused, its Pod gone",
        Duration::from_secs(60),
        || async {
            let b = bottles.get("work").await.ok()?;
            let gone = pods.get_opt("work").await.ok()?.is_none();
            let st = b.status.clone()?;
            (gone && st.phase.as_deref() == Some("Paused") && st.pod_name.is_none()).then_some(st)
        },
    )
    .await;
    let ready = paused
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Paused")
    );
    assert_eq!(
        uids().await,
        kept,
        "a pause keeps the CA, config, workspace and fences"
    );
    let events = Api::<Event>::namespaced(c.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap();
    let pause_events = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Paused"));
    assert_eq!(pause_events.count(), 1, "one Paused Event for one pause");
    // Paused stays paused: no Pod comes back on its own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        pods.get_opt("work").await.unwrap().is_none(),
        "a paused Bottle got a Pod"
    );

    let o = plugin(&ns, &["resume", "work"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let second = eventually("a new Pod", Duration::from_secs(60), || async {
        pods.get_opt("work").await.ok().flatten()
    })
    .await;
    assert_ne!(
        second.metadata.uid, first.metadata.uid,
        "a new Pod, not the old one"
    );
    let st = bottles.get("work").await.unwrap().status.unwrap();
    assert_ne!(st.phase.as_deref(), Some("Paused"));
    assert_eq!(
        uids().await,
        kept,
        "resumed on the same CA, config, workspace and fences"
    );
    let claim_of = |p: &Pod| {
        p.spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.clone())
            })
    };
    assert_eq!(
        claim_of(&second),
        claim_of(&first),
        "the same workspace claim"
    );
    assert_eq!(claim_of(&second), Some(meta::workspace_name(&b)));
}
