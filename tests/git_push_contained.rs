//! `git push` from a contained agent: the Pod and "internet" network namespaces of
//! support/netns.rs, the real netinit rules, real git-gate as its own UID with the config our
//! code renders, real gitleaks, and a real sshd upstream in the internet namespace. git-gate
//! is the one door for git: it pushes upstream over SSH itself (a sidecar UID, let out by
//! netinit; SSH is no HTTP, so pipelock, which guards the HTTP paths, is not on it), while the
//! agent can neither reach the SSH port nor hold the key. Needs root; fails, never skips.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/netns.rs"]
mod netns;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use bottle_operator::contract::api::{BottleSpec, GitRemote, SecretKeyRef};
use bottle_operator::contract::config::layout::{
    AGENT_UID, EGRESS_PORT, EGRESS_UID, GIT_GATE_PORT, GIT_GATE_UID, PIPELOCK_UID,
};
use bottle_operator::contract::model::Policy;
use bottle_operator::operator::render::config_map::{agent_gitconfig, git_gate_config};
use netns::{NET_ADDR, World, as_uid, run};
use serde_json::json;

/// The agent's UID, as the namespace helpers take it.
const AGENT: u32 = AGENT_UID as u32;
/// The upstream's SSH port inside the internet namespace.
const SSH_PORT: u16 = 22;
/// Where the internet keeps the upstream repository.
const UPSTREAM_REPO: &str = "srv/upstream.git";

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Gate {
    world: World,
    upstream: PathBuf,
    agent_home: PathBuf,
    gitconfig: PathBuf,
}

