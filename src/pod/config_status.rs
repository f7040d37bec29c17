//! `bottle-sidecar config-status`: which config version a sidecar has mounted and which one
//! it runs, for `kubectl bottle status` (which runs it in each sidecar container by exec).
//!
//! A policy change travels ConfigMap → mounted file (the kubelet syncs ConfigMap volumes
//! periodically) → running config (the sidecar's reload, which refuses invalid versions).
//! The ConfigMap side is read through the API by the plugin; the other two only exist
//! inside the Pod, so this command reports them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::contract::config::layout::Sidecar as Kind;
use crate::pod::core::reload::{ReloadStatus, hash_bytes};

/// What one sidecar container says about its config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Hash of the config file the container has mounted now.
    pub mounted: Option<String>,
    /// The config in force: reported by the sidecar itself (for pipelock: the version
    /// delivered to it).
    pub running: Option<ReloadStatus>,
    /// Why the mounted version is refused, when it is.
    pub refused: Option<String>,
    /// What could not be read.
    pub problems: Vec<String>,
}

/// Builds the report for `kind`, whose mounted config is `config` (for pipelock,
/// `delivered` is the file config-sync renames into pipelock's directory).
pub async fn report(kind: Kind, config: &Path, delivered: Option<&Path>) -> Report {
    let mut r = Report::default();
    let bytes = match std::fs::read(config) {
        Ok(b) => b,
        Err(e) => {
            r.problems
                .push(format!("reading {}: {e}", config.display()));
            return r;
        }
    };
    r.mounted = Some(hash_bytes(&[&bytes]));
    if kind == Kind::Pipelock {
        // config-sync refuses exactly what this load refuses, so it needs no status of its own.
        if let Err(e) = crate::pod::config_sync::load(config) {
            r.refused = Some(format!("{e:#}"));
        }
        match delivered.map(std::fs::read) {
            Some(Ok(d)) => {
                r.running = Some(ReloadStatus {
                    config_hash: hash_bytes(&[&d]),
                    ..Default::default()
                })
            }
            Some(Err(e)) => r
                .problems
                .push(format!("reading the delivered config: {e}")),
            None => r.problems.push("no delivered config path given".into()),
        }
        return r;
    }
    match status_url(kind, &bytes) {
        Ok(url) => match fetch_status(&url).await {
            Ok(s) => {
                r.refused = s.last_error.clone();
                r.running = Some(s);
            }
            Err(e) => r.problems.push(format!("asking {url}: {e:#}")),
        },
        Err(e) => r.problems.push(e),
    }
    r
}

/// Where the running sidecar reports its status. Read loosely from the mounted file, so a
/// version the sidecar refused still says where to ask.
fn status_url(kind: Kind, config: &[u8]) -> Result<String, String> {
    let (key, path) = match kind {
        Kind::Egress | Kind::CredProxy | Kind::GitGate => ("adminListen", "/status"),
        Kind::Pipelock => return Err("pipelock reports through its delivered file".into()),
    };
    let value: serde_norway::Value =
        serde_norway::from_slice(config).map_err(|e| format!("the mounted config: {e}"))?;
    let addr = value
        .get(key)
        .and_then(|v| v.as_str())
        .ok_or_else(|| format!("the mounted config has no {key}"))?;
    Ok(format!("http://{addr}{path}"))
}

async fn fetch_status(url: &str) -> anyhow::Result<ReloadStatus> {
    use http_body_util::BodyExt;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, http_body_util::Empty<bytes::Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let resp =
        tokio::time::timeout(std::time::Duration::from_secs(5), client.get(url.parse()?)).await??;
    anyhow::ensure!(resp.status().is_success(), "answered {}", resp.status());
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body)?)
}

/// How one sidecar stands, as `kubectl bottle status` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The running config is the ConfigMap's.
    InForce,
    /// The kubelet has not yet written the ConfigMap's version into the volume.
    NotMounted,
    /// Mounted but not yet picked up.
    NotLoaded,
    /// The sidecar refused the mounted version and keeps running the previous one.
    Refused(String),
    /// The container could not tell.
    Unknown(String),
}

