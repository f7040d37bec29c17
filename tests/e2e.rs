//! The end-to-end suite: a real bottle on a real node. A real control plane, a real kubelet
//! with containerd and runc, kube-proxy (iptables) and kube-router (NetworkPolicy), the images
//! users run built from `images/*.Dockerfile`, the operator installed by `helm install` and
//! running as a Pod, a cluster DNS Pod, and an internet of our own on documentation addresses
//! (an HTTPS origin and an sshd). Every case asserts its exact outcome beside a positive
//! control, and the suite prints a table of cases and the timings the README quotes.
//!
//! One test function: the cluster takes a minute to build, and the cases run in order on one
//! bottle (live policy edits depend on what came before). A failing case is recorded and the
//! others still run; the test fails at the end naming every failed case.

#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/dashboard.rs"]
mod dashboard;
#[path = "support/images.rs"]
mod images;
#[path = "e2e/internet.rs"]
mod internet;
#[path = "support/node.rs"]
mod node;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::{Duration, Instant};

use cluster::Cluster;
use internet::NET_ADDR;
use serde_json::{Value, json};

/// The GitHub-style token egress injects for api.origin.test.
const GH_TOKEN: &str = "ghp_e2eE2Ee2eE2Ee2eE2Ee2eE2Ee2eE2Ee2eE2E";
/// The API key cred-proxy injects for llm.origin.test.
const LLM_KEY: &str = "sk-e2e-llm-key-0123456789abcdef0123456789";
/// A value matching the Bottle's own DLP pattern.
const PLANTED: &str = "excorp_0123456789abcdefghijABCDEFGHIJ01";

/// What each case came to.
#[derive(Default)]
struct Report {
    rows: Vec<(String, String, bool)>,
    timings: Vec<(String, String)>,
}

impl Report {
    /// Records a case: `outcome` as seen, `ok` whether it is what the case expects.
    fn case(&mut self, name: &str, outcome: impl Into<String>, ok: bool) {
        let outcome = outcome.into();
        eprintln!("[{}] {name}: {outcome}", if ok { "ok" } else { "FAIL" });
        self.rows.push((name.into(), outcome, ok));
    }

    fn timing(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        eprintln!("[time] {name}: {value}");
        self.timings.push((name.into(), value));
    }

    /// Prints the tables, writes them to `target/tmp/e2e-report.md` (a passing test's output
    /// is captured; the file is what a CI log can point at), and fails naming every failed case.
    fn finish(self) {
        let mut md = String::from("| case | outcome | |\n|---|---|---|\n");
        for (name, outcome, ok) in &self.rows {
            md.push_str(&format!(
                "| {name} | {} | {} |\n",
                outcome.replace('|', "\\|"),
                if *ok { "ok" } else { "FAIL" }
            ));
        }
        md.push_str("\n| measure | value |\n|---|---|\n");
        for (name, value) in &self.timings {
            md.push_str(&format!("| {name} | {value} |\n"));
        }
        eprintln!("\n{md}");
        let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e-report.md");
        std::fs::write(&file, &md).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let failed: Vec<&str> = self
            .rows
            .iter()
            .filter(|r| !r.2)
            .map(|r| r.0.as_str())
            .collect();
        assert!(failed.is_empty(), "failed cases: {failed:?}");
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Polls `f` every 250 ms until it returns `Some`, or `None` after `timeout`.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The Secrets and the Bottle the suite applies: every sidecar, names of our internet.
fn manifests(ns: &str, net: &internet::Internet, allow: &[&str], passthrough: &[&str]) -> Value {
    let key = |name: &str, key: &str| json!({"name": name, "key": key});
    json!({
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "e2e-credentials", "namespace": ns},
                "stringData": {"github-token": GH_TOKEN, "llm-key": LLM_KEY},
            },
            {
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "e2e-deploy-key", "namespace": ns},
                "stringData": {"id_ed25519": net.deploy_key},
            },
            {
                "apiVersion": "bottle-operator.dev/v1alpha1", "kind": "Bottle",
                "metadata": {"name": "e2e", "namespace": ns},
                "spec": {
                    "agent": {"command": ["sleep", "infinity"], "workspace": {"size": "1Gi"}},
                    "egress": {
                        "allow": allow,
                        "passthrough": passthrough,
                        "routes": [{
                            "host": "api.origin.test",
                            "paths": ["/repos/e2e/"],
                            "auth": {"scheme": "Bearer", "secretKeyRef": key("e2e-credentials", "github-token")},
                        }],
                    },
                    "credProxy": {"routes": [{
                        "name": "llm",
                        "upstream": "https://llm.origin.test",
                        "auth": {"header": "x-api-key", "secretKeyRef": key("e2e-credentials", "llm-key")},
                    }]},
                    "git": {"remotes": [{
                        "name": "origin",
                        "url": format!("ssh://root@git.origin.test{}", net.repo.display()),
                        "sshKeySecretRef": key("e2e-deploy-key", "id_ed25519"),
                        "knownHosts": net.known_hosts,
                    }]},
                    "dlp": {"block": true, "patterns": [
                        {"name": "Example Corp token", "regex": "excorp_[A-Za-z0-9]{32}"},
                    ]},
                    "supervise": {"enabled": true},
                },
            },
        ],
    })
}

