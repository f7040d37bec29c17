//! A real node (containerd, runc, kubelet, kube-proxy, kube-router) joined to the real control
//! plane: Pods with native sidecars run as real processes, exec/logs go through the kubelet
//! API, ConfigMap volumes update, Pods reach the API server through the `kubernetes` Service
//! with their service account token, NetworkPolicy is enforced, and the host is left clean.
//!
//! One test: only one real node can run on a machine, and the clean-host check needs it gone.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::control_plane::ControlPlane;
use support::node::{BUSYBOX_IMAGE, RealNode, RealNodeOptions, busybox_image, host_leftovers};

/// `kubectl` with `args`; returns (success, stdout, stderr).
fn kubectl(cp: &ControlPlane, args: &[&str]) -> (bool, String, String) {
    let out = cp
        .kubectl()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn kubectl_ok(cp: &ControlPlane, args: &[&str]) -> String {
    let (ok, out, err) = kubectl(cp, args);
    assert!(ok, "kubectl {args:?} failed: {err}{out}");
    out
}

/// Polls `check` every 200 ms until it gives `Some`, or panics with `what` (and the node's
/// kubelet log) after `timeout`.
fn eventually<T>(
    node: &RealNode,
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}\n--- kubelet log ---\n{}",
            node.log_tail("kubelet")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn pod(cp: &ControlPlane, ns: &str, name: &str) -> Option<Value> {
    let (ok, out, _) = kubectl(cp, &["-n", ns, "get", "pod", name, "-o", "json"]);
    ok.then(|| serde_json::from_str(&out).ok()).flatten()
}

/// The named status among the Pod's container or init container statuses.
fn status<'a>(p: &'a Value, field: &str, container: &str) -> Option<&'a Value> {
    p["status"][field]
        .as_array()?
        .iter()
        .find(|c| c["name"] == container)
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn exec(cp: &ControlPlane, ns: &str, pod: &str, container: &str, script: &str) -> (bool, String) {
    let (ok, out, err) = kubectl(
        cp,
        &[
            "-n", ns, "exec", pod, "-c", container, "--", "sh", "-c", script,
        ],
    );
    (ok, if ok { out } else { format!("{out}{err}") })
}

fn create_namespace(cp: &ControlPlane, node: &RealNode, ns: &str) {
    kubectl_ok(cp, &["create", "namespace", ns]);
    eventually(
        node,
        "the default service account",
        Duration::from_secs(60),
        || {
            kubectl(cp, &["-n", ns, "get", "serviceaccount", "default"])
                .0
                .then_some(())
        },
    );
}

