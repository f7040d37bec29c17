//! One config type per sidecar, shared by the renderer (which writes it into the ConfigMap)
//! and the sidecar (which reads it), so the two cannot disagree about a field.
//!
//! Paths and ports the Pod layout fixes live in [`layout`]; everything here is data.

pub mod cred_proxy;
pub mod egress;
pub mod git_gate;
pub mod glob;
pub mod host;
pub mod layout;
pub mod path;
pub mod pipelock;
pub mod supervise;

use serde::{Deserialize, Serialize};

/// How a sidecar writes a credential into a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderInjection {
    /// Header name.
    pub header: String,
    /// Prefix before the token, with one space between (`Bearer <token>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// File holding the token (a projected Secret key, updated in place by the kubelet).
    pub token_file: String,
}
