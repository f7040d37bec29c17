//! A network-namespace world for tests that need the Pod's real network: one namespace plays
//! the Pod, another the internet, joined by a veth (documentation addresses only, no route
//! anywhere else). Processes run inside as the UIDs the Pod gives them (`setpriv`), names
//! resolve through `/etc/netns/<pod>/hosts`. Everything is torn down on drop, also when the
//! test fails. Needs root; it panics (never skips) without it.
//!
//! The including test file must also declare `mod control_plane` (support/control_plane.rs).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use bottle_operator::contract::config::layout::{AGENT_UID, EGRESS_PORT, EGRESS_UID, PIPELOCK_UID};
use serde_json::Value;

/// The Pod's address on the veth.
pub const POD_ADDR: &str = "192.0.2.1";
/// The internet's address on the veth (the web host).
pub const NET_ADDR: &str = "192.0.2.2";

/// Runs a command and panics with its stderr when it fails.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Puts `src` at `dst` without a second copy of a large binary when both are on one
/// filesystem (a hard link keeps the source's 0755 mode, and `dst`'s directory is open to
/// every UID even when the checkout is not).
pub fn link_or_copy(src: &Path, dst: &Path) {
    // Resolve symlinks first: a hard link to a symlink would still point into a directory the
    // unprivileged UIDs may not enter.
    let src = &std::fs::canonicalize(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    if std::fs::hard_link(src, dst).is_err() {
        std::fs::copy(src, dst).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
    }
}

/// Two namespaces joined by a veth pair, and the processes started in them.
pub struct World {
    /// The Pod's namespace.
    pub pod: String,
    /// The internet's namespace.
    pub net: String,
    /// Processes to kill on drop.
    pub children: Vec<Child>,
    /// Scratch directory, readable (0755) by every UID.
    pub dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.pod, &self.net] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
    }
}

/// The command prefix that runs something in `ns` as `uid`.
pub fn as_uid(ns: &str, uid: u32) -> Command {
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        ns,
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
    ]);
    c
}

