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

impl GitGateConfig {
    /// The gitleaks config for the extra rules and allowlist (defaults kept), or `None`.
    pub fn gitleaks_toml(&self) -> Option<String> {
        if self.rules.is_empty() && self.allowlist.is_empty() {
            return None;
        }
        let mut out = String::from("[extend]\nuseDefault = true\n");
        if !self.allowlist.is_empty() {
            let list: Vec<String> = self
                .allowlist
                .iter()
                .map(|a| format!("'''{a}'''"))
                .collect();
            out.push_str(&format!(
                "\n[allowlist]\ndescription = \"Bottle git.scanAllowlist\"\nregexes = [{}]\n",
                list.join(", ")
            ));
        }
        for r in &self.rules {
            // TOML literal strings need no escaping; the model refuses regexes with three quotes.
            out.push_str(&format!(
                "\n[[rules]]\nid = '{}'\nregex = '''{}'''\n",
                r.id, r.regex
            ));
        }
        Some(out)
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
}
