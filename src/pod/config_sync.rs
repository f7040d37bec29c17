//! `bottle-sidecar config-sync`: delivers pipelock's config from the ConfigMap volume to a
//! directory pipelock watches.
//!
//! pipelock reloads on file events named after its config file, but the kubelet updates a
//! ConfigMap volume by swapping the `..data` symlink, which names no such file. This sidecar
//! watches the ConfigMap (the same way the proxies do), checks that the new file parses as
//! our pipelock config type (unknown keys are fatal in pipelock too), and renames it into
//! place atomically, which pipelock sees as an event on its own file name.
//!
//! A version pipelock's strict-mode reload would refuse (a trust-widening or DLP change) is
//! not delivered: pipelock would keep its old config anyway, and the delivered file would
//! then name a version that is not running. Such changes roll the Pod instead; until then the
//! delivered file stays what pipelock runs, and the refusal is logged with its reasons.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::contract::config::pipelock::PipelockConfig;
use crate::pod::core::reload::{self, Loaded, hash_bytes};

/// Reads and checks the source file.
pub fn load(from: &Path) -> anyhow::Result<Loaded<Vec<u8>>> {
    let bytes = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    let _: PipelockConfig = serde_norway::from_slice(&bytes)
        .with_context(|| format!("{} is not a valid pipelock config", from.display()))?;
    let h = hash_bytes(&[&bytes]);
    Ok(Loaded {
        value: bytes,
        config_hash: h.clone(),
        change_key: h,
    })
}

/// Writes `bytes` to `to` through a temporary file in the same directory and a rename.
pub fn deliver(to: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // 0640: pipelock refuses config-adjacent secrets with loose modes; keep the config tight too.
    super::core::atomic_file::write(to, bytes, 0o640)
}

/// Why pipelock's strict-mode reload would refuse `new` while it runs `old`, for the fields
/// we render. pipelock 2.3.0 rejects a reload outright when it runs in strict mode and
/// `ValidateReload` (`internal/config/reloadwarn.go`) has any warning for it
/// (`internal/cli/runtime/server.go`, `Reload`); it then keeps the old config and every later
/// reload is compared with that old one again. Empty: pipelock takes `new` live.
pub fn strict_reload_refusals(old: &PipelockConfig, new: &PipelockConfig) -> Vec<String> {
    if old.mode != "strict" {
        return Vec::new();
    }
    let rank = |m: &str| match m {
        "strict" => 3,
        "balanced" => 2,
        _ => 1,
    };
    let mut why = Vec::new();
    if rank(&new.mode) < rank(&old.mode) {
        why.push(format!("mode downgraded to {}", new.mode));
    }
    if old.enforce && !new.enforce {
        why.push("enforce turned off".into());
    }
    if old.forward_proxy.enabled != new.forward_proxy.enabled {
        why.push("forward_proxy.enabled changed (restart only)".into());
    }
    let (ot, nt) = (&old.tls_interception, &new.tls_interception);
    if ot.enabled && !nt.enabled {
        why.push("tls_interception turned off".into());
    }
    if ot.enabled && nt.enabled {
        let had: std::collections::BTreeSet<String> = ot
            .passthrough_domains
            .iter()
            .map(|d| d.to_lowercase())
            .collect();
        let added: Vec<&str> = nt
            .passthrough_domains
            .iter()
            .filter(|d| !had.contains(&d.to_lowercase()))
            .map(String::as_str)
            .collect();
        if !added.is_empty() {
            why.push(format!("passthrough domains added: {}", added.join(", ")));
        }
    }
    if old.request_body_scanning.enabled && !new.request_body_scanning.enabled {
        why.push("request body scanning turned off".into());
    }
    if old.dlp.include_defaults && !new.dlp.include_defaults {
        why.push("dlp.include_defaults turned off".into());
    }
    // Any change of the pattern list, an addition or a reordering too: pipelock's Sentry
    // scrubber keeps its start-up patterns, and that warning alone rejects the reload.
    let patterns = |c: &PipelockConfig| -> Vec<(String, String)> {
        c.dlp
            .patterns
            .iter()
            .map(|p| (p.name.clone(), p.regex.clone()))
            .collect()
    };
    if patterns(old) != patterns(new) {
        why.push("dlp.patterns changed".into());
    }
    why
}