impl World {
    /// Builds the namespaces. `scripts` are copied from `tests/<from>/` (relative paths allowed) into the world's
    /// directory together with `bottle-sidecar` (the unprivileged UIDs cannot be assumed to
    /// read the checkout); `hosts` are the Pod's `/etc/hosts` lines besides localhost;
    /// `internet_addrs` are extra addresses (`a.b.c.d/32`) the internet answers on.
    pub fn new(
        from: &str,
        scripts: &[&str],
        hosts: &[(&str, &str)],
        internet_addrs: &[&str],
    ) -> Self {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "these tests need root (network namespaces, iptables); CI runs them as root"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let (pod, net) = (format!("bpod{id}"), format!("bnet{id}"));
        let w = World {
            pod: pod.clone(),
            net: net.clone(),
            children: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let d = w.dir.path();
        run(&["chmod", "0755", d.to_str().unwrap()]);
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests")
            .join(from);
        for f in scripts {
            let name = Path::new(f).file_name().unwrap();
            std::fs::copy(src.join(f), d.join(name)).unwrap_or_else(|e| panic!("{f}: {e}"));
        }
        link_or_copy(
            Path::new(env!("CARGO_BIN_EXE_bottle-sidecar")),
            &d.join("bottle-sidecar"),
        );
        let (vp, vn) = (format!("bvp{id}"), format!("bvn{id}"));
        run(&["ip", "netns", "add", &pod]);
        run(&["ip", "netns", "add", &net]);
        run(&[
            "ip", "link", "add", &vp, "type", "veth", "peer", "name", &vn,
        ]);
        run(&["ip", "link", "set", &vp, "netns", &pod]);
        run(&["ip", "link", "set", &vn, "netns", &net]);
        let in_ns = |ns: &str, args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", ns];
            v.extend_from_slice(args);
            run(&v);
        };
        let inp = |args: &[&str]| in_ns(&pod, args);
        let inn = |args: &[&str]| in_ns(&net, args);
        inp(&["ip", "link", "set", "lo", "up"]);
        inp(&["ip", "addr", "add", "192.0.2.1/24", "dev", &vp]);
        inp(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::1/64",
            "dev",
            &vp,
            "nodad",
        ]);
        inp(&["ip", "link", "set", &vp, "up"]);
        inp(&["ip", "route", "add", "default", "via", NET_ADDR]);
        inp(&["ip", "-6", "route", "add", "default", "via", "2001:db8::2"]);
        // Unprivileged ICMP sockets, so "no ICMP" is the rules' doing, not a sysctl's.
        inp(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ping_group_range=0 2147483647",
        ]);
        inn(&["ip", "link", "set", "lo", "up"]);
        inn(&["ip", "addr", "add", "192.0.2.2/24", "dev", &vn]);
        inn(&[
            "ip",
            "-6",
            "addr",
            "add",
            "2001:db8::2/64",
            "dev",
            &vn,
            "nodad",
        ]);
        inn(&["ip", "link", "set", &vn, "up"]);
        for a in internet_addrs {
            inn(&["ip", "addr", "add", a, "dev", "lo"]);
        }
        // Names the Pod resolves (`ip netns exec` mounts this over /etc/hosts).
        let mut etc = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (addr, name) in hosts {
            etc.push_str(&format!("{addr} {name}\n"));
        }
        std::fs::create_dir_all(Path::new("/etc/netns").join(&pod)).unwrap();
        std::fs::write(Path::new("/etc/netns").join(&pod).join("hosts"), etc).unwrap();
        w
    }

    /// A file in the world's directory (a copied script, `bottle-sidecar`, a written config).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `body` into the world's directory, owned by `uid` with `mode`.
    pub fn write(&self, name: &str, body: &str, uid: u32, mode: &str) -> PathBuf {
        let p = self.file(name);
        std::fs::write(&p, body).unwrap();
        run(&["chown", &format!("{uid}:{uid}"), p.to_str().unwrap()]);
        run(&["chmod", mode, p.to_str().unwrap()]);
        p
    }

    /// Starts `cmd` inside `ns` as `uid` and waits for its "ready" line.
    pub fn spawn_ready(&mut self, ns: &str, uid: u32, cmd: &[&str]) {
        let mut c = as_uid(ns, uid);
        let mut child = crate::control_plane::spawn_tied(
            c.args(cmd).stdout(Stdio::piped()).stderr(Stdio::inherit()),
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "{cmd:?} did not start");
        self.children.push(child);
    }

    /// Starts `cmd` in the Pod as `uid` with `env`, its output appended to `<log>` in the
    /// world's directory. Returns the child's pid.
    pub fn spawn_logged(
        &mut self,
        uid: u32,
        env: &[(&str, String)],
        cmd: &[&str],
        log: &str,
    ) -> u32 {
        let out = std::fs::File::create(self.file(log)).unwrap();
        let mut c = as_uid(&self.pod, uid);
        c.arg("env");
        for (k, v) in env {
            c.arg(format!("{k}={v}"));
        }
        c.args(cmd).stdout(out.try_clone().unwrap()).stderr(out);
        let child = crate::control_plane::spawn_tied(&mut c).unwrap();
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Installs the real `netinit` rules in the Pod: the agent UID reaches only egress.
    pub fn netinit(&self, sidecars: &[i64], agent_ports: &[u16], extra: &[&str]) {
        let bin = env!("CARGO_BIN_EXE_bottle-sidecar");
        let mut args: Vec<String> = ["ip", "netns", "exec", &self.pod, bin, "netinit"]
            .iter()
            .map(ToString::to_string)
            .collect();
        args.extend(["--agent-uid".into(), AGENT_UID.to_string()]);
        for s in sidecars {
            args.extend(["--sidecar-uid".into(), s.to_string()]);
        }
        for p in agent_ports {
            args.extend(["--agent-port".into(), p.to_string()]);
        }
        args.extend(extra.iter().map(ToString::to_string));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&refs);
    }

    /// The containment tests' netinit: egress and pipelock are the sidecars, the agent reaches
    /// egress only.
    pub fn netinit_default(&self, extra: &[&str]) {
        self.netinit(&[EGRESS_UID, PIPELOCK_UID], &[EGRESS_PORT], extra);
    }

    /// Runs the probes of `probe.py` (copied in by `new`) as `uid` in the Pod namespace.
    pub fn probe(&self, uid: u32, probes: &Value) -> BTreeMap<String, (String, f64)> {
        let out = as_uid(&self.pod, uid)
            .arg("/usr/bin/python3")
            .arg(self.file("probe.py"))
            .arg(probes.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until `uid` can open a TCP connection to `port` on the Pod's loopback.
    pub fn wait_port(&self, uid: u32, port: u16, what: &str) {
        let t = std::time::Instant::now();
        loop {
            let up = self.probe(
                uid,
                &serde_json::json!([["up", "tcp", "127.0.0.1", port, ""]]),
            );
            if up["up"].0 != "refused" {
                return;
            }
            assert!(
                t.elapsed().as_secs() < 30,
                "{what} did not listen on {port}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// curl as `uid` in the Pod: (status, body and stderr). The status is the CONNECT
    /// answer when the tunnel was refused.
    pub fn curl_as(&self, uid: u32, args: &[&str]) -> (u16, String) {
        let out = as_uid(&self.pod, uid)
            .args([
                "curl",
                "-sS",
                "-m",
                "10",
                "-w",
                "\n%{http_code} %{http_connect}",
            ])
            .args(args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, codes) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
        let mut it = codes
            .split(' ')
            .map(|c| c.trim().parse::<u16>().unwrap_or(0));
        let (code, connect) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        let code = if code == 0 && connect >= 300 {
            connect
        } else {
            code
        };
        (
            code,
            format!("{body}{}", String::from_utf8_lossy(&out.stderr)),
        )
    }
}
