//! A real node for the end-to-end tests: containerd + runc with a CNI bridge, a kubelet,
//! kube-proxy (iptables mode, so Pods reach the API through the `kubernetes` Service) and
//! kube-router's firewall controller (NetworkPolicy), joined to a control plane started with
//! [`ControlPlane::start_for_real_node`]. Everything runs from private directories under the
//! control plane's; [`Drop`] stops it and removes what it left on the host (iptables chains,
//! ipsets, interfaces, network namespaces, cgroups, mounts, sysctls).
//!
//! What worked on these machines, and why some settings are as they are, is recorded in
//! `shared/design/real-node.md`.

#![allow(dead_code)] // the tests use different parts

use std::fs;
use std::io::Read as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::control_plane::{
    ControlPlane, REAL_NODE_IFACE, REAL_NODE_LOCK, free_port, spawn_tied, tools_bin, unmount_under,
};

/// The node's name (and its kubelet's user, `system:node:<name>`).
pub const NODE_NAME: &str = "bottle-real-node";
/// The default Pod range: private, and used by nothing else here (kwok's fake Pod IPs are
/// 10.244.0.0/24, Services 10.0.0.0/24, the node 10.250.0.1).
pub const POD_CIDR: &str = "10.251.0.0/24";
/// The CNI bridge the Pods' veths hang from.
pub const BRIDGE: &str = "bottle-br0";
/// The sandbox image (a static busybox `sleep`), imported when the node starts.
pub const PAUSE_IMAGE: &str = "localhost/pause:1";
/// A busybox image (`sh`, `wget`, `nc`, `httpd`, …; entrypoint `/bin/sh`), imported when
/// the node starts. Use it with `imagePullPolicy: Never`: there is no registry.
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:1";
/// The cgroup (in every hierarchy) under which the kubelet puts all Pods, so teardown can
/// find and kill whatever they left.
const CGROUP_ROOT: &str = "bottle-node";
/// The CNI network's name: libcni caches results under /var/lib/cni/results by it.
const CNI_NETWORK: &str = "bottle-real-node";
/// Where libcni (in containerd) caches ADD results; not configurable in containerd 1.6.
const CNI_RESULTS: &str = "/var/lib/cni/results";
/// Where containerd 1.6 puts its shims' sockets, whatever its state directory.
const SHIM_SOCKETS: &str = "/run/containerd/s";
/// Paths the kubelet uses whatever its root directory; removed when empty.
const KUBELET_FIXED_DIRS: &[&str] = &[
    "/var/lib/kubelet/device-plugins",
    "/var/lib/kubelet/plugins_registry",
    "/var/lib/kubelet/plugins",
    "/var/lib/kubelet",
    "/var/log/containers",
];
/// The Service range of the control plane.
const SERVICE_CIDR: &str = "10.0.0.0/24";
/// Sysctls the node needs (bridged Pod traffic must pass iptables for kube-proxy and
/// kube-router) and the ones the kubelet and kube-proxy set on their own; all are restored.
const SYSCTLS: &[(&str, Option<&str>)] = &[
    ("net/ipv4/ip_forward", Some("1")),
    ("net/bridge/bridge-nf-call-iptables", Some("1")),
    ("net/ipv4/conf/all/route_localnet", None),
    ("vm/overcommit_memory", None),
    ("vm/panic_on_oom", None),
    ("kernel/panic", None),
    ("kernel/panic_on_oops", None),
    ("kernel/keys/root_maxkeys", None),
    ("kernel/keys/root_maxbytes", None),
];
/// The host's values of [`SYSCTLS`] while a node runs, so the next node restores them when
/// this one died without its `Drop`.
const SYSCTL_SNAPSHOT: &str = "/run/bottle-real-node.sysctls";
/// Prefixes of the iptables chains and ipsets kube-proxy, the kubelet, kube-router and the
/// CNI plugins create; nothing else on these machines uses them.
const CHAIN_PREFIXES: &[&str] = &["KUBE-", "CNI-"];

/// How to start a [`RealNode`].
#[derive(Clone, Debug)]
pub struct RealNodeOptions {
    /// The node's name.
    pub name: String,
    /// The Pod range (an IPv4 CIDR; the bridge takes its first address).
    pub pod_cidr: String,
    /// The resolv.conf Pods get (`dnsPolicy: Default`); `None` writes one with no servers,
    /// as there is no cluster DNS.
    pub resolv_conf: Option<PathBuf>,
    /// Whether to run kube-scheduler (off when the caller runs one).
    pub scheduler: bool,
}

impl Default for RealNodeOptions {
    fn default() -> Self {
        Self {
            name: NODE_NAME.into(),
            pod_cidr: POD_CIDR.into(),
            resolv_conf: None,
            scheduler: true,
        }
    }
}

