//! The install path a user takes, checked with the real tools:
//! - the Helm chart with the real `helm`: lint and schema, rendered content, and an install
//!   into the real control plane whose ServiceAccount then runs the operator (so a missing
//!   RBAC verb fails here, not in a user's cluster);
//! - `kind/cluster.yaml` through kind's own loader and validation;
//! - `kind/up.sh` run end to end against the test control plane (kube-scheduler places the
//!   bottle Pod on a kwok node, which reports it running), with every kind, kubectl and helm
//!   command's flags checked by the real binary, and docker mocked (no container engine runs
//!   here);
//! - every command the README shows, through the same flag check;
//! - the Dockerfiles through hadolint, and against what the rendered Pod runs.

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use bottle_operator::contract::api::Bottle;
use kube::Api;
use serde::Deserialize;
use serde_json::Value;
use support::{
    Operator, cluster, eventually, kubectl, kubectl_ok, namespace, namespace_on_node, repo,
};

fn chart() -> PathBuf {
    repo().join("charts/bottle-operator")
}

fn helm(args: &[&str]) -> Output {
    let cp = cluster();
    Command::new(cp.bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("HELM_CACHE_HOME", cp.dir.join("helm-cache"))
        .env("HELM_CONFIG_HOME", cp.dir.join("helm-config"))
        .env("HELM_DATA_HOME", cp.dir.join("helm-data"))
        .output()
        .expect("helm runs")
}

fn template(extra: &[&str]) -> Vec<Value> {
    let mut args = vec![
        "template",
        "bo",
        chart().to_str().unwrap().to_string().leak() as &str,
        "--namespace",
        "bottle-system",
        "--kube-version",
        "1.34.0",
    ];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.split("\n---")
        .filter_map(|d| serde_norway::from_str::<Value>(d).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name_suffix: &str) -> &'a Value {
    docs.iter()
        .find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(name_suffix))
        })
        .unwrap_or_else(|| panic!("no {kind} *{name_suffix}"))
}

