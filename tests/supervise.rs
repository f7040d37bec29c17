//! The supervise sidecar against a real kube-apiserver: the operator makes a supervised
//! Bottle's ServiceAccount, Role and binding; the real `bottle-sidecar supervise` runs on
//! loopback with a token the API server issued to that account and the CA the namespace's
//! `kube-root-ca.crt` carries (what the Pod's projected volume holds); a real MCP client
//! (rmcp) and curl play the agent; a person approves with `kubectl bottle`. The chart's
//! admission policy refuses what the account may not do.

mod support;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use bottle_operator::contract::api::{AccessPhase, AccessRequest, Bottle};
use bottle_operator::contract::config::egress::EgressConfig;
use bottle_operator::contract::config::supervise::SuperviseConfig;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, ClientConfig};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use support::control_plane::{free_port, spawn_tied};
use support::people::{Person, ok, phase_of, refused};
use support::{Operator, cluster, eventually, kubectl_ok, namespace};

const WAIT: Duration = Duration::from_secs(60);

async fn client() -> Client {
    cluster().client().await.expect("client")
}

fn api_server_flag() -> String {
    format!("127.0.0.1:{}", cluster().api_port)
}

fn supervised(name: &str, ns: &str) {
    cluster()
        .apply_json(&json!({
            "apiVersion": "bottle-operator.dev/v1alpha1",
            "kind": "Bottle",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"egress": {"allow": ["pypi.org"], "routes": [
                {"host": "api.github.com", "paths": ["/repos/acme/"]}
            ]}, "supervise": {"enabled": true}},
        }))
        .unwrap();
}

/// The rendered ConfigMap's file `key` of Bottle `bottle`.
async fn rendered(c: &Client, ns: &str, bottle: &str, key: &str) -> String {
    let cms = Api::<ConfigMap>::namespaced(c.clone(), ns);
    eventually(&format!("{key} of {bottle}"), WAIT, || async {
        cms.get(&format!("{bottle}-config"))
            .await
            .ok()?
            .data?
            .get(key)
            .cloned()
    })
    .await
}

/// The supervise sidecar of Bottle `bottle`, run here: its rendered config with the files
/// the Pod would mount written into `dir` (a token for the Bottle's account, the namespace's
/// root CA, egress's config). `bottle_override` makes it claim another Bottle.
struct Sidecar {
    child: Child,
    egress: Child,
    port: u16,
    egress_port: u16,
    placed: Placed,
}

/// Where the sidecars' files are, as the Pod's volumes would hold them.
struct Placed {
    dir: std::path::PathBuf,
    egress_port: u16,
    egress_admin: u16,
}

