//! One gitleaks run over everything a push adds. Each new object becomes one file of a scan
//! directory, named by its id (so gitleaks' path skip list, in-repo `.gitleaks.toml` and
//! `.gitleaksignore` never apply): blobs in full (text as is, binary-looking ones as their
//! printable runs, archives opened by [`unpack`] and each file inside written the same way),
//! commit and tag text, and the file names of new trees and archives. Blobs whose every path
//! matches the Bottle's `scanAllowPaths` are left out. Findings map back to what the user
//! pushed; refusals name the channel and never the secret.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::objects::{self, History, Kind, Object};
use super::unpack::{self, Unscannable};
use crate::contract::config::glob;

/// Binary and archive blobs larger than this are refused: their scan is not worth trusting.
pub const BINARY_SCAN_CAP: u64 = 32 << 20;
/// Shortest printable run taken from a binary file (shorter ones are noise, not secrets).
const MIN_RUN: usize = 8;

/// A gitleaks finding (the fields we use; the secret is redacted by gitleaks and never shown).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Finding {
    /// Rule that matched.
    #[serde(rename = "RuleID")]
    pub rule_id: String,
    /// Scanned file (`<scan file>` or `<archive>!<inner path>`).
    pub file: String,
    /// Line number in the scanned file.
    pub start_line: u64,
}

