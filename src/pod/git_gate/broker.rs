//! Ref brokering, opt-in per remote: which refs the agent may push, which paths its commits
//! may not touch, and how much one push may add. Pure checks; each refusal names the rule and
//! what to do instead.

use super::objects::{History, Object};
use crate::contract::config::git_gate::GitRemote;
use crate::contract::config::glob;

/// The refusal for pushing `name`, if the remote's `allowedRefs` do not cover it.
pub fn ref_refusal(r: &GitRemote, name: &str) -> Option<String> {
    if r.allowed_refs.is_empty() || r.allowed_refs.iter().any(|p| glob::matches(p, name)) {
        return None;
    }
    Some(format!(
        "{name}: this remote takes only refs matching allowedRefs ({}); push to one of those instead",
        r.allowed_refs.join(", ")
    ))
}

/// One refusal per new commit that touches a path matching the remote's `forbiddenPaths`.
pub fn path_refusals(r: &GitRemote, h: &History) -> Vec<String> {
    let mut out = Vec::new();
    for (commit, paths) in &h.changed {
        for p in paths {
            if let Some(rule) = r.forbidden_paths.iter().find(|g| glob::matches(g, p)) {
                out.push(format!(
                    "commit {} changes {p}, which forbiddenPaths ({rule}) keeps out of reach of the agent: drop that change and ask a person to make it",
                    &commit[..commit.len().min(12)]
                ));
            }
        }
    }
    out
}

/// The refusal when the new objects take more than the remote's `maxPushBytes`.
pub fn size_refusal(r: &GitRemote, new: &[Object]) -> Option<String> {
    let cap = r.max_push_bytes?;
    let total: u64 = new.iter().map(|o| o.disk_size).sum();
    (total > cap).then(|| {
        format!(
            "this push adds {total} bytes of objects, over maxPushBytes ({cap}): split it into smaller pushes or keep large files out of git"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::git_gate::objects::Kind;

    fn remote() -> GitRemote {
        GitRemote {
            name: "origin".into(),
            upstream: "ssh://git@example.com/r.git".into(),
            ssh_key_file: "/k".into(),
            known_hosts: "x".into(),
            allow_force_push: false,
            allow_delete_default_branch: false,
            allowed_refs: vec!["refs/heads/bottle/b1/*".into()],
            forbidden_paths: vec![".github/workflows/**".into()],
            max_push_bytes: Some(100),
        }
    }

    #[test]
    fn rules_refuse_only_what_they_name() {
        let r = remote();
        assert!(ref_refusal(&r, "refs/heads/bottle/b1/fix").is_none());
        let m = ref_refusal(&r, "refs/heads/main").unwrap();
        assert!(m.contains("allowedRefs (refs/heads/bottle/b1/*)"), "{m}");
        let open = GitRemote {
            allowed_refs: vec![],
            ..remote()
        };
        assert!(ref_refusal(&open, "refs/heads/main").is_none());

        let h = History {
            changed: vec![
                ("c1".into(), vec!["src/a.rs".into()]),
                ("c2".into(), vec![".github/workflows/ci.yml".into()]),
            ],
            ..Default::default()
        };
        let p = path_refusals(&r, &h);
        assert_eq!(p.len(), 1);
        assert!(
            p[0].contains("commit c2 changes .github/workflows/ci.yml"),
            "{p:?}"
        );

        let obj = |n| Object {
            oid: "o".into(),
            kind: Kind::Blob,
            size: n,
            disk_size: n,
            path: String::new(),
        };
        assert!(size_refusal(&r, &[obj(60), obj(40)]).is_none());
        assert!(
            size_refusal(&r, &[obj(60), obj(41)])
                .unwrap()
                .contains("101 bytes")
        );
    }
}
