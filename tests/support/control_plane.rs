//! A real Kubernetes control plane on loopback: etcd, kube-apiserver and
//! kube-controller-manager (garbage collection, namespaces, service accounts), and on request
//! kube-scheduler with a kwok node, built from the Go module proxy by
//! `tests/tools/install.sh`. Used by the integration tests, the benchmark and `scripts/up.sh`.
//!
//! [`ControlPlane::start_for_real_node`] is the variant a real kubelet can join (see
//! `node.rs`): the API server listens on a private address of an interface of its own, which
//! Pods reach through the `kubernetes` Service.
//!
//! Children get `PR_SET_PDEATHSIG`, so they die with the thread that started them: start the
//! control plane from a thread that lives as long as you need it.

#![allow(dead_code)] // each user (tests, example, bench) needs a different part

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Directory of the built tools: `$BOTTLE_TOOLS_BIN`, else whatever `install.sh` prints (it
/// builds on first use and is a no-op when the cache is warm).
pub fn tools_bin() -> anyhow::Result<PathBuf> {
    if let Ok(dir) = std::env::var("BOTTLE_TOOLS_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .context("running install.sh")?;
    if !out.status.success() {
        bail!(
            "{} failed; the control plane cannot start",
            script.display()
        );
    }
    let stdout = String::from_utf8(out.stdout)?;
    Ok(PathBuf::from(
        stdout
            .lines()
            .last()
            .context("install.sh printed nothing")?
            .trim(),
    ))
}

/// A free TCP port on 127.0.0.1 (free when asked; the kernel will not hand it out again soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind loopback")
        .port()
}

/// Spawns `cmd` so it is killed when the spawning thread exits.
pub fn spawn_tied(cmd: &mut Command) -> std::io::Result<Child> {
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Writes files the way the kubelet updates a ConfigMap or Secret volume: a new timestamped
/// directory, then an atomic rename of the `..data` symlink onto it.
pub fn kubelet_write(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    std::fs::create_dir(dir.join(&stamp)).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(&stamp).join(name), body).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

/// Removes the working directories of control planes whose process is gone. A test binary
/// keeps its control plane in a static, which is never dropped, so its directory (etcd data,
/// logs: hundreds of MB) outlives it.
fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("bottle-cp-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            unmount_under(&e.path());
            let _ = fs::remove_dir_all(e.path());
        }
    }
}

/// The interface that holds [`REAL_NODE_IP`] (the API server's and the real node's address),
/// so Pods have a non-loopback address to reach. An `ifb` device: these kernels have no
/// `dummy` driver (and load no modules), and an `ifb` that is up holds a local address alike.
pub const REAL_NODE_IFACE: &str = "bottle-node0";
/// The real node's address: a private range nothing else here uses (kwok's fake Pod IPs are
/// 10.244.0.0/24, Services 10.0.0.0/24).
pub const REAL_NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// Held (flock) while a real-node control plane runs: kube-proxy's and kube-router's iptables
/// chains and ipsets have fixed names, so only one real node can run on a machine.
pub const REAL_NODE_LOCK: &str = "/run/bottle-real-node.lock";
/// The group of the API server's kubelet client certificate, bound to
/// `system:kubelet-api-admin` (exec, logs, port-forward on the kubelet API).
pub const KUBELET_API_GROUP: &str = "bottle:kubelet-api-admins";

/// Users in this group have their writes recorded in the API server's audit log (see
/// [`ControlPlane::writes_by`]); nobody else's are, so the log stays small.
pub const AUDITED_GROUP: &str = "bottle:audited";

/// The API server's audit policy: writes (create, update, patch, delete) by
/// [`AUDITED_GROUP`], once each, when answered.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  userGroups: [\"bottle:audited\"]
  verbs: [create, update, patch, delete, deletecollection]
- level: None
";

/// The fake node [`ControlPlane::start_kwok_node`] registers.
pub const KWOK_NODE: &str = "kwok-node";
/// The taint (and annotation) that marks the kwok node.
pub const KWOK_TAINT: &str = "kwok.x-k8s.io/node";

