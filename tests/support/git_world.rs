//! A git world for git-gate tests and benchmarks: a real sshd upstream with a pinned host
//! key, a bare upstream repository, a gate process, and agents using the operator-rendered
//! gitconfig.

#![allow(dead_code)] // the tests and the benchmark use different parts

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bottle_operator::contract::api::{BottleSpec, GitRemote, SecretKeyRef};
use bottle_operator::contract::config::git_gate::{
    GitGateConfig, GitRemote as GateRemote, ScanRule,
};
use bottle_operator::contract::model::Policy;

use super::control_plane::{self, free_port, spawn_tied};

pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub struct Killed(pub Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    _sshd: Killed,
    pub ssh_port: u16,
    pub known_hosts: String,
    pub client_key: PathBuf,
    pub upstream: PathBuf,
    pub gitleaks: String,
}

impl World {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for k in ["host_key", "client_key"] {
            ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(d.join(k))
                    .output()
                    .unwrap(),
                "ssh-keygen",
            );
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let ssh_port = free_port();
        let cfg = format!(
            "Port {ssh_port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel INFO\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), cfg).unwrap();
        let sshd = spawn_tied(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-f"])
                .arg(d.join("sshd_config"))
                .arg("-E")
                .arg(d.join("sshd.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .expect("sshd (openssh-server) runs");
        wait_port(ssh_port);
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let known_hosts = format!(
            "[localhost]:{ssh_port} {} {}\n",
            parts.next().unwrap(),
            parts.next().unwrap()
        );

        // The upstream repository with one commit on main.
        let upstream = d.join("upstream/repo.git");
        ok(
            Command::new("git")
                .args(["init", "-q", "--bare", "-b", "main"])
                .arg(&upstream)
                .output()
                .unwrap(),
            "init upstream",
        );
        let seed = d.join("seed");
        ok(
            Command::new("git")
                .args(["init", "-q", "-b", "main"])
                .arg(&seed)
                .output()
                .unwrap(),
            "init seed",
        );
        std::fs::write(seed.join("README.md"), "hello\n").unwrap();
        let g = |args: &[&str]| {
            ok(
                git_cmd(&seed, None).args(args).output().unwrap(),
                "seed git",
            )
        };
        g(&["add", "."]);
        g(&["commit", "-q", "-m", "initial"]);
        g(&["push", "-q", upstream.to_str().unwrap(), "main"]);

        let bin = std::env::var("BOTTLE_TOOLS_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| control_plane::tools_bin().unwrap());
        let gitleaks = bin.join("gitleaks").display().to_string();
        World {
            _sshd: Killed(sshd),
            ssh_port,
            known_hosts,
            client_key: d.join("client_key"),
            upstream,
            gitleaks,
            dir,
        }
    }

    /// How many SSH logins the upstream has accepted so far.
    pub fn ssh_logins(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("sshd.log"))
            .unwrap_or_default()
            .matches("Accepted publickey")
            .count()
    }

    pub fn url(&self) -> String {
        format!(
            "ssh://root@localhost:{}{}",
            self.ssh_port,
            self.upstream.display()
        )
    }

    /// Runs git in the upstream repository itself, as its owner would.
    pub fn upstream_git(&self, args: &[&str]) -> Output {
        git_cmd(&self.upstream, None).args(args).output().unwrap()
    }

    pub fn upstream_rev(&self, rev: &str) -> Option<String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.upstream)
            .args(["rev-parse", "--verify", "-q", rev])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Starts a gate; returns it and the agent gitconfig (rendered by the operator's code).
    pub fn gate(&self, known_hosts: &str, rules: Vec<ScanRule>) -> (Killed, u16, PathBuf, PathBuf) {
        self.gate_with(known_hosts, rules, vec![])
    }

    /// A gate with scan rules and an allowlist.
    pub fn gate_with(
        &self,
        known_hosts: &str,
        rules: Vec<ScanRule>,
        allowlist: Vec<String>,
    ) -> (Killed, u16, PathBuf, PathBuf) {
        self.gate_config(known_hosts, rules, allowlist, |_| {})
    }

    /// A gate whose config `edit` changes (brokering rules, scanAllowPaths).
    pub fn gate_config(
        &self,
        known_hosts: &str,
        rules: Vec<ScanRule>,
        allowlist: Vec<String>,
        edit: impl FnOnce(&mut GitGateConfig),
    ) -> (Killed, u16, PathBuf, PathBuf) {
        let port = free_port();
        let state = self.dir.path().join(format!("state-{port}"));
        let cfg = GitGateConfig {
            listen: format!("127.0.0.1:{port}"),
            admin_listen: format!("127.0.0.1:{}", free_port()),
            state_dir: state.display().to_string(),
            remotes: vec![GateRemote {
                name: "origin".into(),
                upstream: self.url(),
                ssh_key_file: self.client_key.display().to_string(),
                known_hosts: known_hosts.into(),
                allow_force_push: false,
                allow_delete_default_branch: false,
                allowed_refs: vec![],
                forbidden_paths: vec![],
                max_push_bytes: None,
            }],
            rules,
            allowlist,
            allow_paths: vec![],
        };
        let mut cfg = cfg;
        edit(&mut cfg);
        let cfg_path = self.dir.path().join(format!("git-gate-{port}.yaml"));
        std::fs::write(&cfg_path, serde_norway::to_string(&cfg).unwrap()).unwrap();
        let log = self.dir.path().join(format!("git-gate-{port}.log"));
        let child = spawn_tied(
            Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
                .args(["git-gate", "--config"])
                .arg(&cfg_path)
                .args(["--gitleaks", &self.gitleaks])
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap()),
        )
        .unwrap();
        wait_port(port);

        let mut spec = BottleSpec::default();
        spec.git.remotes = vec![GitRemote {
            name: "origin".into(),
            url: self.url(),
            ssh_key_secret_ref: SecretKeyRef {
                name: "k".into(),
                key: "k".into(),
            },
            known_hosts: known_hosts.into(),
            ..Default::default()
        }];
        let policy = Policy::from_spec(&spec).unwrap();
        let gitconfig = bottle_operator::operator::render::config_map::agent_gitconfig(&policy)
            .replace("127.0.0.1:9420", &format!("127.0.0.1:{port}"));
        let gc_path = self.dir.path().join(format!("agent-{port}.gitconfig"));
        std::fs::write(&gc_path, gitconfig).unwrap();
        (Killed(child), port, gc_path, log)
    }
}

/// git as the agent: only the rendered system gitconfig, no credentials, no SSH key.
pub fn git_cmd(dir: &Path, system_config: Option<&Path>) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env(
            "GIT_CONFIG_SYSTEM",
            system_config
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/dev/null")),
        )
        .env("GIT_SSH_COMMAND", "false") // the agent has no way to SSH anywhere
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=agent",
            "-c",
            "user.email=agent@example.com",
            "-c",
            "init.defaultBranch=main",
        ]);
    c
}

