//! The Helm chart, checked with the real `helm`: lint and schema, rendered content, and an
//! install into the real control plane whose ServiceAccount then runs the operator (so a
//! missing RBAC verb fails here, not in a user's cluster).

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use bottle_operator::api::Bottle;
use kube::Api;
use serde_json::Value;
use support::{Operator, cluster, eventually, kubectl_ok, namespace, repo};

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
    // The chart ships the same CRD the operator is built from.
    assert_eq!(
        std::fs::read_to_string(c.join("crds/bottle.yaml")).unwrap(),
        std::fs::read_to_string(repo().join("crds/bottle.yaml")).unwrap(),
        "charts/bottle-operator/crds is stale: cp crds/bottle.yaml charts/bottle-operator/crds/"
    );
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
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
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
    assert!(!docs.iter().any(|d| d["kind"] == "ClusterRole"));
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "team-a")
        .expect("Role in team-a");
    assert_eq!(role["rules"], cluster_rules);
    let dep = find(&docs, "Deployment", "bottle-operator");
    assert!(
        dep["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--namespace=team-a")
    );
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
    assert_eq!(can("get", "secrets", &ns), "yes");
    assert_eq!(can("get", "secrets", "default"), "no");
    assert_eq!(can("delete", "secrets", &ns), "no");
    assert_eq!(can("update", "configmaps", &ns), "no");
}
