//! The main job on a machine without a cluster: a local control plane, the operator, and the
//! example Bottles, then a look at what the operator made. Run it through `scripts/up.sh`.
//!
//! Where this machine can run a real node (root, cgroup v1, the node's packages: see
//! `RealNode::can_run`), the bottles really run: a kubelet with containerd, kube-proxy and
//! kube-router, the images built from `images/`, the operator installed by helm as a Pod, and
//! at the end the `kubectl exec` line into the agent. Otherwise a kwok node stands in (Pods
//! are reported running, no container runs) and the job says why.

#[path = "../tests/e2e/cluster.rs"]
mod cluster;
#[path = "../tests/support/control_plane.rs"]
mod control_plane;
#[path = "../tests/support/images.rs"]
mod images;
#[path = "../tests/support/node.rs"]
mod node;

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use control_plane::ControlPlane;

fn run(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<String> {
    let out = cp.kubectl().args(args).output()?;
    if !out.status.success() {
        bail!(
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn show(cp: &ControlPlane, args: &[&str]) -> anyhow::Result<()> {
    println!("\n$ kubectl {}", args.join(" "));
    print!("{}", run(cp, args)?);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let stay = match std::env::args().nth(1).as_deref() {
        Some("--stay") => true,
        Some("--once") => false,
        _ => std::io::stdin().is_terminal(),
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    match node::RealNode::can_run() {
        Ok(()) => real_node(stay),
        Err(why) => {
            eprintln!("==> no real node on this machine ({why}): a kwok node stands in");
            kwok_node(stay, repo)
        }
    }
}

/// The bottles on a real node: containers run, `kubectl exec` gets a shell in the agent.
fn real_node(stay: bool) -> anyhow::Result<()> {
    eprintln!(
        "==> a real node: control plane, kubelet + containerd, kube-proxy, kube-router; images from images/; the operator by helm"
    );
    let t = Instant::now();
    let opts = cluster::Options {
        namespace: "default".into(),
        ..Default::default()
    };
    let c = cluster::Cluster::start(opts, &mut |what, took| eprintln!("    {what}: {took}"));
    let cp = c.control_plane();
    eprintln!("    up in {:.1}s", t.elapsed().as_secs_f64());

    // No storage provisioner runs here: a hostPath volume the agent (UID 1000) may write
    // stands in for the full bottle's workspace claim, as a provisioner would make one.
    let ws = c.workspace_dir();
    cp.apply_json(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "local-workspace"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": ws, "type": "Directory"},
        },
    }))?;
    apply_examples(cp)?;
    let t = Instant::now();
    for name in ["minimal", "full"] {
        run(
            cp,
            &[
                "wait",
                "--for=condition=Ready",
                &format!("bottle/{name}"),
                "--timeout=240s",
            ],
        )
        .with_context(|| {
            let pods = run(cp, &["get", "pods", "-o", "wide"]).unwrap_or_default();
            let desc = run(cp, &["describe", "pod", name]).unwrap_or_default();
            format!("bottle {name} never ready:\n{pods}\n{desc}")
        })?;
        eprintln!(
            "    {name} Ready after {:.1}s: its containers run on the real node",
            t.elapsed().as_secs_f64()
        );
    }
    show(cp, &["get", "bottles", "-o", "wide"])?;
    show(cp, &["get", "pods", "-o", "wide", "-A"])?;
    show(
        cp,
        &[
            "get",
            "pod",
            "full",
            "-o",
            "jsonpath={range .status.initContainerStatuses[*]}{.name}{\" ready=\"}{.ready}{\" started=\"}{.state.running.startedAt}{.state.terminated.reason}{\"\\n\"}{end}{range .status.containerStatuses[*]}{.name}{\" ready=\"}{.ready}{\" started=\"}{.state.running.startedAt}{\"\\n\"}{end}",
        ],
    )?;
    show(cp, &["exec", "full", "-c", "agent", "--", "id"])?;
    let kubectl = cp.bin.join("kubectl");
    println!(
        "\nBoth bottles run on a real node. A shell in the full bottle's agent:\n  KUBECONFIG={} {} exec -it full -c agent -- bash\n(or, with kubectl-bottle on PATH: kubectl bottle exec full)\n",
        cp.kubeconfig.display(),
        kubectl.display()
    );
    wait_or_exit(stay, cp);
    Ok(())
}

/// Creates the Secret the minimal Bottle names and applies both examples.
fn apply_examples(cp: &ControlPlane) -> anyhow::Result<()> {
    // The minimal Bottle expects its API key in a Secret, as the README's first step makes it.
    eprintln!("==> kubectl create secret generic anthropic --from-literal=api-key=<demo value>");
    run(
        cp,
        &[
            "create",
            "secret",
            "generic",
            "anthropic",
            "--from-literal=api-key=demo-anthropic-key-replace-me",
        ],
    )?;
    eprintln!("==> kubectl apply -f examples/bottle-full.yaml -f examples/bottle-minimal.yaml");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let applied = run(
        cp,
        &[
            "apply",
            "-f",
            repo.join("examples/bottle-full.yaml").to_str().unwrap(),
            "-f",
            repo.join("examples/bottle-minimal.yaml").to_str().unwrap(),
        ],
    )?;
    print!("{applied}");
    Ok(())
}

/// From a terminal (or --stay): keep everything up until Ctrl-C, saying how to reach it.
fn wait_or_exit(stay: bool, cp: &ControlPlane) {
    if stay {
        println!(
            "The control plane stays up until Ctrl-C. In another shell:\n  export KUBECONFIG={}\n  {} get bottles",
            cp.kubeconfig.display(),
            cp.bin.join("kubectl").display()
        );
        let (tx, rx) = std::sync::mpsc::channel();
        ctrlc_channel(tx);
        let _ = rx.recv();
    } else {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The bottles on a kwok node: every object the operator makes, reported running.
fn kwok_node(stay: bool, repo: &Path) -> anyhow::Result<()> {
    let operator = std::env::var("BOTTLE_OPERATOR_BIN")
        .context("BOTTLE_OPERATOR_BIN (scripts/up.sh sets it)")?;

    eprintln!("==> starting etcd, kube-apiserver and kube-controller-manager on loopback");
    let t = Instant::now();
    let cp = ControlPlane::start()?;
    eprintln!(
        "    ready in {:.1}s: {}",
        t.elapsed().as_secs_f64(),
        cp.server
    );

    eprintln!(
        "==> starting kube-scheduler and a kwok node (Pods are reported running; no container runs)"
    );
    let _node = cp.start_kwok_node()?;
    cp.tolerate_kwok_node("default")?;
    // No storage provisioner runs here: a pre-made volume (never written, no container runs)
    // lets kube-controller-manager bind the full bottle's workspace claim, as a provisioner
    // would on kind or a real cluster.
    eprintln!("==> creating a 10Gi PersistentVolume for the full bottle's workspace");
    cp.apply_json(&serde_json::json!({
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "local-workspace"},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
            "hostPath": {"path": cp.dir.join("workspace")},
        },
    }))?;

    eprintln!("==> installing the Bottle CRD");
    cp.install_crds(&repo.join("crds"), &["bottles.bottle-operator.dev"])?;

    eprintln!("==> starting the operator");
    let log = cp.dir.join("operator.log");
    let mut op = control_plane::spawn_tied(
        Command::new(&operator)
            .args(["--metrics-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &cp.kubeconfig)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&log)?),
    )?;

    apply_examples(&cp)?;
    let t = Instant::now();
    for name in ["full", "minimal"] {
        run(
            &cp,
            &[
                "wait",
                "--for=condition=ConfigApplied",
                &format!("bottle/{name}"),
                "--timeout=60s",
            ],
        )
        .with_context(|| {
            format!(
                "bottle {name} never applied; operator log: {}",
                log.display()
            )
        })?;
    }
    eprintln!(
        "    both Bottles applied in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    // Both run on the kwok node, the full one once its workspace claim is bound.
    for name in ["minimal", "full"] {
        run(
            &cp,
            &[
                "wait",
                "--for=condition=Ready",
                &format!("bottle/{name}"),
                "--timeout=60s",
            ],
        )
        .with_context(|| format!("bottle {name} never ready; operator log: {}", log.display()))?;
        eprintln!(
            "    {name} Ready after {:.2}s (on the kwok node)",
            t.elapsed().as_secs_f64()
        );
    }

    show(&cp, &["get", "bottles", "-o", "wide"])?;
    show(
        &cp,
        &[
            "get",
            "pods,configmaps,secrets,networkpolicies,persistentvolumeclaims",
            "-l",
            "app.kubernetes.io/managed-by=bottle-operator",
        ],
    )?;
    show(
        &cp,
        &[
            "get",
            "pod",
            "full",
            "-o",
            "jsonpath={range .spec.initContainers[*]}{.name}{\" (init, restartPolicy=\"}{.restartPolicy}{\", uid \"}{.securityContext.runAsUser}{\")\\n\"}{end}{range .spec.containers[*]}{.name}{\" (uid \"}{.securityContext.runAsUser}{\")\\n\"}{end}",
        ],
    )?;
    show(
        &cp,
        &[
            "get",
            "configmap",
            "full-config",
            "-o",
            "jsonpath={.data.pipelock\\.yaml}",
        ],
    )?;
    show(
        &cp,
        &[
            "get",
            "bottle",
            "full",
            "-o",
            "jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{\"\\n\"}{end}",
        ],
    )?;
    show(
        &cp,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Bottle",
        ],
    )?;
    println!(
        "\nThe kwok node reports Pods running but runs no container: both bottles show the status a\n\
         running bottle gets. On kind or a real cluster the containers run (see README).\n"
    );

    if stay {
        println!("Operator log: {}", log.display());
    }
    wait_or_exit(stay, &cp);
    let _ = op.kill();
    Ok(())
}

/// Sends on `tx` at SIGINT/SIGTERM, so the control plane is torn down cleanly on Ctrl-C.
fn ctrlc_channel(tx: std::sync::mpsc::Sender<()>) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        });
        let _ = tx.send(());
    });
}