/// Delivers once, then keeps delivering every valid change pipelock would take live, until
/// the process is stopped.
pub async fn run(from: PathBuf, to: PathBuf) -> anyhow::Result<()> {
    let src = from.clone();
    let dirs = from
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect::<Vec<_>>();
    let live = reload::start(
        move || load(&src),
        move |_| dirs.clone(),
        Duration::from_secs(2),
    )?;
    // What pipelock runs: a version already delivered (this container restarted while pipelock
    // kept running; the emptyDir outlives it), else nothing yet.
    let mut running: Option<PipelockConfig> = std::fs::read(&to)
        .ok()
        .and_then(|b| serde_norway::from_slice(&b).ok());
    let mut rx = live.current;
    loop {
        let bytes = rx.borrow_and_update().clone();
        let next: PipelockConfig = serde_norway::from_slice(&bytes)?;
        let refusals = running
            .as_ref()
            .map(|r| strict_reload_refusals(r, &next))
            .unwrap_or_default();
        let hash = live.status.lock().expect("status").config_hash.clone();
        if refusals.is_empty() {
            deliver(&to, &bytes)?;
            running = Some(next);
            tracing::info!(to = %to.display(), config_hash = %hash, "pipelock config delivered");
        } else {
            tracing::error!(
                config_hash = %hash,
                reasons = %refusals.join("; "),
                "not delivered: pipelock's strict mode refuses this change on reload; it keeps the running version until the Pod is replaced"
            );
        }
        if rx.changed().await.is_err() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_pipelock_configs_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pipelock.yaml");
        let policy = crate::contract::model::Policy::from_spec(&Default::default()).unwrap();
        let good = serde_norway::to_string(&crate::operator::render::config_map::pipelock_config(
            &policy,
        ))
        .unwrap();
        std::fs::write(&f, &good).unwrap();
        assert!(load(&f).is_ok());
        std::fs::write(&f, format!("{good}surprise: true\n")).unwrap();
        assert!(
            load(&f).is_err(),
            "unknown keys are fatal to pipelock, so they are refused here"
        );
    }

    fn rendered(spec: serde_json::Value) -> PipelockConfig {
        let spec: crate::contract::api::BottleSpec = serde_json::from_value(spec).unwrap();
        let policy = crate::contract::model::Policy::from_spec(&spec).unwrap();
        crate::operator::render::config_map::pipelock_config(&policy)
    }

    #[test]
    fn strict_reload_refusals_follow_pipelock_for_what_we_render() {
        let base = serde_json::json!({
            "egress": {"allow": ["a.example.com"]},
            "dlp": {"patterns": [{"name": "acme", "regex": "acme_[a-z]{8}"}]},
        });
        let old = rendered(base.clone());
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut s = base.clone();
            f(&mut s);
            rendered(s)
        };
        // Taken live: hosts added or removed, DLP switched to warn.
        for (what, new) in [
            ("same", old.clone()),
            (
                "host added",
                with(&|s| {
                    s["egress"]["allow"] = serde_json::json!(["a.example.com", "b.example.com"])
                }),
            ),
            (
                "host removed",
                with(&|s| s["egress"]["allow"] = serde_json::json!(["b.example.com"])),
            ),
            (
                "dlp warn",
                with(&|s| s["dlp"]["block"] = serde_json::json!(false)),
            ),
        ] {
            assert_eq!(
                strict_reload_refusals(&old, &new),
                Vec::<String>::new(),
                "{what}"
            );
        }
        // Refused: a new passthrough host, any change of the DLP pattern list.
        for (what, new, reason) in [
            (
                "passthrough",
                with(&|s| s["egress"]["passthrough"] = serde_json::json!(["a.example.com"])),
                "passthrough domains added: a.example.com",
            ),
            (
                "pattern added",
                with(
                    &|s| s["dlp"]["patterns"] = serde_json::json!([{"name": "acme", "regex": "acme_[a-z]{8}"}, {"name": "two", "regex": "two_[a-z]{8}"}]),
                ),
                "dlp.patterns changed",
            ),
            (
                "pattern removed",
                with(&|s| s["dlp"]["patterns"] = serde_json::json!([])),
                "dlp.patterns changed",
            ),
            (
                "regex changed",
                with(&|s| s["dlp"]["patterns"][0]["regex"] = serde_json::json!("acme_[a-z]{9}")),
                "dlp.patterns changed",
            ),
        ] {
            assert_eq!(
                strict_reload_refusals(&old, &new),
                vec![reason.to_string()],
                "{what}"
            );
        }
        // Narrowing passthrough is no widening (the Pod rolls for it anyway, by template hash).
        let wide = with(&|s| s["egress"]["passthrough"] = serde_json::json!(["a.example.com"]));
        assert!(strict_reload_refusals(&wide, &old).is_empty());
    }
}
