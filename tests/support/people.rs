//! People of the test control plane: users with client certificates of their own and the
//! roles bound to them, working through `kubectl bottle` and kubectl.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::json;

use super::{cluster, kubectl_ok};

/// A person: a client certificate of user `cn`, and what they may do in `ns`.
pub struct Person {
    /// The user name the API server sees.
    pub name: String,
    /// Their kubeconfig.
    pub kubeconfig: PathBuf,
}

impl Person {
    /// `roles`: ClusterRoles bound in `ns`; `rules`: a Role of their own in `ns`.
    pub fn new(ns: &str, who: &str, roles: &[&str], rules: Option<serde_json::Value>) -> Self {
        let name = format!("{who}@{ns}");
        let kubeconfig = cluster()
            .user_kubeconfig(&format!("{who}-{ns}"), &name, &[])
            .expect("kubeconfig");
        for role in roles {
            kubectl_ok(&[
                "-n",
                ns,
                "create",
                "rolebinding",
                &format!("{who}-{role}"),
                &format!("--clusterrole={role}"),
                &format!("--user={name}"),
            ]);
        }
        if let Some(rules) = rules {
            cluster()
                .apply_json(&json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "Role",
                    "metadata": {"name": who, "namespace": ns},
                    "rules": rules,
                }))
                .unwrap();
            kubectl_ok(&[
                "-n",
                ns,
                "create",
                "rolebinding",
                who,
                &format!("--role={who}"),
                &format!("--user={name}"),
            ]);
        }
        Self { name, kubeconfig }
    }

    /// `kubectl bottle ARGS` as this person.
    pub fn bottle(&self, ns: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_kubectl-bottle"))
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["-n", ns])
            .args(args)
            .output()
            .expect("kubectl-bottle runs")
    }

    /// `kubectl ARGS` as this person.
    pub fn kubectl(&self, ns: &str, args: &[&str]) -> Output {
        cluster()
            .kubectl()
            .env("KUBECONFIG", &self.kubeconfig)
            .args(["-n", ns])
            .args(args)
            .output()
            .expect("kubectl runs")
    }

    /// `kubectl patch accessrequest NAME --type=merge -p PATCH` as this person.
    pub fn patch_request(&self, ns: &str, name: &str, patch: &str) -> Output {
        self.kubectl(
            ns,
            &["patch", "accessrequest", name, "--type=merge", "-p", patch],
        )
    }

    /// Files a request with `kubectl bottle request` and returns its name.
    pub fn request(&self, ns: &str, bottle: &str, host: &str, paths: &[&str]) -> String {
        let mut args = vec![
            "request",
            bottle,
            "--host",
            host,
            "--reason",
            "the task <b>needs</b> it",
        ];
        for p in paths {
            args.extend(["--path", p]);
        }
        let out = ok(self.bottle(ns, &args));
        // "accessrequest NS/NAME filed for bottle ..."
        out.split_whitespace()
            .nth(1)
            .and_then(|s| s.split('/').nth(1))
            .unwrap_or_else(|| panic!("no request name in {out:?}"))
            .to_string()
    }
}

pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts the command was refused, with `why` in what it printed.
pub fn refused(out: Output, why: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "expected a refusal ({why}), got: {text}"
    );
    assert!(text.contains(why), "refused, but not with {why:?}: {text}");
}

/// A Bottle `name` with an empty spec, made by the admin.
pub fn empty_bottle(ns: &str, name: &str) {
    cluster()
        .apply_json(&json!({
            "apiVersion": "bottle-operator.dev/v1alpha1",
            "kind": "Bottle",
            "metadata": {"name": name, "namespace": ns},
            "spec": {},
        }))
        .unwrap();
}

/// The phase AccessRequest `name` has now (`None`: absent, or not reviewed yet).
pub async fn phase_of(
    c: &kube::Client,
    ns: &str,
    name: &str,
) -> Option<bottle_operator::contract::api::AccessPhase> {
    kube::Api::<bottle_operator::contract::api::AccessRequest>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .ok()?
        .status?
        .phase
}