/// The arguments the chart's Deployment gives the operator.
fn operator_args(docs: &[Value]) -> Vec<&str> {
    find(docs, "Deployment", "bottle-operator")["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

#[test]
fn chart_lints_and_its_schema_rejects_typos() {
    let c = chart();
    let out = helm(&["lint", c.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for bad in [
        "replicas=abc",
        "replicsa=2",
        "clusterCIDRs[0]=not-a-cidr",
        "image.pullPolicy=Sometimes",
    ] {
        let out = helm(&["lint", c.to_str().unwrap(), "--set", bad]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success() && text.contains("schema"),
            "{bad} must fail the values schema: {text}"
        );
    }
    // The chart ships the same CRDs the operator is built from.
    for crd in ["bottle.yaml", "accessrequest.yaml"] {
        assert_eq!(
            std::fs::read_to_string(c.join("crds").join(crd)).unwrap(),
            std::fs::read_to_string(repo().join("crds").join(crd)).unwrap(),
            "charts/bottle-operator/crds is stale: cp crds/{crd} charts/bottle-operator/crds/"
        );
    }
}

#[test]
fn rendered_chart_is_hardened_and_scoped() {
    let docs = template(&[
        "--set",
        "clusterCIDRs={198.18.0.0/15,fd00:10::/64}",
        "--set",
        "bottle.pipelockImage.repository=ghcr.io/luckypipewrench/pipelock@sha256:0123",
    ]);
    let dep = find(&docs, "Deployment", "bottle-operator");
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let args = operator_args(&docs);
    assert!(args.contains(&"--leader-elect"));
    assert!(
        args.contains(&"--cluster-cidrs=198.18.0.0/15,fd00:10::/64"),
        "{args:?}"
    );
    assert!(
        args.contains(&"--pipelock-image=ghcr.io/luckypipewrench/pipelock@sha256:0123"),
        "a digest is used as is: {args:?}"
    );
    assert!(!args.iter().any(|a| a.starts_with("--namespace")));
    assert!(!args.iter().any(|a| a.contains("pull-policy")), "{args:?}");
    operator_accepts(&args);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(
        dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
        true
    );
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    find(&docs, "PodDisruptionBudget", "bottle-operator");
    find(&docs, "Service", "-metrics");
    let cluster_rules = find(&docs, "ClusterRole", "bottle-system")["rules"].clone();

    // Namespaced mode: the same rules, as a Role in the watched namespace only.
    let docs = template(&["--set", "watchNamespace=team-a"]);
    // The access policy's roles are for people, not the operator; without them (a second
    // release) nothing cluster-scoped is left.
    let people = ["bottle-approver", "bottle-requester"];
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole"
                && !people.iter().any(|p| d["metadata"]["name"] == *p))
    );
    let bare = template(&[
        "--set",
        "watchNamespace=team-a",
        "--set",
        "accessRequests.admissionPolicy=false",
    ]);
    assert!(!bare.iter().any(|d| d["kind"] == "ClusterRole"
        || d["kind"] == "ValidatingAdmissionPolicy"
        || d["kind"] == "ValidatingAdmissionPolicyBinding"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "team-a")
        .expect("Role in team-a");
    assert_eq!(role["rules"], cluster_rules);
    assert!(operator_args(&docs).contains(&"--namespace=team-a"));
    // Secrets: the operator reads and creates them, never updates or deletes them.
    let secrets = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"][0] == "secrets")
        .unwrap();
    assert_eq!(
        secrets["verbs"],
        serde_json::json!(["get", "list", "watch", "create"])
    );
}

#[tokio::test]
async fn installed_chart_credentials_are_enough_to_run_the_operator() {
    let ns = namespace("chart");
    kubectl_ok(&["create", "namespace", "bottle-system"]);
    let c = chart();
    let out = helm(&[
        "install",
        "bo",
        c.to_str().unwrap(),
        "--namespace",
        "bottle-system",
        "--set",
        &format!("watchNamespace={ns}"),
        // The test harness installed the cluster's access policy already.
        "--set",
        "accessRequests.admissionPolicy=false",
        "--wait=false",
    ]);
    assert!(
        out.status.success(),
        "helm install: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    kubectl_ok(&[
        "-n",
        "bottle-system",
        "get",
        "deployment/bottle-operator",
        "serviceaccount/bottle-operator",
        "role/bottle-operator-leader",
    ]);
    kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "role/bottle-operator",
        "rolebinding/bottle-operator",
    ]);

    // The operator with exactly the chart's ServiceAccount credentials.
    let cp = cluster();
    let token = kubectl_ok(&[
        "-n",
        "bottle-system",
        "create",
        "token",
        "bottle-operator",
        "--duration=1h",
    ]);
    let admin: Value =
        serde_norway::from_str(&std::fs::read_to_string(&cp.kubeconfig).unwrap()).unwrap();
    let ca = admin["clusters"][0]["cluster"]["certificate-authority-data"]
        .as_str()
        .unwrap();
    let kubeconfig = cp.dir.join(format!("sa-{ns}.kubeconfig"));
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {}, certificate-authority-data: {ca}}}\nusers:\n- name: sa\n  user: {{token: {}}}\ncontexts:\n- name: c\n  context: {{cluster: c, user: sa}}\ncurrent-context: c\n",
            cp.server,
            token.trim()
        ),
    )
    .unwrap();
    let kc = kubeconfig.to_str().unwrap().to_string();
    let _op = Operator::start_with(
        &ns,
        &[
            "--leader-elect",
            "--leader-election-namespace",
            "bottle-system",
            // This control plane's kubernetes Service has no endpoints to read.
            "--api-server-for-pods",
            &format!("127.0.0.1:{}", cp.api_port),
        ],
        &[("KUBECONFIG", kc.as_str())],
    );
    let example = repo().join("examples/bottle-full.yaml");
    kubectl_ok(&["-n", &ns, "apply", "-f", example.to_str().unwrap()]);
    let client = cp.client().await.unwrap();
    eventually(
        "the full example applied by the chart's ServiceAccount",
        Duration::from_secs(60),
        || async {
            let b = Api::<Bottle>::namespaced(client.clone(), &ns)
                .get("full")
                .await
                .ok()?;
            b.status?
                .conditions
                .iter()
                .any(|c| c.type_ == "ConfigApplied" && c.status == "True")
                .then_some(())
        },
    )
    .await;
    let objects = kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "pods,configmaps,secrets,networkpolicies,persistentvolumeclaims",
        "-l",
        "bottle-operator.dev/bottle=full",
        "-o",
        "name",
    ]);
    assert_eq!(
        objects.lines().count(),
        6,
        "Pod, ConfigMap, CA Secret, two NetworkPolicies, workspace: {objects}"
    );
    let events = kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "events",
        "--field-selector",
        "reason=PodCreated",
        "-o",
        "name",
    ]);
    assert!(
        !events.trim().is_empty(),
        "the ServiceAccount can publish Events"
    );

    // And nothing beyond its namespace.
    let can = |verb: &str, res: &str, n: &str| {
        let out = cp
            .kubectl()
            .args([
                "auth",
                "can-i",
                verb,
                res,
                "-n",
                n,
                "--as",
                "system:serviceaccount:bottle-system:bottle-operator",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    // A supervised Bottle's Role grants what the operator holds itself (the API server
    // refuses a Role that escalates): its identity is made with the chart's rights alone.
    cp.apply_json(&serde_json::json!({
        "apiVersion": "bottle-operator.dev/v1alpha1", "kind": "Bottle",
        "metadata": {"name": "sup", "namespace": ns},
        "spec": {"supervise": {"enabled": true}},
    }))
    .unwrap();
    eventually(
        "the supervised Bottle's identity, made with the chart's rights",
        Duration::from_secs(60),
        || async {
            kubectl(&[
                "-n",
                &ns,
                "get",
                "serviceaccount/sup-supervise",
                "role/sup-supervise",
                "rolebinding/sup-supervise",
            ])
            .status
            .success()
            .then_some(())
        },
    )
    .await;
    assert_eq!(
        can("list", "endpointslices.discovery.k8s.io", "default"),
        "yes",
        "where Pods reach the API server, read at start"
    );
    assert_eq!(can("get", "secrets", &ns), "yes");
    assert_eq!(can("get", "secrets", "default"), "no");
    assert_eq!(can("delete", "secrets", &ns), "no");
    assert_eq!(can("update", "configmaps", &ns), "no");
}

/// The operator binary parses `args` (the flags the chart passes it).
fn operator_accepts(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_bottle-operator"))
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the operator refuses the chart's args {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bottle_image_pull_settings_reach_the_operator() {
    let docs = template(&[
        "--set",
        "bottle.sidecarImage.pullPolicy=Always",
        "--set",
        "bottle.agentImage.pullPolicy=Never",
        "--set",
        "bottle.pipelockImage.pullPolicy=IfNotPresent",
        "--set",
        "bottle.imagePullSecrets={registry-a,registry-b}",
    ]);
    let args = operator_args(&docs);
    for want in [
        "--sidecar-image-pull-policy=Always",
        "--agent-image-pull-policy=Never",
        "--pipelock-image-pull-policy=IfNotPresent",
        "--image-pull-secret=registry-a,registry-b",
    ] {
        assert!(args.contains(&want), "{want} missing: {args:?}");
    }
    operator_accepts(&args);
    let out = helm(&[
        "template",
        "bo",
        chart().to_str().unwrap(),
        "--set",
        "bottle.agentImage.pullPolicy=Sometimes",
    ]);
    assert!(
        !out.status.success(),
        "the schema refuses an unknown policy"
    );
}

#[test]
fn gvisor_runtime_class_is_opt_in() {
    assert!(
        !template(&[]).iter().any(|d| d["kind"] == "RuntimeClass"),
        "no RuntimeClass unless asked for"
    );
    let docs = template(&[
        "--set",
        "gvisor.runtimeClass.create=true",
        "--set",
        "gvisor.runtimeClass.nodeSelector.sandbox=gvisor",
    ]);
    let rc = find(&docs, "RuntimeClass", "gvisor");
    assert_eq!(rc["handler"], "runsc");
    assert_eq!(rc["scheduling"]["nodeSelector"]["sandbox"], "gvisor");
    let out = helm(&[
        "template",
        "bo",
        chart().to_str().unwrap(),
        "--set",
        "gvisor.runtimeClass.handler=Run SC",
    ]);
    assert!(!out.status.success(), "an invalid handler name is refused");
}

// --- kind/cluster.yaml ----------------------------------------------------------------------

/// A stand-in for docker that lets kind get as far as it can without a container engine:
/// it answers kind's provider probes and refuses to pull the node image.
const DOCKER_MOCK_FOR_KIND: &str = r#"#!/bin/sh
case "$1" in
  -v) echo "Docker version 0.0.0-mock" ;;
  info) echo '{}' ;;
  ps) ;;
  *) echo "docker-mock: no container engine here" >&2; exit 1 ;;
