//! `bottle-sidecar config-sync`: delivers pipelock's config from the ConfigMap volume to a
//! directory pipelock watches.
//!
//! pipelock reloads on file events named after its config file, but the kubelet updates a
//! ConfigMap volume by swapping the `..data` symlink, which names no such file. This sidecar
//! watches the ConfigMap (the same way the proxies do), checks that the new file parses as
//! our pipelock config type (unknown keys are fatal in pipelock too), and renames it into
//! place atomically, which pipelock sees as an event on its own file name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::config::pipelock::PipelockConfig;
use crate::proxy::reload::{self, Loaded, hash_bytes};

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
    use std::os::unix::fs::OpenOptionsExt;
    let dir = to.parent().context("target has no directory")?;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        to.file_name().and_then(|n| n.to_str()).unwrap_or("config")
    ));
    // 0640: pipelock refuses config-adjacent secrets with loose modes; keep the config tight too.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming into {}", to.display()))?;
    Ok(())
}

/// Delivers once, then keeps delivering every valid change until the process is stopped.
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
    let mut rx = live.current;
    loop {
        let bytes = rx.borrow_and_update().clone();
        deliver(&to, &bytes)?;
        tracing::info!(to = %to.display(), config_hash = %live.status.lock().expect("status").config_hash, "pipelock config delivered");
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
        let policy = crate::model::Policy::from_spec(&Default::default()).unwrap();
        let good =
            serde_norway::to_string(&crate::render::config_map::pipelock_config(&policy)).unwrap();
        std::fs::write(&f, &good).unwrap();
        assert!(load(&f).is_ok());
        std::fs::write(&f, format!("{good}surprise: true\n")).unwrap();
        assert!(
            load(&f).is_err(),
            "unknown keys are fatal to pipelock, so they are refused here"
        );
    }
}