/// `curl` in the agent: `(status code, response headers + body + curl's errors)`; 0 when
/// nothing answered. Each call has its own files: calls run side by side.
fn agent_curl(c: &Cluster, pod: &str, args: &str) -> (u16, String) {
    let out = c.exec_agent(
        pod,
        &format!(
            "d=$(mktemp -d); curl -sS -m 20 -D $d/h -o $d/body -w '%{{http_code}} %{{http_connect}}' {args} >$d/code 2>$d/err; \
             echo \"CODE $(cat $d/code)\"; cat $d/h $d/body $d/err; rm -rf $d"
        ),
    );
    let s = text(&out);
    // A refusal at CONNECT leaves http_code 000 and puts the status in http_connect.
    let codes: Vec<u16> = s
        .lines()
        .find_map(|l| l.strip_prefix("CODE "))
        .map(|c| {
            c.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let code = match codes.as_slice() {
        [0, connect] => *connect,
        [code, ..] => *code,
        [] => 0,
    };
    (code, s)
}

/// The requests the origin saw whose path contains `needle`.
fn seen(net: &internet::Internet, needle: &str) -> Vec<Value> {
    net.requests()
        .into_iter()
        .filter(|r| r["path"].as_str().is_some_and(|p| p.contains(needle)))
        .collect()
}

/// The agent's network probes (tests/containment/probe.py, run by the agent's python3).
fn probes(c: &Cluster, pod: &str, list: &Value) -> BTreeMap<String, String> {
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containment/probe.py"),
    )
    .unwrap();
    let out = c.exec_agent_stdin(pod, &["python3", "-", &list.to_string()], &script);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("probe.py printed no JSON: {}", text(&out)));
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v[0].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn a_real_bottle_on_a_real_node() {
    let mut report = Report::default();
    let t = Instant::now();
    let net =
        internet::Internet::start(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"));
    let opts = cluster::Options {
        internet_ca: Some(net.ca_pem.clone()),
        dns: Some(("origin.test".into(), NET_ADDR.into())),
        namespace: "e2e".into(),
    };
    let c = Cluster::start(opts, &mut |k, v| report.timing(k, v));
    report.timing(
        "cluster up (control plane, node, images, DNS, operator)",
        format!("{:.1}s", t.elapsed().as_secs_f64()),
    );
    let ns = c.ns.clone();

    // --- apply → running, in the reference order -------------------------------------
    let t = Instant::now();
    c.apply(&json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": "e2e-workspace"},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": c.workspace_dir(), "type": "Directory"},
        },
    }));
    c.apply(&manifests(&ns, &net, &["docs.origin.test"], &[]));
    let pod = c.bottle_pod(&ns, "e2e");
    let exec_ok = poll(Duration::from_secs(240), || {
        c.exec_agent(&pod, "true").status.success().then_some(())
    });
    report.timing(
        "apply → kubectl exec works (images in containerd)",
        format!("{:.1}s", t.elapsed().as_secs_f64()),
    );
    report.case(
        "kubectl exec into the agent",
        if exec_ok.is_some() {
            "works"
        } else {
            "never worked"
        },
        exec_ok.is_some(),
    );
    let running = poll(Duration::from_secs(120), || {
        (c.jsonpath(&ns, "bottle/e2e", "{.status.phase}") == "Running").then_some(())
    });
    report.timing(
        "apply → Bottle Running",
        format!("{:.1}s", t.elapsed().as_secs_f64()),
    );
    report.case(
        "Bottle phase",
        c.jsonpath(&ns, "bottle/e2e", "{.status.phase}"),
        running.is_some(),
    );
    start_order(&c, &ns, &pod, &mut report);

    // --- the doors -------------------------------------------------------------------------
    // Not the origin's /echo: that would hand the injected token back to the agent.
    let (code, out) = agent_curl(&c, &pod, "https://api.origin.test/repos/e2e/plain");
    let auth: Vec<String> = seen(&net, "/repos/e2e/plain")
        .iter()
        .map(|r| {
            r["headers"]["authorization"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    report.case(
        "declared route: egress injects the token",
        format!("{code}, origin saw authorization {auth:?}"),
        code == 200 && auth == [format!("Bearer {GH_TOKEN}")] && !out.contains(GH_TOKEN),
    );
    let (code, out) = agent_curl(&c, &pod, "https://api.origin.test/user");
    report.case(
        "declared host, undeclared path",
        format!("{code} {}", header(&out, "x-bottle-denied-by")),
        code == 403 && seen(&net, "/user").is_empty(),
    );
    let (code, out) = agent_curl(&c, &pod, "http://127.0.0.1:9099/llm/v1/plain");
    let keys: Vec<String> = seen(&net, "/v1/plain")
        .iter()
        .filter(|r| r["host"] == "llm.origin.test")
        .map(|r| r["headers"]["x-api-key"].as_str().unwrap_or("").to_string())
        .collect();
    report.case(
        "cred-proxy route: the key injected",
        format!("{code}, origin saw x-api-key {keys:?}"),
        code == 200 && keys == [LLM_KEY] && !out.contains(LLM_KEY),
    );
    let (code, out) = agent_curl(&c, &pod, "https://docs.origin.test/page-allowed");
    report.case(
        "allowed host (control)",
        code.to_string(),
        code == 200 && out.contains("origin docs.origin.test"),
    );
    let (code, out) = agent_curl(&c, &pod, "https://undeclared.origin.test/x");
    report.case(
        "undeclared host",
        format!("{code} {}", header(&out, "x-bottle-denied-by")),
        code == 403 && seen(&net, "/x").is_empty(),
    );
    let (code, out) = agent_curl(&c, &pod, &format!("-k https://{NET_ADDR}/ip-literal"));
    report.case(
        "IP literal through egress",
        format!("{code} {}", header(&out, "x-bottle-denied-by")),
        code == 403 && seen(&net, "/ip-literal").is_empty(),
    );
    let (code, out) = agent_curl(
        &c,
        &pod,
        &format!("-X POST --data 'token={PLANTED}' https://docs.origin.test/dlp"),
    );
    // docs.origin.test: pipelock intercepts it and scans the body. Credential hosts are
    // spliced at pipelock (it would see the injected token), so the control is a host
    // pipelock reads.
    report.case(
        "planted secret in a body to a declared host",
        format!("{code} {}", header(&out, "x-bottle-denied-by")),
        code == 403
            && header(&out, "x-bottle-denied-by") == "pipelock"
            && seen(&net, "/dlp").is_empty(),
    );

    // --- around the doors --------------------------------------------------------------
    let p = probes(
        &c,
        &pod,
        &json!([
            ["tcp_internet", "tcp", NET_ADDR, 443],
            ["tcp6_internet", "tcp", "2001:db8::10", 443],
            ["metadata", "tcp", "169.254.169.254", 80],
            ["udp_dns", "udp", "10.0.0.10", 53],
            ["tcp_dns", "tcp", "10.0.0.10", 53],
            ["icmp", "icmp", NET_ADDR],
            ["api_server", "tcp", "10.0.0.1", 443],
            ["pipelock_port", "tcp", "127.0.0.1", 8888],
            ["egress_admin", "tcp", "127.0.0.1", 9091],
            ["egress_port", "tcp", "127.0.0.1", 9090],
        ]),
    );
    for (probe, want) in [
        ("tcp_internet", "refused"),
        ("tcp6_internet", "refused"),
        ("metadata", "refused"),
        ("udp_dns", "denied"),
        ("tcp_dns", "refused"),
        ("icmp", "denied"),
        ("api_server", "refused"),
        ("pipelock_port", "refused"),
        ("egress_admin", "refused"),
    ] {
        let got = p.get(probe).cloned().unwrap_or_default();
        report.case(&format!("agent direct: {probe}"), got.clone(), got == want);
    }
    let got = p.get("egress_port").cloned().unwrap_or_default();
    report.case(
        "agent direct: egress_port (control)",
        got.clone(),
        got.starts_with("ok") || got == "timeout",
    );

    plugin_cases(&c, &mut report);
    secrets_out_of_reach(&c, &pod, &mut report);
    git_cases(&c, &pod, &net, &mut report);
    network_policies_hold(&c, &ns, &pod, &mut report);
    memory(&c, &ns, &pod, &mut report);
    // An open stream through egress, first alone (the control), then while the policy
    // changes twice underneath it.
    let alone = agent_curl(&c, &pod, "-N 'https://docs.origin.test/sse?n=6&gap=0.5'");
    let events = alone.1.matches("event: token").count();
    report.case(
        "an SSE stream through egress (control)",
        format!("{events} of 6 events, status {}", alone.0),
        alone.0 == 200 && events == 6,
    );
    let stream = std::thread::scope(|scope| {
        let sse = scope.spawn(|| {
            agent_curl(
                &c,
                &pod,
                "-N -m 90 'https://docs.origin.test/sse?n=40&gap=0.5'",
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        live_policy(&c, &ns, &pod, &net, &mut report);
        sse.join().unwrap()
    });
    let events = stream.1.matches("event: token").count();
    let tail: String = stream
        .1
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .join(" / ");
    report.case(
        "an SSE stream through egress survives both policy edits",
        format!("{events} of 40 events, status {}; ends: {tail}", stream.0),
        stream.0 == 200 && events == 40,
    );
    access_granted_live(&c, &ns, &pod, &mut report);
    token_stays_in_supervise(&c, &pod, &mut report);
    let pod = rolls_keep_the_workspace(&c, &ns, &pod, &net, &mut report);
    pause_and_resume_keep_the_workspace(&c, &ns, &pod, &mut report);
    delete_leaves_nothing(&c, &ns, &pod, &mut report);
    report.finish();
}

/// The value of response header `name` in curl's `-D -` output, or "".
fn header(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Native sidecars first in the reference order, the agent last, all Ready.
fn start_order(c: &Cluster, ns: &str, pod: &str, report: &mut Report) {
    let status: Value =
        serde_json::from_str(&c.jsonpath(ns, &format!("pod/{pod}"), "{.status}")).unwrap();
    let started = |s: &Value| -> Option<String> {
        let st = &s["state"];
        st["running"]["startedAt"]
            .as_str()
            .or(st["terminated"]["startedAt"].as_str())
            .map(String::from)
    };
    let mut order = Vec::new();
    for s in status["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        order.push((
            s["name"].as_str().unwrap().to_string(),
            started(s),
            s["ready"].as_bool(),
        ));
    }
    for s in status["containerStatuses"].as_array().into_iter().flatten() {
        order.push((
            s["name"].as_str().unwrap().to_string(),
            started(s),
            s["ready"].as_bool(),
        ));
    }
    let names: Vec<&str> = order.iter().map(|o| o.0.as_str()).collect();
    let want = [
        "netinit",
        "ca-bundle",
        "pipelock-config",
        "pipelock",
        "git-gate",
        "cred-proxy",
        "egress",
        "supervise",
        "agent",
    ];
    // RFC 3339 seconds: equal stamps are allowed, a later container never starts earlier.
    let times: Vec<&str> = order.iter().map(|o| o.1.as_deref().unwrap_or("")).collect();
    let monotonic = times.windows(2).all(|w| !w[0].is_empty() && w[0] <= w[1]);
    report.case(
        "containers in the reference order",
        format!("{names:?} started {times:?}"),
        names == want && monotonic,
    );
    let not_ready: Vec<&str> = order
        .iter()
        .filter(|o| !matches!(o.0.as_str(), "netinit" | "ca-bundle") && o.2 != Some(true))
        .map(|o| o.0.as_str())
        .collect();
    report.case(
        "every long-running container Ready",
        format!("not ready: {not_ready:?}"),
        not_ready.is_empty(),
    );
}

/// No token reaches the agent: not its env, its files, its mounts, the sidecars' processes
/// or the API.
fn secrets_out_of_reach(c: &Cluster, pod: &str, report: &mut Report) {
    // The values go in on stdin, so no command line of the agent's carries them.
    let out = c.exec_agent_stdin(
        pod,
        &[
            "sh",
            "-c",
            "cat > /dev/shm/needles; env; cat /proc/self/mountinfo; ls /var/run/secrets/kubernetes.io 2>&1; \
             echo GREP-START; grep -rlsF -f /dev/shm/needles /etc /var /run /tmp /home /workspace /proc/*/environ; echo GREP-END; \
             for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done; rm -f /dev/shm/needles",
        ],
        &format!("{GH_TOKEN}\n{LLM_KEY}\n"),
    );
    let s = text(&out);
    let hits = s
        .split_once("GREP-START")
        .and_then(|(_, rest)| rest.split_once("GREP-END"))
        .map_or("GREP markers missing", |(hits, _)| hits.trim());
    let leaked = s.contains(GH_TOKEN) || s.contains(LLM_KEY) || !hits.is_empty();
    report.case(
        "no token in the agent's env, files or /proc",
        if leaked {
            format!("token visible: {s}")
        } else {
            "none visible".into()
        },
        !leaked,
    );
    let sa = s.contains("No such file or directory") && !s.contains("serviceaccount");
    report.case(
        "no ServiceAccount token in the agent",
        if sa { "none mounted" } else { "mounted" },
        sa,
    );
    // The sidecars run in the Pod's other containers: their processes are not in the agent's
    // PID namespace at all (shareProcessNamespace: false).
    let sidecar_procs = s
        .lines()
        .any(|l| l.contains("bottle-sidecar") || l.contains("pipelock run"));
    report.case(
        "sidecar processes invisible to the agent",
        if sidecar_procs {
            "visible"
        } else {
            "invisible"
        },
        !sidecar_procs,
    );
}

/// git through git-gate to the sshd of our internet.
fn git_cases(c: &Cluster, pod: &str, net: &internet::Internet, report: &mut Report) {
    let url = format!("ssh://root@git.origin.test{}", net.repo.display());
    let before = net.upstream_rev("main");
    let clean = c.exec_agent(
        pod,
        &format!(
            "set -e; cd /workspace; git clone -q {url} repo; cd repo; \
             git -c user.name=agent -c user.email=agent@example.com commit -q --allow-empty -m clean; \
             git push -q origin HEAD:main 2>&1; git rev-parse HEAD"
        ),
    );
    let head = String::from_utf8_lossy(&clean.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .to_string();
    let landed = net.upstream_rev("main");
    report.case(
        "clean git push lands upstream",
        format!("exit {:?}, upstream main {landed:?}", clean.status.code()),
        clean.status.success() && landed.as_deref() == Some(head.as_str()) && landed != before,
    );
    // A private key file: gitleaks' private-key rule (the same key the git-gate tests plant).
    let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDxEnC4GqPmyOZa3cd8QJ2RVHqMWjWJvjP1pX3gyGKLzAAAAJiG0ym5htMp\nuQAAAAtzc2gtZWQyNTUxOQAAACDxEnC4GqPmyOZa3cd8QJ2RVHqMWjWJvjP1pX3gyGKLzA\n-----END OPENSSH PRIVATE KEY-----\n";
    let dirty = c.exec_agent_stdin(
        pod,
        &[
            "sh",
            "-c",
            "cd /workspace/repo && cat > id_deploy && git add id_deploy && \
             git -c user.name=agent -c user.email=agent@example.com commit -q -m key && \
             git push origin HEAD:main 2>&1",
        ],
        key,
    );
    let after = net.upstream_rev("main");
    report.case(
        "push carrying a private key is refused",
        format!(
            "exit {:?}, upstream main unchanged: {}",
            dirty.status.code(),
            after == landed
        ),
        !dirty.status.success() && after == landed && text(&dirty).contains("git-gate"),
    );
}

/// `kubectl bottle` against the real containers.
fn plugin_cases(c: &Cluster, report: &mut Report) {
    let plugin = |args: &[&str]| kubectl_bottle(c, args);
    let out = plugin(&["exec", "e2e", "--", "id", "-u"]);
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    report.case(
        "kubectl bottle exec: a shell in the agent",
        format!("uid {uid}"),
        out.status.success() && uid == "1000",
    );
    let out = plugin(&["status", "e2e"]);
    let s = text(&out);
    // pipelock's line says "delivered to pipelock": config-sync hands it over, pipelock reloads.
    let in_force = ["egress", "pipelock", "cred-proxy", "git-gate"]
        .iter()
        .filter(|k| {
            s.lines().any(|l| {
                l.trim_start().starts_with(**k)
                    && (l.contains("in force") || l.contains("delivered to pipelock"))
            })
        })
        .count();
    report.case(
        "kubectl bottle status: every sidecar's config in force",
        format!("{in_force}/4 in force"),
        out.status.success() && in_force == 4,
    );
    let out = plugin(&["logs", "e2e"]);
    let s = text(&out);
    let from: Vec<&str> = ["egress", "pipelock", "cred-proxy", "git-gate"]
        .into_iter()
        .filter(|k| s.lines().any(|l| l.split_whitespace().nth(1) == Some(*k)))
        .collect();
    report.case(
        "kubectl bottle logs: the sidecars' lines",
        format!("{from:?}"),
        out.status.success() && from.len() == 4,
    );
}

/// `kubectl bottle` (the plugin binary of this build) in the suite's namespace; it finds
/// kubectl on PATH, as a user's shell would.
fn kubectl_bottle(c: &Cluster, args: &[&str]) -> Output {
    let cp = c.control_plane();
    let path = format!(
        "{}:{}",
        cp.bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-bottle"))
        .args(["-n", &c.ns])
        .args(args)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("PATH", path)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kubectl-bottle runs")
}

/// Access requests on the real node: each filed with `kubectl bottle request`, approved by
/// a click on Approve in `kubectl bottle dashboard` (a headless Chromium, as a
/// `bottle-approver` with a certificate of its own), and the granted route then reaches the
/// origin through egress and pipelock with the same Pod, while an SSE stream opened before the
/// first approval stays open across all of them.
/// The Bottle's ServiceAccount token is mounted into supervise alone: the agent finds no
/// token where Kubernetes puts one, cannot reach supervise's mount through /proc (no shared
/// process namespace); that it cannot reach the API server itself either is a probe of the
/// containment cases ("agent direct: api_server").
fn token_stays_in_supervise(c: &Cluster, pod: &str, report: &mut Report) {
    let out = c.exec_agent(
        pod,
        "for f in /var/run/bottle/supervise/token /var/run/secrets/kubernetes.io/serviceaccount/token; do \
           cat $f >/dev/null 2>&1 && echo read $f; done; \
         for p in /proc/[0-9]*; do cat $p/root/var/run/bottle/supervise/token >/dev/null 2>&1 && echo read $p; done; \
         ls /proc | grep -c '^[0-9]'",
    );
    let said = text(&out);
    report.case(
        "the account token, from the agent (mounts and /proc)",
        said.lines().last().map_or("?".into(), |n| {
            format!("not readable; {n} processes visible")
        }),
        out.status.success() && !said.contains("read "),
    );
}

fn access_granted_live(c: &Cluster, ns: &str, pod: &str, report: &mut Report) {
    let cp = c.control_plane();
    let approver = "approver@e2e";
    let kubeconfig = cp
        .user_kubeconfig("e2e-approver", approver, &[])
        .expect("approver kubeconfig");
    c.kubectl_ok(&[
        "create",
        "clusterrolebinding",
        "e2e-approver",
        "--clusterrole=bottle-approver",
        &format!("--user={approver}"),
    ]);
    // The dashboard reads each bottle's refused hosts by exec into its egress container.
    c.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "role",
        "e2e-exec",
        "--verb=get,create",
        "--resource=pods/exec",
    ]);
    c.kubectl_ok(&[
        "-n",
        ns,
        "create",
        "rolebinding",
        "e2e-exec",
        "--role=e2e-exec",
        &format!("--user={approver}"),
    ]);
    let dash = dashboard::Dashboard::start(&kubeconfig, ns);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut browser = rt.block_on(dashboard::Browser::start());
    let uid = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}");
    let counts = restarts(c, ns, pod);
    let rounds = 3;
    let (secs, controls, outside, stream) = std::thread::scope(|scope| {
        let sse = scope.spawn(|| {
            agent_curl(
                c,
                pod,
                "-N -m 150 'https://docs.origin.test/sse?n=80&gap=0.5'",
            )
        });
        std::thread::sleep(Duration::from_secs(2));
        let (mut secs, mut controls, mut outside) = (Vec::new(), Vec::new(), Vec::new());
        for i in 1..=rounds {
            let host = format!("granted{i}.origin.test");
            controls.push(agent_curl(c, pod, &format!("https://{host}/api/before")).0);
            rt.block_on(browser.goto(&dash.url));
            if i == 1 {
                // The refusal just now shows on the page, read from the bottle's egress.
                let seen = format!(
                    "document.body.innerText.includes({:?})",
                    format!("{host} ×")
                );
                let deadline = Instant::now() + Duration::from_secs(60);
                let shown = rt.block_on(async {
                    while Instant::now() < deadline {
                        if browser.eval(&seen).await == true {
                            return true;
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    false
                });
                report.case(
                    "the dashboard lists the hosts egress refused",
                    format!("{host} shown: {shown}"),
                    shown,
                );
            }
            // The agent asks, through its supervise sidecar (which files it as the Bottle's
            // own ServiceAccount, over the Pod's one way to the API server).
            let ask = json!({"host": host, "paths": ["/api/"], "reason": "e2e"});
            let out = c.exec_agent(
                pod,
                &format!(
                    "curl -sS -m 30 --fail-with-body -H 'content-type: application/json' \
                     -d '{ask}' \"$BOTTLE_SUPERVISE_URL/v1/requests\""
                ),
            );
            let said = text(&out);
            let filed: Value = serde_json::from_str(&said).unwrap_or(Value::Null);
            let name = filed["name"].as_str().unwrap_or_default().to_string();
            if !out.status.success() || name.is_empty() {
                eprintln!("request through supervise: {said}");
                secs.push(f64::NAN);
                continue;
            }
            if i == 1 {
                let by = c.jsonpath(ns, &format!("accessrequest/{name}"), "{.spec.requestedBy}");
                report.case(
                    "the agent's ask, filed by supervise as the Bottle's account",
                    &by,
                    by == format!("system:serviceaccount:{ns}:e2e-supervise"),
                );
            }
            // The open page shows it by itself (it follows the dashboard's watches).
            let approve = format!("form[aria-label=\"decide {name}\"] button[value=\"Approve\"]");
            rt.block_on(browser.until(
                &format!("document.querySelector({approve:?}) !== null"),
                &format!("{name} on the dashboard"),
            ));
            rt.block_on(browser.click(&approve));
            let t = Instant::now();
            let reached = poll(Duration::from_secs(90), || {
                (agent_curl(c, pod, &format!("https://{host}/api/after")).0 == 200).then_some(())
            });
            secs.push(reached.map_or(f64::NAN, |_| t.elapsed().as_secs_f64()));
            outside.push(agent_curl(c, pod, &format!("https://{host}/other")).0);
            if i == 1 {
                // What the agent learns: Applied once egress runs the config carrying it.
                let out = c.exec_agent(
                    pod,
                    &format!("curl -sS -m 90 \"$BOTTLE_SUPERVISE_URL/v1/requests/{name}?wait=60\""),
                );
                let told: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
                // supervise reported it: the request itself reads Applied.
                let phase = poll(Duration::from_secs(30), || {
                    let p = c.jsonpath(ns, &format!("accessrequest/{name}"), "{.status.phase}");
                    (p == "Applied").then_some(p)
                });
                report.case(
                    "the agent asks supervise how its request stands; the request's phase",
                    format!(
                        "{} (in force: {}); {}",
                        told["phase"],
                        told["inForce"],
                        phase.as_deref().unwrap_or("not Applied")
                    ),
                    told["phase"] == "Applied" && phase.is_some(),
                );
            }
        }
        (secs, controls, outside, sse.join().unwrap())
    });
    drop(browser);
    drop(dash);
    let mut sorted: Vec<f64> = secs.iter().copied().filter(|s| s.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let all = secs
        .iter()
        .map(|s| format!("{s:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    report.timing(
        "approve clicked in the dashboard → request through egress succeeds",
        format!(
            "median {:.1}s of {rounds} ({all} s; kubelet syncFrequency 5s)",
            sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
        ),
    );
    report.case(
        "not yet granted (control)",
        format!("{controls:?}"),
        controls.len() == rounds && controls.iter().all(|c| *c == 403),
    );
    let same = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}") == uid
        && restarts(c, ns, pod) == counts;
    report.case(
        "approved route reachable through egress, same Pod, no restarts",
        format!("{} of {rounds} reached, same pod: {same}", sorted.len()),
        sorted.len() == rounds && same,
    );
    report.case(
        "outside the granted prefix",
        format!("{outside:?}"),
        outside.len() == rounds && outside.iter().all(|c| *c == 403),
    );
    let events = stream.1.matches("event: token").count();
    report.case(
        "an SSE stream through egress survives the approvals",
        format!("{events} of 80 events, status {}", stream.0),
        stream.0 == 200 && events == 80,
    );
}

/// Restart counts of every container of the Pod, by name.
fn restarts(c: &Cluster, ns: &str, pod: &str) -> String {
    c.jsonpath(
        ns,
        &format!("pod/{pod}"),
        "{range .status.initContainerStatuses[*]}{.name}={.restartCount} {end}{range .status.containerStatuses[*]}{.name}={.restartCount} {end}",
    )
}

/// A host added to the Bottle is reachable without a new Pod; removed, it is refused again.
fn live_policy(c: &Cluster, ns: &str, pod: &str, net: &internet::Internet, report: &mut Report) {
    let uid = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}");
    let counts = restarts(c, ns, pod);
    let (code, _) = agent_curl(c, pod, "https://later.origin.test/before");
    report.case(
        "host not yet declared (control)",
        code.to_string(),
        code == 403,
    );

    let t = Instant::now();
    c.apply(&manifests(
        ns,
        net,
        &["docs.origin.test", "later.origin.test"],
        &[],
    ));
    let reached = poll(Duration::from_secs(90), || {
        (agent_curl(c, pod, "https://later.origin.test/added").0 == 200).then_some(())
    });
    report.timing(
        "kubectl apply (host added) → enforced",
        format!(
            "{:.1}s (kubelet syncFrequency 5s)",
            t.elapsed().as_secs_f64()
        ),
    );
    let same = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}") == uid
        && restarts(c, ns, pod) == counts;
    report.case(
        "added host reachable, same Pod, no restarts",
        format!("reached: {}, same pod: {same}", reached.is_some()),
        reached.is_some() && same,
    );

    let t = Instant::now();
    c.apply(&manifests(ns, net, &["docs.origin.test"], &[]));
    let refused = poll(Duration::from_secs(90), || {
        (agent_curl(c, pod, "https://later.origin.test/removed").0 == 403).then_some(())
    });
    report.timing(
        "kubectl apply (host removed) → enforced",
        format!("{:.1}s", t.elapsed().as_secs_f64()),
    );
    let same = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}") == uid
        && restarts(c, ns, pod) == counts;
    report.case(
        "removed host refused again, same Pod",
        format!("refused: {}, same pod: {same}", refused.is_some()),
        refused.is_some() && same,
    );
}

/// A change a live reload cannot carry (a passthrough host: pipelock's restart key) rolls the
/// Pod; the workspace volume's files are still there in the new one.
fn rolls_keep_the_workspace(
    c: &Cluster,
    ns: &str,
    pod: &str,
    net: &internet::Internet,
    report: &mut Report,
) -> String {
    let uid = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}");
    let wrote = c
        .exec_agent(pod, "echo kept > /workspace/keep.txt")
        .status
        .success();
    let t = Instant::now();
    c.apply(&manifests(
        ns,
        net,
        &["docs.origin.test"],
        &["stream.origin.test"],
    ));
    let rolled = poll(Duration::from_secs(180), || {
        let now = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}");
        let running = c.jsonpath(ns, "bottle/e2e", "{.status.phase}") == "Running";
        (!now.is_empty() && now != uid && running && c.exec_agent(pod, "true").status.success())
            .then_some(now)
    });
    report.timing(
        "passthrough added → new Pod exec-able",
        format!("{:.1}s", t.elapsed().as_secs_f64()),
    );
    let kept = c.exec_agent(pod, "cat /workspace/keep.txt");
    let kept = String::from_utf8_lossy(&kept.stdout).trim().to_string();
    report.case(
        "a passthrough change rolls the Pod; the workspace survives",
        format!(
            "new pod: {}, /workspace/keep.txt: {kept:?}",
            rolled.is_some()
        ),
        wrote && rolled.is_some() && kept == "kept",
    );
    pod.to_string()
}

/// `kubectl bottle pause` deletes the Pod and nothing else; `resume` brings it back on the
/// same workspace (a 1 GiB file in it) and the same CA.
fn pause_and_resume_keep_the_workspace(c: &Cluster, ns: &str, pod: &str, report: &mut Report) {
    let wrote = c
        .exec_agent(
            pod,
            "dd if=/dev/zero of=/workspace/big bs=1M count=1024 status=none && sync",
        )
        .status
        .success();
    let ca = c.jsonpath(ns, "bottle/e2e", "{.status.caFingerprint}");
    let uid = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}");
    let t = Instant::now();
    let paused = kubectl_bottle(c, &["pause", "e2e"]).status.success()
        && poll(Duration::from_secs(120), || {
            let gone = c
                .jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}")
                .is_empty();
            (gone && c.jsonpath(ns, "bottle/e2e", "{.status.phase}") == "Paused").then_some(())
        })
        .is_some();
    report.timing(
        "pause → Pod gone, phase Paused",
        format!("{:.1}s", t.elapsed().as_secs_f64()),
    );
    let t = Instant::now();
    let resumed = kubectl_bottle(c, &["resume", "e2e"]).status.success()
        && poll(Duration::from_secs(180), || {
            let now = c.jsonpath(ns, &format!("pod/{pod}"), "{.metadata.uid}");
            let running = c.jsonpath(ns, "bottle/e2e", "{.status.phase}") == "Running";
            (!now.is_empty() && now != uid && running && c.exec_agent(pod, "true").status.success())
                .then_some(())
        })
        .is_some();
    report.timing(
        "resume → agent exec-able (1 GiB workspace)",
        format!("{:.1}s", t.elapsed().as_secs_f64()),
    );
    let size = c.exec_agent(pod, "stat -c %s /workspace/big; rm -f /workspace/big");
    let size = String::from_utf8_lossy(&size.stdout).trim().to_string();
    let kept = c.exec_agent(pod, "cat /workspace/keep.txt");
    let kept = String::from_utf8_lossy(&kept.stdout).trim().to_string();
    let same_ca = c.jsonpath(ns, "bottle/e2e", "{.status.caFingerprint}") == ca && !ca.is_empty();
    report.case(
        "pause deletes the Pod; resume brings it back on the same workspace and CA",
        format!(
            "paused: {paused}, resumed: {resumed}, /workspace/big: {size} bytes, keep.txt: {kept:?}, same CA: {same_ca}"
        ),
        wrote && paused && resumed && size == "1073741824" && kept == "kept" && same_ca,
    );
}