pub struct Agent {
    pub dir: PathBuf,
    pub gitconfig: PathBuf,
}

impl Agent {
    pub fn clone(w: &World, gitconfig: &Path, name: &str) -> Self {
        let dir = w.dir.path().join(name);
        ok(
            git_cmd(w.dir.path(), Some(gitconfig))
                .args(["clone", "-q", &w.url()])
                .arg(&dir)
                .output()
                .unwrap(),
            "clone through the gate",
        );
        Agent {
            dir,
            gitconfig: gitconfig.to_path_buf(),
        }
    }
    pub fn git(&self, args: &[&str]) -> Output {
        git_cmd(&self.dir, Some(&self.gitconfig))
            .args(args)
            .output()
            .unwrap()
    }
    pub fn commit(&self, file: &str, body: &str, msg: &str) -> String {
        std::fs::write(self.dir.join(file), body).unwrap();
        ok(self.git(&["add", "-A"]), "add");
        ok(self.git(&["commit", "-q", "-m", msg]), "commit");
        ok(self.git(&["rev-parse", "HEAD"]), "rev-parse")
    }
    /// Commits `body` (any bytes) at `file`, creating its directories.
    pub fn commit_bytes(&self, file: &str, body: &[u8], msg: &str) -> String {
        let p = self.dir.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
        ok(self.git(&["add", "-A"]), "add");
        ok(self.git(&["commit", "-q", "-m", msg]), "commit");
        ok(self.git(&["rev-parse", "HEAD"]), "rev-parse")
    }
    pub fn push(&self, args: &[&str]) -> (bool, String) {
        let mut a = vec!["push", "origin"];
        a.extend_from_slice(args);
        let out = self.git(&a);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }
    pub fn reset_to_upstream(&self) {
        ok(self.git(&["fetch", "-q", "origin"]), "fetch");
        ok(self.git(&["reset", "-q", "--hard", "origin/main"]), "reset");
    }
}

/// The secret parts of the constants below: a refusal must never show them.
pub const SECRET_PARTS: &[&str] = &[
    "AKIAQ6F4YJ2ZRD7UXN3L",
    "ghp_8fK2mQ9v",
    "x8Kq2LmZ9vT4",
    "9gT4kL2mQ8vZ",
];
pub const AWS_ID: &str = "AKIAQ6F4YJ2ZRD7UXN3L";
pub const GITHUB_TOKEN: &str = "ghp_8fK2mQ9vL1xR7bN5cW3yH6jP0sD4tA8eK2uZ";
pub const AWS: &str = "aws_access_key_id = AKIAQ6F4YJ2ZRD7UXN3L\naws_secret_access_key = 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\n";
pub const GITHUB: &str = "token: ghp_8fK2mQ9vL1xR7bN5cW3yH6jP0sD4tA8eK2uZ\n";
pub const PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDxEnC4GqPmyOZa3cd8QJ2RVHqMWjWJvjP1pX3gyGKLzAAAAJiG0ym5htMp\nuQAAAAtzc2gtZWQyNTUxOQAAACDxEnC4GqPmyOZa3cd8QJ2RVHqMWjWJvjP1pX3gyGKLzA\n-----END OPENSSH PRIVATE KEY-----\n";
pub const GENERIC: &str = "const apiKey = \"x8Kq2LmZ9vT4bN7cR1pW5sY3dF6gH0jQ\";\n";