/// The running control plane.
pub struct ControlPlane {
    /// Working directory (PKI, etcd data, logs, kubeconfig).
    pub dir: PathBuf,
    /// Admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Tools directory (kubectl, gitleaks…).
    pub bin: PathBuf,
    /// `https://127.0.0.1:<port>` (`https://<REAL_NODE_IP>:<port>` for a real node).
    pub server: String,
    /// The API server's port.
    pub api_port: u16,
    /// [`REAL_NODE_IP`] when started with [`Self::start_for_real_node`].
    pub node_ip: Option<Ipv4Addr>,
    children: Vec<(String, Child)>,
    /// How each child was started (program, arguments), so a fault test can start it again.
    specs: Vec<(String, std::ffi::OsString, Vec<std::ffi::OsString>)>,
    /// The flock on [`REAL_NODE_LOCK`], released when this is dropped.
    real_node_lock: Option<fs::File>,
}

struct Pki {
    ca_cert: String,
    ca_key: String,
    serving_cert: String,
    serving_key: String,
    admin_cert: String,
    admin_key: String,
    sa_key: String,
    sa_pub: String,
}

fn pki(node_ip: Option<Ipv4Addr>) -> anyhow::Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "bottle-test-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, &ca_key);

    let serving_key = KeyPair::generate()?;
    let mut s = CertificateParams::new(vec!["localhost".into(), "kubernetes.default.svc".into()])?;
    s.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse()?));
    s.subject_alt_names
        .push(SanType::IpAddress("10.0.0.1".parse()?));
    if let Some(ip) = node_ip {
        s.subject_alt_names.push(SanType::IpAddress(ip.into()));
    }
    s.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    s.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = s.signed_by(&serving_key, &issuer)?;

    let admin_key = KeyPair::generate()?;
    let mut a = CertificateParams::default();
    a.distinguished_name.push(DnType::CommonName, "admin");
    a.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    a.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = a.signed_by(&admin_key, &issuer)?;

    let sa = KeyPair::generate()?;
    Ok(Pki {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        serving_cert: serving_cert.pem(),
        serving_key: serving_key.serialize_pem(),
        admin_cert: admin_cert.pem(),
        admin_key: admin_key.serialize_pem(),
        sa_key: sa.serialize_pem(),
        sa_pub: sa.public_key_pem(),
    })
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Takes [`REAL_NODE_LOCK`] without waiting, or says who holds it.
fn lock_real_node() -> anyhow::Result<fs::File> {
    use std::os::fd::AsRawFd;
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(REAL_NODE_LOCK)
        .with_context(|| format!("opening {REAL_NODE_LOCK}"))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let mut holder = String::new();
        let _ = f.read_to_string(&mut holder);
        bail!(
            "another real node runs on this machine (pid {}, {REAL_NODE_LOCK})",
            holder.trim()
        );
    }
    f.set_len(0)?;
    write!(f, "{}", std::process::id())?;
    Ok(f)
}

