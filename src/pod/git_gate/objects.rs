//! What a push adds, read once from the repository the hook runs in (the quarantine
//! environment git sets for pre-receive: its variables reach the git children we start).
//! `rev-list --objects <tips> --not --all` lists every new object, whatever reaches it;
//! `log --raw -m` says which commit brought each new blob and which paths each commit
//! changes; `cat-file --batch` streams the objects' contents.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context as _, bail};

/// The type of a git object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A commit.
    Commit,
    /// A tree (directory listing).
    Tree,
    /// File contents.
    Blob,
    /// An annotated tag.
    Tag,
}

impl Kind {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "commit" => Self::Commit,
            "tree" => Self::Tree,
            "blob" => Self::Blob,
            "tag" => Self::Tag,
            _ => bail!("unknown object type {s:?}"),
        })
    }
}

/// One new object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Object id.
    pub oid: String,
    /// Type.
    pub kind: Kind,
    /// Size of its content.
    pub size: u64,
    /// Bytes it takes in the object store (compressed, maybe a delta): what the push carried.
    pub disk_size: u64,
    /// The path rev-list first reached it at (blobs and trees; empty for a root tree).
    pub path: String,
}

/// Where a new blob came in: the oldest new commit whose diff (against each parent, so
/// merges count) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// Commit id.
    pub commit: String,
    /// Path in that commit.
    pub path: String,
    /// The commit is a merge (the blob is part of its resolution).
    pub merge: bool,
}

/// The history side of a push: each new blob's origin and each new commit's changed paths.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct History {
    /// New blob id → where it came in.
    pub origins: HashMap<String, Origin>,
    /// New blob id → every path a new commit writes it at.
    pub paths: HashMap<String, Vec<String>>,
    /// New commit id → paths it adds, changes or deletes (against each parent), in order.
    pub changed: Vec<(String, Vec<String>)>,
}

fn git(repo: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(repo);
    c
}