/// The NetworkPolicies hold on their own (kube-router): from a sidecar container (a UID
/// netinit lets out), the public internet on an allowed port is reachable, another Pod of the
/// namespace and the node's private address are not; and that Pod cannot reach the bottle.
fn network_policies_hold(c: &Cluster, ns: &str, pod: &str, report: &mut Report) {
    c.apply(&json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "neighbour", "namespace": ns, "labels": {"app": "neighbour"}},
        "spec": {"containers": [{
            "name": "httpd", "image": crate::node::BUSYBOX_IMAGE, "imagePullPolicy": "Never",
            "args": ["-c", "echo hello > /tmp/index.html && httpd -f -p 8080 -h /tmp"],
        }]},
    }));
    c.kubectl_ok(&[
        "-n",
        ns,
        "wait",
        "--for=condition=Ready",
        "pod/neighbour",
        "--timeout=60s",
    ]);
    let neighbour = c.jsonpath(ns, "pod/neighbour", "{.status.podIP}");
    let bottle_ip = c.jsonpath(ns, &format!("pod/{pod}"), "{.status.podIP}");
    let from_egress = |target: &str| -> bool {
        c.kubectl(&[
            "-n",
            ns,
            "exec",
            pod,
            "-c",
            "egress",
            "--",
            "timeout",
            "5",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{target}"),
        ])
        .status
        .success()
    };
    let internet = from_egress(&format!("{NET_ADDR}/443"));
    report.case(
        "bottle → internet on an allowed port (control)",
        if internet { "connects" } else { "blocked" },
        internet,
    );
    let to_neighbour = from_egress(&format!("{neighbour}/8080"));
    report.case(
        "bottle → another Pod of the namespace",
        if to_neighbour { "connects" } else { "blocked" },
        !to_neighbour,
    );
    let to_node = from_egress(&format!(
        "{}/{}",
        c.control_plane().node_ip.unwrap(),
        c.control_plane().api_port
    ));
    report.case(
        "bottle → the node's private address",
        if to_node { "connects" } else { "blocked" },
        !to_node,
    );
    // Something listening on the bottle's Pod IP, so only the policy can stop the neighbour.
    // (The agent cannot reach it itself: netinit lets it reach only its sidecars' ports.)
    let _ = c.exec_agent(
        pod,
        "setsid nohup python3 -m http.server 8000 --bind 0.0.0.0 >/dev/null 2>&1 < /dev/null &",
    );
    let listening = poll(Duration::from_secs(10), || {
        let out = c.exec_agent(pod, "cat /proc/net/tcp");
        // 0A: LISTEN, on 0.0.0.0:8000 (0x1F40).
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.contains("00000000:1F40 00000000:0000 0A"))
            .then_some(())
    })
    .is_some();
    let probe = |target: &str| {
        let out = c.kubectl(&[
            "-n",
            ns,
            "exec",
            "neighbour",
            "--",
            "sh",
            "-c",
            &format!("echo | nc -w 3 {target} && echo OPEN"),
        ]);
        String::from_utf8_lossy(&out.stdout).contains("OPEN")
    };
    let own = probe(&format!("{neighbour} 8080"));
    let to_bottle = probe(&format!("{bottle_ip} 8000"));
    report.case(
        "another Pod → the bottle (a listener there)",
        format!("listener up: {listening}, neighbour reaches its own port: {own}, reaches the bottle: {to_bottle}"),
        listening && own && !to_bottle,
    );
    c.kubectl_ok(&["-n", ns, "delete", "pod", "neighbour", "--wait=false"]);
}