esac
"#;

fn kind_create(config: &std::path::Path) -> String {
    let cp = cluster();
    let dir = tempfile::tempdir().unwrap();
    write_executable(&dir.path().join("docker"), DOCKER_MOCK_FOR_KIND);
    let out = Command::new(cp.bin.join("kind"))
        .args(["create", "cluster", "--config"])
        .arg(config)
        .env("PATH", path_with(dir.path()))
        .env("KUBECONFIG", dir.path().join("kubeconfig"))
        .output()
        .expect("kind runs");
    assert!(!out.status.success(), "kind cannot succeed without docker");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn kind_config_passes_kinds_own_validation() {
    // kind decodes the config strictly and validates it before it needs a node image; the
    // mock refusing the image pull is the first thing that may stop it.
    let err = kind_create(&repo().join("kind/cluster.yaml"));
    assert!(
        err.contains("failed to pull image") && err.contains("docker-mock"),
        "kind refused kind/cluster.yaml before reaching the container engine:\n{err}"
    );
    assert!(err.contains("Creating cluster \"bottle\""), "{err}");

    // The same check refuses a misspelled field and an invalid subnet.
    let original = std::fs::read_to_string(repo().join("kind/cluster.yaml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (from, to, expect) in [
        (
            "disableDefaultCNI",
            "disableDefaultCni",
            "field disableDefaultCni not found",
        ),
        ("192.168.0.0/16", "192.168.0.0/33", "invalid pod subnet"),
    ] {
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, original.replace(from, to)).unwrap();
        let err = kind_create(&bad);
        assert!(err.contains(expect), "{to}: {err}");
    }
}

// --- tool shims -----------------------------------------------------------------------------

/// Put first on PATH for kind/up.sh and the README's commands. kind, kubectl and helm: the
/// real binary parses every command (with `--help` before any `--`, so nothing runs) and a
/// command it refuses fails with 97. In `run` mode kubectl then runs for real against the
/// test control plane; `helm upgrade --install` renders the chart with `helm template` and
/// the same flags (another test installs it, and two releases of it in one namespace would
/// collide); kind (which needs a container engine) and the kind cluster's own context are
/// skipped. docker is a mock: it checks that a build's Dockerfile and context exist.
const TOOL_SHIM: &str = r#"#!/usr/bin/env bash
set -u
tool=${0##*/}
printf '%s\n' "$tool $*" >> "$SHIM_LOG"
if [ "$tool" = docker ]; then
  if [ "${1:-}" = build ]; then
    shift; file=""; context=""
    while [ $# -gt 0 ]; do
      case "$1" in
        -f) file=$2; shift 2 ;;
        -t) shift 2 ;;
        -*) echo "docker-mock: flag $1 not expected" >&2; exit 97 ;;
        *) context=$1; shift ;;
      esac
    done
    [ -f "$file" ] && [ -d "$context" ] || { echo "docker-mock: no $file or $context" >&2; exit 97; }
  fi
  exit 0