/// Compares the ConfigMap's version (`desired`, a hash as [`hash_bytes`] makes it) with what
/// the container reports.
pub fn verdict(desired: Option<&str>, report: &Result<Report, String>) -> Verdict {
    let r = match report {
        Ok(r) => r,
        Err(e) => return Verdict::Unknown(e.clone()),
    };
    let running = r.running.as_ref().map(|s| s.config_hash.as_str());
    if let Some(why) = &r.refused {
        return Verdict::Refused(why.clone());
    }
    if running.is_none() {
        return Verdict::Unknown(r.problems.join("; "));
    }
    if running == desired {
        return Verdict::InForce;
    }
    if r.mounted.as_deref() != desired {
        return Verdict::NotMounted;
    }
    Verdict::NotLoaded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(mounted: &str, running: &str, refused: Option<&str>) -> Result<Report, String> {
        Ok(Report {
            mounted: Some(mounted.into()),
            running: Some(ReloadStatus {
                config_hash: running.into(),
                ..Default::default()
            }),
            refused: refused.map(String::from),
            problems: vec![],
        })
    }

    #[test]
    fn verdicts_follow_the_path_of_a_change() {
        assert_eq!(
            verdict(Some("b"), &report("b", "b", None)),
            Verdict::InForce
        );
        assert_eq!(
            verdict(Some("b"), &report("a", "a", None)),
            Verdict::NotMounted
        );
        assert_eq!(
            verdict(Some("b"), &report("b", "a", None)),
            Verdict::NotLoaded
        );
        assert_eq!(
            verdict(Some("b"), &report("b", "a", Some("bad host"))),
            Verdict::Refused("bad host".into())
        );
        assert_eq!(
            verdict(Some("b"), &Err("exec refused".into())),
            Verdict::Unknown("exec refused".into())
        );
        let unreachable = Ok(Report {
            mounted: Some("b".into()),
            problems: vec!["connection refused".into()],
            ..Default::default()
        });
        assert_eq!(
            verdict(Some("b"), &unreachable),
            Verdict::Unknown("connection refused".into())
        );
    }

    #[test]
    fn each_kind_parses_back_from_the_argument_the_plugin_passes() {
        for k in Kind::ALL {
            assert_eq!(<Kind as clap::ValueEnum>::from_str(k.arg(), false), Ok(k));
        }
    }

    #[test]
    fn the_status_address_is_read_even_from_a_refused_version() {
        let cfg = b"adminListen: 127.0.0.1:9091\nlisten: 127.0.0.1:9090\nroutes: 7\n";
        assert_eq!(
            status_url(Kind::Egress, cfg).unwrap(),
            "http://127.0.0.1:9091/status"
        );
        assert!(status_url(Kind::GitGate, b"listen: 127.0.0.1:9420\n").is_err());
        assert!(status_url(Kind::CredProxy, b"listen: x\n").is_err());
    }

    #[tokio::test]
    async fn pipelock_reports_the_delivered_version_and_refuses_what_config_sync_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let (from, to) = (dir.path().join("from.yaml"), dir.path().join("to.yaml"));
        let policy = crate::contract::model::Policy::from_spec(&Default::default()).unwrap();
        let good = serde_norway::to_string(&crate::operator::render::config_map::pipelock_config(
            &policy,
        ))
        .unwrap();
        std::fs::write(&from, &good).unwrap();
        std::fs::write(&to, &good).unwrap();
        let r = super::report(Kind::Pipelock, &from, Some(&to)).await;
        let h = hash_bytes(&[good.as_bytes()]);
        assert_eq!(verdict(Some(&h), &Ok(r)), Verdict::InForce);

        let bad = format!("{good}surprise: true\n");
        std::fs::write(&from, &bad).unwrap();
        let r = super::report(Kind::Pipelock, &from, Some(&to)).await;
        assert_eq!(r.running.unwrap().config_hash, h);
        assert!(r.refused.unwrap().contains("not a valid pipelock config"));
    }
}