/// Runs `ip` with `args`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    anyhow::ensure!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Creates [`REAL_NODE_IFACE`] with [`REAL_NODE_IP`], replacing one a dead run left.
fn add_node_iface() -> anyhow::Result<()> {
    let _ = ip(&["link", "del", REAL_NODE_IFACE]);
    ip(&["link", "add", REAL_NODE_IFACE, "type", "ifb"])?;
    ip(&[
        "addr",
        "add",
        &format!("{REAL_NODE_IP}/32"),
        "dev",
        REAL_NODE_IFACE,
    ])?;
    ip(&["link", "set", REAL_NODE_IFACE, "up"])
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver and kube-controller-manager and waits until the API is
    /// ready and the `default` namespace has its service account.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// Starts a control plane a real kubelet can join (`node.rs`): the API server binds
    /// [`REAL_NODE_IP`] on the interface [`REAL_NODE_IFACE`] and advertises it (so the
    /// `kubernetes` Service has a reachable endpoint), has a kubelet client certificate,
    /// the Node authorizer and NodeRestriction, and kube-controller-manager also runs what a
    /// real Pod needs (kube-root-ca.crt, node lifecycle, endpoint slices). Needs root, and
    /// only one runs per machine ([`REAL_NODE_LOCK`]).
    pub fn start_for_real_node() -> anyhow::Result<Self> {
        Self::start_with(Some(REAL_NODE_IP))
    }

    fn start_with(node_ip: Option<Ipv4Addr>) -> anyhow::Result<Self> {
        let bin = tools_bin()?;
        let real_node_lock = match node_ip {
            Some(_) => {
                let lock = lock_real_node()?;
                add_node_iface()?;
                Some(lock)
            }
            None => None,
        };
        let root = PathBuf::from(
            std::env::var("BOTTLE_CP_DIR")
                .unwrap_or_else(|_| std::env::temp_dir().display().to_string()),
        );
        remove_stale_dirs(&root);
        let dir = root.join(format!("bottle-cp-{}-{}", std::process::id(), free_port()));
        fs::create_dir_all(dir.join("pki"))?;
        let pki = pki(node_ip)?;
        let p = |f: &str| dir.join("pki").join(f);
        for (f, body) in [
            ("ca.crt", &pki.ca_cert),
            ("ca.key", &pki.ca_key),
            ("apiserver.crt", &pki.serving_cert),
            ("apiserver.key", &pki.serving_key),
            ("sa.key", &pki.sa_key),
            ("sa.pub", &pki.sa_pub),
        ] {
            fs::write(p(f), body)?;
        }
        let (etcd_port, peer_port, api_port, kcm_port) =
            (free_port(), free_port(), free_port(), free_port());
        let host = node_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        let server = format!("https://{host}:{api_port}");
        let kubeconfig = dir.join("admin.kubeconfig");
        fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\n    namespace: default\ncurrent-context: local\n",
                b64(&pki.ca_cert),
                b64(&pki.admin_cert),
                b64(&pki.admin_key)
            ),
        )?;
        let mut cp = Self {
            dir: dir.clone(),
            kubeconfig: kubeconfig.clone(),
            bin: bin.clone(),
            server: server.clone(),
            api_port,
            node_ip,
            children: Vec::new(),
            specs: Vec::new(),
            real_node_lock,
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        cp.spawn(
            "etcd",
            Command::new(bin.join("etcd")).args([
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ]),
        )?;
        cp.wait_http(&format!("{etcd_url}/health"), "etcd", |body| {
            body.contains("\"health\":\"true\"")
        })?;

        let pf = |f: &str| p(f).display().to_string();
        let mut apiserver = Command::new(bin.join("kube-apiserver"));
        match node_ip {
            None => apiserver.args([
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                // Lets a namespace give its Pods a default toleration (the kwok node's).
                "--enable-admission-plugins=PodTolerationRestriction",
            ]),
            Some(ip) => {
                let (cert, key) = cp.issue_cert(
                    "kube-apiserver-kubelet-client",
                    &[KUBELET_API_GROUP],
                    &[],
                    false,
                )?;
                fs::write(p("kubelet-client.crt"), cert)?;
                fs::write(p("kubelet-client.key"), key)?;
                apiserver.args([
                    format!("--bind-address={ip}"),
                    format!("--advertise-address={ip}"),
                    // The `kubernetes` Service's endpoint is this server, for Pods.
                    "--endpoint-reconciler-type=lease".into(),
                    // Pods reach this server: nothing unauthenticated gets in.
                    "--anonymous-auth=false".into(),
                    "--enable-admission-plugins=PodTolerationRestriction,NodeRestriction".into(),
                    format!("--kubelet-client-certificate={}", pf("kubelet-client.crt")),
                    format!("--kubelet-client-key={}", pf("kubelet-client.key")),
                ])
            }
        };
        fs::write(dir.join("audit-policy.yaml"), AUDIT_POLICY)?;
        cp.spawn(
            "kube-apiserver",
            apiserver.args([
                format!(
                    "--audit-policy-file={}",
                    dir.join("audit-policy.yaml").display()
                ),
                format!("--audit-log-path={}", dir.join("audit.log").display()),
                format!("--etcd-servers={etcd_url}"),
                format!("--secure-port={api_port}"),
                format!("--tls-cert-file={}", pf("apiserver.crt")),
                format!("--tls-private-key-file={}", pf("apiserver.key")),
                format!("--client-ca-file={}", pf("ca.crt")),
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
                format!("--service-account-key-file={}", pf("sa.pub")),
                format!("--service-account-signing-key-file={}", pf("sa.key")),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=Node,RBAC".into(),
                "--allow-privileged=true".into(),
                format!("--cert-dir={}", dir.join("certs").display()),
                // exec and logs go to the kwok node's kubelet API, served on loopback.
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!("--kubelet-certificate-authority={}", pf("ca.crt")),
            ]),
        )?;
        cp.wait_ready()?;
        // Audited users are admins: what they may do is not under test, what they write is.
        let bind = |name: &str, role: &str, group: &str, what: &str| -> anyhow::Result<()> {
            let out = cp
                .kubectl()
                .args(["create", "clusterrolebinding", name])
                .arg(format!("--clusterrole={role}"))
                .arg(format!("--group={group}"))
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "binding {what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        bind(
            "bottle-audited-admin",
            "cluster-admin",
            AUDITED_GROUP,
            "the audited group",
        )?;
        if node_ip.is_some() {
            // The API server's kubelet client may use the whole kubelet API (exec, logs).
            bind(
                "bottle-kubelet-api-admin",
                "system:kubelet-api-admin",
                KUBELET_API_GROUP,
                "the kubelet API client",
            )?;
        }

        // Only what the operator's behaviour depends on (and the PV binder, so the main job's
        // full bottle gets its workspace, and kube-root-ca.crt in every namespace: the CA a
        // supervise sidecar's projected volume carries); fewer controllers start faster. A
        // real node also needs the not-ready taint lifted once it is Ready, endpoint slices for Services (kube-proxy),
        // the garbage collection of Pods of a deleted node, Deployments (the chart's
        // operator) and the release of claims no Pod uses any more (a deleted workspace).
        let mut controllers = "garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,persistentvolume-binder-controller,root-ca-certificate-publisher-controller".to_string();
        if node_ip.is_some() {
            controllers.push_str(",node-lifecycle-controller,taint-eviction-controller,endpointslice-controller,endpoints-controller,pod-garbage-collector-controller,deployment-controller,replicaset-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller");
        }
        cp.spawn(
            "kube-controller-manager",
            Command::new(bin.join("kube-controller-manager")).args([
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                "--leader-elect=false".into(),
                format!("--service-account-private-key-file={}", pf("sa.key")),
                format!("--root-ca-file={}", pf("ca.crt")),
                "--use-service-account-credentials=true".into(),
                format!("--cluster-signing-cert-file={}", pf("ca.crt")),
                format!("--cluster-signing-key-file={}", pf("ca.key")),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={kcm_port}"),
                format!("--controllers={controllers}"),
            ]),
        )?;
        cp.wait_service_account("default")?;
        Ok(cp)
    }

    /// A certificate and key signed by this control plane's CA: `cn` and `orgs` name the
    /// user (client) or the server, `ips` are its IP SANs, `server` picks the usage. At most
    /// one org (the user's group): rcgen keeps one value per name attribute, so a second O
    /// would silently replace the first.
    pub fn issue_cert(
        &self,
        cn: &str,
        orgs: &[&str],
        ips: &[Ipv4Addr],
        server: bool,
    ) -> anyhow::Result<(String, String)> {
        let ca_key = KeyPair::from_pem(&fs::read_to_string(self.dir.join("pki/ca.key"))?)?;
        let issuer =
            Issuer::from_ca_cert_pem(&fs::read_to_string(self.dir.join("pki/ca.crt"))?, ca_key)?;
        anyhow::ensure!(
            orgs.len() <= 1,
            "{cn}: one group per certificate (rcgen keeps one O), got {orgs:?}"
        );
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        for o in orgs {
            params.distinguished_name.push(DnType::OrganizationName, *o);
        }
        for ip in ips {
            params
                .subject_alt_names
                .push(SanType::IpAddress((*ip).into()));
        }
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Writes `<dir>/<name>.kubeconfig` for a client certificate of user `cn` in `orgs`.
    pub fn user_kubeconfig(&self, name: &str, cn: &str, orgs: &[&str]) -> anyhow::Result<PathBuf> {
        let (cert, key) = self.issue_cert(cn, orgs, &[], false)?;
        let ca = fs::read_to_string(self.dir.join("pki/ca.crt"))?;
        let path = self.dir.join(format!("{name}.kubeconfig"));
        fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: {name}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: {name}\ncurrent-context: local\n",
                self.server,
                b64(&ca),
                b64(&cert),
                b64(&key)
            ),
        )?;
        Ok(path)
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
        let child = self.spawn_logged(name, cmd)?;
        self.children.push((name.to_string(), child));
        self.specs.push((
            name.to_string(),
            cmd.get_program().to_owned(),
            cmd.get_args().map(ToOwned::to_owned).collect(),
        ));
        Ok(())
    }

    /// Kills the control-plane process `name` (`etcd`, `kube-apiserver`, ...) at once, like a
    /// crash; [`Self::start_again`] brings it back with its data.
    pub fn stop(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .with_context(|| format!("{name} is not running"))?;
        let (_, mut child) = self.children.remove(i);
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Starts `name` again as it was first started (its log in `<name>-again.log`), then
    /// waits for the API to be ready if the API server runs. The process is tied to the
    /// calling thread.
    pub fn start_again(&mut self, name: &str) -> anyhow::Result<()> {
        let (_, program, args) = self
            .specs
            .iter()
            .find(|(n, _, _)| n == name)
            .with_context(|| format!("{name} was never started"))?
            .clone();
        let child =
            self.spawn_logged(&format!("{name}-again"), Command::new(program).args(args))?;
        self.children.push((name.to_string(), child));
        if self.children.iter().any(|(n, _)| n == "kube-apiserver") {
            self.wait_ready()?;
        }
        Ok(())
    }

    /// [`Self::stop`], then [`Self::start_again`].
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.stop(name)?;
        self.start_again(name)
    }

    /// Starts `cmd` tied to the calling thread, its output in `<name>.log`.
    fn spawn_logged(&self, name: &str, cmd: &mut Command) -> anyhow::Result<Child> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        spawn_tied(
            cmd.stdout(log.try_clone()?)
                .stderr(log)
                .stdin(Stdio::null()),
        )
        .with_context(|| format!("starting {name}"))
    }

    /// Starts kube-scheduler and kwok, and registers one fake node that kwok runs: Pods
    /// scheduled there are reported running and ready as a kubelet would report them, though
    /// no container runs. The node is tainted with [`KWOK_TAINT`], so only Pods of namespaces
    /// that tolerate it by default land there; every other Pod stays unscheduled, as before.
    /// kwok also serves the node's kubelet API: `exec` runs a local command and `logs` reads
    /// a local file, as a test's kwok `Exec` and `Logs` objects say (see
    /// [`Self::kwok_exec`] and [`Self::kwok_logs`]). The processes die with the calling
    /// thread.
    pub fn start_kwok_node(&self) -> anyhow::Result<Vec<Child>> {
        self.install_crds(
            &self.bin.join("kwok-crds.yaml"),
            &["execs.kwok.x-k8s.io", "logs.kwok.x-k8s.io"],
        )?;
        let kc = format!("--kubeconfig={}", self.kubeconfig.display());
        let kubelet_port = free_port();
        let pki = |f: &str| self.dir.join("pki").join(f).display().to_string();
        let scheduler = self.spawn_logged(
            "kube-scheduler",
            Command::new(self.bin.join("kube-scheduler")).args([
                kc.as_str(),
                "--leader-elect=false",
                "--secure-port=0",
            ]),
        )?;
        // What an exec into a "container" finds first on PATH: the programs a test puts here.
        fs::create_dir_all(self.node_bin())?;
        let path = format!(
            "{}:{}",
            self.node_bin().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let kwok = self.spawn_logged(
            "kwok",
            Command::new(self.bin.join("kwok")).env("PATH", path).args([
                kc,
                format!("--config={}", self.bin.join("kwok-stages.yaml").display()),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={KWOK_TAINT}=fake"),
                // Pod addresses kwok reports; nothing is ever sent to them.
                "--cidr=10.244.0.0/24".into(),
                // The node's kubelet API, where the API server sends exec and logs.
                "--node-ip=127.0.0.1".into(),
                format!("--node-port={kubelet_port}"),
                format!("--server-address=127.0.0.1:{kubelet_port}"),
                format!("--tls-cert-file={}", pki("apiserver.crt")),
                format!("--tls-private-key-file={}", pki("apiserver.key")),
                "--enable-crds=Exec,Logs".into(),
            ]),
        )?;
        let node = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {KWOK_NODE}\n  annotations: {{{KWOK_TAINT}: fake}}\n\
             spec:\n  taints: [{{key: {KWOK_TAINT}, value: fake, effect: NoSchedule}}]\n\
             status:\n  allocatable: {{cpu: '64', memory: 256Gi, pods: '500'}}\n  capacity: {{cpu: '64', memory: 256Gi, pods: '500'}}\n"
        );
        let mut apply = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()?;
        apply
            .stdin
            .take()
            .expect("piped")
            .write_all(node.as_bytes())?;
        anyhow::ensure!(apply.wait()?.success(), "creating the kwok node failed");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self
                .kubectl()
                .args([
                    "get",
                    "node",
                    KWOK_NODE,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .output()?;
            if String::from_utf8_lossy(&out.stdout) == "True" {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the kwok node is not Ready after 60s:\n{}",
                    self.log_tail("kwok")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The API server taints every new node not-ready; kube-controller-manager's node
        // lifecycle controller (not run here) would lift it once the node reports Ready.
        let out = self
            .kubectl()
            .args([
                "taint",
                "node",
                KWOK_NODE,
                "node.kubernetes.io/not-ready:NoSchedule-",
            ])
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::ensure!(
            out.status.success() || err.contains("not found"),
            "lifting the not-ready taint: {err}"
        );
        Ok(vec![scheduler, kwok])
    }

    /// The last lines of a component's log, for failure messages.
    pub fn log_tail(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.dir.join(format!("{name}.log"))) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, child) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                let name = name.clone();
                bail!("{name} exited ({status}):\n{}", self.log_tail(&name));
            }
        }
        Ok(())
    }

    fn wait_http(
        &mut self,
        url: &str,
        what: &str,
        ok: impl Fn(&str) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            let out = Command::new("curl")
                .args(["-fsS", "-m", "2", url])
                .output()?;
            if out.status.success() && ok(&String::from_utf8_lossy(&out.stdout)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{what} not healthy after 60s:\n{}", self.log_tail(what));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            self.check_alive()?;
            let out = self.kubectl().args(["get", "--raw=/readyz"]).output()?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "kube-apiserver not ready after 120s:\n{}",
                    self.log_tail("kube-apiserver")
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// Waits until namespace `ns` has its `default` service account (Pods need it).
    pub fn wait_service_account(&mut self, ns: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            let out = self
                .kubectl()
                .args(["-n", ns, "get", "serviceaccount", "default"])
                .output()?;
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no default service account in {ns} after 60s:\n{}",
                    self.log_tail("kube-controller-manager")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Gives the Pods of namespace `ns` a default toleration of the kwok node, so they are
    /// scheduled there and reported running.
    pub fn tolerate_kwok_node(&self, ns: &str) -> anyhow::Result<()> {
        let toleration = format!(
            r#"scheduler.alpha.kubernetes.io/defaultTolerations=[{{"key":"{KWOK_TAINT}","operator":"Exists","effect":"NoSchedule"}}]"#
        );
        let out = self
            .kubectl()
            .args(["annotate", "--overwrite", "namespace", ns, &toleration])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "annotating namespace {ns}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// A directory at the front of the PATH of commands run by exec on the kwok node: where a
    /// test installs what the containers' images would hold.
    pub fn node_bin(&self) -> PathBuf {
        self.dir.join("node-bin")
    }

    /// Tells the kwok node what `exec` into Pod `ns/pod` does: for each listed container, the
    /// requested command runs here, as this process's user, with the given variables added
    /// to kwok's environment. Containers not listed refuse exec.
    pub fn kwok_exec(
        &self,
        ns: &str,
        pod: &str,
        containers: &[(&str, &[(&str, &str)])],
    ) -> anyhow::Result<()> {
        let execs: Vec<serde_json::Value> = containers
            .iter()
            .map(|(c, envs)| {
                let envs: Vec<_> = envs
                    .iter()
                    .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                    .collect();
                serde_json::json!({"containers": [c], "local": {"envs": envs}})
            })
            .collect();
        self.apply_json(&serde_json::json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Exec",
            "metadata": {"name": pod, "namespace": ns},
            "spec": {"execs": execs},
        }))
    }

    /// Tells the kwok node which local file (in the container runtime's log format) holds
    /// each listed container's log for Pod `ns/pod`.
    pub fn kwok_logs(
        &self,
        ns: &str,
        pod: &str,
        containers: &[(&str, &Path)],
    ) -> anyhow::Result<()> {
        let logs: Vec<serde_json::Value> = containers
            .iter()
            .map(|(c, f)| serde_json::json!({"containers": [c], "logsFile": f}))
            .collect();
        self.apply_json(&serde_json::json!({
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {"name": pod, "namespace": ns},
            "spec": {"logs": logs},
        }))
    }

    /// Applies the CRDs in `path` (a file or directory) and waits until each of `names` is
    /// established.
    pub fn install_crds(&self, path: &Path, names: &[&str]) -> anyhow::Result<()> {
        let out = self
            .kubectl()
            .args(["apply", "--server-side", "-f"])
            .arg(path)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "installing CRDs from {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let crds: Vec<String> = names.iter().map(|n| format!("crd/{n}")).collect();
        let out = self
            .kubectl()
            .args(["wait", "--for=condition=Established", "--timeout=60s"])
            .args(&crds)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "CRDs not established: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// `kubectl apply` of one object.
    pub fn apply_json(&self, object: &serde_json::Value) -> anyhow::Result<()> {
        self.apply_manifest(object.to_string().as_bytes())
    }

    /// `kubectl apply` of a manifest (YAML or JSON, one or more objects).
    pub fn apply_manifest(&self, manifest: &[u8]) -> anyhow::Result<()> {
        let mut apply = self
            .kubectl()
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        apply.stdin.take().expect("piped").write_all(manifest)?;
        let out = apply.wait_with_output()?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// The writes the API server has answered for `user` (a member of [`AUDITED_GROUP`]),
    /// from its audit log, one `verb resource[/subresource] namespace/name code` each.
    pub fn writes_by(&self, user: &str) -> Vec<String> {
        let log = fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| e["user"]["username"] == user)
            .map(|e| {
                let o = &e["objectRef"];
                let sub = match s(&o["subresource"]) {
                    sub if sub.is_empty() => sub,
                    sub => format!("/{sub}"),
                };
                format!(
                    "{} {}{sub} {}/{} {}",
                    s(&e["verb"]),
                    s(&o["resource"]),
                    s(&o["namespace"]),
                    s(&o["name"]),
                    e["responseStatus"]["code"]
                )
            })
            .collect()
    }

    /// `kubectl` against this control plane.
    pub fn kubectl(&self) -> Command {
        let mut c = Command::new(self.bin.join("kubectl"));
        c.env("KUBECONFIG", &self.kubeconfig);
        c
    }

    /// A kube client for the admin user.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(config)?)
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
        unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
        if self.real_node_lock.is_some() {
            let _ = ip(&["link", "del", REAL_NODE_IFACE]);
        }
    }
}

/// Lazily unmounts everything mounted under `dir`, deepest first: a real node's kubelet and
/// containerd mount volumes and rootfs there, and `remove_dir_all` cannot remove a mount.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", dir.display());
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // mountinfo escapes spaces and the like as octal; our paths have none.
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for m in points {
        if let Ok(c) = std::ffi::CString::new(m) {
            // SAFETY: umount2 with a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}
