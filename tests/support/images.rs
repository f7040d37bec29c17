//! The images of `images/*.Dockerfile` as the tests get them: `images/build.sh` run with the
//! caller's names (warm: seconds, everything cached by content), its set read back. The
//! binaries it packs are `$SIDECAR_BIN` / `$OPERATOR_BIN` when set (scripts/test.sh sets them
//! to this checkout's builds), else build.sh's own release builds.

#![allow(dead_code)] // each test uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// One image in the set build.sh printed: its reference and archive.
#[derive(Debug, Clone)]
pub struct Archive {
    /// The reference the operator and the chart name by default.
    pub reference: String,
    /// Its oci-archive.
    pub tar: PathBuf,
}

/// Runs images/build.sh for `names` (none: its default set), returning the directory it
/// printed (its last stdout line).
pub fn run_build(names: &[&str]) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new("bash");
    cmd.arg(repo.join("images/build.sh"))
        .args(names)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // What cargo sets for a test would reach the release builds' build scripts (ring's
    // reruns on CARGO_PKG_NAME...) and rebuild them for nothing: the shell's view only.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let set_by_cargo_test = k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || [
                "CARGO",
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_TARGET_TMPDIR",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&k.as_ref());
        if set_by_cargo_test {
            cmd.env_remove(k.as_ref());
        }
    }
    // Its release builds go beside this test's (a different profile, so no lock is shared).
    if std::env::var_os("CARGO_TARGET_DIR").is_none() {
        let target = option_env!("CARGO_TARGET_TMPDIR")
            .and_then(|t| Path::new(t).parent().map(Path::to_path_buf))
            .unwrap_or_else(|| repo.join("target"));
        cmd.env("CARGO_TARGET_DIR", target);
    }
    let out = cmd.output().expect("images/build.sh runs");
    assert!(out.status.success(), "images/build.sh failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh printed nothing")
            .trim(),
    )
}

/// The set in `dir` (images.tsv: name, reference, tar), by name.
pub fn read_set(dir: &Path) -> BTreeMap<String, Archive> {
    let tsv = std::fs::read_to_string(dir.join("images.tsv")).expect("images.tsv");
    tsv.lines()
        .map(|l| {
            let f: Vec<_> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "images.tsv line {l:?}");
            let a = Archive {
                reference: f[1].into(),
                tar: f[2].into(),
            };
            (f[0].to_string(), a)
        })
        .collect()
}
