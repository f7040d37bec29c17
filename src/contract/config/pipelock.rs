//! pipelock's own config file (`pipelock.yaml`), the subset of its strict schema we set.
//!
//! pipelock rejects unknown keys, so field names follow its schema exactly (snake_case) and
//! nothing optional is written unless set. See `shared/design/pipelock-notes.md`.

use serde::{Deserialize, Serialize};

/// Top level of `pipelock.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelockConfig {
    /// Schema version (1).
    pub version: u32,
    /// `strict`: the allowlist is enforced only in this mode.
    pub mode: String,
    /// false: detect only.
    pub enforce: bool,
    /// Hostnames (and `*.domain`) the bottle may reach.
    pub api_allowlist: Vec<String>,
    /// Listener.
    pub fetch_proxy: FetchProxy,
    /// CONNECT / absolute-URI proxying.
    pub forward_proxy: ForwardProxy,
    /// TLS interception with the bottle CA.
    pub tls_interception: TlsInterception,
    /// Request body and header DLP.
    pub request_body_scanning: RequestBodyScanning,
    /// Prompt-injection scanning of what the agent reads.
    pub response_scanning: ResponseScanning,
    /// Google A2A (agent-to-agent) protocol scanning.
    pub a2a_scanning: A2aScanning,
    /// DLP patterns.
    pub dlp: Dlp,
    /// Logging.
    pub logging: Logging,
}

/// `fetch_proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchProxy {
    /// Listen address.
    pub listen: String,
    /// URL checks: rate limit and the like.
    pub monitoring: Monitoring,
}

/// `fetch_proxy.monitoring`: the URL scanner's limits (they apply to every transport).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// URL checks per minute per base domain (a CONNECT and each intercepted request count).
    pub max_requests_per_minute: u32,
}

/// `response_scanning`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseScanning {
    /// On.
    pub enabled: bool,
    /// `block` or `warn`.
    pub action: String,
    /// Per-event scanning of `text/event-stream` responses.
    pub sse_streaming: SseStreaming,
}

/// `response_scanning.sse_streaming`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseStreaming {
    /// On.
    pub enabled: bool,
    /// `block` (ends the stream at the first finding) or `warn`.
    pub action: String,
}

/// `a2a_scanning`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct A2aScanning {
    /// On.
    pub enabled: bool,
    /// `block` or `warn`.
    pub action: String,
}

/// `forward_proxy`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardProxy {
    /// Must be on: the sidecars use pipelock as an HTTP proxy.
    pub enabled: bool,
    /// Long-lived streams (LLM responses) need more than the 300 s default.
    pub max_tunnel_seconds: u32,
    /// Idle cut-off.
    pub idle_timeout_seconds: u32,
    /// The TLS ClientHello's SNI must name the CONNECT host (no domain fronting).
    pub sni_verification: bool,
}

/// `tls_interception`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsInterception {
    /// On.
    pub enabled: bool,
    /// CA certificate path.
    pub ca_cert: String,
    /// CA key path (SEC1 PEM, mode 0440 or stricter).
    pub ca_key: String,
    /// Hosts spliced without interception.
    pub passthrough_domains: Vec<String>,
}

/// `request_body_scanning`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBodyScanning {
    /// On.
    pub enabled: bool,
    /// `block` or `warn`.
    pub action: String,
    /// Header scanning defaults to off when the key is omitted, so it is always written.
    pub scan_headers: bool,
    /// `sensitive` (six auth headers) or `all` (every header but `ignore_headers`).
    pub header_mode: String,
    /// Headers `all` mode skips.
    pub ignore_headers: Vec<String>,
}

/// `dlp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dlp {
    /// Keep pipelock's built-in patterns.
    pub include_defaults: bool,
    /// Extra patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<DlpPattern>,
}

/// One DLP pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpPattern {
    /// Name.
    pub name: String,
    /// Regex.
    pub regex: String,
    /// Severity.
    pub severity: String,
}

/// `logging`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// `json`.
    pub format: String,
    /// `stdout`.
    pub output: String,
    /// Log allowed requests too (audit trail).
    pub include_allowed: bool,
    /// Log blocked requests.
    pub include_blocked: bool,
}
