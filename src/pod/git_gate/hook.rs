//! The pre-receive hook: `git receive-pack` runs it in the mirror with the pushed objects
//! quarantined. It checks each ref update against the remote's settings and brokering rules,
//! scans every object the push adds ([`scan`]) with one gitleaks run, and pushes clean
//! updates upstream atomically. Whatever it
//! prints reaches the agent's `git push` as `remote:` lines; a non-zero exit refuses the
//! whole push, so the mirror never shows what upstream did not take.

use std::io::BufRead;
use std::path::Path;
use std::process::Command;

use super::mirror::{self, ZERO};
use super::{broker, objects, scan};
use crate::contract::config::git_gate::GitGateConfig;
use anyhow::{Context as _, bail};

/// One `<old> <new> <ref>` line from git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Previous value (zero for a new ref).
    pub old: String,
    /// New value (zero for a deletion).
    pub new: String,
    /// Full ref name.
    pub name: String,
}

/// Parses the hook's stdin.
pub fn parse_updates(input: &str) -> anyhow::Result<Vec<Update>> {
    input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            match (it.next(), it.next(), it.next()) {
                (Some(o), Some(n), Some(r)) => Ok(Update {
                    old: o.into(),
                    new: n.into(),
                    name: r.into(),
                }),
                _ => bail!("unexpected pre-receive line {l:?}"),
            }
        })
        .collect()
}

/// Runs the hook for remote `name`; returns the message to print and whether to accept.
pub fn run(
    cfg: &GitGateConfig,
    name: &str,
    gitleaks: &str,
    stdin: impl BufRead,
) -> anyhow::Result<()> {
    let remote = cfg
        .remotes
        .iter()
        .find(|r| r.name == name)
        .with_context(|| format!("remote {name} is no longer declared"))?;
    let repo = std::env::current_dir()?;
    let mut input = String::new();
    for line in stdin.lines() {
        input.push_str(&line?);
        input.push('\n');
    }
    let updates = parse_updates(&input)?;

    // One push per remote at a time: scans and upstream pushes never interleave.
    let lock_path = Path::new(&cfg.state_dir)
        .join("locks")
        .join(format!("{name}.lock"));
    std::fs::create_dir_all(lock_path.parent().expect("has parent"))?;
    let lock = std::fs::File::create(&lock_path)?;
    lock.lock()?;

    // Only a deletion needs the default branch, and then the upstream's current one: it may
    // have changed since the mirror was made.
    let deletes = updates.iter().any(|u| u.new == ZERO);
    let default_branch = if deletes && !remote.allow_delete_default_branch {
        let ssh = super::ssh::for_remote(cfg, remote)?.command;
        mirror::upstream_head(&repo, &ssh, remote)?.unwrap_or_default()
    } else {
        String::new()
    };
    let mut refspecs = Vec::new();
    let mut refused = Vec::new();
    let mut tips: Vec<&str> = Vec::new();
    for u in &updates {
        if !(u.name.starts_with("refs/heads/") || u.name.starts_with("refs/tags/")) {
            refused.push(format!(
                "{}: only branches (refs/heads/) and tags (refs/tags/) can be pushed",
                u.name
            ));
            continue;
        }
        if let Some(r) = broker::ref_refusal(remote, &u.name) {
            refused.push(r);
            continue;
        }
        if u.new == ZERO {
            if u.name == default_branch && !remote.allow_delete_default_branch {
                refused.push(format!(
                    "{}: deleting the default branch is not allowed (allowDeleteDefaultBranch)",
                    u.name
                ));
            }
            refspecs.push(format!(":{}", u.name));
            continue;
        }
        let fast_forward = u.old == ZERO
            || Command::new("git")
                .arg("-C")
                .arg(&repo)
                .args(["merge-base", "--is-ancestor", &u.old, &u.new])
                .status()?
                .success();
        if !fast_forward && !remote.allow_force_push {
            refused.push(format!(
                "{}: non-fast-forward push refused (allowForcePush is off)",
                u.name
            ));
        }
        // A ref must end at a commit (through annotated tags): a ref to a bare blob or tree
        // would carry content past every history-based rule.
        match objects::peeled_kind(&repo, &u.new)? {
            Some(objects::Kind::Commit) => tips.push(u.new.as_str()),
            other => refused.push(format!(
                "{}: points at a {} rather than a commit or an annotated tag of one; push commits",
                u.name,
                match other {
                    Some(objects::Kind::Blob) => "blob",
                    Some(objects::Kind::Tree) => "tree",
                    Some(objects::Kind::Tag) => "tag of a non-commit",
                    _ => "missing object",
                }
            )),
        }
        refspecs.push(format!(
            "{}{}:{}",
            if fast_forward { "" } else { "+" },
            u.new,
            u.name
        ));
    }
    // Everything the push adds, listed once and decided on together.
    let new = objects::list_new(&repo, &tips)?;
    let history = objects::history(&repo, &tips)?;
    refused.extend(broker::size_refusal(remote, &new));
    refused.extend(broker::path_refusals(remote, &history));
    if !new.is_empty() {
        let work = Path::new(&cfg.state_dir).join("scan");
        refused.extend(scan::scan(
            &repo,
            &work,
            gitleaks,
            &cfg.scan_gitleaks_toml(),
            &cfg.allow_paths,
            &new,
            &history,
        )?);
    }
    if !refused.is_empty() {
        for r in &refused {
            eprintln!("git-gate: REFUSED {r}");
        }
        eprintln!(
            "git-gate: nothing was pushed upstream. Fix each point above (a secret must leave every pushed commit: rewrite history) and push again."
        );
        bail!("push refused");
    }

    let ssh = super::ssh::for_remote(cfg, remote)?.command;
    let mut args = vec!["push", "--atomic", "--porcelain", remote.upstream.as_str()];
    args.extend(refspecs.iter().map(String::as_str));
    let out = Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(&args)
        .env("GIT_SSH_COMMAND", &ssh)
        .output()?;
    if !out.status.success() {
        eprintln!("git-gate: upstream refused the push:");
        for l in String::from_utf8_lossy(&out.stdout)
            .lines()
            .chain(String::from_utf8_lossy(&out.stderr).lines())
        {
            eprintln!("git-gate:   {l}");
        }
        bail!("upstream refused");
    }
    eprintln!("git-gate: scanned clean; pushed to {}", remote.name);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_parse() {
        let u = parse_updates(&format!(
            "{ZERO} abc refs/heads/new\nabc {ZERO} refs/tags/t\n"
        ))
        .unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].name, "refs/heads/new");
        assert_eq!(u[1].new, ZERO);
        assert!(parse_updates("garbage").is_err());
    }
}