#[test]
fn real_node_runs_pods_and_leaves_the_host_clean() {
    if let Err(why) = RealNode::can_run() {
        panic!("this machine cannot run a real node: {why}");
    }
    let ip_forward_before = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let t0 = Instant::now();
    let cp = ControlPlane::start_for_real_node().expect("control plane");
    let t_cp = t0.elapsed();
    let node = RealNode::start(&cp, RealNodeOptions::default()).expect("real node");
    eprintln!(
        "control plane {:.1}s, node up {:.1}s after it",
        t_cp.as_secs_f64(),
        (t0.elapsed() - t_cp).as_secs_f64()
    );

    // The node is Ready, and the kubelet authenticated as a node (NodeRestriction let it
    // register itself).
    let ready = kubectl_ok(
        &cp,
        &[
            "get",
            "node",
            &node.name,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
    );
    assert_eq!(ready, "True", "node not Ready");

    let ns = "real-node";
    create_namespace(&cp, &node, ns);
    kubectl_ok(
        &cp,
        &[
            "-n",
            ns,
            "create",
            "configmap",
            "cfg",
            "--from-literal=greeting=one",
        ],
    );

    // A native sidecar and a main container sharing a volume. The sidecar's startup probe
    // holds the main container back until the sidecar has written its mark, so the main
    // container's record of what it found proves the order.
    let app = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "initContainers": [{
                "name": "sidecar",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "restartPolicy": "Always",
                "command": ["sh", "-c", "touch /shared/sidecar-started; echo sidecar up; exec sleep 2147483647"],
                "startupProbe": {"exec": {"command": ["test", "-f", "/shared/sidecar-started"]}, "periodSeconds": 1},
                "readinessProbe": {"exec": {"command": ["test", "-f", "/shared/sidecar-started"]}, "periodSeconds": 1},
                "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
            }],
            "containers": [{
                "name": "main",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "if test -f /shared/sidecar-started; then echo sidecar-first > /shared/order; else echo main-first > /shared/order; fi; echo main up; exec sleep 2147483647"],
                "volumeMounts": [
                    {"name": "shared", "mountPath": "/shared"},
                    {"name": "cfg", "mountPath": "/cfg"},
                ],
            }],
            "volumes": [
                {"name": "shared", "emptyDir": {}},
                {"name": "cfg", "configMap": {"name": "cfg"}},
            ],
        },
    });
    let created = Instant::now();
    cp.apply_json(&app).expect("create app Pod");
    let p = eventually(
        &node,
        "app Pod Ready with sidecar and main ready",
        Duration::from_secs(90),
        || {
            let p = pod(&cp, ns, "app")?;
            let sidecar = status(&p, "initContainerStatuses", "sidecar")?;
            let main = status(&p, "containerStatuses", "main")?;
            (pod_ready(&p) && sidecar["ready"] == true && main["ready"] == true).then_some(p)
        },
    );
    eprintln!(
        "app Pod created -> Ready (2/2): {:.1}s",
        created.elapsed().as_secs_f64()
    );
    assert_eq!(
        p["spec"]["nodeName"],
        node.name.as_str(),
        "scheduled elsewhere"
    );
    let pod_ip = p["status"]["podIP"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        pod_ip.starts_with("10.251.0."),
        "Pod IP {pod_ip} is not from the node's Pod range"
    );

    // exec (through the kubelet API, with the API server's kubelet client certificate).
    let (ok, order) = exec(&cp, ns, "app", "main", "cat /shared/order");
    assert!(ok, "exec failed: {order}");
    assert_eq!(
        order.trim(),
        "sidecar-first",
        "the main container started first"
    );
    let (ok, pid1) = exec(
        &cp,
        ns,
        "app",
        "sidecar",
        "cat /proc/1/cmdline | tr '\\0' ' '",
    );
    assert!(ok, "exec into the sidecar failed: {pid1}");
    assert!(pid1.starts_with("sleep"), "sidecar PID 1 is {pid1:?}");

    // logs.
    let logs = kubectl_ok(&cp, &["-n", ns, "logs", "app", "-c", "sidecar"]);
    assert_eq!(logs.trim(), "sidecar up", "sidecar logs");
    let logs = kubectl_ok(&cp, &["-n", ns, "logs", "app", "-c", "main"]);
    assert_eq!(logs.trim(), "main up", "main logs");

    // A ConfigMap edit reaches the mounted file.
    let (ok, v) = exec(&cp, ns, "app", "main", "cat /cfg/greeting");
    assert!(ok && v == "one", "mounted ConfigMap reads {v:?}");
    let edited = Instant::now();
    kubectl_ok(
        &cp,
        &[
            "-n",
            ns,
            "patch",
            "configmap",
            "cfg",
            "--type=merge",
            "-p",
            r#"{"data":{"greeting":"two"}}"#,
        ],
    );
    eventually(
        &node,
        "the ConfigMap edit in the Pod",
        Duration::from_secs(120),
        || {
            let (ok, v) = exec(&cp, ns, "app", "main", "cat /cfg/greeting");
            (ok && v == "two").then_some(())
        },
    );
    eprintln!(
        "ConfigMap edit -> file in the container: {:.1}s",
        edited.elapsed().as_secs_f64()
    );

    // A Pod with a projected service account token reaches the API server through the
    // `kubernetes` Service (10.0.0.1:443, kube-proxy's DNAT) with in-cluster config: kubectl
    // (a static binary) in an image of our own checks the server against the projected
    // kube-root-ca.crt and asks who it is.
    let image = busybox_image(
        &node.dir,
        "kubectl",
        "1",
        &["/bin/sh"],
        &[(&cp.bin.join("kubectl"), "/bin/kubectl")],
    )
    .expect("kubectl image");
    node.import_image(&image, Some("localhost/kubectl"))
        .expect("import kubectl image");
    std::fs::remove_file(&image).unwrap();
    let api = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "api", "namespace": ns},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "kubectl",
                "image": "localhost/kubectl:1",
                "imagePullPolicy": "Never",
                "command": ["sleep", "2147483647"],
                "env": [{"name": "HOME", "value": "/tmp"}],
            }],
        },
    });
    cp.apply_json(&api).expect("create api Pod");
    eventually(&node, "api Pod Ready", Duration::from_secs(90), || {
        pod(&cp, ns, "api").filter(pod_ready)
    });
    let (ok, env) = exec(
        &cp,
        ns,
        "api",
        "kubectl",
        "echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT",
    );
    assert!(ok, "exec failed: {env}");
    assert_eq!(env.trim(), "10.0.0.1:443", "in-cluster API address");
    let (ok, who) = exec(
        &cp,
        ns,
        "api",
        "kubectl",
        "kubectl auth whoami -o jsonpath='{.status.userInfo.username}'",
    );
    assert!(ok, "the Pod could not call the API through 10.0.0.1: {who}");
    assert_eq!(
        who,
        format!("system:serviceaccount:{ns}:default"),
        "the API server saw another user"
    );
    // A forged token is refused, and so is a request without credentials (no anonymous
    // access: Pods reach this server).
    let (ok, out) = exec(
        &cp,
        ns,
        "api",
        "kubectl",
        "kubectl --token=forged get --raw /version",
    );
    assert!(!ok, "a forged token was accepted: {out}");
    assert!(out.contains("Unauthorized"), "expected 401, got: {out}");
    let out = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("{}/version", cp.server))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "401",
        "anonymous request not refused"
    );

    // NetworkPolicy: a server Pod, reachable from the app Pod until a policy denies all
    // ingress to it, and again once the policy is gone.
    let server = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "server", "namespace": ns, "labels": {"app": "server"}},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "httpd",
                "image": BUSYBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"],
                "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
            }],
        },
    });
    cp.apply_json(&server).expect("create server Pod");
    let server_ip = eventually(&node, "server Pod Ready", Duration::from_secs(90), || {
        let p = pod(&cp, ns, "server")?;
        pod_ready(&p).then(|| p["status"]["podIP"].as_str().map(str::to_string))?
    });
    // HTTP by hand over nc: Debian's static busybox wget segfaults.
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {server_ip} 8080");
    let reaches = |out: &str| out.lines().last() == Some("hello");
    eventually(
        &node,
        "app reaches server (no policy)",
        Duration::from_secs(30),
        || {
            let (_, out) = exec(&cp, ns, "app", "main", &fetch);
            reaches(&out).then_some(())
        },
    );
    let deny = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-server-ingress", "namespace": ns},
        "spec": {"podSelector": {"matchLabels": {"app": "server"}}, "policyTypes": ["Ingress"]},
    });
    let applied = Instant::now();
    cp.apply_json(&deny).expect("create NetworkPolicy");
    eventually(
        &node,
        "the policy to block app -> server",
        Duration::from_secs(60),
        || {
            let (_, out) = exec(&cp, ns, "app", "main", &fetch);
            (!reaches(&out)).then_some(())
        },
    );
    eprintln!(
        "NetworkPolicy applied -> connection blocked: {:.1}s",
        applied.elapsed().as_secs_f64()
    );
    for _ in 0..3 {
        let (_, out) = exec(&cp, ns, "app", "main", &fetch);
        assert!(
            !reaches(&out),
            "connection got through the deny policy: {out}"
        );
    }
    // The server still runs (the block is the policy's, not a dead server).
    let p = pod(&cp, ns, "server").expect("server Pod");
    assert!(pod_ready(&p), "server Pod is no longer Ready");
    kubectl_ok(
        &cp,
        &["-n", ns, "delete", "networkpolicy", "deny-server-ingress"],
    );
    eventually(
        &node,
        "app reaches server again",
        Duration::from_secs(60),
        || {
            let (_, out) = exec(&cp, ns, "app", "main", &fetch);
            reaches(&out).then_some(())
        },
    );

    // Teardown leaves nothing behind.
    let t = Instant::now();
    drop(node);
    drop(cp);
    eprintln!("teardown: {:.1}s", t.elapsed().as_secs_f64());
    let left = host_leftovers();
    assert!(left.is_empty(), "left on the host: {left:#?}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        ip_forward_before,
        "ip_forward not restored"
    );
}
