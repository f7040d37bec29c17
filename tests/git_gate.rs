//! git-gate for real: a real sshd on loopback as the upstream (pinned host key, key auth),
//! real `git` as the agent using the operator-rendered gitconfig, and real gitleaks scanning
//! pushes in the gate's pre-receive hook.

#[path = "support/control_plane.rs"]
mod control_plane;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use bottle_operator::api::{BottleSpec, GitRemote, SecretKeyRef};
use bottle_operator::config::git_gate::{GitGateConfig, GitRemote as GateRemote};
use bottle_operator::model::Policy;
use control_plane::{free_port, spawn_tied};

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct World {
    dir: tempfile::TempDir,
    _sshd: Killed,
    ssh_port: u16,
    known_hosts: String,
    client_key: PathBuf,
    upstream: PathBuf,
    gitleaks: String,
}

impl World {
    fn new() -> Self {
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
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), cfg).unwrap();
        let sshd = spawn_tied(
            Command::new("/usr/sbin/sshd")
                .args(["-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
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

    fn url(&self) -> String {
        format!(
            "ssh://root@localhost:{}{}",
            self.ssh_port,
            self.upstream.display()
        )
    }

    fn upstream_rev(&self, rev: &str) -> Option<String> {
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
    fn gate(&self, known_hosts: &str) -> (Killed, u16, PathBuf, PathBuf) {
        let port = free_port();
        let state = self.dir.path().join(format!("state-{port}"));
        let cfg = GitGateConfig {
            listen: format!("127.0.0.1:{port}"),
            state_dir: state.display().to_string(),
            remotes: vec![GateRemote {
                name: "origin".into(),
                upstream: self.url(),
                ssh_key_file: self.client_key.display().to_string(),
                known_hosts: known_hosts.into(),
                allow_force_push: false,
                allow_delete_default_branch: false,
            }],
        };
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
        let gitconfig = bottle_operator::render::config_map::agent_gitconfig(&policy)
            .replace("127.0.0.1:9420", &format!("127.0.0.1:{port}"));
        let gc_path = self.dir.path().join(format!("agent-{port}.gitconfig"));
        std::fs::write(&gc_path, gitconfig).unwrap();
        (Killed(child), port, gc_path, log)
    }
}

/// git as the agent: only the rendered system gitconfig, no credentials, no SSH key.
fn git_cmd(dir: &Path, system_config: Option<&Path>) -> Command {
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

struct Agent {
    dir: PathBuf,
    gitconfig: PathBuf,
}

impl Agent {
    fn clone(w: &World, gitconfig: &Path, name: &str) -> Self {
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
    fn git(&self, args: &[&str]) -> Output {
        git_cmd(&self.dir, Some(&self.gitconfig))
            .args(args)
            .output()
            .unwrap()
    }
    fn commit(&self, file: &str, body: &str, msg: &str) -> String {
        std::fs::write(self.dir.join(file), body).unwrap();
        ok(self.git(&["add", "-A"]), "add");
        ok(self.git(&["commit", "-q", "-m", msg]), "commit");
        ok(self.git(&["rev-parse", "HEAD"]), "rev-parse")
    }
    fn push(&self, args: &[&str]) -> (bool, String) {
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
    fn reset_to_upstream(&self) {
        ok(self.git(&["fetch", "-q", "origin"]), "fetch");
        ok(self.git(&["reset", "-q", "--hard", "origin/main"]), "reset");
    }
}

const AWS: &str = "aws_access_key_id = AKIAQ6F4YJ2ZRD7UXN3L\naws_secret_access_key = 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\n";
const GITHUB: &str = "token: ghp_8fK2mQ9vL1xR7bN5cW3yH6jP0sD4tA8eK2uZ\n";
const PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDxEnC4GqPmyOZa3cd8QJ2RVHqMWjWJvjP1pX3gyGKLzAAAAJiG0ym5htMp\nuQAAAAtzc2gtZWQyNTUxOQAAACDxEnC4GqPmyOZa3cd8QJ2RVHqMWjWJvjP1pX3gyGKLzA\n-----END OPENSSH PRIVATE KEY-----\n";
const GENERIC: &str = "const apiKey = \"x8Kq2LmZ9vT4bN7cR1pW5sY3dF6gH0jQ\";\n";

#[test]
fn pushes_are_scanned_and_only_clean_ones_reach_upstream() {
    let w = World::new();
    let (_gate, port, gitconfig, _log) = w.gate(&w.known_hosts);
    let a = Agent::clone(&w, &gitconfig, "agent");
    assert_eq!(
        std::fs::read_to_string(a.dir.join("README.md")).unwrap(),
        "hello\n"
    );
    // The agent's remote is the upstream URL; the gate is only in the rendered config.
    assert_eq!(
        ok(a.git(&["remote", "get-url", "--push", "origin"]), "url"),
        format!("http://127.0.0.1:{port}/origin.git")
    );

    // A clean push lands upstream.
    let clean = a.commit("src.txt", "fn main() {}\n", "clean work");
    let (pushed, out) = a.push(&["main"]);
    assert!(pushed, "{out}");
    assert!(out.contains("scanned clean"), "{out}");
    assert_eq!(w.upstream_rev("main").as_deref(), Some(clean.as_str()));

    // Each kind of planted secret is refused with rule, commit, file and line, redacted,
    // and upstream does not move.
    for (file, body, rule) in [
        ("aws.env", AWS, "aws-access-token"),
        ("gh.txt", GITHUB, "github-pat"),
        ("id_key", PRIVATE_KEY, "private-key"),
        ("api.js", GENERIC, "generic-api-key"),
    ] {
        let bad = a.commit(file, body, "oops");
        let (pushed, out) = a.push(&["main"]);
        assert!(!pushed, "{rule}: push should fail: {out}");
        assert!(
            out.contains(&format!("rule {rule}")) && out.contains(&bad[..12]) && out.contains(file),
            "{rule}: {out}"
        );
        assert!(out.contains("REDACTED"), "{out}");
        for secret_part in ["AKIAQ6F4YJ2ZRD7UXN3L", "ghp_8fK2mQ9v", "x8Kq2LmZ9vT4"] {
            assert!(!out.contains(secret_part), "secret echoed back: {out}");
        }
        assert_eq!(
            w.upstream_rev("main").as_deref(),
            Some(clean.as_str()),
            "{rule}: upstream moved"
        );
        a.reset_to_upstream();
    }

    // A secret in an older commit of the pushed range is caught even if a later commit
    // removes it.
    let older = a.commit("aws.env", AWS, "add creds");
    std::fs::remove_file(a.dir.join("aws.env")).unwrap();
    ok(a.git(&["commit", "-q", "-am", "remove creds"]), "commit");
    let (pushed, out) = a.push(&["main"]);
    assert!(!pushed && out.contains(&older[..12]), "{out}");
    a.reset_to_upstream();

    // A secret already upstream (pushed around the gate) is not re-reported.
    let seed = w.dir.path().join("seed");
    ok(
        git_cmd(&seed, None)
            .args(["pull", "-q", w.upstream.to_str().unwrap(), "main"])
            .output()
            .unwrap(),
        "pull",
    );
    std::fs::write(seed.join("legacy.env"), AWS).unwrap();
    ok(
        git_cmd(&seed, None).args(["add", "."]).output().unwrap(),
        "add",
    );
    ok(
        git_cmd(&seed, None)
            .args(["commit", "-q", "-m", "legacy secret"])
            .output()
            .unwrap(),
        "commit",
    );
    ok(
        git_cmd(&seed, None)
            .args(["push", "-q", w.upstream.to_str().unwrap(), "main"])
            .output()
            .unwrap(),
        "push around",
    );
    a.reset_to_upstream();
    let on_top = a.commit("more.txt", "more\n", "on top of legacy");
    let (pushed, out) = a.push(&["main"]);
    assert!(pushed, "{out}");
    assert_eq!(w.upstream_rev("main").as_deref(), Some(on_top.as_str()));

    // New branches and tags are scanned and forwarded.
    ok(a.git(&["checkout", "-q", "-b", "feature"]), "branch");
    let feat = a.commit("feature.txt", "feature\n", "feature");
    ok(a.git(&["tag", "v1"]), "tag");
    let (pushed, out) = a.push(&["feature", "v1"]);
    assert!(pushed, "{out}");
    assert_eq!(
        w.upstream_rev("refs/heads/feature").as_deref(),
        Some(feat.as_str())
    );
    assert_eq!(
        w.upstream_rev("refs/tags/v1").as_deref(),
        Some(feat.as_str())
    );
    // A new branch carrying a secret is refused like any push.
    ok(a.git(&["checkout", "-q", "-b", "leaky"]), "branch");
    a.commit("gh.txt", GITHUB, "leak");
    let (pushed, _) = a.push(&["leaky"]);
    assert!(!pushed);
    assert_eq!(w.upstream_rev("refs/heads/leaky"), None);
    ok(a.git(&["checkout", "-q", "main"]), "checkout");

    // Force push and deleting the default branch are refused by default; deleting another
    // branch is fine.
    ok(a.git(&["reset", "-q", "--hard", "HEAD~1"]), "rewind");
    a.commit("rewrite.txt", "rewritten\n", "rewrite history");
    let (pushed, out) = a.push(&["--force", "main"]);
    assert!(
        !pushed && out.contains("non-fast-forward push refused"),
        "{out}"
    );
    assert_eq!(w.upstream_rev("main").as_deref(), Some(on_top.as_str()));
    let (pushed, out) = a.push(&["--delete", "main"]);
    assert!(
        !pushed && out.contains("deleting the default branch is not allowed"),
        "{out}"
    );
    let (pushed, out) = a.push(&["--delete", "feature"]);
    assert!(pushed, "{out}");
    assert_eq!(w.upstream_rev("refs/heads/feature"), None);
    a.reset_to_upstream();

    // Two agents pushing at once to different branches: both land, serialised by the gate.
    let b1 = Agent::clone(&w, &gitconfig, "agent-b1");
    let b2 = Agent::clone(&w, &gitconfig, "agent-b2");
    ok(b1.git(&["checkout", "-q", "-b", "one"]), "b");
    ok(b2.git(&["checkout", "-q", "-b", "two"]), "b");
    let (c1, c2) = (
        b1.commit("one.txt", "1\n", "one"),
        b2.commit("two.txt", "2\n", "two"),
    );
    let (r1, r2) = std::thread::scope(|s| {
        let h1 = s.spawn(|| b1.push(&["one"]));
        let h2 = s.spawn(|| b2.push(&["two"]));
        (h1.join().unwrap(), h2.join().unwrap())
    });
    assert!(r1.0 && r2.0, "{r1:?} {r2:?}");
    assert_eq!(
        w.upstream_rev("refs/heads/one").as_deref(),
        Some(c1.as_str())
    );
    assert_eq!(
        w.upstream_rev("refs/heads/two").as_deref(),
        Some(c2.as_str())
    );

    // Remotes that are not declared do not exist.
    let out = git_cmd(w.dir.path(), None)
        .args(["ls-remote", &format!("http://127.0.0.1:{port}/other.git")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no remote named \"other\" (declared: origin)"),
        "{err}"
    );
}

#[test]
fn a_wrong_host_key_makes_the_gate_refuse_the_upstream() {
    let w = World::new();
    // A valid key line for the right host name, but not the host's key.
    let other = w.dir.path().join("other_key");
    ok(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&other)
            .output()
            .unwrap(),
        "keygen",
    );
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut p = pubkey.split_whitespace();
    let wrong = format!(
        "[localhost]:{} {} {}\n",
        w.ssh_port,
        p.next().unwrap(),
        p.next().unwrap()
    );
    let (_gate, _port, gitconfig, log) = w.gate(&wrong);
    let out = git_cmd(w.dir.path(), Some(&gitconfig))
        .args(["clone", "-q", &w.url()])
        .arg(w.dir.path().join("nope"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("502"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gate_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        gate_log.contains("Host key verification failed")
            || gate_log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{gate_log}"
    );
}