fn run(mut c: Command, what: &str) -> anyhow::Result<Vec<u8>> {
    let out = c.output().with_context(|| format!("running git {what}"))?;
    if !out.status.success() {
        bail!(
            "git {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Every object reachable from `tips` and from no existing ref, with type and sizes.
pub fn list_new(repo: &Path, tips: &[&str]) -> anyhow::Result<Vec<Object>> {
    if tips.is_empty() {
        return Ok(Vec::new());
    }
    let mut c = git(repo);
    c.args(["rev-list", "--objects"])
        .args(tips)
        .args(["--not", "--all"]);
    let listed = String::from_utf8(run(c, "rev-list --objects")?)?;
    let mut paths = Vec::new();
    let mut input = String::new();
    for l in listed.lines() {
        let (oid, path) = l.split_once(' ').unwrap_or((l, ""));
        input.push_str(oid);
        input.push('\n');
        paths.push(path.to_string());
    }
    let mut c = git(repo);
    c.args([
        "cat-file",
        "--batch-check=%(objectname) %(objecttype) %(objectsize) %(objectsize:disk)",
    ]);
    let out = String::from_utf8(run_with_input(
        c,
        input.into_bytes(),
        "cat-file --batch-check",
    )?)?;
    out.lines()
        .zip(paths)
        .map(|(l, path)| {
            let f: Vec<&str> = l.split(' ').collect();
            let [oid, kind, size, disk] = f[..] else {
                bail!("unexpected cat-file line {l:?}")
            };
            Ok(Object {
                oid: oid.into(),
                kind: Kind::parse(kind)?,
                size: size.parse()?,
                disk_size: disk.parse()?,
                path,
            })
        })
        .collect()
}

fn run_with_input(mut c: Command, input: Vec<u8>, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running git {what}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    // Written from a thread: git answers while it reads, and both pipes have limits.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    writer.join().expect("writer thread")?;
    if !out.status.success() {
        bail!(
            "git {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// Which new commit brought each new blob, and what each new commit changes.
pub fn history(repo: &Path, tips: &[&str]) -> anyhow::Result<History> {
    if tips.is_empty() {
        return Ok(History::default());
    }
    let mut c = git(repo);
    c.args([
        "log",
        "--raw",
        "--no-abbrev",
        "--no-renames",
        "-m",
        "-z",
        "--reverse",
        "--format=%x01%H %P",
    ])
    .args(tips)
    .args(["--not", "--all"]);
    Ok(parse_log(&run(c, "log --raw")?))
}

/// Parses `git log --raw -z -m --format=%x01%H %P` (oldest first).
pub fn parse_log(out: &[u8]) -> History {
    let mut h = History::default();
    let mut commit: Option<(String, bool)> = None;
    let mut tokens = out.split(|&b| b == 0).map(|t| {
        let t = t.strip_prefix(b"\n").unwrap_or(t);
        String::from_utf8_lossy(t).into_owned()
    });
    while let Some(t) = tokens.next() {
        if let Some(header) = t.strip_prefix('\x01') {
            let mut ids = header.split_whitespace();
            let id = ids.next().unwrap_or_default().to_string();
            let merge = ids.count() > 1;
            // `-m` repeats a merge's header once per parent: keep one entry.
            if h.changed.last().map(|(c, _)| c) != Some(&id) {
                h.changed.push((id.clone(), Vec::new()));
            }
            commit = Some((id, merge));
        } else if let Some(raw) = t.strip_prefix(':') {
            let Some(path) = tokens.next() else { break };
            let Some((id, merge)) = &commit else { continue };
            // `:<old mode> <new mode> <old id> <new id> <status>`
            let new_blob = raw.split(' ').nth(3).unwrap_or_default();
            if !new_blob.bytes().all(|b| b == b'0') {
                let at = h.paths.entry(new_blob.to_string()).or_default();
                if !at.contains(&path) {
                    at.push(path.clone());
                }
                h.origins
                    .entry(new_blob.to_string())
                    .or_insert_with(|| Origin {
                        commit: id.clone(),
                        path: path.clone(),
                        merge: *merge,
                    });
            }
            let changed = &mut h.changed.last_mut().expect("a header came first").1;
            if !changed.contains(&path) {
                changed.push(path);
            }
        }
    }
    h
}

/// Streams the contents of `oids` (`cat-file --batch`) to `each(index, content)`.
pub fn for_each_content(
    repo: &Path,
    oids: &[&str],
    mut each: impl FnMut(usize, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if oids.is_empty() {
        return Ok(());
    }
    let mut child = git(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("running git cat-file --batch")?;
    let mut stdin = child.stdin.take().expect("piped");
    let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
    let mut buf = Vec::new();
    for i in 0..oids.len() {
        let mut header = String::new();
        out.read_line(&mut header)?;
        let size: usize = header
            .trim_end()
            .rsplit(' ')
            .next()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("unexpected cat-file header {header:?}"))?;
        buf.resize(size + 1, 0); // the content, then a newline
        out.read_exact(&mut buf)?;
        each(i, &buf[..size])?;
    }
    writer.join().expect("writer thread")?;
    if !child.wait()?.success() {
        bail!("git cat-file --batch failed");
    }
    Ok(())
}

/// The entry names of a raw tree object (`<mode> <name>\0<20-byte id>` repeated).
pub fn tree_names(raw: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = raw;
    while let Some(sp) = rest.iter().position(|&b| b == b' ') {
        let Some(nul) = rest[sp..].iter().position(|&b| b == 0).map(|n| sp + n) else {
            break;
        };
        names.push(String::from_utf8_lossy(&rest[sp + 1..nul]).into_owned());
        rest = rest.get(nul + 21..).unwrap_or_default();
    }
    names
}

/// The object a ref value finally names once annotated tags are peeled, or `None` when it
/// is not in the repository.
pub fn peeled_kind(repo: &Path, oid: &str) -> anyhow::Result<Option<Kind>> {
    let out = git(repo)
        .args(["cat-file", "-t", &format!("{oid}^{{}}")])
        .output()?;
    if !out.status.success() {
        return Ok(None);
    }
    Ok(Some(Kind::parse(
        String::from_utf8_lossy(&out.stdout).trim(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_parsing_keeps_the_oldest_origin_and_merges() {
        let z = "0".repeat(40);
        let b1 = "b".repeat(40);
        let b2 = "e".repeat(40);
        let out = format!(
            "\x01c1 p0\0\n:000000 100644 {z} {b1} A\0a b.txt\0\x01m1 c1 x1\0\n:000000 100644 {z} {b2} A\0evil.txt\0\x01m1 c1 x1\0\n:000000 100644 {z} {b1} A\0a b.txt\0:000000 100644 {z} {b2} A\0evil.txt\0\x01c2 m1\0\n:100644 000000 {b1} {z} D\0a b.txt\0"
        );
        let h = parse_log(out.as_bytes());
        assert_eq!(h.origins[&b1].commit, "c1");
        assert!(!h.origins[&b1].merge);
        assert_eq!(h.origins[&b2].commit, "m1");
        assert_eq!(h.paths[&b1], vec!["a b.txt"]);
        assert!(h.origins[&b2].merge);
        assert_eq!(h.changed.len(), 3);
        assert_eq!(h.changed[1].1, vec!["evil.txt", "a b.txt"]);
        assert_eq!(h.changed[2].1, vec!["a b.txt"], "a deletion is a change");
    }

    #[test]
    fn tree_names_parse() {
        let mut raw = b"100644 a b.txt\0".to_vec();
        raw.extend([7u8; 20]);
        raw.extend(b"40000 dir\0");
        raw.extend([0u8; 20]);
        assert_eq!(tree_names(&raw), vec!["a b.txt", "dir"]);
    }
}
