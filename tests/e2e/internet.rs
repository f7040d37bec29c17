//! The internet a real bottle reaches in the end-to-end suite: one network namespace joined to
//! the node by a veth, on documentation addresses only, holding an HTTPS origin (its own CA,
//! one certificate for every `*.origin.test` name, a record of every request) and an sshd
//! serving a bare git repository. The node routes 198.51.100.0/24 to it; it routes everything
//! back to the node. Not 203.0.113.0/24: this machine reaches its package registries at
//! 203.0.113.80, and an image build during the suite lost them. Torn down on drop, also
//! when the test fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::control_plane::spawn_tied;

/// The node's end of the veth.
pub const NODE_ADDR: &str = "198.51.100.1";
/// Every service of the internet answers here.
pub const NET_ADDR: &str = "198.51.100.10";

/// Runs a command, panicking with its output when it fails.
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh CA and a leaf for `names` signed by it: (CA PEM, leaf PEM, leaf key PEM).
pub fn pki(names: &[&str]) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "e2e internet CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf =
        rcgen::CertificateParams::new(names.iter().map(ToString::to_string).collect::<Vec<_>>())
            .unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Removes the namespaces and veths of runs whose process is gone (killed runs never drop).
fn remove_stale() {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("be2e")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("be2eh{pid}")])
                .status();
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// The running internet.
pub struct Internet {
    /// Its network namespace.
    pub ns: String,
    veth: String,
    /// Working directory (certificates, request record, git repository).
    pub dir: tempfile::TempDir,
    /// The CA that signed the origin's certificate (what the images' trust stores add).
    pub ca_pem: String,
    /// The known_hosts line of the sshd (`git.origin.test ssh-ed25519 …`).
    pub known_hosts: String,
    /// The deploy key the Bottle's Secret carries (private, OpenSSH format).
    pub deploy_key: String,
    /// The bare repository the sshd serves.
    pub repo: PathBuf,
    children: Vec<Child>,
}

impl Internet {
    /// Builds the namespace and starts the origin and the sshd.
    pub fn start(tests_dir: &Path) -> Self {
        remove_stale();
        let id = std::process::id();
        let (ns, veth, peer) = (
            format!("be2e{id}"),
            format!("be2eh{id}"),
            format!("be2en{id}"),
        );
        run(&["ip", "netns", "add", &ns]);
        let mut me = Internet {
            ns: ns.clone(),
            veth: veth.clone(),
            dir: tempfile::tempdir().unwrap(),
            ca_pem: String::new(),
            known_hosts: String::new(),
            deploy_key: String::new(),
            repo: PathBuf::new(),
            children: Vec::new(),
        };
        run(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer,
        ]);
        run(&["ip", "link", "set", &peer, "netns", &ns]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_ADDR}/24"),
            "dev",
            &veth,
        ]);
        run(&["ip", "link", "set", &veth, "up"]);
        let inn = |args: &[&str]| {
            let mut v = vec!["ip", "netns", "exec", &ns];
            v.extend_from_slice(args);
            run(&v);
        };
        inn(&["ip", "link", "set", "lo", "up"]);
        inn(&["ip", "addr", "add", &format!("{NET_ADDR}/24"), "dev", &peer]);
        inn(&["ip", "link", "set", &peer, "up"]);
        inn(&["ip", "route", "add", "default", "via", NODE_ADDR]);

        let d = me.dir.path().to_path_buf();
        run(&["chmod", "0755", d.to_str().unwrap()]);
        let (ca, cert, key) = pki(&["*.origin.test", "origin.test"]);
        std::fs::write(d.join("origin.crt"), cert).unwrap();
        std::fs::write(d.join("origin.key"), key).unwrap();
        std::fs::create_dir(d.join("pages")).unwrap();
        me.ca_pem = ca;
        let origin = tests_dir.join("chain/origin.py");
        let path = |f: &str| d.join(f).display().to_string();
        me.spawn_ready(&[
            "/usr/bin/python3",
            origin.to_str().unwrap(),
            &path("origin.crt"),
            &path("origin.key"),
            &path("requests.jsonl"),
            &path("pages"),
        ]);
        me.start_sshd();
        me
    }

    /// `cmd` inside the namespace.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(args);
        c
    }

    /// Starts `args` in the namespace and waits for its first line, `ready`.
    fn spawn_ready(&mut self, args: &[&str]) {
        let mut child = spawn_tied(
            self.cmd(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .expect("spawn in the internet namespace");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "{args:?} did not start");
        self.children.push(child);
    }

    fn start_sshd(&mut self) {
        let d = self.dir.path().to_path_buf();
        for k in ["host_key", "deploy_key"] {
            run(&[
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-f",
                d.join(k).to_str().unwrap(),
            ]);
        }
        std::fs::copy(d.join("deploy_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let cfg = format!(
            "Port 22\nListenAddress {NET_ADDR}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), cfg).unwrap();
        let sshd = spawn_tied(
            self.cmd(&[
                "/usr/sbin/sshd",
                "-D",
                "-e",
                "-f",
                d.join("sshd_config").to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
        )
        .expect("sshd (openssh-server) runs");
        self.children.push(sshd);
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        self.known_hosts = format!(
            "git.origin.test {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        );
        self.deploy_key = std::fs::read_to_string(d.join("deploy_key")).unwrap();

        // The upstream repository with one commit on main.
        self.repo = d.join("repo.git");
        run(&[
            "git",
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            self.repo.to_str().unwrap(),
        ]);
        let seed = d.join("seed");
        run(&["git", "init", "-q", "-b", "main", seed.to_str().unwrap()]);
        std::fs::write(seed.join("README.md"), "hello\n").unwrap();
        let s = seed.to_str().unwrap();
        let g = |args: &[&str]| {
            let mut v = vec![
                "git",
                "-C",
                s,
                "-c",
                "user.name=seed",
                "-c",
                "user.email=seed@example.com",
            ];
            v.extend_from_slice(args);
            run(&v);
        };
        g(&["add", "."]);
        g(&["commit", "-q", "-m", "initial"]);
        g(&["push", "-q", self.repo.to_str().unwrap(), "main"]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self
            .cmd(&["bash", "-c", &format!("exec 3<>/dev/tcp/{NET_ADDR}/22")])
            .status()
            .unwrap()
            .success()
        {
            assert!(Instant::now() < deadline, "sshd did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The commit `rev` names upstream, if any.
    pub fn upstream_rev(&self, rev: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.repo)
            .args(["rev-parse", "--verify", "-q", rev])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Every request the origin has received, oldest first.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .status();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}
