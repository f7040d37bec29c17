//! Local mirrors and the SSH plumbing to their upstreams.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::contract::config::git_gate::{GitGateConfig, GitRemote};

/// The all-zero object id git uses for "no ref".
pub const ZERO: &str = "0000000000000000000000000000000000000000";

/// Where one remote's mirror lives.
pub fn mirror_dir(cfg: &GitGateConfig, name: &str) -> PathBuf {
    Path::new(&cfg.state_dir)
        .join("mirrors")
        .join(format!("{name}.git"))
}

/// Runs git with the remote's SSH command; returns stdout, or fails with git's stderr.
pub fn git(dir: &Path, ssh: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    let mut c = Command::new("git");
    c.arg("-C").arg(dir).args(args);
    if let Some(s) = ssh {
        c.env("GIT_SSH_COMMAND", s);
    }
    let out = c
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the mirror if missing (bare repo, push enabled, our pre-receive hook), then
/// fetches every branch and tag from upstream (and, for a new mirror, its default branch).
pub fn sync(cfg: &GitGateConfig, r: &GitRemote, hook_cmd: &str) -> anyhow::Result<()> {
    let dir = mirror_dir(cfg, &r.name);
    let fresh = !dir.join("HEAD").exists();
    if fresh {
        std::fs::create_dir_all(&dir)?;
        git(&dir, None, &["init", "--quiet", "--bare"])?;
        git(&dir, None, &["config", "http.receivepack", "true"])?;
        // Deleting and rewriting refs is decided by the hook (per-remote settings).
        git(&dir, None, &["config", "receive.denyDeletes", "false"])?;
        git(
            &dir,
            None,
            &["config", "receive.denyNonFastForwards", "false"],
        )?;
    }
    install_hook(&dir, hook_cmd)?;
    let ssh = super::ssh::for_remote(cfg, r)?.command;
    git(
        &dir,
        Some(&ssh),
        &[
            "fetch",
            "--quiet",
            "--prune",
            &r.upstream,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
    )
    .with_context(|| format!("fetching upstream of remote {}", r.name))?;
    // A new mirror takes the upstream's default branch, so clones check it out. Later
    // fetches skip the second SSH round trip; the hook asks again before any deletion.
    if fresh {
        upstream_head(&dir, &ssh, r)?;
    }
    Ok(())
}

/// Asks upstream for its default branch (`refs/heads/...`) now, and points the mirror's HEAD
/// at it. `None` when upstream has no HEAD (an empty repository).
pub fn upstream_head(dir: &Path, ssh: &str, r: &GitRemote) -> anyhow::Result<Option<String>> {
    let out = git(
        dir,
        Some(ssh),
        &["ls-remote", "--symref", &r.upstream, "HEAD"],
    )
    .with_context(|| format!("reaching upstream of remote {}", r.name))?;
    let head = out.lines().find_map(|l| {
        l.strip_prefix("ref: ")?
            .split_once('\t')
            .map(|(r, _)| r.to_string())
    });
    if let Some(h) = &head {
        git(dir, None, &["symbolic-ref", "HEAD", h])?;
    }
    Ok(head)
}

fn install_hook(dir: &Path, hook_cmd: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let hooks = dir.join("hooks");
    std::fs::create_dir_all(&hooks)?;
    let body = format!(
        "#!/bin/sh\n# Installed by git-gate: scan, then forward upstream.\nexec {hook_cmd}\n"
    );
    let path = hooks.join("pre-receive");
    if std::fs::read_to_string(&path).ok().as_deref() != Some(body.as_str()) {
        std::fs::write(&path, body)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