/// What each container of the idle bottle holds in memory (the kubelet's summary).
fn memory(c: &Cluster, ns: &str, pod: &str, report: &mut Report) {
    let node = c.jsonpath(ns, &format!("pod/{pod}"), "{.spec.nodeName}");
    let raw = c.kubectl_ok(&[
        "get",
        "--raw",
        &format!("/api/v1/nodes/{node}/proxy/stats/summary"),
    ]);
    let summary: Value = serde_json::from_str(&raw).unwrap();
    let ours = summary["pods"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["podRef"]["name"] == pod && p["podRef"]["namespace"] == ns);
    let mut rows = Vec::new();
    for ctr in ours
        .and_then(|p| p["containers"].as_array())
        .into_iter()
        .flatten()
    {
        let mib = |k: &str| ctr["memory"][k].as_f64().unwrap_or(0.0) / 1048576.0;
        rows.push(format!(
            "{} {:.1} MiB ({:.1} MiB working set)",
            ctr["name"].as_str().unwrap_or("?"),
            mib("rssBytes"),
            mib("workingSetBytes")
        ));
    }
    report.timing(
        "RSS (working set) of each container, idle bottle (debug builds)",
        rows.join(", "),
    );
    report.case(
        "the kubelet reports every running container's memory",
        format!("{} containers", rows.len()),
        rows.len() >= 6,
    );
}

