//! The one way files are replaced inside the Pod: write a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory. A reader (pipelock's
//! watcher, ssh, the agent's TLS stack) sees the old file or the new one, never half of one,
//! and a crash leaves no torn file behind.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context as _;

/// Replaces `path` with `bytes` atomically; the new file has permission bits `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("renaming into {}", path.display()))?;
    // The rename itself is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn replaces_the_file_whole_with_the_mode_asked_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub").join("config.yaml");
        write(&f, b"one", 0o640).unwrap();
        let inode = std::fs::metadata(&f).unwrap().ino();
        write(&f, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let meta = std::fs::metadata(&f).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_ne!(
            meta.ino(),
            inode,
            "a new file renamed in, not a rewrite in place"
        );
        let names: Vec<_> = std::fs::read_dir(f.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["config.yaml"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("kept");
        write(&f, b"old", 0o644).unwrap();
        // A directory where the file should go: the rename fails, the old content stays.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir_all(blocked.join("x")).unwrap();
        assert!(write(&blocked, b"new", 0o644).is_err());
        assert_eq!(std::fs::read(&f).unwrap(), b"old");
    }
}
