//! Shared harness of the integration tests: one real control plane per test binary, one
//! namespace per test, the operator as a real subprocess.

#![allow(dead_code)]

pub mod control_plane;
pub mod dashboard;
pub mod node;
pub mod people;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use control_plane::ControlPlane;

/// The CRDs `crds/` holds, by name.
pub const CRDS: &[&str] = &[
    "bottles.bottle-operator.dev",
    "accessrequests.bottle-operator.dev",
];

/// Installs the chart's admission policy and roles for AccessRequests, rendered by helm.
pub fn install_access_policy(cp: &ControlPlane) -> anyhow::Result<()> {
    let rendered = Command::new(cp.bin.join("helm"))
        .args(["template", "bottle-operator"])
        .arg(repo().join("charts/bottle-operator"))
        .args(["--show-only", "templates/access-requests.yaml"])
        .args(["--kube-version", "1.34.10"])
        .output()?;
    anyhow::ensure!(
        rendered.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    cp.apply_manifest(&rendered.stdout)
}

/// The paths of `host`'s route in Bottle `bottle`'s spec, sorted (`None`: no such route).
pub async fn route_paths(
    c: &kube::Client,
    ns: &str,
    bottle: &str,
    host: &str,
) -> Option<Vec<String>> {
    let b = kube::Api::<bottle_operator::contract::api::Bottle>::namespaced(c.clone(), ns)
        .get(bottle)
        .await
        .ok()?;
    b.spec
        .egress
        .routes
        .iter()
        .find(|r| r.host == host)
        .map(|r| {
            let mut p = r.paths.clone();
            p.sort();
            p
        })
}

/// A Bottle named `name` with `spec` given as JSON.
pub fn new_bottle(name: &str, spec: serde_json::Value) -> bottle_operator::contract::api::Bottle {
    let spec: bottle_operator::contract::api::BottleSpec =
        serde_json::from_value(spec).expect("spec");
    bottle_operator::contract::api::Bottle::new(name, spec)
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane of this test binary, started on first use with the CRDs installed and
/// a kwok node (see [`ControlPlane::start_kwok_node`]; only Pods of namespaces made with
/// [`namespace_on_node`] are placed on it). It panics (never skips) when it cannot start.
pub fn cluster() -> &'static ControlPlane {
    static CP: OnceLock<ControlPlane> = OnceLock::new();
    CP.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        // The children die with the thread that spawned them, so that thread lives forever.
        std::thread::spawn(move || {
            let mut node = Vec::new();
            let started = ControlPlane::start().and_then(|cp| {
                cp.install_crds(&repo().join("crds"), CRDS)?;
                install_access_policy(&cp)?;
                // From the start, so the scheduler acts alike whichever test runs first.
                node = cp.start_kwok_node()?;
                Ok(cp)
            });
            tx.send(started).expect("test thread waits");
            let _node = node;
            loop {
                std::thread::park();
            }
        });
        match rx.recv().expect("control plane thread") {
            Ok(cp) => cp,
            Err(e) => panic!("the real control plane could not start: {e:#}"),
        }
    })
}

/// Runs kubectl, returning its output.
pub fn kubectl(args: &[&str]) -> Output {
    cluster()
        .kubectl()
        .args(args)
        .output()
        .expect("kubectl runs")
}

/// Runs kubectl and panics with its stderr when it fails.
pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A fresh namespace for one test, with its default service account.
pub fn namespace(test: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ns = format!(
        "{test}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
    .replace('_', "-");
    kubectl_ok(&["create", "namespace", &ns]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubectl(&["-n", &ns, "get", "serviceaccount", "default"])
        .status
        .success()
    {
        assert!(
            Instant::now() < deadline,
            "no default service account in {ns}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ns
}

/// A fresh namespace whose Pods tolerate the kwok node, so they are scheduled there and
/// reported running.
pub fn namespace_on_node(test: &str) -> String {
    let ns = namespace(test);
    cluster()
        .tolerate_kwok_node(&ns)
        .expect("namespace annotation");
    ns
}

/// The operator binary running against the test control plane; killed on drop.
pub struct Operator {
    child: Child,
    /// Its log file.
    pub log: PathBuf,
    /// `host:port` of its /metrics endpoint.
    pub metrics: String,
}

impl Operator {
    /// Starts the operator watching `ns` only, so tests running side by side do not interfere.
    pub fn start(ns: &str) -> Self {
        Self::start_with(ns, &[], &[])
    }

    /// Starts the operator with extra arguments and environment.
    pub fn start_with(ns: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_against(cluster(), ns, args, env)
    }

    /// Starts the operator watching `ns` of control plane `cp` (not this binary's shared one).
    pub fn start_on(cp: &ControlPlane, ns: &str) -> Self {
        Self::start_against(
            cp,
            ns,
            &[],
            &[(
                "RUST_LOG",
                "info,bottle_operator=debug,hyper_util=debug,kube_client=debug,rustls=debug",
            )],
        )
    }

    fn start_against(cp: &ControlPlane, ns: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = cp
            .dir
            .join(format!("operator-{ns}-{}.log", control_plane::free_port()));
        let file = fs::File::create(&log).expect("operator log");
        let metrics = format!("127.0.0.1:{}", control_plane::free_port());
        let child = control_plane::spawn_tied(
            Command::new(env!("CARGO_BIN_EXE_bottle-operator"))
                .args(["--namespace", ns, "--metrics-addr", &metrics])
                .args(args)
                .env("KUBECONFIG", &cp.kubeconfig)
                .env("RUST_LOG", "info,bottle_operator=debug")
                // After the defaults, so a test can override them (KUBECONFIG included).
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log"))
                .stderr(file),
        )
        .expect("operator starts");
        Self {
            child,
            log,
            metrics,
        }
    }

    /// Kills the operator at once (SIGKILL: no graceful shutdown, like a crashed Pod).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The value of one metric series from its /metrics endpoint (`name` with its labels as
    /// printed, e.g. `bottle_operator_failing_bottles`), or `None` before it is printed.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-sf", &format!("http://{}/metrics", self.metrics)])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The operator's log so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(40).collect();
            eprintln!("--- operator log (last 40 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `versions` until two reads 2 s apart agree, and returns that reading; panics with
/// `what` if nothing settles within `timeout`.
pub async fn settled<T, F, Fut>(what: &str, timeout: Duration, versions: F) -> T
where
    T: PartialEq,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    eventually(what, timeout, || async {
        let before = versions().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        (versions().await == before).then_some(before)
    })
    .await
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
