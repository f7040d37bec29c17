//! Config of the `git-gate` sidecar: declared remotes served over smart HTTP on loopback,
//! pushes secret-scanned before they go upstream over SSH.

use serde::{Deserialize, Serialize};

/// `git-gate.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitGateConfig {
    /// Address the gate listens on.
    pub listen: String,
    /// Writable directory for the mirrors, private key copies and locks.
    pub state_dir: String,
    /// Remotes by name, served at `http://127.0.0.1:9420/<name>.git`.
    pub remotes: Vec<GitRemote>,
}

/// One upstream repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitRemote {
    /// Local name.
    pub name: String,
    /// Upstream SSH URL (`ssh://user@host:port/path`).
    pub upstream: String,
    /// Private key file (a projected Secret key).
    pub ssh_key_file: String,
    /// Pinned `known_hosts` lines.
    pub known_hosts: String,
    /// Allow non-fast-forward pushes.
    pub allow_force_push: bool,
    /// Allow deleting the default branch.
    pub allow_delete_default_branch: bool,
}