/// `kubectl delete bottle` removes everything the bottle had.
fn delete_leaves_nothing(c: &Cluster, ns: &str, pod: &str, report: &mut Report) {
    let pod_ip = c.jsonpath(ns, &format!("pod/{pod}"), "{.status.podIP}");
    c.kubectl_ok(&[
        "-n",
        ns,
        "delete",
        "bottle",
        "e2e",
        "--wait=true",
        "--timeout=120s",
    ]);
    let mut last = Vec::new();
    let left = poll(Duration::from_secs(120), || {
        let out = c.kubectl_ok(&[
            "-n",
            ns,
            "get",
            "pods,configmaps,secrets,networkpolicies,persistentvolumeclaims,accessrequests",
            "-o",
            "name",
        ]);
        let ours: Vec<String> = out
            .lines()
            .filter(|l| {
                l.contains("e2e") && !l.contains("e2e-credentials") && !l.contains("e2e-deploy-key")
            })
            .map(String::from)
            .collect();
        last = ours;
        last.is_empty().then_some(())
    });
    report.case(
        "delete: no Pod, ConfigMap, Secret, NetworkPolicy, claim or access request left",
        if left.is_some() {
            "none left".to_string()
        } else {
            format!("left: {last:?}")
        },
        left.is_some(),
    );
    let traces = poll(Duration::from_secs(60), || {
        let t = c.node_traces_of(&pod_ip);
        t.is_empty().then_some(()).or_else(|| {
            eprintln!("still on the node for {pod_ip}: {t:?}");
            None
        })
    });
    report.case(
        "delete: no iptables/ipset entry or CNI allocation for the Pod IP",
        if traces.is_some() { "none" } else { "left" },
        traces.is_some(),
    );
}