/// What one scan file stands for.
#[derive(Debug, Clone)]
enum Source {
    /// A blob (text, or printable runs of a binary).
    Blob { oid: String, form: Form },
    /// A file inside an archive blob (`inner` joins the levels with `!`).
    Member {
        oid: String,
        inner: String,
        binary: bool,
    },
    /// The paths of the files inside an archive blob.
    MemberNames { oid: String, names: Vec<String> },
    /// A commit's text (headers and message).
    Commit { oid: String, text: String },
    /// An annotated tag's text.
    Tag { oid: String, text: String },
    /// The entry names of a tree.
    Names { dir: String, names: Vec<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Text,
    Binary,
    Archive,
}

/// How a blob is handed to gitleaks, from its content alone (the pusher picks the names).
fn form_of(content: &[u8]) -> Form {
    if unpack::container_of(content).is_some() {
        Form::Archive
    } else if looks_binary(content) {
        Form::Binary
    } else {
        Form::Text
    }
}

/// git's own test: a NUL in the first 8000 bytes.
fn looks_binary(content: &[u8]) -> bool {
    content[..content.len().min(8000)].contains(&0)
}

/// A scan file's body: a leading newline keeps gitleaks' file-type sniffing from calling a
/// text file "application/..." and skipping it (line numbers shift by one); binary content
/// becomes its printable runs.
fn scan_body(content: &[u8], binary: bool) -> Vec<u8> {
    if binary {
        [b"\n".as_slice(), &printable_runs(content)].concat()
    } else {
        [b"\n".as_slice(), content].concat()
    }
}

/// A scan file of names, one a line (after the leading newline [`scan_body`] explains), so a
/// finding's line number picks the name out.
fn names_body(names: &[String]) -> String {
    let mut body = String::from("\n");
    for n in names {
        body.push_str(n);
        body.push('\n');
    }
    body
}

/// Is the blob exempt from scanning: every path it is pushed at matches `scanAllowPaths`?
fn exempt(o: &Object, history: &History, allow_paths: &[String]) -> bool {
    if allow_paths.is_empty() {
        return false;
    }
    // rev-list's path is always one of them (empty for a blob no tree names: never exempt).
    let listed = history.paths.get(&o.oid).into_iter().flatten();
    listed
        .chain(std::iter::once(&o.path))
        .all(|p| !p.is_empty() && allow_paths.iter().any(|g| glob::matches(g, p)))
}

/// The printable ASCII runs of a binary file, one per line (what `strings` shows).
pub fn printable_runs(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for run in content.split(|b| !(b.is_ascii_graphic() || *b == b' ' || *b == b'\t')) {
        if run.len() >= MIN_RUN {
            out.extend_from_slice(run);
            out.push(b'\n');
        }
    }
    out
}

/// What the scan found: refusal lines, each naming the channel.
pub type Refusals = Vec<String>;

/// Scans every object of `new`: writes the scan directory under `work`, runs gitleaks once
/// with `config` (our TOML, always given), and returns one refusal line per problem. Blobs
/// whose every path matches one of `allow_paths` are not scanned.
pub fn scan(
    repo: &Path,
    work: &Path,
    gitleaks: &str,
    config: &str,
    allow_paths: &[String],
    new: &[Object],
    history: &History,
) -> anyhow::Result<Refusals> {
    let mut refused = Vec::new();
    std::fs::create_dir_all(work)?;
    let dir = tempfile::Builder::new().prefix("scan-").tempdir_in(work)?;
    let files = dir.path().join("in");
    std::fs::create_dir(&files)?;
    let mut sources: HashMap<String, Source> = HashMap::new();

    let wanted: Vec<&Object> = new
        .iter()
        .filter(|o| !(o.kind == Kind::Blob && exempt(o, history, allow_paths)))
        .collect();
    let oids: Vec<&str> = wanted.iter().map(|o| o.oid.as_str()).collect();
    objects::for_each_content(repo, &oids, |i, content| {
        let o = wanted[i];
        let name = format!("{}-{}", kind_prefix(o.kind), o.oid);
        match o.kind {
            Kind::Blob => {
                let form = form_of(content);
                if form != Form::Text && o.size > BINARY_SCAN_CAP {
                    refused.push(format!(
                        "{} is {} MiB, over the {} MiB git-gate scans in binary and archive files: keep it out of git (or in a release artifact)",
                        describe_blob(&o.oid, form, history, &o.path),
                        o.size >> 20,
                        BINARY_SCAN_CAP >> 20
                    ));
                    return Ok(());
                }
                if form == Form::Archive {
                    let mut names = Vec::new();
                    let res = unpack::unpack(content, &blob_path(o, history), &mut |inner, b| {
                        let file = format!("member-{}-{}", o.oid, names.len());
                        let binary = looks_binary(b);
                        std::fs::write(files.join(&file), scan_body(b, binary))?;
                        sources.insert(
                            file,
                            Source::Member {
                                oid: o.oid.clone(),
                                inner: inner.to_string(),
                                binary,
                            },
                        );
                        names.push(inner.to_string());
                        Ok(())
                    })?;
                    if let Err(p) = res {
                        let what = describe_blob(&o.oid, form, history, &o.path);
                        let at = if p.inner.is_empty() {
                            String::new()
                        } else {
                            format!(" (at {})", p.inner)
                        };
                        refused.push(match p.why {
                            Unscannable::TooDeep => format!(
                                "{what} nests archives deeper than {} levels{at}: git-gate cannot scan it; unpack it or keep it out of git",
                                unpack::MAX_DEPTH
                            ),
                            Unscannable::TooLarge => format!(
                                "{what} unpacks to more than {} MiB{at}: git-gate cannot scan it; keep it out of git",
                                unpack::MAX_INFLATED >> 20
                            ),
                            Unscannable::TooMany => format!(
                                "{what} holds more than {} files: git-gate cannot scan it; keep it out of git",
                                unpack::MAX_MEMBERS
                            ),
                            Unscannable::Unreadable(why) => format!(
                                "{what} could not be opened to scan it{at}: {why}; keep it out of git"
                            ),
                        });
                    }
                    std::fs::write(files.join(&name), names_body(&names))?;
                    sources.insert(
                        name,
                        Source::MemberNames {
                            oid: o.oid.clone(),
                            names,
                        },
                    );
                    return Ok(());
                }
                std::fs::write(files.join(&name), scan_body(content, form == Form::Binary))?;
                sources.insert(
                    name,
                    Source::Blob {
                        oid: o.oid.clone(),
                        form,
                    },
                );
            }
            Kind::Commit | Kind::Tag => {
                let text = String::from_utf8_lossy(content).into_owned();
                std::fs::write(files.join(&name), format!("\n{text}"))?;
                let oid = o.oid.clone();
                sources.insert(
                    name,
                    if o.kind == Kind::Commit {
                        Source::Commit { oid, text }
                    } else {
                        Source::Tag { oid, text }
                    },
                );
            }
            Kind::Tree => {
                let names = objects::tree_names(content);
                std::fs::write(files.join(&name), names_body(&names))?;
                sources.insert(
                    name,
                    Source::Names {
                        dir: o.path.clone(),
                        names,
                    },
                );
            }
        }
        Ok(())
    })?;

    let (findings, log) = run_gitleaks(gitleaks, config, dir.path(), &files)?;
    // Names that carry a secret are never printed, wherever a path would show them.
    let secret_names: Vec<&str> = findings
        .iter()
        .filter_map(|f| {
            let names = match sources.get(scan_file(&f.file))? {
                Source::Names { names, .. } | Source::MemberNames { names, .. } => names,
                _ => return None,
            };
            names
                .get((f.start_line as usize).checked_sub(2)?)
                .map(String::as_str)
        })
        .collect();
    let hide = |p: &str| -> String {
        if secret_names
            .iter()
            .any(|n| p.contains(n) || n.split('!').any(|part| p.contains(part)))
        {
            "<a path whose name holds a secret>".into()
        } else {
            p.to_string()
        }
    };
    for f in &findings {
        let Some(src) = sources.get(scan_file(&f.file)) else {
            refused.push(format!(
                "secret found by gitleaks rule {} in an unknown input",
                f.rule_id
            ));
            continue;
        };
        let line = f.start_line.saturating_sub(1);
        let place = match src {
            Source::Blob { oid, form } => {
                let what = hide(&describe_blob(oid, *form, history, &path_of(new, oid)));
                match form {
                    Form::Text => format!("{what} line {line}"),
                    _ => what,
                }
            }
            Source::Member { oid, inner, binary } => {
                let what = hide(&describe_blob(
                    oid,
                    Form::Archive,
                    history,
                    &path_of(new, oid),
                ));
                if *binary {
                    format!("{what}, inside at {} (binary)", hide(inner))
                } else {
                    format!("{what}, inside at {} line {line}", hide(inner))
                }
            }
            Source::MemberNames { oid, .. } => format!(
                "a file name inside {}",
                hide(&describe_blob(
                    oid,
                    Form::Archive,
                    history,
                    &path_of(new, oid)
                ))
            ),
            Source::Commit { oid, text } => format!(
                "{} of commit {}",
                text_part(text, line, "commit message"),
                short(oid)
            ),
            Source::Tag { oid, text } => format!(
                "{} of tag {} ({})",
                text_part(text, line, "tag message"),
                tag_name(text),
                short(oid)
            ),
            Source::Names { dir, .. } => format!(
                "a file name in {}",
                if dir.is_empty() {
                    "the top directory".to_string()
                } else {
                    format!("directory {}/", hide(dir))
                }
            ),
        };
        refused.push(format!(
            "secret found by gitleaks rule {} in {place} (REDACTED)",
            f.rule_id
        ));
    }
    // gitleaks skips, with a warning, what it cannot read: refuse it rather than pass it.
    for l in log.lines() {
        let unscanned =
            l.contains("could not") || l.contains("could read") || l.contains("skipping");
        if !unscanned {
            continue;
        }
        let hit = sources.iter().find(|(name, _)| l.contains(name.as_str()));
        if let Some((_, Source::Blob { oid, .. } | Source::Member { oid, .. })) = hit {
            let what = hide(&describe_blob(
                oid,
                Form::Binary,
                history,
                &path_of(new, oid),
            ));
            refused.push(format!(
                "{what} could not be read to scan it; keep it out of git"
            ));
        }
    }
    refused.dedup();
    Ok(refused)
}

fn kind_prefix(k: Kind) -> &'static str {
    match k {
        Kind::Blob => "blob",
        Kind::Commit => "commit",
        Kind::Tag => "tag",
        Kind::Tree => "names",
    }
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}

