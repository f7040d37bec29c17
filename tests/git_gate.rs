//! git-gate for real: a real sshd on loopback as the upstream (pinned host key, key auth),
//! real `git` as the agent using the operator-rendered gitconfig, and real gitleaks scanning
//! pushes in the gate's pre-receive hook. Issue 18: one test per channel a push can carry a
//! secret through (each with its positive control) and the per-remote brokering rules.

#[path = "support/control_plane.rs"]
mod control_plane;
#[path = "support/git_world.rs"]
mod git_world;

use std::process::Command;

use bottle_operator::contract::config::git_gate::ScanRule;
use bottle_operator::pod::config_status::Report;
use bottle_operator::pod::core::reload::hash_bytes;
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

// ---- issue 18: every channel a push can carry a secret through, each with a positive
// control (the same shape without the secret lands), and the brokering rules.

/// Asserts the push was refused with every `needle` in the message and no secret shown, and
/// that upstream `branch` did not move from `at` (`None`: does not exist).
fn assert_refused(
    w: &World,
    res: (bool, String),
    needles: &[&str],
    branch: &str,
    at: Option<&str>,
) {
    let (pushed, out) = res;
    assert!(!pushed, "push should be refused: {out}");
    for n in needles {
        assert!(out.contains(n), "refusal should name {n:?}: {out}");
    }
    for s in SECRET_PARTS {
        assert!(!out.contains(s), "secret echoed back: {out}");
    }
    assert_eq!(
        w.upstream_rev(branch).as_deref(),
        at,
        "upstream moved: {out}"
    );
}

/// Asserts the push landed: upstream `branch` is now `rev`.
fn assert_lands(w: &World, res: (bool, String), branch: &str, rev: &str) {
    let (pushed, out) = res;
    assert!(pushed, "push should land: {out}");
    assert!(out.contains("scanned clean"), "{out}");
    assert_eq!(w.upstream_rev(branch).as_deref(), Some(rev), "{out}");
}

fn setup() -> (World, Killed, Agent, String) {
    let w = World::new();
    let (gate, _port, gitconfig, _log) = w.gate(&w.known_hosts, vec![]);
    let a = Agent::clone(&w, &gitconfig, "agent");
    let base = w.upstream_rev("main").unwrap();
    (w, gate, a, base)
}

/// Pseudo-random bytes (xorshift), so compressed or binary test files do not shrink.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

/// A merge of `side` into main, with `extra` written into the merge commit itself.
fn evil_merge(a: &Agent, side: &str, extra: &str) -> String {
    ok(a.git(&["checkout", "-q", "-b", side]), "branch");
    a.commit(&format!("{side}.txt"), "side\n", "side work");
    ok(a.git(&["checkout", "-q", "main"]), "checkout");
    a.commit(&format!("{side}-main.txt"), "main\n", "main work");
    ok(
        a.git(&["merge", "-q", "--no-ff", "--no-commit", side]),
        "merge",
    );
    std::fs::write(a.dir.join("evil.txt"), extra).unwrap();
    ok(a.git(&["add", "-A"]), "add");
    ok(a.git(&["commit", "-q", "-m", "merge"]), "commit");
    ok(a.git(&["rev-parse", "HEAD"]), "rev-parse")
}

