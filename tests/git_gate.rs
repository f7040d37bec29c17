//! git-gate for real: a real sshd on loopback as the upstream (pinned host key, key auth),
//! real `git` as the agent using the operator-rendered gitconfig, and real gitleaks scanning
//! pushes in the gate's pre-receive hook.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/git_world.rs"]
mod git_world;

use std::process::Command;

use bottle_operator::config::git_gate::ScanRule;
use bottle_operator::proxy::reload::hash_bytes;
use bottle_operator::sidecar::config_status::Report;
use git_world::*;

#[test]
fn pushes_are_scanned_and_only_clean_ones_reach_upstream() {
    let w = World::new();
    let (_gate, port, gitconfig, _log) = w.gate(&w.known_hosts, vec![]);
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
    // It reports the config it runs on its admin listener, as `kubectl bottle status` asks.
    let cfg = w.dir.path().join(format!("git-gate-{port}.yaml"));
    let out = Command::new(env!("CARGO_BIN_EXE_bottle-sidecar"))
        .args(["config-status", "git-gate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let report: Report = serde_json::from_slice(&out.stdout).unwrap();
    let h = hash_bytes(&[&std::fs::read(&cfg).unwrap()]);
    assert_eq!(report.mounted.as_deref(), Some(h.as_str()));
    assert_eq!(report.running.map(|r| r.config_hash), Some(h));
    assert!(
        report.refused.is_none() && report.problems.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
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

    // Upstream moves its default branch after the mirror was made: the protection follows.
    let (pushed, out) = a.push(&["main:refs/heads/trunk"]);
    assert!(pushed, "{out}");
    ok(
        w.upstream_git(&["symbolic-ref", "HEAD", "refs/heads/trunk"]),
        "upstream default branch",
    );
    let (pushed, out) = a.push(&["--delete", "trunk"]);
    assert!(
        !pushed && out.contains("refs/heads/trunk: deleting the default branch"),
        "{out}"
    );
    let (pushed, out) = a.push(&["--delete", "main"]);
    assert!(pushed, "main is an ordinary branch now: {out}");
    ok(
        w.upstream_git(&["update-ref", "refs/heads/main", on_top.as_str()]),
        "restore main",
    );
    ok(
        w.upstream_git(&["symbolic-ref", "HEAD", "refs/heads/main"]),
        "restore default branch",
    );
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

    // Only branches and tags.
    let (pushed, out) = b1.push(&["HEAD:refs/notes/sneaky"]);
    assert!(
        !pushed && out.contains("only branches (refs/heads/) and tags"),
        "{out}"
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
    let (_gate, _port, gitconfig, log) = w.gate(&wrong, vec![]);
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

#[test]
fn bottle_dlp_patterns_scan_pushes_and_large_pushes_go_through() {
    let w = World::new();
    let rule = ScanRule {
        id: "example-corp-token".into(),
        regex: "excorp_[A-Za-z0-9]{32}".into(),
    };
    // The allowlist accepts one known test token; everything else still counts.
    let allow = vec!["ghp_8fK2mQ9vL1xR7bN5cW3yH6jP0sD4tA8eK2uZ".to_string()];
    let (_gate, _port, gitconfig, _log) = w.gate_with(&w.known_hosts, vec![rule], allow);
    let a = Agent::clone(&w, &gitconfig, "agent");
    let bad = a.commit(
        "config.txt",
        "token = excorp_Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z\n",
        "custom secret",
    );
    let (pushed, out) = a.push(&["main"]);
    assert!(
        !pushed && out.contains("rule example-corp-token") && out.contains(&bad[..12]),
        "{out}"
    );
    a.reset_to_upstream();
    let fixture = a.commit("fixture.txt", GITHUB, "allowlisted test token");
    let (pushed, out) = a.push(&["main"]);
    assert!(pushed, "allowlisted finding must pass: {out}");
    assert_eq!(w.upstream_rev("main").as_deref(), Some(fixture.as_str()));
    let (pushed, out) = {
        a.commit("aws.env", AWS, "not allowlisted");
        a.push(&["main"])
    };
    assert!(!pushed && out.contains("aws-access-token"), "{out}");
    a.reset_to_upstream();

    // 50 MB of ordinary text in one push: scanned, forwarded, landed.
    let body: String = (0..1_400_000)
        .map(|i| format!("{i:08} the quick brown fox jumps over\n"))
        .collect();
    assert!(body.len() >= 50 << 20);
    let big = a.commit("big.txt", &body, "a large file");
    let (pushed, out) = a.push(&["main"]);
    assert!(pushed, "{out}");
    assert_eq!(w.upstream_rev("main").as_deref(), Some(big.as_str()));
}