impl Gate {
    fn start() -> Self {
        let mut w = World::new(
            "containment",
            &["probe.py"],
            &[(NET_ADDR, "git.upstream.test")],
            &[],
        );
        let d = w.dir.path().to_path_buf();

        // The internet: an sshd on the upstream's address with a bare repository.
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
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {SSH_PORT}\nListenAddress {NET_ADDR}\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nLogLevel ERROR\n",
                d = d.display()
            ),
        )
        .unwrap();
        let sshd = control_plane::spawn_tied(
            Command::new("ip")
                .args(["netns", "exec", &w.net, "/usr/sbin/sshd", "-D", "-e", "-f"])
                .arg(d.join("sshd_config"))
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(d.join("sshd.log")).unwrap()),
        )
        .expect("sshd (openssh-server) runs");
        w.children.push(sshd);
        let upstream = d.join(UPSTREAM_REPO);
        run(&[
            "git",
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            upstream.to_str().unwrap(),
        ]);
        let seed = d.join("seed");
        run(&["git", "init", "-q", "-b", "main", seed.to_str().unwrap()]);
        std::fs::write(seed.join("README.md"), "hello\n").unwrap();
        let seed_git = |args: &[&str]| {
            ok(
                Command::new("git")
                    .arg("-C")
                    .arg(&seed)
                    .args(["-c", "user.name=seed", "-c", "user.email=seed@example.com"])
                    .args(args)
                    .output()
                    .unwrap(),
                "seed git",
            )
        };
        seed_git(&["add", "."]);
        seed_git(&["commit", "-q", "-m", "initial"]);
        seed_git(&["push", "-q", upstream.to_str().unwrap(), "main"]);
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();

        // The Bottle, rendered by our code: one remote with a pinned host key.
        let mut spec = BottleSpec::default();
        spec.git.remotes = vec![GitRemote {
            name: "origin".into(),
            url: format!(
                "ssh://root@git.upstream.test:{SSH_PORT}/{}",
                upstream.display()
            ),
            ssh_key_secret_ref: SecretKeyRef {
                name: "deploy".into(),
                key: "id_ed25519".into(),
            },
            known_hosts: format!("git.upstream.test {} {}\n", host_key[0], host_key[1]),
            ..Default::default()
        }];
        let policy = Policy::from_spec(&spec).unwrap();
        let mut cfg = git_gate_config(&policy);
        // The only changes: the state directory and the key file live in the world's
        // directory instead of the Pod's volumes.
        let state = d.join("gate-state");
        std::fs::create_dir(&state).unwrap();
        run(&[
            "chown",
            &format!("{GIT_GATE_UID}:{GIT_GATE_UID}"),
            state.to_str().unwrap(),
        ]);
        cfg.state_dir = state.display().to_string();
        let key = std::fs::read_to_string(d.join("deploy_key")).unwrap();
        cfg.remotes[0].ssh_key_file = w
            .write("deploy-key", &key, GIT_GATE_UID as u32, "0400")
            .display()
            .to_string();
        let cfg_file = w.write(
            "git-gate.yaml",
            &serde_norway::to_string(&cfg).unwrap(),
            GIT_GATE_UID as u32,
            "0400",
        );
        let gitleaks = d.join("gitleaks");
        netns::link_or_copy(
            &control_plane::tools_bin()
                .expect("the tool installer must run (tests/tools/install.sh)")
                .join("gitleaks"),
            &gitleaks,
        );
        // The sidecar image has a passwd entry for each sidecar UID (ssh refuses to run for a
        // UID without one); here a private mount namespace gives git-gate the same.
        let passwd = format!(
            "root:x:0:0:root:/root:/bin/sh\ngit-gate:x:{GIT_GATE_UID}:{GIT_GATE_UID}::{}:/usr/sbin/nologin\n",
            state.display()
        );
        let passwd_file = w.write("passwd", &passwd, 0, "0644");

        // The Pod: netinit first (the agent reaches only the gate's port), then the gate.
        w.netinit(
            &[EGRESS_UID, PIPELOCK_UID, GIT_GATE_UID],
            &[EGRESS_PORT, GIT_GATE_PORT],
            &[],
        );
        let log = std::fs::File::create(d.join("git-gate.log")).unwrap();
        let gate = control_plane::spawn_tied(
            Command::new("ip")
                .args(["netns", "exec", &w.pod, "unshare", "--mount", "sh", "-c"])
                .arg(format!(
                    "mount --bind {passwd} /etc/passwd && exec setpriv --reuid={uid} --regid={uid} \
                     --clear-groups env HOME={home} {bin} git-gate --config {cfg} --gitleaks {gl}",
                    passwd = passwd_file.display(),
                    uid = GIT_GATE_UID,
                    home = state.display(),
                    bin = w.file("bottle-sidecar").display(),
                    cfg = cfg_file.display(),
                    gl = gitleaks.display(),
                ))
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap();
        w.children.push(gate);
        w.wait_port(AGENT, GIT_GATE_PORT, "git-gate");

        // The agent: a home of its own and the gitconfig the operator renders.
        let agent_home = d.join("agent-home");
        std::fs::create_dir(&agent_home).unwrap();
        run(&[
            "chown",
            &format!("{AGENT_UID}:{AGENT_UID}"),
            agent_home.to_str().unwrap(),
        ]);
        let gitconfig = w.write("agent.gitconfig", &agent_gitconfig(&policy), 0, "0644");
        Gate {
            world: w,
            upstream,
            agent_home,
            gitconfig,
        }
    }

    /// git as the agent UID in the Pod, with only the rendered system gitconfig.
    fn agent_git(&self, args: &[&str]) -> Output {
        as_uid(&self.world.pod, AGENT)
            .arg("env")
            .arg(format!("HOME={}", self.agent_home.display()))
            .arg(format!("GIT_CONFIG_SYSTEM={}", self.gitconfig.display()))
            .args([
                "GIT_AUTHOR_NAME=agent",
                "GIT_AUTHOR_EMAIL=agent@example.com",
                "GIT_COMMITTER_NAME=agent",
                "GIT_COMMITTER_EMAIL=agent@example.com",
                "GIT_TERMINAL_PROMPT=0",
                "git",
            ])
            .arg("-C")
            .arg(&self.agent_home)
            .args(args)
            .output()
            .unwrap()
    }

    fn upstream_main(&self) -> String {
        ok(
            Command::new("git")
                .arg("-C")
                .arg(&self.upstream)
                .args(["rev-parse", "main"])
                .output()
                .unwrap(),
            "upstream rev-parse",
        )
        .trim()
        .to_string()
    }

    fn gate_log(&self) -> String {
        std::fs::read_to_string(self.world.file("git-gate.log")).unwrap_or_default()
    }
}

