//! The cluster of the end-to-end suite: a control plane and a real node
//! (`support/control_plane.rs`, `support/node.rs`), the images of `images/*.Dockerfile`
//! imported into the node's containerd, a cluster DNS Pod (dnsmasq, answering our internet's
//! names), and the operator installed by `helm install` from `charts/`, running as a Pod.
//!
//! The images the bottle runs get one layer on top for the suite: our internet's CA added to
//! their trust store (as a company adds its own CA), because pipelock verifies the origins it
//! reaches. Nothing else differs from what users run.

#![allow(dead_code)] // the suite and the main job use different parts

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::control_plane::ControlPlane;
use crate::images::Archive as Image;
use crate::node::{RealNode, RealNodeOptions};

/// The cluster DNS Service address (the kubelet's resolv.conf names it).
pub const DNS_IP: &str = "10.0.0.10";
/// Where the operator is installed.
const OPERATOR_NS: &str = "bottle-system";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The running cluster. Fields drop in order: the node before its control plane.
pub struct Cluster {
    node: RealNode,
    cp: ControlPlane,
    /// The namespace the suite's bottle lives in.
    pub ns: String,
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `cmd` with `stdin` as its input, collecting its output.
fn with_stdin(cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

/// Runs a shell script, panicking with its output when it fails.
fn sh(script: &str) -> String {
    ok(
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .output()
            .unwrap(),
        script,
    )
}

/// What a [`Cluster`] gets beyond the node and the operator.
#[derive(Default)]
pub struct Options {
    /// Added to the sidecar and pipelock images' trust stores (the internet's CA).
    pub internet_ca: Option<String>,
    /// A cluster DNS Pod answering `(domain, address)`: every name under the domain.
    pub dns: Option<(String, String)>,
    /// The namespace made for bottles.
    pub namespace: String,
}

impl Cluster {
    /// Starts everything `opts` asks for. Reports the time of each stage through `timing`.
    pub fn start(opts: Options, timing: &mut dyn FnMut(&str, String)) -> Self {
        let mut t = Instant::now();
        let mut lap = |what: &str, timing: &mut dyn FnMut(&str, String)| {
            timing(what, format!("{:.1}s", t.elapsed().as_secs_f64()));
            t = Instant::now();
        };
        let cp = ControlPlane::start_for_real_node().expect("control plane for a real node");
        let resolv = cp.dir.join("resolv.conf");
        // ClusterFirst Pods get the kubelet's resolv.conf when it has no clusterDNS: naming the
        // DNS Service here is what a cluster DNS add-on would do, without a search path.
        std::fs::write(&resolv, format!("nameserver {DNS_IP}\noptions ndots:1\n")).unwrap();
        let node = RealNode::start(
            &cp,
            RealNodeOptions {
                resolv_conf: Some(resolv),
                ..Default::default()
            },
        )
        .expect("real node");
        lap("control plane + real node up", timing);

        let mut names = vec!["operator", "sidecar", "pipelock", "agent"];
        if opts.dns.is_some() {
            names.push("dnsmasq");
        }
        let dir = crate::images::run_build(&names);
        let imgs = crate::images::read_set(&dir);
        lap("images built (images/build.sh; cached by content)", timing);
        let mut bottle_images: BTreeMap<String, String> = ["sidecar", "pipelock"]
            .into_iter()
            .map(|n| (n.to_string(), imgs[n].reference.clone()))
            .collect();
        if let Some(ca) = &opts.internet_ca {
            for (name, (reference, tar)) in Self::with_internet_ca(&cp.dir, &imgs, ca) {
                node.import_image(&tar, None).expect("import image");
                bottle_images.insert(name, reference);
            }
            lap("internet CA layered onto sidecar and pipelock", timing);
        }
        for img in imgs.values() {
            node.import_image(&img.tar, None).expect("import image");
        }
        lap("images imported into containerd", timing);

        let c = Cluster {
            node,
            cp,
            ns: opts.namespace.clone(),
        };
        if let Some((domain, addr)) = &opts.dns {
            c.start_dns(&imgs["dnsmasq"].reference, domain, addr);
            lap("cluster DNS Ready", timing);
        }
        c.helm_install(&imgs, &bottle_images);
        lap("helm install → operator Ready", timing);
        if c.ns != "default" {
            c.kubectl_ok(&["create", "namespace", &c.ns]);
        }
        c
    }

    /// A directory on the node for a hostPath PersistentVolume any container UID may write
    /// (no storage provisioner runs here).
    pub fn workspace_dir(&self) -> PathBuf {
        let dir = self.cp.dir.join("workspace");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .unwrap();
        dir
    }

    /// The control plane (its kubeconfig and tools).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// Sidecar and pipelock images with `ca` appended to their system bundle, as
    /// `(reference, tar)` by image name.
    fn with_internet_ca(
        dir: &Path,
        imgs: &BTreeMap<String, Image>,
        ca: &str,
    ) -> BTreeMap<String, (String, PathBuf)> {
        let ca_file = dir.join("internet-ca.crt");
        std::fs::write(&ca_file, ca).unwrap();
        let mut out = BTreeMap::new();
        for name in ["sidecar", "pipelock"] {
            let img = &imgs[name];
            let reference = format!("localhost/e2e/{name}:internet-ca");
            let tar = dir.join(format!("{name}-internet-ca.tar"));
            let bundle = dir.join(format!("{name}-bundle.crt"));
            // The bundle path both images use (Debian's, and upstream pipelock's copy of it).
            sh(&format!(
                "c=$(buildah from --pull=never -q oci-archive:{src}); \
                 m=$(buildah mount \"$c\"); cat \"$m/etc/ssl/certs/ca-certificates.crt\" {ca} > {bundle}; \
                 buildah umount \"$c\" >/dev/null; \
                 buildah copy -q \"$c\" {bundle} /etc/ssl/certs/ca-certificates.crt >/dev/null; \
                 buildah commit -q --rm \"$c\" {reference} >/dev/null; \
                 rm -f {tar}; buildah push -q {reference} oci-archive:{tar}:{reference}; \
                 buildah rmi {reference} >/dev/null",
                src = img.tar.display(),
                ca = ca_file.display(),
                bundle = bundle.display(),
                tar = tar.display(),
            ));
            out.insert(name.to_string(), (reference, tar));
        }
        out
    }

    /// dnsmasq in kube-system behind the `kube-dns` Service, answering every name under
    /// `domain` with `addr` and nothing else.
    fn start_dns(&self, image: &str, domain: &str, addr: &str) {
        let labels = json!({"k8s-app": "kube-dns"});
        self.apply(&json!({"apiVersion": "v1", "kind": "List", "items": [
            {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "dnsmasq", "namespace": "kube-system", "labels": labels},
                "spec": {
                    "dnsPolicy": "Default",
                    "containers": [{
                        "name": "dnsmasq", "image": image, "imagePullPolicy": "Never",
                        "args": ["--keep-in-foreground", "--log-facility=-", "--no-resolv", "--no-hosts",
                                 "--user=root",
                                 &format!("--address=/{domain}/{addr}")],
                    }],
                },
            },
            {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
                "spec": {
                    "clusterIP": DNS_IP, "selector": labels,
                    "ports": [
                        {"name": "dns", "port": 53, "protocol": "UDP"},
                        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                    ],
                },
            },
        ]}));
        let waited = self.kubectl(&[
            "-n",
            "kube-system",
            "wait",
            "--for=condition=Ready",
            "pod/dnsmasq",
            "--timeout=120s",
        ]);
        if !waited.status.success() {
            let described = self.kubectl(&["-n", "kube-system", "describe", "pod/dnsmasq"]);
            panic!(
                "the DNS Pod is not Ready: {}\n{}\nkubelet: {}\ncontainerd: {}",
                String::from_utf8_lossy(&waited.stderr),
                String::from_utf8_lossy(&described.stdout),
                self.node.log_tail("kubelet"),
                self.node.log_tail("containerd"),
            );
        }
    }

    /// `helm install` of charts/bottle-operator with the local images.
    fn helm_install(
        &self,
        imgs: &BTreeMap<String, Image>,
        bottle_images: &BTreeMap<String, String>,
    ) {
        let split = |r: &str| {
            let (repo, tag) = r.rsplit_once(':').unwrap();
            (repo.to_string(), tag.to_string())
        };
        let (op_repo, op_tag) = split(&imgs["operator"].reference);
        let (agent_repo, agent_tag) = split(&imgs["agent"].reference);
        let (sc_repo, sc_tag) = split(&bottle_images["sidecar"]);
        let (pl_repo, pl_tag) = split(&bottle_images["pipelock"]);
        let sets = [
            "replicas=1".to_string(),
            format!("image.repository={op_repo}"),
            format!("image.tag={op_tag}"),
            "image.pullPolicy=Never".into(),
            format!("bottle.agentImage.repository={agent_repo}"),
            format!("bottle.agentImage.tag={agent_tag}"),
            "bottle.agentImage.pullPolicy=Never".into(),
            format!("bottle.sidecarImage.repository={sc_repo}"),
            format!("bottle.sidecarImage.tag={sc_tag}"),
            "bottle.sidecarImage.pullPolicy=Never".into(),
            format!("bottle.pipelockImage.repository={pl_repo}"),
            format!("bottle.pipelockImage.tag={pl_tag}"),
            "bottle.pipelockImage.pullPolicy=Never".into(),
        ];
        let mut helm = Command::new(self.cp.bin.join("helm"));
        helm.env("KUBECONFIG", &self.cp.kubeconfig).args([
            "install",
            "bottle-operator",
            repo().join("charts/bottle-operator").to_str().unwrap(),
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "180s",
        ]);
        for s in &sets {
            helm.args(["--set", s]);
        }
        let out = helm.output().unwrap();
        if !out.status.success() {
            let pods = self.kubectl(&["-n", OPERATOR_NS, "get", "pods", "-o", "wide"]);
            let desc = self.kubectl(&["-n", OPERATOR_NS, "describe", "pods"]);
            panic!(
                "helm install: {}\n{}\n{}\nkubelet: {}",
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&pods.stdout),
                String::from_utf8_lossy(&desc.stdout),
                self.node.log_tail("kubelet")
            );
        }
    }