/// A running real node. Its processes die with the thread that started it; dropping it
/// stops them and cleans the host.
pub struct RealNode {
    /// The node's name.
    pub name: String,
    /// Its working directory (configs, logs, containerd and kubelet state).
    pub dir: PathBuf,
    /// containerd's socket (for `ctr -a`).
    pub containerd_sock: PathBuf,
    /// The Pod range.
    pub pod_cidr: String,
    /// The node's (and the API server's) address.
    pub node_ip: Ipv4Addr,
    admin_kubeconfig: PathBuf,
    kubectl: PathBuf,
    bin: PathBuf,
    children: Mutex<Vec<(String, Child)>>,
    sysctls: Vec<(String, String)>,
    torn_down: AtomicBool,
}

/// The chains of the host's filter and nat tables, for a timeout's message.
fn iptables_chains() -> String {
    ["filter", "nat"]
        .iter()
        .map(|table| {
            let chains = run_bounded(
                Command::new("iptables").args(["-t", table, "-S"]),
                Duration::from_secs(10),
            )
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .filter_map(|l| l.strip_prefix("-N "))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_else(|e| format!("{e:#}"));
            format!("iptables {table} chains: {chains}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `cmd`, killing it after `timeout`; returns its output.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> anyhow::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    // Read in threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{cmd:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(std::process::Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// Runs `cmd` (bounded) and fails with its stderr unless it succeeds; returns stdout.
fn run_ok(cmd: &mut Command) -> anyhow::Result<String> {
    let out = run_bounded(cmd, Duration::from_secs(60))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses `a.b.c.d/len`.
fn parse_cidr(cidr: &str) -> anyhow::Result<(Ipv4Addr, u32)> {
    let (addr, len) = cidr.split_once('/').context("CIDR without /")?;
    let len: u32 = len.parse()?;
    anyhow::ensure!(len <= 30, "Pod range {cidr} is too small");
    Ok((addr.parse()?, len))
}

fn in_cidr(ip: Ipv4Addr, (net, len): (Ipv4Addr, u32)) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// The cgroup v1 hierarchies mounted under /sys/fs/cgroup (one directory each).
fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        // Only real hierarchies (symlinks like cpu,cpuacct point at one of them).
        .filter(|p| !p.is_symlink() && p.join("cgroup.procs").exists())
        .collect();
    v.sort();
    v
}

/// Builds an OCI image archive of busybox-static (every applet linked under `/bin`), plus
/// `extra` host files copied to the given paths in the image, with `entrypoint`, made with
/// umoci; the tar goes to `<dir>/<name>.tar`. Import it with [`RealNode::import_image`] and
/// base name `localhost/<name>` (its tag is `tag`).
pub fn busybox_image(
    dir: &Path,
    name: &str,
    tag: &str,
    entrypoint: &[&str],
    extra: &[(&Path, &str)],
) -> anyhow::Result<PathBuf> {
    let work = dir.join(format!("image-{name}"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let layout = work.join("layout");
    let bundle = work.join("bundle");
    let image = format!("{}:{tag}", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
    )?;
    run_ok(Command::new("umoci").args(["new", "--image", &image]))?;
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image", &image])
            .arg(&bundle),
    )?;
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        fs::create_dir_all(rootfs.join(d))?;
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))?;
    let list = run_ok(Command::new("/bin/busybox").arg("--list"))?;
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        let link = rootfs.join("bin").join(applet);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link)?;
        }
    }
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\nnobody:x:65534:\n")?;
    for (from, to) in extra {
        let dest = rootfs.join(to.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        let _ = fs::remove_file(&dest);
        fs::copy(from, &dest).with_context(|| format!("copying {}", from.display()))?;
    }
    run_ok(
        Command::new("umoci")
            .args(["repack", "--image", &image])
            .arg(&bundle),
    )?;
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image]);
    for e in entrypoint {
        config.arg(format!("--config.entrypoint={e}"));
    }
    config.arg("--config.env=PATH=/bin");
    run_ok(&mut config)?;
    let tar = dir.join(format!("{name}.tar"));
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(&layout)
            .arg("-cf")
            .arg(&tar)
            .arg("."),
    )?;
    fs::remove_dir_all(&work)?;
    Ok(tar)
}