impl Placed {
    /// Does the kubelet's part for egress: writes the rendered `egress.yaml` where egress
    /// (and supervise) read it, its listeners and CA moved to this test's places.
    fn sync_egress(&self, rendered: &str) {
        let mut egress: EgressConfig = serde_norway::from_str(rendered).unwrap();
        egress.listen = format!("127.0.0.1:{}", self.egress_port);
        egress.admin_listen = format!("127.0.0.1:{}", self.egress_admin);
        egress.ca_cert = self.dir.join("bottle-ca.crt").display().to_string();
        egress.ca_key = self.dir.join("bottle-ca.key").display().to_string();
        let tmp = self.dir.join("egress-run.yaml.new");
        std::fs::write(&tmp, serde_norway::to_string(&egress).unwrap()).unwrap();
        std::fs::rename(&tmp, self.dir.join("egress-run.yaml")).unwrap();
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        for c in [&mut self.child, &mut self.egress] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn sidecar(c: &Client, ns: &str, bottle: &str, dir: &Path, claim: Option<&str>) -> Sidecar {
    let mut cfg: SuperviseConfig =
        serde_norway::from_str(&rendered(c, ns, bottle, "supervise.yaml").await).unwrap();
    let token = kubectl_ok(&[
        "-n",
        ns,
        "create",
        "token",
        &format!("{bottle}-supervise"),
        "--duration=1h",
    ]);
    let ca = eventually("the namespace's kube-root-ca.crt", WAIT, || async {
        Api::<ConfigMap>::namespaced(c.clone(), ns)
            .get("kube-root-ca.crt")
            .await
            .ok()?
            .data?
            .get("ca.crt")
            .cloned()
    })
    .await;
    std::fs::write(dir.join("token"), token.trim()).unwrap();
    std::fs::write(dir.join("ca.crt"), ca).unwrap();
    std::fs::write(
        dir.join("egress.yaml"),
        rendered(c, ns, bottle, "egress.yaml").await,
    )
    .unwrap();
    // The real egress beside it, from its rendered config (listeners moved to free ports,
    // the bottle CA from its Secret): what it refuses shows in current_policy.
    let ca_secret = Api::<Secret>::namespaced(c.clone(), ns)
        .get(&format!("{bottle}-ca"))
        .await
        .unwrap();
    let ca_data = ca_secret.data.unwrap();
    for (file, key) in [("bottle-ca.crt", "ca.crt"), ("bottle-ca.key", "ca.key")] {
        std::fs::write(dir.join(file), &ca_data[key].0).unwrap();
    }
    let (egress_port, egress_admin) = (free_port(), free_port());
    let placed = Placed {
        dir: dir.to_path_buf(),
        egress_port,
        egress_admin,
    };
    placed.sync_egress(&std::fs::read_to_string(dir.join("egress.yaml")).unwrap());
    let egress_log = std::fs::File::create(dir.join("egress.log")).unwrap();
    let egress_child = spawn_tied(
        Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
            .args(["egress", "--config"])
            .arg(dir.join("egress-run.yaml"))
            .stdout(std::process::Stdio::null())
            .stderr(egress_log),
    )
    .expect("egress starts");
    cfg.egress_admin = format!("127.0.0.1:{egress_admin}");
    let port = free_port();
    cfg.listen = format!("127.0.0.1:{port}");
    cfg.token_file = dir.join("token").display().to_string();
    cfg.ca_file = dir.join("ca.crt").display().to_string();
    // The file egress runs: what a kubelet sync updates in the Pod.
    cfg.egress_config = dir.join("egress-run.yaml").display().to_string();
    if let Some(other) = claim {
        cfg.bottle = other.to_string();
    }
    let path = dir.join("supervise.yaml");
    std::fs::write(&path, serde_norway::to_string(&cfg).unwrap()).unwrap();
    let log = std::fs::File::create(dir.join("supervise.log")).unwrap();
    let child = spawn_tied(
        Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
            .args(["supervise", "--config"])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(log),
    )
    .expect("supervise starts");
    let s = Sidecar {
        child,
        egress: egress_child,
        port,
        egress_port,
        placed,
    };
    eventually("supervise answers /readyz", WAIT, || async {
        curl(&s, &["/readyz"]).status.success().then_some(())
    })
    .await;
    s
}

fn curl(s: &Sidecar, args: &[&str]) -> Output {
    let (path, rest) = args.split_first().unwrap();
    Command::new("curl")
        .args(["-sS", "--fail-with-body", "--max-time", "60"])
        .arg(format!("http://127.0.0.1:{}{path}", s.port))
        .args(rest)
        .output()
        .expect("curl runs")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn post(s: &Sidecar, body: Value) -> Output {
    curl(
        s,
        &[
            "/v1/requests",
            "-H",
            "content-type: application/json",
            "-d",
            &body.to_string(),
        ],
    )
}

type Mcp = rmcp::service::RunningService<rmcp::RoleClient, ClientConfig>;

async fn mcp(s: &Sidecar) -> Mcp {
    let transport = StreamableHttpClientTransport::from_config(
        StreamableHttpClientTransportConfig::with_uri(format!("http://127.0.0.1:{}/mcp", s.port)),
    );
    ClientConfig::default()
        .serve(transport)
        .await
        .expect("MCP session")
}

/// Calls `tool`; returns its structured answer and whether it was a tool error.
async fn call(m: &Mcp, tool: &str, args: Value) -> (Value, bool) {
    let args = args.as_object().cloned().unwrap_or_default();
    let r = m
        .call_tool(CallToolRequestParams::new(tool.to_string()).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("{tool}: {e}"));
    (
        r.structured_content.clone().unwrap_or(Value::Null),
        r.is_error == Some(true),
    )
}

#[tokio::test]
async fn the_agent_asks_over_mcp_and_http_a_person_decides_and_the_agent_learns_it() {
    let ns = namespace("supervise-life");
    let _op = Operator::start_with(
        &ns,
        &[
            "--api-server-for-pods",
            &api_server_flag(),
            "--access-max-pending",
            "2",
        ],
        &[],
    );
    let c = client().await;
    supervised("a", &ns);
    let dir = tempfile::tempdir().unwrap();
    let s = sidecar(&c, &ns, "a", dir.path(), None).await;
    let m = mcp(&s).await;

    let tools: Vec<String> = m
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    for t in ["current_policy", "request_access", "request_status"] {
        assert!(tools.contains(&t.to_string()), "{t} in {tools:?}");
    }
    let (policy, err) = call(&m, "current_policy", json!({})).await;
    assert!(!err, "{policy}");
    assert_eq!(policy["allow"], json!(["pypi.org"]));
    assert_eq!(
        policy["routes"],
        json!([{"host": "api.github.com", "paths": ["/repos/acme/"]}])
    );
    // The JSON API says the same.
    assert_eq!(json_of(&ok_out(curl(&s, &["/v1/policy"]))), policy);
    assert_eq!(policy["recentlyRefused"], json!([]));

    // What egress refuses for want of a route is listed, newest first, with the paths.
    let proxy = format!("http://127.0.0.1:{}", s.egress_port);
    for url in [
        "http://blocked.example.net/x",
        // Inside the TLS egress intercepts (its CA is not this curl's: -k).
        "https://api.github.com/orgs/other",
    ] {
        let out = Command::new("curl")
            .args([
                "-sSk",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--proxy",
                &proxy,
                url,
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403", "{url}");
    }
    let (policy, _) = call(&m, "current_policy", json!({})).await;
    let refused = &policy["recentlyRefused"];
    assert_eq!(refused[0]["host"], "api.github.com", "{policy}");
    assert_eq!(refused[0]["paths"], json!(["/orgs/other"]));
    assert_eq!(refused[1]["host"], "blocked.example.net");
    assert_eq!(refused[1]["paths"], json!([]));

    // An ask over MCP becomes an AccessRequest made as the Bottle's own account.
    let (filed, err) = call(
        &m,
        "request_access",
        json!({"host": "api.example.com", "paths": ["/v1/"], "reason": "the docs live there"}),
    )
    .await;
    assert!(!err, "{filed}");
    let name = filed["name"].as_str().expect("a name").to_string();
    assert_eq!(filed["phase"], "Pending");
    let stored = Api::<AccessRequest>::namespaced(c.clone(), &ns)
        .get(&name)
        .await
        .unwrap();
    assert_eq!(stored.spec.bottle, "a");
    assert_eq!(
        stored.spec.requested_by,
        format!("system:serviceaccount:{ns}:a-supervise")
    );
    // One over plain HTTP, for a whole host.
    let by_http = json_of(&ok_out(post(
        &s,
        json!({"host": "files.example.org", "reason": "downloads"}),
    )));
    let whole = by_http["name"].as_str().unwrap().to_string();
    assert_eq!(by_http["host"], "files.example.org");
    // Both reviewed first: requests filed within one second have no order among them.
    for n in [&name, &whole] {
        eventually(&format!("{n} reviewed"), WAIT, || async {
            (phase_of(&c, &ns, n).await == Some(AccessPhase::Pending)).then_some(())
        })
        .await;
    }
    // A third waits over the cap of 2: the operator refuses it, and the agent reads why.
    let (third, _) = call(
        &m,
        "request_access",
        json!({"host": "three.example.net", "reason": "one too many"}),
    )
    .await;
    let third = third["name"].as_str().unwrap().to_string();
    eventually("the third is refused", WAIT, || async {
        (phase_of(&c, &ns, &third).await == Some(AccessPhase::Denied)).then_some(())
    })
    .await;
    let (told, _) = call(&m, "request_status", json!({"name": third})).await;
    assert_eq!(told["phase"], "Denied");
    assert!(
        told["message"]
            .as_str()
            .unwrap_or("")
            .contains("already wait for a decision"),
        "{told}"
    );

    // A malformed ask never reaches the API server; the agent hears what is wrong.
    let (bad, err) = call(
        &m,
        "request_access",
        json!({"host": "https://x.example.com/", "reason": "r"}),
    )
    .await;
    assert!(err, "{bad}");
    assert!(
        bad["error"].as_str().unwrap().contains("bare hostname"),
        "{bad}"
    );

    // The agent waits over MCP while a person approves, narrowed and time-boxed.
    let approver = Person::new(&ns, "ann", &["bottle-approver"], None);
    let waiting = {
        let m2 = mcp(&s).await;
        let name = name.clone();
        tokio::spawn(async move {
            let r = call(
                &m2,
                "request_status",
                json!({"name": name, "wait_seconds": 50}),
            )
            .await;
            let _ = m2.cancel().await;
            r
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    ok(approver.bottle(
        &ns,
        &["approve", &name, "--path", "/v1/search/", "--for", "2h"],
    ));
    // Approved, and in the ConfigMap: not yet Applied while egress runs the old file.
    let rendered_now = eventually("the grant in the ConfigMap", WAIT, || async {
        let text = rendered(&c, &ns, "a", "egress.yaml").await;
        text.contains("/v1/search/").then_some(text)
    })
    .await;
    let (before, _) = call(&m, "request_status", json!({"name": name})).await;
    assert_eq!(
        (&before["phase"], &before["inForce"]),
        (&json!("Approved"), &json!(false)),
        "{before}"
    );
    assert!(
        !waiting.is_finished(),
        "the wait goes on until egress enforces it"
    );
    // The kubelet's sync: egress reloads it, and the waiting call answers Applied.
    s.placed.sync_egress(&rendered_now);
    let (decided, err) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("the wait ends once the grant is in force")
        .unwrap();
    assert!(!err, "{decided}");
    assert_eq!(decided["phase"], "Applied", "{decided}");
    assert_eq!(decided["inForce"], true);
    // Reported to the API server: the request itself reads Applied, with an Event.
    eventually("the request Applied in the API", WAIT, || async {
        (phase_of(&c, &ns, &name).await == Some(AccessPhase::Applied)).then_some(())
    })
    .await;
    let stored = Api::<AccessRequest>::namespaced(c.clone(), &ns)
        .get(&name)
        .await
        .unwrap();
    assert!(stored.status.unwrap().applied_at.is_some());
    let applied = kubectl_ok(&[
        "-n",
        &ns,
        "get",
        "events",
        "--field-selector",
        "reason=AccessApplied",
        "-o",
        "name",
    ]);
    assert!(!applied.trim().is_empty(), "an AccessApplied Event");
    assert_eq!(decided["decidedBy"], approver.name);
    assert_eq!(decided["grantedPaths"], json!(["/v1/search/"]));
    assert!(decided["expiresAt"].is_string(), "{decided}");

    // Denied over HTTP, with the approver's reason.
    ok(approver.bottle(&ns, &["deny", &whole, "--reason", "use the mirror"]));
    let denied = json_of(&ok_out(curl(
        &s,
        &[&format!("/v1/requests/{whole}?wait=30")],
    )));
    assert_eq!(denied["phase"], "Denied", "{denied}");
    let listed = json_of(&ok_out(curl(&s, &["/v1/requests"])));
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    // A name that is not this Bottle's is not found, not shown.
    let missing = curl(&s, &["/v1/requests/nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stdout).contains("no access request nope"));
    let _ = m.cancel().await;
}

/// A second approver, for requests the first filed (nobody decides their own).
fn approver_for_b(ns: &str) -> Person {
    Person::new(ns, "bob", &["bottle-approver"], None)
}

fn ok_out(out: Output) -> Output {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn the_bottles_account_cannot_ask_for_another_bottle_or_decide() {
    let ns = namespace("supervise-forge");
    let _op = Operator::start_with(&ns, &["--api-server-for-pods", &api_server_flag()], &[]);
    let c = client().await;
    supervised("a", &ns);
    supervised("b", &ns);
    let dir = tempfile::tempdir().unwrap();
    // Bottle a's account, claiming to be b's sidecar: the API server refuses the ask.
    let forged = sidecar(&c, &ns, "a", dir.path(), Some("b")).await;
    let out = post(&forged, json!({"host": "x.example.com", "reason": "r"}));
    assert!(!out.status.success());
    let said = json_of(&out);
    assert!(
        said["error"]
            .as_str()
            .unwrap()
            .contains("may not ask for access for Bottle b"),
        "{said}"
    );
    drop(forged);

    // With its own name it may; then it tries to approve its own request.
    let dir = tempfile::tempdir().unwrap();
    let own = sidecar(&c, &ns, "a", dir.path(), None).await;
    let filed = json_of(&ok_out(post(
        &own,
        json!({"host": "x.example.com", "reason": "r"}),
    )));
    let name = filed["name"].as_str().unwrap();
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    let as_account = |args: &[&str]| {
        cluster()
            .kubectl()
            .env_remove("KUBECONFIG")
            .args([
                "--server",
                &cluster().server,
                "--certificate-authority",
                &dir.path().join("ca.crt").display().to_string(),
                "--token",
                &token,
                "-n",
                &ns,
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let me = format!("system:serviceaccount:{ns}:a-supervise");
    let decision = json!({"spec": {"decision": {"verdict": "Approve", "decidedBy": me}}});
    refused(
        as_account(&[
            "patch",
            "accessrequest",
            name,
            "--type=merge",
            "-p",
            &decision.to_string(),
        ]),
        "forbidden",
    );
    // It may create requests: one born approved is the admission policy's to refuse.
    let born_approved = dir.path().join("approved.json");
    std::fs::write(
        &born_approved,
        json!({"apiVersion": "bottle-operator.dev/v1alpha1", "kind": "AccessRequest",
            "metadata": {"generateName": "a-"},
            "spec": {"bottle": "a", "requestedBy": me, "allowHost": "y.example.com",
                     "reason": "r", "decision": decision["spec"]["decision"]}})
        .to_string(),
    )
    .unwrap();
    refused(
        as_account(&["create", "-f", &born_approved.display().to_string()]),
        "may not decide access requests",
    );
    // Nor may it touch its Bottle, or read Secrets.
    refused(
        as_account(&[
            "patch",
            "bottle",
            "a",
            "--type=merge",
            "-p",
            r#"{"spec":{"paused":true}}"#,
        ]),
        "forbidden",
    );
    refused(as_account(&["get", "secrets"]), "forbidden");
    assert_eq!(phase_of(&c, &ns, name).await, Some(AccessPhase::Pending));

    // Its one status write: appliedAt, once, on an Approved request of its own Bottle.
    let report = json!({"status": {"appliedAt": "2026-12-01T10:00:00Z"}}).to_string();
    let status_patch = |name: &str, patch: &str| {
        as_account(&[
            "patch",
            "accessrequest",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            patch,
        ])
    };
    refused(
        status_patch(name, &report),
        "only appliedAt, once, on an Approved",
    );
    let approver = Person::new(&ns, "ann", &["bottle-approver", "bottle-requester"], None);
    ok(approver.bottle(&ns, &["approve", name]));
    eventually("approved", WAIT, || async {
        (phase_of(&c, &ns, name).await == Some(AccessPhase::Approved)).then_some(())
    })
    .await;
    let lie = json!({"status": {"appliedAt": "2026-12-01T10:00:00Z", "decidedBy": "nobody"}});
    refused(status_patch(name, &lie.to_string()), "only appliedAt");
    // Bottle b's approved request is not a's to report on.
    let theirs = approver.request(&ns, "b", "z.example.com", &[]);
    ok(approver_for_b(&ns).bottle(&ns, &["approve", &theirs]));
    eventually("b's approved", WAIT, || async {
        (phase_of(&c, &ns, &theirs).await == Some(AccessPhase::Approved)).then_some(())
    })
    .await;
    refused(
        status_patch(&theirs, &report),
        "may not report on access requests of Bottle b",
    );
    // Its own: accepted, once; the operator then calls it Applied.
    assert!(status_patch(name, &report).status.success());
    eventually("a's Applied", WAIT, || async {
        (phase_of(&c, &ns, name).await == Some(AccessPhase::Applied)).then_some(())
    })
    .await;
    refused(status_patch(name, &report), "once");
    assert_eq!(
        phase_of(&c, &ns, &theirs).await,
        Some(AccessPhase::Approved)
    );
}

#[tokio::test]
async fn the_identity_follows_supervise_and_a_foreign_name_is_never_taken_over() {
    let ns = namespace("supervise-identity");
    let _op = Operator::start_with(&ns, &["--api-server-for-pods", &api_server_flag()], &[]);
    let c = client().await;
    supervised("a", &ns);
    let accounts = Api::<ServiceAccount>::namespaced(c.clone(), &ns);
    let roles = Api::<Role>::namespaced(c.clone(), &ns);
    let bindings = Api::<RoleBinding>::namespaced(c.clone(), &ns);
    eventually("a's identity", WAIT, || async {
        let sa = accounts.get("a-supervise").await.ok()?;
        roles.get("a-supervise").await.ok()?;
        bindings.get("a-supervise").await.ok()?;
        (sa.metadata.owner_references?[0].name == "a").then_some(())
    })
    .await;
    // A hand edit of the Role is put back.
    roles
        .patch(
            "a-supervise",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}),
            ),
        )
        .await
        .unwrap();
    eventually("the Role is repaired", WAIT, || async {
        let r = roles.get("a-supervise").await.ok()?;
        let rules = r.rules?;
        (rules.len() == 3 && rules.iter().all(|r| !r.verbs.contains(&"*".to_string())))
            .then_some(())
    })
    .await;

    // Supervise off: all three go.
    Api::<Bottle>::namespaced(c.clone(), &ns)
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"supervise": {"enabled": false}}})),
        )
        .await
        .unwrap();
    eventually("a's identity is deleted", WAIT, || async {
        (accounts.get_opt("a-supervise").await.ok()?.is_none()
            && roles.get_opt("a-supervise").await.ok()?.is_none()
            && bindings.get_opt("a-supervise").await.ok()?.is_none())
        .then_some(())
    })
    .await;

    // Somebody's own RoleBinding holds c's name: a conflict, left as it was.
    kubectl_ok(&[
        "-n",
        &ns,
        "create",
        "rolebinding",
        "c-supervise",
        "--clusterrole=view",
        "--user=someone",
    ]);
    supervised("c", &ns);
    eventually("c reports the conflict", WAIT, || async {
        let b = Api::<Bottle>::namespaced(c.clone(), &ns)
            .get("c")
            .await
            .ok()?;
        let cond = b
            .status?
            .conditions
            .into_iter()
            .find(|c| c.reason == "NameConflict")?;
        cond.message.contains("c-supervise").then_some(())
    })
    .await;
    let theirs = bindings.get("c-supervise").await.unwrap();
    assert_eq!(theirs.role_ref.name, "view");
    assert!(theirs.metadata.owner_references.is_none());
}

#[tokio::test]
async fn a_supervised_bottle_without_an_api_server_address_is_refused_with_a_reason() {
    let ns = namespace("supervise-unknown");
    // No flag, and this control plane's kubernetes Service has no endpoints to read.
    let _op = Operator::start(&ns);
    let c = client().await;
    supervised("a", &ns);
    eventually("a says why it cannot run", WAIT, || async {
        let b = Api::<Bottle>::namespaced(c.clone(), &ns)
            .get("a")
            .await
            .ok()?;
        b.status?
            .conditions
            .iter()
            .any(|c| {
                c.reason == "SuperviseUnavailable" && c.message.contains("--api-server-for-pods")
            })
            .then_some(())
    })
    .await;
    assert!(
        Api::<ServiceAccount>::namespaced(c.clone(), &ns)
            .get_opt("a-supervise")
            .await
            .unwrap()
            .is_none(),
        "nothing is made for a refused spec"
    );
}
