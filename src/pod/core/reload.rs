//! Live config: load, validate completely, swap atomically; keep the old config when the new
//! one is invalid. Replaces the reference system's `docker cp` + `SIGHUP`.
//!
//! The kubelet updates a ConfigMap (or Secret) volume by writing a new timestamped directory
//! and atomically renaming the `..data` symlink onto it, so the file we read never changes in
//! place and no event names it. We therefore watch the whole directory (inotify) and re-read
//! on any event, plus a slow poll as a safety net; a reload only counts when the content hash
//! changed.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use notify::Watcher;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

/// One successful load: the value, the hash of the config file, and a key over every input
/// (config and token files) that tells whether anything changed.
pub struct Loaded<T> {
    /// The validated config.
    pub value: T,
    /// Hash of the config file (reported; token contents never are).
    pub config_hash: String,
    /// Hash over all inputs, to detect change.
    pub change_key: String,
}

/// What the admin endpoint reports about reloads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReloadStatus {
    /// Hash of the config in force.
    pub config_hash: String,
    /// When it was loaded (seconds since the epoch).
    pub loaded_at: u64,
    /// The last failed reload, if the latest attempt failed.
    pub last_error: Option<String>,
    /// Successful reloads since start.
    pub reloads_ok: u64,
    /// Rejected reloads since start.
    pub reloads_failed: u64,
}

/// The live config and its reload status.
pub struct Live<T> {
    /// Always holds a valid config.
    pub current: watch::Receiver<Arc<T>>,
    /// Reload bookkeeping.
    pub status: Arc<Mutex<ReloadStatus>>,
}

/// Short hex SHA-256.
pub fn hash_bytes(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(&h.finalize()[..8])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Loads once (failing if the first load fails: a sidecar must not start without a valid
/// config), then watches `dirs` and reloads on change. `dirs` come from the first load, so
/// `watch_dirs` tells which directories the config and its token files live in.
pub fn start<T, F>(
    load: F,
    watch_dirs: impl Fn(&T) -> Vec<PathBuf> + Send + 'static,
    poll: Duration,
) -> anyhow::Result<Live<T>>
where
    T: Send + Sync + 'static,
    F: Fn() -> anyhow::Result<Loaded<T>> + Send + 'static,
{
    let first = load()?;
    let status = Arc::new(Mutex::new(ReloadStatus {
        config_hash: first.config_hash.clone(),
        loaded_at: now(),
        ..Default::default()
    }));
    let dirs = watch_dirs(&first.value);
    let mut key = first.change_key;
    let (tx, rx) = watch::channel(Arc::new(first.value));
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = ev_tx.send(());
    })?;
    for d in &dirs {
        if let Err(e) = watcher.watch(d, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory; relying on polling");
        }
    }
    let st = status.clone();
    tokio::spawn(async move {
        let _watcher = watcher; // dropped with the task
        let mut tick = tokio::time::interval(poll);
        loop {
            tokio::select! {
                Some(()) = ev_rx.recv() => {
                    // Debounce: the kubelet's swap is several filesystem events.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while ev_rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
            }
            match load() {
                Ok(l) if l.change_key == key => {
                    // Unchanged; a previous error no longer describes what is on disk.
                    st.lock().expect("status lock").last_error = None;
                }
                Ok(l) => {
                    key = l.change_key;
                    let mut s = st.lock().expect("status lock");
                    s.config_hash = l.config_hash.clone();
                    s.loaded_at = now();
                    s.last_error = None;
                    s.reloads_ok += 1;
                    drop(s);
                    tracing::info!(config_hash = %l.config_hash, "config reloaded");
                    if tx.send(Arc::new(l.value)).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    let mut s = st.lock().expect("status lock");
                    if s.last_error.as_deref() != Some(msg.as_str()) {
                        s.reloads_failed += 1;
                        tracing::error!(error = %msg, "new config rejected; still serving the previous one");
                    }
                    s.last_error = Some(msg);
                }
            }
        }
    });
    Ok(Live {
        current: rx,
        status,
    })
}

/// Reads a YAML config file: the parsed value and the bytes it came from.
pub fn read_yaml<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> anyhow::Result<(T, Vec<u8>)> {
    use anyhow::Context as _;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let value =
        serde_norway::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok((value, bytes))
}

/// A load result whose change key covers the config and the current contents of the token
/// files it names (so a rotated Secret counts as a change), while the reported hash covers the
/// config alone.
pub fn loaded_with_tokens<T>(value: T, config: &[u8], token_files: &[PathBuf]) -> Loaded<T> {
    let tokens: Vec<Vec<u8>> = token_files
        .iter()
        .map(|f| std::fs::read(f).unwrap_or_default())
        .collect();
    let mut parts: Vec<&[u8]> = vec![config];
    parts.extend(tokens.iter().map(Vec::as_slice));
    Loaded {
        value,
        config_hash: hash_bytes(&[config]),
        change_key: hash_bytes(&parts),
    }
}

/// The directories holding `config` and the `files` it names: what to watch.
pub fn dirs_of(config: &std::path::Path, files: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::iter::once(config)
        .chain(files.iter().map(PathBuf::as_path))
        .filter_map(|f| f.parent().map(std::path::Path::to_path_buf))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}