/// The scan file a finding's path names.
fn scan_file(f: &str) -> &str {
    f.rsplit('/').next().unwrap_or(f)
}

fn path_of(new: &[Object], oid: &str) -> String {
    new.iter()
        .find(|o| o.oid == oid)
        .map(|o| o.path.clone())
        .unwrap_or_default()
}

fn blob_path(o: &Object, h: &History) -> String {
    h.origins
        .get(&o.oid)
        .map(|g| g.path.clone())
        .unwrap_or_else(|| o.path.clone())
}

/// "file a.txt in commit abc", "binary file logo.png in ...", "merge resolution in ...".
fn describe_blob(oid: &str, form: Form, h: &History, fallback_path: &str) -> String {
    let kind = match form {
        Form::Text => "file",
        Form::Binary => "binary file",
        Form::Archive => "archive",
    };
    match h.origins.get(oid) {
        Some(g) if g.merge => format!(
            "merge resolution in {}: {kind} {}",
            short(&g.commit),
            g.path
        ),
        Some(g) => format!("{kind} {} in commit {}", g.path, short(&g.commit)),
        None if fallback_path.is_empty() => {
            format!("blob {} pushed outside any commit", short(oid))
        }
        None => format!(
            "{kind} {fallback_path} (blob {}, outside any pushed commit)",
            short(oid)
        ),
    }
}