#[test]
fn the_agent_pushes_through_git_gate_and_only_through_it() {
    let g = Gate::start();
    let remote = g.world.file(UPSTREAM_REPO);
    let ssh_url = format!(
        "ssh://root@git.upstream.test:{SSH_PORT}/{}",
        remote.display()
    );

    // The agent clones by the remote's own URL; the rendered gitconfig sends it to the gate.
    let out = g.agent_git(&["clone", "-q", &ssh_url, "work"]);
    ok(
        out,
        &format!("clone through the gate (gate log: {})", g.gate_log()),
    );
    let work = |args: &[&str]| {
        let mut v = vec!["-C", "work"];
        v.extend_from_slice(args);
        g.agent_git(&v)
    };

    // A clean push lands upstream (the gate's own SSH, out through netinit as its UID).
    std::fs::write(g.agent_home.join("work/notes.md"), "clean change\n").unwrap();
    run(&[
        "chown",
        "-R",
        &format!("{AGENT_UID}:{AGENT_UID}"),
        g.agent_home.to_str().unwrap(),
    ]);
    ok(work(&["add", "notes.md"]), "add");
    ok(work(&["commit", "-q", "-m", "clean"]), "commit");
    let clean = ok(work(&["rev-parse", "HEAD"]), "rev-parse")
        .trim()
        .to_string();
    let out = work(&["push", "origin", "main"]);
    ok(out, &format!("clean push (gate log: {})", g.gate_log()));
    assert_eq!(g.upstream_main(), clean, "the clean push reached upstream");

    // A push carrying a secret is refused by the gate's scan and never reaches upstream.
    std::fs::write(
        g.agent_home.join("work/config.env"),
        "AWS_ACCESS_KEY_ID=AKIAZ7VRSQ5TJN2XBW4L\nAWS_SECRET_ACCESS_KEY=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\n",
    )
    .unwrap();
    run(&[
        "chown",
        "-R",
        &format!("{AGENT_UID}:{AGENT_UID}"),
        g.agent_home.to_str().unwrap(),
    ]);
    ok(work(&["add", "config.env"]), "add");
    ok(work(&["commit", "-q", "-m", "leak"]), "commit");
    let out = work(&["push", "origin", "main"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "the leaky push must be refused: {said}"
    );
    assert!(
        said.contains("config.env"),
        "the refusal names the file: {said}"
    );
    assert!(
        !said.contains("tXUtYqHkYB3f8ZJmN0pQr5sVw2xK9cLd7eGh1aBz"),
        "{said}"
    );
    assert_eq!(g.upstream_main(), clean, "upstream did not move");

    // The agent has no way around the gate: the SSH port is closed to its UID, open to the
    // gate's (the positive control, so "refused" is the rules' doing).
    let probe = json!([["ssh", "tcp", NET_ADDR, SSH_PORT, ""]]);
    let agent = g.world.probe(AGENT, &probe);
    assert_eq!(
        agent["ssh"].0, "refused",
        "agent reached the upstream directly"
    );
    let gate = g.world.probe(GIT_GATE_UID as u32, &probe);
    assert!(
        gate["ssh"].0.starts_with("ok:SSH-"),
        "the gate's UID reaches sshd: {:?}",
        gate["ssh"]
    );
    // Nor can it read the deploy key the gate uses.
    let out = as_uid(&g.world.pod, AGENT)
        .args(["cat", g.world.file("deploy-key").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success(), "the agent read the deploy key");
}
