//! The kubelet's atomic writer for ConfigMap and Secret volumes, as this test lays them out.
//!
//! Same steps as `pkg/volume/util/atomic_writer.go`: the payload goes into a fresh
//! timestamped directory `..YYYY_MM_DD_HH_MM_SS.<random>`, a `..data_tmp` symlink to it is
//! renamed over `..data` (the one atomic step a reader can observe), each visible file is a
//! symlink `name -> ..data/name` made once, and the previous timestamped directory is removed.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

/// One file of a volume: its name and bytes, and the mode the volume source gives it.
pub struct File<'a> {
    /// Name inside the volume.
    pub name: &'a str,
    /// Content.
    pub bytes: &'a [u8],
    /// `mode` of the item (or the volume's `defaultMode`).
    pub mode: u32,
}

fn stamp() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = time::OffsetDateTime::now_utc();
    // The kubelet's MkdirTemp suffix is random; a counter is as unique here.
    format!(
        "..{:04}_{:02}_{:02}_{:02}_{:02}_{:02}.{}{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Writes a new version of the volume at `dir` (creating it on first use).
pub fn write(dir: &Path, files: &[File]) {
    std::fs::create_dir_all(dir).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    let ts = stamp();
    let ts_dir = dir.join(&ts);
    std::fs::create_dir(&ts_dir).unwrap();
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in files {
        let p = ts_dir.join(f.name);
        std::fs::write(&p, f.bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode)).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for f in files {
        let link = dir.join(f.name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{}", f.name), &link).unwrap();
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
}