/// Which part of a commit or tag text line `line` (1-based) is: a header or the message.
fn text_part(text: &str, line: u64, message: &str) -> String {
    for (i, l) in text.lines().enumerate() {
        if l.is_empty() {
            break;
        }
        if i as u64 + 1 == line {
            let field = l.split(' ').next().unwrap_or("header");
            return format!("the {field} line");
        }
    }
    message.to_string()
}

fn tag_name(text: &str) -> &str {
    text.lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("tag "))
        .unwrap_or("?")
}

/// Runs gitleaks over the scan files with only our config: `--config` always given and the
/// environment's config variables removed (no `.gitleaks.toml` applies), the ignore path an
/// empty directory (no `.gitleaksignore`), `gitleaks:allow` comments ignored.
fn run_gitleaks(
    gitleaks: &str,
    config: &str,
    dir: &Path,
    files: &Path,
) -> anyhow::Result<(Vec<Finding>, String)> {
    let cfg = dir.join("gitleaks.toml");
    std::fs::write(&cfg, config)?;
    let empty = dir.join("no-ignores");
    std::fs::create_dir_all(&empty)?;
    let report = dir.join("report.json");
    let out = Command::new(gitleaks)
        .current_dir(&empty)
        .env_remove("GITLEAKS_CONFIG")
        .env_remove("GITLEAKS_CONFIG_TOML")
        .arg("dir")
        .arg("--config")
        .arg(&cfg)
        .arg("--gitleaks-ignore-path")
        .arg(&empty)
        .args([
            "--ignore-gitleaks-allow",
            "--no-banner",
            "--redact",
            "--exit-code",
            "3",
            "--log-level",
            "warn",
            // Archives are opened by `unpack`; the scan files have no names gitleaks would
            // take for archives anyway.
            "--max-archive-depth",
            "0",
            "--report-format",
            "json",
            "--report-path",
        ])
        .arg(&report)
        .arg(files)
        .output()
        .with_context(|| format!("running {gitleaks}"))?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    match out.status.code() {
        Some(0) => Ok((Vec::new(), log)),
        Some(3) => Ok((
            serde_json::from_slice(&std::fs::read(&report)?)
                .context("reading the gitleaks report")?,
            log,
        )),
        _ => bail!("gitleaks failed: {}", log.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_told_apart_by_content_alone() {
        assert_eq!(form_of(b"hello\n"), Form::Text);
        assert_eq!(form_of(b"\x89PNG\r\n\x1a\n\0\0"), Form::Binary);
        assert_eq!(form_of(&[0x1f, 0x8b, 8, 0]), Form::Archive);
        assert_eq!(form_of(b"PK\x03\x04rest"), Form::Archive);
        let mut tar = vec![0u8; 600];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(form_of(&tar), Form::Archive);
    }

    #[test]
    fn a_blob_is_exempt_only_when_every_path_it_is_pushed_at_is_allowed() {
        let o = Object {
            oid: "b1".into(),
            kind: Kind::Blob,
            size: 1,
            disk_size: 1,
            path: "fixtures/keys/a.pem".into(),
        };
        let allow = vec!["fixtures/**".to_string()];
        let mut h = History::default();
        assert!(exempt(&o, &h, &allow));
        assert!(!exempt(&o, &h, &[]));
        h.paths.insert(
            "b1".into(),
            vec!["fixtures/keys/a.pem".into(), "src/a.pem".into()],
        );
        assert!(
            !exempt(&o, &h, &allow),
            "also pushed outside the allowed paths"
        );
        let root = Object {
            path: String::new(),
            ..o.clone()
        };
        assert!(!exempt(&root, &History::default(), &["**".into()]));
    }

    #[test]
    fn printable_runs_keep_long_ascii_runs_only() {
        let b = b"\x00\x01AKIAQ6F4YJ2ZRD7UXN3L\x00ab\x7f0123456789\xff";
        assert_eq!(printable_runs(b), b"AKIAQ6F4YJ2ZRD7UXN3L\n0123456789\n");
    }

    #[test]
    fn text_parts_name_headers_and_message() {
        let c = "tree t\nauthor A <a@x> 1 +0000\ncommitter C <c@x> 1 +0000\n\nsubject\n";
        assert_eq!(text_part(c, 2, "commit message"), "the author line");
        assert_eq!(text_part(c, 5, "commit message"), "commit message");
        assert_eq!(
            tag_name("object o\ntype commit\ntag v1\ntagger T\n\nmsg\n"),
            "v1"
        );
        assert_eq!(scan_file("/x/in/member-ab-3"), "member-ab-3");
    }
}
