//! Config of the `git-gate` sidecar: declared remotes served over smart HTTP on loopback,
//! pushes secret-scanned before they go upstream over SSH.

use serde::{Deserialize, Serialize};

/// `git-gate.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitGateConfig {
    /// Address the gate listens on.
    pub listen: String,
    /// Admin listener (config version), on a port the agent's firewall rules do not open.
    pub admin_listen: String,
    /// Writable directory for the mirrors, private key copies and locks.
    pub state_dir: String,
    /// Remotes by name, served at `http://127.0.0.1:9420/<name>.git`.
    pub remotes: Vec<GitRemote>,
    /// Rules gitleaks applies on top of its defaults (the Bottle's DLP patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ScanRule>,
    /// Regexes of findings to accept anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<String>,
    /// Path globs ([`super::glob`]) of files left out of the scan.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_paths: Vec<String>,
}

/// A gitleaks rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanRule {
    /// Rule id, shown in refusals.
    pub id: String,
    /// Go (RE2) regular expression.
    pub regex: String,
}

/// The gitleaks config git-gate writes: gitleaks' defaults extended by the Bottle's rules and
/// allowlist. Serialised with `toml`, so any regex text is quoted correctly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitleaksConfig {
    /// Keep gitleaks' built-in rules.
    pub extend: GitleaksExtend,
    /// Findings to accept anyway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<GitleaksAllowlist>,
    /// Extra rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<ScanRule>,
}

/// gitleaks' `[extend]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitleaksExtend {
    /// `useDefault`: start from the built-in config.
    #[serde(rename = "useDefault")]
    pub use_default: bool,
}

/// gitleaks' global `[allowlist]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitleaksAllowlist {
    /// Shown in gitleaks' own output.
    pub description: String,
    /// Regexes of findings to accept.
    pub regexes: Vec<String>,
}

impl GitGateConfig {
    /// The gitleaks config for the extra rules and allowlist (defaults kept), or `None`.
    pub fn gitleaks_config(&self) -> Option<GitleaksConfig> {
        if self.rules.is_empty() && self.allowlist.is_empty() {
            return None;
        }
        Some(GitleaksConfig {
            extend: GitleaksExtend { use_default: true },
            allowlist: (!self.allowlist.is_empty()).then(|| GitleaksAllowlist {
                description: "Bottle git.scanAllowlist".into(),
                regexes: self.allowlist.clone(),
            }),
            rules: self.rules.clone(),
        })
    }

    /// The gitleaks config the push scan runs with, always written (even with no extra rules)
    /// so that no config from the environment or the pushed files applies.
    pub fn scan_gitleaks_toml(&self) -> String {
        let c = self.gitleaks_config().unwrap_or(GitleaksConfig {
            extend: GitleaksExtend { use_default: true },
            allowlist: None,
            rules: Vec::new(),
        });
        toml::to_string(&c).expect("plain strings and tables always serialise")
    }

    /// [`Self::gitleaks_config`] as TOML text, or `None`.
    pub fn gitleaks_toml(&self) -> Option<String> {
        self.gitleaks_config()
            .map(|c| toml::to_string(&c).expect("plain strings and tables always serialise"))
    }
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
    /// Ref brokering: when not empty, only refs matching one of these globs may be pushed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_refs: Vec<String>,
    /// Ref brokering: pushes whose commits add, change or delete a path matching one of
    /// these globs are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forbidden_paths: Vec<String>,
    /// Ref brokering: the most bytes one push may add to the object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_push_bytes: Option<u64>,
}