fi
checked=(); placed=0
for a in "$@"; do
  if [ "$a" = -- ] && [ $placed = 0 ]; then checked+=(--help); placed=1; fi
  checked+=("$a")
done
[ $placed = 1 ] || checked+=(--help)
if ! err=$("$REAL_BIN/$tool" "${checked[@]}" 2>&1 >/dev/null </dev/null); then
  echo "shim: $tool refuses: $*: $err" >&2
  exit 97
fi
[ "$SHIM_MODE" = check ] && exit 0
case "$tool $*" in
  kind\ *) exit 0 ;;
  "kubectl config use-context kind-bottle"|"kubectl --context kind-bottle "*) exit 0 ;;
  "helm upgrade --install "*) shift 2; exec "$REAL_BIN/helm" template "$@" --kube-version 1.34.10 ;;
esac
exec "$REAL_BIN/$tool" "$@"
"#;

fn write_executable(path: &std::path::Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn path_with(first: &std::path::Path) -> String {
    format!(
        "{}:{}",
        first.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A directory of shims plus the log they write, and a kubeconfig whose default namespace
/// is the test's.
struct Shims {
    dir: tempfile::TempDir,
    log: PathBuf,
    kubeconfig: PathBuf,
}

impl Shims {
    fn new(ns: &str) -> Self {
        let cp = cluster();
        let dir = tempfile::tempdir().unwrap();
        for tool in ["docker", "kind", "kubectl", "helm"] {
            write_executable(&dir.path().join(tool), TOOL_SHIM);
        }
        // kubectl finds the plugin on PATH, as it would on a user's machine.
        let plugin = PathBuf::from(env!("CARGO_BIN_EXE_kubectl-bottle"));
        std::os::unix::fs::symlink(&plugin, dir.path().join("kubectl-bottle")).unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::copy(&cp.kubeconfig, &kubeconfig).unwrap();
        let out = Command::new(cp.bin.join("kubectl"))
            .args(["config", "set-context", "--current", "--namespace", ns])
            .env("KUBECONFIG", &kubeconfig)
            .output()
            .unwrap();
        assert!(out.status.success());
        let log = dir.path().join("calls.log");
        Shims {
            dir,
            log,
            kubeconfig,
        }
    }

    fn command(&self, mode: &str, program: &str) -> Command {
        let cp = cluster();
        let mut c = Command::new(program);
        c.current_dir(repo())
            .env("PATH", path_with(self.dir.path()))
            .env("SHIM_MODE", mode)
            .env("SHIM_LOG", &self.log)
            .env("REAL_BIN", &cp.bin)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.path().join("helm-cache"))
            .env("HELM_CONFIG_HOME", self.dir.path().join("helm-config"))
            .env("HELM_DATA_HOME", self.dir.path().join("helm-data"));
        c
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Checks one shell command line (pipes allowed) in `check` mode, in a directory that
    /// shows the repository's files but takes what the line writes (`> bottle-ca.crt`).
    fn check(&self, line: &str) -> Result<(), String> {
        let work = self.dir.path().join("work");
        if !work.exists() {
            std::fs::create_dir(&work).unwrap();
            for entry in std::fs::read_dir(repo()).unwrap() {
                let entry = entry.unwrap();
                std::os::unix::fs::symlink(entry.path(), work.join(entry.file_name())).unwrap();
            }
        }
        let out = self
            .command("check", "bash")
            .current_dir(&work)
            .args(["-euo", "pipefail", "-c", line])
            .env("ANTHROPIC_API_KEY", "sk-ant-check")
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{line}\n  {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// The shell commands in `text` that call kind, kubectl, helm or docker: continuation lines
/// joined, comments dropped.
fn tool_commands(text: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            continue;
        }
        cur.push_str(line);
        joined.push(std::mem::take(&mut cur));
    }
    joined
        .into_iter()
        .map(|l| match l.find(" #") {
            Some(i) => l[..i].trim().to_string(),
            None => l,
        })
        .filter(|l| {
            l.split('|').any(|part| {
                matches!(
                    part.split_whitespace().next(),
                    Some("kind" | "kubectl" | "helm" | "docker")
                )
            })
        })
        .collect()
}

// --- kind/up.sh -----------------------------------------------------------------------------

#[tokio::test]
async fn kind_script_brings_up_a_ready_bottle_with_real_tools_and_mock_docker() {
    let ns = namespace_on_node("kindup");
    let _op = Operator::start(&ns);
    let shims = Shims::new(&ns);
    let key = "sk-ant-kind-up-test-0123456789";
    let script = shims
        .command("run", "bash")
        .arg("kind/up.sh")
        .env("ANTHROPIC_API_KEY", key)
        .env("TAG", "dev")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The Pod lands on the kwok node, which reports it running and ready as a kubelet
    // would, so the script's `kubectl wait` can finish.
    let out = tokio::task::spawn_blocking(move || script.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let client = cluster().client().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kind/up.sh failed\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let calls = shims.calls();
    let expected = [
        "kind create cluster --config kind/cluster.yaml",
        "docker build -f images/operator.Dockerfile -t bottle-operator/operator:dev .",
        "docker build -f images/sidecar.Dockerfile -t bottle-operator/sidecar:dev .",
        "docker build -f images/agent.Dockerfile -t bottle-operator/agent:dev images/",
        "kind load docker-image --name bottle bottle-operator/agent:dev",
        "helm upgrade --install bottle-operator charts/bottle-operator",
        "kubectl apply -f examples/bottle-minimal.yaml",
        "kubectl wait --for=condition=Ready bottle/minimal",
    ];
    let mut at = 0;
    for want in expected {
        let found = calls[at..]
            .iter()
            .position(|c| c.starts_with(want))
            .unwrap_or_else(|| panic!("{want:?} not called (in order); calls:\n{calls:#?}"));
        at += found + 1;
    }
    assert!(
        !calls.iter().any(|c| c.contains(key)),
        "the API key appeared on a command line"
    );

    // The Pod ran on the kwok node, whose reports made the Bottle ready.
    let pod = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), &ns)
        .get("minimal")
        .await
        .unwrap();
    assert_eq!(
        pod.spec.unwrap().node_name.as_deref(),
        Some(support::control_plane::KWOK_NODE)
    );
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));

    // The key reached the Secret exactly, the Bottle is applied and ready.
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &ns)
        .get("anthropic")
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["api-key"].0, key.as_bytes());
    let b = Api::<Bottle>::namespaced(client.clone(), &ns)
        .get("minimal")
        .await
        .unwrap();
    let status = b.status.unwrap();
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.status == "True" && (c.type_ != "Ready" || c.reason == "PodReady")),
        "{:?}",
        status.conditions
    );

    // What it tells the user to do next parses with the real tools too.
    assert!(
        stdout.contains("kubectl exec -it minimal -c agent -- claude"),
        "{stdout}"
    );
    let (_, advice) = stdout.split_once("Your bottle is running").unwrap();
    let advice = tool_commands(advice);
    assert!(advice.len() >= 4, "{advice:?}");
    let refused: Vec<String> = advice.iter().filter_map(|c| shims.check(c).err()).collect();
    assert!(refused.is_empty(), "{refused:#?}");

    // A second run without the key in the environment keeps the one already stored.
    let again = shims
        .command("run", "bash")
        .arg("kind/up.sh")
        .env_remove("ANTHROPIC_API_KEY")
        .env("TAG", "dev")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "second run: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, &ns)
        .get("anthropic")
        .await
        .unwrap();
    assert_eq!(secret.data.unwrap()["api-key"].0, key.as_bytes());
}