#[test]
fn merges_evil_merges_conflict_resolutions_and_later_renames_are_scanned() {
    let (w, _gate, a, base) = setup();
    // An evil merge: the merge commit itself adds a file (git log -p shows nothing for it).
    let m = evil_merge(&a, "side1", AWS);
    assert_refused(
        &w,
        a.push(&["main"]),
        &[
            &format!("merge resolution in {}: file evil.txt", &m[..12]),
            "aws-access-token",
        ],
        "main",
        Some(&base),
    );
    // Renamed after the merge brought it in: still the same new blob, still refused.
    ok(a.git(&["mv", "evil.txt", "renamed.txt"]), "mv");
    ok(a.git(&["commit", "-q", "-m", "rename"]), "commit");
    assert_refused(
        &w,
        a.push(&["main"]),
        &[&format!("merge resolution in {}", &m[..12])],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();

    // A conflict resolved with a secret.
    ok(a.git(&["checkout", "-q", "-b", "conflict"]), "branch");
    a.commit("conf.txt", "theirs\n", "theirs");
    ok(a.git(&["checkout", "-q", "main"]), "checkout");
    a.commit("conf.txt", "ours\n", "ours");
    assert!(
        !a.git(&["merge", "-q", "conflict"]).status.success(),
        "must conflict"
    );
    std::fs::write(a.dir.join("conf.txt"), GITHUB).unwrap();
    ok(a.git(&["add", "-A"]), "add");
    ok(a.git(&["commit", "-q", "--no-edit"]), "commit");
    let resolved = ok(a.git(&["rev-parse", "HEAD"]), "rev-parse");
    assert_refused(
        &w,
        a.push(&["main"]),
        &[
            &format!("merge resolution in {}: file conf.txt", &resolved[..12]),
            "github-pat",
        ],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();

    // Positive control: the same evil-merge shape without a secret lands.
    let clean = evil_merge(&a, "side2", "nothing to see\n");
    assert_lands(&w, a.push(&["main"]), "main", &clean);
}

#[test]
fn refs_must_end_at_a_commit_and_leave_nothing_upstream() {
    let (w, _gate, a, _base) = setup();
    std::fs::write(a.dir.join("loose.env"), AWS).unwrap();
    let blob = ok(a.git(&["hash-object", "-w", "loose.env"]), "hash-object");
    assert_refused(
        &w,
        a.push(&[&format!("{blob}:refs/tags/raw-blob")]),
        &["refs/tags/raw-blob: points at a blob"],
        "refs/tags/raw-blob",
        None,
    );
    ok(a.git(&["add", "loose.env"]), "add");
    let tree = ok(a.git(&["write-tree"]), "write-tree");
    assert_refused(
        &w,
        a.push(&[&format!("{tree}:refs/tags/raw-tree")]),
        &["refs/tags/raw-tree: points at a tree"],
        "refs/tags/raw-tree",
        None,
    );
    // Nothing of the refused pushes was left upstream.
    for oid in [&blob, &tree] {
        assert!(
            !w.upstream_git(&["cat-file", "-e", oid]).status.success(),
            "{oid} reached upstream"
        );
    }
    // Positive control: the upstream does record what a push carries, and a tag of a
    // commit lands.
    ok(a.git(&["reset", "-q"]), "unstage");
    std::fs::remove_file(a.dir.join("loose.env")).unwrap();
    let c = a.commit("ok.txt", "fine\n", "fine");
    ok(a.git(&["tag", "t1"]), "tag");
    assert_lands(&w, a.push(&["t1"]), "refs/tags/t1", &c);
}

#[test]
fn commit_text_and_tag_text_are_scanned() {
    let (w, _gate, a, base) = setup();
    ok(
        a.git(&[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            &format!("deploy with {AWS_ID}"),
        ]),
        "commit",
    );
    let c = ok(a.git(&["rev-parse", "HEAD"]), "rev-parse");
    assert_refused(
        &w,
        a.push(&["main"]),
        &[&format!("commit message of commit {}", &c[..12])],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();

    let name = format!("user.name={GITHUB_TOKEN}");
    ok(
        a.git(&[
            "-c",
            &name,
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "ordinary",
        ]),
        "commit",
    );
    let c = ok(a.git(&["rev-parse", "HEAD"]), "rev-parse");
    assert_refused(
        &w,
        a.push(&["main"]),
        &[&format!("the author line of commit {}", &c[..12])],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();

    a.commit("rel.txt", "release\n", "release");
    ok(
        a.git(&[
            "tag",
            "-a",
            "v1",
            "-m",
            &format!("release notes {GITHUB_TOKEN}"),
        ]),
        "tag",
    );
    assert_refused(
        &w,
        a.push(&["v1"]),
        &["tag message of tag v1", "github-pat"],
        "refs/tags/v1",
        None,
    );

    // Positive control: an annotated tag and commit with ordinary text land.
    ok(a.git(&["tag", "-a", "v2", "-m", "release notes"]), "tag");
    let tag = ok(a.git(&["rev-parse", "v2"]), "rev-parse");
    assert_lands(&w, a.push(&["v2"]), "refs/tags/v2", &tag);
}

#[test]
fn file_names_are_scanned_and_never_shown() {
    let (w, _gate, a, base) = setup();
    a.commit_bytes(&format!("keys/{GITHUB_TOKEN}.txt"), b"nothing\n", "a name");
    assert_refused(
        &w,
        a.push(&["main"]),
        &["a file name in directory keys/", "github-pat"],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();
    let c = a.commit_bytes("keys/public.txt", b"nothing\n", "a name");
    assert_lands(&w, a.push(&["main"]), "main", &c);
}

fn tar_of(dir: &std::path::Path, out: &std::path::Path, files: &[&str], gzip: bool) {
    let mut c = Command::new("tar");
    c.arg(if gzip { "czf" } else { "cf" })
        .arg(out)
        .arg("-C")
        .arg(dir);
    c.args(files);
    ok(c.output().unwrap(), "tar");
}

/// A tar nested `levels` deep (`l1.tar` holds `creds.env`, `l2.tar` holds `l1.tar`, ...).
fn nested_tar(dir: &std::path::Path, levels: u32, body: &str) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("creds.env"), body).unwrap();
    let mut inner = "creds.env".to_string();
    for l in 1..=levels {
        let name = format!("l{l}.tar");
        tar_of(dir, &dir.join(&name), &[&inner], false);
        inner = name;
    }
    std::fs::read(dir.join(inner)).unwrap()
}

#[test]
fn binary_files_and_archives_are_scanned() {
    let (w, _gate, a, base) = setup();
    let png = |extra: &[u8]| [b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".as_slice(), extra, b"\0\0"].concat();
    let c = a.commit_bytes("logo.png", &png(GITHUB.as_bytes()), "logo");
    assert_refused(
        &w,
        a.push(&["main"]),
        &[
            &format!("binary file logo.png in commit {}", &c[..12]),
            "github-pat",
        ],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();

    // A gzipped tarball under a name that says neither (and is on gitleaks' skip list).
    let t = w.dir.path().join("tarball");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("creds.env"), AWS).unwrap();
    tar_of(&t, &t.join("a.tgz"), &["creds.env"], true);
    let c = a.commit_bytes(
        "assets/data.bin",
        &std::fs::read(t.join("a.tgz")).unwrap(),
        "data",
    );
    assert_refused(
        &w,
        a.push(&["main"]),
        &[&format!(
            "archive assets/data.bin in commit {}, inside at creds.env",
            &c[..12]
        )],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();
    // Archives inside archives are opened (three levels) ...
    a.commit_bytes(
        "deep.tar",
        &nested_tar(&w.dir.path().join("n3"), 3, AWS),
        "nested",
    );
    assert_refused(
        &w,
        a.push(&["main"]),
        &["archive deep.tar", "aws-access-token"],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();
    // ... to a bound: deeper ones cannot be scanned and are refused even when clean.
    a.commit_bytes(
        "deeper.tar",
        &nested_tar(&w.dir.path().join("n6"), 6, "clean\n"),
        "deep",
    );
    assert_refused(
        &w,
        a.push(&["main"]),
        &["archive deeper.tar", "nests archives deeper than 4 levels"],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();
    // A binary file over the scan cap is refused with the cap named.
    let mut big = noise(33 << 20, 7);
    big[0] = 0;
    a.commit_bytes("model.weights", &big, "big binary");
    assert_refused(
        &w,
        a.push(&["main"]),
        &["binary file model.weights", "over the 32 MiB"],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();

    // Positive control: the same shapes without a secret land.
    a.commit_bytes("logo.png", &png(b"just pixels"), "logo");
    std::fs::write(t.join("creds.env"), "nothing here\n").unwrap();
    tar_of(&t, &t.join("b.tgz"), &["creds.env"], true);
    a.commit_bytes(
        "assets/data.bin",
        &std::fs::read(t.join("b.tgz")).unwrap(),
        "data",
    );
    let c = a.commit_bytes(
        "deep.tar",
        &nested_tar(&w.dir.path().join("c3"), 3, "clean\n"),
        "nested",
    );
    assert_lands(&w, a.push(&["main"]), "main", &c);
}

#[test]
fn paths_on_the_gitleaks_skip_list_are_scanned() {
    let (w, _gate, a, base) = setup();
    let paths = [
        "node_modules/pkg/index.js",
        "go.sum",
        "package-lock.json",
        "config/gitleaks.toml",
        "docs/manual.pdf",
        "vendor/modules.txt",
        "img/icon.svg",
        "yarn.lock",
    ];
    for p in paths {
        let c = a.commit_bytes(p, AWS.as_bytes(), "skip-listed path");
        assert_refused(
            &w,
            a.push(&["main"]),
            &[
                &format!("file {p} in commit {}", &c[..12]),
                "aws-access-token",
            ],
            "main",
            Some(&base),
        );
        a.reset_to_upstream();
    }
    // Positive control: the same paths with ordinary content land.
    for p in paths {
        a.commit_bytes(p, b"ordinary content\n", "skip-listed path");
    }
    let c = ok(a.git(&["rev-parse", "HEAD"]), "rev-parse");
    assert_lands(&w, a.push(&["main"]), "main", &c);
}

#[test]
fn pushed_files_do_not_change_how_the_push_is_scanned() {
    let (w, _gate, a, base) = setup();
    let blob = {
        std::fs::write(a.dir.join("aws.env"), AWS).unwrap();
        ok(a.git(&["hash-object", "aws.env"]), "hash-object")
    };
    let ignore = format!(
        "aws.env:aws-access-token:1\nblob-{blob}:aws-access-token:2\nin/blob-{blob}:aws-access-token:2\n"
    );
    let allow_all =
        "[extend]\nuseDefault = true\n[allowlist]\npaths = ['''.*''']\nregexes = ['''.*''']\n";
    let cases: [(&str, &str, &str); 4] = [
        (".gitleaks.toml", allow_all, AWS),
        (".gitleaksignore", &ignore, AWS),
        (".gitattributes", "*.env binary\n*.env -diff\n", AWS),
        (
            "README.md",
            "hello\n",
            "aws_access_key_id = AKIAQ6F4YJ2ZRD7UXN3L # gitleaks:allow\n",
        ),
    ];
    for (control, body, secret) in cases {
        std::fs::write(a.dir.join(control), body).unwrap();
        let c = a.commit("aws.env", secret, "try to change the scan");
        assert_refused(
            &w,
            a.push(&["main"]),
            &[&format!("file aws.env in commit {}", &c[..12])],
            "main",
            Some(&base),
        );
        a.reset_to_upstream();
    }
    // Positive control: the same control files, and an allow comment, without a secret land.
    for (control, body, _) in cases {
        std::fs::write(a.dir.join(control), body).unwrap();
    }
    let c = a.commit(
        "aws.env",
        "region = eu-west-1 # gitleaks:allow\n",
        "settings",
    );
    assert_lands(&w, a.push(&["main"]), "main", &c);
}

#[test]
fn brokering_rules_name_the_rule_and_what_to_do() {
    let w = World::new();
    let (_gate, _port, gitconfig, _log) = w.gate_config(&w.known_hosts, vec![], vec![], |c| {
        let r = &mut c.remotes[0];
        r.allowed_refs = vec!["refs/heads/bottle/b1/*".into()];
        r.forbidden_paths = vec![".github/workflows/**".into()];
        r.max_push_bytes = Some(1 << 20);
    });
    let a = Agent::clone(&w, &gitconfig, "agent");
    let base = w.upstream_rev("main").unwrap();
    let c = a.commit("work.txt", "work\n", "work");
    assert_refused(
        &w,
        a.push(&["main"]),
        &[
            "refs/heads/main: this remote takes only refs matching allowedRefs (refs/heads/bottle/b1/*); push to one of those instead",
        ],
        "main",
        Some(&base),
    );
    // Positive control: the allowed ref takes the same commit.
    assert_lands(
        &w,
        a.push(&["HEAD:refs/heads/bottle/b1/work"]),
        "refs/heads/bottle/b1/work",
        &c,
    );

    let ci = a.commit_bytes(".github/workflows/ci.yml", b"on: push\n", "change CI");
    assert_refused(
        &w,
        a.push(&["HEAD:refs/heads/bottle/b1/ci"]),
        &[&format!(
            "commit {} changes .github/workflows/ci.yml, which forbiddenPaths (.github/workflows/**)",
            &ci[..12]
        )],
        "refs/heads/bottle/b1/ci",
        None,
    );
    ok(a.git(&["reset", "-q", "--hard", &c]), "reset");
    let docs = a.commit_bytes(".github/README.md", b"about CI\n", "docs");
    assert_lands(
        &w,
        a.push(&["HEAD:refs/heads/bottle/b1/docs"]),
        "refs/heads/bottle/b1/docs",
        &docs,
    );

    a.commit_bytes(
        "blob.txt",
        &noise(2 << 20, 3)
            .iter()
            .map(|b| b'a' + b % 26)
            .collect::<Vec<_>>(),
        "2 MiB",
    );
    assert_refused(
        &w,
        a.push(&["HEAD:refs/heads/bottle/b1/big"]),
        &["over maxPushBytes (1048576): split it into smaller pushes"],
        "refs/heads/bottle/b1/big",
        None,
    );
}

fn gz(body: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

fn tgz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, *body).unwrap();
    }
    gz(&t.into_inner().unwrap())
}

fn zip_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write as _;
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, body) in files {
        z.start_file(*name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(body).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn png(extra: &[u8]) -> Vec<u8> {
    [b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".as_slice(), extra, b"\0\0"].concat()
}

#[test]
fn every_file_inside_an_archive_is_scanned_like_a_pushed_file() {
    let (w, _gate, a, base) = setup();
    // Inside an archive, gitleaks alone skips its skip list (node_modules/), binary members
    // and compressed files inside compressed files: the gate opens them itself.
    let cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        (
            "vendor.tgz",
            tgz(&[("node_modules/pkg/.env", AWS.as_bytes())]),
            vec![
                "inside at node_modules/pkg/.env line 2".into(),
                "aws-access-token".into(),
            ],
        ),
        (
            "notes.txt.gz",
            gz(&gz(GITHUB.as_bytes())),
            vec![
                "archive notes.txt.gz".into(),
                "inside at notes.txt!notes.txt (decompressed)".into(),
            ],
        ),
        (
            "site.zip",
            zip_of(&[("assets/logo.png", &png(GITHUB.as_bytes()))]),
            vec![
                "inside at assets/logo.png (binary)".into(),
                "github-pat".into(),
            ],
        ),
        (
            "names.zip",
            zip_of(&[(&format!("keys/{GITHUB_TOKEN}.txt"), b"nothing\n")]),
            vec!["a file name inside archive names.zip".into()],
        ),
        (
            "backup.7z",
            b"7z\xbc\xaf\x27\x1c\0\x04 clean but opaque".to_vec(),
            vec!["could not be opened".into(), "7-Zip".into()],
        ),
    ];
    for (path, body, needles) in &cases {
        let c = a.commit_bytes(path, body, "archive");
        let mut needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let commit = format!("in commit {}", &c[..12]);
        needles.push(&commit);
        assert_refused(&w, a.push(&["main"]), &needles, "main", Some(&base));
        a.reset_to_upstream();
    }
    // Positive control: the same shapes without a secret land.
    a.commit_bytes(
        "vendor.tgz",
        &tgz(&[("node_modules/pkg/.env", b"DEBUG=1\n")]),
        "archive",
    );
    a.commit_bytes("notes.txt.gz", &gz(&gz(b"plain notes\n")), "archive");
    a.commit_bytes(
        "site.zip",
        &zip_of(&[
            ("assets/logo.png", &png(b"just pixels")),
            ("keys/public.txt", b"nothing\n"),
        ]),
        "archive",
    );
    let c = ok(a.git(&["rev-parse", "HEAD"]), "rev-parse");
    assert_lands(&w, a.push(&["main"]), "main", &c);
}

#[test]
fn scan_allow_paths_exempt_only_files_pushed_nowhere_else() {
    let w = World::new();
    let (_gate, _port, gitconfig, _log) = w.gate_config(&w.known_hosts, vec![], vec![], |c| {
        c.allow_paths = vec!["tests/fixtures/**".into()];
    });
    let a = Agent::clone(&w, &gitconfig, "agent");
    let base = w.upstream_rev("main").unwrap();
    // The same blob at an allowed path and at another one: still scanned.
    a.commit_bytes("tests/fixtures/fake.env", AWS.as_bytes(), "fixture");
    a.commit_bytes("src/config.env", AWS.as_bytes(), "copy");
    assert_refused(
        &w,
        a.push(&["main"]),
        &["aws-access-token"],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();
    // A look-alike directory is not the allowed one.
    a.commit_bytes("tests/fixtures-old/fake.env", AWS.as_bytes(), "fixture");
    assert_refused(
        &w,
        a.push(&["main"]),
        &["file tests/fixtures-old/fake.env"],
        "main",
        Some(&base),
    );
    a.reset_to_upstream();
    // Under the allowed path: a secret-looking fixture and an archive the gate cannot open.
    a.commit_bytes("tests/fixtures/fake.env", AWS.as_bytes(), "fixture");
    let c = a.commit_bytes(
        "tests/fixtures/bundle.7z",
        b"7z\xbc\xaf\x27\x1c\0\x04 opaque",
        "fixture",
    );
    assert_lands(&w, a.push(&["main"]), "main", &c);
}

#[test]
fn the_refresh_and_the_push_upstream_share_one_ssh_connection() {
    let (w, _gate, a, _base) = setup();
    // The clone's refresh opened the master connection.
    let opened = w.ssh_logins();
    assert_eq!(opened, 1, "the clone logs in once");
    for i in 0..3 {
        let c = a.commit(&format!("f{i}.txt"), "work\n", "work");
        assert_lands(&w, a.push(&["main"]), "main", &c);
    }
    // Each push is a refresh and a push upstream: without the master, two logins each.
    assert_eq!(w.ssh_logins(), opened, "pushes ride the open connection");
}