    /// kubectl against the cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.cp.kubectl().args(args).output().expect("kubectl runs")
    }

    /// kubectl, panicking with its stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        ok(self.kubectl(args), &format!("kubectl {}", args.join(" ")))
    }

    /// `kubectl apply` of `manifest` (JSON).
    pub fn apply(&self, manifest: &Value) {
        let mut cmd = self.cp.kubectl();
        cmd.args(["apply", "-f", "-"]);
        ok(
            with_stdin(&mut cmd, manifest.to_string().as_bytes()),
            "kubectl apply",
        );
    }

    /// `jsonpath` of `object` in `ns` ("" when it does not exist).
    pub fn jsonpath(&self, ns: &str, object: &str, path: &str) -> String {
        let out = self.kubectl(&["-n", ns, "get", object, "-o", &format!("jsonpath={path}")]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The name of the bottle's Pod, once it exists.
    pub fn bottle_pod(&self, ns: &str, bottle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.jsonpath(
                ns,
                "pods",
                &format!("{{.items[?(@.metadata.labels.bottle-operator\\.dev/bottle==\"{bottle}\")].metadata.name}}"),
            );
            if !out.trim().is_empty() {
                return out.trim().to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no Pod for bottle {bottle}: {}",
                self.kubectl_ok(&["-n", ns, "get", "bottle", bottle, "-o", "yaml"])
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `sh -c script` in the agent container.
    pub fn exec_agent(&self, pod: &str, script: &str) -> Output {
        self.kubectl(&[
            "-n", &self.ns, "exec", pod, "-c", "agent", "--", "sh", "-c", script,
        ])
    }

    /// `cmd` in the agent container with `stdin`.
    pub fn exec_agent_stdin(&self, pod: &str, cmd: &[&str], stdin: &str) -> Output {
        let mut kubectl = self.cp.kubectl();
        kubectl
            .args(["-n", &self.ns, "exec", "-i", pod, "-c", "agent", "--"])
            .args(cmd);
        with_stdin(&mut kubectl, stdin.as_bytes())
    }

    /// What the node still holds for a Pod IP: iptables rules, ipset members, the CNI
    /// allocation file.
    pub fn node_traces_of(&self, ip: &str) -> Vec<String> {
        let mut found = Vec::new();
        if ip.is_empty() {
            return vec!["the Pod had no IP".into()];
        }
        let word = |l: &str| {
            l.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .any(|w| w == ip)
        };
        for (what, cmd) in [
            ("iptables", &["iptables-save"][..]),
            ("ipset", &["ipset", "list"][..]),
        ] {
            let out = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
            for l in String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| word(l))
            {
                found.push(format!("{what}: {l}"));
            }
        }
        let ipam = self.node.dir.join("cni-ipam");
        if let Ok(nets) = std::fs::read_dir(&ipam) {
            for n in nets.flatten() {
                if n.path().join(ip).exists() {
                    found.push(format!("cni: {}", n.path().join(ip).display()));
                }
            }
        }
        found
    }
}