// --- README ---------------------------------------------------------------------------------

#[test]
fn every_readme_command_parses_with_the_real_tools() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut blocks = String::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            inside = line == "```sh" && !inside;
            continue;
        }
        if inside {
            blocks.push_str(line);
            blocks.push('\n');
        }
    }
    let commands = tool_commands(&blocks);
    assert!(commands.len() >= 10, "{commands:#?}");
    let shims = Shims::new("default");
    let refused: Vec<String> = commands
        .iter()
        .filter_map(|c| shims.check(c).err())
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");

    // Control: the check refuses a misspelled flag.
    assert!(
        shims
            .check("helm install x charts/bottle-operator --namspace a")
            .is_err()
    );
    assert!(shims.check("kubectl bottle status x --sincee 5").is_err());
}

// --- images ---------------------------------------------------------------------------------

#[test]
fn dockerfiles_pass_hadolint_and_hold_what_the_pod_runs() {
    let cp = cluster();
    let images = repo().join("images");
    for name in ["operator", "sidecar", "agent"] {
        let file = images.join(format!("{name}.Dockerfile"));
        let out = Command::new(cp.bin.join("hadolint"))
            .arg("--config")
            .arg(repo().join(".hadolint.yaml"))
            .arg(&file)
            .output()
            .expect("hadolint runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // Every container the operator gives the sidecar image starts a program that image has.
    let sidecar = std::fs::read_to_string(images.join("sidecar.Dockerfile")).unwrap();
    let settings = bottle_operator::operator::render::Settings::default();
    let full: Vec<Value> = serde_norway::Deserializer::from_str(
        &std::fs::read_to_string(repo().join("examples/bottle-full.yaml")).unwrap(),
    )
    .map(|d| Value::deserialize(d).unwrap())
    .collect();
    let bottle: Bottle =
        serde_json::from_value(full.into_iter().find(|d| d["kind"] == "Bottle").unwrap()).unwrap();
    let policy = bottle_operator::operator::render::validate(&bottle, &Default::default()).unwrap();
    let pod = bottle_operator::operator::render::desired(&bottle, policy, &settings, "fp").pod;
    let spec = pod.spec.unwrap();
    let containers: Vec<_> = spec
        .init_containers
        .unwrap_or_default()
        .into_iter()
        .chain(spec.containers)
        .collect();
    let mut checked = 0;
    for c in containers
        .iter()
        .filter(|c| c.image.as_deref() == Some(settings.sidecar_image.as_str()))
    {
        // ssh refuses to run for a UID the image's passwd does not name.
        let uid = c.security_context.as_ref().and_then(|s| s.run_as_user);
        if let Some(uid) = uid.filter(|u| *u != 0) {
            assert!(
                sidecar.contains(&format!(":x:{uid}:{uid}:")),
                "{}: the sidecar image has no passwd entry for UID {uid}",
                c.name
            );
        }
        let program = &c.command.as_ref().unwrap()[0];
        assert!(
            sidecar.contains(&format!("/usr/local/bin/{program}\n")),
            "{}: the sidecar image has no /usr/local/bin/{program}",
            c.name
        );
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} sidecar containers");
    // git-gate and netinit call these; the image must install them.
    for needed in [
        "git",
        "openssh-client",
        "iptables",
        "/usr/local/bin/gitleaks",
    ] {
        assert!(sidecar.contains(needed), "sidecar image lacks {needed}");
    }

    // The agent image runs as the UID netinit confines.
    let agent = std::fs::read_to_string(images.join("agent.Dockerfile")).unwrap();
    let agent_uid = containers
        .iter()
        .find(|c| c.name == "agent")
        .and_then(|c| c.security_context.as_ref()?.run_as_user)
        .unwrap();
    assert!(
        agent.contains(&format!("\nUSER {agent_uid}:{agent_uid}\n")),
        "agent image user is not {agent_uid}"
    );
}

/// The `cargo build` commands of a Dockerfile's RUN steps, continuation lines joined and
/// split at `&&`, whitespace normalised.
fn cargo_builds(dockerfile: &str) -> Vec<String> {
    dockerfile
        .replace("\\\n", " ")
        .lines()
        .filter_map(|l| l.trim().strip_prefix("RUN "))
        .flat_map(|run| run.split("&&"))
        .map(|c| c.split_whitespace().collect::<Vec<_>>())
        .filter_map(|words| {
            let at = words.windows(2).position(|w| w == ["cargo", "build"])?;
            Some(words[at..].join(" "))
        })
        .collect()
}

#[test]
fn sidecar_image_builds_bottle_sidecar_without_the_operator_feature() {
    let read = |name: &str| {
        std::fs::read_to_string(repo().join("images").join(format!("{name}.Dockerfile"))).unwrap()
    };
    let words = |c: &str| c.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let sidecar = cargo_builds(&read("sidecar"));
    let builds: Vec<_> = sidecar
        .iter()
        .filter(|c| c.contains("--bin bottle-sidecar"))
        .collect();
    assert_eq!(builds.len(), 1, "sidecar image cargo builds: {sidecar:?}");
    let flags = words(builds[0]);
    assert!(
        flags.iter().any(|w| w == "--no-default-features"),
        "the sidecar image builds bottle-sidecar with the operator feature: {}",
        builds[0]
    );
    assert!(
        !flags
            .iter()
            .any(|w| w.starts_with("--features") || w == "-F" || w == "--all-features"),
        "the sidecar image turns features back on: {}",
        builds[0]
    );
    // The twin: the operator image needs the feature, and the same parser sees its build.
    let operator = cargo_builds(&read("operator"));
    assert_eq!(
        operator.len(),
        1,
        "operator image cargo builds: {operator:?}"
    );
    assert!(
        operator[0].contains("--bin bottle-operator"),
        "{}",
        operator[0]
    );
    assert!(
        !words(&operator[0])
            .iter()
            .any(|w| w == "--no-default-features"),
        "the operator image builds without its feature: {}",
        operator[0]
    );
}

/// The crates `cargo tree` resolves for this package's normal, linked (not proc-macro)
/// dependencies, as `name vX.Y.Z`, the package itself left out.
fn linked_crates(extra: &[&str]) -> std::collections::BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            "normal,no-proc-macro",
        ])
        .args(["--prefix", "none", "--format", "{p}"])
        .args(extra)
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        // "name vX (path)" for local packages, " (*)" for repeats.
        .map(|l| l.split(" (").next().unwrap().to_owned())
        .filter(|p| !p.starts_with("bottle-operator "))
        .collect()
}

