//! The pre-receive hook: `git receive-pack` runs it in the mirror with the pushed objects
//! quarantined. It checks each ref update against the remote's settings, scans exactly the
//! new commits with gitleaks, and pushes clean updates upstream atomically. Whatever it
//! prints reaches the agent's `git push` as `remote:` lines; a non-zero exit refuses the
//! whole push, so the mirror never shows what upstream did not take.

use std::io::BufRead;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::mirror::{self, ZERO};
use crate::config::git_gate::GitGateConfig;

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

/// A gitleaks finding (the fields we show; the secret itself is redacted by gitleaks).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Finding {
    /// Rule that matched.
    #[serde(rename = "RuleID")]
    pub rule_id: String,
    /// Commit.
    pub commit: String,
    /// File.
    pub file: String,
    /// Line number.
    pub start_line: u64,
    /// The matched text, redacted.
    #[serde(default)]
    pub secret: String,
}

/// Scans the commits reachable from `new` and from no existing ref: exactly what this push
/// adds, older commits of the pushed range included, commits upstream already has excluded.
pub fn scan(
    repo: &Path,
    gitleaks: &str,
    rules: Option<&Path>,
    new: &str,
) -> anyhow::Result<Vec<Finding>> {
    let report = tempfile::NamedTempFile::new()?;
    let mut cmd = Command::new(gitleaks);
    if let Some(r) = rules {
        cmd.arg("--config").arg(r);
    }
    let out = cmd
        .args([
            "git",
            "--no-banner",
            "--redact",
            "--exit-code",
            "3",
            "--log-level",
            "error",
            "--report-format",
            "json",
            "--report-path",
        ])
        .arg(report.path())
        .arg(format!("--log-opts={new} --not --all"))
        .arg(repo)
        .output()
        .with_context(|| format!("running {gitleaks}"))?;
    match out.status.code() {
        Some(0) => Ok(Vec::new()),
        Some(3) => Ok(serde_json::from_slice(&std::fs::read(report.path())?)
            .context("reading the gitleaks report")?),
        _ => bail!(
            "gitleaks failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
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

    let rules = match cfg.gitleaks_toml() {
        Some(toml) => {
            let p = Path::new(&cfg.state_dir).join("gitleaks.toml");
            std::fs::write(&p, toml)?;
            Some(p)
        }
        None => None,
    };
    // Only a deletion needs the default branch, and then the upstream's current one: it may
    // have changed since the mirror was made.
    let deletes = updates.iter().any(|u| u.new == ZERO);
    let default_branch = if deletes && !remote.allow_delete_default_branch {
        let ssh = mirror::ssh_command(cfg, remote)?;
        mirror::upstream_head(&repo, &ssh, remote)?.unwrap_or_default()
    } else {
        String::new()
    };
    let mut refspecs = Vec::new();
    let mut refused = Vec::new();
    for u in &updates {
        if !(u.name.starts_with("refs/heads/") || u.name.starts_with("refs/tags/")) {
            refused.push(format!(
                "{}: only branches (refs/heads/) and tags (refs/tags/) can be pushed",
                u.name
            ));
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
        let findings = scan(&repo, gitleaks, rules.as_deref(), &u.new)?;
        for f in &findings {
            refused.push(format!(
                "{}: secret found by gitleaks rule {} in commit {} file {} line {} ({})",
                u.name,
                f.rule_id,
                &f.commit[..f.commit.len().min(12)],
                f.file,
                f.start_line,
                if f.secret.is_empty() {
                    "REDACTED"
                } else {
                    &f.secret
                }
            ));
        }
        refspecs.push(format!(
            "{}{}:{}",
            if fast_forward { "" } else { "+" },
            u.new,
            u.name
        ));
    }
    if !refused.is_empty() {
        for r in &refused {
            eprintln!("git-gate: REFUSED {r}");
        }
        eprintln!(
            "git-gate: nothing was pushed upstream. Remove the secret from every pushed commit (rewrite history) and push again."
        );
        bail!("push refused");
    }

    let ssh = mirror::ssh_command(cfg, remote)?;
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