impl RealNode {
    /// Whether this machine can run a real node, or why not: root, cgroup v1 with the
    /// controllers the kubelet needs, `/dev/kmsg`, overlayfs, bridge netfilter, working
    /// iptables, the Debian packages and the built kubelet, kube-proxy and kube-router, and
    /// no other real node running.
    pub fn can_run() -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root (containerd, the kubelet and iptables need it)".into());
        }
        if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return Err("cgroup v2 only: this harness sets up cgroup v1 hierarchies".into());
        }
        for c in [
            "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer",
        ] {
            if !Path::new("/sys/fs/cgroup")
                .join(c)
                .join("cgroup.procs")
                .exists()
            {
                return Err(format!("cgroup v1 controller {c} is not mounted"));
            }
        }
        if !Path::new("/dev/kmsg").exists() {
            return Err("no /dev/kmsg (the kubelet's OOM watcher reads it)".into());
        }
        let fss = fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !fss.lines().any(|l| l.trim_end().ends_with("overlay")) {
            return Err("no overlayfs (containerd's snapshotter)".into());
        }
        if !Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
            return Err("no bridge netfilter (br_netfilter): NetworkPolicy and Services would not apply to bridged Pod traffic".into());
        }
        for f in [
            "/usr/bin/containerd",
            "/usr/bin/ctr",
            "/usr/sbin/runc",
            "/usr/lib/cni/bridge",
            "/usr/lib/cni/host-local",
            "/usr/lib/cni/portmap",
            "/usr/lib/cni/loopback",
            "/bin/busybox",
        ] {
            if !Path::new(f).exists() {
                return Err(format!("{f} missing (tests/tools/install.sh installs it)"));
            }
        }
        for c in ["umoci", "ipset", "conntrack", "iptables", "ip6tables", "ip"] {
            let ok = Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("{c} missing (tests/tools/install.sh installs it)"));
            }
        }
        // The images copy it into an empty rootfs.
        if Command::new("ldd")
            .arg("/bin/busybox")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Err("/bin/busybox is not static (install busybox-static)".into());
        }
        match Command::new("iptables").args(["-t", "nat", "-S"]).output() {
            Ok(o) if o.status.success() => {}
            _ => return Err("iptables -t nat does not work".into()),
        }
        let bin = tools_bin().map_err(|e| format!("tools: {e:#}"))?;
        for b in [
            "kubelet",
            "kube-proxy",
            "kube-router",
            "kube-scheduler",
            "kubectl",
        ] {
            if !bin.join(b).exists() {
                return Err(format!(
                    "{} missing (run tests/tools/install.sh)",
                    bin.join(b).display()
                ));
            }
        }
        // Another real node holds the lock (or an open handle) while it runs.
        if let Ok(mut f) = fs::File::open(REAL_NODE_LOCK) {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own; released when `f` closes.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                let mut pid = String::new();
                let _ = f.read_to_string(&mut pid);
                if pid.trim() != std::process::id().to_string() {
                    return Err(format!("another real node runs here (pid {})", pid.trim()));
                }
            }
        }
        Ok(())
    }

    /// Starts a node on `cp` (which must come from [`ControlPlane::start_for_real_node`]):
    /// containerd, the CNI config, the kubelet, kube-proxy, kube-router's firewall and
    /// (unless told not to) kube-scheduler, imports [`PAUSE_IMAGE`] and [`BUSYBOX_IMAGE`],
    /// and waits until the node is Ready, untainted, and Services and NetworkPolicy are
    /// programmed. Call it from the thread that started `cp`, and drop it before `cp`.
    pub fn start(cp: &ControlPlane, opts: RealNodeOptions) -> anyhow::Result<Self> {
        if let Err(why) = Self::can_run() {
            bail!("this machine cannot run a real node: {why}");
        }
        let node_ip = cp
            .node_ip
            .context("the control plane was not started with start_for_real_node")?;
        let cidr = parse_cidr(&opts.pod_cidr)?;
        // A dead run's containers, chains and mounts (the control plane's lock says no live
        // node owns them).
        host_cleanup(&opts.pod_cidr);
        let dir = cp.dir.join("node");
        fs::create_dir_all(&dir)?;
        let mut node = Self {
            name: opts.name.clone(),
            containerd_sock: dir.join("containerd.sock"),
            dir: dir.clone(),
            pod_cidr: opts.pod_cidr.clone(),
            node_ip,
            admin_kubeconfig: cp.kubeconfig.clone(),
            kubectl: cp.bin.join("kubectl"),
            bin: cp.bin.clone(),
            children: Mutex::new(Vec::new()),
            sysctls: Vec::new(),
            torn_down: AtomicBool::new(false),
        };
        let started = Instant::now();
        node.set_sysctls()?;
        node.make_cgroups()?;
        node.write_cni(cidr)?;
        node.start_containerd()?;
        let t_containerd = started.elapsed();
        let pause = busybox_image(&dir, "pause", "1", &["/bin/sleep", "2147483647"], &[])?;
        node.import_image(&pause, Some("localhost/pause"))?;
        let busybox = busybox_image(&dir, "busybox", "1", &["/bin/sh"], &[])?;
        node.import_image(&busybox, Some("localhost/busybox"))?;
        fs::remove_file(pause)?;
        fs::remove_file(busybox)?;
        let t_images = started.elapsed();
        node.start_kubelet(cp, &opts)?;
        node.wait_node_ready()?;
        let t_ready = started.elapsed();
        node.start_kube_proxy(cp)?;
        if opts.scheduler {
            let kc = cp.user_kubeconfig("kube-scheduler", "system:kube-scheduler", &[])?;
            node.spawn(
                "kube-scheduler",
                Command::new(cp.bin.join("kube-scheduler")).args([
                    format!("--kubeconfig={}", kc.display()),
                    "--leader-elect=false".into(),
                    "--secure-port=0".into(),
                ]),
            )?;
        }
        node.wait_untainted()?;
        node.wait_for(
            "kube-proxy programs the kubernetes Service",
            "kube-proxy",
            |_| {
                run_bounded(
                    Command::new("iptables").args(["-t", "nat", "-S", "KUBE-SERVICES"]),
                    Duration::from_secs(10),
                )
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("10.0.0.1/32"))
            },
        )?;
        // kube-router's firewall saves the whole filter table and restores it whole: started
        // beside kube-proxy, its restore can drop a chain kube-proxy made in between, and
        // kube-proxy's first sync then fails on a jump to it ("Chain 'KUBE-PROXY-FIREWALL'
        // does not exist", seen on a CI machine). Started after that sync, every snapshot it
        // takes already holds kube-proxy's chains and jumps.
        node.start_kube_router(cp)?;
        node.wait_for("kube-router's firewall chains", "kube-router", |_| {
            run_bounded(
                Command::new("iptables").args(["-S", "KUBE-ROUTER-FORWARD"]),
                Duration::from_secs(10),
            )
            .is_ok_and(|o| o.status.success())
        })?;
        eprintln!(
            "real node {}: containerd {:.1}s, images {:.1}s, Ready {:.1}s, all up {:.1}s",
            node.name,
            t_containerd.as_secs_f64(),
            t_images.as_secs_f64(),
            t_ready.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(node)
    }

    /// Imports an OCI image archive into containerd's `k8s.io` namespace, where the kubelet
    /// finds it; `base_name` (e.g. `localhost/app`) names images whose archive gives only a
    /// tag (as umoci's do).
    pub fn import_image(&self, archive: &Path, base_name: Option<&str>) -> anyhow::Result<()> {
        let mut cmd = self.ctr();
        cmd.args(["images", "import"]);
        if let Some(b) = base_name {
            cmd.args(["--base-name", b]);
        }
        run_ok(cmd.arg(archive))?;
        Ok(())
    }

    /// `ctr` against this node's containerd, in the kubelet's `k8s.io` namespace (e.g.
    /// `images ls`, `containers ls`, `tasks ls`).
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.containerd_sock)
            .args(["-n", "k8s.io"]);
        c
    }

    /// The last lines of a component's log (`containerd`, `kubelet`, `kube-proxy`,
    /// `kube-router`, `kube-scheduler`).
    pub fn log_tail(&self, name: &str) -> String {
        let s = fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn kubectl(&self) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.env("KUBECONFIG", &self.admin_kubeconfig);
        c
    }

    fn spawn(&mut self, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = spawn_tied(
            cmd.stdout(log.try_clone()?)
                .stderr(log)
                .stdin(Stdio::null()),
        )
        .with_context(|| format!("starting {name}"))?;
        self.children
            .lock()
            .expect("children")
            .push((name.to_string(), child));
        Ok(())
    }

    fn check_alive(&self) -> anyhow::Result<()> {
        let dead = self
            .children
            .lock()
            .expect("children")
            .iter_mut()
            .find_map(|(n, c)| c.try_wait().ok().flatten().map(|s| (n.clone(), s)));
        if let Some((name, status)) = dead {
            bail!("{name} exited ({status}):\n{}", self.log_tail(&name));
        }
        Ok(())
    }

    /// Polls `ok` for up to 60 s; the error carries the tail of `log`.
    fn wait_for(
        &mut self,
        what: &str,
        log: &str,
        mut ok: impl FnMut(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            self.check_alive()?;
            if ok(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after 60s waiting for {what}:\n{}\n\n{}",
                    self.log_tail(log),
                    iptables_chains()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn set_sysctls(&mut self) -> anyhow::Result<()> {
        restore_sysctls();
        for (key, want) in SYSCTLS {
            let path = format!("/proc/sys/{key}");
            let Ok(old) = fs::read_to_string(&path) else {
                continue;
            };
            self.sysctls.push((path.clone(), old.trim().to_string()));
            if let Some(v) = want {
                fs::write(&path, v).with_context(|| format!("setting {key}={v}"))?;
            }
        }
        let snapshot: String = self
            .sysctls
            .iter()
            .map(|(p, v)| format!("{p} {v}\n"))
            .collect();
        fs::write(SYSCTL_SNAPSHOT, snapshot)?;
        Ok(())
    }

    fn make_cgroups(&self) -> anyhow::Result<()> {
        for h in cgroup_hierarchies() {
            let d = h.join(CGROUP_ROOT);
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            // A new cpuset starts with no CPUs or memory nodes; give it the parent's.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(v) = fs::read_to_string(h.join(f)) {
                    fs::write(d.join(f), v.trim())?;
                }
            }
        }
        Ok(())
    }

    fn write_cni(&self, cidr: (Ipv4Addr, u32)) -> anyhow::Result<()> {
        let net_d = self.dir.join("net.d");
        fs::create_dir_all(&net_d)?;
        let gateway = Ipv4Addr::from(u32::from(cidr.0) + 1);
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": true,
                    // Pods only talk to each other and the API server (a local address).
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": self.pod_cidr, "gateway": gateway.to_string()}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        // Allocations live (and die) with the node's directory.
                        "dataDir": self.dir.join("cni-ipam").display().to_string(),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": true}},
            ],
        });
        fs::write(
            net_d.join("10-bottle.conflist"),
            serde_json::to_string_pretty(&conf)?,
        )?;
        Ok(())
    }

    fn start_containerd(&mut self) -> anyhow::Result<()> {
        let d = self.dir.display().to_string();
        let config = format!(
            r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_hugetlb_controller = true
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        # runc's state (else /run/containerd/runc) goes with the node's directory.
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/net.d"
    max_conf_num = 1
"#
        );
        let path = self.dir.join("containerd.toml");
        fs::write(&path, config)?;
        self.spawn(
            "containerd",
            Command::new("containerd").arg("--config").arg(&path),
        )?;
        self.wait_for("containerd's socket", "containerd", |n| {
            Command::new("ctr")
                .arg("-a")
                .arg(&n.containerd_sock)
                .arg("version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    fn start_kubelet(&mut self, cp: &ControlPlane, opts: &RealNodeOptions) -> anyhow::Result<()> {
        let d = &self.dir;
        let user = format!("system:node:{}", self.name);
        let kubeconfig = cp.user_kubeconfig("kubelet", &user, &["system:nodes"])?;
        let (cert, key) = cp.issue_cert(&user, &["system:nodes"], &[self.node_ip], true)?;
        fs::write(d.join("kubelet.crt"), cert)?;
        fs::write(d.join("kubelet.key"), key)?;
        let resolv = match &opts.resolv_conf {
            Some(p) => p.clone(),
            None => {
                let p = d.join("resolv.conf");
                fs::write(&p, "# no cluster DNS on the test node\noptions ndots:1\n")?;
                p
            }
        };
        fs::create_dir_all(d.join("podlogs"))?;
        let port = free_port();
        let config = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {ip}
port: {port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupRoot: /{CGROUP_ROOT}
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
containerRuntimeEndpoint: unix://{sock}
failSwapOn: false
# The kubelet rereads ConfigMap and Secret volumes once per sync: this bounds how long an
# edit takes to reach a Pod's files (the default, 1m, dominates the latency).
syncFrequency: 5s
resolvConf: {resolv}
podLogsDir: {d}/podlogs
tlsCertFile: {d}/kubelet.crt
tlsPrivateKeyFile: {d}/kubelet.key
# A test VM's disk and memory are whatever they are: never evict, never collect images
# (they cannot be pulled again: there is no registry).
evictionHard: {{memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
"#,
            ip = self.node_ip,
            ca = cp.dir.join("pki/ca.crt").display(),
            sock = self.containerd_sock.display(),
            resolv = resolv.display(),
            d = d.display(),
        );
        let path = d.join("kubelet.yaml");
        fs::write(&path, config)?;
        let kubelet = self.bin.join("kubelet");
        self.spawn(
            "kubelet",
            Command::new(kubelet).args([
                format!("--config={}", path.display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", d.join("kubelet").display()),
                format!("--hostname-override={}", self.name),
                format!("--node-ip={}", self.node_ip),
                "--v=2".into(),
            ]),
        )
    }

    fn node_json(&self) -> Option<serde_json::Value> {
        let out = run_bounded(
            self.kubectl()
                .args(["get", "node", &self.name, "-o", "json"]),
            Duration::from_secs(10),
        )
        .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    fn wait_node_ready(&mut self) -> anyhow::Result<()> {
        self.wait_for("the node to be Ready", "kubelet", |node| {
            let Some(n) = node.node_json() else {
                return false;
            };
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
    }

    /// Waits until the node lifecycle controller has lifted the not-ready taint, so the
    /// scheduler places Pods.
    fn wait_untainted(&mut self) -> anyhow::Result<()> {
        self.wait_for("the not-ready taint to be lifted", "kubelet", |node| {
            node.node_json().is_some_and(|n| {
                !n["spec"]["taints"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|t| t["key"] == "node.kubernetes.io/not-ready")
            })
        })
    }

    fn start_kube_proxy(&mut self, cp: &ControlPlane) -> anyhow::Result<()> {
        // system:kube-proxy is bound to system:node-proxier by the default policy.
        let kc = cp.user_kubeconfig("kube-proxy", "system:kube-proxy", &[])?;
        let config = format!(
            r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {kc}
hostnameOverride: {name}
mode: iptables
clusterCIDR: {cidr}
bindAddress: {ip}
healthzBindAddress: 127.0.0.1:{hp}
metricsBindAddress: 127.0.0.1:{mp}
# Leave the host's conntrack table sizes and timeouts alone.
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  # Avoids route_localnet; NodePorts on 127.0.0.1 are not needed.
  localhostNodePorts: false
  syncPeriod: 5s
"#,
            kc = kc.display(),
            name = self.name,
            cidr = self.pod_cidr,
            ip = self.node_ip,
            hp = free_port(),
            mp = free_port(),
        );
        let path = self.dir.join("kube-proxy.yaml");
        fs::write(&path, config)?;
        let bin = self.bin.join("kube-proxy");
        self.spawn(
            "kube-proxy",
            Command::new(bin).args([format!("--config={}", path.display()), "--v=2".into()]),
        )
    }

    fn start_kube_router(&mut self, cp: &ControlPlane) -> anyhow::Result<()> {
        // What its firewall controller watches (its informers start for all of these).
        let role = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "bottle:kube-router"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes", "services", "endpoints"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
            ],
        });
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "bottle:kube-router"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "bottle:kube-router"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bottle:kube-router"}],
        });
        cp.apply_json(&role)?;
        cp.apply_json(&binding)?;
        let kc = cp.user_kubeconfig("kube-router", "bottle:kube-router", &[])?;
        let bin = self.bin.join("kube-router");
        self.spawn(
            "kube-router",
            Command::new(bin).args([
                format!("--kubeconfig={}", kc.display()),
                format!("--hostname-override={}", self.name),
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--health-port=0".into(),
                "--metrics-port=0".into(),
                "--v=2".into(),
            ]),
        )
    }

    /// Deletes every Pod bound to the node and waits (bounded) until the kubelet has torn
    /// them down, so their sandboxes' networks are released through CNI.
    fn drain(&self) {
        let sel = format!("spec.nodeName={}", self.name);
        let _ = run_bounded(
            self.kubectl().args([
                "delete",
                "pods",
                "-A",
                "--field-selector",
                &sel,
                "--grace-period=1",
                "--wait=false",
            ]),
            Duration::from_secs(15),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let left = run_bounded(
                self.kubectl()
                    .args(["get", "pods", "-A", "--field-selector", &sel, "-o", "name"]),
                Duration::from_secs(10),
            );
            if left
                .is_ok_and(|o| o.status.success() && o.stdout.iter().all(u8::is_ascii_whitespace))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn stop(&self, name: &str) {
        let child = {
            let mut children = self.children.lock().expect("children");
            children
                .iter()
                .position(|(n, _)| n == name)
                .map(|i| children.remove(i).1)
        };
        if let Some(mut child) = child {
            // SIGTERM first: the kubelet and containerd shut down cleanly on it.
            // SAFETY: kill on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.teardown();
    }
}

impl RealNode {
    /// Stops the node and cleans the host (what `Drop` does; once).
    fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::SeqCst) {
            return;
        }
        self.drain();
        self.stop("kube-scheduler");
        self.stop("kube-router");
        // Its own cleanup removes its chains and ipsets.
        let _ = run_bounded(
            Command::new(self.bin.join("kube-router")).arg("--cleanup-config"),
            Duration::from_secs(30),
        );
        self.stop("kube-proxy");
        let _ = run_bounded(
            Command::new(self.bin.join("kube-proxy")).arg("--cleanup"),
            Duration::from_secs(30),
        );
        self.stop("kubelet");
        host_cleanup(&self.pod_cidr);
        self.stop("containerd");
        for (_, c) in self.children.lock().expect("children").iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Shims of containers created after the sweep above (none expected).
        kill_shims();
        restore_sysctls();
        unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The shared control plane and node of [`shared`].
type Shared = Result<(ControlPlane, RealNode), String>;
static SHARED: OnceLock<Shared> = OnceLock::new();

/// The real-node control plane and node of this test binary, started on first use (with
/// `opts`; later calls get the same pair) on a thread that lives as long as the process, and
/// torn down when the process exits normally (`atexit`; a killed run's leftovers are cleaned
/// by the next start). `Err` says why there is none: [`RealNode::can_run`]'s reason or the
/// start's error, so a caller can fall back to kwok and say why.
pub fn shared(opts: RealNodeOptions) -> Result<&'static (ControlPlane, RealNode), String> {
    SHARED
        .get_or_init(|| {
            RealNode::can_run()?;
            let (tx, rx) = std::sync::mpsc::channel();
            // The processes die with the thread that spawned them, so it lives forever.
            std::thread::spawn(move || {
                let started = ControlPlane::start_for_real_node().and_then(|cp| {
                    let node = RealNode::start(&cp, opts)?;
                    Ok((cp, node))
                });
                let _ = tx.send(started.map_err(|e| format!("{e:#}")));
                loop {
                    std::thread::park();
                }
            });
            let started = rx.recv().map_err(|e| e.to_string())??;
            // SAFETY: registers a plain function; it runs once, at normal exit.
            unsafe { libc::atexit(teardown_shared) };
            Ok(started)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Tears down [`SHARED`] at exit: statics are never dropped.
extern "C" fn teardown_shared() {
    if let Some(Ok((cp, node))) = SHARED.get() {
        node.teardown();
        // The control plane's processes die with the process; its interface and directory
        // would not.
        let _ = Command::new("ip")
            .args(["link", "del", REAL_NODE_IFACE])
            .output();
        unmount_under(&cp.dir);
        let _ = fs::remove_dir_all(&cp.dir);
    }
}

/// Restores the sysctls [`SYSCTL_SNAPSHOT`] recorded, if any, and removes it.
fn restore_sysctls() {
    let Ok(snapshot) = fs::read_to_string(SYSCTL_SNAPSHOT) else {
        return;
    };
    for (path, v) in snapshot.lines().filter_map(|l| l.split_once(' ')) {
        if path.starts_with("/proc/sys/") {
            let _ = fs::write(path, v);
        }
    }
    let _ = fs::remove_file(SYSCTL_SNAPSHOT);
}

/// The containerd shims of a real node (they outlive containerd by design, so they are
/// found by their command line: `-address <…>/node/containerd.sock`).
fn shim_pids() -> Vec<i32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd);
            (cmd.contains("containerd-shim") && cmd.contains("/node/containerd.sock"))
                .then_some(pid)
        })
        .collect()
}

fn kill_shims() {
    for pid in shim_pids() {
        // SAFETY: kill by pid; at worst the process is already gone.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Kills every process in the node's cgroups and removes them, deepest first.
fn cleanup_cgroups() {
    for h in cgroup_hierarchies() {
        let root = h.join(CGROUP_ROOT);
        if !root.exists() {
            continue;
        }
        let mut dirs = Vec::new();
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            if let Ok(es) = fs::read_dir(&d) {
                stack.extend(es.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
            }
            dirs.push(d);
        }
        // Deepest first: a cgroup cannot be removed while it has children.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in &dirs {
            for _ in 0..50 {
                let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<i32> = procs
                    .lines()
                    .filter_map(|l| l.trim().parse().ok())
                    .collect();
                if pids.is_empty() {
                    break;
                }
                // A frozen cgroup would hold the signal: thaw it first.
                let _ = fs::write(d.join("freezer.state"), "THAWED");
                for pid in pids {
                    // SAFETY: kill by pid of a process in the node's cgroup.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = fs::remove_dir(d);
        }
    }
}

/// The network namespaces containerd made for the node's sandboxes: `cni-*` ones holding an
/// address of the Pod range (another containerd here may have `cni-*` ones of its own).
fn pod_netns(pod_cidr: &str) -> Vec<String> {
    let Ok(cidr) = parse_cidr(pod_cidr) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/var/run/netns") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with("cni-"))
        .filter(|n| {
            let Ok(out) = Command::new("ip")
                .args(["-n", n, "-4", "-o", "addr", "show"])
                .output()
            else {
                return false;
            };
            let addrs: Vec<Ipv4Addr> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let i = w.iter().position(|x| *x == "inet")?;
                    w.get(i + 1)?.split('/').next()?.parse().ok()
                })
                .collect();
            addrs.iter().any(|a| in_cidr(*a, cidr))
        })
        .collect()
}

/// Iptables chains (`(command, table, chain)`) with one of [`CHAIN_PREFIXES`].
fn our_chains() -> Vec<(&'static str, &'static str, String)> {
    let mut v = Vec::new();
    for cmd in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle", "raw"] {
            let Ok(out) = Command::new(cmd).args(["-t", table, "-S"]).output() else {
                continue;
            };
            for l in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(chain) = l.strip_prefix("-N ")
                    && CHAIN_PREFIXES.iter().any(|p| chain.starts_with(p))
                {
                    v.push((cmd, table, chain.to_string()));
                }
            }
        }
    }
    v
}

/// Removes every rule that jumps to one of our chains, then the chains.
fn cleanup_chains() {
    for cmd in ["iptables", "ip6tables"] {
        for table in ["filter", "nat", "mangle", "raw"] {
            let Ok(out) = Command::new(cmd).args(["-t", table, "-S"]).output() else {
                continue;
            };
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let ours = |c: &str| CHAIN_PREFIXES.iter().any(|p| c.starts_with(p));
            for l in text.lines() {
                let Some(rule) = l.strip_prefix("-A ") else {
                    continue;
                };
                let chain = rule.split(' ').next().unwrap_or_default();
                let jumps_ours = rule
                    .split(' ')
                    .collect::<Vec<_>>()
                    .windows(2)
                    .any(|w| (w[0] == "-j" || w[0] == "-g") && ours(w[1]));
                if !ours(chain) && jumps_ours {
                    // `-S` quotes like a shell (comments with spaces): let sh split it.
                    let _ = Command::new("sh")
                        .args(["-c", &format!("{cmd} -w -t {table} -D {rule}")])
                        .output();
                }
            }
            let chains: Vec<&str> = text
                .lines()
                .filter_map(|l| l.strip_prefix("-N "))
                .filter(|c| ours(c))
                .collect();
            // Flush all first: our chains jump to each other.
            for c in &chains {
                let _ = Command::new(cmd)
                    .args(["-w", "-t", table, "-F", c])
                    .output();
            }
            for c in &chains {
                let _ = Command::new(cmd)
                    .args(["-w", "-t", table, "-X", c])
                    .output();
            }
        }
    }
}

/// ipsets with one of [`CHAIN_PREFIXES`] (kube-router's, possibly IPv6-prefixed).
fn our_ipsets() -> Vec<String> {
    let Ok(out) = Command::new("ipset").args(["list", "-n"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|n| {
            let n = n.strip_prefix("inet6:").unwrap_or(n);
            CHAIN_PREFIXES.iter().any(|p| n.starts_with(p))
        })
        .map(str::to_string)
        .collect()
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Veths still enslaved to [`BRIDGE`].
fn bridge_ports() -> Vec<String> {
    fs::read_dir(Path::new("/sys/class/net").join(BRIDGE).join("brif"))
        .map(|es| {
            es.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes what a real node leaves on the host besides its directory and sysctls: Pod
/// processes and cgroups, shims, sandbox network namespaces, the bridge and its veths,
/// iptables chains and ipsets. Idempotent; run at start (a dead run's leftovers) and on drop.
fn host_cleanup(pod_cidr: &str) {
    cleanup_cgroups();
    kill_shims();
    for ns in pod_netns(pod_cidr) {
        let _ = Command::new("ip").args(["netns", "delete", &ns]).output();
    }
    for port in bridge_ports() {
        let _ = Command::new("ip").args(["link", "del", &port]).output();
    }
    if link_exists(BRIDGE) {
        let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
    }
    cleanup_chains();
    for set in our_ipsets() {
        let _ = Command::new("ipset").args(["destroy", &set]).output();
    }
    for f in cni_results() {
        let _ = fs::remove_file(f);
    }
    for f in stale_sockets(Path::new(SHIM_SOCKETS)) {
        let _ = fs::remove_file(f);
    }
    let kubelet_sock = Path::new("/var/lib/kubelet/device-plugins/kubelet.sock");
    if stale_sockets(kubelet_sock.parent().expect("has a parent"))
        .contains(&kubelet_sock.to_path_buf())
    {
        let _ = fs::remove_file(kubelet_sock);
    }
    for d in KUBELET_FIXED_DIRS {
        // Only when empty: something else may use them.
        let _ = fs::remove_dir(d);
    }
}

/// libcni's cached results of the node's network (and the loopback ones of the same
/// sandboxes).
fn cni_results() -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(CNI_RESULTS) else {
        return Vec::new();
    };
    let names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let prefix = format!("{CNI_NETWORK}-");
    let ids: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix(&prefix)?.strip_suffix("-eth0"))
        .collect();
    names
        .iter()
        .filter(|n| {
            n.starts_with(&prefix)
                || ids
                    .iter()
                    .any(|id| n.as_str() == format!("cni-loopback-{id}-lo"))
        })
        .map(|n| Path::new(CNI_RESULTS).join(n))
        .collect()
}

/// Sockets in `dir` nothing listens on (a killed shim's or kubelet's).
fn stale_sockets(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let listening: std::collections::HashSet<String> = fs::read_to_string("/proc/net/unix")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(7).map(str::to_string))
        .collect();
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_socket()))
        .map(|e| e.path())
        .filter(|p| !listening.contains(&p.display().to_string()))
        .collect()
}

/// What a real node (and its control plane) left on this host: iptables chains, ipsets,
/// interfaces, network namespaces, cgroups, shims and mounts of a stopped node. Empty when
/// everything was cleaned up.
pub fn host_leftovers() -> Vec<String> {
    let mut v = Vec::new();
    for (cmd, table, chain) in our_chains() {
        v.push(format!("{cmd} -t {table} chain {chain}"));
    }
    for s in our_ipsets() {
        v.push(format!("ipset {s}"));
    }
    for l in [REAL_NODE_IFACE, BRIDGE] {
        if link_exists(l) {
            v.push(format!("interface {l}"));
        }
    }
    for ns in pod_netns(POD_CIDR) {
        v.push(format!("netns {ns}"));
    }
    for h in cgroup_hierarchies() {
        if h.join(CGROUP_ROOT).exists() {
            v.push(format!("cgroup {}", h.join(CGROUP_ROOT).display()));
        }
    }
    for pid in shim_pids() {
        v.push(format!("containerd shim pid {pid}"));
    }
    for f in cni_results() {
        v.push(format!("CNI result {}", f.display()));
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for m in mounts.lines().filter_map(|l| l.split(' ').nth(4)) {
        if m.contains("/bottle-cp-") && m.contains("/node/") {
            v.push(format!("mount {m}"));
        }
    }
    v
}