#[test]
fn bottle_sidecar_links_no_kubernetes_client_or_schema_crates() {
    // (schemars is not among them: supervise's MCP tools describe their input with it.)
    const OPERATOR_ONLY: [&str; 6] = [
        "kube",
        "kube-client",
        "kube-core",
        "kube-runtime",
        "k8s-openapi",
        "tower-http",
    ];
    let named = |set: &std::collections::BTreeSet<String>, name: &str| {
        set.iter().any(|p| p.split(' ').next() == Some(name))
    };
    let full = linked_crates(&[]);
    let slim = linked_crates(&["--no-default-features"]);
    // The twin: the default build does link them, so the query can see them.
    for name in OPERATOR_ONLY {
        assert!(named(&full, name), "the default build has no {name}");
        assert!(!named(&slim, name), "bottle-sidecar's build links {name}");
    }
    // What the sidecars run on is still there.
    for name in [
        "hyper",
        "rustls",
        "tokio",
        "rcgen",
        "notify",
        "serde_norway",
        "rmcp",
    ] {
        assert!(named(&slim, name), "bottle-sidecar's build lost {name}");
    }
    assert!(slim.is_subset(&full), "{:?}", slim.difference(&full));
    println!(
        "crates linked (normal, no proc-macro, unique name+version): default {}, --no-default-features {}",
        full.len(),
        slim.len()
    );
}
